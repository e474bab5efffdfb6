"""The train job (`run.mode = 'train'`): data → sharded step → checkpoints, logs, evaluation.

It composes the libraries: the model's train-state layout (`training.state`), the run
checkpointer or a starting checkpoint (`checkpoints`), the seqio pipeline with the model's
feature converter (`data`), the jitted step (`training.step`), the loop (`training.trainer`) and
the `Evaluator` (`evaluation`) for the evaluation during and after training.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Mapping, Optional

import jax
import numpy as np
import optax
from absl import logging
from etils import epath

from irl_lm.checkpoints import manager as checkpoints_lib
from irl_lm.data import sources
from irl_lm.decoding.config import DecodingConfig
from irl_lm.evaluation import evaluator as evaluator_lib
from irl_lm.jobs import common
from irl_lm.models import flops, lora
from irl_lm.partitioning import Partitioner
from irl_lm.training import optimizers
from irl_lm.training import step as step_lib
from irl_lm.training import trainer
from irl_lm.training import validation
from irl_lm.training.objectives import IQLearn, Objective

Batch = Mapping[str, np.ndarray]


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
          decoding: DecodingConfig = DecodingConfig(),
          eval_every: int = 0, eval_decode_every: Optional[int] = None,
          eval_diversity_examples: int = 0,
          eval_diversity_samples: int = 4,
          batches: Optional[Iterator[Batch]] = None,
          tensorboard: bool = True,
          init_from: Optional[str] = None,
          on_nonfinite: str = "stop", microbatches: int = 1) -> dict[str, Any]:
  """Trains `model` on a seqio task with `objective`, checkpointing and evaluating.

  Resumes from the newest checkpoint in `<run_dir>/checkpoints` when there is one, exactly: the
  data order is step-indexed (`data.pipeline.get_batches` with `start_batch`), the step's RNG
  lives in the checkpoint, and `metrics.jsonl` is cut back to the restored step (see
  `trainer.MetricsLog`), so the resumed steps repeat the uninterrupted run's numbers.

  SIGTERM / Ctrl-C: the current step is finished, logged and checkpointed, then
  `stopping.Preempted` is raised (after the checkpoint committed); see `training.stopping`.

  Args:
    run_dir: output directory (checkpoints/, metrics.jsonl, tensorboard/, eval files).
    model: a `models.base.Model` (e.g. `t5.EncoderDecoderModel`).
    task: seqio task name (see `irl_lm.data.registry`).
    feature_lengths: {'inputs': L, 'targets': T}.
    batch_size: global batch size (must divide over the mesh's 'data' axis and hosts).
    num_train_steps: total number of updates (a resumed run continues up to it).
    objective: the method (`objectives.MLE()`, `objectives.IQLearn()`, ...).
    partitioner: mesh and sharding rules (default: all devices on 'data').
    optimizer: factory `(schedule=...) -> optax transform` (`optimizers.make_optimizer`).
    schedule: factory `(total_steps=...) -> optax schedule` (`optimizers.make_schedule`).
    seed: parameter-init, dropout and data-shuffle seed (epoch e is shuffled with
      `pipeline.epoch_seed(seed, e)`).
    pack: pack several examples per row (seqio packing).
    checkpoint_every, keep_checkpoints: Orbax checkpoint interval and retention.
    log_every: steps between metric records / progress lines.
    eval_split, eval_examples, eval_batch_size, decoding: the evaluation after training (0
      examples skips every evaluation): task scores of `decoding` on a seeded random subset
      of `eval_examples` of the split (`pipeline.EVAL_SUBSET_SEED`, as evaluate mode), next
      to the task's trivial baselines (`eval_<split>/baseline_<score>`, `/margin`) and with
      `/repeated_3gram_rate`; the final one also writes per-example records with implicit
      rewards and log-probs (`eval_<split>_<setting>.jsonl`). Every evaluation also logs the
      teacher-forced validation loss of the objective (`eval_<split>/nll`, `/td_loss`,
      `/loss`, ...) on the first `eval_examples // batch_size` (at least one) batches of
      `batch_size` of the split.
    eval_every: also evaluate every K steps during training (0: only at the end), into
      metrics.jsonl / TensorBoard as `eval_<split>/<score>`.
    eval_decode_every: decode (task scores, baselines) only at the evaluations whose step is
      a multiple of this (None: at every one; 0: only the final one); the others log only the
      teacher-forced validation loss.
    eval_diversity_examples, eval_diversity_samples: with N > 0, each evaluation also draws K
      samples at temperature 1 for the first N examples and logs their Self-BLEU
      (`eval_<split>/self_bleu`, K and 13a tokenisation as in evaluate mode).
    batches: optional iterator of host-local batches replacing the seqio pipeline (tests).
    tensorboard: also write TensorBoard summaries.
    init_from: a checkpoint to start from when the run directory has none yet: a T5X
      checkpoint (legacy msgpack + zarr, or Orbax), a Hugging Face directory or an irl_lm run
      (see `checkpoints.formats.detect_format`). Only its parameters are taken (checked
      against the model); the optimiser starts fresh at step 0. Ignored on resume. A
      `{data_root}` placeholder names the data root.
    on_nonfinite: 'stop' (default): stop at the first step whose loss, gradient norm or
      updated state is not finite, before saving anything of it (`stopping.NonFiniteError`
      names the step and the last good checkpoint); 'skip': do not apply such updates (the
      step counter still advances) and count them as `train/skipped_updates`.
    microbatches: accumulate each step's gradient over this many slices of the batch (offline
      objectives): the same update with about 1/microbatches of the activation memory.

  Returns:
    {'final_step', 'train_seconds', 'loss_first', 'loss_last', 'history' (list of logged
    records), 'eval' (metrics dict or None)}.
  """
  partitioner = partitioner or Partitioner()
  try:
    step_lib.check_nonfinite_mode(on_nonfinite)
    step_lib.check_microbatches(microbatches, objective, batch_size // jax.process_count(),
                                partitioner.data_size // jax.process_count())
  except ValueError as e:
    raise common.JobError(str(e)) from None
  layout, tx, lr_schedule = common.train_state_layout(
      model=model, objective=objective, partitioner=partitioner, optimizer=optimizer,
      schedule=schedule, batch_size=batch_size, feature_lengths=feature_lengths,
      num_train_steps=num_train_steps, seed=seed)
  epath.Path(run_dir).mkdir(parents=True, exist_ok=True)
  if common.is_writer():  # what conversion needs beyond the shapes (e.g. the head split)
    from irl_lm.checkpoints import formats  # pylint: disable=g-import-not-at-top
    formats.write_model_config(run_dir, model.config,
                               lora=getattr(model, "lora", None))

  checkpointer = checkpoints_lib.Checkpointer(
      os.path.join(run_dir, "checkpoints"), save_every=checkpoint_every, keep=keep_checkpoints)
  # Closed on every way out: an Orbax manager left open prints tracebacks at exit.
  log, open_checkpointer = None, [checkpointer]
  try:
    if checkpointer.latest_step() is not None:
      state = checkpointer.restore(layout.abstract, layout.shardings)
      trainer.console(f"Resuming from checkpoint {int(state.step)} in {checkpointer.directory}.")
      if init_from:
        logging.info("resuming, so init_from=%s is ignored", init_from)
    elif init_from:
      from irl_lm.checkpoints import formats  # pylint: disable=g-import-not-at-top
      if isinstance(model, lora.LoraModel):  # the checkpoint is the base; fresh adapters
        base = formats.load_params(sources.expand_path(init_from), layout.abstract.params["base"],
                                   shardings=layout.param_shardings["base"])
        state = layout.init_from_params(model.with_base(base, jax.random.key(seed)))
      else:
        state = layout.init_from_params(formats.load_params(
            sources.expand_path(init_from), layout.abstract.params,
            shardings=layout.param_shardings))
    else:
      state = layout.init_fn()
    start_step = int(state.step)

    train_step = step_lib.make_train_step(model=model, objective=objective, tx=tx,
                                          schedule=lr_schedule, partitioner=partitioner,
                                          shardings=layout.shardings, on_nonfinite=on_nonfinite,
                                          microbatches=microbatches)
    if batches is None:
      from irl_lm.data import pipeline  # TensorFlow only when real data is needed.
      # Step-indexed order: a resumed run reads exactly the batches it would have read.
      batches = pipeline.get_batches(
          task, "train", feature_lengths=dict(feature_lengths),
          batch_size=batch_size // jax.process_count(), shuffle=True, seed=seed,
          feature_converter=model.feature_converter(pack), repeat=True,
          num_shards=jax.process_count(), shard_index=jax.process_index(),
          start_batch=start_step)

    log = trainer.MetricsLog(run_dir, tensorboard=tensorboard, resume_step=start_step)
    evaluator = None
    if eval_examples > 0:
      evaluator = evaluator_lib.Evaluator(
          model, task=task, split=eval_split, num_examples=eval_examples,
          feature_lengths=feature_lengths, batch_size=eval_batch_size or batch_size,
          partitioner=partitioner, param_shardings=layout.param_shardings,
          gamma=float(getattr(objective, "gamma", 1.0)))
      loss_fn = validation.make_loss_fn(model, objective, partitioner=partitioner,
                                        param_shardings=layout.param_shardings)
      loss_batches = _validation_batches(model, task, eval_split, feature_lengths, batch_size,
                                         max(1, eval_examples // batch_size))

    def evaluate(step: int, params: Any, final: bool = False
                 ) -> tuple[dict[str, float], Optional[dict], list]:
      metrics = validation.mean_metrics(loss_fn, params, loss_batches)
      line = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k in ("nll", "td_loss"))
      summary, records = None, []
      if final or eval_decode_every is None or (eval_decode_every > 0 and
                                                step % eval_decode_every == 0):
        summary, records = evaluator.evaluate(params, decoding)
        summary["teacher_forced"] = dict(metrics)
        metrics = {**evaluator_lib.log_metrics(summary), **metrics}  # task scores first
        line = evaluator_lib.describe(summary) + (f" | {line}" if line else "")
      if summary is not None and eval_diversity_examples > 0:
        diversity, _ = evaluator.diversity(params, samples_per_input=eval_diversity_samples,
                                           seed=decoding.seed,
                                           num_inputs=eval_diversity_examples)
        metrics["self_bleu"] = diversity["self_bleu"]["value"]
        summary["self_bleu"] = diversity["self_bleu"]
      log.write(step, f"eval_{eval_split}", metrics)
      trainer.console(f"step {step} | eval_{eval_split} {line}")
      return metrics, summary, records

    state, history, train_seconds = trainer.fit(
        state, train_step, batches, num_train_steps=num_train_steps,
        batch_sharding=partitioner.batch_sharding(), checkpointer=checkpointer, log=log,
        log_every=log_every, eval_every=eval_every if evaluator else 0,
        evaluate=lambda step, state: evaluate(step, state.params), on_nonfinite=on_nonfinite,
        flops_per_step=_flops_per_step(model, batch_size, feature_lengths),
        peak_flops=_peak_flops(partitioner))
    open_checkpointer.pop().close()  # the checkpoints commit before the final evaluation

    eval_metrics = None
    if evaluator is not None:
      eval_metrics, summary, records = evaluate(int(state.step), state.params, final=True)
      if common.is_writer():
        name = os.path.join(run_dir, f"eval_{eval_split}_{summary['setting']}")
        common.write_json_lines(f"{name}.jsonl", records)
        common.write_json(f"{name}_summary.json", summary)
  finally:
    if open_checkpointer:
      open_checkpointer.pop().close()  # waits for pending saves (e.g. a preemption's)
    if log is not None:
      log.close()
  losses = [h["loss"] for h in history]
  return {"final_step": int(state.step), "train_seconds": train_seconds,
          "loss_first": losses[0] if losses else None,
          "loss_last": losses[-1] if losses else None,
          "history": history, "eval": eval_metrics}


def _validation_batches(model: Any, task: str, split: str, feature_lengths: Mapping[str, int],
                        batch_size: int, num_batches: int) -> list[Batch]:
  """The first `num_batches` unshuffled batches of `split` (this host's rows), fewer when the
  split is smaller: the fixed set the validation loss is measured on."""
  from irl_lm.data import pipeline  # pylint: disable=g-import-not-at-top (TF)
  batches = pipeline.get_batches(
      task, split, feature_lengths=dict(feature_lengths),
      batch_size=batch_size // jax.process_count(), shuffle=False, seed=None,
      feature_converter=model.feature_converter(False), repeat=False,
      num_shards=jax.process_count(), shard_index=jax.process_index())
  out = [dict(b) for _, b in zip(range(num_batches), batches)]
  if not out:
    logging.warning("the %s split has fewer examples than one batch of %d: no validation "
                    "loss is logged.", split, batch_size)
  return out


def _flops_per_step(model: Any, batch_size: int, feature_lengths: Mapping[str, int]
                    ) -> Optional[float]:
  """The model FLOPs of one train step (None for a model family without a count)."""
  try:
    return flops.train_flops(model.config, batch_size, feature_lengths)
  except TypeError:
    return None


def _peak_flops(partitioner: Partitioner) -> Optional[float]:
  """Peak bfloat16 FLOP/s of the mesh's devices together (None on CPUs and unknown chips)."""
  devices = list(partitioner.mesh.devices.flat)
  peak = flops.peak_flops(devices[0].device_kind)
  return peak * len(devices) if peak else None
