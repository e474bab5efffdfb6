"""A non-editable `pip install` of irl_lm runs the shipped gin files from any directory.

The install goes into a fresh virtual environment that borrows the dependencies of the
environment running the tests (a `.pth` line; `--no-deps`, nothing downloads), with gin-config
beside irl_lm in site-packages as a real install lays it out. The commands then run from a
directory that holds no checkout, so nothing can be found by a repository path.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig

import gin
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The quick-start gin file by bare name, made tiny: two steps, eight evaluation examples.
COMMAND = ["-m", "irl_lm.main", "--gin_file=iqlearn_arithmetic_decoder_tiny.gin"]
TINY = ["--gin_bindings=TrainSettings.num_train_steps = 2", "--gin_bindings=TrainSettings.batch_size = 8",
        "--gin_bindings=CheckpointSettings.every = 2", "--gin_bindings=EvalSettings.every = 0",
        "--gin_bindings=EvalSettings.examples = 8", "--gin_bindings=EvalSettings.batch_size = 8",
        "--gin_bindings=TrainSettings.tensorboard = False",
        "--gin_bindings=make_schedule.warmup_steps = 0"]


def _run(argv, **kwargs):
  return subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """(python of a venv with irl_lm installed non-editable, an empty working directory)."""
  tmp = tmp_path_factory.mktemp("packaging")
  source = tmp / "source"  # a copy: building writes build/ and *.egg-info next to setup.py
  for name in ("irl_lm", "gin"):
    shutil.copytree(os.path.join(REPO, name), source / name,
                    ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("setup.py", "README.md"):
    shutil.copy(os.path.join(REPO, name), source / name)
  venv = tmp / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  python = str(venv / "bin" / "python")
  (site,) = glob.glob(str(venv / "lib" / "python*" / "site-packages"))
  with open(os.path.join(site, "dependencies.pth"), "w") as f:
    f.write(sysconfig.get_paths()["purelib"] + "\n")
  shutil.copytree(os.path.dirname(gin.__file__), os.path.join(site, "gin"),
                  ignore=shutil.ignore_patterns("__pycache__"))
  done = _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
               "--no-build-isolation", "--ignore-installed", str(source)], cwd=tmp)
  assert done.returncode == 0, done.stderr[-3000:]
  shutil.rmtree(source)  # the install must not need its source
  elsewhere = tmp / "elsewhere"
  elsewhere.mkdir()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("PYTHONPATH", None)
  return python, elsewhere, env, site


def test_the_installed_package_and_its_gin_files_are_used(installed):
  python, elsewhere, env, site = installed
  done = _run([python, "-c", "import irl_lm, irl_lm.config as c; print(irl_lm.__file__); "
               "print(c.GIN_DIR)"], cwd=elsewhere, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.split() == [os.path.join(site, "irl_lm", "__init__.py"),
                                 os.path.join(site, "irl_lm", "gin_files")]


def test_check_mode_finds_a_shipped_gin_file_by_its_bare_name(installed):
  python, elsewhere, env, _ = installed
  done = _run([python, *COMMAND, "--gin_bindings=run.mode = 'check'",
               f"--gin_bindings=run.run_dir = '{elsewhere / 'check'}'"], cwd=elsewhere, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  summary = json.loads(done.stdout)
  assert summary["dry_run"] and summary["param_count"] == 426_624  # the 0.43M tiny decoder


@pytest.mark.slow
def test_a_tiny_training_run_from_another_directory(installed):
  python, elsewhere, env, _ = installed
  run_dir = elsewhere / "run"
  done = _run([python, *COMMAND, *TINY, f"--gin_bindings=run.run_dir = '{run_dir}'"],
              cwd=elsewhere, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  assert sorted(os.listdir(run_dir / "checkpoints")) == ["2"]
  records = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
  assert any(r.get("step") == 2 and "train/loss" in r for r in records), records
  summary = json.load(open(run_dir / "summary.json"))
  assert summary["final_step"] == 2 and summary["eval"]["num_examples"] == 8, summary
  evaluation = json.load(open(run_dir / "eval_validation_greedy_calc_summary.json"))
  assert evaluation["decoding"]["calculator"] and evaluation["num_examples"] == 8
  assert len(open(run_dir / "eval_validation_greedy_calc.jsonl").readlines()) == 8
  assert set(os.listdir(elsewhere)) <= {"check", "run"}  # nothing written beside the run
