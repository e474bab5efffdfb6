"""A training run's settings: four frozen dataclasses, each a gin configurable, checked here.

  train               RunSettings: what is trained, on what, on which mesh, from where
  TrainSettings       the optimisation: steps, batch, seed, optimiser, schedule, loop
  EvalSettings        the evaluation during and after training
  CheckpointSettings  the Orbax checkpoint interval and retention

The runner builds each group from its own gin bindings (`TrainSettings.batch_size = 32`,
`EvalSettings.examples = 64`, ...) and hands one `RunSettings` to every job, so `infer`,
`evaluate` and `check` rebuild the run's train state exactly as training did. Each group checks
its own fields when it is made; `RunSettings.validate` checks what needs several groups or the
mesh (batch sizes that must split over it, the optimiser and schedule, the objective's
sampling), before training touches the run directory. Every refusal is a `errors.SettingError`
naming the binding to fix.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional

import jax
import optax
from absl import logging

from irl_lm import errors
from irl_lm.decoding.config import DecodingConfig
from irl_lm.partitioning import Partitioner
from irl_lm.training import optimizers
from irl_lm.training import step as step_lib
from irl_lm.training.objectives import IQLearn, Objective, OnlineObjective


def _check_int(name: str, value: Any, minimum: int, optional: bool = False) -> None:
  if value is None and optional:
    return
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise errors.SettingError(f"{name} = {value!r} is invalid: use an integer >= {minimum}"
                              f"{' (or None)' if optional else ''}.")


def check_decoding(config: Any, name: str) -> None:
  """Refuses a `DecodingConfig` that would fail at its first use, naming the binding `name`.

  Raises:
    errors.SettingError: an unknown method, a calculator with beam search / top-k / top-p, a
      negative temperature or top_k, top_p outside (0, 1], or a beam size below 1.
  """
  try:
    config.describe()
  except (ValueError, AttributeError) as e:
    raise errors.SettingError(f"{name} is invalid: {e}") from None
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
    raise errors.SettingError(f"{name} is invalid: {'; '.join(problems)}.")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """How the run optimises (gin: `TrainSettings.*`).

  Attributes:
    num_train_steps: total number of updates (a resumed run continues up to it).
    batch_size: global batch size (must divide over the mesh's 'data' axis and the hosts).
    seed: parameter-init, dropout and data-shuffle seed (epoch e is shuffled with
      `pipeline.epoch_seed(seed, e)`).
    optimizer: factory `(schedule=...) -> optax transform` (`optimizers.make_optimizer`).
    schedule: factory `(total_steps=...) -> optax schedule` (`optimizers.make_schedule`).
    pack: pack several examples per row (seqio packing).
    microbatches: accumulate each step's gradient over this many slices of the batch (offline
      objectives): the same update with about 1/microbatches of the activation memory.
    on_nonfinite: 'stop': stop at the first step whose loss, gradient norm or updated state is
      not finite, before saving anything of it (`stopping.NonFiniteError` names the step and
      the last good checkpoint); 'skip': do not apply such updates (the step counter still
      advances) and count them as `train/skipped_updates`.
    log_every: steps between metric records / progress lines.
    tensorboard: also write TensorBoard summaries.
    term_grad_norms: at each log step, also log the gradient norm of each unweighted term of
      the (offline) objective on that step's batch (`train/grad_norm/nll`, `/td_loss`,
      `/entropy`; see `term_norms`): one extra backward pass per term at those steps.
  """
  num_train_steps: Optional[int] = None
  batch_size: Optional[int] = None
  seed: int = 0
  optimizer: Callable[..., optax.GradientTransformation] = optimizers.make_optimizer
  schedule: Callable[..., optax.Schedule] = optimizers.make_schedule
  pack: bool = False
  microbatches: int = 1
  on_nonfinite: str = "stop"
  log_every: int = 50
  tensorboard: bool = True
  term_grad_norms: bool = False

  def __post_init__(self):
    if self.num_train_steps is not None:  # unset: `RunSettings.validate` asks for it
      _check_int("TrainSettings.num_train_steps", self.num_train_steps, 0)
    if self.batch_size is not None:
      _check_int("TrainSettings.batch_size", self.batch_size, 1)
    _check_int("TrainSettings.log_every", self.log_every, 1)
    _check_int("TrainSettings.microbatches", self.microbatches, 1)
    if not isinstance(self.term_grad_norms, bool):
      raise errors.SettingError(f"TrainSettings.term_grad_norms = {self.term_grad_norms!r} is "
                                "invalid: use True or False.")
    if self.on_nonfinite not in step_lib.NONFINITE_MODES:
      raise errors.SettingError(
          f"TrainSettings.on_nonfinite = {self.on_nonfinite!r} is not a mode: use 'stop' (stop "
          "at the first non-finite loss or gradient) or 'skip' (skip that update).")

  def make_optimizer(self) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimiser and its learning-rate schedule over `num_train_steps`."""
    schedule = self.schedule(total_steps=self.num_train_steps)
    return self.optimizer(schedule=schedule), schedule


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """The evaluation during and after training (gin: `EvalSettings.*`).

  Attributes:
    split, examples, batch_size, decoding: task scores of `decoding` on a seeded random subset
      of `examples` of `split` (`pipeline.EVAL_SUBSET_SEED`, as evaluate mode; 0 examples
      skips every evaluation), decoded `batch_size` rows at once (None: the training batch
      size), next to the task's trivial baselines (`eval_<split>/baseline_<score>`, `/margin`)
      and with `/repeated_3gram_rate`; the final one also writes per-example records with
      implicit rewards and log-probs (`eval_<split>_<setting>.jsonl`). Every evaluation also
      logs the teacher-forced validation loss of the objective (`eval_<split>/nll`,
      `/td_loss`, `/loss`, ...) on the first `examples // TrainSettings.batch_size` (at least
      one) batches of the training batch size of the split.
    every: also evaluate every K steps during training (0: only at the end), into
      metrics.jsonl / TensorBoard as `eval_<split>/<score>`.
    decode_every: decode (task scores, baselines) only at the evaluations whose step is a
      multiple of this (None: at every one; 0: only the final one); the others log only the
      teacher-forced validation loss.
    diversity_examples, diversity_samples: with N > 0, each evaluation also draws K samples at
      temperature 1 for the first N examples and logs their Self-BLEU (`eval_<split>/self_bleu`,
      K and 13a tokenisation as in evaluate mode).
  """
  split: str = "validation"
  examples: int = 128
  batch_size: Optional[int] = None
  decoding: DecodingConfig = DecodingConfig()
  every: int = 0
  decode_every: Optional[int] = None
  diversity_examples: int = 0
  diversity_samples: int = 4

  def __post_init__(self):
    _check_int("EvalSettings.examples", self.examples, 0)
    if not self.examples:  # evaluation is off: the rest is never used
      return
    _check_int("EvalSettings.batch_size", self.batch_size, 1, optional=True)
    _check_int("EvalSettings.every", self.every, 0)
    _check_int("EvalSettings.decode_every", self.decode_every, 0, optional=True)
    _check_int("EvalSettings.diversity_examples", self.diversity_examples, 0)
    check_decoding(self.decoding, "EvalSettings.decoding")
    if self.diversity_examples and self.diversity_samples < 2:
      raise errors.SettingError(
          f"EvalSettings.diversity_samples = {self.diversity_samples!r} is invalid: Self-BLEU "
          "compares samples with each other, use 2 or more.")


