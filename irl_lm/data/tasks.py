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

* ``tldr`` - TFDS ``reddit_tifu/long_split`` (``tfds build reddit_tifu/long_split``),
  ``'summarize: ' + documents`` -> ``tldr``, T5's vocabulary (:mod:`irl_lm.data.tldr`).
* ``tldr_openai`` - the OpenAI TL;DR JSON lines (post -> summary), T5's vocabulary.
* ``gsm8k`` - GSM8k's public JSON lines (:mod:`irl_lm.data.gsm8k`), question -> worked solution
  with its ``<<expr=result>>`` annotations and ``#### answer``, splits train/test, T5's vocabulary.
* ``wmt22_en_de`` - ``'translate English to German: ' + en`` -> de; train from TSV files,
  validation/test = sacrebleu's wmt21/wmt22 from local files (:mod:`irl_lm.data.wmt`).
* ``arithmetic_word_problems`` - the built-in GSM8k-shaped problems (:mod:`irl_lm.data.arithmetic`,
  no download), with the shipped stdlib vocabulary, which round-trips their text exactly.

Every task's metric family (``rouge``, ``gsm8k`` or ``translation``) is in :data:`TASK_METRICS`.
Paths and vocabularies come from gin through :mod:`irl_lm.data.task_configs` (e.g.
``train.task = @gsm8k_task()`` with ``gsm8k_task.data_dir = '...'``), which re-registers a task
with the bound settings; the defaults registered on import read ``$IRL_LM_DATA_DIR``.

Registration is guarded: a name already in ``seqio.TaskRegistry`` is left as it is (unless
``replace=True``), so importing twice (or reloading) is harmless. Registering reads no file.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Optional, Sequence

import seqio
import tensorflow as tf

from irl_lm.data import arithmetic
from irl_lm.data import gsm8k
from irl_lm.data import sources
from irl_lm.data import stdlib_docstrings
from irl_lm.data import task_configs
from irl_lm.data import tldr
from irl_lm.data import vocabularies
from irl_lm.data import wmt

STDLIB_TASK = "stdlib_docstrings"
XSUM_TASK = "xsum"
XSUM_TFDS_NAME = "xsum:1.1.0"
T5_SUMMARIZE_PREFIX = "summarize: "
TLDR_TASK = task_configs.TLDR_TASK
TLDR_OPENAI_TASK = task_configs.TLDR_OPENAI_TASK
GSM8K_TASK = task_configs.GSM8K_TASK
WMT22_TASK = task_configs.WMT22_TASK
ARITHMETIC_TASK = task_configs.ARITHMETIC_TASK
T5_TRANSLATE_EN_DE_PREFIX = "translate English to German: "

# Task name -> metric family used by the evaluator: 'rouge' (ROUGE-1/2/Lsum), 'gsm8k'
# (final-answer accuracy) or 'translation' (BLEU, chrF).
TASK_METRICS: dict[str, str] = {}
# The settings each task was last registered with by a gin factory (see task_configs).
APPLIED_SETTINGS: dict[str, dict[str, Any]] = {}

# Per-TFDS-data-set hint used by the pipeline's "data set missing" error: what to download and
# where to put it. Keyed by the TFDS name without config/version.
MANUAL_DOWNLOAD_HINTS: dict[str, str] = {
    # {data_dir}: the TFDS data directory the task reads.
    "xsum": ("run the download and extraction scripts of https://github.com/EdinburghNLP/XSum/"
             "blob/master/XSum-Dataset/README.md#running-the-download-and-extraction-scripts, "
             "pack the resulting folder with `tar czf xsum-extracts-from-downloads.tar.gz "
             "xsum-extracts-from-downloads`, put that file in {data_dir}/downloads/manual/ and "
             "run `tfds build xsum --data_dir {data_dir}` (which also fetches XSum's split list "
             "from GitHub)"),
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
  return sources.examples_dataset(examples, ("name", "code", "summary"), shuffle_files, seed)


def arithmetic_dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None, *,
                          sizes: Optional[Mapping[str, int]] = None,
                          data_seed: int = 0) -> tf.data.Dataset:
  """One split of the built-in arithmetic problems (:func:`arithmetic.load_examples`).

  Args:
    split: ``'train'``, ``'validation'`` or ``'test'``.
    shuffle_files: fully shuffle the split (seeded by `seed`).
    seed: shuffle seed.
    sizes: examples per split; data_seed: the data set's generation seed offset.

  Returns:
    A dataset of ``{'question', 'answer', 'final_answer'}`` scalar tf.string examples.
  """
  examples = arithmetic.load_examples(split, sizes, data_seed)
  return sources.examples_dataset(examples, arithmetic.FIELDS, shuffle_files, seed)


