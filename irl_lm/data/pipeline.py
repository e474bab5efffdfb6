"""From a task to fixed-size numpy batches of model features: one interface, two sources.

task (tokenised ``inputs``/``targets``, trimmed to ``feature_lengths`` with EOS appended after
trimming) -> the caller's feature converter (fixed lengths, optional packing) -> batches of
exactly ``batch_size`` rows (remainder dropped) -> dicts of numpy arrays.

Two sources give the same batches:

* **numpy** - irl_lm's in-memory tasks (:class:`irl_lm.data.tasks.InMemoryTask`: the built-in
  tasks, local JSONL/TSV files, GSM8k and TL;DR JSONL, the known distribution) with an irl_lm
  converter (:mod:`irl_lm.models.features`): tokenised once per split and kept, shuffled per
  epoch with ``numpy.random.default_rng(seed)``, sharded by example, converted and batched in
  numpy. No seqio, TensorFlow or TFDS.
* **seqio** (:mod:`irl_lm.data.seqio_pipeline`, the ``seqio`` extra) - seqio tasks (TFDS XSum
  and TL;DR, WMT, tasks registered with seqio), and any task read with a
  ``seqio.FeatureConverter``; an irl_lm converter becomes its ``seqio_converter()``. seqio's
  behaviour is kept: its tf.data shuffle, sharding and packing.

Unshuffled, both sources give the same features, packed or not (seqio's greedy packing is
reproduced exactly); shuffled orders differ between them (each is seeded and reproducible).

The feature converter decides the batch keys, so the pipeline serves every model family: the
model provides it (``model.feature_converter(pack)``). For example, with ``inputs`` length L and
``targets`` length T (all arrays ``np.int32``; see docs/INTERFACES.md):

* ``EncDecFeatureConverter(pack=...)`` (T5): ``encoder_input_tokens [B, L]``,
  ``decoder_input_tokens [B, T]`` (targets shifted right, 0 first; with packing each segment
  starts with 0), ``decoder_target_tokens [B, T]`` (EOS = 1 at the end of each target, 0 =
  padding), ``decoder_loss_weights [B, T]`` (1 on real target tokens, 0 on padding) and, when
  packing, ``encoder_segment_ids``, ``encoder_positions [B, L]``, ``decoder_segment_ids``,
  ``decoder_positions [B, T]`` (segment ids 1, 2, ... per packed example, 0 on padding).
* ``PrefixLMFeatureConverter(pack=...)`` (packed decoder-only): ``decoder_target_tokens``,
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
this module registers irl_lm's default in-memory tasks (no TensorFlow). Problems are reported in one sentence naming the
problem and its fix: an unknown task name (``ValueError`` listing the known tasks) and a data set
that is not there (:class:`MissingDatasetError`, e.g. XSum's manual download), and a seqio task
without seqio installed (:class:`irl_lm.data.tasks.MissingExtraError`, naming the extra).
Nothing here downloads anything.
"""
from __future__ import annotations

import itertools
import sys
from typing import Any, Iterable, Iterator, Mapping, Optional

import numpy as np

from irl_lm.data import registry
from irl_lm.data import tasks
# Raised for unprepared TFDS data and by the file-based loaders (GSM8k, TL;DR JSONL, WMT).
from irl_lm.data.errors import MissingDatasetError

FEATURE_KEYS = ("inputs", "targets")
# The seed of the random subset every evaluation of N examples reads (train job and evaluate
# mode alike): the same N examples for every run.
EVAL_SUBSET_SEED = 0


