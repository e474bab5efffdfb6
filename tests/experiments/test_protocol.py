"""The protocol's per-input records and findings on small synthetic results, by hand."""
import functools
import math

import numpy as np
import pytest

from irl_lm.data import known_distribution
from irl_lm.evaluation import metrics
from irl_lm.experiments import protocol, protocol_summary, stats


def test_input_rows_by_hand():
  ident = {"sweep": "s", "point": "mle", "method": "mle", "seed": 0}
  samples = [  # score rises with reward, falls with log pi; one empty output
      {"output": "a b", "scores": {"correct": 0.0}, "implicit_reward": 1.0, "log_prob": -1.0,
       "num_tokens": 2},
      {"output": "a b", "scores": {"correct": 100.0}, "implicit_reward": 2.0, "log_prob": -2.0,
       "num_tokens": 4},
      {"output": " ", "scores": {"correct": 100.0}, "implicit_reward": 3.0, "log_prob": -9.0,
       "num_tokens": 1}]
  (row,) = protocol.input_rows(ident, 0.5, [{"index": 7, "samples": samples}])
  assert row["index"] == 7 and row["temperature"] == 0.5 and row["samples"] == 3
  assert row["quality"] == pytest.approx(200 / 3)
  assert row["distinct"] == pytest.approx(2 / 3)
  assert row["empty_rate"] == pytest.approx(1 / 3)
  assert row["length"] == pytest.approx(7 / 3)
  assert row["self_bleu"] == pytest.approx(metrics.self_bleu([["a b", "a b", " "]]))
  # Scores rank [1, 2.5, 2.5]; reward [1, 2, 3] -> 1.5 / sqrt(2 * 1.5) = 0.866; log pi the
  # reverse -> -0.866; per token log pi [-0.5, -0.5, -9] ranks [2.5, 2.5, 1] -> -0.5.
  assert row["rho_reward"] == pytest.approx(math.sqrt(3) / 2)
  assert row["rho_logprob"] == pytest.approx(-math.sqrt(3) / 2)
  assert row["rho_logprob_norm"] == pytest.approx(-0.5)


def _examples(point, method, shift, seeds=(0, 1, 2), n=40):
  rng = np.random.default_rng(0)
  base = rng.normal(size=(len(seeds), n))
  return [{"sweep": "s", "point": point, "method": method, "seed": s, "setting": "greedy",
           "index": i, "score": float(base[k, i] + shift)}
          for k, s in enumerate(seeds) for i in range(n)]


def test_quality_rows_pair_by_seed_and_example():
  examples = _examples("mle", "mle", 0.0) + _examples("iqlearn_td_weight0.1", "iqlearn", 1.0)
  (row,) = protocol.quality_rows(examples, num_resamples=200)
  assert row["comparison"] == "iqlearn_td_weight0.1 - mle"
  # Same noise in both (paired): every difference is exactly 1.
  assert (row["estimate"], row["low"], row["high"]) == pytest.approx((1.0, 1.0, 1.0))
  assert row["verdict"] == stats.REPRODUCED and row["n"] == "3 seeds x 40 examples"


def _inputs(point, method, quality_offset):
  rows = []
  for seed in (0, 1):
    for t, distinct in ((0.5, 0.2), (1.0, 0.6)):
      for i in range(5):
        rows.append({"sweep": "s", "point": point, "method": method, "seed": seed,
                     "temperature": t, "index": i, "distinct": distinct + 0.01 * i,
                     "quality": 50 - 40 * distinct + quality_offset + i,
                     "rho_reward": 0.5 + 0.1 * i, "rho_logprob_norm": 0.1 * i})
  return rows


def test_frontier_and_reward_rows():
  inputs = _inputs("mle", "mle", 0.0) + _inputs("iqlearn_td_weight0.1", "iqlearn", 3.0)
  (frontier,) = protocol.frontier_rows(inputs, num_resamples=100)
  # Same diversity, quality 3 higher at every point: a mean gap of exactly 3.
  assert frontier["estimate"] == pytest.approx(3.0)
  assert frontier["low"] == pytest.approx(3.0) and frontier["verdict"] == stats.REPRODUCED
  (reward,) = protocol.reward_rows(inputs, num_resamples=100)
  assert reward["comparison"] == "iqlearn_td_weight0.1: reward - logprob_norm"
  assert reward["estimate"] == pytest.approx(0.5) and reward["n"] == "5 inputs"


