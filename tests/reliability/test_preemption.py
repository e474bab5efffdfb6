"""Preemption: SIGTERM / Ctrl-C finish the step, save a checkpoint at it, exit 143 / 130.

A second signal ends the process at once; resuming after a stop repeats the uninterrupted run.
"""
import signal
import subprocess
import sys
import textwrap

import pytest

from irl_lm.training import stopping
from tests.reliability import helpers


def _stop(training, signum, after_step):
  """Sends `signum` once `after_step` is logged; returns (exit code, stderr)."""
  training.wait_for(lambda t: t.logged_step() >= after_step)
  training.signal(signum)
  return training.wait(), training.stderr()


@pytest.mark.slow
def test_sigterm_then_ctrl_c_save_where_they_stop_and_resume_exactly(tmp_path, clean_run):
  _, clean = clean_run
  run_dir = tmp_path / "run"

  code, stderr = _stop(helpers.Training(run_dir), signal.SIGTERM, after_step=12)
  assert code == stopping.EXIT_PREEMPTED == 143, stderr[-3000:]
  stopped = max(helpers.train_losses(run_dir))  # the last logged step ...
  assert helpers.checkpoint_steps(run_dir)[-1] == stopped  # ... is the checkpoint, committed
  last = stderr.strip().splitlines()[-1]
  assert last == (f"preempted (SIGTERM) at step {stopped}: saved checkpoint {stopped} in "
                  f"{run_dir}/checkpoints; rerun the same command to resume from it.")
  assert "Traceback" not in stderr

  resumed = helpers.Training(tmp_path / "run")
  code, stderr = _stop(resumed, signal.SIGINT, after_step=stopped + 3)
  assert code == stopping.EXIT_INTERRUPTED == 130, stderr[-3000:]
  assert f"Resuming from checkpoint {stopped} in" in resumed.stdout()
  interrupted = max(helpers.train_losses(run_dir))
  assert helpers.checkpoint_steps(run_dir)[-1] == interrupted > stopped
  assert stderr.strip().splitlines()[-1].startswith(
      f"interrupted (Ctrl-C) at step {interrupted}: saved checkpoint {interrupted} in ")
  assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr

  result = helpers.run(run_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert helpers.train_losses(run_dir) == clean  # every step once, bit for bit
  assert {10, 20, 30, stopped, interrupted} <= set(helpers.checkpoint_steps(run_dir))


_TWICE = textwrap.dedent("""
    import os, signal, sys, time
    from irl_lm.training import stopping
    with stopping.StopRequest(directory=sys.argv[1]) as stop:
      assert not stop.requested(1)
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(0.1)  # the Python handler runs
      assert stop.requested(2) and stop.signum == signal.SIGINT
      print("first handled", flush=True)
      os.kill(os.getpid(), signal.SIGINT)  # the second one ends the process here
      time.sleep(5)
    print("not reached", flush=True)
""")


def test_second_ctrl_c_ends_the_process_at_once_naming_the_kept_checkpoint(tmp_path):
  for name in ("10", "20", "30.orbax-checkpoint-tmp-1"):  # 30 was being written
    (tmp_path / name).mkdir()
  done = subprocess.run([sys.executable, "-c", _TWICE, str(tmp_path)], cwd=helpers.REPO,
                        env=helpers.env(), capture_output=True, text=True, timeout=120)
  assert done.returncode == 130, done.stderr[-2000:]
  assert done.stdout == "first handled\n"
  lines = done.stderr.strip().splitlines()
  assert "SIGINT received: finishing this step, saving a checkpoint, then exiting" in lines[-2]
  assert lines[-1] == (f"SIGINT received again: exiting now without saving; checkpoint 20 in "
                       f"{tmp_path} is kept: rerun the same command to resume from it.")
  assert "Traceback" not in done.stderr


def test_kept_checkpoint_without_any():
  assert stopping.kept_checkpoint(None) == (
      "no checkpoint was saved yet: rerunning the same command starts from the beginning.")


def test_handlers_are_restored_and_unused_requests_say_no():
  before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
  with stopping.StopRequest() as stop:
    assert signal.getsignal(signal.SIGTERM) == stop._handle  # pylint: disable=protected-access
    assert not stop.requested(5)
  assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
  with stopping.StopRequest(enabled=False) as stop:
    assert signal.getsignal(signal.SIGTERM) == before[0] and not stop.requested(1)
  error = stopping.StopRequest().preempted(7, "/runs/x/checkpoints")
  assert (error.exit_code, error.step) == (143, 7)
  assert str(error) == ("preempted (SIGTERM to a worker of this job) at step 7: saved "
                        "checkpoint 7 in /runs/x/checkpoints; rerun the same command to resume "
                        "from it.")
