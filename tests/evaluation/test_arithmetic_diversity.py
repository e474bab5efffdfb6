"""Exact diversity on the arithmetic task (irl_lm/evaluation/arithmetic.py), on hand-made cases."""
import itertools
import math

import numpy as np
import pytest

from irl_lm.data import arithmetic as arithmetic_data
from irl_lm.data import spec
from irl_lm.evaluation import arithmetic
from irl_lm.jobs import evaluate as evaluate_job

SOLUTIONS = ("A costs 2*3 = <<2*3=6>>6.\nTotal 6+1 = <<6+1=7>>7.\n#### 7",
             "B costs 1 = <<1=1>>1.\nTotal 1+6 = <<1+6=7>>7.\n#### 7")
LN2 = math.log(2)


def test_solution_order_text_and_calculations():
  spaced = "A costs  2*3 = <<2*3=6>>6. \n\n Total 6+1 = <<6+1=7>>7.\n####   7 "
  assert arithmetic.normalise_whitespace(spaced) == arithmetic.normalise_whitespace(SOLUTIONS[0])
  assert arithmetic.solution_order(spaced, SOLUTIONS) == 0
  assert arithmetic.solution_order(SOLUTIONS[1], SOLUTIONS) == 1
  reworded = "First 2*3 = <<2*3=6>>6 dollars.\nSo 6+1 = <<6+1=7>>7.\n#### 7"
  assert arithmetic.solution_order(reworded, SOLUTIONS) is None
  assert arithmetic.solution_order(reworded, SOLUTIONS, "calculations") == 0
  # Same calculations, another final answer; no annotations at all: not valid either way.
  assert arithmetic.solution_order(reworded[:-1] + "8", SOLUTIONS, "calculations") is None
  assert arithmetic.solution_order("#### 7", SOLUTIONS, "calculations") is None
  assert arithmetic.solution_order("A costs 2*3", SOLUTIONS) is None
  # 'structure': the same text but for the numbers, so wrong arithmetic still shows its order.
  miscounted = "B costs 4 = <<4=4>>4.\nTotal 4+6.5 = <<4+6.5=11>>11.\n####  11"
  assert arithmetic.solution_order(miscounted, SOLUTIONS) is None
  assert arithmetic.solution_order(miscounted, SOLUTIONS, "calculations") is None
  assert arithmetic.solution_order(miscounted, SOLUTIONS, "structure") == 1
  assert arithmetic.solution_order(reworded, SOLUTIONS, "structure") is None
  with pytest.raises(ValueError, match="unknown criterion 'words'"):
    arithmetic.solution_order("x", SOLUTIONS, "words")


def test_accuracy_and_its_standard_error():
  acc, se = arithmetic.accuracy_with_se([[1], [0], [1], [1]])
  assert acc == pytest.approx(75.0) and se == pytest.approx(100 * math.sqrt(0.75 * 0.25 / 4))
  # K = 2: the SE of the per-question accuracies (1 and 0.5), not of 4 independent draws.
  acc, se = arithmetic.accuracy_with_se([[True, True], [False, True]])
  assert acc == pytest.approx(75.0) and se == pytest.approx(100 * 0.25 / math.sqrt(2))
  assert arithmetic.accuracy_with_se([[1, 1], [1, 1]]) == (100.0, 0.0)


def test_valid_rate_and_distinct_orders():
  orders = [[0, 1, None], [2, 2, 2], [None, None, None]]
  assert arithmetic.valid_rate(orders) == pytest.approx(100 * 5 / 9)
  assert arithmetic.distinct_valid_orders(orders).tolist() == [2, 1, 0]


def _brute_force_entropy(probs, n):
  """E[plug-in entropy] by summing over every sequence of n draws (not count vectors)."""
  total = 0.0
  for seq in itertools.product(range(len(probs)), repeat=n):
    p = np.prod([probs[i] for i in seq])
    counts = np.bincount(seq, minlength=len(probs))
    freqs = counts[counts > 0] / n
    total += p * -np.sum(freqs * np.log(freqs))
  return total


