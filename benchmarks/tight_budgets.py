"""Where channel search can win: tight FLOPs budgets, a protocol that resolves half a point (issue 24).

On the full Fashion-MNIST training split (60,000 images: 5,000 held out as
the search split, 500 per class; the other 55,000 train; the 10,000 t10k
images test), for each setting `network:start:budget` of `--settings`
(default: the `make demo` MobileNetV2 on its finer grid -- per-layer width
ratios 0.10-1.00, divisor 4, so 3.8% of the full FLOPs is reachable -- at
10%, 5% and 25% FLOPs, and the small CNN at 10% as the control):

* **start "trained"** (the user has a trained model): MetaPruning from the
  trained weights (`metaprune`: a PruningNet started from the L1-reordered
  weights, the evolution, the pick fine-tuned from the trained weights)
  against L1 pruning at uniform width (`l1_uniform`, Li et al.) and global
  magnitude pruning (`global_magnitude`), all fine-tuned with one recipe
  (`--finetune_epochs`, Adam `--finetune_learning_rate` cosine, BN momentum
  0.9). The headline comparison is `metaprune-l1_uniform`.
* **start "scratch"**: the searched structure of a PruningNet trained from
  scratch (`searched`) against the true uniform structure (`uniform`: one
  width ratio for every layer, the largest inside the FLOPs window), both
  retrained from fresh weights with the recipe that trained the user's model
  (`--train_epochs`, Adam `--train_learning_rate` cosine). Headline:
  `searched-uniform`.

Every budget is a FLOPs window [0.9 x limit, limit] (the repository's
default), for searched and baseline structures alike.

The protocol (item 1 of the issue):

* **Converged retraining, measured.** The user's model is the full-width
  network trained `--train_epochs` from scratch (seed 0): it is also the
  scratch start's full width under the retraining recipe. `train_convergence`
  trains the same network twice as long; the recipe counts as converged when
  the longer run is at most 1 pt better. For the trained start,
  `finetune_convergence` fine-tunes the L1-uniform structure twice as long
  (seed 0), the same test. Both are recorded in `tight_budgets_protocol.json`
  (with "converged": true/false); a negative result only counts where they hold.
* **Independent search runs.** `--search_runs` (2) PruningNets per start and
  kind, each with its own seed (weights, structure sampling, data order) and
  its own evolution; seed s of the final trainings uses search run
  s mod `--search_runs`, so the search's own variance is inside the interval.
* **Seeds sized from the measured paired SD.** After `--min_seeds` (3) pairs,
  a comparison needs the smallest n with t(n-1) x SD / sqrt(n) <= `--target_half_width_pt` (0.5),
  at most `--max_seeds`; its seeds run until it has them. Every difference is
  paired by seed: both methods of seed s see the same data order and (from
  scratch) the same initial-weight seed. Interval: the repository's one
  Student-t interval (`tf_metaprune.stats.paired_interval95`).

The proxy fixes (item 3), each paired against today's default on the same
seeds (`<method>_<variant>-<method>`, and against the baseline):

* `trust`: the evolution with `trust_region` (`--trust_region`, 0.15): every
  gene's width ratio within that distance of the uniform structure's
  (`tfmp.search.EvolutionConfig(trust_region=...)`).
* `sandwich`: the PruningNet trained with the sandwich rule and in-place
  distillation (`PruningNet(sampling="sandwich", distill=True)`, 4 structures
  a step: largest, smallest, 2 random; the same number of steps, about 4x
  the time; `PipelineConfig(sampling="sandwich")` in the pipeline).
* `topk`: the final pick among the default search's best `--topk` (5) by a
  `--topk_steps` (200)-step fine-tune of each from its starting weights (the
  trained ones, or the PruningNet's generated ones from scratch), scored on
  the search split (`tfmp.search.finetune_pick`).

Resuming. Every finished run is one small JSON file under
`benchmarks/results/tight_budgets/<network>/` (committed, so a later session
on another machine resumes from them); the models, PruningNets and search
states live in `--workdir` (runs/tight_budgets, not committed). A rerun skips
every stored run. The user's model's weights are committed too
(`<network>/original.weights.h5`, about 2 MB), since every trained-start run
depends on that very model; without them (and without the work folder) it
is retrained and must reproduce the stored test accuracy within 0.1 pt, else
the script stops and says so. A PruningNet missing from the work folder is
trained again (only searches not yet stored need it). The settings that
define a network's runs (data, recipes) are in its `protocol.json`; a rerun
with other settings is refused (use another `--results_name`). After every
run `tight_budgets.json` (the comparisons, the schema of issue 24 item 5) and
`tight_budgets_protocol.json` are rewritten; `--write_readme` renders the
table into benchmarks/README.md. Progress lines give the time per run so far
and an estimate of what is left.

The variants run only at `--variant_budgets` (10%); elsewhere the headline and
global magnitude. Cost, estimated (not measured) from the plain `make demo`
MobileNetV2 step here (about 0.1 s at batch 128 on the 2 idle cores; a
PruningNet step about 1.5x, a sandwich step about 4x): per trained-start
budget 1-2.5 h, per scratch budget 2-8 h (8-epoch retrainings on 55,000
images, 6-16 seeds), about 20-30 h for the default settings. Under
`nice -n 19` on a machine busy with other work it gets almost no CPU.

Run it from a checkout that does not change while it runs (e.g. `git archive
HEAD | tar -x -C DIR`, with DIR/benchmarks/results linked to the repository's
and `--workdir` pointing into it): TensorFlow's autograph reads a function's
source again when it traces it, so a `git merge` under a running benchmark
once made a trace of the new calibration.py meet the old one.

  nice -n 19 python benchmarks/tight_budgets.py                # resumable; see the cost above
  python benchmarks/tight_budgets.py --stop_at_utc=23:30       # start no run after 23:30 UTC
  python benchmarks/tight_budgets.py --summarize_only --write_readme
  python benchmarks/tight_budgets.py --quick                   # smoke run, figures meaningless
"""

import json
import math
import os
import shutil
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
DEFAULT_SETTINGS = ("mbv2:trained:0.1,mbv2:scratch:0.1,mbv2:trained:0.05,mbv2:trained:0.25,mbv2:scratch:0.05,"
                    "mbv2:scratch:0.25,cnn:scratch:0.1,cnn:trained:0.1")
flags.DEFINE_list("settings", DEFAULT_SETTINGS.split(","), "network:start:budget, in the order they are run "
                  "(network mbv2 = the make-demo MobileNetV2 on the finer grid, cnn = the small CNN; start trained "
                  "or scratch; budget a fraction of the full FLOPs).")
