"""Results: every run × setting in the CSV (failed runs too), curves, mean ± SEM by hand."""
import math

import pytest

from irl_lm.experiments import results, sweeps
from tests.experiments import fakes


def test_mean_sem_by_hand():
  mean, sem, n = results.mean_sem([1.0, 2.0, 6.0])
  # mean 3; sample variance ((-2)^2 + (-1)^2 + 3^2) / 2 = 7; SEM = sqrt(7) / sqrt(3)
  assert (mean, n) == (3.0, 3) and sem == pytest.approx(math.sqrt(7 / 3))
  assert results.mean_sem([4.0, None]) == (4.0, None, 1)
  assert results.mean_sem([]) == (None, None, 0)


def test_aggregate_groups_seeds_and_keeps_configuration():
  rows = [{"point": "a", "setting": "greedy", "method": "iqlearn", "td_weight": 0.1,
           "seed": s, "status": "ok", "rouge1": v, "self_bleu": v / 2}
          for s, v in enumerate([10.0, 14.0])]
  rows.append({"point": "a", "setting": "greedy", "method": "iqlearn", "td_weight": 0.1,
               "seed": 2, "status": "failed", "rouge1": None})
  rows.append({"point": "b", "setting": "greedy", "method": "mle", "seed": 0, "status": "ok",
               "rouge1": 5.0})
  a, b = results.aggregate(rows, by=("point", "setting"))
  assert (a["method"], a["td_weight"], a["n_runs"], a["n_ok"]) == ("iqlearn", 0.1, 3, 2)
  assert a["rouge1_mean"] == 12.0 and a["rouge1_n"] == 2
  assert a["rouge1_sem"] == pytest.approx(math.sqrt(8.0) / math.sqrt(2))  # std = 2*sqrt(2)
  assert a["self_bleu_mean"] == 6.0
  assert b["rouge1_mean"] == 5.0 and b["rouge1_sem"] is None and b["rouge1_n"] == 1
  assert "seed" not in a and "status" not in a


def _toy_out(tmp_path):
  sweep = sweeps.load_sweep(fakes.sweep_file(tmp_path))
  out = str(tmp_path / "out")
  runs = sweeps.expand(sweep, out)
  sweeps.write_manifest(sweep, runs, out)
  for i, run in enumerate(runs[:-1]):
    fakes.fake_run(run.run_dir, rouge1=10.0 + i, curve=((3, 1.0), (6, 2.0)))
    sweeps._write_json(f"{run.run_dir}/{sweeps.STATUS_FILE}", {"status": "ok"})
  sweeps._write_json(f"{runs[-1].run_dir}/{sweeps.STATUS_FILE}",
                     {"status": "failed", "phase": "train", "returncode": 1})
  return out, runs


def test_csv_has_every_run_and_setting_including_failed(tmp_path):
  out, runs = _toy_out(tmp_path)
  rows = results.collect(out)
  path = results.write_csv(rows, str(tmp_path / "results.csv"), results.results_columns(rows))
  back = results.read_csv(path)
  per_run = {}
  for row in back:
    per_run.setdefault((row["point"], row["seed"]), []).append(row["setting"])
  assert set(per_run) == {(r.point, r.seed) for r in runs}
  for run in runs[:-1]:
    assert per_run[(run.point, run.seed)] == [
        "final_greedy", "greedy", "beam4", "sample_t0.5", "diversity"]
  assert per_run[(runs[-1].point, runs[-1].seed)] == [None]
  header = list(back[0])
  assert header[:5] == ["sweep", "point", "method", "seed", "td_weight"]
  for column in ("status", "step", "setting", "temperature", "beam_size", "rouge1", "rouge2",
                 "self_bleu", "distinct_1", "distinct_2", "mean_entropy",
                 "reward_spearman_rho", "train_steps_per_second", "train_seconds"):
    assert column in header
  first = {r["setting"]: r for r in back if r["point"] == "mle" and r["seed"] == 0}
  assert first["beam4"]["beam_size"] == 4 and first["beam4"]["temperature"] is None
  assert first["greedy"]["temperature"] == 0 and first["greedy"]["beam_size"] is None
  assert first["sample_t0.5"]["temperature"] == 0.5
  assert first["diversity"]["self_bleu"] == 30.0 and first["diversity"]["self_bleu_k"] == 4
  assert first["diversity"]["self_bleu_tokenize"] == "13a"
  assert first["greedy"]["reward_spearman_rho"] == 0.3
  assert first["greedy"]["train_steps_per_second"] == 2.0  # the first (compiling) one is left out
  failed = [r for r in back if r["status"] == "failed"]
  assert len(failed) == 1 and failed[0]["point"] == runs[-1].point
  for setting in ("final_greedy", "greedy", "beam4"):
    row = first[setting]
    assert (row["baseline"], row["baseline_rouge1"]) == ("name_template", 15.0)
    assert row["margin"] == row["rouge1"] - 15.0 == 10.0 - 15.0
  assert first["final_greedy"]["repeated_3gram_rate"] == 0.5
  assert first["greedy"]["repeated_3gram_rate"] == 0.25
  assert "nll" not in header  # the validation loss is in curves.csv, not a results column
  assert header.index("baseline") < header.index("baseline_rouge1") < header.index("margin")
  agg = {(a["point"], a["setting"]): a for a in results.aggregate(back)}
  mle_greedy = [r["rouge1"] - 15.0 for r in back if (r["point"], r["setting"]) == ("mle", "greedy")]
  assert agg[("mle", "greedy")]["margin_mean"] == pytest.approx(sum(mle_greedy) / 2)
  assert agg[("mle", "greedy")]["baseline"] == "name_template"


