"""GAIL (adversarial imitation) losses, docs/design.md#objectives: pure functions, float32 inside.

A discriminator ``D(s_t, a_t) = sigmoid(l_t)`` scores every (prefix, token) pair; it is trained
with the logistic loss to tell data (label 1) from policy samples (label 0). The policy is
trained by policy gradient on the per-token reward ``log D - log(1 - D)`` (which equals the
discriminator logit ``l_t``), with discounted returns-to-go, a baseline, a KL penalty towards the
initial policy, an optional MLE term on the data and an entropy bonus:

``L_policy = -E_samples[sg(G_t - b_t) log pi(a_t|s_t)] + kl_weight E_samples[KL(pi || pi_init)]
             + mle_weight E_data[-log pi(a_t|s_t)] - entropy_weight E_samples[H(pi(.|s_t))]``

(``sg`` = stop-gradient). All means are per-token over real tokens (weight > 0), with
``soft_q.weighted_mean``. Shapes: B batch, T decoder length, V vocabulary.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from irl_lm.losses import soft_q

__all__ = [
    "BASELINES",
    "discriminator_loss",
    "discriminator_rewards",
    "returns_to_go",
    "batch_mean_baseline",
    "policy_gradient_surrogate",
    "kl_divergence",
    "entropy",
    "gail_policy_loss",
]

_F32 = jnp.float32
BASELINES = ("none", "batch_mean")

# The entropy of the policy at each state, H(pi(.|s_t)) float32 [B, T] (soft_q.entropy).
entropy = soft_q.entropy


def discriminator_loss(data_logits_BT: jax.Array,
                       data_weights_BT: jax.Array,
                       sample_logits_BT: jax.Array,
                       sample_weights_BT: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Logistic loss of a per-token discriminator, data = 1, samples = 0.

  ``loss = E_data[-log D] + E_samples[-log(1 - D)]`` with ``D = sigmoid(l)``, i.e.
  ``E_data[softplus(-l)] + E_samples[softplus(l)]``, each a per-token mean over its real tokens.

  Args:
    data_logits_BT: discriminator logits l on the data, [B, T], any float dtype.
    data_weights_BT: weights of the data tokens [B, T], 0 on padding.
    sample_logits_BT: discriminator logits on the policy samples, [S, T'].
    sample_weights_BT: weights of the sample tokens [S, T'], 0 on padding.

  Returns:
    ``(loss, metrics)``: loss a float32 scalar; metrics (float32 scalars):
      'disc_loss': the loss; 'disc_accuracy': mean of the two accuracies below;
      'disc_accuracy_data': fraction of data tokens with l > 0;
      'disc_accuracy_samples': fraction of sample tokens with l < 0;
      'disc_prob_data', 'disc_prob_samples': mean D on data / samples.
  """
  l_data = data_logits_BT.astype(_F32)
  l_samples = sample_logits_BT.astype(_F32)
  loss_data = soft_q.weighted_mean(jax.nn.softplus(-l_data), data_weights_BT)
  loss_samples = soft_q.weighted_mean(jax.nn.softplus(l_samples), sample_weights_BT)
  loss = loss_data + loss_samples
  acc_data = soft_q.weighted_mean((l_data > 0).astype(_F32), data_weights_BT)
  acc_samples = soft_q.weighted_mean((l_samples < 0).astype(_F32), sample_weights_BT)
  metrics = {
      "disc_loss": loss,
      "disc_accuracy": 0.5 * (acc_data + acc_samples),
      "disc_accuracy_data": acc_data,
      "disc_accuracy_samples": acc_samples,
      "disc_prob_data": soft_q.weighted_mean(jax.nn.sigmoid(l_data), data_weights_BT),
      "disc_prob_samples": soft_q.weighted_mean(jax.nn.sigmoid(l_samples), sample_weights_BT),
  }
  return loss, metrics


