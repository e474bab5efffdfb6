"""Building blocks of irl_lm's seqio tasks (imports seqio and TensorFlow).

Every task has the features ``inputs`` and ``targets``, both tokenised with EOS appended after
trimming (unless a task turns it off, as :mod:`irl_lm.data.local_files` can). The task modules
import this module inside their ``register`` functions only, so
importing a task module (for its gin factory) never loads TensorFlow.

* :func:`add_task` - registers a task idempotently and records its metric family.
* :func:`in_memory_source` - a source over a reader that returns a split as a list of dicts
  (shuffled with the seed, sharded by example, optionally a fixed train subset).
* :func:`tfds_source` - a read-only TFDS source (never downloads), optionally a train subset.
* :func:`rekey`, :func:`prefix` - the preprocessors the tasks share; :func:`t5_vocabulary`.
* :class:`SeqioVocabularyAdapter` - an irl_lm vocabulary as a ``seqio.Vocabulary``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from irl_lm.data import sources
from irl_lm.data import spec
from irl_lm.data import vocabularies
from irl_lm.data import vocabulary as vocabulary_lib

T5_SUMMARIZE_PREFIX = "summarize: "


def _decode_rows(vocab: vocabulary_lib.Vocabulary, ids: np.ndarray) -> np.ndarray:
  """int ids [..., T] -> object array [...] of UTF-8 texts (``vocab._decode`` per row)."""
  if ids.shape[-1] == 0:
    return np.full(ids.shape[:-1], b"", dtype=object)
  rows = ids.reshape(-1, ids.shape[-1])
  texts = [vocab._decode([int(i) for i in row]).encode("utf-8")  # pylint: disable=protected-access
           for row in rows]
  return np.array(texts, dtype=object).reshape(ids.shape[:-1])


class SeqioVocabularyAdapter(seqio.Vocabulary):
  """An irl_lm :class:`~irl_lm.data.vocabulary.Vocabulary` as a ``seqio.Vocabulary``; its
  TensorFlow ops run the Python ones through ``tf.numpy_function`` (same results)."""

  def __init__(self, vocab: vocabulary_lib.Vocabulary):
    super().__init__(extra_ids=0)
    self.vocabulary = vocab

  @property
  def eos_id(self) -> Optional[int]:
    return self.vocabulary.eos_id

  @property
  def unk_id(self) -> Optional[int]:
    return self.vocabulary.unk_id

  @property
  def pad_id(self) -> int:
    return self.vocabulary.pad_id

  @property
  def _base_vocab_size(self) -> int:
    return self.vocabulary.vocab_size

  def _encode(self, s: str) -> Sequence[int]:
    return self.vocabulary.encode(s)

  def _decode(self, ids: Sequence[int]) -> str:
    return self.vocabulary._decode(ids)  # pylint: disable=protected-access

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    """A scalar tf.string -> int32 ids ``[N]``."""
    if s.shape.rank not in (0, None):
      raise ValueError(f"{self.vocabulary!r}.as_seqio().encode_tf takes one string (a scalar), "
                       f"got shape {s.shape}: map it over the strings instead.")

    def encode(text: Any) -> np.ndarray:
      text = text.item() if isinstance(text, np.ndarray) else text
      return np.asarray(self.vocabulary.encode(text.decode("utf-8")), np.int32)

    ids = tf.numpy_function(encode, [s], tf.int32, stateful=False)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """int ids ``[T]`` or ``[B, T]`` -> tf.string ``[]`` or ``[B]``, as ``decode`` does."""
    ids = tf.convert_to_tensor(ids)
    texts = tf.numpy_function(lambda x: _decode_rows(self.vocabulary, x), [ids], tf.string,
                              stateful=False)
    texts.set_shape(ids.shape[:-1])
    return texts

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, SeqioVocabularyAdapter) and other.vocabulary == self.vocabulary

  def __hash__(self) -> int:
    return hash(("SeqioVocabularyAdapter", self.vocabulary))


def as_seqio_vocabulary(vocab: Any) -> seqio.Vocabulary:
  """`vocab` as a ``seqio.Vocabulary`` (an irl_lm vocabulary's ``as_seqio()``)."""
  return vocab.as_seqio() if isinstance(vocab, vocabulary_lib.Vocabulary) else vocab


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


def _in_memory_dataset(split: str, shuffle_files: bool, seed: Optional[int] = None, *,
                       load_split: Callable[[str], Sequence[Mapping[str, str]]],
                       keys: tuple[str, ...], train_examples: Optional[int]
                       ) -> tf.data.Dataset:
  examples = load_split(split)
  if split == "train" and train_examples is not None:
    examples = sources.train_subset(examples, train_examples)
  return examples_dataset(examples, keys, shuffle_files, seed)


def in_memory_source(load_split: Callable[[str], Sequence[Mapping[str, str]]],
                     keys: Sequence[str], splits: Sequence[str], *,
                     train_examples: Optional[int] = None) -> ShardableFunctionDataSource:
  """A seqio source over a reader that loads a whole split into memory (read on first use).

  Args:
    load_split: ``split -> list of dicts`` of str fields (called when a dataset is built).
    keys: the fields each example keeps.
    splits: the split names.
    train_examples: keep only this fixed subset of the train split
      (:func:`irl_lm.data.sources.train_subset`); None keeps it whole.

  Returns:
    A :class:`ShardableFunctionDataSource` of dicts of scalar tf.string. Each split is read
    once per process and kept (the run's early data check and its batches share the read).
  """
  return ShardableFunctionDataSource(
      dataset_fn=functools.partial(_in_memory_dataset, load_split=functools.lru_cache(None)(
          load_split), keys=tuple(keys),
                                   train_examples=sources.check_train_examples(train_examples)),
      splits=tuple(splits))


def tfds_source(tfds_name: str, *, tfds_data_dir: Optional[str],
                splits: Sequence[str] = ("train", "validation", "test"),
                train_examples: Optional[int] = None) -> seqio.TfdsDataSource:
  """A read-only TFDS source (a missing data set fails instead of downloading).

  Args:
    tfds_name: e.g. ``'xsum:1.1.0'``.
    tfds_data_dir: TFDS data directory (None: TFDS's default).
    splits: the split names.
    train_examples: read only the first N train examples in TFDS's stored order (TFDS's
      ``train[:N]``; TFDS shuffles examples once when it builds a data set, so this is a fixed
      pseudo-random sample, the same for every run and seed, and smaller subsets nest in
      larger ones). None reads the whole split.

  Returns:
    A ``seqio.TfdsDataSource``; nothing is read until a dataset is requested.
  """
  n = sources.check_train_examples(train_examples)
  split_map = {s: (f"{s}[:{n}]" if s == "train" and n is not None else s) for s in splits}
  return seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=tfds_data_dir,
                              splits=split_map, read_only=True)


