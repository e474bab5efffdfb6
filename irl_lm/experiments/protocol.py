"""The protocol's evidence: per-input records of the temperature sweeps, and the five findings
read with paired intervals (`irl_lm.experiments.stats`) into a verdict table.

`collect_inputs(out_dir)` gives ``inputs.csv``: one row per run × sampling temperature × input
from evaluate mode's K-samples files (``diversity_sweep``, else the single ``diversity``
setting): ``quality`` (the mean per-sample task score), ``distinct`` (distinct outputs / K, an
exact diversity measure on every task), ``self_bleu`` (of the input's K samples) and
``bleu_diversity`` (100 − it), ``length`` (mean tokens), ``eos_rate`` (samples that ended with
EOS before the length limit), ``empty_rate`` (outputs that are empty after stripping
whitespace: an empty sample makes Self-BLEU look diverse), and the within-input Spearman
correlations with the task score of the summed implicit reward (``rho_reward``), log π
(``rho_logprob``) and length-normalised log π (``rho_logprob_norm``). On the known-distribution task a sample's
quality is the teacher's log-probability of it per token
(`known_distribution.sample_log_prob_per_token`), exact, instead of its ROUGE against one
teacher sample. On the built-in arithmetic task also the
exact solution-order diversity: ``valid_orders`` (distinct valid solution orders among the K
samples) and ``order_entropy`` (nats, plug-in, over the valid samples' orders, blank without
a valid sample; `irl_lm.evaluation.arithmetic`).

`findings(rows, examples, curves, inputs)` compares every IQLearn point (offline and, for
findings 1, 2 and 4, online) with its baseline,
paired by seed and example, with Bonferroni-adjusted intervals within a finding. On the
known-distribution task (sweeps whose runs report `forward_kl`) the greedy per-example score
is ROUGE against one teacher sample, no measure of quality, so finding 1 reads its forward KL
instead and finding 4 also its greedy reward-teacher Spearman; its temperature frontiers and
within-input correlations use the teacher's log-probability (above):

1. quality: greedy score (with the calculator where evaluated) of IQLearn − MLE
   (`stats.paired_difference`), and on the known-distribution task the forward KL to the
   teacher, paired by seed (lower claimed);
2. trade-off: the mean quality gap of IQLearn's temperature frontier over MLE's and over MLE +
   entropy's, on their common diversity range (`stats.frontier_area_interval`, normalised);
3. over-fitting: on the small-subset points, MLE's peak-minus-final of the validation score
   minus IQLearn's, paired by seed;
4. reward: within-input Spearman of the summed reward with the task score, minus that of the
   stronger of log π and length-normalised log π (paired over inputs);
5. cost: IQLearn's training steps per second over MLE's − 1, paired by seed (the step-time
   benchmark is the controlled measurement; this is the sweep's own).

Each comparison row states its smallest detectable effect (`stats.detectable_effect` of the
interval's SE, computed from this run's own variance) and its verdict (`stats.verdict`).
"""
from __future__ import annotations

import ast
import functools
import math
import os
import re
import warnings
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from irl_lm.data import known_distribution
from irl_lm.evaluation import arithmetic
from irl_lm.evaluation import metrics as metrics_lib
from irl_lm.experiments import results, stats, sweeps

Row = dict[str, Any]
INPUT_COLUMNS = ("sweep", "point", "method", "seed", "temperature", "index", "quality",
                 "distinct", "self_bleu", "bleu_diversity", "valid_orders", "order_entropy",
                 "length", "eos_rate", "empty_rate", "rho_reward", "rho_logprob",
                 "rho_logprob_norm", "samples")
DIVERSITY_MEASURES = ("distinct", "bleu_diversity")  # finding 2: a frontier on each
FINDING_COLUMNS = ("finding", "sweep", "comparison", "measure", "estimate", "low", "high",
                   "confidence", "smallest_detectable", "verdict", "n")
FINDINGS = {1: "IQLearn improves task quality over MLE",
            2: "IQLearn has a better quality-diversity trade-off (frontier at matched diversity)",
            3: "IQLearn over-fits less than MLE on small data (peak minus final)",
            4: "the implicit reward ranks samples by quality better than log pi",
            5: "an offline IQLearn update costs about as much as an MLE update"}
