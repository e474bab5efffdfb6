"""Tests for irl_lm.losses.iqlearn.iqlearn_online_loss (online IQLearn,
docs/design.md#objectives)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_lm.losses import iqlearn
from irl_lm.losses.soft_q import Sequences

L = math.log


def _random_sequences(seed, b=3, t=6, v=5, packed=True):
  rng = np.random.default_rng(seed)
  logits = (rng.normal(size=(b, t, v)) * 2.0).astype(np.float32)
  tokens = rng.integers(0, v, size=(b, t)).astype(np.int32)
  weights = np.ones((b, t), np.float32)
  weights[0, 4:] = 0.0
  segments = None
  if packed:
    segments = np.ones((b, t), np.int32)
    segments[0, 4:] = 0
    segments[1, 3:] = 2
  return Sequences(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(weights),
                   None if segments is None else jnp.asarray(segments))


def _design_loss(data, samples, td_weight, gamma, alpha, td_on):
  """docs/design.md's form, written independently in float64 numpy loops:
  -E_data[z - g V'] + E_mix[V - g V'] + td_weight * E_reg[r^2]."""
  def per_token(seqs):
    z = np.asarray(seqs.logits, np.float64)
    w = np.asarray(seqs.weights)
    seg = None if seqs.segment_ids is None else np.asarray(seqs.segment_ids)
    b, t, _ = z.shape
    out = []  # (weight, z(s,a), V(s), V(s'))
    for i in range(b):
      for j in range(t):
        if w[i, j] == 0:
          continue
        values = [math.log(np.exp(z[i, k]).sum()) for k in range(t)]
        nxt = (j + 1 < t and w[i, j + 1] > 0 and (seg is None or seg[i, j + 1] == seg[i, j]))
        out.append((float(w[i, j]), z[i, j, int(seqs.tokens[i, j])], values[j],
                    values[j + 1] if nxt else 0.0))
    return out

  def mean(rows, f):
    return sum(w * f(q, v, vn) for w, q, v, vn in rows) / max(sum(r[0] for r in rows), 1.0)

  d, s = per_token(data), per_token(samples)
  ll = mean(d, lambda q, v, vn: q - gamma * vn)
  mix = (1 - alpha) * mean(d, lambda q, v, vn: v - gamma * vn) + alpha * mean(
      s, lambda q, v, vn: v - gamma * vn)
  sq = lambda q, v, vn: (q - gamma * vn) ** 2
  reg = mean(d, sq) if td_on == "data" else (1 - alpha) * mean(d, sq) + alpha * mean(s, sq)
  return -ll + mix + td_weight * reg


@pytest.mark.parametrize("gamma,td_on", [(1.0, "mixture"), (0.9, "data"), (0.5, "mixture")])
def test_zero_mix_equals_offline_loss_value_and_gradient(gamma, td_on):
  data = _random_sequences(0)
  samples = _random_sequences(1, b=2, t=5, packed=False)

  def online(data_logits, sample_logits):
    return iqlearn.iqlearn_online_loss(
        data._replace(logits=data_logits), samples._replace(logits=sample_logits),
        td_weight=0.7, gamma=gamma, online_mix=0.0, td_on=td_on)[0]

  def offline(data_logits):
    return iqlearn.iqlearn_loss(data_logits, data.tokens, data.weights, td_weight=0.7,
                                gamma=gamma, segment_ids=data.segment_ids)[0]

  value, (grad_data, grad_samples) = jax.value_and_grad(online, argnums=(0, 1))(
      data.logits, samples.logits)
  ref_value, ref_grad = jax.value_and_grad(offline)(data.logits)
  np.testing.assert_allclose(value, ref_value, rtol=1e-7, atol=1e-7)
  np.testing.assert_allclose(grad_data, ref_grad, rtol=1e-7, atol=1e-8)
  np.testing.assert_array_equal(grad_samples, 0.0)
  # The metrics of the shared terms agree too.
  _, m = iqlearn.iqlearn_online_loss(data, samples, td_weight=0.7, gamma=gamma, online_mix=0.0,
                                     td_on=td_on)
  _, ref_m = iqlearn.iqlearn_loss(data.logits, data.tokens, data.weights, td_weight=0.7,
                                  gamma=gamma, segment_ids=data.segment_ids)
  for key in ("nll", "td_loss", "reward_mean", "entropy", "accuracy", "num_tokens"):
    np.testing.assert_allclose(m[key], ref_m[key], rtol=1e-6, err_msg=key)


@pytest.mark.parametrize("alpha,td_on", [(0.1, "mixture"), (0.5, "data"), (1.0, "mixture")])
def test_matches_design_formula(alpha, td_on):
  data = _random_sequences(2)
  samples = _random_sequences(3, b=2, t=6, packed=False)
  loss, metrics = iqlearn.iqlearn_online_loss(data, samples, td_weight=0.3, gamma=0.9,
                                              online_mix=alpha, td_on=td_on)
  expected = _design_loss(data, samples, 0.3, 0.9, alpha, td_on)
  np.testing.assert_allclose(loss, expected, rtol=2e-5)
  np.testing.assert_allclose(metrics["loss"], expected, rtol=2e-5)
  assert metrics["num_sample_tokens"] == 10.0 and metrics["num_tokens"] == 16.0


def test_gradient_matches_design_form():
  """Autodiff of the rewritten loss equals autodiff of docs/design.md's literal expression."""
  data = _random_sequences(4)
  samples = _random_sequences(5, b=2, t=6, packed=False)
  gamma, alpha, lam = 0.8, 0.25, 0.4
  from irl_lm.losses import soft_q

  def literal(dl, sl):
    def parts(seqs, logits):
      q = soft_q._target_logits(logits, seqs.tokens)
      v = soft_q.state_values(logits)
      vn = soft_q.next_state_values(v, seqs.weights, seqs.segment_ids)
      return q, v, vn
    qd, vd, vnd = parts(data, dl)
    qs, vs, vns = parts(samples, sl)
    md = lambda x: soft_q.weighted_mean(x, data.weights)
    ms = lambda x: soft_q.weighted_mean(x, samples.weights)
    return (-md(qd - gamma * vnd) + (1 - alpha) * md(vd - gamma * vnd)
            + alpha * ms(vs - gamma * vns)
            + lam * ((1 - alpha) * md((qd - gamma * vnd) ** 2)
                     + alpha * ms((qs - gamma * vns) ** 2)))

  def ours(dl, sl):
    return iqlearn.iqlearn_online_loss(data._replace(logits=dl), samples._replace(logits=sl),
                                       td_weight=lam, gamma=gamma, online_mix=alpha)[0]

  g = jax.grad(ours, argnums=(0, 1))(data.logits, samples.logits)
  ref = jax.grad(literal, argnums=(0, 1))(data.logits, samples.logits)
  for a, b in zip(g, ref):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Samples are pushed towards lower soft value: the gradient on their logits is not zero.
  assert np.abs(np.asarray(g[1])).max() > 1e-3


