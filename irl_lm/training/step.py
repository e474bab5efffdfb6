"""One jitted, sharded train step: `(state, batch) -> (state, metrics)`."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import optax

from irl_lm.training.objectives import Objective
from irl_lm.training.partitioning import Partitioner
from irl_lm.training.state import TrainState

TrainStep = Callable[[TrainState, Mapping[str, jax.Array]], tuple[TrainState, dict]]


def train_step(state: TrainState, batch: Mapping[str, jax.Array], *, model: Any,
               objective: Objective, tx: optax.GradientTransformation,
               schedule: optax.Schedule) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimiser update (not jitted; see `make_train_step`).

  Args:
    state: the current TrainState.
    batch: seqio encoder-decoder features, arrays [B, ...].
    model: the model object (`logits`, ...).
    objective: `(params, batch, rng, model) -> (loss, metrics)`.
    tx: optimiser; schedule: its learning-rate schedule (logged only).

  Returns:
    (new state, metrics): metrics are float32 scalars, including 'loss', 'grad_norm' and
    'learning_rate' plus whatever the objective reports.
  """
  rng, step_rng = jax.random.split(state.rng)

  def loss_fn(params):
    return objective(params, batch, step_rng, model)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads),
                 learning_rate=schedule(state.step))
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng)
  return new_state, metrics


def make_train_step(*, model: Any, objective: Objective, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, partitioner: Partitioner,
                    shardings: TrainState) -> TrainStep:
  """Jits `train_step` with explicit in/out shardings and the state donated.

  Args:
    model, objective, tx, schedule: closed over (see `train_step`).
    partitioner: the mesh and rules; the step is traced with them active so the model's
      activation sharding constraints apply.
    shardings: TrainState-shaped pytree of NamedShardings (`state.state_shardings`).

  Returns:
    `step(state, batch) -> (state, metrics)`; batch arrays must be sharded over 'data'
    (`partitioner.batch_sharding()`); metrics come back replicated.
  """
  def step(state, batch):
    return train_step(state, batch, model=model, objective=objective, tx=tx,
                      schedule=schedule)

  jitted = jax.jit(step, in_shardings=(shardings, partitioner.batch_sharding()),
                   out_shardings=(shardings, partitioner.replicated()), donate_argnums=0)

  def run(state, batch):
    with partitioner.activate():
      return jitted(state, batch)

  return run
