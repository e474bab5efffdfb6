"""WMT22 English -> German: training pairs from TSV files, test sets in sacrebleu's local layout.

* ``train``: tab-separated text files, one sentence pair a line, streamed (never loaded whole).
  ``tsv_columns = (source, target)`` picks the columns: ``(0, 1)`` for ``English<TAB>German``
  (the default); the WMT22 news task's ``news-commentary-v16.de-en.tsv`` and
  ``europarl-v10.de-en.tsv`` put German first, so use ``(1, 0)`` for them. Lines with too few
  columns or an empty side are skipped. Default file: ``<data root>/wmt22_en_de/train.tsv``;
  gin's ``wmt22_en_de_task.train_files`` takes paths or glob patterns.
* ``validation`` / ``test``: sacrebleu test sets (default ``wmt21`` / ``wmt22``) read from where
  sacrebleu keeps them, ``$SACREBLEU`` or ``~/.sacrebleu`` (gin:
  ``wmt22_en_de_task.sacrebleu_dir``):
  ``<dir>/wmt22/wmt22.en-de.src`` and ``<dir>/wmt22/wmt22.en-de.ref-A`` (one segment a line, as
  ``sacrebleu -t wmt22 -l en-de --echo src`` leaves them), or, when only the downloaded archive
  was unpacked, the raw XML under ``<dir>/wmt22/raw/`` (parsed offline with sacrebleu's own
  reader). The reference is sacrebleu's default translator for the pair (``A``).

Task ``wmt22_en_de`` (metric family ``translation``): ``'translate English to German: ' + en``
-> de, T5's vocabulary; gin: ``train.task = @wmt22_en_de_task()``. ``train_examples`` = N trains
on the first N usable pairs of the training files in file order (files sorted per pattern), so
the subset is the same for every run and seed and smaller subsets nest; it is not a random
sample, so shuffle a file once beforehand if its order means something. Importing this module
imports neither TensorFlow nor seqio.
"""
from __future__ import annotations

import functools
import os
import re
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from irl_lm.data import sources
from irl_lm.data import spec
from irl_lm.data.errors import MissingDatasetError

if TYPE_CHECKING:  # pragma: no cover
  import seqio
  import tensorflow as tf

TASK = "wmt22_en_de"
T5_TRANSLATE_EN_DE_PREFIX = "translate English to German: "
LANGPAIR = "en-de"
DEFAULT_SUBDIR = "wmt22_en_de"
DEFAULT_TRAIN_FILE = "train.tsv"
DEFAULT_EVAL_SETS: Mapping[str, str] = {"validation": "wmt21", "test": "wmt22"}
DEFAULT_REFERENCE = "A"
SPLITS = ("train", "validation", "test")
DEFAULT_SHUFFLE_BUFFER = 100_000
TRAIN_DATA_URL = "https://www.statmt.org/wmt22/translation-task.html"


def sacrebleu_dir(directory: Optional[str] = None) -> str:
  """sacrebleu's data folder: `directory`, else ``$SACREBLEU``, else ``~/.sacrebleu``."""
  return os.path.expanduser(directory or os.environ.get("SACREBLEU") or "~/.sacrebleu")


