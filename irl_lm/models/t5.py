"""T5 1.1 encoder-decoder with T5X's parameter names and logical axes, plus incremental decoding.

Parameter tree (no 'params' key in what ``EncoderDecoderModel.init`` returns):
  token_embedder/embedding                                     (V, E)  shared by both stacks
  encoder/relpos_bias/rel_embedding                            (H, 32) bidirectional buckets
  encoder/layers_i/{pre_attention_layer_norm, attention, pre_mlp_layer_norm, mlp}
  encoder/encoder_norm/scale
  decoder/relpos_bias/rel_embedding                            (H, 32) causal buckets
  decoder/layers_i/{pre_self_attention_layer_norm, self_attention, pre_cross_attention_layer_norm,
                    encoder_decoder_attention, pre_mlp_layer_norm, mlp}
  decoder/decoder_norm/scale
  decoder/logits_dense/kernel                                  (E, V)  untied output layer

Shapes: B batch, L encoder length, T decoder length, V vocab, E emb dim, H heads, D head dim.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from irl_lm.models import base, features, layers, precision

Array = jax.Array
Params = base.Params
DecodeState = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hyper-parameters of a T5 1.1 encoder-decoder (defaults: T5 1.1 small)."""

  vocab_size: int = 32128
  emb_dim: int = 512
  num_heads: int = 6
  head_dim: int = 64
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  mlp_dim: int = 1024
  dropout_rate: float = 0.0
  activation_dtype: Any = dataclasses.field(
      default_factory=precision.default_activation_dtype)
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  # What each layer keeps for the backward pass: 'none', 'minimal', 'dots' or 'full'
  # (`layers.REMAT_POLICIES`); the rest is recomputed, saving activation memory.
  remat_policy: str = "none"


_PRESETS: dict[str, dict[str, Any]] = {
    # For CPU tests and minutes-long CPU training; set vocab_size to the task's vocabulary.
    "tiny": dict(emb_dim=128, num_heads=4, head_dim=32, num_encoder_layers=2,
                 num_decoder_layers=2, mlp_dim=256),
    "small": dict(emb_dim=512, num_heads=6, head_dim=64, num_encoder_layers=8,
                  num_decoder_layers=8, mlp_dim=1024),
    "base": dict(emb_dim=768, num_heads=12, head_dim=64, num_encoder_layers=12,
                 num_decoder_layers=12, mlp_dim=2048),
    "large": dict(emb_dim=1024, num_heads=16, head_dim=64, num_encoder_layers=24,
                  num_decoder_layers=24, mlp_dim=2816),
    "xl": dict(emb_dim=2048, num_heads=32, head_dim=64, num_encoder_layers=24,
               num_decoder_layers=24, mlp_dim=5120),
    "xxl": dict(emb_dim=4096, num_heads=64, head_dim=64, num_encoder_layers=24,
                num_decoder_layers=24, mlp_dim=10240),
}


def t5_1_1_config(size: str, **overrides: Any) -> T5Config:
  """Preset config: size in 'tiny', 'small', 'base', 'large', 'xl', 'xxl'.

  small..xxl are T5X's T5 1.1 sizes (vocab 32128). ``overrides`` replace any T5Config field,
  e.g. ``vocab_size=...``, ``dropout_rate=0.1``, ``activation_dtype=jnp.float32``.
  """
  if size not in _PRESETS:
    raise ValueError(f"Unknown T5 1.1 size {size!r}; choose one of {sorted(_PRESETS)}.")
  return T5Config(**{**_PRESETS[size], **overrides})


def _dropout(cfg: T5Config) -> nn.Dropout:
  # T5X shares each dropout mask across sequence positions (broadcast over the length axis).
  return nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))


def _attention(cfg: T5Config, **kwargs: Any) -> layers.MultiHeadAttention:
  return layers.MultiHeadAttention(cfg.num_heads, cfg.head_dim, cfg.emb_dim,
                                   cfg.activation_dtype, cfg.dropout_rate, **kwargs)


