"""Training subprocesses for the reliability tests: a tiny config, every step logged.

`python -m irl_lm.main` on gin/iqlearn_tiny.gin shrunk to T5 tiny with vocabulary 4096, batch 8,
lengths 32/16, 64 train examples (8 batches an epoch, so 30 steps cross epoch boundaries),
dropout 0.1 (so the step RNG matters), a checkpoint every 10 steps, one CPU device.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY = (
    "TrainSettings.num_train_steps = 30",
    "TrainSettings.batch_size = 8",
    "train.feature_lengths = {'inputs': 32, 'targets': 16}",
    "stdlib_docstrings_task.train_examples = 64",
    "t5_1_1_config.dropout_rate = 0.1",
    "TrainSettings.log_every = 1",
    "CheckpointSettings.every = 10",
    "CheckpointSettings.keep = None",
    "EvalSettings.examples = 0",
    "TrainSettings.tensorboard = False",
)
# absl's INFO format (Python and native) and the other native INFO chatter main filters.
INFO_LINE = re.compile(r"^(I\d{4} \d\d:\d\d:\d+\.\d+|.*LOG\(INFO\)|WARNING: All log messages "
                       r"before absl::InitializeLog)", re.M)


def env() -> dict:
  environ = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")  # one CPU device
  environ.pop("TF_CPP_MIN_LOG_LEVEL", None)  # main's own defaults are what is tested
  return environ


def command(run_dir, *bindings, flags=()) -> list:
  args = [sys.executable, "-m", "irl_lm.main", "--gin_file=gin/iqlearn_tiny.gin", *flags]
  args += [f"--gin_bindings={b}" for b in (*TINY, f"run.run_dir = '{run_dir}'", *bindings)]
  return args


def run(run_dir, *bindings, flags=(), timeout=600) -> subprocess.CompletedProcess:
  return subprocess.run(command(run_dir, *bindings, flags=flags), cwd=REPO, env=env(),
                        capture_output=True, text=True, timeout=timeout)


class Training:
  """A training subprocess whose output goes to files (so polling never blocks it)."""

  def __init__(self, run_dir, *bindings):
    self.run_dir = run_dir
    os.makedirs(run_dir, exist_ok=True)
    self._out = open(os.path.join(run_dir, "..", os.path.basename(run_dir) + ".out"), "w+")
    self._err = open(os.path.join(run_dir, "..", os.path.basename(run_dir) + ".err"), "w+")
    self.proc = subprocess.Popen(command(run_dir, *bindings), cwd=REPO, env=env(),
                                 stdout=self._out, stderr=self._err, text=True)

  def stderr(self) -> str:
    self._err.flush()
    with open(self._err.name) as f:
      return f.read()

  def stdout(self) -> str:
    self._out.flush()
    with open(self._out.name) as f:
      return f.read()

  def wait_for(self, predicate, timeout=600) -> None:
    """Polls until `predicate(self)` holds; fails if the process ends first."""
    deadline = time.time() + timeout
    while not predicate(self):
      assert self.proc.poll() is None, (
          f"exited {self.proc.returncode} early:\n{self.stderr()[-3000:]}")
      assert time.time() < deadline, "timed out"
      time.sleep(0.02)

  def logged_step(self) -> int:
    """The newest step in metrics.jsonl (0 before the first record)."""
    records = train_losses(self.run_dir, complete_only=True)
    return max(records, default=0)

  def signal(self, signum=signal.SIGTERM) -> None:
    self.proc.send_signal(signum)

  def wait(self, timeout=600) -> int:
    return self.proc.wait(timeout=timeout)


def train_losses(run_dir, complete_only=False) -> dict:
  """{step: train/loss} of metrics.jsonl; fails on a step recorded twice."""
  path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    lines = f.read().split("\n")
  if complete_only or not lines[-1]:
    lines = lines[:-1]  # a torn line of a running (or killed) writer
  losses = {}
  for line in lines:
    record = json.loads(line)
    if "train/loss" in record:
      assert record["step"] not in losses, f"step {record['step']} recorded twice"
      losses[record["step"]] = record["train/loss"]
  return losses


def checkpoint_steps(run_dir) -> list:
  path = os.path.join(run_dir, "checkpoints")
  return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []
