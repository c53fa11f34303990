"""MetaPruning end to end: data -> PruningNet -> search -> retrain -> int8 TFLite -> report.

One command, one output folder, every stage resumable:

  python examples/metaprune.py --output_dir=runs/metaprune   # = make demo; 2 cores: about 6 min idle, 12 under load
  python examples/metaprune.py --model=resnet20 --dataset=tfds:cifar10 --max_mflops=20 --output_dir=runs/r20
  python examples/metaprune.py --keras_model=my_cnn.keras --init=pretrained --distill --flops_ratio=0.25 \
      --dataset=folder:my_images --output_dir=runs/mine     # prune a model you trained
  python examples/metaprune.py --search_metric=sparse_categorical_crossentropy ...   # rank by a Keras metric/loss
  TF_CONFIG='{"cluster": {"worker": ["hostA:12345", "hostB:12345"]}, "task": {"type": "worker", "index": 0}}' \
      python examples/metaprune.py --strategy=multi_worker --output_dir=/shared/run ...   # the same on every worker

Writes to --output_dir: pruningnet/ (the trained PruningNet, TensorBoard logs,
checkpoints), structure.json and uniform_structure.json (the searched and the
uniform-width structure at the same budget), search_state.json, pareto.png,
model.keras and uniform.keras (both retrained with the same recipe),
model_int8.tflite and uniform_int8.tflite, export.json, report.json and
report.md (searched vs uniform: MFLOPs, params, test accuracy, int8 accuracy,
TFLite latency). Rerun the same command to resume an interrupted run; finished
stages are never recomputed. Settings are checked before any training: an
unknown model or dataset, a budget below the smallest structure, or a folder
holding a run with other settings stop at once.

With --keras_model the run prunes your trained model (any model
`SearchSpace.from_keras_model` reads): the PruningNet starts from its weights
reordered by channel importance, the structures are retrained from its most
important channels (--init=pretrained) and optionally distilled from it
(--distill), and the report adds the peers' methods at the same budget and
recipe -- L1-norm pruning at uniform width, global magnitude pruning, the
uniform structure from scratch -- with the original model's accuracy and
each row's drop.
"""

from absl import app
from absl import flags

import common_flags  # examples/common_flags.py

FLAGS = flags.FLAGS
# The defaults are `make demo`: a 10-block MobileNetV2 at width 0.5 with stride 32 (1.17 MFLOPs at 28x28) and
# per-layer ratios from 0.3, which learns under structure switching in 1,700 steps (README's Known limits).
# Every recipe flag left unset means PipelineConfig's default (one set, in tf_metaprune/pipeline/config.py); the
# training budgets are sized by the training set (pipeline.sized_for). Times: measured on the MNIST subset on
# the 2-core CPU (docs/pipeline.md); a run prints its own measured estimate first.
common_flags.define_dataset_flags()
common_flags.define_model_flags(default_model="mobilenet_v2", width_multiplier=0.5, min_width_ratio=0.3,
                                small_input=False, stage_repeats="1,2,2,2,1,1,1")
common_flags.define_pruningnet_flags(time_note=" The MNIST subset's 15: about 3 min.")
common_flags.define_budget_flags()
flags.FLAGS["flops_ratio"].help += " Default when no budget flag is given: 0.25."
common_flags.define_search_flags(time_note=" Default 12 x population 50: about 3 min on the MNIST subset.")
common_flags.define_retrain_flags(time_note=" The MNIST subset's 8: about 3 min per structure.")
common_flags.define_pretrained_flags()
flags.DEFINE_integer("num_runs", 100, "Timed TFLite invokes per model.")
flags.DEFINE_integer("num_threads", 1, "TFLite interpreter threads for the latency figures.")
common_flags.define_strategy_flag()
flags.DEFINE_string("output_dir", "runs/metaprune", "The run folder (rerun with the same folder to resume).")
flags.DEFINE_integer("verbose", 1, "1: Keras progress bars and a line per search generation; 0: stage lines only.")


def main(argv):
  strategy = common_flags.start(argv)
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  try:
    config = pipeline.PipelineConfig(
        **common_flags.dataset_kwargs(), **common_flags.model_kwargs(), **common_flags.pruningnet_kwargs(),
        **common_flags.budget_kwargs(default_flops_ratio=0.25), **common_flags.search_kwargs(),
        **common_flags.retrain_kwargs(), **common_flags.pretrained_kwargs(),
        export_num_runs=FLAGS.num_runs, export_num_threads=FLAGS.num_threads)
  except ValueError as e:
    common_flags.fail(str(e).replace("PipelineConfig(", "settings (").replace("PipelineConfig", "settings"))
  try:
    report = pipeline.run(config, FLAGS.output_dir, verbose=FLAGS.verbose, strategy=strategy)
  except (ValueError, PermissionError, FileNotFoundError, FloatingPointError) as e:   # NaN loss: one line too
    common_flags.fail(str(e))
  if report is None:   # a worker of a multi-worker job that is not the chief: the chief writes the report
    return
  print()
  print(pipeline.format_report(report))
  print(f"\nwrote report.md, report.json, model_int8.tflite and the rest to {FLAGS.output_dir}")


if __name__ == "__main__":
  app.run(main)
