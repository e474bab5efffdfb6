"""Task and diversity metrics as pure functions of strings (and of numpy arrays for entropy).

Task scores (all on a 0-100 scale):

* :func:`rouge` / :func:`rouge_per_example` - ROUGE-1/2/Lsum F-measure (rouge-score, stemming;
  sentences split first, so ROUGE-Lsum is sentence-level).
* :func:`bleu` / :func:`chrf` - corpus BLEU and chrF (sacrebleu, one reference per example);
  :func:`sentence_bleu_scores` / :func:`sentence_chrf_scores` per example.
* :func:`gsm8k_accuracy` - exact match of the final number (:func:`gsm8k_final_number`:
  the number after the last ``####``, else the last number outside calculator annotations;
  commas, ``$``, a trailing period and trailing decimal zeros are ignored, signs kept).

Diversity (docs/design.md#diversity; always report K, temperature and tokenisation with the number):

* :func:`self_bleu` - for each input, every one of its K samples is scored with sacrebleu's
  sentence BLEU (exponential smoothing, effective order) against the other K - 1 samples as
  references; mean over samples, then over inputs. 100 = all samples identical, 0 = no shared
  words. Lower is more diverse.
* :func:`distinct_n` - distinct n-grams / all n-grams over a set of texts (0-1).
* :func:`mean_token_entropy` - mean policy entropy (nats) over real output tokens.
* :func:`repeated_3gram_rate` - share of outputs with a word 3-gram occurring twice (looping).

Tokenisation for BLEU, Self-BLEU and distinct-n is sacrebleu's (``'13a'`` by default, the
standard for BLEU; ``'intl'``, ``'zh'``, ``'char'``, ``'none'`` ... also work).
"""
from __future__ import annotations

import decimal
import functools
import re
from typing import Any, Callable, Optional, Sequence

import numpy as np
import sacrebleu
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeLsum")
DEFAULT_TOKENIZE = "13a"


def _check_pairs(references: Sequence[str], predictions: Sequence[str], name: str) -> None:
  if len(references) != len(predictions):
    raise ValueError(f"{name}: {len(references)} references but {len(predictions)} predictions.")
  if not references:
    raise ValueError(f"{name}() needs at least one example.")


# A sentence ends at '.', '!' or '?' (and any closing quotes or brackets) before whitespace,
# except after a single-letter initial or 'e.g.' / 'i.e.'. (nltk's sentence tokenizer would need
# data that is not installed.)
_SENTENCE_END = re.compile(r"(\S*[.!?]['\")\]]*)\s+")
_NOT_AN_END = re.compile(r"^(?:\W*[A-Za-z]\.|e\.g\.|i\.e\.)$")


def split_sentences(text: str) -> str:
  """`text` with one sentence per line, as ROUGE-Lsum needs (T5's evaluation also puts a
  newline between sentences first). Existing newlines are kept."""
  def end(match: re.Match) -> str:
    word = match.group(1)
    return word + (" " if _NOT_AN_END.match(word) else "\n")
  return "\n".join(_SENTENCE_END.sub(end, line.strip()) for line in text.strip().splitlines())


def rouge_per_example(references: Sequence[str], predictions: Sequence[str],
                      rouge_types: Sequence[str] = ROUGE_TYPES) -> list[dict[str, float]]:
  """ROUGE F-measures (x100) of each example, with rouge-score's stemming tokenizer.

  References and predictions are split into sentences first (`split_sentences`), so ROUGE-Lsum
  is the summary-level LCS over sentences (rouge-score splits on newlines only); ROUGE-1/2/L
  ignore the newlines.

  Args:
    references: N reference texts.
    predictions: N predicted texts.
    rouge_types: rouge-score names.

  Returns:
    N dicts ``{rouge_type: F1 x 100}``.
  """
  _check_pairs(references, predictions, "rouge")
  scorer = rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=True)
  return [{t: 100.0 * s[t].fmeasure for t in rouge_types}
          for s in (scorer.score(split_sentences(ref), split_sentences(pred))
                    for ref, pred in zip(references, predictions))]