def _relpos(cfg: T5Config, bidirectional: bool, **kwargs: Any) -> layers.RelativePositionBias:
  return layers.RelativePositionBias(cfg.num_heads, bidirectional,
                                     cfg.relative_attention_num_buckets,
                                     cfg.relative_attention_max_distance, **kwargs)


class EncoderLayer(nn.Module):
  """Pre-norm self-attention + gated MLP block. x [B, L, E], bias [B, H, L, L] -> [B, L, E]."""

  config: T5Config

  @nn.compact
  def __call__(self, x: Array, bias: Array, deterministic: bool) -> Array:
    cfg = self.config
    dtype = cfg.activation_dtype
    h = layers.RMSNorm(dtype, name="pre_attention_layer_norm")(x)
    h = _attention(cfg, name="attention")(h, h, bias, deterministic)
    x = x + _dropout(cfg)(h, deterministic=deterministic)
    h = layers.RMSNorm(dtype, name="pre_mlp_layer_norm")(x)
    h = layers.MlpBlock(cfg.mlp_dim, dtype, cfg.dropout_rate, name="mlp")(h, deterministic)
    x = x + _dropout(cfg)(h, deterministic=deterministic)
    return layers.constrain(x, layers.EMBED_ACT)


class Encoder(nn.Module):
  """Encoder stack. embedded [B, L, E], mask bool [B, 1, L, L] -> encoded [B, L, E]."""

  config: T5Config

  @nn.compact
  def __call__(self, embedded: Array, mask: Array, deterministic: bool) -> Array:
    cfg = self.config
    length = embedded.shape[1]
    # Mask and relative-position bias are combined once and shared by every layer.
    bias = layers.mask_to_bias(mask) + _relpos(cfg, True, name="relpos_bias")(length, length)
    x = _dropout(cfg)(embedded, deterministic=deterministic).astype(cfg.activation_dtype)
    x = layers.constrain(x, layers.EMBED_ACT)
    for i in range(cfg.num_encoder_layers):
      x = layers.remat(EncoderLayer, cfg.remat_policy, 3)(cfg, name=f"layers_{i}")(
          x, bias, deterministic)
    x = layers.RMSNorm(cfg.activation_dtype, name="encoder_norm")(x)
    return _dropout(cfg)(x, deterministic=deterministic)


