"""Quality benchmarks: does MetaPruning find better structures than uniform width?

Everything runs with the recipe of `make demo` / `examples/metaprune.py`
(`tf_metaprune.pipeline`: train_pruning_net, search_and_save, retrain), on the
offline MNIST subset by default (`--dataset=tfds:NAME` for a prepared tfds
dataset). Parts (`--parts`, each writes results/<part>.json and .png):

  quality   (issue item 6) searched vs uniform structure at equal FLOPs
            (`--ratios`, default 50% and 25% of the full width): both rebuilt
            fresh and retrained with the same recipe, `--seeds` seeds each;
            mean +- std of test accuracy.
  ranking   (item 7) `--num_ranked` random structures spread over the FLOPs
            range: the PruningNet's recalibrated search-split accuracy vs the
            test accuracy after retraining each; Kendall's tau.
  tflite    (item 8) the seed-0 searched and uniform models of each budget as
            full-integer int8 TFLite: size, host latency (alternating timing
            rounds), and how well a per-layer latency table (LUT, measured
            here) predicts both models' latency.
  ablation  (item 5) generator hidden size 32 (paper), 8 and 0 (plain weight
            sharing): generator params, PruningNet training-step time
            (interleaved), and the searched structure's test accuracy after
            retraining (`--ablation_ratio`, `--seeds` seeds).

  python benchmarks/quality.py                          # all parts, small_cnn (~30 min on 2 idle cores)
  python benchmarks/quality.py --parts=quality --model=resnet20
  python benchmarks/quality.py --quick                  # smoke run (minutes)

Figures are honest whichever way they come out: the JSON keeps every seed.
"""

import os
import shutil
import sys
import tempfile
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_list("parts", ["quality", "ranking", "tflite", "ablation"], "Which benchmarks to run.")
flags.DEFINE_string("dataset", "mnist_subset", "mnist_subset (offline) or tfds:NAME (prepared in ~/tensorflow_datasets).")
flags.DEFINE_integer("input_size", None, "Resize images to this square size (default: keep).")
flags.DEFINE_string("model", "small_cnn", "Model family (small_cnn and resnet20 learn well with random sampling).")
flags.DEFINE_float("width_multiplier", 1.0, "Width multiplier (not small_cnn).")
flags.DEFINE_float("min_width_ratio", 0.1, "Smallest per-layer width ratio.")
flags.DEFINE_integer("divisor", 1, "Channel rounding (1: the uniform baseline can land in the FLOPs window).")
flags.DEFINE_float("width_step", 0.01, "Width-ratio grid step (0.01: finer than the paper's 0.03).")
flags.DEFINE_integer("batch_size", 64, "Batch size of every stage.")
flags.DEFINE_integer("hidden_units", 8, "Generator hidden size of the main PruningNet (the pipeline default).")
flags.DEFINE_integer("pruningnet_epochs", 12, "PruningNet training epochs.")
flags.DEFINE_integer("retrain_epochs", 8, "Retraining epochs of every structure.")
flags.DEFINE_integer("population_size", 20, "Evolution population.")
flags.DEFINE_integer("num_generations", 8, "Evolution generations.")
flags.DEFINE_list("ratios", ["0.5", "0.25"], "FLOPs budgets as fractions of the full width (quality, tflite).")
flags.DEFINE_integer("seeds", 3, "Retraining seeds per structure (quality, ablation).")
flags.DEFINE_integer("num_ranked", 20, "Random structures ranked (ranking).")
flags.DEFINE_integer("ranking_retrain_epochs", 5, "Retraining epochs of each ranked structure.")
flags.DEFINE_integer("lut_grid_size", 4, "Channel counts measured per axis per layer for the LUT (0: no LUT).")
flags.DEFINE_integer("latency_runs", 100, "Timed invocations per latency round (tflite).")
flags.DEFINE_list("ablation_hidden_units", ["32", "8", "0"], "Generator hidden sizes compared (ablation).")
flags.DEFINE_float("ablation_ratio", 0.25, "FLOPs budget of the ablation's search.")
flags.DEFINE_bool("quick", False, "Smoke run: 1-epoch trainings, tiny searches, 2 seeds, 4 ranked structures.")
flags.DEFINE_string("output_dir", _common.RESULTS_DIR, "Where results go.")


