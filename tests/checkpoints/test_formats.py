"""Checkpoint formats: T5X legacy (msgpack + zarr) and Orbax, Hugging Face safetensors, our runs.

Every format is written here following its documented layout (NOTES "T5X checkpoint formats"),
then detected and read back; round trips must be exact.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
import tensorstore as ts
from flax import serialization, traverse_util
from jax.sharding import NamedSharding, PartitionSpec as P

from irl_lm.models import t5
from irl_lm.checkpoints import formats as cf
from irl_lm.checkpoints import hf as hf_checkpoints, manager as checkpoints
from irl_lm.training import objectives, state as state_lib, trainer
from irl_lm.checkpoints.manager import CheckpointError
from irl_lm.partitioning import Partitioner

SHAPES = {"encoder_input_tokens": (1, 1), "decoder_input_tokens": (1, 1)}
# Small but with every kind of parameter; J = 16 != E = 32 and 2 encoder vs 1 decoder layers,
# so a transposed or swapped kernel, or a mislabelled stack, changes a shape or a value.
CONFIG = t5.T5Config(vocab_size=64, emb_dim=32, num_heads=2, head_dim=8, num_encoder_layers=2,
                     num_decoder_layers=1, mlp_dim=48, activation_dtype=jnp.float32)


def _abstract(config=CONFIG):
  model = t5.EncoderDecoderModel(config)
  return jax.eval_shape(lambda rng: model.init(rng, SHAPES), jax.random.key(0))


def _random_params(config=CONFIG, seed=0):
  """Distinct random float32 values in every leaf (a swap or transpose cannot go unnoticed)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32),
                      _abstract(config))


@pytest.fixture(scope="module")
def params():
  return _random_params()


def _assert_exact(expected, actual):
  flat_e = traverse_util.flatten_dict(expected, sep="/")
  flat_a = traverse_util.flatten_dict(jax.device_get(actual), sep="/")
  assert sorted(flat_e) == sorted(flat_a)
  for key, value in flat_e.items():
    assert flat_a[key].dtype == np.float32, key
    np.testing.assert_array_equal(flat_a[key], value, err_msg=key)


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("fmt", ["t5x", "orbax", "hf"])
def test_round_trip_is_exact(tmp_path, params, fmt):
  out = tmp_path / "model" / "checkpoint_7"
  cf.save_params(params, str(out), fmt, config=CONFIG, step=7)
  source = cf.detect_format(str(tmp_path / "model"))  # the model directory: newest checkpoint
  expected_path = {"t5x": out, "orbax": out / "state", "hf": out}[fmt]
  assert (source.format, source.path) == (fmt, str(expected_path))
  assert source.step == (None if fmt == "hf" else 7)
  _assert_exact(params, cf.load_params(str(out), _abstract()))
  assert cf.infer_config(cf.read_shapes(source), activation_dtype=jnp.float32) == CONFIG


def test_t5x_writer_follows_the_documented_layout(tmp_path, params):
  cf.save_t5x(params, str(tmp_path), step=3)
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
  loaded = cf.load_params(source, _abstract())
  _assert_exact(jax.tree.map(lambda x: x.astype(ml_dtypes.bfloat16).astype(np.float32), params),
                loaded)


def test_reads_t5x_orbax_bfloat16_target_and_skips_optimizer_state(tmp_path, params):
  tree = {"target": jax.tree.map(lambda x: x.astype(ml_dtypes.bfloat16), params),
          "state": {"step": np.int32(5), "param_states": jax.tree.map(
              lambda x: {"v_row": np.ones(x.shape[:1], np.float32)}, params)}}
  ocp.PyTreeCheckpointer().save(str(tmp_path / "checkpoint_5" / "state"), tree)
  source = cf.detect_format(str(tmp_path / "checkpoint_5"))
  assert (source.format, source.step) == ("orbax", 5)
  _assert_exact(jax.tree.map(lambda x: x.astype(ml_dtypes.bfloat16).astype(np.float32), params),
                cf.load_params(source, _abstract()))