BASELINE, ENTROPY, IQLEARN = "mle", "mle_entropy", "iqlearn"
IQLEARN_METHODS = (IQLEARN, "iqlearn_online")  # findings 1, 2 and 4; 3 and 5: offline only
COST_MARGIN = 0.1  # finding 5: within 10% of MLE's step rate


def _score(scores: Mapping[str, Any]) -> Optional[float]:
  value = next((scores[k] for k in results.EXAMPLE_SCORES if k in scores), None)
  return None if value is None else float(value)


def input_rows(ident: Mapping[str, Any], temperature: float,
               records: Sequence[Mapping[str, Any]],
               solutions: Optional[Callable[[str], Optional[Sequence[str]]]] = None,
               sample_quality: Optional[Callable[[str, str], float]] = None,
               max_length: Optional[int] = None) -> list[Row]:
  """`INPUT_COLUMNS` rows of one K-samples file's records (each 'index', 'input' and
  'samples' with 'output', 'scores' and, with statistics, 'implicit_reward', 'log_prob',
  'num_tokens'). Pure.

  Args:
    ident: the run's columns ('sweep', 'point', 'method', 'seed').
    temperature: the file's sampling temperature.
    records: its records.
    solutions: an input's valid solution texts by order (arithmetic), or None.
    sample_quality: ``(input, output) -> quality`` replacing each sample's task score (the
      known-distribution task's teacher log-probability), or None.
    max_length: the most target tokens a sample may have; with 'num_tokens', ``eos_rate``
      counts the samples shorter than it (ended with EOS).
  """
  rows = []
  for record in records:
    samples = record.get("samples") or []
    if not samples:
      continue
    outputs = [str(s.get("output", "")) for s in samples]
    if sample_quality is not None:
      score = np.asarray([sample_quality(str(record.get("input", "")), o) for o in outputs],
                         dtype=np.float64)
    else:
      score = np.asarray([_score(s.get("scores") or {}) for s in samples], dtype=np.float64)
    self_bleu = metrics_lib.self_bleu([outputs]) if len(outputs) > 1 else None
    row: Row = {**ident, "temperature": temperature, "index": record.get("index"),
                "quality": float(np.mean(score)), "samples": len(samples),
                "distinct": len(set(outputs)) / len(outputs), "self_bleu": self_bleu,
                "bleu_diversity": None if self_bleu is None else 100.0 - self_bleu,
                "empty_rate": float(np.mean([not o.strip() for o in outputs]))}
    if max_length and all("num_tokens" in s for s in samples):
      row["eos_rate"] = float(np.mean([int(s["num_tokens"]) < max_length for s in samples]))
    valid = solutions(record.get("input", "")) if solutions else None
    if valid:
      orders = [arithmetic.solution_order(o, valid) for o in outputs]
      found = [o for o in orders if o is not None]
      row.update(valid_orders=len(set(found)), order_entropy=arithmetic.plugin_entropy(
          np.bincount(found, minlength=len(valid))) if found else None)
    if all("implicit_reward" in s for s in samples):
      length = np.asarray([max(int(s.get("num_tokens", 1)), 1) for s in samples], np.float64)
      reward = np.asarray([s["implicit_reward"] for s in samples], np.float64)
      log_prob = np.asarray([s["log_prob"] for s in samples], np.float64)
      rho = lambda x: _finite(stats.within_input_spearman(x[None], score[None])[0])  # noqa
      row.update(length=float(np.mean(length)), rho_reward=rho(reward),
                 rho_logprob=rho(log_prob), rho_logprob_norm=rho(log_prob / length))
    rows.append(row)
  return rows


def _finite(x: float) -> Optional[float]:
  return float(x) if math.isfinite(x) else None


def target_length(run_dir: str) -> Optional[int]:
  """The run's ``train.feature_lengths['targets']`` (its samples' length limit), from its
  ``config.gin``; None when it is not recorded there."""
  path = os.path.join(run_dir, "config.gin")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    match = re.search(r"^train\.feature_lengths\s*=\s*(\{[^}]*\})", f.read(), re.MULTILINE)
  if not match:
    return None
  try:
    return int(ast.literal_eval(match.group(1))["targets"])
  except (ValueError, SyntaxError, KeyError, TypeError):
    return None


