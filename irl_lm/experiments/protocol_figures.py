"""Figures of the protocol with intervals: a PNG and a CSV per item (as `figures`).

* `frontiers` / `frontiers_bleu`: per sweep, each point's (diversity, quality) per sampling
  temperature, diversity as distinct outputs / K or as 100 − Self-BLEU, means over seeds and
  inputs with 95% bootstrap intervals over inputs on both axes, plus output length, the
  empty-output rate and the rate of samples ending with EOS per temperature in the CSV.
* `overfitting_curves`: the validation NLL (teacher-forced) and each evaluated score of the
  subset points over training, mean ± SEM over seeds.
* `reward_correlations`: per point, the mean within-input Spearman of the summed implicit
  reward, log π and length-normalised log π with the task score, with 95% intervals.
* `findings_plot`: every comparison of `protocol.findings` with its interval and smallest
  detectable effect.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from irl_lm.experiments import figures, results, stats
from irl_lm.experiments.figures import plt

Row = results.Row


def _interval(values: Sequence[Any]) -> stats.Interval:
  return stats.mean_interval([float(v) for v in values if v not in (None, "")],
                             num_resamples=500)


def _groups(rows: Sequence[Row], keys: Sequence[str]) -> dict[tuple, list[Row]]:
  out: dict[tuple, list[Row]] = {}
  for r in rows:
    out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
  return out


def frontiers(inputs: Sequence[Row], out_dir: str, diversity: str = "distinct",
              name: str = "frontiers") -> dict[str, Any]:
  """Quality against `diversity` per point and temperature (module docstring), drawn as
  `name`."""
  inputs = [r for r in inputs if r.get(diversity) not in (None, "")]
  table = []
  for (sweep, point, method, t), group in sorted(
      _groups(inputs, ("sweep", "point", "method", "temperature")).items(), key=str):
    q, d = _interval([r["quality"] for r in group]), _interval([r[diversity] for r in group])
    table.append({"sweep": sweep, "point": point, "method": method, "temperature": t,
                  "quality": q.estimate, "quality_low": q.low, "quality_high": q.high,
                  diversity: d.estimate, f"{diversity}_low": d.low, f"{diversity}_high": d.high,
                  "length": _interval([r.get("length") for r in group]).estimate,
                  "empty_rate": _interval([r.get("empty_rate") for r in group]).estimate,
                  "eos_rate": _interval([r.get("eos_rate") for r in group]).estimate,
                  "seeds": len({r["seed"] for r in group}), "inputs": len(group)})
  sweeps = sorted({r["sweep"] for r in table})
  fig, axes = plt.subplots(1, max(len(sweeps), 1), figsize=(6 * max(len(sweeps), 1), 4.5),
                           squeeze=False)
  for ax, sweep in zip(axes[0], sweeps):
    for (point,), group in _groups([r for r in table if r["sweep"] == sweep],
                                   ("point",)).items():
      x = np.array([r[diversity] for r in group])
      y = np.array([r["quality"] for r in group])
      ax.errorbar(x, y, xerr=[x - [r[f"{diversity}_low"] for r in group],
                              [r[f"{diversity}_high"] for r in group] - x],
                  yerr=[y - [r["quality_low"] for r in group],
                        [r["quality_high"] for r in group] - y], marker="o", capsize=2,
                  label=point)
    ax.set(title=f"{sweep}: temperature frontiers (95% CI over inputs)",
           xlabel=f"diversity ({diversity})", ylabel="sample quality")
    ax.legend(fontsize=7)
  return figures._finish(fig, table, out_dir, name)  # pylint: disable=protected-access


def overfitting_curves(curves: Sequence[Row], out_dir: str) -> dict[str, Any]:
  """Validation metrics of the subset points over training, mean ± SEM over seeds."""
  use = [r for r in curves if r.get("train_examples") not in (None, "")
         and str(r.get("metric", "")).startswith("eval_")]
  table = results.aggregate(use, by=("sweep", "point", "train_examples", "metric", "step"))
  metrics = sorted({r["metric"] for r in table})
  fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(5 * max(len(metrics), 1), 4),
                           squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    for (sweep, point), group in _groups([r for r in table if r["metric"] == metric],
                                         ("sweep", "point")).items():
      group = sorted(group, key=lambda r: r["step"])
      ax.errorbar([r["step"] for r in group], [r["value_mean"] for r in group],
                  yerr=[r["value_sem"] or 0.0 for r in group], marker=".", capsize=2,
                  label=f"{sweep}/{point}")
    ax.set(title=metric, xlabel="step")
    ax.legend(fontsize=6)
  return figures._finish(fig, table, out_dir, "overfitting_curves")  # pylint: disable=protected-access


def reward_correlations(inputs: Sequence[Row], out_dir: str, temperature: float = 1.0
                        ) -> dict[str, Any]:
  """Within-input Spearman with the score: reward vs the log π baselines, per point."""
  names = ("rho_reward", "rho_logprob", "rho_logprob_norm")
  use = [r for r in inputs if r.get("temperature") not in (None, "")
         and float(r["temperature"]) == temperature]
  table = []
  for (sweep, point), group in sorted(_groups(use, ("sweep", "point")).items(), key=str):
    row: Row = {"sweep": sweep, "point": point, "temperature": temperature}
    for name in names:
      interval = _interval([r.get(name) for r in group])
      row.update({name: interval.estimate, f"{name}_low": interval.low,
                  f"{name}_high": interval.high})
    row["n"] = _interval([r.get("rho_reward") for r in group]).n
    table.append(row)
  fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(table)), 4))
  width = 0.8 / len(names)
  for j, name in enumerate(names):
    x = np.arange(len(table)) + j * width
    y = np.array([r[name] for r in table], dtype=float)
    err = [y - np.array([r[f"{name}_low"] for r in table], float),
           np.array([r[f"{name}_high"] for r in table], float) - y]
    ax.bar(x, y, width, yerr=err, capsize=2, label=name[4:])
  ax.set_xticks(np.arange(len(table)) + 0.4 - width / 2,
                [f"{r['sweep']}/{r['point']}" for r in table], rotation=30, ha="right",
                fontsize=7)
  ax.set(title=f"within-input Spearman with the task score (T={temperature:g}, 95% CI)")
  ax.legend(fontsize=7)
  return figures._finish(fig, table, out_dir, "reward_correlations")  # pylint: disable=protected-access


def findings_plot(finding_rows: Sequence[Row], out_dir: str) -> dict[str, Any]:
  """Each comparison's estimate and interval, one row per comparison."""
  rows = list(finding_rows)
  fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5))
  for i, r in enumerate(rows):
    ax.errorbar([r["estimate"]], [i], xerr=[[r["estimate"] - r["low"]],
                                            [r["high"] - r["estimate"]]], fmt="o", capsize=2)
  ax.axvline(0.0, color="gray", lw=0.8)
  ax.set_yticks(range(len(rows)), [f"F{r['finding']} {r['sweep']}: {r['comparison']}"
                                   for r in rows], fontsize=7)
  ax.set(title="paired differences (claimed direction: right of 0; finding 5: near 0)")
  return figures._finish(fig, rows, out_dir, "findings")  # pylint: disable=protected-access


def make_all(inputs: Sequence[Row], curves: Sequence[Row], finding_rows: Sequence[Row],
             out_dir: str) -> dict[str, dict[str, Any]]:
  """Every item above into `out_dir`; {item name: {'png', 'csv', 'rows'}}."""
  return {"frontiers": frontiers(inputs, out_dir),
          "frontiers_bleu": frontiers(inputs, out_dir, "bleu_diversity", "frontiers_bleu"),
          "overfitting_curves": overfitting_curves(curves, out_dir),
          "reward_correlations": reward_correlations(inputs, out_dir),
          "findings": findings_plot(finding_rows, out_dir)}
