"""The search stage's work: the searcher through `tf_metaprune.search.run`, the uniform baseline, the files."""

import os
import time

from tf_metaprune import calibration
from tf_metaprune import io as io_lib
from tf_metaprune import search as search_lib
from tf_metaprune import training
from tf_metaprune.pipeline.build import _is_chief
from tf_metaprune.pipeline.config import PipelineConfig
from tf_metaprune.pipeline.config import pipeline_search_metric
from tf_metaprune.pipeline.config import sized_for


def write_settings(output_dir, config: PipelineConfig, splits, strategy=None):
  """Records the settings (and data) of a stage run by hand in `output_dir/settings.json`."""
  if not _is_chief(strategy):
    return
  io_lib.check_writable_dir(output_dir, "output_dir")
  io_lib.write_json_atomic(os.path.join(str(output_dir), "settings.json"),
                           {"format": "tf_metaprune.Settings", "config": config.get_config(),
                            "dataset": splits.get_config()})


def read_settings(folder) -> PipelineConfig:
  """The `PipelineConfig` recorded by `write_settings` in `folder`."""
  path = os.path.join(str(folder), "settings.json")
  if not os.path.exists(path):
    raise ValueError(f"{folder!r} has no settings.json: pass the output folder of examples/search.py")
  return PipelineConfig.from_config(io_lib.read_json(path, "settings file")["config"])


def search_and_save(net, splits, budget, config: PipelineConfig, output_dir, verbose=1):
  """The search of `config.searcher` + the uniform baseline of `net` under `budget`; writes the results.

  `config.searcher` picks the searcher (`tf_metaprune.search.run`); the
  uniform baseline is scored with the PruningNet whatever the searcher.

  Files in `output_dir`: search_state.json (resumes an interrupted search),
  search_result.json, uniform_result.json, structure.json,
  uniform_structure.json, space.json, pareto.png.

  Returns:
    (the searcher's SearchResult, uniform SearchResult).
  """
  space = net.space
  io_lib.check_writable_dir(output_dir, "output_dir")
  out = lambda name: os.path.join(str(output_dir), name)
  evaluator = _evaluator(net, splits, config)
  searcher = search_lib.searcher_class(config.searcher)
  settings = config.searcher_config()
  if verbose and settings is not None and settings.max_candidates():
    # Every worker times (the evaluation's sums are collective ops under a multi-worker strategy); the chief prints.
    estimate = estimate_search(evaluator, space, settings.max_candidates(), settings.describe())
    if _is_chief(net.distribute_strategy):
      print(estimate, flush=True)
  # A searcher that trains its own network (slimmable / masked) does so on the training split and scores on the
  # search split; one that scores with the PruningNet shares the uniform baseline's evaluator. Its resumable state
  # is search_state.json (the stage's checkpoint), its finished result in searcher_<name>/.
  own = searcher.trains_own_network
  found = search_lib.run(config.searcher, space, budget, train_data=splits, search_data=splits if own else evaluator,
                         pruning_net=None if own else net, config=settings, output_dir=out("searcher_" + config.searcher),
                         state_path=out("search_state.json"), seed=config.seed, verbose=verbose)
  if config.rescore_top_k and found.top_k and searcher.ranks_candidates:
    found = search_lib.rescore(found, _evaluator(net, splits, config, rescore=True), top_k=config.rescore_top_k)
  base = search_lib.uniform(net, evaluator, budget, verbose=verbose)
  if not _is_chief(net.distribute_strategy):
    return found, base   # the chief writes the files
  found.save(out("search_result.json"))
  base.save(out("uniform_result.json"))
  io_lib.write_text_atomic(out("space.json"), space.to_json())
  space.save_structure(found.best_structure, out("structure.json"), accuracy=found.best_accuracy)
  space.save_structure(base.best_structure, out("uniform_structure.json"), accuracy=base.best_accuracy,
                       width_ratio=base.extra["width_ratio"])
  search_lib.plot_pareto(found, out("pareto.png"), uniform_result=base)
  return found, base


def estimate_search(evaluator, space, candidates, how="") -> str:
  """"[search] N candidates x t s (measured) = about M min": one candidate timed after its trace.

  An upper bound: `candidates` is the searcher's most (`max_candidates()`; repeats are not scored again), and
  the uniform baseline scores a few more.
  """
  evaluator.accuracy(space.largest())          # traces the evaluation once
  t0 = time.perf_counter()
  evaluator.accuracy(space.uniform(0.5))
  seconds = time.perf_counter() - t0
  return (f"[search] at most {candidates:,} candidates{f' ({how})' if how else ''} x {seconds:.2f} s (measured) = "
          f"{training.describe_seconds(candidates * seconds)} at most")


def _evaluator(net, splits, config, rescore=False):
  """The search's evaluator (on `search_images` of the search split), or the re-score's (all of it, 4x calibration)."""
  batches = None
  if config.search_images is not None and not rescore:
    batches = max(1, -(-int(config.search_images) // sized_for(config, splits).batch_size))
  data = calibration.EvaluationData.from_dataset(
      splits.search, num_calibration_batches=config.calibration_batches * (4 if rescore else 1),
      calibration_dataset=splits.calibration, max_eval_batches=batches)
  return calibration.Evaluator(net, data, metric=pipeline_search_metric(config.search_metric))
