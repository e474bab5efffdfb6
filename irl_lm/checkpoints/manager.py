"""Checkpoints of our own runs (Orbax): verified on restore, failures in one sentence.

Layout: `<run_dir>/checkpoints/<step>/state/` (an Orbax PyTree of the whole TrainState) and
`<step>/checksums/` (`integrity.record` of it, JSON), managed by
`orbax.checkpoint.CheckpointManager` (save every N steps, keep the newest K).

Restore takes the newest checkpoint that reads back intact. One that does not (unreadable or
missing metadata, a read error, a checksum that differs) is *corrupt*: a warning names it and
the next older one is tried; a writer (the train job) renames it `<step>.corrupt-<UTC time>`
(kept for the user, out of Orbax's sight, so the step can be saved again and `keep` counts only
good ones). A checkpoint whose tree or shapes differ from the current config is a config
mismatch, not corruption: that stops with `describe_mismatch`'s sentence.

Saves run in a background thread. A failed write (disk full, read-only, permission denied, ...)
raises `CheckpointError` at the next `should_save` poll (single-process jobs), `save`, `wait` or
`close`, whichever comes first; in a multi-host job only at `save`, `wait` and `close`, which
every process reaches at the same step.
"""

from __future__ import annotations

import errno
import logging as py_logging
import os
import socket
import sys
import time
import uuid
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from irl_lm import errors
from irl_lm.checkpoints import integrity, storage


class CheckpointError(errors.UserError, RuntimeError):
  """A checkpoint that cannot be used or written; the message says why and what to do."""


class _Corrupt(Exception):
  """A checkpoint step that does not read back intact (internal; the message is the reason)."""


def flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """Maps 'a/b/c' paths of a pytree (dicts, dataclasses, tuples) to leaf shapes."""
  return {path: tuple(getattr(leaf, "shape", ()))
          for path, leaf in zip(integrity.leaf_paths(tree), jax.tree.leaves(tree))}


def describe_mismatch(expected: dict[str, tuple[int, ...]],
                      found: dict[str, tuple[int, ...]], limit: int = 3) -> str:
  """One sentence naming the first keys/shapes that differ between two `flat_shapes` maps."""
  parts = []
  missing = [k for k in expected if k not in found][:limit]
  extra = [k for k in found if k not in expected][:limit]
  differing = [k for k in expected if k in found and expected[k] != found[k]][:limit]
  if missing:
    parts.append("missing in checkpoint: " + ", ".join(missing))
  if extra:
    parts.append("unexpected in checkpoint: " + ", ".join(extra))
  if differing:
    parts.append("shape differs: " + ", ".join(
        f"{k} checkpoint {found[k]} vs model {expected[k]}" for k in differing))
  return "; ".join(parts)


def _dtype_mismatch(target: Any, metadata_tree: Any, limit: int = 3) -> str:
  """'dtype differs: a/b checkpoint float32 vs model bfloat16' for leaves whose stored dtype
  differs (a restore would cast them, and their checksums could then not match)."""
  found = dict(zip(integrity.leaf_paths(metadata_tree), jax.tree.leaves(metadata_tree)))
  differing = [f"{path} checkpoint {found[path].dtype} vs model {leaf.dtype}"
               for path, leaf in zip(integrity.leaf_paths(target), jax.tree.leaves(target))
               if getattr(found.get(path), "dtype", leaf.dtype) != leaf.dtype][:limit]
  return "dtype differs: " + ", ".join(differing) if differing else ""


def has_checkpoints(directory: str) -> bool:
  """Whether `directory` holds a step directory (`<int>/`), intact or not, without Orbax."""
  path = epath.Path(directory)
  try:
    return path.is_dir() and any(p.name.isdigit() and p.is_dir() for p in path.iterdir())
  except OSError:
    return False


