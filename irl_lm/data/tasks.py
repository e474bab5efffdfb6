"""irl_lm's in-memory tasks: a split read into a Python list, tokenised without TensorFlow.

The built-in tasks and the file-based ones that fit in memory (stdlib/pypackages docstrings,
arithmetic, known distribution, local JSONL/TSV files, GSM8k JSONL, TL;DR OpenAI JSONL) are
:class:`InMemoryTask` objects kept in this module's registry, not in seqio's: the numpy pipeline
(:mod:`irl_lm.data.pipeline`) reads them with no seqio, TensorFlow or TFDS installed. The same
task as a ``seqio.Task`` (:meth:`InMemoryTask.seqio_task`) gives the same tokens, for callers
that pass a seqio feature converter. TFDS tasks (XSum, TL;DR) and WMT stay seqio tasks and need
the ``seqio`` extra (:func:`require_seqio`).

This module imports neither seqio nor TensorFlow.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

from irl_lm import errors
from irl_lm.data import sources
from irl_lm.data import spec
from irl_lm.data.vocabulary import Vocabulary

if TYPE_CHECKING:  # pragma: no cover
  import seqio

SEQIO_EXTRA = 'pip install "irl_lm[seqio]"'


class MissingExtraError(errors.UserError, ModuleNotFoundError):
  """A task or feature needs seqio/TensorFlow, which are not installed."""


def require_seqio(what: str) -> Any:
  """Imports and returns seqio, or raises :class:`MissingExtraError` naming the extra.

  Args:
    what: what needs it, e.g. ``"task 'xsum'"``.
  """
  try:
    return importlib.import_module("seqio")
  except ImportError as e:
    raise MissingExtraError(f"{what} needs seqio and TensorFlow, which are not installed: "
                            f"{SEQIO_EXTRA}.") from e


@dataclasses.dataclass(frozen=True)
class Feature:
  """A task feature as callers read it (like ``seqio.Feature``): its vocabulary and EOS."""
  vocabulary: Vocabulary
  add_eos: bool


@dataclasses.dataclass(eq=False)
class InMemoryTask:
  """A task whose splits are lists of dicts of str fields.

  Attributes:
    name: the task name.
    load_split: ``split -> list of dicts`` (read once per process and kept).
    splits: the split names.
    inputs_key, targets_key: the fields that become ``inputs`` and ``targets``.
    vocabulary: the vocabulary of both features.
    metric: the evaluator's metric family.
    input_prefix: text prepended to every ``inputs``.
    inputs_eos, targets_eos: append EOS (after trimming) to ``inputs`` / ``targets``.
    train_examples: keep only this fixed subset of the train split
      (:func:`irl_lm.data.sources.train_subset`); None keeps it whole.
  """
  name: str
  load_split: Callable[[str], Sequence[Mapping[str, Any]]]
  splits: tuple[str, ...]
  inputs_key: str
  targets_key: str
  vocabulary: Vocabulary
  metric: str
  input_prefix: str = ""
  inputs_eos: bool = True
  targets_eos: bool = True
  train_examples: Optional[int] = None

  def __post_init__(self):
    self._lock = threading.Lock()
    self._examples: dict[str, list[Mapping[str, Any]]] = {}
    self._tokens: dict[str, tuple[list[list[int]], list[list[int]]]] = {}
    self._seqio_task = None

  @property
  def output_features(self) -> dict[str, Feature]:
    return {"inputs": Feature(self.vocabulary, self.inputs_eos),
            "targets": Feature(self.vocabulary, self.targets_eos)}

  def check_split(self, split: str) -> None:
    if split not in self.splits:
      raise ValueError(f"Task {self.name!r} has no split {split!r}; use one of "
                       f"{sorted(self.splits)}.")

  def examples(self, split: str) -> list[Mapping[str, Any]]:
    """The split's raw examples in file order (the train subset when one is set)."""
    self.check_split(split)
    with self._lock:
      if split not in self._examples:
        examples = list(self.load_split(split))
        if split == "train" and self.train_examples is not None:
          examples = sources.train_subset(examples, self.train_examples)
        self._examples[split] = examples
      return self._examples[split]

  def texts(self, split: str) -> tuple[list[str], list[str]]:
    """``(inputs texts with the prefix, targets texts)`` of the split, in file order."""
    examples = self.examples(split)
    return ([self.input_prefix + str(ex[self.inputs_key]) for ex in examples],
            [str(ex[self.targets_key]) for ex in examples])

  def tokens(self, split: str) -> tuple[list[list[int]], list[list[int]]]:
    """``(inputs ids, targets ids)`` of the split, untrimmed and without EOS (cached)."""
    inputs, targets = self.texts(split)
    with self._lock:
      if split not in self._tokens:
        encode = self.vocabulary.encode
        self._tokens[split] = ([encode(t) for t in inputs], [encode(t) for t in targets])
      return self._tokens[split]

  def seqio_task(self) -> "seqio.Task":
    """This task as a ``seqio.Task`` registered under its name (needs the seqio extra)."""
    if self._seqio_task is None:
      require_seqio(f"task {self.name!r} with a seqio feature converter")
      from irl_lm.data import seqio_tasks  # pylint: disable=g-import-not-at-top
      fields = (self.inputs_key, self.targets_key)
      keys = tuple(dict.fromkeys(fields))
      source = seqio_tasks.ShardableFunctionDataSource(
          dataset_fn=functools.partial(_seqio_split, task=self, keys=keys),
          splits=self.splits)
      preprocessors = [seqio_tasks.rekey(inputs=self.inputs_key, targets=self.targets_key)]
      if self.input_prefix:
        preprocessors.append(seqio_tasks.prefix(self.input_prefix))
      self._seqio_task = seqio_tasks.add_task(
          self.name, source=source, preprocessors=preprocessors, vocabulary=self.vocabulary,
          metric=self.metric, replace=True, inputs_eos=self.inputs_eos,
          targets_eos=self.targets_eos)
    return self._seqio_task

  @property
  def source(self) -> "InMemoryTask":
    return self


