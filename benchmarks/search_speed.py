"""Benchmark: evolutionary search speed and the cost of judging one candidate.

Trains a MobileNetV2 (width multiplier 0.35) PruningNet on the offline MNIST
subset for a few epochs, then, at 50% and 25% of the full-width FLOPs:

  * runs the uniform baseline and a short evolutionary search (settings in
    the JSON), reporting wall time, evaluations per second, trace counts and
    the accuracies found on the search split;
  * compares the per-candidate evaluation time of `Evaluator` (BN
    recalibration + top-1 accuracy from generated weights, one trace) with
    running the rebuilt plain Keras model (`tfmp.rebuild(net, s)` after
    `net.recalibrate(s, ...)`) over the same batches: calibration batches in
    training mode and evaluation batches in inference mode, warm
    `tf.function`s, in the same process. The one-off cost of the rebuild
    route per candidate (rebuild + trace) is reported too.

Timings are wall-clock on whatever else the machine is running; the JSON
records the load average before and after so noisy runs can be recognised.

Usage:

  .venv/bin/python benchmarks/search_speed.py                     # ~5-10 min on 2 cores
  .venv/bin/python benchmarks/search_speed.py --epochs=1 --generations=2
"""

import json
import os
import platform
import time

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import tf_metaprune as tfmp
from tf_metaprune import budgets
from tf_metaprune import io as io_lib
from tf_metaprune import search

_EPOCHS = flags.DEFINE_integer("epochs", 3, "PruningNet training epochs.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.003, "Peak learning rate (cosine decay).")
_OPTIMIZER = flags.DEFINE_enum("optimizer", "adam", ["adam", "sgd"], "tfmp.training recipe optimizer.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Training batch size (search batches are 128).")
_POPULATION = flags.DEFINE_integer("population", 20, "Evolution population per generation.")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Parents (best ever seen).")
_GENERATIONS = flags.DEFINE_integer("generations", 5, "Generations (the random start included).")
_RATIOS = flags.DEFINE_list("ratios", ["0.5", "0.25"], "FLOPs budgets as fractions of the full width.")
_TIMING_REPEATS = flags.DEFINE_integer("timing_repeats", 5, "Repeats of each per-candidate timing.")
_OUT = flags.DEFINE_string("out", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                               "search_speed.json"), "Output JSON path.")


def _train(net, train, epochs):
  """The project's shared recipe (`tfmp.training.fit`, as in the README)."""
  t0 = time.perf_counter()
  hist = tfmp.training.fit(net, train, epochs=epochs, learning_rate=_LEARNING_RATE.value,
                           optimizer=_OPTIMIZER.value, verbose=2)
  return time.perf_counter() - t0, float(hist["accuracy"][-1])


def _time(fn, repeats):
  """Median wall seconds of `fn()` over `repeats` (after one warm-up call)."""
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def _plain_route(net, structure, data, repeats):
  """Times the rebuilt plain Keras model over the evaluator's batches."""
  calib = tf.constant(data.calibration_images)
  x, y, mask = tf.constant(data.eval_images), data.eval_labels, data.eval_mask
  t0 = time.perf_counter()
  net.recalibrate(structure, data.calibration_images)
  recal_seconds = time.perf_counter() - t0
  t0 = time.perf_counter()
  model = tfmp.rebuild(net, structure)
  rebuild_seconds = time.perf_counter() - t0
  infer = tf.function(lambda b: model(b, training=False))
  train_mode = tf.function(lambda b: model(b, training=True))
  t0 = time.perf_counter()
  logits = [infer(x[i]).numpy() for i in range(x.shape[0])]   # traces once, and gives the accuracy
  train_mode(calib[0])
  first_call_seconds = time.perf_counter() - t0
  hits = sum(float(((l.argmax(-1) == y[i]) * mask[i]).sum()) for i, l in enumerate(logits))
  accuracy = hits / float(mask.sum())

  def run():
    for i in range(calib.shape[0]):
      train_mode(calib[i])
    for i in range(x.shape[0]):
      infer(x[i]).numpy()

  return {"seconds": _time(run, repeats), "accuracy_after_recalibrate": accuracy,
          "recalibrate_seconds": recal_seconds, "rebuild_seconds": rebuild_seconds,
          "trace_and_first_pass_seconds": first_call_seconds}


