"""Pruning your own Keras model: graph reading on keras.applications, and a trained example.

Part 1, for keras.applications MobileNet (alpha 0.25), MobileNetV2 (alpha
0.35) and ResNet50 at 32x32 (weights=None) and the README's concat model:
how long `SearchSpace.from_keras_model` takes, the genes it finds, whether the
full-width structure has the model's parameter count and multiply-adds, and
the size of the uniform 0.5 structure after `rebuild` (counted on the
rebuilt Keras model).

Part 2 (`--epochs` > 0): trains a PruningNet of the README's concat model on
the MNIST subset and scores structures after exact BN recalibration on the
held-out search split (no fine-tuning), like `make demo` does for small_cnn.

Writes benchmarks/results/own_model.json.

  python benchmarks/own_model.py --epochs=8
"""

import json
import os
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("epochs", 8, "PruningNet training epochs for part 2 (0 = skip part 2).")
flags.DEFINE_integer("hidden_units", 32, "Generator hidden size.")
flags.DEFINE_float("learning_rate", 0.1, "Peak learning rate (the shared SGD recipe).")
flags.DEFINE_string("output_dir", os.path.join(os.path.dirname(__file__), "results"), "Where results go.")


def readme_model(input_shape, num_classes):
  """The README's user-defined model (three stages of two concatenated branches)."""
  import keras  # pylint: disable=g-import-not-at-top
  x = inputs = keras.Input(input_shape)
  for i, (width, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
    a = keras.layers.Conv2D(width, 3, stride, padding="same", activation="relu", name=f"stage{i}_3x3")(x)
    b = keras.layers.Conv2D(width // 2, 1, stride, activation="relu", name=f"stage{i}_1x1")(x)
    x = keras.layers.BatchNormalization(name=f"stage{i}_bn")(keras.layers.Concatenate(name=f"stage{i}")([a, b]))
  return keras.Model(inputs, keras.layers.Dense(num_classes)(keras.layers.GlobalAveragePooling2D()(x)),
                     name="readme_concat")


def main(argv):
  del argv
  import keras  # pylint: disable=g-import-not-at-top
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top

  apps = keras.applications
  makers = {
      "MobileNet(alpha=0.25)": lambda: apps.MobileNet((32, 32, 3), alpha=0.25, weights=None, classes=10,
                                                      classifier_activation=None),
      "MobileNetV2(alpha=0.35)": lambda: apps.MobileNetV2((32, 32, 3), alpha=0.35, weights=None, classes=10,
                                                          classifier_activation=None),
      "ResNet50": lambda: apps.ResNet50(input_shape=(32, 32, 3), weights=None, classes=10,
                                        classifier_activation=None),
      "README concat model": lambda: readme_model((28, 28, 1), 10),
  }
  rows = []
  print(f"{'model':<24} {'layers':>6} {'genes':>5} {'read s':>6} {'params':>10} {'= keras':>7} {'MFLOPs':>7} "
        f"{'= keras':>7} {'0.5 MFLOPs':>10} {'0.5 params':>10} {'rebuild s':>9}")
  for label, make in makers.items():
    model = make()
    t = time.perf_counter()
    space = tfmp.SearchSpace.from_keras_model(model)
    read_s = time.perf_counter() - t
    full, half = space.largest(), space.uniform(0.5)
    t = time.perf_counter()
    pruned = tfmp.rebuild(space, half)
    rebuild_s = time.perf_counter() - t
    row = {"model": label, "layers": len(model.layers), "genes": len(space.genes), "read_seconds": read_s,
           "params": space.params(full), "params_equal_keras": space.params(full) == model.count_params(),
           "mflops": space.mflops(full), "mflops_equal_keras": space.mflops(full) == tfmp.count_mflops(model),
           "half_mflops": tfmp.count_mflops(pruned), "half_params": pruned.count_params(),
           "half_counts_equal_space": (tfmp.count_mflops(pruned) == space.mflops(half)
                                       and pruned.count_params() == space.params(half)),
           "rebuild_seconds": rebuild_s}
    rows.append(row)
    print(f"{label:<24} {row['layers']:6d} {row['genes']:5d} {read_s:6.2f} {row['params']:10d} "
          f"{str(row['params_equal_keras']):>7} {row['mflops']:7.2f} {str(row['mflops_equal_keras']):>7} "
          f"{row['half_mflops']:10.2f} {row['half_params']:10d} {rebuild_s:9.2f}")
  report = {"graph_reading": rows}

  if FLAGS.epochs > 0:
    splits = tfmp.data.load_dataset("mnist_subset")
    space = tfmp.SearchSpace.from_keras_model(readme_model(splits.input_shape, splits.num_classes), divisor=4)
    keras.utils.set_random_seed(0)
    net = tfmp.PruningNet(space, hidden_units=FLAGS.hidden_units)
    t = time.perf_counter()
    tfmp.training.fit(net, splits.train, epochs=FLAGS.epochs, learning_rate=FLAGS.learning_rate, verbose=0)
    train_s = time.perf_counter() - t
    data = tfmp.EvaluationData.from_dataset(splits.search, num_calibration_batches=4,
                                            calibration_dataset=splits.calibration)
    evaluator = tfmp.Evaluator(net, data)
    named = [("full width", space.largest()), ("uniform 0.50", space.uniform(0.5)),
             ("uniform 0.25", space.uniform(0.25))] + [(f"random #{i + 1}", space.random(seed=i)) for i in range(3)]
    scored = []
    print(f"\nREADME concat model, PruningNet {FLAGS.epochs} epochs on the MNIST subset ({train_s:.0f} s); "
          f"accuracy on {data.num_eval_images} held-out search images after BN recalibration:")
    print(f"{'structure':<14} {'channels':<34} {'MFLOPs':>7} {'params':>7} {'accuracy':>8}")
    for label, s in named:
      acc = evaluator.accuracy(s)
      scored.append({"structure": label, "channels": space.channels(s), "mflops": space.mflops(s),
                     "params": space.params(s), "search_accuracy": acc})
      print(f"{label:<14} {str(space.channels(s)):<34} {space.mflops(s):7.3f} {space.params(s):7d} "
            f"{100 * acc:7.1f}%")
    report["trained"] = {"epochs": FLAGS.epochs, "hidden_units": FLAGS.hidden_units,
                         "learning_rate": FLAGS.learning_rate, "train_seconds": train_s, "structures": scored}
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  path = os.path.join(FLAGS.output_dir, "own_model.json")
  with open(path, "w") as f:
    json.dump(report, f, indent=1)
  print(f"\nwrote {path}")


if __name__ == "__main__":
  app.run(main)
