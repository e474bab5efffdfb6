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
import optax
from absl import logging

from irl_lm import errors
from irl_lm.checkpoints import manager as checkpoints_lib
from irl_lm.partitioning import Partitioner
from irl_lm.training import state as state_lib

# The training arguments a job needs to rebuild a run's train state.
REQUIRED_SETTINGS = ("model", "task", "feature_lengths", "optimizer", "schedule")


class JobError(errors.UserError, ValueError):
  """A job's input or settings that cannot be used; the message says how to fix it."""


def check_settings(settings: Mapping[str, Any], *, training: bool = False) -> dict[str, Any]:
  """The training settings as a dict, refusing ones that lack what rebuilding the run needs.

  With `training`, also every setting that can be checked before training starts (the train
  job's arguments as `runner.training_settings` gives them): so a mistake found only after
  hours of training (an evaluation batch that does not split over the mesh, an unknown decoding
  method) stops the start instead, naming the `train.*` binding to fix.

  Raises:
    JobError: naming the missing or invalid `train.*` bindings.
    partitioning.PartitioningError: `train.batch_size` does not split over the mesh or hosts.
    errors.SettingError: a `make_schedule.*` / `make_optimizer.*` binding that cannot work.
  """
  missing = [k for k in REQUIRED_SETTINGS if settings.get(k) is None]
  if missing:
    raise JobError(f"the configuration lacks train.{', train.'.join(missing)}: use the gin files "
                   "the run was trained with.")
  if training:
    _check_training(settings)
  return dict(settings)


def _check_int(settings: Mapping[str, Any], name: str, minimum: int,
               optional: bool = False) -> None:
  value = settings.get(name)
  if value is None and optional:
    return
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise JobError(f"train.{name} = {value!r} is invalid: use an integer >= {minimum}"
                   f"{' (or None)' if optional else ''}.")


def check_decoding(config: Any, name: str) -> None:
  """Refuses a `DecodingConfig` that would fail at its first use, naming the binding `name`.

  Raises:
    JobError: an unknown method, a calculator with beam search / top-k / top-p, a negative
      temperature or top_k, top_p outside (0, 1], or a beam size below 1.
  """
  try:
    config.describe()
  except (ValueError, AttributeError) as e:
    raise JobError(f"{name} is invalid: {e}") from None
  problems = []
  if not config.temperature >= 0:
    problems.append(f"temperature {config.temperature} is negative (use >= 0; 0 is greedy)")
  if not (isinstance(config.top_k, int) and config.top_k >= 0):
    problems.append(f"top_k {config.top_k!r} must be an integer >= 0 (0 disables it)")
  if not 0 < config.top_p <= 1:
    problems.append(f"top_p {config.top_p} must be in (0, 1] (1 disables it)")
  if config.method == "beam" and not (isinstance(config.beam_size, int) and config.beam_size >= 1):
    problems.append(f"beam_size {config.beam_size!r} must be an integer >= 1")
  if problems:
    raise JobError(f"{name} is invalid: {'; '.join(problems)}.")


def _check_training(settings: Mapping[str, Any]) -> None:
  partitioner = settings.get("partitioner") or Partitioner()
  for name, minimum in (("batch_size", 1), ("num_train_steps", 0), ("checkpoint_every", 0),
                        ("log_every", 1), ("eval_examples", 0), ("eval_every", 0),
                        ("eval_diversity_examples", 0)):
    if name in settings:
      _check_int(settings, name, minimum)
  _check_int(settings, "keep_checkpoints", 1, optional=True)
  _check_int(settings, "eval_decode_every", 0, optional=True)
  lengths = settings["feature_lengths"]
  if not isinstance(lengths, Mapping) or not lengths or any(
      isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in lengths.values()):
    raise JobError(f"train.feature_lengths = {lengths!r} is invalid: use e.g. "
                   "{'inputs': 512, 'targets': 128} (positive integers).")
  partitioner.check_batch_size(settings["batch_size"])
  schedule, optimizer = settings.get("schedule"), settings.get("optimizer")
  if callable(schedule) and callable(optimizer):  # refuses make_schedule/make_optimizer settings
    optimizer(schedule=schedule(total_steps=settings.get("num_train_steps")))
  objective = settings.get("objective")
  sampling = getattr(objective, "sampling", None)
  if sampling is not None:
    check_decoding(sampling, f"{type(objective).__name__}.sampling")
    if settings.get("pack"):
      raise JobError(f"{type(objective).__name__} samples completions per input and needs "
                     "unpacked batches: set train.pack = False.")
  if not settings.get("eval_examples", 0):
    if settings.get("eval_every"):
      logging.warning("train.eval_every = %d does nothing: train.eval_examples = 0 turns "
                      "evaluation off.", settings["eval_every"])
    return
  eval_batch_size = settings.get("eval_batch_size")
  _check_int(settings, "eval_batch_size", 1, optional=True)
  data, hosts = partitioner.data_size, jax.process_count()
  if eval_batch_size is not None and (eval_batch_size % data or eval_batch_size % hosts):
    divisor = data * hosts // math.gcd(data, hosts)
    raise JobError(f"train.eval_batch_size = {eval_batch_size} is not divisible by the mesh's "
                   f"data axis ({data}) and the {hosts} host(s): choose a multiple of "
                   f"{divisor}, or leave it unset to use train.batch_size.")
  if "decoding" in settings:
    check_decoding(settings["decoding"], "train.decoding")
  if settings.get("eval_diversity_examples") and settings.get(
      "eval_diversity_samples", 4) < 2:
    raise JobError(f"train.eval_diversity_samples = {settings['eval_diversity_samples']!r} is "
                   "invalid: Self-BLEU compares samples with each other, use 2 or more.")
  every, steps = settings.get("eval_every", 0), settings.get("num_train_steps")
  if every and steps is not None and every >= steps:
    logging.warning("train.eval_every = %d is not below train.num_train_steps = %d: only the "
                    "step-0 and final evaluations run.", every, steps)


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
  if hasattr(model, "trainable_labels"):  # LoRA: no update and no optimiser state for the base
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                               model.trainable_labels)
  layout = state_lib.build_state_layout(model, tx, partitioner,
                                        model.input_shapes(batch_size, feature_lengths), seed,
                                        objective=objective)
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


def restore_run(run_dir: str, settings: Mapping[str, Any], *, rows: int,
                batch_size: Optional[int] = None, checkpoint_step: Optional[int] = None,
                max_decode_length: Optional[int] = None, mode: str = "infer") -> RestoredRun:
  """Restores a run from its training settings for a job over `rows` rows.

  Args:
    run_dir: the training run directory.
    settings: the training arguments (`check_settings` passed).
    rows: how many rows the job decodes (caps the batch size, see `fit_batch_size`).
    batch_size: rows at once (default the run's eval batch size, else its batch size).
    checkpoint_step: restore this step instead of the newest.
    max_decode_length: the decode length the shapes are traced with (default the targets').
    mode: the `run.mode` restoring it (for the message when there is no checkpoint).
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
      seed=settings.get("seed", 0), objective=settings.get("objective"), mode=mode)
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