def get_task(task_name: str) -> Any:
  """Returns a task, registering an irl_lm task with its gin settings first if needed.

  Args:
    task_name: e.g. ``'stdlib_docstrings'``, ``'xsum'`` or a name given to a gin factory.

  Returns:
    An :class:`irl_lm.data.tasks.InMemoryTask`, or a ``seqio.Task`` (TFDS, WMT, or a task
    registered with seqio).

  Raises:
    ValueError: unknown name; the message lists the known tasks.
    MissingExtraError: a seqio task without seqio installed.
  """
  registry.ensure_registered(task_name)
  task = tasks.get(task_name)
  if task is not None:
    return task
  seqio = sys.modules.get("seqio")
  if seqio is None and not _seqio_installed():
    raise ValueError(f"Unknown task {task_name!r}: irl_lm's tasks are "
                     f"[{', '.join(registry.known_names())}]; seqio-registered tasks need "
                     f"{tasks.SEQIO_EXTRA}.")
  seqio = tasks.require_seqio(f"task {task_name!r}")
  if task_name not in seqio.TaskRegistry.names():
    names = ", ".join(sorted(set(seqio.TaskRegistry.names()) | set(registry.known_names())))
    raise ValueError(
        f"Unknown task {task_name!r}: registered tasks are [{names}]; use one of these names "
        "or import the module that registers your task before asking for it.")
  task = seqio.TaskRegistry.get(task_name)
  if not isinstance(task, seqio.Task):
    raise ValueError(f"{task_name!r} is a seqio mixture, not a task; pass one of its tasks.")
  return task


def _seqio_installed() -> bool:
  import importlib.util  # pylint: disable=g-import-not-at-top
  return importlib.util.find_spec("seqio") is not None


def get_vocabulary(task_name: str) -> Any:
  """Returns the vocabulary of a task's ``targets`` feature (used to decode model outputs).

  Args:
    task_name: a task name (see :func:`get_task`).

  Returns:
    An :class:`irl_lm.data.vocabulary.Vocabulary` (in-memory tasks; e.g. for
    ``stdlib_docstrings`` the shipped 4096-piece SentencePiece model) or a
    ``seqio.Vocabulary`` (seqio tasks); both have ``encode``, ``decode``, ``eos_id`` and
    ``vocab_size``.
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


def _is_numpy_converter(converter: Any) -> bool:
  return all(callable(getattr(converter, name, None)) for name in
             ("convert", "seqio_converter", "get_model_feature_lengths")) and not isinstance(
                 converter, type)


def _is_seqio_converter(converter: Any) -> bool:
  seqio = sys.modules.get("seqio")
  return seqio is not None and isinstance(converter, seqio.FeatureConverter)


def _check_converter(converter: Any) -> Any:
  if not (_is_numpy_converter(converter) or _is_seqio_converter(converter)):
    raise TypeError(f"feature_converter must be a converter instance: the model's "
                    f"(model.feature_converter(pack), an irl_lm.models.features converter) or a "
                    f"seqio.FeatureConverter instance (e.g. seqio.EncDecFeatureConverter("
                    f"pack=False)), got {converter!r}.")
  return converter


def model_feature_lengths(feature_converter: Any,
                          feature_lengths: Mapping[str, int]) -> dict[str, int]:
  """The lengths of the features `feature_converter` produces from task lengths.

  Args:
    feature_converter: e.g. ``model.feature_converter(pack=False)``.
    feature_lengths: ``{'inputs': L, 'targets': T}``.

  Returns:
    Model feature name -> length, e.g. ``{'encoder_input_tokens': L, 'decoder_input_tokens':
    T, ...}`` for encoder-decoder, ``{'decoder_target_tokens': L + T, ...}`` for prefix LM.
  """
  return dict(_check_converter(feature_converter).get_model_feature_lengths(
      _check_feature_lengths(feature_lengths)))


def _check_shards(shuffle: bool, seed: Optional[int], num_shards: int, shard_index: int) -> None:
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"shard_index {shard_index} is outside [0, {num_shards}): pass this host's "
                     "index (jax.process_index()) and the host count (jax.process_count()).")
  if shuffle and num_shards > 1 and seed is None:
    raise ValueError("Shuffling with num_shards > 1 needs a seed shared by all hosts, else their "
                     "shards overlap: pass seed=<int>.")


def _source(task_name: str, converter: Any) -> tuple[Any, Any, bool]:
  """``(task, converter, numpy?)``: the numpy source for an in-memory task read with an irl_lm
  converter, else the seqio task and converter."""
  task = get_task(task_name)
  if isinstance(task, tasks.InMemoryTask) and _is_numpy_converter(converter):
    return task, converter, True
  if isinstance(task, tasks.InMemoryTask):
    task = task.seqio_task()
  if _is_numpy_converter(converter):
    converter = converter.seqio_converter()
  return task, converter, False


def _trimmed(ids: list[int], length: int, eos_id: int, add_eos: bool) -> np.ndarray:
  """seqio's ``append_eos_after_trim``: ``ids[:length - 1] + [EOS]`` (or ``ids[:length]``)."""
  return np.asarray(ids[:length - 1] + [eos_id] if add_eos else ids[:length], np.int32)


