"""The paper's tables and figures from the results CSVs: a PNG and a CSV per item.

Each function takes `results.collect` rows (or `results.read_csv` of ``results.csv``), writes
``<out_dir>/<item>.png`` and ``<out_dir>/<item>.csv`` and returns {'png', 'csv', 'rows'}; the
means and standard errors are `results.aggregate`'s (over seeds, per point). Every title names
Self-BLEU's K, temperature and tokenisation.

* `table1_timing`: update time per method relative to MLE (the runs' ``train/steps_per_second``)
  and sampling one batch relative to an update (`timing.measure` figures).
* `score_vs_self_bleu`: greedy task score vs Self-BLEU per method and regularisation strength.
* `score_vs_temperature`: task score vs sampling temperature, with greedy and beam search.
* `training_curves`: validation score over training (``curves.csv``), e.g. on data subsets.
* `spearman_table`: Spearman rho of summed implicit reward vs task score, by method and λ.
* Known-distribution sweeps (`gin/experiments/known_distribution_quick.gin`):
  `known_distribution_kl` (forward vs reverse KL per method), `known_distribution_positions`
  (the teacher's log-probability of samples by position), `known_distribution_spearman`
  (implicit reward's and log π's Spearman ρ with the teacher's log-probability).
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from irl_lm.experiments import results  # noqa: E402

Row = results.Row
# The regularisation strength column of each method (λ for IQLearn, β for MLE + entropy, α).
STRENGTH = {"iqlearn": "td_weight", "mle_entropy": "entropy_weight",
            "iqlearn_online": "online_mix", "gail": "kl_weight"}
SYMBOL = {"td_weight": "λ", "entropy_weight": "β", "online_mix": "α", "kl_weight": "KL"}


def primary_score(rows: Sequence[Row]) -> str:
  """The task's headline score column: the first of `results.SCORE_NAMES` the rows have
  (the first of them when none has a score, e.g. every run failed)."""
  present = set(results.columns(rows))
  return next((name for name in results.SCORE_NAMES if name in present),
              results.SCORE_NAMES[0])


def self_bleu_caption(rows: Sequence[Row]) -> str:
  """'Self-BLEU: K=4 samples/input, T=1, 13a tokens' from the rows' diversity columns."""
  def first(column: str) -> Any:
    return next((r[column] for r in rows if r.get(column) is not None), None)
  k, t, tok = first("self_bleu_k"), first("self_bleu_temperature"), first("self_bleu_tokenize")
  if k is None:
    return "Self-BLEU: not measured"
  return f"Self-BLEU: K={k} samples/input, T={t:g}, {tok} tokens"


def label(row: Mapping[str, Any]) -> str:
  """'iqlearn λ=0.1', 'mle_entropy β=0.01', 'mle'."""
  column = STRENGTH.get(row.get("method", ""))
  if column and row.get(column) is not None:
    return f"{row['method']} {SYMBOL[column]}={row[column]:g}"
  return str(row.get("method") or row.get("point"))


def _finish(fig: Any, rows: list[Row], out_dir: str, name: str) -> dict[str, Any]:
  os.makedirs(out_dir, exist_ok=True)
  png = os.path.join(out_dir, f"{name}.png")
  fig.tight_layout()
  fig.savefig(png, dpi=100)
  plt.close(fig)
  table = rows or [{"note": f"no data for {name} in these results"}]
  return {"png": png, "csv": results.write_csv(table, os.path.join(out_dir, f"{name}.csv")),
          "rows": rows}


def _full_data(rows: Sequence[Row]) -> list[Row]:
  """Rows of points trained on the whole train split (no `train_examples` subset)."""
  return [r for r in rows if r.get("train_examples") is None]