def _teacher_quality(task: Optional[str]) -> Optional[Callable[[str, str], float]]:
  known = known_distribution.known_task(task) if task else None
  if known is None:
    return None
  return functools.partial(known_distribution.sample_log_prob_per_token, known.teacher)


def collect_inputs(out_dir: str) -> list[Row]:
  """``inputs.csv`` rows of every run under `out_dir` (module docstring)."""
  rows, references = [], {}
  for manifest in results.manifests(out_dir):
    for entry in manifest["runs"]:
      path = sweeps.eval_summary_path(entry["run_dir"])
      evaluation = (results._read_json(path) if path else None) or {}  # pylint: disable=protected-access
      summaries = evaluation.get("diversity_sweep") or [evaluation.get("diversity") or {}]
      ident = {"sweep": entry["sweep"], "point": entry["point"],
               "method": entry["columns"].get("method", ""), "seed": entry["seed"]}
      key = (evaluation.get("task"), evaluation.get("split"))
      if key not in references and all(key):
        references[key] = arithmetic.reference_for(*key)
      reference = references.get(key)
      solutions = None
      if reference is not None:
        solutions = lambda question, r=reference: (  # noqa: E731
            r.records[question].solutions if question in r.records else None)
      for summary in summaries:
        if not summary.get("setting"):
          continue
        records = results._read_jsonl(os.path.join(  # pylint: disable=protected-access
            os.path.dirname(path), f"{summary['setting']}.jsonl"))
        rows += input_rows(ident, float(summary["decoding"]["temperature"]), records,
                           solutions, _teacher_quality(evaluation.get("task")),
                           target_length(entry["run_dir"]))
  return rows


# ------------------------------------------------------------------------------ the findings


def _points(rows: Iterable[Mapping[str, Any]], method: Any) -> list[tuple[str, str]]:
  """(sweep, point) of `method` (a name or a tuple of names), in first-seen order (subset
  points excluded)."""
  methods = (method,) if isinstance(method, str) else tuple(method)
  out = []
  for r in rows:
    key = (r["sweep"], r["point"])
    if r.get("method") in methods and not r.get("train_examples") and key not in out:
      out.append(key)
  return out


def _matrix(rows: Sequence[Mapping[str, Any]], value: str, seeds: Sequence[Any],
            indices: Sequence[Any]) -> np.ndarray:
  """float [S, N] of `value` by (seed, index); NaN where missing."""
  out = np.full((len(seeds), len(indices)), np.nan)
  si, ni = {str(s): i for i, s in enumerate(seeds)}, {str(n): i for i, n in enumerate(indices)}
  for r in rows:
    s, n = si.get(str(r["seed"])), ni.get(str(r["index"]))
    if s is not None and n is not None and r.get(value) not in (None, ""):
      out[s, n] = float(r[value])
  return out


def _common(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], key: str
            ) -> list[str]:
  return sorted({str(r[key]) for r in a} & {str(r[key]) for r in b},
                key=lambda v: (len(v), v))


def _row(finding: int, sweep: str, comparison: str, measure: str, interval: stats.Interval,
         *, higher_is_claimed: bool = True) -> Row:
  smallest = stats.detectable_effect(interval.se) if math.isfinite(interval.se) else math.nan
  return {"finding": finding, "sweep": sweep, "comparison": comparison, "measure": measure,
          "estimate": interval.estimate, "low": interval.low, "high": interval.high,
          "confidence": interval.confidence, "smallest_detectable": smallest,
          "verdict": stats.verdict(interval, smallest, higher_is_claimed), "n": interval.n}


QUALITY_SETTINGS = ("greedy_calc", "greedy")  # finding 1: the first a sweep evaluated


