"""A decoder-only transformer with a scalar head per position: GAIL's discriminator for
decoder-only policies.

``D(s_t, a_t) = sigmoid(l_t)`` must see the state ``s_t = (x, y_<t)`` *and* the action
``a_t = y_t``. The stack is therefore fed the prompt and continuation unshifted (split layout:
`prompt_tokens` then `decoder_target_tokens`, with `decoder_only.split_positions_and_bias`;
prefix-LM layout: `decoder_target_tokens`): with causal attention the score at continuation
step t reads the prompt and ``y_0 .. y_t``.

Parameter tree (the layers of ``irl_lm.models.decoder_only``):
  token_embedder/embedding (V, E); decoder/layers_i/... (as the decoder-only model);
  decoder/decoder_norm/scale (E,); decoder/score_head/kernel (E, 1), logical axes ('embed', None).

Shapes: B batch, S sequence length (prompt + continuation), V vocab, E emb dim.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from irl_lm.models import base, decoder_only, layers

Array = jax.Array
Params = Any


class ScoringDecoder(decoder_only.Decoder):
  """The decoder-only stack with ``score_head`` (E, 1) instead of an output layer."""

  def setup(self):
    super().setup()  # its logits_dense, if declared, is never called and so has no parameters
    self.score_head = layers.Dense(1, ("embed", None), jnp.float32)

  def scores(self, x: Array) -> Array:
    """Normalised x [B, S, E] -> float32 logits [B, S]."""
    return self.score_head(x)[..., 0].astype(jnp.float32)


class DecoderOnlyScorer(nn.Module):
  """Causal transformer scoring every (prefix, token) pair; see the module docstring."""

  config: decoder_only.DecoderOnlyConfig

  def setup(self):
    cfg = self.config
    self.token_embedder = layers.Embed(cfg.vocab_size, cfg.emb_dim, cfg.activation_dtype)
    self.decoder = ScoringDecoder(cfg)

  def __call__(self, decoder_target_tokens: Array, decoder_segment_ids: Array | None = None,
               decoder_positions: Array | None = None,
               prompt_tokens: Array | None = None) -> Array:
    """Prefix-LM tokens [B, S] (segment ids, positions alike) -> float32 logits [B, S]; or,
    split layout, prompt tokens [B, L] and continuation tokens [B, T] -> [B, T]."""
    if prompt_tokens is None:
      positions, bias = decoder_only.positions_and_bias(
          decoder_target_tokens, decoder_segment_ids, decoder_positions)
      x, _ = self.decoder(self.token_embedder(decoder_target_tokens), positions, bias, True)
      return self.decoder.scores(x)
    cfg = self.config
    lengths_B = decoder_only.prompt_lengths(prompt_tokens,
                                            None if cfg.pad_is_token else base.PAD_ID)
    positions, bias = decoder_only.split_positions_and_bias(
        lengths_B, prompt_tokens.shape[1], decoder_target_tokens.shape[1])
    tokens = jnp.concatenate([jnp.maximum(prompt_tokens, 0), decoder_target_tokens], axis=1)
    x, _ = self.decoder(self.token_embedder(tokens), positions, bias, True)
    return self.decoder.scores(x[:, prompt_tokens.shape[1]:])


class DecoderOnlyDiscriminatorModel(base.FlaxModel):
  """Pure-function wrapper around ``DecoderOnlyScorer`` (no dropout: a discriminator for GAIL).

  The same interface as `irl_lm.models.discriminator.DiscriminatorModel` (`init`,
  `param_logical_axes` from the policy's input shapes, `scores`).

  Attributes:
    config: the DecoderOnlyConfig (its vocab_size must be the policy's).
    module: the flax module.
  """

  def __init__(self, config: decoder_only.DecoderOnlyConfig):
    self.config = config
    self.module = DecoderOnlyScorer(config)

  @classmethod
  def for_policy(cls, policy: decoder_only.DecoderOnlyModel, size: str,
                 overrides: Mapping[str, Any] | None = None) -> "DecoderOnlyDiscriminatorModel":
    """A decoder-only discriminator of preset `size` with the policy's vocabulary and
    activation dtype, other fields from `overrides`."""
    config = decoder_only.decoder_only_config(
        size, **{**dict(overrides or {}), "vocab_size": policy.config.vocab_size,
                 "pad_is_token": policy.config.pad_is_token,
                 "activation_dtype": policy.config.activation_dtype})
    return cls(config)

  def _dummy_inputs(self, input_shapes: base.InputShapes) -> tuple[Array, ...]:
    return (jnp.ones(tuple(input_shapes["decoder_input_tokens"]), jnp.int32),)

  def scores(self, params: Params, batch: Mapping[str, Array]) -> Array:
    """Discriminator logits ``l_t`` of every (prefix, token) pair.

    Args:
      params: from ``init``.
      batch: the policy's features, split layout ('prompt_tokens' [B, L], optional
        'prompt_mask' [B, L], 'decoder_target_tokens' [B, T]) or prefix-LM ('decoder_target_tokens' [B, S] and,
        packed, 'decoder_segment_ids', 'decoder_positions' [B, S]).

    Returns:
      float32 [B, T] or [B, S], aligned with 'decoder_target_tokens'; ``sigmoid`` of it is
      D(s_t, a_t), the probability that the pair is data.
    """
    return self.module.apply({"params": params}, batch["decoder_target_tokens"],
                             batch.get("decoder_segment_ids"), batch.get("decoder_positions"),
                             (decoder_only.batch_prompts(batch) if "prompt_tokens" in batch
                              else None))
