"""Gin-facing task factories: point a task at its data and vocabulary from a gin file.

Each factory records the settings of one task and returns its name, so gin files read::

  train.task = @gsm8k_task()
  gsm8k_task.data_dir = '/data/gsm8k'
  gsm8k_task.vocabulary_path = '/models/t5/sentencepiece.model'

The tasks themselves are registered by :mod:`irl_lm.data.tasks` (which imports TensorFlow). This
module imports nothing heavy: when :mod:`irl_lm.data.tasks` is already loaded a factory
re-registers the task at once with its settings, otherwise the settings wait and are applied
when it is first imported. So a configuration check (``run.mode = 'check'``) never loads
TensorFlow, and training and evaluation see the bound paths. Factories leave a task alone when
called again with the same settings. ``None`` means "the task's default" everywhere.

:data:`FACTORIES` lists the factories; ``irl_lm.config`` registers each with gin under its own name.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Mapping, Optional, Sequence

STDLIB_TASK = "stdlib_docstrings"
XSUM_TASK = "xsum"
TLDR_TASK = "tldr"
TLDR_OPENAI_TASK = "tldr_openai"
GSM8K_TASK = "gsm8k"
WMT22_TASK = "wmt22_en_de"
ARITHMETIC_TASK = "arithmetic_word_problems"

_TASKS_MODULE = "irl_lm.data.tasks"
# task name -> (registration function name in irl_lm.data.tasks, its keyword settings)
_PENDING: dict[str, tuple[str, dict[str, Any]]] = {}


def _settings(**kwargs: Any) -> dict[str, Any]:
  """The settings that were given (None means "the task's default" and is left out)."""
  return {k: v for k, v in kwargs.items() if v is not None}


def _configure(name: str, register_fn: str, settings: dict[str, Any]) -> str:
  _PENDING[name] = (register_fn, settings)
  tasks = sys.modules.get(_TASKS_MODULE)
  if tasks is not None and hasattr(tasks, "TASK_NAMES"):  # fully imported
    _apply(tasks, name)
  return name


def _apply(tasks: Any, name: str) -> None:
  register_fn, settings = _PENDING[name]
  if tasks.APPLIED_SETTINGS.get(name) == settings and name in tasks.TASK_METRICS:
    return
  getattr(tasks, register_fn)(name, replace=True, **settings)
  tasks.APPLIED_SETTINGS[name] = dict(settings)


def apply_pending() -> None:
  """Registers every task a factory was called for (``irl_lm.data.tasks`` calls this on import)."""
  tasks = sys.modules[_TASKS_MODULE]
  for name in list(_PENDING):
    _apply(tasks, name)


def xsum_task(name: str = XSUM_TASK, tfds_data_dir: Optional[str] = None,
              vocabulary_path: Optional[str] = None) -> str:
  """XSum on TFDS ``xsum:1.1.0`` (manual download, see the README).

  Args:
    name: the task name to register.
    tfds_data_dir: TFDS data directory (default TFDS's).
    vocabulary_path: T5's SentencePiece model (default its public GCS copy).

  Returns:
    `name`, for ``train.task``.
  """
  return _configure(name, "register_xsum_task",
                    _settings(tfds_data_dir=tfds_data_dir, vocabulary_path=vocabulary_path))


def tldr_task(name: str = TLDR_TASK, tfds_data_dir: Optional[str] = None,
              vocabulary_path: Optional[str] = None) -> str:
  """TL;DR on TFDS ``reddit_tifu/long_split`` (``tfds build reddit_tifu/long_split``).

  Returns:
    `name`, for ``train.task``.
  """
  return _configure(name, "register_tldr_task",
                    _settings(tfds_data_dir=tfds_data_dir, vocabulary_path=vocabulary_path))


def tldr_openai_task(name: str = TLDR_OPENAI_TASK, data_dir: Optional[str] = None,
                     input_template: Optional[str] = None,
                     vocabulary_path: Optional[str] = None) -> str:
  """TL;DR on the OpenAI JSON lines ``{train,valid,test}.jsonl`` (default ``<data root>/tldr``).

  Args:
    name: the task name to register.
    data_dir: folder of the three files.
    input_template: e.g. ``'summarize: {title} {post}'`` (default ``'summarize: {post}'``).
    vocabulary_path: T5's SentencePiece model.

  Returns:
    `name`, for ``train.task``.
  """
  return _configure(name, "register_tldr_openai_task",
                    _settings(data_dir=data_dir, input_template=input_template,
                              vocabulary_path=vocabulary_path))


def gsm8k_task(name: str = GSM8K_TASK, data_dir: Optional[str] = None,
               validation_size: Optional[int] = None,
               vocabulary_path: Optional[str] = None) -> str:
  """GSM8k on ``train.jsonl``/``test.jsonl`` (default folder ``<data root>/gsm8k``).

  Args:
    name: the task name to register.
    data_dir: folder of the two files.
    validation_size: hold out the last N train problems as ``validation`` (default 0: none).
    vocabulary_path: T5's SentencePiece model.

  Returns:
    `name`, for ``train.task``.
  """
  return _configure(name, "register_gsm8k_task",
                    _settings(data_dir=data_dir, validation_size=validation_size,
                              vocabulary_path=vocabulary_path))


def wmt22_en_de_task(name: str = WMT22_TASK, train_files: Optional[Sequence[str]] = None,
                     sacrebleu_dir: Optional[str] = None,
                     eval_sets: Optional[Mapping[str, str]] = None,
                     tsv_columns: Optional[Sequence[int]] = None,
                     reference: Optional[str] = None,
                     shuffle_buffer_size: Optional[int] = None,
                     vocabulary_path: Optional[str] = None) -> str:
  """WMT22 en-de: TSV training pairs, sacrebleu test sets from local files.

  Args:
    name: the task name to register.
    train_files: TSV paths or globs (default ``<data root>/wmt22_en_de/train.tsv``).
    sacrebleu_dir: sacrebleu's folder (default ``$SACREBLEU`` or ``~/.sacrebleu``).
    eval_sets: split -> test set (default validation wmt21, test wmt22).
    tsv_columns: (English column, German column), default (0, 1).
    reference: reference translator of the test sets (default 'A').
    shuffle_buffer_size: training shuffle buffer (lines).
    vocabulary_path: T5's SentencePiece model.

  Returns:
    `name`, for ``train.task``.
  """
  return _configure(name, "register_wmt22_en_de_task", _settings(
      train_files=list(train_files) if train_files is not None else None,
      sacrebleu_dir=sacrebleu_dir, eval_sets=dict(eval_sets) if eval_sets else None,
      tsv_columns=tuple(tsv_columns) if tsv_columns is not None else None,
      reference=reference, shuffle_buffer_size=shuffle_buffer_size,
      vocabulary_path=vocabulary_path))


def arithmetic_task(name: str = ARITHMETIC_TASK, sizes: Optional[Mapping[str, int]] = None,
                    seed: Optional[int] = None, vocabulary_path: Optional[str] = None) -> str:
  """The built-in GSM8k-shaped arithmetic word problems (generated, no download).

  Args:
    name: the task name to register.
    sizes: examples per split (default train 20000, validation 500, test 1000).
    seed: generation seed offset (default 0).
    vocabulary_path: SentencePiece model (default the shipped stdlib model).

  Returns:
    `name`, for ``train.task``.
  """
  return _configure(name, "register_arithmetic_task", _settings(
      sizes=dict(sizes) if sizes else None, seed=seed, vocabulary_path=vocabulary_path))


FACTORIES: tuple[Callable[..., str], ...] = (
    xsum_task, tldr_task, tldr_openai_task, gsm8k_task, wmt22_en_de_task, arithmetic_task)
