"""The train job (`run.mode = 'train'`): data → sharded step → checkpoints, logs, evaluation.

It composes the libraries: the model's train-state layout (`training.state`), the run
checkpointer or a starting checkpoint (`checkpoints`), the seqio pipeline with the model's
feature converter (`data`), the jitted step (`training.step`), the loop (`training.trainer`) and
the `Evaluator` (`evaluation`) for the evaluation during and after training.
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Mapping, Optional

import jax
import numpy as np
from absl import logging
from etils import epath

from irl_lm.checkpoints import manager as checkpoints_lib
from irl_lm.data import sources
from irl_lm.evaluation import evaluator as evaluator_lib
from irl_lm.jobs import common
from irl_lm.models import flops, lora
from irl_lm.partitioning import Partitioner
from irl_lm.training import step as step_lib
from irl_lm.training import term_norms as term_norms_lib
from irl_lm.training import trainer
from irl_lm.training import validation
from irl_lm.training.settings import RunSettings

Batch = Mapping[str, np.ndarray]


def train(run_dir: str, run: RunSettings, *, batches: Optional[Iterator[Batch]] = None
          ) -> dict[str, Any]:
  """Trains `run.model` on `run.task` with `run.objective`, checkpointing and evaluating.

  Resumes from the newest checkpoint in `<run_dir>/checkpoints` when there is one, exactly: the
  data order is step-indexed (`data.pipeline.get_batches` with `start_batch`), the step's RNG
  lives in the checkpoint, and `metrics.jsonl` is cut back to the restored step (see
  `trainer.MetricsLog`), so the resumed steps repeat the uninterrupted run's numbers.

  SIGTERM / Ctrl-C: the current step is finished, logged and checkpointed, then
  `stopping.Preempted` is raised (after the checkpoint committed); see `training.stopping`.

  Args:
    run_dir: output directory (checkpoints/, metrics.jsonl, tensorboard/, eval files).
    run: the run's settings (`training.settings`; checked here with `RunSettings.validate`).
    batches: optional iterator of host-local batches replacing the seqio pipeline (tests).

  Returns:
    {'final_step', 'train_seconds', 'loss_first', 'loss_last', 'history' (list of logged
    records), 'eval' (metrics dict or None)}.
  """
  run.validate()
  model, objective, task, partitioner = run.model, run.objective, run.task, run.mesh
  feature_lengths, init_from = run.feature_lengths, run.init_from
  training, evaluation = run.training, run.evaluation
  batch_size, seed = training.batch_size, training.seed
  layout, tx, lr_schedule = common.train_state_layout(run)
  epath.Path(run_dir).mkdir(parents=True, exist_ok=True)
  if common.is_writer():  # what conversion needs beyond the shapes (e.g. the head split)
    from irl_lm.checkpoints import formats  # pylint: disable=g-import-not-at-top
    formats.write_model_config(run_dir, model.config,
                               lora=getattr(model, "lora", None))

  checkpointer = checkpoints_lib.Checkpointer(
      os.path.join(run_dir, "checkpoints"), save_every=run.checkpoints.every,
      keep=run.checkpoints.keep)
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
                                          shardings=layout.shardings,
                                          on_nonfinite=training.on_nonfinite,
                                          microbatches=training.microbatches)
    term_norms = None
    if training.term_grad_norms:
      term_norms = term_norms_lib.make_term_grad_norms(
          model=model, objective=objective, partitioner=partitioner, shardings=layout.shardings,
          microbatches=training.microbatches)
    if batches is None:
      from irl_lm.data import pipeline  # TensorFlow only when real data is needed.
      # Step-indexed order: a resumed run reads exactly the batches it would have read.
      batches = pipeline.get_batches(
          task, "train", feature_lengths=dict(feature_lengths),
          batch_size=batch_size // jax.process_count(), shuffle=True, seed=seed,
          feature_converter=model.feature_converter(training.pack), repeat=True,
          num_shards=jax.process_count(), shard_index=jax.process_index(),
          start_batch=start_step)

    log = trainer.MetricsLog(run_dir, tensorboard=training.tensorboard, resume_step=start_step)
    evaluator, split, decoding = None, evaluation.split, evaluation.decoding
    if evaluation.examples > 0:
      evaluator = evaluator_lib.Evaluator(
          model, task=task, split=split, num_examples=evaluation.examples,
          feature_lengths=feature_lengths, batch_size=evaluation.batch_size or batch_size,
          partitioner=partitioner, param_shardings=layout.param_shardings,
          scoring=evaluator_lib.Scoring(gamma=float(getattr(objective, "gamma", 1.0))))
      loss_fn = validation.make_loss_fn(model, objective, partitioner=partitioner,
                                        param_shardings=layout.param_shardings)
      loss_batches = _validation_batches(model, task, split, feature_lengths, batch_size,
                                         max(1, evaluation.examples // batch_size))

    def evaluate(step: int, params: Any, final: bool = False
                 ) -> tuple[dict[str, float], Optional[dict], list]:
      metrics = validation.mean_metrics(loss_fn, params, loss_batches)
      line = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k in ("nll", "td_loss"))
      summary, records = None, []
      every = evaluation.decode_every
      if final or every is None or (every > 0 and step % every == 0):
        summary, records = evaluator.evaluate(params, decoding)
        summary["teacher_forced"] = dict(metrics)
        metrics = {**evaluator_lib.log_metrics(summary), **metrics}  # task scores first
        line = evaluator_lib.describe(summary) + (f" | {line}" if line else "")
      if summary is not None and evaluation.diversity_examples > 0:
        diversity, _ = evaluator.diversity(params,
                                           samples_per_input=evaluation.diversity_samples,
                                           seed=decoding.seed,
                                           num_inputs=evaluation.diversity_examples)
        metrics["self_bleu"] = diversity["self_bleu"]["value"]
        summary["self_bleu"] = diversity["self_bleu"]
      log.write(step, f"eval_{split}", metrics)
      trainer.console(f"step {step} | eval_{split} {line}")
      return metrics, summary, records

    state, history, train_seconds = trainer.fit(
        state, train_step, trainer.global_batches(batches, partitioner.batch_sharding()),
        settings=training, checkpointer=checkpointer, log=log,
        eval_every=evaluation.every if evaluator else 0,
        evaluate=lambda step, state: evaluate(step, state.params),
        extras=trainer.RecordExtras(
            trainer.Throughput(_flops_per_step(model, batch_size, feature_lengths),
                               _peak_flops(partitioner)),
            term_norms=term_norms))
    open_checkpointer.pop().close()  # the checkpoints commit before the final evaluation

    eval_metrics = None
    if evaluator is not None:
      eval_metrics, summary, records = evaluate(int(state.step), state.params, final=True)
      if common.is_writer():
        name = os.path.join(run_dir, f"eval_{split}_{summary['setting']}")
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
