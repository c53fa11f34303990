"""Does the search beat the uniform width multiplier? Fashion-MNIST, paired seeds, confidence intervals.

The question of issue 14, asked so that the answer can be told from noise:

  search    One PruningNet of the small CNN trained for a budget in steps on a
            Fashion-MNIST training subset; evolutionary search at 10%, 25% and
            50% of the full FLOPs, each inside a FLOPs window [0.9 x limit,
            limit]; fitness = accuracy on part of the held-out search split
            with the loss as tie-break; the final top-k re-scored on the whole
            split. The uniform baseline is one width ratio for every layer,
            inside the same window (divisor 1, width grid 0.01).
  quality   Searched and uniform structures retrained from scratch with one
            recipe, `--seeds` seeds each, paired by seed: mean difference
            with a 95% t-interval. The full-width plain model with the same
            recipe is the ceiling.
  ranking   `--num_ranked` random structures inside a +-5% window at 25%
            FLOPs, each retrained with 2 seeds: Kendall tau of the
            PruningNet's fitness against the mean retrained accuracy (with a
            bootstrap CI), the noise ceiling (tau of seed A against seed B)
            and the tau of FLOPs itself inside the window.
  retest    The fitness's test-retest correlation: 50 in-window structures
            scored on two disjoint halves of the search split; plus Spearman
            of the fitness against FLOPs over a spread of structures (does
            the PruningNet's accuracy rise with FLOPs at all?).
  proxy     Search vs proxy: `--num_proxy` random in-window structures at 25%
            scored with the search's own fitness; where does the evolution's
            pick rank among them?

Compute is the constraint (2 shared cores): every finished run (one search,
one retraining) is appended to a JSON state file at once, so a cut-off run
keeps what it has and a rerun of the same command resumes. Four workers
share the work: `--worker=main` (PruningNet, searches, the even seeds of the
quality part), `--worker=quality` (the odd seeds, then it helps the ranking
from the other end), `--worker=ranking` (the ranking retrainings) and
`--worker=fitness` (what needs the PruningNet but no retraining: the ranked
structures' fitness, retest, hypernet, proxy). Each writes its own state
file and skips runs another worker finished; `--worker=summary` (also done at
the end of each) turns whatever exists into results/fashion_quality.json +
.png. `make bench-quality` starts all four, then the summary and report.py.

  python benchmarks/fashion_quality.py --worker=main &
  python benchmarks/fashion_quality.py --worker=quality &
  python benchmarks/fashion_quality.py --worker=ranking &
  python benchmarks/fashion_quality.py --worker=fitness; wait
  python benchmarks/fashion_quality.py --worker=summary

Needs Fashion-MNIST: `apt-get install -y dataset-fashion-mnist` (Debian
installs the idx files under /usr/share/datasets/fashion-mnist).
"""

import json
import os
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS

# The families: their PipelineConfig fields, the recipe defaults that differ from the flags' (applied when the
# flag is not given), and a description for the tables. Both use divisor 1 and a 0.01 width grid, so the
# uniform baseline can land inside every window.
MODELS = {
    "small_cnn": {
        "config": {"model": "small_cnn", "divisor": 1, "width_step": 0.01},
        "defaults": {},
        "description": "small_cnn (16-32-64-128, divisor 1, width grid 0.10:0.01:1.00)",
        "title": "small CNN",
    },
    "mobilenet_v2_demo": {
        "config": dict(_common.DEMO_MOBILENET_V2, divisor=1, width_step=0.01),
        "defaults": {"ratios": ["0.15", "0.25", "0.5"], "first_ratios": ["0.15", "0.25"], "pruningnet_epochs": 30, "retrain_epochs": 8, "num_ranked": 12, "num_retest": 30,
                     "num_proxy": 50},
        "description": "mobilenet_v2 x0.5, stage repeats 1,2,2,2,1,1,1, stride 32 (the `make demo` network; "
                       "divisor 1, width grid 0.30:0.01:1.00)",
        "title": "MobileNetV2 of `make demo`",
        # Width ratios from 0.3 put its smallest structure at 12.4% of the full FLOPs, so 15% replaces 10%.
    },
}
flags.DEFINE_enum("worker", "main", ["main", "quality", "ranking", "fitness", "proxy", "summary"],
                  "Which share of the work this process does (main: PruningNet, searches, even seeds; quality: odd "
                  "seeds; ranking: the in-window ranking, then retest and proxy; fitness: only the no-retraining "
                  "parts -- the ranked structures' fitness, retest, hypernet, proxy -- once the PruningNet exists).")
