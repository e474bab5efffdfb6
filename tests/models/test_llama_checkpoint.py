"""Decoder-only checkpoint knowledge (Llama / Mistral / Qwen2): Hugging Face names and config,
recognising and diagnosing a parameter tree from its shapes. No model and no torch needed: the
parameters are random numpy arrays of `llama_checkpoint.param_shapes` (which the logits tests in
tests/checkpoints/test_decoder_only_hf.py pin to the model's own tree)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from irl_lm.checkpoints import families, formats as cf, safetensors
from irl_lm.checkpoints.manager import CheckpointError, flat_shapes
from irl_lm.models import llama_checkpoint as lc
from irl_lm.models.decoder_only import DecoderOnlyConfig, decoder_only_config
from tests.checkpoints.helpers import abstract as t5_abstract

# Grouped-query attention (4 query heads over 2 key/value heads) with E = 48, D = 8: E / H = 12
# != D and H*D = 32 != E, so a transposed or swapped kernel, or a defaulted head_dim, shows.
LLAMA = DecoderOnlyConfig(vocab_size=40, emb_dim=48, num_heads=4, num_kv_heads=2, head_dim=8,
                          mlp_dim=56, num_layers=2, rope_theta=500000.0, norm_epsilon=1e-5,
                          eos_id=2, activation_dtype=jnp.float32, pad_is_token=True,
                          start_id=None)
QWEN2 = DecoderOnlyConfig(vocab_size=40, emb_dim=32, num_heads=4, num_kv_heads=1, head_dim=8,
                          mlp_dim=24, num_layers=3, qkv_bias=True, tie_embeddings=True,
                          eos_id=7, activation_dtype=jnp.float32, pad_is_token=True,
                          start_id=None)
# (An imported checkpoint keeps its tokenizer's ids: id 0 is a real token and there is no
# start token.)


def random_flat(config, seed=0):
  rng = np.random.default_rng(seed)
  return {k: rng.standard_normal(s).astype(np.float32)
          for k, s in lc.param_shapes(config).items()}


def abstract(config):
  """The model's abstract parameters, built from the documented tree."""
  return traverse_util.unflatten_dict(
      {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in lc.param_shapes(config).items()},
      sep="/")


def hf_llama_config(**changes):
  """A config.json as transformers 5.24 writes it for LlamaForCausalLM."""
  config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 40,
            "hidden_size": 48, "intermediate_size": 56, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
            "hidden_act": "silu", "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
            "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
            "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None}
  config.update(changes)
  return config


def test_registered_beside_t5_and_recognised_by_shapes():
  family = families.FAMILIES["llama"]
  assert families.for_config(LLAMA) is family
  for model_type, architecture in zip(lc.HF_MODEL_TYPES, lc.HF_ARCHITECTURES):
    assert families.for_hf_config({"model_type": model_type}, "x") is family
    assert families.for_hf_config({"architectures": [architecture]}, "x") is family
  assert lc.HF_MODEL_TYPES == ("llama", "mistral", "qwen2")
  assert families.for_shapes(lc.param_shapes(LLAMA)) is family
  assert families.for_shapes(lc.param_shapes(QWEN2)) is family
  t5_shapes = flat_shapes(t5_abstract())
  assert families.for_shapes(t5_shapes) is families.FAMILIES["t5_1_1"]
  assert lc.infer_config(t5_shapes) is None
  assert families.FAMILIES["t5_1_1"].infer_config(lc.param_shapes(LLAMA)) is None
  # GAIL's discriminator: a T5 decoder with a score head, not a decoder-only model.
  t5_shapes.pop("decoder/logits_dense/kernel")
  assert lc.infer_config({**t5_shapes, "decoder/score_head/kernel": (32, 1)}) is None


def test_unsupported_model_type_names_both_families():
  with pytest.raises(CheckpointError) as error:
    families.for_hf_config({"model_type": "gemma", "architectures": ["GemmaForCausalLM"]},
                           "the Hugging Face checkpoint in /m")
  assert str(error.value) == (
      "the Hugging Face checkpoint in /m is a 'gemma' model (GemmaForCausalLM), which irl_lm "
      "cannot load; supported: T5 1.1 encoder-decoders (and Flan-T5 / mT5) with model_type 't5' "
      "or 'mt5'; decoder-only Llama / Mistral / Qwen2 with model_type 'llama', 'mistral' or "
      "'qwen2'.")


