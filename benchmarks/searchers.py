"""Benchmark: every searcher at 50% and 25% FLOPs on the MNIST subset, retrained alike.

For each searcher of `tf_metaprune.search.SEARCHERS` and each FLOPs budget
(fractions of the full-width small CNN), the structure is searched once
(`tfmp.search.run`, seed 0) and then retrained from scratch with the shared
recipe (`tfmp.training.fit`, the same epochs and learning rate for all) with
several seeds; the table gives test accuracy (mean +- std over the seeds),
MFLOPs, params and the search wall time.

What the searchers score with (see `tf_metaprune.search.dispatch`):
evolutionary, rl and uniform share one MetaPruning PruningNet (trained once,
its time reported separately); autoslim trains its own slimmable network
(once, slimmed to both budgets); pas trains its own masked network per
budget (its time is all search time).

Everything is cached under --work_dir (searches, trained networks) and the
retraining results are written to the JSON as they finish, so a rerun picks
up where it stopped.

Usage:

  .venv/bin/python benchmarks/searchers.py                      # see the JSON for the measured wall time
  .venv/bin/python benchmarks/searchers.py --retrain_epochs=2 --seeds=1 --searchers=uniform,autoslim
"""

import os
import platform
import time

from absl import app
from absl import flags
import keras
import numpy as np

import tf_metaprune as tfmp
from tf_metaprune import budgets
from tf_metaprune import io as io_lib
from tf_metaprune import search

_SEARCHERS = flags.DEFINE_list("searchers", list(search.SEARCHERS), "Searchers to run.")
_RATIOS = flags.DEFINE_list("ratios", ["0.5", "0.25"], "FLOPs budgets as fractions of the full width.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Retraining seeds per found structure.")
_INPUT_SIZE = flags.DEFINE_integer("input_size", 14, "Images resized to this square size (MNIST is 28).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size of training and search.")
_NET_EPOCHS = flags.DEFINE_integer("net_epochs", 8, "Epochs of the MetaPruning PruningNet and the slimmable net.")
_RETRAIN_EPOCHS = flags.DEFINE_integer("retrain_epochs", 6, "Epochs of the shared retraining recipe.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.003, "Peak learning rate (Adam, cosine decay) everywhere.")
_POPULATION = flags.DEFINE_integer("population", 20, "Evolution population per generation.")
_GENERATIONS = flags.DEFINE_integer("generations", 5, "Evolution generations.")
_EPISODES = flags.DEFINE_integer("episodes", 150, "RL episodes.")
_PAS_EPOCHS = flags.DEFINE_integer("pas_epochs", 6, "PaS search epochs (then 2 fine-tuning epochs).")
_WORK_DIR = flags.DEFINE_string("work_dir", "runs/searchers_benchmark", "Cache of searches and trained networks.")
_OUT = flags.DEFINE_string("out", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                               "searchers.json"), "Output JSON (a PNG is written beside it).")


def _test_accuracy(model, test):
  _, acc = model.evaluate(test, verbose=0)
  return float(acc)


def _configs():
  return {
      "evolutionary": search.EvolutionConfig(population_size=_POPULATION.value, top_k=5,
                                             num_generations=_GENERATIONS.value),
      "autoslim": search.AutoSlimConfig(epochs=_NET_EPOCHS.value, learning_rate=_LEARNING_RATE.value),
      "pas": search.PaSConfig(search_epochs=_PAS_EPOCHS.value, finetune_epochs=2, learning_rate=_LEARNING_RATE.value),
      "rl": search.RLConfig(episodes=_EPISODES.value),
      "uniform": None,
  }


def _pruning_net(space, splits, work_dir, report):
  """The MetaPruning PruningNet shared by evolutionary, rl and uniform (trained once, cached)."""
  net = tfmp.PruningNet(space, hidden_units=8, seed=0)
  path = os.path.join(work_dir, "pruning_net.weights.h5")
  if os.path.exists(path):
    net.load_weights(path)
    return net
  keras.utils.set_random_seed(0)
  t0 = time.perf_counter()
  tfmp.training.fit(net, splits.train, epochs=_NET_EPOCHS.value, learning_rate=_LEARNING_RATE.value,
                    optimizer="adam", verbose=2)
  report["pruning_net_train_seconds"] = time.perf_counter() - t0
  net.save_weights(path)
  return net


