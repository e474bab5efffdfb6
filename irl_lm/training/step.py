"""One jitted, sharded train step: `(state, batch) -> (state, metrics)`.

Randomness: the step's key comes from splitting `state.rng`, which the state carries (and every
checkpoint stores), so the key of step s is a function of the seed and s alone and a resumed run
draws exactly the dropout masks (and samples) of an uninterrupted one.

Non-finite values: every step reports whether its loss, its gradient norm and the updated state
are finite (`HEALTH_KEYS`, scalar bools the trainer checks and does not log). With
`on_nonfinite='skip'` a step with any of them non-finite keeps the old parameters, optimiser
state and extra state (the step counter and the RNG still advance, so the batch is not
retried and the data order stays step-indexed); with 'stop' (the default) the update is applied
and the trainer stops before anything of it is saved.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from irl_lm.models import layers
from irl_lm.training.objectives import Objective, OnlineObjective, sampling_rng
from irl_lm.partitioning import Partitioner
from irl_lm.training.state import TrainState

TrainStep = Callable[[TrainState, Mapping[str, jax.Array]], tuple[TrainState, dict]]

NONFINITE_MODES = ("stop", "skip")
# The step's finiteness flags (scalar bools) in its metrics, in this order of blame.
HEALTH_KEYS = ("finite_loss", "finite_grad_norm", "finite_state")


def _all_finite(tree: Any) -> jax.Array:
  flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
           if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(flags)) if flags else jnp.array(True)


def _guard(old: TrainState, new: TrainState, metrics: dict[str, jax.Array],
           on_nonfinite: str) -> tuple[TrainState, dict[str, jax.Array]]:
  """Adds the HEALTH_KEYS flags to `metrics`; with 'skip', undoes a non-finite update."""
  health = {"finite_loss": jnp.isfinite(metrics["loss"]),
            "finite_grad_norm": jnp.isfinite(metrics["grad_norm"]),
            "finite_state": _all_finite((new.params, new.opt_state, new.extra))}
  if on_nonfinite == "skip":
    ok = health["finite_loss"] & health["finite_grad_norm"] & health["finite_state"]
    kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), (new.params, new.opt_state, new.extra),
                        (old.params, old.opt_state, old.extra))
    new = new.replace(params=kept[0], opt_state=kept[1], extra=kept[2])
  return new, dict(metrics, **health)


def microbatch_grads(loss_fn: Callable[..., Any], params: Any, batch: Mapping[str, jax.Array],
                      rng: jax.Array, microbatches: int) -> tuple[Any, dict, Any]:
  """(loss, metrics) and gradients of `loss_fn(params, batch, rng)` accumulated over
  `microbatches` slices of the batch, one at a time (`lax.scan`: only one slice's activations
  live at once).

  Slice i is rows i, i + k, i + 2k, ... (k = microbatches), so on a data-parallel mesh every
  device keeps working on its own rows. Each slice's loss, metrics and gradients are weighted by
  its share of the batch's real target tokens: for losses that are means over real target tokens
  (MLE, IQLearn, the entropy bonus) the result equals the whole batch's within float rounding.
  Slice i's key is `fold_in(rng, i)`.
  """
  weights = batch["decoder_loss_weights"]
  rows = weights.shape[0]
  total = jnp.maximum(jnp.sum(weights > 0).astype(jnp.float32), 1.0)

  def split(x):
    x = x.reshape((rows // microbatches, microbatches) + x.shape[1:])
    return layers.constrain(jnp.swapaxes(x, 0, 1), (None, "batch") + (None,) * (x.ndim - 2))

  slices = jax.tree.map(split, dict(batch))

  def body(carry, inputs):
    index, micro = inputs
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, micro, jax.random.fold_in(rng, index))
    share = jnp.sum(micro["decoder_loss_weights"] > 0).astype(jnp.float32) / total
    scaled = jax.tree.map(lambda x: share * x, (loss, metrics, grads))
    return jax.tree.map(jnp.add, carry, scaled), None

  first = jax.eval_shape(lambda: jax.value_and_grad(loss_fn, has_aux=True)(
      params, jax.tree.map(lambda x: x[0], slices), rng))
  (loss_shape, metrics_shape), grads_shape = first
  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                       (loss_shape, metrics_shape, grads_shape))
  (loss, metrics, grads), _ = jax.lax.scan(
      body, zeros, (jnp.arange(microbatches), slices))
  return (loss, metrics), grads


def train_step(state: TrainState, batch: Mapping[str, jax.Array], *, model: Any,
               objective: Objective, tx: optax.GradientTransformation,
               schedule: optax.Schedule,
               samples: Mapping[str, jax.Array] | None = None,
               on_nonfinite: str = "stop",
               microbatches: int = 1) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimiser update (not jitted; see `make_train_step`).

  Args:
    state: the current TrainState.
    batch: seqio encoder-decoder features, arrays [B, ...].
    model: the model object (`logits`, ...).
    objective: `(params, batch, rng, model) -> (loss, metrics)`, or an `OnlineObjective`
      (see `online_train_step`).
    tx: optimiser; schedule: its learning-rate schedule (logged only).
    samples: only for an `OnlineObjective`: samples drawn outside the step (None: drawn here).
    on_nonfinite: 'stop' or 'skip' (see the module docstring).
    microbatches: accumulate the gradient over this many slices of the batch (offline
      objectives; `microbatch_grads`): the same update in less activation memory.

  Returns:
    (new state, metrics): metrics are float32 scalars, including 'loss', 'grad_norm' and
    'learning_rate' plus whatever the objective reports, and the HEALTH_KEYS bools.
  """
  if isinstance(objective, OnlineObjective):
    return online_train_step(state, batch, model=model, objective=objective, tx=tx,
                             schedule=schedule, samples=samples, on_nonfinite=on_nonfinite)
  rng, step_rng = jax.random.split(state.rng)
  if microbatches > 1:
    (loss, metrics), grads = microbatch_grads(
        lambda p, b, r: objective(p, b, r, model), state.params, batch, step_rng, microbatches)
  else:
    (loss, metrics), grads = jax.value_and_grad(
        lambda p: objective(p, batch, step_rng, model), has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads),
                 learning_rate=schedule(state.step))
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng)
  return _guard(state, new_state, metrics, on_nonfinite)


