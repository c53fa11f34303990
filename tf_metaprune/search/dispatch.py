"""One entry point for every searcher: `run(name, space, budget, ...)`.

The binaries' `--searcher=evolutionary|autoslim|pas|rl|uniform` flag maps to
`run(name, ...)`; every searcher takes the same `SearchSpace` and budget and
returns the same `SearchResult`, so rebuilding, retraining, export and the
benchmark tables work unchanged.

Every searcher is a config object with `run(context) -> SearchResult`
(`_common.SearchContext`: space, budget, data splits, PruningNet, output
folder); `run(name, ...)` looks its class up in the registry (`SEARCHERS`; a searcher
registers with the `registry.register` decorator) and reads its capabilities
(`needs_pruning_net`, `trains_own_network`, ...: `_common.FrozenConfig`) as
class attributes; nothing branches on the name.

What each searcher needs:

| name           | scores structures with                  | `pruning_net` | trains                       |
|----------------|-----------------------------------------|---------------|------------------------------|
| "evolutionary" | the trained MetaPruning PruningNet      | required      | nothing                      |
| "uniform"      | the trained PruningNet                  | required      | nothing                      |
| "rl"           | the trained PruningNet (or a slimmable) | required      | its small policy             |
| "autoslim"     | its own slimmable network               | optional (*)  | the slimmable net            |
| "pas"          | its own masked network                  | ignored       | the masked net (+ fine-tune) |

(*) Given a `pruning_net`, AutoSlim slims it greedily instead of training
its own slimmable network.

What `output_dir` holds (a rerun resumes instead of redoing work):

* `<name>_result.json`: the finished `SearchResult`, and `<name>_run.json`
  (an `io.StateFile`) the settings it was computed with. A rerun with the
  same space, budget, config, PruningNet weights (for the searchers scoring
  with one) and data (`DatasetSplits.get_config()`, when splits are given)
  returns it without searching again; otherwise the search runs again.
* evolutionary: `evolution_state.json` (resumed per generation).
* rl: `rl_state.json` (resumed per policy update).
* autoslim: `slimmable/slimmable.weights.h5` (the trained slimmable
  network; loaded instead of retraining) and `slimmable/training/` (the
  training backup of an interrupted run).
* pas: `pas/masked_search.weights.h5`, `pas/masked_final.weights.h5`,
  `pas/model.keras` (the exported, fine-tuned plain model) and each phase's
  training backup.

Example:

  >>> result = tf_metaprune.search.run("autoslim", space, FlopsBudget.from_ratio(space, 0.5),
  ...                                  train_data=splits, output_dir="runs/autoslim")
  >>> model = tf_metaprune.rebuild(space, result.structure(space))
"""

import dataclasses
import os

from tf_metaprune import data as data_lib
from tf_metaprune import io as io_lib
from tf_metaprune.search import _common
from tf_metaprune.search import registry
from tf_metaprune.search import result as result_lib
from tf_metaprune.search.registry import config_class  # pylint: disable=unused-import  (the public names)
from tf_metaprune.search.registry import register  # pylint: disable=unused-import
from tf_metaprune.search.registry import searcher_class


def __getattr__(name):
  if name == "SEARCHERS":   # read from the registry each time, so registered searchers appear
    return registry.SEARCHERS
  raise AttributeError(f"module 'tf_metaprune.search.dispatch' has no attribute {name!r}")


