"""Tests of the T5 1.1 model: T5X parameter tree, counts, logical axes, decoding, packing, dtypes."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from irl_lm.models import EncoderDecoderModel, T5Config, t5_1_1_config
from irl_lm.models import layers, t5

SHAPES = {"encoder_input_tokens": (1, 1), "decoder_input_tokens": (1, 1)}
VOCAB = 96  # even, so the 'model' mesh axis (2) divides it


def _abstract_params(config: T5Config):
  model = EncoderDecoderModel(config)
  return jax.eval_shape(lambda rng: model.init(rng, SHAPES), jax.random.key(0))


def _expected_tree(V, E, H, J, F, n_layers):
  """The T5X T5 1.1 tree from docs/design.md#t5-11-parameter-layout: {path: shape}."""
  tree = {"token_embedder/embedding": (V, E),
          "encoder/relpos_bias/rel_embedding": (H, 32),
          "decoder/relpos_bias/rel_embedding": (H, 32),
          "encoder/encoder_norm/scale": (E,),
          "decoder/decoder_norm/scale": (E,),
          "decoder/logits_dense/kernel": (E, V)}
  def attention(prefix):
    for name in ("query", "key", "value"):
      tree[f"{prefix}/{name}/kernel"] = (E, J)
    tree[f"{prefix}/out/kernel"] = (J, E)
  def mlp(prefix):
    tree[f"{prefix}/mlp/wi_0/kernel"] = (E, F)
    tree[f"{prefix}/mlp/wi_1/kernel"] = (E, F)
    tree[f"{prefix}/mlp/wo/kernel"] = (F, E)
    tree[f"{prefix}/pre_mlp_layer_norm/scale"] = (E,)
  for i in range(n_layers):
    enc, dec = f"encoder/layers_{i}", f"decoder/layers_{i}"
    tree[f"{enc}/pre_attention_layer_norm/scale"] = (E,)
    attention(f"{enc}/attention")
    mlp(enc)
    tree[f"{dec}/pre_self_attention_layer_norm/scale"] = (E,)
    tree[f"{dec}/pre_cross_attention_layer_norm/scale"] = (E,)
    attention(f"{dec}/self_attention")
    attention(f"{dec}/encoder_decoder_attention")
    mlp(dec)
  return tree


def test_small_parameter_tree_matches_t5x():
  params = _abstract_params(t5_1_1_config("small"))
  flat = traverse_util.flatten_dict(params, sep="/")
  assert {k: v.shape for k, v in flat.items()} == _expected_tree(32128, 512, 6, 384, 1024, 8)
  assert {v.dtype for v in flat.values()} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("size,count", [
    ("small", 76_961_152), ("base", 247_577_856), ("large", 783_150_080),
    ("xl", 2_849_757_184), ("xxl", 11_135_332_352)])
def test_parameter_counts_match_t5x(size, count):
  params = _abstract_params(t5_1_1_config(size))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == count


def test_presets_and_overrides():
  cfg = t5_1_1_config("base", vocab_size=1000, dropout_rate=0.1)
  assert (cfg.vocab_size, cfg.emb_dim, cfg.num_heads, cfg.mlp_dim, cfg.dropout_rate) == (
      1000, 768, 12, 2048, 0.1)
  assert t5_1_1_config("xxl").num_heads * t5_1_1_config("xxl").head_dim == 4096
  with pytest.raises(ValueError):
    t5_1_1_config("huge")


def test_logical_axes():
  axes = EncoderDecoderModel(t5_1_1_config("small")).param_logical_axes(SHAPES)
  assert axes["token_embedder"]["embedding"] == P("vocab", "embed")
  assert axes["decoder"]["logits_dense"]["kernel"] == P("embed", "vocab")
  assert axes["encoder"]["relpos_bias"]["rel_embedding"] == P("heads", "relpos_buckets")
  attn = axes["decoder"]["layers_3"]["encoder_decoder_attention"]
  assert attn["query"]["kernel"] == P("embed", "joined_kv")
  assert attn["out"]["kernel"] == P("joined_kv", "embed")
  assert axes["encoder"]["layers_7"]["mlp"]["wo"]["kernel"] == P("mlp", "embed")
  assert axes["encoder"]["layers_0"]["pre_mlp_layer_norm"]["scale"] == P("embed")


