"""`run`: the gin-configured entry of every job (`run.mode`), naming and guarding run directories.

`run.mode` picks the job: 'train' (train, checkpoint, evaluate), 'check' (build the sharded
train state abstractly), 'infer' and 'evaluate' (read a training run's directory). Every job gets
the training run's settings (`training_settings`: one `training.settings.RunSettings` built from
the gin bindings), so the other jobs rebuild the run exactly, and its own settings object
(`InferSettings`, `EvaluateSettings`, `CheckSettings`, gin names `infer`, `evaluate`, `check`).
The run directory defaults to `runs/<gin file name>-<hash of the training bindings>`.

Before a train job builds anything, the runner checks every setting it can
(`RunSettings.validate`), probes that the run directory and its
`checkpoints/` can be written, and takes the run directory's lock (`checkpoints.lock`; in a
multi-host job process 0 takes it and tells the others), released when the job ends, also on
errors. `config.gin` guards a run's checkpoints: until the first checkpoint exists it is only
provisional, so a start that failed early never blocks the corrected command, and a start that
fails with a user error before its first checkpoint removes what it added to the run directory.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import re
from typing import Iterator, Optional

from absl import logging
from etils import epath

from irl_lm import errors
from irl_lm.checkpoints import lock as lock_lib
from irl_lm.checkpoints import manager as checkpoints_lib
from irl_lm.data import sources
from irl_lm.jobs import check as check_job
from irl_lm.jobs import common
from irl_lm.jobs import evaluate as evaluate_job
from irl_lm.jobs import infer as infer_job
from irl_lm.jobs import train as train_job
from irl_lm.training import settings as settings_lib

# run.mode -> the job `(run_dir, options, training) -> summary dict` it runs on a training run;
# `options` is the gin configurable of the mode's name (registered in irl_lm/config.py).
RUN_READING_JOBS = {"check": check_job.check, "infer": infer_job.infer,
                    "evaluate": evaluate_job.evaluate}
RUN_READING_MODES = tuple(RUN_READING_JOBS)
MODES = ("train", *RUN_READING_MODES)
# RunSettings fields -> the gin configurable each group is built from.
GROUPS = {"training": "TrainSettings", "evaluation": "EvalSettings",
          "checkpoints": "CheckpointSettings"}
MAX_DIFF_LINES = 12  # differing config lines a refusal shows before counting the rest
LOCK_FILE = "run.lock"


class RunDirError(errors.UserError, RuntimeError):
  """The run directory holds a different configuration's run."""


# Bindings of these configurables do not change what a run trains, so they are left out of
# the fingerprint that names (and guards) a run directory: `infer`/`evaluate` jobs find the
# training run's directory from the same gin files.
NON_TRAINING_CONFIGURABLES = ("run.", "infer.", "infer/", "evaluate.")


def _config_fingerprint(config_text: str) -> str:
  # gin.config_str() heads each configurable's bindings with "# Parameters for <name>:", a rule
  # and a closing blank line: those of non-training configurables (e.g. `run`, or a scoped
  # `infer/DecodingConfig`) are dropped whole, so a `run.mode` binding keeps the training run's
  # directory. Texts without such sections hash as before.
  lines, skipping = [], False
  for line in config_text.splitlines():
    header = re.fullmatch(r"# Parameters for (\S+):", line)
    if header:
      skipping = (header.group(1) + ".").startswith(NON_TRAINING_CONFIGURABLES)
    if skipping:
      skipping = bool(line.strip())  # the blank line ends the section
      continue
    if not line.startswith(NON_TRAINING_CONFIGURABLES):
      lines.append(line)
  return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:8]


