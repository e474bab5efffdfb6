"""A T5 1.1 encoder-decoder with a scalar head per target position: GAIL's discriminator.

``D(s_t, a_t) = sigmoid(l_t)`` must see the state ``s_t = (x, y_<t)`` *and* the action
``a_t = y_t``. The decoder is therefore fed the target tokens themselves (not shifted right): with
causal self-attention, position t attends to ``y_0 .. y_t`` and to the encoded input x, and a
linear head maps its final hidden state to the logit ``l_t``.

Parameter tree (T5X-style names; the layers are those of ``irl_lm.models.t5``):
  token_embedder/embedding (V, E); encoder/... (as T5); decoder/relpos_bias/rel_embedding (H, 32);
  decoder/layers_i/... (as T5's decoder layers); decoder/decoder_norm/scale (E,);
  decoder/score_head/kernel (E, 1), logical axes ('embed', None).

Shapes: B batch, L encoder length, T decoder length, V vocab, E emb dim.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from irl_lm.models import base, decoder_only, decoder_only_discriminator, layers
from irl_lm.models import t5

Array = jax.Array
Params = Any


class ScoringDecoder(nn.Module):
  """T5 decoder stack whose output is one float32 logit per position instead of V logits."""

  config: t5.T5Config

  def setup(self):
    cfg = self.config
    self.relpos_bias = t5._relpos(cfg, False)
    self.layers = [t5.DecoderLayer(cfg) for _ in range(cfg.num_decoder_layers)]  # layers_i
    self.decoder_norm = layers.RMSNorm(cfg.activation_dtype)
    self.score_head = layers.Dense(1, ("embed", None), jnp.float32)

  def __call__(self, embedded: Array, encoded: Array, self_mask: Array,
               cross_mask: Array) -> Array:
    """embedded [B, T, E], encoded [B, L, E], self_mask bool [B, 1, T, T] (causal included),
    cross_mask bool [B, 1, T, L] -> float32 logits [B, T]."""
    length = embedded.shape[1]
    self_bias = layers.mask_to_bias(self_mask) + self.relpos_bias(length, length)
    cross_bias = layers.mask_to_bias(cross_mask)
    x = layers.constrain(embedded.astype(self.config.activation_dtype), layers.EMBED_ACT)
    for layer in self.layers:
      x = layer(x, encoded, self_bias, cross_bias, True)
    return self.score_head(self.decoder_norm(x))[..., 0].astype(jnp.float32)


class T5Scorer(nn.Module):
  """Encoder-decoder scoring every (prefix, token) pair; see the module docstring."""

  config: t5.T5Config

  def setup(self):
    cfg = self.config
    self.token_embedder = layers.Embed(cfg.vocab_size, cfg.emb_dim, cfg.activation_dtype)
    self.encoder = t5.Encoder(cfg)
    self.decoder = ScoringDecoder(cfg)

  def __call__(self, encoder_input_tokens: Array, decoder_target_tokens: Array,
               encoder_segment_ids: Array | None = None,
               decoder_segment_ids: Array | None = None) -> Array:
    """Tokens [B, L] / [B, T] (0 = padding; segment ids alike) -> float32 logits [B, T]."""
    enc_valid = encoder_input_tokens > 0
    enc_mask = layers.make_attention_mask(enc_valid, enc_valid)
    if encoder_segment_ids is not None:
      enc_mask &= layers.make_attention_mask(encoder_segment_ids, encoder_segment_ids, jnp.equal)
    encoded = self.encoder(self.token_embedder(encoder_input_tokens), enc_mask, True)
    dec_valid = decoder_target_tokens > 0
    self_mask = layers.causal_mask(decoder_target_tokens.shape[1]) & layers.make_attention_mask(
        dec_valid, dec_valid)
    cross_mask = layers.make_attention_mask(dec_valid, enc_valid)
    if decoder_segment_ids is not None:
      self_mask &= layers.make_attention_mask(decoder_segment_ids, decoder_segment_ids, jnp.equal)
      if encoder_segment_ids is not None:
        cross_mask &= layers.make_attention_mask(decoder_segment_ids, encoder_segment_ids,
                                                 jnp.equal)
    return self.decoder(self.token_embedder(decoder_target_tokens), encoded, self_mask,
                        cross_mask)


class DiscriminatorModel(base.FlaxModel):
  """Pure-function wrapper around ``T5Scorer`` (no dropout: a discriminator for GAIL).

  Attributes:
    config: the T5Config (its vocab_size must be the policy's).
    module: the flax module.
  """

  def __init__(self, config: t5.T5Config):
    self.config = config
    self.module = T5Scorer(config)

  @classmethod
  def for_policy(cls, policy: Any, size: str,
                 overrides: Mapping[str, Any] | None = None) -> Any:
    """A discriminator of preset `size` for `policy`, of the policy's family: a T5 1.1
    encoder-decoder for a T5 `EncoderDecoderModel` (as in the paper), a decoder-only scorer
    (`decoder_only_discriminator.DecoderOnlyDiscriminatorModel`) for a `DecoderOnlyModel`; the
    policy's vocabulary and activation dtype, other fields (of that family's config) from
    `overrides`.

    Raises:
      ValueError: the policy is of neither family.
    """
    policy = getattr(policy, "model", policy)  # a LoRA policy: its wrapped model
    if isinstance(policy, decoder_only.DecoderOnlyModel):
      return decoder_only_discriminator.DecoderOnlyDiscriminatorModel.for_policy(
          policy, size, overrides)
    if not isinstance(policy, t5.EncoderDecoderModel):
      raise ValueError(f"GAIL's discriminator needs a T5 encoder-decoder or a decoder-only "
                       f"policy, not {type(policy).__name__}.")
    config = t5.t5_1_1_config(size, **{**dict(overrides or {}),
                                       "vocab_size": policy.config.vocab_size,
                                       "activation_dtype": policy.config.activation_dtype})
    return cls(config)

  def _dummy_inputs(self, input_shapes: base.InputShapes) -> tuple[Array, ...]:
    enc = jnp.ones(tuple(input_shapes["encoder_input_tokens"]), jnp.int32)
    dec = jnp.ones(tuple(input_shapes["decoder_input_tokens"]), jnp.int32)
    return enc, dec

  def scores(self, params: Params, batch: Mapping[str, Array]) -> Array:
    """Discriminator logits ``l_t`` of every (prefix, token) pair.

    Args:
      params: from ``init``.
      batch: the policy's features: 'encoder_input_tokens' [B, L], 'decoder_target_tokens'
        [B, T] (0 = padding), and optionally 'encoder_segment_ids' [B, L],
        'decoder_segment_ids' [B, T].

    Returns:
      float32 [B, T]; ``sigmoid`` of it is D(s_t, a_t), the probability that the pair is data.
    """
    return self.module.apply({"params": params}, batch["encoder_input_tokens"],
                             batch["decoder_target_tokens"], batch.get("encoder_segment_ids"),
                             batch.get("decoder_segment_ids"))
