"""The core trains a built-in task, checkpoints and decodes with TensorFlow, seqio, TFDS, clu and
TensorBoard unimportable (as after `pip install irl_lm` without the `seqio` extra)."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKED = ("tensorflow", "tensorflow_text", "tensorflow_datasets", "seqio", "clu", "tensorboard")

# Runs `python -m irl_lm.main ARGS` in this process with BLOCKED unimportable (a None entry in
# sys.modules: `import` raises ModuleNotFoundError and `importlib.util.find_spec` answers None, as
# for a package that is not installed), then reports which of them got imported anyway.
DRIVER = """
import json, runpy, sys
BLOCKED = sys.argv[1].split(",")
sys.modules.update(dict.fromkeys(BLOCKED))
sys.argv = ["irl_lm.main", *sys.argv[2:]]
try:
  runpy.run_module("irl_lm.main", run_name="__main__", alter_sys=True)
finally:
  print(json.dumps({"imported": sorted(m for m, v in sys.modules.items()
                                       if m.partition(".")[0] in BLOCKED and v is not None)}))
"""


def _run(*args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu",
             IRL_LM_HOST_ALLOCATOR="system")  # no re-exec: the blocker lives in this process
  return subprocess.run([sys.executable, "-c", DRIVER, ",".join(BLOCKED), *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=900)


def test_blocked_modules_cannot_be_imported():
  result = subprocess.run([sys.executable, "-c", DRIVER.replace(
      'runpy.run_module("irl_lm.main", run_name="__main__", alter_sys=True)',
      "import tensorflow"), ",".join(BLOCKED)], capture_output=True, text=True, timeout=60)
  assert result.returncode == 1
  assert "ModuleNotFoundError: import of tensorflow halted" in result.stderr


@pytest.mark.slow
def test_arithmetic_task_trains_checkpoints_and_decodes_without_tensorflow(tmp_path):
  run_dir = tmp_path / "run"
  bindings = ["train.num_train_steps = 4", "train.batch_size = 8", "train.log_every = 2",
              "train.checkpoint_every = 4", "train.eval_every = 0", "train.eval_examples = 8",
              "train.eval_batch_size = 8", "make_schedule.warmup_steps = 1",
              f"run.run_dir = '{run_dir}'"]
  result = _run("--gin_file=gin/iqlearn_arithmetic_tiny.gin",
                *[f"--gin_bindings={b}" for b in bindings])
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout.strip().splitlines()[-1]) == {"imported": []}
  records = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
  train = [r for r in records if "train/loss" in r]
  assert [r["step"] for r in train] == [2, 4]
  assert all(0.0 < r["train/loss"] < 100.0 for r in train)
  assert os.listdir(run_dir / "checkpoints") == ["4"]
  predictions = [json.loads(line) for line in open(run_dir / "eval_validation_greedy_calc.jsonl")]
  assert len(predictions) == 8 and all(isinstance(p["output"], str) for p in predictions)
