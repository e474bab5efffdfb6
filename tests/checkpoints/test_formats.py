"""Checkpoint format detection and dispatch: every format written, detected and read back
exactly; mismatches named with their likely cause; loading straight into shardings and into a
fresh train state (what the trainer's `init_from` does)."""

import dataclasses

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import traverse_util
from jax.sharding import NamedSharding, PartitionSpec as P

from irl_lm.checkpoints import formats as cf, manager as checkpoints, t5x
from irl_lm.checkpoints.manager import CheckpointError
from irl_lm.models import t5, t5_checkpoint
from irl_lm.partitioning import Partitioner
from irl_lm.training import objectives, state as state_lib, step as step_lib
from tests.checkpoints.helpers import (CONFIG, SHAPES, abstract, assert_exact,  # noqa: F401
                                       params, random_params)


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("fmt", ["t5x", "orbax", "hf"])
def test_round_trip_is_exact(tmp_path, params, fmt):
  out = tmp_path / "model" / "checkpoint_7"
  cf.save_params(params, str(out), fmt, config=CONFIG, step=7)
  source = cf.detect_format(str(tmp_path / "model"))  # the model directory: newest checkpoint
  expected_path = {"t5x": out, "orbax": out / "state", "hf": out}[fmt]
  assert (source.format, source.path) == (fmt, str(expected_path))
  assert source.step == (None if fmt == "hf" else 7)
  assert_exact(params, cf.load_params(str(out), abstract()))
  assert t5_checkpoint.infer_config(
      cf.read_shapes(source), activation_dtype=CONFIG.activation_dtype) == CONFIG


def test_reads_our_own_run_checkpoints(tmp_path, params):
  state = state_lib.create_train_state(params, optax.adam(1e-3), jax.random.PRNGKey(0))
  checkpointer = checkpoints.Checkpointer(str(tmp_path / "run" / "checkpoints"), async_save=False)
  checkpointer.save(4, state)
  checkpointer.save(9, state.replace(params=jax.tree.map(lambda x: x + 1, params)))
  checkpointer.close()
  for path in ("run", "run/checkpoints", "run/checkpoints/9", "run/checkpoints/9/state"):
    source = cf.detect_format(str(tmp_path / path))
    assert (source.format, source.step) == ("irl_lm", 9), path
  assert_exact(jax.tree.map(lambda x: x + 1, params),
               cf.load_params(str(tmp_path / "run"), abstract()))
  assert_exact(params, cf.load_params(str(tmp_path / "run/checkpoints/4"), abstract()))


def test_reads_run_checkpoints_by_relative_path(tmp_path, params, monkeypatch):
  state = state_lib.create_train_state(params, optax.adam(1e-3), jax.random.PRNGKey(0))
  checkpointer = checkpoints.Checkpointer(str(tmp_path / "run" / "checkpoints"), async_save=False)
  checkpointer.save(3, state)
  checkpointer.close()
  monkeypatch.chdir(tmp_path)  # what `train.init_from = 'results/.../seed0'` gives
  assert cf.detect_format("run").format == "irl_lm"
  assert_exact(params, cf.load_params("run", abstract()))


def test_loads_directly_into_shardings(tmp_path, params):
  partitioner = Partitioner((2, 4))
  model = t5.EncoderDecoderModel(CONFIG)
  shardings = partitioner.shardings_for(model.param_logical_axes(SHAPES), abstract())
  t5x.save_t5x(params, str(tmp_path / "t5x"))
  t5x.save_t5x_orbax(params, str(tmp_path / "orbax"))
  cf.save_params(params, str(tmp_path / "hf"), "hf", config=CONFIG)
  for fmt in ("t5x", "orbax", "hf"):
    loaded = cf.load_params(str(tmp_path / fmt), abstract(), shardings=shardings)
    query = loaded["decoder"]["layers_0"]["self_attention"]["query"]["kernel"]
    assert query.sharding == NamedSharding(partitioner.mesh, P(None, "model")), fmt
    assert_exact(params, loaded)


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
  (tmp_path / "torch" / "config.json").write_text(
      '{"architectures": ["T5ForConditionalGeneration"]}')
  with pytest.raises(CheckpointError, match=r"re-save with `T5ForConditionalGeneration\."
                     r"from_pretrained\(dir\)\.save_pretrained\(new_dir\)`"):
    cf.detect_format(str(tmp_path / "torch"))


