"""Benchmark: where an evolutionary search's time goes, against the PruningNet's training.

The user flow of issue 23: a keras.applications MobileNetV2 (alpha 0.35,
32x32x1, 10 classes, its default softmax head) on Fashion-MNIST at 32 px,
read by `SearchSpace.from_keras_model`, its PruningNet started from it
(`pretrained.TrainedModel`). The figures are times, not accuracies, so the
weights need no training. Measured in this process, warm `tf.function`s:

  * one PruningNet training step (a random structure) at --batch_size;
  * one candidate's score (`calibration.Evaluator`: BN recalibration on
    `calibration_batches` training batches + top-1 on the search images) at
    the budget's width, for several search-image counts, and its two parts
    timed apart: recalibration alone (0 search images is not allowed, so the
    part is the cost at 1 batch minus one batch's evaluation) and the
    evaluation per image;
  * from these: the cost of the default search (population x generations
    candidates) against the default PruningNet training (epochs x steps).

Usage (a time: run it alone):

  flock /tmp/heavy.lock .venv/bin/python benchmarks/search_cost.py       # about 3 min

Writes benchmarks/results/search_cost.json.
"""

import os
import sys
import time

from absl import app
from absl import flags
import keras
import numpy as np

import tf_metaprune as tfmp
from tf_metaprune import calibration
from tf_metaprune import pipeline

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

_BATCH = flags.DEFINE_integer("batch_size", None, "Batch size (default: PipelineConfig's, sized by the data).")
_IMAGES = flags.DEFINE_list("search_images", ["256", "1024", "2048", "6000"], "Search-image counts timed.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed candidates per setting (the median is reported).")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed PruningNet training steps.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", _common.RESULTS_DIR, "Where results go.")


def _median_seconds(fn, repeats):
  fn()   # trace
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main(argv):
  del argv
  report = _common.Report("search_cost", _OUTPUT_DIR.value)
  defaults = pipeline.PipelineConfig()
  config = defaults.replace(dataset="fashion_mnist", input_size=32, batch_size=_BATCH.value, flops_ratio=0.25)
  splits = pipeline.load_data(config)
  config = pipeline.sized_for(config, splits)   # batch 128 by default on these 54,000 training images
  batch = config.batch_size
  keras.utils.set_random_seed(0)
  model = keras.applications.MobileNetV2((32, 32, 1), alpha=0.35, weights=None, classes=10)
  trained = tfmp.pretrained.TrainedModel(model, width_ratios=pipeline.width_ratios(config.min_width_ratio),
                                         divisor=config.divisor)
  space = trained.space
  net = trained.pruning_net(hidden_units=config.hidden_units, seed=0)
  budget = pipeline.config_budget(config, space)
  structure = tfmp.search.largest_uniform(space, budget)[1]

  # One PruningNet training step (compiled as tf_metaprune.training does), warm.
  tfmp.training.compile_model(net, learning_rate=config.pruningnet_learning_rate, optimizer="adam")
  net.make_train_function()
  step = net.train_function
  batches = iter(splits.train.repeat())
  step(batches)
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    step(batches)
  step_s = (time.perf_counter() - t0) / _STEPS.value

  rows, per_images = [], {}
  for n in [int(v) for v in _IMAGES.value]:
    n = min(n, splits.num_examples["search"])
    eval_batches = -(-n // batch)
    data = calibration.EvaluationData.from_dataset(splits.search, num_calibration_batches=config.calibration_batches,
                                                   calibration_dataset=splits.calibration,
                                                   max_eval_batches=eval_batches)
    evaluator = calibration.Evaluator(net, data)
    seconds = _median_seconds(lambda e=evaluator: e.accuracy(structure), _REPEATS.value)
    per_images[data.num_eval_images] = seconds
    rows.append({"search_images": data.num_eval_images, "calibration_images": config.calibration_batches * batch,
                 "seconds_per_candidate": seconds})
  counts = sorted(per_images)
  # cost = fixed (recalibration, weight generation) + per image x search images: a least-squares line.
  slope, intercept = np.polyfit(counts, [per_images[c] for c in counts], 1)
  pruningnet_steps = config.pruningnet_epochs * tfmp.training.steps_per_epoch(splits.train)
  candidates = config.population_size * config.num_generations
  default_images = min(config.search_images or splits.num_examples["search"], splits.num_examples["search"])
  search_s = candidates * (intercept + slope * default_images)
  data = {"batch_size": batch, "space": space.name, "genes": len(space.genes), "budget": repr(budget),
          "structure_mflops": space.mflops(structure), "pruningnet_step_s": step_s,
          "pruningnet_steps_default": pruningnet_steps, "pruningnet_s_default": pruningnet_steps * step_s,
          "rows": rows, "fixed_s_per_candidate": float(intercept), "s_per_search_image": float(slope),
          "search_images_default": default_images, "candidates_default": candidates,
          "search_s_default_estimate": float(search_s),
          "config": {k: getattr(config, k) for k in ("population_size", "num_generations", "calibration_batches",
                                                    "search_images", "pruningnet_epochs", "batch_size")}}
  table = _common.markdown_table(
      ["search images", "calibration images", "s / candidate"],
      [[r["search_images"], r["calibration_images"], f"{r['seconds_per_candidate']:.3f}"] for r in rows])
  table += (f"\n\nPer candidate: {intercept:.3f} s fixed (recalibration on {config.calibration_batches} batches, "
            f"weight generation, call overhead) + {1e3 * slope:.3f} ms per search image. PruningNet step "
            f"{step_s:.3f} s at batch {batch}. Defaults: PruningNet {pruningnet_steps:,} steps = "
            f"{pruningnet_steps * step_s:.0f} s; search {candidates} candidates x {default_images} images = "
            f"{search_s:.0f} s.")
  report.write(data, table, "Where a candidate's score goes (MobileNetV2 0.35, Fashion-MNIST 32 px)")


if __name__ == "__main__":
  app.run(main)
