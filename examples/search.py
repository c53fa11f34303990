"""Searches the best structure of a trained PruningNet under a budget.

Evolutionary search (MetaPruning; population 50 x 20 generations by default)
on the held-out search split of the dataset the net was trained on, with
batch-norm recalibration per candidate and no fine-tuning, plus the uniform
baseline (the largest single width ratio that meets the same budget).

  python examples/search.py --pruningnet_dir=runs/pruningnet --flops_ratio=0.5 --output_dir=runs/search
  python examples/search.py --pruningnet_dir=runs/pruningnet --max_latency_ms=0.3 \
      --latency_table=runs/lut_int8.json --output_dir=runs/search_latency

Writes to --output_dir: structure.json (the best structure), uniform_structure.json,
search_state.json (rerun the same command to resume an interrupted search),
search_result.json, uniform_result.json, space.json and pareto.png.
Then: examples/retrain.py --search_dir=<output_dir>.
"""

from absl import app
from absl import flags

import common_flags  # examples/common_flags.py

FLAGS = flags.FLAGS
flags.DEFINE_string("pruningnet_dir", "runs/pruningnet", "Output folder of examples/train_pruningnet.py (holds "
                    "pruningnet.keras and run.json; the dataset settings are read from it).")
common_flags.define_budget_flags()
common_flags.define_search_flags(time_note=" Default 12 x population 50 on train_pruningnet.py's default net: "
                                 "about 3 min here (50% FLOPs).")
common_flags.define_strategy_flag()
flags.DEFINE_string("output_dir", "runs/search", "Where the structures, state and plot go.")
flags.DEFINE_integer("verbose", 1, "1: a line per generation; 0: silent.")


def main(argv):
  strategy = common_flags.start(argv)
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  try:
    trained, net = pipeline.load_training_run(FLAGS.pruningnet_dir, strategy=strategy)
    config = trained.replace(**common_flags.budget_kwargs(), **common_flags.search_kwargs())
    splits = pipeline.load_data(config)
    config = pipeline.sized_for(config, splits)   # unset budgets (e.g. rescore_top_k) sized by this data
    budget = pipeline.config_budget(config, net.space)
    pipeline.write_settings(FLAGS.output_dir, config, splits, strategy=strategy)
    found, base = pipeline.search_and_save(net, splits, budget, config, FLAGS.output_dir, verbose=FLAGS.verbose)
  except (ValueError, PermissionError) as e:
    common_flags.fail(str(e))
  full = net.space.largest()
  for label, result in (("searched:", found), ("uniform: ", base)):
    s = result.best_structure
    print(f"{label} {result.summary()}; {pipeline.times(net.space.mflops(full), net.space.mflops(s))} fewer MFLOPs, "
          f"{pipeline.times(net.space.params(full), net.space.params(s))} fewer params than full width")
  print(f"wrote structure.json, uniform_structure.json, pareto.png to {FLAGS.output_dir}")


if __name__ == "__main__":
  app.run(main)
