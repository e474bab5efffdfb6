"""Tests for irl_lm.losses.soft_q: values, log-probs, next-state values and implicit rewards.

The hand example uses logits that are logs of integer counts, so that ``V = log(sum counts)``,
``pi = counts / sum`` and every expected number below is written in closed form.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_lm.losses import soft_q

TOL = dict(rtol=1e-6, atol=1e-6)

# Two sequences, T = 4, vocabulary 4.
# Row 0: two real tokens then two padding positions.
# Row 1: packed, segment 1 = positions 0-1, segment 2 = positions 2-3.
COUNTS = np.array([
    [[1, 1, 2, 4], [1, 3, 5, 7], [1, 1, 1, 1], [3, 3, 3, 7]],   # sums 8, 16, 4, 16
    [[1, 2, 1, 4], [1, 5, 1, 1], [2, 3, 5, 6], [1, 4, 2, 1]],   # sums 8, 8, 16, 8
], dtype=np.float64)
TARGETS = np.array([[2, 1, 0, 0], [3, 1, 2, 1]], dtype=np.int32)
WEIGHTS = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=np.float32)
SEGMENTS = np.array([[1, 1, 0, 0], [1, 1, 2, 2]], dtype=np.int32)
LOGITS = np.log(COUNTS).astype(np.float32)
L = math.log


def _random_case(seed=0, b=3, t=7, v=5):
  """Random logits with padding and packing, for the loop reference."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(b, t, v)).astype(np.float32) * 2.0
  targets = rng.integers(0, v, size=(b, t)).astype(np.int32)
  weights = np.ones((b, t), np.float32)
  segments = np.ones((b, t), np.int32)
  weights[0, 4:] = 0.0       # padding at the end
  segments[0, 4:] = 0
  segments[1, 3:] = 2        # packed: boundary between 2 and 3, then 3rd segment
  segments[1, 5:] = 3
  weights[2, :] = 0.0        # an all-padding row
  segments[2, :] = 0
  return logits, targets, weights, segments


def _reference_rewards(logits, targets, weights, segments, gamma):
  """Plain-loop float64 reference of r_t = z(s_t, a_t) - gamma V(s_{t+1})."""
  b, t, _ = logits.shape
  z = logits.astype(np.float64)
  out = np.zeros((b, t))
  for i in range(b):
    for j in range(t):
      if weights[i, j] <= 0:
        continue
      next_value = 0.0
      if j + 1 < t and weights[i, j + 1] > 0 and (
          segments is None or segments[i, j + 1] == segments[i, j]):
        next_value = math.log(sum(math.exp(x) for x in z[i, j + 1]))
      out[i, j] = z[i, j, targets[i, j]] - gamma * next_value
  return out


def test_state_values_hand_example():
  values = soft_q.state_values(jnp.asarray(LOGITS))
  assert values.dtype == jnp.float32 and values.shape == (2, 4)
  np.testing.assert_allclose(values, [[L(8), L(16), L(4), L(16)], [L(8), L(8), L(16), L(8)]],
                             **TOL)


def test_log_probs_hand_example():
  logp = soft_q.log_probs(jnp.asarray(LOGITS), jnp.asarray(TARGETS))
  assert logp.dtype == jnp.float32 and logp.shape == (2, 4)
  expected = [[L(2 / 8), L(3 / 16), L(1 / 4), L(3 / 16)],
              [L(4 / 8), L(5 / 8), L(5 / 16), L(4 / 8)]]
  np.testing.assert_allclose(logp, expected, **TOL)


def test_entropy_hand_example():
  ent = soft_q.entropy(jnp.asarray(LOGITS))
  # Uniform over 4 tokens: log 4.  [1,1,2,4]/8: -(2 * 1/8 log 1/8 + 1/4 log 1/4 + 1/2 log 1/2).
  np.testing.assert_allclose(ent[0, 2], L(4), **TOL)
  np.testing.assert_allclose(
      ent[0, 0], -(2 * (1 / 8) * L(1 / 8) + (1 / 4) * L(1 / 4) + (1 / 2) * L(1 / 2)), **TOL)
  # Shift invariance and a near-deterministic policy.
  np.testing.assert_allclose(soft_q.entropy(jnp.asarray(LOGITS) + 3.0), ent, **TOL)
  peaked = jnp.array([[[50.0, 0.0, 0.0, 0.0]]])
  assert float(soft_q.entropy(peaked)[0, 0]) < 1e-6


