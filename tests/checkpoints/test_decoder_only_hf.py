"""Hugging Face decoder-only checkpoints against transformers itself: random small Llama (GQA,
explicit head_dim), Mistral (multi-query) and Qwen2 (tied, q/k/v biases) models saved by
transformers load into our model with the same logits, and our exports load back into
transformers with the same logits again."""

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from irl_lm.checkpoints import formats as cf
from irl_lm.checkpoints.manager import CheckpointError, flat_shapes
from irl_lm.models import decoder_only, llama_checkpoint
from irl_lm.models.decoder_only import DecoderOnlyConfig

REPO = pathlib.Path(__file__).resolve().parents[2]

VOCAB = 96
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, rms_norm_eps=1e-5, eos_token_id=3, pad_token_id=0)
# Three rows of different lengths, padded on the right.
LENGTHS = (13, 8, 3)


def _abstract(model):
  return jax.eval_shape(lambda rng: model.init(rng, llama_checkpoint.INIT_SHAPES),
                        jax.random.key(0))


@pytest.mark.parametrize("config", [
    DecoderOnlyConfig(), DecoderOnlyConfig(qkv_bias=True, tie_embeddings=True),
    DecoderOnlyConfig(parallel_block=True, num_kv_heads=1)], ids=["tiny", "qwen2", "parallel"])
def test_documented_tree_is_the_models(config):
  assert flat_shapes(_abstract(decoder_only.DecoderOnlyModel(config))) == (
      llama_checkpoint.param_shapes(config))


def _hf_model(kind):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  torch.manual_seed({"llama": 0, "mistral": 1, "qwen2": 2}[kind])
  if kind == "llama":
    hf_config = transformers.LlamaConfig(**COMMON, num_key_value_heads=2, head_dim=32,
                                         rope_theta=500000.0, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(hf_config)
  elif kind == "mistral":
    hf_config = transformers.MistralConfig(**COMMON, num_key_value_heads=1, sliding_window=None,
                                           tie_word_embeddings=False)
    model = transformers.MistralForCausalLM(hf_config)
  else:
    hf_config = transformers.Qwen2Config(**COMMON, num_key_value_heads=2,
                                         tie_word_embeddings=True, rope_theta=1e6)
    model = transformers.Qwen2ForCausalLM(hf_config)
  # transformers' initialisers leave biases at 0, norms at 1 and logits tiny: draw every
  # parameter afresh so that each mapping (and its orientation) shows in the logits.
  with torch.no_grad():
    for name, parameter in model.named_parameters():
      if name.endswith("norm.weight"):
        parameter.uniform_(0.5, 1.5)
      else:
        parameter.normal_(0.0, 0.3 if parameter.ndim == 1 else 0.15)
  return model.float().eval()


def _tokens():
  rng = np.random.default_rng(0)
  tokens = rng.integers(4, VOCAB, (len(LENGTHS), max(LENGTHS))).astype(np.int32)
  tokens[:, :2] = 0  # id 0 is an ordinary token of these vocabularies ('!' in Qwen2's)
  mask = np.arange(max(LENGTHS))[None, :] < np.array(LENGTHS)[:, None]
  return np.where(mask, tokens, 0), mask


def _hf_logits(model, tokens, mask):
  import torch
  with torch.no_grad():
    return model(input_ids=torch.tensor(tokens, dtype=torch.long),
                 attention_mask=torch.tensor(mask, dtype=torch.long)).logits.float().numpy()


def _ours(config, params, tokens, mask):
  """Our logits at each real token in the split layout (a one-token prompt, the rest
  teacher-forced), which reads the token ids as the tokenizer gives them: [B, S, V]."""
  model = decoder_only.DecoderOnlyModel(config)
  prompts = np.where(mask[:, :1], tokens[:, :1], -1)
  continuations = np.pad(tokens[:, 1:], ((0, 0), (0, 1)))  # column t reads token t
  batch = model.teacher_forcing_batch(prompts, continuations, mask.sum(1))
  return np.asarray(model.logits(params, batch))


@pytest.mark.parametrize("kind, expected", [
    ("llama", dict(num_kv_heads=2, head_dim=32, rope_theta=500000.0, qkv_bias=False,
                   tie_embeddings=False)),
    ("mistral", dict(num_kv_heads=1, head_dim=16, rope_theta=10000.0, qkv_bias=False,
                     tie_embeddings=False)),
    ("qwen2", dict(num_kv_heads=2, head_dim=16, rope_theta=1e6, qkv_bias=True,
                   tie_embeddings=True))])
def test_logits_match_transformers_both_ways(tmp_path, kind, expected):
  transformers = pytest.importorskip("transformers")  # the `hf` extra
  reference = _hf_model(kind)
  reference.save_pretrained(str(tmp_path / "hf"))
  tokens, mask = _tokens()
  want = _hf_logits(reference, tokens, mask)

  config = cf.config_from_checkpoint(str(tmp_path / "hf"), activation_dtype=jnp.float32)
  assert config == DecoderOnlyConfig(
      vocab_size=VOCAB, emb_dim=64, num_heads=4, mlp_dim=96, num_layers=2, norm_epsilon=1e-5,
      eos_id=3, activation_dtype=jnp.float32, pad_is_token=True, start_id=None, **expected)
  model = llama_checkpoint.make_model(config)
  params = cf.load_params(str(tmp_path / "hf"), _abstract(model))
  ours = _ours(config, params, tokens, mask)
  assert ours.shape == (len(LENGTHS), max(LENGTHS), VOCAB) and ours.dtype == np.float32
  assert np.abs(want[mask]).max() > 3.0  # not a trivially small comparison
  np.testing.assert_allclose(ours[mask], want[mask], atol=1e-4, rtol=0)

  cf.save_params(params, str(tmp_path / "export"), "hf", config=config)
  exported, info = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path / "export"), output_loading_info=True)
  assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
  assert type(exported).__name__ == ("Qwen2ForCausalLM" if kind == "qwen2" else
                                     "LlamaForCausalLM")
  np.testing.assert_allclose(_hf_logits(exported.float().eval(), tokens, mask)[mask], ours[mask],
                             atol=1e-4, rtol=0)