@pytest.mark.parametrize("probs,n", [([0.5, 0.5], 2), ([0.25, 0.25, 0.5], 3),
                                     ([0.1, 0.6, 0.3], 4), ([1.0, 0.0], 3), ([0.3, 0.7], 1)])
def test_expected_plugin_entropy_and_distinct(probs, n):
  assert arithmetic.expected_plugin_entropy(probs, n) == pytest.approx(
      _brute_force_entropy(probs, n), abs=1e-12)
  brute = sum(np.prod([probs[i] for i in seq]) * len(set(seq))
              for seq in itertools.product(range(len(probs)), repeat=n))
  assert arithmetic.expected_distinct(probs, n) == pytest.approx(brute)
  assert arithmetic.expected_plugin_entropy(probs, 0) == 0.0
  assert arithmetic.expected_plugin_entropy([0.5, 0.5], 2) == pytest.approx(LN2 / 2)


def test_order_diversity_against_the_data():
  orders = [[0, 1], [None, None], [2, 2]]
  data = [[0.5, 0.5], [0.5, 0.5], [0.25, 0.25, 0.5]]
  got = arithmetic.order_diversity(orders, data)
  data_entropy_3 = -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))
  assert got == pytest.approx({
      "distinct_valid_orders": 1.0,
      # 2 draws from (.5, .5): 1.5 distinct expected; none from the invalid question; from
      # (.25, .25, .5): 2 (1 - .75^2) + (1 - .5^2).
      "data_distinct_valid_orders": (1.5 + 0 + 2 * (1 - 0.75 ** 2) + 1 - 0.5 ** 2) / 3,
      "order_entropy": (LN2 + 0.0) / 2,  # the question without a valid sample is left out
      "data_order_entropy": (LN2 + data_entropy_3) / 2,
      # Two draws differ with probability .5 and .625 (1 - .25^2 - .25^2 - .5^2).
      "data_order_entropy_at_n": (0.5 * LN2 + 0.625 * LN2) / 2,
      "order_entropy_questions": 2})
  none_valid = arithmetic.order_diversity([[None]], [[0.5, 0.5]])
  assert none_valid["order_entropy"] is None and none_valid["order_entropy_questions"] == 0
  assert none_valid["distinct_valid_orders"] == 0.0


def test_within_question_auroc_with_ties_and_one_sided_questions():
  scores = [[3.0, 1.0, 2.0, 2.0],   # correct 3, 2 vs incorrect 1, 2: (1 + 1 + 1 + .5) / 4
            [9.0, 9.0, 9.0, 9.0],   # only correct samples: no AUROC
            [0.0, 1.0, 2.0, 3.0],   # only incorrect samples: no AUROC
            [1.0, 2.0, 5.0, 5.0]]   # the correct sample scores lowest: 0
  correct = [[True, False, True, False], [True] * 4, [False] * 4, [True, False, False, False]]
  mean, count = arithmetic.within_question_auroc(scores, correct)
  assert count == 2 and mean == pytest.approx((0.875 + 0.0) / 2)
  assert arithmetic.within_question_auroc([[5.0, 5.0]], [[True, False]]) == (0.5, 1)
  assert arithmetic.within_question_auroc([[1.0, 2.0]], [[True, True]]) == (None, 0)
  assert arithmetic.auroc([2.0, 3.0], [1.0]) == 1.0