def test_overfitting_and_cost_rows():
  curves = []
  for seed in (0, 1, 2):
    for point, method, values in (("subset_mle", "mle", [1.0, 3.0, 2.0 - 0.1 * seed]),
                                  ("subset_iqlearn", "iqlearn", [1.0, 3.0, 3.0])):
      curves += [{"sweep": "s", "point": point, "method": method, "train_examples": 128,
                  "seed": seed, "step": step, "metric": "eval_validation/accuracy",
                  "value": v} for step, v in zip((0, 10, 20), values)]
  (row,) = protocol.overfitting_rows(curves, "eval_validation/accuracy", num_resamples=200)
  # MLE drops 1.0, 1.1, 1.2 from its peak, IQLearn 0: mean 1.1.
  assert row["comparison"] == "subset_mle - subset_iqlearn (N=128)"
  assert row["estimate"] == pytest.approx(1.1)
  assert 1.0 <= row["low"] <= row["high"] <= 1.2 and row["verdict"] == stats.REPRODUCED
  runs = [{"sweep": "s", "point": p, "method": m, "seed": s, "train_steps_per_second": r}
          for s in (0, 1) for p, m, r in (("mle", "mle", 10.0),
                                          ("iqlearn_td_weight0.1", "iqlearn", 9.5 + 0.2 * s))]
  (cost,) = protocol.cost_rows(runs, num_resamples=200)
  assert cost["estimate"] == pytest.approx(-0.04)  # rates 0.95 and 0.97 of MLE's
  assert cost["verdict"] == stats.REPRODUCED  # within the 10% margin


def test_findings_and_verdicts():
  examples = _examples("mle", "mle", 0.0) + _examples("iqlearn_td_weight0.1", "iqlearn", 1.0)
  examples += _examples("iqlearn_td_weight1", "iqlearn", -1.0)
  rows = protocol.findings([], examples, [], [], num_resamples=200)
  assert [r["finding"] for r in rows] == [1, 1]
  assert all(r["confidence"] == pytest.approx(0.975) for r in rows)  # Bonferroni over 2
  table = protocol.verdicts(rows)
  assert [t["verdict"] for t in table] == [stats.REPRODUCED] + ["not measured"] * 4
  assert table[0]["shown"] == "s: iqlearn_td_weight0.1 - mle" and table[0]["comparisons"] == 2


def test_run_metric_rows_claim_a_lower_forward_kl():
  rows = [{"sweep": "kd", "point": p, "method": m, "seed": s, "setting": "greedy",
           "forward_kl": kl + 0.01 * s}
          for s in (0, 1, 2) for p, m, kl in (("mle", "mle", 0.5),
                                              ("iqlearn_td_weight0.1", "iqlearn", 0.45))]
  (row,) = protocol.run_metric_rows(rows, num_resamples=200)
  assert row["estimate"] == pytest.approx(-0.05) and row["measure"] == "forward_kl (greedy)"
  assert row["verdict"] == stats.REPRODUCED  # lower is the claim


def test_known_distribution_sweeps_read_their_exact_numbers():
  rows = [{"sweep": "kd", "point": p, "method": m, "seed": s, "setting": "greedy",
           "forward_kl": 0.5, "reward_teacher_spearman": rho + 0.01 * s,
           "logprob_teacher_spearman": 0.3}
          for s in (0, 1, 2) for p, m, rho in (("mle", "mle", 0.3),
                                               ("iqlearn_td_weight0.1", "iqlearn", 0.5))]
  examples = _examples("mle", "mle", 0.0) + _examples("iqlearn_td_weight0.1", "iqlearn", 1.0)
  examples = [{**r, "sweep": "kd"} for r in examples]  # ROUGE to a teacher sample: ignored
  found = protocol.findings(rows, examples, [], [], num_resamples=200)
  assert [(r["finding"], r["measure"]) for r in found] == [
      (1, "forward_kl (greedy)"), (4, "reward_teacher_spearman (greedy)")]
  assert found[0]["verdict"] == stats.NOT_REPRODUCED  # equal forward KL: [0, 0]
  assert found[1]["estimate"] == pytest.approx(0.21)  # reward 0.51 vs log pi 0.3
  assert found[1]["verdict"] == stats.REPRODUCED


