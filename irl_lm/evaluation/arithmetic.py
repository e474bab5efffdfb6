"""Exact diversity on the built-in arithmetic task: which valid solution orders a model writes.

Every question of :mod:`irl_lm.data.arithmetic` has 2-3 valid worked solutions (solution
orders); the generator keeps them all (:class:`~irl_lm.data.arithmetic.SolutionRecord`), so
diversity on this task is measured exactly instead of through Self-BLEU:

* a sample is a *valid solution* when, after whitespace normalisation (runs of spaces, tabs and
  newlines become one space, ends stripped), it equals one of the question's valid solution
  texts; its *order* is that solution's index. The lenient ``'calculations'`` criterion instead
  compares the sequence of calculator annotations ``<<expr=result>>`` and the ``#### final``
  answer, ignoring the words around them, and ``'structure'`` the whitespace-normalised text
  with every number replaced by ``#`` (the order a sample follows even when its arithmetic or
  copied numbers are wrong; the figures under ``structure`` use it). Under both lenient
  criteria the first matching order wins;
* accuracy is the final answer's (GSM8k's ``####`` number); its standard error treats questions
  as independent and the K samples of a question as not: the standard deviation (ddof 0) of the
  per-question accuracies over sqrt(N), which for K = 1 is the binomial sqrt(p(1-p)/N);
* per question: the number of distinct valid orders among its K samples, and the (plug-in,
  nats) entropy of its valid samples' orders, against the data's: the entropy of the order
  distribution of the question's template in the train targets, and what a sampler drawing
  from exactly that distribution would show with the same number of valid samples (its
  expected plug-in entropy and expected distinct orders, computed exactly);
* within-question AUROC: for each question with both correct and incorrect samples, the
  probability that a correct sample scores higher than an incorrect one (ties count one half;
  Mann-Whitney U / (n_correct n_incorrect)), averaged over those questions; for the summed
  implicit reward and, as a baseline, for log pi. With gamma = 1 the summed implicit reward is
  log pi(y|x) + V(s_0), and V(s_0) is the same for every sample of a question, so the two
  AUROCs agree (up to float rounding); they can differ only for gamma < 1.

The metric functions are pure (numbers and texts in, numbers out); :class:`Reference` reads
the task's solution records and adapts the Evaluator's record dicts.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import re
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import scipy.stats

from irl_lm.data import arithmetic as arithmetic_data
from irl_lm.evaluation import metrics as metrics_lib

CRITERIA = ("text", "calculations", "structure")
_ANNOTATION = re.compile(r"<<([^=>]*)=([^>]*)>>")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")

Orders = Sequence[Sequence[Optional[int]]]
"""Per question, the order of each of its samples (None: not a valid solution)."""


def normalise_whitespace(text: str) -> str:
  """`text` with every run of whitespace replaced by one space, ends stripped."""
  return " ".join(text.split())


def calculations(text: str) -> tuple[tuple[tuple[str, str], ...], Optional[str]]:
  """The calculator annotations ``(expr, result)`` in order, and the ``####`` final number."""
  return (tuple((e.strip(), r.strip()) for e, r in _ANNOTATION.findall(text)),
          metrics_lib.gsm8k_final_number(text))


def solution_order(text: str, solutions: Sequence[str], criterion: str = "text"
                   ) -> Optional[int]:
  """The index of the first of `solutions` that `text` matches under `criterion`, else None.

  Args:
    text: a model output.
    solutions: the question's valid solution texts, by order.
    criterion: 'text' (equal after :func:`normalise_whitespace`), 'calculations' (same
      annotations in the same order and the same final number; an output without any
      annotation matches nothing) or 'structure' (equal after whitespace normalisation with
      every number replaced by '#').
  """
  if criterion == "text":
    key, keys = normalise_whitespace(text), [normalise_whitespace(s) for s in solutions]
  elif criterion == "structure":
    mask = lambda t: normalise_whitespace(_NUMBER.sub("#", t))
    key, keys = mask(text), [mask(s) for s in solutions]
  elif criterion == "calculations":
    key, keys = calculations(text), [calculations(s) for s in solutions]
    if not key[0]:
      return None
  else:
    raise ValueError(f"unknown criterion {criterion!r}: use one of {CRITERIA}.")
  return next((i for i, k in enumerate(keys) if k == key), None)


def accuracy_with_se(correct_NK: Any) -> tuple[float, float]:
  """Mean accuracy and its standard error, in percent.

  Args:
    correct_NK: bool/0-1 array [N questions, K samples].

  Returns:
    (100 * mean, 100 * std_ddof0(per-question means) / sqrt(N)); for K = 1 the SE is the
    binomial sqrt(p(1-p)/N).
  """
  per_question = np.asarray(correct_NK, dtype=np.float64).mean(axis=1)
  return (100.0 * float(per_question.mean()),
          100.0 * float(per_question.std() / np.sqrt(len(per_question))))


def valid_rate(orders: Orders) -> float:
  """Percent of all samples that are valid solutions."""
  flat = [o for row in orders for o in row]
  return 100.0 * sum(o is not None for o in flat) / len(flat)


