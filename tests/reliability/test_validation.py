"""Settings checked before training (each names the binding to fix), and a start that
fails before its first checkpoint leaves nothing that blocks the corrected command."""
import os
import subprocess
import sys
import types

import pytest

from irl_lm import errors, runner
from irl_lm.decoding.config import DecodingConfig
from irl_lm.partitioning import Partitioner, PartitioningError
from irl_lm.training import objectives
from irl_lm.training.settings import CheckpointSettings, EvalSettings, RunSettings, TrainSettings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)


def _settings(training=None, evaluation=None, checkpoints=None, **run):
  """A valid training run's settings on the 8 simulated devices (data axis 8), with the given
  fields of each group replaced."""
  return RunSettings(**{
      "model": object(), "task": "unused", "feature_lengths": {"inputs": 16, "targets": 8},
      "partitioner": Partitioner((-1, 1)), "objective": objectives.IQLearn(),
      "training": TrainSettings(**{
          "batch_size": 16, "num_train_steps": 60, "log_every": 10, "pack": False, "seed": 0,
          "optimizer": lambda schedule: None, "schedule": lambda total_steps: None,
          **(training or {})}),
      "evaluation": EvalSettings(**{
          "examples": 32, "batch_size": 16, "decoding": DecodingConfig(), "every": 20,
          "diversity_examples": 0, "diversity_samples": 4, **(evaluation or {})}),
      "checkpoints": CheckpointSettings(**{"every": 20, "keep": 2, **(checkpoints or {})}),
      **run})


def test_valid_settings_pass():
  settings = _settings()
  assert settings.validate() is settings
  _settings(evaluation={"batch_size": None}, checkpoints={"keep": None}).validate()
  # Without evaluation, evaluation settings are not looked at.
  _settings(evaluation={"examples": 0, "every": 0, "batch_size": 12}).validate()
  _settings(evaluation={"examples": 0, "decoding": DecodingConfig(method="nucleus")}).validate()


@pytest.mark.parametrize("overrides,message", [
    ({"evaluation": {"batch_size": 12}}, "EvalSettings.batch_size = 12 is not divisible by the "
     "mesh's data axis (8) and the 1 host(s): choose a multiple of 8, or leave it unset to use "
     "TrainSettings.batch_size."),
    ({"evaluation": {"decoding": DecodingConfig(method="nucleus")}}, "EvalSettings.decoding is "
     "invalid: unknown decoding method 'nucleus': use greedy, sample or beam."),
    ({"evaluation": {"decoding": DecodingConfig(method="beam", calculator=True)}},
     "EvalSettings.decoding is invalid: the calculator works with greedy decoding and plain "
     "temperature sampling, not with beam4."),
    ({"evaluation": {"decoding": DecodingConfig(method="sample", temperature=-1.0, top_p=0.0)}},
     "EvalSettings.decoding is invalid: temperature -1.0 is negative (use >= 0; 0 is greedy); "
     "top_p 0.0 must be in (0, 1] (1 disables it)."),
    ({"evaluation": {"decoding": DecodingConfig(method="beam", beam_size=0)}},
     "EvalSettings.decoding is invalid: beam_size 0 must be an integer >= 1."),
    ({"training": {"log_every": 0}}, "TrainSettings.log_every = 0 is invalid: use an integer >= "
     "1."),
    ({"checkpoints": {"keep": 0}}, "CheckpointSettings.keep = 0 is invalid: use an integer >= 1 "
     "(or None)."),
    ({"checkpoints": {"every": -5}}, "CheckpointSettings.every = -5 is invalid: use an integer "
     ">= 0."),
    ({"training": {"num_train_steps": 2.5}}, "TrainSettings.num_train_steps = 2.5 is invalid: "
     "use an integer >= 0."),
    ({"training": {"on_nonfinite": "sometimes"}}, "TrainSettings.on_nonfinite = 'sometimes' is "
     "not a mode: use 'stop' (stop at the first non-finite loss or gradient) or 'skip' (skip "
     "that update)."),
    ({"evaluation": {"diversity_examples": 4, "diversity_samples": 1}},
     "EvalSettings.diversity_samples = 1 is invalid: Self-BLEU compares samples with each other, "
     "use 2 or more."),
    ({"feature_lengths": {"inputs": 16, "targets": 0}}, "train.feature_lengths = {'inputs': 16, "
     "'targets': 0} is invalid: use e.g. {'inputs': 512, 'targets': 128} (positive integers)."),
    ({"objective": objectives.IQLearnOnline(), "training": {"pack": True}}, "IQLearnOnline "
     "samples completions per input and needs unpacked batches: set TrainSettings.pack = False."),
    ({"model": types.SimpleNamespace(pad_is_token=True), "training": {"pack": True}},
     "TrainSettings.pack = True packs examples by seqio's rule, which takes id 0 for padding, "
     "but this model's vocabulary has a real token 0 (an imported checkpoint's): set "
     "TrainSettings.pack = False."),
    ({"objective": objectives.IQLearnOnline(sampling=DecodingConfig("sample", top_p=1.5))},
     "IQLearnOnline.sampling is invalid: top_p 1.5 must be in (0, 1] (1 disables it)."),
    ({"model": None, "task": None}, "the configuration lacks train.model, train.task: use the gin "
     "files the run was trained with."),
    ({"training": {"batch_size": None}}, "TrainSettings.batch_size is not set: bind it in the gin "
     "file (e.g. TrainSettings.batch_size = 100)."),
])
def test_invalid_settings_are_refused_naming_the_binding(overrides, message):
  with pytest.raises(errors.SettingError) as info:
    _settings(**overrides).validate()
  assert str(info.value) == message


def test_batch_size_that_does_not_split_over_the_mesh():
  with pytest.raises(PartitioningError, match="batch size 12 is not divisible by the mesh's "
                     r"data axis \(8\)"):
    _settings(training={"batch_size": 12}).validate()


def test_eval_every_that_cannot_run_is_a_warning(caplog):
  _settings(evaluation={"every": 60}).validate()
  _settings(evaluation={"examples": 0, "every": 20}).validate()
  assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
      "EvalSettings.every = 60 is not below TrainSettings.num_train_steps = 60: only the step-0 "
      "and final evaluations run.",
      "EvalSettings.every = 20 does nothing: EvalSettings.examples = 0 turns evaluation off."]


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
  result = _main("EvalSettings.batch_size = 30", run_dir=tmp_path / "run", devices=4)
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1] == (
      "error: EvalSettings.batch_size = 30 is not divisible by the mesh's data axis (4) and the 1 "
      "host(s): choose a multiple of 4, or leave it unset to use TrainSettings.batch_size.")
  assert not os.path.exists(tmp_path / "run")  # nothing written


@pytest.mark.slow
def test_failed_start_does_not_block_the_corrected_command(tmp_path):
  run_dir = tmp_path / "run"
  short = ("TrainSettings.num_train_steps = 2", "CheckpointSettings.every = 2",
           "TrainSettings.log_every = 1",
           "EvalSettings.examples = 0", "TrainSettings.tensorboard = False")
  failed = _main(*short, f"train.init_from = '{tmp_path}/nowhere'", run_dir=run_dir)
  assert failed.returncode == 2, failed.stderr[-3000:]
  assert "nowhere: the path does not exist" in failed.stderr.strip().splitlines()[-1]
  assert not os.path.exists(run_dir / "run.lock")
  corrected = _main(*short, run_dir=run_dir)
  assert corrected.returncode == 0, corrected.stderr[-3000:]
  assert os.listdir(run_dir / "checkpoints") == ["2"]
  assert "init_from" not in (run_dir / "config.gin").read_text()
