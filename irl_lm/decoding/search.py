"""Autoregressive decoding over a model's incremental-decode interface.

Two decoders, both a single `jax.lax.while_loop` over `model.decode_step`:

* `temperature_sample`: ancestral sampling with temperature, top-k and top-p (nucleus)
  filtering; temperature 0 is greedy (argmax). Returns the emitted tokens, their log-probability
  under the *unmodified* policy `softmax(logits)`, and the lengths.
* `beam_search`: length-normalised beam search (T5X's default penalty
  `((5 + length) / 6) ** alpha`), results ranked best first.

The model is anything with the decoding part of `irl_lm.models.base.Model` (`DecodableModel`):
`init_decode_state(params, prompts_BL, max_decode_length) -> state`, `start_tokens(prompts_BL)
-> tokens_B` (fed at position 0), `decode_step(params, state, tokens_B, position) -> (logits_BV,
state)`, `eos_id` and, optionally, `pad_id` with `pad_is_token`, where every leaf of the state
has the batch on axis 0. A model whose pad id is not a real token (`pad_is_token` False: T5 and
seqio vocabularies) never has it sampled or searched (its logit is -inf when drawing); where it is
a real token (Llama 3 / Qwen2's '!') it is drawn like any other. A model that
transforms its parameters before use (a LoRA wrapper folding in its adapters) may also have
`decoding_view(params) -> (model, params)`: the decoders call it once, before the loop, so the
transformation is not repeated at every step.

Both functions are pure and jit-compilable as a whole. Close over the model and the static
arguments, e.g.::

  sample = jax.jit(functools.partial(temperature_sample, model),
                   static_argnames=('max_decode_length', 'top_k', 'eos_id'))
  out = sample(params, prompts, rng, max_decode_length=64, temperature=0.7)

Deliberate differences from T5X's `decoding.py`:
* `top_k=0` means "no top-k filtering"; sampling is never silently greedy.
* Outputs are ranked best first (T5X returns beams worst first).
* In beam search, a hypothesis that reaches `max_decode_length` without EOS is kept as a
  finished candidate (scored at length `max_decode_length`) instead of only being a fallback.

Token conventions: positions after a sequence's end are 0, whatever id 0 is: a sequence's end is
its EOS or its length, never a token id; the start tokens and the end-of-sequence id are the
model's (`model.start_tokens`, `model.eos_id`). Prompts are the model's (right-padded with
`irl_lm.models.base.PROMPT_PAD_ID`).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Protocol, Union

import jax
import jax.numpy as jnp
import numpy as np

from irl_lm import ops

Params = Any
DecodeState = Any
Scalar = Union[float, int, jax.Array]

# Log-probability given to impossible hypotheses (padding beams, filtered tokens).
_NEG_INF = float("-inf")


class DecodableModel(Protocol):
  """What the decoders need from a model (the decoding part of `irl_lm.models.base.Model`)."""

  eos_id: int
  pad_id: int  # optional, with pad_is_token
  pad_is_token: bool  # optional: False forbids drawing pad_id

  def init_decode_state(self, params: Params, prompts: jax.Array,
                        max_decode_length: int) -> DecodeState:
    """Reads the prompts once and allocates the cache; every state leaf has batch on axis 0."""
    ...

  def start_tokens(self, prompts: jax.Array) -> jax.Array:
    """int32 [B], the tokens fed at position 0."""
    ...

  def decode_step(self, params: Params, state: DecodeState, tokens: jax.Array,
                  position: jax.Array) -> tuple[jax.Array, DecodeState]:
    """tokens [B] int32 fed at scalar `position` -> (float32 next-token logits [B, V], state)."""
    ...


class SampleOutput(NamedTuple):
  """Result of `temperature_sample`.

  Attributes:
    tokens: int32 [B, T]; the emitted tokens, EOS included; 0 after each sequence's end.
    log_probs: float32 [B, T]; `log_softmax(logits)[token]` of each emitted token under the
      unmodified policy (temperature 1, no top-k/top-p), 0 after each sequence's end.
    lengths: int32 [B]; number of emitted tokens, up to and including EOS. A sequence cut by
      its maximum length has no EOS and its length is that maximum.
  """
  tokens: jax.Array
  log_probs: jax.Array
  lengths: jax.Array


class BeamOutput(NamedTuple):
  """Result of `beam_search`.

  Attributes:
    tokens: int32 [B, K, T]; the K best hypotheses per example, best first, EOS included,
      0 after EOS. A hypothesis may also end at T without EOS.
    scores: float32 [B, K]; sum of token log-probs divided by `((5 + length) / 6) ** alpha`
      (length counts EOS), sorted in descending order. `-inf` marks a slot for which no
      hypothesis exists (only when fewer than K sequences of length <= T are possible).
  """
  tokens: jax.Array
  scores: jax.Array


def decoding_view(model: DecodableModel, params: Params) -> tuple[DecodableModel, Params]:
  """(model, params) to run the loop with: `model.decoding_view(params)` when it has one."""
  view = getattr(model, "decoding_view", None)
  return view(params) if view is not None else (model, params)


def drawable_logits(model: Any, logits_BV: jax.Array) -> jax.Array:
  """float32 [..., V]: the logits to draw tokens from, the pad id's at -inf when it is not a
  real token of the model's vocabulary (`model.pad_is_token` False; a model without the
  attribute draws every id). Log-probabilities stay those of the unmodified logits."""
  if getattr(model, "pad_is_token", True):
    return logits_BV
  return logits_BV.at[..., model.pad_id].set(_NEG_INF)


def _is_static(x: Any) -> bool:
  """True for Python / numpy scalars (known at trace time)."""
  return isinstance(x, (int, float, np.integer, np.floating))


def nucleus_threshold(probs_BV: jax.Array, top_p: Scalar) -> jax.Array:
  """The probability threshold of top-p (nucleus) filtering, found without sorting.

  The nucleus is the smallest set of most probable tokens whose mass reaches `top_p`, i.e. the
  tokens with probability >= tau for the largest tau with `sum(p[p >= tau]) >= top_p`. Since
  positive float32 values order like their bit patterns, tau is found exactly by bisection over
  the int32 bits (30 halvings of [0, bits(1.0)], each one masked sum over the vocabulary).
  Same set as sorting and keeping tokens whose preceding mass is < top_p, except that tokens
  tied with the last one are all kept, and up to float32 rounding of the accumulated mass.

  Args:
    probs_BV: float32 [B, V], rows of probabilities.
    top_p: mass in (0, 1] (Python number or traced scalar); >= 1 keeps every token.

  Returns:
    float32 [B] thresholds tau (0 when every token is kept); the most probable token always
    has probability >= tau.
  """
  probs_BV = probs_BV.astype(jnp.float32)
  batch = probs_BV.shape[0]

  def halve(_, bounds):
    lo_B, hi_B = bounds  # mass(p >= tau(lo)) >= top_p; mass(p >= tau(hi)) < top_p
    mid_B = lo_B + (hi_B - lo_B) // 2
    tau_B = jax.lax.bitcast_convert_type(mid_B, jnp.float32)
    mass_B = jnp.sum(jnp.where(probs_BV >= tau_B[:, None], probs_BV, 0.0), axis=-1)
    reaches_B = mass_B >= top_p
    return jnp.where(reaches_B, mid_B, lo_B), jnp.where(reaches_B, hi_B, mid_B)

  one_bits = int(np.array(1.0, np.float32).view(np.int32))
  init = (jnp.zeros((batch,), jnp.int32), jnp.full((batch,), one_bits + 1, jnp.int32))
  lo_B, _ = jax.lax.fori_loop(0, 30, halve, init)
  tau_B = jax.lax.bitcast_convert_type(lo_B, jnp.float32)
  return jnp.where(jnp.asarray(top_p) >= 1.0, 0.0, tau_B)


def _sample_from_logits(key: jax.Array, logits_BV: jax.Array, temperature: Scalar, top_k: int,
                        top_p: Scalar) -> jax.Array:
  """Draws one token per row from filtered, tempered logits.

  Order of operations: divide by the temperature, keep the `top_k` largest (if `top_k > 0`),
  then keep the smallest prefix of the remaining tokens, by descending probability of the
  tempered distribution, whose mass reaches `top_p` (the first token is always kept).

  Args:
    key: PRNG key.
    logits_BV: float32 [B, V].
    temperature: > 0 here (greedy is handled by the caller); Python float or traced scalar.
    top_k: static int; 0 or >= V means no top-k.
    top_p: Python float or traced scalar in (0, 1]; 1 means no nucleus filtering.

  Returns:
    int32 [B] sampled token ids.
  """
  vocab = logits_BV.shape[-1]
  scaled_BV = logits_BV / temperature
  use_top_k = 0 < top_k < vocab
  use_top_p = not (_is_static(top_p) and top_p >= 1.0)
  if use_top_p and not use_top_k:
    # Nucleus over the whole vocabulary without sorting it (a full sort of V is far slower
    # than the threshold search on a CPU).
    probs_BV = jax.nn.softmax(scaled_BV, axis=-1)
    tau_B = nucleus_threshold(probs_BV, top_p)
    return ops.categorical(key, jnp.where(probs_BV >= tau_B[:, None], scaled_BV, _NEG_INF))
  if use_top_k or use_top_p:
    # Work in the space of candidates sorted by descending logit; map back at the end.
    vals_BC, ids_BC = jax.lax.top_k(scaled_BV, top_k if use_top_k else vocab)
    if use_top_p:
      probs_BC = jax.nn.softmax(vals_BC, axis=-1)
      mass_before_BC = jnp.cumsum(probs_BC, axis=-1) - probs_BC
      keep_BC = (mass_before_BC < top_p) | (jnp.arange(vals_BC.shape[-1]) == 0)
      vals_BC = jnp.where(keep_BC, vals_BC, _NEG_INF)
    choice_B = ops.categorical(key, vals_BC)
    return jnp.take_along_axis(ids_BC, choice_B[:, None], axis=-1)[:, 0].astype(jnp.int32)
  return ops.categorical(key, scaled_BV)


def next_tokens(logits_BV: jax.Array, key: Optional[jax.Array], *, temperature: Scalar,
                top_k: int = 0, top_p: Scalar = 1.0) -> jax.Array:
  """The decoders' one sampling step: the next token of each row from its logits.

  Args:
    logits_BV: float32 [B, V].
    key: PRNG key (unused, and may be None, when `temperature` is the Python number 0).
    temperature: >= 0; 0 is greedy (argmax, no division). A traced 0 also gives greedy.
    top_k: static int; 0 disables top-k.
    top_p: nucleus mass in (0, 1]; 1 disables it.

  Returns:
    int32 [B] token ids.
  """
  greedy_B = ops.argmax(logits_BV)
  if _is_static(temperature) and temperature == 0:
    return greedy_B
  t = jnp.asarray(temperature, jnp.float32)
  safe_t = jnp.where(t > 0, t, 1.0)
  sampled_B = _sample_from_logits(key, logits_BV, safe_t, top_k, top_p)
  return sampled_B if _is_static(temperature) else jnp.where(t > 0, sampled_B, greedy_B)


def temperature_sample(model: DecodableModel,
                       params: Params,
                       prompts: jax.Array,
                       rng: jax.Array,
                       *,
                       max_decode_length: int,
                       temperature: Scalar = 1.0,
                       top_k: int = 0,
                       top_p: Scalar = 1.0,
                       eos_id: Optional[int] = None,
                       decode_lengths: Optional[jax.Array] = None) -> SampleOutput:
  """Samples one continuation per row, with temperature, top-k and top-p filtering.

  One `lax.while_loop` over `model.decode_step`, starting from `model.start_tokens` at position 0.
  Each row stops at its first EOS or at its maximum length; the loop exits as soon as every row
  has stopped. Step `i` uses the key `jax.random.fold_in(rng, i)`; with jax's (default)
  partitionable threefry the draws do not depend on how the batch is sharded.

  Args:
    model: object with `init_decode_state` and `decode_step` (see `DecodableModel`).
    params: the model's parameters (any pytree, passed through to the model).
    prompts: int32 [B, L], the model's prompts (T5: encoder input tokens).
    rng: PRNG key (unused when `temperature` is the Python number 0).
    max_decode_length: static int T, the number of decoder positions.
    temperature: float >= 0. 0 means greedy (argmax of the logits, no division). May be a
      Python number (static) or a traced scalar; a traced 0 also gives greedy.
    top_k: static int; keep only the k most likely tokens. 0 (default) disables top-k.
    top_p: nucleus mass in (0, 1]; 1.0 (default) disables it. Python number or traced scalar.
    eos_id: static int, end-of-sequence id (default `model.eos_id`).
    decode_lengths: optional int [B], per-row maximum number of tokens (clipped to [0, T]).

  Returns:
    `SampleOutput(tokens [B, T] int32, log_probs [B, T] float32, lengths [B] int32)`; see
    `SampleOutput`. `log_probs` are under the unmodified policy `softmax(logits)`, whatever the
    temperature / top-k / top-p.

  Raises:
    ValueError: on a negative `top_k`, a static negative `temperature`, or a static `top_p`
      outside (0, 1].
  """
  if top_k < 0:
    raise ValueError(f"top_k must be >= 0 (0 disables it), got {top_k}")
  if _is_static(temperature) and temperature < 0:
    raise ValueError(f"temperature must be >= 0, got {temperature}")
  if _is_static(top_p) and not 0.0 < top_p <= 1.0:
    raise ValueError(f"top_p must be in (0, 1], got {top_p}")
  batch = prompts.shape[0]
  eos_id = model.eos_id if eos_id is None else eos_id
  T = max_decode_length
  greedy_only = _is_static(temperature) and temperature == 0

  if decode_lengths is None:
    limit_B = jnp.full((batch,), T, jnp.int32)
  else:
    limit_B = jnp.clip(jnp.asarray(decode_lengths, jnp.int32), 0, T)

  model, params = decoding_view(model, params)
  state = model.init_decode_state(params, prompts, T)
  positions_T = jnp.arange(T, dtype=jnp.int32)

  def cond_fn(carry):
    i, _, _, _, _, done_B, _ = carry
    return (i < T) & ~jnp.all(done_B)

  def body_fn(carry):
    i, last_B, state, tokens_BT, logp_BT, done_B, lengths_B = carry
    logits_BV, state = model.decode_step(params, state, last_B, i)
    logits_BV = logits_BV.astype(jnp.float32)
    next_B = next_tokens(drawable_logits(model, logits_BV),
                         None if greedy_only else jax.random.fold_in(rng, i),
                         temperature=temperature, top_k=top_k, top_p=top_p)
    policy_logp_BV = jax.nn.log_softmax(logits_BV, axis=-1)
    next_logp_B = jnp.take_along_axis(policy_logp_BV, next_B[:, None], axis=-1)[:, 0]

    active_B = ~done_B
    next_B = jnp.where(active_B, next_B, 0)
    next_logp_B = jnp.where(active_B, next_logp_B, 0.0)
    at_i_T = positions_T == i
    tokens_BT = jnp.where(at_i_T[None, :], next_B[:, None], tokens_BT)
    logp_BT = jnp.where(at_i_T[None, :], next_logp_B[:, None], logp_BT)
    lengths_B = lengths_B + active_B.astype(jnp.int32)
    done_B = done_B | (next_B == eos_id) | (i + 1 >= limit_B)
    return i + 1, next_B, state, tokens_BT, logp_BT, done_B, lengths_B

  init = (
      jnp.asarray(0, jnp.int32),
      jnp.asarray(model.start_tokens(prompts), jnp.int32),
      state,
      jnp.zeros((batch, T), jnp.int32),
      jnp.zeros((batch, T), jnp.float32),
      limit_B <= 0,
      jnp.zeros((batch,), jnp.int32),
  )
  _, _, _, tokens_BT, logp_BT, _, lengths_B = jax.lax.while_loop(cond_fn, body_fn, init)
  return SampleOutput(tokens=tokens_BT, log_probs=logp_BT, lengths=lengths_B)


def length_penalty(length: jax.Array, alpha: Scalar) -> jax.Array:
  """T5X / GNMT brevity penalty `((5 + length) / 6) ** alpha`.

  Args:
    length: int or float array of any shape; the number of tokens, EOS included.
    alpha: exponent (0 disables length normalisation).

  Returns:
    float32 array of `length`'s shape.
  """
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def _gather_beams(tree: Any, beam_idx_BK: jax.Array, batch: int, beams: int) -> Any:
  """Reorders a flat [B*K, ...] pytree by per-example beam indices.

  Args:
    tree: pytree whose leaves are [B*K, ...], row b*K + k being beam k of example b.
    beam_idx_BK: int [B, K]; new beam k of example b comes from old beam `beam_idx_BK[b, k]`.
    batch: B.
    beams: K.

  Returns:
    pytree of the same structure and shapes.
  """
  def gather(leaf):
    leaf_BK = leaf.reshape((batch, beams) + leaf.shape[1:])
    # vmap over the example axis: a batched gather, which partitions along a sharded batch.
    out_BK = jax.vmap(lambda x, idx: x[idx])(leaf_BK, beam_idx_BK)
    return out_BK.reshape(leaf.shape)
  return jax.tree.map(gather, tree)


def beam_search(model: DecodableModel,
                params: Params,
                prompts: jax.Array,
                *,
                beam_size: int,
                max_decode_length: int,
                alpha: Scalar = 0.6,
                eos_id: Optional[int] = None) -> BeamOutput:
  """Beam search with T5X's length penalty; returns the K best hypotheses, best first.

  The decode state from `model.init_decode_state` (encoder run once per example) is tiled to
  B*K rows (row b*K + k is beam k of example b) and, at every step, gathered by the parent beam
  of each surviving hypothesis. One `lax.while_loop`; each step:
  1. scores all K*V one-token extensions of the alive beams by summed log-prob;
  2. takes the 2K best (so at least K of them do not end in EOS);
  3. the K best non-EOS ones become the new alive beams;
  4. the EOS-ending ones (and, at the last position, all of them) are scored as
     `sum log-prob / ((5 + length) / 6) ** alpha` and merged into the K best finished.
  The loop stops early once, for every example, the worst of K finished scores is at least the
  best score any alive beam could still reach (log-probs only decrease).

  Args:
    model: object with `init_decode_state` and `decode_step` (see `DecodableModel`).
    params: the model's parameters (any pytree, passed through to the model).
    prompts: int32 [B, L], the model's prompts (T5: encoder input tokens).
    beam_size: static int K >= 1.
    max_decode_length: static int T.
    alpha: length-penalty exponent (0.6 as in T5X; 0 ranks by raw summed log-prob).
    eos_id: static int, end-of-sequence id (default `model.eos_id`).

  Returns:
    `BeamOutput(tokens [B, K, T] int32, scores [B, K] float32)`, best first; see `BeamOutput`.

  Raises:
    ValueError: if `beam_size < 1`.
  """
  if beam_size < 1:
    raise ValueError(f"beam_size must be >= 1, got {beam_size}")
  B = prompts.shape[0]
  eos_id = model.eos_id if eos_id is None else eos_id
  K = beam_size
  T = max_decode_length

  model, params = decoding_view(model, params)
  state = model.init_decode_state(params, prompts, T)
  state = jax.tree.map(lambda x: jnp.repeat(x, K, axis=0), state)
  positions_T = jnp.arange(T, dtype=jnp.int32)
  lp_final = length_penalty(T, alpha)

  def cond_fn(carry):
    i, done_B = carry[0], carry[-1]
    return (i < T) & ~jnp.all(done_B)

  def body_fn(carry):
    i, last_BK, alive_BKT, alive_logp_BK, state, fin_BKT, fin_scores_BK, _ = carry
    logits, state = model.decode_step(params, state, last_BK.reshape(B * K), i)
    logp_BKV = drawable_logits(
        model, jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)).reshape(B, K, -1)
    V = logp_BKV.shape[-1]

    # 1-2. The 2K best one-token extensions, by summed log-prob.
    cand_BX = (alive_logp_BK[:, :, None] + logp_BKV).reshape(B, K * V)
    top_logp_BC, top_flat_BC = jax.lax.top_k(cand_BX, 2 * K)
    top_parent_BC = top_flat_BC // V
    top_tok_BC = (top_flat_BC % V).astype(jnp.int32)
    top_seq_BCT = jnp.take_along_axis(alive_BKT, top_parent_BC[:, :, None], axis=1)
    top_seq_BCT = jnp.where((positions_T == i)[None, None, :], top_tok_BC[:, :, None],
                            top_seq_BCT)
    ends_BC = top_tok_BC == eos_id

    # 3. New alive beams: the K best that do not end in EOS.
    alive_logp_BK, sel_BK = jax.lax.top_k(jnp.where(ends_BC, _NEG_INF, top_logp_BC), K)
    alive_BKT = jnp.take_along_axis(top_seq_BCT, sel_BK[:, :, None], axis=1)
    last_BK = jnp.take_along_axis(top_tok_BC, sel_BK, axis=1)
    parent_BK = jnp.take_along_axis(top_parent_BC, sel_BK, axis=1)
    state = _gather_beams(state, parent_BK, B, K)

    # 4. Merge newly finished hypotheses (EOS now, or out of room) into the finished set.
    finishes_BC = ends_BC | (i == T - 1)
    new_scores_BC = jnp.where(finishes_BC, top_logp_BC / length_penalty(i + 1, alpha), _NEG_INF)
    fin_scores_BK, fsel_BK = jax.lax.top_k(
        jnp.concatenate([fin_scores_BK, new_scores_BC], axis=1), K)
    fin_BKT = jnp.take_along_axis(jnp.concatenate([fin_BKT, top_seq_BCT], axis=1),
                                  fsel_BK[:, :, None], axis=1)

    # Early stop: no alive beam can beat the worst finished one. Since the penalty is monotone
    # in the length, its maximum over the lengths still reachable is at one of the ends.
    lp_max = jnp.maximum(length_penalty(i + 1, alpha), lp_final)
    best_alive_bound_B = alive_logp_BK[:, 0] / lp_max
    done_B = fin_scores_BK[:, K - 1] >= best_alive_bound_B
    return i + 1, last_BK, alive_BKT, alive_logp_BK, state, fin_BKT, fin_scores_BK, done_B

  init = (
      jnp.asarray(0, jnp.int32),
      jnp.repeat(jnp.asarray(model.start_tokens(prompts), jnp.int32)[:, None], K, axis=1),
      jnp.zeros((B, K, T), jnp.int32),
      # Only beam 0 is live at first, so the K starting beams do not yield K copies.
      jnp.tile(jnp.where(jnp.arange(K) == 0, 0.0, _NEG_INF).astype(jnp.float32), (B, 1)),
      state,
      jnp.zeros((B, K, T), jnp.int32),
      jnp.full((B, K), _NEG_INF, jnp.float32),
      jnp.zeros((B,), bool),
  )
  out = jax.lax.while_loop(cond_fn, body_fn, init)
  return BeamOutput(tokens=out[5], scores=out[6])
