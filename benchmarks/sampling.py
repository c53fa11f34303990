"""How structure sampling affects what a PruningNet learns, against the plain model.

Trains, with the same recipe and data: (a) "plain": the full-width plain Keras
model; (a') "plain_half": the plain model of the uniform 0.5 structure; (b)
"fixed": a PruningNet that always runs that same uniform 0.5 structure --
weight generation without switching, to compare with (a'); (c) "random": one random
structure per step (MetaPruning); (d) "sandwich": largest + smallest + random
structures per step with in-place distillation. Then scores structures across
the FLOPs range after exact BN recalibration on the held-out search split.
Writes benchmarks/results/sampling_<tag>.json.

  python benchmarks/sampling.py --model=mobilenet_v2 --width_multiplier=0.35 --epochs=4
  # the `make demo` space: 10 blocks, width 0.5, stride 32, ratios from 0.3, batch 32
  python benchmarks/sampling.py --model=mobilenet_v2 --width_multiplier=0.5 --nosmall_input \
      --stage_repeats=1,2,2,2,1,1,1 --min_width_ratio=0.3 --batch_size=32 --epochs=15 \
      --hidden_units=8 --variants=random --tag=demo_space
  python benchmarks/sampling.py --model=mobilenet_v2 --width_multiplier=0.5 --nosmall_input \
      --stage_repeats=1,1,1,1,1,1,1 --batch_size=32 --epochs=3 --hidden_units=8 --variants=plain_half,fixed --tag=fixed_structure
"""

import json
import os
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "mobilenet_v2", "Model family.")
flags.DEFINE_float("width_multiplier", 0.35, "Width multiplier (not small_cnn).")
flags.DEFINE_bool("small_input", None, "MobileNets: stride-1 stem for small images (default: yes under 96 px).")
flags.DEFINE_string("stage_repeats", None, "mobilenet_v2 blocks per stage, e.g. 1,2,2,2,1,1,1.")
flags.DEFINE_float("min_width_ratio", 0.1, "Smallest per-layer width ratio.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("epochs", 4, "Training epochs.")
flags.DEFINE_float("learning_rate", 0.003, "Peak learning rate (Adam, cosine decay).")
flags.DEFINE_integer("hidden_units", 0, "Generator hidden size (0 = weight sharing, isolates the sampling effect).")
flags.DEFINE_list("variants", ["plain", "random", "sandwich"], "What to train: plain, plain_half, fixed, random, "
                  "sandwich.")
flags.DEFINE_string("tag", None, "Result file suffix (default: the model name).")
flags.DEFINE_string("output_dir", os.path.join(os.path.dirname(__file__), "results"), "Where results go.")


def main(argv):
  del argv
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top

  config = tfmp.PipelineConfig(model=FLAGS.model, width_multiplier=FLAGS.width_multiplier,
                               small_input=FLAGS.small_input, stage_repeats=FLAGS.stage_repeats,
                               min_width_ratio=FLAGS.min_width_ratio, batch_size=FLAGS.batch_size)
  splits = tfmp.pipeline.load_data(config)
  space = tfmp.pipeline.build_space(config, splits.input_shape, splits.num_classes)
  quarter = tfmp.search.largest_uniform(space, tfmp.FlopsBudget.from_ratio(space, 0.25))[1]
  probes = {"full": space.largest(), "uniform_0.50": space.uniform(0.5), "uniform_25pct_flops": quarter,
            "smallest": space.smallest()}
  rows = []
  for variant in FLAGS.variants:
    keras.utils.set_random_seed(0)
    if variant in ("plain", "plain_half"):
      s = space.largest() if variant == "plain" else space.uniform(0.5)
      model = tfmp.rebuild(space, s, bn_momentum=0.9)
    else:
      model = tfmp.PruningNet(space, hidden_units=FLAGS.hidden_units,
                              sampling="random" if variant == "fixed" else variant)
      if variant == "fixed":
        fixed = tf.constant(np.array(space.uniform(0.5).choices, np.int32))
        model.sample_choices = lambda step: fixed   # every step runs the same structure
    start = time.perf_counter()
    hist = tfmp.training.fit(model, splits.train, epochs=FLAGS.epochs, learning_rate=FLAGS.learning_rate,
                             optimizer="adam", verbose=2)
    row = {"variant": variant, "train_seconds": time.perf_counter() - start,
           "train_loss": hist["loss"], "train_accuracy": hist["accuracy"]}
    if variant in ("plain", "plain_half"):
      row["search_accuracy"] = {"full" if variant == "plain" else "uniform_0.50": float(model.evaluate(splits.search, verbose=0, return_dict=True)["accuracy"])}
    else:
      ev = tfmp.Evaluator(model, tfmp.EvaluationData.from_dataset(splits.search, 4, splits.calibration))
      row["search_accuracy"] = {k: ev.accuracy(s) for k, s in probes.items()}
    rows.append(row)
    accs = ", ".join(f"{k} {100 * v:.1f}%" for k, v in row["search_accuracy"].items())
    print(f"{variant:<9} train accuracy by epoch {[round(a, 3) for a in hist['accuracy']]}; search split: {accs}")
  tag = FLAGS.tag or FLAGS.model
  out = {"date": time.strftime("%Y-%m-%d %H:%M"), "space": space.name, "config": config.get_config(),
         "epochs": FLAGS.epochs, "learning_rate": FLAGS.learning_rate, "hidden_units": FLAGS.hidden_units,
         "load_average": os.getloadavg()[0], "probes_mflops": {k: space.mflops(s) for k, s in probes.items()},
         "rows": rows, "command": "python benchmarks/sampling.py " + " ".join(
             f"--{k}={getattr(FLAGS, k)}" for k in ("model", "width_multiplier", "small_input", "stage_repeats",
                                                     "min_width_ratio", "batch_size", "epochs", "learning_rate",
                                                     "hidden_units", "tag")) + " --variants=" + ",".join(FLAGS.variants)}
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  tfmp.io.write_json_atomic(os.path.join(FLAGS.output_dir, f"sampling_{tag}.json"), out)


if __name__ == "__main__":
  app.run(main)
