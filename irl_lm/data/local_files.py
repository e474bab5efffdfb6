"""Bring your own data: a task over local prompt/completion files (JSON lines or TSV).

Each split is one file: ``train_path`` (required; default ``<data root>/local_files/train.jsonl``),
``validation_path`` and ``test_path`` (optional). Paths may start with ``{data_root}``
(``$IRL_LM_DATA_DIR`` or ``~/irl_lm_data``, see :mod:`irl_lm.data.sources`) or ``~``, and may be
``gs://`` paths. The format comes from each file's extension (``.jsonl`` or ``.tsv``) unless
``format`` names it:

* JSONL: one JSON object a line (blank lines skipped); number values are used as text.
* TSV: a first line naming the columns, then one record a line, read with :mod:`csv`'s
  ``excel_tab`` dialect (a field holding a tab, newline or ``"`` is written in double quotes,
  ``"`` doubled).

A record becomes one example: ``inputs`` = ``template.format(**fields)`` (a ``str.format``
template over the record's fields, where ``{prompt}`` stands for the ``prompt_field`` column,
e.g. ``'Question: {question}\\nAnswer:'``), ``targets`` = the ``completion_field`` text, kept
exactly (no stripping; it must not be empty). Both are tokenised with the task's vocabulary:
``'t5'`` (default), ``'stdlib'``, a SentencePiece ``.model`` or a Hugging Face
``tokenizer.json`` / checkpoint directory (:func:`irl_lm.data.vocabularies.task_vocabulary`).
EOS is appended to targets when ``add_eos`` and to inputs when ``inputs_eos`` (T5 style; a
decoder-only prompt whose template ends where the completion starts wants ``inputs_eos=False``).

Without ``validation_path`` the validation split is held out of the train file: its
``max(1, N // 50)`` records (2%) with the smallest SHA-256 of their example (the rule of
:func:`irl_lm.data.sources.train_subset`), removed from train, so evaluation always has a split
and the split is the same on every run and machine. ``train_examples`` = N then keeps a fixed
subset of N of the remaining train examples (the same rule again, nested).

Problems are one sentence naming the file, the line and the fix: a missing file, a record
without a field, a template naming a field the record lacks, an empty completion, invalid JSON,
a TSV file without a header, an unknown format, a file that is not UTF-8 text (a UTF-8
byte-order mark is dropped).

Task ``local_files`` (metric family ``rouge`` unless ``metric`` says ``gsm8k`` or
``translation``); gin: ``train.task = @local_files_task()`` (see ``gin/tasks/local_files.gin``).
Importing this module imports neither TensorFlow nor seqio; registering reads no file.
"""
# `format` is the setting's name in gin (local_files_task.format), as in the brief's API.
# pylint: disable=redefined-builtin
from __future__ import annotations

import csv
import functools
import io
import json
import re
import string
from typing import TYPE_CHECKING, Any, Iterator, Optional

from irl_lm.data import sources
from irl_lm.data import spec
from irl_lm.data.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
  import seqio

TASK = "local_files"
DEFAULT_TRAIN_PATH = "{data_root}/local_files/train.jsonl"
FORMATS = ("jsonl", "tsv")
EXTENSIONS = {".jsonl": "jsonl", ".tsv": "tsv"}
HOLD_OUT_DIVISOR = 50  # validation = N // 50 (2%) of train, at least 1, when none is given
KEYS = ("inputs", "targets")
PROMPT = "prompt"  # the template's name for the prompt_field column

_FIELD_ROOT = re.compile(r"[^.\[]*")


def file_format(path: str, format: Optional[str] = None) -> str:
  """The format of `path`: `format` if given, else from the extension.

  Raises:
    DataError: `format` is not ``'jsonl'``/``'tsv'``, or the extension tells neither.
  """
  if format is not None:
    if format not in FORMATS:
      raise DataError(f"unknown format {format!r} for {path}: set local_files_task.format to "
                      f"'jsonl' or 'tsv' (or None to tell it from the extension).")
    return format
  for extension, name in EXTENSIONS.items():
    if path.lower().endswith(extension):
      return name
  raise DataError(f"cannot tell the format of {path} from its extension: name the file "
                  f".jsonl or .tsv, or set local_files_task.format = 'jsonl' or 'tsv'.")


