"""Trains a MetaPruning PruningNet and reports sampled structures' accuracy.

Every training step runs a fresh structure (per-layer widths) of the chosen
family; afterwards a few structures -- full width, uniform 50% and 25% width,
and random ones -- are scored on the held-out search split after batch-norm
recalibration, with the PruningNet's generated weights and no fine-tuning.
That accuracy is what the architecture search (examples/search.py) ranks
structures by.

  python examples/train_pruningnet.py --output_dir=runs/pruningnet      # small_cnn, 8 epochs: about 2 min here
  python examples/train_pruningnet.py --model=mobilenet_v2 --width_multiplier=0.35 --epochs=8 \
      --output_dir=runs/pruningnet_mnv2
  python examples/train_pruningnet.py ... --resume        # continue an interrupted run
  python examples/train_pruningnet.py --keras_model=my_cnn.keras --dataset=... --output_dir=runs/pn_mine
      # start from your trained model (then search.py, and retrain.py --init=pretrained --distill)

Outputs in --output_dir: pruningnet.keras (the trained net), space.json,
run.json (the settings; search.py and retrain.py read the dataset from it),
report.json, logs/ (TensorBoard), backup/ (what --resume continues from).
"""

import os

from absl import app
from absl import flags

import common_flags  # examples/common_flags.py

FLAGS = flags.FLAGS
common_flags.define_dataset_flags()
common_flags.define_model_flags(default_model="small_cnn")
common_flags.define_pruningnet_flags(time_note=" The MNIST subset's 15 (small_cnn): about 3 min here; the run "
                                     "prints its measured estimate first.")
common_flags.define_keras_model_flags(" search.py and retrain.py (--init=pretrained, --distill) read it from this "
                                      "run.")
flags.DEFINE_integer("num_random", 3, "Random structures to report after training.")
flags.DEFINE_integer("calibration_batches", 4, "Batches used to recalibrate BN statistics per structure.")
common_flags.define_strategy_flag()
flags.DEFINE_string("output_dir", "runs/pruningnet", "Where the net, logs and report go.")
flags.DEFINE_bool("resume", False, "Continue the interrupted (or finished) run in --output_dir with the same "
                  "settings. Without it, a folder that already holds a run is refused.")


def main(argv):
  strategy = common_flags.start(argv)
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  try:
    config = pipeline.PipelineConfig(**common_flags.dataset_kwargs(), **common_flags.model_kwargs(),
                                     **common_flags.pruningnet_kwargs(), **common_flags.keras_model_kwargs(),
                                     calibration_batches=FLAGS.calibration_batches)
    splits = pipeline.load_data(config)
    config = pipeline.sized_for(config, splits)   # unset budgets -> epochs of this training set
    trained, space = pipeline.trained_model_and_space(config, splits)
    run = pipeline.TrainingRun(FLAGS.output_dir, config, resume=FLAGS.resume)
  except (ValueError, PermissionError) as e:
    common_flags.fail(str(e))
  if trained is not None:
    print(f"starting from {config.keras_model} ({trained.space.name}), channels ranked by {config.importance}")
  try:
    net = run.train(splits, space, strategy=strategy, trained=trained)
  except FloatingPointError as e:   # the loss became NaN: the message says where and what to lower
    common_flags.fail(str(e))

  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  full = space.largest()
  print(f"{space.name}: {len(space.genes)} genes, full width {space.mflops(full):.3f} MFLOPs, "
        f"{space.params(full):,} params; generators {net.generator_params():,} params")
  data = tfmp.EvaluationData.from_dataset(splits.search, num_calibration_batches=FLAGS.calibration_batches,
                                          calibration_dataset=splits.calibration)
  evaluator = tfmp.Evaluator(net, data)
  named = [("full width", full), ("uniform 0.50", space.uniform(0.5)), ("uniform 0.25", space.uniform(0.25))]
  named += [(f"random #{i + 1}", space.random(seed=FLAGS.seed + i)) for i in range(FLAGS.num_random)]
  rows = []
  print(f"\nSampled structures, recalibrated on {data.calibration_images.shape[0]} training batches, scored on "
        f"{data.num_eval_images} held-out search images (chance = {100 / splits.num_classes:.0f}%):")
  print(f"{'structure':<14} {'MFLOPs':>8} {'params':>9} {'x fewer':>8} {'accuracy':>9}")
  for label, s in named:
    acc = evaluator.accuracy(s)
    rows.append({"structure": label, "choices": list(s.choices), "mflops": space.mflops(s),
                 "params": space.params(s), "search_accuracy": acc})
    print(f"{label:<14} {space.mflops(s):8.3f} {space.params(s):9d} "
          f"{pipeline.times(space.mflops(full), space.mflops(s)):>8} {100 * acc:8.1f}%")
  print(f"(evaluation traced {evaluator.trace_count} time(s) for {len(named)} structures)")
  if tfmp.distribute.is_chief(strategy):
    tfmp.io.write_json_atomic(os.path.join(FLAGS.output_dir, "report.json"),
                              {"space": space.name, "dataset": splits.get_config(), "config": config.get_config(),
                               "structures": rows})


if __name__ == "__main__":
  app.run(main)
