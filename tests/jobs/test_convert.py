"""The conversion command line: `python -m irl_lm.convert --from A --to B [--format ...]`."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import traverse_util

from irl_lm.jobs import convert
from irl_lm.models import t5
from irl_lm.checkpoints import formats as cf, t5x
from irl_lm.checkpoints.manager import CheckpointError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# T5 1.1 'tiny' dimensions with a small vocabulary: the preset is recognised from the shapes.
TINY = t5.t5_1_1_config("tiny", vocab_size=64)


@pytest.fixture(scope="module")
def params():
  model = t5.EncoderDecoderModel(TINY)
  shapes = {"encoder_input_tokens": (1, 1), "decoder_input_tokens": (1, 1)}
  abstract = jax.eval_shape(lambda rng: model.init(rng, shapes), jax.random.key(0))
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32), abstract)


def _flat(tree):
  return traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def test_converts_through_every_format_exactly(tmp_path, params):
  t5x.save_t5x(params, str(tmp_path / "t5x" / "checkpoint_42"), step=42)
  summary = convert.convert(str(tmp_path / "t5x"), str(tmp_path / "hf"), format="hf")
  assert summary["size"] == "tiny" and summary["source"].step == 42
  assert summary["family"] == "t5_1_1"
  assert summary["param_count"] == sum(int(np.prod(v.shape)) for v in _flat(params).values())
  hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert (hf_config["d_model"], hf_config["num_heads"], hf_config["d_kv"], hf_config["d_ff"],
          hf_config["num_layers"], hf_config["vocab_size"]) == (128, 4, 32, 256, 2, 64)

  convert.convert(str(tmp_path / "hf"), str(tmp_path / "orbax" / "checkpoint_7"),
                  format="orbax", step=7)
  convert.convert(str(tmp_path / "orbax"), str(tmp_path / "back"), format="t5x")
  source = cf.detect_format(str(tmp_path / "back"))
  assert (source.format, source.step) == ("t5x", None)
  back = cf.load_params(source, jax.eval_shape(lambda: params))
  for key, value in _flat(params).items():
    np.testing.assert_array_equal(_flat(back)[key], value, err_msg=key)


def test_bfloat16_t5x_output(tmp_path, params):
  cf.save_params(params, str(tmp_path / "hf"), "hf", config=TINY)
  convert.convert(str(tmp_path / "hf"), str(tmp_path / "t5x"), format="t5x", dtype="bfloat16")
  zarray = json.loads((tmp_path / "t5x" / "target.token_embedder.embedding" / ".zarray")
                      .read_text())
  assert zarray["dtype"] == "bfloat16"
  back = cf.load_params(str(tmp_path / "t5x"), jax.eval_shape(lambda: params))
  embedding = params["token_embedder"]["embedding"]
  np.testing.assert_allclose(back["token_embedder"]["embedding"], embedding, rtol=1e-2)
  assert not np.array_equal(back["token_embedder"]["embedding"], embedding)  # really rounded


def test_wrong_size_flag_is_refused_with_the_right_one_named(tmp_path, params):
  t5x.save_t5x(params, str(tmp_path))
  with pytest.raises(CheckpointError, match=r"checkpoint is T5 1\.1 'tiny'.*model is T5 1\.1 "
                     r"'small'.*--size=tiny"):
    convert.convert(str(tmp_path), str(tmp_path / "out"), size="small")


def test_unrecognised_tree_is_refused_with_its_cause(tmp_path, params):
  flat = {k: v for k, v in _flat(params).items() if "/layers_" not in k}
  flat["encoder/layers/attention/query/kernel"] = np.zeros((128, 2, 4, 32), np.float32)
  t5x.save_t5x(traverse_util.unflatten_dict(flat, sep="/"), str(tmp_path / "checkpoint_1"))
  with pytest.raises(CheckpointError, match=r"does not hold the parameter tree of a known model "
                     r"family \(t5_1_1, llama; .*; the checkpoint stores scanned layers"):
    convert.convert(str(tmp_path), str(tmp_path / "out"))


def test_command_line(tmp_path, params):
  t5x.save_t5x_orbax(params, str(tmp_path / "checkpoint_3"), step=3)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  done = subprocess.run(
      [sys.executable, "-m", "irl_lm.convert", f"--from={tmp_path}", f"--to={tmp_path / 'hf'}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "converted the T5X Orbax checkpoint at" in done.stdout
  assert "(T5 1.1 'tiny', " in done.stdout and "to Hugging Face safetensors at" in done.stdout
  assert (tmp_path / "hf" / "model.safetensors").exists()

  failed = subprocess.run(
      [sys.executable, "-m", "irl_lm.convert", f"--from={tmp_path / 'nothing'}",
       f"--to={tmp_path / 'out'}"], cwd=REPO, env=env, capture_output=True, text=True,
      timeout=300)
  assert failed.returncode == 2
  assert "error: no checkpoint at" in failed.stderr and "Traceback" not in failed.stderr
