"""The train state: parameters, optimiser state, step and RNG, plus its shardings."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import flax.struct
import jax
import optax
from jax.sharding import NamedSharding

from irl_lm.training.partitioning import Partitioner

Params = Any


@flax.struct.dataclass
class TrainState:
  """Everything a train step reads and writes; a pytree (checkpointed whole).

  Attributes:
    step: int32 scalar, number of updates applied so far.
    params: the model parameters (nested dict of float32 arrays, T5X names).
    opt_state: the optax optimiser state.
    rng: uint32 [2] PRNG key (raw key data, so Orbax can store it).
  """
  step: jax.Array
  params: Params
  opt_state: optax.OptState
  rng: jax.Array


def create_train_state(params: Params, tx: optax.GradientTransformation,
                       rng: jax.Array) -> TrainState:
  """A fresh state at step 0 from initial `params` and optimiser `tx`."""
  return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                    opt_state=tx.init(params), rng=rng)


def _dict_path(path: tuple[Any, ...]) -> tuple[str, ...]:
  return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))


def state_shardings(abstract_state: TrainState, param_shardings: Params,
                    partitioner: Partitioner) -> TrainState:
  """Shardings for every leaf of a train state.

  Parameters use `param_shardings`. An optimiser-state leaf that mirrors a parameter (same
  dict path suffix and same shape, e.g. Adam's moments or Adafactor's unfactored second
  moment) takes that parameter's sharding; everything else (step counts, Adafactor's factored
  row/column statistics, the RNG) is replicated: these are small.

  Args:
    abstract_state: the state as `jax.ShapeDtypeStruct`s (from `jax.eval_shape`).
    param_shardings: NamedShardings with the structure of `abstract_state.params`.
    partitioner: gives the mesh for replicated leaves.

  Returns:
    A TrainState-shaped pytree of `NamedSharding`.
  """
  by_path: dict[tuple[str, ...], tuple[tuple[int, ...], NamedSharding]] = {}
  for (path, sharding), leaf in zip(
      jax.tree_util.tree_flatten_with_path(param_shardings)[0],
      jax.tree.leaves(abstract_state.params)):
    by_path[_dict_path(path)] = (tuple(leaf.shape), sharding)

  def opt_leaf_sharding(path, leaf):
    keys = _dict_path(path)
    for start in range(len(keys)):
      match = by_path.get(keys[start:])
      if match is not None:
        shape, sharding = match
        return sharding if tuple(leaf.shape) == shape else partitioner.replicated()
    return partitioner.replicated()

  return TrainState(
      step=partitioner.replicated(),
      params=param_shardings,
      opt_state=jax.tree_util.tree_map_with_path(opt_leaf_sharding, abstract_state.opt_state),
      rng=partitioner.replicated())


def abstract_train_state(init_params_fn: Callable[[], Params],
                         tx: optax.GradientTransformation) -> TrainState:
  """The train state's shapes and dtypes, computed without allocating anything."""
  def build():
    return create_train_state(init_params_fn(), tx, jax.random.PRNGKey(0))
  return jax.eval_shape(build)


@dataclasses.dataclass(frozen=True)
class StateLayout:
  """How a run's train state is built and laid out over the mesh.

  Attributes:
    abstract: the TrainState as ShapeDtypeStructs (no allocation).
    shardings: TrainState-shaped pytree of NamedShardings.
    param_shardings: the `params` part of `shardings`.
    init_fn: `() -> TrainState`, jitted to create the state directly in its shardings.
  """
  abstract: TrainState
  shardings: TrainState
  param_shardings: Params
  init_fn: Callable[[], TrainState]


def build_state_layout(model: Any, tx: optax.GradientTransformation,
                       partitioner: Partitioner, input_shapes: Mapping[str, Sequence[int]],
                       seed: int = 0) -> StateLayout:
  """Abstract state, shardings (from the model's logical axes) and a sharded initialiser.

  Args:
    model: has `init(rng, input_shapes)` and `param_logical_axes(input_shapes)`.
    tx: the optimiser.
    partitioner: mesh and logical-axis rules.
    input_shapes: {'encoder_input_tokens': (B, L), 'decoder_input_tokens': (B, T)}.
    seed: seeds parameter init and the state's RNG.
  """
  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))

  def init_state():
    return create_train_state(model.init(init_rng, input_shapes), tx, state_rng)

  abstract = jax.eval_shape(init_state)
  param_shardings = partitioner.shardings_for(
      model.param_logical_axes(input_shapes), abstract.params)
  shardings = state_shardings(abstract, param_shardings, partitioner)
  jitted = jax.jit(init_state, out_shardings=shardings)

  def init_fn():
    with partitioner.activate():
      return jitted()

  return StateLayout(abstract, shardings, param_shardings, init_fn)