def test_relative_position_buckets():
  rel = np.array([0, -1, 1, -15, -16, -20, -127, -128, -1000, 5])
  causal = layers.relative_position_bucket(rel, bidirectional=False)
  # Keys after the query map to bucket 0 in the causal table; log buckets start at 16.
  np.testing.assert_array_equal(causal, [0, 1, 0, 15, 16, 17, 31, 31, 31, 0])
  bidir = layers.relative_position_bucket(rel, bidirectional=True)
  np.testing.assert_array_equal(bidir, [0, 1, 17, 9, 10, 10, 15, 15, 15, 21])
  traced = jax.jit(functools.partial(layers.relative_position_bucket, bidirectional=True))(rel)
  np.testing.assert_array_equal(traced, bidir)


def test_query_is_initialised_with_folded_depth_scaling(tiny):
  _, params, _ = tiny
  attn = params["encoder"]["layers_0"]["attention"]
  # variance_scaling(1, fan_in): std 1/sqrt(E) for key; query additionally / sqrt(D).
  np.testing.assert_allclose(np.std(attn["key"]["kernel"]), 128 ** -0.5, rtol=0.05)
  np.testing.assert_allclose(np.std(attn["query"]["kernel"]), (128 * 32) ** -0.5, rtol=0.05)
  np.testing.assert_array_equal(params["encoder"]["encoder_norm"]["scale"], np.ones(128))


@pytest.fixture(scope="module")
def tiny():
  config = t5_1_1_config("tiny", vocab_size=VOCAB, activation_dtype=jnp.float32)
  model = EncoderDecoderModel(config)
  params = jax.jit(lambda rng: model.init(rng, SHAPES))(jax.random.key(1))
  return model, params, jax.jit(model.logits)


def _teacher_batch(rng, batch, enc_len, dec_len, enc_lengths):
  k1, k2 = jax.random.split(rng)
  enc = np.array(jax.random.randint(k1, (batch, enc_len), 2, VOCAB), np.int32)
  for row, n in enumerate(enc_lengths):
    enc[row, n:] = 0
  targets = np.array(jax.random.randint(k2, (batch, dec_len), 2, VOCAB), np.int32)
  inputs = np.concatenate([np.zeros((batch, 1), np.int32), targets[:, :-1]], axis=1)
  return {"encoder_input_tokens": enc, "decoder_input_tokens": inputs,
          "decoder_target_tokens": targets, "decoder_loss_weights": np.ones_like(targets)}


def test_cached_decoding_equals_teacher_forcing(tiny):
  model, params, logits_fn = tiny
  batch = _teacher_batch(jax.random.key(2), 2, 7, 6, enc_lengths=(7, 4))
  expected = logits_fn(params, batch)
  assert expected.dtype == jnp.float32 and expected.shape == (2, 6, VOCAB)

  @jax.jit
  def decode_all(params, encoder_tokens, decoder_inputs):
    state = model.init_decode_state(params, encoder_tokens, decoder_inputs.shape[1])
    out = jnp.zeros(decoder_inputs.shape + (VOCAB,), jnp.float32)

    def body(carry):
      position, state, out = carry
      tokens = lax.dynamic_index_in_dim(decoder_inputs, position, axis=1, keepdims=False)
      logits, new_state = model.decode_step(params, state, tokens, position)
      # State shapes/dtypes must be loop-invariant.
      assert jax.tree.map(jnp.shape, new_state) == jax.tree.map(jnp.shape, state)
      return position + 1, new_state, out.at[:, position].set(logits)

    return lax.while_loop(lambda c: c[0] < decoder_inputs.shape[1], body,
                          (jnp.int32(0), state, out))[2]

  got = decode_all(params, batch["encoder_input_tokens"], batch["decoder_input_tokens"])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  # Encoder padding really is masked: more padding columns change nothing.
  padded = dict(batch, encoder_input_tokens=np.pad(batch["encoder_input_tokens"], ((0, 0), (0, 3))))
  np.testing.assert_allclose(logits_fn(params, padded), expected, rtol=1e-5, atol=1e-5)
  # And the decoder is causal: changing a later input token leaves earlier logits alone.
  changed = dict(batch, decoder_input_tokens=batch["decoder_input_tokens"].copy())
  changed["decoder_input_tokens"][:, 4] = 3
  out = logits_fn(params, changed)
  np.testing.assert_allclose(out[:, :4], expected[:, :4], rtol=1e-5, atol=1e-5)
  assert np.abs(out[:, 4:] - expected[:, 4:]).max() > 1e-3