@pytest.mark.parametrize("config", [LLAMA, QWEN2], ids=["llama", "qwen2"])
def test_name_map_covers_every_parameter_once(config):
  names = lc.params_to_hf_names(config)
  assert sorted(names) == sorted(lc.param_shapes(config))
  assert len({hf for hf, _ in names.values()}) == len(names)


def test_params_to_hf_follows_transformers_layout():
  flat = random_flat(LLAMA)
  tensors = lc.params_to_hf(flat, LLAMA)
  layer = "decoder/layers_1"
  pairs = {"model.layers.1.self_attn.q_proj.weight": f"{layer}/self_attention/query/kernel",
           "model.layers.1.self_attn.k_proj.weight": f"{layer}/self_attention/key/kernel",
           "model.layers.1.self_attn.o_proj.weight": f"{layer}/self_attention/out/kernel",
           "model.layers.1.mlp.gate_proj.weight": f"{layer}/mlp/wi_0/kernel",
           "model.layers.1.mlp.up_proj.weight": f"{layer}/mlp/wi_1/kernel",
           "model.layers.1.mlp.down_proj.weight": f"{layer}/mlp/wo/kernel",
           "lm_head.weight": "decoder/logits_dense/kernel"}
  for hf_key, path in pairs.items():
    np.testing.assert_array_equal(tensors[hf_key], flat[path].T, err_msg=hf_key)
  assert tensors["model.layers.1.self_attn.q_proj.weight"].shape == (32, 48)  # (H*D, E)
  assert tensors["model.layers.1.self_attn.k_proj.weight"].shape == (16, 48)  # (K*D, E)
  for hf_key, path in {"model.embed_tokens.weight": "token_embedder/embedding",
                       "model.norm.weight": "decoder/decoder_norm/scale",
                       "model.layers.0.input_layernorm.weight":
                           "decoder/layers_0/pre_self_attention_layer_norm/scale",
                       "model.layers.0.post_attention_layernorm.weight":
                           "decoder/layers_0/pre_mlp_layer_norm/scale"}.items():
    np.testing.assert_array_equal(tensors[hf_key], flat[path], err_msg=hf_key)
  assert len(tensors) == 2 + 1 + 2 * 9  # embedding, final norm, lm_head, 9 per layer
  assert all(t.flags["C_CONTIGUOUS"] and t.dtype == np.float32 for t in tensors.values())

  qwen = lc.params_to_hf(random_flat(QWEN2), QWEN2)
  assert "lm_head.weight" not in qwen
  assert qwen["model.layers.2.self_attn.v_proj.bias"].shape == (8,)
  assert "model.layers.2.self_attn.o_proj.bias" not in qwen
  assert len(qwen) == 2 + 3 * 12


@pytest.mark.parametrize("config", [LLAMA, QWEN2], ids=["llama", "qwen2"])
def test_hf_files_round_trip_exactly(tmp_path, config):
  """Export to a Hugging Face directory and load it back: every leaf exact, config equal."""
  params = traverse_util.unflatten_dict(random_flat(config), sep="/")
  cf.save_params(params, str(tmp_path), "hf", config=config)
  loaded = cf.load_params(str(tmp_path), abstract(config))
  flat = traverse_util.flatten_dict(loaded, sep="/")
  for key, value in random_flat(config).items():
    assert flat[key].dtype == np.float32
    np.testing.assert_array_equal(flat[key], value, err_msg=key)
  assert sorted(flat) == sorted(lc.param_shapes(config))
  assert cf.config_from_checkpoint(str(tmp_path), activation_dtype=jnp.float32) == config


