"""Building blocks of T5 1.1 and of decoder-only transformers in flax.linen, with T5X parameter
names and logical axes.

Every parameter is float32 and carries logical axis names (``vocab``, ``embed``, ``joined_kv``,
``kv_heads``, ``mlp``, ``heads``, ``relpos_buckets``) through ``nn.with_logical_partitioning``;
main activations carry ``nn.with_logical_constraint`` annotations, which do nothing unless axis
rules and a mesh are active while the function is traced.

Shapes: B batch, Q query length, K key length, E emb dim, H heads, D head dim, J = H*D, F mlp dim;
grouped-query attention: N key/value heads, G = H / N query heads per key/value head.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from irl_lm import ops
from irl_lm.cpu import xla

Array = jax.Array
DType = Any
Initializer = Callable[..., Array]

# Additive bias for masked attention logits (float32). Finite, so fully masked rows (padding
# queries) give a uniform softmax instead of NaN.
NEG_INF = -1e10
RMS_NORM_EPSILON = 1e-6

# T5X's initialisers.
DENSE_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
ATTENTION_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
EMBEDDING_INIT = nn.initializers.normal(stddev=1.0)
RELPOS_INIT = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")

# Logical names of the main activations.
EMBED_ACT = ("batch", "length", "embed")
HEADS_ACT = ("batch", "length", "heads", "kv")
KV_HEADS_ACT = ("batch", "length", "kv_heads", "kv")
MLP_ACT = ("batch", "length", "mlp")


def constrain(x: Array, names: Sequence[str | None]) -> Array:
  """Logical sharding constraint on an activation; identity when no rules/mesh are active."""
  return nn.with_logical_constraint(x, tuple(names))


class RMSNorm(nn.Module):
  """T5 layer norm: scales by the root mean square, no mean subtraction and no bias.

  Input [..., E] of any float dtype; output [..., E] in ``dtype``. Computed in float32.
  Parameter ``scale`` (E,), logical axes ('embed',).
  """

  dtype: DType = jnp.float32
  epsilon: float = RMS_NORM_EPSILON

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param(
        "scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        (x.shape[-1],), jnp.float32)
    x = x.astype(jnp.float32)
    y = x * lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
    return (y * scale).astype(self.dtype)


class Embed(nn.Module):
  """Token embedder. Input int ids [...]; output [..., E] in ``dtype``.

  Parameter ``embedding`` (V, E), logical axes ('vocab', 'embed'). ``attend`` is the tied output
  layer that reuses it.
  """

  num_embeddings: int
  features: int
  dtype: DType = jnp.float32
  embedding_init: Initializer = EMBEDDING_INIT

  def setup(self):
    self.embedding = self.param(
        "embedding", nn.with_logical_partitioning(self.embedding_init, ("vocab", "embed")),
        (self.num_embeddings, self.features), jnp.float32)

  def __call__(self, ids: Array) -> Array:
    return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

  def attend(self, x: Array) -> Array:
    """Tied logits ``x @ embedding.T``: x [..., E] -> float32 [..., V] (no 1/sqrt(E) scaling)."""
    return ops.dot_last(x.astype(jnp.float32), self.embedding.T)


class Dense(nn.Module):
  """Dense layer over the last axis, without bias by default. Input [..., In]; output
  [..., features].

  Computes in ``dtype``. Parameter ``kernel`` (In, features) with logical ``kernel_axes``; with
  ``use_bias`` also ``bias`` (features,) with the logical axis ``kernel_axes[1]``, zeros at init.
  """

  features: int
  kernel_axes: tuple[str, str]
  dtype: DType = jnp.float32
  kernel_init: Initializer = DENSE_INIT
  use_bias: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param(
        "kernel", nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
        (x.shape[-1], self.features), jnp.float32)
    y = ops.dot_last(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param(
          "bias", nn.with_logical_partitioning(nn.initializers.zeros, (self.kernel_axes[1],)),
          (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


def _scaled_init(init: Initializer, divisor: float) -> Initializer:
  def fn(key, shape, dtype=jnp.float32):
    return init(key, shape, dtype) / jnp.asarray(divisor, dtype)
  return fn


class MultiHeadAttention(nn.Module):
  """T5 multi-head dot-product attention with sub-layers ``query``, ``key``, ``value``, ``out``.

  Kernels: query/key/value (E, J) with axes ('embed', 'joined_kv'); out (J, E) with axes
  ('joined_kv', 'embed'). Logits are NOT scaled by 1/sqrt(D): as in T5X, that factor is folded
  into the query initialiser (and so lives in pretrained checkpoints). Logits, bias and softmax
  are float32; everything else is in ``dtype``. Dropout (on the attention weights, shared over
  query positions as in T5X) only when ``deterministic`` is False and ``dropout_rate`` > 0.
  """

  num_heads: int
  head_dim: int
  emb_dim: int
  dtype: DType = jnp.float32
  dropout_rate: float = 0.0

  def setup(self):
    joined = self.num_heads * self.head_dim
    proj = functools.partial(Dense, joined, ("embed", "joined_kv"), self.dtype)
    self.query = proj(_scaled_init(ATTENTION_INIT, np.sqrt(self.head_dim)))
    self.key = proj(ATTENTION_INIT)
    self.value = proj(ATTENTION_INIT)
    self.out = Dense(self.emb_dim, ("joined_kv", "embed"), self.dtype, ATTENTION_INIT)
    self.dropout = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))

  def _split_heads(self, x: Array) -> Array:
    x = x.reshape(x.shape[:-1] + (self.num_heads, self.head_dim))
    return constrain(x, HEADS_ACT)

  def project_query(self, inputs_q: Array) -> Array:
    """Queries [B, Q, E] -> [B, Q, H, D] in ``dtype``."""
    return self._split_heads(self.query(inputs_q))

  def project_key_value(self, inputs_kv: Array) -> tuple[Array, Array]:
    """Keys/values source [B, K, E] -> (keys [B, K, H, D], values [B, K, H, D])."""
    return self._split_heads(self.key(inputs_kv)), self._split_heads(self.value(inputs_kv))

  def attend(self, query: Array, key: Array, value: Array, bias: Array | None = None,
             deterministic: bool = True) -> Array:
    """Attention from projected heads.

    Args:
      query: [B, Q, H, D]; key, value: [B, K, H, D].
      bias: float32 broadcastable to [B, H, Q, K] (masks as NEG_INF, relative-position bias), or None.
      deterministic: disables dropout when True.
    Returns:
      [B, Q, E] in ``dtype`` (after the ``out`` projection).
    """
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key.astype(query.dtype),
                        preferred_element_type=jnp.float32)
    if bias is not None:
      logits = logits + bias.astype(jnp.float32)
    weights = ops.softmax(logits).astype(self.dtype)
    weights = self.dropout(weights, deterministic=deterministic or self.dropout_rate == 0.0)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, value.astype(self.dtype))
    out = out.reshape(out.shape[:-2] + (self.num_heads * self.head_dim,))
    return constrain(self.out(out), EMBED_ACT)

  def attend_cached(self, query: Array, key: Array, value: Array,
                    bias: Array | None = None) -> Array:
    """Attention of decode-step queries over a head-major K/V cache (no dropout).

    The cache is stored heads-first so that the per-step dot products read it as it lies: with
    the [B, K, H, D] layout XLA transposes the whole cache of every layer at every step.

    Args:
      query: [B, Q, H, D] (Q = 1 when decoding).
      key, value: [B, H, K, D], e.g. from `heads_major(project_key_value(...))`.
      bias: float32 broadcastable to [B, H, Q, K] (masks as NEG_INF, relative-position bias).
    Returns:
      [B, Q, E] in ``dtype`` (after the ``out`` projection); equals `attend` on the same
      keys/values in the [B, K, H, D] layout.
    """
    logits = jnp.einsum("bqhd,bhkd->bhqk", query, key.astype(query.dtype),
                        preferred_element_type=jnp.float32)
    if bias is not None:
      logits = logits + bias.astype(jnp.float32)
    weights = ops.softmax(logits).astype(self.dtype)
    out = jnp.einsum("bhqk,bhkd->bqhd", weights, value.astype(self.dtype))
    out = out.reshape(out.shape[:-2] + (self.num_heads * self.head_dim,))
    return constrain(self.out(out), EMBED_ACT)

  def __call__(self, inputs_q: Array, inputs_kv: Array, bias: Array | None = None,
               deterministic: bool = True) -> Array:
    """inputs_q [B, Q, E], inputs_kv [B, K, E], bias ~[B, H, Q, K] -> [B, Q, E]."""
    key, value = self.project_key_value(inputs_kv)
    return self.attend(self.project_query(inputs_q), key, value, bias, deterministic)


HEADS_MAJOR_ACT = ("batch", "heads", "length", "kv")


def heads_major(x: Array) -> Array:
  """[B, K, H, D] -> [B, H, K, D] (the decode cache's layout, see `attend_cached`)."""
  return constrain(jnp.swapaxes(x, 1, 2), HEADS_MAJOR_ACT)


KV_HEADS_MAJOR_ACT = ("batch", "kv_heads", "length", "kv")


def rotary_embedding(x: Array, positions: Array, theta: float) -> Array:
  """Rotary position embedding in Hugging Face Llama's "rotate half" layout.

  Coordinate i of the first half of each head and coordinate i of the second half form one
  pair, rotated by ``position * theta ** (-2i / D)``.

  Args:
    x: [B, S, N, D] queries or keys (D even), any float dtype.
    positions: int [B, S], each token's position.
    theta: base of the frequencies (10000 for Llama 2, 500000 for Llama 3).
  Returns:
    [B, S, N, D] in x's dtype (the rotation is computed in float32).
  """
  half = x.shape[-1] // 2
  inv_freq = 1.0 / (theta ** (jnp.arange(0, 2 * half, 2, dtype=jnp.float32) / (2 * half)))
  angles = positions.astype(jnp.float32)[:, :, None, None] * inv_freq  # [B, S, 1, D/2]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class GroupedQueryAttention(nn.Module):
  """Dot-product attention with N = ``num_kv_heads`` key/value heads shared by groups of
  G = H / N query heads (N = H: multi-head, N = 1: multi-query), Llama-style.

  Sub-layers ``query`` (E, H*D) axes ('embed', 'joined_kv'), ``key`` and ``value`` (E, N*D) axes
  ('embed', 'kv_heads'), ``out`` (H*D, E) axes ('joined_kv', 'embed'); with ``use_bias`` the
  query/key/value projections have biases (Qwen2). Query head h reads key/value head h // G
  (Hugging Face's ``repeat_kv``); keys and values are never repeated in memory. Logits are
  scaled by 1/sqrt(D) explicitly; logits and softmax are float32, the rest is in ``dtype``.
  """

  num_heads: int
  num_kv_heads: int
  head_dim: int
  emb_dim: int
  dtype: DType = jnp.float32
  use_bias: bool = False

  def setup(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                       f"({self.num_kv_heads}); choose num_kv_heads dividing num_heads.")
    kv = self.num_kv_heads * self.head_dim
    self.query = Dense(self.num_heads * self.head_dim, ("embed", "joined_kv"), self.dtype,
                       ATTENTION_INIT, self.use_bias)
    self.key = Dense(kv, ("embed", "kv_heads"), self.dtype, ATTENTION_INIT, self.use_bias)
    self.value = Dense(kv, ("embed", "kv_heads"), self.dtype, ATTENTION_INIT, self.use_bias)
    self.out = Dense(self.emb_dim, ("joined_kv", "embed"), self.dtype, ATTENTION_INIT)

  def project_query(self, x: Array) -> Array:
    """[B, Q, E] -> queries [B, Q, H, D] in ``dtype``."""
    q = self.query(x)
    return constrain(q.reshape(q.shape[:-1] + (self.num_heads, self.head_dim)), HEADS_ACT)

  def project_key_value(self, x: Array) -> tuple[Array, Array]:
    """[B, K, E] -> (keys [B, K, N, D], values [B, K, N, D]) in ``dtype``."""
    shape = x.shape[:-1] + (self.num_kv_heads, self.head_dim)
    return (constrain(self.key(x).reshape(shape), KV_HEADS_ACT),
            constrain(self.value(x).reshape(shape), KV_HEADS_ACT))

  def _attend(self, query: Array, keys: Sequence[Array], values: Sequence[Array],
              bias: Array | None, heads_major_kv: bool) -> Array:
    batch, length = query.shape[:2]
    groups = self.num_heads // self.num_kv_heads
    q = query.reshape(batch, length, self.num_kv_heads, groups, self.head_dim)
    kv = "bnkd" if heads_major_kv else "bknd"
    logits = jnp.concatenate(
        [jnp.einsum(f"bqngd,{kv}->bngqk", q, k.astype(q.dtype),
                    preferred_element_type=jnp.float32) for k in keys], axis=-1)
    logits = logits * np.float32(1.0 / np.sqrt(self.head_dim))
    if bias is not None:
      logits = logits + bias.astype(jnp.float32)[:, :, None]  # [B, 1, 1, Q, K]
    weights = ops.softmax(logits).astype(self.dtype)
    out, start = 0, 0
    for v in values:  # the weights of each block of keys times its values
      size = v.shape[2 if heads_major_kv else 1]
      out = out + jnp.einsum(f"bngqk,{kv}->bqngd", weights[..., start:start + size],
                             v.astype(self.dtype))
      start += size
    out = out.reshape(batch, length, self.num_heads * self.head_dim)
    return constrain(self.out(out), EMBED_ACT)

  def attend(self, query: Array, key: Array, value: Array, bias: Array | None = None) -> Array:
    """Attention from projected heads: query [B, Q, H, D], key/value [B, K, N, D], bias
    float32 broadcastable to [B, 1, Q, K] (masks as NEG_INF) -> [B, Q, E] in ``dtype``."""
    return self._attend(query, [key], [value], bias, heads_major_kv=False)

  def attend_cached(self, query: Array, keys: Sequence[Array], values: Sequence[Array],
                    bias: Array | None = None) -> Array:
    """Attention of decode-step queries over heads-major caches (see
    `MultiHeadAttention.attend_cached` for why heads-major).

    Args:
      query: [B, Q, H, D] (Q = 1 when decoding).
      keys, values: blocks [B, N, K_i, D] (e.g. a prefilled prompt cache and a decode cache),
        read as one key axis of length K = sum K_i without concatenating them.
      bias: float32 broadcastable to [B, 1, Q, K].
    Returns:
      [B, Q, E] in ``dtype``; equals `attend` on the concatenated keys/values.
    """
    return self._attend(query, keys, values, bias, heads_major_kv=True)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": functools.partial(nn.gelu, approximate=True),  # T5X's and HF's gelu_new
    "silu": nn.silu,  # SwiGLU (Llama)
}


