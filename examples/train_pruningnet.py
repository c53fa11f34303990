"""Trains a MetaPruning PruningNet and reports sampled structures' accuracy.

Every training step runs a fresh random structure (per-layer widths) of the
chosen family; afterwards a few structures -- full width, uniform 50% and 25%
width, and random ones -- are scored on the held-out search split after
batch-norm recalibration, with the PruningNet's generated weights and no
fine-tuning. That accuracy is what the architecture search ranks structures by.

  python examples/train_pruningnet.py --model=small_cnn --epochs=4 --output_dir=runs/pruningnet
  python examples/train_pruningnet.py --model=mobilenet_v2 --width_multiplier=0.35 \
      --sampling=sandwich --learning_rate=0.003 --optimizer=adam --epochs=4

Outputs in --output_dir: pruningnet.keras (the trained net), report.json,
logs/ (TensorBoard), backup/ (rerun the same command to resume an interrupted
run).
"""

import json
import os

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "small_cnn", "Model family: one of tf_metaprune.models.FAMILIES.")
flags.DEFINE_float("width_multiplier", 1.0, "Base width multiplier of the family (not used by small_cnn).")
flags.DEFINE_string("dataset", "mnist_subset", "mnist_subset (offline default), tfds:NAME or folder:PATH.")
flags.DEFINE_integer("input_size", None, "Resize images to this square size (default: keep).")
flags.DEFINE_integer("epochs", 3, "Training epochs.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_float("learning_rate", 0.1, "Peak learning rate (cosine decay).")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adam"], "SGD with Nesterov momentum 0.9 (the paper) or Adam.")
flags.DEFINE_integer("hidden_units", 8, "Generator hidden size (paper: 32; 0 = plain weight sharing).")
flags.DEFINE_enum("bn_mode", "shared", ["switchable", "shared"], "Batch-norm gamma/beta shared and sliced "
                  "(measured better on small data) or one row per width choice (the paper).")
flags.DEFINE_enum("sampling", "random", ["random", "sandwich"], "One random structure per step (MetaPruning) "
                  "or largest + smallest + random ones (sandwich rule; MobileNets learn much faster with it).")
flags.DEFINE_integer("num_random", 3, "Random structures to report after training.")
flags.DEFINE_integer("calibration_batches", 4, "Batches used to recalibrate BN statistics per structure.")
flags.DEFINE_integer("seed", 0, "Seed of structure sampling and data shuffling.")
flags.DEFINE_string("output_dir", "runs/pruningnet", "Where the net, logs and report go.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import keras  # pylint: disable=g-import-not-at-top
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top

  family = tfmp.models.get(FLAGS.model)
  splits = tfmp.data.load_dataset(FLAGS.dataset, batch_size=FLAGS.batch_size, input_size=FLAGS.input_size,
                                  seed=FLAGS.seed)
  kwargs = {}
  if FLAGS.model != "small_cnn":
    kwargs["width_multiplier"] = FLAGS.width_multiplier
  space = family(input_shape=splits.input_shape, num_classes=splits.num_classes, **kwargs)
  keras.utils.set_random_seed(FLAGS.seed)
  net = tfmp.PruningNet(space, hidden_units=FLAGS.hidden_units, bn_mode=FLAGS.bn_mode, seed=FLAGS.seed,
                        sampling=FLAGS.sampling)
  full = space.largest()
  print(f"{space.name}: {len(space.genes)} genes, full width {space.mflops(full):.2f} MFLOPs, "
        f"{space.params(full) / 1e6:.3f}M params; generators {net.generator_params() / 1e6:.2f}M params")
  tfmp.training.fit(net, splits.train, epochs=FLAGS.epochs, learning_rate=FLAGS.learning_rate,
                    optimizer=FLAGS.optimizer, output_dir=FLAGS.output_dir)
  net.save(os.path.join(FLAGS.output_dir, "pruningnet.keras"))

  data = tfmp.EvaluationData.from_dataset(splits.search, num_calibration_batches=FLAGS.calibration_batches,
                                          calibration_dataset=splits.train)
  evaluator = tfmp.Evaluator(net, data)
  named = [("full width", full), ("uniform 0.50", space.uniform(0.5)), ("uniform 0.25", space.uniform(0.25))]
  named += [(f"random #{i + 1}", space.random(seed=FLAGS.seed + i)) for i in range(FLAGS.num_random)]
  rows = []
  print(f"\nSampled structures, recalibrated on {data.calibration_images.shape[0]} training batches, scored on "
        f"{data.num_eval_images} held-out search images (chance = {100 / splits.num_classes:.0f}%):")
  print(f"{'structure':<14} {'MFLOPs':>8} {'params':>9} {'accuracy':>9}")
  for label, s in named:
    acc = evaluator.accuracy(s)
    rows.append({"structure": label, "choices": list(s.choices), "mflops": space.mflops(s),
                 "params": space.params(s), "search_accuracy": acc})
    print(f"{label:<14} {space.mflops(s):8.2f} {space.params(s):9d} {100 * acc:8.1f}%")
  print(f"(evaluation traced {evaluator.trace_count} time(s) for {len(named)} structures)")
  with open(os.path.join(FLAGS.output_dir, "report.json"), "w") as f:
    json.dump({"space": space.name, "dataset": splits.get_config(), "epochs": FLAGS.epochs, "structures": rows},
              f, indent=1)


if __name__ == "__main__":
  app.run(main)