def test_config_from_hf_reads_every_field():
  assert lc.config_from_hf(hf_llama_config(), activation_dtype=jnp.float32) == LLAMA
  # transformers 4's layout: rope_theta at top level, no head_dim or num_key_value_heads.
  legacy = hf_llama_config(rope_theta=1234.0, eos_token_id=[5, 9], tie_word_embeddings=True)
  for key in ("rope_parameters", "head_dim", "num_key_value_heads", "rms_norm_eps"):
    del legacy[key]
  config = lc.config_from_hf(legacy)
  assert (config.rope_theta, config.head_dim, config.num_heads, config.num_kv_heads,
          config.eos_id, config.norm_epsilon, config.tie_embeddings) == (
              1234.0, 12, 4, 4, 5, 1e-6, True)
  qwen = lc.config_from_hf(dict(hf_llama_config(model_type="qwen2", architectures=None,
                                                hidden_act="gelu_pytorch_tanh"),
                                use_sliding_window=False, sliding_window=None))
  assert qwen.qkv_bias and qwen.mlp_activation == "gelu"
  # Qwen2.5 as its hub config.json has it: a window that is not used.
  assert lc.config_from_hf(dict(hf_llama_config(model_type="qwen2"), use_sliding_window=False,
                                sliding_window=32768, max_window_layers=21)).qkv_bias
  # By architecture alone.
  assert not lc.config_from_hf(hf_llama_config(model_type=None)).qkv_bias


@pytest.mark.parametrize("config", [
    LLAMA, QWEN2, decoder_only_config("1b"),
    DecoderOnlyConfig(mlp_activation="gelu", eos_id=3, rope_theta=1e6)])
def test_hf_config_dict_round_trips(config):
  hf = lc.hf_config_dict(config)
  assert hf["architectures"] == (["Qwen2ForCausalLM"] if config.qkv_bias else
                                 ["LlamaForCausalLM"])
  assert hf["rope_parameters"] == {"rope_type": "default", "rope_theta": config.rope_theta}
  assert json.loads(json.dumps(hf)) == hf
  assert lc.config_from_hf(hf, activation_dtype=config.activation_dtype) == config


@pytest.mark.parametrize("changes, message", [
    (dict(rope_parameters={"rope_type": "llama3", "factor": 8.0, "rope_theta": 5e5}),
     "uses 'llama3' RoPE scaling, which irl_lm's decoder-only model does not implement"),
    (dict(rope_scaling={"type": "linear", "factor": 2.0}), "uses 'linear' RoPE scaling"),
    (dict(mlp_bias=True), r"has MLP biases \(mlp_bias=true\)"),
    (dict(attention_bias=True), r"attention_bias=true \(biases on q/k/v and o_proj\)"),
    (dict(hidden_act="relu"), "uses hidden_act='relu'; irl_lm's decoder-only model implements"),
    (dict(hidden_act="gelu"), "uses hidden_act='gelu'"),  # exact GELU, not our tanh one
    (dict(model_type="mistral", sliding_window=4096, max_position_embeddings=32768),
     r"mistral checkpoint uses sliding-window attention \(window 4096 < "
     "max_position_embeddings 32768\\)"),
    (dict(model_type="mistral", max_position_embeddings=32768), "window 4096 <"),  # default
    (dict(model_type="qwen2", use_sliding_window=True, sliding_window=4096,
          max_window_layers=1, max_position_embeddings=32768),
     "qwen2 checkpoint uses sliding-window attention"),
    (dict(model_type="qwen2", layer_types=["full_attention", "sliding_attention"],
          sliding_window=1024), "window 1024 < max_position_embeddings 2048"),
])
def test_config_from_hf_refuses_what_is_not_implemented(changes, message):
  with pytest.raises(ValueError, match=message):
    lc.config_from_hf(hf_llama_config(**changes))


def test_sliding_windows_that_change_nothing_are_allowed():
  mistral = hf_llama_config(model_type="mistral", sliding_window=4096,
                            max_position_embeddings=4096)
  assert lc.config_from_hf(mistral).emb_dim == 48
  assert lc.config_from_hf(hf_llama_config(model_type="mistral", sliding_window=None))
  qwen = hf_llama_config(model_type="qwen2", use_sliding_window=True, sliding_window=64,
                         max_window_layers=2)  # no layer at or past max_window_layers
  assert lc.config_from_hf(qwen).qkv_bias