def online_train_step(state: TrainState, batch: Mapping[str, jax.Array], *, model: Any,
                      objective: OnlineObjective, tx: optax.GradientTransformation,
                      schedule: optax.Schedule,
                      samples: Mapping[str, jax.Array] | None = None,
                      on_nonfinite: str = "stop") -> tuple[TrainState, dict[str, jax.Array]]:
  """One update of an online objective (not jitted; see `make_train_step`).

  1. Samples from the current policy with key `sampling_rng(state.rng)`, without gradient
     (unless `samples` are given: then they were drawn outside with that same key).
  2. `objective.prepare`: updates of the extra state that take no policy gradient.
  3. Gradient of `objective.loss` w.r.t. the parameters and one optimiser update.

  Args:
    state: the current TrainState (its `extra` as built by `objective.init_extra`).
    batch: unpacked seqio encoder-decoder features, arrays [B, ...].
    model, tx, schedule: as `train_step`.
    objective: an `OnlineObjective`.
    samples: optional pre-drawn samples (`objective.sample`'s output).
    on_nonfinite: as `train_step`.

  Returns:
    (new state, metrics): float32 scalars, 'loss', 'grad_norm', 'learning_rate', the
    objective's loss metrics and the metrics of `prepare`, and the HEALTH_KEYS bools.
  """
  rng, step_rng = jax.random.split(state.rng)
  prepare_rng, loss_rng = jax.random.split(step_rng)
  if samples is None:
    samples = objective.sample(jax.lax.stop_gradient(state.params), batch,
                               sampling_rng(state.rng), model)
  samples = jax.lax.stop_gradient(samples)
  extra, aux, prepare_metrics = objective.prepare(
      state.params, state.extra, batch, samples, prepare_rng, model)

  def loss_fn(params):
    return objective.loss(params, extra, aux, batch, samples, loss_rng, model)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(prepare_metrics, **metrics)
  metrics.update(loss=loss, grad_norm=optax.global_norm(grads),
                 learning_rate=schedule(state.step))
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng,
                            extra=extra)
  return _guard(state, new_state, metrics, on_nonfinite)


