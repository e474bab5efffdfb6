"""The one batched host loop of evaluation and inference, with one RNG convention.

Every job that runs a jitted function over N rows (decoding a split, teacher-forcing the outputs
for rewards, decoding an input file) goes through `map_batches`: rows are cut into batches of a
fixed size (the last one padded with all-PAD rows, whose outputs are dropped) and batch `i` gets
the key `jax.random.fold_in(jax.random.PRNGKey(seed), i)`. The same seed therefore gives the same
samples in evaluate mode, infer mode and the training-time evaluation.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import jax
import numpy as np

from irl_lm.models.base import EOS_ID


def batch_keys(seed: int) -> Callable[[int], jax.Array]:
  """`index -> key` of batch `index` for `seed` (the convention above)."""
  base = jax.random.PRNGKey(seed)
  return lambda index: jax.random.fold_in(base, index)


def iterate_batches(arrays: Sequence[np.ndarray], batch_size: int
                    ) -> Iterator[tuple[int, int, list[np.ndarray]]]:
  """Yields `(index, n, padded)`: batch `index` holds `n` real rows of each array, zero-padded
  (PAD) to `batch_size` rows. All arrays have N rows."""
  total = len(arrays[0])
  for index, start in enumerate(range(0, total, batch_size)):
    n = min(batch_size, total - start)
    padded = []
    for array in arrays:
      rows = np.zeros((batch_size,) + array.shape[1:], array.dtype)
      rows[:n] = array[start:start + n]
      padded.append(rows)
    yield index, n, padded


def map_batches(fn: Callable[..., Any], arrays: Sequence[np.ndarray], *, batch_size: int,
                seed: Optional[int] = None) -> Any:
  """Runs `fn(*batch)` (or `fn(*batch, key)` when `seed` is given) over N rows in batches.

  Args:
    fn: returns an array [B, ...] or a dict of them.
    arrays: inputs with N rows each (e.g. prompts [N, L], tokens [N, T]).
    batch_size: B, the static batch size `fn` is compiled for.
    seed: when given, batch i is passed `fold_in(PRNGKey(seed), i)` as the last argument.

  Returns:
    The outputs' real rows concatenated as numpy: an array [N, ...] or a dict of them.
  """
  key_of = batch_keys(seed) if seed is not None else None
  parts: list[Any] = []
  for index, n, batch in iterate_batches(arrays, batch_size):
    args = batch + ([key_of(index)] if key_of else [])
    out = jax.device_get(fn(*args))
    parts.append(jax.tree.map(lambda x: np.asarray(x)[:n], out))
  if isinstance(parts[0], Mapping):
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  return np.concatenate(parts)


def output_ids(tokens: Sequence[int], eos_id: int = EOS_ID) -> list[int]:
  """The ids of a decoded row before its first EOS (what its text is). Every other id is a
  token, id 0 included: the decoders never emit a pad id that is not a real token."""
  out = []
  for t in tokens:
    if t == eos_id:
      break
    out.append(int(t))
  return out


def emitted_length(tokens: np.ndarray, eos_id: int = EOS_ID) -> int:
  """Number of tokens a decoder emitted in a row: up to and including EOS (or all of it)."""
  eos = np.flatnonzero(np.asarray(tokens) == eos_id)
  return int(eos[0]) + 1 if eos.size else len(tokens)
