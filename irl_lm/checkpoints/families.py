"""Model families the checkpoint readers and writers know, and how a checkpoint picks one.

A family's knowledge (Hugging Face names and config, shape-based recognition and diagnosis)
lives next to its model in `irl_lm/models/<family>_checkpoint.py`, a module that defines the
names `CheckpointFamily` lists and imports nothing from `irl_lm.checkpoints`. Adding a family
is that module plus one line in `FAMILIES`.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any, Callable, Mapping, Optional

import numpy as np

from irl_lm.checkpoints.manager import CheckpointError
from irl_lm.models import llama_checkpoint, t5_checkpoint

Shapes = Mapping[str, tuple[int, ...]]
LazyArray = tuple[tuple[int, ...], Callable[[], np.ndarray]]  # (shape, read)


def checkpoint_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
  """Re-raises a family's ValueError (one sentence about the checkpoint) as CheckpointError."""
  @functools.wraps(fn)
  def wrapped(*args: Any, **kwargs: Any) -> Any:
    try:
      return fn(*args, **kwargs)
    except ValueError as e:
      raise CheckpointError(str(e)) from e
  return wrapped


@dataclasses.dataclass(frozen=True)
class CheckpointFamily:
  """One model family as checkpoints see it. Its functions raise CheckpointError.

  Attributes:
    name: registry key, e.g. 't5_1_1'.
    description: for messages, e.g. 'T5 1.1 encoder-decoders (and Flan-T5 / mT5)'.
    config_type: the model's config dataclass (`export_hf` dispatches on it).
    hf_model_types, hf_architectures: the `config.json` `model_type` / `architectures` values
      this family reads.
    make_model: `(config) -> model` with `init(rng, input_shapes)`.
    init_shapes: the smallest `input_shapes` that `init` builds all parameters from.
    preset: `(size, **overrides) -> config`; size in `size_names`.
    size_names: preset names.
    infer_config: `(shapes, **overrides) -> config | None`, from flat parameter shapes.
    size_name: `(config) -> preset name | None`.
    likely_cause: `(found_shapes, expected_shapes) -> str`, '' when nothing evident.
    config_from_hf: `(hf_config, **overrides) -> config`.
    hf_config_dict: `(config) -> config.json dict`.
    hf_to_params: `(hf_config, stored_shapes, read, *, where) -> {path: (shape, read)}`: our
      parameters as lazy transforms of the stored Hugging Face tensors.
    params_to_hf: `(flat_params, config) -> {Hugging Face key: np.ndarray}`.
  """
  name: str
  description: str
  config_type: type
  hf_model_types: tuple[str, ...]
  hf_architectures: tuple[str, ...]
  make_model: Callable[[Any], Any]
  init_shapes: Mapping[str, tuple[int, ...]]
  preset: Callable[..., Any]
  size_names: tuple[str, ...]
  infer_config: Callable[..., Optional[Any]]
  size_name: Callable[[Any], Optional[str]]
  likely_cause: Callable[[Shapes, Shapes], str]
  config_from_hf: Callable[..., Any]
  hf_config_dict: Callable[[Any], dict[str, Any]]
  hf_to_params: Callable[..., dict[str, LazyArray]]
  params_to_hf: Callable[[Mapping[str, Any], Any], dict[str, np.ndarray]]

  @classmethod
  def from_module(cls, module: types.ModuleType) -> "CheckpointFamily":
    """The family a `models/<family>_checkpoint.py` module defines: upper-case constants
    NAME, DESCRIPTION, CONFIG_TYPE, HF_MODEL_TYPES, HF_ARCHITECTURES, SIZE_NAMES, INIT_SHAPES
    and the functions named like the other fields."""
    constants = {"name": "NAME", "description": "DESCRIPTION", "config_type": "CONFIG_TYPE",
                 "hf_model_types": "HF_MODEL_TYPES", "hf_architectures": "HF_ARCHITECTURES",
                 "size_names": "SIZE_NAMES", "init_shapes": "INIT_SHAPES"}
    values = {}
    for field in dataclasses.fields(cls):
      attr = constants.get(field.name, field.name)
      if not hasattr(module, attr):
        raise TypeError(f"{module.__name__} defines no {attr}, which a checkpoint family needs.")
      value = getattr(module, attr)
      values[field.name] = (checkpoint_errors(value) if field.name not in constants
                            else value)
    return cls(**values)


FAMILIES: dict[str, CheckpointFamily] = {
    "t5_1_1": CheckpointFamily.from_module(t5_checkpoint),
    "llama": CheckpointFamily.from_module(llama_checkpoint),
}
# For a Hugging Face config.json that names neither model_type nor architectures.
DEFAULT_FAMILY = "t5_1_1"


def get(name: str) -> CheckpointFamily:
  """FAMILIES[name]; CheckpointError naming the known ones otherwise."""
  if name not in FAMILIES:
    raise CheckpointError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}.")
  return FAMILIES[name]


def for_hf_config(hf_config: Mapping[str, Any], where: str) -> CheckpointFamily:
  """The family of a Hugging Face `config.json`: by `architectures`, else by `model_type`.

  Args:
    hf_config: the parsed `config.json`.
    where: the checkpoint's description, for the error.
  Raises:
    CheckpointError: no registered family reads it (one sentence naming what is supported).
  """
  architectures = list(hf_config.get("architectures") or [])
  model_type = hf_config.get("model_type")
  for family in FAMILIES.values():
    if set(architectures) & set(family.hf_architectures):
      return family
  for family in FAMILIES.values():
    if model_type in family.hf_model_types:
      return family
  if not architectures and model_type is None:
    return FAMILIES[DEFAULT_FAMILY]
  supported = "; ".join(f"{f.description} with model_type {_either(f.hf_model_types)}"
                        for f in FAMILIES.values())
  raise CheckpointError(
      f"{where} is a {model_type!r} model ({', '.join(architectures) or 'no architectures'}), "
      f"which irl_lm cannot load; supported: {supported}.")


def _either(names: tuple[str, ...]) -> str:
  """('a', 'b', 'c') -> "'a', 'b' or 'c'"."""
  quoted = [repr(n) for n in names]
  return " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)


def for_config(config: Any) -> CheckpointFamily:
  """The family whose `config_type` `config` is; CheckpointError when none is."""
  for family in FAMILIES.values():
    if isinstance(config, family.config_type):
      return family
  raise CheckpointError(f"no checkpoint family handles a {type(config).__name__}; known: "
                        f"{', '.join(FAMILIES)}.")


def for_shapes(shapes: Shapes) -> Optional[CheckpointFamily]:
  """The first family that recognises these flat parameter shapes (`infer_config`), or None."""
  return next((f for f in FAMILIES.values() if f.infer_config(shapes) is not None), None)