class MlpBlock(nn.Module):
  """Gated feed-forward: ``wo(act(wi_0 x) * wi_1 x)``. Input [B, T, E] -> [B, T, E].

  Kernels wi_0 (gate), wi_1 (up) (E, F) axes ('embed', 'mlp'); wo (F, E) axes ('mlp', 'embed').
  ``activation`` is a key of ``ACTIVATIONS``: 'gelu' (the default, T5 1.1: the tanh
  approximation, flax's default, T5X's and HF's ``gelu_new``) or 'silu' (SwiGLU). Dropout on
  the hidden layer (shared over positions, as T5X) when not ``deterministic``.
  """

  mlp_dim: int
  dtype: DType = jnp.float32
  dropout_rate: float = 0.0
  activation: str = "gelu"

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"Unknown MLP activation {self.activation!r}; choose one of "
                       f"{sorted(ACTIVATIONS)}.")
    emb_dim = x.shape[-1]
    gate = Dense(self.mlp_dim, ("embed", "mlp"), self.dtype, name="wi_0")(x)
    linear = Dense(self.mlp_dim, ("embed", "mlp"), self.dtype, name="wi_1")(x)
    h = constrain(ACTIVATIONS[self.activation](gate) * linear, MLP_ACT)
    h = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(
        h, deterministic=deterministic or self.dropout_rate == 0.0)
    return constrain(Dense(emb_dim, ("mlp", "embed"), self.dtype, name="wo")(h), EMBED_ACT)