def probe_writable(directory: str) -> None:
  """Creates `directory` (and parents), then creates and removes a small file in it, so that a
  run directory that cannot be written fails before training instead of at the first save.

  Raises:
    CheckpointError: one sentence naming the directory and why it cannot be written.
  """
  path = epath.Path(directory)
  if path.exists() and not path.is_dir():
    raise CheckpointError(f"{directory} is a file, not a directory: choose another run "
                          "directory (run.run_dir) or move the file away.")
  probe = path / f".write_probe-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe.write_text("irl_lm write probe\n")
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"cannot write to {directory}: {storage.reason(e)}; choose a "
                          "writable run directory (run.run_dir) or fix its permissions or "
                          "free space.") from None


class _OrbaxNoise(py_logging.Filter):
  """Drops Orbax's ERROR records (each failure is raised again as one `CheckpointError`, so
  its tracebacks would only repeat it) and its warnings about metadata of corrupt steps."""

  _HARMLESS = ("Metadata file does not exist", "Failed to get item metadata")

  def filter(self, record: py_logging.LogRecord) -> bool:
    if f"{os.sep}orbax{os.sep}" not in record.pathname:
      return True
    if record.levelno >= py_logging.ERROR:
      return False
    return not record.getMessage().startswith(self._HARMLESS)


def _quiet_orbax() -> None:
  """Installs `_OrbaxNoise` and an unraisable-exception hook that drops TensorStore's
  "Event loop is closed" callbacks after a failed read (harmless; the read error is raised).
  Idempotent; re-wraps the hook if someone (e.g. pytest) replaced it since."""
  absl_logger = py_logging.getLogger("absl")
  if not any(isinstance(f, _OrbaxNoise) for f in absl_logger.filters):
    absl_logger.addFilter(_OrbaxNoise())
  previous = sys.unraisablehook
  if getattr(previous, "drops_closed_event_loop", False):
    return

  def hook(unraisable: Any) -> None:
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"):
      previous(unraisable)

  hook.drops_closed_event_loop = True
  sys.unraisablehook = hook


def _abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings)


def _agree(why: Optional[str]) -> Optional[str]:
  """`why`, or a reason when another process of a multi-host job failed to read its part."""
  if jax.process_count() == 1:
    return why
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  failed = np.asarray(multihost_utils.process_allgather(np.int32(why is not None)))
  if why is None and failed.any():
    return f"process(es) {', '.join(map(str, np.flatnonzero(failed)))} could not read it"
  return why


