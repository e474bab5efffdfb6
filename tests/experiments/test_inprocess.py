"""The in-process sweep runner: choice of runner, failures recorded, resume, and the same files
and numbers as the subprocess runner on a tiny sweep."""
import json
import os
import subprocess
import sys

import gin
import pytest

from irl_lm.experiments import inprocess, sweeps
from tests.experiments import fakes

REPO = sweeps.REPO_ROOT


def test_default_runner_is_inprocess_unless_tpu_or_multi_process(tmp_path):
  none = (str(tmp_path / "accel*"),)
  assert inprocess.default_runner({}, none) == "inprocess"
  assert inprocess.default_runner({"SLURM_NTASKS": "1"}, none) == "inprocess"
  assert inprocess.default_runner({"TPU_WORKER_HOSTNAMES": "a,b"}, none) == "subprocess"
  assert inprocess.default_runner({"OMPI_COMM_WORLD_SIZE": "4"}, none) == "subprocess"
  (tmp_path / "accel0").write_text("")
  assert inprocess.default_runner({}, none) == "subprocess"
  assert inprocess.choose_runner("subprocess") == "subprocess"
  with pytest.raises(ValueError, match="unknown runner 'threads'"):
    inprocess.choose_runner("threads")


def test_failed_phases_are_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
  real = gin.get_configurable

  def run_or_crash(**kwargs):  # a bug (not a user error) in the point whose mode is 'crash'
    if gin.query_parameter("run.mode") == "crash":
      raise RuntimeError("a bug in run 'crash'")
    return real("run")(**kwargs)

  monkeypatch.setattr(gin, "get_configurable",
                      lambda name: run_or_crash if name == "run" else real(name))
  sweep = sweeps.make_sweep(
      "fails", ["gin/iqlearn_tiny.gin"], seeds=[0],
      points=[{"name": "typo", "bindings": ["IQLearnn.td_weight = 0.0"]},
              {"name": "crash", "bindings": ["run.mode = 'crash'"]},
              {"name": "typo_again", "bindings": ["IQLearnn.td_weight = 1.0"],
               "evaluate": False}])
  lines = []
  statuses = sweeps.execute(sweep, str(tmp_path), log=lines.append,
                            phase_runner=inprocess.InProcessRunner())
  assert [(s["status"], s["phase"], s["returncode"]) for s in statuses] == [
      ("failed", "train", 2), ("failed", "train", 1), ("failed", "train", 2)]
  assert "failed" in lines[1] and "train exit 1" in lines[1]
  typo = open(os.path.join(tmp_path, "fails", "typo", "seed0", sweeps.LOG_FILE)).read()
  assert "error: unknown gin configurable 'IQLearnn'" in typo and "(exit 2)" in typo
  assert "TrainSettings.seed = 0" in typo
  crash = open(os.path.join(tmp_path, "fails", "crash", "seed0", sweeps.LOG_FILE)).read()
  assert "Traceback" in crash and "a bug in run 'crash'" in crash
  assert sweeps.read_status(os.path.join(tmp_path, "fails", "crash", "seed0"))["phase"] == "train"
  assert gin.config_str() == ""  # cleared after every phase


def test_nonfinite_is_a_failed_run_and_a_preemption_stops_the_sweep(tmp_path, monkeypatch):
  from irl_lm.training import stopping
  sweep = sweeps.make_sweep("stops", ["gin/iqlearn_tiny.gin"], seeds=[0],
                            points=[{"name": "a", "bindings": []}])
  [run] = sweeps.expand(sweep, str(tmp_path))
  errors = iter([stopping.NonFiniteError("step 3 is not finite", step=3),
                 stopping.Preempted("preempted at step 5", step=5, exit_code=143)])

  def fake_run(**_):
    raise next(errors)

  real = gin.get_configurable
  monkeypatch.setattr(gin, "get_configurable",
                      lambda name: fake_run if name == "run" else real(name))
  runner = inprocess.InProcessRunner()
  result = runner(run, "train")
  assert result.returncode == 3 and "error: step 3 is not finite" in result.log
  with pytest.raises(SystemExit) as stopped:
    runner(run, "train")
  assert stopped.value.code == 143 and gin.config_str() == ""