def discriminator_rewards(logits_BT: jax.Array, weights_BT: jax.Array) -> jax.Array:
  """Per-token GAIL reward ``log D - log(1 - D)`` from discriminator logits l.

  With ``D = sigmoid(l)`` this is ``log_sigmoid(l) - log_sigmoid(-l) = l``, computed in that
  stable form.

  Args:
    logits_BT: discriminator logits [B, T], any float dtype.
    weights_BT: loss weights [B, T], 0 on padding.

  Returns:
    float32 [B, T], 0 where the weight is 0.
  """
  l_BT = logits_BT.astype(_F32)
  rewards_BT = jax.nn.log_sigmoid(l_BT) - jax.nn.log_sigmoid(-l_BT)
  return jnp.where(jnp.asarray(weights_BT) > 0, rewards_BT, 0.0)


def returns_to_go(rewards_BT: jax.Array,
                  weights_BT: jax.Array,
                  *,
                  gamma: float | jax.Array,
                  segment_ids_BT: jax.Array | None = None) -> jax.Array:
  """Discounted returns-to-go ``G_t = r_t + gamma * G_{t+1}`` within each episode.

  The recursion stops at the last real token of a sequence or packed segment
  (``soft_q.episode_continues``), so a return never reads padding or the next segment.

  Args:
    rewards_BT: per-token rewards [B, T] (values on padding are ignored).
    weights_BT: loss weights [B, T], float or int, 0 on padding.
    gamma: discount in [0, 1].
    segment_ids_BT: optional int packed-segment ids [B, T].

  Returns:
    float32 [B, T], 0 where the weight is 0.
  """
  real_BT = jnp.asarray(weights_BT) > 0
  rewards_BT = jnp.where(real_BT, rewards_BT.astype(_F32), 0.0)
  continues_BT = soft_q.episode_continues(weights_BT, segment_ids_BT).astype(_F32)
  gamma = jnp.asarray(gamma, _F32)

  def backward(next_return_B, inputs):
    reward_B, continues_B = inputs
    ret_B = reward_B + gamma * continues_B * next_return_B
    return ret_B, ret_B

  _, returns_TB = jax.lax.scan(backward, jnp.zeros(rewards_BT.shape[:1], _F32),
                               (rewards_BT.T, continues_BT.T), reverse=True)
  return jnp.where(real_BT, returns_TB.T, 0.0)


def batch_mean_baseline(returns_BT: jax.Array, weights_BT: jax.Array) -> jax.Array:
  """Leave-one-out batch-mean baseline per position: ``b[i, t] = mean_{j != i} G[j, t]``.

  The mean is over the other rows' real tokens at the same position (0 when there is none).
  It does not depend on row i's own sample, so the policy gradient stays unbiased.

  Args:
    returns_BT: returns-to-go [B, T].
    weights_BT: loss weights [B, T], 0 on padding.

  Returns:
    float32 [B, T] (not masked; multiply by the weights where needed).
  """
  real_BT = (jnp.asarray(weights_BT) > 0).astype(_F32)
  masked_BT = returns_BT.astype(_F32) * real_BT
  others_sum_BT = jnp.sum(masked_BT, axis=0, keepdims=True) - masked_BT
  others_count_BT = jnp.sum(real_BT, axis=0, keepdims=True) - real_BT
  return others_sum_BT / jnp.maximum(others_count_BT, 1.0)


def policy_gradient_surrogate(log_probs_BT: jax.Array,
                              advantages_BT: jax.Array,
                              weights_BT: jax.Array) -> jax.Array:
  """REINFORCE surrogate ``-E[sg(A_t) * log pi(a_t|s_t)]`` (per-token mean, minimised).

  Its gradient is ``-(1/N) sum_{b,t} w A_t grad log pi(a_t|s_t)``, N = sum of weights: the
  REINFORCE estimator of the return's gradient, negated (and scaled by 1/N).

  Args:
    log_probs_BT: ``log pi(a_t|s_t)`` of the sampled tokens [B, T] (differentiable).
    advantages_BT: ``G_t - b_t`` [B, T]; no gradient flows into it.
    weights_BT: loss weights [B, T], 0 on padding.

  Returns:
    float32 scalar.
  """
  advantages_BT = jax.lax.stop_gradient(advantages_BT.astype(_F32))
  return -soft_q.weighted_mean(advantages_BT * log_probs_BT.astype(_F32), weights_BT)


