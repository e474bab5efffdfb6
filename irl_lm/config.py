"""Gin at the edges: registers the configurable pieces and parses gin files with clear errors.

Library code never imports gin; this module registers its classes and functions as gin
"external configurables" under short names (e.g. `t5_1_1_config`, `IQLearn`, `Partitioner`,
`train` for the run's `RunSettings`, `TrainSettings`, `EvalSettings`, `CheckpointSettings`), so
gin files read like T5X's.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from typing import Iterator, Sequence

import gin
import jax.numpy as jnp

import irl_lm
from irl_lm import errors, partitioning, runner
from irl_lm.checkpoints import formats as checkpoint_formats
from irl_lm.data import registry
from irl_lm.decoding.config import DecodingConfig
from irl_lm.jobs import check as check_job, evaluate as evaluate_job, infer as infer_job
from irl_lm.models import decoder_only, lora, t5
from irl_lm.training import objectives, optimizers, settings

# The shipped gin files: the copy setup.py installs inside the package as `irl_lm.gin_files`
# (a non-editable install), else the source tree's gin/ beside the package (a checkout or an
# editable install). The installed copy comes first: in an installed environment the directory
# beside the package is site-packages, whose `gin/` is the gin-config library itself.
_PACKAGE_DIR = os.path.dirname(os.path.abspath(irl_lm.__file__))
GIN_DIRS = (os.path.join(_PACKAGE_DIR, "gin_files"),
            os.path.join(os.path.dirname(_PACKAGE_DIR), "gin"))
GIN_DIR = next((d for d in GIN_DIRS if os.path.isdir(d)), GIN_DIRS[0])

_INCLUDE = re.compile(r"^\s*include\s+(['\"])(.+?)\1", re.M)
# A binding whose value is a bare name (`train.task = five`): gin's literal parser fails on it.
_BARE_NAME = re.compile(r"^\s*([\w./]+)\s*=\s*([A-Za-z_][\w.]*)\s*$")
_GIN_NAMES = {"True", "False", "None"}


class ConfigError(errors.UserError, ValueError):
  """A gin file or binding that cannot be used; the message says how to fix it."""


# Errors caused by the user's configuration or files: main prints them as one sentence. Every
# one derives from `errors.UserError` (the tuple stays for callers that name it).
USER_ERRORS = (errors.UserError,)


def _register() -> None:
  if getattr(_register, "done", False):
    return
  gin.external_configurable(t5.T5Config, "T5Config")
  gin.external_configurable(t5.t5_1_1_config, "t5_1_1_config")
  gin.external_configurable(t5.EncoderDecoderModel, "EncoderDecoderModel")
  gin.external_configurable(decoder_only.DecoderOnlyConfig, "DecoderOnlyConfig")
  gin.external_configurable(decoder_only.decoder_only_config, "decoder_only_config")
  gin.external_configurable(decoder_only.DecoderOnlyModel, "DecoderOnlyModel")
  gin.external_configurable(lora.LoraModel, "LoraModel")
  # The model config of a checkpoint (a Hugging Face directory's config.json, else its shapes).
  gin.external_configurable(checkpoint_formats.config_from_checkpoint, "config_from_checkpoint")
  gin.external_configurable(objectives.MLE, "MLE")
  gin.external_configurable(objectives.IQLearn, "IQLearn")
  gin.external_configurable(objectives.IQLearnOnline, "IQLearnOnline")
  gin.external_configurable(objectives.GAIL, "GAIL")
  gin.external_configurable(partitioning.Partitioner, "Partitioner")
  gin.external_configurable(optimizers.make_optimizer, "make_optimizer")
  gin.external_configurable(optimizers.make_schedule, "make_schedule")
  gin.external_configurable(DecodingConfig, "DecodingConfig")
  # The training run: `train.*`, and each group of its settings under its own name; the runner
  # builds the groups, so `train` does not take them as bindings.
  gin.external_configurable(settings.RunSettings, "train", denylist=list(runner.GROUPS))
  gin.external_configurable(settings.TrainSettings, "TrainSettings")
  gin.external_configurable(settings.EvalSettings, "EvalSettings")
  gin.external_configurable(settings.CheckpointSettings, "CheckpointSettings")
  gin.external_configurable(check_job.CheckSettings, "check")
  gin.external_configurable(runner.run, "run")
  gin.external_configurable(evaluate_job.EvaluateSettings, "evaluate")
  for factory in registry.FACTORIES:  # e.g. train.task = @gsm8k_task()
    gin.external_configurable(factory, factory.__name__)
  gin.external_configurable(infer_job.InferSettings, "infer")
  gin.constant("bfloat16", jnp.bfloat16)
  gin.constant("float32", jnp.float32)
  _register.done = True


class _HideGinSearchMisses(logging.Filter):
  """gin logs an ERROR for every search-path prefix an `include` is *not* under; hide those."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(("Path not found:", "system_path_file_exists:"))


def available_gin_files() -> list[str]:
  """The shipped gin files, relative to the gin directory (e.g. 'iqlearn_tiny.gin')."""
  if not os.path.isdir(GIN_DIR):
    return []
  return sorted(os.path.relpath(os.path.join(root, f), GIN_DIR)
                for root, _, names in os.walk(GIN_DIR) for f in names if f.endswith(".gin"))


