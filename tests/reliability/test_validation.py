"""Settings checked before training (each names the `train.*` binding to fix), and a start that
fails before its first checkpoint leaves nothing that blocks the corrected command."""
import dataclasses
import os
import subprocess
import sys

import pytest

from irl_lm import runner
from irl_lm.decoding.config import DecodingConfig
from irl_lm.jobs import common
from irl_lm.partitioning import Partitioner, PartitioningError
from irl_lm.training import objectives

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)


def _settings(**overrides):
  """A valid train job's settings on the 8 simulated devices (data axis 8)."""
  settings = dict(model=object(), task="unused", feature_lengths={"inputs": 16, "targets": 8},
                  optimizer=object(), schedule=object(), partitioner=Partitioner((-1, 1)),
                  batch_size=16, num_train_steps=60, objective=objectives.IQLearn(),
                  checkpoint_every=20, keep_checkpoints=2, log_every=10, eval_examples=32,
                  eval_batch_size=16, decoding=DecodingConfig(), eval_every=20,
                  eval_diversity_examples=0, eval_diversity_samples=4, pack=False, seed=0)
  settings.update(overrides)
  return settings


def test_valid_settings_pass():
  settings = _settings()
  assert common.check_settings(settings, training=True) == settings
  common.check_settings(_settings(eval_batch_size=None, keep_checkpoints=None), training=True)
  # Without evaluation, evaluation settings are not looked at.
  common.check_settings(_settings(eval_examples=0, eval_every=0, eval_batch_size=12),
                        training=True)


@pytest.mark.parametrize("overrides,message", [
    ({"eval_batch_size": 12}, "train.eval_batch_size = 12 is not divisible by the mesh's data "
     "axis (8) and the 1 host(s): choose a multiple of 8, or leave it unset to use "
     "train.batch_size."),
    ({"decoding": DecodingConfig(method="nucleus")}, "train.decoding is invalid: unknown "
     "decoding method 'nucleus': use greedy, sample or beam."),
    ({"decoding": DecodingConfig(method="beam", calculator=True)}, "train.decoding is invalid: "
     "the calculator works with greedy decoding and plain temperature sampling, not with beam4."),
    ({"decoding": DecodingConfig(method="sample", temperature=-1.0, top_p=0.0)},
     "train.decoding is invalid: temperature -1.0 is negative (use >= 0; 0 is greedy); top_p "
     "0.0 must be in (0, 1] (1 disables it)."),
    ({"decoding": DecodingConfig(method="beam", beam_size=0)}, "train.decoding is invalid: "
     "beam_size 0 must be an integer >= 1."),
    ({"log_every": 0}, "train.log_every = 0 is invalid: use an integer >= 1."),
    ({"keep_checkpoints": 0}, "train.keep_checkpoints = 0 is invalid: use an integer >= 1 (or "
     "None)."),
    ({"checkpoint_every": -5}, "train.checkpoint_every = -5 is invalid: use an integer >= 0."),
    ({"num_train_steps": 2.5}, "train.num_train_steps = 2.5 is invalid: use an integer >= 0."),
    ({"eval_diversity_examples": 4, "eval_diversity_samples": 1}, "train.eval_diversity_samples "
     "= 1 is invalid: Self-BLEU compares samples with each other, use 2 or more."),
    ({"feature_lengths": {"inputs": 16, "targets": 0}}, "train.feature_lengths = {'inputs': 16, "
     "'targets': 0} is invalid: use e.g. {'inputs': 512, 'targets': 128} (positive integers)."),
    ({"objective": objectives.IQLearnOnline(), "pack": True}, "IQLearnOnline samples "
     "completions per input and needs unpacked batches: set train.pack = False."),
    ({"objective": objectives.IQLearnOnline(sampling=DecodingConfig("sample", top_p=1.5))},
     "IQLearnOnline.sampling is invalid: top_p 1.5 must be in (0, 1] (1 disables it)."),
])
def test_invalid_settings_are_refused_naming_the_binding(overrides, message):
  with pytest.raises(common.JobError) as info:
    common.check_settings(_settings(**overrides), training=True)
  assert str(info.value) == message


def test_batch_size_that_does_not_split_over_the_mesh():
  with pytest.raises(PartitioningError, match="batch size 12 is not divisible by the mesh's "
                     r"data axis \(8\)"):
    common.check_settings(_settings(batch_size=12), training=True)


def test_eval_every_that_cannot_run_is_a_warning(caplog):
  common.check_settings(_settings(eval_every=60), training=True)
  common.check_settings(_settings(eval_examples=0, eval_every=20), training=True)
  assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
      "train.eval_every = 60 is not below train.num_train_steps = 60: only the step-0 and "
      "final evaluations run.",
      "train.eval_every = 20 does nothing: train.eval_examples = 0 turns evaluation off."]


def test_config_gin_is_provisional_until_the_first_checkpoint(tmp_path):
  run_dir = str(tmp_path)
  runner.prepare_run_dir(run_dir, "train.init_from = '/nowhere'\n", allow_config_change=False,
                         has_checkpoint=False)
  runner.prepare_run_dir(run_dir, "train.init_from = '/pretrained'\n",
                         allow_config_change=False, has_checkpoint=False)  # replaced
  assert (tmp_path / "config.gin").read_text() == "train.init_from = '/pretrained'\n"
  with pytest.raises(runner.RunDirError, match="different configuration"):
    runner.prepare_run_dir(run_dir, "train.init_from = '/other'\n", allow_config_change=False,
                           has_checkpoint=True)


def _main(*bindings, run_dir, devices=1):
  env = dict(ENV, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return subprocess.run(
      [sys.executable, "-m", "irl_lm.main", "--gin_file=gin/iqlearn_tiny.gin",
       f"--gin_bindings=run.run_dir = '{run_dir}'",
       *[f"--gin_bindings={b}" for b in bindings]], cwd=REPO, env=env, capture_output=True,
      text=True, timeout=900)


def test_main_refuses_an_eval_batch_size_before_training(tmp_path):
  result = _main("train.eval_batch_size = 30", run_dir=tmp_path / "run", devices=4)
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1] == (
      "error: train.eval_batch_size = 30 is not divisible by the mesh's data axis (4) and the 1 "
      "host(s): choose a multiple of 4, or leave it unset to use train.batch_size.")
  assert not os.path.exists(tmp_path / "run")  # nothing written


@pytest.mark.slow
def test_failed_start_does_not_block_the_corrected_command(tmp_path):
  run_dir = tmp_path / "run"
  short = ("train.num_train_steps = 2", "train.checkpoint_every = 2", "train.log_every = 1",
           "train.eval_examples = 0", "train.tensorboard = False")
  failed = _main(*short, f"train.init_from = '{tmp_path}/nowhere'", run_dir=run_dir)
  assert failed.returncode == 2, failed.stderr[-3000:]
  assert "nowhere: the path does not exist" in failed.stderr.strip().splitlines()[-1]
  assert not os.path.exists(run_dir / "run.lock")
  corrected = _main(*short, run_dir=run_dir)
  assert corrected.returncode == 0, corrected.stderr[-3000:]
  assert os.listdir(run_dir / "checkpoints") == ["2"]
  assert "init_from" not in (run_dir / "config.gin").read_text()
