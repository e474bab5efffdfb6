"""One job per run directory: a lock file with its owner's host, pid, start time and heartbeat.

`<run_dir>/run.lock` is JSON: {'host', 'pid', 'started', 'heartbeat' (Unix seconds), 'token'}.
A second job on the same directory is refused with one sentence naming the owner. A lock is
*stale*, and taken over with a warning, when
  - its owner ran on this host and its pid is no longer alive (local disks: at once), or
  - its heartbeat is older than `stale_after` seconds (any file system, e.g. GCS, where no pid
    can be checked): the owner rewrites it every `heartbeat_every` seconds while it runs.
Creating the lock is atomic on local file systems (a temporary file hard-linked to the lock's
name, which fails if it exists; exclusive create where links are not supported). Object
stores (gs://) have no exclusive create through `etils.epath`: the lock is written, then read
back after `settle` seconds, and only the job whose token is there owns it.

Multi-host jobs: only process 0 takes the lock (the caller decides; see `irl_lm.runner`); the
other processes of the job trust it, since they are started together with process 0.
The lock is released (deleted, if it is still ours) by `release` or on leaving the `with` block,
also on errors; a killed job leaves a stale lock that the next start takes over.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Any, Optional

from absl import logging
from etils import epath

from irl_lm.checkpoints import storage
from irl_lm.checkpoints.manager import CheckpointError

LOCK_NAME = "run.lock"


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by another user
    return True
  return True


def _local(path: epath.Path) -> bool:
  return "://" not in str(path)


def _age(seconds: float) -> str:
  seconds = max(int(seconds), 0)
  return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


class RunLock:
  """The lock of one run directory; use as a context manager or `acquire()` / `release()`.

  Args:
    run_dir: the run directory (created if missing).
    stale_after: seconds without a heartbeat after which any lock counts as stale.
    heartbeat_every: seconds between heartbeats (a daemon thread rewrites the lock).
    settle: seconds to wait before reading an object-store lock back (not used locally).
  """

  def __init__(self, run_dir: str, *, stale_after: float = 600.0,
               heartbeat_every: float = 60.0, settle: float = 2.0):
    self.path = epath.Path(run_dir) / LOCK_NAME
    self.stale_after = stale_after
    self.heartbeat_every = heartbeat_every
    self.settle = settle
    self._record: Optional[dict[str, Any]] = None
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  def _new_record(self) -> dict[str, Any]:
    now = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "heartbeat": now, "token": uuid.uuid4().hex}

  def read(self) -> Optional[dict[str, Any]]:
    """The lock's record; None when there is no lock; {} when it is unreadable."""
    try:
      text = self.path.read_text()
    except FileNotFoundError:
      return None
    try:
      record = json.loads(text)
      return record if isinstance(record, dict) else {}
    except ValueError:
      return {}

  def _stale_reason(self, record: dict[str, Any]) -> Optional[str]:
    """Why `record` is stale, or None when its owner may still run."""
    if not record:
      return "the lock file is unreadable"
    if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int):
      if record["pid"] == os.getpid():
        return None
      if not _pid_alive(record["pid"]):
        return f"process {record['pid']} is no longer running on this host"
    age = time.time() - float(record.get("heartbeat", 0))
    if age > self.stale_after:
      return f"its last heartbeat is {_age(age)} old (more than {_age(self.stale_after)})"
    return None

  def _create(self, record: dict[str, Any]) -> bool:
    """Writes the lock if there is none; True if it is now ours."""
    text = json.dumps(record)
    if _local(self.path):
      temp = self.path.parent / f".{LOCK_NAME}.{record['token']}"
      temp.write_text(text)
      try:
        os.link(temp, self.path)
        return True
      except FileExistsError:
        return False
      except OSError:  # no hard links here: exclusive create
        try:
          fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
          return False
        with os.fdopen(fd, "w") as f:
          f.write(text)
        return True
      finally:
        temp.unlink(missing_ok=True)
    if self.path.exists():
      return False
    self.path.write_text(text)
    time.sleep(self.settle)
    return (self.read() or {}).get("token") == record["token"]

  def acquire(self) -> "RunLock":
    """Takes the lock, taking over a stale one with a warning.

    Raises:
      CheckpointError: another live job holds it (the message names its host, pid, start
        time and last heartbeat), or the lock file cannot be written.
    """
    record = self._new_record()
    try:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      for _ in range(3):
        if self._create(record):
          self._record = record
          self._thread = threading.Thread(target=self._beat, daemon=True,
                                          name="irl_lm_run_lock_heartbeat")
          self._thread.start()
          return self
        owner = self.read()
        if owner is None:  # released meanwhile
          continue
        why = self._stale_reason(owner)
        if why is None:
          raise CheckpointError(
              f"run directory {self.path.parent} is in use by another job (host "
              f"{owner.get('host')}, pid {owner.get('pid')}, started {owner.get('started')}, "
              f"last heartbeat {_age(time.time() - float(owner.get('heartbeat', 0)))} ago): "
              "wait for it to finish or stop it, or choose another run directory "
              f"(run.run_dir); if it is not running, delete {self.path}.")
        logging.warning("taking over the stale lock %s of host %s, pid %s (started %s): %s.",
                        self.path, owner.get("host"), owner.get("pid"), owner.get("started"),
                        why)
        self.path.unlink(missing_ok=True)
    except CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f"cannot lock run directory {self.path.parent}: "
                            f"{storage.reason(e)}; choose a writable run directory "
                            "(run.run_dir).") from None
    raise CheckpointError(f"cannot lock run directory {self.path.parent}: other jobs keep "
                          "taking it; make sure only one job uses it.")

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat_every):
      if (self.read() or {}).get("token") != self._record["token"]:
        logging.error("the lock %s was taken over by another job; this job no longer owns its "
                      "run directory.", self.path)
        return
      try:
        self._record["heartbeat"] = time.time()
        text = json.dumps(self._record)
        if _local(self.path):  # atomic: a reader never sees a half-written lock
          temp = self.path.parent / f".{LOCK_NAME}.{self._record['token']}"
          temp.write_text(text)
          os.replace(temp, self.path)
        else:  # object stores replace whole objects anyway
          self.path.write_text(text)
      except Exception as e:  # pylint: disable=broad-except  # retried at the next beat
        logging.warning("could not refresh the lock %s: %s", self.path, storage.reason(e))

  def release(self) -> None:
    """Stops the heartbeat and deletes the lock if it is still ours (idempotent)."""
    if self._record is None:
      return
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    try:
      if (self.read() or {}).get("token") == self._record["token"]:
        self.path.unlink(missing_ok=True)
    except Exception as e:  # pylint: disable=broad-except  # never hide the job's own error
      logging.warning("could not remove the lock %s: %s", self.path, storage.reason(e))
    self._record = None

  def __enter__(self) -> "RunLock":
    return self.acquire()

  def __exit__(self, *exc: Any) -> None:
    self.release()