def _apply_quick():
  for name, value in (("pruningnet_epochs", 1), ("retrain_epochs", 1), ("population_size", 6),
                      ("num_generations", 2), ("seeds", 2), ("num_ranked", 4), ("ranking_retrain_epochs", 1),
                      ("lut_grid_size", 2), ("latency_runs", 20), ("ratios", ["0.5"])):
    FLAGS[name].value = value


class Bench:
  """The shared state of one run: data, space, recipe, trained PruningNets, searches, retrainings."""

  def __init__(self, workdir):
    from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
    self.pipeline = pipeline
    self.workdir = workdir
    self.config = pipeline.PipelineConfig(
        dataset=FLAGS.dataset, input_size=FLAGS.input_size, batch_size=FLAGS.batch_size, model=FLAGS.model,
        width_multiplier=FLAGS.width_multiplier, min_width_ratio=FLAGS.min_width_ratio, divisor=FLAGS.divisor,
        width_step=FLAGS.width_step,
        pruningnet_epochs=FLAGS.pruningnet_epochs, hidden_units=FLAGS.hidden_units,
        flops_ratio=float(FLAGS.ratios[0]), population_size=FLAGS.population_size,
        num_generations=FLAGS.num_generations, retrain_epochs=FLAGS.retrain_epochs)
    self.splits = pipeline.load_data(self.config)
    self.space = pipeline.build_space(self.config, self.splits.input_shape, self.splits.num_classes)
    self.full_mflops = self.space.mflops(self.space.largest())
    self._nets = {}
    self._searches = {}
    self._retrained = {}
    self._count = 0

  def _dir(self, label):
    self._count += 1
    return os.path.join(self.workdir, f"{self._count:03d}_{label}")

  def recipe(self):
    c = self.config
    return {"dataset": c.dataset, "model": c.model, "width_multiplier": c.width_multiplier,
            "min_width_ratio": c.min_width_ratio, "batch_size": c.batch_size,
            "pruningnet": f"{c.pruningnet_epochs} epochs {c.pruningnet_optimizer} lr {c.pruningnet_learning_rate} "
                          f"cosine, {c.sampling} sampling, bn {c.bn_mode}",
            "search": f"evolution population {c.population_size} x {c.num_generations} generations on the "
                      f"search split, {c.calibration_batches} calibration batches",
            "retrain": f"{c.retrain_epochs} epochs {c.retrain_optimizer} lr {c.retrain_learning_rate} cosine, "
                       f"from scratch ({c.init})",
            "splits": self.splits.get_config(), "full_mflops": self.full_mflops,
            "full_params": self.space.params(self.space.largest())}

  def net(self, hidden_units):
    """The trained PruningNet with generators of `hidden_units` (trained once)."""
    if hidden_units not in self._nets:
      start = time.perf_counter()
      net, history = self.pipeline.train_pruning_net(self.config.replace(hidden_units=hidden_units), self.splits,
                                                     self.space, self._dir(f"pruningnet_h{hidden_units}"), verbose=0)
      self._nets[hidden_units] = (net, {"seconds": time.perf_counter() - start,
                                        "final_train_accuracy": float(history["accuracy"][-1]),
                                        "generator_params": int(net.generator_params())})
      print(f"PruningNet hidden_units={hidden_units}: {self._nets[hidden_units][1]}", flush=True)
    return self._nets[hidden_units][0]

  def net_info(self, hidden_units):
    self.net(hidden_units)
    return self._nets[hidden_units][1]

  def search(self, hidden_units, ratio):
    """(searched SearchResult, uniform SearchResult) of one net at `ratio` of the full FLOPs."""
    key = (hidden_units, ratio)
    if key not in self._searches:
      net = self.net(hidden_units)
      config = self.config.replace(hidden_units=hidden_units, flops_ratio=ratio)
      budget = self.pipeline.config_budget(config, self.space)
      start = time.perf_counter()
      found, base = self.pipeline.search_and_save(net, self.splits, budget, config,
                                                  self._dir(f"search_h{hidden_units}_{ratio}"), verbose=0)
      self._searches[key] = (found, base, time.perf_counter() - start)
      print(f"search h={hidden_units} {100 * ratio:.0f}% FLOPs: searched {found.best_mflops:.3f} MFLOPs "
            f"{100 * found.best_accuracy:.1f}% | uniform x{base.extra['width_ratio']:.2f} {base.best_mflops:.3f} "
            f"MFLOPs {100 * base.best_accuracy:.1f}%", flush=True)
    return self._searches[key][:2]

  def retrain(self, structure, seed, epochs=None, label="model"):
    """Test accuracy (and the model) of `structure` retrained from scratch with the recipe and `seed`."""
    key = (tuple(structure.choices), seed, epochs)
    if key not in self._retrained:
      config = self.config.replace(seed=seed, retrain_epochs=epochs or self.config.retrain_epochs)
      start = time.perf_counter()
      model, info = self.pipeline.retrain(config, self.splits, self.space, structure, self._dir(label), verbose=0)
      info = {"test_accuracy": info["test_accuracy"], "mflops": info["mflops"], "params": info["params"],
              "seconds": time.perf_counter() - start, "seed": seed}
      self._retrained[key] = (model, info)
      print(f"  retrained {label} seed {seed}: {info['mflops']:.3f} MFLOPs test {100 * info['test_accuracy']:.2f}% "
            f"({info['seconds']:.0f} s)", flush=True)
    return self._retrained[key]