def test_refusals_of_transformers_configs(tmp_path):
  transformers = pytest.importorskip("transformers")
  abstract = traverse_util.unflatten_dict(
      {k: jax.ShapeDtypeStruct(s, jnp.float32)
       for k, s in llama_checkpoint.param_shapes(DecoderOnlyConfig()).items()}, sep="/")
  scaled = transformers.LlamaConfig(**COMMON, rope_parameters={
      "rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
      "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
  transformers.LlamaForCausalLM(scaled).save_pretrained(str(tmp_path / "llama3"))
  with pytest.raises(CheckpointError, match="uses 'llama3' RoPE scaling, which irl_lm's "
                     "decoder-only model does not implement"):
    cf.load_params(str(tmp_path / "llama3"), abstract)
  gpt2 = transformers.GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2)
  transformers.GPT2LMHeadModel(gpt2).save_pretrained(str(tmp_path / "gpt2"))
  with pytest.raises(CheckpointError, match=r"is a 'gpt2' model \(GPT2LMHeadModel\), which "
                     r"irl_lm cannot load; supported: T5 1\.1 .*; decoder-only Llama / Mistral / "
                     r"Qwen2 with model_type 'llama', 'mistral' or 'qwen2'\.$"):
    cf.config_from_checkpoint(str(tmp_path / "gpt2"))
  mistral = transformers.MistralConfig(**COMMON, sliding_window=16, max_position_embeddings=64)
  transformers.MistralForCausalLM(mistral).save_pretrained(str(tmp_path / "mistral"))
  with pytest.raises(CheckpointError, match=r"sliding-window attention \(window 16 < "
                     r"max_position_embeddings 64\)"):
    cf.config_from_checkpoint(str(tmp_path / "mistral"))


def test_reading_does_not_import_torch(tmp_path):
  config = DecoderOnlyConfig(vocab_size=32, emb_dim=16, num_heads=2, num_kv_heads=1, head_dim=8,
                             mlp_dim=24, num_layers=1, qkv_bias=True)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32),
                        _abstract(decoder_only.DecoderOnlyModel(config)))
  cf.save_params(params, str(tmp_path), "hf", config=config)
  script = textwrap.dedent(f"""
      import sys
      import jax, numpy as np
      from irl_lm.checkpoints import formats
      from irl_lm.models import llama_checkpoint
      config = formats.config_from_checkpoint({str(tmp_path)!r})
      model = llama_checkpoint.make_model(config)
      abstract = jax.eval_shape(lambda r: model.init(r, llama_checkpoint.INIT_SHAPES),
                                jax.random.key(0))
      params = formats.load_params({str(tmp_path)!r}, abstract)
      assert 'torch' not in sys.modules and 'transformers' not in sys.modules
      print(float(np.sum(params['decoder']['layers_0']['self_attention']['key']['bias'])))
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  expected = params["decoder"]["layers_0"]["self_attention"]["key"]["bias"].sum()
  assert float(result.stdout.split()[-1]) == pytest.approx(float(expected), abs=1e-5)
