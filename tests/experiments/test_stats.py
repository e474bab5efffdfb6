"""The reproduction's statistics against cases computed by hand."""
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from irl_lm.experiments import stats


def test_paired_difference_mean_and_bounds():
  a = [[1.0, 2.0], [3.0, 4.0]]
  b = [[0.0, 0.0], [1.0, 1.0]]
  interval = stats.paired_difference(a, b)  # differences [[1, 2], [2, 3]]
  assert interval.estimate == pytest.approx(2.0)
  assert 1.0 <= interval.low <= 2.0 <= interval.high <= 3.0
  assert interval.n == "2 seeds x 2 examples"


def test_paired_difference_resamples_seeds():
  # Seed 0 differs by 0 on every example, seed 1 by 2: examples carry no variance, so a
  # replicate's mean is 0, 1 or 2 with probabilities 1/4, 1/2, 1/4 (SD sqrt(1/2)).
  a = np.array([[0.0] * 10, [2.0] * 10])
  interval = stats.paired_difference(a, np.zeros_like(a), num_resamples=4000)
  assert interval.estimate == pytest.approx(1.0)
  assert (interval.low, interval.high) == (0.0, 2.0)
  assert interval.se == pytest.approx(math.sqrt(0.5), abs=0.03)


def test_paired_difference_resamples_examples_shared_by_seeds():
  # One difference per example, the same in both seeds: the replicates are means of N draws of
  # {0, 1} (SD 0.5 / sqrt(N)); drawing examples separately per seed would halve the variance.
  d = np.tile([0.0, 1.0] * 50, (2, 1))
  interval = stats.paired_difference(d, np.zeros_like(d), num_resamples=4000)
  assert interval.estimate == pytest.approx(0.5)
  assert interval.se == pytest.approx(0.5 / math.sqrt(100), rel=0.1)


def test_paired_difference_constant_difference_and_errors():
  interval = stats.paired_difference([[3.0, 4.0, 5.0]], [[2.0, 3.0, 4.0]])
  assert (interval.estimate, interval.low, interval.high, interval.se) == (1.0, 1.0, 1.0, 0.0)
  assert math.isnan(stats.paired_difference([[1.0]], [[0.0]]).low)
  with pytest.raises(ValueError, match="same"):
    stats.paired_difference([[1.0, 2.0]], [[1.0, 2.0, 3.0]])


def test_paired_difference_is_seeded():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(3, 20)), rng.normal(size=(3, 20))
  assert stats.paired_difference(a, b, seed=4) == stats.paired_difference(a, b, seed=4)


def test_detectable_effect_is_2_8_standard_errors():
  assert stats.DETECTABLE_Z == pytest.approx(1.95996 + 0.84162, abs=1e-4)
  assert stats.detectable_effect(0.5) == pytest.approx(1.4008, abs=1e-3)


def test_frontier_area_by_hand():
  # a: flat at 1 on [0, 2]; b: flat at 0 on [0.5, 3]; common range [0.5, 2] of width 1.5.
  assert stats.frontier_area([0, 1, 2], [1, 1, 1], [0.5, 3], [0, 0]) == pytest.approx(1.5)
  assert stats.frontier_area([2, 0, 1], [1, 1, 1], [3, 0.5], [0, 0],
                             normalise=True) == pytest.approx(1.0)
  # Crossing lines: a = x, b = 1 on [0, 2]: the areas above and below cancel.
  assert stats.frontier_area([0, 2], [0, 2], [0, 2], [1, 1]) == pytest.approx(0.0)
  # a = x against b = 0 on [0, 2]: a triangle of area 2 (and -2 the other way round).
  assert stats.frontier_area([0, 2], [0, 2], [0, 2], [0, 0]) == pytest.approx(2.0)
  assert stats.frontier_area([0, 2], [0, 0], [0, 2], [0, 2]) == pytest.approx(-2.0)
  # A knot of b inside the range: b = |x - 1| against a = 1 on [0, 2]: area 2 - 1 = 1.
  assert stats.frontier_area([0, 2], [1, 1], [0, 1, 2], [1, 0, 1]) == pytest.approx(1.0)


def test_frontier_area_without_overlap_is_nan():
  assert math.isnan(stats.frontier_area([0, 1], [1, 1], [2, 3], [0, 0]))
  assert math.isnan(stats.frontier_area([0], [1], [0, 1], [0, 0]))


