"""Hugging Face directories (config.json + safetensors), read without torch and written."""

import json

import ml_dtypes
import numpy as np
import pytest

from irl_lm.checkpoints import formats as cf, safetensors
from irl_lm.checkpoints.manager import CheckpointError
from tests.checkpoints.helpers import (CONFIG, abstract, assert_exact, bfloat16_rounded,  # noqa
                                       params)


def write_safetensors_by_hand(path, tensors):
  """The safetensors layout: u64 little-endian header size, JSON header, raw little-endian data."""
  header, offset, blobs = {}, 0, []
  for name, array in tensors.items():
    dtype = {"bfloat16": "BF16", "float32": "F32"}[str(array.dtype)]
    data = np.ascontiguousarray(array).tobytes()
    header[name] = {"dtype": dtype, "shape": list(array.shape),
                    "data_offsets": [offset, offset + len(data)]}
    offset += len(data)
    blobs.append(data)
  encoded = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(len(encoded).to_bytes(8, "little") + encoded + b"".join(blobs))


def test_reader_returns_stored_tensors_lazily_in_their_dtypes(tmp_path):
  rng = np.random.default_rng(0)
  tensors = {"a.weight": rng.standard_normal((3, 5)).astype(np.float32),
             "b.weight": rng.standard_normal((4,)).astype(ml_dtypes.bfloat16)}
  write_safetensors_by_hand(tmp_path / "model.safetensors", tensors)
  reader = safetensors.SafetensorsReader(str(tmp_path))
  assert reader.shapes == {"a.weight": (3, 5), "b.weight": (4,)}
  assert reader.dtypes == {"a.weight": "F32", "b.weight": "BF16"}
  assert "a.weight" in reader and "c.weight" not in reader
  leaves = reader.leaves()
  assert {k: leaf.shape for k, leaf in leaves.items()} == reader.shapes
  for key, array in tensors.items():
    read = leaves[key].read()
    assert read.dtype == array.dtype, key
    np.testing.assert_array_equal(read, array)


def test_write_safetensors_round_trips(tmp_path):
  tensors = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
  safetensors.write_safetensors(tensors, {"model_type": "t5"}, str(tmp_path / "out"))
  assert safetensors.read_hf_config(str(tmp_path / "out")) == {"model_type": "t5"}
  np.testing.assert_array_equal(
      safetensors.SafetensorsReader(str(tmp_path / "out")).read("x"), tensors["x"])


def test_reads_sharded_bfloat16_hf_checkpoint_with_tied_scaled_output(tmp_path, params):
  """Two shards with an index, bfloat16 weights, no lm_head and transformers' default config
  (tied and rescaled output layer): the output layer becomes shared.T * d_model**-0.5."""
  from safetensors.numpy import load_file
  safetensors.export_hf(params, CONFIG, str(tmp_path / "export"))
  tensors = load_file(str(tmp_path / "export" / "model.safetensors"))
  del tensors["lm_head.weight"]
  tensors["encoder.embed_tokens.weight"] = tensors.pop("shared.weight")  # another tied name
  names = sorted(tensors)
  shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
            "model-00002-of-00002.safetensors": names[len(names) // 2:]}
  (tmp_path / "hf").mkdir()
  for file, keys in shards.items():
    write_safetensors_by_hand(tmp_path / "hf" / file, {
        k: tensors[k].astype(ml_dtypes.bfloat16) for k in keys})
  (tmp_path / "hf" / "model.safetensors.index.json").write_text(json.dumps(
      {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}))
  config = json.loads((tmp_path / "export" / "config.json").read_text())
  del config["tie_word_embeddings"], config["scale_decoder_outputs"]
  (tmp_path / "hf" / "config.json").write_text(json.dumps(config))

  loaded = cf.load_params(str(tmp_path / "hf"), abstract())
  rounded = bfloat16_rounded(params)
  embedding = rounded["token_embedder"]["embedding"]
  rounded["decoder"]["logits_dense"]["kernel"] = embedding.T * np.float32(32 ** -0.5)
  assert_exact(rounded, loaded)


def test_corrupt_hf_files_are_named(tmp_path, params):
  cf.save_params(params, str(tmp_path / "hf"), "hf", config=CONFIG)
  weights = tmp_path / "hf" / "model.safetensors"
  weights.write_bytes(weights.read_bytes()[:-64])
  with pytest.raises(CheckpointError, match="unreadable or corrupt"):
    cf.load_params(str(tmp_path / "hf"), abstract())
  (tmp_path / "hf" / "config.json").write_text("{not json")
  with pytest.raises(CheckpointError, match="cannot read the Hugging Face config"):
    safetensors.read_hf_config(str(tmp_path / "hf"))


def test_unsupported_model_family_is_refused_in_one_sentence(tmp_path, params):
  safetensors.export_hf(params, CONFIG, str(tmp_path))
  config = json.loads((tmp_path / "config.json").read_text())
  config.update(model_type="bert", architectures=["BertModel"])
  (tmp_path / "config.json").write_text(json.dumps(config))
  with pytest.raises(CheckpointError, match=r"is a 'bert' model \(BertModel\), which irl_lm "
                     r"cannot load; supported: T5 1\.1 .*'t5' or 'mt5'; decoder-only .*\.$"):
    cf.load_params(str(tmp_path), abstract())
  with pytest.raises(CheckpointError, match="unknown model family 'gpt2'"):
    cf.load_params(str(tmp_path), abstract(), family="gpt2")
