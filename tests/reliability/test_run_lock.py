"""One job per run directory: a second job is refused naming the owner; a stale lock (dead pid
on this host, or an old heartbeat anywhere) is taken over with a warning; released at exit."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from irl_lm import runner
from irl_lm.checkpoints import lock as lock_lib
from irl_lm.checkpoints import manager

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", TF_CPP_MIN_LOG_LEVEL="3",
           PYTHONPATH=REPO)
HOLD = textwrap.dedent("""
    import sys, time
    from irl_lm.checkpoints import lock
    held = lock.RunLock(sys.argv[1], heartbeat_every=0.2).acquire()
    print("locked", flush=True)
    time.sleep(600)
    """)


def _record(run_dir):
  with open(os.path.join(run_dir, "run.lock")) as f:
    return json.load(f)


def _write_lock(run_dir, **fields):
  record = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2024-01-01T00:00:00Z",
            "heartbeat": time.time(), "token": "t0", **fields}
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, "run.lock"), "w") as f:
    json.dump(record, f)
  return record


def test_second_process_is_refused_then_takes_over_after_the_first_dies(tmp_path, caplog):
  run_dir = str(tmp_path)
  holder = subprocess.Popen([sys.executable, "-c", HOLD, run_dir], env=ENV,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    owner = _record(run_dir)
    assert (owner["host"], owner["pid"]) == (socket.gethostname(), holder.pid)
    with pytest.raises(manager.CheckpointError) as info:
      lock_lib.RunLock(run_dir).acquire()
    message = str(info.value)
    assert message.startswith(f"run directory {run_dir} is in use by another job (host "
                              f"{socket.gethostname()}, pid {holder.pid}, started "
                              f"{owner['started']}, last heartbeat ")
    assert message.endswith(f"if it is not running, delete {run_dir}/run.lock.")
    assert "\n" not in message
    time.sleep(0.5)
    assert _record(run_dir)["heartbeat"] > owner["heartbeat"]  # the holder's heartbeat
  finally:
    holder.send_signal(signal.SIGKILL)  # as kill -9: no release
    holder.wait()
  assert _record(run_dir)["pid"] == holder.pid  # left behind
  with lock_lib.RunLock(run_dir) as taken:
    assert _record(run_dir)["pid"] == os.getpid()
    assert _record(run_dir)["token"] == taken._record["token"]  # pylint: disable=protected-access
  [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert warning.startswith(f"taking over the stale lock {run_dir}/run.lock of host "
                            f"{socket.gethostname()}, pid {holder.pid}")
  assert warning.endswith(f"process {holder.pid} is no longer running on this host.")
  assert not os.path.exists(f"{run_dir}/run.lock")  # released


def test_heartbeat_rule_for_other_hosts_and_object_stores(tmp_path, caplog):
  run_dir = str(tmp_path)
  # Another host's lock (its pid cannot be checked here) with a fresh heartbeat: refused.
  _write_lock(run_dir, host="tpu-worker-0", pid=1, heartbeat=time.time() - 60)
  with pytest.raises(manager.CheckpointError, match=r"in use by another job \(host tpu-worker-0, "
                     r"pid 1, started 2024-01-01T00:00:00Z, last heartbeat 1 min [0-9]+ s ago\)"):
    lock_lib.RunLock(run_dir, stale_after=600).acquire()
  # The same lock 11 minutes later: stale.
  _write_lock(run_dir, host="tpu-worker-0", pid=1, heartbeat=time.time() - 660)
  lock = lock_lib.RunLock(run_dir, stale_after=600).acquire()
  lock.release()
  assert "its last heartbeat is 11 min 0 s old (more than 10 min 0 s)" in caplog.text
  # An unreadable lock (e.g. a file system that lost its content) is stale too.
  with open(f"{run_dir}/run.lock", "w") as f:
    f.write("{half")
  lock_lib.RunLock(run_dir).acquire().release()
  assert "the lock file is unreadable" in caplog.text


def test_released_on_error_and_never_someone_elses(tmp_path):
  run_dir = str(tmp_path)
  with pytest.raises(ZeroDivisionError):
    with runner.run_lock(run_dir):
      assert os.path.exists(f"{run_dir}/run.lock")
      1 / 0  # pylint: disable=pointless-statement
  assert not os.path.exists(f"{run_dir}/run.lock")
  lock = lock_lib.RunLock(run_dir).acquire()
  other = _write_lock(run_dir, token="taken-over")  # someone took it over meanwhile
  lock.release()
  assert _record(run_dir) == other


def test_main_refuses_a_second_job_and_leaves_the_first_ones_files(tmp_path):
  run_dir = tmp_path / "run"
  _write_lock(str(run_dir))  # this test's process: alive on this host
  os.makedirs(run_dir / "checkpoints" / "20")
  (run_dir / "metrics.jsonl").write_text('{"step": 20}\n')
  result = subprocess.run(
      [sys.executable, "-m", "irl_lm.main", "--gin_file=gin/iqlearn_tiny.gin",
       f"--gin_bindings=run.run_dir = '{run_dir}'"], cwd=REPO, env=ENV, capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: run directory {run_dir} is in use by another job (host "
                         f"{socket.gethostname()}, pid {os.getpid()}, started ")
  assert "Traceback" not in result.stderr
  assert sorted(os.listdir(run_dir)) == ["checkpoints", "metrics.jsonl", "run.lock"]
  assert os.listdir(run_dir / "checkpoints") == ["20"]