class DecoderLayer(nn.Module):
  """Pre-norm causal self-attention + cross-attention + gated MLP block, with a decode path."""

  config: T5Config

  def setup(self):
    cfg = self.config
    dtype = cfg.activation_dtype
    self.pre_self_attention_layer_norm = layers.RMSNorm(dtype)
    self.self_attention = _attention(cfg)
    self.pre_cross_attention_layer_norm = layers.RMSNorm(dtype)
    self.encoder_decoder_attention = _attention(cfg)
    self.pre_mlp_layer_norm = layers.RMSNorm(dtype)
    self.mlp = layers.MlpBlock(cfg.mlp_dim, dtype, cfg.dropout_rate)
    self.dropout = _dropout(cfg)

  def _mlp_residual(self, x: Array, deterministic: bool) -> Array:
    h = self.mlp(self.pre_mlp_layer_norm(x), deterministic)
    return layers.constrain(x + self.dropout(h, deterministic=deterministic), layers.EMBED_ACT)

  def __call__(self, x: Array, encoded: Array, self_bias: Array, cross_bias: Array,
               deterministic: bool) -> Array:
    """x [B, T, E], encoded [B, L, E], self_bias [B, H, T, T], cross_bias [B, 1, T, L] -> [B, T, E]."""
    h = self.pre_self_attention_layer_norm(x)
    h = self.self_attention(h, h, self_bias, deterministic)
    x = x + self.dropout(h, deterministic=deterministic)
    h = self.pre_cross_attention_layer_norm(x)
    h = self.encoder_decoder_attention(h, encoded, cross_bias, deterministic)
    x = x + self.dropout(h, deterministic=deterministic)
    return self._mlp_residual(x, deterministic)

  def init_cache(self, encoded: Array, max_length: int) -> dict[str, Array]:
    """Cross-attention K/V of encoded [B, L, E] and an empty self-attention cache of length T.

    Returns {'cross_key', 'cross_value': [B, H, L, D], 'self_key', 'self_value': [B, H, T, D]},
    heads-major (see ``layers.MultiHeadAttention.attend_cached``).
    """
    cross_key, cross_value = self.encoder_decoder_attention.project_key_value(encoded)
    cfg = self.config
    empty = layers.constrain(
        jnp.zeros((encoded.shape[0], cfg.num_heads, max_length, cfg.head_dim),
                  cfg.activation_dtype), layers.HEADS_MAJOR_ACT)
    return {"cross_key": layers.heads_major(cross_key),
            "cross_value": layers.heads_major(cross_value),
            "self_key": empty, "self_value": empty}

  def decode(self, x: Array, cache: dict[str, Array], self_bias: Array, cross_bias: Array,
             position: Array) -> tuple[Array, dict[str, Array]]:
    """One step. x [B, 1, E]; self_bias [1, H, 1, T] (causal mask included); cross_bias
    [B, 1, 1, L]; position: int32 scalar (may be traced). Returns (x [B, 1, E], updated cache).
    """
    h = self.pre_self_attention_layer_norm(x)
    query = self.self_attention.project_query(h)
    key, value = self.self_attention.project_key_value(h)  # [B, 1, H, D]
    start = (0, 0, position, 0)
    self_key = lax.dynamic_update_slice(
        cache["self_key"], layers.heads_major(key).astype(cache["self_key"].dtype), start)
    self_value = lax.dynamic_update_slice(
        cache["self_value"], layers.heads_major(value).astype(cache["self_value"].dtype), start)
    x = x + self.self_attention.attend_cached(query, self_key, self_value, self_bias)
    h = self.pre_cross_attention_layer_norm(x)
    query = self.encoder_decoder_attention.project_query(h)
    x = x + self.encoder_decoder_attention.attend_cached(
        query, cache["cross_key"], cache["cross_value"], cross_bias)
    new_cache = dict(cache, self_key=self_key, self_value=self_value)
    return self._mlp_residual(x, True), new_cache


