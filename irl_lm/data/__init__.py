"""Data: seqio tasks, vocabularies and the batch pipeline.

* :mod:`irl_lm.data.stdlib_docstrings` - the built-in, download-free code -> docstring-summary
  data set extracted from the Python standard library (pure Python).
* :mod:`irl_lm.data.vocabularies` - the shipped SentencePiece model of the built-in task and
  T5's vocabulary (seqio imported lazily).
* :mod:`irl_lm.data.arithmetic` - the built-in GSM8k-shaped arithmetic word problems
  (generated from templates, pure Python).
* :mod:`irl_lm.data.gsm8k`, :mod:`irl_lm.data.tldr`, :mod:`irl_lm.data.wmt` - readers of the
  paper's data sets from local files (JSONL, TSV, sacrebleu's layout); :mod:`irl_lm.data.sources`
  holds what they share (the data root ``$IRL_LM_DATA_DIR``).
* :mod:`irl_lm.data.tasks` - registers the seqio tasks ``stdlib_docstrings``, ``xsum``,
  ``tldr``, ``tldr_openai``, ``gsm8k``, ``wmt22_en_de`` and ``arithmetic_word_problems`` on
  import (imports TensorFlow).
* :mod:`irl_lm.data.task_configs` - gin factories (``train.task = @gsm8k_task()``) that point a
  task at its data and vocabulary (imports nothing heavy).
* :mod:`irl_lm.data.pipeline` - ``get_batches``, ``get_examples``, ``get_vocabulary``
  (imports TensorFlow).

Importing this package itself imports nothing heavy; ``irl_lm.data.get_batches`` and the other
pipeline names below are loaded from :mod:`irl_lm.data.pipeline` on first access.
"""
import importlib
from typing import Any

_PIPELINE_NAMES = ("get_batches", "get_examples", "get_vocabulary", "get_dataset", "get_task",
                   "MissingDatasetError")

__all__ = list(_PIPELINE_NAMES)


def __getattr__(name: str) -> Any:
  """Lazily resolves the pipeline's public names (PEP 562) so TensorFlow loads only on use."""
  if name in _PIPELINE_NAMES:
    return getattr(importlib.import_module("irl_lm.data.pipeline"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
