"""Accuracy-vs-MFLOPs plot of a search (PNG, matplotlib's Agg canvas).

Every evaluated candidate is a dot (coloured by the generation that made it),
the upper envelope of the cloud (best accuracy at or below each MFLOPs) is a
step line, the FLOPs budget is a vertical line, and the searched and uniform
results are marked. It shows at a glance whether the search found structures
the uniform scaling cannot reach at the same cost (MetaPruning Fig. 5).

Uses `matplotlib.figure.Figure` with the Agg canvas directly: no pyplot, no
global backend switch, safe on headless machines and in threads.

Example:

  >>> plot_pareto(result, "/tmp/pareto.png", uniform_result=base)
"""

import os

import numpy as np

from tf_metaprune import budgets as budgets_lib


def _flops_bounds(budget):
  """[(value, label)] of the FLOPs limits in `budget` (a Budget, a config, or None)."""
  if budget is None:
    return []
  if isinstance(budget, dict):
    try:
      budget = budgets_lib.budget_from_config(budget)
    except ValueError:
      return []
  lines = []
  for leaf in budget.leaves():
    if isinstance(leaf, budgets_lib.FlopsBudget):
      lines.append((leaf.max_mflops, f"budget {leaf.max_mflops:.4g} MFLOPs"))
      if leaf.min_mflops is not None:
        lines.append((leaf.min_mflops, f"min {leaf.min_mflops:.4g} MFLOPs"))
  return lines


def plot_pareto(result, path, uniform_result=None, budget=None, title=None):
  """Writes the accuracy-vs-MFLOPs scatter of `result` to a PNG file.

  Args:
    result: a `SearchResult` (usually evolutionary).
    path: output PNG path (folders are created).
    uniform_result: optional uniform-baseline `SearchResult`, marked as a
      diamond.
    budget: the budget to draw (default: `result.budget`); FLOPs limits are
      vertical lines, other budgets are named in the title.
    title: plot title (default: method, best accuracy and MFLOPs).

  Returns:
    `path`.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  fig = Figure(figsize=(7.0, 4.8), dpi=110)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  cands = result.candidates
  x = np.array([c.mflops for c in cands])
  y = np.array([c.accuracy for c in cands]) * 100
  gen = np.array([c.generation for c in cands])
  sc = ax.scatter(x, y, c=gen, cmap="viridis", s=14, alpha=0.75, linewidths=0, label="evaluated candidates")
  if len(set(gen.tolist())) > 1:
    fig.colorbar(sc, ax=ax, label="generation")
  order = np.argsort(x, kind="stable")
  ax.step(x[order], np.maximum.accumulate(y[order]), where="post", color="0.4", lw=1, label="best so far (envelope)")
  best = result.best
  ax.scatter([best.mflops], [best.accuracy * 100], marker="*", s=260, color="crimson", edgecolors="k",
             zorder=5, label=f"{result.method}: {best.accuracy * 100:.2f}%")
  if uniform_result is not None:
    u = uniform_result.best
    ratio = uniform_result.extra.get("width_ratio")
    label = "uniform" + (f" x{ratio:g}" if ratio is not None else "") + f": {u.accuracy * 100:.2f}%"
    ax.scatter([u.mflops], [u.accuracy * 100], marker="D", s=90, color="royalblue", edgecolors="k", zorder=5,
               label=label)
  for value, label in _flops_bounds(budget if budget is not None else result.budget):
    ax.axvline(value, color="darkorange", ls="--", lw=1.2, label=label)
  ax.set_xlabel("MFLOPs (multiply-adds, one image)")
  ax.set_ylabel("top-1 accuracy on the search split (%)")
  if title is None:
    title = (f"{result.space_name}, {result.method}: best {best.accuracy * 100:.2f}% at {best.mflops:.4g} MFLOPs "
             f"({result.num_evaluations} evaluated)")
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fig.savefig(path, format="png")
  return path