def run(name, space, budget, *, train_data=None, search_data=None, pruning_net=None, config=None,
        output_dir=None, state_path=None, seed=0, verbose=1) -> result_lib.SearchResult:
  """Runs searcher `name` on `space` under `budget`; the same `SearchResult` from all.

  Args:
    name: one of `SEARCHERS`: "evolutionary", "autoslim", "pas", "rl", "uniform".
    space: the `SearchSpace`.
    budget: a `Budget` (or its config dict). "pas" needs a FLOPs or params
      budget; the others take any (None = unconstrained, except autoslim/pas).
    train_data: the training split (a `DatasetSplits` or a batched dataset of
      (images, labels)); needed by "autoslim" (without `pruning_net`) and
      "pas", which train their own network. BN recalibration of candidates
      uses its first batches when `search_data` is a dataset.
    search_data: the held-out search split (a `DatasetSplits` -- scored on
      `.search`, recalibrated on `.train` --, a batched dataset,
      `EvaluationData` or an `Evaluator` of `pruning_net`). Default:
      `train_data` when that is a `DatasetSplits`. Never the test split.
    pruning_net: a trained `PruningNet`; required by "evolutionary",
      "uniform" and "rl" (see the module docstring's table).
    config: the searcher's config object or dict (`config_class(name)`);
      None = its defaults.
    output_dir: where results, states and trained networks go (see the
      module docstring); None writes nothing.
    state_path: the searcher's resumable state file, instead of its default
      name in `output_dir` (the pipeline keeps the evolution's as
      `search_state.json`); a searcher without one ignores it.
    seed: replaces the config's `seed` and, for the searchers that train a
      network, seeds its initialization (`keras.utils.set_random_seed`).
    verbose: 0 silent, 1 progress lines (2: also Keras' progress for training).

  Returns:
    The `SearchResult` (method = `name`). For "autoslim" trained here,
    `extra["train_seconds"]` is the slimmable network's training time (not in
    `seconds`); for "pas", `seconds` covers the whole run and
    `extra["model_path"]` is the exported model (with `output_dir`).

  Raises:
    ValueError: unknown searcher, missing `pruning_net` / data, or any error
      of the searcher itself (bad budget, state of another search).
  """
  cls = searcher_class(name)
  if cls.has_settings:
    config = _common.resolve_config(cls, config, {}, f"run({name!r})")
    config = dataclasses.replace(config, seed=int(seed))
  elif config is not None:
    raise ValueError(f"run({name!r}, config={config!r}): the uniform baseline has no settings; drop config")
  else:
    config = cls()
  if cls.needs_pruning_net and pruning_net is None:
    raise ValueError(f"searcher {name!r} scores structures with a trained PruningNet; pass pruning_net= "
                     "(train one with tf_metaprune.training.fit(tf_metaprune.PruningNet(space), ...))")
  if pruning_net is not None and pruning_net.space.fingerprint() != space.fingerprint():
    raise ValueError(f"pruning_net was built for space {pruning_net.space.name!r} (fingerprint "
                     f"{pruning_net.space.fingerprint()}), not this {space.name!r} ({space.fingerprint()}); pass "
                     "the space the net was made for")
  if search_data is None:
    if isinstance(train_data, data_lib.DatasetSplits):
      search_data = train_data
    else:
      raise ValueError(f"run({name!r}): pass search_data= (the held-out search split) or a DatasetSplits as "
                       "train_data")
  if cls.trains_network_with(pruning_net) and train_data is None:
    raise ValueError(f"run({name!r}) trains its own network: pass train_data= (the training split)")
  budget = _common.check_budget(budget, space)
  sub = (lambda *p: None) if output_dir is None else (lambda *p: os.path.join(output_dir, *p))
  if output_dir is not None:
    os.makedirs(output_dir, exist_ok=True)
  net_print = None if pruning_net is None else _common.net_fingerprint(pruning_net)
  data_config = {which: d.get_config() for which, d in (("train", train_data), ("search", search_data))
                 if isinstance(d, data_lib.DatasetSplits)}
  result_path = sub(f"{name}_result.json")
  # The settings a finished result was computed with (an io.StateFile beside it): the same ones return it.
  identity = {"space_fingerprint": space.fingerprint(), "budget": None if budget is None else budget.get_config(),
              "config": config.get_config() if cls.has_settings else None, "net_fingerprint": net_print,
              "data_config": data_config}
  metric = getattr(search_data, "metric", None)   # an Evaluator's SearchMetric
  if metric is not None and not metric.builtin:    # (left out for accuracy: older identities still match)
    identity["search_metric"] = metric.get_config()
  finished = None if output_dir is None else io_lib.StateFile(sub(f"{name}_run.json"), "tf_metaprune.SearchRun",
                                                               identity, what=f"{name} search run")
  if finished is not None and os.path.exists(result_path) and finished.matches():
    done = result_lib.SearchResult.load(result_path)
    if verbose:
      print(f"[{name}] finished result found in {result_path}: {done.summary()}", flush=True)
    return done
  context = _common.SearchContext(space=space, budget=budget, train_data=train_data, search_data=search_data,
                                  pruning_net=pruning_net, output_dir=output_dir, state_path=state_path,
                                  seed=int(seed), verbose=verbose)
  result = config.run(context)
  result.extra["net_fingerprint"] = net_print
  result.extra["data_config"] = data_config
  if "search_metric" in identity:
    result.extra["search_metric"] = identity["search_metric"]
  if result_path is not None:
    result.save(result_path)
    finished.save(result=os.path.basename(result_path))
  return result