# Shuffles the whole split with the seed, then shards by example (kept under its old name).
StdlibDataSource = sources.ShardableFunctionDataSource


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


def _add_task(name: str, *, source: seqio.DataSource, preprocessors: Sequence[Any],
              vocabulary: seqio.Vocabulary, metric: str, replace: bool) -> seqio.Task:
  """Adds a task (inputs/targets with EOS), or returns the registered one unless `replace`."""
  if name in seqio.TaskRegistry.names():
    if not replace:
      TASK_METRICS.setdefault(name, metric)  # e.g. after a reload of this module
      return seqio.TaskRegistry.get(name)
    seqio.TaskRegistry.remove(name)
  task = seqio.TaskRegistry.add(
      name, source=source,
      preprocessors=list(preprocessors) + [seqio.preprocessors.tokenize,
                                           seqio.preprocessors.append_eos_after_trim],
      output_features=_output_features(vocabulary))
  TASK_METRICS[name] = metric
  return task


def _rekey(**key_map: str) -> Any:
  return functools.partial(seqio.preprocessors.rekey, key_map=key_map)


def _t5_vocabulary(path: Optional[str]) -> seqio.Vocabulary:
  return vocabularies.t5_vocabulary(path or vocabularies.T5_VOCAB_PATH,
                                    extra_ids=vocabularies.T5_EXTRA_IDS)


def metric_family(task_name: str) -> str:
  """The metric family of a registered task: 'rouge', 'gsm8k' or 'translation' (default rouge)."""
  return TASK_METRICS.get(task_name, "rouge")


def register_stdlib_task(name: str = STDLIB_TASK, *, cache_dir: Optional[str] = None,
                         stdlib_root: Optional[str] = None,
                         vocabulary_path: str = vocabularies.STDLIB_VOCAB_PATH,
                         replace: bool = False) -> seqio.Task:
  """Registers a built-in code -> summary task (unless `name` is registered already).

  Args:
    name: task name.
    cache_dir: JSONL cache root (default: read from ``$IRL_LM_CACHE_DIR`` at load time).
    stdlib_root: library to extract from (default: the running interpreter's).
    vocabulary_path: SentencePiece model for inputs and targets (default: the shipped one).
    replace: re-register a task already registered under `name`.

  Returns:
    The registered ``seqio.Task``.
  """
  source = StdlibDataSource(
      dataset_fn=functools.partial(stdlib_dataset_fn, cache_dir=cache_dir,
                                   stdlib_root=stdlib_root),
      splits=stdlib_docstrings.SPLITS)
  return _add_task(name, source=source, preprocessors=[
      _rekey(inputs="code", targets="summary", name="name")],
                   vocabulary=vocabularies.stdlib_vocabulary(vocabulary_path), metric="rouge",
                   replace=replace)


def register_xsum_task(name: str = XSUM_TASK, *, tfds_data_dir: Optional[str] = None,
                       vocabulary_path: str = vocabularies.T5_VOCAB_PATH,
                       replace: bool = False) -> seqio.Task:
  """Registers the XSum task on TFDS ``xsum:1.1.0`` (unless `name` is registered already).

  Args:
    name: task name.
    tfds_data_dir: TFDS data directory (default: TFDS's, ``~/tensorflow_datasets``).
    vocabulary_path: T5 SentencePiece model (default: the public GCS copy, read lazily).
    replace: re-register a task already registered under `name`.

  Returns:
    The registered ``seqio.Task``; nothing is read until a dataset is requested.
  """
  source = seqio.TfdsDataSource(tfds_name=XSUM_TFDS_NAME, tfds_data_dir=tfds_data_dir,
                                splits=("train", "validation", "test"), read_only=True)
  return _add_task(name, source=source, preprocessors=[
      _rekey(inputs="document", targets="summary"),
      functools.partial(_prefix_inputs, prefix=T5_SUMMARIZE_PREFIX)],
                   vocabulary=_t5_vocabulary(vocabulary_path), metric="rouge", replace=replace)