def part_quality(bench):
  """Item 6: searched vs uniform at equal FLOPs, retrained from scratch, several seeds."""
  from tf_metaprune import stats  # pylint: disable=g-import-not-at-top
  report = _common.Report("quality", FLAGS.output_dir)
  rows, table_rows = [], []
  for ratio in (float(r) for r in FLAGS.ratios):
    found, base = bench.search(FLAGS.hidden_units, ratio)
    entry = {"flops_ratio": ratio}
    for key, result in (("searched", found), ("uniform", base)):
      s = result.best_structure
      accs = [bench.retrain(s, seed, label=f"{key}_{ratio}")[1]["test_accuracy"] for seed in range(FLAGS.seeds)]
      mean, std = stats.mean_std(accs)
      entry[key] = {"choices": list(s.choices), "channels": bench.space.channels(s), "mflops": bench.space.mflops(s),
                    "params": bench.space.params(s), "search_accuracy": result.best_accuracy,
                    "test_accuracies": accs, "test_accuracy_mean": mean, "test_accuracy_std": std}
      if key == "uniform":
        entry[key]["width_ratio"] = result.extra["width_ratio"]
    entry["difference_mean"] = entry["searched"]["test_accuracy_mean"] - entry["uniform"]["test_accuracy_mean"]
    rows.append(entry)
    for key in ("searched", "uniform"):
      e = entry[key]
      label = key if key == "searched" else f"uniform x{e['width_ratio']:.2f}"
      table_rows.append([f"{100 * ratio:.0f}%", label, f"{e['mflops']:.3f}",
                         f"{100 * e['mflops'] / bench.full_mflops:.1f}%", f"{e['params']:,}",
                         f"{100 * e['search_accuracy']:.1f}%",
                         f"{100 * e['test_accuracy_mean']:.2f} +- {100 * e['test_accuracy_std']:.2f}"])
  table = _common.markdown_table(["budget", "structure", "MFLOPs", "of full", "params",
                                  "PruningNet search acc.", f"test acc. retrained ({FLAGS.seeds} seeds)"], table_rows)
  title = (f"Searched vs uniform at equal FLOPs ({bench.config.model}, {bench.config.dataset}, "
           f"{FLAGS.seeds} seeds, mean +- std)")
  report.write({"recipe": bench.recipe(), "rows": rows, "seeds": FLAGS.seeds}, table, title)
  plt = _common.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for key, marker in (("searched", "o"), ("uniform", "s")):
    ax.errorbar([r[key]["mflops"] for r in rows], [100 * r[key]["test_accuracy_mean"] for r in rows],
                yerr=[100 * r[key]["test_accuracy_std"] for r in rows], fmt=marker, capsize=4, label=key)
  ax.set_xlabel("MFLOPs (multiply-adds)")
  ax.set_ylabel("test accuracy after retraining (%)")
  ax.set_title(title, fontsize=8)
  ax.legend()
  report.save_figure(fig)