def rouge(references: Sequence[str], predictions: Sequence[str],
          rouge_types: Sequence[str] = ROUGE_TYPES) -> dict[str, float]:
  """Mean ROUGE F-measures (x100) over examples, with rouge-score's stemming tokenizer.

  Args:
    references: N reference texts. predictions: N predicted texts.
    rouge_types: which ROUGE variants (rouge-score names).

  Returns:
    {rouge_type: mean F1 x 100}; see `rouge_per_example`.
  """
  scores = rouge_per_example(references, predictions, rouge_types)
  return {t: float(np.mean([s[t] for s in scores])) for t in rouge_types}


def rouge1_matrix(candidates: Sequence[str], references: Sequence[str]) -> np.ndarray:
  """ROUGE-1 F-measure (x100) of every candidate against every reference, each text tokenised
  once (rouge-score's stemming tokenizer and n-gram scoring, as `rouge_per_example`).

  Returns:
    float64 [len(candidates), len(references)].
  """
  scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
  grams = lambda text: rouge_scorer._create_ngrams(  # pylint: disable=protected-access
      scorer._tokenizer.tokenize(text), 1)  # pylint: disable=protected-access
  refs = [grams(r) for r in references]
  out = np.zeros([len(candidates), len(references)])
  for i, candidate in enumerate(candidates):
    c = grams(candidate)
    out[i] = [rouge_scorer._score_ngrams(r, c).fmeasure  # pylint: disable=protected-access
              for r in refs]
  return 100.0 * out


def bleu(references: Sequence[str], predictions: Sequence[str], *,
         tokenize: str = DEFAULT_TOKENIZE) -> float:
  """Corpus BLEU (sacrebleu defaults: 4-grams, exponential smoothing, one reference each).

  Args:
    references: N reference texts. predictions: N predicted texts.
    tokenize: sacrebleu tokenizer name.

  Returns:
    BLEU in [0, 100].
  """
  _check_pairs(references, predictions, "bleu")
  return float(sacrebleu.corpus_bleu(list(predictions), [list(references)],
                                     tokenize=tokenize).score)


def chrf(references: Sequence[str], predictions: Sequence[str]) -> float:
  """Corpus chrF (sacrebleu defaults: character 6-grams, beta 2, no word n-grams).

  Args:
    references: N reference texts. predictions: N predicted texts.

  Returns:
    chrF in [0, 100].
  """
  _check_pairs(references, predictions, "chrf")
  return float(sacrebleu.corpus_chrf(list(predictions), [list(references)]).score)


def sentence_bleu_scores(references: Sequence[str], predictions: Sequence[str], *,
                         tokenize: str = DEFAULT_TOKENIZE) -> list[float]:
  """Sentence BLEU of each example (exponential smoothing, effective order), in [0, 100]."""
  _check_pairs(references, predictions, "sentence_bleu")
  return [float(sacrebleu.sentence_bleu(p, [r], tokenize=tokenize).score)
          for r, p in zip(references, predictions)]


def sentence_chrf_scores(references: Sequence[str], predictions: Sequence[str]) -> list[float]:
  """Sentence chrF of each example, in [0, 100]."""
  _check_pairs(references, predictions, "sentence_chrf")
  return [float(sacrebleu.sentence_chrf(p, [r]).score) for r, p in zip(references, predictions)]


# A number: an optional sign (ASCII or unicode minus, not glued to a preceding word or number,
# so "2-3" is two numbers) and dollar sign, then digits with optional thousands commas and
# decimals, or a bare decimal part.
NUMBER_PATTERN = re.compile(
    r"(?:(?<![\w.])[-−])?\$?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")
_ANNOTATION = re.compile(r"<<[^>]*>>|<<[^>]*$")
GSM8K_MARKER = "####"


