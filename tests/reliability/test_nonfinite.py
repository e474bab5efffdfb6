"""Non-finite losses and gradients: 'stop' names the step and keeps the last finite checkpoint;
'skip' leaves the state untouched by the bad updates and counts them."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from irl_lm import errors
from irl_lm.jobs import train as train_job
from irl_lm.models import t5
from irl_lm.partitioning import Partitioner
from irl_lm.training.settings import CheckpointSettings, EvalSettings, RunSettings, TrainSettings
from irl_lm.training import objectives, stopping
from tests.reliability import helpers
from tests.training.test_step import VOCAB, B, L, T, _batches

MODEL = t5.EncoderDecoderModel(
    t5.t5_1_1_config("tiny", vocab_size=VOCAB, activation_dtype=jnp.float32))


def _poisoned(steps, nan_steps):
  """Batch i (step i + 1) of `steps`; those of `nan_steps` have NaN loss weights, so their loss
  and gradients are NaN."""
  out = []
  for i, batch in enumerate(_batches(steps, seed=3)):
    if i + 1 in nan_steps:
      batch = dict(batch, decoder_loss_weights=np.full_like(batch["decoder_loss_weights"],
                                                            np.nan))
    out.append(batch)
  return out


def _train(run_dir, batches, *, learning_rate=1e-2, checkpoint_every=2, **training):
  training = {"num_train_steps": len(batches), "batch_size": B,
              "optimizer": lambda schedule: optax.adam(schedule),
              "schedule": lambda total_steps: optax.constant_schedule(learning_rate),
              "log_every": 2, "tensorboard": False, **training}
  return train_job.train(str(run_dir), RunSettings(
      model=MODEL, task="unused", feature_lengths={"inputs": L, "targets": T},
      objective=objectives.MLE(),
      partitioner=Partitioner((1, 1), devices=tuple(jax.devices()[:1])),
      training=TrainSettings(**training), evaluation=EvalSettings(examples=0),
      checkpoints=CheckpointSettings(every=checkpoint_every, keep=1)), batches=iter(batches))


def _checkpoint(run_dir, step):
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(os.path.join(run_dir, "checkpoints", str(step), "state"))


def _all_finite(tree):
  return all(np.all(np.isfinite(x)) for x in jax.tree.leaves(tree)
             if np.issubdtype(np.asarray(x).dtype, np.inexact))


def _records(run_dir):
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f]


def test_stop_names_the_step_and_keeps_the_last_finite_checkpoint(tmp_path):
  with pytest.raises(stopping.NonFiniteError) as error:
    _train(tmp_path, _poisoned(6, nan_steps={5}))
  assert error.value.step == 5 and error.value.exit_code == 3
  assert str(error.value) == (
      f"training stopped at step 5: the loss is not finite (loss nan, gradient norm nan); "
      f"nothing from step 5 on was saved, so checkpoint 4 in {tmp_path}/checkpoints is the "
      "last good one. Lower the learning rate (or set TrainSettings.on_nonfinite = 'skip') and "
      "resume with --gin_bindings=\"run.allow_config_change = True\", or start a new run directory.")
  # keep_checkpoints = 1: checkpoint 4 was not rotated out, because nothing came after it.
  assert helpers.checkpoint_steps(tmp_path) == [4]
  assert _all_finite(_checkpoint(tmp_path, 4))
  assert [r["step"] for r in _records(tmp_path)] == [2, 4]


def test_learning_rate_1e30_stops_before_saving_anything_non_finite(tmp_path):
  with pytest.raises(stopping.NonFiniteError, match=r"^training stopped at step (\d+): ") as e:
    _train(tmp_path, _batches(8), learning_rate=1e30, checkpoint_every=1)
  step = e.value.step
  assert step >= 2  # the first update is finite (Adam moves every weight by 1e30) ...
  assert helpers.checkpoint_steps(tmp_path) == [step - 1]  # ... and the last one saved
  assert _all_finite(_checkpoint(tmp_path, step - 1))


def test_skip_leaves_the_state_as_if_the_bad_batches_were_not_there(tmp_path):
  batches = _poisoned(6, nan_steps={3, 5})
  summary = _train(tmp_path / "skip", batches, on_nonfinite="skip", log_every=1)
  assert summary["final_step"] == 6  # the step counter advances over skipped updates
  records = [r for r in _records(tmp_path / "skip") if "train/loss" in r]
  assert [r["train/skipped_updates"] for r in records] == [0, 0, 1, 0, 1, 0]
  assert helpers.checkpoint_steps(tmp_path / "skip") == [6]
  skipped = _checkpoint(tmp_path / "skip", 6)
  assert _all_finite(skipped)

  # The same run on the good batches alone: identical parameters, optimiser state and losses.
  clean = [b for i, b in enumerate(batches) if i + 1 not in (3, 5)]
  _train(tmp_path / "clean", clean, log_every=1)
  reference = _checkpoint(tmp_path / "clean", 4)
  jax.tree.map(np.testing.assert_array_equal, skipped["params"], reference["params"])
  jax.tree.map(np.testing.assert_array_equal, skipped["opt_state"], reference["opt_state"])
  clean_losses = [r["train/loss"] for r in _records(tmp_path / "clean") if "train/loss" in r]
  losses = [r["train/loss"] for r in records]
  assert [losses[i] for i in (0, 1, 3, 5)] == clean_losses
  assert np.isnan(losses[2]) and np.isnan(losses[4])  # a record of skipped steps only


def test_skip_with_learning_rate_1e30_saves_only_finite_states(tmp_path):
  _train(tmp_path, _batches(6), learning_rate=1e30, on_nonfinite="skip")
  records = [r for r in _records(tmp_path) if "train/loss" in r]
  assert sum(r["train/skipped_updates"] for r in records) >= 4  # all but the first updates
  assert helpers.checkpoint_steps(tmp_path) == [6]
  assert _all_finite(_checkpoint(tmp_path, 6))


def test_an_unknown_mode_is_one_sentence(tmp_path):
  with pytest.raises(errors.SettingError, match=r"^TrainSettings.on_nonfinite = 'sometimes' is "
                     r"not a mode: use 'stop' .* or 'skip'"):
    _train(tmp_path, _batches(1), on_nonfinite="sometimes")
  assert not os.path.exists(tmp_path / "checkpoints")


@pytest.mark.slow
def test_command_line_exits_3_with_one_line(tmp_path):
  result = helpers.run(tmp_path / "run", "make_schedule.learning_rate = 1e30",
                       "make_schedule.warmup_steps = 0")
  assert result.returncode == 3, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: training stopped at step ") and "is not finite" in last
  assert "no checkpoint of this run was saved before it" in last
  assert "Traceback" not in result.stderr
  assert helpers.checkpoint_steps(tmp_path / "run") == []
