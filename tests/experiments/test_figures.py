"""Figures: non-empty PNGs and CSVs from a small synthetic results CSV."""
import os

from irl_lm.experiments import figures, report, results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _synthetic_rows():
  rows = []
  points = [("mle", "mle", {}), ("iqlearn_td_weight0.1", "iqlearn", {"td_weight": 0.1}),
            ("iqlearn_td_weight1", "iqlearn", {"td_weight": 1.0}),
            ("mle_entropy_entropy_weight0.1", "mle_entropy", {"entropy_weight": 0.1}),
            ("iqlearn_online_online_mix0.1", "iqlearn_online", {"online_mix": 0.1})]
  for i, (point, method, params) in enumerate(points):
    for seed in range(3):
      base = {"sweep": "quick_cpu", "point": point, "method": method, "seed": seed, **params,
              "status": "ok", "step": 40, "train_steps_per_second": 2.0 - 0.1 * i + 0.01 * seed,
              "train_seconds": 20.0}
      rows.append({**base, "setting": "final_greedy", "temperature": 0.0, "rouge1": 20 + i})
      rows.append({**base, "setting": "greedy", "temperature": 0.0, "rouge1": 20 + i + seed,
                   "reward_spearman_rho": 0.1 * i + 0.01 * seed})
      for t in (0.25, 0.5, 1.0):
        rows.append({**base, "setting": f"sample_t{t:g}", "temperature": t,
                     "rouge1": 20 + i - 10 * t + seed})
      rows.append({**base, "setting": "beam4", "beam_size": 4, "rouge1": 22 + i})
      rows.append({**base, "setting": "diversity", "temperature": 1.0, "rouge1": 10 + i,
                   "self_bleu": 40 - 3 * i + seed, "self_bleu_k": 4,
                   "self_bleu_temperature": 1.0, "self_bleu_tokenize": "13a"})
  rows.append({"sweep": "quick_cpu", "point": "broken", "method": "iqlearn", "seed": 0,
               "status": "failed", "failed_phase": "train", "setting": None})
  return rows


def _synthetic_curves():
  return [{"sweep": "quick_cpu", "point": p, "method": p, "train_examples": 256, "seed": s,
           "step": step, "metric": "eval_validation/rouge1", "value": step / 10 + s + k}
          for k, p in enumerate(("subset_mle", "subset_iqlearn")) for s in range(3)
          for step in (10, 20, 30)]


def test_every_figure_is_a_non_empty_png_with_its_csv(tmp_path):
  rows_path = results.write_csv(_synthetic_rows(), str(tmp_path / "results.csv"))
  curves_path = results.write_csv(_synthetic_curves(), str(tmp_path / "curves.csv"))
  rows, curves = results.read_csv(rows_path), results.read_csv(curves_path)
  timing = {"sample_s": 0.2, "train_step_s": 0.4, "ratio": 0.5, "case": {"batch": 32}}
  items = figures.make_all(rows, curves, str(tmp_path / "figures"), timing)
  assert set(items) == {"table1_timing", "score_vs_self_bleu", "score_vs_temperature",
                        "training_curves", "spearman_table"}
  for name, item in items.items():
    with open(item["png"], "rb") as f:
      assert f.read(8) == PNG_MAGIC, name
    assert os.path.getsize(item["png"]) > 2000, name
    assert item["rows"], name
    assert len(results.read_csv(item["csv"])) == len(item["rows"]), name

  table = {r["item"]: r for r in items["table1_timing"]["rows"]}
  assert table["update: mle"]["ratio_to_mle"] == 1.0
  assert table["update: iqlearn"]["ratio_to_mle"] > 1.0  # fewer steps/s than MLE
  assert table["sampling / update (benchmark)"]["ratio_to_update"] == 0.5
  tradeoff = {r["point"]: r for r in items["score_vs_self_bleu"]["rows"]}
  assert tradeoff["mle"]["self_bleu_mean"] == 41.0 and tradeoff["mle"]["self_bleu_n"] == 3
  assert tradeoff["mle"]["rouge1_mean"] == 21.0  # evaluate mode's greedy, not the final one
  temps = {(r["point"], r["setting"]) for r in items["score_vs_temperature"]["rows"]}
  assert ("mle", "sample_t0.5") in temps and ("iqlearn_td_weight1", "beam4") in temps
  assert not any(p.startswith("mle_entropy") for p, _ in temps)
  assert {r["point"] for r in items["training_curves"]["rows"]} == {"subset_mle",
                                                                    "subset_iqlearn"}
  rho = {r["label"]: r for r in items["spearman_table"]["rows"]}
  assert rho["iqlearn λ=0.1"]["n"] == 3
  assert figures.self_bleu_caption(rows) == "Self-BLEU: K=4 samples/input, T=1, 13a tokens"

  path = report.write_report(str(tmp_path), items, rows, title="t", timing=timing)
  text = open(path).read()
  assert "K=4 samples/input" in text and "broken" in text and "figures/table1_timing.png" in text


def test_figures_from_empty_results_still_write_files(tmp_path):
  rows = [{"sweep": "s", "point": "p", "method": "mle", "seed": 0, "status": "failed",
           "setting": None, "rouge1": None}]
  items = figures.make_all(rows, [], str(tmp_path), None)
  for item in items.values():
    assert os.path.getsize(item["png"]) > 0 and os.path.getsize(item["csv"]) > 0
