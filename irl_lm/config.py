"""Gin at the edges: registers the configurable pieces and parses gin files with clear errors.

Library code never imports gin; this module registers its classes and functions as gin
"external configurables" under short names (e.g. `t5_1_1_config`, `IQLearn`, `Partitioner`,
`train`), so gin files read like T5X's.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Sequence

import gin
import jax.numpy as jnp

import irl_lm
from irl_lm import partitioning, runner
from irl_lm.checkpoints import formats as checkpoint_formats, manager as checkpoints
from irl_lm.data import errors as data_errors, registry
from irl_lm.decoding.config import DecodingConfig
from irl_lm.jobs import check as check_job, common, evaluate as evaluate_job, infer as infer_job
from irl_lm.jobs import train as train_job
from irl_lm.models import decoder_only, lora, t5
from irl_lm.training import objectives, optimizers

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(irl_lm.__file__))), "gin")


class ConfigError(ValueError):
  """A gin file or binding that cannot be used; the message says how to fix it."""


# Errors caused by the user's configuration or files: main prints them as one sentence.
USER_ERRORS = (ConfigError, partitioning.PartitioningError, checkpoints.CheckpointError,
               runner.RunDirError, common.JobError, data_errors.MissingDatasetError)


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
  gin.external_configurable(train_job.train, "train")
  gin.external_configurable(check_job.check, "check")
  gin.external_configurable(runner.run, "run")
  gin.external_configurable(evaluate_job.evaluate, "evaluate")
  for factory in registry.FACTORIES:  # e.g. train.task = @gsm8k_task()
    gin.external_configurable(factory, factory.__name__)
  gin.external_configurable(infer_job.infer, "infer")
  gin.constant("bfloat16", jnp.bfloat16)
  gin.constant("float32", jnp.float32)
  _register.done = True


class _HideGinSearchMisses(logging.Filter):
  """gin logs an ERROR for every search-path prefix an `include` is *not* under; hide those."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(("Path not found:", "system_path_file_exists:"))


def resolve_gin_file(path: str) -> str:
  """Finds a gin file as given, relative to the working directory, or under `gin/`.

  Raises:
    ConfigError: naming the paths tried and where the shipped gin files live.
  """
  candidates = [path, os.path.join(GIN_DIR, path)]
  if path.startswith("gin" + os.sep):
    candidates.append(os.path.join(GIN_DIR, path[len("gin" + os.sep):]))
  for candidate in candidates:
    if os.path.isfile(candidate):
      return candidate
  available = sorted(f for f in os.listdir(GIN_DIR) if f.endswith(".gin")) if os.path.isdir(
      GIN_DIR) else []
  raise ConfigError(
      f"gin file '{path}' not found (looked in the working directory and {GIN_DIR}); pass an "
      f"existing file, e.g. --gin_file=gin/{available[0] if available else 'iqlearn_tiny.gin'}"
      f" (available: {', '.join(available)}).")


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
  try:
    gin.parse_config_files_and_bindings(files, list(bindings), finalize_config=False)
  except (ValueError, KeyError, SyntaxError, TypeError) as e:
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    match = re.search(r"No configurable matching '([^']+)'", str(e))
    if match:
      raise ConfigError(
          f"unknown gin configurable '{match.group(1)}': check the spelling against the "
          "names registered in irl_lm/config.py (e.g. train, IQLearn, MLE, t5_1_1_config, "
          "Partitioner, make_optimizer, make_schedule, DecodingConfig, run).") from e
    raise ConfigError(f"invalid gin configuration: {message}. Fix the binding or gin file "
                      "it names.") from e