def test_samples_summary():
  wrong = SOLUTIONS[0].replace("#### 7", "#### 8")
  texts = [[SOLUTIONS[0], SOLUTIONS[1], wrong], [SOLUTIONS[1], SOLUTIONS[1], SOLUTIONS[1]]]
  correct = [[True, True, False], [True, True, True]]
  rewards = [[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
  log_probs = [[-1.0, -5.0, -2.0], [-1.0, -1.0, -1.0]]
  got = arithmetic.samples_summary(texts, correct, rewards, log_probs, [SOLUTIONS, SOLUTIONS],
                                   [[0.5, 0.5], [0.75, 0.25]])
  assert got["accuracy"] == pytest.approx(100 * 5 / 6)
  assert got["accuracy_se"] == pytest.approx(100 * np.std([2 / 3, 1.0]) / math.sqrt(2))
  assert got["valid_rate"] == pytest.approx(100 * 5 / 6)
  assert got["valid_rate_calculations"] == pytest.approx(100 * 5 / 6)  # "#### 8" differs too
  assert got["distinct_valid_orders"] == 1.5
  assert got["order_entropy"] == pytest.approx(LN2 / 2)
  assert got["data_order_entropy"] == pytest.approx(
      (LN2 - 0.75 * math.log(0.75) - 0.25 * math.log(0.25)) / 2)
  assert got["reward_auroc"] == 1.0 and got["logprob_auroc"] == 0.5
  assert got["auroc_questions"] == 1
  assert (got["num_questions"], got["samples_per_input"]) == (2, 3)
  # The wrong sample follows order 0's structure: question 1 has orders 0, 1, 0.
  assert got["structure"]["valid_rate"] == 100.0
  assert got["structure"]["distinct_valid_orders"] == 1.5
  assert got["structure"]["order_entropy"] == pytest.approx(
      (-(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3)) / 2)


def test_outputs_summary():
  got = arithmetic.outputs_summary([SOLUTIONS[1], "nonsense", SOLUTIONS[1] + " "],
                                   [True, False, True], [SOLUTIONS] * 3)
  assert got["accuracy"] == pytest.approx(100 * 2 / 3)
  assert got["accuracy_se"] == pytest.approx(100 * math.sqrt(2 / 9 / 3))
  assert got["valid_rate"] == pytest.approx(100 * 2 / 3)
  assert got["order_counts"] == [0, 2] and got["num_questions"] == 3
  assert got["valid_rate_structure"] == pytest.approx(100 * 2 / 3)
  assert got["structure_order_counts"] == [0, 2]


SIZES = {"train": 300, "validation": 40, "test": 40}


def test_reference_reads_the_generated_solutions():
  reference = arithmetic.Reference("validation", {"sizes": SIZES, "seed": 0,
                                                   "train_examples": 120})
  records = arithmetic_data.solution_records("validation", SIZES)[:3]
  counts = arithmetic_data.train_order_counts(SIZES, train_examples=120)
  assert reference.data_probs["comparison"] == pytest.approx(
      [c / sum(counts["comparison"].values()) for c in counts["comparison"].values()])
  assert sum(sum(c.values()) for c in counts.values()) == 120
  # Sample j of question i writes order j mod (its number of orders); the last question's
  # input is not a question of the split.
  samples = lambda r: [{"output": r.solutions[j % len(r.solutions)], "scores": {"correct": 100.0},
                        "implicit_reward": float(j), "log_prob": -float(j)} for j in range(4)]
  diversity_records = [{"input": r.question, "samples": samples(r)} for r in records]
  diversity_records.append({"input": "What is 1+1?", "samples": samples(records[0])})
  got = reference.samples_summary(diversity_records)
  assert got["unmatched_questions"] == 1 and got["num_questions"] == 3
  assert got["valid_rate"] == 100.0 and got["accuracy"] == 100.0
  assert got["distinct_valid_orders"] == pytest.approx(
      np.mean([min(len(r.solutions), 4) for r in records]))
  assert got["auroc_questions"] == 0 and got["reward_auroc"] is None
  outputs = [{"input": r.question, "output": r.solutions[r.order], "scores": {"correct": 0.0}}
             for r in records]
  got = reference.outputs_summary(outputs)
  assert got["valid_rate"] == 100.0 and got["accuracy"] == 0.0
  assert sum(got["order_counts"]) == 3 and got["order_counts"][records[0].order] >= 1


def test_reference_for_only_the_arithmetic_task():
  assert arithmetic.reference_for("gsm8k", "test") is None
  default = arithmetic.reference_for(arithmetic_data.TASK, "test")
  assert default.settings == {"sizes": None, "seed": 0, "train_examples": None}
  try:
    arithmetic_data.arithmetic_task(name="arith_custom", sizes={"train": 300}, seed=2,
                                    train_examples=50)
    assert arithmetic.reference_for("arith_custom", "validation").settings == {
        "sizes": {"train": 300}, "seed": 2, "train_examples": 50}
  finally:
    spec.forget("arith_custom")


def test_printed_line(capsys):
  samples = arithmetic.samples_summary([[SOLUTIONS[0], SOLUTIONS[1]]], [[True, False]],
                                       [[1.0, 0.0]], [[0.0, 1.0]], [SOLUTIONS], [[0.5, 0.5]])
  greedy = arithmetic.outputs_summary([SOLUTIONS[0]], [True], [SOLUTIONS])
  result = {"task": "t", "split": "s", "num_examples": 1, "checkpoint_step": 1,
            "output_dir": "/o", "settings": {}, "diversity": None}
  evaluate_job._print_table({**result})  # pylint: disable=protected-access
  assert "accuracy" not in capsys.readouterr().out
  line = evaluate_job._arithmetic_line(samples)  # pylint: disable=protected-access
  assert "accuracy 50.00 +- 0.00" in line and "AUROC reward 1.000 log pi 0.000 (1 q)" in line
  assert "distinct valid orders 2.00 (data 1.50)" in line
  assert "structure 100.0%: distinct valid orders 2.00" in line
  line = evaluate_job._arithmetic_line(greedy)  # pylint: disable=protected-access
  assert line.endswith("valid per order [1, 0]; structure 100.0%, per order [1, 0]")


@pytest.mark.slow
def test_evaluator_adds_the_arithmetic_figures():
  """A random tiny T5 through `Evaluator` on the arithmetic task: the `arithmetic` entries agree
  with the records they were computed from."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from irl_lm.decoding.config import DecodingConfig  # pylint: disable=g-import-not-at-top
  from irl_lm.evaluation.evaluator import Evaluator  # pylint: disable=g-import-not-at-top
  from irl_lm.models import t5  # pylint: disable=g-import-not-at-top
  from irl_lm.partitioning import Partitioner  # pylint: disable=g-import-not-at-top
  model = t5.EncoderDecoderModel(t5.t5_1_1_config(
      "tiny", vocab_size=4096, activation_dtype=jnp.float32, num_encoder_layers=1,
      num_decoder_layers=1))
  lengths = {"inputs": 96, "targets": 12}
  params = model.init(jax.random.PRNGKey(0), model.input_shapes(4, lengths))
  evaluator = Evaluator(model, task=arithmetic_data.TASK, split="validation",
                        feature_lengths=lengths, batch_size=4, num_examples=4,
                        partitioner=Partitioner((1, 1), devices=tuple(jax.devices()[:1])),
                        param_shardings=None)
  summary, _ = evaluator.evaluate(params, DecodingConfig("greedy"))
  assert summary["arithmetic"]["num_questions"] == 4
  assert summary["arithmetic"]["unmatched_questions"] == 0
  assert summary["arithmetic"]["accuracy"] == pytest.approx(summary["scores"]["accuracy"])
  summary, records = evaluator.diversity(params, samples_per_input=3, temperature=1.0)
  got = summary["arithmetic"]
  assert (got["num_questions"], got["samples_per_input"], got["unmatched_questions"]) == (4, 3, 0)
  assert got["accuracy"] == pytest.approx(summary["scores"]["accuracy"])
  samples = [r["samples"] for r in records]
  correct = [[s["scores"]["correct"] > 0 for s in row] for row in samples]
  assert (got["logprob_auroc"], got["auroc_questions"]) == arithmetic.within_question_auroc(
      [[s["log_prob"] for s in row] for row in samples], correct)
  # 12 tokens of a random model are no valid solution, so no order entropy is defined.
  assert got["valid_rate"] == 0.0 and got["order_entropy"] is None
  # With calculator forcing: its own setting, and a row the calculator never wrote to is the
  # plain sample of the same seed.
  calc, calc_records = evaluator.diversity(params, samples_per_input=3, temperature=1.0,
                                           calculator=True)
  assert calc["setting"] == "diversity_K3_t1_calc" and calc["decoding"]["calculator"]
  plain = [s["output"] for r in records for s in r["samples"]]
  forced = [s["output"] for r in calc_records for s in r["samples"]]
  untouched = [i for i, text in enumerate(plain) if "<<" not in text]
  assert untouched and all(forced[i] == plain[i] for i in untouched)
