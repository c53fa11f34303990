"""Which PruningNet settings rank structures best? An ablation on fashion_quality's in-window ranking.

benchmarks/fashion_quality.py retrained 20 random structures of the small CNN
inside a +-5% window at 25% of the full FLOPs on Fashion-MNIST (2 seeds each;
results/fashion_quality.json, ranking.rows). Those retrained accuracies are
the yardstick here: every variant of the PruningNet below is trained with
fashion_quality's recipe (same data split, seed 0, adam 0.003 cosine, batch
128, 1,560 steps unless said otherwise), then the 20 stored structures are
scored with fashion_quality's "full" evaluator (all 6,000 search-split images
after BN recalibration on 16 x 128 training images) and ranked against their
stored mean retrained accuracy:

  default        hidden_units 8, bn shared affine (the pipeline default)
  hidden0        hidden_units 0 (plain weight sharing, no hypernetwork)
  hidden32       hidden_units 32 (the paper's)
  bn_nonaffine   bn_affine=False (the reference's non-affine BN)
  bn_switchable  bn_mode="switchable" (one gamma/beta per width choice)
  long4x         the default trained 4x the steps (6,240): is it trained long enough?

Per variant: Kendall tau of the fitness (accuracy) and of -loss against the
mean retrained accuracy, each with a bootstrap 95% CI, and the paired
bootstrap 95% CI of tau(variant) - tau(default) (the structures resampled
jointly, so both taus see the same draw); its full-width accuracy on the
10,000 test images next to the plain full-width small CNN trained for the
same number of steps with the same optimizer recipe; and the Spearman of its
fitness against FLOPs over fashion_quality's spread set (30 structures from
the smallest to the largest: does accuracy rise with FLOPs?).

Two reference options change the space, so the stored structures cannot be
scored in it: the classifier's input layer at full width
(`full_width_classifier_input`) and the grid (fashion_quality already uses
the fine one, divisor 1 and width step 0.01; the pipeline's default is
divisor 8 and step 0.03). For each, the cheap facts of the space (choices
per gene, share of random structures inside the 25% window, the uniform
baseline's per-layer ratios) and, for `--space_settings`, a PruningNet
trained in it, the search at 25% and its pick and the uniform baseline
retrained with `--space_seeds` seeds (paired by seed).

Every finished variant is written to a JSON state file at once; a rerun of
the same command resumes (a cut-off training resumes from its last epoch).
Writes results/fashion_ablation.json + .png; report.py puts the table in
benchmarks/README.md's Results. `make bench-ablation` runs it (about 25 min alone on the
2-core machine; see the Makefile).

  python benchmarks/fashion_ablation.py [--quick] [--variants=default,hidden0]

Needs Fashion-MNIST (`apt-get install -y dataset-fashion-mnist`) and
results/fashion_quality.json's ranking.
"""

import os
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position
import fashion_quality as fq  # pylint: disable=g-import-not-at-top,wrong-import-position  (its flags: data, recipe)

FLAGS = flags.FLAGS
# (name, PipelineConfig changes, multiple of the default step budget)
VARIANTS = {
    "default": ({}, 1),
    "hidden0": ({"hidden_units": 0}, 1),
    "hidden32": ({"hidden_units": 32}, 1),
    "bn_nonaffine": ({"bn_affine": False}, 1),
    "bn_switchable": ({"bn_mode": "switchable"}, 1),
    "long4x": ({}, 4),
}
SPACE_SETTINGS = {
    "default": {},   # fashion_quality's: divisor 1, width step 0.01, the classifier's input layer pruned
    "full_width_classifier_input": {"full_width_classifier_input": True},
    "coarse_grid": {"divisor": 8, "width_step": 0.03},   # PipelineConfig's defaults
}
flags.DEFINE_list("variants", list(VARIANTS), f"PruningNet variants, in this order (of {list(VARIANTS)}).")
flags.DEFINE_list("space_settings", ["full_width_classifier_input"],
                  f"Space settings that get a PruningNet, a 25% search and retrainings (of {list(SPACE_SETTINGS)[1:]}; "
                  "the cheap facts of every setting are always reported).")
