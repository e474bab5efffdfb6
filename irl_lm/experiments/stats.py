"""Paired statistics of a reproduction: intervals, detectable effects, frontiers, curves.

Every comparison is paired: two methods trained with the same seeds (the same data order) and
evaluated on the same examples, so the unit of analysis is the per-(seed, example) difference.

* `paired_difference`: the mean difference of two methods' per-example scores
  (``float [S, N]``: S seeds × N examples) with a percentile interval from a bootstrap that
  resamples both factors, seeds and examples. Every seed is scored on the same examples, so the
  examples are a factor shared by the seeds (crossed, not nested): one replicate draws S seed
  indices and N example indices, and both methods and every drawn seed use the same ones.
* `detectable_effect`: the smallest true difference a comparison detects with 80% power at a
  two-sided α = 0.05, (z_0.975 + z_0.8) × SE ≈ 2.8 × SE, from the SE of the paired difference
  (of a pilot run before the protocol, or of the run itself after it; say which).
* `frontier_area` / `frontier_area_interval`: the signed area between two methods' (diversity,
  quality) curves (one point per sampling temperature) over their common diversity range, and
  the same bootstrap over seeds and examples.
* `peak_minus_final`: how much an over-fitting curve lost from its best evaluation to its last.
* `within_input_spearman`: per input, the Spearman correlation of a sample score (the summed
  implicit reward, log π, length-normalised log π) with the task score over the input's K
  samples; `mean_interval` and `paired_seed_interval` put intervals on their means
  (`scipy.stats.bootstrap`, which covers one resampled factor).
* `verdict`: reproduced / not reproduced / inconclusive from an interval and the effect the
  comparison could detect.

Pure functions of numpy arrays; seeded, so the same input gives the same interval.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence

import numpy as np
from scipy import stats as scipy_stats

NUM_RESAMPLES = 2000
CONFIDENCE = 0.95
# (z_{1 - α/2} + z_{power}) for a two-sided α = 0.05 at 80% power: 1.960 + 0.842.
DETECTABLE_Z = float(scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8))
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"


@dataclasses.dataclass(frozen=True)
class Interval:
  """An estimate with its percentile interval and the bootstrap standard error.

  `low` / `high` are NaN when the data cannot give an interval (fewer than two resampling
  units, or a statistic undefined on every replicate).
  """
  estimate: float
  low: float
  high: float
  se: float
  confidence: float = CONFIDENCE
  n: str = ""  # what was resampled, e.g. "5 seeds x 256 examples"

  def as_dict(self, prefix: str = "") -> dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in dataclasses.asdict(self).items()}

  def __str__(self) -> str:
    return (f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}] "
            f"({100 * self.confidence:g}% CI, {self.n})")


def _percentile(replicates: np.ndarray, estimate: float, confidence: float, n: str) -> Interval:
  finite = replicates[np.isfinite(replicates)]
  if finite.size < 2:
    return Interval(estimate, math.nan, math.nan, math.nan, confidence, n)
  tail = 100 * (1 - confidence) / 2
  low, high = np.percentile(finite, [tail, 100 - tail])
  return Interval(float(estimate), float(low), float(high), float(np.std(finite, ddof=1)),
                  confidence, n)


def resample_counts(num_resamples: int, size: int, rng: np.random.Generator) -> np.ndarray:
  """How often each of `size` units is drawn in each of `num_resamples` draws with
  replacement: int [B, size], every row summing to `size`."""
  draws = rng.integers(0, size, size=(num_resamples, size))
  return np.stack([np.bincount(row, minlength=size) for row in draws])


def _as_seeds_examples(values: Any, name: str) -> np.ndarray:
  array = np.asarray(values, dtype=np.float64)
  if array.ndim == 1:
    array = array[None, :]
  if array.ndim != 2 or array.size == 0:
    raise ValueError(f"{name} must be a non-empty float [seeds, examples] array, got shape "
                     f"{array.shape}.")
  return array


def paired_difference(a_SN: Any, b_SN: Any, *, num_resamples: int = NUM_RESAMPLES,
                      confidence: float = CONFIDENCE, seed: int = 0) -> Interval:
  """The mean of `a - b` with a bootstrap interval over seeds and examples (module docstring).

  Args:
    a_SN, b_SN: float [S, N] (or [N] for one seed): per-example scores of two methods, row s
      the run of seed s, column n example n (the same examples in the same order).
    num_resamples: bootstrap replicates.
    confidence: of the percentile interval.
    seed: of the resampling.

  Returns:
    An `Interval` of the mean difference; `se` is the replicates' standard deviation (the SE
    that `detectable_effect` takes).

  Raises:
    ValueError: the arrays differ in shape or are empty.
  """
  a, b = _as_seeds_examples(a_SN, "a_SN"), _as_seeds_examples(b_SN, "b_SN")
  if a.shape != b.shape:
    raise ValueError(f"paired scores need the same [seeds, examples] shape, got {a.shape} and "
                     f"{b.shape}: evaluate both methods with the same seeds and examples.")
  d = a - b
  num_seeds, num_examples = d.shape
  if d.size < 2:
    return Interval(float(d.mean()), math.nan, math.nan, math.nan, confidence, "1 value")
  rng = np.random.default_rng(seed)
  seed_counts = resample_counts(num_resamples, num_seeds, rng) if num_seeds > 1 else np.ones(
      (num_resamples, 1))
  example_counts = resample_counts(num_resamples, num_examples, rng)
  replicates = np.einsum("bs,sn,bn->b", seed_counts, d, example_counts) / d.size
  return _percentile(replicates, float(d.mean()), confidence,
                     f"{num_seeds} seeds x {num_examples} examples")


def detectable_effect(se: float, z: float = DETECTABLE_Z) -> float:
  """The smallest true difference detected with 80% power at two-sided α = 0.05: z × SE."""
  return float(z * se)


def _curve(diversity: Any, quality: Any) -> tuple[np.ndarray, np.ndarray]:
  x, y = np.asarray(diversity, np.float64), np.asarray(quality, np.float64)
  keep = np.isfinite(x) & np.isfinite(y)
  order = np.argsort(x[keep], kind="stable")
  return x[keep][order], y[keep][order]


def frontier_area(diversity_a: Any, quality_a: Any, diversity_b: Any, quality_b: Any,
                  *, normalise: bool = False) -> float:
  """The signed area between curve a and curve b over their common diversity range.

  Each curve is its points sorted by diversity and joined by straight lines; the area is
  ∫ (q_a(x) - q_b(x)) dx over [max of the minima, min of the maxima], exact for the
  piecewise-linear curves (integrated over the union of both curves' knots in the range).

  Args:
    diversity_a, quality_a: float [P_a]: method a's points (e.g. one per temperature).
    diversity_b, quality_b: float [P_b]: method b's.
    normalise: divide by the width of the common range (the mean vertical gap, in units of
      quality).

  Returns:
    The area (positive: a scores higher at matched diversity); NaN when the ranges do not
    overlap over a positive width or a curve has fewer than two finite points.
  """
  xa, ya = _curve(diversity_a, quality_a)
  xb, yb = _curve(diversity_b, quality_b)
  if xa.size < 2 or xb.size < 2:
    return math.nan
  lo, hi = max(xa[0], xb[0]), min(xa[-1], xb[-1])
  if not hi > lo:
    return math.nan
  knots = np.unique(np.concatenate([[lo, hi], xa[(xa > lo) & (xa < hi)],
                                    xb[(xb > lo) & (xb < hi)]]))
  gap = np.interp(knots, xa, ya) - np.interp(knots, xb, yb)
  area = float(np.sum((gap[1:] + gap[:-1]) / 2 * np.diff(knots)))
  return area / (hi - lo) if normalise else area


def frontier_area_interval(diversity_a_STN: Any, quality_a_STN: Any, diversity_b_STN: Any,
                           quality_b_STN: Any, *, normalise: bool = False,
                           num_resamples: int = NUM_RESAMPLES, confidence: float = CONFIDENCE,
                           seed: int = 0) -> Interval:
  """`frontier_area` of two methods' mean curves, with a bootstrap over seeds and examples.

  A curve's point at temperature t is (mean diversity, mean quality) over seeds and examples
  at t; a replicate redraws the seeds and the examples (the same draws for both methods and
  every temperature) and recomputes both curves and the area.

  Args:
    diversity_a_STN, quality_a_STN: float [S, T, N]: method a's per-example diversity (e.g.
      distinct solution orders among an input's K samples, or 100 − its Self-BLEU) and
      quality, per seed S and temperature T; NaN where an example has no value.
    diversity_b_STN, quality_b_STN: method b's, the same S and N (T may differ).
    normalise, num_resamples, confidence, seed: as `frontier_area` / `paired_difference`.

  Raises:
    ValueError: the methods' seeds or examples differ in number, or an array is not 3-D.
  """
  arrays = [np.asarray(v, np.float64) for v in (diversity_a_STN, quality_a_STN,
                                                diversity_b_STN, quality_b_STN)]
  if any(v.ndim != 3 for v in arrays):
    raise ValueError("frontier arrays must be float [seeds, temperatures, examples], got shapes "
                     f"{[v.shape for v in arrays]}.")
  (num_seeds, _, num_examples), shape_b = arrays[0].shape, arrays[2].shape
  if arrays[0].shape != arrays[1].shape or arrays[2].shape != arrays[3].shape or (
      shape_b[0], shape_b[2]) != (num_seeds, num_examples):
    raise ValueError("a paired frontier needs both methods on the same seeds and examples, got "
                     f"shapes {[v.shape for v in arrays]}.")

  def means(counts_s: np.ndarray, counts_n: np.ndarray) -> list[np.ndarray]:
    """Weighted means over seeds and examples: [B, T] per array, NaN entries skipped."""
    out = []
    for v in arrays:
      w = np.einsum("bs,bn->bsn", counts_s, counts_n)[:, :, None, :] * np.isfinite(v)[None]
      total = np.einsum("bstn,stn->bt", w, np.nan_to_num(v))
      out.append(total / np.maximum(w.sum(axis=(1, 3)), 1e-12))
    return out

  area = lambda m, i: frontier_area(m[0][i], m[1][i], m[2][i], m[3][i],  # noqa: E731
                                    normalise=normalise)
  estimate = area(means(np.ones((1, num_seeds)), np.ones((1, num_examples))), 0)
  rng = np.random.default_rng(seed)
  seed_counts = resample_counts(num_resamples, num_seeds, rng) if num_seeds > 1 else np.ones(
      (num_resamples, 1))
  example_counts = resample_counts(num_resamples, num_examples, rng)
  replicates = []
  for start in range(0, num_resamples, 200):  # bounded memory: [200, S, T, N] weights
    m = means(seed_counts[start:start + 200], example_counts[start:start + 200])
    replicates += [area(m, i) for i in range(m[0].shape[0])]
  return _percentile(np.asarray(replicates), estimate, confidence,
                     f"{num_seeds} seeds x {num_examples} examples")


def peak_minus_final(values: Sequence[float], higher_is_better: bool = True) -> float:
  """How much a curve lost from its best point to its last: max − last (min − last, negated,
  when lower is better, e.g. validation NLL: last − min). ≥ 0; 0 for a curve that ends at its
  best. `values` in step order (include the step-0 evaluation)."""
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  if v.size == 0:
    return math.nan
  return float(v.max() - v[-1]) if higher_is_better else float(v[-1] - v.min())


def _bootstrap(data: tuple[np.ndarray, ...], statistic: Any, *, paired: bool,
               num_resamples: int, confidence: float, seed: int, n: str) -> Interval:
  estimate = float(statistic(*data, axis=-1))
  if data[0].size < 2:
    return Interval(estimate, math.nan, math.nan, math.nan, confidence, n)
  result = scipy_stats.bootstrap(data, statistic, paired=paired, vectorized=True,
                                 n_resamples=num_resamples, confidence_level=confidence,
                                 method="percentile", random_state=np.random.default_rng(seed))
  low, high = result.confidence_interval
  return Interval(estimate, float(low), float(high), float(result.standard_error), confidence, n)


def mean_interval(values: Any, *, num_resamples: int = NUM_RESAMPLES,
                  confidence: float = CONFIDENCE, seed: int = 0, unit: str = "inputs"
                  ) -> Interval:
  """The mean of `values` (float [M]; NaNs dropped) with a percentile bootstrap interval over
  its M units (`scipy.stats.bootstrap`)."""
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  if v.size == 0:
    return Interval(math.nan, math.nan, math.nan, math.nan, confidence, f"0 {unit}")
  return _bootstrap((v,), np.mean, paired=False, num_resamples=num_resamples,
                    confidence=confidence, seed=seed, n=f"{v.size} {unit}")


def paired_seed_interval(a_S: Any, b_S: Any, *, num_resamples: int = NUM_RESAMPLES,
                         confidence: float = CONFIDENCE, seed: int = 0, unit: str = "seeds"
                         ) -> Interval:
  """The mean of `a - b` over paired units (float [S] each, e.g. one value per seed, or per
  input) with a paired percentile bootstrap (`scipy.stats.bootstrap(paired=True)`); pairs
  with a NaN are dropped.

  Raises:
    ValueError: `a_S` and `b_S` differ in length.
  """
  a, b = np.asarray(a_S, np.float64), np.asarray(b_S, np.float64)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(f"paired values need equal 1-D shapes, got {a.shape} and {b.shape}.")
  keep = np.isfinite(a) & np.isfinite(b)
  a, b = a[keep], b[keep]
  if a.size == 0:
    return Interval(math.nan, math.nan, math.nan, math.nan, confidence, f"0 {unit}")
  mean_diff = lambda x, y, axis=-1: np.mean(x - y, axis=axis)  # noqa: E731
  return _bootstrap((a, b), mean_diff, paired=True, num_resamples=num_resamples,
                    confidence=confidence, seed=seed, n=f"{a.size} {unit}")


def within_input_spearman(x_PK: Any, y_PK: Any) -> np.ndarray:
  """Per input (row), the Spearman correlation of x and y over its K samples.

  Args:
    x_PK: float [P, K]: e.g. the summed implicit reward of each of an input's K samples.
    y_PK: float [P, K]: e.g. each sample's task score.

  Returns:
    float [P]: the rank correlation per input (average ranks for ties, `scipy.stats.rankdata`);
    NaN for an input whose x or y is constant over its samples (no ranking to compare).
  """
  x, y = np.asarray(x_PK, np.float64), np.asarray(y_PK, np.float64)
  if x.shape != y.shape or x.ndim != 2:
    raise ValueError(f"within-input correlation needs equal [inputs, samples] shapes, got "
                     f"{x.shape} and {y.shape}.")
  rx = scipy_stats.rankdata(x, axis=1)
  ry = scipy_stats.rankdata(y, axis=1)
  rx -= rx.mean(axis=1, keepdims=True)
  ry -= ry.mean(axis=1, keepdims=True)
  denominator = np.sqrt((rx ** 2).sum(axis=1) * (ry ** 2).sum(axis=1))
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(denominator > 0, (rx * ry).sum(axis=1) / denominator, np.nan)


def verdict(interval: Interval, smallest_effect: Optional[float] = None,
            higher_is_claimed: bool = True) -> str:
  """Reads a difference (claimed method − comparison) against the paper's claim.

  * reproduced: the interval lies wholly on the claimed side of 0;
  * not reproduced: it lies wholly on the other side (or at 0), or wholly below `smallest_effect` (the
    effect the protocol was sized to detect, stated before the run): a claimed effect at least
    that large is excluded;
  * inconclusive: otherwise (including no interval).

  `higher_is_claimed`: False when the claim is a decrease (e.g. a lower forward KL).
  """
  low, high = interval.low, interval.high
  if not (math.isfinite(low) and math.isfinite(high)):
    return INCONCLUSIVE
  if not higher_is_claimed:
    low, high = -high, -low
  if low > 0:
    return REPRODUCED
  if high <= 0 or (smallest_effect is not None and math.isfinite(smallest_effect)
                  and high < abs(smallest_effect)):
    return NOT_REPRODUCED
  return INCONCLUSIVE