def distinct_valid_orders(orders: Orders) -> np.ndarray:
  """Per question, how many different valid orders its samples use: int [N]."""
  return np.array([len({o for o in row if o is not None}) for row in orders])


def plugin_entropy(counts: Sequence[float]) -> float:
  """Entropy in nats of the empirical distribution `counts` (0 for a single order)."""
  return float(scipy.stats.entropy(counts)) if sum(counts) else 0.0


def expected_plugin_entropy(probs: Sequence[float], n: int) -> float:
  """E[plug-in entropy of n draws from `probs`] (nats), exact over every count vector."""
  return _expected_plugin_entropy(tuple(float(p) for p in probs), int(n))


@functools.lru_cache(maxsize=256)  # a handful of (template distribution, n) pairs per split
def _expected_plugin_entropy(probs: tuple[float, ...], n: int) -> float:
  if n == 0:
    return 0.0
  vectors = [list(c) + [n - sum(c)] for c in itertools.product(range(n + 1), repeat=len(probs) - 1)
             if sum(c) <= n]
  pmf = scipy.stats.multinomial.pmf(np.array(vectors), n, np.array(probs))
  return float(sum(p * plugin_entropy(v) for p, v in zip(pmf, vectors)))


def expected_distinct(probs: Sequence[float], n: int) -> float:
  """E[number of distinct orders among n draws from `probs`] = sum_j 1 - (1 - p_j)^n."""
  return float(np.sum(1.0 - (1.0 - np.asarray(probs, dtype=np.float64)) ** n))


def order_diversity(orders: Orders, data_probs: Sequence[Sequence[float]]) -> dict[str, Any]:
  """Produced order diversity against the data's, per question, averaged.

  Args:
    orders: per question its samples' orders (None: invalid sample).
    data_probs: per question the order distribution of its template in the train targets.

  Returns:
    'distinct_valid_orders' (mean over all questions, 0 for one without a valid sample) and
    'data_distinct_valid_orders' (the expectation for draws from the data distribution with
    each question's number of valid samples); over the 'order_entropy_questions' questions with
    a valid sample: 'order_entropy', 'data_order_entropy' (the data distribution's entropy) and
    'data_order_entropy_at_n' (its expected plug-in entropy at each question's number of valid
    samples); entropies None when no question has a valid sample.
  """
  valid = [[o for o in row if o is not None] for row in orders]
  entropies, data_entropies, data_at_n = [], [], []
  for row, probs in zip(valid, data_probs):
    if row:
      entropies.append(plugin_entropy(np.bincount(row, minlength=len(probs))))
      data_entropies.append(plugin_entropy(probs))
      data_at_n.append(expected_plugin_entropy(probs, len(row)))
  mean = lambda values: float(np.mean(values)) if values else None
  return {
      "distinct_valid_orders": float(np.mean(distinct_valid_orders(orders))),
      "data_distinct_valid_orders": float(np.mean(
          [expected_distinct(p, len(row)) for row, p in zip(valid, data_probs)])),
      "order_entropy": mean(entropies), "data_order_entropy": mean(data_entropies),
      "data_order_entropy_at_n": mean(data_at_n), "order_entropy_questions": len(entropies)}


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
  """P(score of a positive > score of a negative), ties one half (Mann-Whitney U / n1 n0)."""
  u = scipy.stats.mannwhitneyu(positive, negative, alternative="two-sided").statistic
  return float(u) / (len(positive) * len(negative))


def within_question_auroc(scores_NK: Any, correct_NK: Any) -> tuple[Optional[float], int]:
  """Mean over questions of the AUROC of `scores` for correct vs incorrect samples.

  Args:
    scores_NK: float [N, K] (summed implicit reward, log pi, ...).
    correct_NK: bool [N, K].

  Returns:
    (mean AUROC over the questions with both correct and incorrect samples or None if there
    are none, the number of those questions).
  """
  values = []
  for scores, correct in zip(np.asarray(scores_NK, np.float64), np.asarray(correct_NK, bool)):
    if correct.any() and not correct.all():
      values.append(auroc(scores[correct], scores[~correct]))
  return (float(np.mean(values)) if values else None), len(values)