def normalise_number(text: str) -> Optional[str]:
  """``'-$1,234.50'`` -> ``'-1234.5'``; ``'3.0'`` -> ``'3'``; None if not a number."""
  cleaned = re.sub(r"[\s$,]", "", text.replace("−", "-"))
  try:
    value = decimal.Decimal(cleaned)
  except decimal.InvalidOperation:
    return None
  if value == value.to_integral_value():
    return str(int(value))
  return format(value.normalize(), "f")


def gsm8k_final_number(text: str) -> Optional[str]:
  """The final numeric answer of a GSM8k-style solution, normalised for comparison.

  The answer is the first number after the last ``####`` if there is one, otherwise the last
  number of the text once calculator annotations ``<<...>>`` (and an unclosed ``<<...`` at the
  end) are removed. Normalisation drops ``$``, thousands commas, a trailing period and trailing
  decimal zeros, and keeps the sign.

  Args:
    text: a model output or a GSM8k reference answer.

  Returns:
    e.g. ``'72'``, ``'-3'``, ``'1234.5'``; None when the text has no number.
  """
  if GSM8K_MARKER in text:
    tail = text.rsplit(GSM8K_MARKER, 1)[1]
    match = NUMBER_PATTERN.search(tail)
    return normalise_number(match.group(0)) if match else None
  matches = NUMBER_PATTERN.findall(_ANNOTATION.sub(" ", text))
  return normalise_number(matches[-1]) if matches else None


def gsm8k_correct(references: Sequence[str], predictions: Sequence[str]) -> list[float]:
  """1.0 where the prediction's final number equals the reference's, else 0.0 (N floats)."""
  _check_pairs(references, predictions, "gsm8k_accuracy")
  out = []
  for ref, pred in zip(references, predictions):
    expected, found = gsm8k_final_number(ref), gsm8k_final_number(pred)
    out.append(float(expected is not None and found == expected))
  return out


def gsm8k_accuracy(references: Sequence[str], predictions: Sequence[str]) -> float:
  """Final-answer exact-match accuracy in percent (0-100); see :func:`gsm8k_final_number`."""
  return 100.0 * float(np.mean(gsm8k_correct(references, predictions)))


@functools.lru_cache(maxsize=16)
def _tokenizer(name: str) -> Callable[[str], str]:
  return sacrebleu.BLEU(tokenize=name).tokenizer


def tokenize_words(text: str, tokenize: str = DEFAULT_TOKENIZE) -> list[str]:
  """Words of `text` under a sacrebleu tokenizer (``'13a'``: punctuation split off)."""
  return _tokenizer(tokenize)(text.strip()).split()


def self_bleu(samples: Sequence[Sequence[str]], *, tokenize: str = DEFAULT_TOKENIZE) -> float:
  """Self-BLEU: how similar the K samples of each input are to each other (0-100).

  For each input with K >= 2 samples, each sample's sentence BLEU (sacrebleu, exponential
  smoothing, effective order) against the other K - 1 samples as references; the mean over
  the K samples, then over inputs.

  Args:
    samples: N inputs x K samples (K may differ per input; inputs with K < 2 are skipped).
    tokenize: sacrebleu tokenizer name.

  Returns:
    Self-BLEU in [0, 100] (100: identical samples; about 0: no shared words).

  Raises:
    ValueError: when no input has two samples.
  """
  per_input = []
  for group in samples:
    group = list(group)
    if len(group) < 2:
      continue
    scores = [sacrebleu.sentence_bleu(hyp, group[:i] + group[i + 1:], tokenize=tokenize,
                                      use_effective_order=True).score
              for i, hyp in enumerate(group)]
    per_input.append(float(np.mean(scores)))
  if not per_input:
    raise ValueError("self_bleu needs at least one input with 2 or more samples.")
  return float(np.mean(per_input))


