"""The train state: parameters, optimiser state, step and RNG, plus its shardings."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import flax.struct
import jax
import numpy as np
import optax
from jax.sharding import NamedSharding

from irl_lm.partitioning import Partitioner

Params = Any


@flax.struct.dataclass
class TrainState:
  """Everything a train step reads and writes; a pytree (checkpointed whole).

  Attributes:
    step: int32 scalar, number of updates applied so far.
    params: the model parameters (nested dict of float32 arrays, T5X names).
    opt_state: the optax optimiser state.
    rng: uint32 [2] PRNG key (raw key data, so Orbax can store it).
    extra: state the objective carries besides the policy (None for MLE and IQLearn, which
      then have exactly the state they always had): e.g. GAIL's discriminator parameters and
      optimiser state and the frozen initial policy. Built by the objective's `init_extra`,
      laid out by its `extra_shardings`, updated by its `prepare` (see
      `objectives.OnlineObjective`).
  """
  step: jax.Array
  params: Params
  opt_state: optax.OptState
  rng: jax.Array
  extra: Any = None


def create_train_state(params: Params, tx: optax.GradientTransformation,
                       rng: jax.Array, extra: Any = None) -> TrainState:
  """A fresh state at step 0 from initial `params`, optimiser `tx` and the objective's `extra`."""
  return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                    opt_state=tx.init(params), rng=rng, extra=extra)


def _dict_path(path: tuple[Any, ...]) -> tuple[str, ...]:
  return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))


def mirror_shardings(abstract_tree: Any, abstract_params: Params, param_shardings: Params,
                     partitioner: Partitioner) -> Any:
  """Shardings for an optimiser state (or any tree) whose leaves mirror parameters.

  A leaf that mirrors a parameter (same dict path suffix and same shape, e.g. Adam's moments
  or Adafactor's unfactored second moment) takes that parameter's sharding; everything else
  (step counts, Adafactor's factored row/column statistics) is replicated: these are small.

  Args:
    abstract_tree: the tree as `jax.ShapeDtypeStruct`s (e.g. an abstract optax state).
    abstract_params: the parameters it mirrors, as ShapeDtypeStructs.
    param_shardings: NamedShardings with the structure of `abstract_params`.
    partitioner: gives the mesh for replicated leaves.

  Returns:
    A pytree of `NamedSharding` with the structure of `abstract_tree`.
  """
  by_path: dict[tuple[str, ...], tuple[tuple[int, ...], NamedSharding]] = {}
  for (path, sharding), leaf in zip(
      jax.tree_util.tree_flatten_with_path(param_shardings)[0],
      jax.tree.leaves(abstract_params)):
    by_path[_dict_path(path)] = (tuple(leaf.shape), sharding)

  def leaf_sharding(path, leaf):
    keys = _dict_path(path)
    for start in range(len(keys)):
      match = by_path.get(keys[start:])
      if match is not None:
        shape, sharding = match
        return sharding if tuple(leaf.shape) == shape else partitioner.replicated()
    return partitioner.replicated()

  return jax.tree_util.tree_map_with_path(leaf_sharding, abstract_tree)


def state_shardings(abstract_state: TrainState, param_shardings: Params,
                    partitioner: Partitioner, extra_shardings: Any = None) -> TrainState:
  """Shardings for every leaf of a train state.

  Parameters use `param_shardings`; optimiser-state leaves follow `mirror_shardings`; the step
  and the RNG are replicated; the objective's extra state uses `extra_shardings`.

  Args:
    abstract_state: the state as `jax.ShapeDtypeStruct`s (from `jax.eval_shape`).
    param_shardings: NamedShardings with the structure of `abstract_state.params`.
    partitioner: gives the mesh for replicated leaves.
    extra_shardings: NamedShardings with the structure of `abstract_state.extra` (None when
      the state has no extra part).

  Returns:
    A TrainState-shaped pytree of `NamedSharding`.
  """
  return TrainState(
      step=partitioner.replicated(),
      params=param_shardings,
      opt_state=mirror_shardings(abstract_state.opt_state, abstract_state.params,
                                 param_shardings, partitioner),
      rng=partitioner.replicated(),
      extra=extra_shardings)


