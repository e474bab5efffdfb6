"""Soft-Q view of a language model's logits (docs/design.md#the-decision-process).

The logits ``z(s_t, .)`` of a model are read as a soft Q-function over the next token:

* policy            ``pi(.|s_t) = softmax(z(s_t, .))``
* soft state value  ``V(s_t) = logsumexp_a z(s_t, a)``
* log-likelihood    ``log pi(a_t|s_t) = z(s_t, a_t) - V(s_t)``
* implicit reward   ``r_t = z(s_t, a_t) - gamma * V(s_{t+1})`` with ``V(s_{t+1}) = 0`` after the
  last real target token of a sequence (or of a packed segment).

Shapes: B batch, T decoder length, V vocabulary. Every function here is pure, casts its logits to
float32 before doing anything, and returns float32 arrays, so bfloat16 logits give float32 answers.
Logits are assumed finite.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from irl_lm import ops

__all__ = [
    "Sequences",
    "TokenStatistics",
    "state_values",
    "log_probs",
    "entropy",
    "token_statistics",
    "next_state_values",
    "episode_continues",
    "rewards_from_values",
    "implicit_rewards",
    "num_real_tokens",
    "weighted_mean",
]

_F32 = jnp.float32


def _target_logits(logits_BTV: jax.Array, targets_BT: jax.Array) -> jax.Array:
  """``z(s_t, a_t)`` as float32 [B, T], gathered with a one-hot contraction.

  A one-hot product (rather than an index gather) keeps the reduction over the vocabulary axis
  friendly to a vocabulary-sharded layout; XLA fuses the one-hot into the reduction.
  """
  z_BTV = logits_BTV.astype(_F32)
  onehot_BTV = jax.nn.one_hot(targets_BT, z_BTV.shape[-1], dtype=_F32)
  return jnp.sum(z_BTV * onehot_BTV, axis=-1)


def state_values(logits_BTV: jax.Array) -> jax.Array:
  """Soft state values ``V(s_t) = logsumexp_a z(s_t, a)``.

  Args:
    logits_BTV: logits [B, T, V], any float dtype (cast to float32 first).

  Returns:
    float32 [B, T].
  """
  return jax.nn.logsumexp(logits_BTV.astype(_F32), axis=-1)


def log_probs(logits_BTV: jax.Array, targets_BT: jax.Array) -> jax.Array:
  """Log-likelihood of the targets, ``log pi(a_t|s_t) = log_softmax(z(s_t, .))[a_t]``.

  Args:
    logits_BTV: logits [B, T, V], any float dtype (cast to float32 first).
    targets_BT: int target token ids [B, T] (padding ids are fine; mask with the weights).

  Returns:
    float32 [B, T].
  """
  return _target_logits(logits_BTV, targets_BT) - state_values(logits_BTV)


def entropy(logits_BTV: jax.Array) -> jax.Array:
  """Entropy of the policy, ``H(pi(.|s_t)) = -sum_a pi(a|s_t) log pi(a|s_t)``.

  Args:
    logits_BTV: logits [B, T, V], any float dtype (cast to float32 first).

  Returns:
    float32 [B, T], in nats.
  """
  logp_BTV = jax.nn.log_softmax(logits_BTV.astype(_F32), axis=-1)
  return -jnp.sum(jnp.exp(logp_BTV) * logp_BTV, axis=-1)


class Sequences(NamedTuple):
  """One set of teacher-forced sequences as the losses see them (data or policy samples).

  Attributes:
    logits: logits [B, T, V] of the model on these sequences, any float dtype.
    tokens: int target token ids [B, T] (the actions a_t).
    weights: loss weights [B, T], float or int, 0 on padding.
    segment_ids: optional int packed-segment ids [B, T] (None: one sequence per row).
  """
  logits: jax.Array
  tokens: jax.Array
  weights: jax.Array
  segment_ids: jax.Array | None = None


class TokenStatistics(NamedTuple):
  """Per-token quantities of the soft-Q view, all float32 [B, T].

  Attributes:
    values: ``V(s_t)``.
    target_logits: ``z(s_t, a_t)``.
    log_probs: ``log pi(a_t|s_t) = z(s_t, a_t) - V(s_t)``.
    entropy: ``H(pi(.|s_t))``.
    correct: 1.0 where ``argmax_a z(s_t, a) == a_t`` else 0.0.
  """
  values: jax.Array
  target_logits: jax.Array
  log_probs: jax.Array
  entropy: jax.Array
  correct: jax.Array


def token_statistics(logits_BTV: jax.Array, targets_BT: jax.Array) -> TokenStatistics:
  """Everything the losses need from the logits, in two passes over the vocabulary.

  Equal (to float tolerance) to calling ``state_values``, ``log_probs`` and ``entropy``
  separately, but cheaper in time and memory, which matters because the [B, T, V] logits are the
  largest activation of a step: the forward pass reads them twice (max / argmax, then the
  exponential sums that give V, the entropy and the target logit together), and the gradient is
  one element-wise pass written in closed form (``_vocab_reductions_bwd``), so autodiff keeps no
  [B, T, V] residual besides the logits themselves (no softmax, no one-hot).

  Args:
    logits_BTV: logits [B, T, V], any float dtype (cast to float32 first).
    targets_BT: int target token ids [B, T].

  Returns:
    A ``TokenStatistics`` of float32 [B, T] arrays; ``correct`` has no gradient.
  """
  values_BT, target_logits_BT, entropy_BT, correct_BT = _vocab_reductions(logits_BTV, targets_BT)
  return TokenStatistics(
      values=values_BT,
      target_logits=target_logits_BT,
      log_probs=target_logits_BT - values_BT,
      entropy=entropy_BT,
      correct=correct_BT,
  )


@jax.custom_vjp
def _vocab_reductions(logits_BTV: jax.Array, targets_BT: jax.Array):
  """(V, z(s, a_t), H, correct), each float32 [B, T]; see ``token_statistics``."""
  return _vocab_reductions_fwd(logits_BTV, targets_BT)[0]


def _vocab_reductions_fwd(logits_BTV, targets_BT):
  z_BTV = logits_BTV.astype(_F32)
  max_BT = jax.lax.stop_gradient(jnp.max(z_BTV, axis=-1))
  correct_BT = (ops.argmax(z_BTV, max_value=max_BT) == targets_BT).astype(_F32)
  # With d = z - max: V = max + log S, S = sum e^d, and H = log S - sum(e^d d) / S, which
  # stays accurate for large |z| (d <= 0, so no e^z overflows and nothing large cancels).
  d_BTV = z_BTV - max_BT[..., None]
  e_BTV = jnp.exp(d_BTV)
  sum_BT = jnp.sum(e_BTV, axis=-1)
  log_sum_BT = jnp.log(sum_BT)
  values_BT = max_BT + log_sum_BT
  entropy_BT = log_sum_BT - jnp.sum(e_BTV * d_BTV, axis=-1) / sum_BT
  target_logits_BT = _target_logits(z_BTV, targets_BT)
  outputs = (values_BT, target_logits_BT, entropy_BT, correct_BT)
  return outputs, (logits_BTV, targets_BT, values_BT, entropy_BT)


def _vocab_reductions_bwd(residuals, cotangents):
  """d/dz of <g, (V, z_a, H)>: pi (g_V - g_H (log pi + H)) + onehot(a) g_z, one fused pass.

  From dV/dz = pi, dz_a/dz = onehot(a) and dH/dz = -pi (log pi + H).
  """
  logits_BTV, targets_BT, values_BT, entropy_BT = residuals
  g_values_BT, g_target_BT, g_entropy_BT, _ = cotangents
  z_BTV = logits_BTV.astype(_F32)
  log_pi_BTV = z_BTV - values_BT[..., None]
  pi_BTV = jnp.exp(log_pi_BTV)
  grad_BTV = pi_BTV * (g_values_BT[..., None]
                       - g_entropy_BT[..., None] * (log_pi_BTV + entropy_BT[..., None]))
  onehot_BTV = jax.nn.one_hot(targets_BT, z_BTV.shape[-1], dtype=_F32)
  grad_BTV = grad_BTV + onehot_BTV * g_target_BT[..., None]
  return grad_BTV.astype(logits_BTV.dtype), None


_vocab_reductions.defvjp(_vocab_reductions_fwd, _vocab_reductions_bwd)


def _has_next_state(weights_BT: jax.Array, segment_ids_BT: jax.Array | None) -> jax.Array:
  """bool [B, T]: True where position t+1 continues the episode of position t.

  That is: t is not the last column, position t+1 is a real token (weight > 0) and, when segment
  ids are given, t+1 belongs to the same packed segment as t.
  """
  real_BT = jnp.asarray(weights_BT) > 0
  has_next_BT = jnp.pad(real_BT[:, 1:], ((0, 0), (0, 1)), constant_values=False)
  if segment_ids_BT is not None:
    seg_BT = jnp.asarray(segment_ids_BT)
    same_BT = jnp.pad(seg_BT[:, 1:] == seg_BT[:, :-1], ((0, 0), (0, 1)), constant_values=False)
    has_next_BT = has_next_BT & same_BT
  return has_next_BT


def episode_continues(weights_BT: jax.Array,
                      segment_ids_BT: jax.Array | None = None) -> jax.Array:
  """Where the episode goes on after position t (the transition structure of every TD term).

  Args:
    weights_BT: loss weights [B, T], float or int, 0 on padding.
    segment_ids_BT: optional int packed-segment ids [B, T].

  Returns:
    bool [B, T]: True where position t+1 is a real token (weight > 0) of the same packed segment
    as t; False at the last real token of a sequence or segment and in the last column.
  """
  return _has_next_state(weights_BT, segment_ids_BT)


def next_state_values(values_BT: jax.Array,
                      weights_BT: jax.Array,
                      segment_ids_BT: jax.Array | None = None) -> jax.Array:
  """Values of the next state, ``V(s_{t+1})``, with the absorbing terminal state set to 0.

  ``out[b, t] = values[b, t+1]`` when position t+1 is a real token (weight > 0) of the same packed
  segment as t (if segment ids are given), and 0 otherwise: at the last real token of a sequence
  or segment, before padding, and in the last column. Gradients flow into ``values``.

  Args:
    values_BT: state values [B, T] (e.g. from ``state_values``).
    weights_BT: loss weights [B, T], float or int, 0 on padding.
    segment_ids_BT: optional int packed-segment ids [B, T] (seqio's ``decoder_segment_ids``).

  Returns:
    float32 [B, T].
  """
  values_BT = values_BT.astype(_F32)
  shifted_BT = jnp.pad(values_BT[:, 1:], ((0, 0), (0, 1)))
  return jnp.where(_has_next_state(weights_BT, segment_ids_BT), shifted_BT, 0.0)


def rewards_from_values(target_logits_BT: jax.Array,
                        values_BT: jax.Array,
                        weights_BT: jax.Array,
                        *,
                        gamma: float | jax.Array,
                        segment_ids_BT: jax.Array | None = None) -> jax.Array:
  """Implicit rewards ``r_t = z(s_t, a_t) - gamma * V(s_{t+1})`` from precomputed per-token terms.

  Args:
    target_logits_BT: ``z(s_t, a_t)`` [B, T].
    values_BT: ``V(s_t)`` [B, T].
    weights_BT: loss weights [B, T], 0 on padding.
    gamma: discount, a float or a float32 scalar array.
    segment_ids_BT: optional packed-segment ids [B, T].

  Returns:
    float32 [B, T], 0 where the weight is 0.
  """
  next_values_BT = next_state_values(values_BT, weights_BT, segment_ids_BT)
  rewards_BT = target_logits_BT.astype(_F32) - jnp.asarray(gamma, _F32) * next_values_BT
  return jnp.where(jnp.asarray(weights_BT) > 0, rewards_BT, 0.0)


def implicit_rewards(logits_BTV: jax.Array,
                     targets_BT: jax.Array,
                     weights_BT: jax.Array,
                     *,
                     gamma: float | jax.Array,
                     segment_ids: jax.Array | None = None) -> jax.Array:
  """Per-token implicit rewards ``r_t = z(s_t, a_t) - gamma * V(s_{t+1})``.

  ``V(s_{t+1})`` is 0 after the last real token of each sequence / packed segment (see
  ``next_state_values``). Equivalently ``r_t = V(s_t) + log pi(a_t|s_t) - gamma * V(s_{t+1})``.
  Sum over a sequence's real tokens for its total reward.

  Args:
    logits_BTV: logits [B, T, V], any float dtype (cast to float32 first).
    targets_BT: int target token ids [B, T].
    weights_BT: loss weights [B, T], float or int, 0 on padding.
    gamma: discount, a float or a float32 scalar array.
    segment_ids: optional int packed-segment ids [B, T].

  Returns:
    float32 [B, T], 0 on padding (weight 0).
  """
  return rewards_from_values(
      _target_logits(logits_BTV, targets_BT),
      state_values(logits_BTV),
      weights_BT,
      gamma=gamma,
      segment_ids_BT=segment_ids)


def num_real_tokens(weights_BT: jax.Array) -> jax.Array:
  """Number of real target tokens (weight > 0), a float32 scalar."""
  return jnp.sum(jnp.asarray(weights_BT) > 0).astype(_F32)


def weighted_mean(x_BT: jax.Array, weights_BT: jax.Array) -> jax.Array:
  """Per-token mean ``sum(w * x) / max(sum(w), 1)``: the normaliser of every loss here.

  Args:
    x_BT: per-token values [B, T] (finite, also on padding).
    weights_BT: loss weights [B, T], float or int, 0 on padding.

  Returns:
    float32 scalar; 0 (not NaN) when every weight is 0.
  """
  w_BT = jnp.asarray(weights_BT).astype(_F32)
  return jnp.sum(w_BT * x_BT.astype(_F32)) / jnp.maximum(jnp.sum(w_BT), 1.0)
