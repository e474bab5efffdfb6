"""The built-in GSM8k-shaped arithmetic word problems (irl_lm/data/arithmetic.py)."""
import collections
import random
import re

import pytest
import sentencepiece as spm

from irl_lm.data import arithmetic, pipeline, vocabularies
from irl_lm.data import calculator
from irl_lm.evaluation import metrics

SIZES = {"train": 600, "validation": 100, "test": 100}
ANNOTATION = re.compile(r"<<([^=>]*)=([^>]*)>>")


@pytest.fixture(scope="module")
def splits():
  return {s: arithmetic.load_examples(s, SIZES) for s in arithmetic.SPLITS}


def test_gsm8k_shape_and_calculator_consistency(splits):
  for examples in splits.values():
    for ex in examples:
      lines = ex["answer"].split("\n")
      assert lines[-1] == f"#### {ex['final_answer']}"
      assert metrics.gsm8k_final_number(ex["answer"]) == ex["final_answer"]
      annotations = ANNOTATION.findall(ex["answer"])
      assert len(annotations) == len(lines) - 1 >= 1  # one computation a line
      for expr, result in annotations:
        assert calculator.calculate(expr) == result  # the calculator reproduces every result
        assert f"<<{expr}={result}>>{result}" in ex["answer"]  # GSM8k's "<<e=r>>r" form
      # The last computation is the final answer.
      assert annotations[-1][1] == ex["final_answer"]


def test_several_solution_orders_reach_the_same_answer():
  rng = random.Random(7)
  orders_seen = collections.defaultdict(set)
  for _ in range(300):
    problem = rng.choice(arithmetic.TEMPLATES)(rng)
    assert len(problem.solutions) >= 2
    answers = {metrics.gsm8k_final_number(problem.answer(i)) for i in range(len(problem.solutions))}
    assert answers == {problem.final_answer}
    texts = {problem.answer(i) for i in range(len(problem.solutions))}
    assert len(texts) == len(problem.solutions)  # the orders really differ
    orders_seen[problem.template].add(len(problem.solutions))
  assert set(orders_seen) == {t(random.Random(0)).template for t in arithmetic.TEMPLATES}


def test_deterministic_disjoint_and_mixed(splits):
  assert arithmetic.load_examples("validation", SIZES) == splits["validation"]
  assert {k: len(v) for k, v in splits.items()} == SIZES
  questions = {k: {ex["question"] for ex in v} for k, v in splits.items()}
  assert all(len(q) == SIZES[k] for k, q in questions.items())  # no duplicates within a split
  assert not questions["train"] & questions["validation"]
  assert not questions["train"] & questions["test"]
  assert not questions["validation"] & questions["test"]
  train = splits["train"]
  assert len({ex["template"] for ex in train}) == len(arithmetic.TEMPLATES)
  assert {ex["order"] for ex in train} >= {"0", "1", "2"}  # solution orders are mixed
  assert any("." in ex["final_answer"] for ex in train)  # decimals occur
  assert arithmetic.load_examples("validation", SIZES, seed=1) != splits["validation"]
  with pytest.raises(ValueError, match="unknown split"):
    arithmetic.load_examples("dev")


def test_shipped_vocabulary_covers_the_text(splits):
  """The task's own SentencePiece model: exact round trip, no UNK, lengths that fit the gin."""
  sp = spm.SentencePieceProcessor(model_file=vocabularies.ARITHMETIC_VOCAB_PATH)
  texts = [t for ex in splits["validation"] + splits["test"] for t in (ex["question"],
                                                                         ex["answer"])]
  for text in texts:
    ids = sp.encode(text)
    assert sp.decode(ids) == text and sp.unk_id() not in ids
  longest = max(len(sp.encode(ex["answer"])) for ex in splits["test"])
  assert longest <= 128  # fits gin/tasks/arithmetic_word_problems.gin's target length
  assert max(len(sp.encode(ex["question"])) for ex in splits["test"]) <= 96


def test_task_through_the_pipeline():
  lengths = {"inputs": 96, "targets": 160}
  examples = pipeline.get_examples("arithmetic_word_problems", "test", num_examples=3,
                                   feature_lengths=lengths)
  raw = arithmetic.load_examples("test")[:3]
  assert [ex["inputs_text"] for ex in examples] == [r["question"] for r in raw]
  assert [ex["targets_text"] for ex in examples] == [r["answer"] for r in raw]
  vocab = pipeline.get_vocabulary("arithmetic_word_problems")
  ids = vocab.encode(raw[0]["answer"]) + [1]
  assert examples[0]["target_tokens"][:len(ids)].tolist() == ids


def test_solution_records_match_the_generator(splits):
  for split, examples in splits.items():
    records = arithmetic.solution_records(split, SIZES)
    assert len(records) == len(examples)
    for record, ex in zip(records, examples):
      assert (record.question, record.template, str(record.order)) == (
          ex["question"], ex["template"], ex["order"])
      assert record.solutions[record.order] == ex["answer"]  # the target is one of them
      assert len(set(record.solutions)) == len(record.solutions) >= 2
      assert {metrics.gsm8k_final_number(s) for s in record.solutions} == {ex["final_answer"]}
  # generate_example draws exactly what the split generator records.
  rng = random.Random(arithmetic.SPLIT_SEEDS["test"])
  assert arithmetic.generate_example(rng) == splits["test"][0]


def test_train_order_counts(splits):
  counts = arithmetic.train_order_counts(SIZES)
  expected = collections.Counter((ex["template"], int(ex["order"])) for ex in splits["train"])
  assert {(t, o): c for t, by in counts.items() for o, c in by.items() if c} == dict(expected)
  assert sorted(counts["spending"]) == [0, 1] and sorted(counts["stock"]) == [0, 1, 2]
  subset = arithmetic.train_order_counts(SIZES, train_examples=100)
  assert sum(sum(by.values()) for by in subset.values()) == 100
