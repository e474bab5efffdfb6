"""Tests for irl_lm.losses.iqlearn.iqlearn_loss (offline IQLearn)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_lm.losses import iqlearn
from irl_lm.losses import mle

TOL = dict(rtol=1e-6, atol=1e-6)
L = math.log

# Logits are logs of integer counts: pi = counts / sum, V = log(sum), z(s, a) = log count.
# Row 0: two real tokens, then padding. Row 1: packed, segment 1 = t 0-1, segment 2 = t 2-3.
COUNTS = np.array([
    [[1, 1, 2, 4], [1, 3, 5, 7], [1, 1, 1, 1], [3, 3, 3, 7]],   # sums 8, 16, 4, 16
    [[1, 2, 1, 4], [1, 5, 1, 1], [2, 3, 5, 6], [1, 4, 2, 1]],   # sums 8, 8, 16, 8
], dtype=np.float64)
TARGETS = np.array([[2, 1, 0, 0], [3, 1, 2, 1]], dtype=np.int32)
WEIGHTS = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=np.float32)
SEGMENTS = np.array([[1, 1, 0, 0], [1, 1, 2, 2]], dtype=np.int32)
LOGITS = np.log(COUNTS).astype(np.float32)
HAND_NLL = -(L(2 / 8) + L(3 / 16) + L(4 / 8) + L(5 / 8) + L(5 / 16) + L(4 / 8)) / 6


def _hand_rewards(gamma):
  """Real-token rewards of the hand example, in row-major order."""
  return [L(2) - gamma * L(16), L(3),                              # row 0; t=1 is terminal
          L(4) - gamma * L(8), L(5), L(5) - gamma * L(8), L(4)]    # row 1; t=1 ends segment 1


def _random_case(seed):
  rng = np.random.default_rng(seed)
  logits = (rng.normal(size=(3, 7, 5)) * 2.0).astype(np.float32)
  targets = rng.integers(0, 5, size=(3, 7)).astype(np.int32)
  weights = np.ones((3, 7), np.float32)
  segments = np.ones((3, 7), np.int32)
  weights[0, 4:] = 0.0
  segments[0, 4:] = 0
  segments[1, 3:] = 2
  segments[1, 5:] = 3
  weights[1, 6] = 0.0
  segments[1, 6] = 0
  weights[2, :] = 0.0
  segments[2, :] = 0
  return logits, targets, weights, segments


def _reference(logits, targets, weights, segments, td_weight, gamma):
  """Plain-loop float64 loss and analytic gradient d loss / d logits."""
  b, t, v = logits.shape
  z = logits.astype(np.float64)
  n = max(float(weights.sum()), 1.0)
  values = np.array([[math.log(sum(math.exp(x) for x in z[i, j])) for j in range(t)]
                     for i in range(b)])
  probs = np.exp(z - values[..., None])
  nll = td = 0.0
  grad = np.zeros((b, t, v))
  for i in range(b):
    for j in range(t):
      w = float(weights[i, j])
      if w == 0.0:
        continue
      a = targets[i, j]
      onehot = np.eye(v)[a]
      bootstraps = (j + 1 < t and weights[i, j + 1] > 0 and
                    (segments is None or segments[i, j + 1] == segments[i, j]))
      reward = z[i, j, a] - (gamma * values[i, j + 1] if bootstraps else 0.0)
      nll -= w * (z[i, j, a] - values[i, j])
      td += w * reward ** 2
      grad[i, j] += w / n * (probs[i, j] - onehot)
      grad[i, j] += td_weight * w / n * 2.0 * reward * onehot
      if bootstraps:
        grad[i, j + 1] -= td_weight * w / n * 2.0 * reward * gamma * probs[i, j + 1]
  return nll / n + td_weight * td / n, nll / n, td / n, grad


@pytest.mark.parametrize("gamma", [1.0, 0.99, 0.5, 0.0])
def test_hand_example(gamma):
  td_weight = 0.25
  loss, metrics = iqlearn.iqlearn_loss(jnp.asarray(LOGITS), jnp.asarray(TARGETS),
                                       jnp.asarray(WEIGHTS), td_weight=td_weight, gamma=gamma,
                                       segment_ids=jnp.asarray(SEGMENTS))
  rewards = _hand_rewards(gamma)
  td = sum(r * r for r in rewards) / 6
  np.testing.assert_allclose(metrics["nll"], HAND_NLL, **TOL)
  np.testing.assert_allclose(metrics["td_loss"], td, **TOL)
  np.testing.assert_allclose(metrics["reward_mean"], sum(rewards) / 6, **TOL)
  np.testing.assert_allclose(metrics["value_mean"], (4 * L(8) + 2 * L(16)) / 6, **TOL)
  np.testing.assert_allclose(metrics["accuracy"], 3 / 6, **TOL)
  np.testing.assert_allclose(metrics["num_tokens"], 6.0, **TOL)
  np.testing.assert_allclose(loss, HAND_NLL + td_weight * td, **TOL)
  np.testing.assert_allclose(metrics["loss"], loss, **TOL)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  for key in ("loss", "nll", "td_loss", "reward_mean", "value_mean", "entropy", "accuracy"):
    assert metrics[key].dtype == jnp.float32 and metrics[key].shape == (), key


def test_default_gamma_is_one():
  _, default = iqlearn.iqlearn_loss(LOGITS, TARGETS, WEIGHTS, td_weight=1.0,
                                    segment_ids=SEGMENTS)
  np.testing.assert_allclose(default["td_loss"],
                             sum(r * r for r in _hand_rewards(1.0)) / 6, **TOL)


def test_gamma_zero_penalises_raw_target_logits():
  logits, targets, weights, segments = _random_case(3)
  _, metrics = iqlearn.iqlearn_loss(logits, targets, weights, td_weight=1.0, gamma=0.0,
                                    segment_ids=segments)
  z_a = np.take_along_axis(logits, targets[..., None], -1)[..., 0].astype(np.float64)
  np.testing.assert_allclose(metrics["td_loss"], (weights * z_a ** 2).sum() / weights.sum(),
                             rtol=1e-5)


@pytest.mark.parametrize("td_weight,gamma,use_segments", [
    (0.7, 0.9, True), (0.1, 1.0, True), (2.0, 0.99, False)])
def test_matches_loop_reference_value_and_gradient(td_weight, gamma, use_segments):
  logits, targets, weights, segments = _random_case(0)
  segments = segments if use_segments else None
  fn = lambda x: iqlearn.iqlearn_loss(x, targets, weights, td_weight=td_weight, gamma=gamma,
                                      segment_ids=segments)
  (loss, metrics), grad = jax.value_and_grad(fn, has_aux=True)(jnp.asarray(logits))
  ref_loss, ref_nll, ref_td, ref_grad = _reference(logits, targets, weights, segments, td_weight,
                                                   gamma)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["nll"], ref_nll, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["td_loss"], ref_td, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_td_weight_zero_is_exactly_mle(jit):
  logits, targets, weights, segments = _random_case(1)
  iq = lambda x: iqlearn.iqlearn_loss(x, targets, weights, td_weight=0.0, gamma=0.9,
                                      segment_ids=segments)[0]
  ml = lambda x: mle.mle_loss(x, targets, weights)[0]
  iq_vg, ml_vg = jax.value_and_grad(iq), jax.value_and_grad(ml)
  if jit:
    iq_vg, ml_vg = jax.jit(iq_vg), jax.jit(ml_vg)
  iq_loss, iq_grad = iq_vg(jnp.asarray(logits))
  ml_loss, ml_grad = ml_vg(jnp.asarray(logits))
  if jit:  # different programs may fuse differently on other backends: allow an ulp or so
    np.testing.assert_allclose(iq_loss, ml_loss, rtol=1e-6, atol=0)
    np.testing.assert_allclose(iq_grad, ml_grad, rtol=1e-6, atol=1e-9)
  else:  # eager: the same ops plus exact zeros, so bit-for-bit equal
    assert float(iq_loss) == float(ml_loss)
    np.testing.assert_array_equal(iq_grad, ml_grad)
  # The comparison has teeth: any TD weight changes the gradient.
  iq_td = jax.grad(lambda x: iqlearn.iqlearn_loss(x, targets, weights, td_weight=0.1, gamma=0.9,
                                                  segment_ids=segments)[0])(jnp.asarray(logits))
  assert np.max(np.abs(np.asarray(iq_td) - np.asarray(ml_grad))) > 1e-3


def test_td_term_does_not_cross_a_segment_boundary():
  td_weight, gamma, shift = 0.5, 0.9, 1.7
  first_of_segment_2 = (1, 2)
  shifted = LOGITS.copy()
  shifted[first_of_segment_2] += shift   # log pi unchanged; V and z(s, a) both move by `shift`
  run = lambda x, seg: iqlearn.iqlearn_loss(x, TARGETS, WEIGHTS, td_weight=td_weight,
                                            gamma=gamma, segment_ids=seg)
  loss_a, metrics_a = run(LOGITS, SEGMENTS)
  loss_b, metrics_b = run(shifted, SEGMENTS)
  np.testing.assert_allclose(metrics_b["nll"], metrics_a["nll"], **TOL)
  # Legitimate change only: the reward of the shifted position itself moves by +shift; the last
  # token of segment 1 (t=1) must not see V of segment 2's first state.
  r = L(5) - gamma * L(8)
  np.testing.assert_allclose(loss_b - loss_a, td_weight * ((r + shift) ** 2 - r ** 2) / 6,
                             rtol=1e-5, atol=1e-6)
  # Control: without segment ids the TD term does read across, and the loss changes more.
  loss_c, _ = run(LOGITS, None)
  loss_d, _ = run(shifted, None)
  leak = L(5) - gamma * L(16)
  np.testing.assert_allclose(
      loss_d - loss_c,
      td_weight * ((r + shift) ** 2 - r ** 2 + (leak - gamma * shift) ** 2 - leak ** 2) / 6,
      rtol=1e-5, atol=1e-6)
  # And no gradient from segment 1's TD term reaches segment 2's first position:
  # the per-position gradient there equals that of segment 2 evaluated on its own.
  grad_packed = jax.grad(lambda x: run(x, SEGMENTS)[0])(jnp.asarray(LOGITS))
  alone_weights = WEIGHTS.copy()
  alone_weights[1, :2] = 0.0
  grad_alone = jax.grad(lambda x: iqlearn.iqlearn_loss(
      x, TARGETS, alone_weights, td_weight=td_weight, gamma=gamma,
      segment_ids=SEGMENTS)[0])(jnp.asarray(LOGITS))
  # Both losses divide by their own token counts (6 vs 4).
  np.testing.assert_allclose(np.asarray(grad_packed)[1, 2:] * 6,
                             np.asarray(grad_alone)[1, 2:] * 4, rtol=1e-5, atol=1e-6)


def test_td_term_does_not_read_padding():
  rng = np.random.default_rng(5)
  perturbed = LOGITS.copy()
  perturbed[0, 2:] = rng.normal(size=(2, 4)) * 10.0   # row 0's padding positions
  for segments in (SEGMENTS, None):
    fn = lambda x: iqlearn.iqlearn_loss(x, TARGETS, WEIGHTS, td_weight=0.8, gamma=0.95,
                                        segment_ids=segments)
    (loss_a, metrics_a), grad_a = jax.value_and_grad(fn, has_aux=True)(jnp.asarray(LOGITS))
    (loss_b, metrics_b), grad_b = jax.value_and_grad(fn, has_aux=True)(jnp.asarray(perturbed))
    assert float(loss_a) == float(loss_b)
    for key in metrics_a:
      assert float(metrics_a[key]) == float(metrics_b[key]), key
    np.testing.assert_array_equal(grad_a, grad_b)
    np.testing.assert_array_equal(np.asarray(grad_a)[0, 2:], 0.0)


def test_all_padding_gives_zero_not_nan():
  zeros = np.zeros_like(WEIGHTS)
  fn = lambda x: iqlearn.iqlearn_loss(x, TARGETS, zeros, td_weight=1.0, gamma=0.9,
                                      segment_ids=SEGMENTS)
  (loss, metrics), grad = jax.value_and_grad(fn, has_aux=True)(jnp.asarray(LOGITS))
  assert float(loss) == 0.0
  assert all(np.isfinite(float(v)) for v in metrics.values())
  np.testing.assert_array_equal(grad, 0.0)


def test_all_padding_row_contributes_nothing():
  weights = WEIGHTS.copy()
  weights[0] = 0.0
  loss, _ = iqlearn.iqlearn_loss(LOGITS, TARGETS, weights, td_weight=0.3, gamma=0.9,
                                 segment_ids=SEGMENTS)
  alone, _ = iqlearn.iqlearn_loss(LOGITS[1:], TARGETS[1:], WEIGHTS[1:], td_weight=0.3, gamma=0.9,
                                  segment_ids=SEGMENTS[1:])
  np.testing.assert_allclose(loss, alone, **TOL)
  rewards = _hand_rewards(0.9)[2:]
  nll = -(L(4 / 8) + L(5 / 8) + L(5 / 16) + L(4 / 8)) / 4
  np.testing.assert_allclose(loss, nll + 0.3 * sum(r * r for r in rewards) / 4, **TOL)


def test_bfloat16_logits_give_float32_answer():
  logits, targets, weights, segments = _random_case(2)
  bf16 = jnp.asarray(logits, jnp.bfloat16)
  kwargs = dict(td_weight=0.5, gamma=0.9, segment_ids=segments)
  loss, metrics = iqlearn.iqlearn_loss(bf16, targets, weights, **kwargs)
  assert loss.dtype == jnp.float32
  assert all(v.dtype == jnp.float32 for v in metrics.values())
  rounded, _ = iqlearn.iqlearn_loss(bf16.astype(jnp.float32), targets, weights, **kwargs)
  f32, _ = iqlearn.iqlearn_loss(logits, targets, weights, **kwargs)
  np.testing.assert_allclose(loss, rounded, **TOL)
  np.testing.assert_allclose(loss, f32, rtol=2e-2, atol=2e-2)
  grad = jax.grad(lambda x: iqlearn.iqlearn_loss(x, targets, weights, **kwargs)[0])(bf16)
  assert grad.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(grad, np.float32)))


def test_jit_with_traced_hyper_parameters():
  fn = jax.jit(lambda x, lam, g: iqlearn.iqlearn_loss(x, TARGETS, WEIGHTS, td_weight=lam,
                                                      gamma=g, segment_ids=SEGMENTS)[0])
  rewards = _hand_rewards(0.9)
  np.testing.assert_allclose(fn(LOGITS, 0.25, 0.9),
                             HAND_NLL + 0.25 * sum(r * r for r in rewards) / 6, **TOL)
