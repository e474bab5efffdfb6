"""Data: one module per task, two registries, vocabularies and the batch pipeline.

* Task modules, each with its reader, its ``register`` function, its :class:`spec.TaskSpec` and
  its gin factory: :mod:`irl_lm.data.stdlib_docstrings` (the built-in, download-free code ->
  docstring-summary task from the Python standard library), :mod:`irl_lm.data.arithmetic` (the
  built-in GSM8k-shaped word problems), :mod:`irl_lm.data.xsum` (TFDS), :mod:`irl_lm.data.tldr`
  (TFDS ``reddit_tifu`` and the OpenAI JSONL), :mod:`irl_lm.data.gsm8k` (JSONL) and
  :mod:`irl_lm.data.wmt` (TSV + sacrebleu's files). Importing them imports no TensorFlow.
* :mod:`irl_lm.data.tasks` - in-memory tasks (no seqio); :mod:`irl_lm.data.registry` - the task
  list, ``FACTORIES`` (registered with gin by :mod:`irl_lm.config`), ``metric_family`` and
  registration on first use; the TFDS and WMT tasks are seqio tasks (the ``seqio`` extra).
* :mod:`irl_lm.data.spec` - task specs and the settings the gin factories record.
* :mod:`irl_lm.data.sources` - the data root ``$IRL_LM_DATA_DIR``, JSONL reading, train subsets;
  :mod:`irl_lm.data.seqio_tasks` - the seqio building blocks (TensorFlow).
* :mod:`irl_lm.data.vocabulary` - the vocabulary interface and SentencePiece;
  :mod:`irl_lm.data.vocabularies` - the shipped SentencePiece models and T5's;
  :mod:`irl_lm.data.calculator` - GSM8k's ``<<expr=result>>`` arithmetic.
* :mod:`irl_lm.data.pipeline` - ``get_batches``, ``get_examples``, ``get_vocabulary``: numpy for
  in-memory tasks, :mod:`irl_lm.data.seqio_pipeline` (TensorFlow) for seqio tasks.

Importing this package itself imports nothing heavy; ``irl_lm.data.get_batches`` and the other
pipeline names below are loaded from :mod:`irl_lm.data.pipeline` on first access.
"""
import importlib
from typing import Any

_PIPELINE_NAMES = ("get_batches", "get_examples", "get_vocabulary", "get_dataset", "get_task",
                   "model_feature_lengths", "MissingDatasetError")

__all__ = list(_PIPELINE_NAMES)


def __getattr__(name: str) -> Any:
  """Lazily resolves the pipeline's public names (PEP 562)."""
  if name in _PIPELINE_NAMES:
    return getattr(importlib.import_module("irl_lm.data.pipeline"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