def _examples(task: tasks.InMemoryTask, split: str, lengths: Mapping[str, int],
              order: Iterable[int]) -> Iterator[dict[str, np.ndarray]]:
  inputs, targets = task.tokens(split)
  eos = task.vocabulary.eos_id
  for i in order:
    yield {"inputs": _trimmed(inputs[i], lengths["inputs"], eos, task.inputs_eos),
           "targets": _trimmed(targets[i], lengths["targets"], eos, task.targets_eos)}


def _numpy_pass(task: tasks.InMemoryTask, split: str, *, lengths: Mapping[str, int],
                shuffle: bool, seed: Optional[int], converter: Any, batch_size: int,
                num_shards: int, shard_index: int) -> Iterator[dict[str, np.ndarray]]:
  """One pass over a split: shuffled with `seed` if `shuffle`, sharded by example, converted,
  batched (remainder dropped)."""
  size = len(task.tokens(split)[0])
  order = np.random.default_rng(seed).permutation(size) if shuffle else np.arange(size)
  rows = converter.convert(_examples(task, split, lengths, order[shard_index::num_shards]),
                           lengths)
  while True:
    batch = list(itertools.islice(rows, batch_size))
    if len(batch) < batch_size:
      return
    yield {k: np.stack([row[k] for row in batch]) for k in batch[0]}


def get_dataset(task_name: str, split: str, *, feature_lengths: Mapping[str, int],
                shuffle: bool, seed: Optional[int], feature_converter: Any,
                repeat: bool = True, num_shards: int = 1, shard_index: int = 0) -> Any:
  """The unbatched tf.data pipeline of the seqio source (same arguments as
  :func:`get_batches`; needs the seqio extra; an in-memory task is read as its seqio task).

  Returns:
    A ``tf.data.Dataset`` of the converter's feature dicts of int32 vectors.
  """
  lengths = _check_feature_lengths(feature_lengths)
  _check_converter(feature_converter)
  _check_shards(shuffle, seed, num_shards, shard_index)
  task = get_task(task_name)
  if isinstance(task, tasks.InMemoryTask):
    task = task.seqio_task()
  converter = (feature_converter.seqio_converter() if _is_numpy_converter(feature_converter)
               else feature_converter)
  from irl_lm.data import seqio_pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)
  return seqio_pipeline.get_dataset(task, split, lengths=lengths, shuffle=shuffle, seed=seed,
                                    converter=converter, repeat=repeat, num_shards=num_shards,
                                    shard_index=shard_index)


def epoch_seed(seed: Optional[int], epoch: int) -> Optional[int]:
  """The shuffle seed of training epoch `epoch` of a run seeded `seed` (None stays None)."""
  if seed is None:
    return None
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] & 0x7FFFFFFF)


