"""Teacher-forced validation loss: the objective's metrics on held-out batches, no gradient.

What selects runs by validation loss and shows over-fitting in the curves: the objective's
`nll`, `td_loss`, `loss`, ... on a fixed list of validation batches, averaged over them. An
online objective (which samples) is measured with the offline metrics of `MLE` (NLL and the
implicit-reward diagnostics; online IQLearn with the offline `IQLearn` of the same λ and γ),
which need no samples.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np

from irl_lm.training import objectives as objectives_lib
from irl_lm.training import trainer

Batch = Mapping[str, np.ndarray]


def offline_objective(objective: Any) -> Callable[..., Any]:
  """The objective whose metrics the validation loss reports: `objective` itself when it is
  offline (`(params, batch, rng, model) -> (loss, metrics)`), `IQLearn` of the same λ and γ
  for `IQLearnOnline`, else `MLE()`."""
  if isinstance(objective, objectives_lib.IQLearnOnline):
    return objectives_lib.IQLearn(td_weight=objective.td_weight, gamma=objective.gamma)
  if isinstance(objective, objectives_lib.OnlineObjective):
    return objectives_lib.MLE()
  return objective


def make_loss_fn(model: Any, objective: Any, *, partitioner: Any, param_shardings: Any
                 ) -> Callable[[Any, Batch], dict[str, float]]:
  """A jitted `(params, host-local batch) -> {metric: float}` of `offline_objective`, without
  dropout (rng None), the batch sharded over 'data' as in training; the objective's token
  'accuracy' is reported as 'token_accuracy'."""
  measured = offline_objective(objective)

  def fn(params, batch):
    loss, metrics = measured(params, batch, None, model)
    # 'accuracy' (of the argmax token) would clash with GSM8k's task accuracy in the logs.
    renamed = {("token_accuracy" if k == "accuracy" else k): v for k, v in metrics.items()}
    return {**renamed, "loss": loss}

  sharding = partitioner.batch_sharding()
  jitted = partitioner.jit(fn, in_shardings=(param_shardings, sharding))

  def run(params: Any, batch: Batch) -> dict[str, float]:
    values = jax.device_get(jitted(params, trainer.global_batch(batch, sharding)))
    return {k: float(v) for k, v in values.items()}
  return run


def mean_metrics(loss_fn: Callable[[Any, Batch], Mapping[str, float]], params: Any,
                 batches: Sequence[Batch]) -> dict[str, float]:
  """The mean of `loss_fn`'s metrics over `batches` (equally sized, so a mean of means is the
  mean over batches); {} for no batch."""
  per_batch = [loss_fn(params, b) for b in batches]
  if not per_batch:
    return {}
  return {k: float(np.mean([m[k] for m in per_batch])) for k in per_batch[0]}


def select_step(records: Sequence[Mapping[str, Any]], steps: Sequence[int], *, split: str,
                metric: str = "nll") -> Optional[tuple[int, float]]:
  """The checkpoint to report: of `steps`, the one whose evaluation record has the lowest
  ``eval_<split>/<metric>`` (the earliest on a tie). Pure.

  Args:
    records: ``metrics.jsonl`` records ({'step', 'eval_<split>/<metric>': value, ...}).
    steps: the steps that have a checkpoint.
    split, metric: which value selects (lower is better, e.g. teacher-forced NLL).

  Returns:
    (step, value), or None when no checkpointed step has a finite value.
  """
  key, available = f"eval_{split}/{metric}", set(int(s) for s in steps)
  values = {int(r["step"]): float(r[key]) for r in records
            if key in r and int(r.get("step", -1)) in available and np.isfinite(r[key])}
  if not values:
    return None
  best = min(sorted(values), key=lambda s: values[s])
  return best, values[best]