def test_decode_state_layout(tiny):
  model, params, logits_fn = tiny
  enc = np.array([[5, 6, 7, 0], [8, 9, 0, 0], [4, 0, 0, 0]], np.int32)
  state = model.init_decode_state(params, enc, 10)
  for leaf in jax.tree.leaves(state):
    assert leaf.shape[0] == 3
  # Heads-major caches: [B, H, T, D] and [B, H, L, D].
  assert state["layers_1"]["self_key"].shape == (3, 4, 10, 32)
  assert state["layers_0"]["cross_value"].shape == (3, 4, 4, 32)
  np.testing.assert_array_equal(state["encoder_bias"] < -1e9, enc == 0)


def test_packed_segments_equal_separate_runs(tiny):
  model, params, logits_fn = tiny
  a_enc, a_tgt = [11, 12, 13], [21, 22, 23]
  b_enc, b_tgt = [31, 32, 33, 34], [41, 42]
  packed = {
      "encoder_input_tokens": np.array([a_enc + b_enc + [0]], np.int32),
      "encoder_segment_ids": np.array([[1, 1, 1, 2, 2, 2, 2, 0]], np.int32),
      "decoder_input_tokens": np.array([[0, 21, 22, 0, 41, 0]], np.int32),
      "decoder_target_tokens": np.array([a_tgt + b_tgt + [0]], np.int32),
      "decoder_segment_ids": np.array([[1, 1, 1, 2, 2, 0]], np.int32),
  }
  logits = logits_fn(params, packed)

  def alone(enc, tgt):
    return logits_fn(params, {
        "encoder_input_tokens": np.array([enc], np.int32),
        "decoder_input_tokens": np.array([[0] + tgt[:-1]], np.int32),
        "decoder_target_tokens": np.array([tgt], np.int32)})[0]

  np.testing.assert_allclose(logits[0, :3], alone(a_enc, a_tgt), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logits[0, 3:5], alone(b_enc, b_tgt), rtol=1e-5, atol=1e-5)
  # Without segment ids, segment B would see segment A: the check above can fail.
  unpacked = {k: v for k, v in packed.items() if "segment" not in k}
  assert np.abs(logits_fn(params, unpacked)[0, 3:5] - logits[0, 3:5]).max() > 1e-3


def test_bfloat16_activations_close_to_float32(tiny):
  model32, params, logits_fn = tiny
  model16 = EncoderDecoderModel(t5_1_1_config("tiny", vocab_size=VOCAB,
                                              activation_dtype=jnp.bfloat16))
  batch = _teacher_batch(jax.random.key(3), 2, 7, 6, enc_lengths=(7, 5))
  out32 = logits_fn(params, batch)
  out16 = jax.jit(model16.logits)(params, batch)
  assert out16.dtype == jnp.float32
  err = np.abs(np.asarray(out16) - np.asarray(out32)).max()
  assert err < 0.05 * np.abs(out32).max(), err
  assert err > 0  # bf16 really was used
  state = model16.init_decode_state(params, batch["encoder_input_tokens"], 6)
  assert state["layers_0"]["self_key"].dtype == jnp.bfloat16
  step_logits, _ = model16.decode_step(params, state, batch["decoder_input_tokens"][:, 0], 0)
  assert step_logits.dtype == jnp.float32
  np.testing.assert_allclose(step_logits, out16[:, 0], atol=0.05 * np.abs(out32).max())