def quality_rows(examples: Sequence[Mapping[str, Any]],
                 settings: Sequence[str] = QUALITY_SETTINGS, **kw: Any) -> list[Row]:
  """Finding 1: each IQLearn point − MLE on the per-example score of the first of `settings`
  each sweep has (greedy with the calculator on arithmetic, where greedy without it stays
  below the trivial baseline)."""
  out = []
  for sweep in sorted({r["sweep"] for r in examples}):
    in_sweep = [r for r in examples if r["sweep"] == sweep]
    present = {r.get("setting") for r in in_sweep}
    setting = next((s for s in settings if s in present), None)
    if setting is None:
      continue
    in_sweep = [r for r in in_sweep if r.get("setting") == setting]
    base = [r for r in in_sweep if r["point"] == BASELINE]
    for _, point in _points(in_sweep, IQLEARN_METHODS):
      mine = [r for r in in_sweep if r["point"] == point]
      seeds, indices = _common(mine, base, "seed"), _common(mine, base, "index")
      if not seeds or not indices:
        continue
      a, b = _matrix(mine, "score", seeds, indices), _matrix(base, "score", seeds, indices)
      keep = np.all(np.isfinite(a) & np.isfinite(b), axis=0)
      if keep.any():
        out.append(_row(1, sweep, f"{point} - {BASELINE}", f"{setting} score",
                        stats.paired_difference(a[:, keep], b[:, keep], **kw)))
  return out


def known_distribution_sweeps(rows: Iterable[Mapping[str, Any]]) -> set[str]:
  """The sweeps whose runs report the known-distribution task's exact metrics."""
  return {r["sweep"] for r in rows if r.get("forward_kl") not in (None, "")}


def run_metric_rows(rows: Sequence[Mapping[str, Any]], column: str = "forward_kl",
                    setting: str = "greedy", higher_is_claimed: bool = False,
                    baseline_column: Optional[str] = None, finding: int = 1, **kw: Any
                    ) -> list[Row]:
  """A per-run number of each IQLearn point against MLE's (or, with `baseline_column`,
  against the same run's `baseline_column`), paired by seed. Default: finding 1 on the
  known-distribution task's forward KL (lower claimed)."""
  out = []
  use = [r for r in rows if r.get("setting") == setting and r.get(column) not in (None, "")]
  for sweep in sorted({r["sweep"] for r in use}):
    value = {(r["point"], str(r["seed"])): r for r in use if r["sweep"] == sweep}
    for _, point in _points([r for r in use if r["sweep"] == sweep], IQLEARN_METHODS):
      seeds = sorted(s for p, s in value if p == point)
      if baseline_column is None:
        seeds = [s for s in seeds if (BASELINE, s) in value]
        other = [float(value[(BASELINE, s)][column]) for s in seeds]
        comparison = f"{point} - {BASELINE}"
      else:
        seeds = [s for s in seeds if value[(point, s)].get(baseline_column) not in (None, "")]
        other = [float(value[(point, s)][baseline_column]) for s in seeds]
        comparison = f"{point}: {column} - {baseline_column}"
      if seeds:
        interval = stats.paired_seed_interval(
            [float(value[(point, s)][column]) for s in seeds], other, **kw)
        out.append(_row(finding, sweep, comparison, f"{column} ({setting})", interval,
                        higher_is_claimed=higher_is_claimed))
  return out


def _frontier_arrays(rows: Sequence[Mapping[str, Any]], seeds: Sequence[str],
                     indices: Sequence[str], diversity: str) -> tuple[np.ndarray, np.ndarray]:
  temperatures = sorted({float(r["temperature"]) for r in rows})
  by_t = [[r for r in rows if float(r["temperature"]) == t] for t in temperatures]
  d = np.stack([_matrix(t_rows, diversity, seeds, indices) for t_rows in by_t], axis=1)
  q = np.stack([_matrix(t_rows, "quality", seeds, indices) for t_rows in by_t], axis=1)
  return d, q


def _saturated(rows: Sequence[Mapping[str, Any]], measure: str) -> bool:
  """Whether some point's mean `measure` is the same at two temperatures (e.g. every one of K
  samples distinct at each T >= 0.5): a frontier with a vertical segment has no gap at
  matched diversity, so that measure is not compared."""
  for _, point in _points(rows, (BASELINE, ENTROPY, *IQLEARN_METHODS)):
    means = {}
    for r in rows:
      if r["point"] == point and r.get(measure) not in (None, ""):
        means.setdefault(float(r["temperature"]), []).append(float(r[measure]))
    levels = [round(float(np.mean(v)), 6) for v in means.values()]
    if len(set(levels)) < len(levels):
      return True
  return False