def test_hand_example():
  """One data token and one sample token, each its own episode (V' = 0), gamma = 1:
  loss = (V_d - z_d) + alpha (V_s - V_d) + lam ((1 - alpha) z_d^2 + alpha z_s^2)."""
  data = Sequences(jnp.log(jnp.array([[[1.0, 3.0]]])), jnp.array([[1]]), jnp.array([[1.0]]))
  samples = Sequences(jnp.log(jnp.array([[[2.0, 2.0]]])), jnp.array([[0]]), jnp.array([[1.0]]))
  alpha, lam = 0.25, 0.5
  loss, m = iqlearn.iqlearn_online_loss(data, samples, td_weight=lam, online_mix=alpha)
  expected = (L(4) - L(3)) + alpha * (L(4) - L(4)) + lam * (0.75 * L(3) ** 2 + 0.25 * L(2) ** 2)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(m["reward_mean_samples"], L(2), rtol=1e-6)
  np.testing.assert_allclose(m["reward_mean"], L(3), rtol=1e-6)
  np.testing.assert_allclose(m["log_prob_samples"], L(0.5), rtol=1e-6)


def test_rejects_bad_arguments():
  data = _random_sequences(0)
  with pytest.raises(ValueError, match="td_on"):
    iqlearn.iqlearn_online_loss(data, data, td_weight=0.1, online_mix=0.1, td_on="samples")
  with pytest.raises(ValueError, match="online_mix"):
    iqlearn.iqlearn_online_loss(data, data, td_weight=0.1, online_mix=1.5)
