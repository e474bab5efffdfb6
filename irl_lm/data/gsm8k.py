"""GSM8k from its public JSON-lines files (OpenAI's grade-school-math repository).

Files (one JSON object a line with ``question`` and ``answer``), as published in
https://github.com/openai/grade-school-math/tree/master/grade_school_math/data::

  <data_dir>/train.jsonl   7,473 problems
  <data_dir>/test.jsonl    1,319 problems

``data_dir`` defaults to ``<data root>/gsm8k`` (``$IRL_LM_DATA_DIR`` or ``~/irl_lm_data``, see
:mod:`irl_lm.data.sources`); set it in gin with ``gsm8k_task.data_dir``. An answer is the worked
solution with its calculator annotations ``<<48/2=24>>`` and a last line ``#### 72``; the task
keeps it whole as the target. GSM8k has no validation split: ``validation_size`` > 0 holds out
the *last* that many train problems as ``validation`` (and drops them from ``train``);
``train_examples`` = N then keeps a fixed subset of N of the remaining train problems
(:func:`irl_lm.data.sources.train_subset`: the same N for every run and seed, nested).

Task ``gsm8k`` (metric family ``gsm8k``): ``question`` -> inputs, ``answer`` -> targets, the
final answer kept as ``final_answer``, T5's vocabulary; gin: ``train.task = @gsm8k_task()``.
Importing this module imports neither TensorFlow nor seqio.
"""
from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Optional

from irl_lm.data import sources
from irl_lm.data import spec

if TYPE_CHECKING:  # pragma: no cover
  import seqio

TASK = "gsm8k"

SPLIT_FILES = {"train": "train.jsonl", "test": "test.jsonl"}
SOURCE_URL = ("https://raw.githubusercontent.com/openai/grade-school-math/master/"
              "grade_school_math/data")
DEFAULT_SUBDIR = "gsm8k"
FIELDS = ("question", "answer", "final_answer")
ANSWER_MARKER = "####"


def splits(validation_size: int = 0) -> tuple[str, ...]:
  """The task's splits: ``('train', 'test')``, plus ``'validation'`` when one is held out."""
  return ("train", "validation", "test") if validation_size > 0 else ("train", "test")


def final_answer(answer: str) -> str:
  """The text after the last ``####`` of a GSM8k answer, stripped (``''`` if there is none)."""
  if ANSWER_MARKER not in answer:
    return ""
  return answer.rsplit(ANSWER_MARKER, 1)[1].strip()


def load_split(split: str, data_dir: Optional[str] = None,
               validation_size: int = 0) -> list[dict[str, str]]:
  """Reads one split from the JSONL files.

  Args:
    split: ``'train'``, ``'test'``, or ``'validation'`` when `validation_size` > 0.
    data_dir: the folder with ``train.jsonl`` and ``test.jsonl`` (default ``<root>/gsm8k``).
    validation_size: number of train problems (the last ones) held out as ``validation``.

  Returns:
    Dicts with str fields ``question``, ``answer`` and ``final_answer``, in file order.

  Raises:
    ValueError: unknown split, or a malformed file.
    MissingDatasetError: the file is absent; the message names the URL and the path.
  """
  if split not in splits(validation_size):
    raise ValueError(f"GSM8k has no split {split!r}: use one of {splits(validation_size)} "
                     "(a validation split needs gsm8k_task.validation_size > 0).")
  directory = sources.resolve_dir(data_dir, DEFAULT_SUBDIR)
  file_name = SPLIT_FILES["train" if split == "validation" else split]
  path = os.path.join(directory, file_name)
  sources.require_file(
      path, f"GSM8k's {split} split",
      f"download {SOURCE_URL}/{file_name} (from https://github.com/openai/grade-school-math) "
      f"to {path}, or point gin's gsm8k_task.data_dir (or ${sources.DATA_DIR_ENV_VAR}) at the "
      "folder holding train.jsonl and test.jsonl")
  records = sources.read_jsonl(path, required=("question", "answer"))
  if split == "train" and validation_size > 0:
    records = records[:-validation_size]
  elif split == "validation":
    records = records[-validation_size:]
  return [{"question": r["question"], "answer": r["answer"],
           "final_answer": final_answer(r["answer"])} for r in records]


def register(name: str = TASK, *, data_dir: Optional[str] = None, validation_size: int = 0,
             vocabulary_path: Optional[str] = None, train_examples: Optional[int] = None,
             replace: bool = False) -> "seqio.Task":
  """Registers GSM8k on its public JSON lines (question -> worked solution); reads no file.

  Args:
    name: task name.
    data_dir: folder holding ``train.jsonl`` and ``test.jsonl`` (default ``<data root>/gsm8k``).
    validation_size: hold out the last N train problems as a ``validation`` split.
    vocabulary_path: T5 SentencePiece model (default: T5's public copy, read lazily), or a
      Hugging Face tokenizer.json or checkpoint directory (an imported decoder-only model's).
    train_examples: keep a fixed subset of this many train problems (None: all).
    replace: re-register a task already registered under `name`.

  Returns:
    The registered ``seqio.Task``; targets keep the ``<<expr=result>>`` annotations and the
    final ``#### answer`` line.
  """
  # pylint: disable=g-import-not-at-top
  from irl_lm.data import tasks
  from irl_lm.data import vocabularies
  return tasks.add_in_memory_task(
      name, load_split=functools.lru_cache(None)(
          functools.partial(load_split, data_dir=data_dir, validation_size=validation_size)),
      splits=splits(validation_size), inputs_key="question", targets_key="answer",
      vocabulary=vocabularies.paper_vocabulary(vocabulary_path), metric=SPEC.metric,
      replace=replace, train_examples=train_examples)


SPEC = spec.TaskSpec(name=TASK, metric="gsm8k", register=register)


def gsm8k_task(name: str = TASK, data_dir: Optional[str] = None,
               validation_size: Optional[int] = None,
               vocabulary_path: Optional[str] = None,
               train_examples: Optional[int] = None) -> str:
  """Gin factory: GSM8k on ``train.jsonl``/``test.jsonl`` (default folder ``<data root>/gsm8k``).

  Args:
    name: the task name to register.
    data_dir: folder of the two files.
    validation_size: hold out the last N train problems as ``validation`` (default 0: none).
    vocabulary_path: T5's SentencePiece model.
    train_examples: train on a fixed subset of N problems (default: all).

  Returns:
    `name`, for ``train.task``.
  """
  return spec.configure(SPEC, name, data_dir=data_dir, validation_size=validation_size,
                        vocabulary_path=vocabulary_path, train_examples=train_examples)
