"""Metrics against hand-computed values (irl_lm/evaluation/metrics.py)."""
import math

import numpy as np
import pytest

from irl_lm.evaluation import metrics


def test_rouge_hand_computed():
  # pred "the cat sat" vs ref "the cat sat on the mat": unigrams P = 3/3, R = 3/6; bigrams
  # P = 2/2, R = 2/5; the LCS is 3 tokens, as for unigrams.
  f = lambda p, r: 2 * p * r / (p + r)
  [scores] = metrics.rouge_per_example(["the cat sat on the mat"], ["the cat sat"])
  assert scores["rouge1"] == pytest.approx(100 * f(1, 0.5))
  assert scores["rouge2"] == pytest.approx(100 * f(1, 0.4))
  assert scores["rougeLsum"] == pytest.approx(100 * f(1, 0.5))
  mean = metrics.rouge(["the cat sat on the mat", "a dog"], ["the cat sat", "a dog"])
  assert mean["rouge1"] == pytest.approx((100 * f(1, 0.5) + 100) / 2)
  with pytest.raises(ValueError, match="2 references but 1 predictions"):
    metrics.rouge(["a", "b"], ["a"])


def test_bleu_and_chrf_hand_computed():
  # 1..4-gram precisions 3/4, 2/3, 1/2 and 0/1, the last smoothed by sacrebleu's 'exp' method
  # to 1 / (2 * 1); equal lengths, so no brevity penalty.
  expected = 100 * (0.75 * (2 / 3) * 0.5 * 0.5) ** 0.25
  assert metrics.bleu(["a b c e"], ["a b c d"]) == pytest.approx(expected)
  assert metrics.sentence_bleu_scores(["a b c e"], ["a b c d"]) == [pytest.approx(expected)]
  assert metrics.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100)
  # A 2-word hypothesis of a 4-word reference: sentence BLEU's effective order keeps only the
  # (perfect) orders 1-2, times the brevity penalty exp(1 - 4/2).
  short = metrics.sentence_bleu_scores(["a b c d"], ["a b"])[0]
  assert short == pytest.approx(100 * math.exp(1 - 4 / 2))
  # chrF: characters (spaces removed) "ab" vs "ac": order 1 P = R = 1/2, order 2 P = R = 0;
  # orders 3-6 have no n-grams and are skipped; averaged P = R = 1/4, F_2 = 1/4.
  assert metrics.chrf(["ac"], ["ab"]) == pytest.approx(25.0)
  assert metrics.sentence_chrf_scores(["ac", "xyz"], ["ab", "xyz"]) == [
      pytest.approx(25.0), pytest.approx(100.0)]
  assert metrics.chrf(["abc"], ["xyz"]) == 0.0


@pytest.mark.parametrize("text,expected", [
    # Real GSM8k answers.
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 "
     "clips altogether in April and May.\n#### 72", "72"),
    ("Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x "
     "50 = $<<0.2*50=10>>10.\n#### 10", "10"),
    ("In the beginning, Betty has only 100 / 2 = $<<100/2=50>>50.\nBetty's grandparents gave "
     "her 15 * 2 = $<<15*2=30>>30.\nThis means, Betty needs 100 - 50 - 30 - 15 = $<<100-50-30-"
     "15=5>>5 more.\n#### 5", "5"),
    ("#### 1,000", "1000"),
    ("#### -3", "-3"),
    ("#### $18.00", "18"),
    ("#### 0.50", "0.5"),
    ("#### .5", "0.5"),
    # Model outputs without '####': the last number outside annotations.
    ("So she has $1,234.50.", "1234.5"),
    ("The temperature drops to −5 degrees.", "-5"),
    ("He loses 8-3 = 5 dollars, so he has -2 left.", "-2"),
    ("Ages 2-3 are free.", "3"),
    ("she earns 0.2*50 = <<0.2*50=10", "50"),  # an unclosed annotation is not an answer
    ("The answer is 3.0.", "3"),
    ("no number here", None),
])
def test_gsm8k_final_number(text, expected):
  assert metrics.gsm8k_final_number(text) == expected


def test_gsm8k_accuracy():
  refs = ["... #### 1000", "... #### 72", "... #### 5", "no answer"]
  preds = ["The total is $1,000.00.", "#### 72.", "#### 6", "#### 1"]
  assert metrics.gsm8k_correct(refs, preds) == [1.0, 1.0, 0.0, 0.0]
  assert metrics.gsm8k_accuracy(refs, preds) == pytest.approx(50.0)
  corpus, per_example = metrics.score_predictions("gsm8k", refs, preds)
  assert corpus == {"accuracy": pytest.approx(50.0)}
  assert [s["correct"] for s in per_example] == [100.0, 100.0, 0.0, 0.0]