def distinct_n(texts: Sequence[str], n: int, *, tokenize: str = DEFAULT_TOKENIZE) -> float:
  """Distinct-n: the number of distinct word n-grams over the number of all n-grams.

  Args:
    texts: the texts (e.g. all samples of all inputs); n-grams never span two texts.
    n: n-gram order >= 1.
    tokenize: sacrebleu tokenizer name used to split words.

  Returns:
    A ratio in [0, 1] (0.0 when there is no n-gram at all).
  """
  if n < 1:
    raise ValueError(f"distinct_n needs n >= 1, got {n}.")
  total, distinct = 0, set()
  for text in texts:
    words = tokenize_words(text, tokenize)
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    total += len(grams)
    distinct.update(grams)
  return len(distinct) / total if total else 0.0


def has_repeated_ngram(text: str, n: int = 3) -> bool:
  """Whether some n-gram of whitespace-separated words occurs twice or more in `text`.

  (Whitespace words, not sacrebleu's: its 13a tokenizer splits GSM8k's ``####`` into a
  repeated ``# # #``.)
  """
  words = text.split()
  grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
  return len(set(grams)) < len(grams)


def repeated_3gram_rate(texts: Sequence[str]) -> float:
  """The share of `texts` (0-1) containing a repeated word 3-gram: a looping indicator.

  Returns:
    0.0 for no texts.
  """
  if not texts:
    return 0.0
  return float(np.mean([has_repeated_ngram(t, 3) for t in texts]))


def mean_token_entropy(entropy_BT: Any, weights_BT: Any) -> float:
  """Mean per-token policy entropy over real tokens.

  Args:
    entropy_BT: per-token entropies [B, T] (nats), e.g. ``soft_q.entropy(logits)``.
    weights_BT: [B, T], > 0 on real output tokens, 0 on padding.

  Returns:
    ``sum(w * H) / sum(w)`` with w = 1 on real tokens; 0.0 when there is none.
  """
  entropy = np.asarray(entropy_BT, np.float64)
  mask = (np.asarray(weights_BT) > 0).astype(np.float64)
  if entropy.shape != mask.shape:
    raise ValueError(f"entropy {entropy.shape} and weights {mask.shape} shapes differ.")
  count = mask.sum()
  return float((entropy * mask).sum() / count) if count else 0.0


# The per-example score each metric family correlates with the implicit reward by default
# (the paper: ROUGE-1 on TL;DR, accuracy on GSM8k, BLEU on WMT22).
PRIMARY_SCORE = {"rouge": "rouge1", "gsm8k": "correct", "translation": "bleu"}


def score_predictions(metric: str, references: Sequence[str], predictions: Sequence[str], *,
                      tokenize: str = DEFAULT_TOKENIZE
                      ) -> tuple[dict[str, float], list[dict[str, float]]]:
  """Corpus-level and per-example task scores (all 0-100).

  Args:
    metric: 'rouge' (rouge1, rouge2, rougeLsum), 'gsm8k' (accuracy; per example `correct`
      0/100) or 'translation' (corpus bleu and chrf; per example sentence `bleu`, `chrf`).
    references: N reference texts.
    predictions: N outputs.
    tokenize: sacrebleu tokenizer for BLEU.

  Returns:
    (corpus scores dict, N per-example score dicts).
  """
  if metric == "rouge":
    per_example = rouge_per_example(references, predictions)
    corpus = {k: float(np.mean([s[k] for s in per_example])) for k in ROUGE_TYPES}
  elif metric == "gsm8k":
    correct = gsm8k_correct(references, predictions)
    per_example = [{"correct": 100.0 * c} for c in correct]
    corpus = {"accuracy": 100.0 * float(np.mean(correct))}
  elif metric == "translation":
    per_example = [{"bleu": b, "chrf": c} for b, c in zip(
        sentence_bleu_scores(references, predictions, tokenize=tokenize),
        sentence_chrf_scores(references, predictions))]
    corpus = {"bleu": bleu(references, predictions, tokenize=tokenize),
              "chrf": chrf(references, predictions)}
  else:
    raise ValueError(f"unknown metric family {metric!r}: use rouge, gsm8k or translation.")
  return corpus, per_example
