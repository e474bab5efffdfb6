"""GSM8k from its public JSON-lines files (OpenAI's grade-school-math repository).

Files (one JSON object a line with ``question`` and ``answer``), as published in
https://github.com/openai/grade-school-math/tree/master/grade_school_math/data::

  <data_dir>/train.jsonl   7,473 problems
  <data_dir>/test.jsonl    1,319 problems

``data_dir`` defaults to ``<data root>/gsm8k`` (``$IRL_LM_DATA_DIR`` or ``~/irl_lm_data``, see
:mod:`irl_lm.data.sources`); set it in gin with ``gsm8k_task.data_dir``. An answer is the worked
solution with its calculator annotations ``<<48/2=24>>`` and a last line ``#### 72``; the task
keeps it whole as the target. GSM8k has no validation split: ``validation_size`` > 0 holds out
the *last* that many train problems as ``validation`` (and drops them from ``train``).
"""
from __future__ import annotations

import os
from typing import Optional

import tensorflow as tf

from irl_lm.data import sources

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


def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None, *,
               data_dir: Optional[str] = None, validation_size: int = 0) -> tf.data.Dataset:
  """seqio dataset function: ``{'question', 'answer', 'final_answer'}`` string examples.

  Args:
    split: see :func:`load_split`.
    shuffle_files: fully shuffle the split (seeded).
    seed: shuffle seed.
    data_dir, validation_size: see :func:`load_split`.

  Returns:
    A ``tf.data.Dataset`` of dicts of scalar tf.string tensors.
  """
  examples = load_split(split, data_dir, validation_size)
  return sources.examples_dataset(examples, FIELDS, shuffle_files, seed)
