"""Model parameters from and to other checkpoint formats: T5X (legacy and Orbax), Hugging Face,
and our own runs. Used by `train(init_from=...)` and by `python -m irl_lm.convert`.

Formats (`CheckpointSource.format`), detected from the files:
  't5x'    T5X legacy: `checkpoint_<step>/checkpoint`, a flax msgpack of
           `{'version': 3, 'optimizer': {'target': params, 'state': {...}}}` whose large leaves
           are TensorStore specs `{'driver': 'zarr', 'kvstore': {'driver': 'file'|'gcs',
           'path': 'target.encoder.layers_0.attention.query.kernel'}, 'metadata': {...}}`, the
           path relative to the checkpoint directory (zarr v2 arrays, gzip chunks).
  'orbax'  T5X with Orbax: `checkpoint_<step>/state/`, an Orbax PyTree of `{'target', 'state'}`.
  'hf'     Hugging Face: `config.json` + `model.safetensors` (see `hf_checkpoints`).
  'irl_lm' ours: `<run_dir>/checkpoints/<step>/state/`, an Orbax PyTree of the TrainState.
Only model parameters are read (never optimiser state); they come back float32 (bfloat16
checkpoints are upcast) with T5X names, checked key by key and shape by shape against the model.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Mapping, Optional, Union

import jax
import numpy as np
from absl import logging
from etils import epath

from irl_lm.models import t5
from irl_lm.checkpoints import hf as hf_checkpoints
from irl_lm.checkpoints.manager import CheckpointError, describe_mismatch, flat_shapes

FORMATS = ("t5x", "orbax", "hf", "irl_lm")
FORMAT_NAMES = {"t5x": "T5X legacy (msgpack + zarr)", "orbax": "T5X Orbax",
                "hf": "Hugging Face safetensors", "irl_lm": "irl_lm run checkpoint"}
T5X_VERSION = 3
_CHUNK_BYTES = 64 * 2**20  # T5X's target zarr chunk size
_SIZE_NAMES = ("tiny", "small", "base", "large", "xl", "xxl")
_SCANNED = re.compile(r"(^|/)(encoder|decoder)/layers/")
_LAYER = re.compile(r"^(encoder|decoder)/layers_(\d+)/")


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


def _step_of(name: str) -> Optional[int]:
  match = re.fullmatch(r"(?:checkpoint_)?(\d+)", name)
  return int(match.group(1)) if match else None


def _is_orbax_tree(p: epath.Path) -> bool:
  return ((p / "_METADATA").exists() or (p / "manifest.ocdbt").exists()
          or (p.name == "state" and (p / "checkpoint").exists()))


def _orbax_tree_metadata(path: str) -> Mapping[str, Any]:
  import orbax.checkpoint as ocp
  try:
    metadata = ocp.PyTreeCheckpointer().metadata(path)
  except Exception as e:  # Orbax raises many types; all mean "unreadable".
    raise CheckpointError(f"the Orbax checkpoint {path} is unreadable or corrupt "
                          f"({type(e).__name__}: {str(e)[:200]}).") from e
  metadata = getattr(metadata, "item_metadata", metadata)
  metadata = getattr(metadata, "tree", metadata)
  if not isinstance(metadata, Mapping):
    raise CheckpointError(f"the Orbax checkpoint {path} does not hold a dict tree.")
  return metadata


def _orbax_source(p: epath.Path, step: Optional[int]) -> CheckpointSource:
  keys = set(_orbax_tree_metadata(os.fspath(p)))
  if "target" in keys:
    return CheckpointSource("orbax", os.fspath(p), step)
  if "params" in keys:
    return CheckpointSource("irl_lm", os.fspath(p), step)
  raise CheckpointError(
      f"the Orbax checkpoint {p} holds neither T5X's 'target' nor irl_lm's 'params' (top-level "
      f"keys: {sorted(keys)[:6]}).")


def _latest_step_dir(p: epath.Path) -> Optional[epath.Path]:
  steps = [(s, child) for child in p.iterdir()
           if child.is_dir() and (s := _step_of(child.name)) is not None]
  return max(steps, key=lambda pair: pair[0])[1] if steps else None


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
    if p.name == hf_checkpoints.CONFIG_FILE or p.name.endswith(".safetensors"):
      return detect_format(os.fspath(p.parent))
    raise CheckpointError(f"{path} is a file that is no checkpoint: pass the checkpoint's "
                          "directory.")
  if (p / hf_checkpoints.CONFIG_FILE).exists():
    if ((p / hf_checkpoints.SAFETENSORS_FILE).exists()
        or (p / hf_checkpoints.SAFETENSORS_INDEX).exists()):
      if "://" in path:
        raise CheckpointError(f"Hugging Face checkpoints are read from local disk: copy {path} "
                              "to a local directory first.")
      return CheckpointSource("hf", os.fspath(p))
    if (p / "pytorch_model.bin").exists():
      raise CheckpointError(
          f"{path} holds only PyTorch weights (pytorch_model.bin); irl_lm reads safetensors "
          "without torch: re-save with `T5ForConditionalGeneration.from_pretrained(dir)"
          ".save_pretrained(new_dir)` (safetensors is transformers' default).")
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


# ----------------------------------------------------------------------------- T5X legacy

def _is_ts_spec(value: Any) -> bool:
  return isinstance(value, Mapping) and "driver" in value and (
      "kvstore" in value or "path" in value)


def _flatten_t5x(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, Mapping) and not _is_ts_spec(tree):
    flat: dict[str, Any] = {}
    for key, value in tree.items():
      flat.update(_flatten_t5x(value, f"{prefix}{key}/"))
    return flat
  return {prefix[:-1]: tree}


def _kvstore(checkpoint_dir: str, relative: str) -> dict[str, Any]:
  match = re.fullmatch(r"gs://([^/]+)/?(.*)", checkpoint_dir)
  if match:
    return {"driver": "gcs", "bucket": match.group(1),
            "path": os.path.join(match.group(2), relative)}
  return {"driver": "file", "path": os.path.join(checkpoint_dir, relative)}


class _Leaf:
  """A stored array: `shape` and a `read() -> np.ndarray` (stored dtype)."""

  def __init__(self, shape: tuple[int, ...], read: Callable[[], np.ndarray]):
    self.shape = shape
    self.read = read


def _zarr_leaf(checkpoint_dir: str, name: str, spec: Mapping[str, Any]) -> _Leaf:
  relative = (spec.get("kvstore") or {}).get("path") or spec.get("path")
  if not relative:
    raise CheckpointError(f"the T5X checkpoint {checkpoint_dir} has no array path for {name}.")
  shape = (spec.get("metadata") or {}).get("shape")
  if shape is None:  # not in the msgpack: read the array's own metadata (no data).
    shape = _open_zarr(checkpoint_dir, name, relative, spec).shape
  shape = tuple(int(d) for d in shape)

  def read() -> np.ndarray:
    store = _open_zarr(checkpoint_dir, name, relative, spec)
    try:
      array = np.asarray(store.read().result())
    except Exception as e:  # tensorstore raises ValueError/RuntimeError variants.
      raise _zarr_error(checkpoint_dir, name, relative, e) from e
    _warn_on_missing_chunks(name, store, _kvstore(checkpoint_dir, relative))
    return array
  return _Leaf(shape, read)


def _zarr_error(checkpoint_dir: str, name: str, relative: str, e: Exception) -> CheckpointError:
  return CheckpointError(
      f"cannot read {name} from the T5X checkpoint {checkpoint_dir}/{relative} "
      f"({type(e).__name__}: {str(e)[:200]}); the checkpoint is incomplete or corrupt.")


def _open_zarr(checkpoint_dir: str, name: str, relative: str, spec: Mapping[str, Any]) -> Any:
  import tensorstore as ts
  try:
    return ts.open({"driver": spec.get("driver", "zarr"),
                    "kvstore": _kvstore(checkpoint_dir, relative)}, open=True, read=True).result()
  except Exception as e:  # tensorstore raises ValueError/RuntimeError variants.
    raise _zarr_error(checkpoint_dir, name, relative, e) from e


def _warn_on_missing_chunks(name: str, store: Any, kvstore: Mapping[str, Any]) -> None:
  """Zarr reads a missing chunk as the fill value (zeros) without error; say so loudly."""
  import tensorstore as ts
  try:
    chunk = store.chunk_layout.read_chunk.shape
    expected = int(np.prod([-(-size // c) for size, c in zip(store.shape, chunk)]))
    listed = ts.KvStore.open(dict(kvstore, path=kvstore["path"].rstrip("/") + "/")).result()
    found = sum(1 for key in listed.list().result() if not key.decode().startswith("."))
  except Exception as e:  # the check is advisory: never refuse a readable array over it.
    logging.info("could not count the zarr chunks of %s (%s)", name, e)
    return
  if found < expected:
    logging.warning("%s: %d of %d zarr chunks are missing and read as zeros; the checkpoint may "
                    "be incomplete.", name, expected - found, expected)


def _open_t5x(checkpoint_dir: str) -> dict[str, _Leaf]:
  from flax import serialization
  path = epath.Path(checkpoint_dir) / "checkpoint"
  try:
    contents = serialization.msgpack_restore(path.read_bytes())
  except Exception as e:  # msgpack raises several types for bad bytes.
    raise CheckpointError(f"the T5X checkpoint file {path} is unreadable or corrupt "
                          f"({type(e).__name__}: {str(e)[:200]}).") from e
  if not isinstance(contents, Mapping):
    raise CheckpointError(f"{path} is not a T5X checkpoint (no msgpack dict).")
  version = contents.get("version", 0)
  if version < 2 or "target" not in contents.get("optimizer", {}):
    raise CheckpointError(f"{path} is not a T5X checkpoint of version >= 2 with "
                          f"optimizer/target (version {version}).")
  leaves = {}
  for name, value in _flatten_t5x(contents["optimizer"]["target"]).items():
    if _is_ts_spec(value):
      leaves[name] = _zarr_leaf(checkpoint_dir, name, value)
    else:
      array = np.asarray(value)
      leaves[name] = _Leaf(array.shape, lambda array=array: array)
  return leaves


def _chunk_shape(shape: tuple[int, ...], itemsize: int) -> list[int]:
  """Largest chunk that divides `shape` and stays under 64 MiB (splitting the largest dim)."""
  chunk = list(shape)
  while chunk and int(np.prod(chunk)) * itemsize > _CHUNK_BYTES:
    dim = int(np.argmax(chunk))
    size = chunk[dim]
    chunk[dim] = size // next(f for f in range(2, size + 1) if size % f == 0)
  return chunk


def save_t5x(params: Any, checkpoint_dir: str, *, step: int = 0,
             dtype: Any = np.float32) -> None:
  """Writes parameters as a T5X legacy checkpoint directory (version 3).

  Layout: `<checkpoint_dir>/checkpoint` (flax msgpack of `{'version': 3, 'optimizer':
  {'target': {...TensorStore specs...}, 'state': {'step': step, 'param_states': {}}}}`) and one
  zarr array per parameter, `<checkpoint_dir>/target.<dotted.path>/` (gzip, chunks <= 64 MiB).
  T5X restores it with its optimiser state from scratch (e.g. `fallback_to_scratch=True`).

  Args:
    params: nested dict of arrays with T5X names.
    checkpoint_dir: local path or gs:// URL, conventionally `.../checkpoint_<step>`.
    step: recorded as the optimiser step.
    dtype: stored dtype of the parameters (float32, or bfloat16 to halve the size).
  """
  import ml_dtypes
  import tensorstore as ts
  from flax import serialization, traverse_util

  dtype = np.dtype(ml_dtypes.bfloat16 if str(np.dtype(dtype)) == "bfloat16" else dtype)
  epath.Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
  specs = {}
  for path, value in traverse_util.flatten_dict(params, sep="/").items():
    array = np.asarray(jax.device_get(value)).astype(dtype)
    relative = "target." + path.replace("/", ".")
    metadata = {"shape": list(array.shape), "chunks": _chunk_shape(array.shape, dtype.itemsize),
                "compressor": {"id": "gzip"}}
    store = ts.open({"driver": "zarr", "dtype": dtype.name,
                     "kvstore": _kvstore(checkpoint_dir, relative), "metadata": metadata},
                    create=True, delete_existing=True).result()
    store.write(array).result()
    spec = {"driver": "zarr", "dtype": dtype.name,
            "kvstore": {"driver": "gcs" if checkpoint_dir.startswith("gs://") else "file",
                        "path": relative}, "metadata": metadata}
    if checkpoint_dir.startswith("gs://"):
      spec["kvstore"]["bucket"] = "t5x-dummy-bucket"
    specs[path] = spec
  contents = {"version": T5X_VERSION,
              "optimizer": {"target": traverse_util.unflatten_dict(specs, sep="/"),
                            "state": {"step": np.asarray(step, np.int32), "param_states": {}}}}
  (epath.Path(checkpoint_dir) / "checkpoint").write_bytes(
      serialization.msgpack_serialize(contents))


def save_t5x_orbax(params: Any, checkpoint_dir: str, *, step: int = 0,
                   dtype: Any = np.float32) -> None:
  """Writes parameters as a T5X Orbax checkpoint: `<checkpoint_dir>/state/`, an Orbax PyTree of
  `{'target': params, 'state': {'step': step}}` (T5X's item name and tree; no optimiser state).

  Args: as `save_t5x`.
  """
  import orbax.checkpoint as ocp
  tree = {"target": jax.tree.map(lambda x: np.asarray(jax.device_get(x)).astype(dtype), params),
          "state": {"step": np.asarray(step, np.int32)}}
  epath.Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
  checkpointer = ocp.PyTreeCheckpointer()
  checkpointer.save(os.path.join(checkpoint_dir, "state"), tree, force=True)
  checkpointer.close()


# ----------------------------------------------------------------------------- shapes & checks

def read_shapes(source: CheckpointSource) -> dict[str, tuple[int, ...]]:
  """{'encoder/layers_0/attention/query/kernel': shape, ...}: the model parameters a checkpoint
  holds, in T5X names and layout, read from metadata only (no array data)."""
  if source.format == "t5x":
    return {k: leaf.shape for k, leaf in _open_t5x(source.path).items()}
  if source.format == "hf":
    return {k: leaf.shape for k, leaf in hf_checkpoints.open_hf(source.path)[1].items()}
  subtree = "target" if source.format == "orbax" else "params"
  return flat_shapes(_orbax_tree_metadata(source.path)[subtree])


def infer_config(shapes: Mapping[str, tuple[int, ...]], **overrides: Any) -> Optional[t5.T5Config]:
  """The T5Config whose parameters have these shapes (None if they are not T5 1.1's tree).

  Args:
    shapes: flat T5X shapes, e.g. from `read_shapes`.
    overrides: extra T5Config fields (e.g. `activation_dtype`).
  """
  try:
    vocab, emb = shapes["token_embedder/embedding"]
    heads, buckets = shapes["encoder/relpos_bias/rel_embedding"]
    joined = shapes["encoder/layers_0/attention/query/kernel"][1]
    mlp = shapes["encoder/layers_0/mlp/wi_0/kernel"][1]
  except (KeyError, ValueError, IndexError):
    return None
  layers = {"encoder": set(), "decoder": set()}
  for key in shapes:
    match = _LAYER.match(key)
    if match:
      layers[match.group(1)].add(int(match.group(2)))
  fields = dict(vocab_size=vocab, emb_dim=emb, num_heads=heads, head_dim=joined // heads,
                num_encoder_layers=len(layers["encoder"]),
                num_decoder_layers=len(layers["decoder"]), mlp_dim=mlp,
                relative_attention_num_buckets=buckets)
  fields.update(overrides)
  return t5.T5Config(**fields)


def size_name(config: t5.T5Config) -> Optional[str]:
  """The T5 1.1 preset ('small', 'xl', ...) with these dimensions (any vocabulary), or None."""
  fields = ("emb_dim", "num_heads", "head_dim", "num_encoder_layers", "num_decoder_layers",
            "mlp_dim")
  for name in _SIZE_NAMES:
    preset = t5.t5_1_1_config(name)
    if all(getattr(preset, f) == getattr(config, f) for f in fields):
      return name
  return None


def _describe_dims(config: t5.T5Config) -> str:
  name = size_name(config)
  label = f"T5 1.1 '{name}'" if name else "a T5 1.1 model"
  return (f"{label} (emb_dim {config.emb_dim}, {config.num_heads} heads of {config.head_dim}, "
          f"{config.num_encoder_layers}+{config.num_decoder_layers} layers, mlp_dim "
          f"{config.mlp_dim}, vocab {config.vocab_size})")


def likely_cause(found: Mapping[str, tuple[int, ...]],
                 expected: Mapping[str, tuple[int, ...]]) -> str:
  """A sentence naming why checkpoint shapes `found` differ from the model's `expected`
  (scanned layers, another size preset, another vocabulary), or '' when no cause is evident."""
  scanned = next((k for k in found if _SCANNED.search(k)), None)
  if scanned:
    return ("the checkpoint stores scanned layers (one stacked 'layers' entry per stack, e.g. "
            f"{scanned}, as T5X's scalable_t5 / umT5 configs write), which irl_lm does not "
            "load: unscan it with T5X first (one 'layers_<i>' entry per layer)")
  ours, theirs = infer_config(expected), infer_config(found)
  if ours is None or theirs is None:
    return ""
  if dataclasses.replace(theirs, vocab_size=ours.vocab_size) != ours:
    name = size_name(theirs)
    fix = (f"set t5_1_1_config.size = '{name}' (convert: --size={name})" if name else
           "set the T5Config dimensions to match")
    return (f"wrong size preset: the checkpoint is {_describe_dims(theirs)} but the model is "
            f"{_describe_dims(ours)}; {fix}")
  if theirs.vocab_size != ours.vocab_size:
    return (f"the vocabulary size differs (checkpoint {theirs.vocab_size}, model "
            f"{ours.vocab_size}); set t5_1_1_config.vocab_size = {theirs.vocab_size} (32128 for "
            "T5's SentencePiece vocabulary)")
  return ""


def check_compatible(source: CheckpointSource, found: Mapping[str, tuple[int, ...]],
                     abstract_params: Any) -> None:
  """Raises CheckpointError naming the first differing keys/shapes and the likely cause when
  the checkpoint's parameters (`found`, from `read_shapes`) do not fit `abstract_params`."""
  expected = flat_shapes(abstract_params)
  mismatch = describe_mismatch(expected, dict(found))
  if mismatch:
    cause = likely_cause(found, expected)
    raise CheckpointError(
        f"the {source.describe()} does not match the model built from the config "
        f"({mismatch}){'; likely cause: ' + cause if cause else ''}.")


# ----------------------------------------------------------------------------- loading

def _restore_orbax(source: CheckpointSource, abstract_params: Any,
                   shardings: Optional[Any]) -> Any:
  import orbax.checkpoint as ocp
  subtree = "target" if source.format == "orbax" else "params"
  if shardings is None:
    restore_args = jax.tree.map(
        lambda x: ocp.RestoreArgs(restore_type=np.ndarray, dtype=x.dtype), abstract_params)
  else:
    restore_args = jax.tree.map(
        lambda x, s: ocp.ArrayRestoreArgs(sharding=s, global_shape=x.shape, dtype=x.dtype),
        abstract_params, shardings)
  item = jax.tree.map(lambda x: np.zeros((), x.dtype), abstract_params)
  try:
    restored = ocp.PyTreeCheckpointer().restore(
        source.path, args=ocp.args.PyTreeRestore(item={subtree: item},
                                                 restore_args={subtree: restore_args},
                                                 partial_restore=True))
  except Exception as e:  # Orbax raises many types; all mean "this checkpoint won't load".
    raise CheckpointError(f"cannot read the {source.describe()} ({type(e).__name__}: "
                          f"{str(e)[:300]}); it is incomplete or corrupt.") from e
  return restored[subtree]


def _place(array: np.ndarray, sharding: Optional[Any]) -> Any:
  if sharding is None:
    return array
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def load_params(path: Union[str, CheckpointSource], abstract_params: Any, *,
                shardings: Optional[Any] = None) -> Any:
  """Reads the model parameters of any supported checkpoint, checked against the model.

  Args:
    path: a checkpoint path (see `detect_format`) or a CheckpointSource.
    abstract_params: the model's parameters as arrays or `jax.ShapeDtypeStruct`s (e.g.
      `jax.eval_shape(lambda r: model.init(r, shapes), key)`): fixes keys, shapes and dtypes.
    shardings: optional matching pytree of `jax.sharding.Sharding`; when given, every leaf is a
      `jax.Array` laid out with it (read leaf by leaf), else a host numpy array.
  Returns:
    A pytree like `abstract_params` with its dtypes (float32; bfloat16 checkpoints upcast).
  Raises:
    CheckpointError: no recognised checkpoint, unreadable files, or keys/shapes that differ
      from the model's (the message names the first differences and the likely cause).
  """
  source = path if isinstance(path, CheckpointSource) else detect_format(path)
  logging.info("loading parameters from the %s", source.describe())
  check_compatible(source, read_shapes(source), abstract_params)
  if source.format in ("orbax", "irl_lm"):
    return _restore_orbax(source, abstract_params, shardings)
  leaves = (_open_t5x(source.path) if source.format == "t5x"
            else hf_checkpoints.open_hf(source.path)[1])
  paths_and_abstract, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)
  keys = list(flat_shapes(abstract_params))
  sharding_leaves = (jax.tree.leaves(shardings) if shardings is not None
                     else [None] * len(keys))
  values = []
  for key, (_, abstract), sharding in zip(keys, paths_and_abstract, sharding_leaves):
    array = np.asarray(leaves[key].read(), dtype=abstract.dtype)
    if array.shape != tuple(abstract.shape):
      raise CheckpointError(f"{key} in the {source.describe()} has shape {array.shape}, its "
                            f"metadata says {leaves[key].shape}: the checkpoint is corrupt.")
    values.append(_place(array, sharding))
  return jax.tree_util.tree_unflatten(treedef, values)


def save_params(params: Any, path: str, format: str, *, config: Optional[t5.T5Config] = None,
                step: int = 0, dtype: Any = np.float32) -> None:
  """Writes parameters in `format`: 'hf' (needs `config`), 't5x' or 'orbax' (T5X layouts).

  Args:
    params: nested dict of arrays with T5X names.
    path: output directory (for T5X formats, conventionally `.../checkpoint_<step>`).
    format: 'hf', 't5x' or 'orbax'.
    config: the model's T5Config (required for 'hf').
    step, dtype: T5X formats only (see `save_t5x`); Hugging Face export is float32.
  """
  if format == "hf":
    if config is None:
      raise ValueError("export to Hugging Face needs the model's T5Config.")
    hf_checkpoints.export_hf(params, config, path)
  elif format == "t5x":
    save_t5x(params, path, step=step, dtype=dtype)
  elif format == "orbax":
    save_t5x_orbax(params, path, step=step, dtype=dtype)
  else:
    raise ValueError(f"cannot write format {format!r}; choose 'hf', 't5x' or 'orbax'.")


def initial_state(init_from: str, layout: Any, tx: Any, seed: int = 0) -> Any:
  """A fresh TrainState (step 0, new optimiser state) whose parameters come from a checkpoint.

  Args:
    init_from: checkpoint path in any supported format (see `detect_format`).
    layout: the run's `state.StateLayout` (abstract state and shardings).
    tx: the run's optax optimiser.
    seed: seeds the state's RNG as `build_state_layout` does.
  Returns:
    The TrainState laid out with `layout.shardings`.
  """
  from irl_lm.training import state as state_lib
  source = detect_format(init_from)
  logging.info("initialising parameters from the %s", source.describe())
  params = load_params(source, layout.abstract.params, shardings=layout.param_shardings)
  if getattr(layout, "init_from_params", None) is not None:
    # The same state, plus the objective's extra state (e.g. GAIL's frozen reference policy)
    # built from the loaded parameters.
    return layout.init_from_params(params)

  def build(loaded: Any) -> Any:
    # The state RNG is drawn as `build_state_layout` draws it; made inside the jit so that
    # every host passes only global arrays.
    rng = jax.random.split(jax.random.PRNGKey(seed))[1]
    return state_lib.create_train_state(loaded, tx, rng)

  return jax.jit(build, in_shardings=(layout.param_shardings,), out_shardings=layout.shardings,
                 donate_argnums=0)(params)