def frontier_rows(inputs: Sequence[Mapping[str, Any]],
                  diversity: Sequence[str] = DIVERSITY_MEASURES, **kw: Any) -> list[Row]:
  """Finding 2: each IQLearn point's temperature frontier against MLE's and each MLE +
  entropy point's (mean quality gap over their common range), on each `diversity` measure
  the inputs have that is not saturated (`_saturated`; more than one temperature needed)."""
  out = []
  for sweep in sorted({r["sweep"] for r in inputs}):
    in_sweep = [r for r in inputs if r["sweep"] == sweep]
    if len({r["temperature"] for r in in_sweep}) < 2:
      continue
    others = [p for m in (BASELINE, ENTROPY) for _, p in _points(in_sweep, m)]
    measures = [m for m in diversity if any(r.get(m) not in (None, "") for r in in_sweep)]
    measures = [m for m in measures if not _saturated(in_sweep, m)]
    for _, point in _points(in_sweep, IQLEARN_METHODS):
      mine = [r for r in in_sweep if r["point"] == point]
      for other, measure in ((o, m) for m in measures for o in others):
        theirs = [r for r in in_sweep if r["point"] == other]
        seeds, indices = _common(mine, theirs, "seed"), _common(mine, theirs, "index")
        if not seeds or not indices:
          continue
        interval = stats.frontier_area_interval(
            *_frontier_arrays(mine, seeds, indices, measure),
            *_frontier_arrays(theirs, seeds, indices, measure), normalise=True, **kw)
        out.append(_row(2, sweep, f"{point} - {other}",
                        f"quality gap at matched {measure}", interval))
  return out


def overfitting_rows(curves: Sequence[Mapping[str, Any]], metric: str, **kw: Any
                     ) -> list[Row]:
  """Finding 3: on each subset size, MLE's peak-minus-final of `metric` (a validation score,
  higher better) minus each IQLearn subset point's, paired by seed."""
  out = []
  use = [r for r in curves if r.get("metric") == metric and r.get("train_examples")]
  for sweep in sorted({r["sweep"] for r in use}):
    in_sweep = [r for r in use if r["sweep"] == sweep]
    for size in sorted({int(float(r["train_examples"])) for r in in_sweep}):
      at = [r for r in in_sweep if int(float(r["train_examples"])) == size]
      drop = {}
      for r in sorted(at, key=lambda r: float(r["step"])):
        drop.setdefault((r["point"], str(r["seed"])), []).append(float(r["value"]))
      points = {p: r["method"] for r in at for p in [r["point"]]}
      bases = [p for p, m in points.items() if m == BASELINE]
      for point in [p for p, m in points.items() if m == IQLEARN]:
        for base in bases:
          seeds = sorted({s for p, s in drop if p == point} & {s for p, s in drop if p == base})
          a = [stats.peak_minus_final(drop[(base, s)]) for s in seeds]
          b = [stats.peak_minus_final(drop[(point, s)]) for s in seeds]
          if seeds:
            out.append(_row(3, sweep, f"{base} - {point} (N={size})",
                            f"peak minus final of {metric}",
                            stats.paired_seed_interval(a, b, **kw)))
  return out


REWARD_BASELINES = ("rho_logprob", "rho_logprob_norm")


def reward_rows(inputs: Sequence[Mapping[str, Any]], temperature: float = 1.0,
                baselines: Sequence[str] = REWARD_BASELINES, **kw: Any) -> list[Row]:
  """Finding 4: per IQLearn point, the within-input Spearman of the reward with the score
  minus that of the stronger of `baselines` (the one of higher mean over inputs: log π or
  length-normalised log π), per input averaged over seeds, paired over inputs. With γ = 1 the
  summed reward ranks an input's samples exactly as log π does, so only γ < 1 can beat it."""
  out = []
  use = [r for r in inputs if r.get("temperature") not in (None, "")
         and float(r["temperature"]) == temperature]
  for sweep in sorted({r["sweep"] for r in use}):
    in_sweep = [r for r in use if r["sweep"] == sweep]
    for _, point in _points(in_sweep, IQLEARN_METHODS):
      mine = [r for r in in_sweep if r["point"] == point]
      seeds, indices = _common(mine, mine, "seed"), _common(mine, mine, "index")
      with warnings.catch_warnings():  # an input without a correlation in any seed: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        reward = np.nanmean(_matrix(mine, "rho_reward", seeds, indices), axis=0)
        candidates = {b: np.nanmean(_matrix(mine, b, seeds, indices), axis=0)
                      for b in baselines if any(r.get(b) not in (None, "") for r in mine)}
      if not candidates:
        continue
      name = max(candidates, key=lambda b: np.nanmean(candidates[b])
                 if np.isfinite(candidates[b]).any() else -np.inf)
      out.append(_row(4, sweep, f"{point}: reward - {name[4:]}",
                      f"within-input Spearman with the score (T={temperature:g})",
                      stats.paired_seed_interval(reward, candidates[name], unit="inputs",
                                                 **kw)))
  return out