def kl_divergence(logits_BTV: jax.Array, reference_logits_BTV: jax.Array) -> jax.Array:
  """Per-state ``KL(pi || pi_ref) = sum_a pi(a|s) (log pi(a|s) - log pi_ref(a|s))``.

  Exact over the vocabulary (not a single-sample estimate). Gradients flow into both inputs;
  stop them on the reference yourself when it is frozen.

  Args:
    logits_BTV: logits of pi [B, T, V], any float dtype.
    reference_logits_BTV: logits of pi_ref [B, T, V].

  Returns:
    float32 [B, T], >= 0.
  """
  logp_BTV = jax.nn.log_softmax(logits_BTV.astype(_F32), axis=-1)
  ref_logp_BTV = jax.nn.log_softmax(reference_logits_BTV.astype(_F32), axis=-1)
  return jnp.sum(jnp.exp(logp_BTV) * (logp_BTV - ref_logp_BTV), axis=-1)


def gail_policy_loss(samples: soft_q.Sequences,
                     rewards_BT: jax.Array,
                     *,
                     reference_logits_BTV: jax.Array | None = None,
                     data: soft_q.Sequences | None = None,
                     gamma: float | jax.Array = 1.0,
                     baseline: str = "batch_mean",
                     kl_weight: float | jax.Array = 0.0,
                     mle_weight: float | jax.Array = 0.0,
                     entropy_weight: float | jax.Array = 0.0
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The GAIL policy loss: policy gradient on the discriminator's rewards plus regularisers.

  ``loss = pg + kl_weight * kl + mle_weight * nll - entropy_weight * entropy_samples`` with
  ``pg = policy_gradient_surrogate(log pi(samples), G - b)``, ``G`` the discounted
  returns-to-go of ``rewards_BT`` and ``b`` the baseline; ``kl = E_samples[KL(pi || pi_ref)]``;
  ``nll = E_data[-log pi]``. The soft-Q implicit rewards of the policy (``z(s,a) - V(s')``,
  ``gamma`` = 1) are reported on the samples and the data as diagnostics.

  Args:
    samples: the policy's samples, ``Sequences(logits [S, T, V] (differentiable), tokens,
      weights [S, T], segment_ids or None)``.
    rewards_BT: per-token rewards of the samples [S, T] (e.g. ``discriminator_rewards``);
      treated as constants.
    reference_logits_BTV: logits of the frozen initial policy on the samples [S, T, V];
      required when ``kl_weight != 0`` (a Python number), else optional (KL reported if given).
    data: optional demonstrations ``Sequences`` [B, T'] for the MLE term and data metrics;
      required when ``mle_weight != 0``.
    gamma: discount of the returns-to-go.
    baseline: 'batch_mean' (leave-one-out mean per position) or 'none'.
    kl_weight, mle_weight, entropy_weight: coefficients of the regularisers.

  Returns:
    ``(loss, metrics)``: loss a float32 scalar; metrics (float32 scalars): 'loss', 'pg_loss',
    'kl', 'nll' (data, 0 without data), 'entropy' (data, 0 without data), 'entropy_samples',
    'gail_reward_mean', 'gail_reward_std', 'gail_reward_min', 'gail_reward_max',
    'return_mean', 'advantage_rms', 'log_prob_samples', 'reward_mean' (soft-Q implicit reward,
    data), 'reward_mean_samples', 'td_loss' (mean squared implicit reward on the data),
    'num_sample_tokens'.

  Raises:
    ValueError: unknown ``baseline``; ``kl_weight``/``mle_weight`` non-zero without the
      reference logits / data.
  """
  if baseline not in BASELINES:
    raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
  if reference_logits_BTV is None and not (isinstance(kl_weight, (int, float))
                                           and kl_weight == 0):
    raise ValueError("kl_weight != 0 needs reference_logits_BTV (the initial policy's logits)")
  if data is None and not (isinstance(mle_weight, (int, float)) and mle_weight == 0):
    raise ValueError("mle_weight != 0 needs the data")
  weights_BT = samples.weights
  stats = soft_q.token_statistics(samples.logits, samples.tokens)
  rewards_BT = jax.lax.stop_gradient(jnp.where(jnp.asarray(weights_BT) > 0,
                                               rewards_BT.astype(_F32), 0.0))
  returns_BT = returns_to_go(rewards_BT, weights_BT, gamma=gamma,
                             segment_ids_BT=samples.segment_ids)
  if baseline == "batch_mean":
    advantages_BT = returns_BT - batch_mean_baseline(returns_BT, weights_BT)
  else:
    advantages_BT = returns_BT
  pg = policy_gradient_surrogate(stats.log_probs, advantages_BT, weights_BT)
  entropy_samples = soft_q.weighted_mean(stats.entropy, weights_BT)
  zero = jnp.zeros((), _F32)
  kl = zero
  if reference_logits_BTV is not None:
    kl = soft_q.weighted_mean(
        kl_divergence(samples.logits, jax.lax.stop_gradient(reference_logits_BTV)), weights_BT)
  nll = data_entropy = data_reward = data_td = zero
  if data is not None:
    data_stats = soft_q.token_statistics(data.logits, data.tokens)
    nll = -soft_q.weighted_mean(data_stats.log_probs, data.weights)
    data_entropy = soft_q.weighted_mean(data_stats.entropy, data.weights)
    data_rewards_BT = soft_q.rewards_from_values(
        data_stats.target_logits, data_stats.values, data.weights, gamma=1.0,
        segment_ids_BT=data.segment_ids)
    data_reward = soft_q.weighted_mean(data_rewards_BT, data.weights)
    data_td = soft_q.weighted_mean(jnp.square(data_rewards_BT), data.weights)
  loss = (pg + jnp.asarray(kl_weight, _F32) * kl + jnp.asarray(mle_weight, _F32) * nll
          - jnp.asarray(entropy_weight, _F32) * entropy_samples)

  sample_implicit_BT = soft_q.rewards_from_values(
      stats.target_logits, stats.values, weights_BT, gamma=1.0,
      segment_ids_BT=samples.segment_ids)
  reward_mean = soft_q.weighted_mean(rewards_BT, weights_BT)
  real_BT = jnp.asarray(weights_BT) > 0
  big = jnp.finfo(_F32).max
  metrics = {
      "loss": loss,
      "pg_loss": pg,
      "kl": kl,
      "nll": nll,
      "entropy": data_entropy,
      "entropy_samples": entropy_samples,
      "gail_reward_mean": reward_mean,
      "gail_reward_std": jnp.sqrt(jnp.maximum(
          soft_q.weighted_mean(jnp.square(rewards_BT - reward_mean), weights_BT), 0.0)),
      "gail_reward_min": jnp.where(jnp.any(real_BT),
                                   jnp.min(jnp.where(real_BT, rewards_BT, big)), 0.0),
      "gail_reward_max": jnp.where(jnp.any(real_BT),
                                   jnp.max(jnp.where(real_BT, rewards_BT, -big)), 0.0),
      "return_mean": soft_q.weighted_mean(returns_BT, weights_BT),
      "advantage_rms": jnp.sqrt(soft_q.weighted_mean(jnp.square(advantages_BT), weights_BT)),
      "log_prob_samples": soft_q.weighted_mean(stats.log_probs, weights_BT),
      "reward_mean": data_reward,
      "reward_mean_samples": soft_q.weighted_mean(sample_implicit_BT, weights_BT),
      "td_loss": data_td,
      "num_sample_tokens": soft_q.num_real_tokens(weights_BT),
  }
  return loss, metrics