def test_next_state_values_hand_example():
  values = jnp.array([[10.0, 11.0, 12.0, 13.0], [20.0, 21.0, 22.0, 23.0]])
  with_segments = soft_q.next_state_values(values, jnp.asarray(WEIGHTS), jnp.asarray(SEGMENTS))
  # Row 0: t=0 -> V(1); t=1 is the last real token (t=2 is padding) -> 0; padding -> 0.
  # Row 1: t=0 -> V(1); t=1 ends segment 1 -> 0; t=2 -> V(3); last column -> 0.
  np.testing.assert_array_equal(with_segments, [[11.0, 0.0, 0.0, 0.0], [21.0, 0.0, 23.0, 0.0]])
  without_segments = soft_q.next_state_values(values, jnp.asarray(WEIGHTS))
  np.testing.assert_array_equal(without_segments, [[11.0, 0.0, 0.0, 0.0], [21.0, 22.0, 23.0, 0.0]])
  # Integer weights behave like float weights.
  int_weights = soft_q.next_state_values(values, jnp.asarray(WEIGHTS, jnp.int32),
                                         jnp.asarray(SEGMENTS))
  np.testing.assert_array_equal(int_weights, with_segments)
  assert with_segments.dtype == jnp.float32


def test_next_state_values_seqio_padding_after_packed_segments():
  # seqio packs segments 1, 2 and pads with segment id 0 and weight 0.
  values = jnp.arange(1.0, 7.0)[None]
  weights = jnp.array([[1, 1, 1, 1, 0, 0]])
  segments = jnp.array([[1, 2, 2, 2, 0, 0]])
  out = soft_q.next_state_values(values, weights, segments)
  np.testing.assert_array_equal(out, [[0.0, 3.0, 4.0, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.0])
def test_implicit_rewards_hand_example(gamma):
  rewards = soft_q.implicit_rewards(jnp.asarray(LOGITS), jnp.asarray(TARGETS),
                                    jnp.asarray(WEIGHTS), gamma=gamma,
                                    segment_ids=jnp.asarray(SEGMENTS))
  expected = [[L(2) - gamma * L(16), L(3), 0.0, 0.0],
              [L(4) - gamma * L(8), L(5), L(5) - gamma * L(8), L(4)]]
  assert rewards.dtype == jnp.float32
  np.testing.assert_allclose(rewards, expected, **TOL)
  # Without segment ids, row 1's t=1 bootstraps from the next segment's first state.
  unsegmented = soft_q.implicit_rewards(jnp.asarray(LOGITS), jnp.asarray(TARGETS),
                                        jnp.asarray(WEIGHTS), gamma=gamma)
  np.testing.assert_allclose(unsegmented[1, 1], L(5) - gamma * L(16), **TOL)


def test_implicit_rewards_identity_with_values_and_log_probs():
  logits, targets, weights, segments = _random_case(1)
  gamma = 0.95
  rewards = soft_q.implicit_rewards(logits, targets, weights, gamma=gamma, segment_ids=segments)
  values = soft_q.state_values(logits)
  identity = (values + soft_q.log_probs(logits, targets)
              - gamma * soft_q.next_state_values(values, weights, segments)) * (weights > 0)
  np.testing.assert_allclose(rewards, identity, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gamma", [1.0, 0.99, 0.5])
@pytest.mark.parametrize("use_segments", [True, False])
def test_implicit_rewards_match_loop_reference(gamma, use_segments):
  logits, targets, weights, segments = _random_case(2)
  segments = segments if use_segments else None
  rewards = soft_q.implicit_rewards(logits, targets, weights, gamma=gamma, segment_ids=segments)
  np.testing.assert_allclose(rewards, _reference_rewards(logits, targets, weights, segments, gamma),
                             rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(rewards)[weights == 0] == 0.0)


def test_token_statistics_match_separate_functions():
  logits, targets, _, _ = _random_case(3)
  stats = soft_q.token_statistics(logits, targets)
  np.testing.assert_allclose(stats.values, soft_q.state_values(logits), **TOL)
  np.testing.assert_allclose(stats.log_probs, soft_q.log_probs(logits, targets), **TOL)
  np.testing.assert_allclose(stats.entropy, soft_q.entropy(logits), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats.target_logits,
                             np.take_along_axis(logits, targets[..., None], -1)[..., 0], **TOL)
  np.testing.assert_array_equal(stats.correct, (logits.argmax(-1) == targets).astype(np.float32))
  # Against log_softmax directly.
  np.testing.assert_allclose(
      stats.log_probs,
      np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), targets[..., None], -1)[..., 0],
      **TOL)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_token_statistics_gradient_equals_autodiff_of_separate_functions(dtype):
  # token_statistics has a hand-written VJP; it must equal plain autodiff of the definitions.
  logits, targets, _, _ = _random_case(4)
  logits = jnp.asarray(logits, dtype)
  rs = np.random.RandomState(7)
  g_v, g_z, g_h = (jnp.asarray(rs.randn(*targets.shape), jnp.float32) for _ in range(3))

  def fused(x):
    stats = soft_q.token_statistics(x, targets)
    return (jnp.sum(g_v * stats.values) + jnp.sum(g_z * stats.target_logits)
            + jnp.sum(g_h * stats.entropy) + jnp.sum(stats.log_probs))

  def separate(x):
    target_logits = soft_q.log_probs(x, targets) + soft_q.state_values(x)
    return (jnp.sum(g_v * soft_q.state_values(x)) + jnp.sum(g_z * target_logits)
            + jnp.sum(g_h * soft_q.entropy(x)) + jnp.sum(soft_q.log_probs(x, targets)))

  want = jax.grad(separate)(logits)
  tol = TOL if dtype == jnp.float32 else dict(rtol=2e-2, atol=2e-2)
  # Eagerly and compiled whole (XLA CPU fuses the closed-form gradient into other ops).
  for got in (jax.grad(fused)(logits), jax.jit(jax.grad(fused))(logits)):
    assert got.dtype == dtype
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), **tol)
  np.testing.assert_allclose(fused(logits), separate(logits), rtol=1e-5)


