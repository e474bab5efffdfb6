"""Results of sweeps as tidy CSVs, and mean ± SEM over seeds.

`collect(out_dir)` reads every sweep's ``manifest.json`` under `out_dir` and returns one row
per run × evaluation setting (every run of the manifest appears, failed or never run ones with
one row of their status):

* setting ``final_greedy``: the end-of-training evaluation (``summary.json['eval']``);
* one row per evaluate-mode setting (``greedy``, ``beam4``, ``sample_t0.5``, ...);
* setting ``diversity``: the K-samples summary (Self-BLEU, distinct-n over all samples);
* one row per temperature of ``evaluate.diversity_temperatures`` (setting
  ``diversity_K<K>_t<T>``): the same K-samples summary at that temperature.

``status`` is the sweep's record ('ok', 'failed' with ``failed_phase``), or without one
'missing' (never ran), 'incomplete' (trained, evaluation missing) or 'ok'.

Columns (`RUN_COLUMNS`, then the swept parameter columns, then `setting`, `temperature`,
`beam_size`, the task's score columns, then `METRIC_COLUMNS`): sweep, point, method, seed,
status, failed_phase, step, train_steps_per_second, train_seconds, ..., setting, temperature,
beam_size, rouge1/rouge2/rougeLsum or accuracy or bleu/chrf, baseline (the best trivial
baseline's name), baseline_<score> (its scores), margin (model − best baseline on the primary
score), repeated_3gram_rate, num_examples, self_bleu, self_bleu_k, self_bleu_temperature,
self_bleu_tokenize, distinct_1, distinct_2, mean_entropy, reward_spearman_rho,
reward_spearman_p, mean_summed_reward, checkpoint_step.

`collect_examples(out_dir)` gives ``examples.csv`` rows (sweep, point, method, seed, setting,
index, score, length, reward, log_prob): every example of every per-example record file (the
final evaluation's ``eval_<split>_<setting>.jsonl``, setting ``final_<setting>``, and evaluate
mode's), so statistics over examples can be recomputed.

Known-distribution runs add `KNOWN_DISTRIBUTION_COLUMNS` (forward_kl, reverse_kl, coverage,
reward_teacher_spearman, logprob_teacher_spearman, teacher_entropy, model_sample_entropy) to
the rows of the summaries that report them, plus a row of setting ``known_distribution`` for
evaluate mode's top-level numbers; `collect_positions(out_dir)` gives
``known_distribution_positions.csv`` (the teacher's log-probability of samples by position).

`collect_curves(out_dir)` gives ``curves.csv`` rows (sweep, point, method, the swept columns,
seed, step, metric, value) from each run's ``metrics.jsonl`` evaluation records
(``eval_<split>/<metric>``: the periodic ones when ``EvalSettings.every`` is set, and the final).
"""
from __future__ import annotations

import csv
import glob
import json
import math
import os
import statistics
from typing import Any, Iterable, Mapping, Optional, Sequence

from irl_lm.experiments import sweeps

Row = dict[str, Any]

RUN_COLUMNS = ("sweep", "point", "method", "seed", "status", "failed_phase", "step",
               "train_steps_per_second", "train_seconds", "loss_first", "loss_last")
SETTING_COLUMNS = ("setting", "temperature", "beam_size")
METRIC_COLUMNS = ("baseline", "margin", "repeated_3gram_rate", "num_examples", "self_bleu",
                  "self_bleu_k", "self_bleu_temperature", "self_bleu_tokenize", "distinct_1", "distinct_2", "mean_entropy",
                  "reward_spearman_rho", "reward_spearman_p", "mean_summed_reward",
                  "checkpoint_step")
FINAL_SETTING, DIVERSITY_SETTING = "final_greedy", "diversity"
# A known-distribution evaluation (a teacher whose probabilities are known): top-level floats
# of a summary, then those of its 'known_distribution' block.
KNOWN_DISTRIBUTION_TOP = ("forward_kl", "reverse_kl", "coverage", "reward_teacher_spearman")
KNOWN_DISTRIBUTION_BLOCK = ("logprob_teacher_spearman", "teacher_entropy",
                            "model_sample_entropy")
