"""Searchers: a search space and a budget in, a `SearchResult` out.

* `run(name, space, budget, ...)`: one entry point for every searcher of
  `SEARCHERS` = ("evolutionary", "autoslim", "pas", "rl", "uniform"), each a
  config object with `run(SearchContext) -> SearchResult`; says
  which need a trained PruningNet and which train their own network, and
  resumes from `output_dir` (see `tf_metaprune.search.dispatch`).
* `evolutionary(net, search_data, budget, ...)`: MetaPruning's evolutionary
  search (Liu et al. 2019, Sec. 3.3) with hard budget rejection, a cache of
  evaluated structures and a resumable JSON state.
* `slim(net, search_data, budgets)` (module `autoslim`): AutoSlim's greedy
  slimming of a slimmable network (`autoslim.train_slimmable`) to several
  FLOPs targets in one pass.
* `pruning_as_search(space, train_data, budget)` (module `pas`): PaS's
  differentiable channel masks, MACs penalty, freezing, fine-tuning and exact
  export.
* `reinforce(net, search_data, budget)` (module `rl`): an AMC-style agent
  with action clipping, or a Lagrangian penalty for budgets it cannot clip.
* `uniform(net, search_data, budget)`: the baseline every result is reported
  beside -- the largest single width ratio that meets the budget.
* `rescore(result, evaluator, top_k)`: re-scores a search's best few on more
  data and picks the best of them.
* `finetune_pick(result, build_model, train_data, eval_data, top_k)`: the
  final pick among a search's best few by a short fine-tune of each
  (NetAdapt / EagleEye).
* `plot_pareto(result, path, uniform_result=...)`: accuracy vs MFLOPs PNG.

Example:

  >>> from tf_metaprune import budgets, search
  >>> budget = budgets.FlopsBudget.from_ratio(space, 0.5)
  >>> found = search.evolutionary(net, splits.search, budget)
  >>> base = search.uniform(net, splits.search, budget)
  >>> search.plot_pareto(found, "pareto.png", uniform_result=base)
"""

# Importing a searcher's module registers it (with its place in SEARCHERS).
from tf_metaprune.search import evolution  # pylint: disable=unused-import
from tf_metaprune.search import autoslim
from tf_metaprune.search import pas
from tf_metaprune.search import rl
from tf_metaprune.search.autoslim import AutoSlimConfig
from tf_metaprune.search.autoslim import slim
from tf_metaprune.search._common import SearchContext
from tf_metaprune.search import dispatch
from tf_metaprune.search import registry
from tf_metaprune.search.dispatch import run
from tf_metaprune.search.registry import config_class
from tf_metaprune.search.registry import register
from tf_metaprune.search.registry import searcher_class
from tf_metaprune.search.evolution import EvolutionConfig
from tf_metaprune.search.evolution import evolutionary
from tf_metaprune.search.finetune_pick import finetune_pick
from tf_metaprune.search.pas import MaskedNet
from tf_metaprune.search.pas import PaSConfig
from tf_metaprune.search.pas import pruning_as_search
from tf_metaprune.search.plot import plot_pareto
from tf_metaprune.search.rescore import rescore
from tf_metaprune.search.result import Candidate
from tf_metaprune.search.result import SearchResult
from tf_metaprune.search.rl import RLConfig
from tf_metaprune.search.rl import reinforce
from tf_metaprune.search.uniform import default_ratio_grid
from tf_metaprune.search.uniform import UniformConfig
from tf_metaprune.search.uniform import largest_uniform
from tf_metaprune.search.uniform import layer_width_ratios
from tf_metaprune.search.uniform import uniform

# Note: `search.uniform` is the function; the module is `tf_metaprune.search.uniform`
# in sys.modules (its helpers are re-exported here). `autoslim`, `pas` and `rl` are the
# modules (their searchers are `slim`, `pruning_as_search` and `reinforce`).
__all__ = ["AutoSlimConfig", "Candidate", "EvolutionConfig", "MaskedNet", "PaSConfig", "RLConfig", "SEARCHERS",
           "SearchContext", "SearchResult", "UniformConfig", "autoslim", "config_class", "default_ratio_grid",
           "evolutionary", "finetune_pick", "largest_uniform", "layer_width_ratios", "pas", "plot_pareto",
           "pruning_as_search", "reinforce", "register", "rescore", "rl", "run", "searcher_class", "slim", "uniform"]


def __getattr__(name):
  if name == "SEARCHERS":   # read from the registry each time, so registered searchers appear
    return registry.SEARCHERS
  raise AttributeError(f"module 'tf_metaprune.search' has no attribute {name!r}")