def register_tldr_task(name: str = TLDR_TASK, *, tfds_data_dir: Optional[str] = None,
                       vocabulary_path: Optional[str] = None,
                       replace: bool = False) -> seqio.Task:
  """Registers TL;DR on TFDS ``reddit_tifu/long_split:1.1.2`` (documents -> tldr).

  Args:
    name: task name.
    tfds_data_dir: TFDS data directory (default TFDS's); prepare the data set there with
      ``tfds build reddit_tifu/long_split``.
    vocabulary_path: T5 SentencePiece model (default: T5's public copy, read lazily).
    replace: re-register a task already registered under `name`.

  Returns:
    The registered ``seqio.Task`` (inputs ``'summarize: ' + documents``, splits
    train/validation/test).
  """
  source = seqio.TfdsDataSource(tfds_name=tldr.TFDS_NAME, tfds_data_dir=tfds_data_dir,
                                splits=("train", "validation", "test"), read_only=True)
  return _add_task(name, source=source, preprocessors=[
      _rekey(inputs="documents", targets="tldr"),
      functools.partial(_prefix_inputs, prefix=T5_SUMMARIZE_PREFIX)],
                   vocabulary=_t5_vocabulary(vocabulary_path), metric="rouge", replace=replace)


def register_tldr_openai_task(name: str = TLDR_OPENAI_TASK, *, data_dir: Optional[str] = None,
                              input_template: str = tldr.DEFAULT_INPUT_TEMPLATE,
                              vocabulary_path: Optional[str] = None,
                              replace: bool = False) -> seqio.Task:
  """Registers TL;DR on the OpenAI JSON lines (``{train,valid,test}.jsonl``, post -> summary).

  Args:
    name: task name.
    data_dir: folder of the JSONL files (default ``<data root>/tldr``).
    input_template: how inputs are built from a record (default ``'summarize: {post}'``).
    vocabulary_path: T5 SentencePiece model (default: T5's public copy, read lazily).
    replace: re-register a task already registered under `name`.

  Returns:
    The registered ``seqio.Task`` (splits train/validation/test).
  """
  tldr.check_template(input_template)
  source = StdlibDataSource(
      dataset_fn=functools.partial(tldr.dataset_fn, data_dir=data_dir,
                                   input_template=input_template),
      splits=tldr.SPLITS)
  return _add_task(name, source=source, preprocessors=[_rekey(inputs="inputs", targets="targets",
                                                              id="id")],
                   vocabulary=_t5_vocabulary(vocabulary_path), metric="rouge", replace=replace)


def register_gsm8k_task(name: str = GSM8K_TASK, *, data_dir: Optional[str] = None,
                        validation_size: int = 0, vocabulary_path: Optional[str] = None,
                        replace: bool = False) -> seqio.Task:
  """Registers GSM8k on its public JSON lines (question -> worked solution).

  Args:
    name: task name.
    data_dir: folder holding ``train.jsonl`` and ``test.jsonl`` (default ``<data root>/gsm8k``).
    validation_size: hold out the last N train problems as a ``validation`` split.
    vocabulary_path: T5 SentencePiece model (default: T5's public copy, read lazily).
    replace: re-register a task already registered under `name`.

  Returns:
    The registered ``seqio.Task``; targets keep the ``<<expr=result>>`` annotations and the
    final ``#### answer`` line.
  """
  source = StdlibDataSource(
      dataset_fn=functools.partial(gsm8k.dataset_fn, data_dir=data_dir,
                                   validation_size=validation_size),
      splits=gsm8k.splits(validation_size))
  return _add_task(name, source=source, preprocessors=[
      _rekey(inputs="question", targets="answer", final_answer="final_answer")],
                   vocabulary=_t5_vocabulary(vocabulary_path), metric="gsm8k", replace=replace)


