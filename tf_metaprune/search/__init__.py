"""Searchers: a trained PruningNet and a budget in, a `SearchResult` out.

* `evolutionary(net, search_data, budget, ...)`: MetaPruning's evolutionary
  search (Liu et al. 2019, Sec. 3.3) with hard budget rejection, a cache of
  evaluated structures and a resumable JSON state.
* `uniform(net, search_data, budget)`: the baseline every result is reported
  beside -- the largest single width ratio that meets the budget.
* `plot_pareto(result, path, uniform_result=...)`: accuracy vs MFLOPs PNG.

Example:

  >>> from tf_metaprune import budgets, search
  >>> budget = budgets.FlopsBudget.from_ratio(space, 0.5)
  >>> found = search.evolutionary(net, splits.search, budget)
  >>> base = search.uniform(net, splits.search, budget)
  >>> search.plot_pareto(found, "pareto.png", uniform_result=base)
"""

from tf_metaprune.search.evolution import EvolutionConfig
from tf_metaprune.search.evolution import evolutionary
from tf_metaprune.search.plot import plot_pareto
from tf_metaprune.search.result import Candidate
from tf_metaprune.search.result import SearchResult
from tf_metaprune.search.uniform import default_ratio_grid
from tf_metaprune.search.uniform import largest_uniform
from tf_metaprune.search.uniform import uniform

# Note: `search.uniform` is the function; the module is `tf_metaprune.search.uniform`
# in sys.modules (its helpers are re-exported here).
__all__ = ["Candidate", "EvolutionConfig", "SearchResult", "default_ratio_grid", "evolutionary", "largest_uniform",
           "plot_pareto", "uniform"]