def test_frontier_area_interval():
  # Two temperatures; a's quality is b's + 1 at the same diversity in every cell, so every
  # replicate's area is the common width times 1.
  diversity = np.array([[[0.0, 0.2, 0.4], [1.0, 1.2, 1.4]]] * 2)  # [S=2, T=2, N=3]
  quality_b = np.random.default_rng(0).normal(size=diversity.shape)
  interval = stats.frontier_area_interval(diversity, quality_b + 1, diversity, quality_b,
                                          num_resamples=300)
  assert interval.estimate == pytest.approx(1.0)  # means: diversity 0.2 .. 1.2
  assert interval.low == pytest.approx(1.0) and interval.high == pytest.approx(1.0)
  normalised = stats.frontier_area_interval(diversity, quality_b + 1, diversity, quality_b,
                                            normalise=True, num_resamples=50)
  assert normalised.estimate == pytest.approx(1.0)
  with pytest.raises(ValueError, match="same seeds"):
    stats.frontier_area_interval(diversity, quality_b, diversity[:1], quality_b[:1])


def test_frontier_area_interval_estimate_is_the_area_of_mean_curves():
  rng = np.random.default_rng(3)
  da, qa = rng.uniform(size=(3, 4, 5)), rng.uniform(size=(3, 4, 5))
  db, qb = rng.uniform(size=(3, 2, 5)), rng.uniform(size=(3, 2, 5))
  db[:, 0] -= 1.0  # so the two ranges overlap
  db[:, 1] += 1.0
  expected = stats.frontier_area(da.mean(axis=(0, 2)), qa.mean(axis=(0, 2)),
                                 db.mean(axis=(0, 2)), qb.mean(axis=(0, 2)))
  interval = stats.frontier_area_interval(da, qa, db, qb, num_resamples=200)
  assert interval.estimate == pytest.approx(expected)
  assert interval.low <= interval.high


def test_peak_minus_final():
  assert stats.peak_minus_final([0.1, 0.5, 0.3]) == pytest.approx(0.2)
  assert stats.peak_minus_final([3.0, 2.0, 2.5], higher_is_better=False) == pytest.approx(0.5)
  assert stats.peak_minus_final([0.1, 0.2, 0.3]) == 0.0
  assert math.isnan(stats.peak_minus_final([]))


def test_within_input_spearman():
  x = [[1, 2, 3], [1, 2, 3], [1, 1, 1]]
  y = [[1, 2, 3], [3, 2, 1], [1, 2, 3]]
  rho = stats.within_input_spearman(x, y)
  assert rho[0] == pytest.approx(1.0) and rho[1] == pytest.approx(-1.0) and math.isnan(rho[2])
  # Ties take average ranks: x ranks [1, 2.5, 2.5, 4] against [1, 2, 3, 4]: 4.5 / sqrt(22.5).
  rho = stats.within_input_spearman([[1, 2, 2, 3]], [[1, 2, 3, 4]])
  assert rho[0] == pytest.approx(4.5 / math.sqrt(22.5))
  assert rho[0] == pytest.approx(scipy_stats.spearmanr([1, 2, 2, 3], [1, 2, 3, 4])[0])


def test_mean_and_paired_seed_intervals():
  constant = stats.mean_interval([0.5, 0.5, math.nan, 0.5])
  assert (constant.estimate, constant.n) == (0.5, "3 inputs")
  assert constant.low == pytest.approx(0.5) and constant.high == pytest.approx(0.5)
  spread = stats.mean_interval([0.0, 1.0] * 20)
  assert spread.low < 0.5 < spread.high and spread.se == pytest.approx(0.5 / math.sqrt(40),
                                                                        rel=0.15)
  paired = stats.paired_seed_interval([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
  assert paired.estimate == 1.0 and paired.low == pytest.approx(1.0)
  assert math.isnan(stats.paired_seed_interval([1.0], [0.0]).low)
  with pytest.raises(ValueError, match="equal"):
    stats.paired_seed_interval([1.0, 2.0], [1.0])


@pytest.mark.parametrize("low, high, smallest, higher, expected", [
    (0.1, 0.5, None, True, stats.REPRODUCED),
    (-0.5, -0.1, None, True, stats.NOT_REPRODUCED),
    (-0.5, -0.1, None, False, stats.REPRODUCED),
    (-0.1, 0.3, 0.2, True, stats.INCONCLUSIVE),
    (-0.1, 0.1, 0.2, True, stats.NOT_REPRODUCED),  # a claimed effect of 0.2 is excluded
    (-0.1, 0.1, None, True, stats.INCONCLUSIVE),
    (0.0, 0.0, None, True, stats.NOT_REPRODUCED),  # no difference at all
    (math.nan, math.nan, 0.2, True, stats.INCONCLUSIVE),
])
def test_verdict(low, high, smallest, higher, expected):
  interval = stats.Interval(estimate=0.0, low=low, high=high, se=0.1)
  assert stats.verdict(interval, smallest, higher_is_claimed=higher) == expected
