"""Every gin file parses and its model and sharded train state build abstractly."""

import glob
import os

import gin
import pytest

from irl_lm import config

GIN_FILES = sorted(
    os.path.relpath(p, config.GIN_DIR)
    for p in glob.glob(os.path.join(config.GIN_DIR, "*.gin")))
FRAGMENTS = sorted(
    os.path.relpath(p, config.GIN_DIR)
    for p in glob.glob(os.path.join(config.GIN_DIR, "*", "*.gin")))


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
  """A tiny decoder-only Hugging Face checkpoint (our own export) for the gin files that start
  from one (`CHECKPOINT = ...`)."""
  import jax  # pylint: disable=g-import-not-at-top
  from irl_lm.checkpoints import formats  # pylint: disable=g-import-not-at-top
  from irl_lm.models import decoder_only  # pylint: disable=g-import-not-at-top
  cfg = decoder_only.decoder_only_config("tiny", vocab_size=256)
  model = decoder_only.DecoderOnlyModel(cfg)
  path = str(tmp_path_factory.mktemp("hf"))
  formats.save_params(model.init(jax.random.key(0), {"decoder_input_tokens": (1, 4)}), path,
                      "hf", config=cfg)
  return path


@pytest.mark.parametrize("gin_file", GIN_FILES)
def test_runnable_gin_files_build_abstractly(gin_file, tmp_path, hf_checkpoint):
  extra = ([f"CHECKPOINT = '{hf_checkpoint}'"]
           if "CHECKPOINT =" in open(os.path.join(config.GIN_DIR, gin_file)).read() else [])
  config.parse([gin_file], ["run.mode = 'check'", f"run.run_dir = '{tmp_path}'", *extra])
  summary = gin.get_configurable("run")()
  assert summary["dry_run"] and summary["param_count"] > 0
  assert summary["mesh"]["data"] * summary["mesh"]["model"] == 8
  assert not os.listdir(tmp_path)  # a check writes nothing


def test_xl_pod_config_is_t5_1_1_xl_sharded_over_data_and_model(tmp_path):
  config.parse(["gin/iqlearn_xl.gin"], ["run.mode = 'check'", f"run.run_dir = '{tmp_path}'"])
  summary = gin.get_configurable("run")()
  # T5 1.1 XL (docs/design.md#t5-11-parameter-layout).
  assert summary["param_count"] == 2_849_757_184
  assert summary["mesh"] == {"data": 1, "model": 8}
  # Fully sharded: each of the 8 devices holds about 1/8 of the state, not all of it.
  assert summary["max_state_bytes_per_device"] < summary["state_bytes"] / 6
  assert gin.query_parameter("train.task") == "xsum"


@pytest.mark.parametrize("fragment", FRAGMENTS)
def test_fragments_parse(fragment):
  config.parse([fragment])


def test_unknown_binding_names_the_configurable():
  with pytest.raises(config.ConfigError, match="unknown gin configurable 'IQLearnn'"):
    config.parse(["gin/iqlearn_tiny.gin"], ["IQLearnn.td_weight = 0.0"])


def test_unknown_parameter_is_named():
  with pytest.raises(config.ConfigError, match="td_wieght"):
    config.parse(["gin/iqlearn_tiny.gin"], ["IQLearn.td_wieght = 0.0"])


def test_missing_gin_file_lists_available_ones():
  with pytest.raises(config.ConfigError, match="not found.*iqlearn_tiny.gin"):
    config.parse(["gin/nope.gin"])


def test_gin_files_resolve_against_gin_dir(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  assert os.path.samefile(config.resolve_gin_file("iqlearn_tiny.gin"),
                          os.path.join(config.GIN_DIR, "iqlearn_tiny.gin"))
  assert os.path.samefile(config.resolve_gin_file("gin/iqlearn_tiny.gin"),
                          os.path.join(config.GIN_DIR, "iqlearn_tiny.gin"))
