"""The command line, end to end: the README's main job (shortened) and its clear errors."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args, cwd, env_extra=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  env["XLA_FLAGS"] = ""  # one CPU device, as a user's laptop
  env.update(env_extra or {})
  return subprocess.run([sys.executable, "-m", "irl_lm.main", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_tiny_iqlearn_run_trains_checkpoints_and_reports_rouge(tmp_path):
  run_dir = tmp_path / "run"
  result = _main("--gin_file=gin/iqlearn_tiny.gin",
                 "--gin_bindings=TrainSettings.num_train_steps = 40",
                 "--gin_bindings=TrainSettings.log_every = 20",
                 "--gin_bindings=CheckpointSettings.every = 20",
                 "--gin_bindings=EvalSettings.examples = 32",
                 "--gin_bindings=EvalSettings.batch_size = 32",
                 f"--gin_bindings=run.run_dir = '{run_dir}'", cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Validation (32 examples): rouge1" in result.stdout
  assert sorted(os.listdir(run_dir / "checkpoints"), key=int) == ["20", "40"]
  records = [json.loads(l) for l in open(run_dir / "metrics.jsonl")]
  train = [r for r in records if "train/loss" in r]
  assert [r["step"] for r in train] == [20, 40]
  assert train[-1]["train/loss"] < train[0]["train/loss"]
  evals = [r for r in records if "eval_validation/rouge1" in r]
  assert len(evals) == 1 and 0.0 <= evals[0]["eval_validation/rouge1"] <= 100.0
  summary = json.load(open(run_dir / "eval_validation_greedy_summary.json"))
  assert summary["num_examples"] == 32
  predictions = [json.loads(l) for l in open(run_dir / "eval_validation_greedy.jsonl")]
  assert len(predictions) == 32 and all(set(p) >= {"input", "reference", "output", "scores"}
                                        for p in predictions)
  assert os.path.exists(run_dir / "config.gin")
  assert os.listdir(run_dir / "tensorboard")

  # Same directory, one training binding changed: refused, nothing overwritten.
  again = _main("--gin_file=gin/iqlearn_tiny.gin",
                "--gin_bindings=TrainSettings.num_train_steps = 40",
                "--gin_bindings=IQLearn.td_weight = 0.0",
                f"--gin_bindings=run.run_dir = '{run_dir}'", cwd=REPO)
  assert again.returncode == 2
  assert "different configuration" in again.stderr and "td_weight" in again.stderr
  assert sorted(os.listdir(run_dir / "checkpoints"), key=int) == ["20", "40"]


@pytest.mark.parametrize("bindings,message", [
    (["IQLearnn.td_weight = 0.0"], "unknown gin configurable 'IQLearnn'"),
    (["Partitioner.mesh_shape = (3, 1)"], "mesh_shape (3, 1) needs 3 devices but 1 are"),
    (["TrainSettings.batch_size = 30", "Partitioner.mesh_shape = (-1, 1)"], None),
])
def test_bad_configuration_gives_one_clear_sentence(bindings, message, tmp_path):
  args = ["--gin_file=gin/iqlearn_tiny.gin", f"--gin_bindings=run.run_dir = '{tmp_path}'"]
  args += [f"--gin_bindings={b}" for b in bindings]
  env = None
  if message is None:  # batch of 30 over 4 simulated devices
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    message = "batch size 30 is not divisible by the mesh's data axis (4)"
  result = _main(*args, "--gin_bindings=run.mode = 'check'", cwd=REPO, env_extra=env)
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and message in last
  assert "Traceback" not in result.stderr


def test_missing_gin_file(tmp_path):
  result = _main("--gin_file=gin/nope.gin", cwd=tmp_path)
  assert result.returncode == 2
  assert "gin file 'gin/nope.gin' not found" in result.stderr
