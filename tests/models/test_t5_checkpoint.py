"""T5 1.1's checkpoint knowledge: Hugging Face names and config, and recognising or diagnosing
a parameter tree from its shapes (through the checkpoint readers where that is the point)."""

import ast
import json
import pathlib

import numpy as np
import pytest
from flax import traverse_util

from irl_lm.checkpoints import families, formats as cf, safetensors
from irl_lm.checkpoints.manager import CheckpointError, flat_shapes
from irl_lm.models import t5, t5_checkpoint
from tests.checkpoints.helpers import CONFIG, abstract, params  # noqa: F401


def test_models_import_nothing_from_checkpoints():
  models = pathlib.Path(t5_checkpoint.__file__).parent
  for path in models.glob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        names = [node.module or ""]
      else:
        continue
      assert not any(n.startswith("irl_lm.checkpoints") for n in names), (path.name, names)


def test_registered_as_the_t5_1_1_family():
  family = families.FAMILIES["t5_1_1"]
  assert families.for_config(CONFIG) is family
  assert families.for_hf_config({"model_type": "mt5"}, "x") is family
  assert families.for_hf_config({"architectures": ["T5ForConditionalGeneration"]}, "x") is family
  assert families.for_hf_config({}, "x") is family  # neither named: the default family
  assert families.for_shapes(flat_shapes(abstract())) is family


def test_infer_config_size_name_and_likely_cause():
  shapes = flat_shapes(abstract())
  assert t5_checkpoint.infer_config(shapes, activation_dtype=CONFIG.activation_dtype) == CONFIG
  assert t5_checkpoint.infer_config({"model.embed_tokens.weight": (64, 32)}) is None
  assert t5_checkpoint.size_name(CONFIG) is None
  xl = t5.t5_1_1_config("xl")
  assert t5_checkpoint.size_name(xl) == "xl"
  assert t5_checkpoint.likely_cause(shapes, shapes) == ""
  tiny = flat_shapes(abstract(t5.t5_1_1_config("tiny", vocab_size=64)))
  assert t5_checkpoint.likely_cause(tiny, shapes).startswith(
      "wrong size preset: the checkpoint is T5 1.1 'tiny' (emb_dim 128, 4 heads of 32, 2+2 "
      "layers, mlp_dim 256, vocab 64) but the model is a T5 1.1 model (emb_dim 32")


def test_output_layer_scaled_follows_transformers():
  assert t5_checkpoint.output_layer_scaled({})  # T5 1.0 default: tied and rescaled
  assert not t5_checkpoint.output_layer_scaled({"tie_word_embeddings": False})
  assert not t5_checkpoint.output_layer_scaled({"scale_decoder_outputs": False})
  assert t5_checkpoint.output_layer_scaled({"tie_word_embeddings": False,
                                            "scale_decoder_outputs": True})


def test_name_map_covers_every_parameter_once():
  names = t5_checkpoint.t5x_to_hf_names(CONFIG.num_encoder_layers, CONFIG.num_decoder_layers)
  assert sorted(names) == sorted(flat_shapes(abstract()))
  assert len({hf for hf, _ in names.values()}) == len(names)


