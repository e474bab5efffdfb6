"""Known-distribution numbers from hand-made evaluate summaries: CSV columns, the per-position
CSV, mean ± SEM over seeds and the three figures (no training)."""
import json
import math
import os

import pytest

from irl_lm.experiments import __main__ as cli
from irl_lm.experiments import figures, results, sweeps
from tests.experiments import fakes

SEEDS = (0, 1, 2)
# point -> (forward KL of seed 0, reverse KL of seed 0); seed k adds k to both.
KL = {"mle": (1.0, 4.0), "iqlearn_td_weight0.1": (2.0, 3.0)}


def _add_known_distribution(run_dir: str, point: str, seed: int) -> None:
  """Adds the known-distribution block to the fake run's evaluate summary (top level) and a
  different forward KL to its greedy setting."""
  [path] = [os.path.join(run_dir, "eval", d, "summary.json")
            for d in os.listdir(os.path.join(run_dir, "eval"))]
  with open(path) as f:
    summary = json.load(f)
  forward, reverse = KL[point]
  summary.update(forward_kl=forward + seed, reverse_kl=reverse + seed, coverage=0.5,
                 reward_teacher_spearman=0.1 * (seed + 1),
                 known_distribution={
                     "teacher_entropy": 2.5, "model_sample_entropy": 2.0 + seed,
                     "logprob_teacher_spearman": {"rho": -0.2, "p_value": 0.3},
                     "teacher_logprob_by_position": [-1.0 - seed, -2.0, -3.0 * (seed + 1)],
                     "baselines": {"uniform": {"forward_kl": 9.0}}})
  summary["settings"]["greedy"]["forward_kl"] = 100.0
  with open(path, "w") as f:
    json.dump(summary, f)


@pytest.fixture
def out(tmp_path):
  out = str(tmp_path / "out")
  sweep = sweeps.make_sweep(
      "kd", ["gin/known_distribution_tiny.gin"], seeds=SEEDS,
      points=[{"name": "mle", "method": "mle", "bindings": []}],
      grids=[{"method": "iqlearn", "parameter": "IQLearn.td_weight", "column": "td_weight",
              "values": [0.1]}])
  runs = sweeps.expand(sweep, out)
  sweeps.write_manifest(sweep, runs, out)
  for run in runs:
    fakes.fake_run(run.run_dir, settings=("greedy",))
    _add_known_distribution(run.run_dir, run.point, run.seed)
  return out


def test_known_distribution_metrics_reads_top_level_and_block():
  summary = {"forward_kl": 1.5, "coverage": 0.25, "reverse_kl": None,
             "known_distribution": {"teacher_entropy": 2, "logprob_teacher_spearman":
                                    {"rho": 0.4}, "model_sample_entropy": "n/a"}}
  assert results.known_distribution_metrics(summary) == {
      "forward_kl": 1.5, "coverage": 0.25, "teacher_entropy": 2.0,
      "logprob_teacher_spearman": 0.4}
  assert results.known_distribution_metrics({"scores": {"rouge1": 3.0}}) == {}
  assert results.teacher_logprob_positions(
      {"known_distribution": {"teacher_logprob_by_position": [-1, -2.5]}}) == [
          {"position": 0, "teacher_logprob": -1.0}, {"position": 1, "teacher_logprob": -2.5}]


def test_rows_columns_and_aggregate(out):
  rows = results.collect(out)
  kd = [r for r in rows if r["setting"] == results.KNOWN_DISTRIBUTION_SETTING]
  assert [(r["point"], r["seed"]) for r in kd] == [
      ("mle", 0), ("mle", 1), ("mle", 2), ("iqlearn_td_weight0.1", 0),
      ("iqlearn_td_weight0.1", 1), ("iqlearn_td_weight0.1", 2)]
  assert kd[4]["forward_kl"] == 3.0 and kd[4]["reverse_kl"] == 4.0
  assert kd[4]["reward_teacher_spearman"] == pytest.approx(0.2)
  assert kd[4]["logprob_teacher_spearman"] == -0.2 and kd[4]["teacher_entropy"] == 2.5
  assert kd[4]["model_sample_entropy"] == 3.0 and kd[4]["checkpoint_step"] == 10
  greedy = [r for r in rows if r["setting"] == "greedy"]
  assert {r["forward_kl"] for r in greedy} == {100.0}  # a setting's own numbers stay its own
  assert all("forward_kl" not in r for r in rows if r["setting"] == results.FINAL_SETTING)

  order = results.results_columns(rows)
  assert order[-7:] == list(results.KNOWN_DISTRIBUTION_COLUMNS)
  assert order.index("td_weight") < order.index("status")  # still the only swept column
  agg = {(a["point"], a["setting"]): a for a in results.aggregate(rows)}
  mle = agg[("mle", "known_distribution")]
  assert mle["forward_kl_mean"] == 2.0 and mle["forward_kl_n"] == 3
  assert mle["forward_kl_sem"] == pytest.approx(1.0 / math.sqrt(3))
  assert mle["coverage_sem"] == 0.0 and mle["teacher_entropy_mean"] == 2.5