def template_fields(template: str) -> tuple[str, ...]:
  """The field names `template` uses (``'{a} {b.x}'`` -> ``('a', 'b')``), in order, once each.

  Raises:
    DataError: not a ``str.format`` template, or one with a positional field ``{}``/``{0}``.
  """
  if not isinstance(template, str):
    raise DataError(f"local_files_task.template must be a str.format template such as "
                    f"'Question: {{question}}\\nAnswer:', got {template!r}.")
  try:
    parsed = list(string.Formatter().parse(template))
  except ValueError as e:
    raise DataError(f"template {template!r} is not a valid str.format template ({e}): write "
                    "literal braces as {{ and }}.") from e
  fields = []
  for _, field, _, _ in parsed:
    if field is None:
      continue
    root = _FIELD_ROOT.match(field).group(0)
    if not root or root.isdigit():
      raise DataError(f"template {template!r} has a positional field {{{field}}}: name the "
                      "record's field instead, e.g. {prompt} or {question}.")
    if root not in fields:
      fields.append(root)
  return tuple(fields)


def _check_settings(paths: dict[str, Optional[str]], format: Optional[str],
                    prompt_field: str, completion_field: str, template: str,
                    metric: str) -> None:
  """Checks what can be checked without reading a file (raises DataError naming the fix)."""
  for arg, path in paths.items():
    if path is not None:
      if not isinstance(path, str) or not path:
        raise DataError(f"local_files_task.{arg} must be a file path, got {path!r}.")
      file_format(path, format)
  for arg, value in (("prompt_field", prompt_field), ("completion_field", completion_field)):
    if not isinstance(value, str) or not value:
      raise DataError(f"local_files_task.{arg} must be a field name, got {value!r}.")
  template_fields(template)
  if metric not in spec.METRIC_FAMILIES:
    raise DataError(f"local_files_task.metric {metric!r} is not one of "
                    f"{spec.METRIC_FAMILIES}: pick the family the evaluator scores with.")