def train_file_paths(train_files: Optional[Sequence[str]] = None) -> list[str]:
  """Expands the training file patterns, in sorted order per pattern.

  Raises:
    MissingDatasetError: nothing matches; the message says what to put where.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  patterns = list(train_files) if train_files else [
      os.path.join(sources.data_root(), DEFAULT_SUBDIR, DEFAULT_TRAIN_FILE)]
  paths = []
  for pattern in patterns:
    pattern = os.path.expanduser(pattern)
    paths += sorted(tf.io.gfile.glob(pattern)) if any(c in pattern for c in "*?[") else (
        [pattern] if tf.io.gfile.exists(pattern) else [])
  if not paths:
    raise MissingDatasetError(
        f"WMT22 en-de training needs tab-separated sentence pairs in {', '.join(patterns)}, "
        f"which do not exist: download parallel en-de data of the WMT22 news task "
        f"({TRAIN_DATA_URL}, e.g. news-commentary-v16.de-en.tsv, German first, so also set "
        f"wmt22_en_de_task.tsv_columns = (1, 0)) and put it there, or point gin's "
        f"wmt22_en_de_task.train_files at your TSV files.")
  return paths


def train_dataset(train_files: Optional[Sequence[str]], shuffle: bool, seed: Optional[int], *,
                  tsv_columns: tuple[int, int] = (0, 1),
                  shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER,
                  train_examples: Optional[int] = None) -> "tf.data.Dataset":
  """Streams ``{'source', 'target'}`` pairs from TSV files.

  Args:
    train_files: paths or glob patterns (default ``<data root>/wmt22_en_de/train.tsv``).
    shuffle: shuffle the file order and the lines (buffer of `shuffle_buffer_size`), seeded.
    seed: shuffle seed (the same on every host keeps example sharding disjoint).
    tsv_columns: (source column, target column), 0-based.
    shuffle_buffer_size: lines held by the shuffle buffer.
    train_examples: keep only the first N usable pairs in file order (then shuffle those, if
      asked, with a buffer of N); None keeps all.

  Returns:
    A ``tf.data.Dataset`` of dicts of scalar tf.string (whitespace-stripped, both non-empty).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  train_examples = sources.check_train_examples(train_examples)
  src_col, tgt_col = (int(c) for c in tsv_columns)
  if min(src_col, tgt_col) < 0 or src_col == tgt_col:
    raise ValueError(f"tsv_columns {tsv_columns} must be two different column indices >= 0.")
  paths = train_file_paths(train_files)
  files = tf.data.Dataset.from_tensor_slices(paths)
  if shuffle and len(paths) > 1 and train_examples is None:
    files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
  ds = files.flat_map(tf.data.TextLineDataset)
  needed = max(src_col, tgt_col) + 1

  def split_line(line: tf.Tensor) -> dict[str, tf.Tensor]:
    parts = tf.strings.split(line, sep="\t")
    ok = tf.size(parts) >= needed
    pick = lambda col: tf.strings.strip(tf.cond(ok, lambda: parts[col], lambda: tf.constant("")))
    return {"source": pick(src_col), "target": pick(tgt_col)}

  ds = ds.map(split_line, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.filter(lambda ex: (tf.strings.length(ex["source"]) > 0) &
                 (tf.strings.length(ex["target"]) > 0))
  if train_examples is not None:
    ds = ds.take(train_examples)
    shuffle_buffer_size = train_examples
  if shuffle:
    ds = ds.shuffle(shuffle_buffer_size, seed=seed, reshuffle_each_iteration=True)
  return ds


def _clean(line: str) -> str:
  """sacrebleu's own cleaning of test-set text: strip, collapse whitespace runs to one space."""
  return re.sub(r"\s+", " ", line.strip())


def _read_lines(path: str) -> list[str]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tf.io.gfile.GFile(path, "r") as f:
    return [line.rstrip("\n") for line in f]


def load_test_set(test_set: str, langpair: str = LANGPAIR, *, directory: Optional[str] = None,
                  reference: str = DEFAULT_REFERENCE) -> list[dict[str, str]]:
  """Reads a sacrebleu test set from its local files (never downloads).

  Looks for ``<dir>/<set>/<set>.<pair>.src`` and ``.ref-<reference>`` (or ``.ref``); failing
  that, for the raw XML that sacrebleu's metadata names under ``<dir>/<set>/raw/``.

  Args:
    test_set: sacrebleu name, e.g. ``'wmt22'``.
    langpair: e.g. ``'en-de'``.
    directory: sacrebleu's folder (default ``$SACREBLEU`` or ``~/.sacrebleu``).
    reference: translator id of the reference (``'A'``).

  Returns:
    ``[{'source': str, 'target': str}]`` in test-set order.

  Raises:
    MissingDatasetError: neither the text files nor the raw XML are there; the message gives
      the sacrebleu command that fetches them and where they must end up.
    ValueError: source and reference line counts differ.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  root = os.path.join(sacrebleu_dir(directory), test_set)
  stem = os.path.join(root, f"{test_set}.{langpair}")
  src_path = f"{stem}.src"
  ref_paths = [f"{stem}.ref-{reference}", f"{stem}.ref"]
  ref_path = next((p for p in ref_paths if tf.io.gfile.exists(p)), None)
  if tf.io.gfile.exists(src_path) and ref_path:
    sources_, targets = _read_lines(src_path), _read_lines(ref_path)
  else:
    sources_, targets = _from_raw_xml(root, test_set, langpair, reference)
    if sources_ is None:
      raise MissingDatasetError(
          f"WMT test set {test_set} ({langpair}) needs {src_path} and {ref_paths[0]}, which do "
          f"not exist: on a machine with internet access run `sacrebleu -t {test_set} -l "
          f"{langpair} --echo src > /dev/null` (it writes them under ~/.sacrebleu/{test_set}/) "
          f"and copy that folder to {root}, or point gin's wmt22_en_de_task.sacrebleu_dir (or "
          "$SACREBLEU) at the folder that holds it.")
  if len(sources_) != len(targets):
    raise ValueError(f"{test_set} {langpair}: {len(sources_)} source lines but {len(targets)} "
                     "reference lines; re-create the files with sacrebleu.")
  return [{"source": _clean(s), "target": _clean(t)} for s, t in zip(sources_, targets)]


def _from_raw_xml(root: str, test_set: str, langpair: str, reference: str
                  ) -> tuple[Optional[list[str]], Optional[list[str]]]:
  """Source and reference lines from sacrebleu's unpacked raw XML, or (None, None)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from sacrebleu.dataset import DATASETS  # pylint: disable=g-import-not-at-top
  from sacrebleu.dataset.wmt_xml import WMTXMLDataset  # pylint: disable=g-import-not-at-top
  dataset = DATASETS.get(test_set)
  if not isinstance(dataset, WMTXMLDataset) or langpair not in dataset.langpairs:
    return None, None
  entry = dataset.langpairs[langpair]
  rel_path = entry["path"] if isinstance(entry, dict) else entry[0]
  path = os.path.join(root, "raw", rel_path)
  if not tf.io.gfile.exists(path):
    return None, None
  with tf.io.gfile.GFile(path, "rb") as f:
    fields = WMTXMLDataset._unwrap_wmt21_or_later(f)  # pylint: disable=protected-access
  ref = fields.get(f"ref:{reference}") or fields.get("ref")
  if ref is None:
    refs = sorted(k for k in fields if k.startswith("ref"))
    raise ValueError(f"{path} has no reference {reference!r}; it has {refs}.")
  return list(fields["src"]), list(ref)


def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None, *,
               train_files: Optional[Sequence[str]] = None,
               sacrebleu_directory: Optional[str] = None,
               eval_sets: Mapping[str, str] = DEFAULT_EVAL_SETS,
               tsv_columns: tuple[int, int] = (0, 1),
               shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER,
               reference: str = DEFAULT_REFERENCE,
               train_examples: Optional[int] = None) -> "tf.data.Dataset":
  """seqio dataset function: ``{'source', 'target'}`` string examples of one split.

  Args:
    split: ``'train'`` (TSV files) or a key of `eval_sets` (a sacrebleu test set).
    shuffle_files: shuffle (seeded); the test sets are shuffled in full.
    seed: shuffle seed.
    train_files, tsv_columns, shuffle_buffer_size, train_examples: see :func:`train_dataset`.
    sacrebleu_directory, reference: see :func:`load_test_set`.
    eval_sets: split name -> sacrebleu test set (default validation: wmt21, test: wmt22).

  Returns:
    A ``tf.data.Dataset`` of dicts of scalar tf.string tensors.
  """
  if split == "train":
    return train_dataset(train_files, shuffle_files, seed, tsv_columns=tsv_columns,
                         shuffle_buffer_size=shuffle_buffer_size, train_examples=train_examples)
  if split not in eval_sets:
    raise ValueError(f"WMT22 en-de has no split {split!r}: use 'train' or one of "
                     f"{sorted(eval_sets)}.")
  from irl_lm.data import seqio_tasks  # pylint: disable=g-import-not-at-top  (TensorFlow)
  examples = load_test_set(eval_sets[split], LANGPAIR, directory=sacrebleu_directory,
                           reference=reference)
  return seqio_tasks.examples_dataset(examples, ("source", "target"), shuffle_files, seed)


