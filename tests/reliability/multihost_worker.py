"""One process of the multi-host test: `python -m tests.reliability.multihost_worker ...`.

With `--num_processes=2` it joins a `jax.distributed` job on localhost (CPU, Gloo collectives)
and trains on its own shard of the built-in task, as the train job does on a pod. With 1 it is
the single-host reference: it reads both shards itself and stacks them (shard 0's rows first,
as the two-process run lays them out over its devices), so both train on the same global batch.
Either way it trains up to `--steps`, resuming from the run directory's newest checkpoint.
"""
# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--run_dir", required=True)
parser.add_argument("--steps", type=int, required=True)
parser.add_argument("--num_processes", type=int, default=1)
parser.add_argument("--process_id", type=int, default=0)
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--dump_restored", default="",
                    help="first write the parameters the run's checkpoint restores to (npz)")
args = parser.parse_args()

import jax

if args.num_processes > 1:
  jax.distributed.initialize(f"localhost:{args.port}", num_processes=args.num_processes,
                             process_id=args.process_id)

import jax.numpy as jnp
import numpy as np
import optax

from irl_lm.checkpoints import manager
from irl_lm.jobs import common
from irl_lm.jobs import train as train_job
from irl_lm.models import t5
from irl_lm.partitioning import Partitioner
from irl_lm.training import objectives, stopping
from irl_lm.training.settings import CheckpointSettings, EvalSettings, RunSettings, TrainSettings

SHARDS, BATCH, SEED = 2, 8, 0
LENGTHS = {"inputs": 32, "targets": 16}
model = t5.EncoderDecoderModel(t5.t5_1_1_config("tiny", vocab_size=4096,
                                                activation_dtype=jnp.float32))


def _stacked_shards(start_batch):
  """The two hosts' batches, stacked: what the two-process run trains on."""
  from irl_lm.data import pipeline  # pylint: disable=g-import-not-at-top
  shards = [pipeline.get_batches("stdlib_docstrings", "train", feature_lengths=LENGTHS,
                                 batch_size=BATCH // SHARDS, shuffle=True, seed=SEED,
                                 feature_converter=model.feature_converter(False),
                                 num_shards=SHARDS, shard_index=i, start_batch=start_batch)
            for i in range(SHARDS)]
  for parts in zip(*shards):
    yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


batches = None
if args.num_processes == 1:
  checkpoints = os.path.join(args.run_dir, "checkpoints")
  steps = [int(d) for d in os.listdir(checkpoints) if d.isdigit()] if os.path.isdir(
      checkpoints) else []
  batches = _stacked_shards(max(steps, default=0))

assert jax.device_count() == 4, jax.devices()
settings = RunSettings(
    model=model, task="stdlib_docstrings", feature_lengths=LENGTHS,
    objective=objectives.IQLearn(td_weight=0.1), partitioner=Partitioner((-1, 1)),
    training=TrainSettings(
        num_train_steps=args.steps, batch_size=BATCH, seed=SEED,
        # Plain SGD: Adam's normalisation would blow float rounding in tiny gradients up to O(lr).
        optimizer=lambda schedule: optax.sgd(schedule),
        schedule=lambda total_steps: optax.constant_schedule(0.05), log_every=1,
        tensorboard=False),
    evaluation=EvalSettings(examples=0), checkpoints=CheckpointSettings(every=3, keep=None))

if args.dump_restored:  # the restore the train job does, laid out over this run's devices
  layout, _, _ = common.train_state_layout(settings)
  checkpointer = manager.Checkpointer(os.path.join(args.run_dir, "checkpoints"),
                                      async_save=False)
  restored = checkpointer.restore(layout.abstract, layout.shardings)
  checkpointer.close()
  flat = jax.tree_util.tree_flatten_with_path(restored.params)[0]
  if jax.process_index() == 0:  # parameters are replicated: every process holds them whole
    np.savez(args.dump_restored, **{jax.tree_util.keystr(path): np.asarray(x.addressable_data(0))
                                    for path, x in flat})

try:
  summary = train_job.train(args.run_dir, settings, batches=batches)
except stopping.TrainingStopped as e:  # as main reports it
  print(e, file=sys.stderr, flush=True)
  sys.exit(e.exit_code)
print("trained steps", [h["step"] for h in summary["history"]], flush=True)