flags.DEFINE_integer("space_seeds", 2, "Retraining seeds of the searched and uniform structures of a space setting.")
flags.DEFINE_bool("plain_long", True, "Also train the plain model for long4x's step budget (4x the plain cost).")
flags.DEFINE_string("default_net", os.path.join("runs", "fashion_quality", "pruningnet.keras"),
                    "fashion_quality's trained default PruningNet: used as the default variant if its re-scored "
                    "fitness of the stored structures matches the stored one (else the default is trained here).")
flags.DEFINE_integer("bootstrap_rounds", 2000, "Bootstrap resamples of the structures.")
flags.DEFINE_string("quality_json", os.path.join(_common.RESULTS_DIR, "fashion_quality.json"),
                    "fashion_quality's results (the ranked structures and their retrained accuracies).")
FLAGS.set_default("work_dir", "runs/fashion_ablation")
FLAGS.set_default("threads", 2)


def _log(text):
  print(f"[{time.strftime('%H:%M:%S', time.gmtime())} UTC, load {os.getloadavg()[0]:.1f}] {text}", flush=True)


def stored_ranking():
  """The ranked structures of fashion_quality.json: choices, MFLOPs, the two retrained accuracies, its fitness."""
  from tf_metaprune import io as io_lib  # pylint: disable=g-import-not-at-top
  if not os.path.exists(FLAGS.quality_json):
    sys.exit(f"fashion_ablation.py: {FLAGS.quality_json} is missing; run `make bench-quality` first")
  data = io_lib.read_json(FLAGS.quality_json, "fashion_quality results")
  if "ranking" not in data:
    sys.exit(f"fashion_ablation.py: {FLAGS.quality_json} has no ranking part; finish `make bench-quality` first")
  rows = data["ranking"]["rows"]
  return rows[:FLAGS.num_ranked], data