flags.DEFINE_list("variants", ["trust", "topk", "sandwich"], "Proxy fixes measured against the default, in this "
                  "order after each setting's headline comparison (empty: none).")
flags.DEFINE_list("variant_budgets", ["0.1"], "Budgets whose settings also measure the --variants (the others: the "
                  "headline comparisons and global magnitude only), to keep the compute in hours.")
flags.DEFINE_string("data_dir", "/usr/share/datasets/fashion-mnist", "Folder of the Fashion-MNIST idx .gz files.")
flags.DEFINE_integer("search_examples", 5000, "Of the 60,000 training images, held out as the search split.")
flags.DEFINE_integer("search_images", 2048, "Search-split images each evolution candidate is scored on.")
flags.DEFINE_integer("batch_size", 128, "Batch size of every training.")
flags.DEFINE_integer("train_epochs", 8, "Epochs training the user's model and every structure from scratch.")
flags.DEFINE_float("train_learning_rate", 3e-3, "Peak Adam learning rate of those (cosine).")
flags.DEFINE_integer("finetune_epochs", 2, "Epochs fine-tuning a structure from the trained weights.")
flags.DEFINE_float("finetune_learning_rate", 1e-3, "Peak Adam learning rate of the fine-tuning (cosine).")
flags.DEFINE_integer("pn_trained_epochs", 2, "PruningNet epochs from the trained weights (Adam 3e-3 cosine).")
flags.DEFINE_integer("pn_scratch_epochs", 8, "PruningNet epochs from scratch (Adam 3e-3 cosine).")
flags.DEFINE_integer("hidden_units", 8, "Generator hidden size (the pipeline's default).")
flags.DEFINE_integer("population_size", 24, "Evolution population.")
flags.DEFINE_integer("num_generations", 8, "Evolution generations.")
flags.DEFINE_float("trust_region", 0.15, "Variant trust: every gene's width ratio within this of the uniform one.")
flags.DEFINE_integer("topk", 5, "Variant topk: candidates fine-tuned for the final pick.")
flags.DEFINE_integer("topk_steps", 200, "Variant topk: steps of each candidate's short fine-tune.")
flags.DEFINE_integer("search_runs", 2, "Independent PruningNet + search runs per start (seed s uses run s mod this).")
flags.DEFINE_integer("min_seeds", 3, "Pairs before the paired SD sizes a comparison's seeds.")
flags.DEFINE_integer("max_seeds", 16, "At most this many seeds per comparison.")
flags.DEFINE_float("target_half_width_pt", 0.5, "Wanted 95% CI half width of a paired difference, in points.")
flags.DEFINE_string("stop_at_utc", None, "HH:MM (UTC): start no run after this time; the summary is written.")
flags.DEFINE_string("workdir", None, "Models, PruningNets, search states (default runs/tight_budgets[_quick]).")
flags.DEFINE_string("results_name", "tight_budgets", "Results: benchmarks/results/<name>.json, <name>_protocol.json "
                    "and the per-run files in benchmarks/results/<name>/.")
flags.DEFINE_bool("quick", False, "Smoke run: tiny data, 1-epoch trainings, 2 seeds; results_name gets _quick.")
flags.DEFINE_bool("summarize_only", False, "Only rebuild the results files from the stored runs (no training).")
flags.DEFINE_bool("write_readme", False, "Render the comparison table into benchmarks/README.md.")

HEADLINE = {"trained": ("metaprune", "l1_uniform"), "scratch": ("searched", "uniform")}
OTHER_BASELINES = {"trained": ("global_magnitude",), "scratch": ()}
VARIANTS = ("trust", "topk", "sandwich")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "benchmarks", "README.md")


def log(msg):
  print(f"[{time.strftime('%H:%M:%S', time.gmtime())} load {os.getloadavg()[0]:.1f}] {msg}", flush=True)


def parse_settings(values):
  """[(network, start, budget)] of --settings, checked."""
  out = []
  for v in values:
    parts = v.split(":")
    if len(parts) != 3 or parts[0] not in ("mbv2", "cnn") or parts[1] not in HEADLINE:
      raise app.UsageError(f"--settings entry {v!r}: write network:start:budget with network mbv2 or cnn and start "
                           "trained or scratch, e.g. mbv2:trained:0.1")
    try:
      r = float(parts[2])
    except ValueError:
      r = -1.0
    if not 0 < r <= 1:
      raise app.UsageError(f"--settings entry {v!r}: the budget {parts[2]!r} must be a fraction of the full FLOPs "
                           "in (0, 1], e.g. 0.1")
    out.append((parts[0], parts[1], r))
  return out


def variant_method(start, variant):
  return f"{HEADLINE[start][0]}_{variant}"


def variants_at(r):
  """The variants measured at budget `r` (--variants where r is one of --variant_budgets)."""
  return list(FLAGS.variants) if any(abs(r - float(v)) < 1e-9 for v in FLAGS.variant_budgets) else []


def comparison_names(start, r):
  """(headline, others): the (a, b) method pairs of a start at budget r, the headline first."""
  a, b = HEADLINE[start]
  others = [(a, o) for o in OTHER_BASELINES[start]]
  for v in variants_at(r):
    others += [(variant_method(start, v), a), (variant_method(start, v), b)]
  return (a, b), others