def main(argv):
  del argv
  load_before = os.getloadavg()
  keras.utils.set_random_seed(0)
  splits = tfmp.data.load_dataset("mnist_subset", batch_size=128)
  train = tfmp.data.load_dataset("mnist_subset", batch_size=_BATCH.value).train
  space = tfmp.models.mobilenet_v2(input_shape=(28, 28, 1), num_classes=10, width_multiplier=0.35)
  net = tfmp.PruningNet(space, hidden_units=8)
  train_seconds, train_accuracy = _train(net, train, _EPOCHS.value)
  print(f"trained {_EPOCHS.value} epochs in {train_seconds:.1f} s, train accuracy {train_accuracy:.4f}")

  # Calibration from training batches (the reference's choice), scoring on the held-out search split.
  data = tfmp.EvaluationData.from_dataset(splits.search, num_calibration_batches=4,
                                          calibration_dataset=splits.calibration)
  evaluator = tfmp.Evaluator(net, data)
  t0 = time.perf_counter()
  full_acc = evaluator.accuracy(space.largest())
  first_eval_seconds = time.perf_counter() - t0
  print(f"evaluator first call (trace) {first_eval_seconds:.1f} s; full width accuracy {full_acc:.4f}")

  config = search.EvolutionConfig(population_size=_POPULATION.value, top_k=_TOP_K.value,
                                  num_generations=_GENERATIONS.value, seed=0)
  runs = []
  compare = []
  for ratio in (float(r) for r in _RATIOS.value):
    budget = budgets.FlopsBudget.from_ratio(space, ratio)
    base = search.uniform(net, evaluator, budget, verbose=1)
    t0 = time.perf_counter()
    found = search.evolutionary(net, evaluator, budget, config, verbose=1)
    wall = time.perf_counter() - t0
    print(found.summary())
    tag = f"{int(round(ratio * 100))}"
    found.save(os.path.join(os.path.dirname(_OUT.value), f"search_speed_{tag}pct_result.json"))
    search.plot_pareto(found, os.path.join(os.path.dirname(_OUT.value), f"search_speed_{tag}pct_pareto.png"),
                       uniform_result=base)
    runs.append({
        "flops_ratio": ratio, "budget": budget.get_config(), "search_wall_seconds": wall,
        "evaluations": found.num_evaluations, "evaluations_per_second": found.num_evaluations / wall,
        "seconds_per_evaluation": wall / found.num_evaluations, "trace_counts": found.trace_counts,
        "best_accuracy": found.best_accuracy, "best_mflops": found.best_mflops, "best_params": found.best_params,
        "best_choices": list(found.best.choices), "best_channels": space.channels(found.best_structure),
        "uniform_width_ratio": base.extra["width_ratio"], "uniform_accuracy": base.best_accuracy,
        "uniform_mflops": base.best_mflops, "uniform_params": base.best_params,
        "history": found.history})
    compare += [found.best_structure, base.best_structure]

  # Per-candidate evaluation: Evaluator vs the rebuilt plain model over the same batches.
  timing = []
  for s in compare:
    ch = net.choices_tensor(s)
    ev_seconds = _time(lambda ch=ch: float(evaluator.accuracy_tensor(ch)), _TIMING_REPEATS.value)
    plain = _plain_route(net, s, data, _TIMING_REPEATS.value)
    timing.append({"choices": list(s.choices), "mflops": space.mflops(s), "evaluator_seconds": ev_seconds,
                   "evaluator_accuracy": evaluator.accuracy(s), "plain": plain,
                   "ratio_evaluator_to_plain": ev_seconds / plain["seconds"],
                   "ratio_evaluator_to_plain_with_rebuild_and_trace": ev_seconds / (
                       plain["seconds"] + plain["rebuild_seconds"] + plain["trace_and_first_pass_seconds"])})
    print(f"{space.mflops(s):.3g} MFLOPs: evaluator {ev_seconds * 1e3:.0f} ms, plain model {plain['seconds'] * 1e3:.0f}"
          f" ms (x{ev_seconds / plain['seconds']:.2f}); plain accuracy {plain['accuracy_after_recalibrate']:.4f} vs "
          f"evaluator {timing[-1]['evaluator_accuracy']:.4f}")

  report = {
      "benchmark": "search_speed", "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                               "tensorflow": tf.__version__, "keras": keras.__version__,
                                               "load_average_before": load_before,
                                               "load_average_after": os.getloadavg()},
      "model": {"family": "mobilenet_v2", "width_multiplier": 0.35, "input_shape": [28, 28, 1],
                "hidden_units": 8, "genes": len(space.genes), "full_mflops": space.mflops(space.largest()),
                "full_params": space.params(space.largest()), "pruning_net_params": int(net.count_params())},
      "training": {"epochs": _EPOCHS.value, "recipe": "tfmp.training.fit (cosine decay)",
                   "optimizer": _OPTIMIZER.value, "learning_rate": _LEARNING_RATE.value, "batch_size": _BATCH.value,
                   "seconds": train_seconds, "train_accuracy_random_structures": train_accuracy},
      "evaluation_data": {"calibration_images": int(np.prod(data.calibration_images.shape[:2])),
                          "calibration_source": "train split, first 4 batches",
                          "eval_images": data.num_eval_images, "eval_source": "search split",
                          "eval_batches_padded": int(data.eval_images.shape[0])},
      "evaluator_first_call_seconds": first_eval_seconds, "full_width_accuracy": full_acc,
      "search_config": config.get_config(), "searches": runs, "per_candidate_timing": timing,
      "median_ratio_evaluator_to_plain": float(np.median([t["ratio_evaluator_to_plain"] for t in timing])),
      "evaluator_trace_count_total": evaluator.trace_count,
  }
  io_lib.write_json_atomic(_OUT.value, report)
  print(json.dumps({k: report[k] for k in ("median_ratio_evaluator_to_plain", "evaluator_trace_count_total")}))
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
