"""seqio tasks of irl_lm; importing this module registers them (idempotently).

Tasks (features ``inputs`` and ``targets``, both tokenised with EOS appended):

* ``stdlib_docstrings`` - the built-in code -> docstring-summary task
  (:mod:`irl_lm.data.stdlib_docstrings`), splits train/validation/test, read from the JSONL cache
  (extracted on first use, no download), vocabulary :func:`vocabularies.stdlib_vocabulary`.
  Raw fields ``code`` -> ``inputs`` and ``summary`` -> ``targets``; ``name`` is kept as metadata.
* ``xsum`` - TFDS ``xsum:1.1.0`` (needs a manual download, see :mod:`irl_lm.data.pipeline`),
  ``inputs = 'summarize: ' + document``, ``targets = summary`` as in T5, T5's vocabulary.
  Registering it touches neither the network nor the file system; the data source is read-only,
  so a missing data set fails instead of triggering a download.

Registration is guarded: a name already in ``seqio.TaskRegistry`` is left as it is, so importing
twice (or reloading) is harmless.
"""
from __future__ import annotations

import functools
from typing import Mapping, Optional

import seqio
import tensorflow as tf

from irl_lm.data import stdlib_docstrings
from irl_lm.data import vocabularies

STDLIB_TASK = "stdlib_docstrings"
XSUM_TASK = "xsum"
XSUM_TFDS_NAME = "xsum:1.1.0"
T5_SUMMARIZE_PREFIX = "summarize: "

# Per-TFDS-data-set hint used by the pipeline's "data set missing" error: what to download and
# where to put it. Keyed by the TFDS name without config/version.
MANUAL_DOWNLOAD_HINTS: dict[str, str] = {
    "xsum": ("download and extract the XSum articles as described in "
             "https://github.com/EdinburghNLP/XSum/blob/master/XSum-Dataset/README.md, pack the "
             "folder as xsum-extracts-from-downloads.tar.gz, put that file in "
             "~/tensorflow_datasets/downloads/manual/ and run `tfds build xsum`"),
}


def stdlib_dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None,
                      *, cache_dir: Optional[str] = None,
                      stdlib_root: Optional[str] = None) -> tf.data.Dataset:
  """Reads one split of the built-in data set from its JSONL cache (creating it if needed).

  Args:
    split: ``'train'``, ``'validation'`` or ``'test'``.
    shuffle_files: if True, fully shuffle the split (seeded, reshuffled each epoch).
    seed: shuffle seed; the same seed gives the same order on every host, which keeps
      example-level sharding disjoint.
    cache_dir: cache root (default ``$IRL_LM_CACHE_DIR`` or ``~/.cache/irl_lm``, read when called).
    stdlib_root: library root (default: the running interpreter's).

  Returns:
    A dataset of ``{'name', 'code', 'summary'}`` scalar tf.string examples in the data set's
    deterministic order unless shuffled.
  """
  examples = stdlib_docstrings.load_examples(split, cache_dir=cache_dir,
                                             stdlib_root=stdlib_root)
  columns = {key: tf.constant([ex[key] for ex in examples], dtype=tf.string, shape=[len(examples)])
             for key in ("name", "code", "summary")}
  ds = tf.data.Dataset.from_tensor_slices(columns)
  if shuffle_files and examples:
    ds = ds.shuffle(len(examples), seed=seed, reshuffle_each_iteration=True)
  return ds


class StdlibDataSource(seqio.FunctionDataSource):
  """``FunctionDataSource`` over :func:`stdlib_dataset_fn`, shardable at the example level.

  The split is shuffled in memory in full with the given seed, so seqio's warning about
  insufficient shuffling of uncached function sources does not apply and is not emitted.
  """

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *,
                  sequence_length: Optional[Mapping[str, int]] = None,
                  use_cached: bool = False, num_epochs: Optional[int] = 1) -> tf.data.Dataset:
    """Returns one split, fully shuffled with `seed` if `shuffle`, then sharded by example."""
    del sequence_length, use_cached, num_epochs  # unused, as in FunctionDataSource
    ds = self._dataset_fn(split=split, shuffle_files=shuffle, seed=seed)
    if shard_info and shard_info.num_shards > 1:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    return ds


