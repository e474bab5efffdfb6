"""Storage errors: a failed checkpoint write stops the run with one sentence (at once, or at the
next poll/save/wait/close for a background write); a run directory that cannot be written fails
before training."""
import errno
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from irl_lm.checkpoints import manager, storage

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", TF_CPP_MIN_LOG_LEVEL="3",
           PYTHONPATH=REPO)

# A background save that fails for real: the file-size limit (RLIMIT_FSIZE; EFBIG, as a full
# disk fails with ENOSPC) is set after a first, small checkpoint, then a large one is saved.
FAILING_SAVE = textwrap.dedent("""
    import resource, signal, sys, time
    import jax.numpy as jnp, numpy as np
    from irl_lm.checkpoints import manager
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    directory, surface = sys.argv[1], sys.argv[2]
    ckpt = manager.Checkpointer(directory, save_every=10)
    ckpt.save(1, {"w": jnp.zeros((4,))})
    ckpt.wait()
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
    big = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(256, 256)), jnp.float32)}
    try:
      ckpt.save(2, big)
      print("save returned", flush=True)
      if surface == "poll":  # what the trainer does every step
        for step in range(3, 10**6):
          ckpt.should_save(step)
          time.sleep(0.01)
      elif surface == "save":
        time.sleep(1)
        ckpt.save(3, big)
      else:
        ckpt.close()
    except manager.CheckpointError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    """)


@pytest.mark.parametrize("surface", ["poll", "save", "close"])
def test_failed_background_save_stops_with_one_sentence(tmp_path, surface):
  directory = tmp_path / "checkpoints"
  result = subprocess.run([sys.executable, "-c", FAILING_SAVE, str(directory), surface],
                          env=ENV, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  assert "save returned" in result.stdout  # it was a background failure
  lines = [l for l in result.stderr.strip().splitlines() if not l.startswith(("I0", "W0"))]
  assert lines == [
      f"error: checkpoint step 2 could not be written to {directory}: a file exceeds the "
      "file-size limit (ulimit -f) (EFBIG); fix the storage (or choose another run directory, "
      "run.run_dir) and rerun the same command to resume from step 1, the newest complete "
      "checkpoint."], result.stderr[-3000:]
  assert sorted(os.listdir(directory))[0] == "1"
  assert not [name for name in os.listdir(directory) if name.startswith("2")]  # no remnant


def _state():
  return {"w": jnp.arange(6.0)}


def test_synchronous_save_failure_is_raised_at_once(tmp_path):
  ckpt = manager.Checkpointer(str(tmp_path))

  def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  ckpt._manager.save = disk_full  # pylint: disable=protected-access
  (tmp_path / "5.orbax-checkpoint-tmp-1765000000").mkdir()  # what the failed write left
  with pytest.raises(manager.CheckpointError) as info:
    ckpt.save(5, _state())
  assert os.listdir(tmp_path) == []
  assert str(info.value) == (
      f"checkpoint step 5 could not be written to {tmp_path}: the disk is full (ENOSPC); free "
      "some space (or choose another run directory, run.run_dir) and rerun the same command to "
      "resume from the start (no checkpoint is complete).")
  ckpt.close()


def test_tensorstore_errors_are_read_for_their_os_error():
  # TensorStore reports the OS error inside a ValueError, after a long spec dump.
  error = ValueError("OUT_OF_RANGE: Error writing \"w/0\" in OCDBT database: Failed writing: "
                     "\"/x/d/1\": Failed to write 5 bytes: No space left on device "
                     "[os_error_code='28'] [source locations='tensorstore/...'] {'driver': ...")
  wrapped = RuntimeError("Encountered error while writing")
  wrapped.__cause__ = error
  assert storage.error_number(wrapped) == errno.ENOSPC
  assert storage.reason(wrapped) == "the disk is full (ENOSPC)"
  assert storage.reason(OSError(errno.EROFS, "x")) == "the file system is read-only (EROFS)"
  assert storage.reason(PermissionError(errno.EACCES, "x")) == "permission denied (EACCES)"
  assert storage.summary(wrapped) == (
      "ValueError: OUT_OF_RANGE: Error writing \"w/0\" in OCDBT database: Failed writing: "
      "\"/x/d/1\": Failed to write 5 bytes: No space left on device [os_error_code='28']")
  assert storage.reason(KeyError("k")) == "KeyError: 'k'"


def test_background_failure_reported_by_wait_then_not_again(tmp_path):
  ckpt = manager.Checkpointer(str(tmp_path))
  ckpt.save(1, _state())
  ckpt.wait()
  ckpt.save(2, _state())

  def failed():
    raise ValueError("Failed to write: Read-only file system [os_error_code='30']")

  real_wait = ckpt._manager.wait_until_finished  # pylint: disable=protected-access
  real_wait()
  ckpt._manager.wait_until_finished = failed  # pylint: disable=protected-access
  with pytest.raises(manager.CheckpointError, match=r"^checkpoint step 2 could not be written to "
                     r".*: the file system is read-only \(EROFS\); make it writable .* resume "
                     r"from step 1, the newest complete checkpoint\.$"):
    ckpt.wait()
  ckpt._manager.wait_until_finished = real_wait  # pylint: disable=protected-access
  ckpt.wait()  # reported once
  ckpt.close()


def test_run_dir_that_is_a_file(tmp_path):
  path = tmp_path / "run"
  path.write_text("not a directory")
  with pytest.raises(manager.CheckpointError, match=rf"^{path} is a file, not a directory: "
                     r"choose another run directory \(run.run_dir\) or move the file away\.$"):
    manager.probe_writable(str(path))
  with pytest.raises(manager.CheckpointError, match=rf"^cannot write to {path}/checkpoints: a "
                     r"part of the path is a file, not a directory \((ENOTDIR|EEXIST)\)"):
    manager.probe_writable(str(path / "checkpoints"))
  with pytest.raises(manager.CheckpointError, match=r"cannot use .* for checkpoints: a part of "
                     r"the path is a file"):
    manager.Checkpointer(str(path / "checkpoints"))
  assert path.read_text() == "not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o500 directory anyway; the "
                    "read-only and permission messages are checked by the monkeypatched test")
