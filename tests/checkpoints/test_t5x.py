"""T5X checkpoints: the legacy layout (msgpack + zarr) and the Orbax layout, written following
their documented layouts (docs/design.md#checkpoint-formats), detected and read back."""

import json
import os

import jax
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorstore as ts
from flax import serialization, traverse_util

from irl_lm.checkpoints import formats as cf, t5x
from irl_lm.checkpoints.manager import CheckpointError
from tests.checkpoints.helpers import abstract, assert_exact, bfloat16_rounded, params  # noqa: F401


def test_t5x_writer_follows_the_documented_layout(tmp_path, params):
  t5x.save_t5x(params, str(tmp_path), step=3)
  contents = serialization.msgpack_restore((tmp_path / "checkpoint").read_bytes())
  assert contents["version"] == 3
  assert int(contents["optimizer"]["state"]["step"]) == 3
  spec = contents["optimizer"]["target"]["encoder"]["layers_1"]["attention"]["query"]["kernel"]
  assert spec["driver"] == "zarr"
  name = "target.encoder.layers_1.attention.query.kernel"
  assert spec["kvstore"] == {"driver": "file", "path": name}
  zarray = json.loads((tmp_path / name / ".zarray").read_text())
  assert zarray["shape"] == [32, 16] and zarray["compressor"]["id"] == "gzip"
  stored = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(
      tmp_path / name)}}).result().read().result()
  np.testing.assert_array_equal(stored,
                                params["encoder"]["layers_1"]["attention"]["query"]["kernel"])


def _write_zarr(path, array):
  store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(path)},
                   "dtype": str(array.dtype),
                   "metadata": {"shape": list(array.shape), "chunks": list(array.shape),
                                "compressor": {"id": "gzip"}}},
                  create=True).result()
  store.write(array).result()


def test_reads_t5x_legacy_as_t5x_writes_it_on_gcs_in_bfloat16(tmp_path, params):
  """By hand: bfloat16 zarr arrays whose specs name T5X's dummy GCS bucket, one small array
  inline in the msgpack, and an optimiser state that must be ignored."""
  target, param_states = {}, {}
  for path, value in traverse_util.flatten_dict(params, sep="/").items():
    value = value.astype(ml_dtypes.bfloat16)
    if path == "encoder/encoder_norm/scale":
      target[path] = value  # not partitioned: stored inline
      continue
    name = "target." + path.replace("/", ".")
    _write_zarr(tmp_path / name, value)
    target[path] = {"driver": "zarr", "dtype": "bfloat16",
                    "kvstore": {"bucket": "t5x-dummy-bucket", "driver": "gcs", "path": name},
                    "metadata": {"chunks": list(value.shape), "compressor": {"id": "gzip"},
                                 "shape": list(value.shape)}}
    if path == "decoder/decoder_norm/scale":
      del target[path]["metadata"]  # older specs: the shape only in the zarr array's .zarray
    param_states[path] = {"v": np.zeros(value.shape[:1], np.float32)}
  contents = {"version": 3, "optimizer": {
      "target": traverse_util.unflatten_dict(target, sep="/"),
      "state": {"step": np.int32(1000000),
                "param_states": traverse_util.unflatten_dict(param_states, sep="/")}}}
  ckpt = tmp_path / "checkpoint_1000000"
  ckpt.mkdir()
  for name in os.listdir(tmp_path):
    if name.startswith("target."):
      os.rename(tmp_path / name, ckpt / name)
  (ckpt / "checkpoint").write_bytes(serialization.msgpack_serialize(contents))

  source = cf.detect_format(str(ckpt / "checkpoint"))
  assert (source.format, source.step) == ("t5x", 1000000)
  loaded = cf.load_params(source, abstract())
  assert_exact(bfloat16_rounded(params), loaded)


def test_open_t5x_reads_metadata_lazily(tmp_path, params):
  t5x.save_t5x(params, str(tmp_path), dtype="bfloat16")
  leaves = t5x.open_t5x(str(tmp_path))
  query = leaves["encoder/layers_1/attention/query/kernel"]
  assert query.shape == (32, 16)
  assert query.read().dtype == ml_dtypes.bfloat16
  assert sorted(leaves) == sorted(traverse_util.flatten_dict(params, sep="/"))


def test_reads_t5x_orbax_bfloat16_target_and_skips_optimizer_state(tmp_path, params):
  tree = {"target": jax.tree.map(lambda x: x.astype(ml_dtypes.bfloat16), params),
          "state": {"step": np.int32(5), "param_states": jax.tree.map(
              lambda x: {"v_row": np.ones(x.shape[:1], np.float32)}, params)}}
  ocp.PyTreeCheckpointer().save(str(tmp_path / "checkpoint_5" / "state"), tree)
  source = cf.detect_format(str(tmp_path / "checkpoint_5"))
  assert (source.format, source.step) == ("orbax", 5)
  assert_exact(bfloat16_rounded(params), cf.load_params(source, abstract()))


def test_orbax_writer_stores_bfloat16_when_asked(tmp_path, params):
  t5x.save_t5x_orbax(params, str(tmp_path), step=2, dtype="bfloat16")
  metadata = t5x.orbax_tree_metadata(str(tmp_path / "state"))
  assert str(metadata["target"]["decoder"]["logits_dense"]["kernel"].dtype) == "bfloat16"
  assert_exact(bfloat16_rounded(params), cf.load_params(str(tmp_path), abstract()))


def test_corrupt_t5x_files_are_named(tmp_path, params, caplog):
  t5x.save_t5x(params, str(tmp_path / "t5x"))
  chunk_dir = tmp_path / "t5x" / "target.decoder.logits_dense.kernel"
  (chunk_dir / "0.0").write_bytes(b"not gzip")
  with pytest.raises(CheckpointError, match=r"cannot read decoder/logits_dense/kernel .*corrupt"):
    cf.load_params(str(tmp_path / "t5x"), abstract())
  # A lost chunk reads as zeros (zarr's fill value): loaded, but with a warning naming it.
  os.remove(chunk_dir / "0.0")
  loaded = cf.load_params(str(tmp_path / "t5x"), abstract())
  assert not np.any(loaded["decoder"]["logits_dense"]["kernel"])
  assert "decoder/logits_dense/kernel: 1 of 1 zarr chunks are missing" in caplog.text

  msgpack = tmp_path / "t5x" / "checkpoint"
  msgpack.write_bytes(msgpack.read_bytes()[:100])
  with pytest.raises(CheckpointError, match="checkpoint file .* is unreadable or corrupt"):
    cf.load_params(str(tmp_path / "t5x"), abstract())
