"""The list of irl_lm's tasks, their gin factories and metric families, and registration on use.

Tasks (one module of :mod:`irl_lm.data` each, holding its reader, ``register`` function,
:class:`~irl_lm.data.spec.TaskSpec` and gin factory):

============================  =====================  ===========  ==========================
task                          module                 metric       gin factory
============================  =====================  ===========  ==========================
``stdlib_docstrings``         stdlib_docstrings      rouge        stdlib_docstrings_task
``pypackages_docstrings``     pypackages_docstrings  rouge        pypackages_docstrings_task
``xsum``                      xsum                   rouge        xsum_task
``tldr``                      tldr                   rouge        tldr_task
``tldr_openai``               tldr                   rouge        tldr_openai_task
``gsm8k``                     gsm8k                  gsm8k        gsm8k_task
``wmt22_en_de``               wmt                    translation  wmt22_en_de_task
``arithmetic_word_problems``  arithmetic             gsm8k        arithmetic_task
``local_files``               local_files            rouge [1]_   local_files_task
``known_distribution``        known_distribution     rouge [2]_   known_distribution_task
============================  =====================  ===========  ==========================

.. [1] or the family its ``metric`` setting names (your own prompt/completion files).
.. [2] plus the exact metrics against its known teacher
   (:mod:`irl_lm.evaluation.known_distribution`).

How a task gets registered: a gin factory (``train.task = @gsm8k_task()``) only
records its settings (:func:`irl_lm.data.spec.configure`) and returns the name. The first time
the pipeline asks for a task (:func:`ensure_registered`, called by
:func:`irl_lm.data.pipeline.get_task`), it is registered with the settings its factory recorded
last, or with its defaults if it is one of the names above and no factory was called; later
calls with the same settings keep the registered task, other settings re-register it. Importing
:mod:`irl_lm.data.pipeline` registers every default task (registration reads no file).

Importing this module imports neither TensorFlow nor seqio (a configuration check never loads
them). In-memory tasks go to :mod:`irl_lm.data.tasks`'s registry (no seqio); the TFDS and WMT
tasks (``needs_seqio``) to seqio's, and asking for one without seqio installed raises
:class:`irl_lm.data.tasks.MissingExtraError` naming the ``seqio`` extra.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from irl_lm.data import arithmetic
from irl_lm.data import gsm8k
from irl_lm.data import known_distribution
from irl_lm.data import local_files
from irl_lm.data import pypackages_docstrings
from irl_lm.data import spec
from irl_lm.data import stdlib_docstrings
from irl_lm.data import tasks
from irl_lm.data import tldr
from irl_lm.data import wmt
from irl_lm.data import xsum

SPECS: tuple[spec.TaskSpec, ...] = (
    stdlib_docstrings.SPEC, xsum.SPEC, tldr.SPEC, tldr.OPENAI_SPEC, gsm8k.SPEC, wmt.SPEC,
    arithmetic.SPEC, pypackages_docstrings.SPEC, local_files.SPEC, known_distribution.SPEC)
"""Every irl_lm task, under its default name."""

TASK_NAMES: tuple[str, ...] = tuple(s.name for s in SPECS)

FACTORIES: tuple[Callable[..., str], ...] = (
    stdlib_docstrings.stdlib_docstrings_task, xsum.xsum_task, tldr.tldr_task,
    tldr.tldr_openai_task, gsm8k.gsm8k_task, wmt.wmt22_en_de_task, arithmetic.arithmetic_task,
    pypackages_docstrings.pypackages_docstrings_task, local_files.local_files_task,
    known_distribution.known_distribution_task)
"""The gin factories; :mod:`irl_lm.config` registers each with gin under its own name."""

# TFDS data set name (without config or version) -> what to download and where, for the
# pipeline's MissingDatasetError ({data_dir}: the TFDS data directory the task reads).
MANUAL_DOWNLOAD_HINTS: dict[str, str] = {"xsum": xsum.MANUAL_DOWNLOAD_HINT}

_DEFAULTS: dict[str, spec.TaskSpec] = {s.name: s for s in SPECS}
# Task name -> the settings it was registered with by ensure_registered.
_APPLIED: dict[str, dict[str, Any]] = {}


def metric_family(task_name: str) -> str:
  """The metric family of a task: 'rouge', 'gsm8k' or 'translation'.

  Args:
    task_name: a default task name, a name a gin factory was called with, or one registered
      through a task module's ``register`` (registered or not yet).

  Returns:
    The family the evaluator scores the task with; 'rouge' for a name irl_lm does not know.
  """
  recorded = spec.recorded_metric(task_name)
  if recorded is not None:
    return recorded
  default = _DEFAULTS.get(task_name)
  return default.metric if default is not None else "rouge"


def ensure_registered(task_name: str) -> bool:
  """Registers `task_name` if it is an irl_lm task whose settings are not applied.

  A default name no factory was called for is registered with its defaults unless a task of
  that name is registered already (which is then kept, whoever registered it). A name a factory
  was called for is (re-)registered unless it is registered with exactly those settings.

  Args:
    task_name: any name.

  Returns:
    True if the name is an irl_lm task (a default name, or one a factory was called with), now
    registered; False otherwise (the seqio registry is left alone).
  """
  entry = spec.configured(task_name)
  if entry is None and task_name not in _DEFAULTS:
    return False
  task_spec = entry[0] if entry is not None else _DEFAULTS[task_name]
  if task_spec.needs_seqio:
    tasks.require_seqio(f"task {task_name!r}")
  registered = tasks.is_registered(task_name)
  if entry is None:
    task_spec, settings = _DEFAULTS[task_name], {}
    if registered:
      _APPLIED.setdefault(task_name, settings)
      return True
  else:
    task_spec, settings = entry
    if registered and _APPLIED.get(task_name) == settings:
      return True
  task_spec.register(task_name, replace=registered, **settings)
  _APPLIED[task_name] = dict(settings)
  return True


def known_names() -> tuple[str, ...]:
  """The default task names, then those a factory was called for (registered or not)."""
  return TASK_NAMES + tuple(n for n in spec.configured_names() if n not in _DEFAULTS)


def register_all() -> tuple[str, ...]:
  """Registers every default task and every task a factory was called for (idempotent); the
  seqio tasks only when seqio is loaded already (else on first use), so this loads no
  TensorFlow.

  Returns:
    :func:`known_names`.
  """
  names = known_names()
  for name in names:
    entry = spec.configured(name)
    task_spec = entry[0] if entry is not None else _DEFAULTS[name]
    if not task_spec.needs_seqio or sys.modules.get("seqio") is not None:
      ensure_registered(name)
  return names


def forget(task_name: str) -> None:
  """Removes a task from the registries and drops its recorded settings (for tests)."""
  spec.forget(task_name)
  _APPLIED.pop(task_name, None)
  tasks.forget(task_name)