def test_directory_without_write_permission(tmp_path):
  path = tmp_path / "run"
  path.mkdir()
  path.chmod(0o500)
  try:
    with pytest.raises(manager.CheckpointError, match=r"permission denied \(EACCES\)"):
      manager.probe_writable(str(path))
  finally:
    path.chmod(0o700)


@pytest.mark.parametrize("number,reason", [
    (errno.EROFS, "the file system is read-only (EROFS)"),
    (errno.EACCES, "permission denied (EACCES)"),
    (errno.ENOSPC, "the disk is full (ENOSPC)"),
])
def test_probe_names_the_reason(tmp_path, monkeypatch, number, reason):
  def refuse(self, *args, **kwargs):
    raise OSError(number, os.strerror(number), str(self))

  monkeypatch.setattr(type(epath.Path(str(tmp_path))), "write_text", refuse)
  with pytest.raises(manager.CheckpointError) as info:
    manager.probe_writable(str(tmp_path / "run"))
  assert str(info.value) == (
      f"cannot write to {tmp_path}/run: {reason}; choose a writable run directory "
      "(run.run_dir) or fix its permissions or free space.")


def test_main_refuses_a_run_dir_that_is_a_file_before_training(tmp_path):
  path = tmp_path / "run"
  path.write_text("x")
  result = subprocess.run(
      [sys.executable, "-m", "irl_lm.main", "--gin_file=gin/iqlearn_tiny.gin",
       f"--gin_bindings=run.run_dir = '{path}'"], cwd=REPO, env=ENV, capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: {path} is a file, not a directory: choose another run directory (run.run_dir) "
      "or move the file away.")
  assert "Traceback" not in result.stderr