flags.DEFINE_enum("model", "small_cnn", sorted(MODELS), "Which family: small_cnn (4 convs) or mobilenet_v2_demo "
                 "(the `make demo` MobileNetV2: 10 blocks, width 0.5, stride 32, ratios from 0.3). Sets the defaults "
                 "of the recipe flags below that are not given, the work dir and the result name.")
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset spec (tf_metaprune.data.load_dataset).")
flags.DEFINE_integer("train_images", 10000, "Training images (a subset of the 54,000 left after the search split).")
flags.DEFINE_integer("batch_size", 128, "Batch size of every training.")
flags.DEFINE_integer("pruningnet_epochs", 20, "PruningNet epochs over the training subset (steps = epochs x batches).")
flags.DEFINE_integer("hidden_units", 8, "Generator hidden size (the pipeline default).")
flags.DEFINE_integer("retrain_epochs", 2, "Epochs of every retraining (searched, uniform, full, ranked).")
flags.DEFINE_list("ratios", ["0.1", "0.25", "0.5"], "FLOPs budgets, fractions of the full width.")
flags.DEFINE_float("window", 0.9, "Lower end of every FLOPs window, as a fraction of its limit.")
flags.DEFINE_integer("seeds", 5, "Retraining seeds of searched and uniform (paired by seed).")
flags.DEFINE_list("first_ratios", ["0.1", "0.25"], "Budgets whose retrainings run first (all seeds), the rest after.")
flags.DEFINE_integer("full_seeds", 2, "Retraining seeds of the full-width plain model.")
flags.DEFINE_integer("population_size", 12, "Evolution population.")
flags.DEFINE_integer("num_generations", 6, "Evolution generations.")
flags.DEFINE_integer("search_images", 2048, "Search-split images the evolution scores each candidate on.")
flags.DEFINE_integer("calibration_batches", 4, "BN recalibration batches per candidate during the search.")
flags.DEFINE_integer("rescore_top_k", 6, "Final top-k re-scored on the whole search split (4x calibration).")
flags.DEFINE_integer("num_ranked", 20, "Structures of the ranking part (in a +-5% window at 25% FLOPs).")
flags.DEFINE_integer("num_retest", 50, "In-window structures of the test-retest part.")
flags.DEFINE_integer("num_spread", 30, "Structures spread over the FLOPs range (fitness vs FLOPs).")
flags.DEFINE_integer("num_proxy", 100, "In-window structures scored for the search-vs-proxy check.")
flags.DEFINE_integer("threads", 1, "TensorFlow intra-op threads of this process (two workers x 1 = 2 cores).")
flags.DEFINE_string("work_dir", None, "Where the PruningNet and state files go (default runs/fashion_quality for the "
                    "small CNN, runs/fashion_quality_<model> for the others).")
flags.DEFINE_string("output_dir", _common.RESULTS_DIR, "Where fashion_quality.json / .png go.")
flags.DEFINE_bool("quick", False, "Smoke run: tiny everything (minutes); writes fashion_quality_quick.*.")

RANK_RATIO, RANK_HALF_WIDTH = 0.25, 0.05 * 0.25   # +-5% of the 25% budget: 23.75-26.25% of the full FLOPs


def _base_name():
  return "fashion_quality" if FLAGS.model == "small_cnn" else f"fashion_quality_{FLAGS.model}"


def result_name():
  return _base_name() + ("_quick" if FLAGS.quick else "")


def _apply_model_defaults():
  for name, value in MODELS[FLAGS.model]["defaults"].items():
    if not FLAGS[name].present:
      FLAGS[name].value = value
  if FLAGS.work_dir is None:
    FLAGS.work_dir = "runs/" + _base_name()


def _apply_quick():
  for name, value in (("train_images", 512), ("pruningnet_epochs", 1), ("retrain_epochs", 1), ("seeds", 2),
                      ("full_seeds", 1), ("population_size", 6), ("num_generations", 2), ("search_images", 256),
                      ("rescore_top_k", 3), ("num_ranked", 4), ("num_retest", 6), ("num_spread", 6),
                      ("num_proxy", 6), ("ratios", ["0.25"]), ("work_dir", FLAGS.work_dir + "_quick")):
    FLAGS[name].value = value


class State:
  """A JSON dict of finished runs, rewritten atomically after every run (resume = skip what is there)."""

  def __init__(self, path):
    from tf_metaprune import io as io_lib  # pylint: disable=g-import-not-at-top
    self.io = io_lib
    self.path = path
    self.runs = io_lib.read_json(path, "benchmark state")["runs"] if os.path.exists(path) else {}

  def get(self, key):
    return self.runs.get(key)

  def put(self, key, value):
    self.runs[key] = value
    self.io.write_json_atomic(self.path, {"format": "fashion_quality.State", "runs": self.runs})
    return value