class Ablation:
  """fashion_quality's data, space and spread set, and the trained variants' scores."""

  def __init__(self, state):
    self.bench = fq.Bench()
    self.state = state
    self.pipeline = self.bench.pipeline
    self.space = self.bench.space
    self.rows, self.quality = stored_ranking()
    from tf_metaprune import space as space_lib  # pylint: disable=g-import-not-at-top
    self.ranked = [space_lib.Structure(r["choices"]) for r in self.rows]
    for s, r in zip(self.ranked, self.rows):   # the stored structures are this space's
      if abs(self.space.mflops(s) - r["mflops"]) > 1e-6 * max(1.0, r["mflops"]):
        sys.exit(f"fashion_ablation.py: stored structure {r['choices']} has {r['mflops']} MFLOPs in "
                 f"{FLAGS.quality_json} but {self.space.mflops(s)} here; rerun fashion_quality with these settings")
    self.spread = self.bench.spread(FLAGS.num_spread, 7)   # fashion_quality's part_retest set
    self.steps_per_epoch = self.bench.splits.num_examples["train"] // self.bench.config.batch_size
    self.seconds_per_step = None   # measured on the first trained variant (for the estimate of what is left)
    self.scoring_seconds = None

  # ---- one PruningNet -----------------------------------------------------------------------------
  def config(self, changes, multiple):
    return self.bench.config.replace(pruningnet_epochs=FLAGS.pruningnet_epochs * multiple, **changes)

  def train(self, name, config, space):
    import keras  # pylint: disable=g-import-not-at-top
    folder = os.path.join(FLAGS.work_dir, name)
    path = os.path.join(folder, "pruningnet.keras")
    if os.path.exists(path):
      return keras.saving.load_model(path, compile=False), self.state.get(f"trained/{name}")
    start = time.perf_counter()
    net, history = self.pipeline.train_pruning_net(config, self.bench.splits, space, os.path.join(folder, "run"),
                                                   verbose=0)
    self.pipeline.save_model_atomic(net, path)
    steps = config.pruningnet_epochs * self.steps_per_epoch
    info = {"seconds": time.perf_counter() - start, "steps": steps, "load_average": list(os.getloadavg()),
            "final_train_accuracy": float(history["accuracy"][-1]), "final_train_loss": float(history["loss"][-1])}
    return net, self.state.put(f"trained/{name}", info)

  def evaluators(self, net, config):
    from tf_metaprune import calibration  # pylint: disable=g-import-not-at-top
    splits = self.bench.splits
    test = calibration.EvaluationData.from_dataset(splits.test, num_calibration_batches=4 * config.calibration_batches,
                                                   calibration_dataset=splits.calibration)
    return {"full": self.pipeline._evaluator(net, splits, config, rescore=True),   # pylint: disable=protected-access
            "search": self.pipeline._evaluator(net, splits, config),   # pylint: disable=protected-access
            "test": calibration.Evaluator(net, test)}

  def variant(self, name):
    key = f"variant/{name}"
    if self.state.get(key):
      return self.state.get(key)
    changes, multiple = VARIANTS[name]
    config = self.config(changes, multiple)
    pair = lambda acc_loss: {"accuracy": acc_loss[0], "loss": acc_loss[1]}
    reused = self.reuse_default(config, pair) if name == "default" else None
    if reused:
      net, info, ranked, start, ev = reused
    else:
      _log(f"{name}: training {config.pruningnet_epochs * self.steps_per_epoch} steps ({changes or 'the default'})")
      net, info = self.train(name, config, self.space)
      start = time.perf_counter()
      ev = self.evaluators(net, config)
      ranked = [pair(ev["full"].scores(s)) for s in self.ranked]
    spread = [dict(mflops=self.space.mflops(s), **pair(ev["search"].scores(s))) for s in self.spread]
    largest = self.space.largest()
    row = {"name": name, "changes": changes, "multiple": multiple, "pruningnet_epochs": config.pruningnet_epochs,
           "steps": config.pruningnet_epochs * self.steps_per_epoch, "training": info,
           "ranked": ranked, "spread": spread, "full_width_test": pair(ev["test"].scores(largest)),
           "full_width_search": pair(ev["full"].scores(largest)), "scoring_seconds": time.perf_counter() - start,
           "generator_params": int(net.generator_params()), "load_average": list(os.getloadavg())}
    if info and info.get("seconds"):
      self.seconds_per_step = info["seconds"] / info["steps"]
    self.scoring_seconds = row["scoring_seconds"]
    t = _variant_taus(row, self.rows, rounds=200)
    _log(f"{name}: tau accuracy {t['tau_accuracy'][0]:+.2f}, -loss {t['tau_neg_loss'][0]:+.2f}; full width test "
         f"{100 * row['full_width_test']['accuracy']:.2f}%"
         + (f"; trained in {info['seconds']:.0f} s ({1000 * info['seconds'] / info['steps']:.0f} ms/step)"
            if info and info.get("seconds") else " (trained before)") + f", scored in {row['scoring_seconds']:.0f} s")
    return self.state.put(key, row)

  def reuse_default(self, config, pair):
    """fashion_quality's own default PruningNet, if it re-scores the stored structures as stored (else None)."""
    import keras  # pylint: disable=g-import-not-at-top
    if FLAGS.quick or not os.path.exists(FLAGS.default_net):
      return None
    start = time.perf_counter()
    net = keras.saving.load_model(FLAGS.default_net, compile=False)   # its optimizer state is not needed
    ev = self.evaluators(net, config)
    ranked = [pair(ev["full"].scores(s)) for s in self.ranked]
    diff = max(abs(a["accuracy"] - r["full"]["accuracy"]) for a, r in zip(ranked, self.rows))
    if diff > 2 / 6000:   # more than two of the 6,000 predictions differ: not the same net (or not the same data)
      _log(f"default: {FLAGS.default_net} re-scores the stored structures up to {100 * diff:.2f} pt off; training it")
      return None
    info = {"reused": os.path.abspath(FLAGS.default_net), "max_abs_accuracy_diff_vs_stored": diff,
            "steps": config.pruningnet_epochs * self.steps_per_epoch, "seconds": None}
    _log(f"default: reusing {FLAGS.default_net} (re-scored fitness within {100 * diff:.3f} pt of the stored one)")
    return net, info, ranked, start, ev

  def plain(self, steps):
    """The plain full-width small CNN trained `steps` steps with the retraining recipe (adam 0.003 cosine)."""
    key = f"plain/{steps}"
    if self.state.get(key):
      return self.state.get(key)
    epochs = steps // self.steps_per_epoch
    _log(f"plain full width: training {steps} steps ({epochs} epochs)")
    start = time.perf_counter()
    _, info = self.pipeline.retrain(self.bench.config.replace(retrain_epochs=epochs, seed=0), self.bench.splits,
                                    self.space, self.space.largest(), os.path.join(FLAGS.work_dir, f"plain_{steps}"),
                                    verbose=0)
    row = {"steps": steps, "epochs": epochs, "test_accuracy": info["test_accuracy"], "test_loss": info["test_loss"],
           "seconds": time.perf_counter() - start, "load_average": list(os.getloadavg())}
    _log(f"plain full width, {steps} steps: test {100 * row['test_accuracy']:.2f}% ({row['seconds']:.0f} s)")
    return self.state.put(key, row)

  # ---- the options that change the space ----------------------------------------------------------
  def space_facts(self):
    """Choices per gene, share of random structures in the 25% window, the uniform baseline: no training."""
    if self.state.get("space_facts"):
      return self.state.get("space_facts")
    import numpy as np  # pylint: disable=g-import-not-at-top
    from tf_metaprune import search as search_lib  # pylint: disable=g-import-not-at-top
    out = {}
    for setting, changes in SPACE_SETTINGS.items():
      config = self.bench.config.replace(**changes)
      space = self.pipeline.build_space(config, self.bench.splits.input_shape, self.bench.splits.num_classes)
      full = space.mflops(space.largest())
      rng = np.random.default_rng(0)
      ratios = np.array([space.mflops(space.random(seed=rng)) for _ in range(4000)]) / full
      budget = self.pipeline.build_budget(space, flops_ratio=fq.RANK_RATIO, min_flops_ratio=FLAGS.window * fq.RANK_RATIO)
      try:
        ratio, uni = search_lib.largest_uniform(space, budget)
        uniform = {"width_ratio": ratio, "channels": space.channels(uni), "flops_ratio": space.mflops(uni) / full,
                   "layer_width_ratios": search_lib.layer_width_ratios(space, uni)}
      except ValueError as e:
        uniform = {"error": str(e)}
      out[setting] = {"changes": changes, "num_choices": list(space.num_choices),
                      "num_structures": int(np.prod(space.num_choices)),
                      "layers": list(space.channels(space.largest())),
                      "in_window_share": float(np.mean((ratios >= FLAGS.window * fq.RANK_RATIO) &
                                                       (ratios <= fq.RANK_RATIO))),
                      "smallest_flops_ratio": space.mflops(space.smallest()) / full, "uniform": uniform}
    return self.state.put("space_facts", out)

  def space_setting(self, setting):
    """A PruningNet in the changed space, the 25% search and the uniform baseline, both retrained (paired)."""
    key = f"space/{setting}"
    if self.state.get(key):
      return self.state.get(key)
    from tf_metaprune import search as search_lib  # pylint: disable=g-import-not-at-top
    config = self.bench.config.replace(**SPACE_SETTINGS[setting])
    splits = self.bench.splits
    space = self.pipeline.build_space(config, splits.input_shape, splits.num_classes)
    _log(f"space {setting}: training the PruningNet ({config.pruningnet_epochs * self.steps_per_epoch} steps)")
    net, info = self.train(f"space_{setting}", config, space)
    start = time.perf_counter()
    ev = self.evaluators(net, config)
    budget = self.pipeline.build_budget(space, flops_ratio=fq.RANK_RATIO, min_flops_ratio=FLAGS.window * fq.RANK_RATIO)
    evolution = search_lib.EvolutionConfig(population_size=config.population_size,
                                           num_generations=config.num_generations, seed=0,
                                           top_k=min(10, config.population_size))
    found = search_lib.evolutionary(net, ev["search"], budget, evolution, verbose=0,
                                    state_path=os.path.join(FLAGS.work_dir, f"space_{setting}", "search_state.json"))
    picked = search_lib.rescore(found, ev["full"], top_k=config.rescore_top_k)
    base = search_lib.uniform(net, ev["search"], budget)
    full = space.mflops(space.largest())
    describe = lambda s: {"choices": list(s.choices), "channels": space.channels(s), "flops_ratio": space.mflops(s) / full,
                          "layer_width_ratios": search_lib.layer_width_ratios(space, s)}
    acc_loss = lambda pair: {"accuracy": pair[0], "loss": pair[1]}
    row = {"setting": setting, "changes": SPACE_SETTINGS[setting], "training": info,
           "search_seconds": time.perf_counter() - start,
           "searched": dict(describe(picked.best_structure), fitness=acc_loss(ev["full"].scores(picked.best_structure))),
           "uniform": dict(describe(base.best_structure), width_ratio=base.extra["width_ratio"],
                           fitness=acc_loss(ev["full"].scores(base.best_structure))),
           "full_width_test": acc_loss(ev["test"].scores(space.largest())), "pairs": []}
    _log(f"space {setting}: searched {row['searched']['channels']} fitness "
         f"{100 * row['searched']['fitness']['accuracy']:.2f}% | uniform x{row['uniform']['width_ratio']:.2f} "
         f"{100 * row['uniform']['fitness']['accuracy']:.2f}%")
    for seed in range(FLAGS.space_seeds):   # same seeds as fashion_quality's quality part (config.seed = seed)
      pair = {"seed": seed}
      for kind, s in (("searched", picked.best_structure), ("uniform", base.best_structure)):
        _, out = self.pipeline.retrain(config.replace(seed=seed), splits, space, s, None, verbose=0)
        pair[kind] = out["test_accuracy"]
      row["pairs"].append(pair)
      _log(f"space {setting} seed {seed}: searched {100 * pair['searched']:.2f}% uniform {100 * pair['uniform']:.2f}%")
    row["seconds"] = time.perf_counter() - start + (info or {}).get("seconds", 0.0)
    return self.state.put(key, row)

  # ---- the estimate of what is left ---------------------------------------------------------------
  def remaining_seconds(self, todo_variants, todo_plain_steps, todo_spaces):
    sps = self.seconds_per_step
    if sps is None:
      return None
    steps = sum(VARIANTS[v][1] for v in todo_variants) * FLAGS.pruningnet_epochs * self.steps_per_epoch
    plain = [r for k, r in self.state.runs.items() if k.startswith("plain/")]
    plain_sps = plain[0]["seconds"] / plain[0]["steps"] if plain else sps
    space = (FLAGS.pruningnet_epochs * self.steps_per_epoch * sps + 120 + 2 * FLAGS.space_seeds *
             (FLAGS.retrain_epochs * self.steps_per_epoch * plain_sps + 5))
    return (steps * sps + len(todo_variants) * (self.scoring_seconds or 60) + sum(todo_plain_steps) * plain_sps +
            len(todo_spaces) * space)