class Decoder(nn.Module):
  """Decoder stack with untied output layer ``logits_dense``; teacher-forced and step paths."""

  config: T5Config

  def setup(self):
    cfg = self.config
    self.relpos_bias = _relpos(cfg, False)
    layer = layers.remat(DecoderLayer, cfg.remat_policy, 5)
    self.layers = [layer(cfg) for _ in range(cfg.num_decoder_layers)]  # layers_i
    self.decoder_norm = layers.RMSNorm(cfg.activation_dtype)
    self.logits_dense = layers.Dense(cfg.vocab_size, ("embed", "vocab"), jnp.float32)
    self.dropout = _dropout(cfg)

  def _logits(self, x: Array, deterministic: bool) -> Array:
    x = self.dropout(self.decoder_norm(x), deterministic=deterministic)
    return layers.constrain(self.logits_dense(x), ("batch", "length", "vocab"))

  def __call__(self, embedded: Array, encoded: Array, self_mask: Array, cross_mask: Array,
               deterministic: bool) -> Array:
    """embedded [B, T, E], encoded [B, L, E], self_mask bool [B, 1, T, T] (causal included),
    cross_mask bool [B, 1, T, L] -> float32 logits [B, T, V]."""
    length = embedded.shape[1]
    self_bias = layers.mask_to_bias(self_mask) + self.relpos_bias(length, length)
    cross_bias = layers.mask_to_bias(cross_mask)
    x = self.dropout(embedded, deterministic=deterministic).astype(self.config.activation_dtype)
    x = layers.constrain(x, layers.EMBED_ACT)
    for layer in self.layers:
      x = layer(x, encoded, self_bias, cross_bias, deterministic)
    return self._logits(x, deterministic)

  def init_cache(self, encoded: Array, max_length: int) -> dict[str, dict[str, Array]]:
    """Per-layer caches {'layers_i': DecoderLayer.init_cache(...)} for encoded [B, L, E]."""
    return {f"layers_{i}": layer.init_cache(encoded, max_length)
            for i, layer in enumerate(self.layers)}

  def decode_step(self, embedded: Array, cache: dict[str, Any], encoder_bias: Array,
                  position: Array) -> tuple[Array, dict[str, Any]]:
    """embedded [B, 1, E], encoder_bias float32 [B, L], position int32 scalar
    -> (float32 logits [B, V], updated cache)."""
    max_length = cache["layers_0"]["self_key"].shape[2]
    # Only the bias row of this query position is gathered from rel_embedding (H x T per step),
    # never the full T x T table.
    keys = jnp.arange(max_length, dtype=jnp.int32)
    causal = layers.mask_to_bias(keys <= position)[None, None, None, :]
    self_bias = self.relpos_bias.query_row(position, max_length) + causal
    cross_bias = encoder_bias[:, None, None, :]
    x = embedded.astype(self.config.activation_dtype)
    new_cache = {}
    for i, layer in enumerate(self.layers):
      x, new_cache[f"layers_{i}"] = layer.decode(x, cache[f"layers_{i}"], self_bias, cross_bias,
                                                 position)
    return self._logits(x, True)[:, 0], new_cache


class T5Transformer(nn.Module):
  """T5 1.1 encoder-decoder as a flax module; see ``EncoderDecoderModel`` for the pure API."""

  config: T5Config

  def setup(self):
    cfg = self.config
    self.token_embedder = layers.Embed(cfg.vocab_size, cfg.emb_dim, cfg.activation_dtype)
    self.encoder = Encoder(cfg)
    self.decoder = Decoder(cfg)

  def encode(self, encoder_input_tokens: Array, encoder_segment_ids: Array | None = None,
             deterministic: bool = True) -> Array:
    """encoder_input_tokens [B, L] (0 = padding), segment ids [B, L] -> encoded [B, L, E]."""
    valid = encoder_input_tokens > 0
    mask = layers.make_attention_mask(valid, valid)
    if encoder_segment_ids is not None:
      mask &= layers.make_attention_mask(encoder_segment_ids, encoder_segment_ids, jnp.equal)
    return self.encoder(self.token_embedder(encoder_input_tokens), mask, deterministic)

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Array | None = None,
               encoder_segment_ids: Array | None = None,
               decoder_segment_ids: Array | None = None,
               deterministic: bool = True) -> Array:
    """Teacher-forced logits: tokens [B, L] / [B, T] (segment ids alike) -> float32 [B, T, V].

    Masks follow T5X: encoder padding from encoder tokens != 0; decoder padding from target
    tokens != 0 (when given); with segment ids, no attention across segments.
    """
    encoded = self.encode(encoder_input_tokens, encoder_segment_ids, deterministic)
    length = decoder_input_tokens.shape[1]
    self_mask = layers.causal_mask(length)
    decoder_valid = jnp.ones(decoder_input_tokens.shape, bool)
    if decoder_target_tokens is not None:
      decoder_valid = decoder_target_tokens > 0
      self_mask = self_mask & layers.make_attention_mask(decoder_valid, decoder_valid)
    cross_mask = layers.make_attention_mask(decoder_valid, encoder_input_tokens > 0)
    if decoder_segment_ids is not None:
      self_mask = self_mask & layers.make_attention_mask(
          decoder_segment_ids, decoder_segment_ids, jnp.equal)
      if encoder_segment_ids is not None:
        cross_mask &= layers.make_attention_mask(decoder_segment_ids, encoder_segment_ids,
                                                 jnp.equal)
    return self.decoder(self.token_embedder(decoder_input_tokens), encoded, self_mask,
                        cross_mask, deterministic)

  def init_decode_state(self, encoder_input_tokens: Array, max_decode_length: int) -> DecodeState:
    """Encodes once and builds the decode cache; see ``EncoderDecoderModel.init_decode_state``."""
    encoded = self.encode(encoder_input_tokens)
    state = self.decoder.init_cache(encoded, max_decode_length)
    state["encoder_bias"] = layers.mask_to_bias(encoder_input_tokens > 0)
    return state

  def decode_step(self, state: DecodeState, tokens: Array, position: Array
                  ) -> tuple[Array, DecodeState]:
    """tokens [B] at ``position`` -> (float32 logits [B, V], updated state)."""
    cache = {k: v for k, v in state.items() if k != "encoder_bias"}
    embedded = self.token_embedder(tokens[:, None])
    logits, cache = self.decoder.decode_step(embedded, cache, state["encoder_bias"], position)
    return logits, {**cache, "encoder_bias": state["encoder_bias"]}