def check_microbatches(microbatches: int, objective: Objective, batch_size: int,
                       data_axis: int = 1) -> int:
  """Returns `microbatches` if usable with this objective and batch, else raises ValueError."""
  if not isinstance(microbatches, int) or microbatches < 1:
    raise ValueError(f"TrainSettings.microbatches = {microbatches!r} must be a positive integer.")
  if microbatches > 1 and isinstance(objective, OnlineObjective):
    raise ValueError(f"TrainSettings.microbatches = {microbatches} accumulates gradients of "
                     f"offline objectives only, and {type(objective).__name__} samples online: set it "
                     "to 1.")
  if microbatches > 1 and batch_size % (microbatches * data_axis):
    raise ValueError(f"TrainSettings.batch_size = {batch_size} is not divisible by "
                     f"TrainSettings.microbatches "
                     f"({microbatches}) x the mesh's data axis ({data_axis}): choose a batch "
                     "size that is.")
  return microbatches


def make_train_step(*, model: Any, objective: Objective, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, partitioner: Partitioner,
                    shardings: TrainState, on_nonfinite: str = "stop",
                    microbatches: int = 1) -> TrainStep:
  """Jits `train_step` with explicit in/out shardings and the state donated.

  Args:
    model, objective, tx, schedule, on_nonfinite, microbatches: closed over (see
      `train_step`).
    partitioner: the mesh and rules; the step is traced with them active so the model's
      activation sharding constraints apply.
    shardings: TrainState-shaped pytree of NamedShardings (`state.state_shardings`).

  Returns:
    `step(state, batch) -> (state, metrics)`; batch arrays must be sharded over 'data'
    (`partitioner.batch_sharding()`); metrics come back replicated. For an `OnlineObjective`
    with `sample_in_step = False`, `step` first calls a separately jitted sampler (policy
    parameters in their training layout, samples sharded over 'data') and feeds its output
    to the jitted update; both are dispatched without waiting on the host.
  """
  if isinstance(objective, OnlineObjective) and not objective.sample_in_step:
    return _make_two_stage_step(model=model, objective=objective, tx=tx, schedule=schedule,
                                partitioner=partitioner, shardings=shardings,
                                on_nonfinite=on_nonfinite)

  def step(state, batch):
    return train_step(state, batch, model=model, objective=objective, tx=tx,
                      schedule=schedule, on_nonfinite=on_nonfinite, microbatches=microbatches)

  return partitioner.jit(step, in_shardings=(shardings, partitioner.batch_sharding()),
                         out_shardings=(shardings, partitioner.replicated()), donate_argnums=0)


def _make_two_stage_step(*, model: Any, objective: OnlineObjective,
                         tx: optax.GradientTransformation, schedule: optax.Schedule,
                         partitioner: Partitioner, shardings: TrainState,
                         on_nonfinite: str) -> TrainStep:
  """`make_train_step` for an online objective whose samples come from a separate jit."""
  batch_sharding = partitioner.batch_sharding()

  def sample(params, state_rng, batch):
    return objective.sample(params, batch, sampling_rng(state_rng), model)

  def step(state, batch, samples):
    return online_train_step(state, batch, model=model, objective=objective, tx=tx,
                             schedule=schedule, samples=samples, on_nonfinite=on_nonfinite)

  jitted_sample = partitioner.jit(
      sample, in_shardings=(shardings.params, shardings.rng, batch_sharding),
      out_shardings=batch_sharding)
  jitted = partitioner.jit(step, in_shardings=(shardings, batch_sharding, batch_sharding),
                           out_shardings=(shardings, partitioner.replicated()), donate_argnums=0)

  def run(state, batch):
    return jitted(state, batch, jitted_sample(state.params, state.rng, batch))

  return run
