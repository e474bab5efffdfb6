"""The seqio source of the batch pipeline: a seqio task through tf.data (imports TensorFlow).

:mod:`irl_lm.data.pipeline` sends here the tasks that are seqio tasks (TFDS, WMT, tasks
registered with seqio by the user) and every task read with a ``seqio.FeatureConverter``; it
documents the batches. This module needs the ``seqio`` extra.
"""
from __future__ import annotations

import concurrent.futures
import itertools
import os
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import seqio
import tensorflow as tf

from irl_lm.data import registry
from irl_lm.data.errors import MissingDatasetError


def _missing_dataset_message(task: seqio.Task, source: seqio.TfdsDataSource) -> str:
  loader = source.tfds_dataset
  tfds_name = loader.name or "?"
  build_name = tfds_name.split(":")[0]  # with its config, e.g. reddit_tifu/long_split
  base_name = build_name.split("/")[0]
  data_dir = loader.data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  hint = registry.MANUAL_DOWNLOAD_HINTS.get(base_name)
  if hint:
    return (f"TFDS data set {tfds_name!r} of task {task.name!r} is not prepared in {data_dir} "
            f"and needs a manual download: {hint.format(data_dir=data_dir)}.")
  return (f"TFDS data set {tfds_name!r} of task {task.name!r} is not prepared in {data_dir}: "
          f"run `tfds build {build_name} --data_dir {data_dir}` first (it downloads the data; "
          f"without internet access here, build it on another machine and copy "
          f"{data_dir}/{base_name} over).")


def _task_dataset(task: seqio.Task, split: str, **kwargs: Any) -> tf.data.Dataset:
  """``task.get_dataset`` with a checked split and a clear error for unprepared TFDS data."""
  if split not in task.splits:
    raise ValueError(f"Task {task.name!r} has no split {split!r}; use one of "
                     f"{sorted(task.splits)}.")
  try:
    # No in-memory caching: seqio decides it from the split size, which it asks TFDS for (absent
    # under tfds.testing.mock_data), and a cache after a reshuffling source freezes its order.
    return task.get_dataset(split=split, use_cached=False, try_in_mem_cache=False, **kwargs)
  except (AssertionError, FileNotFoundError, tf.errors.NotFoundError) as e:
    # TFDS raises AssertionError("Dataset xsum: could not find data in ...") when the data set
    # was never prepared; other assertion failures are not ours to reinterpret.
    not_prepared = not isinstance(e, AssertionError) or "could not find data" in str(e)
    if isinstance(task.source, seqio.TfdsDataSource) and not_prepared:
      raise MissingDatasetError(_missing_dataset_message(task, task.source)) from e
    raise


def get_dataset(task: seqio.Task, split: str, *, lengths: Mapping[str, int], shuffle: bool,
                seed: Optional[int], converter: seqio.FeatureConverter, repeat: bool,
                num_shards: int, shard_index: int) -> tf.data.Dataset:
  """The unbatched tf.data pipeline of a seqio task (arguments checked by the caller).

  Returns:
    A dataset of the converter's feature dicts of int32 vectors (e.g. ``[L]`` / ``[T]``).
  """
  shard_info = seqio.ShardInfo(index=shard_index, num_shards=num_shards) if num_shards > 1 else None
  ds = _task_dataset(task, split, sequence_length=dict(lengths), shuffle=shuffle, seed=seed,
                     shard_info=shard_info, num_epochs=None if repeat else 1,
                     trim_output_features=True)
  return converter(ds, task_feature_lengths=dict(lengths))


def batches(one_pass: Any, seed: Optional[int], epoch_seed: Any, *, repeat: bool,
            start_batch: int, what: str) -> Iterator[dict[str, np.ndarray]]:
  """Numpy batches of ``one_pass(seed) -> batched tf.data.Dataset``, step-indexed when
  repeating (see :func:`irl_lm.data.pipeline.get_batches`); `what` names the split in errors."""
  if not repeat:
    return one_pass(seed).skip(start_batch).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
  first = one_pass(epoch_seed(seed, 0))
  # Batches per epoch, counted on epoch 0 only as far as placing start_batch needs.
  counted = int(first.take(start_batch + 1).reduce(np.int64(0), lambda n, _: n + 1))
  if counted == 0:
    raise ValueError(f"{what} has fewer examples on this host than one batch: lower the batch "
                     "size or use more examples (e.g. a larger train_examples).")
  epoch, offset = divmod(start_batch, counted) if counted <= start_batch else (0, start_batch)
  return _epochs(one_pass, seed, epoch_seed, epoch, offset, first if epoch == 0 else None)