# ---- the summary ----------------------------------------------------------------------------------


def _paired_tau_difference(x_variant, x_default, y, rounds, seed=0):
  """tau(variant) - tau(default) and its percentile bootstrap 95% CI, the structures resampled jointly."""
  from tf_metaprune import stats as stats_lib  # pylint: disable=g-import-not-at-top
  return stats_lib.bootstrap_ci95(lambda xv, xd, y: stats_lib.kendall_tau(xv, y) - stats_lib.kendall_tau(xd, y),
                                  x_variant, x_default, y, rounds=rounds, seed=seed)


def _targets(rows):
  return [(r["seed_a"] + r["seed_b"]) / 2 for r in rows]


def _variant_taus(row, rows, rounds):
  from scipy import stats  # pylint: disable=g-import-not-at-top
  y = _targets(rows)
  acc = [r["accuracy"] for r in row["ranked"]]
  neg_loss = [-r["loss"] for r in row["ranked"]]
  f = [r["accuracy"] for r in row["spread"]]
  m = [r["mflops"] for r in row["spread"]]
  from tf_metaprune import stats as stats_lib  # pylint: disable=g-import-not-at-top
  tau_ci = lambda x: stats_lib.bootstrap_ci95(stats_lib.kendall_tau, x, y, rounds=rounds)
  return {"tau_accuracy": tau_ci(acc), "tau_neg_loss": tau_ci(neg_loss),
          "spread_spearman_fitness_vs_mflops": float(stats.spearmanr(f, m)[0])}


