"""run(): every stage of a run, in order, resumable."""

import time
from typing import Any, Callable, Dict

from tf_metaprune import distribute
from tf_metaprune import io as io_lib
from tf_metaprune import training
from tf_metaprune.pipeline.build import config_budget
from tf_metaprune.pipeline.build import load_data
from tf_metaprune.pipeline.build import trained_model_and_space
from tf_metaprune.pipeline.config import PipelineConfig
from tf_metaprune.pipeline.config import sized_for
from tf_metaprune.pipeline.estimate import estimate_run
from tf_metaprune.pipeline.estimate import measure_step_times
from tf_metaprune.pipeline.report import format_report
from tf_metaprune.pipeline.report import make_report
from tf_metaprune.pipeline.stages import RunContext
from tf_metaprune.pipeline.stages import original_accuracy
from tf_metaprune.pipeline.stages import run_stages
from tf_metaprune.pipeline.stages import stages_for
from tf_metaprune.pipeline.state import Run


def run(config: PipelineConfig, output_dir, verbose=1, log: Callable[[str], None] = print,
        strategy=None, stages=None) -> Dict[str, Any]:
  """Runs (or resumes) every stage of the MetaPruning job into `output_dir`.

  Args:
    config: a `PipelineConfig`.
    output_dir: the run folder (created; an existing run in it is resumed).
    verbose: 1 shows Keras progress bars and a search line per generation.
    log: where stage messages go.
    strategy: a `tf.distribute` strategy for the trainings and the search
      (e.g. `tf_metaprune.distribute.get_strategy("mirrored")`); None = the
      default. Under "multi_worker" every worker calls `run` with the same
      arguments and an `output_dir` they all see: all compute, the chief
      alone writes the files and exports (docs/distributed.md).
    stages: the `Stage` objects to run, in order (default: `stages_for(config)`,
      the registered ones that apply).

  Returns:
    The report dict (also written as report.json; report.md holds the table);
    None on a worker that is not the chief (the chief writes the report).

  Raises:
    ValueError: before any training, for an unknown model or dataset, a
      budget below the smallest structure, or an output_dir that holds a run
      with other settings.
  """

  t_start = time.perf_counter()
  chief = strategy is None or distribute.is_chief(strategy)
  splits = load_data(config)
  config = sized_for(config, splits)   # the budgets in epochs of this training set, recorded as such
  stages = list(stages_for(config) if stages is None else stages)
  state = Run(output_dir, config, stages, chief=chief)
  state.check()   # before any model work: a folder of other settings stops here
  trained, space = trained_model_and_space(config, splits, log)
  budget = config_budget(config, space)
  full = space.largest()
  if chief:
    io_lib.write_json_atomic(state.file("config.json"), {"config": config.get_config(),
                                                         "dataset": splits.get_config()})
  log(f"[metaprune] {space.name} on {splits.name} {splits.input_shape}: {len(space.genes)} genes, full width "
      f"{space.mflops(full):.3f} MFLOPs / {space.params(full):,} params; budget {budget!r}")
  pending = [s.name for s in stages if not state.done(s.name)]
  if verbose and pending and chief:   # local timings, outside the strategy: no collective op
    times_s = measure_step_times(config, splits, space, budget, trained)
    for line in estimate_run(config, splits.num_examples, training.steps_per_epoch(splits.train), times_s,
                             pending)[0]:
      log(line)
  ctx = RunContext(config=config, state=state, splits=splits, space=space, budget=budget, trained=trained,
                   strategy=strategy, verbose=verbose, log=log)
  run_stages(ctx, stages)
  if not chief:
    log(f"[metaprune] {distribute.task_name(strategy)} finished; the chief writes the report to {output_dir}")
    return None
  original = original_accuracy(state, trained, splits) if trained is not None else None
  report = make_report(config, splits, space, budget, ctx.found, ctx.base, ctx.retrained, ctx.exported, state,
                       structures=ctx.structures, original=original)
  report["total_seconds_this_run"] = time.perf_counter() - t_start
  io_lib.write_json_atomic(state.file("report.json"), report)
  io_lib.write_text_atomic(state.file("report.md"), format_report(report) + "\n")
  return report
