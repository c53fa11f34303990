"""The statistics every report and benchmark uses: one t-interval, one verdict, one Kendall tau, one bootstrap.

A comparison between two structures (or two methods) is made seed by seed: the per-seed differences get a
mean and a 95% Student-t interval (`t_interval95`), and words are chosen from the interval alone
(`seed_verdict`: "better" only when it excludes zero). Rankings are compared with Kendall's tau-b
(`kendall_tau`) and a percentile bootstrap over the ranked items (`bootstrap_ci95`).

  >>> from tf_metaprune import stats
  >>> mean, low, high = stats.t_interval95([0.4, -0.2, 0.5])
  >>> round(mean, 2), round(low, 2), round(high, 2)
  (0.23, -0.71, 1.17)
  >>> stats.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4])
  0.6666666666666666

Only numpy: no scipy at run time (the tests check both against scipy).
"""

import math

import numpy as np

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (beyond: a Cornish-Fisher expansion).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile975(df):
  """The 0.975 quantile of Student's t with `df` >= 1 degrees of freedom (within 1e-3 of the exact one)."""
  if df < 1:
    raise ValueError(f"df={df!r} must be >= 1 (an interval needs at least two values)")
  if df <= len(_T975):
    return _T975[int(df) - 1]
  z = 1.959964   # Cornish-Fisher expansion around the normal quantile
  return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def t_interval95(values):
  """(mean, low, high): the mean of `values` and its 95% Student-t confidence interval.

  For paired comparisons pass the per-seed differences. Fewer than two values
  give (mean, nan, nan): one seed has no interval.

  >>> mean, low, high = t_interval95([1.0, 2.0, 3.0])
  >>> round(mean, 2), round(low, 2), round(high, 2)
  (2.0, -0.48, 4.48)
  """
  v = np.asarray(list(values), dtype=float)
  if v.size == 0:
    return float("nan"), float("nan"), float("nan")
  mean = float(v.mean())
  if v.size < 2:
    return mean, float("nan"), float("nan")
  half = t_quantile975(v.size - 1) * float(v.std(ddof=1)) / np.sqrt(v.size)
  return mean, float(mean - half), float(mean + half)


def paired_interval95(a, b):
  """(mean, low, high) of the per-pair differences a[i] - b[i] (e.g. two methods run with the same seeds)."""
  a, b = list(a), list(b)
  if len(a) != len(b):
    raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}; pair them by seed first")
  return t_interval95([x - y for x, y in zip(a, b)])


def excludes_zero(low, high):
  """True when a (low, high) interval lies entirely on one side of zero (nan bounds: False)."""
  return bool(low > 0 or high < 0)


def seed_verdict(differences_points):
  """Words for searched-minus-uniform accuracy differences, honest about what the seeds can say.

  Args:
    differences_points: searched minus uniform test accuracy in percentage
      points: one number (one seed) or one per seed, paired by seed.

  Returns:
    A sentence with the mean and its 95% confidence interval; "better" or
    "worse" only when the interval excludes zero.

  >>> seed_verdict([0.4, -0.2, 0.5])
  'searched minus uniform: +0.23 pt, 95% CI [-0.71, +1.17] over 3 seeds: the interval contains 0, so neither is better'
  """
  if isinstance(differences_points, (int, float, np.floating, np.integer)):
    differences_points = [differences_points]
  mean, low, high = t_interval95(differences_points)
  n = len(differences_points)
  if n < 2:
    return (f"searched minus uniform: {mean:+.2f} pt on one seed; one seed cannot tell which is better (another "
            "seed or CPU moves this figure by points: `python benchmarks/demo_seeds.py` measures the interval)")
  head = f"searched minus uniform: {mean:+.2f} pt, 95% CI [{low:+.2f}, {high:+.2f}] over {n} seeds"
  if excludes_zero(low, high):
    return f"{head}: the searched structure is {'better' if low > 0 else 'worse'} (the interval excludes 0)"
  return f"{head}: the interval contains 0, so neither is better"


def mean_std(values):
  """(mean, sample standard deviation); the deviation is nan for fewer than two values (none was measured)."""
  v = np.asarray(list(values), dtype=float)
  if v.size == 0:
    return float("nan"), float("nan")
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def kendall_tau(a, b):
  """Kendall's tau-b between two equally long sequences (ties counted as scipy's `kendalltau` does).

  Returns nan when either sequence is constant (no ordering to compare).

  >>> kendall_tau([1, 2, 3], [3, 2, 1])
  -1.0
  """
  a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(f"kendall_tau needs two 1-D sequences of one length, got shapes {a.shape} and {b.shape}")
  upper = np.triu_indices(a.size, k=1)
  da = np.sign(a[:, None] - a[None, :])[upper]
  db = np.sign(b[:, None] - b[None, :])[upper]
  pairs = da.size
  untied_a, untied_b = pairs - int(np.sum(da == 0)), pairs - int(np.sum(db == 0))
  if untied_a == 0 or untied_b == 0:
    return float("nan")
  return float(np.sum(da * db) / math.sqrt(untied_a * untied_b))


def bootstrap_ci95(statistic, *samples, rounds=2000, seed=0):
  """(point, low, high): `statistic(*samples)` and its percentile bootstrap 95% interval.

  The items (the i-th entry of every sample together, e.g. one structure's
  fitness and its retrained accuracy) are resampled jointly with replacement;
  a resample of fewer than three distinct items, or whose statistic is nan,
  is skipped.

  Args:
    statistic: a function of the samples, e.g. `kendall_tau`.
    *samples: equally long sequences.
    rounds: the number of resamples.
    seed: the resampling seed (one seed, one interval).
  """
  arrays = [np.asarray(s, dtype=float) for s in samples]
  n = len(arrays[0])
  if any(len(s) != n for s in arrays):
    raise ValueError(f"bootstrap samples need one length, got {[len(s) for s in arrays]}")
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(rounds):
    idx = rng.integers(0, n, n)
    if len(set(idx.tolist())) > 2:
      value = statistic(*(s[idx] for s in arrays))
      if value == value:
        values.append(value)
  point = statistic(*arrays)
  if not values:
    return float(point), float("nan"), float("nan")
  return float(point), float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))