def test_reads_our_own_run_checkpoints(tmp_path, params):
  state = state_lib.create_train_state(params, optax.adam(1e-3), jax.random.PRNGKey(0))
  checkpointer = checkpoints.Checkpointer(str(tmp_path / "run" / "checkpoints"), async_save=False)
  checkpointer.save(4, state)
  checkpointer.save(9, state.replace(params=jax.tree.map(lambda x: x + 1, params)))
  checkpointer.close()
  for path in ("run", "run/checkpoints", "run/checkpoints/9", "run/checkpoints/9/state"):
    source = cf.detect_format(str(tmp_path / path))
    assert (source.format, source.step) == ("irl_lm", 9), path
  _assert_exact(jax.tree.map(lambda x: x + 1, params),
                cf.load_params(str(tmp_path / "run"), _abstract()))
  _assert_exact(params, cf.load_params(str(tmp_path / "run/checkpoints/4"), _abstract()))


def test_loads_directly_into_shardings(tmp_path, params):
  partitioner = Partitioner((2, 4))
  model = t5.EncoderDecoderModel(CONFIG)
  shardings = partitioner.shardings_for(model.param_logical_axes(SHAPES), _abstract())
  cf.save_t5x(params, str(tmp_path / "t5x"))
  cf.save_t5x_orbax(params, str(tmp_path / "orbax"))
  for fmt in ("t5x", "orbax"):
    loaded = cf.load_params(str(tmp_path / fmt), _abstract(), shardings=shardings)
    query = loaded["decoder"]["layers_0"]["self_attention"]["query"]["kernel"]
    assert query.sharding == NamedSharding(partitioner.mesh, P(None, "model")), fmt
    _assert_exact(params, loaded)


# ----------------------------------------------------------------------------- detection & errors

def test_detection_errors_are_clear(tmp_path):
  with pytest.raises(CheckpointError, match="does not exist"):
    cf.detect_format(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "notes.txt").write_text("x")
  with pytest.raises(CheckpointError, match=r"no checkpoint recognised .*notes\.txt"):
    cf.detect_format(str(tmp_path / "empty"))
  (tmp_path / "torch").mkdir()
  (tmp_path / "torch" / "config.json").write_text("{}")
  (tmp_path / "torch" / "pytorch_model.bin").write_bytes(b"x")
  with pytest.raises(CheckpointError, match="only PyTorch weights"):
    cf.detect_format(str(tmp_path / "torch"))


def test_wrong_size_preset_is_named(tmp_path):
  tiny = t5.t5_1_1_config("tiny", vocab_size=64)
  cf.save_t5x(_random_params(tiny), str(tmp_path / "checkpoint_1"))
  with pytest.raises(CheckpointError) as error:
    cf.load_params(str(tmp_path), _abstract())
  message = str(error.value)
  assert "T5X legacy (msgpack + zarr) checkpoint at" in message
  assert "shape differs: decoder/decoder_norm/scale checkpoint (128,) vs model (32,)" in message
  assert "unexpected in checkpoint: decoder/layers_1/" in message
  assert "wrong size preset: the checkpoint is T5 1.1 'tiny'" in message
  assert "set t5_1_1_config.size = 'tiny'" in message


def test_wrong_vocabulary_is_named(tmp_path, params):
  cf.save_t5x_orbax(params, str(tmp_path))
  bigger_vocab = _abstract(dataclasses.replace(CONFIG, vocab_size=128))
  with pytest.raises(CheckpointError, match=r"token_embedder/embedding checkpoint \(64, 32\) vs "
                     r"model \(128, 32\).*vocabulary size differs.*vocab_size = 64"):
    cf.load_params(str(tmp_path), bigger_vocab)


