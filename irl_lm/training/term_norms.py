"""Per-term gradient norms of an offline objective: how hard each term pulls on the parameters.

For the objective's unweighted terms (the NLL, the TD penalty E[r²] before λ, the mean entropy
before β) the global L2 norm of each term's own gradient w.r.t. the parameters; λ·‖∇E[r²]‖ is
then the TD term's effective pull next to ‖∇NLL‖. Each term costs an extra backward pass (and,
with microbatches, an extra forward pass), so the trainer computes them only at its log steps
(`TrainSettings.term_grad_norms`).
"""
from __future__ import annotations

from typing import Any, Callable, Collection, Mapping

import jax
import jax.numpy as jnp
import optax

from irl_lm.partitioning import Partitioner
from irl_lm.training import objectives as objectives_lib
from irl_lm.training import step as step_lib
from irl_lm.training.state import TrainState

Batch = Mapping[str, jax.Array]

# The metrics that are terms of an objective, in logging order.
TERMS = ("nll", "td_loss", "entropy")


def term_names(objective: Any, metric_names: Collection[str]) -> tuple[str, ...]:
  """The `TERMS` among `metric_names` whose gradient `objective` carries.

  `MLE` logs 'td_loss' as a diagnostic without gradient, so it is left out there.
  """
  names = tuple(t for t in TERMS if t in metric_names)
  if isinstance(objective, objectives_lib.MLE):
    names = tuple(t for t in names if t != "td_loss")
  return names


def term_grad_norms(objective: objectives_lib.Objective, params: Any, batch: Batch,
                    rng: jax.Array, model: Any, *, microbatches: int = 1
                    ) -> dict[str, jax.Array]:
  """The gradient norm of each term of an offline objective's metrics.

  Args:
    objective: offline, `(params, batch, rng, model) -> (loss, metrics)` (MLE, IQLearn).
    params: the parameters the gradients are taken w.r.t.
    batch: features, arrays [B, ...].
    rng: the key `step.train_step` hands the objective (dropout).
    model: the model.
    microbatches: with k > 1, each term's gradient is accumulated over k slices of the batch as
      the train step does (`step.microbatch_grads`, slice i keyed `fold_in(rng, i)`).

  Returns:
    {'grad_norm/<term>': float32 scalar `optax.global_norm(∇ term)`} for each of
    `term_names(objective, metrics)`.
  """
  def terms(p, b, r):
    return objective(p, b, r, model)[1]

  names = term_names(objective, jax.eval_shape(terms, params, batch, rng))
  norms = {}
  if microbatches > 1:
    for name in names:
      _, grads = step_lib.microbatch_grads(
          lambda p, b, r, name=name: (terms(p, b, r)[name], {}), params, batch, rng,
          microbatches)
      norms[f"grad_norm/{name}"] = optax.global_norm(grads)
  else:
    # One forward pass shared by every term's backward pass.
    values, pullback = jax.vjp(lambda p: {n: terms(p, batch, rng)[n] for n in names}, params)
    for name in names:
      (grads,) = pullback({n: jnp.asarray(float(n == name), values[n].dtype) for n in names})
      norms[f"grad_norm/{name}"] = optax.global_norm(grads)
  return norms


def make_term_grad_norms(*, model: Any, objective: objectives_lib.Objective,
                         partitioner: Partitioner, shardings: TrainState,
                         microbatches: int = 1
                         ) -> Callable[[TrainState, Batch], dict[str, jax.Array]]:
  """Jits `term_grad_norms` for the train state and batch the train step receives.

  Args:
    model, objective, microbatches: as `term_grad_norms` (objective offline).
    partitioner: the training mesh and rules.
    shardings: TrainState-shaped NamedShardings (`state.state_shardings`).

  Returns:
    `norms(state, batch) -> {'grad_norm/<term>': scalar}` at `state.params`, with the key
    `step.train_step` would give the objective for `state` (drawn from `state.rng` without
    advancing it: the training is unchanged). The batch is sharded over 'data'; the norms come
    back replicated.

  Raises:
    ValueError: `objective` is online.
  """
  if isinstance(objective, objectives_lib.OnlineObjective):
    raise ValueError(f"per-term gradient norms need an offline objective (MLE, IQLearn), not "
                     f"{type(objective).__name__}.")

  def norms(params, state_rng, batch):
    _, step_rng = jax.random.split(state_rng)
    return term_grad_norms(objective, params, batch, step_rng, model, microbatches=microbatches)

  jitted = partitioner.jit(
      norms, in_shardings=(shardings.params, shardings.rng, partitioner.batch_sharding()),
      out_shardings=partitioner.replicated())
  return lambda state, batch: jitted(state.params, state.rng, batch)