@functools.lru_cache(maxsize=None)
def _bucket_of_distance(num_buckets: int, max_distance: int) -> np.ndarray:
  """T5's bucket of a non-negative distance n = 0..max_distance (int32 [max_distance + 1]).

  Half the buckets are exact (n < num_buckets // 2), the rest logarithmic up to max_distance;
  every distance >= max_distance falls in the last bucket, so the table saturates at its end.
  """
  n = np.arange(max_distance + 1)
  max_exact = num_buckets // 2
  with np.errstate(divide="ignore"):
    log_ratio = np.log(n.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
  large = max_exact + (log_ratio / np.log(max_distance / max_exact)
                       * (num_buckets - max_exact)).astype(np.int32)
  return np.where(n < max_exact, n, np.minimum(large, num_buckets - 1)).astype(np.int32)


def relative_position_bucket(relative_position: Array, *, bidirectional: bool,
                             num_buckets: int = 32, max_distance: int = 128) -> Array:
  """T5 bucketing of ``relative_position = key_position - query_position`` (int array, any shape).

  Bidirectional (encoder): half of the buckets for keys before the query, half for keys after.
  Causal (decoder): keys after the query all map to bucket 0 (they are masked anyway).
  Works on numpy or traced jax ints; returns int32 buckets of the same shape.
  """
  xp = np if isinstance(relative_position, np.ndarray) else jnp
  distance = -relative_position  # > 0 for keys in the past
  offset = 0
  if bidirectional:
    num_buckets //= 2
    offset = xp.where(distance < 0, num_buckets, 0)
    distance = xp.abs(distance)
  else:
    distance = xp.maximum(distance, 0)
  table = xp.asarray(_bucket_of_distance(num_buckets, max_distance))
  return (offset + table[xp.minimum(distance, max_distance)]).astype(xp.int32)


class RelativePositionBias(nn.Module):
  """Per-head relative position bias shared by all layers of one stack.

  Parameter ``rel_embedding`` (H, num_buckets), logical axes ('heads', 'relpos_buckets').
  """

  num_heads: int
  bidirectional: bool
  num_buckets: int = 32
  max_distance: int = 128

  def setup(self):
    self.rel_embedding = self.param(
        "rel_embedding", nn.with_logical_partitioning(RELPOS_INIT, ("heads", "relpos_buckets")),
        (self.num_heads, self.num_buckets), jnp.float32)

  def _lookup(self, relative_position) -> Array:
    buckets = relative_position_bucket(
        relative_position, bidirectional=self.bidirectional, num_buckets=self.num_buckets,
        max_distance=self.max_distance)
    return jnp.take(self.rel_embedding, jnp.asarray(buckets), axis=1)

  def __call__(self, query_length: int, key_length: int) -> Array:
    """Full bias for static lengths: float32 [1, H, Q, K]."""
    relative = np.arange(key_length)[None, :] - np.arange(query_length)[:, None]
    return self._lookup(relative)[None]

  def query_row(self, position: Array, key_length: int) -> Array:
    """Bias of one (possibly traced) query position against keys 0..K-1: float32 [1, H, 1, K]."""
    relative = jnp.arange(key_length, dtype=jnp.int32) - jnp.asarray(position, jnp.int32)
    return self._lookup(relative)[None, :, None, :]


def make_attention_mask(query_input: Array, key_input: Array,
                        pairwise_fn: Callable[[Array, Array], Array] = jnp.logical_and) -> Array:
  """Pairwise mask: query_input [B, Q], key_input [B, K] -> bool [B, 1, Q, K]."""
  mask = pairwise_fn(query_input[:, :, None], key_input[:, None, :])
  return mask[:, None].astype(bool)


def causal_mask(length: int) -> Array:
  """Lower-triangular mask (key <= query): bool [1, 1, T, T]."""
  idx = jnp.arange(length)
  return (idx[None, :] <= idx[:, None])[None, None]


def mask_to_bias(mask: Array) -> Array:
  """bool mask -> float32 additive bias of the same shape (0 where True, NEG_INF where False)."""
  return jnp.where(mask, 0.0, NEG_INF).astype(jnp.float32)


# Rematerialisation policies (`config.remat_policy`): what a layer keeps for the backward pass.
REMAT_POLICIES: dict[str, Callable[..., bool] | None] = {
    "none": None,  # not rematerialised: every intermediate is kept
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # T5X's 'minimal'
    "dots": jax.checkpoint_policies.dots_saveable,  # keep every matmul output
    "full": jax.checkpoint_policies.nothing_saveable,  # keep only the layer's inputs
}


def remat(layer_cls: type, policy: str, deterministic_argnum: int) -> type:
  """`layer_cls` rematerialised with `REMAT_POLICIES[policy]` (itself for 'none').

  Parameter names and values are unchanged; only the backward pass recomputes what the policy
  does not keep, trading compute for activation memory. `deterministic_argnum`: the position of
  `__call__`'s Python-bool `deterministic` argument, counting `self` as 0 (static under remat).

  On a CPU the backward pass first ties what the layer saved to its incoming cotangent
  (`irl_lm.cpu.xla.remat_in_backward_order`), so that XLA's CPU scheduler recomputes each layer
  when its backward pass runs rather than all of them at once.
  """
  if policy not in REMAT_POLICIES:
    raise ValueError(f"remat_policy {policy!r} is unknown; choose one of "
                     f"{', '.join(map(repr, REMAT_POLICIES))}.")
  if policy == "none":
    return layer_cls
  checkpointed = nn.remat(layer_cls, policy=REMAT_POLICIES[policy],
                          static_argnums=(deterministic_argnum,))
  if xla.applies("remat"):
    checkpointed = xla.remat_in_backward_order(checkpointed, deterministic_argnum)
  checkpointed.__name__ = checkpointed.__qualname__ = layer_cls.__name__
  return checkpointed