def register(name: str = TASK, *, train_files: Optional[Sequence[str]] = None,
             sacrebleu_dir: Optional[str] = None, eval_sets: Optional[Mapping[str, str]] = None,
             tsv_columns: tuple[int, int] = (0, 1), reference: str = DEFAULT_REFERENCE,
             shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER,
             vocabulary_path: Optional[str] = None, train_examples: Optional[int] = None,
             replace: bool = False) -> "seqio.Task":
  """Registers WMT22 English -> German (train from TSV, validation/test from sacrebleu files).

  Args:
    name: task name.
    train_files: TSV paths or globs (default ``<data root>/wmt22_en_de/train.tsv``).
    sacrebleu_dir: sacrebleu's data folder (default ``$SACREBLEU`` or ``~/.sacrebleu``).
    eval_sets: split -> sacrebleu test set (default ``{'validation': 'wmt21', 'test': 'wmt22'}``).
    tsv_columns: (English column, German column) of the TSV files.
    reference: the test sets' reference translator (``'A'``).
    shuffle_buffer_size: lines in the training shuffle buffer.
    vocabulary_path: T5 SentencePiece model (default: T5's public copy, read lazily), or a
      Hugging Face tokenizer.json or checkpoint directory (an imported decoder-only model's).
    train_examples: train on the first N usable pairs in file order (None: all).
    replace: re-register a task already registered under `name`.

  Returns:
    The registered ``seqio.Task`` (inputs ``'translate English to German: ' + en``).
  """
  from irl_lm.data import seqio_tasks  # pylint: disable=g-import-not-at-top  (TensorFlow)
  eval_sets = dict(eval_sets or DEFAULT_EVAL_SETS)
  source = seqio_tasks.ShardableFunctionDataSource(
      dataset_fn=functools.partial(
          dataset_fn, train_files=list(train_files) if train_files else None,
          sacrebleu_directory=sacrebleu_dir, eval_sets=eval_sets,
          tsv_columns=tuple(tsv_columns), shuffle_buffer_size=shuffle_buffer_size,
          reference=reference, train_examples=sources.check_train_examples(train_examples)),
      splits=("train",) + tuple(eval_sets))
  return seqio_tasks.add_task(
      name, source=source,
      preprocessors=[seqio_tasks.rekey(inputs="source", targets="target"),
                     seqio_tasks.prefix(T5_TRANSLATE_EN_DE_PREFIX)],
      vocabulary=seqio_tasks.t5_vocabulary(vocabulary_path), metric=SPEC.metric, replace=replace)