def spread_structures(space, num, seed=0):
  """`num` random structures evenly spread over the FLOPs range of 50x as many random draws."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  pool = {}
  for _ in range(50 * num):
    s = space.random(seed=rng)
    pool[tuple(s.choices)] = s
  ordered = sorted(pool.values(), key=space.mflops)
  picks = np.unique(np.linspace(0, len(ordered) - 1, num).round().astype(int))
  return [ordered[i] for i in picks]


def part_ranking(bench):
  """Item 7: does the PruningNet rank structures like retraining does? Kendall's tau."""
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  report = _common.Report("ranking", FLAGS.output_dir)
  net = bench.net(FLAGS.hidden_units)
  evaluator = tfmp.Evaluator(net, tfmp.EvaluationData.from_dataset(
      bench.splits.search, num_calibration_batches=bench.config.calibration_batches,
      calibration_dataset=bench.splits.train))
  rows = []
  for i, s in enumerate(spread_structures(bench.space, FLAGS.num_ranked)):
    info = bench.retrain(s, 0, epochs=FLAGS.ranking_retrain_epochs, label=f"ranked_{i}")[1]
    rows.append({"choices": list(s.choices), "mflops": bench.space.mflops(s), "params": bench.space.params(s),
                 "pruning_net_accuracy": evaluator.accuracy(s), "retrained_test_accuracy": info["test_accuracy"]})
  tau, p = _common.kendall_tau([r["pruning_net_accuracy"] for r in rows], [r["retrained_test_accuracy"] for r in rows])
  tau_flops, p_flops = _common.kendall_tau([r["mflops"] for r in rows], [r["retrained_test_accuracy"] for r in rows])
  table = _common.markdown_table(
      ["structures", "MFLOPs range", "Kendall tau: PruningNet acc. vs retrained acc.",
       "Kendall tau: MFLOPs vs retrained acc. (a FLOPs-only proxy)"],
      [[str(len(rows)), f"{min(r['mflops'] for r in rows):.2f} - {max(r['mflops'] for r in rows):.2f}",
        f"{tau:.2f} (p={p:.2g})", f"{tau_flops:.2f} (p={p_flops:.2g})"]])
  title = (f"Does the PruningNet rank structures correctly? ({bench.config.model}, retrained "
           f"{FLAGS.ranking_retrain_epochs} epochs, 1 seed each)")
  report.write({"recipe": bench.recipe(), "rows": rows, "kendall_tau": tau, "p_value": p,
                "kendall_tau_mflops": tau_flops, "p_value_mflops": p_flops,
                "retrain_epochs": FLAGS.ranking_retrain_epochs}, table, title)
  plt = _common.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  sc = ax.scatter([100 * r["pruning_net_accuracy"] for r in rows], [100 * r["retrained_test_accuracy"] for r in rows],
                  c=[r["mflops"] for r in rows], cmap="viridis")
  fig.colorbar(sc, label="MFLOPs")
  ax.set_xlabel("PruningNet accuracy after BN recalibration (%, search split)")
  ax.set_ylabel("test accuracy after retraining (%)")
  ax.set_title(f"Kendall tau = {tau:.2f}")
  report.save_figure(fig)


