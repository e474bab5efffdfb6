"""From a seqio task to fixed-size numpy batches of model features.

seqio task (tokenised ``inputs``/``targets`` with EOS, trimmed to ``feature_lengths``)
-> the caller's ``seqio.FeatureConverter`` (fixed lengths, optional packing)
-> batches of exactly ``batch_size`` rows (remainder dropped) -> dicts of numpy arrays.

The feature converter decides the batch keys, so the pipeline serves every model family: the
model provides it (``model.feature_converter(pack)``). For example, with ``inputs`` length L and
``targets`` length T (all arrays ``np.int32``; see docs/INTERFACES.md):

* ``seqio.EncDecFeatureConverter(pack=...)`` (T5): ``encoder_input_tokens [B, L]``,
  ``decoder_input_tokens [B, T]`` (targets shifted right, 0 first; with packing each segment
  starts with 0), ``decoder_target_tokens [B, T]`` (EOS = 1 at the end of each target, 0 =
  padding), ``decoder_loss_weights [B, T]`` (1 on real target tokens, 0 on padding) and, when
  packing, ``encoder_segment_ids``, ``encoder_positions [B, L]``, ``decoder_segment_ids``,
  ``decoder_positions [B, T]`` (segment ids 1, 2, ... per packed example, 0 on padding).
* ``seqio.PrefixLMFeatureConverter(pack=...)`` (decoder-only): ``decoder_target_tokens``,
  ``decoder_input_tokens``, ``decoder_loss_weights`` (targets only), ``decoder_causal_attention``
  ``[B, L + T]`` (inputs and targets concatenated), plus segment ids and positions when packing.

:func:`model_feature_lengths` gives the shapes a converter produces.

Shuffling is seeded (same seed, same order), training repeats forever, and multi-host runs pass
``num_shards`` = number of hosts and ``shard_index`` = this host's index so every host reads a
disjoint part of the split.

The training order is step-indexed, so a resumed run sees exactly the batches an uninterrupted
one would (:func:`get_batches` with ``start_batch``): epoch ``e`` is one pass over the split
shuffled with its own seed :func:`epoch_seed` ``(seed, e)``, cut into ``K`` whole batches (the
remainder of each epoch is dropped), so batch ``s`` is batch ``s % K`` of epoch ``s // K``.
Starting at batch ``s`` builds epoch ``s // K`` directly and skips ``s % K`` batches of it:
a resume costs reading at most two epochs (one to count ``K``, bounded by ``s``, and the skipped
part of one), however long the run has been going.

Tasks are registered on first use (:func:`irl_lm.data.registry.ensure_registered`); importing
this module registers irl_lm's default tasks. Problems are reported in one sentence naming the
problem and its fix: an unknown task name (``ValueError`` listing the known tasks) and a data set
that is not there (:class:`MissingDatasetError`, e.g. XSum's manual download). Nothing here
downloads anything.
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
# Raised here for unprepared TFDS data and by the file-based loaders (GSM8k, TL;DR JSONL, WMT).
from irl_lm.data.errors import MissingDatasetError

FEATURE_KEYS = ("inputs", "targets")
# The seed of the random subset every evaluation of N examples reads (train job and evaluate
# mode alike): the same N examples for every run.
EVAL_SUBSET_SEED = 0


def get_task(task_name: str) -> seqio.Task:
  """Returns a seqio task, registering an irl_lm task with its gin settings first if needed.

  Args:
    task_name: e.g. ``'stdlib_docstrings'``, ``'xsum'`` or a name given to a gin factory.

  Returns:
    The ``seqio.Task``.

  Raises:
    ValueError: unknown name; the message lists the known tasks.
  """
  registry.ensure_registered(task_name)
  if task_name not in seqio.TaskRegistry.names():
    names = ", ".join(sorted(set(seqio.TaskRegistry.names()) | set(registry.known_names())))
    raise ValueError(
        f"Unknown task {task_name!r}: registered tasks are [{names}]; use one of these names "
        "or import the module that registers your task before asking for it.")
  task = seqio.TaskRegistry.get(task_name)
  if not isinstance(task, seqio.Task):
    raise ValueError(f"{task_name!r} is a seqio mixture, not a task; pass one of its tasks.")
  return task


def get_vocabulary(task_name: str) -> seqio.Vocabulary:
  """Returns the vocabulary of a task's ``targets`` feature (used to decode model outputs).

  Args:
    task_name: a task name (see :func:`get_task`).

  Returns:
    ``seqio.Vocabulary`` (for ``stdlib_docstrings`` the shipped 4096-piece SentencePiece model,
    for ``xsum`` T5's, loaded lazily).
  """
  return get_task(task_name).output_features["targets"].vocabulary


def _check_feature_lengths(feature_lengths: Mapping[str, int]) -> dict[str, int]:
  missing = [k for k in FEATURE_KEYS if k not in feature_lengths]
  if missing:
    raise ValueError(f"feature_lengths lacks {missing}: pass lengths for 'inputs' and 'targets', "
                     "e.g. {'inputs': 256, 'targets': 32}.")
  lengths = {k: int(feature_lengths[k]) for k in FEATURE_KEYS}
  if min(lengths.values()) < 2:
    raise ValueError(f"feature_lengths {lengths} are too short: each needs room for a token "
                     "and EOS (>= 2).")
  return lengths


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


def model_feature_lengths(feature_converter: seqio.FeatureConverter,
                          feature_lengths: Mapping[str, int]) -> dict[str, int]:
  """The lengths of the features `feature_converter` produces from task lengths.

  Args:
    feature_converter: e.g. ``seqio.EncDecFeatureConverter(pack=False)``.
    feature_lengths: ``{'inputs': L, 'targets': T}``.

  Returns:
    Model feature name -> length, e.g. ``{'encoder_input_tokens': L, 'decoder_input_tokens':
    T, ...}`` for encoder-decoder, ``{'decoder_target_tokens': L + T, ...}`` for prefix LM.
  """
  return dict(feature_converter.get_model_feature_lengths(
      _check_feature_lengths(feature_lengths)))


def _converter(feature_converter: seqio.FeatureConverter) -> seqio.FeatureConverter:
  if not isinstance(feature_converter, seqio.FeatureConverter):
    raise TypeError(f"feature_converter must be a seqio.FeatureConverter instance (e.g. "
                    f"seqio.EncDecFeatureConverter(pack=False)), got {feature_converter!r}.")
  return feature_converter


def get_dataset(task_name: str, split: str, *, feature_lengths: Mapping[str, int],
                shuffle: bool, seed: Optional[int], feature_converter: seqio.FeatureConverter,
                repeat: bool = True, num_shards: int = 1,
                shard_index: int = 0) -> tf.data.Dataset:
  """The unbatched tf.data pipeline behind :func:`get_batches` (same arguments).

  Returns:
    A dataset of the converter's feature dicts of int32 vectors (e.g. ``[L]`` / ``[T]``).
  """
  lengths = _check_feature_lengths(feature_lengths)
  converter = _converter(feature_converter)
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"shard_index {shard_index} is outside [0, {num_shards}): pass this host's "
                     "index (jax.process_index()) and the host count (jax.process_count()).")
  if shuffle and num_shards > 1 and seed is None:
    raise ValueError("Shuffling with num_shards > 1 needs a seed shared by all hosts, else their "
                     "shards overlap: pass seed=<int>.")
  task = get_task(task_name)
  shard_info = seqio.ShardInfo(index=shard_index, num_shards=num_shards) if num_shards > 1 else None
  ds = _task_dataset(task, split, sequence_length=lengths, shuffle=shuffle, seed=seed,
                     shard_info=shard_info, num_epochs=None if repeat else 1,
                     trim_output_features=True)
  return converter(ds, task_feature_lengths=lengths)


def epoch_seed(seed: Optional[int], epoch: int) -> Optional[int]:
  """The shuffle seed of training epoch `epoch` of a run seeded `seed` (None stays None)."""
  if seed is None:
    return None
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] & 0x7FFFFFFF)


def get_batches(task_name: str, split: str, *, feature_lengths: Mapping[str, int],
                batch_size: int, shuffle: bool, seed: Optional[int],
                feature_converter: seqio.FeatureConverter, repeat: bool = True,
                num_shards: int = 1, shard_index: int = 0,
                start_batch: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Yields fixed-size numpy batches of the features `feature_converter` produces.

  Args:
    task_name: a task name (see :func:`get_task`), e.g. ``'stdlib_docstrings'``.
    split: ``'train'``, ``'validation'`` or ``'test'``.
    feature_lengths: ``{'inputs': L, 'targets': T}``; longer examples are trimmed (EOS kept).
    batch_size: rows per batch on this host (B); the last partial batch (of each epoch when
      repeating) is dropped.
    shuffle: shuffle the examples (seeded; when repeating, each epoch with
      :func:`epoch_seed` ``(seed, epoch)``).
    seed: shuffle seed (None: unseeded; required when shuffling with ``num_shards > 1``).
    feature_converter: any ``seqio.FeatureConverter`` instance, normally the model's
      (``model.feature_converter(pack)``); it decides the keys, lengths and packing.
    repeat: repeat the split forever (training) instead of one pass (evaluation).
    num_shards: number of hosts reading the split.
    shard_index: this host's index in ``[0, num_shards)``.
    start_batch: skip to this batch: the batches are those from index `start_batch` on of
      the same call with ``start_batch=0`` (what resuming a run at step `start_batch` needs).

  Returns:
    An iterator of dicts of ``np.int32`` arrays ``[B, length]`` with the converter's keys and
    lengths (:func:`model_feature_lengths`); for the encoder-decoder converter
    ``encoder_input_tokens [B, L]``, ``decoder_input_tokens``, ``decoder_target_tokens``,
    ``decoder_loss_weights [B, T]``, and with packing ``encoder_segment_ids``,
    ``encoder_positions [B, L]``, ``decoder_segment_ids``, ``decoder_positions [B, T]``. The
    pipeline is built before this returns, so bad arguments and missing data sets raise here,
    not at the first ``next()``.

  Raises:
    ValueError: unknown task or split, bad lengths or shard arguments; when repeating, a
      split with fewer examples on this host than `batch_size`.
    TypeError: `feature_converter` is not a ``seqio.FeatureConverter`` instance.
    MissingDatasetError: the task's data set is not prepared (TFDS) or not on disk (GSM8k,
      TL;DR JSONL, WMT files); the message says what to download and where.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  if start_batch < 0:
    raise ValueError(f"start_batch must be >= 0, got {start_batch}.")

  def one_pass(pass_seed: Optional[int]) -> tf.data.Dataset:
    ds = get_dataset(task_name, split, feature_lengths=feature_lengths, shuffle=shuffle,
                     seed=pass_seed, feature_converter=feature_converter, repeat=False,
                     num_shards=num_shards, shard_index=shard_index)
    return ds.batch(batch_size, drop_remainder=True)

  if not repeat:
    return one_pass(seed).skip(start_batch).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
  first = one_pass(epoch_seed(seed, 0))
  # Batches per epoch, counted on epoch 0 only as far as placing start_batch needs.
  counted = int(first.take(start_batch + 1).reduce(np.int64(0), lambda n, _: n + 1))
  if counted == 0:
    raise ValueError(f"the {split!r} split of task {task_name!r} has fewer examples on this "
                     f"host than one batch of {batch_size}: lower the batch size or use more "
                     "examples (e.g. a larger train_examples).")
  epoch, offset = divmod(start_batch, counted) if counted <= start_batch else (0, start_batch)
  return _epochs(one_pass, seed, epoch, offset, first if epoch == 0 else None)


def _epochs(one_pass: Any, seed: Optional[int], epoch: int, offset: int,
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


def subset_indices(size: int, num_examples: Optional[int], seed: Optional[int]) -> np.ndarray:
  """Which examples of a split of `size` an evaluation of `num_examples` reads.

  Args:
    size: examples in the split.
    num_examples: how many (None, or at least `size`: all of them).
    seed: None for the first `num_examples` in file order; else a seeded random subset, the
      same for every call with the same (size, num_examples, seed).

  Returns:
    int64 [min(num_examples, size)] indices into the split, ascending.
  """
  if num_examples is None or num_examples >= size:
    return np.arange(size)
  if seed is None:
    return np.arange(num_examples)
  rng = np.random.default_rng(np.random.SeedSequence([seed, size]))
  return np.sort(rng.choice(size, size=num_examples, replace=False))


def _split_dataset(task_name: str, split: str,
                   feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
  return _task_dataset(get_task(task_name), split, sequence_length=dict(feature_lengths),
                       shuffle=False, seed=None, num_epochs=1, trim_output_features=True)


def _split_size(ds: tf.data.Dataset) -> int:
  counted = ds.map(lambda ex: tf.constant(1, tf.int64)).batch(8192)
  return int(counted.reduce(np.int64(0), lambda n, b: n + tf.reduce_sum(b)))


def _take_indices(ds: tf.data.Dataset, indices: np.ndarray) -> tf.data.Dataset:
  """The examples of `ds` at ascending `indices`, each with its ``index`` (int64)."""
  wanted = tf.constant(indices, tf.int64)
  ds = ds.enumerate().filter(lambda i, _: tf.reduce_any(tf.equal(i, wanted)))
  return ds.map(lambda i, ex: {**ex, "index": i})


def get_examples(task_name: str, split: str, *, num_examples: Optional[int],
                 feature_lengths: Mapping[str, int],
                 seed: Optional[int] = None) -> list[dict[str, Any]]:
  """Returns examples of a split in file order, with texts, padded tokens and their index.

  The keys are the same for every model family; a model turns the tokens into its own
  features (e.g. its encoder input, or a decoder-only prompt).

  Args:
    task_name: a task name (see :func:`get_task`).
    split: the split to read (not shuffled, one pass).
    num_examples: how many (fewer if the split is smaller); None for the whole split.
    feature_lengths: ``{'inputs': L, 'targets': T}``.
    seed: None: the first `num_examples`; an int: a seeded random subset of the split
      (:func:`subset_indices`), what every evaluation reads.

  Returns:
    A list of dicts: ``index`` (int, the example's position in the split), ``inputs_text``
    and ``targets_text`` (str, the untokenised texts, inputs with any task prefix),
    ``input_tokens`` (np.int32 ``[L]``: the ``inputs`` tokens trimmed to L with EOS last,
    then padded with -1, an id outside every vocabulary: the models' prompt padding, since id 0
    is a real token of some vocabularies) and ``target_tokens`` (np.int32 ``[T]``, likewise but
    0-padded).
  """
  lengths = _check_feature_lengths(feature_lengths)
  ds = _split_dataset(task_name, split, lengths)
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


def get_texts(task_name: str, split: str, *, num_examples: Optional[int] = None,
              seed: Optional[int] = None) -> dict[str, list[Any]]:
  """The untokenised texts of a split (or of its :func:`subset_indices` subset), read in
  large batches: what text-only baselines need, without padding every example.

  Returns:
    ``{'index': [int], 'inputs': [str], 'targets': [str]}`` in file order.
  """
  lengths = {"inputs": 1 << 20, "targets": 1 << 20}  # the texts are untouched by trimming
  ds = _split_dataset(task_name, split, lengths)
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


registry.register_all()