def test_input_rows_count_arithmetic_solution_orders():
  ident = {"sweep": "a", "point": "mle", "method": "mle", "seed": 0}
  valid = ["x = 1 + 2 #### 3", "x = 2 + 1 #### 3"]  # a question's two solution orders
  outputs = ["x = 1 + 2 #### 3", "x  = 2 + 1 #### 3", "x = 1 + 2 #### 3", "wrong"]
  record = {"index": 0, "input": "q?", "samples": [
      {"output": o, "scores": {"correct": 100.0}} for o in outputs]}
  (row,) = protocol.input_rows(ident, 1.0, [record], lambda q: valid if q == "q?" else None)
  assert row["valid_orders"] == 2
  # Orders [0, 1, 0] of the valid samples: plug-in entropy of (2/3, 1/3).
  p = np.array([2 / 3, 1 / 3])
  assert row["order_entropy"] == pytest.approx(-np.sum(p * np.log(p)))
  (other,) = protocol.input_rows(ident, 1.0, [{**record, "input": "unknown"}],
                                 lambda q: valid if q == "q?" else None)
  assert "valid_orders" not in other
  (none_valid,) = protocol.input_rows(ident, 1.0, [{**record, "samples": record["samples"][3:]}],
                                      lambda q: valid)
  assert none_valid["valid_orders"] == 0 and none_valid["order_entropy"] is None


def test_known_distribution_samples_are_scored_by_the_teacher():
  teacher = known_distribution.Teacher()
  prompt = [3, 1, 4, 1, 5, 9, 2, 6]
  text = known_distribution.format_symbols
  quality = known_distribution.sample_log_prob_per_token
  # A sample that ended: its symbols, then EOS, per token.
  assert quality(teacher, text(prompt), "7 8") == pytest.approx(
      teacher.log_prob(prompt, [7, 8, teacher.eos]) / 3)
  # One that reached the limit (24 symbols, no EOS): the first 23, then EOS.
  long = list(range(24))
  assert quality(teacher, text(prompt), text(long)) == pytest.approx(
      teacher.log_prob(prompt, long[:23] + [teacher.eos]) / 24)
  assert math.isnan(quality(teacher, text(prompt), "7 x"))
  assert math.isnan(quality(teacher, text(prompt), "7 99"))
  ident = {"sweep": "kd", "point": "mle", "method": "mle", "seed": 0}
  samples = [{"output": o, "scores": {"rouge1": 50.0}, "num_tokens": n}
             for o, n in (("7 8", 3), ("7 8", 3), (text(long), 24))]
  (row,) = protocol.input_rows(ident, 1.0, [{"index": 0, "input": text(prompt),
                                             "samples": samples}],
                               sample_quality=functools.partial(quality, teacher),
                               max_length=24)
  assert row["quality"] == pytest.approx(np.mean([quality(teacher, text(prompt), s["output"])
                                                  for s in samples]))
  assert row["eos_rate"] == pytest.approx(2 / 3)  # the 24-token sample did not end
  assert row["bleu_diversity"] == pytest.approx(100 - row["self_bleu"])


def test_target_length_reads_the_run_config(tmp_path):
  (tmp_path / "config.gin").write_text(
      "train.model = @decoder_only()\ntrain.feature_lengths = {'inputs': 9, 'targets': 24}\n")
  assert protocol.target_length(str(tmp_path)) == 24
  assert protocol.target_length(str(tmp_path / "missing")) is None


def test_frontier_rows_read_each_diversity_measure():
  inputs = _inputs("mle", "mle", 0.0) + _inputs("iqlearn_td_weight0.1", "iqlearn", 3.0)
  inputs = [{**r, "bleu_diversity": 100 * r["distinct"]} for r in inputs]
  rows = protocol.frontier_rows(inputs, num_resamples=100)
  assert [r["measure"] for r in rows] == ["quality gap at matched distinct",
                                          "quality gap at matched bleu_diversity"]
  assert all(r["estimate"] == pytest.approx(3.0) for r in rows)
  one_temperature = [r for r in inputs if r["temperature"] == 1.0]
  assert protocol.frontier_rows(one_temperature, num_resamples=100) == []