def get_batches(task_name: str, split: str, *, feature_lengths: Mapping[str, int],
                batch_size: int, shuffle: bool, seed: Optional[int],
                feature_converter: Any, repeat: bool = True,
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
    feature_converter: normally the model's (``model.feature_converter(pack)``, an
      :mod:`irl_lm.models.features` converter), or any ``seqio.FeatureConverter`` instance
      (read through the seqio source); it decides the keys, lengths and packing.
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
    TypeError: `feature_converter` is not a converter instance.
    MissingExtraError: the seqio source is needed and seqio is not installed.
    MissingDatasetError: the task's data set is not prepared (TFDS) or not on disk (GSM8k,
      TL;DR JSONL, WMT files); the message says what to download and where.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  if start_batch < 0:
    raise ValueError(f"start_batch must be >= 0, got {start_batch}.")
  lengths = _check_feature_lengths(feature_lengths)
  _check_converter(feature_converter)
  _check_shards(shuffle, seed, num_shards, shard_index)
  task, converter, use_numpy = _source(task_name, feature_converter)
  what = f"the {split!r} split of task {task_name!r}"
  if not use_numpy:
    from irl_lm.data import seqio_pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)

    def one_pass(pass_seed: Optional[int]) -> Any:
      ds = seqio_pipeline.get_dataset(task, split, lengths=lengths, shuffle=shuffle,
                                      seed=pass_seed, converter=converter, repeat=False,
                                      num_shards=num_shards, shard_index=shard_index)
      return ds.batch(batch_size, drop_remainder=True)

    try:
      return seqio_pipeline.batches(one_pass, seed, epoch_seed, repeat=repeat,
                                    start_batch=start_batch, what=what)
    except ValueError as e:
      if "fewer examples" in str(e):
        raise ValueError(f"{what} has fewer examples on this host than one batch of "
                         f"{batch_size}: lower the batch size or use more examples (e.g. a "
                         "larger train_examples).") from None
      raise

  task.check_split(split)
  task.tokens(split)  # reads and tokenises the split now: missing files raise here

  def one_pass(pass_seed: Optional[int]) -> Iterator[dict[str, np.ndarray]]:
    return _numpy_pass(task, split, lengths=lengths, shuffle=shuffle, seed=pass_seed,
                       converter=converter, batch_size=batch_size, num_shards=num_shards,
                       shard_index=shard_index)

  if not repeat:
    return itertools.islice(one_pass(seed), start_batch, None)
  counted = sum(1 for _ in itertools.islice(one_pass(epoch_seed(seed, 0)), start_batch + 1))
  if counted == 0:
    raise ValueError(f"{what} has fewer examples on this host than one batch of {batch_size}: "
                     "lower the batch size or use more examples (e.g. a larger "
                     "train_examples).")
  epoch, offset = divmod(start_batch, counted) if counted <= start_batch else (0, start_batch)
  return _numpy_epochs(one_pass, seed, epoch, offset)


def _numpy_epochs(one_pass: Any, seed: Optional[int], epoch: int,
                  offset: int) -> Iterator[dict[str, np.ndarray]]:
  """Epochs `epoch`, `epoch + 1`, ... one after another, the first from batch `offset` on."""
  yield from itertools.islice(one_pass(epoch_seed(seed, epoch)), offset, None)
  for e in itertools.count(epoch + 1):
    yield from one_pass(epoch_seed(seed, e))


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
  task = get_task(task_name)
  if not isinstance(task, tasks.InMemoryTask):
    from irl_lm.data import seqio_pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)
    return seqio_pipeline.get_examples(task, split, num_examples=num_examples, lengths=lengths,
                                       seed=seed, subset_indices=subset_indices)
  indices = _indices(task, split, num_examples, seed)
  texts_in, texts_out = task.texts(split)
  tokens = _examples(task, split, lengths, indices)
  return [{"index": int(i), "inputs_text": texts_in[i], "targets_text": texts_out[i],
           "input_tokens": _padded(ex["inputs"], lengths["inputs"], pad=-1),
           "target_tokens": _padded(ex["targets"], lengths["targets"])}
          for i, ex in zip(indices, tokens)]


def _indices(task: tasks.InMemoryTask, split: str, num_examples: Optional[int],
             seed: Optional[int]) -> np.ndarray:
  size = len(task.examples(split))
  if num_examples is not None and seed is not None:
    return subset_indices(size, num_examples, seed)
  return np.arange(size if num_examples is None else min(size, num_examples))


def get_texts(task_name: str, split: str, *, num_examples: Optional[int] = None,
              seed: Optional[int] = None) -> dict[str, list[Any]]:
  """The untokenised texts of a split (or of its :func:`subset_indices` subset): what
  text-only baselines need, without padding every example.

  Returns:
    ``{'index': [int], 'inputs': [str], 'targets': [str]}`` in file order.
  """
  task = get_task(task_name)
  if not isinstance(task, tasks.InMemoryTask):
    from irl_lm.data import seqio_pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)
    return seqio_pipeline.get_texts(task, split, num_examples=num_examples, seed=seed,
                                    subset_indices=subset_indices)
  task.check_split(split)
  size = len(task.examples(split))
  indices = np.arange(size) if num_examples is None else subset_indices(size, num_examples,
                                                                          seed)
  inputs, targets = task.texts(split)
  return {"index": [int(i) for i in indices], "inputs": [inputs[i] for i in indices],
          "targets": [targets[i] for i in indices]}


registry.register_all()