@seqio.map_over_dataset
def _prefix_inputs(example: Mapping[str, tf.Tensor], prefix: str) -> dict[str, tf.Tensor]:
  out = dict(example)
  out["inputs"] = tf.strings.join([prefix, example["inputs"]])
  return out


def prefix(text: str) -> Any:
  """A preprocessor prepending `text` to ``inputs``.

  It is a ``functools.partial`` with keyword ``prefix``, which is how inference recognises a
  task's input prefix.
  """
  return functools.partial(_prefix_inputs, prefix=text)


def rekey(**key_map: str) -> Any:
  """``seqio.preprocessors.rekey`` with ``new_key=old_key`` keywords."""
  return functools.partial(seqio.preprocessors.rekey, key_map=key_map)


def t5_vocabulary(path: Optional[str]) -> vocabulary_lib.Vocabulary:
  """:func:`irl_lm.data.vocabularies.paper_vocabulary` (the paper tasks' vocabulary)."""
  return vocabularies.paper_vocabulary(path)


def _output_features(vocabulary: Any, inputs_eos: bool,
                     targets_eos: bool) -> dict[str, seqio.Feature]:
  vocabulary = as_seqio_vocabulary(vocabulary)
  return {
      "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=inputs_eos, dtype=tf.int32),
      "targets": seqio.Feature(vocabulary=vocabulary, add_eos=targets_eos, dtype=tf.int32),
  }


def add_task(name: str, *, source: seqio.DataSource, preprocessors: Sequence[Any],
             vocabulary: Any, metric: str, replace: bool,
             inputs_eos: bool = True, targets_eos: bool = True) -> seqio.Task:
  """Adds a task (inputs/targets with EOS), or returns the registered one unless `replace`.

  Args:
    name: task name.
    source: its data source.
    preprocessors: what turns a raw example into string ``inputs``/``targets`` (tokenising and
      EOS are appended here).
    vocabulary: for both features (an irl_lm vocabulary or a ``seqio.Vocabulary``).
    metric: its metric family, recorded for :func:`irl_lm.data.registry.metric_family`.
    replace: re-register a task already registered under `name`.
    inputs_eos: append EOS to ``inputs`` (after trimming); False for decoder-only prompts
      whose template ends where the continuation starts.
    targets_eos: append EOS to ``targets``.

  Returns:
    The registered ``seqio.Task``.
  """
  if name in seqio.TaskRegistry.names():
    if not replace:
      if spec.recorded_metric(name) is None:
        spec.record_metric(name, metric)
      return seqio.TaskRegistry.get(name)
    seqio.TaskRegistry.remove(name)
  task = seqio.TaskRegistry.add(
      name, source=source,
      preprocessors=list(preprocessors) + [seqio.preprocessors.tokenize,
                                           seqio.preprocessors.append_eos_after_trim],
      output_features=_output_features(vocabulary, inputs_eos, targets_eos))
  spec.record_metric(name, metric)
  return task
