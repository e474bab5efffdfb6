"""``results.md``: every number of a reproduction as Markdown tables, figures linked.

`write_report(out_dir, items, rows, ...)` writes the runs' statuses (every run, failed ones
too), each figure's table (its CSV) under the figure, and the mean ± SEM of every point and
setting (``aggregate.csv``).
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence

from irl_lm.experiments import figures, results


def _cell(value: Any) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping[str, Any]],
                   columns: Optional[Sequence[str]] = None) -> str:
  """A Markdown table of `rows` (all columns in first-seen order unless given)."""
  if not rows:
    return "(no rows)\n"
  columns = list(columns or results.columns(rows))
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
  return "\n".join(lines) + "\n"


def _mean_sem_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
  """Aggregate columns worth a summary table: identity, n, and the metrics' mean/sem."""
  keep = ["sweep", "point", "method", "setting", "n_runs", "n_ok"]
  metrics = ("rouge1", "rouge2", "rougeLsum", "accuracy", "bleu", "chrf", "self_bleu",
             "distinct_2", "mean_entropy", "reward_spearman_rho", "train_steps_per_second")
  present = results.columns(rows)
  return [c for c in keep if c in present] + [
      f"{m}_{s}" for m in metrics for s in ("mean", "sem") if f"{m}_{s}" in present]


def write_report(out_dir: str, items: Mapping[str, Mapping[str, Any]],
                 rows: Sequence[Mapping[str, Any]], *, title: str, notes: Sequence[str] = (),
                 timing: Optional[Mapping[str, Any]] = None, preamble: str = "") -> str:
  """Writes ``<out_dir>/results.md``; returns its path.

  Args:
    out_dir: the reproduction's folder (figures' paths are written relative to it).
    items: `figures.make_all`'s result.
    rows: the results rows (one per run × setting).
    title: the heading.
    notes: lines under the heading (protocol, budget, caveats).
    timing: `timing.measure`'s result, if measured.
    preamble: Markdown placed after the notes (e.g. `protocol.verdict_markdown`).
  """
  runs = results.per_run(rows)
  parts = [f"# {title}\n", *[f"- {n}" for n in notes], "",
           f"{figures.self_bleu_caption(rows)}. Error bars and ± are the standard error of the "
           "mean over seeds (sample std / sqrt(n)); n is given with every number.\n",
           *([preamble] if preamble else []),
           "## Runs\n",
           markdown_table(runs, ["sweep", "point", "method", "seed", "status", "failed_phase",
                                 "step", "train_steps_per_second", "train_seconds"])]
  if timing and timing.get("error"):
    parts += ["## Sampling benchmark\n", f"failed: {timing['error'][-500:]}\n"]
  elif timing:
    parts += ["## Sampling benchmark\n", markdown_table([{
        "sample_ms": 1000 * timing["sample_s"], "train_step_ms": 1000 * timing["train_step_s"],
        "sample / step": timing["ratio"], **timing.get("case", {})}]),
        f"{timing.get('note', '')}\n"]
  for name, item in items.items():
    rel = os.path.relpath(item["png"], out_dir)
    table = [{k: v for k, v in r.items() if not k.endswith("_n") or k == "value_n"}
             for r in item["rows"]]
    parts += [f"## {name}\n", f"![{name}]({rel})\n",
              markdown_table(table) if item["rows"] else "(no data)\n"]
  aggregate = results.aggregate(rows)
  parts += ["## Every point and setting (mean ± SEM over seeds)\n",
            markdown_table(aggregate, _mean_sem_columns(aggregate))]
  path = os.path.join(out_dir, "results.md")
  with open(path, "w") as f:
    f.write("\n".join(parts))
  return path
