"""The uniform baseline: every prunable width scaled by one ratio.

The reference point of every pruning paper (MetaPruning Tables 1-3): the
largest single width ratio `r` such that `space.uniform(r)` -- every gene at
`round(base * r)` channels, snapped to its nearest choice -- meets the
budget. Under a FLOPs window (`FlopsBudget(max_mflops, min_mflops)`) that is
the largest `r` landing inside the window, so searched and uniform are
compared at (nearly) the same FLOPs; `extra["layer_width_ratios"]` shows how
close every layer is to `r` (a coarse grid, `divisor=8`, is far from it). It is scored exactly like a searched candidate (BN recalibration +
top-1 accuracy on the held-out search split with the PruningNet's generated
weights), so the two are compared at equal budget and equal evaluation.

Example:

  >>> base = tf_metaprune.search.uniform(net, splits.search, budget)
  >>> found = tf_metaprune.search.evolutionary(net, splits.search, budget)
  >>> found.best_accuracy >= base.best_accuracy
"""

import dataclasses
import time

import numpy as np
import tensorflow as tf

from tf_metaprune.search import _common
from tf_metaprune.search import registry
from tf_metaprune.search import result as result_lib


@registry.register("uniform", order=4)
@dataclasses.dataclass(frozen=True)
class UniformConfig(_common.FrozenConfig):
  """The uniform baseline as a searcher (it has no settings): `run(context)` calls `uniform`."""
  needs_pruning_net = True
  uses_given_pruning_net = True
  has_settings = False
  ranks_candidates = False

  def run(self, context: _common.SearchContext) -> result_lib.SearchResult:
    return uniform(context.pruning_net, context.search_data, context.budget, verbose=context.progress)


def default_ratio_grid(space):
  """Every gene's width ratio and every multiple of 0.01 in (0, 1], descending."""
  ratios = {round(0.01 * i, 2) for i in range(1, 101)}
  ratios |= {float(r) for g in space.genes for r in g.width_ratios}
  return sorted(ratios, reverse=True)


def largest_uniform(space, budget, width_ratios=None):
  """(ratio, structure) of the largest uniform width ratio meeting `budget`.

  Args:
    space: the `SearchSpace`.
    budget: a `Budget` or None (then 1.0 and the largest structure).
    width_ratios: the grid of ratios to try (default `default_ratio_grid`).

  Raises:
    ValueError: if no ratio of the grid meets the budget.
  """
  grid = sorted({float(r) for r in (width_ratios or default_ratio_grid(space))}, reverse=True)
  for r in grid:
    if not 0.0 < r <= 1.0:
      raise ValueError(f"width ratio {r!r} in width_ratios is outside (0, 1]")
  for r in grid:
    s = space.uniform(r)
    if budget is None or budget.is_feasible(space, s):
      return r, s
  window = ""
  if getattr(budget, "min_mflops", None) is not None:
    below = next((space.mflops(space.uniform(r)) for r in grid
                  if space.mflops(space.uniform(r)) <= budget.max_mflops), None)
    window = (f"; the largest uniform structure under the limit has {below:.4g} MFLOPs, below the window's "
              f"{budget.min_mflops:.4g}: lower min_flops_ratio (widen the window) or make the width grid finer "
              "(divisor=1, width_step=0.01)" if below is not None else "")
  raise ValueError(f"no uniform width ratio in [{grid[-1]}, {grid[0]}] meets {budget!r} (the smallest "
                   f"uniform structure has {space.mflops(space.uniform(grid[-1])):.4g} MFLOPs){window}; raise the "
                   "budget or pass finer width_ratios")


def layer_width_ratios(space, structure):
  """{gene name: its channels / its base channels} of `structure`: how uniform a "uniform" structure is.

  With `divisor=8` a 16-channel layer can only be 8 or 16 wide, so the
  uniform x0.68 structure of the small CNN cuts that layer to 0.5; with
  `divisor=1` and a 0.01 width grid every layer is within half a channel of
  the one ratio.
  """
  channels = space.gene_channels(structure)
  return {g.name: float(c) / g.base_channels for g, c in zip(space.genes, channels)}


def uniform(net, search_data, budget=None, *, width_ratios=None, latency_table=None, calibration_data=None,
            num_calibration_batches=4, verbose=0) -> result_lib.SearchResult:
  """Scores the uniform baseline: the largest uniform width ratio meeting `budget`.

  Args:
    net: a trained `PruningNet`.
    search_data: as for `evolutionary` (dataset, `DatasetSplits`,
      `EvaluationData` or an `Evaluator` of `net`).
    budget: a `Budget` (or its config dict); None = full width.
    width_ratios: the grid of ratios tried, largest first (default: every
      gene's ratio and every multiple of 0.01).
    latency_table: predictor recorded with the result (default: the
      `LatencyBudget`'s).
    calibration_data, num_calibration_batches: as for `evolutionary`.
    verbose: 1 prints the result line.

  Returns:
    A `SearchResult` (method "uniform", one candidate) with
    `extra["width_ratio"]`.

  Raises:
    ValueError: if the budget is infeasible in this space.
  """
  _common.check_net(net, "uniform")
  space = net.space
  budget = _common.check_budget(budget, space)
  lut = _common.latency_lut(budget, latency_table, space)
  t0 = time.perf_counter()
  ratio, s = largest_uniform(space, budget, width_ratios)
  evaluator = _common.make_evaluator(net, search_data, calibration_data, num_calibration_batches, "uniform")
  acc, loss = evaluator.scores_tensor(tf.constant(s.choices, tf.int32)).numpy().tolist()
  cand = _common.measure(space, s.choices, acc, lut, 0, loss=loss)
  seconds = time.perf_counter() - t0
  result = result_lib.SearchResult(
      method="uniform", space_name=space.name, space_fingerprint=space.fingerprint(), best=cand, top_k=[cand],
      candidates=[cand], history=[{"generation": 0, "new_candidates": 1, "evaluations": 1,
                                   "best_accuracy": cand.accuracy, "mean_top_k_accuracy": cand.accuracy,
                                   "best_mflops": cand.mflops, "seconds": seconds, "elapsed_seconds": seconds}],
      budget=None if budget is None else budget.get_config(),
      config={"width_ratios": None if width_ratios is None else [float(r) for r in width_ratios]},
      trace_counts={"evaluator": evaluator.trace_count}, seconds=seconds,
      extra={"width_ratio": float(ratio), "layer_width_ratios": layer_width_ratios(space, s),
             "num_eval_images": evaluator.data.num_eval_images,
             "num_calibration_images": int(np.prod(evaluator.data.calibration_images.shape[:2]))})
  if verbose:
    print(f"[uniform] width ratio {ratio:g}: {result.summary()}", flush=True)
  return result