def test_positions_csv_and_cli_files(out):
  positions = results.collect_positions(out)
  assert len(positions) == 6 * 3
  first = positions[0]
  assert (first["point"], first["seed"], first["setting"], first["position"],
          first["teacher_logprob"]) == ("mle", 0, "known_distribution", 0, -1.0)
  assert positions[-1]["teacher_logprob"] == -9.0 and positions[-1]["td_weight"] == 0.1
  paths = cli.write_results(out)
  assert paths["positions"] == os.path.join(out, results.POSITIONS_FILE)
  assert [{k: v for k, v in row.items() if v is not None}
          for row in results.read_csv(paths["positions"])] == positions
  header = open(paths["results"]).readline().strip().split(",")
  assert header[-7:] == list(results.KNOWN_DISTRIBUTION_COLUMNS)


def test_quick_sweep_results_gain_no_known_distribution_columns(tmp_path):
  out = str(tmp_path / "out")
  sweep = sweeps.load_sweep(fakes.sweep_file(tmp_path))
  runs = sweeps.expand(sweep, out)
  sweeps.write_manifest(sweep, runs, out)
  for run in runs:
    fakes.fake_run(run.run_dir)
  rows = results.collect(out)
  assert not set(results.KNOWN_DISTRIBUTION_COLUMNS) & set(results.results_columns(rows))
  assert "positions" not in cli.write_results(out)
  items = figures.make_all(rows, results.collect_curves(out), str(tmp_path / "figures"))
  assert not any(name.startswith("known_distribution") for name in items)


def test_figures(out, tmp_path):
  rows, positions = results.collect(out), results.collect_positions(out)
  assert len(figures.known_distribution_runs(rows)) == 6
  items = figures.make_all(rows, results.collect_curves(out), str(tmp_path / "figs"),
                           positions=positions)
  for name in ("known_distribution_kl", "known_distribution_positions",
               "known_distribution_spearman"):
    assert os.path.getsize(items[name]["png"]) > 0 and os.path.getsize(items[name]["csv"]) > 0
  kl = {p["point"]: p for p in items["known_distribution_kl"]["rows"]}
  assert kl["mle"]["forward_kl_mean"] == 2.0 and kl["iqlearn_td_weight0.1"]["reverse_kl_mean"] \
      == 4.0
  assert kl["mle"]["forward_kl_sem"] == pytest.approx(1.0 / math.sqrt(3))
  curve = {(p["point"], p["position"]): p for p in items["known_distribution_positions"]["rows"]}
  assert curve[("mle", 0)]["teacher_logprob_mean"] == -2.0  # -1, -2, -3 over seeds
  assert curve[("mle", 2)]["teacher_logprob_mean"] == -6.0
  assert curve[("mle", 1)]["teacher_logprob_sem"] == 0.0
  bars = {p["point"]: p for p in items["known_distribution_spearman"]["rows"]}
  assert bars["mle"]["reward_teacher_spearman_mean"] == pytest.approx(0.2)
  assert bars["mle"]["logprob_teacher_spearman_mean"] == pytest.approx(-0.2)


def test_known_distribution_quick_sweep_file():
  sweep = sweeps.load_sweep("gin/experiments/known_distribution_quick.gin")
  runs = sweeps.expand(sweep, "out")
  assert len(runs) == 8 * 3 and sweep.seeds == (0, 1, 2)
  by_point = {r.point: r for r in runs if r.seed == 0}
  assert [(p, r.columns["method"]) for p, r in by_point.items()] == [
      ("mle", "mle"), ("mle_entropy_entropy_weight0.01", "mle_entropy"),
      ("mle_entropy_entropy_weight0.1", "mle_entropy"),
      ("mle_entropy_entropy_weight0.3", "mle_entropy"), ("iqlearn_td_weight0.001", "iqlearn"),
      ("iqlearn_td_weight0.01", "iqlearn"), ("iqlearn_td_weight0.1", "iqlearn"),
      ("iqlearn_online_online_mix0.1", "iqlearn_online")]
  assert {r.gin_files for r in runs if r.columns["method"] != "iqlearn_online"} == {
      ("gin/known_distribution_tiny.gin",)}
  assert "train.objective = @MLE()" in by_point["mle_entropy_entropy_weight0.3"].train_bindings
  assert "MLE.entropy_weight = 0.3" in by_point["mle_entropy_entropy_weight0.3"].train_bindings
  assert "IQLearn.td_weight = 0.001" in by_point["iqlearn_td_weight0.001"].train_bindings
  online = by_point["iqlearn_online_online_mix0.1"]
  assert online.gin_files[1] == "gin/methods/iqlearn_online.gin"
  assert {"train.objective = @IQLearnOnline()", "IQLearnOnline.online_mix = 0.1",
          "TrainSettings.pack = False"} <= set(online.train_bindings)
  assert all(r.evaluate_bindings is not None for r in runs)
