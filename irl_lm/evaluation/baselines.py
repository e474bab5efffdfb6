"""Trivial baselines that every evaluation is shown next to: does the model beat them?

Each baseline is chosen on the *train* split and then scored on exactly the evaluated examples
with the same metric code as the model (`metrics.score_predictions`):

* ``constant``: one output for every input. For 'rouge' and 'translation' the train target
  with the highest mean primary score (ROUGE-1, BLEU) against a seeded sample of train targets,
  among a seeded sample of candidates; for 'gsm8k' the most frequent final answer, written
  ``#### <n>``.
* ``name_template`` (inputs that are a function's source, e.g. the docstring tasks): the best on
  train of a few templates of the function name's words, e.g. "Return the <words>.".
* ``numbers_rule`` ('gsm8k'): the best on train of a few rules on the question's numbers
  (sum, product of the first two, first × second + third × fourth, ...), written
  ``#### <n>``.
* ``copy_input`` (other 'rouge' / 'translation' inputs): the first N words of the input, N
  chosen on train.

Everything here is a pure function of texts; the evaluator reads the train texts and caches
the fitted baselines per (task, metric).
"""
from __future__ import annotations

import collections
import dataclasses
import decimal
import re
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from irl_lm.evaluation import metrics as metrics_lib

# The corpus score each family's baselines are chosen and compared on.
PRIMARY_CORPUS_SCORE = {"rouge": "rouge1", "gsm8k": "accuracy", "translation": "bleu"}

NAME_TEMPLATES = ("Return the {words}.", "Return {words}.", "{Words}.", "Get the {words}.",
                  "Return True if {words}.")
COPY_LENGTHS = (5, 10, 20, 40, 80)
# Share of train inputs that must be a function's source for `name_template` to apply.
FUNCTION_INPUT_SHARE = 0.9


@dataclasses.dataclass(frozen=True)
class Baseline:
  """A fitted baseline.

  Attributes:
    name: 'constant', 'name_template', 'numbers_rule' or 'copy_input'.
    kind: 'output' (the same output for every input) or 'rule'.
    description: the constant output, or the rule in words.
    predict: input text -> output text.
  """
  name: str
  kind: str
  description: str
  predict: Callable[[str], str]


def primary_corpus_score(metric: str) -> str:
  """'rouge1', 'accuracy' or 'bleu': the corpus score a metric family's baselines are
  compared on."""
  if metric not in PRIMARY_CORPUS_SCORE:
    raise ValueError(f"unknown metric family {metric!r}: use {sorted(PRIMARY_CORPUS_SCORE)}.")
  return PRIMARY_CORPUS_SCORE[metric]


def corpus_score(metric: str, references: Sequence[str], predictions: Sequence[str], *,
                 tokenize: str = metrics_lib.DEFAULT_TOKENIZE) -> float:
  """The primary corpus score of `predictions` (`score_predictions`, 0-100)."""
  corpus, _ = metrics_lib.score_predictions(metric, references, predictions, tokenize=tokenize)
  return corpus[primary_corpus_score(metric)]


def _best(metric: str, candidates: Mapping[str, Sequence[str]], references: Sequence[str],
          tokenize: str) -> str:
  """The key of `candidates` (name -> N predictions) with the highest primary score; ties go
  to the first."""
  if metric == "rouge":  # ROUGE-1 alone: the other types cost more and do not decide
    scores = {k: float(np.mean([s["rouge1"] for s in metrics_lib.rouge_per_example(
        references, p, ("rouge1",))])) for k, p in candidates.items()}
  else:
    scores = {k: corpus_score(metric, references, p, tokenize=tokenize)
              for k, p in candidates.items()}
  return max(scores, key=lambda k: (scores[k], -list(scores).index(k)))


# ------------------------------------------------------------------------------- constant output

def format_answer(value: str) -> str:
  """A final answer as GSM8k writes it: ``'#### 72'``."""
  return f"{metrics_lib.GSM8K_MARKER} {value}"


