"""Array operations the models, losses and decoders share.

`argmax`, `categorical` and `dot_last` are jax's own operations, computed on a CPU by the
rewrites of `irl_lm.cpu.xla` (same values, faster there). `softmax` is `jax.nn.softmax` with a
backward pass that keeps only its output (see its docstring).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from irl_lm.cpu import xla


def argmax(x: jax.Array, axis: int = -1, *, max_value: jax.Array | None = None) -> jax.Array:
  """`jnp.argmax(x, axis)` as int32: the first index of the maximum (the first NaN's index when
  a row holds NaN).

  Args:
    x: float array [..., N, ...].
    axis: the axis to reduce.
    max_value: optionally `jnp.max(x, axis)`, when the caller has it already.

  Returns:
    int32 indices, x's shape without `axis`.
  """
  if xla.applies("argmax"):
    return xla.argmax_2_reductions(x, axis, max_value)
  return jnp.argmax(x, axis=axis).astype(jnp.int32)


def categorical(key: jax.Array, logits: jax.Array, axis: int = -1) -> jax.Array:
  """One draw per row from `softmax(logits)`: `jax.random.categorical(key, logits, axis)`,
  the same Gumbel noise from the same key and the same argmax, as int32.

  Args:
    key: PRNG key.
    logits: float [..., N, ...] unnormalised log-probabilities (-inf for impossible events).
    axis: the categories' axis.

  Returns:
    int32 draws, logits' shape without `axis`.
  """
  if not xla.applies("argmax"):
    return jax.random.categorical(key, logits, axis=axis).astype(jnp.int32)
  return argmax(jax.random.gumbel(key, logits.shape, logits.dtype) + logits, axis)


def dot_last(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x [..., In] @ kernel [In, Out] -> [..., Out]: `jnp.dot(x, kernel)`."""
  if xla.applies("dot"):
    return xla.dot_2d(x, kernel)
  return jnp.dot(x, kernel)


@jax.custom_vjp
def softmax(x: jax.Array) -> jax.Array:
  """Softmax over the last axis whose backward pass keeps only its output.

  `jax.nn.softmax` is differentiated through exp, sum and divide unless the global flag
  `jax_softmax_custom_jvp` is set (off by default in jax 0.10, on in newer versions), which
  keeps both `exp(x - max)` and the output: two [B, H, Q, K] tensors per attention layer where
  one suffices. This function keeps one on every jax version.

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