@seqio.map_over_dataset
def _prefix_inputs(example: Mapping[str, tf.Tensor], prefix: str) -> dict[str, tf.Tensor]:
  """Prepends `prefix` to the ``inputs`` string of an example."""
  out = dict(example)
  out["inputs"] = tf.strings.join([prefix, example["inputs"]])
  return out


def _output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  return {
      "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, dtype=tf.int32),
      "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True, dtype=tf.int32),
  }


def register_stdlib_task(name: str = STDLIB_TASK, *, cache_dir: Optional[str] = None,
                         stdlib_root: Optional[str] = None,
                         vocabulary_path: str = vocabularies.STDLIB_VOCAB_PATH) -> seqio.Task:
  """Registers a built-in code -> summary task (unless `name` is registered already).

  Args:
    name: task name.
    cache_dir: JSONL cache root (default: read from ``$IRL_LM_CACHE_DIR`` at load time).
    stdlib_root: library to extract from (default: the running interpreter's).
    vocabulary_path: SentencePiece model for inputs and targets (default: the shipped one).

  Returns:
    The registered ``seqio.Task``.
  """
  if name in seqio.TaskRegistry.names():
    return seqio.TaskRegistry.get(name)
  source = StdlibDataSource(
      dataset_fn=functools.partial(stdlib_dataset_fn, cache_dir=cache_dir,
                                   stdlib_root=stdlib_root),
      splits=stdlib_docstrings.SPLITS)
  return seqio.TaskRegistry.add(
      name,
      source=source,
      preprocessors=[
          functools.partial(seqio.preprocessors.rekey,
                            key_map={"inputs": "code", "targets": "summary", "name": "name"}),
          seqio.preprocessors.tokenize,
          seqio.preprocessors.append_eos_after_trim,
      ],
      output_features=_output_features(vocabularies.stdlib_vocabulary(vocabulary_path)),
  )


def register_xsum_task(name: str = XSUM_TASK, *, tfds_data_dir: Optional[str] = None,
                       vocabulary_path: str = vocabularies.T5_VOCAB_PATH) -> seqio.Task:
  """Registers the XSum task on TFDS ``xsum:1.1.0`` (unless `name` is registered already).

  Args:
    name: task name.
    tfds_data_dir: TFDS data directory (default: TFDS's, ``~/tensorflow_datasets``).
    vocabulary_path: T5 SentencePiece model (default: the public GCS copy, read lazily).

  Returns:
    The registered ``seqio.Task``; nothing is read until a dataset is requested.
  """
  if name in seqio.TaskRegistry.names():
    return seqio.TaskRegistry.get(name)
  source = seqio.TfdsDataSource(tfds_name=XSUM_TFDS_NAME, tfds_data_dir=tfds_data_dir,
                                splits=("train", "validation", "test"), read_only=True)
  return seqio.TaskRegistry.add(
      name,
      source=source,
      preprocessors=[
          functools.partial(seqio.preprocessors.rekey,
                            key_map={"inputs": "document", "targets": "summary"}),
          functools.partial(_prefix_inputs, prefix=T5_SUMMARIZE_PREFIX),
          seqio.preprocessors.tokenize,
          seqio.preprocessors.append_eos_after_trim,
      ],
      output_features=_output_features(
          vocabularies.t5_vocabulary(vocabulary_path, extra_ids=vocabularies.T5_EXTRA_IDS)),
  )


def register_tasks() -> tuple[str, ...]:
  """Registers every irl_lm task (idempotent); returns their names."""
  register_stdlib_task()
  register_xsum_task()
  return (STDLIB_TASK, XSUM_TASK)


TASK_NAMES = register_tasks()
