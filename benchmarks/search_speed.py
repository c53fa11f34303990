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

  * search throughput: evaluations per second of the in-graph `Evaluator`
    against a straightforward eager Python loop over the same candidates
    (the reference code's way: recalibrate batch norm by running the
    calibration batches, then loop over the evaluation batches, op by op),
    timed in alternating rounds in this process.

Timings are wall-clock on whatever else the machine is running; the JSON
records the load average before and after so noisy runs can be recognised.

Usage:

  .venv/bin/python benchmarks/search_speed.py                     # ~5-10 min on 2 cores
  .venv/bin/python benchmarks/search_speed.py --quick            # smoke run

Writes benchmarks/results/search_speed.json, search_speed.png (seconds per
candidate of each route) and the Pareto plots of both searches.
"""

import os
import platform
import time

import sys

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import tf_metaprune as tfmp
from tf_metaprune import budgets
from tf_metaprune import calibration
from tf_metaprune import search

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

_EPOCHS = flags.DEFINE_integer("epochs", 3, "PruningNet training epochs.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.003, "Peak learning rate (cosine decay).")
_OPTIMIZER = flags.DEFINE_enum("optimizer", "adam", ["adam", "sgd"], "tfmp.training recipe optimizer.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Training batch size (search batches are 128).")
_POPULATION = flags.DEFINE_integer("population", 20, "Evolution population per generation.")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Parents (best ever seen).")
_GENERATIONS = flags.DEFINE_integer("generations", 5, "Generations (the random start included).")
_RATIOS = flags.DEFINE_list("ratios", ["0.5", "0.25"], "FLOPs budgets as fractions of the full width.")
_TIMING_REPEATS = flags.DEFINE_integer("timing_repeats", 5, "Repeats of each per-candidate timing.")
_TRAIN_BATCHES = flags.DEFINE_integer("train_batches", 0, "Train on only this many batches per epoch (0: all); "
                                      "the speed figures do not depend on how well the net is trained.")
_EAGER_CANDIDATES = flags.DEFINE_integer("eager_candidates", 8, "Candidates timed in-graph vs eager loop.")
_EAGER_ROUNDS = flags.DEFINE_integer("eager_rounds", 3, "Alternating rounds of the in-graph vs eager timing.")
_QUICK = flags.DEFINE_bool("quick", False, "Smoke run: 1 epoch, 2 generations of 6, one budget, 2 candidates.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", _common.RESULTS_DIR, "Where results go.")


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


def eager_accuracy(net, data, structure):
  """Top-1 accuracy of `structure` the reference code's way: an eager Python loop.

  The same math as `Evaluator` (exact BN statistics over the calibration
  batches, then the evaluation batches), but op by op in eager mode with a
  Python loop and a host round trip per batch, as PyTorch reference code does.
  """
  choices = net.choices_tensor(structure)
  stats = calibration.batch_norm_moments(net, choices, tf.constant(data.calibration_images))
  correct = 0.0
  for i in range(data.eval_images.shape[0]):
    logits = net.forward(tf.constant(data.eval_images[i]), choices, batch_stats=False, bn_stats=stats)
    correct += float(np.sum((np.argmax(logits.numpy(), -1) == data.eval_labels[i]) * data.eval_mask[i]))
  return correct / float(np.sum(data.eval_mask))


def main(argv):
  del argv
  if _QUICK.value:
    for flag, value in (("epochs", 1), ("generations", 2), ("population", 6), ("top_k", 2), ("ratios", ["0.5"]),
                        ("timing_repeats", 1), ("eager_candidates", 2), ("eager_rounds", 1)):
      flags.FLAGS[flag].value = value
  report_writer = _common.Report("search_speed", _OUTPUT_DIR.value)
  load_before = os.getloadavg()
  keras.utils.set_random_seed(0)
  splits = tfmp.data.load_dataset("mnist_subset", batch_size=128)
  train = tfmp.data.load_dataset("mnist_subset", batch_size=_BATCH.value).train
  if _TRAIN_BATCHES.value:
    train = train.take(_TRAIN_BATCHES.value)
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
    found.save(os.path.join(_OUTPUT_DIR.value, f"search_speed_{tag}pct_result.json"))
    search.plot_pareto(found, os.path.join(_OUTPUT_DIR.value, f"search_speed_{tag}pct_pareto.png"),
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

  # Search throughput: in-graph Evaluator vs an eager Python loop over the same candidates.
  rng = np.random.default_rng(7)
  candidates = [space.random(seed=rng) for _ in range(_EAGER_CANDIDATES.value)]
  eager_check = [eager_accuracy(net, data, s) for s in candidates[:2]]
  graph_check = [evaluator.accuracy(s) for s in candidates[:2]]
  loop_times = _common.interleaved(
      {"in_graph": lambda: [evaluator.accuracy(s) for s in candidates],
       "eager_loop": lambda: [eager_accuracy(net, data, s) for s in candidates]}, rounds=_EAGER_ROUNDS.value)
  throughput = {"candidates": len(candidates), "rounds": _EAGER_ROUNDS.value,
                "in_graph_evaluations_per_second": len(candidates) / loop_times["in_graph"]["median_s"],
                "eager_evaluations_per_second": len(candidates) / loop_times["eager_loop"]["median_s"],
                "in_graph_round_s": loop_times["in_graph"]["all_s"], "eager_round_s": loop_times["eager_loop"]["all_s"],
                "accuracy_in_graph_vs_eager": [graph_check, eager_check]}
  throughput["speedup_in_graph_over_eager"] = (throughput["in_graph_evaluations_per_second"] /
                                               throughput["eager_evaluations_per_second"])
  print(f"in-graph {throughput['in_graph_evaluations_per_second']:.2f} evaluations/s, eager loop "
        f"{throughput['eager_evaluations_per_second']:.2f} evaluations/s (x{throughput['speedup_in_graph_over_eager']:.2f});"
        f" accuracies in-graph {graph_check} eager {eager_check}")

  report = {
      "benchmark": "search_speed", "host": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                               "tensorflow": tf.__version__, "keras": keras.__version__,
                                               "load_average_before": load_before,
                                               "load_average_after": os.getloadavg()},
      "model": {"family": "mobilenet_v2", "width_multiplier": 0.35, "input_shape": [28, 28, 1],
                "hidden_units": 8, "genes": len(space.genes), "full_mflops": space.mflops(space.largest()),
                "full_params": space.params(space.largest()), "pruning_net_params": int(net.count_params())},
      "training": {"epochs": _EPOCHS.value, "train_batches_per_epoch": _TRAIN_BATCHES.value or "all", "recipe": "tfmp.training.fit (cosine decay)",
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
  report["throughput"] = throughput
  rows = [[f"{t['mflops']:.2f}", f"{1e3 * t['evaluator_seconds']:.0f}", f"{1e3 * t['plain']['seconds']:.0f}",
           f"{t['ratio_evaluator_to_plain']:.2f}", f"{100 * t['evaluator_accuracy']:.1f}%",
           f"{100 * t['plain']['accuracy_after_recalibrate']:.1f}%"] for t in timing]
  table = _common.markdown_table(
      ["candidate MFLOPs", "Evaluator ms (recalibrate + accuracy)", "rebuilt plain model ms, same batches",
       "ratio (goal <= 1.2)", "Evaluator acc.", "plain acc."], rows)
  table += "\n\n" + _common.markdown_table(
      ["search route", "evaluations / s", "vs eager loop"],
      [["in-graph Evaluator (one trace)", f"{throughput['in_graph_evaluations_per_second']:.2f}",
        f"{throughput['speedup_in_graph_over_eager']:.2f}x"],
       ["eager Python loop (reference style)", f"{throughput['eager_evaluations_per_second']:.2f}", "1.00x"]] +
      [[f"evolution at {100 * r['flops_ratio']:.0f}% FLOPs (whole search, {r['evaluations']} evaluations)",
        f"{r['evaluations_per_second']:.2f}", "-"] for r in runs])
  title = (f"Search speed (mobilenet_v2 x0.35, 28x28x1, {data.num_eval_images} search images, "
           f"{int(np.prod(data.calibration_images.shape[:2]))} calibration images)")
  report_writer.write(report, table, title)
  plt = _common.pyplot()
  fig, ax = plt.subplots(figsize=(7, 4))
  labels = [f"{t['mflops']:.2f}" for t in timing]
  pos = np.arange(len(timing))
  ax.bar(pos - 0.2, [1e3 * t["evaluator_seconds"] for t in timing], 0.4, label="Evaluator (in-graph)")
  ax.bar(pos + 0.2, [1e3 * t["plain"]["seconds"] for t in timing], 0.4, label="rebuilt plain Keras model")
  ax.set_xticks(pos, labels)
  ax.set_xlabel("candidate MFLOPs")
  ax.set_ylabel("ms per candidate (recalibrate + score)")
  ax.set_title(f"in-graph {throughput['in_graph_evaluations_per_second']:.2f} vs eager "
               f"{throughput['eager_evaluations_per_second']:.2f} evaluations/s")
  ax.legend()
  report_writer.save_figure(fig)


if __name__ == "__main__":
  app.run(main)
