"""Shared pieces of the file-based readers: where data lives, reading JSONL, train subsets.

Local data sets (GSM8k, the OpenAI TL;DR JSONL, WMT22 training TSVs) live under one root,
``$IRL_LM_DATA_DIR`` or ``~/irl_lm_data`` by default, one folder per data set (read when a
dataset is built, so the variable can be set after import); each task's gin factory can point
elsewhere (e.g. ``gsm8k_task.data_dir``).

Files are read through ``etils.epath`` (local paths or ``gs://``); this module imports neither
seqio nor TensorFlow (the seqio/tf.data side is :mod:`irl_lm.data.seqio_tasks`).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping, Optional, Sequence, TypeVar

from etils import epath

from irl_lm.data.errors import DataError, MissingDatasetError

DATA_DIR_ENV_VAR = "IRL_LM_DATA_DIR"
DEFAULT_DATA_ROOT = "~/irl_lm_data"


def data_root() -> str:
  """The local data root: ``$IRL_LM_DATA_DIR`` or ``~/irl_lm_data`` (user-expanded)."""
  return os.path.expanduser(os.environ.get(DATA_DIR_ENV_VAR) or DEFAULT_DATA_ROOT)


DATA_ROOT_PLACEHOLDER = "{data_root}"


def expand_path(path: Optional[str]) -> Optional[str]:
  """`path` with a `{data_root}` placeholder replaced by :func:`data_root` and `~` expanded, so
  gin files name places under the data root (e.g. the cached pretrained checkpoint)."""
  if path is None or "://" in path:
    return path
  return os.path.expanduser(path.replace(DATA_ROOT_PLACEHOLDER, data_root()))


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
  if not epath.Path(path).exists():
    raise MissingDatasetError(f"{what} needs {path}, which does not exist: {how}.")
  return path


def read_jsonl(path: str, required: Sequence[str]) -> list[dict[str, Any]]:
  """Reads a JSON-lines file, checking that every record has the `required` fields.

  Args:
    path: the file (any path ``etils.epath`` reads, e.g. local or gs://).
    required: field names each record must have.

  Returns:
    One dict per non-blank line, in file order.

  Raises:
    ValueError: a line that is not a JSON object, or lacks a required field (naming the line).
  """
  records = []
  with epath.Path(path).open("r") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"line {number} of {path} is not valid JSON ({e.msg}).") from e
      missing = [k for k in required if not isinstance(record, dict) or k not in record]
      if missing:
        raise DataError(f"line {number} of {path} lacks the field(s) {missing}: each line must "
                        f"be a JSON object with {list(required)}.")
      records.append(record)
  return records


def read_bytes(path: str) -> bytes:
  """The bytes of a local or ``gs://`` file."""
  return epath.Path(path).read_bytes()


Example = TypeVar("Example", bound=Mapping[str, Any])


def check_train_examples(train_examples: Optional[int]) -> Optional[int]:
  """`train_examples` as an int >= 1 (or None); raises ValueError otherwise."""
  if train_examples is None:
    return None
  if isinstance(train_examples, bool) or int(train_examples) != train_examples or (
      train_examples < 1):
    raise DataError(f"train_examples must be a whole number >= 1 (or None for the whole "
                    f"train split), got {train_examples!r}.")
  return int(train_examples)


def _subset_key(example: Mapping[str, Any]) -> bytes:
  return hashlib.sha256(json.dumps(example, sort_keys=True, ensure_ascii=False,
                                   default=str).encode("utf-8")).digest()


def train_subset(examples: Sequence[Example], train_examples: int) -> list[Example]:
  """The fixed subset of `train_examples` examples of an in-memory train split.

  The subset is the examples with the smallest SHA-256 of their fields (JSON, sorted keys; ties
  by position), returned in their original order. It depends on nothing but the data: every
  run, seed and machine gets the same examples, and a smaller subset is always contained in a
  larger one (the subsets nest).

  Args:
    examples: the whole split, N dicts of JSON-serialisable fields.
    train_examples: how many to keep, 1 <= train_examples <= N.

  Returns:
    A list of exactly `train_examples` of the examples, in split order.

  Raises:
    ValueError: `train_examples` is not in [1, N].
  """
  n = check_train_examples(train_examples)
  if n > len(examples):
    raise DataError(f"train_examples={n} but the train split has only {len(examples)} "
                    "examples: ask for fewer (or None for all of them).")
  ranked = sorted(range(len(examples)), key=lambda i: (_subset_key(examples[i]), i))
  return [examples[i] for i in sorted(ranked[:n])]