def table1_timing(rows: Sequence[Row], timing: Optional[Mapping[str, Any]], out_dir: str
                  ) -> dict[str, Any]:
  """Table 1: update time per method relative to MLE; sampling time relative to an update.

  Output rows: item, ms_mean, ms_sem, n (runs), ratio_to_mle (update time / MLE's,
  same machine and sweep); then 'sampling one batch' rows from `timing` (``sample_s``,
  ``train_step_s``: the same batch shape) with ratio_to_update.
  """
  updates = [{**r, "value": 1000.0 / r["train_steps_per_second"]}
             for r in results.per_run(_full_data(rows)) if r.get("train_steps_per_second")]
  by_method = results.aggregate(updates, by=("method",))
  mle = next((m["value_mean"] for m in by_method if m["method"] == "mle"), None)
  table = [{"item": f"update: {m['method']}", "ms_mean": m["value_mean"],
            "ms_sem": m["value_sem"], "n": m["value_n"],
            "ratio_to_mle": m["value_mean"] / mle if mle else None} for m in by_method]
  if timing and timing.get("sample_s"):
    table.append({"item": "sampling / update (benchmark)",
                  "ms_mean": 1000.0 * timing["sample_s"],
                  "ratio_to_update": timing["sample_s"] / timing["train_step_s"]})
    if mle:
      table.append({"item": "sampling / MLE update (sweep)",
                    "ms_mean": 1000.0 * timing["sample_s"],
                    "ratio_to_update": 1000.0 * timing["sample_s"] / mle})
  fig, ax = plt.subplots(figsize=(8, 3.5))
  names = [t["item"].replace("update: ", "") for t in table]
  ratios = [t.get("ratio_to_mle") or t.get("ratio_to_update") or 0.0 for t in table]
  ax.barh(names, ratios)
  for i, value in enumerate(ratios):
    ax.text(value, i, f" {value:.2f}", va="center")
  ax.axvline(1.0, color="grey", lw=0.8)
  ax.set_xlim(0, max(ratios + [1.0]) * 1.2)
  ax.set_xlabel("update time / MLE update time; sampling one batch / one update")
  ax.set_title("Table 1: update and sampling time (same machine, same sweep)\n"
               f"{self_bleu_caption(rows)} (Self-BLEU not used here)", fontsize=9)
  return _finish(fig, table, out_dir, "table1_timing")


def _joined(rows: Sequence[Row], score: str) -> list[Row]:
  """Per run: the greedy score (evaluate mode's 'greedy', else the end-of-training one) and
  the diversity row's Self-BLEU, with the run's identity and swept columns."""
  runs: dict[tuple, Row] = {}
  for row in rows:
    key = (row.get("sweep"), row.get("point"), row.get("seed"))
    run = runs.setdefault(key, {k: v for k, v in row.items()
                                if k not in results.MEASURED and k not in
                                results.METRIC_COLUMNS and k not in results.SETTING_COLUMNS})
    if row.get("setting") == "greedy" or (row.get("setting") == results.FINAL_SETTING and
                                          score not in run):
      run[score] = row.get(score)
    if row.get("setting") == results.DIVERSITY_SETTING:
      run.update({k: row.get(k) for k in ("self_bleu", "self_bleu_k", "self_bleu_temperature",
                                          "self_bleu_tokenize")})
  return list(runs.values())


def score_vs_self_bleu(rows: Sequence[Row], out_dir: str) -> dict[str, Any]:
  """Figure: greedy task score vs Self-BLEU (mean ± SEM both axes) per method and strength."""
  score = primary_score(rows)
  points = [p for p in results.aggregate(_joined(_full_data(rows), score), by=("sweep", "point"))
            if p.get("self_bleu_mean") is not None and p.get(f"{score}_mean") is not None]
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for method in sorted({p.get("method") for p in points}, key=str):
    mine = sorted((p for p in points if p.get("method") == method),
                  key=lambda p: p.get(STRENGTH.get(method, ""), 0) or 0)
    ax.errorbar([p["self_bleu_mean"] for p in mine], [p[f"{score}_mean"] for p in mine],
                xerr=[p["self_bleu_sem"] or 0 for p in mine],
                yerr=[p[f"{score}_sem"] or 0 for p in mine], marker="o", capsize=3,
                label=method, ls="-" if len(mine) > 1 else "none")
    for p in mine:
      ax.annotate(label(p).replace(f"{method} ", ""), (p["self_bleu_mean"], p[f"{score}_mean"]),
                  fontsize=7, xytext=(3, 3), textcoords="offset points")
  ax.set_xlabel("Self-BLEU (lower = more diverse)")
  ax.set_ylabel(f"{score} (greedy)")
  ax.set_title(f"Task score vs diversity, mean ± SEM over seeds\n{self_bleu_caption(rows)}",
               fontsize=9)
  if points:
    ax.legend(fontsize=8)
  return _finish(fig, points, out_dir, "score_vs_self_bleu")