def _jsonl_records(path: str, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
  # Split on "\n" only: str.splitlines also breaks at U+2028 etc., which JSON strings may hold.
  for number, line in enumerate(text.split("\n"), start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"line {number} of {path} is not valid JSON ({e.msg} at column "
                      f"{e.colno}): write one JSON object per line, e.g. "
                      '{"prompt": "...", "completion": "..."}.') from e
    if not isinstance(record, dict):
      raise DataError(f"line {number} of {path} is a JSON {type(record).__name__}, not an "
                      'object: write one JSON object per line, e.g. {"prompt": "...", '
                      '"completion": "..."}.')
    yield number, record


def _tsv_records(path: str, text: str, required: tuple[str, ...]
                 ) -> Iterator[tuple[int, dict[str, Any]]]:
  reader = csv.reader(io.StringIO(text, newline=""), dialect=csv.excel_tab)
  header = next(reader, None)
  if not header:
    raise DataError(f"{path} is empty or starts with a blank line: its first line must be a "
                    f"header naming the columns, e.g. {'<TAB>'.join(required)}.")
  missing = [f for f in required if f not in header]
  if missing:
    raise DataError(f"the first line of {path}, {header}, does not name the column(s) "
                    f"{missing}: a TSV file's first line must be a header naming its columns "
                    f"(e.g. {'<TAB>'.join(required)}); add one, or set local_files_task's "
                    "prompt_field, completion_field or template to the names it has.")
  for row in reader:
    if not row:
      continue
    if len(row) != len(header):
      raise DataError(f"line {reader.line_num} of {path} has {len(row)} column(s) but the "
                      f"header has {len(header)}: fix the line (a field holding a tab or a "
                      "newline must be in double quotes).")
    yield reader.line_num, dict(zip(header, row))


def _text(record: dict[str, Any], key: str, where: str) -> str:
  value = record[key]
  if isinstance(value, str):
    return value
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return str(value)
  raise DataError(f"field {key!r} on {where} is {json.dumps(value)}, not text: give it a "
                  "string (or a number).")


def _example(record: dict[str, Any], where: str, *, prompt_field: str, completion_field: str,
             template: str, fields: tuple[str, ...]) -> dict[str, str]:
  if completion_field not in record:
    raise DataError(f"{where} has no field {completion_field!r} (it has {sorted(record)}): add "
                    "it, or set local_files_task.completion_field to the field holding the "
                    "completion.")
  values = {}
  for field in fields:
    key = prompt_field if field == PROMPT else field
    if key not in record:
      alias = " (the prompt_field)" if field == PROMPT else ""
      raise DataError(f"template {template!r} names {{{field}}}, but {where} has no field "
                      f"{key!r}{alias} (it has {sorted(record)}): fix local_files_task.template"
                      f"{' or prompt_field' if field == PROMPT else ''}, or the file.")
    values[field] = _text(record, key, where)
  completion = _text(record, completion_field, where)
  if not completion.strip():
    raise DataError(f"{where} has an empty completion ({completion_field!r}): give every "
                    "record a non-empty completion, or remove the record.")
  try:
    inputs = template.format(**values)
  except (AttributeError, IndexError, KeyError, ValueError) as e:
    raise DataError(f"template {template!r} cannot be filled from {where} ({e!r}): use plain "
                    "{field} names.") from e
  return {"inputs": inputs, "targets": completion}


def read_file(path: str, *, format: Optional[str] = None,
              prompt_field: str = PROMPT, completion_field: str = "completion",
              template: str = "{prompt}", what: str = "the task",
              how: str = "create the file or fix its path") -> list[dict[str, str]]:
  """Reads one split file into examples.

  Args:
    path: a ``.jsonl`` or ``.tsv`` file (``{data_root}`` and ``~`` expanded; gs:// works).
    format: ``'jsonl'`` or ``'tsv'``; None: from the extension.
    prompt_field: the field ``{prompt}`` in `template` stands for.
    completion_field: the field holding the target text.
    template: ``str.format`` template over the record's fields, giving ``inputs``.
    what: what needs the file, for the missing-file message, e.g. "The train split of task 'x'".
    how: the fix for a missing file (no trailing period).

  Returns:
    Dicts with str ``inputs`` and ``targets``, in file order.

  Raises:
    MissingDatasetError: the file does not exist.
    DataError: a malformed file (the message names the file, the line and the fix).
  """
  kind = file_format(path, format)
  fields = template_fields(template)
  path = sources.expand_path(path)
  sources.require_file(path, what, how)
  data = sources.read_bytes(path)
  try:
    text = data.decode("utf-8-sig")  # a UTF-8 byte-order mark (Windows editors) is dropped
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b"\n") + 1
    raise DataError(f"line {line} of {path} is not UTF-8 text (byte 0x{data[e.start]:02x} at "
                   f"offset {e.start}): save the file as UTF-8 .jsonl or .tsv text.") from None
  if kind == "jsonl":
    records = _jsonl_records(path, text)
  else:
    required = tuple(dict.fromkeys(
        [prompt_field if f == PROMPT else f for f in fields] + [completion_field]))
    records = _tsv_records(path, text, required)
  examples = [_example(record, f"line {number} of {path}", prompt_field=prompt_field,
                       completion_field=completion_field, template=template, fields=fields)
              for number, record in records]
  if not examples:
    raise DataError(f"{path} holds no records: add prompt/completion records to it.")
  return examples


