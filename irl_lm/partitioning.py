"""Device mesh, logical-axis rules and shardings (T5X-style partitioning on `jax.jit`).

Parameters and activations carry *logical* axis names ('batch', 'vocab', 'embed', ...). A list
of rules maps each logical name to a mesh axis ('data' or 'model') or to None (replicated).
The mesh always has the two axes ('data', 'model'); a (N, 1) mesh is pure data parallelism.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from irl_lm import errors

MESH_AXES = ("data", "model")

LogicalRules = tuple[tuple[str, Optional[str]], ...]

# T5X's defaults for a ('data', 'model') mesh: batch over data, wide dims over model.
DEFAULT_RULES: LogicalRules = (
    ("batch", "data"),
    ("vocab", "model"),
    ("mlp", "model"),
    ("heads", "model"),
    ("joined_kv", "model"),
    ("kv_heads", "model"),  # decoder-only key/value heads (grouped-query attention)
    ("kv", None),
    ("length", None),
    ("relpos_buckets", None),
    ("layers", None),
    ("embed", None),
)
# Fully sharded parameters (ZeRO-3 style): the embedding dimension also splits over 'data'.
FULLY_SHARDED_RULES: LogicalRules = tuple(
    ("embed", "data") if name == "embed" else (name, axis) for name, axis in DEFAULT_RULES)


class PartitioningError(errors.UserError, ValueError):
  """A mesh or batch that cannot be laid out over the available devices."""


def make_mesh(mesh_shape: Sequence[int],
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """Builds a ('data', 'model') mesh.

  Args:
    mesh_shape: (data, model) sizes; one entry may be -1, meaning "all remaining devices".
    devices: the devices to use (default: all of `jax.devices()`).

  Returns:
    A `jax.sharding.Mesh` of shape `mesh_shape` over `devices`.

  Raises:
    PartitioningError: when the shape does not divide the device count.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = list(mesh_shape)
  if len(shape) != 2:
    raise PartitioningError(
        f"mesh_shape must have 2 entries (data, model), got {tuple(mesh_shape)}; "
        "set e.g. `Partitioner.mesh_shape = (-1, 1)`.")
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise PartitioningError(
        f"mesh_shape {tuple(mesh_shape)} is invalid: use positive sizes and at most one -1.")
  if -1 in shape:
    known = math.prod(s for s in shape if s != -1)
    if len(devices) % known:
      raise PartitioningError(
          f"mesh_shape {tuple(mesh_shape)} does not divide the {len(devices)} available "
          f"devices: choose sizes whose product divides {len(devices)}.")
    shape[shape.index(-1)] = len(devices) // known
  if math.prod(shape) != len(devices):
    raise PartitioningError(
        f"mesh_shape {tuple(mesh_shape)} needs {math.prod(shape)} devices but "
        f"{len(devices)} are available: set `Partitioner.mesh_shape` so that "
        f"data * model == {len(devices)} (or use -1 for data).")
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


@dataclasses.dataclass(frozen=True)
class Partitioner:
  """Owns the mesh and the logical→mesh rules, and turns logical specs into shardings.

  Attributes:
    mesh_shape: (data, model); -1 takes the remaining devices.
    fully_sharded_params: also shard parameters' 'embed' dimension over 'data'.
    extra_rules: rules tried before the defaults, e.g. (('vocab', None),).
    devices: restrict to these devices (tests); default all devices.
  """
  mesh_shape: tuple[int, int] = (-1, 1)
  fully_sharded_params: bool = False
  extra_rules: LogicalRules = ()
  devices: Optional[tuple[Any, ...]] = None

  def __post_init__(self):
    object.__setattr__(self, "mesh", make_mesh(self.mesh_shape, self.devices))

  @property
  def rules(self) -> LogicalRules:
    """The logical-axis rules in force (extra rules first, first match wins)."""
    base = FULLY_SHARDED_RULES if self.fully_sharded_params else DEFAULT_RULES
    return tuple(self.extra_rules) + base

  @property
  def data_size(self) -> int:
    """Number of devices along the 'data' mesh axis."""
    return self.mesh.shape["data"]

  @contextlib.contextmanager
  def activate(self) -> Iterator[None]:
    """Context in which model code may use `nn.with_logical_constraint` (trace inside it)."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield

  def jit(self, fn: Callable[..., Any], *, in_shardings: Any = None, out_shardings: Any = None,
          donate_argnums: Union[int, Sequence[int]] = (), **jit_kwargs: Any) -> Callable[..., Any]:
    """`jax.jit(fn, ...)` whose calls (tracing included) run inside `activate()`.

    Model code's logical sharding constraints apply only when traced with the mesh and rules
    active, so every jitted model function goes through here.
    """
    jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings,
                     donate_argnums=donate_argnums, **jit_kwargs)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
      with self.activate():
        return jitted(*args, **kwargs)
    def lower(*args: Any, **kwargs: Any) -> Any:  # for XLA's cost analysis (benchmarks)
      with self.activate():
        return jitted.lower(*args, **kwargs)

    run.lower = lower
    return run

  def logical_to_spec(self, logical: PartitionSpec, shape: Sequence[int]) -> PartitionSpec:
    """Maps one logical PartitionSpec to a mesh PartitionSpec for an array of `shape`.

    A dimension whose size does not divide its mesh axis is replicated instead of failing,
    so tiny test models run on any mesh.
    """
    mesh_spec = nn.logical_to_mesh_axes(tuple(logical), self.rules)
    axes = []
    for dim, axis in zip(shape, tuple(mesh_spec) + (None,) * (len(shape) - len(mesh_spec))):
      if axis is not None and dim % self.mesh.shape[axis]:
        axis = None
      axes.append(axis)
    return PartitionSpec(*axes)

  def shardings_for(self, logical_specs: Any, abstract_tree: Any) -> Any:
    """NamedShardings for a tree of arrays given a matching tree of logical PartitionSpecs.

    Args:
      logical_specs: pytree of `PartitionSpec`s of logical names (e.g. the model's
        `param_logical_axes`), same structure as `abstract_tree`.
      abstract_tree: pytree of arrays or `jax.ShapeDtypeStruct`s.

    Returns:
      Pytree of `NamedSharding` with the structure of `abstract_tree`.
    """
    return jax.tree.map(
        lambda spec, x: NamedSharding(self.mesh, self.logical_to_spec(spec, x.shape)),
        logical_specs, abstract_tree,
        is_leaf=lambda s: isinstance(s, PartitionSpec))

  def replicated(self) -> NamedSharding:
    """A sharding that places a full copy on every device."""
    return NamedSharding(self.mesh, PartitionSpec())

  def batch_sharding(self) -> NamedSharding:
    """Sharding of a batch array: leading (batch) axis over 'data', the rest replicated."""
    return NamedSharding(self.mesh, PartitionSpec("data"))

  def check_batch_size(self, batch_size: int) -> None:
    """Raises a clear error unless `batch_size` splits evenly over the 'data' axis and hosts."""
    divisor = self.data_size
    if batch_size % divisor:
      raise PartitioningError(
          f"batch size {batch_size} is not divisible by the mesh's data axis ({divisor}): "
          f"choose a batch size that is a multiple of {divisor}, or change "
          "`Partitioner.mesh_shape`.")
    if batch_size % jax.process_count():
      raise PartitioningError(
          f"batch size {batch_size} is not divisible by the {jax.process_count()} hosts: "
          f"choose a multiple of {jax.process_count()}.")