def score_vs_temperature(rows: Sequence[Row], out_dir: str,
                         methods: Sequence[str] = ("mle", "iqlearn")) -> dict[str, Any]:
  """Figure: task score vs sampling temperature (greedy at T = 0) and beam search (dashed),
  for the points of `methods` that were evaluated at several temperatures."""
  score = primary_score(rows)
  chosen = [r for r in _full_data(rows) if r.get("method") in methods and (
      str(r.get("setting", "")).startswith(("sample_t", "greedy", "beam")))]
  agg = results.aggregate(chosen, by=("sweep", "point", "setting"))
  sampled = {p["point"] for p in agg if str(p["setting"]).startswith("sample_t")}
  agg = [p for p in agg if p["point"] in sampled and p.get(f"{score}_mean") is not None]
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for i, point in enumerate(sorted(sampled)):
    curve = sorted((p for p in agg if p["point"] == point and p.get("beam_size") is None),
                   key=lambda p: p.get("temperature") or 0.0)
    color = f"C{i}"
    if curve:
      ax.errorbar([p.get("temperature") or 0.0 for p in curve],
                  [p[f"{score}_mean"] for p in curve],
                  yerr=[p[f"{score}_sem"] or 0 for p in curve], marker="o", capsize=3,
                  color=color, label=f"{label(curve[0])} (T=0: greedy)")
    for beam in (p for p in agg if p["point"] == point and p.get("beam_size")):
      ax.axhline(beam[f"{score}_mean"], color=color, ls="--", lw=1,
                 label=f"{label(beam)} beam{beam['beam_size']}")
  ax.set_xlabel("sampling temperature")
  ax.set_ylabel(score)
  ax.set_title(f"Task score vs temperature; greedy and beam, mean ± SEM\n"
               f"{self_bleu_caption(rows)} (Self-BLEU not plotted)", fontsize=9)
  if agg:
    ax.legend(fontsize=7)
  return _finish(fig, agg, out_dir, "score_vs_temperature")


def training_curves(curves: Sequence[Row], out_dir: str, rows: Sequence[Row] = (),
                    metric: Optional[str] = None) -> dict[str, Any]:
  """Figure: validation score over training per point (mean ± SEM band over seeds), for the
  points with more than one evaluation (periodic `EvalSettings.every` records); only the data
  subset points (a `train_examples` column) when there are any."""
  metrics = sorted({c["metric"] for c in curves})
  if metric is None:
    metric = next((m for name in results.SCORE_NAMES for m in metrics
                   if m.endswith(f"/{name}")), metrics[0] if metrics else "")
  chosen = [c for c in curves if c["metric"] == metric]
  if any(c.get("train_examples") is not None for c in chosen):  # the over-fitting study
    chosen = [c for c in chosen if c.get("train_examples") is not None]
  agg = results.aggregate(chosen, by=("sweep", "point", "metric", "step"))
  steps_per_point: dict[str, set] = {}
  for p in agg:
    steps_per_point.setdefault(p["point"], set()).add(p["step"])
  agg = [p for p in agg if len(steps_per_point[p["point"]]) > 1]
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for i, point in enumerate(sorted({p["point"] for p in agg})):
    curve = sorted((p for p in agg if p["point"] == point), key=lambda p: p["step"])
    x = [p["step"] for p in curve]
    y = [p["value_mean"] for p in curve]
    sem = [p["value_sem"] or 0.0 for p in curve]
    ax.plot(x, y, marker="o", color=f"C{i}", label=f"{point}")
    ax.fill_between(x, [a - b for a, b in zip(y, sem)], [a + b for a, b in zip(y, sem)],
                    color=f"C{i}", alpha=0.2)
  ax.set_xlabel("training step")
  ax.set_ylabel(metric)
  ax.set_title(f"Validation score over training (data subsets), mean ± SEM\n"
               f"{self_bleu_caption(rows or curves)}", fontsize=9)
  if agg:
    ax.legend(fontsize=7)
  return _finish(fig, agg, out_dir, "training_curves")


