"""The training loop: data → sharded step → metrics, checkpoints and a final evaluation."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterator, Mapping, Optional

import jax
import numpy as np
import optax
from absl import logging
from etils import epath

from irl_lm.evaluation import evaluator as evaluator_lib
from irl_lm.checkpoints import manager as checkpoints_lib
from irl_lm.training import optimizers
from irl_lm.training import state as state_lib
from irl_lm.training import step as step_lib
from irl_lm.training.objectives import IQLearn, Objective
from irl_lm.partitioning import Partitioner

Batch = Mapping[str, np.ndarray]


def _format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


class MetricsLog:
  """Writes averaged metrics as JSON lines (`<run_dir>/metrics.jsonl`) and to TensorBoard."""

  def __init__(self, run_dir: str, *, tensorboard: bool = True):
    self.path = epath.Path(run_dir) / "metrics.jsonl"
    self._writer = None
    if tensorboard and jax.process_index() == 0:
      from clu import metric_writers  # imports TensorFlow; only for real runs.
      self._writer = metric_writers.create_default_writer(
          os.path.join(run_dir, "tensorboard"), asynchronous=False)

  def write(self, step: int, prefix: str, values: Mapping[str, float]) -> None:
    """Appends one record {'step', '<prefix>/<name>': value, ...}."""
    if jax.process_index() != 0:
      return
    record = {"step": step, **{f"{prefix}/{k}": float(v) for k, v in values.items()}}
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    if self._writer is not None:
      self._writer.write_scalars(step, {k: v for k, v in record.items() if k != "step"})

  def close(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()


def _mean_metrics(history: list[Mapping[str, jax.Array]]) -> dict[str, float]:
  host = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in host])) for k in host[0]}


def _global_batch(local: Batch, sharding: jax.sharding.NamedSharding) -> dict[str, jax.Array]:
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def train(*, run_dir: str, model: Any, task: str, feature_lengths: Mapping[str, int],
          batch_size: int, num_train_steps: int,
          objective: Objective = IQLearn(),
          partitioner: Optional[Partitioner] = None,
          optimizer: Callable[..., optax.GradientTransformation] = optimizers.make_optimizer,
          schedule: Callable[..., optax.Schedule] = optimizers.make_schedule,
          seed: int = 0, pack: bool = False,
          checkpoint_every: int = 500, keep_checkpoints: Optional[int] = 3,
          log_every: int = 50,
          eval_split: str = "validation", eval_examples: int = 128,
          eval_batch_size: Optional[int] = None,
          decoding: evaluator_lib.DecodingConfig = evaluator_lib.DecodingConfig(),
          batches: Optional[Iterator[Batch]] = None,
          tensorboard: bool = True, dry_run: bool = False,
          init_from: Optional[str] = None) -> dict[str, Any]:
  """Trains `model` on a seqio task with `objective`, checkpointing and evaluating.

  Resumes from the newest checkpoint in `<run_dir>/checkpoints` when there is one.

  Args:
    run_dir: output directory (checkpoints/, metrics.jsonl, tensorboard/, eval JSON).
    model: an `EncoderDecoderModel` (init, param_logical_axes, logits, decode).
    task: seqio task name (see `irl_lm.data.tasks`).
    feature_lengths: {'inputs': L, 'targets': T}.
    batch_size: global batch size (must divide over the mesh's 'data' axis and hosts).
    num_train_steps: total number of updates (a resumed run continues up to it).
    objective: the method (`objectives.MLE()`, `objectives.IQLearn()`, ...).
    partitioner: mesh and sharding rules (default: all devices on 'data').
    optimizer: factory `(schedule=...) -> optax transform` (`optimizers.make_optimizer`).
    schedule: factory `(total_steps=...) -> optax schedule` (`optimizers.make_schedule`).
    seed: parameter-init, dropout and data-shuffle seed.
    pack: pack several examples per row (seqio packing).
    checkpoint_every, keep_checkpoints: Orbax checkpoint interval and retention.
    log_every: steps between metric records / progress lines.
    eval_split, eval_examples, eval_batch_size, decoding: the final evaluation (0 examples
      skips it).
    batches: optional iterator of host-local batches replacing the seqio pipeline (tests).
    tensorboard: also write TensorBoard summaries.
    dry_run: only build the model and the sharded train state abstractly (no allocation,
      no data) and return `layout_summary` of it: checks a pod config on a laptop.
    init_from: a checkpoint to start from when the run directory has none yet: a T5X
      checkpoint (legacy msgpack + zarr, or Orbax), a Hugging Face T5 1.1 directory or an
      irl_lm run (see `checkpoint_formats.detect_format`). Only its parameters are taken
      (checked against the model); the optimiser starts fresh at step 0. Ignored on resume.

  Returns:
    {'final_step', 'train_seconds', 'loss_first', 'loss_last', 'history' (list of logged
    records), 'eval' (metrics dict or None)}.
  """
  partitioner = partitioner or Partitioner()
  partitioner.check_batch_size(batch_size)
  input_shapes = {"encoder_input_tokens": (batch_size, feature_lengths["inputs"]),
                  "decoder_input_tokens": (batch_size, feature_lengths["targets"])}
  lr_schedule = schedule(total_steps=num_train_steps)
  tx = optimizer(schedule=lr_schedule)
  layout = state_lib.build_state_layout(model, tx, partitioner, input_shapes, seed,
                                        objective=objective)
  if dry_run:
    return layout_summary(layout.abstract, layout.shardings)
  epath.Path(run_dir).mkdir(parents=True, exist_ok=True)

  checkpointer = checkpoints_lib.Checkpointer(
      os.path.join(run_dir, "checkpoints"), save_every=checkpoint_every, keep=keep_checkpoints)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(layout.abstract, layout.shardings)
    logging.info("resumed from checkpoint at step %d", int(state.step))
    if init_from:
      logging.info("resuming, so init_from=%s is ignored", init_from)
  elif init_from:
    from irl_lm.checkpoints import formats as checkpoint_formats
    state = checkpoint_formats.initial_state(init_from, layout, tx, seed)
  else:
    state = layout.init_fn()
  start_step = int(state.step)

  train_step = step_lib.make_train_step(model=model, objective=objective, tx=tx,
                                        schedule=lr_schedule, partitioner=partitioner,
                                        shardings=layout.shardings)
  if batches is None:
    from irl_lm.data import pipeline  # TensorFlow only when real data is needed.
    batches = pipeline.get_batches(
        task, "train", feature_lengths=dict(feature_lengths),
        batch_size=batch_size // jax.process_count(), shuffle=True,
        # A resumed run reshuffles with a new seed rather than replaying seen batches.
        seed=seed + start_step, pack=pack, repeat=True,
        num_shards=jax.process_count(), shard_index=jax.process_index())

  log = MetricsLog(run_dir, tensorboard=tensorboard)
  batch_sharding = partitioner.batch_sharding()
  history: list[dict[str, Any]] = []
  pending: list[Mapping[str, jax.Array]] = []
  train_start = time.time()
  window_start, window_step = train_start, start_step
  for step in range(start_step, num_train_steps):
    state, metrics = train_step(state, _global_batch(next(batches), batch_sharding))
    pending.append(metrics)
    if len(pending) > 1:
      # Keep at most one step in flight: the host still prepares the next batch while the
      # device works, but a long queue of dispatched steps can starve XLA's CPU collectives
      # (simulated multi-device runs abort after 40 s) and hides errors until log time.
      jax.block_until_ready(pending[-2]["loss"])
    done = step + 1
    if done % log_every == 0 or done == num_train_steps:
      means = _mean_metrics(pending)
      pending = []
      now = time.time()
      steps_per_second = (done - window_step) / max(now - window_start, 1e-9)
      window_start, window_step = now, done
      means["steps_per_second"] = steps_per_second
      log.write(done, "train", means)
      history.append({"step": done, **means})
      logging.info("step %d/%d | loss %.4f | %.2f steps/s | ETA %s", done, num_train_steps,
                   means["loss"], steps_per_second,
                   _format_duration((num_train_steps - done) / max(steps_per_second, 1e-9)))
    if checkpointer.should_save(done):
      checkpointer.save(done, state)
  train_seconds = time.time() - train_start
  checkpointer.save(int(state.step), state)
  checkpointer.close()

  eval_metrics = None
  if eval_examples > 0:
    eval_metrics = _final_evaluation(
        model, state.params, run_dir=run_dir, task=task, split=eval_split,
        num_examples=eval_examples, feature_lengths=feature_lengths,
        batch_size=eval_batch_size or batch_size, decoding=decoding,
        partitioner=partitioner, param_shardings=layout.param_shardings)
    log.write(int(state.step), f"eval_{eval_split}", eval_metrics)
  log.close()
  losses = [h["loss"] for h in history]
  return {"final_step": int(state.step), "train_seconds": train_seconds,
          "loss_first": losses[0] if losses else None,
          "loss_last": losses[-1] if losses else None,
          "history": history, "eval": eval_metrics}


def layout_summary(abstract_state: state_lib.TrainState, shardings: Any) -> dict[str, Any]:
  """Sizes of an abstract, sharded train state.

  Returns:
    {'param_count', 'state_bytes' (whole state), 'max_state_bytes_per_device',
     'mesh' (axis sizes), 'dry_run': True}.
  """
  leaves = jax.tree.leaves(abstract_state)
  per_device: dict[Any, int] = {}
  for leaf, sharding in zip(leaves, jax.tree.leaves(shardings)):
    shard_shape = sharding.shard_shape(leaf.shape)
    nbytes = int(np.prod(shard_shape)) * leaf.dtype.itemsize
    for device in sharding.device_set:
      per_device[device] = per_device.get(device, 0) + nbytes
  mesh = jax.tree.leaves(shardings)[0].mesh
  return {"dry_run": True,
          "param_count": int(sum(np.prod(p.shape) for p in jax.tree.leaves(abstract_state.params))),
          "state_bytes": int(sum(np.prod(l.shape) * l.dtype.itemsize for l in leaves)),
          "max_state_bytes_per_device": max(per_device.values()),
          "mesh": dict(mesh.shape)}


def _final_evaluation(model, params, *, run_dir, task, split, num_examples, feature_lengths,
                      batch_size, decoding, partitioner, param_shardings) -> dict[str, float]:
  partitioner.check_batch_size(batch_size)
  decode_fn = evaluator_lib.make_decode_fn(
      model, decoding, max_decode_length=feature_lengths["targets"], partitioner=partitioner,
      param_shardings=param_shardings)
  metrics, records = evaluator_lib.evaluate_summaries(
      decode_fn, params, task=task, split=split, num_examples=num_examples,
      feature_lengths=dict(feature_lengths), batch_size=batch_size, seed=decoding.seed)
  if jax.process_index() == 0:
    name = f"eval_{split}_{decoding.describe()}"
    with (epath.Path(run_dir) / f"{name}.jsonl").open("w") as f:
      for record in records:
        f.write(json.dumps(record) + "\n")
    with (epath.Path(run_dir) / f"{name}_summary.json").open("w") as f:
      json.dump({"decoding": decoding.describe(), **metrics}, f, indent=2)
  return metrics