def test_reward_rows_compare_with_the_stronger_log_pi_baseline():
  inputs = _inputs("iqlearn_td_weight0.1", "iqlearn", 0.0)
  inputs = [{**r, "rho_logprob": 0.4 + 0.1 * r["index"]} for r in inputs]  # beats normalised
  (row,) = protocol.reward_rows(inputs, num_resamples=100)
  assert row["comparison"] == "iqlearn_td_weight0.1: reward - logprob"
  assert row["estimate"] == pytest.approx(0.1)


def test_summary_rows_by_hand():
  rows = [{"sweep": "kd", "point": p, "method": m, "seed": s, "status": "ok",
           "setting": "greedy", "forward_kl": kl + 0.1 * s}
          for s in (0, 1) for p, m, kl in (("mle", "mle", 1.0), ("iq", "iqlearn", 2.0))]
  rows.append({"sweep": "kd", "point": "subset", "method": "mle", "seed": 0, "status": "ok",
               "setting": "greedy", "train_examples": 100, "forward_kl": 9.0})
  inputs = [{"sweep": "kd", "point": "mle", "seed": s, "temperature": t, "index": i,
             "quality": q + s, "eos_rate": 1.0}
            for s in (0, 1) for i, q in enumerate((-2.0, -4.0)) for t in (0.5, 1.0)]
  table = protocol_summary.summary_rows(rows, inputs)
  assert [r["point"] for r in table] == ["mle", "iq"]  # the subset point is left out
  mle, iq = table
  assert mle["seeds"] == 2 and mle["forward KL"] == "1.050 ± 0.050"
  # Per run: quality -3 (seed 0) and -2 (seed 1): mean -2.5, SEM 0.5.
  assert mle["sample quality"] == "-2.500 ± 0.500" and mle["EOS rate"] == "1.000 ± 0.000"
  assert "sample quality" not in iq
  text = protocol_summary.summary_markdown(rows, inputs)
  assert text.startswith("### kd (mean ± SEM over seeds; samples at T = 1)")
  assert "| point | seeds | forward KL | sample quality | EOS rate |" in text


def test_quality_rows_prefer_the_calculator_setting():
  examples = _examples("mle", "mle", 0.0) + _examples("iqlearn_td_weight0.1", "iqlearn", 1.0)
  examples += [{**r, "setting": "greedy_calc", "score": r["score"] + (2.0 if r["method"] ==
                                                                       "iqlearn" else 0.0)}
               for r in examples]
  (row,) = protocol.quality_rows(examples, num_resamples=100)
  assert row["measure"] == "greedy_calc score" and row["estimate"] == pytest.approx(3.0)


def test_frontier_rows_skip_a_saturated_measure():
  inputs = _inputs("mle", "mle", 0.0) + _inputs("iqlearn_td_weight0.1", "iqlearn", 3.0)
  # Every sample distinct at both temperatures: no frontier on `distinct`.
  inputs = [{**r, "bleu_diversity": 100 * r["distinct"], "distinct": 1.0} for r in inputs]
  (row,) = protocol.frontier_rows(inputs, num_resamples=100)
  assert row["measure"] == "quality gap at matched bleu_diversity"


def test_finding_2_needs_every_baseline():
  def row(other, verdict, estimate):
    return {"finding": 2, "sweep": "s", "comparison": f"iq - {other}",
            "measure": "quality gap at matched bleu_diversity", "estimate": estimate,
            "low": estimate - 0.1, "high": estimate + 0.1, "confidence": 0.99,
            "smallest_detectable": 0.05, "verdict": verdict, "n": "5 seeds"}
  beats_weak_only = [row("mle", stats.INCONCLUSIVE, 0.02),
                     row("mle_entropy_b0.3", stats.REPRODUCED, 0.5)]
  (verdict,) = [v for v in protocol.verdicts(beats_weak_only) if v["finding"] == 2]
  assert verdict["verdict"] == stats.INCONCLUSIVE and verdict["shown"] == "s: iq - mle"
  beats_all = [row("mle", stats.REPRODUCED, 0.3), row("mle_entropy_b0.3", stats.REPRODUCED, 0.5)]
  (verdict,) = [v for v in protocol.verdicts(beats_all) if v["finding"] == 2]
  assert verdict["verdict"] == stats.REPRODUCED and verdict["estimate"] == pytest.approx(0.3)
