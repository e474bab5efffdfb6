"""Why a training loop stops before its last step: preemption signals and non-finite values.

Signals (`StopRequest`, installed by `trainer.fit` for the duration of the loop):
- SIGTERM (what a preemptible VM, a spot slice or a scheduler sends) and SIGINT (Ctrl-C) set a
  flag; the loop finishes the current step, logs it, saves a checkpoint at it (also off the
  `checkpoint_every` grid) and raises `Preempted`. The job waits for the checkpoint to commit;
  `main` then prints one line and exits with `Preempted.exit_code`: 143 after SIGTERM ("preempted:
  rerun the same command to resume"), 130 after Ctrl-C.
- A second Ctrl-C (or SIGTERM) ends the process at once, without the checkpoint: it prints one
  line naming the newest complete checkpoint, which stays and which a rerun resumes from.
- Multi-host: every process must stop at the same step (checkpoints are saved collectively).
  With `jax.distributed` and its preemption service (the default), JAX's own SIGTERM notifier
  agrees on the step (`multihost_utils.reached_preemption_sync_point`, asked every step), and a
  Ctrl-C on one worker is forwarded to it as a SIGTERM. Without the service the flag is
  all-gathered every step.

Non-finite values: `NonFiniteError` names the step, the quantity that is not finite and the last
good checkpoint (exit code 3).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Optional

import jax
import numpy as np

EXIT_PREEMPTED = 128 + signal.SIGTERM  # 143
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_NONFINITE = 3


class TrainingStopped(Exception):
  """Training ended early on purpose; `str(e)` is the one line to print, `exit_code` the
  process's exit status.

  Attributes are set per instance, never as class defaults: gin re-raises exceptions from a
  configurable as a proxy that forwards only attributes its class lacks.
  """

  def __init__(self, message: str, *, step: int, exit_code: int):
    super().__init__(message)
    self.step = step
    self.exit_code = exit_code


class Preempted(TrainingStopped):
  """A stop signal arrived: a checkpoint at `step` was saved (committed once the job's
  checkpointer is closed); rerunning the same command resumes from it."""


class NonFiniteError(TrainingStopped):
  """A step's loss, gradient norm or updated state is not finite
  (`TrainSettings.on_nonfinite = 'stop'`); nothing from that step on was saved."""

  def __init__(self, message: str, *, step: int):
    super().__init__(message, step=step, exit_code=EXIT_NONFINITE)


def _preemption_service() -> bool:
  """Whether jax.distributed runs JAX's preemption sync manager (its SIGTERM notifier)."""
  try:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
  except ImportError:  # pragma: no cover
    return False
  return getattr(distributed.global_state, "preemption_sync_manager", None) is not None


def kept_checkpoint(directory: Optional[str]) -> str:
  """'checkpoint N in DIR is kept: rerun the same command to resume from it.' for the newest
  complete checkpoint (Orbax renames a step's directory to `<step>` once it is written)."""
  steps = []
  if directory and os.path.isdir(directory):
    steps = [int(name) for name in os.listdir(directory) if name.isdigit()]
  if not steps:
    return "no checkpoint was saved yet: rerunning the same command starts from the beginning."
  return (f"checkpoint {max(steps)} in {directory} is kept: rerun the same command to resume "
          "from it.")


class StopRequest:
  """A context manager that turns SIGTERM/SIGINT into a stop at an agreed step.

  Use: `with StopRequest() as stop: ... if stop.requested(step): ...`, calling `requested`
  once per step on every process (a collective question on multi-host runs). Outside the main
  thread (signals cannot be caught there) or with `enabled=False` it never requests a stop.
  """

  def __init__(self, enabled: bool = True, directory: Optional[str] = None):
    self._enabled = enabled and threading.current_thread() is threading.main_thread()
    self._directory = directory
    self._previous: dict[int, object] = {}
    self._multi = False
    self._service = False
    self.signum: Optional[int] = None

  def __enter__(self) -> "StopRequest":
    if not self._enabled:
      return self
    self._multi = jax.process_count() > 1
    self._service = self._multi and _preemption_service()
    # With the service, SIGTERM belongs to JAX's notifier (replacing it would break it).
    signals = (signal.SIGINT,) if self._service else (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def _handle(self, signum: int, frame) -> None:
    del frame
    name = signal.Signals(signum).name
    if self.signum is not None:  # the second signal: exit at once
      os.write(2, (f"{name} received again: exiting now without saving; "
                   f"{kept_checkpoint(self._directory)}\n").encode())
      os._exit(128 + signum)  # pylint: disable=protected-access
    self.signum = signum
    os.write(2, f"{name} received: finishing this step, saving a checkpoint, then exiting "
                f"(send {name} again to exit at once, without it).\n".encode())
    if self._service and signum == signal.SIGINT:
      os.kill(os.getpid(), signal.SIGTERM)  # JAX's notifier tells every worker

  def requested(self, step: int) -> bool:
    """Whether to stop after `step` (the same answer on every process)."""
    if not self._enabled:
      return False
    if self._service:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return bool(multihost_utils.reached_preemption_sync_point(step))
    if self._multi:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      flags = multihost_utils.process_allgather(np.int32(self.signum is not None))
      return bool(np.any(flags))
    return self.signum is not None

  def preempted(self, step: int, directory: str) -> Preempted:
    """The exception to raise after saving checkpoint `step` in `directory`."""
    interrupted = self.signum == signal.SIGINT
    what = "interrupted (Ctrl-C)" if interrupted else (
        "preempted (SIGTERM)" if self.signum is not None else
        "preempted (SIGTERM to a worker of this job)")
    return Preempted(
        f"{what} at step {step}: saved checkpoint {step} in {directory}; rerun the same "
        "command to resume from it.", step=step,
        exit_code=EXIT_INTERRUPTED if interrupted else EXIT_PREEMPTED)