def _plot(rows, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  ratios = sorted({r["flops_ratio"] for r in rows}, reverse=True)
  names = [n for n in search.SEARCHERS if any(r["searcher"] == n for r in rows)]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  width = 0.8 / max(1, len(ratios))
  for j, ratio in enumerate(ratios):
    sel = {r["searcher"]: r for r in rows if r["flops_ratio"] == ratio}
    xs = np.arange(len(names)) + j * width
    means = [100 * sel[n]["test_accuracy_mean"] if n in sel else np.nan for n in names]
    stds = [100 * sel[n]["test_accuracy_std"] if n in sel else 0 for n in names]
    axes[0].bar(xs, means, width, yerr=stds, capsize=3, label=f"{int(ratio * 100)}% FLOPs")
    axes[1].bar(xs, [sel[n]["search_seconds"] if n in sel else np.nan for n in names], width,
                label=f"{int(ratio * 100)}% FLOPs")
  for ax, title in zip(axes, ("test accuracy after retraining (%)", "search wall time (s)")):
    ax.set_xticks(np.arange(len(names)) + width * (len(ratios) - 1) / 2)
    ax.set_xticklabels(names)
    ax.set_title(title)
    ax.legend()
  lo = min(100 * r["test_accuracy_mean"] for r in rows)
  axes[0].set_ylim(max(0, lo - 10), 100)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for name in _SEARCHERS.value:
    search.config_class(name)  # unknown names fail before any work
  t_start = time.perf_counter()
  work_dir = _WORK_DIR.value
  os.makedirs(work_dir, exist_ok=True)
  splits = tfmp.data.load_dataset("mnist_subset", batch_size=_BATCH.value, input_size=_INPUT_SIZE.value, seed=0)
  space = tfmp.models.small_cnn(splits.input_shape, splits.num_classes)
  report = {"benchmark": "searchers",
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "load_average_before": os.getloadavg()},
            "data": splits.get_config(),
            "model": {"family": "small_cnn", "input_shape": list(space.input_shape), "genes": len(space.genes),
                      "full_mflops": space.mflops(space.largest()), "full_params": space.params(space.largest())},
            "settings": {
                "net_epochs": _NET_EPOCHS.value, "retrain_epochs": _RETRAIN_EPOCHS.value,
                "learning_rate": _LEARNING_RATE.value, "optimizer": "adam", "batch_size": _BATCH.value,
                "seeds": _SEEDS.value, "population": _POPULATION.value, "generations": _GENERATIONS.value,
                "episodes": _EPISODES.value, "pas_epochs": _PAS_EPOCHS.value},
            "rows": []}
  if os.path.exists(_OUT.value):
    old = io_lib.read_json(_OUT.value, "benchmark results")
    if old.get("settings") == report["settings"]:
      report["rows"] = old.get("rows", [])
      report["pruning_net_train_seconds"] = old.get("pruning_net_train_seconds")
  done = {(r["searcher"], r["flops_ratio"]) for r in report["rows"]}
  configs = _configs()
  net = None
  for name in _SEARCHERS.value:
    for ratio in [float(r) for r in _RATIOS.value]:
      if (name, ratio) in done:
        continue
      budget = budgets.FlopsBudget.from_ratio(space, ratio)
      searcher = search.searcher_class(name)   # its capabilities, not its name, decide what it gets
      if searcher.needs_pruning_net and net is None:
        net = _pruning_net(space, splits, work_dir, report)
      out = os.path.join(work_dir, name if searcher.shares_network_across_budgets else f"{name}_{ratio:g}")
      t0 = time.perf_counter()
      result = search.run(name, space, budget, train_data=splits, search_data=splits,
                          pruning_net=net if searcher.needs_pruning_net else None,
                          config=configs[name], output_dir=out, seed=0, verbose=1)
      wall = time.perf_counter() - t0
      s = result.structure(space)
      accs = []
      for seed in range(_SEEDS.value):
        keras.utils.set_random_seed(seed)
        model = tfmp.rebuild(space, s, bn_momentum=0.9)
        tfmp.training.fit(model, splits.train, epochs=_RETRAIN_EPOCHS.value, learning_rate=_LEARNING_RATE.value,
                          optimizer="adam", verbose=0)
        accs.append(_test_accuracy(model, splits.test))
      row = {"searcher": name, "flops_ratio": ratio, "budget_mflops": budget.max_mflops, "choices": list(s.choices),
             "channels": space.channels(s), "mflops": space.mflops(s), "params": space.params(s),
             "search_accuracy": result.best_accuracy, "search_seconds": result.seconds,
             "train_seconds": result.extra.get("train_seconds", 0.0), "wall_seconds_this_run": wall,
             "evaluations": result.num_evaluations, "test_accuracy": accs,
             "test_accuracy_mean": float(np.mean(accs)), "test_accuracy_std": float(np.std(accs))}
      report["rows"].append(row)
      report["machine"]["load_average_after"] = os.getloadavg()
      io_lib.write_json_atomic(_OUT.value, report)
      print(f"[benchmark] {name} @ {ratio:.0%}: test {100 * row['test_accuracy_mean']:.1f} +- "
            f"{100 * row['test_accuracy_std']:.1f}% at {row['mflops']:.3f} MFLOPs, "
            f"search {row['search_seconds']:.0f} s", 
            flush=True)
  report["seconds_this_run"] = time.perf_counter() - t_start
  io_lib.write_json_atomic(_OUT.value, report)
  rows = sorted(report["rows"], key=lambda r: (-r["flops_ratio"], search.SEARCHERS.index(r["searcher"])))
  _plot(rows, os.path.splitext(_OUT.value)[0] + ".png")
  print(f"\nsmall_cnn {space.input_shape}, full width {space.mflops(space.largest()):.3f} MFLOPs; retrained "
        f"{_RETRAIN_EPOCHS.value} epochs x {_SEEDS.value} seeds; MetaPruning PruningNet trained in "
        f"{report.get('pruning_net_train_seconds') or 0:.0f} s (shared by "
        f"{', '.join(n for n in search.SEARCHERS if search.searcher_class(n).needs_pruning_net)})")
  print("| FLOPs | searcher     | MFLOPs | params | search-split acc | test acc (mean +- std) | search s | "
        "own net training s |")
  print("|------:|--------------|-------:|-------:|-----------------:|-----------------------:|---------:|"
        "-------------------:|")
  for r in rows:
    print(f"| {r['flops_ratio']:.0%} | {r['searcher']:<12} | {r['mflops']:.3f} | {r['params']:,} | "
          f"{100 * r['search_accuracy']:.1f}% | "
          f"{100 * r['test_accuracy_mean']:.1f} +- {100 * r['test_accuracy_std']:.1f}% | "
          f"{r['search_seconds']:.0f} | {r['train_seconds']:.0f} |")


if __name__ == "__main__":
  app.run(main)