def seeds_needed(diffs):
  """Seeds a paired comparison needs for the target half width, from its measured SD (min_seeds before that).

  The smallest n in [min_seeds, max_seeds] with t(n-1) * SD / sqrt(n) <= target_half_width_pt; max_seeds if none.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tf_metaprune import stats  # pylint: disable=g-import-not-at-top  (the one t-interval and its quantile)
  if len(diffs) < max(2, FLAGS.min_seeds):
    return FLAGS.min_seeds
  sd = float(np.std(diffs, ddof=1))
  for n in range(FLAGS.min_seeds, FLAGS.max_seeds + 1):
    if stats.t_quantile975(n - 1) * sd / math.sqrt(n) <= FLAGS.target_half_width_pt:
      return n
  return FLAGS.max_seeds


class Runs:
  """One JSON file per finished run under results/<name>/<network>/; a rerun skips what is there."""

  def __init__(self, root):
    self.root = root

  def path(self, key):
    return os.path.join(self.root, key + ".json")

  def get(self, key):
    p = self.path(key)
    if not os.path.exists(p):
      return None
    with open(p) as f:
      return json.load(f)

  def put(self, key, value):
    value = dict(value, load_average=[round(x, 2) for x in os.getloadavg()],
                 finished_utc=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()))
    p = self.path(key)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p + ".tmp", "w") as f:
      json.dump(_common.jsonable(value), f, indent=1, sort_keys=True)
    os.replace(p + ".tmp", p)
    return value

  def all(self):
    out = {}
    for dirpath, _, files in os.walk(self.root):
      for name in files:
        if name.endswith(".json") and name != "protocol.json":
          key = os.path.relpath(os.path.join(dirpath, name), self.root)[:-len(".json")]
          with open(os.path.join(dirpath, name)) as f:
            out[key] = json.load(f)
    return out


def final_key(start, r, method, seed):
  return f"{start}_{r:g}/{method}_seed{seed}"


# ---------------------------------------------------------------------------------------------
# Summaries (no TensorFlow needed).


def comparisons(runs_by_network, settings):
  """The comparisons of issue 24 item 5, in --settings order, headline first."""
  from tf_metaprune import stats  # pylint: disable=g-import-not-at-top  (the one t-interval)
  out = []
  for network, start, r in settings:
    runs = runs_by_network.get(network, {})
    headline, others = comparison_names(start, r)
    for a, b in [headline] + others:
      pairs = []
      for seed in range(FLAGS.max_seeds if not FLAGS.quick else 2):
        ra, rb = runs.get(final_key(start, r, a, seed)), runs.get(final_key(start, r, b, seed))
        if ra and rb:
          pairs.append({"seed": seed, "a": 100 * ra["test_accuracy"], "b": 100 * rb["test_accuracy"],
                        "search_run": ra.get("search_run", rb.get("search_run"))})
      if not pairs:
        continue
      mean, lo, hi = stats.paired_interval95([p["a"] for p in pairs], [p["b"] for p in pairs])
      out.append({"name": f"{a}-{b}", "start": start, "budget": r, "a": a, "b": b, "diff_mean_pt": mean,
                  "ci95_pt": [lo, hi], "n": len(pairs), "per_seed": pairs, "network": network})
  return out


def results_schema(comps):
  """The results file: exactly issue 24's keys (network goes into the name's budget context via 'a'/'b')."""
  keys = ("name", "start", "budget", "a", "b", "diff_mean_pt", "ci95_pt", "n", "per_seed")
  rows = []
  for c in comps:
    row = {k: c[k] for k in keys}
    if c["network"] != "mbv2":   # the control network is named in the comparison's name
      row["name"] = f"{c['network']}:{c['name']}"
    rows.append(row)
  return {"comparisons": rows}


def _fmt_ci(c):
  lo, hi = c["ci95_pt"]
  if c["n"] < 2 or lo != lo:
    return f"{c['diff_mean_pt']:+.2f} (one seed)"
  mark = " *" if lo > 0 or hi < 0 else ""
  return f"{c['diff_mean_pt']:+.2f} [{lo:+.2f}, {hi:+.2f}]{mark}"


def table_md(comps, protocol):
  test_images = next((v["data"]["test_examples"] for v in protocol.get("identity", {}).values()), 10000)
  rows = []
  for c in comps:
    need = protocol.get("seeds_needed", {}).get(f"{c['network']}:{c['start']}:{c['budget']:g}:{c['name']}")
    rows.append([{"mbv2": "MobileNetV2 (make demo)", "cnn": "small CNN"}[c["network"]], c["start"],
                 f"{100 * c['budget']:g}%", f"{c['a']} - {c['b']}",
                 f"{sum(p['a'] for p in c['per_seed']) / c['n']:.2f} / {sum(p['b'] for p in c['per_seed']) / c['n']:.2f}",
                 _fmt_ci(c), str(c["n"]) + ("" if need is None else f" of {need}")])
  conv = []
  for key, v in sorted(protocol.get("convergence", {}).items()):
    conv.append(f"{key}: {v['recipe']} {v['short_pt']:.2f}%, twice as long {v['long_pt']:.2f}% "
                f"({'converged' if v['converged'] else 'NOT converged'}: {v['long_pt'] - v['short_pt']:+.2f} pt)")
  return (_common.markdown_table(["network", "start", "FLOPs budget", "a - b", "test acc. a / b, %",
                                  "difference, pt [95% CI]", "seeds (of needed)"], rows) +
          f"\n\nPaired by seed (test accuracy on {test_images:,} t10k images; mean and 95% Student-t interval; * = the "
          "interval excludes 0; \"of needed\": the seeds the measured paired SD asks for a half width of "
          f"{FLAGS.target_half_width_pt:g} pt).\n\n" + ("Convergence of the recipes: " + "; ".join(conv) + "."
                                                         if conv else "Convergence of the recipes: not measured yet."))


def write_readme(table, protocol):
  start, end = "<!-- tight_budgets:start -->", "<!-- tight_budgets:end -->"
  body = (f"Measured {protocol.get('first_run_utc', '?')} - {protocol.get('last_run_utc', '?')} UTC on "
          f"{protocol.get('machine', {}).get('device', '?')} (shared with other jobs, under `nice -n 19`). Command: "
          f"`{protocol.get('command', 'python benchmarks/tight_budgets.py')}`; every run is a JSON file in "
          "`benchmarks/results/tight_budgets/`, the comparisons are `benchmarks/results/tight_budgets.json`, the "
          "protocol's measurements (convergence, seeds needed, PruningNets, picks, times) "
          "`tight_budgets_protocol.json`.\n\n" + table)
  text = open(README).read() if os.path.exists(README) else "# Benchmarks\n"
  if start in text:
    text = text[:text.index(start) + len(start)] + "\n" + body + "\n" + text[text.index(end):]
  else:
    text = (text.rstrip("\n") + "\n\n## Tight budgets: searched vs uniform, MetaPruning vs L1 (issue 24)\n\n"
            "`benchmarks/tight_budgets.py` (its docstring has the protocol).\n\n" + start + "\n" + body + "\n" +
            end + "\n")
  with open(README, "w") as f:
    f.write(text)


def summarize(results_dir, settings, protocol):
  runs_by_network = {n: Runs(os.path.join(results_dir, FLAGS.results_name, n)).all() for n in ("mbv2", "cnn")}
  comps = comparisons(runs_by_network, settings)
  need = {}
  for c in comps:
    need[f"{c['network']}:{c['start']}:{c['budget']:g}:{c['name']}"] = seeds_needed(
        [p["a"] - p["b"] for p in c["per_seed"]])
  protocol["seeds_needed"] = need
  out = os.path.join(results_dir, FLAGS.results_name + ".json")
  with open(out + ".tmp", "w") as f:
    json.dump(_common.jsonable(results_schema(comps)), f, indent=1)
  os.replace(out + ".tmp", out)
  table = table_md(comps, protocol)
  protocol["table_md"] = table
  pout = os.path.join(results_dir, FLAGS.results_name + "_protocol.json")
  with open(pout + ".tmp", "w") as f:
    json.dump(_common.jsonable(protocol), f, indent=1, sort_keys=True)
  os.replace(pout + ".tmp", pout)
  if FLAGS.write_readme:
    write_readme(table, protocol)
  return comps, table


def load_protocol(results_dir):
  p = os.path.join(results_dir, FLAGS.results_name + "_protocol.json")
  if os.path.exists(p):
    with open(p) as f:
      return json.load(f)
  return {}


# ---------------------------------------------------------------------------------------------
# The compute.


class StopNow(Exception):
  """--stop_at_utc reached: no new run is started."""


def _stop_time():
  if not FLAGS.stop_at_utc:
    return None
  try:
    hh, mm = (int(x) for x in FLAGS.stop_at_utc.split(":"))
  except ValueError:
    raise app.UsageError(f"--stop_at_utc={FLAGS.stop_at_utc!r}: write HH:MM in UTC, e.g. 23:30") from None
  now = time.gmtime()
  stop = time.mktime((now.tm_year, now.tm_mon, now.tm_mday, hh, mm, 0, 0, 0, -1)) - time.timezone
  return stop if stop > time.time() - 12 * 3600 else stop + 24 * 3600


class Bench:
  """The data, the networks and every kind of run, each stored as it finishes."""

  def __init__(self, results_dir, protocol):
    import keras  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
    self.keras, self.np, self.tf, self.tfmp = keras, np, tf, tfmp
    self.results_dir = results_dir
    self.protocol = protocol
    self.stop = _stop_time()
    self.started = time.time()
    self.splits = self._load_splits()
    self.networks = {}
    self.runs_done = 0

  # ---- data --------------------------------------------------------------------------------
  def _load_splits(self):
    np, tf = self.np, self.tf
    from tf_metaprune import data as data_lib  # pylint: disable=g-import-not-at-top
    d = FLAGS.data_dir
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"]
    missing = [n for n in names if not os.path.exists(os.path.join(d, n))]
    if missing:
      raise app.UsageError(f"--data_dir={d!r} lacks {missing}; install them with `apt-get install -y "
                           "dataset-fashion-mnist` or point --data_dir at the idx .gz files")
    x, y, xt, yt = (_common.read_idx(os.path.join(d, n)) for n in names)
    y, yt = y.astype(np.int32), yt.astype(np.int32)
    rng = np.random.default_rng(0)
    per_class = FLAGS.search_examples // 10
    train_idx, search_idx = [], []
    for c in range(10):
      idx = rng.permutation(np.flatnonzero(y == c))
      search_idx += list(idx[:per_class])
      train_idx += list(idx[per_class:])
    train_idx, search_idx = rng.permutation(train_idx), np.array(search_idx)
    if FLAGS.quick:
      train_idx, search_idx, xt, yt = train_idx[:1280], search_idx[:256], xt[:512], yt[:512]

    def arrays(images, labels):
      return images[..., None].astype(np.float32) / 255.0, labels

    xtr, ytr = arrays(x[train_idx], y[train_idx])
    xs, ys = arrays(x[search_idx], y[search_idx])
    xte, yte = arrays(xt, yt)
    b = FLAGS.batch_size

    def make_train(seed=0):
      return (tf.data.Dataset.from_tensor_slices((xtr, ytr)).shuffle(len(xtr), seed=seed, reshuffle_each_iteration=True)
              .batch(b, drop_remainder=True).prefetch(tf.data.AUTOTUNE))

    def fixed(xa, ya):
      return tf.data.Dataset.from_tensor_slices((xa, ya)).batch(b).prefetch(tf.data.AUTOTUNE)

    config = {"dataset": "fashion_mnist (idx files of --data_dir)", "train_examples": len(xtr),
              "search_examples": len(xs), "test_examples": len(xte), "batch_size": b, "split_seed": 0}
    return data_lib.DatasetSplits(
        train=make_train(), search=fixed(xs, ys), test=fixed(xte, yte), num_classes=10, input_shape=(28, 28, 1),
        num_examples={"train": len(xtr), "search": len(xs), "test": len(xte)}, name="fashion_mnist",
        config=config, calibration=fixed(xtr[:8 * b], ytr[:8 * b]), make_train=make_train)

  # ---- bookkeeping -------------------------------------------------------------------------
  def check_time(self):
    if self.stop is not None and time.time() >= self.stop:
      raise StopNow()

  def workdir(self, network, name):
    """A path in the work folder of `network` (the folder is made)."""
    os.makedirs(os.path.join(FLAGS.workdir, network), exist_ok=True)
    return os.path.join(FLAGS.workdir, network, name)

  def estimate(self, runs, kind):
    """Mean seconds of the stored runs of `kind` (None before the first)."""
    secs = [v["seconds"] for k, v in runs.all().items() if v.get("kind") == kind and v.get("seconds") is not None]
    return None if not secs else sum(secs) / len(secs)

  def announce(self, net, key, kind, left=None):
    est = self.estimate(net["runs"], kind)
    msg = f"{net['name']}/{key} ({kind}" + ("" if est is None else f", about {est / 60:.1f} min") + ")"
    if left is not None and est is not None:
      msg += f"; this comparison needs about {left} more such runs, {left * est / 60:.0f} min"
    eta = ""
    if getattr(self, "settings", None):
      count, minutes = self.plan_left(self.settings)
      eta = f"; plan left: {count} final trainings, about {minutes / 60:.1f} h (wall, searches not counted)"
    log(f"run {self.runs_done + 1}: {msg}; {(time.time() - self.started) / 60:.0f} min so far{eta}")

  def fit(self, model, data, epochs, lr, checkpoint_dir=None):
    """The one training recipe; with `checkpoint_dir` it checkpoints every epoch and an interrupted run resumes."""
    self.tfmp.training.fit(model, data, epochs=epochs, learning_rate=lr, optimizer="adam", verbose=0,
                           bn_data=self.splits.calibration, output_dir=checkpoint_dir)
    if checkpoint_dir is not None:
      shutil.rmtree(checkpoint_dir, ignore_errors=True)   # finished: the result is stored, the epochs are not needed

  def test_accuracy(self, model):
    return float(model.evaluate(self.splits.test, verbose=0, return_dict=True)["accuracy"])

  # ---- networks ----------------------------------------------------------------------------
  def identity(self, network):
    return {"network": network, "data": self.splits.get_config(),
            "train": f"{FLAGS.train_epochs} epochs Adam {FLAGS.train_learning_rate:g} cosine, batch {FLAGS.batch_size}",
            "finetune": f"{FLAGS.finetune_epochs} epochs Adam {FLAGS.finetune_learning_rate:g} cosine, BN momentum 0.9",
            "pruningnet": f"hidden {FLAGS.hidden_units}, Adam 3e-3 cosine, {FLAGS.pn_trained_epochs} epochs from the "
                          f"trained weights, {FLAGS.pn_scratch_epochs} from scratch",
            "search": f"evolution {FLAGS.population_size} x {FLAGS.num_generations} generations, fitness on "
                      f"{FLAGS.search_images} search images, 4 calibration batches, window [0.9 x limit, limit]",
            "variants": {"trust_region": FLAGS.trust_region, "topk": FLAGS.topk, "topk_steps": FLAGS.topk_steps,
                         "sandwich": "4 structures a step, in-place distillation"},
            "search_runs": FLAGS.search_runs}

  def network(self, name):
    if name in self.networks:
      return self.networks[name]
    keras, tfmp = self.keras, self.tfmp
    from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
    from tf_metaprune import pretrained  # pylint: disable=g-import-not-at-top
    runs = Runs(os.path.join(self.results_dir, FLAGS.results_name, name))
    ident = self.identity(name)
    self.protocol.setdefault("identity", {})[name] = ident
    stored = runs.get("protocol")
    if stored is None:
      runs.put("protocol", ident)
    elif {k: v for k, v in stored.items() if k in ident} != ident:
      diff = sorted(k for k in ident if stored.get(k) != ident[k])
      raise app.UsageError(f"{runs.path('protocol')} was made with other settings ({', '.join(diff)}); rerun with "
                           "those settings to resume, or pass another --results_name to start new results")
    if name == "mbv2":
      config = pipeline.PipelineConfig(**dict(_common.DEMO_MOBILENET_V2, min_width_ratio=0.1, divisor=4))
      space0 = pipeline.build_space(config, (28, 28, 1), 10)
    else:
      space0 = tfmp.models.small_cnn((28, 28, 1), 10)
    ratios = pipeline.width_ratios(0.1, 0.03)
    path = self.workdir(name, "original.keras")
    # The user's model's weights are committed beside its runs (about 2 MB): every trained-start run depends on
    # this very model, so another machine resumes with it instead of retraining a slightly different one.
    weights = runs.path("original")[:-len(".json")] + ".weights.h5"
    stored = runs.get("original")
    if not os.path.exists(path) and os.path.exists(weights):
      model = tfmp.rebuild(space0, space0.largest(), name=f"user_{name}", bn_momentum=0.9)
      model.load_weights(weights)
      _save_atomic(model, path)
      log(f"{name} original: the committed weights {weights}")
    if not os.path.exists(path):
      self.check_time()
      net_stub = {"name": name, "runs": runs}
      self.announce(net_stub, "original", "train")
      keras.utils.set_random_seed(0)
      model = tfmp.rebuild(space0, space0.largest(), name=f"user_{name}", bn_momentum=0.9)
      t0, c0 = time.perf_counter(), time.process_time()
      self.fit(model, self.splits.make_train(0), FLAGS.train_epochs, FLAGS.train_learning_rate,
               self.workdir(name, "original_fit"))
      seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
      acc = self.test_accuracy(model)
      if stored is not None and abs(100 * (acc - stored["test_accuracy"])) > 0.1:
        raise app.UsageError(
            f"the stored runs of {runs.root} were made with a user's model of test accuracy "
            f"{100 * stored['test_accuracy']:.2f}%; retrained here it scores {100 * acc:.2f}%. Copy "
            f"{os.path.dirname(path)} from the machine that made them, or pass another --results_name")
      # Killed anywhere in here, a rerun resumes: the weights first (atomic), then the record, then the model.
      _save_atomic(model, weights, weights_only=True)
      if stored is None:
        stored = runs.put("original", {"kind": "train", "test_accuracy": acc, "seconds": seconds, "cpu_seconds": cpu,
                                       "epochs": FLAGS.train_epochs, "mflops": tfmp.count_mflops(model),
                                       "params": model.count_params()})
      _save_atomic(model, path)
      self.runs_done += 1
      log(f"{name} original: {100 * acc:.2f}% ({seconds:.0f} s)")
    model = keras.saving.load_model(path)
    if not os.path.exists(weights):
      _save_atomic(model, weights, weights_only=True)
    model.compile(loss=tfmp.training.SparseCrossentropyWithSmoothing(), metrics=["accuracy"])
    if stored is None:   # killed between the weights and the record: the record, without the time it took
      runs.put("original", {"kind": "train", "test_accuracy": self.test_accuracy(model), "seconds": None,
                            "epochs": FLAGS.train_epochs, "mflops": tfmp.count_mflops(model),
                            "params": model.count_params()})
    trained = pretrained.TrainedModel(model, width_ratios=ratios, divisor=4)
    self.networks[name] = {"name": name, "runs": runs, "model": model, "trained": trained, "space": trained.space,
                           "nets": {}, "evaluators": {}}
    return self.networks[name]

  def budget(self, net, r):
    return self.tfmp.FlopsBudget.from_ratio(net["space"], r, min_ratio=0.9 * r)

  # ---- PruningNets and searches -----------------------------------------------------------
  def pruning_net(self, net, start, kind, j):
    """The PruningNet of (start, kind, run j), trained once and stored."""
    keras, tfmp = self.keras, self.tfmp
    key = f"{start}/pn_{kind}_run{j}"
    if key in net["nets"]:
      return net["nets"][key]
    path = self.workdir(net["name"], f"{start}_pn_{kind}_run{j}.keras")
    if os.path.exists(path):
      pn = keras.saving.load_model(path)
      if net["runs"].get(key) is None:   # killed between the save and the record: the record, without its time
        net["runs"].put(key, {"kind": f"pruningnet_{start}_{kind}", "seconds": None,
                              "full_width_search_accuracy": self.evaluator(net, pn, key).accuracy(
                                  net["space"].largest())})
    else:
      self.check_time()
      self.announce(net, key, f"pruningnet_{start}_{kind}")
      keras.utils.set_random_seed(100 + j)
      kwargs = dict(hidden_units=FLAGS.hidden_units, seed=j)
      if kind == "sandwich":
        kwargs.update(sampling="sandwich", structures_per_step=4, distill=True)
      pn = net["trained"].pruning_net(**kwargs) if start == "trained" else tfmp.PruningNet(net["space"], **kwargs)
      epochs = FLAGS.pn_trained_epochs if start == "trained" else FLAGS.pn_scratch_epochs
      t0 = time.perf_counter()
      fit_dir = self.workdir(net["name"], f"{start}_pn_{kind}_run{j}_fit")   # every epoch: an interruption resumes
      tfmp.training.fit(pn, self.splits.make_train(200 + j), epochs=epochs, learning_rate=3e-3, optimizer="adam",
                        verbose=0, output_dir=fit_dir)
      seconds = time.perf_counter() - t0
      _save_atomic(pn, path)
      shutil.rmtree(fit_dir, ignore_errors=True)
      ev = self.evaluator(net, pn, key)
      full = ev.accuracy(net["space"].largest())
      net["runs"].put(key, {"kind": f"pruningnet_{start}_{kind}", "seconds": seconds, "epochs": epochs,
                            "steps": epochs * int(self.splits.train.cardinality()),
                            "full_width_search_accuracy": full, "sampling": kwargs.get("sampling", "random")})
      self.runs_done += 1
      log(f"{net['name']}/{key}: {seconds:.0f} s, full width {100 * full:.2f}% on the search split")
    net["nets"][key] = pn
    return pn

  def evaluator(self, net, pn, key):
    if key not in net["evaluators"]:
      tfmp = self.tfmp
      batches = max(1, FLAGS.search_images // FLAGS.batch_size)
      net["evaluators"][key] = tfmp.Evaluator(pn, tfmp.EvaluationData.from_dataset(
          self.splits.search.take(batches), num_calibration_batches=4, calibration_dataset=self.splits.calibration))
    return net["evaluators"][key]

  def search(self, net, start, r, variant, j):
    """The stored pick of (start, budget, variant, run j): {"choices", "top_k", ...}."""
    tfmp = self.tfmp
    key = f"{start}_{r:g}/search_{variant}_run{j}"
    found = net["runs"].get(key)
    if found is not None:
      return found
    if variant == "topk":
      base = self.search(net, start, r, "default", j)
      self.check_time()
      self.announce(net, key, f"topk_{start}")
      pn = self.pruning_net(net, start, "default", j) if start == "scratch" else None
      result = _result_of(tfmp, net["space"], base)
      if start == "trained":
        build = lambda s: net["trained"].rebuild(s, bn_momentum=0.9)   # pylint: disable=unnecessary-lambda-assignment
      else:
        build = lambda s: tfmp.rebuild(pn, s, bn_momentum=0.9)   # pylint: disable=unnecessary-lambda-assignment
      t0 = time.perf_counter()
      picked = tfmp.search.finetune_pick(result, build, self.splits.make_train(300 + j), self.splits.search,
                                         top_k=FLAGS.topk, steps=FLAGS.topk_steps,
                                         learning_rate=FLAGS.finetune_learning_rate, seed=j)
      seconds = time.perf_counter() - t0
      out = {"kind": f"topk_{start}", "choices": list(picked.best.choices), "seconds": seconds,
             "mflops": picked.best.mflops, "rows": picked.extra["finetune_pick"],
             "same_as_default": list(picked.best.choices) == base["choices"]}
    else:
      kind = "sandwich" if variant == "sandwich" else "default"
      pn = self.pruning_net(net, start, kind, j)
      evaluator = self.evaluator(net, pn, f"{start}/pn_{kind}_run{j}")
      self.check_time()
      self.announce(net, key, "search")
      config = tfmp.search.EvolutionConfig(
          population_size=FLAGS.population_size, num_generations=FLAGS.num_generations,
          top_k=min(10, FLAGS.population_size // 2), seed=j,
          trust_region=FLAGS.trust_region if variant == "trust" else None)
      t0 = time.perf_counter()
      found_r = tfmp.search.evolutionary(pn, evaluator, self.budget(net, r), config, verbose=0,
                                         state_path=self.workdir(net["name"], f"{start}_{r:g}_search_{variant}_run{j}"
                                                                 ".state.json"))
      seconds = time.perf_counter() - t0
      out = {"kind": "search", "choices": list(found_r.best.choices), "seconds": seconds,
             "search_accuracy": found_r.best.accuracy, "mflops": found_r.best.mflops,
             "evaluations": found_r.num_evaluations, "choice_ranges": found_r.extra.get("choice_ranges"),
             "top_k": [c.to_dict() for c in found_r.top_k], "config": config.get_config(),
             "uniform_search_accuracy": evaluator.accuracy(self.structure(net, r, "l1_uniform"))}
    out["width_ratios"] = _ratios(net["space"], out["choices"])
    found = net["runs"].put(key, out)
    self.runs_done += 1
    log(f"{net['name']}/{key}: {out['mflops']:.4f} MFLOPs, ratios {out['width_ratios']} ({out['seconds']:.0f} s)")
    return found

  def structure(self, net, r, method):
    tfmp = self.tfmp
    budget = self.budget(net, r)
    if method in ("l1_uniform", "uniform"):
      return net["trained"].l1_uniform(budget)[1]
    if method == "global_magnitude":
      return net["trained"].global_magnitude(budget)[1]
    raise ValueError(method)

  def method_structure(self, net, start, r, method, seed):
    """(Structure, search run or None) of `method` at seed `seed`."""
    tfmp = self.tfmp
    if method in ("l1_uniform", "uniform", "global_magnitude"):
      return self.structure(net, r, method), None
    j = seed % FLAGS.search_runs
    variant = method.split("_", 1)[1] if "_" in method else "default"
    return tfmp.Structure(self.search(net, start, r, variant, j)["choices"]), j

  # ---- final trainings ---------------------------------------------------------------------
  def final(self, net, start, r, method, seed, left=None):
    keras, tfmp = self.keras, self.tfmp
    key = final_key(start, r, method, seed)
    done = net["runs"].get(key)
    if done is not None:
      return done
    s, j = self.method_structure(net, start, r, method, seed)
    # The same structure from the same start and seed is the same computation: one run serves both methods.
    for other in HEADLINE[start] + OTHER_BASELINES[start] + tuple(variant_method(start, v) for v in VARIANTS):
      twin = net["runs"].get(final_key(start, r, other, seed))
      if other != method and twin is not None and twin.get("choices") == list(s.choices) and not twin.get("same_run_as"):
        log(f"{net['name']}/{key}: the structure of {other}, its run reused")
        return net["runs"].put(key, dict(twin, method=method, same_run_as=final_key(start, r, other, seed),
                                         search_run=j))
    self.check_time()
    kind = f"final_{start}"
    self.announce(net, key, kind, left)
    if start == "trained":
      keras.utils.set_random_seed(seed)
      model = net["trained"].rebuild(s, bn_momentum=0.9)
      epochs, lr = FLAGS.finetune_epochs, FLAGS.finetune_learning_rate
    else:
      keras.utils.set_random_seed(seed)
      model = tfmp.rebuild(net["space"], s, bn_momentum=0.9)
      epochs, lr = FLAGS.train_epochs, FLAGS.train_learning_rate
    t0, c0 = time.perf_counter(), time.process_time()
    self.fit(model, self.splits.make_train(seed), epochs, lr,   # the seed sets the data order too
             self.workdir(net["name"], key.replace("/", "_") + "_fit"))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    acc = self.test_accuracy(model)
    out = net["runs"].put(key, {"kind": kind, "method": method, "seed": seed, "search_run": j, "budget": r,
                                "choices": list(s.choices), "test_accuracy": acc, "seconds": seconds,
                                "cpu_seconds": cpu,
                                "epochs": epochs, "mflops": net["space"].mflops(s), "params": net["space"].params(s),
                                "flops_ratio": net["space"].mflops(s) / net["space"].mflops(net["space"].largest())})
    self.runs_done += 1
    log(f"{net['name']}/{key}: {100 * acc:.2f}% ({seconds:.0f} s)")
    return out

  def bring_to_target(self, net, start, r, pairs, cap=None):
    """Runs seeds of every (a, b) in `pairs` until each has the seeds its measured paired SD asks for (at most cap)."""
    while True:
      have = []
      for a, b in pairs:
        diffs = []
        for s in range(FLAGS.max_seeds):
          ra, rb = net["runs"].get(final_key(start, r, a, s)), net["runs"].get(final_key(start, r, b, s))
          if ra and rb:
            diffs.append(100 * (ra["test_accuracy"] - rb["test_accuracy"]))
        n = seeds_needed(diffs) if cap is None else min(cap, seeds_needed(diffs))
        have.append((a, b, len(diffs), n))
      missing = [(a, b) for a, b, got, n in have if got < n]
      if not missing:
        log(f"{net['name']} {start} {100 * r:g}%: " + ", ".join(f"{a}-{b} has {n} seeds" for a, b, _, n in have) +
            ("" if cap is None else f" (this pass: at most {cap})"))
        return
      seed = min(s for s in range(FLAGS.max_seeds) if any(
          net["runs"].get(final_key(start, r, m, s)) is None for a, b in missing for m in (a, b)))
      left = sum(2 * max(0, n - got) for _, _, got, n in have)
      for a, b in missing:
        for m in (b, a):
          self.final(net, start, r, m, seed, left)
      self.summarize()

  def convergence(self, net, what, r=None):
    """Twice the recipe's steps, seed 0: the recipe is converged when that gains at most 1 pt."""
    keras, tfmp = self.keras, self.tfmp
    key = "train_convergence" if what == "train" else f"trained_{r:g}/finetune_convergence"
    found = net["runs"].get(key)
    if found is None:
      self.check_time()
      self.announce(net, key, key.split("/")[-1])
      if what == "train":
        short = net["runs"].get("original")["test_accuracy"]
        keras.utils.set_random_seed(0)
        model = tfmp.rebuild(net["space"], net["space"].largest(), bn_momentum=0.9)
        epochs, lr, recipe = 2 * FLAGS.train_epochs, FLAGS.train_learning_rate, "full width from scratch"
      else:
        short = self.final(net, "trained", r, "l1_uniform", 0)["test_accuracy"]
        keras.utils.set_random_seed(0)
        model = net["trained"].rebuild(self.structure(net, r, "l1_uniform"), bn_momentum=0.9)
        epochs, lr, recipe = 2 * FLAGS.finetune_epochs, FLAGS.finetune_learning_rate, f"L1-uniform at {100 * r:g}%"
      t0 = time.perf_counter()
      self.fit(model, self.splits.make_train(0), epochs, lr, self.workdir(net["name"], key.replace("/", "_") + "_fit"))
      seconds = time.perf_counter() - t0
      long = self.test_accuracy(model)
      found = net["runs"].put(key, {"kind": key.split("/")[-1], "recipe": recipe, "short_epochs": epochs // 2,
                                    "long_epochs": epochs, "short_pt": 100 * short, "long_pt": 100 * long,
                                    "converged": 100 * (long - short) <= 1.0, "seconds": seconds})
      self.runs_done += 1
      log(f"{net['name']}/{key}: {100 * short:.2f}% -> {100 * long:.2f}% with twice the epochs")
    return found

  def summarize(self):
    conv = {}
    for name, net in self.networks.items():
      for k, v in net["runs"].all().items():
        if k.endswith("convergence"):
          conv[f"{name}:{k}"] = {x: v[x] for x in ("recipe", "short_epochs", "long_epochs", "short_pt", "long_pt",
                                                   "converged")}
      self.protocol.setdefault("networks", {})[name] = {
          "original": net["runs"].get("original"),
          "pruningnets": {k: v for k, v in net["runs"].all().items() if "/pn_" in k},
          "searches": {k: {x: v.get(x) for x in ("choices", "width_ratios", "mflops", "search_accuracy",
                                                 "uniform_search_accuracy", "same_as_default", "seconds")}
                       for k, v in net["runs"].all().items() if "/search_" in k}}
    self.protocol["convergence"] = conv
    self.protocol["last_run_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    return summarize(self.results_dir, parse_settings(FLAGS.settings), self.protocol)

  def plan_left(self, settings):
    """(final trainings left, estimated minutes) over every setting, each comparison at the seeds it needs now."""
    count, minutes, seen = 0, 0.0, set()
    for network, start, r in settings:
      runs = Runs(os.path.join(self.results_dir, FLAGS.results_name, network))
      original = runs.get("original")
      per_run = self.estimate(runs, f"final_{start}")
      if per_run is None and original is not None and original.get("seconds") is not None:   # no final run yet: scale the user's model's training
        per_run = original["seconds"] * (FLAGS.finetune_epochs if start == "trained" else FLAGS.train_epochs) / \
            FLAGS.train_epochs
      headline, others = comparison_names(start, r)
      for a, b in [headline] + [(x, y) for x, y in others if y == headline[0]]:
        diffs = []
        for seed in range(FLAGS.max_seeds):
          ra, rb = runs.get(final_key(start, r, a, seed)), runs.get(final_key(start, r, b, seed))
          if ra and rb:
            diffs.append(100 * (ra["test_accuracy"] - rb["test_accuracy"]))
        n = seeds_needed(diffs)
        for m in (a, b):
          for seed in range(n):
            key = (network, final_key(start, r, m, seed))
            if key not in seen and runs.get(key[1]) is None:
              seen.add(key)
              count += 1
              minutes += (per_run or 0.0) / 60
    return count, minutes

  def run(self, settings):
    """Every step of `schedule(settings)` in turn: the most informative comparisons first."""
    self.settings = settings
    for step in schedule(settings):
      network, start, r = step["setting"]
      net = self.network(network)
      if step["what"] == "convergence":
        self.convergence(net, "finetune" if start == "trained" else "train", r)
      else:
        count, minutes = self.plan_left(settings)
        log(f"pass {step['pass']}, {network}:{start}:{r:g}: " + ", ".join(f"{a}-{b}" for a, b in step["pairs"]) +
            (f" to {step['cap']} seeds" if step["cap"] else " to the seeds its paired SD asks for") +
            f"; the whole plan: about {count} final trainings left, {minutes / 60:.1f} h at the pace so far "
            "(PruningNets and searches not counted)")
        self.bring_to_target(net, start, r, step["pairs"], step["cap"])
      self.summarize()


def schedule(settings):
  """The order of the work: every headline at --min_seeds first, then each to its seeds, then the rest.

  Pass 1 gives the sign of every headline comparison (in --settings order: the MobileNetV2 at 10% FLOPs, trained
  and scratch starts, first) and, after a start's first headline, its recipe's convergence check; pass 2 brings
  each headline to the seeds its measured paired SD asks for; pass 3 measures the variants (against the default)
  and the other baselines. Returns a list of {"pass", "what": "pairs" | "convergence", "setting", "pairs", "cap"}.
  """
  steps, checked = [], set()
  for setting in settings:
    network, start, r = setting
    steps.append({"pass": 1, "what": "pairs", "setting": setting, "pairs": [HEADLINE[start]],
                  "cap": FLAGS.min_seeds})
    if (network, start) not in checked:
      checked.add((network, start))
      steps.append({"pass": 1, "what": "convergence", "setting": setting, "pairs": [], "cap": None})
  for setting in settings:
    steps.append({"pass": 2, "what": "pairs", "setting": setting, "pairs": [HEADLINE[setting[1]]], "cap": None})
  for setting in settings:
    network, start, r = setting
    a = HEADLINE[start][0]
    for v in variants_at(r):
      steps.append({"pass": 3, "what": "pairs", "setting": setting, "pairs": [(variant_method(start, v), a)],
                    "cap": None})
    for o in OTHER_BASELINES[start]:
      steps.append({"pass": 3, "what": "pairs", "setting": setting, "pairs": [(a, o)], "cap": None})
  return steps


def _save_atomic(model, path, weights_only=False):
  """Saves `model` (or its weights) to `path` so a kill leaves either the old file or the whole new one."""
  ext = ".weights.h5" if weights_only else ".keras"   # Keras checks the suffix
  tmp = path[:-len(ext)] + ".tmp" + ext
  if weights_only:
    model.save_weights(tmp)
  else:
    model.save(tmp)
  os.replace(tmp, path)


def _ratios(space, choices):
  return [round(g.channels[c] / g.base_channels, 3) for g, c in zip(space.genes, choices)]


def _result_of(tfmp, space, stored):
  """A SearchResult holding a stored search's top-k (what finetune_pick reads)."""
  cands = [tfmp.search.Candidate.from_dict(c) for c in stored["top_k"]]
  return tfmp.search.SearchResult(method="evolutionary", space_name=space.name, space_fingerprint=space.fingerprint(),
                                  best=cands[0], top_k=cands, candidates=cands)


def main(argv):
  del argv
  if FLAGS.quick:
    FLAGS["results_name"].value = FLAGS.results_name + "_quick"
    for name, value in (("train_epochs", 1), ("finetune_epochs", 1), ("pn_trained_epochs", 1),
                        ("pn_scratch_epochs", 1), ("population_size", 6), ("num_generations", 2), ("topk", 2),
                        ("topk_steps", 3), ("min_seeds", 2), ("max_seeds", 2), ("search_images", 256)):
      FLAGS[name].value = value
  if FLAGS.workdir is None:
    FLAGS["workdir"].value = os.path.join(ROOT, "runs", FLAGS.results_name)
  for v in FLAGS.variants:
    if v not in VARIANTS:
      raise app.UsageError(f"--variants entry {v!r}: choose among {', '.join(VARIANTS)}")
  for v in FLAGS.variant_budgets:
    try:
      ok = 0 < float(v) <= 1
    except ValueError:
      ok = False
    if not ok:
      raise app.UsageError(f"--variant_budgets entry {v!r}: a fraction of the full FLOPs in (0, 1], e.g. 0.1")
  if FLAGS.min_seeds < 2 or FLAGS.max_seeds < FLAGS.min_seeds:
    raise app.UsageError(f"--min_seeds={FLAGS.min_seeds} --max_seeds={FLAGS.max_seeds}: need 2 <= min_seeds <= "
                         "max_seeds (one pair has no interval)")
  settings = parse_settings(FLAGS.settings)
  results_dir = _common.RESULTS_DIR
  protocol = load_protocol(results_dir)
  if FLAGS.summarize_only:
    _, table = summarize(results_dir, settings, protocol)
    print(table)
    return
  protocol.setdefault("first_run_utc", time.strftime("%Y-%m-%d %H:%M", time.gmtime()))
  protocol["command"] = _common.command_line()
  protocol["machine"] = _common.machine()
  bench = Bench(results_dir, protocol)
  try:
    bench.run(settings)
    log("every setting has its seeds")
  except StopNow:
    log(f"--stop_at_utc={FLAGS.stop_at_utc} reached; resume with the same command")
  _, table = bench.summarize()
  print(table)


if __name__ == "__main__":
  app.run(main)
