"""Tests of the decoder-only model: parameter tree and counts, prompt-prefill decoding against
teacher forcing, packing, the prefix-LM feature converter, RoPE, grouped-query attention, losses,
search and sharding. All on the tiny config in float32."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from jax import lax
from jax.sharding import PartitionSpec as P

from irl_lm import losses
from irl_lm.decoding import search
from irl_lm.models import layers
from irl_lm.models.decoder_only import (DecoderOnlyModel, decoder_only_config, prompt_lengths)
from irl_lm.partitioning import Partitioner

VOCAB = 96  # even, so the 'model' mesh axis (2) divides it
SHAPES = {"decoder_input_tokens": (1, 1)}
# Rows of different prompt lengths (6, 3, 1, 0 and 4 with a real PAD id inside), L = 6.
PROMPTS = np.array([[11, 12, 13, 14, 15, 16],
                    [21, 22, 23, 0, 0, 0],
                    [31, 0, 0, 0, 0, 0],
                    [0, 0, 0, 0, 0, 0],
                    [41, 0, 43, 44, 0, 0]], np.int32)
PROMPT_LENGTHS = [6, 3, 1, 0, 4]

VARIANTS = {
    "gqa": {},  # the tiny preset: 4 query heads, 2 key/value heads
    "mqa": dict(num_kv_heads=1),
    "mha": dict(num_kv_heads=4),
    "qkv_bias": dict(qkv_bias=True),
    "tied": dict(tie_embeddings=True),
    "parallel": dict(parallel_block=True, mlp_activation="gelu"),
}


def _model(**overrides) -> DecoderOnlyModel:
  return DecoderOnlyModel(decoder_only_config(
      "tiny", **{"vocab_size": VOCAB, "activation_dtype": jnp.float32, **overrides}))


def _init(model: DecoderOnlyModel, seed: int = 0):
  """Random parameters with non-trivial norm scales and biases (zeros/ones at init)."""
  params = jax.jit(lambda rng: model.init(rng, SHAPES))(jax.random.key(seed))
  flat = traverse_util.flatten_dict(params)
  for i, (path, value) in enumerate(sorted(flat.items())):
    if path[-1] in ("scale", "bias"):
      flat[path] = value + 0.2 * jax.random.normal(jax.random.key(1000 + i), value.shape)
  return traverse_util.unflatten_dict(flat)


@pytest.fixture(scope="module")
def tiny():
  model = _model()
  return model, _init(model)


def _continuations(batch: int, length: int, seed: int = 0) -> np.ndarray:
  """Random continuation tokens without EOS or PAD, so every position is a target."""
  return np.asarray(jax.random.randint(jax.random.key(seed), (batch, length), 2, VOCAB), np.int32)


def _prefix_lm_logits(model, params, tokens):
  """Logits of one unpadded sequence [S] in the prefix-LM layout (inputs shifted right, 0
  first): [S, V], row i predicting tokens[i]."""
  tokens = jnp.asarray(tokens, jnp.int32)[None]
  inputs = jnp.pad(tokens[:, :-1], ((0, 0), (1, 0)))
  return np.asarray(model.logits(params, {"decoder_input_tokens": inputs}))[0]


def _target_rows(model, params, prompts, lengths, continuations):
  """Each row as one unpadded sequence (its prompt's real tokens, then the continuation), run
  alone in the prefix-LM layout, at its continuation positions len_b + t: [B, T, V]."""
  num_steps = continuations.shape[1]
  return np.stack([
      _prefix_lm_logits(model, params, np.concatenate([prompts[b, :n], continuations[b]]))[
          n:n + num_steps] for b, n in enumerate(lengths)])


@functools.partial(jax.jit, static_argnums=0)
def _decode_all(model, params, prompts, continuations):
  """Prefill then one `decode_step` per continuation token (traced position): [B, T, V]."""
  num_steps = continuations.shape[1]
  state = model.init_decode_state(params, prompts, num_steps)
  inputs_BT = jnp.concatenate([model.start_tokens(prompts)[:, None], continuations[:, :-1]], 1)

  def body(t, carry):
    state, out = carry
    logits, new_state = model.decode_step(params, state, inputs_BT[:, t], t)
    assert jax.tree.map(jnp.shape, new_state) == jax.tree.map(jnp.shape, state)
    return new_state, out.at[:, t].set(logits)

  out = jnp.zeros(continuations.shape + (model.config.vocab_size,), jnp.float32)
  return lax.fori_loop(0, num_steps, body, (state, out))[1]


def _expected_tree(E, H, K, D, F, n_layers, V, *, qkv_bias=False, tied=False, parallel=False):
  tree = {"token_embedder/embedding": ((V, E), P("vocab", "embed")),
          "decoder/decoder_norm/scale": ((E,), P("embed"))}
  if not tied:
    tree["decoder/logits_dense/kernel"] = ((E, V), P("embed", "vocab"))
  for i in range(n_layers):
    layer = f"decoder/layers_{i}"
    tree[f"{layer}/pre_self_attention_layer_norm/scale"] = ((E,), P("embed"))
    if not parallel:
      tree[f"{layer}/pre_mlp_layer_norm/scale"] = ((E,), P("embed"))
    attn = f"{layer}/self_attention"
    tree[f"{attn}/query/kernel"] = ((E, H * D), P("embed", "joined_kv"))
    tree[f"{attn}/key/kernel"] = ((E, K * D), P("embed", "kv_heads"))
    tree[f"{attn}/value/kernel"] = ((E, K * D), P("embed", "kv_heads"))
    tree[f"{attn}/out/kernel"] = ((H * D, E), P("joined_kv", "embed"))
    if qkv_bias:
      tree[f"{attn}/query/bias"] = ((H * D,), P("joined_kv"))
      tree[f"{attn}/key/bias"] = ((K * D,), P("kv_heads"))
      tree[f"{attn}/value/bias"] = ((K * D,), P("kv_heads"))
    tree[f"{layer}/mlp/wi_0/kernel"] = ((E, F), P("embed", "mlp"))
    tree[f"{layer}/mlp/wi_1/kernel"] = ((E, F), P("embed", "mlp"))
    tree[f"{layer}/mlp/wo/kernel"] = ((F, E), P("mlp", "embed"))
  return tree


@pytest.mark.parametrize("overrides", [
    {}, dict(qkv_bias=True, tie_embeddings=True, parallel_block=True, num_kv_heads=1)])
def test_parameter_tree_shapes_and_logical_axes(overrides):
  model = _model(num_heads=4, head_dim=16, **overrides)  # H*D = 64 != E = 128
  params = jax.eval_shape(lambda rng: model.init(rng, SHAPES), jax.random.key(0))
  axes = traverse_util.flatten_dict(model.param_logical_axes(SHAPES), sep="/")
  flat = traverse_util.flatten_dict(params, sep="/")
  got = {path: (leaf.shape, axes[path]) for path, leaf in flat.items()}
  assert got == _expected_tree(128, 4, model.config.num_kv_heads, 16, 256, 2, VOCAB,
                               qkv_bias=model.config.qkv_bias, tied=model.config.tie_embeddings,
                               parallel=model.config.parallel_block)
  assert {leaf.dtype for leaf in flat.values()} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("size,count", [("1b", 1_235_814_400), ("llama3_8b", 8_030_261_248)])
def test_presets_build_abstractly_with_llama_parameter_counts(size, count):
  model = DecoderOnlyModel(decoder_only_config(size))
  shapes = model.input_shapes(8, {"inputs": 512, "targets": 128})
  assert shapes == {"decoder_input_tokens": (8, 640)}
  params = jax.eval_shape(lambda rng: model.init(rng, shapes), jax.random.key(0))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) == count
  axes = model.param_logical_axes(shapes)
  assert axes["decoder"]["layers_3"]["self_attention"]["key"]["kernel"] == P("embed", "kv_heads")
  assert ("logits_dense" in axes["decoder"]) == (size == "llama3_8b")  # 1b ties embeddings


def test_bad_configs_are_refused_clearly():
  with pytest.raises(ValueError, match="multiple of num_kv_heads"):
    _model(num_kv_heads=3)
  with pytest.raises(ValueError, match="mlp_activation 'relu' is unknown"):
    _model(mlp_activation="relu")
  with pytest.raises(ValueError, match="Unknown decoder-only size"):
    decoder_only_config("70b")


def test_prompt_lengths_and_start_tokens(tiny):
  model, _ = tiny
  # id 0 pads a prompt only where it is not a token; PROMPT_PAD_ID (-1) always does.
  np.testing.assert_array_equal(prompt_lengths(PROMPTS, 0), PROMPT_LENGTHS)
  np.testing.assert_array_equal(prompt_lengths(PROMPTS), [6, 6, 6, 6, 6])
  padded = np.where(np.arange(6)[None] < np.array(PROMPT_LENGTHS)[:, None], PROMPTS, -1)
  np.testing.assert_array_equal(prompt_lengths(padded), PROMPT_LENGTHS)
  np.testing.assert_array_equal(model.start_tokens(padded), [16, 23, 31, 0, 44])
  np.testing.assert_array_equal(model.start_tokens(PROMPTS), [16, 23, 31, 0, 44])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_prefill_and_cached_decoding_equal_teacher_forcing(variant):
  model = _model(**VARIANTS[variant])
  params = _init(model, seed=3)
  num_steps = 5
  continuations = _continuations(len(PROMPTS), num_steps)
  batch = model.teacher_forcing_batch(PROMPTS, continuations)
  logits = np.asarray(jax.jit(model.logits)(params, batch))
  assert logits.shape == (5, num_steps, VOCAB) and logits.dtype == np.float32
  # The split layout equals each row run alone as one unpadded prefix-LM sequence ...
  np.testing.assert_allclose(
      logits, _target_rows(model, params, PROMPTS, PROMPT_LENGTHS, continuations),
      rtol=1e-5, atol=1e-5)
  # ... and cached decoding equals it.
  got = _decode_all(model, params, PROMPTS, continuations)
  np.testing.assert_allclose(got, logits, rtol=1e-5, atol=1e-5)
  # The decode state: per-row lengths, heads-major caches of L prompt + T decode slots.
  state = model.init_decode_state(params, PROMPTS, num_steps)
  np.testing.assert_array_equal(state["prompt_lengths"], PROMPT_LENGTHS)
  K = model.config.num_kv_heads
  assert state["layers_1"]["prompt_key"].shape == (5, K, 6, 32)
  assert state["layers_1"]["value"].shape == (5, K, num_steps, 32)
  assert all(leaf.shape[0] == 5 for leaf in jax.tree.leaves(state))


def test_attention_is_causal(tiny):
  model, params = tiny
  batch = model.teacher_forcing_batch(PROMPTS, _continuations(5, 4))
  logits = jax.jit(model.logits)(params, batch)
  changed = dict(batch, decoder_input_tokens=batch["decoder_input_tokens"].at[:, 2].set(7))
  out = jax.jit(model.logits)(params, changed)
  np.testing.assert_allclose(out[:, :2], logits[:, :2], rtol=1e-5, atol=1e-5)
  assert np.abs(out[:, 2:] - logits[:, 2:]).max() > 1e-3
  # A prompt's padding slots are never read: changing them changes nothing.
  padded = dict(batch, prompt_tokens=jnp.where(PROMPTS == 0, 0, PROMPTS))
  noisy = dict(batch, prompt_tokens=batch["prompt_tokens"].at[1, 3:].set(9).at[1, 3:].set(0))
  np.testing.assert_allclose(jax.jit(model.logits)(params, noisy),
                             jax.jit(model.logits)(params, padded), rtol=1e-6, atol=1e-6)


def test_rotary_embedding_by_hand():
  x = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 1, 4)
  x2 = jnp.concatenate([x, x], axis=1)  # positions 0 and 1
  out = layers.rotary_embedding(x2, jnp.array([[0, 1]]), theta=10000.0)
  np.testing.assert_allclose(out[0, 0, 0], [1.0, 2.0, 3.0, 4.0], rtol=1e-6)
  # D = 4: pairs (x0, x2) rotate by 1 rad per position, (x1, x3) by 10000^(-1/2) = 0.01 rad.
  c1, s1, c2, s2 = np.cos(1.0), np.sin(1.0), np.cos(0.01), np.sin(0.01)
  np.testing.assert_allclose(
      out[0, 1, 0], [1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + 1 * s1, 4 * c2 + 2 * s2],
      rtol=1e-6)
  np.testing.assert_allclose(out[0, 1, 0], [-1.9841108, 1.9599007, 2.4623779, 4.0197997],
                             rtol=1e-6)


def test_rotary_embedding_matches_hugging_face_llama():
  torch = pytest.importorskip("torch")
  llama = pytest.importorskip("transformers.models.llama.modeling_llama")
  from transformers import LlamaConfig  # pylint: disable=g-import-not-at-top
  config = LlamaConfig(hidden_size=64, num_attention_heads=2, head_dim=32, rope_theta=500000.0)
  q = np.asarray(jax.random.normal(jax.random.key(0), (2, 7, 2, 32)), np.float32)
  positions = np.array([[0, 1, 2, 3, 4, 5, 6], [3, 4, 0, 1, 2, 9, 100]])
  ours = layers.rotary_embedding(jnp.asarray(q), jnp.asarray(positions), 500000.0)
  cos, sin = llama.LlamaRotaryEmbedding(config)(torch.zeros(1), torch.tensor(positions))
  qt = torch.tensor(q).transpose(1, 2)  # HF: [B, heads, S, D]
  theirs, _ = llama.apply_rotary_pos_emb(qt, qt, cos, sin)
  np.testing.assert_allclose(ours, theirs.transpose(1, 2).numpy(), rtol=1e-5, atol=1e-5)


def _attention(num_kv_heads, **kwargs):
  return layers.GroupedQueryAttention(4, num_kv_heads, 8, 32, jnp.float32, **kwargs)


def test_grouped_query_attention_equals_multi_head_with_repeated_kv_heads():
  x = jax.random.normal(jax.random.key(0), (2, 5, 32))
  bias = layers.mask_to_bias(layers.causal_mask(5))
  gqa = _attention(2)
  params = nn.meta.unbox(gqa.init(jax.random.key(1), x, x, bias,
                                  method=_apply_attention)["params"])
  # MHA (N = H = 4) whose key/value heads are GQA's repeated: query head h reads head h // 2.
  repeat = lambda k: jnp.repeat(k.reshape(32, 2, 8), 2, axis=1).reshape(32, 32)
  mha_params = jax.tree.map(lambda a: a, params)
  for name in ("key", "value"):
    mha_params[name] = {"kernel": repeat(params[name]["kernel"])}
  got = gqa.apply({"params": params}, x, x, bias, method=_apply_attention)
  want = _attention(4).apply({"params": mha_params}, x, x, bias, method=_apply_attention)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # With N = H, grouped-query attention is T5's multi-head attention once T5's folded 1/sqrt(D)
  # is put into the query kernel.
  t5_params = dict(mha_params, query={"kernel": mha_params["query"]["kernel"] / np.sqrt(8)})
  t5_out = layers.MultiHeadAttention(4, 8, 32, jnp.float32).apply(
      {"params": t5_params}, x, x, bias)
  np.testing.assert_allclose(t5_out, want, rtol=1e-5, atol=1e-5)


def _apply_attention(module, inputs_q, inputs_kv, bias):
  key, value = module.project_key_value(inputs_kv)
  return module.attend(module.project_query(inputs_q), key, value, bias)


def test_qkv_biases_are_used():
  x = jax.random.normal(jax.random.key(0), (1, 3, 32))
  module = _attention(2, use_bias=True)
  params = nn.meta.unbox(module.init(jax.random.key(1), x, x, None,
                                     method=_apply_attention)["params"])
  assert params["key"]["bias"].shape == (16,) and "bias" not in params["out"]
  base_out = module.apply({"params": params}, x, x, None, method=_apply_attention)
  shifted = dict(params, value=dict(params["value"], bias=params["value"]["bias"] + 1.0))
  out = module.apply({"params": shifted}, x, x, None, method=_apply_attention)
  # A value bias shifts every output by bias @ out-kernel (attention weights sum to 1).
  delta = jnp.ones(32) @ params["out"]["kernel"]
  np.testing.assert_allclose(out - base_out, jnp.broadcast_to(delta, out.shape), atol=1e-5)


EXAMPLES = [{"inputs": [7, 8, 5, 1], "targets": [3, 9, 1]},
            {"inputs": [8, 4, 9, 3, 1], "targets": [4, 1]},
            {"inputs": [2], "targets": [6, 6, 6, 5, 1]}]
LENGTHS = {"inputs": 7, "targets": 8}


def _converted(model, pack):
  converter = model.feature_converter(pack)
  examples = [{k: np.asarray(v, np.int32) for k, v in ex.items()} for ex in EXAMPLES]
  return list(converter.convert(examples, LENGTHS))


def test_feature_converter_lengths_and_prompts(tiny):
  model, _ = tiny
  unpacked = model.feature_converter(False)
  assert unpacked.get_model_feature_lengths(LENGTHS) == {
      "prompt_tokens": 7, "prompt_mask": 7, "decoder_target_tokens": 8,
      "decoder_input_tokens": 8, "decoder_loss_weights": 8}
  assert model.feature_converter(True).get_model_feature_lengths(LENGTHS)[
      "decoder_target_tokens"] == 15
  rows = _converted(model, pack=False)
  np.testing.assert_array_equal(rows[0]["prompt_tokens"], [7, 8, 5, 1, 0, 0, 0])
  np.testing.assert_array_equal(rows[0]["prompt_mask"], [1, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(rows[2]["prompt_mask"], [1, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(rows[0]["decoder_target_tokens"], [3, 9, 1, 0, 0, 0, 0, 0])
  # Column 0 reads the last prompt token (here the inputs' EOS), then the targets shifted.
  np.testing.assert_array_equal(rows[0]["decoder_input_tokens"], [1, 3, 9, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(rows[0]["decoder_loss_weights"], [1, 1, 1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(rows[2]["decoder_input_tokens"], [2, 6, 6, 6, 5, 1, 0, 0])
  batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  np.testing.assert_array_equal(model.prompts(batch)[0], [7, 8, 5, 1, -1, -1, -1])
  np.testing.assert_array_equal(model.prompts(batch)[2], [2, -1, -1, -1, -1, -1, -1])
  assert model.continuation_length(batch) == 8
  packed = _converted(model, pack=True)
  assert "prompt_tokens" not in packed[0]
  with pytest.raises(ValueError, match="set TrainSettings.pack = False"):
    model.prompts({k: v[None] for k, v in packed[0].items()})


def test_teacher_forcing_batch_equals_the_feature_converter(tiny):
  model, _ = tiny
  rows = _converted(model, pack=False)
  prompts = np.stack([r["prompt_tokens"] for r in rows])
  continuations = np.zeros((3, 8), np.int32)
  for i, ex in enumerate(EXAMPLES):
    continuations[i, :len(ex["targets"])] = ex["targets"]
  continuations[1, 2:] = [5, 5, 5, 5, 5, 5]  # after EOS: not part of the continuation
  got = model.teacher_forcing_batch(prompts, continuations)
  for key in ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
              "prompt_tokens", "prompt_mask"):
    np.testing.assert_array_equal(got[key], np.stack([r[key] for r in rows]), err_msg=key)
  assert got["decoder_loss_weights"].dtype == jnp.float32
  # `lengths` cut continuations (a sampled row that hit its limit).
  cut = model.teacher_forcing_batch(prompts, continuations, jnp.array([2, 8, 1]))
  np.testing.assert_array_equal(cut["decoder_target_tokens"][2, :3], [6, 0, 0])
  np.testing.assert_array_equal(cut["decoder_input_tokens"][2, :3], [2, 6, 0])
  np.testing.assert_array_equal(cut["decoder_loss_weights"].sum(1), [2, 2, 1])


def test_packed_segments_equal_unpacked_examples(tiny):
  model, params = tiny
  logits_fn = jax.jit(model.logits)
  packed = _converted(model, pack=True)
  unpacked = _converted(model, pack=False)
  first = {k: v[None] for k, v in packed[0].items()}  # examples 0 and 1 share a row
  np.testing.assert_array_equal(first["decoder_segment_ids"][0, :14], [1] * 7 + [2] * 7)
  logits = np.asarray(logits_fn(params, first))[0]
  alone = [_prefix_lm_logits(model, params, ex["inputs"] + ex["targets"]) for ex in EXAMPLES]
  np.testing.assert_allclose(logits[:7], alone[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logits[7:14], alone[1], rtol=1e-5, atol=1e-5)
  # The split layout (unpacked) gives the same continuation logits as the packed rows.
  split = np.asarray(logits_fn(params, {k: v[None] for k, v in unpacked[0].items()}))[0]
  np.testing.assert_allclose(split[:3], logits[4:7], rtol=1e-5, atol=1e-5)
  # Without segment ids, segment 2 would see segment 1: the check can fail.
  leaky = {k: v for k, v in first.items() if k in ("decoder_input_tokens", "decoder_positions")}
  assert np.abs(np.asarray(logits_fn(params, leaky))[0, 7:14] - logits[7:14]).max() > 1e-3


def test_iqlearn_without_td_is_mle_and_td_reads_only_targets(tiny):
  model, params = tiny
  batch = model.teacher_forcing_batch(PROMPTS, _continuations(5, 4, seed=1))
  targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
  logits = jax.jit(model.logits)(params, batch)
  mle = jax.jit(jax.value_and_grad(lambda z: losses.mle_loss(z, targets, weights)[0]))
  iq0 = jax.jit(jax.value_and_grad(
      lambda z: losses.iqlearn_loss(z, targets, weights, td_weight=0.0, gamma=0.9)[0]))
  # Equal loss and gradient w.r.t. the logits, hence w.r.t. every parameter.
  (mle_loss, mle_grad), (iq0_loss, iq0_grad) = mle(logits), iq0(logits)
  np.testing.assert_array_equal(iq0_loss, mle_loss)
  np.testing.assert_array_equal(iq0_grad, mle_grad)
  assert 0 < mle_loss < 10

  td = jax.jit(lambda z: losses.iqlearn_loss(z, targets, weights, td_weight=0.5, gamma=0.9)[0])
  noise = 5.0 * jax.random.normal(jax.random.key(2), logits.shape)
  on_prompt_and_padding = (weights == 0)[..., None]
  np.testing.assert_array_equal(td(jnp.where(on_prompt_and_padding, logits + noise, logits)),
                                td(logits))
  # The first target's Q-values (the logits computed from the last prompt token) count.
  first = jnp.zeros(weights.shape, bool).at[0, 0].set(True)[..., None]
  assert abs(td(jnp.where(first, logits + noise, logits)) - td(logits)) > 1e-3


def _greedy_by_full_forward(model, params, prompts, num_steps):
  """Greedy continuations, one full teacher-forced forward pass per token; 0 after EOS."""
  batch = prompts.shape[0]
  tokens = np.zeros((batch, num_steps), np.int32)
  done = np.zeros(batch, bool)
  lengths = prompt_lengths(prompts, model.pad_id)
  for t in range(num_steps):
    logits = np.stack([_prefix_lm_logits(model, params, np.concatenate(
        [prompts[b, :n], tokens[b, :t], [0]]))[n + t] for b, n in enumerate(lengths)])
    logits[:, model.pad_id] = -np.inf  # id 0 is not a token of this vocabulary
    tokens[:, t] = np.where(done, 0, np.argmax(logits, -1))
    done |= tokens[:, t] == model.eos_id
  return tokens


def test_greedy_sampling_and_beam_search_run_on_the_model(tiny):
  model, params = tiny
  num_steps = 4
  sample = jax.jit(functools.partial(search.temperature_sample, model),
                   static_argnames=("max_decode_length",))
  out = sample(params, PROMPTS, jax.random.key(0), max_decode_length=num_steps, temperature=0.0)
  np.testing.assert_array_equal(out.tokens, _greedy_by_full_forward(model, params, PROMPTS,
                                                                    num_steps))
  # Log-probs of the samples are the teacher-forced ones at the target positions.
  batch = model.teacher_forcing_batch(PROMPTS, out.tokens, out.lengths)
  logp = losses.log_probs(model.logits(params, batch), batch["decoder_target_tokens"])
  logp = np.asarray(logp * batch["decoder_loss_weights"])
  np.testing.assert_allclose(out.log_probs, logp, atol=1e-5)

  beams = jax.jit(functools.partial(search.beam_search, model, beam_size=3, max_decode_length=4,
                                    alpha=0.6))(params, PROMPTS)
  assert beams.tokens.shape == (5, 3, 4)
  assert np.all(np.diff(np.asarray(beams.scores), axis=1) <= 0)
  best = model.teacher_forcing_batch(PROMPTS, beams.tokens[:, 0])
  logp = losses.log_probs(model.logits(params, best), best["decoder_target_tokens"])
  num_real = best["decoder_loss_weights"].sum(1)
  rescored = (logp * best["decoder_loss_weights"]).sum(1) / search.length_penalty(num_real, 0.6)
  np.testing.assert_allclose(beams.scores[:, 0], rescored, rtol=1e-5, atol=1e-5)


def test_dropout_only_with_rng_and_positive_rate(tiny):
  _, params = tiny
  batch = _model().teacher_forcing_batch(PROMPTS, _continuations(5, 4))
  plain_fn = jax.jit(_model().logits)
  drop_fn = jax.jit(_model(dropout_rate=0.3).logits)
  base = plain_fn(params, batch)
  rng = jax.random.key(5)
  np.testing.assert_array_equal(plain_fn(params, batch, dropout_rng=rng), base)
  np.testing.assert_array_equal(drop_fn(params, batch), base)
  dropped = drop_fn(params, batch, dropout_rng=rng)
  assert np.abs(dropped - base).max() > 1e-2
  np.testing.assert_array_equal(drop_fn(params, batch, dropout_rng=rng), dropped)


@pytest.mark.slow
def test_sharded_equals_unsharded_with_kv_heads_over_model():
  model = _model()  # 2 key/value heads over the 'model' axis of size 2
  params = _init(model, seed=4)
  prompts = np.concatenate([PROMPTS, PROMPTS[:3]])  # B = 8 over 'data' = 4
  continuations = _continuations(8, 3)
  batch = model.teacher_forcing_batch(prompts, continuations)
  expected_logits = jax.jit(model.logits)(params, batch)
  state = model.init_decode_state(params, prompts, 3)
  expected_step, _ = jax.jit(model.decode_step)(params, state, model.start_tokens(prompts), 0)

  partitioner = Partitioner((4, 2))
  shardings = partitioner.shardings_for(model.param_logical_axes(SHAPES), params)
  key_spec = shardings["decoder"]["layers_0"]["self_attention"]["key"]["kernel"].spec
  assert key_spec == P(None, "model")
  sharded = jax.device_put(params, shardings)
  with partitioner.activate():
    assert "sharding_constraint" in str(jax.make_jaxpr(model.logits)(params, batch))
  data = partitioner.batch_sharding()
  logits = partitioner.jit(model.logits, in_shardings=(shardings, data))(sharded, batch)
  np.testing.assert_allclose(logits, expected_logits, rtol=1e-5, atol=1e-5)
  init = partitioner.jit(model.init_decode_state, static_argnums=2)
  sharded_state = init(sharded, jax.device_put(prompts, data), 3)
  cache = sharded_state["layers_0"]["prompt_key"]
  assert cache.sharding.spec[:2] == ("data", "model")  # [B, N, L, D]: kv heads over 'model'
  step, _ = partitioner.jit(model.decode_step)(sharded, sharded_state,
                                               model.start_tokens(prompts), 0)
  np.testing.assert_allclose(step, expected_step, rtol=1e-5, atol=1e-5)


def test_both_families_agree_on_the_continuation_length():
  from irl_lm.models import t5  # pylint: disable=g-import-not-at-top
  lengths = {"inputs": 6, "targets": 4}
  decoder_only = _model()
  batch = decoder_only.teacher_forcing_batch(np.ones((2, 6), np.int32), np.ones((2, 4), np.int32))
  assert decoder_only.continuation_length(batch) == 4
  t5_model = t5.EncoderDecoderModel(t5.t5_1_1_config("tiny"))
  t5_shapes = t5_model.input_shapes(2, lengths)
  assert t5_model.continuation_length(
      {"decoder_target_tokens": np.zeros(t5_shapes["decoder_input_tokens"], np.int32)}) == 4


@pytest.mark.parametrize("gin_file,count", [("decoder_only_1b.gin", 1_235_814_400),
                                            ("decoder_only_llama3_8b.gin", 8_030_261_248)])
def test_check_mode_builds_the_presets_abstractly_sharded(gin_file, count, tmp_path):
  import gin  # pylint: disable=g-import-not-at-top
  from irl_lm import config  # pylint: disable=g-import-not-at-top
  setup = tmp_path / "setup.gin"
  setup.write_text("\n".join([
      f"include 'models/{gin_file}'", "include 'methods/iqlearn.gin'",
      "include 'tasks/stdlib_docstrings.gin'", "include 'meshes/cpu.gin'",
      "train.feature_lengths = {'inputs': 128, 'targets': 32}", "TrainSettings.batch_size = 8",
      "TrainSettings.num_train_steps = 1", "TrainSettings.pack = False",
      "Partitioner.mesh_shape = (2, 4)"]))
  config.parse([str(setup)], ["run.mode = 'check'", f"run.run_dir = '{tmp_path / 'run'}'"])
  summary = gin.get_configurable("run")()
  assert summary["dry_run"] and summary["param_count"] == count
  assert summary["max_state_bytes_per_device"] < summary["state_bytes"] / 3  # 'model' = 4


def test_decoder_only_discriminator_scores_prefix_and_token():
  from irl_lm.models import discriminator  # pylint: disable=g-import-not-at-top
  policy = _model()
  disc = discriminator.DiscriminatorModel.for_policy(policy, "tiny", {"num_layers": 1})
  assert (disc.config.vocab_size, disc.config.num_layers) == (VOCAB, 1)
  params = jax.jit(lambda rng: disc.init(rng, SHAPES))(jax.random.key(0))
  flat = traverse_util.flatten_dict(params, sep="/")
  assert flat["decoder/score_head/kernel"].shape == (128, 1)
  assert not any("logits_dense" in path for path in flat)
  axes = disc.param_logical_axes(SHAPES)
  assert axes["decoder"]["score_head"]["kernel"] == P("embed", None)
  batch = policy.teacher_forcing_batch(PROMPTS, _continuations(5, 4))
  scores = jax.jit(disc.scores)(params, batch)
  assert scores.shape == (5, 4) and scores.dtype == jnp.float32
  # Unshifted and causal: the score at t reads the token at t, never a later one.
  changed = dict(batch, decoder_target_tokens=batch["decoder_target_tokens"].at[:, 2].set(7))
  new = jax.jit(disc.scores)(params, changed)
  np.testing.assert_allclose(new[:, :2], scores[:, :2], rtol=1e-5, atol=1e-5)
  assert np.all(np.abs(new[:, 2] - scores[:, 2]) > 1e-6)
  # The split layout scores each row as its prompt and continuation in one prefix-LM sequence.
  for b, n in enumerate(PROMPT_LENGTHS):
    row = np.concatenate([PROMPTS[b, :n], batch["decoder_target_tokens"][b]])[None]
    alone = jax.jit(disc.scores)(params, {"decoder_target_tokens": row})
    np.testing.assert_allclose(scores[b], alone[0, n:], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_gail_steps_on_a_decoder_only_policy(tiny):
  from irl_lm.training import objectives  # pylint: disable=g-import-not-at-top
  model, params = tiny
  gail = objectives.GAIL(discriminator_overrides={"num_layers": 1}, mle_weight=0.5)
  extra = gail.init_extra(params, jax.random.key(0), model=model, input_shapes=SHAPES)
  batch = model.teacher_forcing_batch(PROMPTS, _continuations(5, 4, seed=1))
  samples = model.teacher_forcing_batch(PROMPTS, _continuations(5, 4, seed=2),
                                        jnp.array([4, 3, 2, 4, 1]))
  new_extra, rewards, metrics = jax.jit(functools.partial(gail.prepare, model=model))(
      params, extra, batch, samples, jax.random.key(1))
  assert rewards.shape == (5, 4)
  np.testing.assert_array_equal(rewards != 0, samples["decoder_loss_weights"] > 0)
  assert np.isfinite(metrics["disc_grad_norm"]) and metrics["disc_grad_norm"] > 0
  assert not np.array_equal(new_extra["disc_params"]["decoder"]["score_head"]["kernel"],
                            extra["disc_params"]["decoder"]["score_head"]["kernel"])
  loss_fn = functools.partial(gail.loss, model=model)
  (loss, _), grads = jax.jit(jax.value_and_grad(
      lambda p: loss_fn(p, new_extra, rewards, batch, samples, None), has_aux=True))(params)
  assert np.isfinite(loss)
  assert float(jnp.abs(grads["token_embedder"]["embedding"]).max()) > 0


def test_bfloat16_activations_close_to_float32(tiny):
  model32, params = tiny
  model16 = DecoderOnlyModel(decoder_only_config("tiny", vocab_size=VOCAB,
                                                  activation_dtype=jnp.bfloat16))
  continuations = _continuations(5, 3)
  batch = model32.teacher_forcing_batch(PROMPTS, continuations)
  out32 = np.asarray(jax.jit(model32.logits)(params, batch))
  out16 = np.asarray(jax.jit(model16.logits)(params, batch))
  assert out16.dtype == np.float32
  scale = np.abs(out32).max()
  assert 0 < np.abs(out16 - out32).max() < 0.05 * scale  # bf16 really was used, and is close
  state = model16.init_decode_state(params, PROMPTS, 3)
  assert state["layers_0"]["prompt_key"].dtype == jnp.bfloat16
  got = _decode_all(model16, params, PROMPTS, continuations)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, out16, atol=0.05 * scale)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_logits_match_hugging_face_with_the_same_weights(family):
  """An independent implementation of the same architecture: Llama (GQA, SwiGLU, RoPE,
  RMSNorm) and Qwen2 (plus q/k/v biases), weights mapped by transposing HF's (out, in)."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  config_cls, model_cls = {
      "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
      "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[family]
  hf_config = config_cls(vocab_size=VOCAB, hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=32, rms_norm_eps=1e-6, hidden_act="silu",
                         max_position_embeddings=64)
  hf_config.tie_word_embeddings = False
  torch.manual_seed(0)
  hf = model_cls(hf_config).eval()
  with torch.no_grad():
    for name, weight in hf.named_parameters():
      if "norm" in name or name.endswith("bias"):
        weight.add_(0.2 * torch.randn_like(weight))
  w = {name: value.detach().numpy() for name, value in hf.state_dict().items()}
  model = _model(qkv_bias=family == "qwen2")
  params = {"token_embedder": {"embedding": w["model.embed_tokens.weight"]},
            "decoder": {"decoder_norm": {"scale": w["model.norm.weight"]},
                        "logits_dense": {"kernel": w["lm_head.weight"].T}}}
  for i in range(2):
    hf_layer = f"model.layers.{i}."
    attention = {ours: {"kernel": w[f"{hf_layer}self_attn.{theirs}_proj.weight"].T}
                 for ours, theirs in [("query", "q"), ("key", "k"), ("value", "v"), ("out", "o")]}
    if family == "qwen2":
      for ours, theirs in [("query", "q"), ("key", "k"), ("value", "v")]:
        attention[ours]["bias"] = w[f"{hf_layer}self_attn.{theirs}_proj.bias"]
    params["decoder"][f"layers_{i}"] = {
        "pre_self_attention_layer_norm": {"scale": w[f"{hf_layer}input_layernorm.weight"]},
        "pre_mlp_layer_norm": {"scale": w[f"{hf_layer}post_attention_layernorm.weight"]},
        "self_attention": attention,
        "mlp": {ours: {"kernel": w[f"{hf_layer}mlp.{theirs}_proj.weight"].T}
                for ours, theirs in [("wi_0", "gate"), ("wi_1", "up"), ("wo", "down")]}}
  assert jax.tree.structure(params) == jax.tree.structure(
      jax.eval_shape(lambda rng: model.init(rng, SHAPES), jax.random.key(0)))
  # Prefix-LM layout: whole right-padded sequences (causal, so padding is never read).
  tokens = np.concatenate([PROMPTS, _continuations(5, 4)], axis=1)
  inputs = np.pad(tokens[:, :-1], ((0, 0), (1, 0)))
  ours = jax.jit(model.logits)(params, {"decoder_input_tokens": inputs})
  with torch.no_grad():
    theirs = hf(torch.tensor(inputs)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
  # Split layout: each row's continuation logits, as transformers computes them on the row alone.
  continuations = _continuations(5, 4, seed=3)
  split = np.asarray(jax.jit(model.logits)(params, model.teacher_forcing_batch(PROMPTS,
                                                                                continuations)))
  for b, n in enumerate(PROMPT_LENGTHS):
    row = np.concatenate([[0], PROMPTS[b, :n], continuations[b, :-1]])[None]
    with torch.no_grad():
      theirs = hf(torch.tensor(row)).logits.numpy()[0, n:]
    np.testing.assert_allclose(split[b], theirs, rtol=1e-4, atol=1e-4)
