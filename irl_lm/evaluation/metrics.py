"""Task metrics as pure functions of (references, predictions) strings."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeLsum")


def rouge(references: Sequence[str], predictions: Sequence[str],
          rouge_types: Sequence[str] = ROUGE_TYPES) -> dict[str, float]:
  """Mean ROUGE F-measures (×100) over examples, with rouge-score's stemming tokenizer.

  Args:
    references: N reference texts. predictions: N predicted texts.
    rouge_types: which ROUGE variants (rouge-score names).

  Returns:
    {rouge_type: mean F1 × 100} (ROUGE-Lsum splits summaries on newlines, as rouge-score does).
  """
  if len(references) != len(predictions):
    raise ValueError(f"{len(references)} references but {len(predictions)} predictions.")
  if not references:
    raise ValueError("rouge() needs at least one example.")
  scorer = rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=True)
  scores = [scorer.score(ref, pred) for ref, pred in zip(references, predictions)]
  return {t: float(100 * np.mean([s[t].fmeasure for s in scores])) for t in rouge_types}
