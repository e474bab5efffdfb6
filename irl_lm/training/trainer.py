"""The training loop: host batches → sharded step → metrics log, checkpoints, evaluation hooks."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterator, Mapping, Optional

import jax
import numpy as np
from absl import logging
from etils import epath

from irl_lm.checkpoints import manager as checkpoints_lib
from irl_lm.training import state as state_lib

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


def global_batch(local: Batch, sharding: jax.sharding.NamedSharding) -> dict[str, jax.Array]:
  """One global `jax.Array` per feature from this host's rows, sharded with `sharding`."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def fit(state: state_lib.TrainState, train_step: Callable[..., Any], batches: Iterator[Batch], *,
        num_train_steps: int, batch_sharding: jax.sharding.NamedSharding,
        checkpointer: checkpoints_lib.Checkpointer, log: MetricsLog, log_every: int = 50,
        evaluate: Optional[Callable[[int, state_lib.TrainState], None]] = None,
        eval_every: int = 0) -> tuple[state_lib.TrainState, list[dict[str, Any]], float]:
  """Runs `train_step` from `state.step` up to `num_train_steps`.

  Every `log_every` steps the metrics since the last record are averaged, written to `log` and
  printed as a progress line; checkpoints follow `checkpointer.should_save`; `evaluate(step,
  state)` runs every `eval_every` steps (0: never here). The final state is always saved.

  Returns:
    (final state, logged records [{'step', metric: value, ...}], seconds spent in the loop).
  """
  history: list[dict[str, Any]] = []
  pending: list[Mapping[str, jax.Array]] = []
  start_step = int(state.step)
  train_start = time.time()
  window_start, window_step = train_start, start_step
  for step in range(start_step, num_train_steps):
    state, metrics = train_step(state, global_batch(next(batches), batch_sharding))
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
    if evaluate is not None and eval_every > 0 and done % eval_every == 0 and (
        done < num_train_steps):
      evaluate(done, state)
  train_seconds = time.time() - train_start
  checkpointer.save(int(state.step), state)
  return state, history, train_seconds