def test_self_bleu_identical_disjoint_and_hand_computed():
  identical = [["the cat sat on the mat"] * 4, ["a quick brown fox"] * 4]
  assert metrics.self_bleu(identical) == pytest.approx(100.0)
  disjoint = [["a b c", "d e f", "g h i", "j k l"]]
  assert metrics.self_bleu(disjoint) == pytest.approx(0.0, abs=1e-9)
  # Two samples sharing 3 of 4 words: the 'exp'-smoothed BLEU of each against the other.
  pair = 100 * (0.75 * (2 / 3) * 0.5 * 0.5) ** 0.25
  assert metrics.self_bleu([["a b c d", "a b c e"]]) == pytest.approx(pair)
  # K = 3 with effective order: "a b" vs {"a b", "c d"} is 100 (orders 1-2 only), "c d" vs
  # {"a b", "a b"} is 0; the mean over samples, then over inputs (with an identical group).
  assert metrics.self_bleu([["a b", "a b", "c d"], ["x y z", "x y z"]]) == pytest.approx(
      (200 / 3 + 100) / 2)
  assert metrics.self_bleu([["only one"], ["x", "x"]]) == pytest.approx(100.0)  # K<2 skipped
  with pytest.raises(ValueError, match="2 or more samples"):
    metrics.self_bleu([["alone"]])


def test_distinct_n_hand_computed():
  texts = ["the cat the cat", "a dog"]
  assert metrics.distinct_n(texts, 1) == pytest.approx(4 / 6)  # the cat a dog / 6 words
  assert metrics.distinct_n(texts, 2) == pytest.approx(3 / 4)  # n-grams never span texts
  assert metrics.distinct_n(["Hello, world."], 1) == pytest.approx(1.0)  # 13a: 4 tokens
  assert metrics.tokenize_words("Hello, world.") == ["Hello", ",", "world", "."]
  assert metrics.distinct_n(["a"], 2) == 0.0
  with pytest.raises(ValueError):
    metrics.distinct_n(texts, 0)


def test_mean_token_entropy_hand_computed():
  entropy = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
  weights = np.array([[1, 1, 0], [1, 0, 0]])
  assert metrics.mean_token_entropy(entropy, weights) == pytest.approx(7 / 3)
  assert metrics.mean_token_entropy(entropy, np.zeros_like(weights)) == 0.0
  with pytest.raises(ValueError, match="shapes differ"):
    metrics.mean_token_entropy(entropy, weights[:, :2])


def test_translation_scores_per_example_and_corpus():
  refs, preds = ["a b c e", "x y"], ["a b c d", "x y"]
  corpus, per_example = metrics.score_predictions("translation", refs, preds)
  assert per_example[1] == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}
  assert corpus["bleu"] == pytest.approx(metrics.bleu(refs, preds))
  assert corpus["chrf"] == pytest.approx(metrics.chrf(refs, preds))
  with pytest.raises(ValueError, match="unknown metric family"):
    metrics.score_predictions("bleurt", refs, preds)


def test_rouge_lsum_is_sentence_level():
  ref = "The cat sat on the mat. The dog ran in the park."
  swapped = "The dog ran in the park. The cat sat on the mat."
  from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top
  raw = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeLsum"], use_stemmer=True).score(
      ref, swapped)
  assert 100 * raw["rougeLsum"].fmeasure == pytest.approx(50.0)  # one "sentence": plain LCS
  scores = metrics.rouge([ref], [swapped])
  assert scores["rougeLsum"] == pytest.approx(100.0)  # the same two sentences, in any order
  # Splitting sentences changes nothing for ROUGE-1/2 (rouge-score drops punctuation/newlines).
  assert scores["rouge1"] == pytest.approx(100 * raw["rouge1"].fmeasure)
  assert scores["rouge2"] == pytest.approx(100 * raw["rouge2"].fmeasure)


def test_split_sentences():
  assert metrics.split_sentences('It sat. It ran! Is it "done?" Yes.') == (
      'It sat.\nIt ran!\nIs it "done?"\nYes.')
  assert metrics.split_sentences("J. Smith wrote e.g. this (really.) ok\nnext line") == (
      "J. Smith wrote e.g. this (really.)\nok\nnext line")
  assert metrics.split_sentences("Return the sum of x and y") == "Return the sum of x and y"
  assert metrics.split_sentences("Version 1.5 is out.") == "Version 1.5 is out."


def test_repeated_3gram_rate():
  texts = ["a b c a b c", "a b c d", "#### 72", "x y z x y w", "go go go go"]
  assert [metrics.has_repeated_ngram(t) for t in texts] == [True, False, False, False, True]
  assert metrics.repeated_3gram_rate(texts) == pytest.approx(0.4)
  assert metrics.repeated_3gram_rate([]) == 0.0


def test_rouge1_matrix_matches_rouge_per_example():
  cands, refs = ["the cat sat", "dogs running fast"], ["a cat sat down", "the dog runs", "x"]
  matrix = metrics.rouge1_matrix(cands, refs)
  expected = [[metrics.rouge_per_example([r], [c])[0]["rouge1"] for r in refs] for c in cands]
  assert matrix.shape == (2, 3)
  np.testing.assert_allclose(matrix, expected)
  assert matrix[1, 1] == pytest.approx(200 / 3)  # dog~dogs, run~running (stemmed)