def most_frequent_answer(targets: Sequence[str]) -> Optional[str]:
  """The most frequent final number of GSM8k-style `targets` (first seen wins ties); None
  when no target has one."""
  counts = collections.Counter(
      a for a in (metrics_lib.gsm8k_final_number(t) for t in targets) if a is not None)
  return counts.most_common(1)[0][0] if counts else None


def best_constant(metric: str, targets: Sequence[str], *, num_candidates: int = 300,
                  num_references: int = 300, seed: int = 0,
                  tokenize: str = metrics_lib.DEFAULT_TOKENIZE) -> str:
  """The constant output with the best primary score on train `targets`.

  Args:
    metric: 'rouge', 'translation' or 'gsm8k'.
    targets: train targets.
    num_candidates: for 'rouge' / 'translation', a seeded sample of this many distinct targets
      is tried ...
    num_references: ... each against a seeded sample of this many targets.
    seed: the sampling seed.
    tokenize: sacrebleu tokenizer for BLEU.

  Returns:
    The output ('gsm8k': ``'#### <most frequent final answer>'``).
  """
  if not targets:
    raise ValueError("best_constant needs at least one train target.")
  if metric == "gsm8k":
    return format_answer(most_frequent_answer(targets) or "0")
  rng = np.random.default_rng(seed)
  distinct = list(dict.fromkeys(targets))
  candidates = [distinct[i] for i in sorted(rng.permutation(len(distinct))[:num_candidates])]
  references = [targets[i] for i in sorted(rng.permutation(len(targets))[:num_references])]
  if metric == "rouge":
    means = metrics_lib.rouge1_matrix(candidates, references).mean(axis=1)
    return candidates[int(np.argmax(means))]
  return _best(metric, {c: [c] * len(references) for c in candidates}, references, tokenize)


# ---------------------------------------------------------------------------------- input rules

_DEF = re.compile(r"^\s*(?:async\s+)?def\s+(\w+)", re.MULTILINE)


def function_name(source: str) -> Optional[str]:
  """The name of the first function defined in `source` (None without a ``def``)."""
  match = _DEF.search(source)
  return match.group(1) if match else None


def name_words(name: str) -> list[str]:
  """``'_getMandatory_release2'`` -> ``['get', 'mandatory', 'release2']``: snake_case and
  camelCase split, lower case."""
  spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
  return [w.lower() for w in spaced.split("_") if w]


def name_template_output(template: str, source: str) -> str:
  """`template` ('{words}', '{Words}': capitalised) filled with the function name's words
  (empty words when `source` has no function)."""
  name = function_name(source)
  words = " ".join(name_words(name)) if name else ""
  return template.format(words=words, Words=words[:1].upper() + words[1:])


def copy_words(text: str, n: int) -> str:
  """The first `n` whitespace-separated words of `text`."""
  return " ".join(text.split()[:n])


def question_numbers(question: str) -> list[decimal.Decimal]:
  """The numbers of a word problem in order (`metrics.gsm8k_final_number`'s number syntax)."""
  out = []
  for token in metrics_lib.NUMBER_PATTERN.findall(question):
    value = metrics_lib.normalise_number(token)
    if value is not None:
      out.append(decimal.Decimal(value))
  return out


def _product(xs: Sequence[decimal.Decimal]) -> decimal.Decimal:
  out = decimal.Decimal(1)
  for x in xs:
    out *= x
  return out


NUMBER_RULES: dict[str, Callable[[Sequence[decimal.Decimal]], decimal.Decimal]] = {
    "sum of all numbers": sum,
    "product of all numbers": _product,
    "first x second": lambda xs: _product(xs[:2]),
    "first + second": lambda xs: sum(xs[:2]),
    "first - second": lambda xs: xs[0] - xs[1] if len(xs) > 1 else xs[0],
    "second - first": lambda xs: xs[1] - xs[0] if len(xs) > 1 else xs[0],
    "first / second": lambda xs: xs[0] / xs[1] if len(xs) > 1 and xs[1] else xs[0],
    "first x second x third": lambda xs: _product(xs[:3]),
    "first x second + third x fourth": lambda xs: _product(xs[:2]) + (
        _product(xs[2:4]) if len(xs) > 2 else 0),
    "(first + second) x third": lambda xs: sum(xs[:2]) * (xs[2] if len(xs) > 2 else 1),
    "first number": lambda xs: xs[0],
    "last number": lambda xs: xs[-1],
}


