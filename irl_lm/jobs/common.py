"""What the jobs share: a training run's settings, restoring its parameters, batch sizes, files.

`infer` and `evaluate` read a finished (or running) training run: they get its settings (a
`training.settings.RunSettings`, which the runner builds from gin) and rebuild the run's train
state abstractly to restore its newest checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping, Optional, Sequence

import jax
import optax

from irl_lm import errors
from irl_lm.checkpoints import manager as checkpoints_lib
from irl_lm.partitioning import Partitioner
from irl_lm.training import state as state_lib
from irl_lm.training.settings import RunSettings

class JobError(errors.UserError, ValueError):
  """A job's input or settings that cannot be used; the message says how to fix it."""


def fit_batch_size(requested: Optional[int], rows: int, partitioner: Partitioner) -> int:
  """`requested` rows at once, lowered to the smallest multiple of the mesh's data axis that holds
  all `rows` (never below one row per data shard)."""
  data = partitioner.data_size
  batch_size = max(data, min(requested or 8, math.ceil(rows / data) * data))
  partitioner.check_batch_size(batch_size)
  return batch_size


def train_state_layout(run: RunSettings, batch_size: Optional[int] = None,
                       feature_lengths: Optional[Mapping[str, int]] = None
                       ) -> tuple[state_lib.StateLayout, Any, Any]:
  """The run's train-state layout, optimiser and learning-rate schedule (what `train` and
  `check` build from the training settings), traced with batches of `batch_size` rows
  (default the run's) of `feature_lengths` (default the run's).

  Raises:
    partitioning.PartitioningError: a batch size that does not divide over the mesh.
  """
  model, partitioner = run.model, run.mesh
  batch_size = batch_size or run.training.batch_size
  partitioner.check_batch_size(batch_size)
  tx, lr_schedule = run.training.make_optimizer()
  if hasattr(model, "trainable_labels"):  # LoRA: no update and no optimiser state for the base
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                               model.trainable_labels)
  layout = state_lib.build_state_layout(
      model, tx, partitioner, model.input_shapes(batch_size, feature_lengths or
                                                 run.feature_lengths),
      run.training.seed, objective=run.objective)
  return layout, tx, lr_schedule


def restore_params(run_dir: str, *, model: Any, tx: Any, partitioner: Partitioner,
                   input_shapes: Mapping[str, Sequence[int]], step: Optional[int] = None,
                   seed: int = 0, objective: Any = None, mode: str = "infer"
                   ) -> tuple[Any, Any, int]:
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
    mode: the `run.mode` restoring it (named in the message when there is no checkpoint).

  Returns:
    (params, param_shardings, step): sharded jax.Arrays, their NamedShardings, and the step.

  Raises:
    checkpoints.CheckpointError: no checkpoint in the run directory (the message says how to
      train one), or one that does not match the configuration.
  """
  directory = os.path.join(run_dir, "checkpoints")
  no_checkpoint = _no_checkpoint(run_dir, mode)
  if not os.path.isdir(directory):  # Checkpointer would create it.
    raise no_checkpoint
  layout = state_lib.build_state_layout(model, tx, partitioner, input_shapes, seed,
                                        objective=objective)
  checkpointer = checkpoints_lib.Checkpointer(directory, async_save=False, read_only=True)
  try:
    if checkpointer.latest_step() is None:
      raise no_checkpoint
    restored = checkpointer.restore(layout.abstract, layout.shardings, step=step)
  finally:
    checkpointer.close()
  return restored.params, layout.param_shardings, int(restored.step)


def _no_checkpoint(run_dir: str, mode: str) -> checkpoints_lib.CheckpointError:
  directory = os.path.abspath(os.path.join(run_dir, "checkpoints"))
  return checkpoints_lib.CheckpointError(
      f"no checkpoint in {directory}: train one first with the same gin files and bindings but "
      f"without run.mode = '{mode}' (python -m irl_lm.main --gin_file=...), or point at a "
      "trained run with --gin_bindings=\"run.run_dir = '...'\".")


def require_checkpoint(run_dir: str, mode: str) -> None:
  """Refuses a run directory without a checkpoint before a `mode` job reads any data.

  Raises:
    checkpoints.CheckpointError: naming the directory and how to train a checkpoint.
  """
  if not checkpoints_lib.has_checkpoints(os.path.join(run_dir, "checkpoints")):
    raise _no_checkpoint(run_dir, mode)


@dataclasses.dataclass(frozen=True)
class RestoredRun:
  """A training run's parameters, laid out for decoding batches of `batch_size` rows."""
  params: Any
  param_shardings: Any
  step: int
  model: Any
  partitioner: Partitioner
  batch_size: int


def restore_run(run_dir: str, run: RunSettings, *, rows: int,
                batch_size: Optional[int] = None, checkpoint_step: Optional[int] = None,
                max_decode_length: Optional[int] = None, mode: str = "infer") -> RestoredRun:
  """Restores a run from its training settings for a job over `rows` rows.

  Args:
    run_dir: the training run directory.
    run: the training run's settings (`RunSettings.require` passed).
    rows: how many rows the job decodes (caps the batch size, see `fit_batch_size`).
    batch_size: rows at once (default the run's eval batch size, else its batch size).
    checkpoint_step: restore this step instead of the newest.
    max_decode_length: the decode length the shapes are traced with (default the targets').
    mode: the `run.mode` restoring it (for the message when there is no checkpoint).
  """
  model, partitioner = run.model, run.mesh
  batch_size = fit_batch_size(
      batch_size or run.evaluation.batch_size or run.training.batch_size, rows, partitioner)
  lengths = dict(run.feature_lengths)
  if max_decode_length:
    lengths["targets"] = max_decode_length
  tx, _ = run.training.make_optimizer()
  params, param_shardings, step = restore_params(
      run_dir, model=model, tx=tx, partitioner=partitioner,
      input_shapes=model.input_shapes(batch_size, lengths), step=checkpoint_step,
      seed=run.training.seed, objective=run.objective, mode=mode)
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