def test_refusals_reach_load_params_as_one_sentence(tmp_path):
  params = traverse_util.unflatten_dict(random_flat(LLAMA), sep="/")
  cf.save_params(params, str(tmp_path), "hf", config=LLAMA)
  hf = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps(
      {**hf, "rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}}))
  with pytest.raises(CheckpointError, match="uses 'yarn' RoPE scaling.*without rope scaling\\.$"):
    cf.load_params(str(tmp_path), abstract(LLAMA))
  (tmp_path / "config.json").write_text(json.dumps(
      {**hf, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
  with pytest.raises(CheckpointError, match=r"is a 'gpt2' model \(GPT2LMHeadModel\), which "
                     "irl_lm cannot load; supported: T5 1.1 .* or 'qwen2'\\.$"):
    cf.load_params(str(tmp_path), abstract(LLAMA))
  with pytest.raises(CheckpointError, match="is a 'gpt2' model"):
    cf.config_from_checkpoint(str(tmp_path))


def test_tied_config_with_a_stored_lm_head(tmp_path):
  """transformers 5.24 ties a stored lm_head equal to the embedding and unties a different one:
  we load the first and refuse the second with the fix."""
  from safetensors.numpy import load_file
  flat = random_flat(QWEN2)
  cf.save_params(traverse_util.unflatten_dict(flat, sep="/"), str(tmp_path), "hf", config=QWEN2)
  tensors = load_file(str(tmp_path / "model.safetensors"))
  hf = safetensors.read_hf_config(str(tmp_path))
  tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
  safetensors.write_safetensors(tensors, hf, str(tmp_path))
  loaded = traverse_util.flatten_dict(cf.load_params(str(tmp_path), abstract(QWEN2)), sep="/")
  np.testing.assert_array_equal(loaded["token_embedder/embedding"],
                                flat["token_embedder/embedding"])
  tensors["lm_head.weight"] = tensors["lm_head.weight"] + 1
  safetensors.write_safetensors(tensors, hf, str(tmp_path))
  with pytest.raises(CheckpointError, match="says tie_word_embeddings=true but stores an "
                     "lm_head.weight that differs .* set tie_word_embeddings to false"):
    cf.load_params(str(tmp_path), abstract(QWEN2))
  # Untied as the message says: both load, into a model with its own output layer.
  safetensors.write_safetensors(tensors, {**hf, "tie_word_embeddings": False}, str(tmp_path))
  untied = cf.config_from_checkpoint(str(tmp_path), activation_dtype=jnp.float32)
  assert untied == DecoderOnlyConfig(**{**QWEN2.__dict__, "tie_embeddings": False})
  loaded = traverse_util.flatten_dict(cf.load_params(str(tmp_path), abstract(untied)), sep="/")
  np.testing.assert_array_equal(loaded["decoder/logits_dense/kernel"],
                                flat["token_embedder/embedding"].T + 1)


def test_infer_config_size_name_and_likely_cause():
  shapes = lc.param_shapes(LLAMA)
  split = dict(head_dim=8, rope_theta=LLAMA.rope_theta, norm_epsilon=LLAMA.norm_epsilon,
               eos_id=2, activation_dtype=jnp.float32)
  # From shapes alone the token-id conventions are irl_lm's own (seqio's: start token 0).
  assert lc.infer_config(shapes, **split) == dataclasses.replace(LLAMA, pad_is_token=False,
                                                                 start_id=0)
  assert lc.infer_config(lc.param_shapes(QWEN2), num_heads=4, eos_id=7,
                         activation_dtype=jnp.float32) == dataclasses.replace(
                             QWEN2, pad_is_token=False, start_id=0)
  guessed = lc.infer_config(shapes)  # H*D = 32, K*D = 16: neither 128 nor 64 divides both
  assert (guessed.num_heads, guessed.num_kv_heads, guessed.head_dim) == (2, 1, 16)
  parallel = DecoderOnlyConfig(parallel_block=True)
  assert lc.infer_config(lc.param_shapes(parallel)) == parallel  # 'tiny' preset's head split
  one_b = decoder_only_config("1b", vocab_size=100)
  assert lc.infer_config(lc.param_shapes(one_b)) == one_b
  assert lc.size_name(one_b) == "1b" and lc.size_name(LLAMA) is None

  assert lc.likely_cause(shapes, shapes) == ""
  tiny = lc.param_shapes(decoder_only_config("tiny", vocab_size=40))
  assert lc.likely_cause(tiny, shapes) == (
      "wrong size: the checkpoint is the decoder-only 'tiny' (emb_dim 128, query / key-value "
      "widths 128 / 64, 2 layers, mlp_dim 256, vocab 40) but the model is a decoder-only model "
      "(emb_dim 48, query / key-value widths 32 / 16, 2 layers, mlp_dim 56, vocab 40); use the "
      "'tiny' preset")
  other_vocab = lc.param_shapes(DecoderOnlyConfig(**{**LLAMA.__dict__, "vocab_size": 50}))
  assert lc.likely_cause(other_vocab, shapes) == (
      "the vocabulary size differs (checkpoint 50, model 40); set DecoderOnlyConfig.vocab_size "
      "= 50")
  tied = lc.param_shapes(DecoderOnlyConfig(**{**LLAMA.__dict__, "tie_embeddings": True}))
  assert lc.likely_cause(tied, shapes).startswith(
      "the checkpoint has an output layer tied to the embedding (no logits_dense / lm_head) "
      "and the model has not; set DecoderOnlyConfig.tie_embeddings = True")
  assert lc.likely_cause(shapes, lc.param_shapes(QWEN2)).endswith(
      "set DecoderOnlyConfig.tie_embeddings = False")
  assert lc.likely_cause(flat_shapes(t5_abstract()), shapes).startswith(
      "the checkpoint is an encoder-decoder (T5-style")


def test_mismatch_is_diagnosed_through_load_params(tmp_path):
  cf.save_params(traverse_util.unflatten_dict(random_flat(LLAMA), sep="/"), str(tmp_path), "hf",
                 config=LLAMA)
  other = DecoderOnlyConfig(**{**LLAMA.__dict__, "vocab_size": 64})
  with pytest.raises(CheckpointError, match="likely cause: the vocabulary size differs "
                     r"\(checkpoint 40, model 64\)"):
    cf.load_params(str(tmp_path), abstract(other))


def test_export_refuses_params_of_another_config_and_parallel_blocks(tmp_path):
  flat = random_flat(LLAMA)
  with pytest.raises(ValueError, match="do not match a decoder-only model of this config"):
    lc.params_to_hf(flat, QWEN2)
  with pytest.raises(CheckpointError, match="pass the config the parameters were trained with"):
    cf.save_params(traverse_util.unflatten_dict(flat, sep="/"), str(tmp_path), "hf",
                   config=DecoderOnlyConfig(**{**LLAMA.__dict__, "mlp_dim": 64}))
  parallel = DecoderOnlyConfig(parallel_block=True)
  with pytest.raises(CheckpointError, match="parallel-block .* no Llama / Qwen2 equivalent"):
    cf.save_params(traverse_util.unflatten_dict(random_flat(parallel), sep="/"), str(tmp_path),
                   "hf", config=parallel)


def test_config_from_checkpoint_of_t5_checkpoints(tmp_path):
  from tests.checkpoints.helpers import CONFIG, random_params
  params = random_params()
  cf.save_params(params, str(tmp_path / "hf"), "hf", config=CONFIG)
  cf.save_params(params, str(tmp_path / "checkpoint_7"), "t5x")
  for path in ("hf", "checkpoint_7"):
    assert cf.config_from_checkpoint(str(tmp_path / path),
                                     activation_dtype=CONFIG.activation_dtype) == CONFIG
  with pytest.raises(CheckpointError, match="does not hold the parameter tree of the model "
                     "family \\(llama; it holds e.g."):
    cf.config_from_checkpoint(str(tmp_path / "checkpoint_7"), family="llama")


def test_reads_a_sharded_bfloat16_checkpoint(tmp_path):
  """As large hub checkpoints are stored: bfloat16 shards and an index; loaded upcast."""
  import ml_dtypes
  from tests.checkpoints.test_safetensors import write_safetensors_by_hand
  flat = random_flat(QWEN2)
  tensors = lc.params_to_hf(flat, QWEN2)
  names = sorted(tensors)
  shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
            "model-00002-of-00002.safetensors": names[len(names) // 2:]}
  for file, keys in shards.items():
    write_safetensors_by_hand(tmp_path / file,
                              {k: tensors[k].astype(ml_dtypes.bfloat16) for k in keys})
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
      {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}))
  (tmp_path / "config.json").write_text(json.dumps(lc.hf_config_dict(QWEN2)))
  loaded = traverse_util.flatten_dict(cf.load_params(str(tmp_path), abstract(QWEN2)), sep="/")
  assert sorted(loaded) == sorted(flat)
  for key, value in flat.items():
    assert loaded[key].dtype == np.float32
    np.testing.assert_array_equal(
        loaded[key], value.astype(ml_dtypes.bfloat16).astype(np.float32), err_msg=key)