@dataclasses.dataclass(frozen=True)
class StateLayout:
  """How a run's train state is built and laid out over the mesh.

  Attributes:
    abstract: the TrainState as ShapeDtypeStructs (no allocation).
    shardings: TrainState-shaped pytree of NamedShardings.
    param_shardings: the `params` part of `shardings`.
    init_fn: `() -> TrainState`, jitted to create the state directly in its shardings.
    init_from_params: `(params) -> TrainState`, the state at step 0 built around given
      parameters (e.g. loaded from a checkpoint, laid out with `param_shardings`; donated):
      fresh optimiser state, the same RNG as `init_fn`, and the objective's extra state built
      from these parameters (so e.g. GAIL's frozen reference policy is the loaded one).
  """
  abstract: TrainState
  shardings: TrainState
  param_shardings: Params
  init_fn: Callable[[], TrainState]
  init_from_params: Callable[[Params], TrainState] | None = None


def build_state_layout(model: Any, tx: optax.GradientTransformation,
                       partitioner: Partitioner, input_shapes: Mapping[str, Sequence[int]],
                       seed: int = 0, objective: Any = None) -> StateLayout:
  """Abstract state, shardings (from the model's logical axes) and a sharded initialiser.

  Args:
    model: has `init(rng, input_shapes)` and `param_logical_axes(input_shapes)`.
    tx: the optimiser.
    partitioner: mesh and logical-axis rules.
    input_shapes: `model.input_shapes(B, feature_lengths)`.
    seed: seeds parameter init and the state's RNG.
    objective: the training objective; when it has `init_extra(params, rng, *, model,
      input_shapes)` and `extra_shardings(abstract_extra, *, model, input_shapes, partitioner,
      param_shardings)` (see `objectives.OnlineObjective`), the state's `extra` part is built
      and laid out with them. Objectives without them (MLE, IQLearn) leave `extra` None.
  """
  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
  init_extra = getattr(objective, "init_extra", None)

  def state_from_params(params):
    extra = None
    if init_extra is not None:
      extra = init_extra(params, jax.random.fold_in(init_rng, 1), model=model,
                         input_shapes=input_shapes)
    return create_train_state(params, tx, state_rng, extra)

  def init_state():
    return state_from_params(model.init(init_rng, input_shapes))

  abstract = jax.eval_shape(init_state)
  param_shardings = partitioner.shardings_for(
      model.param_logical_axes(input_shapes), abstract.params)
  extra_shardings = None
  if abstract.extra is not None:
    extra_shardings = objective.extra_shardings(
        abstract.extra, model=model, input_shapes=input_shapes, partitioner=partitioner,
        param_shardings=param_shardings)
  shardings = state_shardings(abstract, param_shardings, partitioner, extra_shardings)
  init_fn = partitioner.jit(init_state, out_shardings=shardings)
  init_from_params = partitioner.jit(state_from_params, in_shardings=(param_shardings,),
                                     out_shardings=shardings, donate_argnums=0)
  return StateLayout(abstract, shardings, param_shardings, init_fn, init_from_params)


def layout_summary(layout: StateLayout) -> dict[str, Any]:
  """Sizes of an abstract, sharded train state (what `run.mode = 'check'` prints).

  Returns:
    {'param_count', 'state_bytes' (whole state), 'max_state_bytes_per_device',
     'max_param_bytes_per_device', 'mesh' (axis sizes), 'dry_run': True}.
  """
  leaves = jax.tree.leaves(layout.abstract)
  shardings = jax.tree.leaves(layout.shardings)
  per_device: dict[Any, int] = {}
  for leaf, sharding in zip(leaves, shardings):
    nbytes = int(np.prod(sharding.shard_shape(leaf.shape))) * leaf.dtype.itemsize
    for device in sharding.device_set:
      per_device[device] = per_device.get(device, 0) + nbytes
  param_share: dict[Any, int] = {}
  for leaf, sharding in zip(jax.tree.leaves(layout.abstract.params),
                            jax.tree.leaves(layout.shardings.params)):
    nbytes = int(np.prod(sharding.shard_shape(leaf.shape))) * leaf.dtype.itemsize
    for device in sharding.device_set:
      param_share[device] = param_share.get(device, 0) + nbytes
  return {"dry_run": True,
          "param_count": int(sum(np.prod(p.shape)
                                 for p in jax.tree.leaves(layout.abstract.params))),
          "state_bytes": int(sum(np.prod(l.shape) * l.dtype.itemsize for l in leaves)),
          "max_state_bytes_per_device": max(per_device.values()),
          "max_param_bytes_per_device": max(param_share.values()),
          "mesh": dict(shardings[0].mesh.shape)}
