"""One table per substrate of a protocol run: every point's headline numbers, mean ± SEM over
seeds, beside its trivial baseline (the tables README and ``results.md`` show).

`summary_rows(rows, inputs)` reads the run-level rows (``results.csv``) and the per-input rows
(``inputs.csv``, `irl_lm.experiments.protocol`) and gives one row per (sweep, point) with, for
each column of `COLUMNS` the sweep has, ``<column>`` = "mean ± SEM" over the point's seeds:

* from ``results.csv`` (a run's number in one evaluation setting): forward / reverse KL,
  sample entropy and coverage on the known-distribution task; greedy accuracy with and without
  the calculator and the best trivial baseline's on arithmetic;
* from ``inputs.csv`` at `temperature` (each run's mean over inputs first): sample quality (the
  teacher's log-probability per token on the known-distribution task; accuracy on arithmetic),
  distinct outputs / K, 100 − Self-BLEU, solution-order entropy (arithmetic), length and the
  rate of samples ending with EOS.

Subset (over-fitting) points, which are not evaluated, are left out. Pure.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

from irl_lm.experiments import results

Row = dict[str, Any]
# (label, source, setting or None, column); source 'run' reads results.csv rows of `setting`,
# 'input' reads inputs.csv rows at the summary's temperature.
COLUMNS = (
    ("forward KL", "run", "greedy", "forward_kl"),
    ("reverse KL", "run", "greedy", "reverse_kl"),
    ("sample entropy", "run", "greedy", "model_sample_entropy"),
    ("coverage", "run", "greedy", "coverage"),
    ("accuracy (greedy, calculator)", "run", "greedy_calc", "accuracy"),
    ("accuracy (greedy)", "run", "greedy", "accuracy"),
    ("best baseline", "run", "greedy_calc", "baseline_accuracy"),
    ("sample quality", "input", None, "quality"),
    ("distinct / K", "input", None, "distinct"),
    ("100 − Self-BLEU", "input", None, "bleu_diversity"),
    ("order entropy", "input", None, "order_entropy"),
    ("length", "input", None, "length"),
    ("EOS rate", "input", None, "eos_rate"),
)


def _float(value: Any) -> Optional[float]:
  if value in (None, ""):
    return None
  value = float(value)
  return value if math.isfinite(value) else None


def _cell(values: Sequence[Optional[float]]) -> str:
  mean, sem, n = results.mean_sem(values)
  if mean is None:
    return ""
  digits = 3 if abs(mean) < 10 else 1
  return f"{mean:.{digits}f}" + (f" ± {sem:.{digits}f}" if sem is not None and n > 1 else "")


def summary_rows(rows: Sequence[Mapping[str, Any]], inputs: Sequence[Mapping[str, Any]],
                 temperature: float = 1.0) -> list[Row]:
  """One row per evaluated (sweep, point), in first-seen order (module docstring)."""
  points: list[tuple[str, str]] = []
  method: dict[tuple[str, str], str] = {}
  for r in rows:
    key = (r["sweep"], r["point"])
    if r.get("status") == "ok" and r.get("setting") and not r.get("train_examples"):
      if key not in points:
        points.append(key)
        method[key] = str(r.get("method", ""))
  by_run: dict[tuple[str, str, str], dict[str, list[float]]] = {}
  for r in inputs:
    if _float(r.get("temperature")) != temperature:
      continue
    run = by_run.setdefault((r["sweep"], r["point"], str(r["seed"])), {})
    for _, source, _, column in COLUMNS:
      value = _float(r.get(column)) if source == "input" else None
      if value is not None:
        run.setdefault(column, []).append(value)
  out = []
  for sweep, point in points:
    row: Row = {"sweep": sweep, "point": point, "method": method[(sweep, point)]}
    mine = [r for r in rows if r["sweep"] == sweep and r["point"] == point]
    row["seeds"] = len({str(r["seed"]) for r in mine if r.get("status") == "ok"})
    for label, source, setting, column in COLUMNS:
      if source == "run":
        values = [_float(r.get(column)) for r in mine if r.get("setting") == setting]
      else:
        values = [sum(v[column]) / len(v[column]) for (s, p, _), v in by_run.items()
                  if (s, p) == (sweep, point) and v.get(column)]
      cell = _cell([v for v in values if v is not None])
      if cell:
        row[label] = cell
    out.append(row)
  return out


def summary_markdown(rows: Sequence[Mapping[str, Any]], inputs: Sequence[Mapping[str, Any]],
                     temperature: float = 1.0) -> str:
  """`summary_rows` as one Markdown table per sweep, with the columns that sweep has."""
  table = summary_rows(rows, inputs, temperature)
  parts = []
  for sweep in dict.fromkeys(r["sweep"] for r in table):
    mine = [r for r in table if r["sweep"] == sweep]
    columns = ["point", "seeds"] + [label for label, *_ in COLUMNS
                                    if any(label in r for r in mine)]
    lines = [f"### {sweep} (mean ± SEM over seeds; samples at T = {temperature:g})", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in mine]
    parts.append("\n".join(lines) + "\n")
  return "\n".join(parts)
