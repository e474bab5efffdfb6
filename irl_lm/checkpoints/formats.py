"""Model parameters from and to other checkpoint formats: which format a path holds, and the
reader or writer for it. Used by the trainer's `init_from` and by `python -m irl_lm.convert`.

Formats (`CheckpointSource.format`), detected from the files:
  't5x'    T5X legacy: `checkpoint_<step>/checkpoint` (msgpack) + zarr arrays (see `t5x`).
  'orbax'  T5X with Orbax: `checkpoint_<step>/state/`, an Orbax PyTree of `{'target', 'state'}`.
  'hf'     Hugging Face: `config.json` + `model.safetensors` (see `safetensors`).
  'irl_lm' ours: `<run_dir>/checkpoints/<step>/state/`, an Orbax PyTree of the TrainState.
Only model parameters are read (never optimiser state); they come back in the model's dtypes
(bfloat16 checkpoints are upcast) with the model's names, checked key by key and shape by shape
against the model. What a mismatch likely means (wrong size, vocabulary, layout) is the model
family's diagnosis (`families`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Mapping, Optional, Union

import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from irl_lm.checkpoints import families, leaves as leaves_lib, safetensors, t5x
from irl_lm.checkpoints.manager import CheckpointError, describe_mismatch, flat_shapes
from irl_lm.models import lora as lora_lib

FORMATS = ("t5x", "orbax", "hf", "irl_lm")
FORMAT_NAMES = {"t5x": "T5X legacy (msgpack + zarr)", "orbax": "T5X Orbax",
                "hf": "Hugging Face safetensors", "irl_lm": "irl_lm run checkpoint"}
_ORBAX_SUBTREE = {"orbax": "target", "irl_lm": "params"}


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
  """A checkpoint found on disk.

  Attributes:
    format: one of FORMATS.
    path: the directory holding it: `checkpoint_<step>/` for 't5x', the Orbax PyTree directory
      (`.../state`) for 'orbax' and 'irl_lm', the model directory for 'hf'.
    step: the training step, when the directory names it.
  """
  format: str
  path: str
  step: Optional[int] = None

  def describe(self) -> str:
    """E.g. "T5X legacy (msgpack + zarr) checkpoint at /ckpt/checkpoint_1000000 (step 1000000)"."""
    step = f" (step {self.step})" if self.step is not None else ""
    return f"{FORMAT_NAMES[self.format]} checkpoint at {self.path}{step}"


# ----------------------------------------------------------------------------- detection

def _step_of(name: str) -> Optional[int]:
  match = re.fullmatch(r"(?:checkpoint_)?(\d+)", name)
  return int(match.group(1)) if match else None


def _is_orbax_tree(p: epath.Path) -> bool:
  return ((p / "_METADATA").exists() or (p / "manifest.ocdbt").exists()
          or (p.name == "state" and (p / "checkpoint").exists()))


def _orbax_source(p: epath.Path, step: Optional[int]) -> CheckpointSource:
  keys = set(t5x.orbax_tree_metadata(os.fspath(p)))
  for format, subtree in _ORBAX_SUBTREE.items():
    if subtree in keys:
      return CheckpointSource(format, os.fspath(p), step)
  raise CheckpointError(
      f"the Orbax checkpoint {p} holds neither T5X's 'target' nor irl_lm's 'params' (top-level "
      f"keys: {sorted(keys)[:6]}).")


def _latest_step_dir(p: epath.Path) -> Optional[epath.Path]:
  steps = [(s, child) for child in p.iterdir()
           if child.is_dir() and (s := _step_of(child.name)) is not None]
  return max(steps, key=lambda pair: pair[0])[1] if steps else None


def _torch_only_error(path: str) -> CheckpointError:
  try:
    architectures = safetensors.read_hf_config(path).get("architectures") or []
  except CheckpointError:
    architectures = []
  model_class = architectures[0] if architectures else "<ModelClass>"
  return CheckpointError(
      f"{path} holds only PyTorch weights (pytorch_model.bin); irl_lm reads safetensors "
      f"without torch: re-save with `{model_class}.from_pretrained(dir)"
      ".save_pretrained(new_dir)` (safetensors is transformers' default).")


def detect_format(path: str) -> CheckpointSource:
  """Finds the checkpoint at `path` and its format.

  Args:
    path: local path or gs:// URL of any of: a T5X checkpoint directory `checkpoint_<step>/` (or
      its `checkpoint` file), a T5X model directory holding `checkpoint_<step>/` subdirectories
      (the newest is taken), an Orbax `state/` directory, a Hugging Face model directory, an
      irl_lm run directory (its newest checkpoint), `<run_dir>/checkpoints` or one step of it.
  Returns:
    The CheckpointSource.
  Raises:
    CheckpointError: nothing there, or no format recognised (the message lists what was seen).
  """
  p = epath.Path(path)
  if not p.exists():
    raise CheckpointError(f"no checkpoint at {path}: the path does not exist.")
  step = _step_of(p.name)
  if not p.is_dir():
    if p.name == "checkpoint":
      return CheckpointSource("t5x", os.fspath(p.parent), _step_of(p.parent.name))
    if p.name == safetensors.CONFIG_FILE or p.name.endswith(".safetensors"):
      return detect_format(os.fspath(p.parent))
    raise CheckpointError(f"{path} is a file that is no checkpoint: pass the checkpoint's "
                          "directory.")
  if (p / safetensors.CONFIG_FILE).exists():
    if ((p / safetensors.SAFETENSORS_FILE).exists()
        or (p / safetensors.SAFETENSORS_INDEX).exists()):
      if "://" in path:
        raise CheckpointError(f"Hugging Face checkpoints are read from local disk: copy {path} "
                              "to a local directory first.")
      return CheckpointSource("hf", os.fspath(p))
    if (p / "pytorch_model.bin").exists():
      raise _torch_only_error(path)
  if _is_orbax_tree(p):
    return _orbax_source(p, _step_of(p.parent.name))
  if (p / "checkpoint").exists():
    return CheckpointSource("t5x", os.fspath(p), step)
  if (p / "state").is_dir() and _is_orbax_tree(p / "state"):
    return _orbax_source(p / "state", step)
  if (p / "checkpoints").is_dir():
    latest = _latest_step_dir(p / "checkpoints")
    if latest is not None:
      return detect_format(os.fspath(latest))
  latest = _latest_step_dir(p)
  if latest is not None:
    return detect_format(os.fspath(latest))
  seen = sorted(child.name for child in p.iterdir())[:8]
  raise CheckpointError(
      f"no checkpoint recognised at {path} (it holds: {', '.join(seen) or 'nothing'}); expected "
      "a T5X checkpoint_<step>/ directory (msgpack `checkpoint` file or Orbax `state/`), a "
      "Hugging Face directory (config.json + model.safetensors) or an irl_lm run directory.")


# ----------------------------------------------------------------------------- reading

def _source(path: Union[str, CheckpointSource]) -> CheckpointSource:
  return path if isinstance(path, CheckpointSource) else detect_format(path)


def _lazy_leaves(source: CheckpointSource, family: Optional[str]) -> dict[str, leaves_lib.Leaf]:
  if source.format == "t5x":
    return t5x.open_t5x(source.path)
  return safetensors.open_hf(source.path, family)[1]


def read_shapes(source: Union[str, CheckpointSource], *, family: Optional[str] = None
                ) -> dict[str, tuple[int, ...]]:
  """{'encoder/layers_0/attention/query/kernel': shape, ...}: the model parameters a checkpoint
  holds, in our names and layout, read from metadata only (no array data).

  Args:
    source: a CheckpointSource or a path (see `detect_format`).
    family: for 'hf' only, the `families.FAMILIES` name it must be (default: its config.json's).
  """
  source = _source(source)
  if source.format in _ORBAX_SUBTREE:
    return flat_shapes(t5x.orbax_tree_metadata(source.path)[_ORBAX_SUBTREE[source.format]])
  return {k: leaf.shape for k, leaf in _lazy_leaves(source, family).items()}


def check_compatible(source: CheckpointSource, found: Mapping[str, tuple[int, ...]],
                     abstract_params: Any, *, family: Optional[str] = None) -> None:
  """Raises CheckpointError naming the first differing keys/shapes and the likely cause when
  the checkpoint's parameters (`found`, from `read_shapes`) do not fit `abstract_params`.

  Args:
    family: the `families.FAMILIES` name whose diagnosis names the likely cause; None: the
      family that recognises `abstract_params`' shapes.
  """
  expected = flat_shapes(abstract_params)
  mismatch = describe_mismatch(expected, dict(found))
  if mismatch:
    diagnose = families.get(family) if family else families.for_shapes(expected)
    cause = diagnose.likely_cause(found, expected) if diagnose else ""
    raise CheckpointError(
        f"the {source.describe()} does not match the model built from the config "
        f"({mismatch}){'; likely cause: ' + cause if cause else ''}.")


# An irl_lm run directory's model config (written by the train job): what shapes cannot tell,
# e.g. a decoder-only model's head split, rope_theta and norm epsilon.
RUN_MODEL_CONFIG = "model_config.json"


def write_model_config(run_dir: str, config: Any, lora: Any = None) -> None:
  """Writes `<run_dir>/model_config.json`: {'family': name, 'config': the config's fields}
  (dtypes by name) and, for a LoRA run, 'lora': its `models.lora.LoraConfig` fields. Configs of
  no registered family are skipped."""
  try:
    family = families.for_config(config)
  except CheckpointError:
    return
  fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
  fields = {k: (np.dtype(v).name if k.endswith("dtype") else v) for k, v in fields.items()}
  record = {"family": family.name, "config": fields}
  if lora is not None:
    record["lora"] = dataclasses.asdict(lora)
  (epath.Path(run_dir) / RUN_MODEL_CONFIG).write_text(json.dumps(record, indent=2))


def run_lora_config(source: Union[str, CheckpointSource]) -> Optional[Any]:
  """The `models.lora.LoraConfig` a LoRA run recorded for a checkpoint inside it, else None."""
  record = _run_record(_source(source))
  if record is None or "lora" not in record:
    return None
  settings = dict(record["lora"])
  return lora_lib.LoraConfig(settings["rank"], settings["alpha"], tuple(settings["targets"]))


def _run_record(source: CheckpointSource) -> Optional[dict[str, Any]]:
  p = epath.Path(source.path)
  for directory in [p, *list(p.parents)[:3]]:
    if (directory / RUN_MODEL_CONFIG).exists():
      return json.loads((directory / RUN_MODEL_CONFIG).read_text())
  return None


def run_model_config(source: Union[str, CheckpointSource], **overrides: Any) -> Optional[Any]:
  """The config a run directory recorded (`write_model_config`) for a checkpoint inside it, or
  None when the checkpoint is not inside a run directory that has one."""
  record = _run_record(_source(source))
  if record is None:
    return None
  family = families.get(record["family"])
  fields = dict(record["config"])
  for key in [k for k in fields if k.endswith("dtype")]:
    fields[key] = jnp.dtype(fields[key]).type
  return family.config_type(**{**fields, **overrides})


def config_from_checkpoint(path: Union[str, CheckpointSource], *, family: Optional[str] = None,
                           **overrides: Any) -> Any:
  """The model config (`T5Config`, `DecoderOnlyConfig`, ...) that a checkpoint describes: for a
  Hugging Face directory from its `config.json`, for an irl_lm run from the config it recorded
  (`model_config.json`), else inferred from the parameter shapes (which fix sizes but not, e.g.,
  a decoder-only model's head split or rope_theta: see the family's `infer_config`).

  Args:
    path: a checkpoint path (see `detect_format`) or a CheckpointSource.
    family: a `families.FAMILIES` name it must be; None: whichever family reads it.
    overrides: config fields that replace the checkpoint's (e.g. `activation_dtype`,
      `dropout_rate`).
  Raises:
    CheckpointError: no recognised checkpoint, an unsupported model family, or parameters no
      family recognises.
  """
  source = _source(path)
  if source.format == "hf":
    return safetensors.hf_family_and_config(source.path, family, **overrides)[1]
  recorded = run_model_config(source, **overrides)
  if recorded is not None:
    return recorded
  shapes = read_shapes(source)
  chosen = families.get(family) if family else families.for_shapes(shapes)
  config = chosen.infer_config(shapes, **overrides) if chosen else None
  if config is None:
    known = [families.get(family)] if family else families.FAMILIES.values()
    raise CheckpointError(
        f"the {source.describe()} does not hold the parameter tree of "
        f"{'the' if family else 'a known'} model family "
        f"({', '.join(f.name for f in known)}; it holds e.g. {', '.join(list(shapes)[:3])}).")
  return config


def load_params(path: Union[str, CheckpointSource], abstract_params: Any, *,
                shardings: Optional[Any] = None, family: Optional[str] = None) -> Any:
  """Reads the model parameters of any supported checkpoint, checked against the model.

  Args:
    path: a checkpoint path (see `detect_format`) or a CheckpointSource.
    abstract_params: the model's parameters as arrays or `jax.ShapeDtypeStruct`s (e.g.
      `jax.eval_shape(lambda r: model.init(r, shapes), key)`, or a StateLayout's
      `abstract.params`): fixes keys, shapes and dtypes.
    shardings: optional matching pytree of `jax.sharding.Sharding` (e.g. a StateLayout's
      `param_shardings`); when given, every leaf is a `jax.Array` laid out with it (read leaf by
      leaf, never whole on one device), else a host numpy array.
    family: a `families.FAMILIES` name ('t5_1_1', 'llama'); None: a Hugging Face checkpoint's
      family comes from its config.json, and mismatches are diagnosed by the family that
      recognises `abstract_params`.
  Returns:
    A pytree like `abstract_params` with its dtypes (float32; bfloat16 checkpoints upcast).
  Raises:
    CheckpointError: no recognised checkpoint, unreadable files, an unsupported model family,
      or keys/shapes that differ from the model's (the message names the first differences and
      the likely cause).
  """
  if family is not None:
    families.get(family)  # an unknown name fails before anything is read
  source = _source(path)
  logging.info("loading parameters from the %s", source.describe())
  if source.format in _ORBAX_SUBTREE:
    check_compatible(source, read_shapes(source), abstract_params, family=family)
    return t5x.restore_orbax_params(source.path, _ORBAX_SUBTREE[source.format], abstract_params,
                                    where=source.describe(), shardings=shardings)
  leaves = _lazy_leaves(source, family)
  check_compatible(source, {k: leaf.shape for k, leaf in leaves.items()}, abstract_params,
                   family=family)
  return leaves_lib.read_leaves(leaves, abstract_params, where=source.describe(),
                                shardings=shardings)


# ----------------------------------------------------------------------------- writing

def save_params(params: Any, path: str, format: str, *, config: Optional[Any] = None,
                step: int = 0, dtype: Any = np.float32) -> None:
  """Writes parameters in `format`: 'hf' (needs `config`), 't5x' or 'orbax' (T5X layouts).

  Args:
    params: nested dict of arrays with our (T5X-style) names.
    path: output directory (for T5X formats, conventionally `.../checkpoint_<step>`).
    format: 'hf', 't5x' or 'orbax'.
    config: the model's config, a T5Config or DecoderOnlyConfig (required for 'hf': picks the
      family).
    step, dtype: T5X formats only (see `t5x.save_t5x`); Hugging Face export is float32.
  """
  if format == "hf":
    if config is None:
      raise ValueError("export to Hugging Face needs the model's config.")
    safetensors.export_hf(params, config, path)
  elif format == "t5x":
    t5x.save_t5x(params, path, step=step, dtype=dtype)
  elif format == "orbax":
    t5x.save_t5x_orbax(params, path, step=step, dtype=dtype)
  else:
    raise ValueError(f"cannot write format {format!r}; choose 'hf', 't5x' or 'orbax'.")
