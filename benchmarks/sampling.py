"""How structure sampling affects what a PruningNet learns, against the plain model.

Trains, with the same recipe and data, (a) the plain full-width Keras model,
(b) a PruningNet with one random structure per step (MetaPruning), (c) a
PruningNet with the sandwich rule (largest + smallest + random structures per
step, in-place distillation), then scores structures across the FLOPs range
after exact BN recalibration on the held-out search split. Writes
benchmarks/results/sampling_<model>.json.

  python benchmarks/sampling.py --model=mobilenet_v2 --width_multiplier=0.35 --epochs=4
"""

import json
import os
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "mobilenet_v2", "Model family.")
flags.DEFINE_float("width_multiplier", 0.35, "Width multiplier (MobileNets).")
flags.DEFINE_integer("epochs", 4, "Training epochs.")
flags.DEFINE_float("learning_rate", 0.003, "Peak learning rate (Adam, cosine decay).")
flags.DEFINE_integer("hidden_units", 0, "Generator hidden size (0 = weight sharing, isolates the sampling effect).")
flags.DEFINE_list("variants", ["plain", "random", "sandwich"], "What to train.")
flags.DEFINE_string("output_dir", os.path.join(os.path.dirname(__file__), "results"), "Where results go.")


def main(argv):
  del argv
  import keras  # pylint: disable=g-import-not-at-top
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top

  splits = tfmp.data.load_dataset("mnist_subset", batch_size=128)
  kwargs = {"width_multiplier": FLAGS.width_multiplier} if FLAGS.model.startswith("mobilenet") else {}
  space = tfmp.models.get(FLAGS.model)(splits.input_shape, splits.num_classes, **kwargs)
  probes = {"full": space.largest(), "uniform_0.50": space.uniform(0.5), "uniform_0.25": space.uniform(0.25),
            "smallest": space.smallest()}
  rows = []
  for variant in FLAGS.variants:
    keras.utils.set_random_seed(0)
    if variant == "plain":
      model = tfmp.rebuild(space, space.largest(), bn_momentum=0.9)
    else:
      model = tfmp.PruningNet(space, hidden_units=FLAGS.hidden_units, sampling=variant)
    start = time.perf_counter()
    hist = tfmp.training.fit(model, splits.train, epochs=FLAGS.epochs, learning_rate=FLAGS.learning_rate,
                             optimizer="adam", verbose=2)
    row = {"variant": variant, "train_seconds": time.perf_counter() - start,
           "train_loss": hist["loss"], "train_accuracy": hist["accuracy"]}
    if variant == "plain":
      row["search_accuracy"] = {"full": float(model.evaluate(splits.search, verbose=0, return_dict=True)["accuracy"])}
    else:
      ev = tfmp.Evaluator(model, tfmp.EvaluationData.from_dataset(splits.search, 4, splits.train))
      row["search_accuracy"] = {k: ev.accuracy(s) for k, s in probes.items()}
    rows.append(row)
    accs = ", ".join(f"{k} {100 * v:.1f}%" for k, v in row["search_accuracy"].items())
    print(f"{variant:<9} train accuracy by epoch {[round(a, 3) for a in hist['accuracy']]}; search split: {accs}")
  out = {"date": time.strftime("%Y-%m-%d %H:%M"), "model": FLAGS.model, "space_kwargs": kwargs,
         "epochs": FLAGS.epochs, "hidden_units": FLAGS.hidden_units, "load_average": os.getloadavg()[0],
         "probes_mflops": {k: space.mflops(s) for k, s in probes.items()}, "rows": rows,
         "command": f"python benchmarks/sampling.py --model={FLAGS.model} --width_multiplier={FLAGS.width_multiplier} "
                    f"--epochs={FLAGS.epochs}"}
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  with open(os.path.join(FLAGS.output_dir, f"sampling_{FLAGS.model}.json"), "w") as f:
    json.dump(out, f, indent=1)


if __name__ == "__main__":
  app.run(main)
