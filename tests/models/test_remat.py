"""Rematerialisation (`config.remat_policy`) changes memory, never parameters, losses or gradients."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_lm.cpu import xla
from irl_lm.losses import mle
from irl_lm.models import decoder_only, layers, t5

B, L, T, V = 4, 24, 16, 128


def _t5(policy, **overrides):
  return t5.EncoderDecoderModel(t5.t5_1_1_config("tiny", vocab_size=V, activation_dtype=jnp.float32,
                                                 remat_policy=policy, **overrides))


def _decoder_only(policy):
  return decoder_only.DecoderOnlyModel(decoder_only.decoder_only_config(
      "tiny", vocab_size=V, activation_dtype=jnp.float32, remat_policy=policy))


def _batch(model):
  rs = np.random.RandomState(0)
  prompts = rs.randint(2, V, (B, L)).astype(np.int32)
  prompts[:, L // 2:] = 0
  return model.teacher_forcing_batch(jnp.asarray(prompts),
                                     jnp.asarray(rs.randint(2, V, (B, T)).astype(np.int32)))


def _loss_and_grads(model, params, batch, dropout_rng=None):
  def loss(p):
    return mle.mle_loss(model.logits(p, batch, dropout_rng=dropout_rng),
                        batch["decoder_target_tokens"], batch["decoder_loss_weights"])[0]
  return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("family", [_t5, _decoder_only], ids=["t5", "decoder_only"])
@pytest.mark.parametrize("policy", ["minimal", "dots", "full"])
def test_remat_keeps_parameters_losses_and_gradients(family, policy):
  plain, remat = family("none"), family(policy)
  shapes = plain.input_shapes(B, {"inputs": L, "targets": T})
  params = plain.init(jax.random.key(0), shapes)
  jax.tree.map(np.testing.assert_array_equal, remat.init(jax.random.key(0), shapes), params)
  batch = _batch(plain)
  (loss, grads), (loss_r, grads_r) = (_loss_and_grads(plain, params, batch),
                                      _loss_and_grads(remat, params, batch))
  np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads_r, grads)
  # Decoding (not rematerialised) is unchanged too.
  prompts = batch["prompt_tokens"] if "prompt_tokens" in batch else batch["encoder_input_tokens"]
  steps = [m.decode_step(params, m.init_decode_state(params, prompts, T), m.start_tokens(prompts),
                         0)[0] for m in (plain, remat)]
  np.testing.assert_allclose(steps[1], steps[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("policy", ["minimal", "full"])
def test_recomputation_draws_the_same_dropout(policy):
  """With dropout on, the backward pass's recomputation must reuse the forward pass's masks:
  the gradients equal those without remat for the same key, and differ for another key."""
  plain, remat = _t5("none", dropout_rate=0.3), _t5(policy, dropout_rate=0.3)
  params = plain.init(jax.random.key(0), plain.input_shapes(B, {"inputs": L, "targets": T}))
  batch = _batch(plain)
  key = jax.random.key(7)
  (loss, grads), (loss_r, grads_r) = (_loss_and_grads(plain, params, batch, key),
                                      _loss_and_grads(remat, params, batch, key))
  np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads_r, grads)
  loss_other, _ = _loss_and_grads(remat, params, batch, jax.random.key(8))
  assert abs(float(loss_other) - float(loss)) > 1e-4


def _temporaries_per_layer(family, policy):
  """Growth of XLA's temporaries for the compiled gradient from 2 to 4 layers, per layer."""
  temps = {}
  for n in (2, 4):
    model = family(policy)
    config = (dataclasses.replace(model.config, num_layers=n) if family is _decoder_only
              else dataclasses.replace(model.config, num_encoder_layers=n, num_decoder_layers=n))
    model = type(model)(config)
    params = model.init(jax.random.key(0), model.input_shapes(B, {"inputs": L, "targets": T}))
    batch = _batch(model)

    def loss(p, model=model, batch=batch):
      return mle.mle_loss(model.logits(p, batch), batch["decoder_target_tokens"],
                          batch["decoder_loss_weights"])[0]
    temps[n] = jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis().temp_size_in_bytes
  return (temps[4] - temps[2]) / 2


@pytest.mark.parametrize("family", [_t5, _decoder_only], ids=["t5", "decoder_only"])
def test_each_remat_layer_keeps_less(family):
  """XLA's own accounting: what one more layer adds to the temporaries. Measured (bytes per
  layer; T5: an encoder plus a decoder layer): T5 none 996864, minimal 102528, full 36864;
  decoder-only 1393888, 388448, about 0."""
  none, minimal, full = (_temporaries_per_layer(family, p) for p in ("none", "minimal", "full"))
  assert full <= 0.1 * none, (none, full)
  assert minimal <= 0.5 * none, (none, minimal)


def test_without_the_cpu_rewrite_xla_cpu_recomputes_every_layer_at_once():
  """What `xla.remat_in_backward_order` is for: with `nn.remat` alone XLA's CPU scheduler runs
  every layer's recomputation right after the forward pass, and 'full' keeps several times as
  much per layer as with the rewrite."""
  tied = _temporaries_per_layer(_decoder_only, "full")
  with xla.without("remat"):
    alone = _temporaries_per_layer(_decoder_only, "full")
  assert alone > 0.5 * _temporaries_per_layer(_decoder_only, "none"), (alone, tied)
  assert tied < 0.1 * alone, (alone, tied)


def test_tie_to_the_cotangent_changes_no_bit():
  x = jnp.array([0.0, -0.0, 1.5, -3.25, jnp.inf, -jnp.inf, jnp.nan, 3e38], jnp.float32)
  tree = {"f32": x, "bf16": x.astype(jnp.bfloat16), "i32": jnp.arange(4), "none": None}
  for first in (2.0, -2.0, 0.0, -0.0, jnp.inf, -jnp.inf, jnp.nan):
    cotangent = (jnp.full((3, 2), first), jnp.ones(5))
    out = jax.jit(xla.tie_to_cotangent)(cotangent, tree)
    for name in ("f32", "bf16", "i32"):
      assert out[name].dtype == tree[name].dtype
      bits = jnp.uint16 if tree[name].dtype == jnp.bfloat16 else jnp.uint32
      np.testing.assert_array_equal(jax.lax.bitcast_convert_type(out[name], bits),
                                    jax.lax.bitcast_convert_type(tree[name], bits))
    assert out["none"] is None


def test_unknown_policy_is_refused_clearly():
  with pytest.raises(ValueError, match="remat_policy 'some' is unknown; choose one of 'none'"):
    layers.remat(t5.EncoderLayer, "some", 3)
