"""Rewrites that XLA's CPU backend compiles better than the jax / flax primitive they replace.

Each one computes what the primitive computes and is used only while `applies(name)`: jax's
default backend is the CPU and the rewrite is not switched off by `without` (which tests and
`python -m benchmarks cpu` use to compare it with the primitive in one process). On GPUs and
TPUs the primitive itself runs. docs/performance.md gives the measured effect of each.

* 'dot' (`dot_2d`, Dense layers): x [..., In] @ kernel as one 2-D product over the flattened
  rows. The weight gradient of a 3-D product contracts two axes, and XLA's CPU backend lays that
  out by writing a transposed copy of the output gradient for every projection; the 2-D form
  contracts rows as they lie.
* 'argmax' (`argmax_2_reductions`, greedy decoding, sampling, the losses' accuracy): XLA's CPU
  backend runs jnp.argmax's reduction over (value, index) pairs as a scalar loop, with the
  Gumbel noise of a categorical draw fused into it; two plain reductions (the maximum, then the
  smallest index attaining it) vectorise and give the same indices, ties and NaNs included.
* 'remat' (`remat_in_backward_order`, `remat_policy` other than 'none'): with `nn.remat`
  alone the recomputation depends only on the layer's saved inputs, so XLA's CPU scheduler runs
  every layer's recomputation right after the forward pass and holds all of them at once. Making
  what the layer saved depend on the incoming cotangent (an exact -0.0) makes each layer's
  recomputation wait for its backward pass.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp

REWRITES = ("dot", "argmax", "remat")
_switched_off: set[str] = set()


def applies(name: str) -> bool:
  """Whether rewrite `name` (one of REWRITES) is used in what is traced now."""
  if name not in REWRITES:
    raise ValueError(f"{name!r} is not a CPU rewrite; choose one of {', '.join(REWRITES)}.")
  return name not in _switched_off and jax.default_backend() == "cpu"


@contextlib.contextmanager
def without(*names: str) -> Iterator[None]:
  """Traces with jax's primitive instead of the named rewrites (all of them when none named).

  Only what is traced inside changes: a function jax.jit traced before keeps its program.
  """
  names = names or REWRITES
  for name in names:
    applies(name)  # validates the name
  before = set(_switched_off)
  _switched_off.update(names)
  try:
    yield
  finally:
    _switched_off.clear()
    _switched_off.update(before)


def dot_2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x [..., In] @ kernel [In, Out] -> [..., Out] as one product of x reshaped to [-1, In]."""
  if x.ndim <= 2:
    return jnp.dot(x, kernel)
  y = jnp.dot(x.reshape(-1, x.shape[-1]), kernel)
  return y.reshape(x.shape[:-1] + (kernel.shape[-1],))


def argmax_2_reductions(x: jax.Array, axis: int, max_value: jax.Array | None) -> jax.Array:
  """`jnp.argmax(x, axis)` (int32) from a max and a min reduction; `max_value`: optionally
  `jnp.max(x, axis)` when the caller has it."""
  axis = axis % x.ndim
  if max_value is None:
    max_value = jnp.max(x, axis=axis)
  index = jax.lax.broadcasted_iota(jnp.int32, x.shape, axis)
  # XLA's max propagates NaN, so a row with NaN has max NaN and matches at its NaNs only.
  hit = (x == jnp.expand_dims(max_value, axis)) | jnp.isnan(x)
  return jnp.min(jnp.where(hit, index, x.shape[axis]), axis=axis).astype(jnp.int32)


def tie_to_cotangent(cotangent: Any, tree: Any) -> Any:
  """`tree` unchanged bit for bit, but computed from `cotangent`: its floating leaves plus a
  -0.0 that XLA cannot prove constant (x + -0.0 == x for every float, -0.0 and NaN included)."""
  first = jnp.ravel(jax.tree.leaves(cotangent)[0])[0]
  neg_zero = -(jnp.abs(jnp.where(jnp.isfinite(first), first, 0.0)) * 0.0)

  def tie(leaf):
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jnp.floating):
      return leaf + neg_zero.astype(leaf.dtype)
    return leaf
  return jax.tree.map(tie, tree)


def remat_in_backward_order(checkpointed: type, deterministic_argnum: int) -> type:
  """`checkpointed` (an `nn.remat` class) whose backward pass first ties what it saved to the
  incoming cotangent (`tie_to_cotangent`); same parameters, values and gradients.
  `deterministic_argnum`: the position of `__call__`'s static `deterministic` argument,
  counting `self` as 0."""
  static = deterministic_argnum - 1  # its index among the arguments after `self`

  def call(module, *args):
    return checkpointed.__call__(module, *args)

  def forward(module, *args):
    deterministic = args[static]
    rest = args[:static] + args[static + 1:]

    def without_static(m, *r):
      return call(m, *r[:static], deterministic, *r[static:])
    return nn.vjp(without_static, module, *rest)

  def backward(deterministic, vjp_fn, cotangent):
    del deterministic
    return tie_to_cotangent(cotangent, vjp_fn)(cotangent)

  tied = nn.custom_vjp(call, forward_fn=forward, backward_fn=backward,
                       nondiff_argnums=(deterministic_argnum,))

  class Rematerialised(checkpointed):  # pylint: disable=missing-class-docstring
    def __call__(self, *args):
      return tied(self, *args)

  return Rematerialised
