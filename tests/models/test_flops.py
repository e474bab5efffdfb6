"""The analytic FLOP count (MFU's numerator) against XLA's cost analysis, and the peak table."""

import jax
import jax.numpy as jnp
import pytest

from irl_lm.losses import mle
from irl_lm.models import decoder_only, flops, t5

B = 8
LENGTHS = {"inputs": 64, "targets": 32}


@pytest.mark.parametrize("model", [
    t5.EncoderDecoderModel(t5.t5_1_1_config("tiny", vocab_size=4096,
                                            activation_dtype=jnp.float32)),
    decoder_only.DecoderOnlyModel(decoder_only.decoder_only_config(
        "tiny", vocab_size=4096, activation_dtype=jnp.float32))], ids=["t5", "decoder_only"])
def test_train_flops_match_xla_within_ten_percent(model):
  """XLA also counts element-wise work (softmax, norms, the loss), so it is a little higher."""
  shapes = model.input_shapes(B, LENGTHS)
  params = jax.eval_shape(lambda r: model.init(r, shapes), jax.random.key(0))
  batch = jax.eval_shape(lambda: model.teacher_forcing_batch(
      jnp.ones((B, LENGTHS["inputs"]), jnp.int32), jnp.ones((B, LENGTHS["targets"]), jnp.int32)))

  def loss(p, b):
    return mle.mle_loss(model.logits(p, b), b["decoder_target_tokens"],
                        b["decoder_loss_weights"])[0]
  analysis = jax.jit(jax.value_and_grad(loss)).lower(params, batch).compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  ratio = analysis["flops"] / flops.train_flops(model.config, B, LENGTHS)
  assert 1.0 <= ratio < 1.1, ratio


def test_forward_flops_by_hand():
  """One decoder-only layer, E = J = J_kv = 2, F = 4, V = 8, L = T = 1, B = 1: per slot
  4EJ + 4EJ_kv + 4SJ + 6EF = 16 + 16 + 16 + 48 = 96, two slots 192, output layer 2EV = 32."""
  cfg = decoder_only.DecoderOnlyConfig(vocab_size=8, emb_dim=2, num_heads=1, num_kv_heads=1,
                                       head_dim=2, mlp_dim=4, num_layers=1)
  assert flops.forward_flops(cfg, 1, {"inputs": 1, "targets": 1}) == 224
  assert flops.train_flops(cfg, 2, {"inputs": 1, "targets": 1}) == 3 * 2 * 224


def test_peak_flops_by_device_kind():
  assert flops.peak_flops("TPU v5 lite") == 197e12
  assert flops.peak_flops("TPU v5p") == 459e12
  assert flops.peak_flops("TPU v4") == 275e12
  assert flops.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
  assert flops.peak_flops("NVIDIA H100 PCIe") == 756e12
  assert flops.peak_flops("NVIDIA H200") == 989e12
  assert flops.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
  assert flops.peak_flops("NVIDIA L40S") == 362e12
  assert flops.peak_flops("cpu") is None
  assert flops.peak_flops("NVIDIA GeForce GTX 1080") is None