def _epochs(one_pass: Any, seed: Optional[int], epoch_seed: Any, epoch: int, offset: int,
            first: Optional[tf.data.Dataset]) -> Iterator[dict[str, np.ndarray]]:
  """Epochs `epoch`, `epoch + 1`, ... one after another, the first from batch `offset` on.

  Building an epoch's pipeline and reading its first batch takes a second or more, so the
  next epoch is opened in a background thread while the current one is read.
  """
  def open_epoch(e: int, ds: Optional[tf.data.Dataset] = None, skip: int = 0):
    ds = one_pass(epoch_seed(seed, e)) if ds is None else ds
    it = ds.skip(skip).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
    return itertools.chain([next(it)], it)  # every epoch has >= 1 batch (checked)

  with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="next_epoch") as pool:
    current = open_epoch(epoch, first, offset)
    for e in itertools.count(epoch + 1):
      upcoming = pool.submit(open_epoch, e)
      yield from current
      current = upcoming.result()


def _padded(tokens: np.ndarray, length: int, pad: int = 0) -> np.ndarray:
  out = np.full([length], pad, np.int32)
  out[:len(tokens)] = tokens
  return out


def _split_dataset(task: seqio.Task, split: str,
                   feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
  return _task_dataset(task, split, sequence_length=dict(feature_lengths),
                       shuffle=False, seed=None, num_epochs=1, trim_output_features=True)


def _split_size(ds: tf.data.Dataset) -> int:
  counted = ds.map(lambda ex: tf.constant(1, tf.int64)).batch(8192)
  return int(counted.reduce(np.int64(0), lambda n, b: n + tf.reduce_sum(b)))


def _take_indices(ds: tf.data.Dataset, indices: np.ndarray) -> tf.data.Dataset:
  """The examples of `ds` at ascending `indices`, each with its ``index`` (int64)."""
  wanted = tf.constant(indices, tf.int64)
  ds = ds.enumerate().filter(lambda i, _: tf.reduce_any(tf.equal(i, wanted)))
  return ds.map(lambda i, ex: {**ex, "index": i})


def get_examples(task: seqio.Task, split: str, *, num_examples: Optional[int],
                 lengths: Mapping[str, int], seed: Optional[int],
                 subset_indices: Any) -> list[dict[str, Any]]:
  """:func:`irl_lm.data.pipeline.get_examples` of a seqio task."""
  ds = _split_dataset(task, split, lengths)
  if num_examples is not None and seed is not None:
    ds = _take_indices(ds, subset_indices(_split_size(ds), num_examples, seed))
  else:
    ds = ds.enumerate().map(lambda i, ex: {**ex, "index": i})
    if num_examples is not None:
      ds = ds.take(num_examples)
  return [{
      "index": int(ex["index"]),
      "inputs_text": ex["inputs_pretokenized"].decode("utf-8"),
      "targets_text": ex["targets_pretokenized"].decode("utf-8"),
      "input_tokens": _padded(ex["inputs"], lengths["inputs"], pad=-1),
      "target_tokens": _padded(ex["targets"], lengths["targets"]),
  } for ex in ds.as_numpy_iterator()]


def get_texts(task: seqio.Task, split: str, *, num_examples: Optional[int],
              seed: Optional[int], subset_indices: Any) -> dict[str, list[Any]]:
  """:func:`irl_lm.data.pipeline.get_texts` of a seqio task."""
  lengths = {"inputs": 1 << 20, "targets": 1 << 20}  # the texts are untouched by trimming
  ds = _split_dataset(task, split, lengths)
  if num_examples is not None:
    ds = _take_indices(ds, subset_indices(_split_size(ds), num_examples, seed))
  else:
    ds = ds.enumerate().map(lambda i, ex: {**ex, "index": i})
  ds = ds.map(lambda ex: {"index": ex["index"], "inputs": ex["inputs_pretokenized"],
                          "targets": ex["targets_pretokenized"]},
              num_parallel_calls=tf.data.AUTOTUNE).batch(8192)
  out: dict[str, list[Any]] = {"index": [], "inputs": [], "targets": []}
  for batch in ds.as_numpy_iterator():
    out["index"] += [int(i) for i in batch["index"]]
    out["inputs"] += [t.decode("utf-8") for t in batch["inputs"]]
    out["targets"] += [t.decode("utf-8") for t in batch["targets"]]
  return out
