"""tf_metaprune.stats: the one t-interval, verdict, Kendall tau and bootstrap, checked against scipy."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tf_metaprune import pipeline
from tf_metaprune import stats


def test_t_interval_matches_scipy():
  for n in (2, 3, 5, 12, 31, 40):
    v = np.random.default_rng(n).normal(size=n)
    mean, low, high = stats.t_interval95(v)
    ref = scipy_stats.t.interval(0.95, n - 1, loc=v.mean(), scale=scipy_stats.sem(v))
    assert abs(low - ref[0]) < 0.01 * (ref[1] - ref[0]) + 1e-9 and abs(high - ref[1]) < 0.01 * (ref[1] - ref[0]) + 1e-9
    assert mean == pytest.approx(v.mean())


def test_one_value_has_no_interval_and_no_spread():
  mean, low, high = stats.t_interval95([1.5])
  assert mean == 1.5 and np.isnan(low) and np.isnan(high)
  assert stats.mean_std([1.5])[0] == 1.5 and np.isnan(stats.mean_std([1.5])[1])
  assert stats.mean_std([1.0, 3.0]) == pytest.approx((2.0, np.sqrt(2.0)))


def test_paired_interval_is_the_interval_of_the_differences():
  a, b = [83.1, 82.9, 83.2], [82.9, 82.8, 83.1]
  assert stats.paired_interval95(a, b) == pytest.approx(stats.t_interval95([x - y for x, y in zip(a, b)]))
  with pytest.raises(ValueError, match="equal lengths, got 3 and 2"):
    stats.paired_interval95(a, b[:2])


def test_verdict_calls_one_structure_better_only_when_the_95pct_interval_excludes_zero():
  assert "one seed cannot tell" in stats.seed_verdict(1.2)
  assert "neither is better" in stats.seed_verdict([0.4, -0.2, 1.0])     # mean +0.4, CI about [-1.1, +1.9]
  assert "is better" in stats.seed_verdict([1.1, 1.3, 1.2])
  assert "is worse" in stats.seed_verdict([-1.1, -1.3, -1.2])
  # Mean beyond one std but the 3-seed interval still contains 0: the old std rule called this "better".
  assert "neither is better" in stats.seed_verdict([0.1, 1.2, 1.8])


def test_old_pipeline_names_are_the_stats_functions():
  assert pipeline.t_interval95 is stats.t_interval95 and pipeline.seed_verdict is stats.seed_verdict


@pytest.mark.parametrize("seed", range(6))
def test_kendall_tau_b_matches_scipy_with_and_without_ties(seed):
  rng = np.random.default_rng(seed)
  a = rng.integers(0, 5 if seed % 2 else 1000, size=15)   # odd seeds: many ties
  b = a + rng.normal(size=15) * 3
  assert stats.kendall_tau(a, b) == pytest.approx(scipy_stats.kendalltau(a, b)[0], abs=1e-12)
  assert np.isnan(stats.kendall_tau([1, 1, 1], [1, 2, 3]))


def test_bootstrap_interval_covers_the_point_and_is_reproducible():
  rng = np.random.default_rng(0)
  x = rng.normal(size=20)
  y = x + rng.normal(size=20)
  point, low, high = stats.bootstrap_ci95(stats.kendall_tau, x, y, rounds=300)
  assert low < point < high and -1 <= low and high <= 1
  assert stats.bootstrap_ci95(stats.kendall_tau, x, y, rounds=300) == (point, low, high)
  assert stats.bootstrap_ci95(stats.kendall_tau, x, y, rounds=300, seed=1) != (point, low, high)
  with pytest.raises(ValueError, match=r"one length, got \[20, 19\]"):
    stats.bootstrap_ci95(stats.kendall_tau, x, y[:19])
