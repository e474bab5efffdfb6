"""T5X checkpoints: the legacy layout (msgpack + zarr via TensorStore) and the Orbax layout,
read and written. Only model parameters (`target`) are read or written, never optimiser state.

  Legacy (version 3): `checkpoint_<step>/checkpoint`, a flax msgpack of
    `{'version': 3, 'optimizer': {'target': params, 'state': {...}}}` whose large leaves are
    TensorStore specs `{'driver': 'zarr', 'kvstore': {'driver': 'file'|'gcs',
    'path': 'target.encoder.layers_0.attention.query.kernel'}, 'metadata': {...}}`, the path
    relative to the checkpoint directory (zarr v2 arrays, gzip chunks).
  Orbax: `checkpoint_<step>/state/`, an Orbax PyTree of `{'target': params, 'state': {...}}`.
    irl_lm's own run checkpoints are Orbax PyTrees too (parameters under 'params'); the Orbax
    helpers here read either subtree.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional

import jax
import numpy as np
from absl import logging
from etils import epath

from irl_lm.checkpoints.leaves import Leaf
from irl_lm.checkpoints.manager import CheckpointError

T5X_VERSION = 3
_CHUNK_BYTES = 64 * 2**20  # T5X's target zarr chunk size


# ----------------------------------------------------------------------------- legacy: read

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


def _zarr_leaf(checkpoint_dir: str, name: str, spec: Mapping[str, Any]) -> Leaf:
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
  return Leaf(shape, read)


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


def open_t5x(checkpoint_dir: str) -> dict[str, Leaf]:
  """Opens a T5X legacy checkpoint without reading any array data.

  Args:
    checkpoint_dir: local path or gs:// URL of `checkpoint_<step>/` (holding `checkpoint`).
  Returns:
    {'encoder/layers_0/attention/query/kernel': Leaf, ...} for every parameter in `target`
    (stored dtype, often bfloat16).
  Raises:
    CheckpointError: unreadable msgpack, not a T5X checkpoint of version >= 2, an array spec
      without a path or an array whose metadata cannot be read.
  """
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
      leaves[name] = Leaf(array.shape, lambda array=array: array)
  return leaves


# ----------------------------------------------------------------------------- legacy: write

def _chunk_shape(shape: tuple[int, ...], itemsize: int) -> list[int]:
  """Largest chunk that divides `shape` and stays under 64 MiB (splitting the largest dim)."""
  chunk = list(shape)
  while chunk and int(np.prod(chunk)) * itemsize > _CHUNK_BYTES:
    dim = int(np.argmax(chunk))
    size = chunk[dim]
    chunk[dim] = size // next(f for f in range(2, size + 1) if size % f == 0)
  return chunk


def _stored_dtype(dtype: Any) -> np.dtype:
  import ml_dtypes
  return np.dtype(ml_dtypes.bfloat16 if str(np.dtype(dtype)) == "bfloat16" else dtype)


def save_t5x(params: Any, checkpoint_dir: str, *, step: int = 0,
             dtype: Any = np.float32) -> None:
  """Writes parameters as a T5X legacy checkpoint directory (version 3).

  Layout: `<checkpoint_dir>/checkpoint` (flax msgpack of `{'version': 3, 'optimizer':
  {'target': {...TensorStore specs...}, 'state': {'step': step, 'param_states': {}}}}`) and one
  zarr array per parameter, `<checkpoint_dir>/target.<dotted.path>/` (gzip, chunks <= 64 MiB).
  T5X restores it with its optimiser state from scratch (e.g. `fallback_to_scratch=True`).

  Args:
    params: nested dict of arrays with T5X names (host or device arrays).
    checkpoint_dir: local path or gs:// URL, conventionally `.../checkpoint_<step>`.
    step: recorded as the optimiser step.
    dtype: stored dtype of the parameters (float32, or bfloat16 to halve the size).
  """
  import tensorstore as ts
  from flax import serialization, traverse_util

  dtype = _stored_dtype(dtype)
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


# ----------------------------------------------------------------------------- Orbax

def _orbax_path(path: str) -> str:
  """`path`, absolute when local: Orbax reads no tree metadata from a relative path."""
  return path if "://" in path else os.path.abspath(path)


def save_t5x_orbax(params: Any, checkpoint_dir: str, *, step: int = 0,
                   dtype: Any = np.float32) -> None:
  """Writes parameters as a T5X Orbax checkpoint: `<checkpoint_dir>/state/`, an Orbax PyTree of
  `{'target': params, 'state': {'step': step}}` (T5X's item name and tree; no optimiser state).

  Args: as `save_t5x`.
  """
  import orbax.checkpoint as ocp
  dtype = _stored_dtype(dtype)
  tree = {"target": jax.tree.map(lambda x: np.asarray(jax.device_get(x)).astype(dtype), params),
          "state": {"step": np.asarray(step, np.int32)}}
  epath.Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
  checkpointer = ocp.PyTreeCheckpointer()
  checkpointer.save(_orbax_path(os.path.join(checkpoint_dir, "state")), tree, force=True)
  checkpointer.close()


def orbax_tree_metadata(path: str) -> Mapping[str, Any]:
  """The tree metadata (shapes, dtypes; no data) of the Orbax PyTree at `path`.

  Raises:
    CheckpointError: unreadable or corrupt, or not a dict at the top.
  """
  import orbax.checkpoint as ocp
  try:
    metadata = ocp.PyTreeCheckpointer().metadata(_orbax_path(path))
  except Exception as e:  # Orbax raises many types; all mean "unreadable".
    raise CheckpointError(f"the Orbax checkpoint {path} is unreadable or corrupt "
                          f"({type(e).__name__}: {str(e)[:200]}).") from e
  metadata = getattr(metadata, "item_metadata", metadata)
  metadata = getattr(metadata, "tree", metadata)
  if not isinstance(metadata, Mapping):
    raise CheckpointError(f"the Orbax checkpoint {path} does not hold a dict tree.")
  return metadata


def restore_orbax_params(path: str, subtree: str, abstract_params: Any, *, where: str,
                         shardings: Optional[Any] = None) -> Any:
  """Restores only `tree[subtree]` of the Orbax PyTree at `path` (e.g. T5X's 'target').

  Args:
    path: the Orbax PyTree directory (`.../state`).
    subtree: top-level key holding the parameters: 'target' (T5X) or 'params' (irl_lm runs).
    abstract_params: pytree of arrays or ShapeDtypeStructs: keys, shapes and the dtypes that
      come back (stored bfloat16 is cast).
    where: the checkpoint's description, for error messages.
    shardings: optional matching pytree of shardings: `jax.Array`s laid out with them, else
      host numpy arrays.
  Raises:
    CheckpointError: the restore fails (incomplete or corrupt checkpoint).
  """
  import orbax.checkpoint as ocp
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
        _orbax_path(path), args=ocp.args.PyTreeRestore(item={subtree: item},
                                          restore_args={subtree: restore_args},
                                          partial_restore=True))
  except Exception as e:  # Orbax raises many types; all mean "this checkpoint won't load".
    raise CheckpointError(f"cannot read the {where} ({type(e).__name__}: "
                          f"{str(e)[:300]}); it is incomplete or corrupt.") from e
  return restored[subtree]