def test_wrong_size_preset_is_named(tmp_path):
  tiny = t5.t5_1_1_config("tiny", vocab_size=64)
  t5x.save_t5x(random_params(tiny), str(tmp_path / "checkpoint_1"))
  with pytest.raises(CheckpointError) as error:
    cf.load_params(str(tmp_path), abstract())
  message = str(error.value)
  assert "T5X legacy (msgpack + zarr) checkpoint at" in message
  assert "shape differs: decoder/decoder_norm/scale checkpoint (128,) vs model (32,)" in message
  assert "unexpected in checkpoint: decoder/layers_1/" in message
  assert "wrong size preset: the checkpoint is T5 1.1 'tiny'" in message
  assert "set t5_1_1_config.size = 'tiny'" in message


def test_wrong_vocabulary_is_named(tmp_path, params):
  t5x.save_t5x_orbax(params, str(tmp_path))
  bigger_vocab = abstract(dataclasses.replace(CONFIG, vocab_size=128))
  with pytest.raises(CheckpointError, match=r"token_embedder/embedding checkpoint \(64, 32\) vs "
                     r"model \(128, 32\).*vocabulary size differs.*vocab_size = 64"):
    cf.load_params(str(tmp_path), bigger_vocab)
  # The same diagnosis when the family is named explicitly; an unknown family is refused.
  with pytest.raises(CheckpointError, match="vocabulary size differs"):
    cf.load_params(str(tmp_path), bigger_vocab, family="t5_1_1")
  with pytest.raises(CheckpointError, match="unknown model family 'gpt'; known: t5_1_1"):
    cf.load_params(str(tmp_path), abstract(), family="gpt")


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
    cf.load_params(str(tmp_path), abstract())


def test_save_params_refuses_unknown_formats_and_hf_without_config(tmp_path, params):
  with pytest.raises(ValueError, match="cannot write format 'zip'"):
    cf.save_params(params, str(tmp_path), "zip")
  with pytest.raises(ValueError, match="needs the model's config"):
    cf.save_params(params, str(tmp_path), "hf")


# ----------------------------------------------------------------------------- init_from

def test_loaded_params_start_a_fresh_train_state(tmp_path, params):
  """What the trainer does with `init_from` (and no checkpoint of its own yet): load the
  parameters in the layout's shardings, then build the step-0 state around them."""
  t5x.save_t5x(params, str(tmp_path / "pretrained" / "checkpoint_1000000"), dtype=np.float32)
  B, L, T = 8, 6, 5
  rng = np.random.default_rng(1)
  batch = {"encoder_input_tokens": rng.integers(2, 64, (B, L)).astype(np.int32),
           "decoder_input_tokens": rng.integers(2, 64, (B, T)).astype(np.int32),
           "decoder_target_tokens": rng.integers(2, 64, (B, T)).astype(np.int32),
           "decoder_loss_weights": np.ones((B, T), np.float32)}
  model = t5.EncoderDecoderModel(CONFIG)
  partitioner = Partitioner((1, 1), devices=tuple(jax.devices()[:1]))  # compiles fastest
  schedule = optax.constant_schedule(1e-2)
  tx = optax.adam(schedule)
  layout = state_lib.build_state_layout(
      model, tx, partitioner, {"encoder_input_tokens": (B, L), "decoder_input_tokens": (B, T)},
      seed=0, objective=objectives.MLE())

  loaded = cf.load_params(str(tmp_path / "pretrained"), layout.abstract.params,
                          shardings=layout.param_shardings)
  for array, sharding in zip(jax.tree.leaves(loaded), jax.tree.leaves(layout.param_shardings)):
    assert isinstance(array, jax.Array) and array.sharding == sharding
  state = layout.init_from_params(loaded)
  # Step 0, and a run checkpoint of it holds exactly the imported parameters.
  assert int(state.step) == 0
  checkpointer = checkpoints.Checkpointer(str(tmp_path / "run" / "checkpoints"), async_save=False)
  checkpointer.save(0, state)
  checkpointer.close()
  assert_exact(params, cf.load_params(str(tmp_path / "run"), abstract()))
  # Training on from them: the first step's loss is the MLE loss of the imported parameters.
  train_step = step_lib.make_train_step(model=model, objective=objectives.MLE(), tx=tx,
                                        schedule=schedule, partitioner=partitioner,
                                        shardings=layout.shardings)
  _, metrics = train_step(state, jax.device_put(batch, partitioner.batch_sharding()))
  expected_loss, _ = objectives.MLE()(params, batch, None, model)
  np.testing.assert_allclose(float(metrics["loss"]), float(expected_loss), rtol=1e-5)
  # A missing init_from fails clearly instead of starting from scratch.
  with pytest.raises(CheckpointError, match="nowhere: the path does not exist"):
    cf.load_params(str(tmp_path / "nowhere"), layout.abstract.params,
                   shardings=layout.param_shardings)
