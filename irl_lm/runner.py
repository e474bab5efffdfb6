"""`run`: the gin-configured entry of every job (`run.mode`), naming and guarding run directories.

`run.mode` picks the job: 'train' (train, checkpoint, evaluate), 'check' (build the sharded
train state abstractly), 'infer' and 'evaluate' (read a training run's directory). Every job but
train gets the training job's arguments (`training_settings`) so it rebuilds the run exactly.
The run directory defaults to `runs/<gin file name>-<hash of the training bindings>`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import inspect
import re
from typing import Any, Optional

from absl import logging
from etils import epath

from irl_lm.data import sources
from irl_lm.jobs import train as train_job


# run.mode -> the gin configurable job `(run_dir, *, training) -> summary dict` it runs on a
# training run (registered in irl_lm/config.py).
RUN_READING_MODES = ("check", "infer", "evaluate")


class RunDirError(RuntimeError):
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


def prepare_run_dir(run_dir: str, config_text: str, *, allow_config_change: bool) -> None:
  """Creates `run_dir` and records the config, refusing to reuse another config's run.

  Raises:
    RunDirError: `run_dir/config.gin` exists with different bindings (and
      `allow_config_change` is False); the message shows the first differing lines.
  """
  epath.Path(run_dir).mkdir(parents=True, exist_ok=True)
  path = epath.Path(run_dir) / "config.gin"
  if path.exists():
    previous = path.read_text()
    if _config_fingerprint(previous) != _config_fingerprint(config_text):
      diff = [l for l in difflib.unified_diff(previous.splitlines(), config_text.splitlines(),
                                               lineterm="", n=0)
              if l[:1] in "+-" and not l.startswith(("+++", "---"))][:6]
      if not allow_config_change:
        raise RunDirError(
            f"run directory {run_dir} holds a run with a different configuration "
            f"({'; '.join(diff)}); choose another directory with "
            "--gin_bindings=\"run.run_dir = '...'\" or resume on purpose with "
            "--gin_bindings=\"run.allow_config_change = True\".")
      logging.warning("resuming %s with a changed configuration: %s", run_dir, diff)
  path.write_text(config_text)


def training_settings() -> dict[str, Any]:
  """The train job's arguments as gin binds them, over `jobs.train.train`'s defaults (gin
  references resolved), so other jobs rebuild the run's train state exactly."""
  import gin  # pylint: disable=g-import-not-at-top
  defaults = {name: p.default for name, p in inspect.signature(train_job.train).parameters.items()
              if p.default is not inspect.Parameter.empty}
  return {**defaults, **gin.get_bindings("train")}


def run(mode: str = "train", run_dir: Optional[str] = None,
        allow_config_change: bool = False, default_name: str = "run") -> dict:
  """Runs one job as configured by gin.

  Args:
    mode: 'train' (train, checkpoint, then evaluate on the validation split), 'check' (build
      the model and sharded train state abstractly and print their sizes), 'infer' or
      'evaluate' (decode with a training run's checkpoint; see their gin configurables).
    run_dir: output directory; default `runs/<gin name>-<config hash>`; a `{data_root}`
      placeholder names the data root (`data.sources.expand_path`).
    allow_config_change: resume a run directory whose recorded config differs.
    default_name: prefix of the default run directory (main passes the gin file's name).

  Returns:
    The job's summary dict (train also writes it to `<run_dir>/summary.json`).
  """
  import gin  # pylint: disable=g-import-not-at-top
  config_text = gin.config_str()
  if run_dir is None:
    run_dir = os.path.join("runs", f"{default_name}-{_config_fingerprint(config_text)}")
  run_dir = sources.expand_path(run_dir)
  if mode != "train":
    if mode not in RUN_READING_MODES:
      raise ValueError(f"unknown run.mode '{mode}': use one of "
                       f"{', '.join(['train', *RUN_READING_MODES])}.")
    summary = gin.get_configurable(mode)(run_dir=run_dir, training=training_settings())
    if mode == "check":
      print(json.dumps(summary, indent=2))
    return summary
  prepare_run_dir(run_dir, config_text, allow_config_change=allow_config_change)
  logging.info("run directory: %s", os.path.abspath(run_dir))
  summary = gin.get_configurable("train")(run_dir=run_dir)
  _print_summary(run_dir, summary)
  (epath.Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
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