class Bench:
  """Data, space, recipe and the cached building blocks of both workers."""

  def __init__(self):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(1, FLAGS.threads))
    from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
    self.pipeline = pipeline
    self.config = pipeline.PipelineConfig(
        dataset=FLAGS.dataset, batch_size=FLAGS.batch_size, max_examples=FLAGS.train_images,
        **MODELS[FLAGS.model]["config"], hidden_units=FLAGS.hidden_units, pruningnet_epochs=FLAGS.pruningnet_epochs,
        population_size=FLAGS.population_size, num_generations=FLAGS.num_generations,
        calibration_batches=FLAGS.calibration_batches, search_images=FLAGS.search_images,
        rescore_top_k=FLAGS.rescore_top_k, retrain_epochs=FLAGS.retrain_epochs)
    try:
      self.splits = pipeline.load_data(self.config)
    except ValueError as e:
      sys.exit(f"fashion_quality.py: {e}")
    self.space = pipeline.build_space(self.config, self.splits.input_shape, self.splits.num_classes)
    self.full_mflops = self.space.mflops(self.space.largest())
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    self.net_path = os.path.join(FLAGS.work_dir, "pruningnet.keras")
    self._net = None
    self._evaluators = {}

  def recipe(self):
    c, n = self.config, self.splits.num_examples
    steps = n["train"] // c.batch_size
    return {"dataset": c.dataset, "images": dict(n), "model": MODELS[FLAGS.model]["description"], "full_mflops": self.full_mflops, "full_params": self.space.params(self.space.largest()),
            "pruningnet": f"{c.pruningnet_epochs} epochs x {steps} steps = {c.pruningnet_epochs * steps} steps, "
                          f"batch {c.batch_size}, adam {c.pruningnet_learning_rate} cosine, hidden {c.hidden_units}, "
                          f"bn {c.bn_mode}, random structure per step",
            "search": f"evolution {c.population_size} x {c.num_generations} generations, fitness = accuracy on "
                      f"{c.search_images} search-split images (loss tie-break) after BN recalibration on "
                      f"{c.calibration_batches} x {c.batch_size} train images; top-{c.rescore_top_k} re-scored on "
                      f"all {n['search']} search images with {4 * c.calibration_batches} calibration batches",
            "window": f"[{FLAGS.window} x limit, limit]",
            "retrain": f"{c.retrain_epochs} epochs x {steps} steps, batch {c.batch_size}, adam "
                       f"{c.retrain_learning_rate} cosine, from scratch; test = the 10,000 t10k images",
            "train_steps_per_epoch": steps}

  # ---- the PruningNet ----------------------------------------------------------------------------
  def net(self, wait=False):
    import keras  # pylint: disable=g-import-not-at-top
    if self._net is None:
      while wait and not os.path.exists(self.net_path):
        time.sleep(20)
      if os.path.exists(self.net_path):
        self._net = keras.saving.load_model(self.net_path)
    return self._net

  def train_net(self, state):
    if state.get("pruningnet") and os.path.exists(self.net_path):
      return self.net()
    start = time.perf_counter()
    net, history = self.pipeline.train_pruning_net(self.config, self.splits, self.space,
                                                   os.path.join(FLAGS.work_dir, "pruningnet_run"), verbose=0)
    self.pipeline.save_model_atomic(net, self.net_path)
    state.put("pruningnet", {"seconds": time.perf_counter() - start, "load_average": list(os.getloadavg()),
                             "final_train_accuracy": float(history["accuracy"][-1]),
                             "final_train_loss": float(history["loss"][-1]),
                             "steps": int(len(history["loss"]) * (self.splits.num_examples["train"] //
                                                                  self.config.batch_size))})
    print(f"PruningNet: {state.get('pruningnet')}", flush=True)
    self._net = net
    return net

  # ---- evaluators --------------------------------------------------------------------------------
  def evaluator(self, which):
    """'search' (the search's fitness), 'full' (the re-score's), 'half_a' / 'half_b' (disjoint halves)."""
    from tf_metaprune import calibration  # pylint: disable=g-import-not-at-top
    if which not in self._evaluators:
      net = self.net(wait=True)
      if which in ("search", "full"):
        self._evaluators[which] = self.pipeline._evaluator(net, self.splits, self.config,  # pylint: disable=protected-access
                                                           rescore=(which == "full"))
      else:
        n = -(-self.splits.num_examples["search"] // self.config.batch_size) // 2
        part = self.splits.search.take(n) if which == "half_a" else self.splits.search.skip(n)
        data = calibration.EvaluationData.from_dataset(part, num_calibration_batches=self.config.calibration_batches,
                                                       calibration_dataset=self.splits.calibration)
        self._evaluators[which] = calibration.Evaluator(net, data)
    return self._evaluators[which]

  def scores(self, which, structure):
    acc, loss = self.evaluator(which).scores(structure)
    return {"accuracy": acc, "loss": loss}

  # ---- building blocks ---------------------------------------------------------------------------
  def budget(self, ratio, window=None):
    return self.pipeline.build_budget(self.space, flops_ratio=ratio,
                                      min_flops_ratio=(window or FLAGS.window) * ratio)

  def in_window(self, ratio, num, seed, low=None, high=None):
    """`num` distinct random structures (uniform per gene, rejection) with FLOPs in [low, high] x full."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    low = FLAGS.window * ratio if low is None else low
    high = ratio if high is None else high
    rng = np.random.default_rng(seed)
    found = {}
    for _ in range(2000 * num):
      s = self.space.random(seed=rng)
      if low <= self.space.mflops(s) / self.full_mflops <= high:
        found[tuple(s.choices)] = s
        if len(found) >= num:
          break
    return list(found.values())

  def spread(self, num, seed):
    import numpy as np  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(seed)
    pool = {tuple(s.choices): s for s in (self.space.random(seed=rng) for _ in range(50 * num))}
    ordered = sorted(pool.values(), key=self.space.mflops)
    return [ordered[i] for i in np.unique(np.linspace(0, len(ordered) - 1, num).round().astype(int))]

  def describe(self, s):
    from tf_metaprune import search as search_lib  # pylint: disable=g-import-not-at-top
    return {"choices": list(s.choices), "channels": self.space.channels(s), "mflops": self.space.mflops(s),
            "flops_ratio": self.space.mflops(s) / self.full_mflops, "params": self.space.params(s),
            "layer_width_ratios": search_lib.layer_width_ratios(self.space, s)}

  def retrain(self, state, key, structure, seed):
    """Test accuracy of `structure` retrained with the recipe and `seed` (cached in `state` under `key`)."""
    done = state.get(key) or _load_states().get(key)   # done by this worker, or by another one
    if done is not None:
      return done
    start = time.perf_counter()
    # No checkpoints (output_dir None): a retraining is short, and the state file already resumes per run.
    _, info = self.pipeline.retrain(self.config.replace(seed=seed), self.splits, self.space, structure, None,
                                    verbose=0)
    row = {"choices": list(structure.choices), "seed": seed, "test_accuracy": info["test_accuracy"],
           "test_loss": info["test_loss"], "mflops": info["mflops"], "seconds": time.perf_counter() - start,
           "load_average": list(os.getloadavg())}
    print(f"  {key}: {info['mflops']:.3f} MFLOPs test {100 * info['test_accuracy']:.2f}% "
          f"({row['seconds']:.0f} s, load {row['load_average'][0]:.1f})", flush=True)
    return state.put(key, row)


# ---- the main worker -------------------------------------------------------------------------------


def part_retest(bench, state):
  if state.get("retest"):
    return
  start = time.perf_counter()
  rows = []
  for s in bench.in_window(RANK_RATIO, FLAGS.num_retest, seed=101):
    rows.append(dict(bench.describe(s), half_a=bench.scores("half_a", s), half_b=bench.scores("half_b", s)))
  spread = [dict(bench.describe(s), fitness=bench.scores("search", s)) for s in bench.spread(FLAGS.num_spread, 7)]
  full = dict(bench.describe(bench.space.largest()), fitness=bench.scores("full", bench.space.largest()))
  state.put("retest", {"rows": rows, "spread": spread, "full_width": full, "seconds": time.perf_counter() - start,
                       "half_images": [bench.evaluator("half_a").data.num_eval_images,
                                       bench.evaluator("half_b").data.num_eval_images]})


def part_hypernet(bench, state):
  """What the hypernetwork does: ||generated delta|| / ||base kernel|| per layer at a few width encodings."""
  if _load_states().get("hypernet"):
    return
  import numpy as np  # pylint: disable=g-import-not-at-top
  net = bench.net(wait=True)
  rows = []
  for layer in net.generator_layers:
    if not getattr(layer, "hidden_units", 0):
      continue
    base = np.asarray(layer.base_kernel.numpy())
    size = int(layer.gen_hidden_kernel.shape[0])
    ratios = {}
    for r in (0.25, 0.5, 1.0):
      delta = np.asarray(layer.generated_kernel(np.full([size], r, np.float32)).numpy()) - base
      ratios[str(r)] = float(np.linalg.norm(delta) / max(np.linalg.norm(base), 1e-12))
    rows.append({"layer": layer.name, "encoding_size": size, "delta_over_base": ratios})
  state.put("hypernet", {"rows": rows, "hidden_units": FLAGS.hidden_units})


def part_search(bench, state, ratio):
  from tf_metaprune import search as search_lib  # pylint: disable=g-import-not-at-top
  key = f"search/{ratio}"
  if state.get(key):
    return state.get(key)
  net = bench.net()
  budget = bench.budget(ratio)
  c = bench.config
  start = time.perf_counter()
  evolution = search_lib.EvolutionConfig(population_size=c.population_size, num_generations=c.num_generations,
                                         seed=0, top_k=min(10, c.population_size))
  found = search_lib.evolutionary(net, bench.evaluator("search"), budget, evolution, verbose=0,
                                  state_path=os.path.join(FLAGS.work_dir, f"search_state_{ratio}.json"))
  picked = search_lib.rescore(found, bench.evaluator("full"), top_k=c.rescore_top_k)
  base = search_lib.uniform(net, bench.evaluator("search"), budget)
  base_full = bench.scores("full", base.best_structure)
  inside = [bench.budget(ratio).is_feasible(bench.space, cand.structure) for cand in found.candidates]
  row = {"ratio": ratio, "budget": budget.get_config(), "seconds": time.perf_counter() - start,
         "evaluations": found.num_evaluations, "all_candidates_in_window": bool(all(inside)),
         "searched": dict(bench.describe(picked.best_structure), search_fitness=picked.extra["search_best"],
                          rescored={"accuracy": picked.best.accuracy, "loss": picked.best.loss}),
         "evolution_pick": dict(bench.describe(found.best_structure),
                                fitness={"accuracy": found.best.accuracy, "loss": found.best.loss}),
         "rescored_top_k": picked.extra["rescored"],
         "uniform": dict(bench.describe(base.best_structure), width_ratio=base.extra["width_ratio"],
                         fitness={"accuracy": base.best.accuracy, "loss": base.best.loss}, rescored=base_full),
         "history": found.history, "candidates": [c_.to_dict() for c_ in found.candidates]}
  print(f"search {100 * ratio:.0f}%: searched {row['searched']['flops_ratio']:.3f} of full, re-scored "
        f"{100 * picked.best.accuracy:.2f}% | uniform x{base.extra['width_ratio']:.2f} "
        f"{row['uniform']['flops_ratio']:.3f}, {100 * base_full['accuracy']:.2f}% ({row['seconds']:.0f} s)", flush=True)
  return state.put(key, row)


def part_proxy(bench, state):
  if state.get("proxy") or not state.get(f"search/{RANK_RATIO}"):
    return
  # (the ranking worker holds a copy of the main worker's search result; it is not written back)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tf_metaprune import space as space_lib  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  found = state.get(f"search/{RANK_RATIO}")
  pool = bench.in_window(RANK_RATIO, FLAGS.num_proxy, seed=202)
  rows = [dict(choices=list(s.choices), mflops=bench.space.mflops(s), **bench.scores("search", s)) for s in pool]
  pick = space_lib.Structure(found["evolution_pick"]["choices"])
  pick_fit = found["evolution_pick"]["fitness"]
  better = sum(1 for r in rows if (r["accuracy"], -r["loss"]) > (pick_fit["accuracy"], -pick_fit["loss"]))
  seen = {tuple(c["choices"]) for c in found["candidates"]}
  state.put("proxy", {"rows": rows, "pick": list(pick.choices), "pick_fitness": pick_fit,
                      "random_better_than_pick": better, "num_random": len(rows),
                      "best_random_accuracy": float(max(r["accuracy"] for r in rows)),
                      "median_random_accuracy": float(np.median([r["accuracy"] for r in rows])),
                      "evaluations_of_search": len(seen), "seconds": time.perf_counter() - start})


def _retrain_quality(bench, state, parity, searches, between=None):
  """The quality retrainings of seeds with `seed % 2 == parity`: first budgets seed-major, `between()`, the rest."""
  from tf_metaprune import space as space_lib  # pylint: disable=g-import-not-at-top
  ratios = [float(r) for r in FLAGS.ratios]
  first = [r for r in ratios if r in [float(x) for x in FLAGS.first_ratios]]
  for group in (first, [r for r in ratios if r not in first]):
    if group is not first and between is not None:
      between()
    for seed in range(parity, FLAGS.seeds, 2):   # seed-major: a cut-off run still has complete pairs
      for ratio in group:
        found = searches(ratio)
        for kind in ("searched", "uniform"):
          bench.retrain(state, f"quality/{ratio}/{kind}/{seed}", space_lib.Structure(found[kind]["choices"]), seed)
      if group is first and seed < FLAGS.full_seeds:
        bench.retrain(state, f"full/{seed}", bench.space.largest(), seed)


def worker_main(bench, state):
  bench.train_net(state)
  ratios = [float(r) for r in FLAGS.ratios]
  order = sorted(ratios, key=lambda r: (r != RANK_RATIO, r))   # 25% first: the proxy check needs it
  for ratio in order:
    part_search(bench, state, ratio)
  _retrain_quality(bench, state, 0, lambda ratio: state.get(f"search/{ratio}"))
  if not _load_states().get("retest"):
    part_retest(bench, state)
  if not _load_states().get("proxy"):
    part_proxy(bench, state)
  summarize()


def worker_quality(bench, state):
  def searches(ratio):
    while True:
      found = _load_states().get(f"search/{ratio}")
      if found:
        return found
      time.sleep(20)
  # After the first budgets, help the ranking worker from the other end; the other budgets come last.
  _retrain_quality(bench, state, 1, searches, between=lambda: _retrain_ranked(bench, state, reverse=True))
  summarize()


def _ranked_structures(bench):
  return bench.in_window(RANK_RATIO, FLAGS.num_ranked, seed=303, low=RANK_RATIO - RANK_HALF_WIDTH,
                         high=RANK_RATIO + RANK_HALF_WIDTH)


def _retrain_ranked(bench, state, reverse=False):
  """Both seeds of every ranked structure, structure by structure (a cut-off keeps complete pairs)."""
  structures = list(enumerate(_ranked_structures(bench)))
  for i, s in (reversed(structures) if reverse else structures):
    for seed in (0, 1):
      bench.retrain(state, f"ranked/{i}/{seed}", s, 100 + seed)


def _fitness_parts(bench, state, merged_only):
  """The ranked structures' fitness, retest, hypernet and proxy: what needs the PruningNet but no retraining.

  `merged_only`: skip a ranked structure whose fitness any worker has recorded (else only this worker's).
  """
  seen = _load_states() if merged_only else state.runs
  for i, s in enumerate(_ranked_structures(bench)):
    if not seen.get(f"ranked_fitness/{i}"):
      state.put(f"ranked_fitness/{i}", dict(bench.describe(s), search=bench.scores("search", s),
                                            full=bench.scores("full", s)))
  if not _load_states().get("retest"):
    part_retest(bench, state)
  part_hypernet(bench, state)
  _proxy_when_searched(bench, state)


def _proxy_when_searched(bench, state):
  main_search = _load_states().get(f"search/{RANK_RATIO}")
  if main_search and not _load_states().get("proxy"):
    state.runs.setdefault(f"search/{RANK_RATIO}", main_search)   # read-only copy for part_proxy
    part_proxy(bench, state)


def worker_fitness(bench, state):
  """The parts that need the PruningNet but no retraining, so a cut-off ranking still has its fitness."""
  _fitness_parts(bench, state, merged_only=True)


def worker_proxy(bench, state):
  """Only the search-vs-proxy check (a spare process can run it beside the fitness worker)."""
  _proxy_when_searched(bench, state)


def worker_ranking(bench, state):
  _retrain_ranked(bench, state)
  _fitness_parts(bench, state, merged_only=False)
  summarize()


# ---- the summary -----------------------------------------------------------------------------------


def _versus_random(rows, mean_acc, res):
  """Where the 25% searched and uniform structures' retrained means fall among the random in-window ones."""
  entry = next((e for e in rows if abs(e["ratio"] - RANK_RATIO) < 1e-9 and e["num_pairs"] > 0), None)
  if entry is None:
    return ""
  text = []
  for kind in ("searched", "uniform"):
    acc = sum(p[kind] for p in entry["pairs"]) / len(entry["pairs"])
    above = sum(1 for a in mean_acc if a > acc)
    res[f"random_above_{kind}"] = above
    text.append(f"{kind} {100 * acc:.2f}% ({above} of {len(mean_acc)} random structures above it)")
  return (" Retrained with the same recipe (other seeds), the 25% structures of the first table score: " +
          "; ".join(text) + ".")


def _load_states():
  runs = {}
  for worker in ("main", "quality", "ranking", "fitness", "proxy"):
    path = os.path.join(FLAGS.work_dir, f"state_{worker}.json")
    if os.path.exists(path):
      with open(path) as f:
        runs.update(json.load(f)["runs"])
  return runs


def summarize():
  """Turns whatever runs exist into results/fashion_quality.json + .png (partial results say so)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from scipy import stats  # pylint: disable=g-import-not-at-top
  from tf_metaprune import stats as stats_lib  # pylint: disable=g-import-not-at-top

  def _tau_ci(a, b):   # Kendall tau and a percentile bootstrap 95% CI over the structures
    return stats_lib.bootstrap_ci95(stats_lib.kendall_tau, a, b)

  runs = _load_states()
  name = result_name()
  report = _common.Report(name, FLAGS.output_dir)
  meta = runs.get("meta", {})
  tables, out = [], {"recipe": meta.get("recipe"), "started_utc": meta.get("started_utc"),
                     "pruningnet": runs.get("pruningnet")}
  # Quality: paired by seed.
  n_search = f"{(meta.get('recipe') or {}).get('images', {}).get('search', 0):,}"
  full_accs = [runs[k]["test_accuracy"] for k in sorted(runs) if k.startswith("full/")]
  rows, qrows = [], []
  for ratio in sorted({float(k.split("/")[1]) for k in runs if k.startswith("search/")}):
    found = runs[f"search/{ratio}"]
    pairs = []
    for seed in range(100):
      a, b = runs.get(f"quality/{ratio}/searched/{seed}"), runs.get(f"quality/{ratio}/uniform/{seed}")
      if a and b:
        pairs.append((seed, a["test_accuracy"], b["test_accuracy"]))
    diffs = [a - b for _, a, b in pairs]
    mean, low, high = stats_lib.t_interval95(diffs)
    entry = {"ratio": ratio, "pairs": [{"seed": s, "searched": a, "uniform": b} for s, a, b in pairs],
             "difference_mean": mean, "difference_ci95": [low, high], "num_pairs": len(pairs),
             "searched": {k: found["searched"][k] for k in ("choices", "channels", "mflops", "flops_ratio", "params",
                                                              "layer_width_ratios")},
             "uniform": {k: found["uniform"][k] for k in ("choices", "channels", "mflops", "flops_ratio", "params",
                                                            "layer_width_ratios", "width_ratio")},
             "searched_fitness": found["searched"]["rescored"], "uniform_fitness": found["uniform"]["rescored"],
             "all_candidates_in_window": found["all_candidates_in_window"], "search_seconds": found["seconds"],
             "evaluations": found["evaluations"], "budget": found["budget"]}
    rows.append(entry)
    sa = [a for _, a, _ in pairs]
    ua = [b for _, _, b in pairs]
    lw = entry["uniform"]["layer_width_ratios"]
    qrows.append([f"{100 * ratio:.0f}% [{100 * FLAGS.window * ratio:.1f}, {100 * ratio:.0f}]",
                  f"{100 * entry['searched']['flops_ratio']:.1f}% {entry['searched']['channels']}",
                  f"{100 * entry['uniform']['flops_ratio']:.1f}% x{entry['uniform']['width_ratio']:.2f} "
                  f"({'/'.join(f'{v:.2f}' for v in lw.values())})",
                  f"{100 * entry['searched_fitness']['accuracy']:.2f} / {100 * entry['uniform_fitness']['accuracy']:.2f}",
                  f"{100 * np.mean(sa):.2f}" if sa else "-", f"{100 * np.mean(ua):.2f}" if ua else "-",
                  f"{100 * mean:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]" if len(pairs) > 1 else "-",
                  str(len(pairs))])
  out["quality"] = rows
  fm = stats_lib.t_interval95(full_accs)
  out["full_width"] = {"test_accuracies": full_accs, "mean": fm[0], "ci95": [fm[1], fm[2]]}
  if qrows:
    tables.append("Searched vs uniform, retrained with one recipe, paired by seed (test accuracy %, 10,000 t10k "
                  "images; difference = searched - uniform, mean and 95% t-interval)\n\n" + _common.markdown_table(
                      ["budget (window, % of full FLOPs)", "searched: FLOPs, channels",
                       "uniform: FLOPs, ratio (per-layer ratios)", "PruningNet fitness searched / uniform (all "
                       f"{n_search} search images)", "searched", "uniform", "difference [95% CI] (pt)", "seeds"], qrows) +
                  (f"\n\nFull-width plain model, same recipe: {100 * fm[0]:.2f}% "
                   f"({len(full_accs)} seeds: {', '.join(f'{100 * a:.2f}' for a in full_accs)})." if full_accs else ""))
  # Ranking.
  ranked = sorted({int(k.split("/")[1]) for k in runs if k.startswith("ranked/")})
  complete = [i for i in ranked if runs.get(f"ranked/{i}/0") and runs.get(f"ranked/{i}/1")
              and runs.get(f"ranked_fitness/{i}")]
  if len(complete) >= 4:
    acc_a = [runs[f"ranked/{i}/0"]["test_accuracy"] for i in complete]
    acc_b = [runs[f"ranked/{i}/1"]["test_accuracy"] for i in complete]
    mean_acc = [(a + b) / 2 for a, b in zip(acc_a, acc_b)]
    fit = {w: [runs[f"ranked_fitness/{i}"][w]["accuracy"] for i in complete] for w in ("search", "full")}
    neg_loss = [-runs[f"ranked_fitness/{i}"]["full"]["loss"] for i in complete]
    mflops = [runs[f"ranked_fitness/{i}"]["mflops"] for i in complete]
    res = {"num_structures": len(complete), "window": [RANK_RATIO - RANK_HALF_WIDTH, RANK_RATIO + RANK_HALF_WIDTH],
           "tau_fitness_search": _tau_ci(fit["search"], mean_acc), "tau_fitness_full": _tau_ci(fit["full"], mean_acc),
           "tau_neg_loss_full": _tau_ci(neg_loss, mean_acc), "tau_noise_ceiling_seed_a_vs_b": _tau_ci(acc_a, acc_b),
           "tau_mflops": _tau_ci(mflops, mean_acc),
           "retrained_spread_pt": [100 * min(mean_acc), 100 * max(mean_acc)],
           "seed_sd_pt": float(100 * np.std(np.subtract(acc_a, acc_b), ddof=1) / np.sqrt(2)),
           "rows": [dict(runs[f"ranked_fitness/{i}"], seed_a=a, seed_b=b) for i, a, b in zip(complete, acc_a, acc_b)]}
    out["ranking"] = res
    fmt = lambda t: f"{t[0]:+.2f} [{t[1]:+.2f}, {t[2]:+.2f}]"
    tables.append(f"Does the PruningNet rank structures inside a window? {len(complete)} random structures with "
                  f"{100 * res['window'][0]:.1f}-{100 * res['window'][1]:.1f}% of the full FLOPs, each retrained "
                  "with 2 seeds (Kendall tau against the mean retrained test accuracy, bootstrap 95% CI)\n\n" +
                  _common.markdown_table(
                      ["ranker", "Kendall tau [95% CI]"],
                      [[f"PruningNet fitness (accuracy, search evaluator: {FLAGS.search_images:,} images)", fmt(res["tau_fitness_search"])],
                       [f"PruningNet fitness (accuracy, all {n_search} search images)", fmt(res["tau_fitness_full"])],
                       [f"PruningNet -loss (all {n_search} search images)", fmt(res["tau_neg_loss_full"])],
                       ["MFLOPs (inside the window)", fmt(res["tau_mflops"])],
                       ["noise ceiling: retrained seed A vs seed B", fmt(res["tau_noise_ceiling_seed_a_vs_b"])]]) +
                  f"\n\nRetrained accuracies span {res['retrained_spread_pt'][0]:.2f}-{res['retrained_spread_pt'][1]:.2f}%"
                  f"; one retraining's seed-to-seed SD {res['seed_sd_pt']:.2f} pt." + _versus_random(rows, mean_acc, res))
  # Retest and spread.
  rt = runs.get("retest")
  if rt:
    a = [r["half_a"]["accuracy"] for r in rt["rows"]]
    b = [r["half_b"]["accuracy"] for r in rt["rows"]]
    la = [r["half_a"]["loss"] for r in rt["rows"]]
    lb = [r["half_b"]["loss"] for r in rt["rows"]]
    sp_f = [r["fitness"]["accuracy"] for r in rt["spread"]]
    sp_m = [r["mflops"] for r in rt["spread"]]
    out["retest"] = {"num_structures": len(a), "half_images": rt["half_images"],
                     "pearson_accuracy": float(stats.pearsonr(a, b)[0]),
                     "spearman_accuracy": float(stats.spearmanr(a, b)[0]),
                     "pearson_loss": float(stats.pearsonr(la, lb)[0]),
                     "spearman_loss": float(stats.spearmanr(la, lb)[0]),
                     "accuracy_range_pt": [100 * min(a + b), 100 * max(a + b)],
                     "spread_spearman_fitness_vs_mflops": float(stats.spearmanr(sp_f, sp_m)[0]),
                     "spread_mflops_range": [min(sp_m), max(sp_m)], "full_width_fitness": rt["full_width"]["fitness"],
                     "rows": rt["rows"], "spread": rt["spread"]}
    r_ = out["retest"]
    tables.append(f"Fitness test-retest: {len(a)} structures in the 25% window [22.5, 25]%, scored on two disjoint "
                  f"halves of the search split ({rt['half_images'][0]} / {rt['half_images'][1]} images)\n\n" +
                  _common.markdown_table(["score", "Pearson r", "Spearman rho", "range over the structures"],
                                         [["accuracy", f"{r_['pearson_accuracy']:.2f}", f"{r_['spearman_accuracy']:.2f}",
                                           f"{r_['accuracy_range_pt'][0]:.2f}-{r_['accuracy_range_pt'][1]:.2f}%"],
                                          ["loss", f"{r_['pearson_loss']:.2f}", f"{r_['spearman_loss']:.2f}", ""]]) +
                  f"\n\nOver {len(sp_f)} structures spread over {min(sp_m):.2f}-{max(sp_m):.2f} MFLOPs, Spearman of "
                  f"the fitness against FLOPs: {r_['spread_spearman_fitness_vs_mflops']:.2f}; the full width scores "
                  f"{100 * r_['full_width_fitness']['accuracy']:.2f}% on the search split.")
  hn = runs.get("hypernet")
  if hn:
    out["hypernet"] = hn
    tables.append("What the hypernetwork does (hidden_units " + str(hn["hidden_units"]) + "): ||generated delta|| / "
                  "||base kernel|| per layer, all encoding entries at one width ratio\n\n" + _common.markdown_table(
                      ["layer", "ratio 0.25", "ratio 0.5", "ratio 1.0"],
                      [[r["layer"]] + [f"{r['delta_over_base'][k]:.3f}" for k in ("0.25", "0.5", "1.0")]
                       for r in hn["rows"]]))
  px = runs.get("proxy")
  if px:
    out["proxy"] = {k: v for k, v in px.items()}
    tables.append(f"Search vs proxy (25%): of {px['num_random']} random structures in the window, "
                  f"{px['random_better_than_pick']} score above the evolution's pick on the search fitness "
                  f"(pick {100 * px['pick_fitness']['accuracy']:.2f}%, best random "
                  f"{100 * px['best_random_accuracy']:.2f}%, median random {100 * px['median_random_accuracy']:.2f}%; "
                  f"the search evaluated {px['evaluations_of_search']} structures).")
  out["complete"] = {"quality_pairs": sum(r["num_pairs"] for r in rows), "ranked_structures": len(complete)}
  out["wall_seconds"] = {k: v for k, v in meta.get("seconds", {}).items()}
  title = (f"Searched vs uniform on Fashion-MNIST ({MODELS[FLAGS.model]['title']}; "
           f"{meta.get('recipe', {}).get('images', '?')} images)")
  out["model"] = FLAGS.model
  report.write(out, "\n\n".join(tables) if tables else "(no finished runs yet)", title)
  if rows:
    plt = _common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k, e in enumerate(rows):
      d = [100 * (p["searched"] - p["uniform"]) for p in e["pairs"]]
      axes[0].scatter([k] * len(d), d, color="grey", s=12)
      if len(d) > 1:
        axes[0].errorbar([k], [100 * e["difference_mean"]], yerr=[[100 * (e["difference_mean"] - e["difference_ci95"][0])],
                                                                  [100 * (e["difference_ci95"][1] - e["difference_mean"])]],
                         fmt="o", color="C0", capsize=5)
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set_xticks(range(len(rows)), [f"{100 * e['ratio']:.0f}% FLOPs" for e in rows])
    axes[0].set_ylabel("searched - uniform test acc. (pt), per seed + 95% CI")
    if "ranking" in out:
      rr = out["ranking"]["rows"]
      axes[1].scatter([100 * r["full"]["accuracy"] for r in rr], [50 * (r["seed_a"] + r["seed_b"]) for r in rr],
                      c=[r["mflops"] for r in rr], cmap="viridis")
      axes[1].set_xlabel(f"PruningNet fitness (%, {n_search} search images)")
      axes[1].set_ylabel("retrained test acc. (%, mean of 2 seeds)")
      axes[1].set_title(f"in-window ranking: tau {out['ranking']['tau_fitness_full'][0]:+.2f}", fontsize=9)
    fig.suptitle(title, fontsize=9)
    report.save_figure(fig)
  return out


def main(argv):
  del argv
  _apply_model_defaults()
  if FLAGS.quick:
    _apply_quick()
  if FLAGS.worker == "summary":
    summarize()
    return
  bench = Bench()
  state = State(os.path.join(FLAGS.work_dir, f"state_{FLAGS.worker}.json"))
  meta_state = state if FLAGS.worker == "main" else None
  start = time.perf_counter()
  if meta_state is not None:
    meta = state.get("meta") or {"started_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "seconds": {}}
    meta["recipe"] = bench.recipe()
    meta["command"] = _common.command_line()
    state.put("meta", meta)
  print(f"{FLAGS.worker}: {bench.splits!r}, full width {bench.full_mflops:.3f} MFLOPs; load {os.getloadavg()}",
        flush=True)
  {"main": worker_main, "quality": worker_quality, "ranking": worker_ranking,
   "fitness": worker_fitness, "proxy": worker_proxy}[FLAGS.worker](bench, state)
  if meta_state is not None:
    meta = state.get("meta")
    meta["seconds"][f"main_run_{meta.get('runs', 0)}"] = time.perf_counter() - start
    meta["runs"] = meta.get("runs", 0) + 1
    meta["finished_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    state.put("meta", meta)
  else:
    state.put(f"{FLAGS.worker}_seconds", time.perf_counter() - start)
  summarize()


if __name__ == "__main__":
  app.run(main)
