"""Tests for irl_lm.losses.gail on hand-computed values."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_lm.losses import gail
from irl_lm.losses.soft_q import Sequences

L = math.log
TOL = dict(rtol=1e-6, atol=1e-6)


def test_discriminator_loss_hand_values():
  # Data: D = sigmoid(0) = 1/2 and sigmoid(log 3) = 3/4, then padding (ignored).
  data_logits = jnp.array([[0.0, L(3), 5.0]])
  data_weights = jnp.array([[1.0, 1.0, 0.0]])
  # Samples: D = 3/4 (fooled), 1/5 (caught).
  sample_logits = jnp.array([[L(3)], [L(1 / 4)]])
  sample_weights = jnp.array([[1.0], [1.0]])
  loss, m = gail.discriminator_loss(data_logits, data_weights, sample_logits, sample_weights)
  expected = (L(2) + L(4 / 3)) / 2 + (L(4) + L(5 / 4)) / 2  # -log D on data, -log(1-D) on samples
  np.testing.assert_allclose(loss, expected, **TOL)
  np.testing.assert_allclose(m["disc_accuracy_data"], 0.5, **TOL)  # l = 0 is not > 0
  np.testing.assert_allclose(m["disc_accuracy_samples"], 0.5, **TOL)
  np.testing.assert_allclose(m["disc_prob_data"], (0.5 + 0.75) / 2, **TOL)
  np.testing.assert_allclose(m["disc_prob_samples"], (0.75 + 0.2) / 2, **TOL)
  # Gradient of the data half: d softplus(-l)/dl = -(1 - D), over 2 real tokens.
  g = jax.grad(lambda l: gail.discriminator_loss(l, data_weights, sample_logits,
                                                 sample_weights)[0])(data_logits)
  np.testing.assert_allclose(g, [[-0.5 / 2, -0.25 / 2, 0.0]], **TOL)


def test_discriminator_rewards_are_log_odds():
  d = np.array([[0.1, 0.5, 0.9, 0.3]])
  logits = jnp.asarray(np.log(d / (1 - d)), jnp.float32)
  r = gail.discriminator_rewards(logits, jnp.array([[1, 1, 1, 0]]))
  np.testing.assert_allclose(r, [[L(0.1) - L(0.9), 0.0, L(0.9) - L(0.1), 0.0]], rtol=1e-5,
                             atol=1e-6)


def test_returns_to_go_with_discount_padding_and_segments():
  rewards = jnp.array([[1.0, 2.0, 3.0, 9.0],    # last position is padding
                       [1.0, 2.0, 3.0, 4.0]])   # packed: segments {0,1} and {2,3}
  weights = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]])
  segments = jnp.array([[1, 1, 1, 0], [1, 1, 2, 2]])
  g = gail.returns_to_go(rewards, weights, gamma=0.5, segment_ids_BT=segments)
  np.testing.assert_allclose(g, [[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3, 0],
                                 [1 + 0.5 * 2, 2, 3 + 0.5 * 4, 4]], **TOL)
  g1 = gail.returns_to_go(rewards, weights, gamma=1.0)
  np.testing.assert_allclose(g1, [[6, 5, 3, 0], [10, 9, 7, 4]], **TOL)
  g0 = gail.returns_to_go(rewards, weights, gamma=0.0)
  np.testing.assert_allclose(g0, [[1, 2, 3, 0], [1, 2, 3, 4]], **TOL)


def test_batch_mean_baseline_leaves_one_out():
  returns = jnp.array([[1.0, 4.0], [3.0, 7.0], [5.0, 0.0]])
  weights = jnp.array([[1, 1], [1, 1], [1, 0]])
  b = gail.batch_mean_baseline(returns, weights)
  np.testing.assert_allclose(b, [[4.0, 7.0], [3.0, 4.0], [2.0, 5.5]], **TOL)


def test_surrogate_gradient_is_the_reinforce_estimator():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
  tokens = jnp.array([[1, 3, 0], [2, 2, 1]])
  weights = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
  adv = jnp.array([[0.5, -1.0, 7.0], [2.0, 0.25, -0.5]])

  def surrogate(z):
    return gail.policy_gradient_surrogate(jax.nn.log_softmax(z)[
        jnp.arange(2)[:, None], jnp.arange(3)[None], tokens], adv, weights)

  grad = jax.grad(surrogate)(logits)
  # REINFORCE by hand: -(1/N) sum w A (onehot(a) - pi), N = 5 real tokens.
  pi = np.asarray(jax.nn.softmax(logits))
  expected = -(np.asarray(weights * adv)[..., None] * (np.eye(4)[np.asarray(tokens)] - pi)) / 5
  np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


def test_surrogate_gradient_in_expectation_is_the_policy_gradient():
  """Two tokens from a 3-way tabular policy (the second conditioned on the first), a reward per
  token (gamma = 1: the discounted-objective gradient would need gamma^t weights). Weighting every possible sequence by its probability, the surrogate's gradient equals
  -grad J / T for the exact expected return J: causality (returns-to-go) loses nothing."""
  v, gamma = 3, 1.0
  rng = np.random.default_rng(1)
  theta = (jnp.asarray(rng.normal(size=(v,)), jnp.float32),
           jnp.asarray(rng.normal(size=(v, v)), jnp.float32))
  reward = jnp.asarray(rng.normal(size=(2, v)), jnp.float32)  # reward[t, token]
  seqs = np.array(list(itertools.product(range(v), repeat=2)))  # all 9 sequences

  def logits_of(th):
    first = jnp.broadcast_to(th[0], (len(seqs), v))
    second = th[1][seqs[:, 0]]
    return jnp.stack([first, second], axis=1)  # [9, 2, V]

  def log_probs(th):
    logp = jax.nn.log_softmax(logits_of(th))
    return jnp.take_along_axis(logp, jnp.asarray(seqs)[..., None], axis=-1)[..., 0]

  rewards = reward[jnp.arange(2)[None], jnp.asarray(seqs)]  # [9, 2]

  def expected_return(th):
    p = jnp.exp(log_probs(th).sum(-1))
    return jnp.sum(p * (rewards[:, 0] + gamma * rewards[:, 1]))

  p = jax.lax.stop_gradient(jnp.exp(log_probs(theta).sum(-1)))
  weights = jnp.broadcast_to(p[:, None], (9, 2))
  returns = gail.returns_to_go(rewards, jnp.ones((9, 2)), gamma=gamma)

  def surrogate(th):
    return gail.policy_gradient_surrogate(log_probs(th), returns, weights)

  g = jax.grad(surrogate)(theta)
  ref = jax.grad(expected_return)(theta)
  for a, b in zip(g, ref):
    np.testing.assert_allclose(a, -np.asarray(b) / 2, rtol=1e-4, atol=1e-6)


def test_kl_divergence_hand_value():
  p = np.array([0.5, 0.25, 0.25])
  q = np.array([0.25, 0.25, 0.5])
  kl = gail.kl_divergence(jnp.log(jnp.asarray(p))[None, None], jnp.log(jnp.asarray(q))[None, None])
  np.testing.assert_allclose(kl, [[0.5 * L(2) + 0.25 * L(0.5)]], **TOL)
  z = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 5)), jnp.float32)
  np.testing.assert_allclose(gail.kl_divergence(z, z), 0.0, atol=1e-6)
  g = jax.grad(lambda x: gail.kl_divergence(x, z).sum())(z)
  np.testing.assert_allclose(g, 0.0, atol=1e-6)


def test_policy_loss_combines_its_terms():
  rng = np.random.default_rng(3)
  samples = Sequences(jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32),
                      jnp.asarray(rng.integers(0, 5, size=(3, 4))),
                      jnp.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], jnp.float32))
  data = Sequences(jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32),
                   jnp.asarray(rng.integers(0, 5, size=(3, 4))), jnp.ones((3, 4)))
  ref = jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32)
  rewards = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  kw = dict(reference_logits_BTV=ref, data=data, gamma=0.9)
  loss, m = gail.gail_policy_loss(samples, rewards, kl_weight=0.3, mle_weight=0.2,
                                  entropy_weight=0.1, **kw)
  np.testing.assert_allclose(
      loss, m["pg_loss"] + 0.3 * m["kl"] + 0.2 * m["nll"] - 0.1 * m["entropy_samples"], **TOL)
  pg_only, m0 = gail.gail_policy_loss(samples, rewards, baseline="none", **kw)
  returns = gail.returns_to_go(rewards, samples.weights, gamma=0.9)
  logp = jax.nn.log_softmax(samples.logits)
  logp = jnp.take_along_axis(logp, samples.tokens[..., None], -1)[..., 0]
  np.testing.assert_allclose(pg_only, -jnp.sum(samples.weights * returns * logp) / 9, rtol=1e-5)
  assert m["kl"] > 0 and m["nll"] > 0 and m0["gail_reward_max"] >= m0["gail_reward_min"]
  with pytest.raises(ValueError, match="reference"):
    gail.gail_policy_loss(samples, rewards, kl_weight=0.1)
  with pytest.raises(ValueError, match="baseline"):
    gail.gail_policy_loss(samples, rewards, baseline="learned")
