"""Shared pieces of the file-based loaders: where data lives, reading JSONL, in-memory datasets.

Local data sets (GSM8k, the OpenAI TL;DR JSONL, WMT22 training TSVs) live under one root,
``$IRL_LM_DATA_DIR`` or ``~/irl_lm_data`` by default, one folder per data set (read when a
dataset is built, so the variable can be set after import); each task's gin factory can point
elsewhere (:mod:`irl_lm.data.task_configs`).
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Optional, Sequence

import seqio
import tensorflow as tf

from irl_lm.data.errors import MissingDatasetError

DATA_DIR_ENV_VAR = "IRL_LM_DATA_DIR"
DEFAULT_DATA_ROOT = "~/irl_lm_data"


def data_root() -> str:
  """The local data root: ``$IRL_LM_DATA_DIR`` or ``~/irl_lm_data`` (user-expanded)."""
  return os.path.expanduser(os.environ.get(DATA_DIR_ENV_VAR) or DEFAULT_DATA_ROOT)


def resolve_dir(data_dir: Optional[str], default_subdir: str) -> str:
  """`data_dir` user-expanded, or ``<data_root()>/<default_subdir>`` when it is None."""
  if data_dir is None:
    return os.path.join(data_root(), default_subdir)
  return os.path.expanduser(data_dir)


def require_file(path: str, what: str, how: str) -> str:
  """Returns `path` if it is a file, else raises a one-sentence :class:`MissingDatasetError`.

  Args:
    path: the expected file.
    what: what it is, e.g. ``"GSM8k's train split"``.
    how: what to download and where to put it (no trailing period).

  Raises:
    MissingDatasetError: ``"<what> needs <path>, which does not exist: <how>."``.
  """
  if not tf.io.gfile.exists(path):
    raise MissingDatasetError(f"{what} needs {path}, which does not exist: {how}.")
  return path


def read_jsonl(path: str, required: Sequence[str]) -> list[dict[str, Any]]:
  """Reads a JSON-lines file, checking that every record has the `required` fields.

  Args:
    path: the file (any path tf.io.gfile reads, e.g. local or gs://).
    required: field names each record must have.

  Returns:
    One dict per non-blank line, in file order.

  Raises:
    ValueError: a line that is not a JSON object, or lacks a required field (naming the line).
  """
  records = []
  with tf.io.gfile.GFile(path, "r") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"line {number} of {path} is not valid JSON ({e.msg}).") from e
      missing = [k for k in required if not isinstance(record, dict) or k not in record]
      if missing:
        raise ValueError(f"line {number} of {path} lacks the field(s) {missing}: each line must "
                         f"be a JSON object with {list(required)}.")
      records.append(record)
  return records


def examples_dataset(examples: Sequence[Mapping[str, str]], keys: Iterable[str],
                     shuffle: bool, seed: Optional[int]) -> tf.data.Dataset:
  """An in-memory dataset of string examples, fully shuffled (seeded) if asked.

  Args:
    examples: N dicts holding str values for every key in `keys`.
    keys: the fields to keep.
    shuffle: fully shuffle (reshuffled each epoch).
    seed: shuffle seed; the same seed gives the same order on every host.

  Returns:
    A ``tf.data.Dataset`` of dicts of scalar tf.string tensors.
  """
  keys = list(keys)
  columns = {k: tf.constant([str(ex[k]) for ex in examples], dtype=tf.string,
                            shape=[len(examples)]) for k in keys}
  ds = tf.data.Dataset.from_tensor_slices(columns)
  if shuffle and examples:
    ds = ds.shuffle(len(examples), seed=seed, reshuffle_each_iteration=True)
  return ds


class ShardableFunctionDataSource(seqio.FunctionDataSource):
  """``FunctionDataSource`` whose dataset is shuffled (seeded) first, then sharded by example.

  The dataset function shuffles the split itself (in full, or with a large buffer for streamed
  files) with the given seed, so every host sees the same order and example-level sharding
  stays disjoint; seqio's warning about insufficient shuffling of function sources does not
  apply and is not emitted.
  """

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *,
                  sequence_length: Optional[Mapping[str, int]] = None,
                  use_cached: bool = False, num_epochs: Optional[int] = 1) -> tf.data.Dataset:
    """Returns one split, shuffled with `seed` if `shuffle`, then sharded by example."""
    del sequence_length, use_cached, num_epochs  # unused, as in FunctionDataSource
    ds = self._dataset_fn(split=split, shuffle_files=shuffle, seed=seed)
    if shard_info and shard_info.num_shards > 1:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    return ds
