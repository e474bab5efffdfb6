"""What a task is before it is registered: its spec, and the settings its gin factory recorded.

Every task module (:mod:`irl_lm.data.gsm8k`, ...) declares a :class:`TaskSpec` (default name,
metric family, registration function) and a gin factory that calls :func:`configure`, e.g.::

  def gsm8k_task(name='gsm8k', data_dir=None, ...) -> str:
    return spec.configure(SPEC, name, data_dir=data_dir, ...)

:func:`configure` only records the settings and returns the name, so parsing a gin file needs
neither TensorFlow nor seqio. :mod:`irl_lm.data.registry` registers the task with the
recorded settings the first time the pipeline asks for it (and again when they change).

This module imports nothing heavy.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

from irl_lm.data import sources

METRIC_FAMILIES = ("rouge", "gsm8k", "translation")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """A task as the registry knows it before registering it.

  Attributes:
    name: the default task name (registered with default settings when first asked for).
    metric: the evaluator's metric family: 'rouge', 'gsm8k' or 'translation'.
    register: ``register(name, *, replace=False, **settings)`` -> the registered task (an
      :class:`irl_lm.data.tasks.InMemoryTask`, or a ``seqio.Task`` when `needs_seqio`); reads
      no file, and leaves a registered `name` alone unless `replace`.
    needs_seqio: the task is a seqio task (TFDS or streamed files): it needs the seqio extra.
  """
  name: str
  metric: str
  register: Callable[..., Any]
  needs_seqio: bool = False

  def __post_init__(self):
    if self.metric not in METRIC_FAMILIES:
      raise ValueError(f"task {self.name!r}: metric {self.metric!r} is not one of "
                       f"{METRIC_FAMILIES}.")


# Task name -> (spec, settings) last recorded by a gin factory.
_CONFIGURED: dict[str, tuple[TaskSpec, dict[str, Any]]] = {}
# Task name -> metric family of every task registered through a TaskSpec's register function.
_METRICS: dict[str, str] = {}


def configure(task_spec: TaskSpec, name: str, **settings: Any) -> str:
  """Records the settings a gin factory was called with; returns `name` (for ``train.task``).

  Args:
    task_spec: the task's spec.
    name: the task name to register (the spec's default name or another one).
    **settings: keyword arguments of ``task_spec.register``; None means "the default" and is
      left out, so a factory called without settings registers the defaults.

  Raises:
    ValueError: ``train_examples`` is given but not a whole number >= 1.

  Returns:
    `name`.
  """
  settings = {k: v for k, v in settings.items() if v is not None}
  if "train_examples" in settings:
    settings["train_examples"] = sources.check_train_examples(settings["train_examples"])
  _CONFIGURED[name] = (task_spec, settings)
  _METRICS[name] = task_spec.metric
  return name


def configured(name: str) -> Optional[tuple[TaskSpec, dict[str, Any]]]:
  """The (spec, settings) a factory recorded for `name`, or None."""
  return _CONFIGURED.get(name)


def configured_names() -> tuple[str, ...]:
  """Names a factory was called for, in first-call order."""
  return tuple(_CONFIGURED)


def record_metric(name: str, metric: str) -> None:
  """Remembers the metric family of a task registered under `name`."""
  _METRICS[name] = metric


def recorded_metric(name: str) -> Optional[str]:
  """The metric family recorded for `name` (registered or configured), or None."""
  return _METRICS.get(name)


def forget(name: str) -> None:
  """Drops what was recorded for `name` (its factory settings and metric)."""
  _CONFIGURED.pop(name, None)
  _METRICS.pop(name, None)


def as_list(values: Optional[Any]) -> Optional[list]:
  """`values` as a list (gin may give tuples), or None."""
  return None if values is None else list(values)


def as_tuple(values: Optional[Any]) -> Optional[tuple]:
  """`values` as a tuple (gin gives lists), or None."""
  return None if values is None else tuple(values)


def as_dict(values: Optional[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
  """`values` as a plain dict, or None when it is None or empty."""
  return dict(values) if values else None