def test_scanned_layout_is_refused_clearly(tmp_path, params):
  flat = {k: v for k, v in traverse_util.flatten_dict(params, sep="/").items()
          if "/layers_" not in k}
  # scalable_t5: one stacked entry per stack, layers on axis 1, heads split.
  flat["encoder/layers/attention/query/kernel"] = np.zeros((32, 2, 2, 8), np.float32)
  flat["encoder/layers/pre_attention_layer_norm/scale"] = np.zeros((32, 2), np.float32)
  ocp.PyTreeCheckpointer().save(str(tmp_path / "state"), {
      "target": traverse_util.unflatten_dict(flat, sep="/"), "state": {"step": np.int32(0)}})
  with pytest.raises(CheckpointError, match=r"missing in checkpoint: decoder/layers_0/.*"
                     r"unexpected in checkpoint: encoder/layers/attention/query/kernel.*"
                     r"likely cause: the checkpoint stores scanned layers"):
    cf.load_params(str(tmp_path), _abstract())


def test_corrupt_files_are_named(tmp_path, params, caplog):
  cf.save_t5x(params, str(tmp_path / "t5x"))
  chunk_dir = tmp_path / "t5x" / "target.decoder.logits_dense.kernel"
  (chunk_dir / "0.0").write_bytes(b"not gzip")
  with pytest.raises(CheckpointError, match=r"cannot read decoder/logits_dense/kernel .*corrupt"):
    cf.load_params(str(tmp_path / "t5x"), _abstract())
  # A lost chunk reads as zeros (zarr's fill value): loaded, but with a warning naming it.
  os.remove(chunk_dir / "0.0")
  loaded = cf.load_params(str(tmp_path / "t5x"), _abstract())
  assert not np.any(loaded["decoder"]["logits_dense"]["kernel"])
  assert "decoder/logits_dense/kernel: 1 of 1 zarr chunks are missing" in caplog.text

  msgpack = tmp_path / "t5x" / "checkpoint"
  msgpack.write_bytes(msgpack.read_bytes()[:100])
  with pytest.raises(CheckpointError, match="checkpoint file .* is unreadable or corrupt"):
    cf.load_params(str(tmp_path / "t5x"), _abstract())

  cf.save_params(params, str(tmp_path / "hf"), "hf", config=CONFIG)
  weights = tmp_path / "hf" / "model.safetensors"
  weights.write_bytes(weights.read_bytes()[:-64])
  with pytest.raises(CheckpointError, match="unreadable or corrupt"):
    cf.load_params(str(tmp_path / "hf"), _abstract())


# ----------------------------------------------------------------------------- Hugging Face

def test_hf_export_follows_transformers_layout(tmp_path, params):
  from safetensors.numpy import load_file
  hf_checkpoints.export_hf(params, CONFIG, str(tmp_path))
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
  assert hf_checkpoints.config_from_hf(config, activation_dtype=jnp.float32) == CONFIG


def _write_safetensors_by_hand(path, tensors):
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


