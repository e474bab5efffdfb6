"""Checksums of a saved train state, computed on the devices and verified after a restore.

Orbax (OCDBT) stores no checksums of array data: one flipped byte in a data file restores
without an error, as different numbers. So every run checkpoint also stores, as a small JSON
item beside the state, two 32-bit sums of every array's raw bits (a plain sum and one weighted
by a hash of each element's position); a restore recomputes them from the restored arrays and
refuses any leaf that differs.

The sums are functions of the global array's values only (integer additions modulo 2**32 are
associative), so they do not depend on the mesh, the sharding or the number of hosts, and a
checkpoint saved on one mesh verifies when restored on another. They are computed by one
jitted reduction over the sharded state (no gather, no host copy). They detect storage
corruption, not tampering (not cryptographic).
"""
from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

# Identifies the algorithm in the stored JSON, so a future change is recognised, not misread.
ALGORITHM = "u32sum+poshash/v1"
_GOLDEN = np.uint32(0x9E3779B1)  # Knuth's multiplicative hash constant (odd).
_WORD = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def leaf_paths(tree: Any) -> list[str]:
  """'a/b/c' paths of a pytree's leaves (dict keys, dataclass fields, sequence indices)."""
  return ["/".join(_key_name(k) for k in path)
          for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _words(x: jax.Array) -> jax.Array:
  """The raw bits of `x` as uint32, one per element (8-byte types: two, trailing axis)."""
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  bits = jax.lax.bitcast_convert_type(x, _WORD[x.dtype.itemsize])
  return bits.astype(jnp.uint32)


def _leaf_sums(x: jax.Array) -> jax.Array:
  """uint32 [2]: sum of the words and sum of words × hash(position), both modulo 2**32.

  The position is built from per-axis iotas (no reshape), so a sharded leaf stays sharded.
  """
  w = _words(x)
  if w.ndim == 0:
    return jnp.stack([w, w * _GOLDEN])
  position = jnp.zeros(w.shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(w.ndim)):
    position = position + jax.lax.broadcasted_iota(jnp.uint32, w.shape, axis) * np.uint32(
        stride % 2**32)
    stride *= w.shape[axis]
  weight = (position + np.uint32(1)) * _GOLDEN
  return jnp.stack([jnp.sum(w, dtype=jnp.uint32), jnp.sum(w * weight, dtype=jnp.uint32)])


@functools.lru_cache(maxsize=8)
def _jitted(mesh: Any) -> Any:
  out = NamedSharding(mesh, PartitionSpec()) if mesh is not None else None
  return jax.jit(lambda leaves: [_leaf_sums(x) for x in leaves], out_shardings=out)


def checksums(tree: Any) -> dict[str, str]:
  """{'a/b/c' leaf path: 'xxxxxxxx-xxxxxxxx'} of every array leaf of `tree` (all processes of a
  multi-host job must call it: it is one collective reduction)."""
  leaves = [x if isinstance(x, jax.Array) else jnp.asarray(x) for x in jax.tree.leaves(tree)]
  if not leaves:
    return {}
  meshes = {x.sharding.mesh for x in leaves if isinstance(x.sharding, NamedSharding)}
  mesh = meshes.pop() if len(meshes) == 1 else None
  sums = [np.asarray(s) for s in _jitted(mesh)(leaves)]
  return {path: f"{int(s[0]):08x}-{int(s[1]):08x}" for path, s in zip(leaf_paths(tree), sums)}


def record(tree: Any) -> dict[str, Any]:
  """The JSON item saved with a checkpoint: {'algorithm', 'leaves': checksums(tree)}."""
  return {"algorithm": ALGORITHM, "leaves": checksums(tree)}


def mismatches(stored: Mapping[str, Any], tree: Any, limit: int = 3) -> list[str]:
  """Leaf paths of `tree` whose checksums differ from `stored` (a `record`), at most `limit`;
  an unknown algorithm or a different set of leaves is reported as such.

  Raises:
    ValueError: `stored` is not a checksum record (e.g. a damaged JSON item).
  """
  if not isinstance(stored, Mapping) or not isinstance(stored.get("leaves"), Mapping):
    raise ValueError("the checksum record is malformed")
  if stored.get("algorithm") != ALGORITHM:
    return [f"checksum algorithm {stored.get('algorithm')!r} is not {ALGORITHM!r}"]
  found = checksums(tree)
  expected = dict(stored["leaves"])
  if set(found) != set(expected):
    return ["the checksum record lists other leaves than the state"]
  return [path for path in found if found[path] != expected[path]][:limit]
