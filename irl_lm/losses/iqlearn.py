"""Offline IQLearn loss (chi^2-regularised inverse soft-Q learning), docs/design.md#objectives.

``L = -mean log pi(a_t|s_t) + td_weight * mean r_t^2``,
``r_t = z(s_t, a_t) - gamma * V(s_{t+1})`` (``V(s_{t+1}) = 0`` after the last real token of a
sequence or packed segment).

With ``td_weight = 0`` this is exactly the MLE loss, in value and gradient.

Online IQLearn (``iqlearn_online_loss``) adds the policy's own samples: with a mixture weight
``alpha = online_mix``,
``L = -E_data[z(s,a) - gamma V(s')] + E_mix[V(s) - gamma V(s')] + td_weight * E_reg[r^2]``,
``E_mix = (1 - alpha) E_data + alpha E_samples`` and ``E_reg`` either ``E_data`` or ``E_mix``.
It is computed in the algebraically equal form
``L = nll_data + alpha * (E_samples[V - gamma V'] - E_data[V - gamma V']) + td_weight * E_reg[r^2]``
so that ``alpha = 0`` reproduces the offline loss exactly (same floating-point operations).

All means are
per-token over real target tokens: ``sum(w * x) / max(sum(w), 1)``.
Shapes: B batch, T decoder length, V vocabulary.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from irl_lm.losses import soft_q

__all__ = ["iqlearn_loss", "iqlearn_online_loss", "TD_ON_CHOICES"]

# Where the online loss takes its chi^2 (TD) penalty: on the data only, or on the mixture.
TD_ON_CHOICES = ("data", "mixture")


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


def _value_differences(stats: soft_q.TokenStatistics, weights_BT: jax.Array,
                       segment_ids_BT: jax.Array | None, gamma: jax.Array) -> jax.Array:
  """``V(s_t) - gamma * V(s_{t+1})`` float32 [B, T] (next value 0 at the end of an episode)."""
  next_values_BT = soft_q.next_state_values(stats.values, weights_BT, segment_ids_BT)
  return stats.values - gamma * next_values_BT


def iqlearn_online_loss(data: soft_q.Sequences,
                        samples: soft_q.Sequences,
                        *,
                        td_weight: float | jax.Array,
                        gamma: float | jax.Array = 1.0,
                        online_mix: float | jax.Array,
                        td_on: str = "mixture") -> tuple[jax.Array, dict[str, jax.Array]]:
  """Online IQLearn: the offline loss with the value-difference term over data and samples.

  ``loss = nll + online_mix * (vdiff_samples - vdiff_data) + td_weight * td_loss`` where
  ``nll = E_data[-log pi(a|s)]``, ``vdiff_x = E_x[V(s) - gamma V(s')]`` and ``td_loss`` is
  ``E_data[r^2]`` (``td_on='data'``) or ``(1 - online_mix) E_data[r^2] + online_mix E_samples[r^2]``
  (``td_on='mixture'``), ``r = z(s, a) - gamma V(s')``. This equals docs/design.md's
  ``-E_data[z - gamma V'] + E_mix[V - gamma V'] + td_weight E_reg[r^2]`` with
  ``E_mix = (1 - online_mix) E_data + online_mix E_samples``. Each ``E_x`` is a per-token mean
  over the real tokens of ``x``. Gradients flow through the logits of both sets (the sampled
  tokens themselves carry none). With ``online_mix = 0`` the loss and its gradient are exactly
  those of ``iqlearn_loss`` on ``data``.

  Args:
    data: the demonstrations, ``Sequences(logits [B, T, V], tokens [B, T], weights [B, T],
      segment_ids [B, T] or None)``.
    samples: the policy's samples, ``Sequences(logits [S, T', V], tokens [S, T'], weights
      [S, T'], segment_ids or None)``; S and T' may differ from B and T.
    td_weight: lambda, the chi^2 (TD) regularisation strength.
    gamma: discount of the next-state value.
    online_mix: alpha in [0, 1], the weight of the samples in the mixture.
    td_on: 'mixture' (default) or 'data': where the chi^2 penalty is taken.

  Returns:
    ``(loss, metrics)``: loss a float32 scalar; metrics a dict of float32 scalars:
      'loss', 'nll' (data), 'td_loss' (the penalty before td_weight, as configured by td_on),
      'td_loss_data', 'td_loss_samples', 'value_diff_data', 'value_diff_samples',
      'reward_mean' (data), 'reward_mean_samples', 'value_mean' (data), 'entropy' (data),
      'entropy_samples', 'log_prob_samples' (mean log pi of the sampled tokens), 'accuracy'
      (data), 'num_tokens' (data), 'num_sample_tokens'.

  Raises:
    ValueError: ``td_on`` not in ('data', 'mixture'), or a Python ``online_mix`` outside [0, 1].
  """
  if td_on not in TD_ON_CHOICES:
    raise ValueError(f"td_on must be one of {TD_ON_CHOICES}, got {td_on!r}")
  if isinstance(online_mix, (int, float)) and not 0.0 <= online_mix <= 1.0:
    raise ValueError(f"online_mix must be in [0, 1], got {online_mix}")
  gamma = jnp.asarray(gamma, jnp.float32)
  alpha = jnp.asarray(online_mix, jnp.float32)

  data_stats = soft_q.token_statistics(data.logits, data.tokens)
  data_rewards_BT = soft_q.rewards_from_values(
      data_stats.target_logits, data_stats.values, data.weights, gamma=gamma,
      segment_ids_BT=data.segment_ids)
  sample_stats = soft_q.token_statistics(samples.logits, samples.tokens)
  sample_rewards_BT = soft_q.rewards_from_values(
      sample_stats.target_logits, sample_stats.values, samples.weights, gamma=gamma,
      segment_ids_BT=samples.segment_ids)

  nll = -soft_q.weighted_mean(data_stats.log_probs, data.weights)
  vdiff_data = soft_q.weighted_mean(
      _value_differences(data_stats, data.weights, data.segment_ids, gamma), data.weights)
  vdiff_samples = soft_q.weighted_mean(
      _value_differences(sample_stats, samples.weights, samples.segment_ids, gamma),
      samples.weights)
  td_data = soft_q.weighted_mean(jnp.square(data_rewards_BT), data.weights)
  td_samples = soft_q.weighted_mean(jnp.square(sample_rewards_BT), samples.weights)
  if td_on == "data":
    td_loss = td_data
  else:
    td_loss = (1.0 - alpha) * td_data + alpha * td_samples
  loss = nll + alpha * (vdiff_samples - vdiff_data) + jnp.asarray(td_weight, jnp.float32) * td_loss
  metrics = {
      "loss": loss,
      "nll": nll,
      "td_loss": td_loss,
      "td_loss_data": td_data,
      "td_loss_samples": td_samples,
      "value_diff_data": vdiff_data,
      "value_diff_samples": vdiff_samples,
      "reward_mean": soft_q.weighted_mean(data_rewards_BT, data.weights),
      "reward_mean_samples": soft_q.weighted_mean(sample_rewards_BT, samples.weights),
      "value_mean": soft_q.weighted_mean(data_stats.values, data.weights),
      "entropy": soft_q.weighted_mean(data_stats.entropy, data.weights),
      "entropy_samples": soft_q.weighted_mean(sample_stats.entropy, samples.weights),
      "log_prob_samples": soft_q.weighted_mean(sample_stats.log_probs, samples.weights),
      "accuracy": soft_q.weighted_mean(data_stats.correct, data.weights),
      "num_tokens": soft_q.num_real_tokens(data.weights),
      "num_sample_tokens": soft_q.num_real_tokens(samples.weights),
  }
  return loss, metrics