def register_arithmetic_task(name: str = ARITHMETIC_TASK, *,
                             sizes: Optional[Mapping[str, int]] = None, seed: int = 0,
                             vocabulary_path: str = vocabularies.STDLIB_VOCAB_PATH,
                             replace: bool = False) -> seqio.Task:
  """Registers the built-in GSM8k-shaped arithmetic word problems (generated, no download).

  Args:
    name: task name.
    sizes: examples per split (default ``arithmetic.DEFAULT_SIZES``: 20000 / 500 / 1000).
    seed: offsets the split seeds (0: the standard data set).
    vocabulary_path: SentencePiece model (default: the shipped stdlib model, which round-trips
      this text exactly; questions average ~56 and answers ~92 of its tokens).
    replace: re-register a task already registered under `name`.

  Returns:
    The registered ``seqio.Task`` (splits train/validation/test).
  """
  source = StdlibDataSource(
      dataset_fn=functools.partial(arithmetic_dataset_fn,
                                   sizes=dict(sizes) if sizes else None, data_seed=seed),
      splits=arithmetic.SPLITS)
  return _add_task(name, source=source, preprocessors=[
      _rekey(inputs="question", targets="answer", final_answer="final_answer")],
                   vocabulary=vocabularies.stdlib_vocabulary(vocabulary_path), metric="gsm8k",
                   replace=replace)


def register_wmt22_en_de_task(name: str = WMT22_TASK, *,
                              train_files: Optional[Sequence[str]] = None,
                              sacrebleu_dir: Optional[str] = None,
                              eval_sets: Optional[Mapping[str, str]] = None,
                              tsv_columns: tuple[int, int] = (0, 1),
                              reference: str = wmt.DEFAULT_REFERENCE,
                              shuffle_buffer_size: int = wmt.DEFAULT_SHUFFLE_BUFFER,
                              vocabulary_path: Optional[str] = None,
                              replace: bool = False) -> seqio.Task:
  """Registers WMT22 English -> German (train from TSV, validation/test from sacrebleu files).

  Args:
    name: task name.
    train_files: TSV paths or globs (default ``<data root>/wmt22_en_de/train.tsv``).
    sacrebleu_dir: sacrebleu's data folder (default ``$SACREBLEU`` or ``~/.sacrebleu``).
    eval_sets: split -> sacrebleu test set (default ``{'validation': 'wmt21', 'test': 'wmt22'}``).
    tsv_columns: (English column, German column) of the TSV files.
    reference: the test sets' reference translator (``'A'``).
    shuffle_buffer_size: lines in the training shuffle buffer.
    vocabulary_path: T5 SentencePiece model (default: T5's public copy, read lazily).
    replace: re-register a task already registered under `name`.

  Returns:
    The registered ``seqio.Task`` (inputs ``'translate English to German: ' + en``).
  """
  eval_sets = dict(eval_sets or wmt.DEFAULT_EVAL_SETS)
  source = StdlibDataSource(
      dataset_fn=functools.partial(
          wmt.dataset_fn, train_files=list(train_files) if train_files else None,
          sacrebleu_directory=sacrebleu_dir, eval_sets=eval_sets,
          tsv_columns=tuple(tsv_columns), shuffle_buffer_size=shuffle_buffer_size,
          reference=reference),
      splits=("train",) + tuple(eval_sets))
  return _add_task(name, source=source, preprocessors=[
      _rekey(inputs="source", targets="target"),
      functools.partial(_prefix_inputs, prefix=T5_TRANSLATE_EN_DE_PREFIX)],
                   vocabulary=_t5_vocabulary(vocabulary_path), metric="translation",
                   replace=replace)


def register_tasks() -> tuple[str, ...]:
  """Registers every irl_lm task (idempotent), then any gin factory's settings; returns names."""
  register_stdlib_task()
  register_xsum_task()
  register_tldr_task()
  register_tldr_openai_task()
  register_gsm8k_task()
  register_wmt22_en_de_task()
  register_arithmetic_task()
  names = (STDLIB_TASK, XSUM_TASK, TLDR_TASK, TLDR_OPENAI_TASK, GSM8K_TASK, WMT22_TASK,
           ARITHMETIC_TASK)
  for name in names:  # the defaults, so a factory called without settings changes nothing
    APPLIED_SETTINGS.setdefault(name, {})
  task_configs.apply_pending()
  return names


TASK_NAMES = register_tasks()