def samples_summary(texts: Sequence[Sequence[str]], correct_NK: Any, rewards_NK: Any,
                    log_probs_NK: Any, solutions: Sequence[Sequence[str]],
                    data_probs: Sequence[Sequence[float]]) -> dict[str, Any]:
  """Every figure of the module docstring for K samples per question.

  Args:
    texts: per question its K sample texts.
    correct_NK: bool [N, K], final answer correct.
    rewards_NK, log_probs_NK: float [N, K] summed implicit reward and log pi of each sample.
    solutions: per question its valid solution texts, by order.
    data_probs: per question its template's order distribution in the train targets.

  Returns:
    'accuracy', 'accuracy_se', 'valid_rate' (percent), 'valid_rate_calculations', the keys of
    :func:`order_diversity`, 'reward_auroc', 'logprob_auroc', 'auroc_questions',
    'num_questions', 'samples_per_input', and 'structure': 'valid_rate' and the keys of
    :func:`order_diversity` under the 'structure' criterion.
  """
  orders, lenient, structure = ([[solution_order(t, sols, criterion) for t in row]
                                 for row, sols in zip(texts, solutions)] for criterion in CRITERIA)
  accuracy, se = accuracy_with_se(correct_NK)
  reward_auroc, questions = within_question_auroc(rewards_NK, correct_NK)
  logprob_auroc, _ = within_question_auroc(log_probs_NK, correct_NK)
  return {"accuracy": accuracy, "accuracy_se": se, "valid_rate": valid_rate(orders),
          "valid_rate_calculations": valid_rate(lenient), **order_diversity(orders, data_probs),
          "reward_auroc": reward_auroc, "logprob_auroc": logprob_auroc,
          "auroc_questions": questions, "num_questions": len(texts),
          "samples_per_input": len(texts[0]) if texts else 0,
          "structure": {"valid_rate": valid_rate(structure),
                        **order_diversity(structure, data_probs)}}


def outputs_summary(texts: Sequence[str], correct: Sequence[bool],
                    solutions: Sequence[Sequence[str]]) -> dict[str, Any]:
  """One output per question (greedy, greedy_calc, ...): 'accuracy', 'accuracy_se' (binomial),
  'valid_rate', 'valid_rate_calculations', 'valid_rate_structure' (percent), 'order_counts'
  and 'structure_order_counts' (outputs per order index, under 'text' and 'structure')."""
  orders, lenient, structure = ([[solution_order(t, sols, criterion)]
                                 for t, sols in zip(texts, solutions)] for criterion in CRITERIA)
  accuracy, se = accuracy_with_se(np.asarray(correct, bool)[:, None])
  count = lambda rows: [int(c) for c in np.bincount(
      [row[0] for row in rows if row[0] is not None],
      minlength=max(map(len, solutions), default=0))]
  return {"accuracy": accuracy, "accuracy_se": se, "valid_rate": valid_rate(orders),
          "valid_rate_calculations": valid_rate(lenient),
          "valid_rate_structure": valid_rate(structure), "order_counts": count(orders),
          "structure_order_counts": count(structure), "num_questions": len(texts)}


@dataclasses.dataclass
class Reference:
  """The arithmetic task's solution records for one split, and its train order statistics.

  Attributes:
    split: the evaluated split.
    settings: the task's generation settings (:func:`irl_lm.data.arithmetic.task_settings`).
  """
  split: str
  settings: Mapping[str, Any]

  @functools.cached_property
  def records(self) -> dict[str, arithmetic_data.SolutionRecord]:
    """Question -> its record."""
    return {r.question: r for r in arithmetic_data.solution_records(
        self.split, self.settings["sizes"], self.settings["seed"])}

  @functools.cached_property
  def data_probs(self) -> dict[str, list[float]]:
    """Template -> the distribution of the target orders in the train examples."""
    counts = arithmetic_data.train_order_counts(**self.settings)
    return {t: [c / max(sum(by_order.values()), 1) for _, c in sorted(by_order.items())]
            for t, by_order in counts.items()}

  def _matched(self, records: Sequence[Mapping[str, Any]]
               ) -> tuple[list[Mapping[str, Any]], list[arithmetic_data.SolutionRecord], int]:
    found = [(r, self.records.get(r["input"])) for r in records]
    pairs = [(r, s) for r, s in found if s is not None]
    return [r for r, _ in pairs], [s for _, s in pairs], len(records) - len(pairs)

  def outputs_summary(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`outputs_summary` of `Evaluator.evaluate` records ('input', 'output', 'scores'),
    plus 'unmatched_questions' (inputs that are not questions of this split)."""
    matched, solutions, unmatched = self._matched(records)
    summary = outputs_summary([r["output"] for r in matched],
                              [r["scores"]["correct"] > 0 for r in matched],
                              [s.solutions for s in solutions]) if matched else {}
    return {**summary, "unmatched_questions": unmatched}

  def samples_summary(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`samples_summary` of `Evaluator.diversity` records (each 'input' and 'samples'
    with 'output', 'scores', 'implicit_reward', 'log_prob'), plus 'unmatched_questions'."""
    matched, solutions, unmatched = self._matched(records)
    if not matched:
      return {"unmatched_questions": unmatched}
    field = lambda name: [[s[name] for s in r["samples"]] for r in matched]
    summary = samples_summary(
        field("output"), [[s["scores"]["correct"] > 0 for s in r["samples"]] for r in matched],
        field("implicit_reward"), field("log_prob"), [s.solutions for s in solutions],
        [self.data_probs[s.template] for s in solutions])
    return {**summary, "unmatched_questions": unmatched}


def reference_for(task: str, split: str) -> Optional[Reference]:
  """The :class:`Reference` of `split` when `task` is the built-in arithmetic task, else None
  (nothing is generated until a summary asks for it)."""
  settings = arithmetic_data.task_settings(task)
  return None if settings is None else Reference(split, settings)
