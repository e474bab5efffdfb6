"""What the jobs share: a training run's settings, restoring its parameters, batch sizes, files.

`infer` and `evaluate` read a finished (or running) training run: they get the training job's
arguments (`settings`, as `irl_lm.jobs.train.train` takes them; the runner reads them from gin)
and rebuild the run's train state abstractly to restore its newest checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import jax

from irl_lm.checkpoints import manager as checkpoints_lib
from irl_lm.partitioning import Partitioner
from irl_lm.training import state as state_lib

# The training arguments a job needs to rebuild a run's train state.
REQUIRED_SETTINGS = ("model", "task", "feature_lengths", "optimizer", "schedule")


class JobError(ValueError):
  """A job's input or settings that cannot be used; the message says how to fix it."""


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
  """The training settings as a dict, refusing ones that lack what rebuilding the run needs.

  Raises:
    JobError: naming the missing `train.*` bindings.
  """
  missing = [k for k in REQUIRED_SETTINGS if settings.get(k) is None]
  if missing:
    raise JobError(f"the configuration lacks train.{', train.'.join(missing)}: use the gin files "
                   "the run was trained with.")
  return dict(settings)


def fit_batch_size(requested: Optional[int], rows: int, partitioner: Partitioner) -> int:
  """`requested` rows at once, lowered to the smallest multiple of the mesh's data axis that holds
  all `rows` (never below one row per data shard)."""
  data = partitioner.data_size
  batch_size = max(data, min(requested or 8, math.ceil(rows / data) * data))
  partitioner.check_batch_size(batch_size)
  return batch_size


def train_state_layout(*, model: Any, objective: Any, partitioner: Partitioner,
                       optimizer: Callable[..., Any], schedule: Callable[..., Any],
                       batch_size: int, feature_lengths: Mapping[str, int],
                       num_train_steps: Optional[int], seed: int = 0
                       ) -> tuple[state_lib.StateLayout, Any, Any]:
  """The run's train-state layout, optimiser and learning-rate schedule (what `train` and
  `check` build from the training settings).

  Raises:
    partitioning.PartitioningError: a batch size that does not divide over the mesh.
  """
  partitioner.check_batch_size(batch_size)
  lr_schedule = schedule(total_steps=num_train_steps)
  tx = optimizer(schedule=lr_schedule)
  layout = state_lib.build_state_layout(model, tx, partitioner,
                                        model.input_shapes(batch_size, feature_lengths), seed,
                                        objective=objective)
  return layout, tx, lr_schedule


def restore_params(run_dir: str, *, model: Any, tx: Any, partitioner: Partitioner,
                   input_shapes: Mapping[str, Sequence[int]], step: Optional[int] = None,
                   seed: int = 0, objective: Any = None) -> tuple[Any, Any, int]:
  """Restores the parameters of a training run's checkpoint, laid out as in training.

  Args:
    run_dir: the training run directory (checkpoints under `<run_dir>/checkpoints`).
    model, tx, partitioner: the run's model, optimiser and mesh (the whole train state is
      rebuilt abstractly with `state.build_state_layout` and restored, then only the parameters
      are kept).
    input_shapes: `model.input_shapes(...)`; only used to trace the model.
    step: checkpoint step (default: the newest).
    seed: the run's seed (only used to trace the initialiser; nothing is initialised).
    objective: the run's objective; online methods (GAIL) keep extra state in checkpoints.

  Returns:
    (params, param_shardings, step): sharded jax.Arrays, their NamedShardings, and the step.

  Raises:
    checkpoints.CheckpointError: no checkpoint in the run directory (the message says how to
      train one), or one that does not match the configuration.
  """
  directory = os.path.join(run_dir, "checkpoints")
  no_checkpoint = checkpoints_lib.CheckpointError(
      f"no checkpoint in {os.path.abspath(directory)}: train one first with the same gin files "
      "and bindings but without run.mode = 'infer' (python -m irl_lm.main --gin_file=...), or "
      "point at a trained run with --gin_bindings=\"run.run_dir = '...'\".")
  if not os.path.isdir(directory):  # Checkpointer would create it.
    raise no_checkpoint
  layout = state_lib.build_state_layout(model, tx, partitioner, input_shapes, seed,
                                        objective=objective)
  checkpointer = checkpoints_lib.Checkpointer(directory, async_save=False)
  try:
    if checkpointer.latest_step() is None:
      raise no_checkpoint
    restored = checkpointer.restore(layout.abstract, layout.shardings, step=step)
  finally:
    checkpointer.close()
  return restored.params, layout.param_shardings, int(restored.step)


@dataclasses.dataclass(frozen=True)
class RestoredRun:
  """A training run's parameters, laid out for decoding batches of `batch_size` rows."""
  params: Any
  param_shardings: Any
  step: int
  model: Any
  partitioner: Partitioner
  batch_size: int


def restore_run(run_dir: str, settings: Mapping[str, Any], *, rows: int,
                batch_size: Optional[int] = None, checkpoint_step: Optional[int] = None,
                max_decode_length: Optional[int] = None) -> RestoredRun:
  """Restores a run from its training settings for a job over `rows` rows.

  Args:
    run_dir: the training run directory.
    settings: the training arguments (`check_settings` passed).
    rows: how many rows the job decodes (caps the batch size, see `fit_batch_size`).
    batch_size: rows at once (default the run's eval batch size, else its batch size).
    checkpoint_step: restore this step instead of the newest.
    max_decode_length: the decode length the shapes are traced with (default the targets').
  """
  model = settings["model"]
  partitioner = settings.get("partitioner") or Partitioner()
  batch_size = fit_batch_size(
      batch_size or settings.get("eval_batch_size") or settings.get("batch_size"), rows,
      partitioner)
  lengths = dict(settings["feature_lengths"])
  if max_decode_length:
    lengths["targets"] = max_decode_length
  tx = settings["optimizer"](schedule=settings["schedule"](
      total_steps=settings.get("num_train_steps")))
  params, param_shardings, step = restore_params(
      run_dir, model=model, tx=tx, partitioner=partitioner,
      input_shapes=model.input_shapes(batch_size, lengths), step=checkpoint_step,
      seed=settings.get("seed", 0), objective=settings.get("objective"))
  return RestoredRun(params, param_shardings, step, model, partitioner, batch_size)


def is_writer() -> bool:
  """Whether this process writes the job's files (process 0 of a multi-host job)."""
  return jax.process_index() == 0


def write_json(path: str, value: Any) -> None:
  """Writes `value` as indented JSON (UTF-8, non-ASCII kept)."""
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2, ensure_ascii=False)


def write_json_lines(path: str, records: Sequence[Mapping[str, Any]]) -> None:
  """Writes one JSON object per line (UTF-8, non-ASCII kept)."""
  with open(path, "w", encoding="utf-8") as f:
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False) + "\n")
