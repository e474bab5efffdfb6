"""Where tokens sit and what they see in the decoder-only model's two layouts (split and
prefix-LM): prompt lengths from ids or masks, rotary positions and attention biases.

Prompts are int32 [B, L] right-padded with `base.PROMPT_PAD_ID`; id 0 pads only for a
vocabulary whose pad id is not a token. Shapes: B batch, L prompt slots, T continuation slots,
S sequence length.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from irl_lm.models import base, layers

Array = jax.Array

def prompt_lengths(prompts_BL: Array, pad_id: Optional[int] = None) -> Array:
  """int32 [B]: each right-padded prompt's length, up to and including its last real token.

  Padding is `base.PROMPT_PAD_ID` (any negative id) and, when `pad_id` is given (a vocabulary
  whose pad id is not a token), `pad_id`; padding ids before the last real token count as
  real tokens; an all-padding row has length 0."""
  real_BL = prompts_BL >= 0
  if pad_id is not None:
    real_BL &= prompts_BL != pad_id
  ends_L = jnp.arange(1, prompts_BL.shape[1] + 1, dtype=jnp.int32)
  return jnp.max(jnp.where(real_BL, ends_L[None, :], 0), axis=1, initial=0).astype(jnp.int32)


def batch_prompts(batch: base.Batch) -> Array:
  """A split-layout batch's prompts, int32 [B, L] right-padded with `base.PROMPT_PAD_ID`:
  'prompt_tokens' where 'prompt_mask' is 1 (all of 'prompt_tokens' when there is no mask)."""
  prompts = jnp.asarray(batch["prompt_tokens"], jnp.int32)
  if "prompt_mask" not in batch:
    return prompts
  return jnp.where(jnp.asarray(batch["prompt_mask"]) > 0, prompts, base.PROMPT_PAD_ID)


def token_ids(tokens: Array) -> Array:
  """Ids safe to embed: prompt padding (`base.PROMPT_PAD_ID`) becomes 0, never attended to."""
  return jnp.maximum(tokens, 0)


def shift_right(tokens_BS: Array, start_id: Optional[int]) -> Array:
  """seqio's autoregressive inputs of an unpacked row: [start, x_0, ..., x_{S-2}] (slot 0 is
  masked out when `start_id` is None)."""
  return jnp.pad(token_ids(tokens_BS[:, :-1]), ((0, 0), (1, 0)),
                 constant_values=base.PAD_ID if start_id is None else start_id)


def positions_and_bias(tokens_BS: Array, segment_ids_BS: Array | None = None,
                       positions_BS: Array | None = None, *, first_slot: int = 0
                       ) -> tuple[Array, Array]:
  """Rotary positions int32 [B, S] (0..S-1 unless given) and the attention bias float32
  [B or 1, 1, S, S] of a teacher-forced sequence: causal and, with segment ids, within segments.

  No padding mask: padding is only at the right, where causal attention never lets real positions
  see it (and a token id 0 may be a real token of an imported vocabulary). With `first_slot` 1
  (no start token) each segment's position-0 slot (seqio's start token) is seen by itself only.
  """
  batch, length = tokens_BS.shape
  if positions_BS is None:
    positions_BS = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
  mask = layers.causal_mask(length)
  if segment_ids_BS is not None:
    mask = mask & layers.make_attention_mask(segment_ids_BS, segment_ids_BS, jnp.equal)
  if first_slot:
    eye = jnp.eye(length, dtype=bool)[None, None]
    mask = mask & ((positions_BS[:, None, None, :] != 0) | eye)
  return positions_BS, layers.mask_to_bias(mask)


def split_positions_and_bias(lengths_B: Array, num_prompt_slots: int, num_targets: int, *,
                             first_slot: int = 0) -> tuple[Array, Array]:
  """Rotary positions int32 [B, L + T] and attention bias float32 [B, 1, L + T, L + T] of the
  split layout: L = `num_prompt_slots` prompt slots (right-padded), then T continuation slots.

  Row b's valid prompt slots are `first_slot` <= j < len_b (`lengths_B` [B]). Prompt slot j sits
  at position j - first_slot and sees the valid prompt slots <= j (and itself); continuation
  slot t sits at position len_b - first_slot + t and sees row b's valid prompt slots and
  continuation slots <= t: what a row of the prompt and continuation in one unpadded sequence
  would see, without moving tokens to per-row offsets. The policy's prompt slots hold
  [start, p_0, .., p_{L-2}] (slot 0 invalid when there is no start token, `first_slot` 1; its
  continuation slot 0 holds p_{len-1}), GAIL's scorer's [p_0, .., p_{L-1}].
  """
  batch, length = lengths_B.shape[0], num_prompt_slots
  len_B1 = jnp.asarray(lengths_B, jnp.int32)[:, None]
  positions = jnp.concatenate([
      jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length)),
      len_B1 + jnp.arange(num_targets, dtype=jnp.int32)[None, :]], axis=1) - first_slot
  q = jnp.arange(length + num_targets)[:, None]
  k = jnp.arange(length + num_targets)[None, :]
  causal = (k <= q)[None]  # [1, S, S]
  key_valid = (((k[None] < len_B1[:, :, None]) & (k[None] >= first_slot))
               | (k[None] >= length))  # [B, 1, S]
  mask = causal & (key_valid | (q == k)[None])
  return positions, layers.mask_to_bias(mask[:, None])