def test_finished_runs_are_skipped(tmp_path):
  sweep = sweeps.make_sweep("done", ["gin/iqlearn_tiny.gin"], seeds=[0, 1],
                            points=[{"name": "mle", "bindings": []}])
  runs = sweeps.expand(sweep, str(tmp_path))
  fakes.fake_run(runs[0].run_dir)
  fakes.fake_run(runs[1].run_dir, evaluated=False)
  calls = []

  def phase_runner(run, phase):
    calls.append((run.seed, phase))
    return sweeps.PhaseResult(0)

  statuses = sweeps.execute(sweep, str(tmp_path), log=lambda _: None,
                            phase_runner=phase_runner)
  assert statuses[0]["skipped"] and calls == [(1, "evaluate")]


TINY_SWEEP = """
import irl_lm.experiments.sweeps
Sweep.name = 'tiny'
Sweep.gin_files = ['gin/iqlearn_tiny.gin']
Sweep.seeds = [0]
Sweep.bindings = ["TrainSettings.num_train_steps = 2", "TrainSettings.batch_size = 8",
                  "TrainSettings.log_every = 1", "CheckpointSettings.every = 2", "TrainSettings.tensorboard = False",
                  "make_schedule.warmup_steps = 0", "EvalSettings.examples = 8",
                  "EvalSettings.batch_size = 8"]
Sweep.evaluate_bindings = ["evaluate.settings = ['greedy']", "evaluate.num_examples = 8",
                           "evaluate.diversity_samples = 2"]
Sweep.grids = [{'method': 'iqlearn', 'parameter': 'IQLearn.td_weight', 'column': 'td_weight',
                'values': [0.0, 0.1]}]
"""


def _files(run_dir):
  """Relative paths of a run's files (checkpoint contents by folder: their names are random)."""
  out = set()
  for root, _, names in os.walk(run_dir):
    rel = os.path.relpath(root, run_dir)
    if rel.split(os.sep)[0] == "checkpoints":
      out.add(os.sep.join(rel.split(os.sep)[:2]))
      continue
    out.update(os.path.normpath(os.path.join(rel, n)) for n in names)
  return out


def _records(path):
  with open(path) as f:
    return [{k: v for k, v in json.loads(line).items() if "per_second" not in k} for line in f]


@pytest.mark.slow
def test_inprocess_and_subprocess_runners_give_the_same_files_and_numbers(tmp_path):
  sweep_file = tmp_path / "tiny.gin"
  sweep_file.write_text(TINY_SWEEP)
  env = dict(os.environ, PYTHONPATH=REPO, IRL_LM_HOST_ALLOCATOR="system")
  for runner in ("subprocess", "inprocess"):
    done = subprocess.run(
        [sys.executable, "-m", "irl_lm.experiments", f"--sweep={sweep_file}",
         f"--out_dir={tmp_path / runner}", f"--runner={runner}", "--no-figures"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"runner: {runner}" in done.stdout
  assert os.listdir(tmp_path / "inprocess" / ".jax_cache")  # compiled programs were cached
  for point in ("iqlearn_td_weight0", "iqlearn_td_weight0.1"):
    a, b = (str(tmp_path / r / "tiny" / point / "seed0") for r in ("subprocess", "inprocess"))
    assert _files(a) == _files(b)
    assert {"summary.json", "status.json", "config.gin", "metrics.jsonl",
            "eval_validation_greedy.jsonl", "checkpoints/2"} <= _files(a)
    numbers = sweeps.run_numbers(a)
    assert numbers == sweeps.run_numbers(b)
    assert "train.history.2.loss" in numbers and "evaluate.diversity.self_bleu.value" in numbers
    for name in ("metrics.jsonl", "eval_validation_greedy.jsonl",
                 "eval/stdlib_docstrings_validation_step2/greedy.jsonl",
                 "eval/stdlib_docstrings_validation_step2/diversity_K2_t1.jsonl"):
      assert _records(os.path.join(a, name)) == _records(os.path.join(b, name)), name
    assert (open(os.path.join(a, "config.gin")).read().replace(a, "RUN") ==
            open(os.path.join(b, "config.gin")).read().replace(b, "RUN"))
    assert sweeps.read_status(b)["status"] == "ok"
  # results.csv: the same rows apart from the rates and times
  csvs = [open(tmp_path / r / "results.csv").read().splitlines() for r in
          ("subprocess", "inprocess")]
  assert csvs[0][0] == csvs[1][0] and len(csvs[0]) == len(csvs[1]) == 1 + 2 * 3