@dataclasses.dataclass(frozen=True)
class CheckpointSettings:
  """Orbax checkpoints of the run (gin: `CheckpointSettings.*`).

  Attributes:
    every: steps between checkpoints (the final step is always saved).
    keep: how many checkpoints to keep (None: all).
  """
  every: int = 500
  keep: Optional[int] = 3

  def __post_init__(self):
    _check_int("CheckpointSettings.every", self.every, 0)
    _check_int("CheckpointSettings.keep", self.keep, 1, optional=True)


# The fields every job needs to rebuild a run's train state.
REQUIRED = ("model", "task", "feature_lengths")


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """One training run (gin: `train.*`; the groups come from their own configurables).

  Attributes:
    model: a `models.base.Model` (e.g. `t5.EncoderDecoderModel`).
    task: seqio task name (see `irl_lm.data.registry`).
    feature_lengths: {'inputs': L, 'targets': T}.
    objective: the method (`objectives.MLE()`, `objectives.IQLearn()`, ...).
    partitioner: mesh and sharding rules (None: all devices on 'data'; see `mesh`).
    init_from: a checkpoint to start from when the run directory has none yet: a T5X
      checkpoint (legacy msgpack + zarr, or Orbax), a Hugging Face directory or an irl_lm run
      (see `checkpoints.formats.detect_format`). Only its parameters are taken (checked
      against the model); the optimiser starts fresh at step 0. Ignored on resume. A
      `{data_root}` placeholder names the data root.
    training, evaluation, checkpoints: the groups above.
  """
  model: Any = None
  task: Any = None
  feature_lengths: Optional[Mapping[str, int]] = None
  objective: Objective = IQLearn()
  partitioner: Optional[Partitioner] = None
  init_from: Optional[str] = None
  training: TrainSettings = TrainSettings()
  evaluation: EvalSettings = EvalSettings()
  checkpoints: CheckpointSettings = CheckpointSettings()

  def __post_init__(self):
    lengths = self.feature_lengths
    if lengths is not None and (not isinstance(lengths, Mapping) or not lengths or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in lengths.values())):
      raise errors.SettingError(
          f"train.feature_lengths = {lengths!r} is invalid: use e.g. "
          "{'inputs': 512, 'targets': 128} (positive integers).")

  @property
  def mesh(self) -> Partitioner:
    """The partitioner, all devices on 'data' by default."""
    return self.partitioner or Partitioner()

  def require(self) -> "RunSettings":
    """Returns self when it names what rebuilding the run needs.

    Raises:
      errors.SettingError: naming the missing `train.*` bindings.
    """
    missing = [k for k in REQUIRED if getattr(self, k) is None]
    if missing:
      raise errors.SettingError(f"the configuration lacks train.{', train.'.join(missing)}: use "
                                "the gin files the run was trained with.")
    return self

  def validate(self) -> "RunSettings":
    """Returns self when it can train: `require`, then every check that needs several groups
    or the mesh, so a mistake found only after hours of training (an evaluation batch that
    does not split over the mesh, an unknown decoding method) stops the start instead.

    Raises:
      errors.SettingError: naming the binding to fix.
      partitioning.PartitioningError: `TrainSettings.batch_size` does not split over the mesh
        or hosts.
    """
    self.require()
    training, evaluation = self.training, self.evaluation
    for name in ("num_train_steps", "batch_size"):
      if getattr(training, name) is None:
        raise errors.SettingError(f"TrainSettings.{name} is not set: bind it in the gin file "
                                  f"(e.g. TrainSettings.{name} = 100).")
    mesh, hosts = self.mesh, jax.process_count()
    mesh.check_batch_size(training.batch_size)
    try:
      step_lib.check_microbatches(training.microbatches, self.objective,
                                  training.batch_size // hosts, mesh.data_size // hosts)
    except ValueError as e:
      raise errors.SettingError(str(e)) from None
    if training.term_grad_norms and isinstance(self.objective, OnlineObjective):
      raise errors.SettingError(
          f"TrainSettings.term_grad_norms = True measures the terms of offline objectives (MLE, "
          f"IQLearn), and {type(self.objective).__name__} samples online: set it to False.")
    training.make_optimizer()  # refuses make_schedule / make_optimizer settings that cannot work
    if training.pack and getattr(self.model, "pad_is_token", False):
      raise errors.SettingError(
          "TrainSettings.pack = True packs examples by seqio's rule, which takes id 0 for "
          "padding, but this model's vocabulary has a real token 0 (an imported checkpoint's): "
          "set TrainSettings.pack = False.")
    sampling = getattr(self.objective, "sampling", None)
    if sampling is not None:
      name = type(self.objective).__name__
      check_decoding(sampling, f"{name}.sampling")
      if training.pack:
        raise errors.SettingError(f"{name} samples completions per input and needs unpacked "
                                  "batches: set TrainSettings.pack = False.")
    if not evaluation.examples:
      if evaluation.every:
        logging.warning("EvalSettings.every = %d does nothing: EvalSettings.examples = 0 turns "
                        "evaluation off.", evaluation.every)
      return self
    size, data = evaluation.batch_size, mesh.data_size
    if size is not None and (size % data or size % hosts):
      divisor = data * hosts // math.gcd(data, hosts)
      raise errors.SettingError(
          f"EvalSettings.batch_size = {size} is not divisible by the mesh's data axis ({data}) "
          f"and the {hosts} host(s): choose a multiple of {divisor}, or leave it unset to use "
          "TrainSettings.batch_size.")
    if evaluation.every and evaluation.every >= training.num_train_steps:
      logging.warning("EvalSettings.every = %d is not below TrainSettings.num_train_steps = %d: "
                      "only the step-0 and final evaluations run.", evaluation.every,
                      training.num_train_steps)
    return self
