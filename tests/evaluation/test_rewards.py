"""Reward analysis: summed implicit rewards of outputs and their Spearman correlation."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_lm.evaluation import rewards
from irl_lm.losses import soft_q
from irl_lm.models import t5


class UniformModel:
  """Logits all zero: pi is uniform, V(s) = log V everywhere (T5's features)."""

  pad_id, eos_id, decoder_start_id = 0, 1, 0
  teacher_forcing_batch = t5.EncoderDecoderModel.teacher_forcing_batch

  def __init__(self, vocab_size):
    self.vocab_size = vocab_size

  def logits(self, params, batch):
    del params
    B, T = batch["decoder_input_tokens"].shape
    return jnp.zeros((B, T, self.vocab_size), jnp.float32)


def test_output_weights():
  tokens = jnp.array([[5, 6, 1, 0], [5, 1, 0, 0], [4, 4, 4, 4], [1, 0, 0, 0]])
  np.testing.assert_array_equal(rewards.output_weights(tokens),
                                [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_uniform_policy_hand_computed(gamma):
  # z(s, a) = 0 and V = log V: r_t = -gamma log V except at the last token (V(s') = 0), so an
  # output of n tokens sums to -(n - 1) gamma log V; entropy is log V per token.
  V = 16
  tokens = jnp.array([[5, 6, 7, 1, 0], [9, 1, 0, 0, 0]], jnp.int32)
  stats = rewards.output_statistics(UniformModel(V), None, jnp.ones((2, 3), jnp.int32), tokens,
                                    gamma=gamma)
  np.testing.assert_allclose(stats["num_tokens"], [4, 2])
  np.testing.assert_allclose(stats["reward"], [-3 * gamma * math.log(V), -gamma * math.log(V)],
                             rtol=1e-6)
  np.testing.assert_allclose(stats["entropy"], [4 * math.log(V), 2 * math.log(V)], rtol=1e-6)
  np.testing.assert_allclose(stats["log_prob"], [-4 * math.log(V), -2 * math.log(V)], rtol=1e-6)


def test_matches_soft_q_on_a_t5_model():
  model = t5.EncoderDecoderModel(t5.t5_1_1_config("tiny", vocab_size=64,
                                                  activation_dtype=jnp.float32))
  shapes = {"encoder_input_tokens": (2, 6), "decoder_input_tokens": (2, 5)}
  params = jax.jit(lambda rng: model.init(rng, shapes))(jax.random.PRNGKey(0))
  enc = jnp.array([[3, 4, 5, 1, 0, 0], [7, 8, 1, 0, 0, 0]], jnp.int32)
  tokens = jnp.array([[10, 11, 12, 1, 0], [20, 21, 22, 23, 24]], jnp.int32)  # row 1 has no EOS
  fn = rewards.make_statistics_fn(model, gamma=0.95)
  stats = fn(params, enc, tokens)
  weights = rewards.output_weights(tokens)
  logits = jax.jit(model.logits)(params, {"encoder_input_tokens": enc,
                                 "decoder_input_tokens": jnp.pad(tokens[:, :-1], ((0, 0), (1, 0))),
                                 "decoder_target_tokens": tokens})
  expected = soft_q.implicit_rewards(logits, tokens, weights, gamma=0.95).sum(axis=1)
  np.testing.assert_allclose(stats["reward"], expected, rtol=1e-5, atol=1e-5)
  entropy = (soft_q.entropy(logits) * weights).sum(axis=1)
  np.testing.assert_allclose(stats["entropy"], entropy, rtol=1e-5)
  np.testing.assert_allclose(stats["num_tokens"], [4, 5])


def test_spearman():
  assert rewards.spearman([1, 2, 3, 4], [10, 20, 30, 45])["rho"] == pytest.approx(1.0)
  assert rewards.spearman([1, 2, 3, 4], [4, 3, 2, 1])["rho"] == pytest.approx(-1.0)
  # Ranks (1, 2, 3, 4) vs (2, 1, 4, 3): d^2 = 4, rho = 1 - 6 * 4 / (4 * 15) = 0.6.
  result = rewards.spearman([0.1, 0.2, 0.3, 0.4], [2, 1, 4, 3])
  assert result["rho"] == pytest.approx(0.6) and result["n"] == 4
  assert 0 < result["p_value"] < 1
  assert rewards.spearman([1, 2, 3], [5, 5, 5]) == {"rho": None, "p_value": None, "n": 3}
  assert rewards.spearman([1, 2], [1, 2])["rho"] is None
  with pytest.raises(ValueError, match="shapes"):
    rewards.spearman([1, 2, 3], [1, 2])
