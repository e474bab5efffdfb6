"""Tests for irl_lm.losses.mle.mle_loss."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_lm.losses import mle

TOL = dict(rtol=1e-6, atol=1e-6)
L = math.log

# Logits are logs of integer counts: pi = counts / sum, V = log(sum). Row 0 has two real tokens and
# two padding positions; row 1 is fully real (packing is irrelevant to MLE).
COUNTS = np.array([
    [[1, 1, 2, 4], [1, 3, 5, 7], [1, 1, 1, 1], [3, 3, 3, 7]],
    [[1, 2, 1, 4], [1, 5, 1, 1], [2, 3, 5, 6], [1, 4, 2, 1]],
], dtype=np.float64)
TARGETS = np.array([[2, 1, 0, 0], [3, 1, 2, 1]], dtype=np.int32)
WEIGHTS = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=np.float32)
LOGITS = np.log(COUNTS).astype(np.float32)


def _entropy_of_counts(counts):
  p = np.asarray(counts, np.float64) / np.sum(counts)
  return float(-np.sum(p * np.log(p)))


def _reference(logits, targets, weights, entropy_weight, z_loss):
  """Plain-loop float64 loss and analytic gradient d loss / d logits."""
  b, t, v = logits.shape
  z = logits.astype(np.float64)
  n = max(float(weights.sum()), 1.0)
  nll = ent = zsq = 0.0
  grad = np.zeros((b, t, v))
  for i in range(b):
    for j in range(t):
      w = float(weights[i, j])
      if w == 0.0:
        continue
      value = math.log(sum(math.exp(x) for x in z[i, j]))
      p = np.array([math.exp(x - value) for x in z[i, j]])
      logp = z[i, j] - value
      h = -float(np.sum(p * logp))
      nll -= w * logp[targets[i, j]]
      ent += w * h
      zsq += w * value ** 2
      onehot = np.eye(v)[targets[i, j]]
      d_nll = p - onehot
      d_ent = -p * (logp + h)
      d_zsq = 2.0 * value * p
      grad[i, j] = w / n * (d_nll - entropy_weight * d_ent + z_loss * d_zsq)
  loss = nll / n - entropy_weight * ent / n + z_loss * zsq / n
  return loss, nll / n, ent / n, grad


def test_hand_example_metrics():
  loss, metrics = mle.mle_loss(jnp.asarray(LOGITS), jnp.asarray(TARGETS), jnp.asarray(WEIGHTS))
  nll = -(L(2 / 8) + L(3 / 16) + L(4 / 8) + L(5 / 8) + L(5 / 16) + L(4 / 8)) / 6
  real = [COUNTS[0, 0], COUNTS[0, 1], COUNTS[1, 0], COUNTS[1, 1], COUNTS[1, 2], COUNTS[1, 3]]
  entropy = sum(_entropy_of_counts(c) for c in real) / 6
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(loss, nll, **TOL)
  np.testing.assert_allclose(metrics["loss"], nll, **TOL)
  np.testing.assert_allclose(metrics["nll"], nll, **TOL)
  np.testing.assert_allclose(metrics["entropy"], entropy, **TOL)
  # argmax == target at row 1 positions 0, 1 and 3 only.
  np.testing.assert_allclose(metrics["accuracy"], 3 / 6, **TOL)
  np.testing.assert_allclose(metrics["num_tokens"], 6.0, **TOL)
  np.testing.assert_allclose(metrics["value_mean"], (4 * L(8) + 2 * L(16)) / 6, **TOL)
  np.testing.assert_allclose(metrics["z_loss"], 0.0, **TOL)
  for key, value in metrics.items():
    assert value.dtype == jnp.float32 and value.shape == (), key


def test_hand_example_entropy_bonus_and_z_loss():
  beta, zl = 0.3, 0.01
  loss, metrics = mle.mle_loss(jnp.asarray(LOGITS), jnp.asarray(TARGETS), jnp.asarray(WEIGHTS),
                               entropy_weight=beta, z_loss=zl)
  nll = -(L(2 / 8) + L(3 / 16) + L(4 / 8) + L(5 / 8) + L(5 / 16) + L(4 / 8)) / 6
  real = [COUNTS[0, 0], COUNTS[0, 1], COUNTS[1, 0], COUNTS[1, 1], COUNTS[1, 2], COUNTS[1, 3]]
  entropy = sum(_entropy_of_counts(c) for c in real) / 6
  mean_v_sq = (4 * L(8) ** 2 + 2 * L(16) ** 2) / 6
  np.testing.assert_allclose(metrics["z_loss"], zl * mean_v_sq, **TOL)
  np.testing.assert_allclose(loss, nll - beta * entropy + zl * mean_v_sq, **TOL)


@pytest.mark.parametrize("entropy_weight,z_loss", [(0.0, 0.0), (0.2, 0.0), (0.0, 1e-3),
                                                   (0.5, 0.1)])
def test_matches_loop_reference_value_and_gradient(entropy_weight, z_loss):
  rng = np.random.default_rng(0)
  logits = (rng.normal(size=(3, 6, 5)) * 2.0).astype(np.float32)
  targets = rng.integers(0, 5, size=(3, 6)).astype(np.int32)
  weights = np.ones((3, 6), np.float32)
  weights[0, 3:] = 0.0
  weights[2, :] = 0.0
  fn = lambda x: mle.mle_loss(x, targets, weights, entropy_weight=entropy_weight,
                              z_loss=z_loss)
  (loss, metrics), grad = jax.value_and_grad(fn, has_aux=True)(jnp.asarray(logits))
  ref_loss, ref_nll, ref_ent, ref_grad = _reference(logits, targets, weights, entropy_weight,
                                                    z_loss)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["nll"], ref_nll, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["entropy"], ref_ent, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_padding_logits_are_ignored():
  rng = np.random.default_rng(1)
  perturbed = LOGITS.copy()
  perturbed[0, 2:] = rng.normal(size=(2, 4)) * 10.0   # the padding positions of row 0
  fn = lambda x: mle.mle_loss(x, TARGETS, WEIGHTS, entropy_weight=0.1, z_loss=0.01)
  (loss_a, metrics_a), grad_a = jax.value_and_grad(fn, has_aux=True)(jnp.asarray(LOGITS))
  (loss_b, metrics_b), grad_b = jax.value_and_grad(fn, has_aux=True)(jnp.asarray(perturbed))
  assert float(loss_a) == float(loss_b)
  for key in metrics_a:
    assert float(metrics_a[key]) == float(metrics_b[key]), key
  np.testing.assert_array_equal(grad_a, grad_b)
  np.testing.assert_array_equal(np.asarray(grad_a)[0, 2:], 0.0)


def test_all_padding_gives_zero_not_nan():
  zeros = np.zeros_like(WEIGHTS)
  fn = lambda x: mle.mle_loss(x, TARGETS, zeros, entropy_weight=0.1, z_loss=0.01)
  (loss, metrics), grad = jax.value_and_grad(fn, has_aux=True)(jnp.asarray(LOGITS))
  assert float(loss) == 0.0
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert float(metrics["num_tokens"]) == 0.0
  np.testing.assert_array_equal(grad, 0.0)


def test_all_padding_row_contributes_nothing():
  weights = WEIGHTS.copy()
  weights[0] = 0.0
  loss, metrics = mle.mle_loss(LOGITS, TARGETS, weights)
  alone, alone_metrics = mle.mle_loss(LOGITS[1:], TARGETS[1:], WEIGHTS[1:])
  np.testing.assert_allclose(loss, alone, **TOL)
  np.testing.assert_allclose(metrics["accuracy"], alone_metrics["accuracy"], **TOL)
  np.testing.assert_allclose(loss, -(L(4 / 8) + L(5 / 8) + L(5 / 16) + L(4 / 8)) / 4, **TOL)


def test_integer_weights_equal_float_weights():
  a, _ = mle.mle_loss(LOGITS, TARGETS, WEIGHTS)
  b, _ = mle.mle_loss(LOGITS, TARGETS, WEIGHTS.astype(np.int32))
  assert float(a) == float(b)


def test_bfloat16_logits_give_float32_answer():
  rng = np.random.default_rng(2)
  logits = (rng.normal(size=(2, 5, 7)) * 3.0).astype(np.float32)
  targets = rng.integers(0, 7, size=(2, 5)).astype(np.int32)
  weights = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
  bf16 = jnp.asarray(logits, jnp.bfloat16)
  rounded = bf16.astype(jnp.float32)
  loss, metrics = mle.mle_loss(bf16, targets, weights, entropy_weight=0.1, z_loss=1e-3)
  assert loss.dtype == jnp.float32
  assert all(v.dtype == jnp.float32 for v in metrics.values())
  loss_rounded, _ = mle.mle_loss(rounded, targets, weights, entropy_weight=0.1, z_loss=1e-3)
  loss_f32, _ = mle.mle_loss(logits, targets, weights, entropy_weight=0.1, z_loss=1e-3)
  np.testing.assert_allclose(loss, loss_rounded, **TOL)
  np.testing.assert_allclose(loss, loss_f32, rtol=1e-2, atol=1e-2)
  grad = jax.grad(lambda x: mle.mle_loss(x, targets, weights)[0])(bf16)
  assert grad.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(grad, np.float32)))


def test_jit_with_traced_hyper_parameters():
  fn = jax.jit(lambda x, beta, zl: mle.mle_loss(x, TARGETS, WEIGHTS, entropy_weight=beta,
                                                 z_loss=zl)[0])
  eager, _ = mle.mle_loss(LOGITS, TARGETS, WEIGHTS, entropy_weight=0.3, z_loss=0.01)
  np.testing.assert_allclose(fn(LOGITS, 0.3, 0.01), eager, **TOL)