def hold_out(examples: list[dict[str, str]], path: str) -> tuple[list[dict[str, str]],
                                                                  list[dict[str, str]]]:
  """Splits train examples into (train, validation): validation = the ``max(1, N // 50)``
  examples with the smallest SHA-256 (:func:`irl_lm.data.sources.train_subset`), both in file
  order.

  Raises:
    DataError: fewer than 2 examples (nothing would be left to train on).
  """
  if len(examples) < 2:
    raise DataError(f"{path} has only {len(examples)} example(s), too few to hold out a "
                    "validation split: add records, or set local_files_task.validation_path.")
  held = sources.train_subset(examples, max(1, len(examples) // HOLD_OUT_DIVISOR))
  held_ids = {id(ex) for ex in held}
  return [ex for ex in examples if id(ex) not in held_ids], held


def splits(test_path: Optional[str] = None) -> tuple[str, ...]:
  """``('train', 'validation')``, plus ``'test'`` when there is a test file."""
  return ("train", "validation", "test") if test_path is not None else ("train", "validation")


def load_split(split: str, *, name: str = TASK, train_path: str = DEFAULT_TRAIN_PATH,
               validation_path: Optional[str] = None, test_path: Optional[str] = None,
               format: Optional[str] = None,
               prompt_field: str = PROMPT, completion_field: str = "completion",
               template: str = "{prompt}") -> list[dict[str, str]]:
  """Reads one split (arguments as :func:`register`; `name` only appears in messages).

  Returns:
    Dicts with str ``inputs`` and ``targets``, in file order.

  Raises:
    DataError: unknown split, or a malformed file.
    MissingDatasetError: a file is absent.
  """
  if split not in splits(test_path):
    raise DataError(f"task {name!r} has no split {split!r}: use one of {splits(test_path)} "
                    "(a test split needs local_files_task.test_path).")
  read = functools.partial(read_file, format=format, prompt_field=prompt_field,
                           completion_field=completion_field, template=template)
  if split == "test":
    return read(test_path, what=f"The test split of task {name!r}",
                how="fix local_files_task.test_path")
  if split == "validation" and validation_path is not None:
    return read(validation_path, what=f"The validation split of task {name!r}",
                how="fix local_files_task.validation_path")
  train = read(train_path, what=f"The train split of task {name!r}",
               how="put your train file (.jsonl or .tsv) there, or set "
                   "local_files_task.train_path to it")
  if validation_path is not None:
    return train
  train, validation = hold_out(train, sources.expand_path(train_path))
  return train if split == "train" else validation


def register(name: str = TASK, *, train_path: str = DEFAULT_TRAIN_PATH,
             validation_path: Optional[str] = None, test_path: Optional[str] = None,
             format: Optional[str] = None,
             prompt_field: str = PROMPT, completion_field: str = "completion",
             template: str = "{prompt}", vocabulary: str = "t5",
             eos_token: Optional[str] = None, add_eos: bool = True, inputs_eos: bool = True,
             metric: str = "rouge", train_examples: Optional[int] = None,
             replace: bool = False) -> "seqio.Task":
  """Registers a task over local prompt/completion files; reads no file.

  Args:
    name: task name.
    train_path: the train file (``.jsonl`` or ``.tsv``; ``{data_root}`` allowed).
    validation_path: the validation file; None holds out 2% of train (module docstring).
    test_path: the test file; None: no test split.
    format: ``'jsonl'`` or ``'tsv'`` for every file; None: from each file's extension.
    prompt_field: the field ``{prompt}`` in `template` stands for.
    completion_field: the field holding the target text.
    template: ``str.format`` template over a record's fields, giving the inputs text.
    vocabulary: ``'t5'``, ``'stdlib'``, a SentencePiece ``.model`` path, or a Hugging Face
      ``tokenizer.json`` path or checkpoint directory.
    eos_token: a Hugging Face tokenizer's EOS token (default: from the files next to it).
    add_eos: append EOS to the targets.
    inputs_eos: append EOS to the inputs (T5 style; False for decoder-only prompts).
    metric: the evaluator's metric family: ``'rouge'``, ``'gsm8k'`` or ``'translation'``.
    train_examples: keep a fixed subset of this many train examples (None: all).
    replace: re-register a task already registered under `name`.

  Returns:
    The registered ``seqio.Task`` (features ``inputs`` and ``targets``).

  Raises:
    DataError: a setting that cannot work (unknown format or extension, malformed template,
      unknown metric, bad vocabulary), before any file is read.
  """
  _check_settings({"train_path": train_path, "validation_path": validation_path,
                   "test_path": test_path}, format, prompt_field, completion_field, template,
                  metric)
  # pylint: disable=g-import-not-at-top
  from irl_lm.data import tasks
  from irl_lm.data import vocabularies
  return tasks.add_in_memory_task(
      name, load_split=functools.lru_cache(None)(functools.partial(
          load_split, name=name, train_path=train_path, validation_path=validation_path,
          test_path=test_path, format=format, prompt_field=prompt_field,
          completion_field=completion_field, template=template)),
      splits=splits(test_path), inputs_key="inputs", targets_key="targets",
      vocabulary=vocabularies.task_vocabulary(vocabulary, eos_token=eos_token), metric=metric,
      replace=replace, inputs_eos=inputs_eos, targets_eos=add_eos,
      train_examples=train_examples)


SPEC = spec.TaskSpec(name=TASK, metric="rouge", register=register)


def local_files_task(name: str = TASK, train_path: Optional[str] = None,
                     validation_path: Optional[str] = None, test_path: Optional[str] = None,
                     format: Optional[str] = None,
                     prompt_field: Optional[str] = None, completion_field: Optional[str] = None,
                     template: Optional[str] = None, vocabulary: Optional[str] = None,
                     eos_token: Optional[str] = None, add_eos: Optional[bool] = None,
                     inputs_eos: Optional[bool] = None, metric: Optional[str] = None,
                     train_examples: Optional[int] = None) -> str:
  """Gin factory: a task over your own prompt/completion files (see the module docstring).

  Args:
    name: the task name to register.
    train_path: the train file, ``.jsonl`` or ``.tsv`` (default
      ``{data_root}/local_files/train.jsonl``).
    validation_path: the validation file (default: 2% of train held out).
    test_path: the test file (default: no test split).
    format: ``'jsonl'`` or ``'tsv'`` (default: from each extension).
    prompt_field: the field ``{prompt}`` stands for (default ``'prompt'``).
    completion_field: the target field (default ``'completion'``).
    template: ``str.format`` template of the inputs (default ``'{prompt}'``), e.g.
      ``'Question: {question}\\nAnswer:'``.
    vocabulary: ``'t5'`` (default), ``'stdlib'``, a ``.model`` path, or a ``tokenizer.json``
      path or Hugging Face checkpoint directory.
    eos_token: a Hugging Face tokenizer's EOS token (default: from its config files).
    add_eos: EOS after the targets (default True).
    inputs_eos: EOS after the inputs (default True, T5 style; False for decoder-only).
    metric: ``'rouge'`` (default), ``'gsm8k'`` or ``'translation'``.
    train_examples: train on a fixed subset of N examples (default: all).

  Returns:
    `name`, for ``train.task``.

  Raises:
    DataError: a setting that cannot work (checked without reading any file).
  """
  given = lambda value, default: default if value is None else value
  family = given(metric, SPEC.metric)
  _check_settings({"train_path": train_path, "validation_path": validation_path,
                   "test_path": test_path}, format, given(prompt_field, PROMPT),
                  given(completion_field, "completion"), given(template, "{prompt}"), family)
  name = spec.configure(SPEC, name, train_path=train_path, validation_path=validation_path,
                        test_path=test_path, format=format, prompt_field=prompt_field,
                        completion_field=completion_field, template=template,
                        vocabulary=vocabulary, eos_token=eos_token, add_eos=add_eos,
                        inputs_eos=inputs_eos, metric=metric, train_examples=train_examples)
  spec.record_metric(name, family)
  return name
