"""Array operations written so that XLA compiles them well on every backend.

`jnp.argmax` lowers to a reduction over (value, index) pairs. XLA's CPU backend runs such a
variadic reduction as a scalar loop, and when `jax.random.categorical` fuses the Gumbel noise
into it the noise is computed inside that loop too: one draw from [8, 32128] logits took 2.9 ms
against 1.0 ms with `categorical` below (`benchmarks/xla_cpu_rewrites.py`). `argmax` here takes
two plain reductions (max, then the smallest index attaining it), which vectorise, and gives the
same indices, ties and NaNs included; `categorical` is `jax.random.categorical`'s draw (same
noise, same key use) on top of it.

`gumbel` is `jax.random.gumbel`'s noise, bit for bit, with the Threefry-2x32 hash written out:
jax lowers that hash on CPU as a 5-iteration loop that copies its whole state every iteration
(to compile faster); written out, XLA fuses the 20 rounds into one pass. Sampling with the same
tokens took 0.95-0.97x the time for a T5-small batch and 0.82x for tiny
(`benchmarks/xla_cpu_rewrites.py --sampling_only`).

`softmax` is `jax.nn.softmax` over the last axis with a backward pass that keeps only its
output (see its docstring): a quarter less XLA temporaries in a T5-small train step.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def argmax(x: jax.Array, axis: int = -1, *, max_value: jax.Array | None = None) -> jax.Array:
  """`jnp.argmax(x, axis)` as two single-operand reductions: the first index of the maximum.

  Args:
    x: float array [..., N, ...].
    axis: the axis to reduce.
    max_value: optionally `jnp.max(x, axis)`, when the caller has it already.

  Returns:
    int32 indices, x's shape without `axis`; as `jnp.argmax`, the first maximal index on ties
    and the first NaN's index when a row holds NaN.
  """
  axis = axis % x.ndim
  if max_value is None:
    max_value = jnp.max(x, axis=axis)
  size = x.shape[axis]
  index = jax.lax.broadcasted_iota(jnp.int32, x.shape, axis)
  # XLA's max propagates NaN, so a row with NaN has max NaN and matches at its NaNs only.
  hit = (x == jnp.expand_dims(max_value, axis)) | jnp.isnan(x)
  return jnp.min(jnp.where(hit, index, size), axis=axis).astype(jnp.int32)


def categorical(key: jax.Array, logits: jax.Array, axis: int = -1) -> jax.Array:
  """One draw per row from `softmax(logits)`: `jax.random.categorical(key, logits, axis)`.

  The same Gumbel noise from the same key and the same argmax, so the same tokens bit for bit;
  see the module docstring for why it is written out.

  Args:
    key: PRNG key.
    logits: float [..., N, ...] unnormalised log-probabilities (-inf for impossible events).
    axis: the categories' axis.

  Returns:
    int32 draws, logits' shape without `axis`.
  """
  noise = gumbel(key, logits.shape, logits.dtype)
  return argmax(noise + logits, axis)


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry2x32(k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
  """Threefry-2x32 with 20 rounds (Salmon et al. 2011), as jax's `threefry_2x32`: the counter
  words (x1, x2) hashed under the key words (k1, k2), uint32 arrays of one shape."""
  ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
  x1, x2 = x1 + ks[0], x2 + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x1 = x1 + x2
      rotated = lax.shift_left(x2, np.uint32(r)) | lax.shift_right_logical(x2, np.uint32(32 - r))
      x2 = x1 ^ rotated
    x1 = x1 + ks[(i + 1) % 3]
    x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x1, x2


def _unrolled_applies(key: jax.Array, typed: bool, dtype) -> bool:
  """Whether `gumbel` can reproduce jax.random.gumbel here: a Threefry-2x32 key (`typed`: a
  typed key array, else raw uint32 words of the default implementation), jax's partitionable
  bits (its default), float32 and the default low-range mode."""
  impl = str(jax.random.key_impl(key)) if typed else jax.config.jax_default_prng_impl
  return ("threefry2x32" in impl and jax.config.jax_threefry_partitionable
          and not jax.config.jax_high_dynamic_range_gumbel
          and jnp.dtype(dtype) == jnp.float32)


def gumbel(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """`jax.random.gumbel(key, shape, dtype)`, the same values bit for bit (tests), with the hash
  unrolled (module docstring). Falls back to jax.random.gumbel for other PRNG implementations,
  settings or dtypes.

  Args:
    key: one PRNG key (typed, or a raw uint32 [2] key).
    shape: the noise's shape (fewer than 2**32 elements).
  Returns:
    float32 standard Gumbel noise of `shape`.
  """
  typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  if not _unrolled_applies(key, typed, dtype) or int(np.prod(shape, dtype=np.int64)) >= 2 ** 32:
    return jax.random.gumbel(key, shape, dtype)
  words = jax.random.key_data(key) if typed else key
  # jax's counters: the row-major index of each element as (high, low) uint32 words.
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride)
    stride *= shape[axis]
  bits1, bits2 = _threefry2x32(words[0], words[1], jnp.zeros(shape, jnp.uint32), index)
  bits = bits1 ^ bits2
  # jax.random.uniform(minval=tiny, maxval=1): 23 random mantissa bits of a float in [1, 2).
  one = np.array(1.0, np.float32).view(np.uint32)
  floats = lax.bitcast_convert_type(lax.shift_right_logical(bits, np.uint32(9)) | one,
                                    jnp.float32) - np.float32(1.0)
  tiny = np.float32(jnp.finfo(jnp.float32).tiny)
  uniform = lax.max(tiny, floats * (np.float32(1.0) - tiny) + tiny)
  return -jnp.log(-jnp.log(uniform))


@jax.custom_vjp
def softmax(x: jax.Array) -> jax.Array:
  """Softmax over the last axis whose backward pass keeps only its output.

  `jax.nn.softmax` is differentiated through exp, sum and divide unless the global flag
  `jax_softmax_custom_jvp` is set (off by default in jax 0.10), which keeps both `exp(x - max)`
  and the output: two [B, H, Q, K] tensors per attention layer where one suffices.

  Args:
    x: float [..., K].

  Returns:
    [..., K] in x's dtype, equal to `jax.nn.softmax(x, axis=-1)`.
  """
  return _softmax_fwd(x)[0]


def _softmax_fwd(x):
  unnormalized = jnp.exp(x - jnp.max(x, axis=-1, keepdims=True))
  y = unnormalized / jnp.sum(unnormalized, axis=-1, keepdims=True)
  return y, y


def _softmax_bwd(y, g):
  return (y * (g - jnp.sum(g * y, axis=-1, keepdims=True)),)


softmax.defvjp(_softmax_fwd, _softmax_bwd)