def summarize(state):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tf_metaprune import stats as stats_lib  # pylint: disable=g-import-not-at-top
  runs = state.runs
  rows, quality = stored_ranking()
  y = _targets(rows)
  name = "fashion_ablation_quick" if FLAGS.quick else "fashion_ablation"
  report = _common.Report(name, FLAGS.output_dir)
  fmt = lambda t: f"{t[0]:+.2f} [{t[1]:+.2f}, {t[2]:+.2f}]"
  variants = [runs[f"variant/{v}"] for v in VARIANTS if runs.get(f"variant/{v}")]
  default = runs.get("variant/default")
  out = {"recipe": runs.get("meta", {}).get("recipe"), "started_utc": runs.get("meta", {}).get("started_utc"),
         "num_structures": len(rows), "noise_ceiling": quality["ranking"]["tau_noise_ceiling_seed_a_vs_b"],
         "stored_default": {"tau_fitness_full": quality["ranking"]["tau_fitness_full"],
                            "tau_neg_loss_full": quality["ranking"]["tau_neg_loss_full"]},
         "variants": [], "plain": {k.split("/")[1]: v for k, v in runs.items() if k.startswith("plain/")}}
  table = []
  for v in variants:
    entry = dict(v, **_variant_taus(v, rows, FLAGS.bootstrap_rounds))
    if default is not None and v["name"] != "default":
      for score, get in (("accuracy", lambda r: r["accuracy"]), ("neg_loss", lambda r: -r["loss"])):
        entry[f"tau_{score}_minus_default"] = _paired_tau_difference(
            [get(r) for r in v["ranked"]], [get(r) for r in default["ranked"]], y, FLAGS.bootstrap_rounds)
    plain = runs.get(f"plain/{v['steps']}")
    entry["plain_test_accuracy"] = plain["test_accuracy"] if plain else None
    out["variants"].append(entry)
    train = v.get("training") or {}
    table.append([v["name"] + (" (fashion_quality's net)" if train.get("reused") else ""), f"{v['steps']:,}",
                  f"{train['seconds'] / 60:.1f}" if train.get("seconds") else "-",
                  fmt(entry["tau_accuracy"]),
                  fmt(entry["tau_accuracy_minus_default"]) if "tau_accuracy_minus_default" in entry else "-",
                  fmt(entry["tau_neg_loss"]),
                  fmt(entry["tau_neg_loss_minus_default"]) if "tau_neg_loss_minus_default" in entry else "-",
                  f"{100 * v['full_width_test']['accuracy']:.2f}",
                  f"{100 * plain['test_accuracy']:.2f}" if plain else "-",
                  f"{entry['spread_spearman_fitness_vs_mflops']:.2f}"])
  nc = out["noise_ceiling"]
  sd = out["stored_default"]
  tables = []
  if table:
    tables.append(
        f"PruningNet variants on fashion_quality's {len(rows)} in-window structures (23.8-26.2% of the full FLOPs, "
        "each retrained with 2 seeds there): Kendall tau of the fitness on all 6,000 search images against the "
        "mean retrained test accuracy [bootstrap 95% CI]; \"- default\" is the paired bootstrap CI of the "
        "difference (structures resampled jointly). Full width: the variant's recalibrated accuracy on the "
        "10,000 test images vs the plain full-width small CNN trained the same steps (adam 0.003 cosine, batch "
        f"128). Spearman: fitness vs FLOPs over {len(variants[0]['spread'])} structures spread over the whole "
        "range (fashion_quality's spread set, search evaluator).\n\n" +
        _common.markdown_table(
            ["variant", "steps", "train min", "tau accuracy", "- default", "tau -loss", "- default",
             "full width test %", "plain, same steps %", "Spearman fitness vs FLOPs"], table) +
        f"\n\nNoise ceiling (retrained seed A vs seed B): {fmt(nc)}. fashion_quality's own default PruningNet "
        f"(same recipe, other process): tau accuracy {fmt(sd['tau_fitness_full'])}, -loss "
        f"{fmt(sd['tau_neg_loss_full'])}.")
  plain_rows = sorted(out["plain"].values(), key=lambda r: r["steps"])
  if plain_rows:
    tables.append("Plain full-width small CNN trained from scratch with the same optimizer recipe (adam 0.003 cosine, "
                  "batch 128, seed 0), test accuracy on the 10,000 t10k images: " + "; ".join(
                      f"{r['steps']:,} steps {100 * r['test_accuracy']:.2f}% ({r['seconds']:.0f} s at load "
                      f"{r['load_average'][0]:.1f})" for r in plain_rows) + ".")
  facts = runs.get("space_facts")
  if facts:
    out["space_facts"] = facts
    frow = []
    for setting, f in facts.items():
      u = f["uniform"]
      uni = (f"x{u['width_ratio']:.2f}: {100 * u['flops_ratio']:.1f}%, per layer "
             f"{'/'.join(f'{r:.2f}' for r in u['layer_width_ratios'].values())}" if "error" not in u else u["error"])
      trained = runs.get(f"space/{setting}")
      if setting == "default" and "quality" in quality:
        q = next((e for e in quality["quality"] if abs(e["ratio"] - fq.RANK_RATIO) < 1e-9), None)
        res = (f"fashion_quality: searched - uniform {100 * q['difference_mean']:+.2f} "
               f"[{100 * q['difference_ci95'][0]:+.2f}, {100 * q['difference_ci95'][1]:+.2f}] pt ({q['num_pairs']} "
               "seeds)" if q and q["num_pairs"] else "-")
      elif trained:
        d = [p["searched"] - p["uniform"] for p in trained["pairs"]]
        accs = lambda kind: "/".join(f"{100 * p[kind]:.2f}" for p in trained["pairs"])
        mean, low, high = stats_lib.t_interval95(d)
        res = (f"searched {trained['searched']['channels']} fitness {100 * trained['searched']['fitness']['accuracy']:.2f}"
               f"% vs uniform {100 * trained['uniform']['fitness']['accuracy']:.2f}%; retrained "
               f"{accs('searched')} vs {accs('uniform')} (seeds "
               f"{','.join(str(p['seed']) for p in trained['pairs'])}): difference {100 * mean:+.2f} pt"
               + (f" [{100 * low:+.2f}, {100 * high:+.2f}]" if len(d) > 1 else ""))
        out.setdefault("space_trained", {})[setting] = dict(trained, difference=[mean, low, high])
      else:
        res = "not trained (cheap facts only)"
      frow.append([setting, "x".join(str(c) for c in f["num_choices"]) + f" = {f['num_structures']:,}",
                   f"{100 * f['in_window_share']:.1f}%", f"{100 * f['smallest_flops_ratio']:.1f}%", uni, res])
    tables.append("Options that change the space (so the stored structures cannot be scored in it): choices per "
                  "gene, share of 4,000 random structures inside the 25% window [22.5, 25]%, the smallest "
                  "structure, the uniform baseline at 25%, and for the trained settings the search at 25% "
                  "(fitness on 6,000 search images) with its pick and the uniform one retrained, paired by seed\n\n"
                  + _common.markdown_table(["space", "choices per gene", "in window", "smallest", "uniform at 25%",
                                            "searched vs uniform"], frow))
  out["wall_seconds"] = runs.get("meta", {}).get("seconds", {})
  report.write(out, "\n\n".join(tables) if tables else "(no finished variants yet)",
               "PruningNet ablation on Fashion-MNIST (small CNN; fashion_quality's in-window ranking)")
  if out["variants"]:
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = [e["name"] for e in out["variants"]]
    for k, (score, color) in enumerate((("tau_accuracy", "C0"), ("tau_neg_loss", "C1"))):
      t = np.array([e[score] for e in out["variants"]])
      x = np.arange(len(names)) + (k - 0.5) * 0.3
      axes[0].errorbar(x, t[:, 0], yerr=[t[:, 0] - t[:, 1], t[:, 2] - t[:, 0]], fmt="o", color=color, capsize=4,
                       label="accuracy" if k == 0 else "-loss")
    axes[0].axhline(nc[0], color="grey", ls="--", lw=0.8, label="noise ceiling")
    axes[0].set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    axes[0].set_ylabel("Kendall tau vs retrained accuracy [95% CI]")
    axes[0].legend(fontsize=8)
    pn = [100 * e["full_width_test"]["accuracy"] for e in out["variants"]]
    pl = [100 * e["plain_test_accuracy"] if e["plain_test_accuracy"] else np.nan for e in out["variants"]]
    axes[1].bar(np.arange(len(names)) - 0.2, pn, 0.4, label="PruningNet, full width (recalibrated)")
    axes[1].bar(np.arange(len(names)) + 0.2, pl, 0.4, label="plain model, same steps")
    axes[1].set_ylim(min(pn + [v for v in pl if v == v]) - 3, 100)
    axes[1].set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    axes[1].set_ylabel("test accuracy (%)")
    axes[1].legend(fontsize=8)
    report.save_figure(fig)
  return out


