"""Hugging Face checkpoints (`config.json` + `model.safetensors`, or an index and shards), read
and written without torch. Which tensors mean which of our parameters is the model family's
business (`families`, picked from `config.json`); this module handles the files.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional

import numpy as np

from irl_lm.checkpoints import families
from irl_lm.checkpoints.leaves import Leaf
from irl_lm.checkpoints.manager import CheckpointError

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
CONFIG_FILE = "config.json"


def read_hf_config(directory: str) -> dict[str, Any]:
  """Parsed `<directory>/config.json`; CheckpointError when missing or not JSON."""
  path = os.path.join(directory, CONFIG_FILE)
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"cannot read the Hugging Face config {path} ({type(e).__name__}: "
                          f"{str(e)[:200]}).") from e


class SafetensorsReader:
  """Reads named tensors from one or several (indexed) safetensors files as numpy arrays.

  Uses `safetensors.safe_open(..., framework='np')`; bfloat16 tensors, which safetensors' numpy
  API cannot return, are read from the file's byte offsets and viewed as `ml_dtypes.bfloat16`.

  Attributes:
    shapes: {key: shape} of every stored tensor (from the headers; no data read).
    dtypes: {key: safetensors dtype name, e.g. 'F32', 'BF16'}.
  Raises:
    CheckpointError: (on construction) unreadable headers or index.
  """

  def __init__(self, directory: str):
    from safetensors import safe_open
    self._safe_open = safe_open
    index_path = os.path.join(directory, SAFETENSORS_INDEX)
    try:
      if os.path.exists(index_path):
        with open(index_path) as f:
          weight_map = json.load(f)["weight_map"]
        files = sorted(set(weight_map.values()))
      else:
        files = [SAFETENSORS_FILE]
      self._file_of: dict[str, str] = {}
      self.shapes: dict[str, tuple[int, ...]] = {}
      self.dtypes: dict[str, str] = {}
      for name in files:
        path = os.path.join(directory, name)
        with safe_open(path, framework="np") as f:
          for key in f.keys():
            view = f.get_slice(key)
            self._file_of[key] = path
            self.shapes[key] = tuple(int(d) for d in view.get_shape())
            self.dtypes[key] = view.get_dtype()
    except Exception as e:  # safetensors raises its own error types; all mean "unreadable".
      raise CheckpointError(
          f"the Hugging Face checkpoint in {directory} is unreadable or corrupt "
          f"({type(e).__name__}: {str(e)[:200]}); re-save it with "
          "`model.save_pretrained(dir, safe_serialization=True)`.") from e

  def __contains__(self, key: str) -> bool:
    return key in self._file_of

  def read(self, key: str) -> np.ndarray:
    """The tensor `key` as a numpy array of its stored dtype (bfloat16 via ml_dtypes)."""
    path = self._file_of[key]
    try:
      if self.dtypes[key] == "BF16":
        return self._read_raw(path, key)
      with self._safe_open(path, framework="np") as f:
        return f.get_tensor(key)
    except Exception as e:
      raise CheckpointError(f"cannot read {key} from {path} ({type(e).__name__}: "
                            f"{str(e)[:200]}); the file is truncated or corrupt.") from e

  def leaves(self) -> dict[str, Leaf]:
    """{key: Leaf} of every stored tensor, as stored (no renaming or transposing)."""
    return {key: Leaf(shape, lambda key=key: self.read(key)) for key, shape in self.shapes.items()}

  @staticmethod
  def _read_raw(path: str, key: str) -> np.ndarray:
    import ml_dtypes
    with open(path, "rb") as f:
      header_size = int.from_bytes(f.read(8), "little")
      entry = json.loads(f.read(header_size))[key]
      begin, end = entry["data_offsets"]
      f.seek(8 + header_size + begin)
      data = f.read(end - begin)
    if len(data) != end - begin:
      raise ValueError(f"expected {end - begin} bytes, found {len(data)}")
    return np.frombuffer(data, dtype=ml_dtypes.bfloat16).reshape(entry["shape"])


def write_safetensors(tensors: Mapping[str, np.ndarray], hf_config: Mapping[str, Any],
                      out_dir: str) -> None:
  """Writes `<out_dir>/model.safetensors` (metadata `{'format': 'pt'}`, what transformers
  expects) and `<out_dir>/config.json`; `out_dir` is created if missing.

  Args:
    tensors: {Hugging Face key: contiguous numpy array}.
    hf_config: the `config.json` contents.
  """
  from safetensors.numpy import save_file
  os.makedirs(out_dir, exist_ok=True)
  save_file(dict(tensors), os.path.join(out_dir, SAFETENSORS_FILE), metadata={"format": "pt"})
  with open(os.path.join(out_dir, CONFIG_FILE), "w") as f:
    json.dump(hf_config, f, indent=2, sort_keys=True)


def _family_of(hf_config: Mapping[str, Any], directory: str,
               family: Optional[str]) -> families.CheckpointFamily:
  if family is not None:
    families.get(family)  # an unknown name fails before the config is judged
  where = f"the Hugging Face checkpoint in {directory}"
  found = families.for_hf_config(hf_config, where)
  if family is not None and found.name != family:
    raise CheckpointError(f"{where} holds a {found.description} model, not the requested "
                          f"family {family!r}.")
  return found


def open_hf(directory: str, family: Optional[str] = None
            ) -> tuple[dict[str, Any], dict[str, Leaf]]:
  """Opens a Hugging Face model directory without reading any weights.

  Args:
    directory: holds `config.json` and `model.safetensors` (or a `model.safetensors.index.json`
      with its shards).
    family: a `families.FAMILIES` name the checkpoint must be; None takes it from `config.json`.
  Returns:
    (config.json dict, {our parameter path: Leaf}) for every parameter found, in our layout
    (see the family's `hf_to_params`, e.g. `models.t5_checkpoint`).
  Raises:
    CheckpointError: unreadable files, an unsupported or unexpected model family.
  """
  hf_config = read_hf_config(directory)
  chosen = _family_of(hf_config, directory, family)
  reader = SafetensorsReader(directory)
  lazy = chosen.hf_to_params(hf_config, reader.shapes, reader.read,
                             where=f"the Hugging Face checkpoint in {directory}")
  # The family's reads may raise ValueError (e.g. disagreeing tied copies): CheckpointError.
  return hf_config, {path: Leaf(shape, families.checkpoint_errors(read))
                     for path, (shape, read) in lazy.items()}


def hf_family_and_config(directory: str, family: Optional[str] = None, **overrides: Any
                         ) -> tuple[families.CheckpointFamily, Any]:
  """The model family and config (`T5Config`, `DecoderOnlyConfig`) of the Hugging Face
  checkpoint in `directory`.

  Args:
    directory, family: as `open_hf`.
    overrides: extra config fields (e.g. `activation_dtype`).
  Raises:
    CheckpointError: unreadable `config.json`, an unsupported model.
  """
  hf_config = read_hf_config(directory)
  chosen = _family_of(hf_config, directory, family)
  return chosen, chosen.config_from_hf(hf_config, **overrides)


def export_hf(params: Any, config: Any, out_dir: str) -> None:
  """Writes our parameters as a Hugging Face directory that transformers loads.

  Args:
    params: nested dict of arrays with our names (what the model's `init` returns), host or
      device arrays; written as float32.
    config: the model's config (`T5Config`, `DecoderOnlyConfig`); picks the family and gives
      `config.json`.
    out_dir: created if missing; receives `config.json` and `model.safetensors` (T5 1.1:
      `shared.weight` and an untied `lm_head.weight`; decoder-only: Llama's or Qwen2's names,
      `lm_head.weight` only when untied).
  Raises:
    CheckpointError: `params` lacks a parameter of `config`'s model or has another shape.
  """
  import jax
  from flax import traverse_util
  family = families.for_config(config)
  flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
  write_safetensors(family.params_to_hf(flat, config), family.hf_config_dict(config), out_dir)