def prepare_run_dir(run_dir: str, config_text: str, *, allow_config_change: bool,
                    has_checkpoint: bool = True) -> None:
  """Creates `run_dir` and records the config, refusing to reuse another config's run.

  Args:
    run_dir: the run directory.
    config_text: `gin.config_str()` of this run.
    allow_config_change: resume a run whose recorded config differs (with a warning).
    has_checkpoint: whether the run directory holds a checkpoint; without one the recorded
      config is provisional (a start that failed before its first checkpoint) and is replaced.

  Raises:
    RunDirError: the run has a checkpoint, `allow_config_change` is False, and
      `run_dir/config.gin` exists with different bindings (the message shows every differing
      line, or the count of the rest) or is missing (so the configuration cannot be checked).
  """
  epath.Path(run_dir).mkdir(parents=True, exist_ok=True)
  path = epath.Path(run_dir) / "config.gin"
  if not path.exists() and has_checkpoint and checkpoints_lib.has_checkpoints(
      os.path.join(run_dir, "checkpoints")):
    if not allow_config_change:
      raise RunDirError(
          f"run directory {run_dir} has checkpoints but no config.gin, so this configuration "
          "cannot be checked against the one they were trained with: restore config.gin, choose "
          "another directory with --gin_bindings=\"run.run_dir = '...'\", or resume on purpose "
          "with --gin_bindings=\"run.allow_config_change = True\".")
    logging.warning("resuming %s without its config.gin: this configuration cannot be checked "
                    "against the one its checkpoints were trained with; it is recorded now.",
                    run_dir)
  if path.exists():
    previous = path.read_text()
    if _config_fingerprint(previous) != _config_fingerprint(config_text):
      diff = config_diff(previous, config_text)
      if not has_checkpoint:
        logging.info("replacing the config.gin of an earlier start that wrote no checkpoint: %s",
                     diff)
      elif not allow_config_change:
        raise RunDirError(
            f"run directory {run_dir} holds a run with a different configuration "
            f"({diff}); choose another directory with "
            "--gin_bindings=\"run.run_dir = '...'\" or resume on purpose with "
            "--gin_bindings=\"run.allow_config_change = True\".")
      else:
        logging.warning("resuming %s with a changed configuration: %s", run_dir, diff)
  if common.is_writer():
    path.write_text(config_text)


def config_diff(previous: str, current: str, limit: int = MAX_DIFF_LINES) -> str:
  """The differing lines of two config texts ('-old; +new; ...'), at most `limit` of them, then
  '… and N more'."""
  lines = [l for l in difflib.unified_diff(previous.splitlines(), current.splitlines(),
                                           lineterm="", n=0)
           if l[:1] in "+-" and not l.startswith(("+++", "---")) and l[1:].strip()
           and not l[1:].startswith(("#", *NON_TRAINING_CONFIGURABLES))]
  text = "; ".join(lines[:limit])
  return text + (f"; … and {len(lines) - limit} more" if len(lines) > limit else "")


def resolve_run_dir(run_dir: Optional[str], default_name: str, config_text: str) -> str:
  """`run_dir`, or (None or blank) the default `runs/<default_name>-<config hash>`, with
  `{data_root}` expanded."""
  if run_dir is None or not str(run_dir).strip():
    run_dir = os.path.join("runs", f"{default_name}-{_config_fingerprint(config_text)}")
  return sources.expand_path(run_dir)


def check_train_data(task: str) -> None:
  """Reads the train split of a task with an in-memory source (local files, ...) before the
  run directory is touched or the model built, so a malformed data file stops the start at
  once; the source keeps what it read for the batches.

  Raises:
    data.errors.DataError: a malformed data file (naming the file, the line and the fix).
    data.errors.MissingDatasetError: a missing data file.
  """
  from irl_lm.data import pipeline, tasks  # pylint: disable=g-import-not-at-top
  found = pipeline.get_task(task)
  if isinstance(found, tasks.InMemoryTask):
    found.examples("train")


def _entries(run_dir: str) -> Optional[set[str]]:
  """The names in `run_dir`, or None when it does not exist."""
  path = epath.Path(run_dir)
  return {p.name for p in path.iterdir()} if path.is_dir() else None


def _remove_new_entries(run_dir: str, before: Optional[set[str]]) -> None:
  """Removes what a failed start (no checkpoint) added to `run_dir` besides its lock file, so
  the corrected command finds the directory as it was."""
  for entry in epath.Path(run_dir).iterdir():
    if entry.name != LOCK_FILE and (before is None or entry.name not in before):
      if entry.is_dir():
        entry.rmtree()
      else:
        entry.unlink()


@contextlib.contextmanager
def run_lock(run_dir: str, *, stale_minutes: float = 10.0) -> Iterator[None]:
  """Holds `run_dir`'s lock for the duration of the block (see `checkpoints.lock`).

  Process 0 takes the lock; in a multi-host job it then tells the other processes whether it
  got it (one broadcast), so all of them stop, or none does.

  Raises:
    checkpoints.CheckpointError: another job holds the lock (the message names it).
  """
  lock = lock_lib.RunLock(run_dir, stale_after=stale_minutes * 60) if common.is_writer() else None
  error = None
  if lock is not None:
    try:
      lock.acquire()
    except checkpoints_lib.CheckpointError as e:
      error = e
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    import numpy as np  # pylint: disable=g-import-not-at-top
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    locked = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if not locked and error is None:
      error = checkpoints_lib.CheckpointError(
          f"process 0 could not lock run directory {run_dir} (its log says why).")
  if error is not None:
    raise error
  try:
    yield
  finally:
    if lock is not None:
      lock.release()