KNOWN_DISTRIBUTION_COLUMNS = (*KNOWN_DISTRIBUTION_TOP, *KNOWN_DISTRIBUTION_BLOCK)
# The setting of the row holding evaluate mode's top-level known-distribution numbers.
KNOWN_DISTRIBUTION_SETTING = "known_distribution"
POSITIONS_FILE = "known_distribution_positions.csv"


def _read_json(path: str) -> Optional[Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _read_jsonl(path: str) -> list[dict[str, Any]]:
  try:
    with open(path) as f:
      return [json.loads(line) for line in f if line.strip()]
  except (OSError, ValueError):
    return []


def manifests(out_dir: str) -> list[dict[str, Any]]:
  """Every ``<out_dir>/<sweep>/manifest.json``, in sweep-name order, run directories
  resolved against the manifest's folder."""
  out = []
  for path in sorted(glob.glob(os.path.join(out_dir, "*", sweeps.MANIFEST_FILE))):
    manifest = _read_json(path)
    if manifest:
      for entry in manifest["runs"]:  # where the run is now, wherever the folder moved
        entry["run_dir"] = os.path.join(os.path.dirname(path), entry["point"],
                                        f"seed{entry['seed']}")
      out.append(manifest)
  return out


def _run_row(entry: Mapping[str, Any]) -> Row:
  """The per-run columns: identity, swept parameters, status and training figures."""
  run_dir = entry["run_dir"]
  status = sweeps.read_status(run_dir)
  summary = _read_json(sweeps.train_summary_path(run_dir)) or {}
  history = summary.get("history") or []
  rates = [h["steps_per_second"] for h in history[1:] if h.get("steps_per_second")]
  if not rates:  # one record: its rate includes compilation, but it is all there is
    rates = [h["steps_per_second"] for h in history if h.get("steps_per_second")]
  state = status.get("status", "missing")
  if state == "missing" and summary:  # not run (to the end) by the sweep runner
    evaluated = not entry.get("evaluate", True) or sweeps.eval_summary_path(run_dir)
    state = "ok" if evaluated else "incomplete"
  return {"sweep": entry["sweep"], "point": entry["point"],
          "method": entry["columns"].get("method", ""), "seed": entry["seed"],
          **{k: v for k, v in entry["columns"].items() if k != "method"},
          "status": state, "failed_phase": status.get("phase") if state == "failed" else "",
          "step": summary.get("final_step"),
          # The median of the logged rates after the first record (which includes compiling).
          "train_steps_per_second": statistics.median(rates) if rates else None,
          "train_seconds": summary.get("train_seconds"),
          "loss_first": summary.get("loss_first"), "loss_last": summary.get("loss_last")}


def _setting_metrics(summary: Mapping[str, Any]) -> Row:
  """The metric columns of one evaluate-mode setting or diversity summary."""
  decoding = summary.get("decoding") or {}
  method = decoding.get("method")
  row: Row = {"temperature": None if method == "beam" else decoding.get("temperature"),
              "beam_size": decoding.get("beam_size") if method == "beam" else None,
              **dict(summary.get("scores") or {}), **baseline_columns(summary),
              "num_examples": summary.get("num_examples")}
  if summary.get("self_bleu"):
    sb = summary["self_bleu"]
    row.update(self_bleu=sb.get("value"), self_bleu_k=sb.get("samples_per_input"),
               self_bleu_temperature=sb.get("temperature"), self_bleu_tokenize=sb.get("tokenize"))
  # A setting nests distinct-n under 'diversity'; the diversity summary has them at the top.
  diversity = summary.get("diversity") or summary
  for n in ("distinct_1", "distinct_2"):
    row[n] = (diversity.get(n) or {}).get("value")
  row["mean_entropy"] = (summary.get("entropy") or {}).get("mean_token_entropy")
  reward = summary.get("reward") or {}
  spearman = reward.get("spearman") or {}
  row.update(reward_spearman_rho=spearman.get("rho"), reward_spearman_p=spearman.get("p_value"),
             mean_summed_reward=reward.get("mean_summed_reward"))
  row.update(known_distribution_metrics(summary))
  return row


def baseline_columns(summary: Mapping[str, Any]) -> Row:
  """'baseline', 'baseline_<score>', 'margin' and 'repeated_3gram_rate' of an evaluation
  summary (those it has)."""
  row: Row = {}
  best = summary.get("best_baseline")
  if best:
    row["baseline"] = best["name"]
    scores = summary["baselines"][best["name"]]["scores"]
    row.update({f"baseline_{k}": v for k, v in scores.items()})
    row["margin"] = summary.get("margin")
  if "repeated_3gram_rate" in summary:
    row["repeated_3gram_rate"] = summary["repeated_3gram_rate"]
  return row


def final_summaries(run_dir: str) -> list[tuple[str, str]]:
  """(summary path, records path) of the train job's final evaluation files in `run_dir`."""
  out = []
  for path in sorted(glob.glob(os.path.join(run_dir, "eval_*_summary.json"))):
    out.append((path, path[:-len("_summary.json")] + ".jsonl"))
  return out


def run_rows(entry: Mapping[str, Any]) -> list[Row]:
  """The rows of one manifest entry: final greedy, each evaluate setting, diversity."""
  base = _run_row(entry)
  rows = []
  summary = _read_json(sweeps.train_summary_path(entry["run_dir"])) or {}
  if summary.get("eval"):
    scores = {k: v for k, v in summary["eval"].items()
              if k in SCORE_NAMES or k.startswith("baseline_") or k in ("margin",
                                                                       "repeated_3gram_rate")}
    final = [_read_json(p) for p, _ in final_summaries(entry["run_dir"])]
    if final and final[0] and final[0].get("best_baseline"):
      scores["baseline"] = final[0]["best_baseline"]["name"]
    rows.append({**base, "setting": FINAL_SETTING, "temperature": 0.0, **scores,
                 "num_examples": summary["eval"].get("num_examples"),
                 "self_bleu": summary["eval"].get("self_bleu"),
                 "checkpoint_step": summary.get("final_step")})
  path = sweeps.eval_summary_path(entry["run_dir"])
  evaluation = _read_json(path) if path else None
  if evaluation:
    common = {"checkpoint_step": evaluation.get("checkpoint_step")}
    for name, setting in (evaluation.get("settings") or {}).items():
      rows.append({**base, "setting": name, **_setting_metrics(setting), **common})
    if evaluation.get("diversity"):
      rows.append({**base, "setting": DIVERSITY_SETTING,
                   **_setting_metrics(evaluation["diversity"]), **common})
    for summary in evaluation.get("diversity_sweep") or ():  # K samples at each temperature
      rows.append({**base, "setting": summary["setting"], **_setting_metrics(summary),
                   **common})
    if known_distribution_metrics(evaluation):
      rows.append({**base, "setting": KNOWN_DISTRIBUTION_SETTING,
                   **known_distribution_metrics(evaluation), **common})
  return rows or [{**base, "setting": ""}]


def collect(out_dir: str) -> list[Row]:
  """One row per run × setting for every run of every sweep under `out_dir`."""
  return [row for m in manifests(out_dir) for entry in m["runs"] for row in run_rows(entry)]


EXAMPLE_COLUMNS = ("sweep", "point", "method", "seed", "setting", "index", "score", "length",
                   "reward", "log_prob")
# The per-example score of examples.csv: the first of these a record has.
EXAMPLE_SCORES = ("rouge1", "correct", "bleu")


def example_rows(ident: Mapping[str, Any], setting: str,
                 records: Sequence[Mapping[str, Any]]) -> list[Row]:
  """`EXAMPLE_COLUMNS` rows of one setting's per-example records. Pure."""
  rows = []
  for record in records:
    scores = record.get("scores") or {}
    score = next((scores[k] for k in EXAMPLE_SCORES if k in scores), None)
    rows.append({**ident, "setting": setting, "index": record.get("index"), "score": score,
                 "length": record.get("num_tokens"), "reward": record.get("implicit_reward"),
                 "log_prob": record.get("log_prob")})
  return rows


def collect_examples(out_dir: str) -> list[Row]:
  """Every per-example record of every run under `out_dir` (see the module docstring)."""
  rows = []
  for m in manifests(out_dir):
    for entry in m["runs"]:
      ident = {"sweep": entry["sweep"], "point": entry["point"],
               "method": entry["columns"].get("method", ""), "seed": entry["seed"]}
      for summary_path, records_path in final_summaries(entry["run_dir"]):
        summary = _read_json(summary_path) or {}
        rows += example_rows(ident, f"final_{summary.get('setting', '')}",
                             _read_jsonl(records_path))
      path = sweeps.eval_summary_path(entry["run_dir"])
      evaluation = (_read_json(path) if path else None) or {}
      for name in evaluation.get("settings") or {}:
        rows += example_rows(ident, name,
                             _read_jsonl(os.path.join(os.path.dirname(path), f"{name}.jsonl")))
  return rows


def per_run(rows: Sequence[Row]) -> list[Row]:
  """One row per run (its first), for per-run figures like the update time."""
  seen, out = set(), []
  for row in rows:
    key = (row.get("sweep"), row.get("point"), row.get("seed"))
    if key not in seen:
      seen.add(key)
      out.append(row)
  return out


# Training metrics kept in curves.csv besides every evaluation metric: what measures the scale
# of the TD term against the likelihood (and the clipping) during fine-tuning.
TRAIN_CURVE_METRICS = ("train/loss", "train/nll", "train/td_loss", "train/grad_norm",
                       "train/entropy")


def collect_curves(out_dir: str) -> list[Row]:
  """Rows (sweep, point, method, swept columns, seed, step, metric, value) from every run's
  ``metrics.jsonl``: evaluation records (keys ``eval_<split>/<metric>``) and the training
  metrics of `TRAIN_CURVE_METRICS`."""
  rows = []
  for m in manifests(out_dir):
    for entry in m["runs"]:
      ident = {"sweep": entry["sweep"], "point": entry["point"],
               "method": entry["columns"].get("method", ""),
               **{k: v for k, v in entry["columns"].items() if k != "method"},
               "seed": entry["seed"]}
      for record in _read_jsonl(os.path.join(entry["run_dir"], "metrics.jsonl")):
        for key, value in record.items():
          wanted = (key.startswith("eval_") and "/" in key) or key in TRAIN_CURVE_METRICS
          if wanted and isinstance(value, (int, float)):
            rows.append({**ident, "step": record["step"], "metric": key, "value": value})
  return rows


def columns(rows: Sequence[Row], leading: Sequence[str] = ()) -> list[str]:
  """`leading` columns first (those present or not), then the others in first-seen order."""
  out = list(leading)
  for row in rows:
    out += [k for k in row if k not in out]
  return out


SCORE_NAMES = ("rouge1", "rouge2", "rougeLsum", "rougeL", "accuracy", "bleu", "chrf")
BASELINE_SCORE_COLUMNS = tuple(f"baseline_{s}" for s in SCORE_NAMES)


def results_columns(rows: Sequence[Row]) -> list[str]:
  """The results CSV's column order (see the module docstring); swept columns after `seed`."""
  known = {*RUN_COLUMNS, *SETTING_COLUMNS, *METRIC_COLUMNS, *SCORE_NAMES,
           *BASELINE_SCORE_COLUMNS, *KNOWN_DISTRIBUTION_COLUMNS}
  seen = columns(rows)
  scores = [c for c in SCORE_NAMES if c in seen]
  baseline_scores = [c for c in BASELINE_SCORE_COLUMNS if c in seen]
  swept = [c for c in seen if c not in known]
  known_distribution = [c for c in KNOWN_DISTRIBUTION_COLUMNS if c in seen]
  return [*RUN_COLUMNS[:4], *swept, *RUN_COLUMNS[4:], *SETTING_COLUMNS, *scores,
          METRIC_COLUMNS[0], *baseline_scores, *METRIC_COLUMNS[1:], *known_distribution]


def write_csv(rows: Sequence[Row], path: str, fieldnames: Optional[Sequence[str]] = None) -> str:
  """Writes `rows` (missing values blank); returns `path`."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fieldnames = list(fieldnames or columns(rows))
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
      writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in fieldnames})
  return path


def _parse(value: str) -> Any:
  if value == "":
    return None
  try:
    number = float(value)
  except ValueError:
    return value
  return int(number) if number.is_integer() and "." not in value and "e" not in value else number


def read_csv(path: str) -> list[Row]:
  """Reads a CSV written by `write_csv`: numbers as int/float, blanks as None."""
  with open(path, newline="") as f:
    return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def mean_sem(values: Iterable[Optional[float]]) -> tuple[Optional[float], Optional[float], int]:
  """(mean, SEM = sample std (ddof=1) / sqrt(n), n) over the non-missing values; SEM is None
  for n = 1 and both are None for n = 0."""
  xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and
                                                          math.isnan(v))]
  if not xs:
    return None, None, 0
  mean = sum(xs) / len(xs)
  if len(xs) == 1:
    return mean, None, 1
  return mean, statistics.stdev(xs) / math.sqrt(len(xs)), len(xs)


# Averaged over seeds by `aggregate` (a seed's measurements); every other column but `seed`
# is configuration (constant within a point) and kept from the group's first row.
MEASURED = frozenset({*SCORE_NAMES, *BASELINE_SCORE_COLUMNS, "margin", "repeated_3gram_rate",
                      "step", "train_steps_per_second", "train_seconds",
                      "loss_first", "loss_last", "num_examples", "self_bleu", "distinct_1",
                      "distinct_2", "mean_entropy", "reward_spearman_rho", "reward_spearman_p",
                      "mean_summed_reward", "value", *KNOWN_DISTRIBUTION_COLUMNS,
                      "teacher_logprob"})
PER_RUN = ("seed", "status", "failed_phase", "checkpoint_step")


def aggregate(rows: Sequence[Row], by: Sequence[str] = ("sweep", "point", "setting"),
              ok_only: bool = True) -> list[Row]:
  """Mean ± SEM over seeds per group (default: per point and evaluation setting). Pure.

  Args:
    rows: `collect` rows (or `read_csv` of them); also `collect_curves` rows with
      ``by=('sweep', 'point', 'metric', 'step')``.
    by: the grouping columns.
    ok_only: average only rows whose ``status`` is 'ok' (rows without a status count as ok).

  Returns:
    One row per group, in first-seen order: the group columns, the configuration columns of
    its first row (method, swept parameters, temperature, beam size, Self-BLEU's K /
    temperature / tokenisation), ``n_runs`` (every run of the group, failed ones too),
    ``n_ok``, then per measured column `MEASURED` ``<c>_mean``, ``<c>_sem`` (blank for n = 1)
    and ``<c>_n``.
  """
  groups: dict[tuple, list[Row]] = {}
  for row in rows:
    groups.setdefault(tuple(row.get(k) for k in by), []).append(row)
  out = []
  for key, members in groups.items():
    used = [r for r in members if r.get("status", "ok") == "ok"] if ok_only else members
    names = columns(members)
    row: Row = dict(zip(by, key))
    row.update({c: members[0].get(c) for c in names
                if c not in row and c not in MEASURED and c not in PER_RUN})
    row["n_runs"], row["n_ok"] = len(members), sum(r.get("status", "ok") == "ok"
                                                     for r in members)
    for c in names:
      if c in MEASURED and c not in by:
        row[f"{c}_mean"], row[f"{c}_sem"], row[f"{c}_n"] = mean_sem(r.get(c) for r in used)
    out.append(row)
  return out


def start_scales(curves: Sequence[Row], td_column: str = "td_weight") -> list[Row]:
  """The scale of each loss term at a run's first logged step, mean ± SEM over seeds per point.

  For every (sweep, point): `nll`, `td_loss` (mean r², whatever the method), `td_term`
  (= λ · td_loss, λ from the `td_column` column, 0 when absent), `td_term_over_nll` and
  `grad_norm` (before clipping) at the first logged training step of each seed.

  Args:
    curves: `collect_curves` rows.
    td_column: the column holding λ.
  """
  first: dict[tuple[Any, ...], dict[str, Any]] = {}
  for row in curves:
    if not str(row["metric"]).startswith("train/"):
      continue
    key = (row["sweep"], row["point"], row["seed"])
    entry = first.setdefault(key, {"step": row["step"], "row": row, "values": {}})
    if row["step"] < entry["step"]:
      entry.update(step=row["step"], row=row, values={})
    if row["step"] == entry["step"]:
      entry["values"][row["metric"].split("/", 1)[1]] = row["value"]
  per_point: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
  for (sweep, point, _), entry in sorted(first.items(), key=lambda kv: str(kv[0])):
    values = dict(entry["values"])
    weight = entry["row"].get(td_column)
    weight = float(weight) if weight not in (None, "") else 0.0
    values["td_term"] = weight * values.get("td_loss", 0.0)
    values["td_term_over_nll"] = values["td_term"] / values["nll"] if values.get("nll") else None
    values.update(step=entry["step"], method=entry["row"].get("method", ""), td_weight=weight)
    per_point.setdefault((sweep, point), []).append(values)
  out = []
  for (sweep, point), seeds in per_point.items():
    row: Row = {"sweep": sweep, "point": point, "method": seeds[0]["method"],
                td_column: seeds[0]["td_weight"], "step": seeds[0]["step"]}
    for name in ("nll", "td_loss", "td_term", "td_term_over_nll", "grad_norm"):
      mean, sem, n = mean_sem(s.get(name) for s in seeds)
      row.update({f"{name}_mean": mean, f"{name}_sem": sem, f"{name}_n": n})
    out.append(row)
  return out


def _number(value: Any) -> Optional[float]:
  """A float, or a correlation's / metric's dict ({'rho': ...} or {'value': ...}) as one."""
  if isinstance(value, Mapping):
    value = value.get("rho", value.get("value"))
  return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def known_distribution_metrics(summary: Mapping[str, Any]) -> Row:
  """The `KNOWN_DISTRIBUTION_COLUMNS` a summary has ({} for a summary without them). Pure."""
  block = summary.get("known_distribution")
  block = block if isinstance(block, Mapping) else {}
  row = {c: _number(summary.get(c)) for c in KNOWN_DISTRIBUTION_TOP}
  row.update({c: _number(block.get(c)) for c in KNOWN_DISTRIBUTION_BLOCK})
  return {k: v for k, v in row.items() if v is not None}


def teacher_logprob_positions(summary: Mapping[str, Any]) -> list[Row]:
  """Rows (position, teacher_logprob) of a summary's
  ``known_distribution.teacher_logprob_by_position`` (the teacher's mean log-probability of the
  model's sampled token at each position); [] without one. Pure."""
  block = summary.get("known_distribution")
  values = block.get("teacher_logprob_by_position") if isinstance(block, Mapping) else None
  return [{"position": i, "teacher_logprob": _number(v)} for i, v in enumerate(values or ())
          if _number(v) is not None]


def collect_positions(out_dir: str) -> list[Row]:
  """``known_distribution_positions.csv`` rows (sweep, point, method, swept columns, seed,
  setting, position, teacher_logprob) of every run's evaluate-mode summary: its top-level
  block (setting `KNOWN_DISTRIBUTION_SETTING`) and each setting's and the diversity
  summary's."""
  rows = []
  for m in manifests(out_dir):
    for entry in m["runs"]:
      path = sweeps.eval_summary_path(entry["run_dir"])
      evaluation = _read_json(path) if path else None
      if not evaluation:
        continue
      ident = {"sweep": entry["sweep"], "point": entry["point"],
               "method": entry["columns"].get("method", ""),
               **{k: v for k, v in entry["columns"].items() if k != "method"},
               "seed": entry["seed"]}
      summaries = [(KNOWN_DISTRIBUTION_SETTING, evaluation),
                   *(evaluation.get("settings") or {}).items(),
                   (DIVERSITY_SETTING, evaluation.get("diversity") or {})]
      for setting, summary in summaries:
        rows += [{**ident, "setting": setting, **p} for p in teacher_logprob_positions(summary)]
  return rows