def resolve_gin_file(path: str) -> str:
  """Finds a gin file as given, relative to the working directory, or under `gin/`.

  Raises:
    ConfigError: naming the paths tried and the closest shipped gin file.
  """
  candidates = [path, os.path.join(GIN_DIR, path)]
  if path.startswith("gin" + os.sep):
    candidates.append(os.path.join(GIN_DIR, path[len("gin" + os.sep):]))
  for candidate in candidates:
    if os.path.isfile(candidate):
      return candidate
  available = available_gin_files()
  relative = path[len("gin" + os.sep):] if path.startswith("gin" + os.sep) else path
  match = errors.closest_name(relative, available) or errors.closest_name(
      os.path.basename(path), available)
  hint = (f"did you mean --gin_file=gin/{match}?" if match else
          "pass an existing file, e.g. one of "
          f"{', '.join('gin/' + f for f in available if os.sep not in f)}." if available else
          f"pass an existing file (no shipped gin files were found under {GIN_DIR}).")
  raise ConfigError(f"gin file '{path}' not found (looked in the working directory and "
                    f"{GIN_DIR}); {hint}")


def _include_dirs(path: str, seen: set[str]) -> Iterator[str]:
  """The directories of `path` and of the files it includes, recursively (gin itself searches
  only the working directory and its search path for an `include`)."""
  path = os.path.abspath(path)
  if path in seen or not os.path.isfile(path):
    return
  seen.add(path)
  directory = os.path.dirname(path)
  yield directory
  with open(path, encoding="utf-8", errors="replace") as f:
    text = f.read()
  for match in _INCLUDE.finditer(text):
    name = match.group(2)
    for base in (directory, os.getcwd(), GIN_DIR):
      if os.path.isfile(os.path.join(base, name)):
        yield from _include_dirs(os.path.join(base, name), seen)
        break


def _parameters(configurable: str) -> list[str]:
  match = gin.config._REGISTRY.get_match(configurable)  # pylint: disable=protected-access
  if match is None:
    return []
  return list(inspect.signature(match.wrapped).parameters)


def _configurables() -> list[str]:
  selectors = gin.config._REGISTRY._selector_map  # pylint: disable=protected-access
  return [selector.rsplit(".", 1)[-1] for selector in selectors]


def _bare_name_binding(files: Sequence[str], bindings: Sequence[str]) -> str:
  """Where a binding's value is a bare name: "'x.y = five' (--gin_bindings)" or '' if none."""
  sources = [("--gin_bindings", b) for b in bindings]
  for path in files:
    with open(path, encoding="utf-8", errors="replace") as f:
      sources += [(f"{path}, line {n}", line) for n, line in enumerate(f, start=1)]
  for where, line in sources:
    match = _BARE_NAME.match(line.split("#")[0])
    if match and match.group(2) not in _GIN_NAMES:
      return (f"binding '{match.group(1)} = {match.group(2)}' ({where}) has an unquoted "
              f"value: quote a string ({match.group(1)} = '{match.group(2)}'), or reference a "
              f"configurable with @{match.group(2)}() or a macro with %{match.group(2)}.")
  return ""


def _user_error(e: Exception, files: Sequence[str], bindings: Sequence[str]) -> ConfigError:
  """gin's exception as one sentence naming the name or binding and the fix."""
  text = str(e)
  first = text.splitlines()[0] if text else type(e).__name__
  where = re.search(r"In (file \"[^\"]+\", line \d+|bindings string line \d+)", text)
  place = f" ({where.group(1)})" if where else ""
  match = re.search(r"No configurable matching '([^']+)'", text)
  if match:
    name = match.group(1)
    return ConfigError(
        f"unknown gin configurable '{name}'{place}{errors.closest(name, _configurables())}: "
        "check the spelling against the names registered in irl_lm/config.py (e.g. train, "
        "TrainSettings, EvalSettings, CheckpointSettings, IQLearn, MLE, t5_1_1_config, "
        "Partitioner, make_optimizer, make_schedule, DecodingConfig, run).")
  match = re.search(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", text)
  if match:
    name, parameter = match.groups()
    return ConfigError(f"{name} has no parameter '{parameter}'{place}"
                       f"{errors.closest(parameter, _parameters(name))}: fix the binding "
                       f"{name}.{parameter}.")
  if "ast." in first or "malformed node" in first:
    bare = _bare_name_binding(files, bindings)
    if bare:
      return ConfigError(bare)
  if isinstance(e, OSError):
    return ConfigError(f"{first} {place.strip()}: fix the include, or put the file next to the "
                       "gin file that includes it.".replace("  ", " "))
  return ConfigError(f"invalid gin configuration{place}: {first}. Fix the binding or gin file "
                     "it names.")


def parse(gin_files: Sequence[str], bindings: Sequence[str] = ()) -> None:
  """Parses gin files (in order) then bindings, after registering irl_lm's configurables.

  Raises:
    ConfigError: a missing file, an unknown configurable/parameter or a malformed binding,
      with the offending name and how to fix it.
  """
  _register()
  gin.clear_config()
  if not getattr(parse, "search_path_added", False):
    gin.add_config_file_search_path(GIN_DIR)
    logging.getLogger().addFilter(_HideGinSearchMisses())
    parse.search_path_added = True
  files = [resolve_gin_file(f) for f in gin_files]
  prefixes = gin.config._LOCATION_PREFIXES  # pylint: disable=protected-access
  saved, seen = list(prefixes), set()
  own = []  # each file's includes are found next to it first, from any directory
  for path in files:
    own += [d for d in _include_dirs(path, seen) if d not in own]
  prefixes[:0] = own
  try:
    gin.parse_config_files_and_bindings(files, list(bindings), finalize_config=False)
  except (ValueError, KeyError, SyntaxError, TypeError, OSError) as e:
    raise _user_error(e, files, bindings) from e
  finally:
    prefixes[:] = saved
