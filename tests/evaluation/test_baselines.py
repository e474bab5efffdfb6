"""Trivial baselines: the chosen constant, the rules, the margin, on hand-made examples."""
import pytest

from irl_lm.evaluation import baselines
from irl_lm.evaluation import metrics


def test_best_constant_rouge_is_the_most_central_target():
  targets = ["return the value", "return the value of x", "return the name",
             "open a file", "return the value now"]
  chosen = baselines.best_constant("rouge", targets, num_candidates=10, num_references=10)
  means = {c: metrics.rouge([t for t in targets], [c] * len(targets))["rouge1"]
           for c in targets}
  assert chosen == max(means, key=means.get) == "return the value"


def test_best_constant_gsm8k_is_the_most_frequent_answer():
  targets = ["a\n#### 5", "b\n#### 7", "c\n#### 7", "no number"]
  assert baselines.best_constant("gsm8k", targets) == "#### 7"
  assert baselines.most_frequent_answer(["none"]) is None


def test_name_words_and_template():
  assert baselines.name_words("_getMandatory_release2") == ["get", "mandatory", "release2"]
  assert baselines.name_words("HTTPServer") == ["http", "server"]
  source = "class A:\n  def get_user_name(self):\n    return self.n"
  assert baselines.function_name(source) == "get_user_name"
  assert baselines.name_template_output("Return the {words}.", source) == (
      "Return the get user name.")
  assert baselines.name_template_output("{Words}.", source) == "Get user name."
  assert baselines.function_name("x = 1") is None


def test_number_rules():
  q = "Tom buys 4 pens for $3 each and 2 pads. He pays 1,000 in total?"
  assert [str(x) for x in baselines.question_numbers(q)] == ["4", "3", "2", "1000"]
  assert baselines.number_rule_output("first x second", q) == "#### 12"
  assert baselines.number_rule_output("sum of all numbers", q) == "#### 1009"
  assert baselines.number_rule_output("first / second", q) == "#### 1.333333333333333333333333333"
  assert baselines.number_rule_output("second - first", q) == "#### -1"
  assert baselines.number_rule_output("first x second + third x fourth", q) == "#### 2012"
  assert baselines.number_rule_output("first x second + third x fourth", "3 and 4") == "#### 12"
  assert baselines.number_rule_output("(first + second) x third", q) == "#### 14"
  assert baselines.number_rule_output("last number", "no numbers") == "#### 0"


def test_fit_chooses_rules_on_train_and_scores_on_eval():
  train_in = [f"Ann has {a} boxes of {b} pens and 5 bags. How many pens?" for a, b in
              [(2, 3), (4, 5), (6, 7), (3, 3)]]
  train_out = [f"{a}*{b} = <<{a}*{b}={a * b}>>{a * b}\n#### {a * b}" for a, b in
               [(2, 3), (4, 5), (6, 7), (3, 3)]]
  fitted = baselines.fit("gsm8k", train_in, train_out)
  assert [b.name for b in fitted] == ["constant", "numbers_rule"]
  assert fitted[1].description == "first x second"
  scored = baselines.score(fitted, "gsm8k", ["Bo has 5 boxes of 2 pens."],
                           ["10 pens\n#### 10"])
  assert scored["numbers_rule"] == {"rule": "first x second", "scores": {"accuracy": 100.0},
                                    "repeated_3gram_rate": 0.0}
  assert scored["constant"]["scores"]["accuracy"] == 0.0
  best, margin = baselines.compare({"accuracy": 40.0}, scored, "gsm8k")
  assert best == {"name": "numbers_rule", "score": 100.0, "metric": "accuracy"}
  assert margin == -60.0


def test_fit_picks_the_rule_family_by_input():
  sources = [f"def get_{w}(self):\n  return self.{w}" for w in ("name", "size", "path")]
  docs = [f"Return the {w}." for w in ("name", "size", "path")]
  fitted = baselines.fit("rouge", sources, docs)
  assert fitted[1].name == "name_template"
  assert fitted[1].predict(sources[0]) == "Return the get name."
  texts = ["the quick brown fox jumps over the lazy dog"] * 3
  fitted = baselines.fit("rouge", texts, ["the quick brown fox jumps"] * 3)
  assert (fitted[1].name, fitted[1].description) == ("copy_input",
                                                     "the first 5 words of the input")
  with pytest.raises(ValueError, match="2 inputs but 1 targets"):
    baselines.fit("rouge", ["a", "b"], ["a"])


def test_compare_rouge_margin():
  scored = {"constant": {"scores": {"rouge1": 20.0}}, "name_template": {"scores": {"rouge1": 27.5}}}
  best, margin = baselines.compare({"rouge1": 34.0, "rouge2": 1.0}, scored, "rouge")
  assert best["name"] == "name_template" and margin == pytest.approx(6.5)


def test_describe_puts_the_model_next_to_its_best_baseline():
  from irl_lm.evaluation import evaluator  # pylint: disable=g-import-not-at-top
  line = evaluator.describe({
      "scores": {"accuracy": 40.0}, "best_baseline": {"name": "numbers_rule", "score": 18.5},
      "margin": 21.5, "repeated_3gram_rate": 0.25, "reference_repeated_3gram_rate": 0.125})
  assert line == ("accuracy 40.00 | best baseline (numbers_rule) 18.50 | margin +21.50 | "
                  "repeated 3-grams 0.25 (references 0.12)")