def spearman_table(rows: Sequence[Row], out_dir: str, setting: str = "greedy"
                   ) -> dict[str, Any]:
  """Table: Spearman rho (summed implicit reward vs per-example task score) of `setting`'s
  outputs, mean ± SEM over seeds, by method and λ (and β, α)."""
  agg = [p for p in results.aggregate([r for r in _full_data(rows)
                                       if r.get("setting") == setting], by=("sweep", "point"))
         if p.get("reward_spearman_rho_mean") is not None]
  table = [{"method": p.get("method"), "label": label(p),
            **{c: p.get(c) for c in STRENGTH.values() if p.get(c) is not None},
            "rho_mean": p["reward_spearman_rho_mean"], "rho_sem": p["reward_spearman_rho_sem"],
            "n": p["reward_spearman_rho_n"]} for p in agg]
  fig, ax = plt.subplots(figsize=(6, 0.6 + 0.35 * max(len(table), 1)))
  ax.axis("off")
  cells = [[t["label"], f"{t['rho_mean']:.3f}",
            "" if t["rho_sem"] is None else f"± {t['rho_sem']:.3f}", str(t["n"])] for t in table]
  if cells:
    ax.table(cellText=cells, colLabels=["method", "Spearman ρ", "SEM", "n"], loc="center")
  ax.set_title(f"Implicit reward vs task score ({setting} outputs)\n"
               f"{self_bleu_caption(rows)} (Self-BLEU not used)", fontsize=9)
  return _finish(fig, table, out_dir, "spearman_table")


def known_distribution_runs(rows: Sequence[Row]) -> list[Row]:
  """One row per run with known-distribution numbers (`results.KNOWN_DISTRIBUTION_COLUMNS`):
  the evaluate summary's top-level row (setting 'known_distribution') when there is one, else
  the run's first such row. Pure."""
  ranked = sorted((r for r in rows if r.get("forward_kl") is not None),
                  key=lambda r: r.get("setting") != results.KNOWN_DISTRIBUTION_SETTING)
  return results.per_run(ranked)


def _by_point(rows: Sequence[Row]) -> list[Row]:
  """`results.aggregate` per (sweep, point), ordered by method, then strength."""
  agg = results.aggregate(rows, by=("sweep", "point"))
  return sorted(agg, key=lambda p: (str(p.get("method")),
                                    p.get(STRENGTH.get(p.get("method", ""), ""), 0) or 0))


def known_distribution_kl(rows: Sequence[Row], out_dir: str) -> dict[str, Any]:
  """Figure: forward KL(teacher ‖ model) vs reverse KL(model ‖ teacher) per point, mean ± SEM
  over seeds on both axes, one colour per method."""
  points = [p for p in _by_point(known_distribution_runs(rows))
            if p.get("forward_kl_mean") is not None and p.get("reverse_kl_mean") is not None]
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for i, method in enumerate(sorted({p.get("method") for p in points}, key=str)):
    mine = [p for p in points if p.get("method") == method]
    ax.errorbar([p["forward_kl_mean"] for p in mine], [p["reverse_kl_mean"] for p in mine],
                xerr=[p["forward_kl_sem"] or 0 for p in mine],
                yerr=[p["reverse_kl_sem"] or 0 for p in mine], marker="o", capsize=3,
                color=f"C{i}", label=method, ls="-" if len(mine) > 1 else "none")
    for p in mine:
      ax.annotate(label(p).replace(f"{method} ", ""), (p["forward_kl_mean"],
                                                       p["reverse_kl_mean"]),
                  fontsize=7, xytext=(3, 3), textcoords="offset points")
  ax.set_xlabel("forward KL(teacher ‖ model) (nats; lower = more coverage)")
  ax.set_ylabel("reverse KL(model ‖ teacher) (nats; lower = fewer bad samples)")
  ax.set_title("Known distribution: forward vs reverse KL, mean ± SEM over seeds", fontsize=9)
  if points:
    ax.legend(fontsize=8)
  table = [{k: p.get(k) for k in ("sweep", "point", "method", *STRENGTH.values(), "n_ok",
                                  "forward_kl_mean", "forward_kl_sem", "reverse_kl_mean",
                                  "reverse_kl_sem", "coverage_mean", "coverage_sem")
            if k in p} for p in points]
  return _finish(fig, table, out_dir, "known_distribution_kl")