def main(argv):
  del argv
  if FLAGS.model != "small_cnn":
    sys.exit(f"fashion_ablation.py: --model={FLAGS.model}: the ablation scores the small CNN's stored ranking "
             "(results/fashion_quality.json); leave --model at small_cnn")
  if FLAGS.quick:
    fq._apply_quick()   # pylint: disable=protected-access
    FLAGS.bootstrap_rounds = 200
  unknown = [v for v in FLAGS.variants if v not in VARIANTS] + [s for s in FLAGS.space_settings
                                                                 if s not in SPACE_SETTINGS or s == "default"]
  if unknown:
    sys.exit(f"fashion_ablation.py: unknown --variants/--space_settings {unknown}; the variants are "
             f"{list(VARIANTS)}, the space settings {list(SPACE_SETTINGS)[1:]}")
  os.makedirs(FLAGS.work_dir, exist_ok=True)
  state = fq.State(os.path.join(FLAGS.work_dir, "state.json"))
  ab = Ablation(state)
  meta = state.get("meta") or {"started_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "seconds": {}}
  meta["recipe"] = ab.bench.recipe()
  meta["command"] = _common.command_line()
  state.put("meta", meta)
  start = time.perf_counter()
  _log(f"{ab.bench.splits!r}; {len(ab.ranked)} stored structures, {len(ab.spread)} spread; variants "
       f"{FLAGS.variants}, space settings {FLAGS.space_settings}; {FLAGS.threads} TF threads")
  ab.space_facts()
  # The order: the plain model of the default budget (cheap), the 1x variants, the long variants, the space
  # settings, then the plain model of the long budget (the most expensive answer last: a cut-off run keeps the rest).
  plan = [("plain", FLAGS.pruningnet_epochs * ab.steps_per_epoch)]
  plan += [("variant", v) for v in FLAGS.variants if VARIANTS[v][1] == 1]
  plan += [("variant", v) for v in FLAGS.variants if VARIANTS[v][1] != 1]
  plan += [("space", s) for s in FLAGS.space_settings]
  if FLAGS.plain_long:
    plan += [("plain", VARIANTS[v][1] * FLAGS.pruningnet_epochs * ab.steps_per_epoch) for v in FLAGS.variants
             if VARIANTS[v][1] != 1]
  for i, (kind, what) in enumerate(plan):
    {"variant": ab.variant, "plain": ab.plain, "space": ab.space_setting}[kind](what)
    summarize(state)
    rest = plan[i + 1:]
    left = ab.remaining_seconds([w for k, w in rest if k == "variant" and not state.get(f"variant/{w}")],
                                [w for k, w in rest if k == "plain" and not state.get(f"plain/{w}")],
                                [w for k, w in rest if k == "space" and not state.get(f"space/{w}")])
    _log(f"done {i + 1}/{len(plan)} ({kind} {what}); about {left / 60:.0f} min left" if left is not None
         else f"done {i + 1}/{len(plan)} ({kind} {what})")
  meta = state.get("meta")
  meta["seconds"][f"run_{meta.get('runs', 0)}"] = time.perf_counter() - start
  meta["runs"] = meta.get("runs", 0) + 1
  meta["finished_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
  state.put("meta", meta)
  summarize(state)


if __name__ == "__main__":
  app.run(main)