def _seqio_split(split: str, shuffle_files: bool, seed: Optional[int] = None, *,
                 task: InMemoryTask, keys: tuple[str, ...]) -> Any:
  from irl_lm.data import seqio_tasks  # pylint: disable=g-import-not-at-top
  return seqio_tasks.examples_dataset(task.examples(split), keys, shuffle_files, seed)


_TASKS: dict[str, InMemoryTask] = {}


def add_in_memory_task(name: str, *, load_split: Callable[[str], Sequence[Mapping[str, Any]]],
                       splits: Sequence[str], inputs_key: str, targets_key: str,
                       vocabulary: Vocabulary, metric: str, replace: bool,
                       **options: Any) -> InMemoryTask:
  """Adds an :class:`InMemoryTask`, or returns the registered one unless `replace`.

  Args:
    name, load_split, splits, inputs_key, targets_key, vocabulary, metric: see
      :class:`InMemoryTask`.
    replace: re-register a task already registered under `name`.
    **options: ``input_prefix``, ``inputs_eos``, ``targets_eos``, ``train_examples``.

  Returns:
    The registered task.
  """
  if name in _TASKS and not replace:
    if spec.recorded_metric(name) is None:
      spec.record_metric(name, metric)
    return _TASKS[name]
  if "train_examples" in options:
    options["train_examples"] = sources.check_train_examples(options["train_examples"])
  task = InMemoryTask(name=name, load_split=load_split, splits=tuple(splits),
                      inputs_key=inputs_key, targets_key=targets_key, vocabulary=vocabulary,
                      metric=metric, **options)
  _forget_seqio(name)
  _TASKS[name] = task
  spec.record_metric(name, metric)
  return task


def get(name: str) -> Optional[InMemoryTask]:
  """The in-memory task registered under `name`, or None."""
  return _TASKS.get(name)


def names() -> tuple[str, ...]:
  return tuple(_TASKS)


def _forget_seqio(name: str) -> None:
  seqio = sys.modules.get("seqio")  # only if loaded: forgetting never imports TensorFlow
  if seqio is not None and name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)


def is_registered(name: str) -> bool:
  """Whether `name` is an in-memory task or (seqio loaded) a seqio task."""
  seqio = sys.modules.get("seqio")
  return name in _TASKS or (seqio is not None and name in seqio.TaskRegistry.names())


def forget(name: str) -> None:
  """Removes `name` from both registries."""
  _TASKS.pop(name, None)
  _forget_seqio(name)