def test_dropout_only_with_rng_and_positive_rate(tiny):
  _, params, _ = tiny
  batch = _teacher_batch(jax.random.key(4), 2, 7, 6, enc_lengths=(7, 7))
  plain = EncoderDecoderModel(t5_1_1_config("tiny", vocab_size=VOCAB,
                                            activation_dtype=jnp.float32))
  drop = EncoderDecoderModel(t5_1_1_config("tiny", vocab_size=VOCAB, dropout_rate=0.3,
                                           activation_dtype=jnp.float32))
  plain_fn, drop_fn = jax.jit(plain.logits), jax.jit(drop.logits)
  base = plain_fn(params, batch)
  rng = jax.random.key(5)
  np.testing.assert_array_equal(plain_fn(params, batch, dropout_rng=rng), base)
  np.testing.assert_array_equal(drop_fn(params, batch), base)
  dropped = drop_fn(params, batch, dropout_rng=rng)
  assert np.abs(dropped - base).max() > 1e-2
  np.testing.assert_array_equal(drop_fn(params, batch, dropout_rng=rng), dropped)


RULES = (("batch", "data"), ("vocab", "model"), ("mlp", "model"), ("heads", "model"),
         ("joined_kv", "model"), ("embed", None), ("kv", None), ("length", None),
         ("relpos_buckets", None))


def test_logical_constraints_noop_without_mesh_and_sharded_run_matches(tiny):
  model, params, logits_fn = tiny
  batch = _teacher_batch(jax.random.key(6), 4, 7, 6, enc_lengths=(7, 3, 6, 7))
  jaxpr = str(jax.make_jaxpr(model.logits)(params, batch))
  assert "sharding_constraint" not in jaxpr
  expected = logits_fn(params, batch)

  mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
  with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
    jaxpr = str(jax.make_jaxpr(model.logits)(params, batch))
    assert "sharding_constraint" in jaxpr
    shardings = nn.logical_to_mesh_sharding(model.param_logical_axes(SHAPES), mesh, RULES)
    assert shardings["token_embedder"]["embedding"].spec == P("model", None)
    sharded = jax.device_put(params, shardings)
    got = jax.jit(model.logits)(sharded, batch)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_teacher_forcing_batch_ends_at_eos_or_its_length():
  model = t5.EncoderDecoderModel(t5.t5_1_1_config("tiny", vocab_size=16))
  tokens = jnp.array([[5, 6, 1, 0], [7, 0, 8, 1], [4, 4, 4, 4]])
  lengths = jnp.array([3, 3, 4])  # row 1 hit its length limit (an id 0 inside is no end)
  prompts = jnp.array([[3, 2], [3, -1], [3, 2]])  # PROMPT_PAD_ID pads like 0
  out = model.teacher_forcing_batch(prompts, tokens, lengths)
  np.testing.assert_array_equal(out["decoder_target_tokens"],
                                [[5, 6, 1, 0], [7, 0, 8, 0], [4, 4, 4, 4]])
  np.testing.assert_array_equal(out["decoder_loss_weights"],
                                [[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]])
  np.testing.assert_array_equal(out["decoder_input_tokens"],
                                [[0, 5, 6, 1], [0, 7, 0, 8], [0, 4, 4, 4]])
  np.testing.assert_array_equal(out["encoder_input_tokens"], [[3, 2], [3, 0], [3, 2]])
  # Without lengths a continuation ends at its first EOS (beam outputs, infer, rewards).
  no_lengths = model.teacher_forcing_batch(prompts, tokens)
  np.testing.assert_array_equal(no_lengths["decoder_loss_weights"],
                                [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]])