def test_examples_csv_has_every_example_of_every_setting(tmp_path):
  out, runs = _toy_out(tmp_path)
  rows = results.collect_examples(out)
  path = results.write_csv(rows, str(tmp_path / "examples.csv"), results.EXAMPLE_COLUMNS)
  back = results.read_csv(path)
  assert list(back[0]) == list(results.EXAMPLE_COLUMNS)
  mine = [r for r in back if r["point"] == "mle" and r["seed"] == 0]
  assert [(r["setting"], r["index"]) for r in mine] == [
      ("final_greedy", 3), ("final_greedy", 7), ("greedy", 5), ("beam4", 5),
      ("sample_t0.5", 5)]
  assert mine[1] == {"sweep": "toy", "point": "mle", "method": "mle", "seed": 0,
                     "setting": "final_greedy", "index": 7, "score": 70.0, "length": 8,
                     "reward": -3.5, "log_prob": -7.0}
  failed = (runs[-1].point, runs[-1].seed)  # the failed run wrote none
  assert not [r for r in back if (r["point"], r["seed"]) == failed]


def test_curves_rows_from_metrics_jsonl(tmp_path):
  out, runs = _toy_out(tmp_path)
  curves = results.collect_curves(out)
  mine = [c for c in curves if c["point"] == "mle" and c["seed"] == 0 and
          c["metric"] == "eval_validation/rouge1"]
  assert [(c["step"], c["value"]) for c in mine] == [(3, 1.0), (6, 2.0), (10, 10.0)]
  agg = results.aggregate(curves, by=("sweep", "point", "metric", "step"))
  at6 = [a for a in agg if a["point"] == "mle" and a["step"] == 6 and
         a["metric"] == "eval_validation/rouge1"][0]
  assert at6["value_mean"] == 2.0 and at6["value_n"] == 2 and at6["value_sem"] == 0.0


def test_runs_without_a_status_are_missing_or_incomplete(tmp_path):
  sweep = sweeps.load_sweep(fakes.sweep_file(tmp_path))
  out = str(tmp_path / "out")
  runs = sweeps.expand(sweep, out)
  sweeps.write_manifest(sweep, runs, out)
  fakes.fake_run(runs[0].run_dir)                   # trained and evaluated, e.g. by hand
  fakes.fake_run(runs[1].run_dir, evaluated=False)  # interrupted before its evaluation
  status = {(r["point"], r["seed"]): r["status"] for r in results.collect(out)}
  assert status[("mle", 0)] == "ok" and status[("mle", 1)] == "incomplete"
  assert status[("iqlearn_td_weight1", 1)] == "missing"
  assert len(status) == len(runs)


def test_start_scales_hand_computed():
  def rows(point, td_weight, seed, step, **metrics):
    return [{"sweep": "s", "point": point, "method": "iqlearn", "td_weight": td_weight,
             "seed": seed, "step": step, "metric": f"train/{k}", "value": v}
            for k, v in metrics.items()]
  curves = (rows("iq", 0.5, 0, 20, nll=1.0, td_loss=1.0, grad_norm=1.0)  # a later step: ignored
            + rows("iq", 0.5, 0, 10, nll=4.0, td_loss=10.0, grad_norm=2.0)
            + rows("iq", 0.5, 1, 10, nll=2.0, td_loss=20.0, grad_norm=4.0)
            + rows("mle", "", 0, 10, nll=3.0, td_loss=30.0, grad_norm=1.0)
            + [{"sweep": "s", "point": "iq", "method": "iqlearn", "td_weight": 0.5, "seed": 0,
                "step": 5, "metric": "eval_validation/rouge1", "value": 9.0}])
  by_point = {r["point"]: r for r in results.start_scales(curves)}
  iq = by_point["iq"]
  assert iq["step"] == 10 and iq["td_weight"] == 0.5
  assert iq["nll_mean"] == pytest.approx(3.0) and iq["nll_sem"] == pytest.approx(1.0)
  assert iq["td_term_mean"] == pytest.approx(7.5)  # 0.5 * (10 + 20) / 2
  assert iq["td_term_sem"] == pytest.approx(2.5)  # std(5, 10) / sqrt(2)
  assert iq["td_term_over_nll_mean"] == pytest.approx((1.25 + 5.0) / 2)
  assert iq["grad_norm_n"] == 2
  assert by_point["mle"]["td_term_mean"] == 0.0 and by_point["mle"]["td_loss_mean"] == 30.0