def part_tflite(bench):
  """Item 8: int8 size and host latency of searched vs uniform, and the LUT's prediction error."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tflite_export  # pylint: disable=g-import-not-at-top
  report = _common.Report("tflite_quality", FLAGS.output_dir)
  models, structures = {}, {}
  for ratio in (float(r) for r in FLAGS.ratios):
    found, base = bench.search(FLAGS.hidden_units, ratio)
    for key, result in (("searched", found), ("uniform", base)):
      name = f"{key} {100 * ratio:.0f}%"
      model, info = bench.retrain(result.best_structure, 0, label=f"{key}_{ratio}")
      flatbuffer = tflite_export.convert(model, "int8", representative_data=bench.splits.train,
                                         num_calibration_batches=8)
      parity = tflite_export.check_parity(flatbuffer, model, bench.splits.test)
      models[name] = {"flatbuffer": flatbuffer, "mflops": info["mflops"], "params": info["params"],
                      "keras_accuracy": parity.keras_accuracy, "int8_accuracy": parity.tflite_accuracy}
      structures[name] = result.best_structure
  lut = None
  if FLAGS.lut_grid_size > 0:
    table = tflite_export.measure_latency_table(bench.space, quantization="int8", grid_size=FLAGS.lut_grid_size,
                                                validation_structures=list(structures.values()), progress=False)
    lut = table.measurement
  rows, table_rows = [], []
  for i, (name, m) in enumerate(models.items()):
    row = {"name": name, "mflops": m["mflops"], "params": m["params"], "int8_size_bytes": len(m["flatbuffer"]),
           "keras_test_accuracy": m["keras_accuracy"], "int8_test_accuracy": m["int8_accuracy"],
           "choices": list(structures[name].choices)}
    rows.append(row)
  # Host latency: 3 alternating rounds, each the per-invoke median of `latency_runs` runs; median of rounds.
  medians = {name: [] for name in models}
  for r in range(3):
    for name in (list(models) if r % 2 == 0 else list(reversed(list(models)))):
      medians[name].append(tflite_export.benchmark(models[name]["flatbuffer"], num_runs=FLAGS.latency_runs,
                                                   num_warmup_runs=10).median_ms)
  for i, row in enumerate(rows):
    row["int8_latency_ms"] = float(np.median(medians[row["name"]]))
    row["int8_latency_rounds_ms"] = medians[row["name"]]
    if lut is not None:
      v = lut["validation"]["structures"][i]
      row.update({"lut_predicted_ms": v["predicted_ms"], "lut_measured_ms": v["measured_ms"],
                  "lut_relative_error": v["relative_error"]})
    table_rows.append([row["name"], f"{row['mflops']:.3f}", f"{row['params']:,}",
                       f"{row['int8_size_bytes'] / 1024:.1f}", f"{row['int8_latency_ms']:.3f}",
                       f"{100 * row['int8_test_accuracy']:.2f}%",
                       "-" if lut is None else f"{row['lut_predicted_ms']:.3f} / {row['lut_measured_ms']:.3f} "
                       f"({100 * row['lut_relative_error']:+.1f}%)"])
  table = _common.markdown_table(["model", "MFLOPs", "params", "int8 KB", "int8 latency ms (host, median)",
                                  "int8 test acc.", "LUT predicted / measured ms (error)"], table_rows)
  if lut is not None:
    table += (f"\n\nLUT: grid {FLAGS.lut_grid_size}, {lut['num_layer_models']} one-layer models, mean |error| "
              f"{100 * lut['validation']['mean_abs_relative_error']:.1f}% (max "
              f"{100 * lut['validation']['max_abs_relative_error']:.1f}%), timed in the same rounds.")
  table += ("\n\nHost: LiteRT interpreter, XNNPACK, 1 thread, batch 1; on x86 int8 is not faster than float32 -- "
            "phones are where int8 pays.")
  title = f"TFLite int8: searched vs uniform ({bench.config.model}, seed-0 retrained models)"
  report.write({"recipe": bench.recipe(), "rows": rows, "device": tflite_export.device_description(),
                "lut_measurement": lut}, table, title)
  plt = _common.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  names = [r["name"] for r in rows]
  axes[0].bar(names, [r["int8_latency_ms"] for r in rows], label="measured")
  if lut is not None:
    axes[0].scatter(names, [r["lut_predicted_ms"] for r in rows], color="r", zorder=3, label="LUT predicted")
  axes[0].set_ylabel("int8 latency ms (host, batch 1)")
  axes[0].legend()
  axes[1].bar(names, [r["int8_size_bytes"] / 1024 for r in rows])
  axes[1].set_ylabel("int8 size (KB)")
  fig.suptitle(title, fontsize=9)
  report.save_figure(fig)


def part_ablation(bench):
  """Item 5: generator hidden size 32 / 8 / 0 -- params, step time, searched structure's retrained accuracy."""
  from tf_metaprune import stats  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  report = _common.Report("ablation", FLAGS.output_dir)
  hidden = [int(h) for h in FLAGS.ablation_hidden_units]
  # Step time: fresh nets, same cached batches, alternating rounds.
  batches = bench.splits.train.take(8).cache()
  fresh = {}
  for h in hidden:
    keras.utils.set_random_seed(0)
    fresh[h] = tfmp.PruningNet(bench.space, hidden_units=h, seed=0)
    tfmp.training.compile_model(fresh[h], learning_rate=0.003, total_steps=10_000, optimizer="adam")
  steps = sum(1 for _ in batches)
  times = _common.interleaved({h: (lambda n=fresh[h]: n.fit(batches, epochs=1, verbose=0)) for h in hidden},
                              rounds=1 if FLAGS.quick else 3)
  network_params = bench.space.params(bench.space.largest())
  rows, table_rows = [], []
  for h in hidden:
    found, base = bench.search(h, FLAGS.ablation_ratio)
    s = found.best_structure
    accs = [bench.retrain(s, seed, label=f"ablation_h{h}")[1]["test_accuracy"] for seed in range(FLAGS.seeds)]
    mean, std = stats.mean_std(accs)
    info = bench.net_info(h)
    row = {"hidden_units": h, "generator_params": info["generator_params"],
           "generator_multiple": info["generator_params"] / network_params,
           "step_ms": 1000 * times[h]["median_s"] / steps, "pruning_net_train_seconds": info["seconds"],
           "pruning_net_final_train_accuracy": info["final_train_accuracy"], "searched_choices": list(s.choices),
           "searched_mflops": found.best_mflops, "searched_search_accuracy": found.best_accuracy,
           "uniform_search_accuracy": base.best_accuracy, "test_accuracies": accs, "test_accuracy_mean": mean,
           "test_accuracy_std": std}
    rows.append(row)
    table_rows.append([str(h) + (" (paper)" if h == 32 else " (weight sharing)" if h == 0 else ""),
                       f"{row['generator_params']:,}", f"{row['generator_multiple']:.1f}x", f"{row['step_ms']:.0f}",
                       f"{100 * row['searched_search_accuracy']:.1f}%", f"{row['searched_mflops']:.3f}",
                       f"{100 * mean:.2f} +- {100 * std:.2f}"])
  table = _common.markdown_table(
      ["generator hidden units", "generator params", "x network params", "PruningNet step ms",
       "searched: PruningNet acc.", "searched MFLOPs", f"searched: test acc. retrained ({FLAGS.seeds} seeds)"],
      table_rows)
  title = (f"Weight-prediction ablation ({bench.config.model}, budget {100 * FLAGS.ablation_ratio:.0f}% FLOPs, "
           f"batch {bench.config.batch_size})")
  report.write({"recipe": bench.recipe(), "rows": rows, "network_params": network_params,
                "ablation_ratio": FLAGS.ablation_ratio, "step_batches": steps}, table, title)
  plt = _common.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  labels = [str(r["hidden_units"]) for r in rows]
  axes[0].bar(labels, [r["generator_multiple"] for r in rows])
  axes[0].set_xlabel("generator hidden units")
  axes[0].set_ylabel("generator params / network params")
  axes[1].errorbar(labels, [100 * r["test_accuracy_mean"] for r in rows],
                   yerr=[100 * r["test_accuracy_std"] for r in rows], fmt="o", capsize=4)
  axes[1].set_xlabel("generator hidden units")
  axes[1].set_ylabel("searched structure, test acc. retrained (%)")
  fig.suptitle(title, fontsize=9)
  report.save_figure(fig)


PARTS = {"quality": part_quality, "ranking": part_ranking, "tflite": part_tflite, "ablation": part_ablation}


def main(argv):
  del argv
  unknown = [p for p in FLAGS.parts if p not in PARTS]
  if unknown:
    raise ValueError(f"--parts={','.join(FLAGS.parts)}: unknown {unknown}; choose from {sorted(PARTS)}")
  if FLAGS.quick:
    _apply_quick()
  workdir = tempfile.mkdtemp(prefix="tfmp_quality_")
  try:
    bench = Bench(workdir)
    print(f"{bench.space.name}: full width {bench.full_mflops:.3f} MFLOPs, "
          f"{bench.space.params(bench.space.largest()):,} params; work in {workdir}", flush=True)
    for part in FLAGS.parts:
      PARTS[part](bench)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