def _encoder_tokens(prompts_BL: Array) -> Array:
  """int32 [B, L]: prompts with `base.PROMPT_PAD_ID` padding as T5's 0-padded encoder tokens."""
  return jnp.maximum(jnp.asarray(prompts_BL, jnp.int32), base.PAD_ID)


class EncoderDecoderModel(base.FlaxModel):
  """T5 1.1 as pure functions of (params, inputs): the `base.Model` seam for encoder-decoders.

  Features (seqio's encoder-decoder features): 'encoder_input_tokens' [B, L],
  'decoder_input_tokens' [B, T] (targets shifted right, start token `decoder_start_id`),
  'decoder_target_tokens' [B, T], 'decoder_loss_weights' [B, T], and when packed
  'encoder_segment_ids', 'decoder_segment_ids' (positions are not needed: relative bias only).

  Attributes:
    config: the T5Config.
    module: the flax module (``T5Transformer``).
  """

  decoder_start_id: int = base.PAD_ID  # T5 starts decoding from the PAD id

  def __init__(self, config: T5Config):
    self.config = config
    self.module = T5Transformer(config)

  def _dummy_inputs(self, input_shapes: base.InputShapes) -> tuple[Array, ...]:
    enc = jnp.ones(tuple(input_shapes["encoder_input_tokens"]), jnp.int32)
    dec = jnp.ones(tuple(input_shapes["decoder_input_tokens"]), jnp.int32)
    return enc, dec, dec

  def input_shapes(self, batch_size: int, feature_lengths: Mapping[str, int]
                   ) -> base.InputShapes:
    """{'encoder_input_tokens': (B, L), 'decoder_input_tokens': (B, T)} from {'inputs': L,
    'targets': T}."""
    return {"encoder_input_tokens": (batch_size, feature_lengths["inputs"]),
            "decoder_input_tokens": (batch_size, feature_lengths["targets"])}

  def feature_converter(self, pack: bool) -> Any:
    """`features.EncDecFeatureConverter` (seqio's encoder-decoder features)."""
    return features.EncDecFeatureConverter(pack=pack)

  def prompts(self, batch: base.Batch) -> Array:
    """'encoder_input_tokens' [B, L] (0-padded: for T5, 0 and `base.PROMPT_PAD_ID` both pad)."""
    return batch["encoder_input_tokens"]

  def continuation_length(self, batch: base.Batch) -> int:
    """T, the decoder length of the batch (static)."""
    return batch["decoder_target_tokens"].shape[1]

  def teacher_forcing_batch(self, prompts: Array, continuations: Array,
                            lengths: Array | None = None) -> dict[str, Array]:
    """Encoder-decoder features for `continuations` [B, T] of `prompts` [B, L].

    See `base.Model.teacher_forcing_batch` for where a continuation ends.

    Returns:
      {'encoder_input_tokens' [B, L], 'decoder_input_tokens' [B, T] (targets shifted right,
      start token 0), 'decoder_target_tokens' [B, T] (0 after the end), 'decoder_loss_weights'
      float32 [B, T] (1 on real tokens)}.
    """
    real = base.continuation_mask(continuations, lengths, eos_id=self.eos_id)
    targets = jnp.where(real, continuations, self.pad_id).astype(jnp.int32)
    return {"encoder_input_tokens": _encoder_tokens(prompts),
            "decoder_input_tokens": jnp.pad(targets[:, :-1], ((0, 0), (1, 0)),
                                            constant_values=self.decoder_start_id),
            "decoder_target_tokens": targets,
            "decoder_loss_weights": real.astype(jnp.float32)}

  def logits(self, params: Params, batch: Mapping[str, Array], *,
             dropout_rng: Array | None = None) -> Array:
    """Teacher-forced logits.

    Args:
      params: from ``init``.
      batch: 'encoder_input_tokens' [B, L], 'decoder_input_tokens' [B, T], optional
        'decoder_target_tokens' [B, T] (decoder padding mask), 'encoder_segment_ids' [B, L],
        'decoder_segment_ids' [B, T] (packing). Positions are not needed (relative bias only).
      dropout_rng: enables dropout when given and config.dropout_rate > 0.
    Returns:
      float32 [B, T, V].
    """
    deterministic = dropout_rng is None or self.config.dropout_rate == 0.0
    rngs = {} if deterministic else {"dropout": dropout_rng}
    return self.module.apply(
        {"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
        batch.get("decoder_target_tokens"), batch.get("encoder_segment_ids"),
        batch.get("decoder_segment_ids"), deterministic=deterministic, rngs=rngs)

  def init_decode_state(self, params: Params, prompts: Array,
                        max_decode_length: int) -> DecodeState:
    """Runs the encoder once and prepares incremental decoding.

    Args:
      params: from ``init``.
      prompts: encoder input tokens, int32 [B, L], 0 or `base.PROMPT_PAD_ID` = padding.
      max_decode_length: T, the length of the self-attention cache (static).
    Returns:
      DecodeState, a dict whose every leaf has batch as its leading axis:
        'encoder_bias': float32 [B, L] (0 for real tokens, NEG_INF for padding);
        'layers_i': {'cross_key', 'cross_value': [B, H, L, D] (precomputed once),
                     'self_key', 'self_value': [B, H, T, D] (zeros until written)}
      (heads-major, so that each step's attention reads the cache without transposing it)
      with K/V in config.activation_dtype.
    """
    return self.module.apply({"params": params}, _encoder_tokens(prompts), max_decode_length,
                             method=T5Transformer.init_decode_state)

  def start_tokens(self, prompts: Array) -> Array:
    """The decoder start token (0) for every row: int32 [B]."""
    return jnp.full((prompts.shape[0],), self.decoder_start_id, jnp.int32)

  def decode_step(self, params: Params, state: DecodeState, tokens: Array,
                  position: Array | int) -> tuple[Array, DecodeState]:
    """One decoder step with the cache.

    Args:
      params: from ``init``.
      state: from ``init_decode_state`` or a previous step.
      tokens: int32 [B], the decoder input at ``position`` (``start_tokens`` at position 0).
      position: int32 scalar, may be traced (jit / lax.while_loop).
    Returns:
      (float32 logits [B, V] for the next token, updated DecodeState of unchanged shapes).
      Equals ``logits(...)[:, position]`` under teacher forcing.
    """
    position = jnp.asarray(position, jnp.int32)
    return self.module.apply({"params": params}, state, jnp.asarray(tokens, jnp.int32), position,
                             method=T5Transformer.decode_step)
