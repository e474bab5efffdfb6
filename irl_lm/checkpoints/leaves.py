"""Lazily read checkpoint arrays (one class for every reader) and their placement on devices."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np

from irl_lm.checkpoints.manager import CheckpointError, flat_shapes


@dataclasses.dataclass(frozen=True)
class Leaf:
  """One stored parameter, not yet read.

  Attributes:
    shape: its shape in our (T5X-named) layout, from metadata only.
    read: `() -> np.ndarray` of that shape in the stored dtype (e.g. bfloat16); reads the data.
  """
  shape: tuple[int, ...]
  read: Callable[[], np.ndarray]


def _place(array: np.ndarray, sharding: Optional[Any]) -> Any:
  if sharding is None:
    return array
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def read_leaves(leaves: Mapping[str, Leaf], abstract_params: Any, *, where: str,
                shardings: Optional[Any] = None) -> Any:
  """Reads every leaf of `abstract_params` from `leaves`, one array at a time.

  Args:
    leaves: {'encoder/layers_0/attention/query/kernel': Leaf, ...}, a superset of the keys of
      `abstract_params` (check with `formats.check_compatible` first).
    abstract_params: pytree of arrays or `jax.ShapeDtypeStruct`s fixing keys, shapes, dtypes.
    where: the checkpoint's description, for error messages.
    shardings: optional matching pytree of `jax.sharding.Sharding`; when given every leaf comes
      back as a `jax.Array` laid out with it, else as a host numpy array.
  Returns:
    A pytree like `abstract_params`, cast to its dtypes.
  Raises:
    CheckpointError: an array whose data does not have the shape its metadata promised.
  """
  paths_and_abstract, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)
  keys = list(flat_shapes(abstract_params))
  sharding_leaves = (jax.tree.leaves(shardings) if shardings is not None
                     else [None] * len(keys))
  values = []
  for key, (_, abstract), sharding in zip(keys, paths_and_abstract, sharding_leaves):
    array = np.asarray(leaves[key].read(), dtype=abstract.dtype)
    if array.shape != tuple(abstract.shape):
      raise CheckpointError(f"{key} in the {where} has shape {array.shape}, its metadata says "
                            f"{leaves[key].shape}: the checkpoint is corrupt.")
    values.append(_place(array, sharding))
  return jax.tree_util.tree_unflatten(treedef, values)