def test_token_statistics_stay_accurate_for_large_logits():
  # Shifting every logit of a state by a constant moves V by it and leaves H and log pi alone.
  logits, targets, _, _ = _random_case(5)
  base = soft_q.token_statistics(jnp.asarray(logits), targets)
  shifted = soft_q.token_statistics(jnp.asarray(logits) + 1e4, targets)
  np.testing.assert_allclose(shifted.values - 1e4, base.values, atol=2e-3)
  np.testing.assert_allclose(shifted.entropy, base.entropy, atol=2e-3)
  assert np.all(np.isfinite(shifted.entropy)) and np.all(np.asarray(shifted.entropy) >= -1e-3)


def test_rewards_gradient_reaches_next_state_only_within_segment():
  gamma = 0.9

  def total_reward(logits):
    return jnp.sum(soft_q.implicit_rewards(logits, jnp.asarray(TARGETS), jnp.asarray(WEIGHTS),
                                           gamma=gamma, segment_ids=jnp.asarray(SEGMENTS)))

  grad = np.asarray(jax.grad(total_reward)(jnp.asarray(LOGITS)))
  probs = COUNTS / COUNTS.sum(-1, keepdims=True)
  onehot = np.eye(4)[TARGETS]
  # d sum_t r_t / d z_t = onehot(a_t) * real_t - gamma * softmax(z_t) * [t-1 bootstraps from t].
  # Row 0: t=0 bootstraps from t=1. Row 1: t=0 from t=1 and t=2 from t=3, but t=1 (end of
  # segment 1) not from t=2, and nothing from padding.
  bootstrapped_from = np.array([[0, 1, 0, 0], [0, 1, 0, 1]], np.float64)[..., None]
  expected = onehot * WEIGHTS[..., None] - gamma * probs * bootstrapped_from
  np.testing.assert_allclose(grad, expected, **TOL)


def test_bfloat16_logits_give_float32_answers():
  logits, targets, weights, segments = _random_case(4)
  bf16 = jnp.asarray(logits, jnp.bfloat16)
  rounded = np.asarray(bf16.astype(jnp.float32))
  for fn in (soft_q.state_values, soft_q.entropy):
    out = fn(bf16)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, fn(rounded), **TOL)
    np.testing.assert_allclose(out, fn(logits), rtol=2e-2, atol=2e-2)
  out = soft_q.log_probs(bf16, targets)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, soft_q.log_probs(rounded, targets), **TOL)
  rewards = soft_q.implicit_rewards(bf16, targets, weights, gamma=0.9, segment_ids=segments)
  assert rewards.dtype == jnp.float32
  np.testing.assert_allclose(
      rewards, soft_q.implicit_rewards(rounded, targets, weights, gamma=0.9, segment_ids=segments),
      **TOL)
  np.testing.assert_allclose(
      rewards, soft_q.implicit_rewards(logits, targets, weights, gamma=0.9, segment_ids=segments),
      rtol=3e-2, atol=3e-2)


def test_weighted_mean_and_token_count():
  x = jnp.array([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
  w = jnp.array([[1, 1, 0], [1, 0, 0]])
  assert float(soft_q.weighted_mean(x, w)) == pytest.approx(2.0)
  assert float(soft_q.num_real_tokens(w)) == 3.0
  zero = soft_q.weighted_mean(x, jnp.zeros_like(w))
  assert float(zero) == 0.0 and not np.isnan(float(zero))


def test_jit_with_traced_gamma():
  fn = jax.jit(lambda logits, gamma: soft_q.implicit_rewards(
      logits, TARGETS, WEIGHTS, gamma=gamma, segment_ids=SEGMENTS))
  np.testing.assert_allclose(
      fn(LOGITS, 0.5),
      soft_q.implicit_rewards(LOGITS, TARGETS, WEIGHTS, gamma=0.5, segment_ids=SEGMENTS), **TOL)