SPEC = spec.TaskSpec(name=TASK, metric="translation", register=register, needs_seqio=True)


def wmt22_en_de_task(name: str = TASK, train_files: Optional[Sequence[str]] = None,
                     sacrebleu_dir: Optional[str] = None,
                     eval_sets: Optional[Mapping[str, str]] = None,
                     tsv_columns: Optional[Sequence[int]] = None,
                     reference: Optional[str] = None,
                     shuffle_buffer_size: Optional[int] = None,
                     vocabulary_path: Optional[str] = None,
                     train_examples: Optional[int] = None) -> str:
  """Gin factory: WMT22 en-de, TSV training pairs, sacrebleu test sets from local files.

  Args:
    name: the task name to register.
    train_files: TSV paths or globs (default ``<data root>/wmt22_en_de/train.tsv``).
    sacrebleu_dir: sacrebleu's folder (default ``$SACREBLEU`` or ``~/.sacrebleu``).
    eval_sets: split -> test set (default validation wmt21, test wmt22).
    tsv_columns: (English column, German column), default (0, 1).
    reference: reference translator of the test sets (default 'A').
    shuffle_buffer_size: training shuffle buffer (lines).
    vocabulary_path: T5's SentencePiece model.
    train_examples: train on the first N pairs in file order (default: all).

  Returns:
    `name`, for ``train.task``.
  """
  return spec.configure(
      SPEC, name, train_files=spec.as_list(train_files), sacrebleu_dir=sacrebleu_dir,
      eval_sets=spec.as_dict(eval_sets), tsv_columns=spec.as_tuple(tsv_columns),
      reference=reference, shuffle_buffer_size=shuffle_buffer_size,
      vocabulary_path=vocabulary_path, train_examples=train_examples)
