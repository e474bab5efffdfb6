"""Offline IQLearn loss (chi^2-regularised inverse soft-Q learning), DESIGN.md section 1.2.

``L = -mean log pi(a_t|s_t) + td_weight * mean r_t^2``,
``r_t = z(s_t, a_t) - gamma * V(s_{t+1})`` (``V(s_{t+1}) = 0`` after the last real token of a
sequence or packed segment).

With ``td_weight = 0`` this is exactly the MLE loss, in value and gradient. All means are
per-token over real target tokens: ``sum(w * x) / max(sum(w), 1)``.
Shapes: B batch, T decoder length, V vocabulary.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from irl_lm.losses import soft_q

__all__ = ["iqlearn_loss"]


def iqlearn_loss(logits_BTV: jax.Array,
                 targets_BT: jax.Array,
                 weights_BT: jax.Array,
                 *,
                 td_weight: float | jax.Array,
                 gamma: float | jax.Array = 1.0,
                 segment_ids: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Offline IQLearn: negative log-likelihood plus a TD (chi^2) penalty on implicit rewards.

  ``loss = nll + td_weight * td_loss`` with ``nll = mean -log pi(a_t|s_t)`` and
  ``td_loss = mean r_t^2``. Gradients flow through both ``z(s_t, a_t)`` and ``V(s_{t+1})``.
  The TD term never reads across padding (weight 0) or a packed-segment boundary (a change of
  ``segment_ids``). Everything is float32 inside; an all-padding batch gives 0, not NaN.

  Args:
    logits_BTV: logits [B, T, V], any float dtype (cast to float32 first).
    targets_BT: int target token ids [B, T].
    weights_BT: loss weights [B, T], float or int, 0 on padding.
    td_weight: lambda, the TD-regularisation strength (= 1/(4 alpha) of IQLearn).
    gamma: discount of the next-state value.
    segment_ids: optional int packed-segment ids [B, T] (seqio's ``decoder_segment_ids``).

  Returns:
    ``(loss, metrics)``: loss a float32 scalar; metrics a dict of float32 scalars:
      'loss': the loss,
      'nll': mean -log pi(a_t|s_t),
      'td_loss': mean r_t^2 (before multiplying by td_weight),
      'reward_mean': mean r_t,
      'value_mean': mean V(s_t),
      'entropy': mean policy entropy (nats),
      'accuracy': fraction of real tokens whose argmax is the target,
      'num_tokens': number of real target tokens (weight > 0).
  """
  stats = soft_q.token_statistics(logits_BTV, targets_BT)
  rewards_BT = soft_q.rewards_from_values(
      stats.target_logits, stats.values, weights_BT, gamma=gamma, segment_ids_BT=segment_ids)
  nll = -soft_q.weighted_mean(stats.log_probs, weights_BT)
  td_loss = soft_q.weighted_mean(jnp.square(rewards_BT), weights_BT)
  loss = nll + jnp.asarray(td_weight, jnp.float32) * td_loss
  metrics = {
      "loss": loss,
      "nll": nll,
      "td_loss": td_loss,
      "reward_mean": soft_q.weighted_mean(rewards_BT, weights_BT),
      "value_mean": soft_q.weighted_mean(stats.values, weights_BT),
      "entropy": soft_q.weighted_mean(stats.entropy, weights_BT),
      "accuracy": soft_q.weighted_mean(stats.correct, weights_BT),
      "num_tokens": soft_q.num_real_tokens(weights_BT),
  }
  return loss, metrics