def test_reads_sharded_bfloat16_hf_checkpoint_with_tied_scaled_output(tmp_path, params):
  """Two shards with an index, bfloat16 weights, no lm_head and transformers' default config
  (tied and rescaled output layer): the output layer becomes shared.T * d_model**-0.5."""
  from safetensors.numpy import load_file
  hf_checkpoints.export_hf(params, CONFIG, str(tmp_path / "export"))
  tensors = load_file(str(tmp_path / "export" / "model.safetensors"))
  del tensors["lm_head.weight"]
  tensors["encoder.embed_tokens.weight"] = tensors.pop("shared.weight")  # another tied name
  names = sorted(tensors)
  shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
            "model-00002-of-00002.safetensors": names[len(names) // 2:]}
  (tmp_path / "hf").mkdir()
  for file, keys in shards.items():
    _write_safetensors_by_hand(tmp_path / "hf" / file, {
        k: tensors[k].astype(ml_dtypes.bfloat16) for k in keys})
  (tmp_path / "hf" / "model.safetensors.index.json").write_text(json.dumps(
      {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}))
  config = json.loads((tmp_path / "export" / "config.json").read_text())
  del config["tie_word_embeddings"], config["scale_decoder_outputs"]
  (tmp_path / "hf" / "config.json").write_text(json.dumps(config))

  loaded = cf.load_params(str(tmp_path / "hf"), _abstract())
  rounded = jax.tree.map(lambda x: x.astype(ml_dtypes.bfloat16).astype(np.float32), params)
  embedding = rounded["token_embedder"]["embedding"]
  rounded["decoder"]["logits_dense"]["kernel"] = embedding.T * np.float32(32 ** -0.5)
  _assert_exact(rounded, loaded)


def test_refuses_t5_1_0(tmp_path, params):
  hf_checkpoints.export_hf(params, CONFIG, str(tmp_path))
  config = json.loads((tmp_path / "config.json").read_text())
  config["feed_forward_proj"] = "relu"
  (tmp_path / "config.json").write_text(json.dumps(config))
  with pytest.raises(CheckpointError, match="feed_forward_proj='relu'.*T5 1.1"):
    cf.load_params(str(tmp_path), _abstract())


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
    cf.load_params(str(tmp_path / "untied"), _abstract())
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
  params = cf.load_params(str(tmp_path / "hf"), _abstract())
  ours = np.asarray(model.logits(params, {"encoder_input_tokens": enc,
                                          "decoder_input_tokens": dec}))
  assert np.abs(expected).max() > 1.0  # not a trivially small comparison
  np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)

  hf_checkpoints.export_hf(params, CONFIG, str(tmp_path / "export"))
  exported, info = transformers.T5ForConditionalGeneration.from_pretrained(
      str(tmp_path / "export"), output_loading_info=True)
  assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
  np.testing.assert_allclose(_hf_logits(exported.eval(), enc, dec), ours, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- init_from

def test_init_from_starts_training_from_the_given_params(tmp_path, params):
  cf.save_t5x(params, str(tmp_path / "pretrained" / "checkpoint_1000000"), dtype=np.float32)
  B, L, T = 8, 6, 5
  rng = np.random.default_rng(1)
  batch = {"encoder_input_tokens": rng.integers(2, 64, (B, L)).astype(np.int32),
           "decoder_input_tokens": rng.integers(2, 64, (B, T)).astype(np.int32),
           "decoder_target_tokens": rng.integers(2, 64, (B, T)).astype(np.int32),
           "decoder_loss_weights": np.ones((B, T), np.float32)}
  model = t5.EncoderDecoderModel(CONFIG)

  def run(run_dir, num_steps, init_from):
    return trainer.train(
        run_dir=str(tmp_path / run_dir), model=model, task="unused",
        feature_lengths={"inputs": L, "targets": T}, batch_size=B, num_train_steps=num_steps,
        objective=objectives.MLE(),
        partitioner=Partitioner((1, 1), devices=tuple(jax.devices()[:1])),  # compiles fastest
        optimizer=lambda schedule: optax.adam(schedule),
        schedule=lambda total_steps: optax.constant_schedule(1e-2), checkpoint_every=100,
        log_every=1, eval_examples=0, batches=iter(lambda: batch, None), tensorboard=False,
        init_from=init_from)

  # No steps: the run's step-0 checkpoint holds exactly the imported parameters.
  assert run("run", 0, str(tmp_path / "pretrained"))["final_step"] == 0
  _assert_exact(params, cf.load_params(str(tmp_path / "run"), _abstract()))
  # Resuming ignores init_from (here a path that does not exist) and trains on from them:
  # the first logged loss is the MLE loss of the imported parameters.
  summary = run("run", 1, str(tmp_path / "nowhere"))
  expected_loss, _ = objectives.MLE()(params, batch, None, model)
  np.testing.assert_allclose(summary["loss_first"], float(expected_loss), rtol=1e-5)
  # A new run with a missing init_from fails clearly instead of starting from scratch.
  with pytest.raises(CheckpointError, match="nowhere: the path does not exist"):
    run("other", 1, str(tmp_path / "nowhere"))