def cost_rows(rows: Sequence[Mapping[str, Any]], **kw: Any) -> list[Row]:
  """Finding 5: each offline IQLearn point's steps per second over MLE's − 1, paired by seed;
  the claim is a difference within ± `COST_MARGIN`."""
  out = []
  runs = [r for r in results.per_run(rows) if r.get("train_steps_per_second") not in (None, "")]
  for sweep in sorted({r["sweep"] for r in runs}):
    in_sweep = [r for r in runs if r["sweep"] == sweep]
    rate = {(r["point"], str(r["seed"])): float(r["train_steps_per_second"]) for r in in_sweep}
    for _, point in _points(in_sweep, IQLEARN):
      seeds = sorted({s for p, s in rate if p == point} & {s for p, s in rate if p == BASELINE})
      if not seeds:
        continue
      ratio = [rate[(point, s)] / rate[(BASELINE, s)] - 1 for s in seeds]
      interval = stats.paired_seed_interval(ratio, [0.0] * len(ratio), **kw)
      row = _row(5, sweep, f"{point} / {BASELINE} - 1", "training steps per second", interval)
      low, high = interval.low, interval.high
      row["verdict"] = (stats.INCONCLUSIVE if not (math.isfinite(low) and math.isfinite(high))
                        else stats.REPRODUCED if -COST_MARGIN < low and high < COST_MARGIN
                        else stats.NOT_REPRODUCED if high < -COST_MARGIN or low > COST_MARGIN
                        else stats.INCONCLUSIVE)
      out.append(row)
  return out


def findings(rows: Sequence[Mapping[str, Any]], examples: Sequence[Mapping[str, Any]],
             curves: Sequence[Mapping[str, Any]], inputs: Sequence[Mapping[str, Any]], *,
             overfitting_metric: str = "eval_validation/nll_neg", confidence: float = 0.95,
             num_resamples: int = stats.NUM_RESAMPLES) -> list[Row]:
  """Every comparison of the five findings (`FINDING_COLUMNS`), each finding's intervals at
  `confidence` Bonferroni-adjusted over its comparisons (with `num_resamples` replicates, more
  where the adjusted tails need them).

  `overfitting_metric`: the curve finding 3 reads (higher better); the default is the negated
  teacher-forced validation NLL (`negate_nll`), which every task logs.
  """
  known = known_distribution_sweeps(rows)  # their greedy score is no quality measure
  examples = [r for r in examples if r["sweep"] not in known]
  builders = {1: lambda **kw: quality_rows(examples, **kw) + run_metric_rows(rows, **kw),
              2: lambda **kw: frontier_rows(inputs, **kw),
              3: lambda **kw: overfitting_rows(curves, overfitting_metric, **kw),
              4: lambda **kw: reward_rows(inputs, **kw) + run_metric_rows(
                  rows, "reward_teacher_spearman", higher_is_claimed=True,
                  baseline_column="logprob_teacher_spearman", finding=4, **kw),
              5: lambda **kw: cost_rows(rows, **kw)}
  out = []
  for finding, build in builders.items():
    count = len(build(num_resamples=2))  # how many comparisons, for the adjustment
    if not count:
      continue
    level = 1 - (1 - confidence) / count
    # At least 20 replicates beyond each end of the adjusted interval.
    resamples = max(num_resamples, math.ceil(20 / ((1 - level) / 2)))
    out += build(confidence=level, num_resamples=resamples)
  return out


def negate_nll(curves: Sequence[Mapping[str, Any]]) -> list[Row]:
  """``eval_<split>/nll_neg`` rows (−NLL, higher better) beside each ``eval_<split>/nll``."""
  return [{**r, "metric": f"{r['metric']}_neg", "value": -float(r["value"])}
          for r in curves if str(r.get("metric", "")).endswith("/nll")]