def known_distribution_positions(positions: Sequence[Row], out_dir: str,
                                 setting: str = results.KNOWN_DISTRIBUTION_SETTING
                                 ) -> dict[str, Any]:
  """Figure: the teacher's log-probability of the model's samples at each position, per point
  (mean ± SEM band over seeds), from `results.collect_positions` rows of `setting` (the first
  setting present when it has none)."""
  settings = [p["setting"] for p in positions]
  chosen_setting = setting if setting in settings else (settings[0] if settings else setting)
  chosen = [p for p in positions if p["setting"] == chosen_setting]
  agg = results.aggregate(chosen, by=("sweep", "point", "position"))
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for i, point in enumerate(p["point"] for p in _by_point(chosen)):
    curve = sorted((p for p in agg if p["point"] == point), key=lambda p: p["position"])
    x = [p["position"] for p in curve]
    y = [p["teacher_logprob_mean"] for p in curve]
    sem = [p["teacher_logprob_sem"] or 0.0 for p in curve]
    ax.plot(x, y, marker=".", color=f"C{i % 10}", label=label(curve[0]))
    ax.fill_between(x, [a - b for a, b in zip(y, sem)], [a + b for a, b in zip(y, sem)],
                    color=f"C{i % 10}", alpha=0.2)
  ax.set_xlabel("position in the sample")
  ax.set_ylabel("teacher log-probability of the sampled token")
  ax.set_title(f"Known distribution: teacher log-prob of samples by position ({chosen_setting})"
               ", mean ± SEM over seeds", fontsize=9)
  if agg:
    ax.legend(fontsize=7)
  return _finish(fig, agg, out_dir, "known_distribution_positions")


def known_distribution_spearman(rows: Sequence[Row], out_dir: str) -> dict[str, Any]:
  """Figure: per point, Spearman ρ between the teacher's log-probability of a sample and the
  model's summed implicit reward, beside the same for the model's log π (bars, mean ± SEM)."""
  points = [p for p in _by_point(known_distribution_runs(rows))
            if p.get("reward_teacher_spearman_mean") is not None or
            p.get("logprob_teacher_spearman_mean") is not None]
  fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(points) + 2), 4.5))
  x = list(range(len(points)))
  for offset, column, name in ((-0.2, "reward_teacher_spearman", "implicit reward"),
                               (0.2, "logprob_teacher_spearman", "log π")):
    ax.bar([i + offset for i in x], [p.get(f"{column}_mean") or 0.0 for p in points], 0.4,
           yerr=[p.get(f"{column}_sem") or 0.0 for p in points], capsize=3, label=name)
  ax.set_xticks(x)
  ax.set_xticklabels([label(p) for p in points], rotation=30, ha="right", fontsize=7)
  ax.axhline(0.0, color="grey", lw=0.8)
  ax.set_ylabel("Spearman ρ with the teacher's log-probability")
  ax.set_title("Known distribution: implicit reward vs log π as a teacher score, "
               "mean ± SEM over seeds", fontsize=9)
  if points:
    ax.legend(fontsize=8)
  table = [{k: p.get(k) for k in ("sweep", "point", "method", *STRENGTH.values(), "n_ok",
                                  "reward_teacher_spearman_mean", "reward_teacher_spearman_sem",
                                  "logprob_teacher_spearman_mean",
                                  "logprob_teacher_spearman_sem") if k in p} for p in points]
  return _finish(fig, table, out_dir, "known_distribution_spearman")


def make_all(rows: Sequence[Row], curves: Sequence[Row], out_dir: str,
             timing: Optional[Mapping[str, Any]] = None,
             positions: Sequence[Row] = ()) -> dict[str, dict[str, Any]]:
  """Every item above into `out_dir`; {item name: {'png', 'csv', 'rows'}}. The
  known-distribution items only when `rows` have its numbers (`positions`:
  `results.collect_positions` rows)."""
  items = {"table1_timing": table1_timing(rows, timing, out_dir),
           "score_vs_self_bleu": score_vs_self_bleu(rows, out_dir),
           "score_vs_temperature": score_vs_temperature(rows, out_dir),
           "training_curves": training_curves(curves, out_dir, rows),
           "spearman_table": spearman_table(rows, out_dir)}
  if known_distribution_runs(rows):
    items.update(known_distribution_kl=known_distribution_kl(rows, out_dir),
                 known_distribution_positions=known_distribution_positions(positions, out_dir),
                 known_distribution_spearman=known_distribution_spearman(rows, out_dir))
  return items