def number_rule_output(rule: str, question: str) -> str:
  """``'#### <rule applied to the question's numbers>'`` ('#### 0' without numbers)."""
  xs = question_numbers(question)
  if not xs:
    return format_answer("0")
  with decimal.localcontext() as context:
    context.prec = 28
    value = NUMBER_RULES[rule](xs)
  return format_answer(metrics_lib.normalise_number(str(value)) or "0")


def _rules(metric: str, inputs: Sequence[str]) -> dict[str, dict[str, Callable[[str], str]]]:
  """The rule families that mean something for these inputs: name -> {rule text: predict}."""
  if metric == "gsm8k":
    return {"numbers_rule": {r: (lambda q, r=r: number_rule_output(r, q)) for r in NUMBER_RULES}}
  functions = sum(function_name(x) is not None for x in inputs)
  if inputs and functions >= FUNCTION_INPUT_SHARE * len(inputs):
    return {"name_template": {f'"{t}" of the function name': (
        lambda x, t=t: name_template_output(t, x)) for t in NAME_TEMPLATES}}
  return {"copy_input": {f"the first {n} words of the input": (lambda x, n=n: copy_words(x, n))
                         for n in COPY_LENGTHS}}


def fit(metric: str, inputs: Sequence[str], targets: Sequence[str], *, seed: int = 0,
        num_candidates: int = 300, num_references: int = 300,
        tokenize: str = metrics_lib.DEFAULT_TOKENIZE) -> list[Baseline]:
  """Chooses the baselines on train examples.

  Args:
    metric: the task's metric family.
    inputs, targets: train examples (e.g. a seeded sample of a few hundred).
    seed, num_candidates, num_references: see `best_constant`.
    tokenize: sacrebleu tokenizer for BLEU.

  Returns:
    ``constant`` and then the best rule of each family that applies.
  """
  if len(inputs) != len(targets):
    raise ValueError(f"fit: {len(inputs)} inputs but {len(targets)} targets.")
  constant = best_constant(metric, targets, num_candidates=num_candidates,
                           num_references=num_references, seed=seed, tokenize=tokenize)
  out = [Baseline("constant", "output", constant, lambda _, c=constant: c)]
  for name, rules in _rules(metric, inputs).items():
    predictions = {text: [predict(x) for x in inputs] for text, predict in rules.items()}
    chosen = _best(metric, predictions, targets, tokenize)
    out.append(Baseline(name, "rule", chosen, rules[chosen]))
  return out


def score(baselines: Sequence[Baseline], metric: str, inputs: Sequence[str],
          references: Sequence[str], *, tokenize: str = metrics_lib.DEFAULT_TOKENIZE
          ) -> dict[str, dict[str, Any]]:
  """Each baseline's corpus scores on the evaluated examples.

  Returns:
    {name: {'output' or 'rule': its description, 'scores': corpus scores,
    'repeated_3gram_rate': float}}.
  """
  out = {}
  for b in baselines:
    predictions = [b.predict(x) for x in inputs]
    corpus, _ = metrics_lib.score_predictions(metric, references, predictions,
                                              tokenize=tokenize)
    out[b.name] = {b.kind: b.description, "scores": corpus,
                   "repeated_3gram_rate": metrics_lib.repeated_3gram_rate(predictions)}
  return out


def compare(model_scores: Mapping[str, float], scored: Mapping[str, Mapping[str, Any]],
            metric: str) -> tuple[dict[str, Any], float]:
  """The best baseline on the primary score and the model's margin over it.

  Args:
    model_scores: the model's corpus scores.
    scored: `score`'s result (non-empty).
    metric: the metric family.

  Returns:
    ({'name', 'score': its primary score, 'metric': the score's name}, model − best).
  """
  key = primary_corpus_score(metric)
  name = max(scored, key=lambda n: scored[n]["scores"][key])
  best = float(scored[name]["scores"][key])
  return {"name": name, "score": best, "metric": key}, float(model_scores[key]) - best