def training_settings() -> settings_lib.RunSettings:
  """The training run's settings as gin binds them: `train.*` and each group's own
  configurable (`GROUPS`)."""
  import gin  # pylint: disable=g-import-not-at-top
  groups = {field: gin.get_configurable(name)() for field, name in GROUPS.items()}
  return gin.get_configurable("train")(**groups)


def run(mode: str = "train", run_dir: Optional[str] = None,
        allow_config_change: bool = False, default_name: str = "run",
        lock_stale_minutes: float = 10.0) -> dict:
  """Runs one job as configured by gin.

  Args:
    mode: 'train' (train, checkpoint, then evaluate on the validation split), 'check' (build
      the model and sharded train state abstractly and print their sizes), 'infer' or
      'evaluate' (decode with a training run's checkpoint; see their gin configurables).
    run_dir: output directory; default `runs/<gin name>-<config hash>`; a `{data_root}`
      placeholder names the data root (`data.sources.expand_path`).
    allow_config_change: resume a run directory whose recorded config differs.
    default_name: prefix of the default run directory (main passes the gin file's name).
    lock_stale_minutes: a train job takes over another job's lock of the run directory when
      its heartbeat is this old (at once when its process is gone from this host).

  Returns:
    The job's summary dict (train also writes it to `<run_dir>/summary.json`).
  """
  import gin  # pylint: disable=g-import-not-at-top
  config_text = gin.config_str()
  run_dir = resolve_run_dir(run_dir, default_name, config_text)
  if mode not in MODES:
    raise errors.SettingError(f"unknown run.mode '{mode}'{errors.closest(mode, MODES)}: use "
                              f"one of {', '.join(MODES)}.")
  settings = training_settings()
  if mode != "train":
    summary = RUN_READING_JOBS[mode](run_dir, gin.get_configurable(mode)(), settings)
    if mode == "check":
      print(json.dumps(summary, indent=2))
    return summary
  settings.validate()
  check_train_data(settings.task)
  checkpoint_dir = os.path.join(run_dir, "checkpoints")
  before = _entries(run_dir) if common.is_writer() else set()
  checkpoints_lib.probe_writable(run_dir)
  checkpoints_lib.probe_writable(checkpoint_dir)
  try:
    with run_lock(run_dir, stale_minutes=lock_stale_minutes):
      try:
        prepare_run_dir(run_dir, config_text, allow_config_change=allow_config_change,
                        has_checkpoint=checkpoints_lib.has_checkpoints(checkpoint_dir))
        logging.info("run directory: %s", os.path.abspath(run_dir))
        summary = train_job.train(run_dir, settings)
      except errors.UserError:
        if common.is_writer() and not checkpoints_lib.has_checkpoints(checkpoint_dir):
          _remove_new_entries(run_dir, before)
        raise
      if common.is_writer():
        _print_summary(run_dir, summary)
        (epath.Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
  finally:
    if before is None and common.is_writer() and epath.Path(run_dir).is_dir() and not any(
        epath.Path(run_dir).iterdir()):
      epath.Path(run_dir).rmdir()  # a failed start in a directory it created
  return summary


def _print_summary(run_dir: str, summary: dict) -> None:
  history = summary["history"]
  print(f"\nRun directory: {os.path.abspath(run_dir)}")
  if history:
    curve = " → ".join(f"{h['loss']:.3f}@{h['step']}" for h in history[::max(len(history) // 6,
                                                                                1)])
    print(f"Training loss: {curve} (last {history[-1]['loss']:.4f} at step "
          f"{history[-1]['step']}); {summary['train_seconds']:.0f} s of training")
  else:
    print(f"Training: nothing to do (already at step {summary['final_step']}).")
  if summary.get("eval"):
    scores = ", ".join(f"{k} {v:.2f}" for k, v in summary["eval"].items() if k != "num_examples")
    print(f"Validation ({int(summary['eval']['num_examples'])} examples): {scores}")