def _against_every_baseline(rows: Sequence[Mapping[str, Any]]) -> list[Row]:
  """Finding 2's comparisons collapsed to one per (sweep, IQLearn point, measure): reproduced
  only if it beats MLE and every MLE + entropy point, not reproduced if it fails against any,
  else inconclusive; the row shown is the weakest comparison of that verdict."""
  groups: dict[tuple, list[Mapping[str, Any]]] = {}
  for r in rows:
    groups.setdefault((r["sweep"], r["comparison"].split(" - ")[0], r["measure"]), []).append(r)
  out = []
  for group in groups.values():
    states = [r["verdict"] for r in group]
    verdict = (stats.REPRODUCED if all(v == stats.REPRODUCED for v in states) else
               stats.NOT_REPRODUCED if stats.NOT_REPRODUCED in states else stats.INCONCLUSIVE)
    pool = [r for r in group if r["verdict"] == verdict] or list(group)
    weakest = min(pool, key=lambda r: r["estimate"] if math.isfinite(r["estimate"]) else 1e9)
    out.append({**weakest, "verdict": verdict})
  return out


def verdicts(finding_rows: Sequence[Mapping[str, Any]]) -> list[Row]:
  """One row per finding: reproduced if any comparison is, not reproduced if every one is
  not, else inconclusive (finding 2: an IQLearn point counts only against every baseline at
  once, `_against_every_baseline`); with the comparison whose interval is shown."""
  out = []
  for finding, claim in FINDINGS.items():
    mine = [r for r in finding_rows if r["finding"] == finding]
    if finding == 2:
      mine = _against_every_baseline(mine)
    if not mine:
      out.append({"finding": finding, "claim": claim, "verdict": "not measured"})
      continue
    states = [r["verdict"] for r in mine]
    verdict = (stats.REPRODUCED if stats.REPRODUCED in states else
               stats.NOT_REPRODUCED if all(s == stats.NOT_REPRODUCED for s in states) else
               stats.INCONCLUSIVE)
    shown = max(mine, key=lambda r: (r["verdict"] == verdict,
                                     r["estimate"] if math.isfinite(r["estimate"]) else -1e9))
    out.append({"finding": finding, "claim": claim, "verdict": verdict,
                "comparisons": len(mine), "shown": f"{shown['sweep']}: {shown['comparison']}",
                "estimate": shown["estimate"], "interval": f"[{shown['low']:.4g}, "
                f"{shown['high']:.4g}] ({100 * shown['confidence']:.3g}%)",
                "smallest_detectable": shown["smallest_detectable"], "n": shown["n"]})
  return out


def _cell(value: Any) -> str:
  if isinstance(value, float):
    return "" if math.isnan(value) else f"{value:.4g}"
  return "" if value is None else str(value).replace("|", "\\|")


def verdict_markdown(verdict_rows: Sequence[Mapping[str, Any]],
                     finding_rows: Sequence[Mapping[str, Any]]) -> str:
  """The verdict table (one row per finding) and every comparison under it, as Markdown,
  generated from the numbers."""
  head = ["finding", "claim", "verdict", "shown", "estimate", "interval",
          "smallest_detectable", "comparisons", "n"]
  lines = ["## Verdicts\n",
           "Each finding's comparisons are paired by seed and example; intervals are bootstrap "
           "percentile intervals, Bonferroni-adjusted within a finding. reproduced: an interval "
           "wholly on the claimed side of 0 (finding 5: within ±10% of MLE); not reproduced: "
           "wholly on the other side, or below the smallest detectable effect (2.8 × the "
           "paired SE, from this run's variance); otherwise inconclusive.\n",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  lines += ["| " + " | ".join(_cell(r.get(c)) for c in head) + " |" for r in verdict_rows]
  lines += ["", "### Every comparison (findings.csv)\n",
            "| " + " | ".join(FINDING_COLUMNS) + " |", "|" + "---|" * len(FINDING_COLUMNS)]
  lines += ["| " + " | ".join(_cell(r.get(c)) for c in FINDING_COLUMNS) + " |"
            for r in finding_rows]
  return "\n".join(lines) + "\n"