def test_hf_export_follows_transformers_layout(tmp_path, params):
  from safetensors.numpy import load_file
  safetensors.export_hf(params, CONFIG, str(tmp_path))
  tensors = load_file(str(tmp_path / "model.safetensors"))
  layer = params["encoder"]["layers_1"]
  np.testing.assert_array_equal(tensors["encoder.block.1.layer.0.SelfAttention.q.weight"],
                                layer["attention"]["query"]["kernel"].T)  # (J, E) = (16, 32)
  np.testing.assert_array_equal(tensors["encoder.block.1.layer.1.DenseReluDense.wo.weight"],
                                layer["mlp"]["wo"]["kernel"].T)  # (E, F)
  np.testing.assert_array_equal(
      tensors["decoder.block.0.layer.1.EncDecAttention.o.weight"],
      params["decoder"]["layers_0"]["encoder_decoder_attention"]["out"]["kernel"].T)
  np.testing.assert_array_equal(tensors["decoder.block.0.layer.2.layer_norm.weight"],
                                params["decoder"]["layers_0"]["pre_mlp_layer_norm"]["scale"])
  np.testing.assert_array_equal(
      tensors["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
      params["decoder"]["relpos_bias"]["rel_embedding"].T)  # (32, H)
  assert "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in tensors
  np.testing.assert_array_equal(tensors["lm_head.weight"],
                                params["decoder"]["logits_dense"]["kernel"].T)
  np.testing.assert_array_equal(tensors["shared.weight"], params["token_embedder"]["embedding"])
  assert len(tensors) == 2 + 2 + 2 + 2 * 9 + 1 * 14  # embeddings, norms, relpos, blocks
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["tie_word_embeddings"] is False and config["scale_decoder_outputs"] is False
  assert (config["d_model"], config["d_kv"], config["num_heads"], config["d_ff"],
          config["num_layers"], config["num_decoder_layers"], config["vocab_size"],
          config["feed_forward_proj"]) == (32, 8, 2, 48, 2, 1, 64, "gated-gelu")
  assert t5_checkpoint.config_from_hf(config, activation_dtype=CONFIG.activation_dtype) == CONFIG


def test_hf_export_refuses_params_of_another_config(tmp_path, params):
  flat = traverse_util.flatten_dict(params, sep="/")
  with pytest.raises(ValueError, match="do not match a T5 1.1 model of this config"):
    t5_checkpoint.params_to_hf(flat, t5.t5_1_1_config("tiny", vocab_size=64))
  with pytest.raises(CheckpointError, match="pass the config the parameters were trained with"):
    safetensors.export_hf(params, t5.t5_1_1_config("tiny", vocab_size=64), str(tmp_path))


def test_refuses_t5_1_0(tmp_path, params):
  safetensors.export_hf(params, CONFIG, str(tmp_path))
  config = json.loads((tmp_path / "config.json").read_text())
  config["feed_forward_proj"] = "relu"
  (tmp_path / "config.json").write_text(json.dumps(config))
  with pytest.raises(CheckpointError, match="feed_forward_proj='relu'.*T5 1.1"):
    cf.load_params(str(tmp_path), abstract())


def _hf_logits(model, enc, dec):
  import torch
  with torch.no_grad():
    return model(input_ids=torch.tensor(enc, dtype=torch.long),
                 attention_mask=torch.tensor(enc > 0, dtype=torch.long),
                 decoder_input_ids=torch.tensor(dec, dtype=torch.long)).logits.numpy()


def test_logits_match_transformers_both_ways(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  torch.set_flush_denormal(True)
  torch.manual_seed(0)
  hf_config = transformers.T5Config(
      vocab_size=CONFIG.vocab_size, d_model=CONFIG.emb_dim, d_kv=CONFIG.head_dim,
      num_heads=CONFIG.num_heads, d_ff=CONFIG.mlp_dim, num_layers=CONFIG.num_encoder_layers,
      num_decoder_layers=CONFIG.num_decoder_layers, feed_forward_proj="gated-gelu",
      dropout_rate=0.0, tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0,
      eos_token_id=1)
  hf_config.tie_word_embeddings = False  # transformers 5 ties lm_head to shared otherwise
  reference = transformers.T5ForConditionalGeneration(hf_config).eval()
  assert not torch.equal(reference.lm_head.weight, reference.shared.weight)
  # ...and unties the stacks' input embeddings from `shared` too, which T5 1.1 never does.
  reference.save_pretrained(str(tmp_path / "untied"))
  with pytest.raises(CheckpointError, match="different input embeddings"):
    cf.load_params(str(tmp_path / "untied"), abstract())
  with torch.no_grad():
    reference.encoder.embed_tokens.weight.copy_(reference.shared.weight)
    reference.decoder.embed_tokens.weight.copy_(reference.shared.weight)
  reference.save_pretrained(str(tmp_path / "hf"))

  rng = np.random.default_rng(0)
  # Long enough (> 128) for the far relative-position buckets; padding in one encoder row.
  enc = rng.integers(2, CONFIG.vocab_size, (2, 40)).astype(np.int32)
  enc[1, 25:] = 0
  dec = rng.integers(2, CONFIG.vocab_size, (2, 140)).astype(np.int32)
  dec[:, 0] = 0
  expected = _hf_logits(reference, enc, dec)

  model = t5.EncoderDecoderModel(CONFIG)
  params = cf.load_params(str(tmp_path / "hf"), abstract())
  ours = np.asarray(model.logits(params, {"encoder_input_tokens": enc,
                                          "decoder_input_tokens": dec}))
  assert np.abs(expected).max() > 1.0  # not a trivially small comparison
  np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)

  safetensors.export_hf(params, CONFIG, str(tmp_path / "export"))
  exported, info = transformers.T5ForConditionalGeneration.from_pretrained(
      str(tmp_path / "export"), output_loading_info=True)
  assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
  np.testing.assert_allclose(_hf_logits(exported.eval(), enc, dec), ours, atol=1e-4, rtol=0)