def _move_aside(source: epath.Path, target: epath.Path) -> None:
  try:
    source.rename(target)
  except Exception:  # pylint: disable=broad-except  # e.g. GCS: no directory rename
    for path in source.rglob("*"):
      if path.is_file():
        (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
        path.copy(target / path.relative_to(source))
    source.rmtree()


class Checkpointer:
  """Saves and restores the TrainState of one run.

  Args:
    directory: where checkpoints live (`<run_dir>/checkpoints`); created unless `read_only`.
    save_every: save when `step % save_every == 0` (the final step is always saved).
    keep: number of newest checkpoints kept (None keeps all).
    async_save: write in a background thread so training continues meanwhile.
    read_only: only restore (infer/evaluate jobs): never save, and leave corrupt checkpoints
      where they are (a writer may be running).

  Raises:
    CheckpointError: the directory cannot be created or read.
  """

  def __init__(self, directory: str, *, save_every: int = 1000, keep: Optional[int] = 3,
               async_save: bool = True, read_only: bool = False):
    _quiet_orbax()
    self.directory = os.path.abspath(directory) if "://" not in directory else directory
    self.save_every = save_every
    self.read_only = read_only
    self._pending: Optional[int] = None  # step of a save that may still be in flight
    self._closed = False
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=1, create=not read_only,
        enable_async_checkpointing=async_save)
    try:
      self._manager = ocp.CheckpointManager(self.directory, options=options,
                                            item_names=("state", "checksums"))
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f"cannot use {self.directory} for checkpoints: "
                            f"{storage.reason(e)}; choose a writable run directory "
                            "(run.run_dir).") from None

  def latest_step(self) -> Optional[int]:
    """The newest complete checkpoint's step (intact or not), or None when there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Steps of all complete checkpoints, ascending."""
    return sorted(self._manager.all_steps())

  def _step_dir(self, step: int) -> str:
    return f"{self.directory.rstrip('/')}/{step}"

  def _read(self, step: int, target: Any, expected: dict[str, tuple[int, ...]]) -> Any:
    """Restores and verifies one step; `_Corrupt` if it does not read back intact.

    In a multi-host job each process reads only its shards, so one process may fail to read
    what the others read: they agree (one all-gather) before the collective checksum.
    """
    step_dir = epath.Path(self._step_dir(step))
    why, restored = None, None
    try:
      metadata = ocp.StandardCheckpointer().metadata(step_dir / "state").item_metadata
      if metadata is None:
        why = "its metadata (state/_METADATA) is missing or unreadable"
    except Exception as e:  # pylint: disable=broad-except
      why = f"its metadata is unreadable: {storage.summary(e)}"
    verified = (step_dir / "checksums").exists()
    if why is None:
      tree = metadata.tree if hasattr(metadata, "tree") else metadata
      mismatch = describe_mismatch(expected, flat_shapes(tree)) or _dtype_mismatch(target, tree)
      if mismatch:
        raise CheckpointError(
            f"checkpoint {step_dir / 'state'} does not match the model/optimiser of the current "
            f"config ({mismatch}); use the gin config it was written with (its run directory "
            "keeps config.gin), or choose a new run directory (run.run_dir).")
      items = {"state": ocp.args.StandardRestore(target)}
      if verified:
        items["checksums"] = ocp.args.JsonRestore()
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
      except Exception as e:  # pylint: disable=broad-except  # Orbax/TensorStore: many types
        why = f"reading it failed: {storage.summary(e)}"
    why = _agree(why)
    if why is not None:
      raise _Corrupt(why)
    if not verified:
      logging.warning("checkpoint %s has no checksums (written before irl_lm recorded them): "
                      "restored without verification.", step_dir)
      return restored.state
    try:
      differing = integrity.mismatches(restored.checksums, restored.state)
    except ValueError as e:
      raise _Corrupt(str(e)) from None
    if differing:
      raise _Corrupt(f"checksums differ for {', '.join(differing)}")
    return restored.state

  def restore(self, abstract_state: Any, shardings: Any, step: Optional[int] = None) -> Any:
    """Restores a TrainState laid out with `shardings`, verifying its checksums.

    Args:
      abstract_state: the expected TrainState as ShapeDtypeStructs (`jax.eval_shape`).
      shardings: matching pytree of NamedShardings.
      step: which checkpoint (default: the newest intact one, falling back past corrupt ones
        with a warning).

    Returns:
      The restored TrainState (sharded jax.Arrays).

    Raises:
      CheckpointError: no checkpoint; one whose tree/shapes differ from the model and
        optimiser of the current config; or no intact one (`step` corrupt, or all of them).
    """
    steps = [step] if step is not None else self.all_steps()[::-1]
    if not steps:
      raise CheckpointError(f"no checkpoint found in {self.directory}.")
    target = _abstract_with_shardings(abstract_state, shardings)
    expected = flat_shapes(abstract_state)
    corrupt: list[tuple[int, str]] = []
    for candidate in steps:
      try:
        state = self._read(candidate, target, expected)
      except _Corrupt as e:
        corrupt.append((candidate, str(e)))
        continue
      if corrupt:
        kept = self._set_aside([s for s, _ in corrupt])
        logging.warning("%s; restoring step %d, the newest good one (%s).",
                        self._describe(corrupt), candidate, kept)
      return state
    if step is not None:
      raise CheckpointError(f"{self._describe(corrupt)}; choose another step (available: "
                            f"{', '.join(map(str, self.all_steps()))}).")
    raise CheckpointError(
        f"no intact checkpoint in {self.directory}: {self._describe(corrupt)}; they are kept: "
        "move them away to start from scratch (or from train.init_from), or choose a new run "
        "directory (run.run_dir).")

  def _describe(self, corrupt: list[tuple[int, str]]) -> str:
    return "; ".join(f"checkpoint step {s} ({self._step_dir(s)}) is corrupt ({why})"
                     for s, why in corrupt)

  def _set_aside(self, steps: list[int]) -> str:
    """Renames corrupt step directories out of Orbax's sight (process 0; the others wait)."""
    if self.read_only:
      return "left in place"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    names = [f"{s}.corrupt-{stamp}" for s in steps]
    if jax.process_index() == 0:
      for s, name in zip(steps, names):
        try:
          _move_aside(epath.Path(self._step_dir(s)), epath.Path(self.directory) / name)
        except Exception as e:  # pylint: disable=broad-except
          raise CheckpointError(
              f"checkpoint step {s} ({self._step_dir(s)}) is corrupt and cannot be set aside "
              f"({storage.reason(e)}); move it away by hand and rerun.") from None
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("irl_lm_corrupt_checkpoints_set_aside")
    self._manager.reload()
    return "kept as " + ", ".join(names)

  def should_save(self, step: int) -> bool:
    """Whether `step` is on the save interval. Also raises `CheckpointError` if a background
    save has failed meanwhile (single-process jobs; see `check`)."""
    self.check()
    return self.save_every > 0 and step % self.save_every == 0

  def check(self) -> None:
    """Raises `CheckpointError` if a finished background save failed; never blocks.

    Multi-host jobs skip this (processes could see the failure at different steps and one
    would stop while the others wait in a collective): they learn of it at `save`/`wait`.
    """
    if (self._pending is None or jax.process_count() > 1
        or self._manager.is_saving_in_progress()):
      return
    self.wait()

  def wait(self) -> None:
    """Blocks until the pending save is committed.

    Raises:
      CheckpointError: it failed (one sentence: step, directory, reason, what to do).
    """
    if self._pending is None:
      return
    step, self._pending = self._pending, None
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(step, e) from None

  def _save_error(self, step: int, error: BaseException) -> CheckpointError:
    self._remove_partial(step)
    number = storage.error_number(error)
    fix = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
           errno.EROFS: "make it writable", errno.EACCES: "make it writable",
           errno.EPERM: "make it writable"}.get(number, "fix the storage")
    good = [s for s in self.all_steps() if s != step]
    since = f"step {good[-1]}, the newest complete checkpoint" if good else (
        "the start (no checkpoint is complete)")
    return CheckpointError(
        f"checkpoint step {step} could not be written to {self.directory}: "
        f"{storage.reason(error)}; {fix} (or choose another run directory, run.run_dir) and "
        f"rerun the same command to resume from {since}.")

  def _remove_partial(self, step: int) -> None:
    """Removes what a failed save of `step` left (Orbax's `<step>.orbax-checkpoint-tmp*`
    directory), so the space the error asks to free is freed and a resume finds no remnant."""
    if jax.process_index() != 0:
      return
    try:
      for path in epath.Path(self.directory).glob(f"{step}.orbax-checkpoint-tmp*"):
        if path.is_dir():
          path.rmtree()
        else:
          path.unlink()
    except OSError as e:  # e.g. a read-only file system: the remnant stays, the error is raised
      logging.warning("could not remove the partial checkpoint %d: %s", step, storage.reason(e))

  def save(self, step: int, state: Any) -> None:
    """Saves `state` (and its checksums) as checkpoint `step`, in the background.

    First waits for the previous save. A step already on disk is kept, not overwritten.

    Raises:
      CheckpointError: this save could not start, or the previous one failed.
    """
    if self.read_only:
      raise CheckpointError(f"{self.directory} was opened read-only; it cannot be saved to.")
    self.wait()
    if step in self._manager.all_steps():
      return
    items = ocp.args.Composite(state=ocp.args.StandardSave(state),
                               checksums=ocp.args.JsonSave(integrity.record(state)))
    try:
      self._manager.save(step, args=items, force=True)
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(step, e) from None
    self._pending = step
    logging.info("saving checkpoint %d to %s", step, self.directory)

  def close(self) -> None:
    """Waits for the pending save and releases resources (a second call does nothing).

    Raises:
      CheckpointError: the pending save failed.
    """
    if self._closed:
      return
    self._closed = True
    error = None
    try:
      self.wait()
    except CheckpointError as e:
      error = e
    try:
      self._manager.close()
    except Exception as e:  # pylint: disable=broad-except
      error = error or CheckpointError(
          f"closing the checkpoints in {self.directory} failed: {storage.reason(e)}.")
    if error is not None:
      raise error
