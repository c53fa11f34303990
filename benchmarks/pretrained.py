"""Pruning a trained model: MetaPruning from its weights vs the peers' methods, with and without distillation.

On Fashion-MNIST (the idx files of /usr/share/datasets/fashion-mnist, read
here with numpy + gzip):

1. The "user's model" (`--model`), trained on a stratified subset of the
   training images, saved as .keras and read back through
   `tfmp.pretrained.TrainedModel` (`SearchSpace.from_keras_model` + L1
   reordering), as `examples/metaprune.py --keras_model` does:
   * `small_cnn` (default): `tfmp.models.small_cnn`, 4 convs 16-32-64-128 +
     BN + ReLU, 28x28x1, 5.5 MFLOPs; width ratios 0.10-1.00;
   * `mobilenet_v2_demo`: the `make demo` MobileNetV2 (`examples/metaprune.py`'s
     defaults: width 0.5, stride 32, stage repeats 1,2,2,2,1,1,1, 18 genes,
     1.17 MFLOPs at 28x28), width ratios from 0.3 up (its smallest structure
     is 18.5% of the full FLOPs, so its default ratios are 0.5 and 0.25);
     `--min_width_ratio=0.1 --divisor=4` widens its grid to reach 3.8%
     (ratios 0.25 and 0.1; results `pretrained_mobilenet_v2_demo_minw10_div4`).
2. Methods, each at every FLOPs ratio (`--ratios`), each structure fine-tuned
   with one recipe (`--finetune_epochs`), with and without distillation from
   the original model, for every seed (`--seeds`):
   * `metaprune`: a PruningNet started from the trained weights, trained
     `--pruningnet_pre_epochs`, evolutionary search on the held-out search
     split, the found structure fine-tuned from the trained weights
     (init="pretrained");
   * `l1_uniform`: one width ratio for every gene, the highest-L1 filters
     kept (Li et al. 2017);
   * `global_magnitude`: one threshold on mean-normalized L1 importance over
     all genes (Torch-Pruning's global pruning);
   * `uniform_scratch`: the uniform structure from fresh weights.
3. Paired differences: per budget, with and without distillation,
   MetaPruning minus each other method, and distillation minus plain per
   method, paired by fine-tuning seed (mean and 95% Student-t interval).
4. PruningNet steps: a PruningNet from the trained model vs one from scratch
   (`--pruningnet_scratch_epochs`, the pipeline's recipe), both probed every
   few steps with one search-quality figure: the mean recalibrated
   search-split accuracy of a fixed set of structures in the FLOPs window of
   the ratios (no fine-tuning). Reported: the steps the trained-start net
   needs to reach the scratch net's final quality. `--steps_only` reruns
   only this comparison with other PruningNet settings (longer,
   `--pruningnet_pre_distill_weight` for distillation from the trained
   model), reusing the scratch net of the main result.

Every finished run is checkpointed to results/<name>.json at once (a rerun
skips it; `pretrained.json` for small_cnn, `pretrained_<model>.json`
otherwise); the models and PruningNets live in runs/pretrained_bench[_<model>]/.
One PruningNet and one search per ratio (seed 0); the seeds vary the
fine-tuning (weights of the scratch model, data order). A method whose
structure and initial weights equal an earlier method's (global magnitude
picking the L1-uniform structure) reuses that run: with the same seed the
fine-tuning is the same computation (the small CNN's separate runs agreed to
every digit).

  python benchmarks/pretrained.py                # ~35 min on 2 shared cores
  python benchmarks/pretrained.py --model=mobilenet_v2_demo
  python benchmarks/pretrained.py --model=mobilenet_v2_demo --min_width_ratio=0.1 --divisor=4
  python benchmarks/pretrained.py --quick        # smoke run, figures meaningless
  python benchmarks/pretrained.py --summarize_only   # tables + figure again from the JSON, no training
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
flags.DEFINE_enum("model", "small_cnn", ["small_cnn", "mobilenet_v2_demo"], "The user's model: the small CNN or "
                  "the `make demo` MobileNetV2 (width 0.5, stride 32, 10 blocks, ratios from 0.3).")
flags.DEFINE_string("data_dir", "/usr/share/datasets/fashion-mnist", "Folder of the Fashion-MNIST idx .gz files.")
flags.DEFINE_integer("train_examples", 12000, "Training images used (stratified subset; includes the search split).")
flags.DEFINE_integer("search_examples", 1000, "Of those, held out for the search and the quality probes.")
flags.DEFINE_integer("test_examples", 10000, "Test images (the official test set).")
flags.DEFINE_integer("batch_size", 128, "Batch size of every training.")
flags.DEFINE_integer("original_epochs", 6, "Epochs that train the user's model (Adam 3e-3 cosine).")
flags.DEFINE_integer("finetune_epochs", 3, "Epochs of the one fine-tuning recipe (every method, with and without KD).")
flags.DEFINE_float("finetune_learning_rate", 1e-3, "Peak learning rate of the fine-tuning (Adam, cosine).")
flags.DEFINE_integer("pruningnet_pre_epochs", 2, "PruningNet epochs from the trained model.")
flags.DEFINE_float("pruningnet_pre_learning_rate", 1e-3, "Peak Adam learning rate of the PruningNet from the trained "
                   "model (cosine over its epochs).")
flags.DEFINE_float("pruningnet_pre_distill_weight", 0.0, "KD share of the loss of the PruningNet from the trained "
                   "model, the trained model as teacher at --distill_temperature (0: labels only).")
flags.DEFINE_string("baselines_from", None, "Another result name of the same --model and grid (e.g. "
                    "pretrained_mobilenet_v2_demo_minw10_div4): its baseline fine-tunings (l1_uniform, "
                    "global_magnitude, uniform_scratch) and scratch PruningNet are reused when the original model, "
                    "data, fine-tuning recipe and baseline structures match, so a MetaPruning variant (other "
                    "--pruningnet_pre_* settings, with --name) is paired with the very same baseline runs.")
flags.DEFINE_bool("steps_only", False, "Only the PruningNet step comparison (no search, no fine-tuning); use another "
                  "--name, e.g. --name=pretrained_steps --pruningnet_pre_epochs=8 --pruningnet_pre_learning_rate=3e-3.")
flags.DEFINE_integer("pruningnet_scratch_epochs", 8, "PruningNet epochs from scratch (the pipeline's default: 8).")
flags.DEFINE_integer("hidden_units", 8, "Generator hidden size (the pipeline's default).")
flags.DEFINE_integer("probe_structures", 10, "Structures of the search-quality probe.")
flags.DEFINE_integer("probes_per_epoch", 4, "Quality probes per epoch of the PruningNet from the trained model.")
flags.DEFINE_integer("probes_per_epoch_scratch", 1, "Quality probes per epoch of the PruningNet from scratch.")
flags.DEFINE_integer("population_size", 16, "Evolution population.")
flags.DEFINE_integer("num_generations", 6, "Evolution generations.")
flags.DEFINE_list("ratios", None, "FLOPs ratios of the full model (default: 0.25,0.1 when the space's smallest "
                  "structure is under 10% of the full FLOPs, as for small_cnn; else 0.5,0.25, as for "
                  "mobilenet_v2_demo, whose smallest structure is 18.5%).")
flags.DEFINE_float("min_width_ratio", None, "mobilenet_v2_demo only: the smallest width ratio of its space (default "
                   "0.3, make demo's; 0.1 reaches 10% FLOPs). A non-default value or --divisor is added to --name and "
                   "--workdir.")
flags.DEFINE_integer("divisor", None, "mobilenet_v2_demo only: channel counts are multiples of this (default 8, make "
                     "demo's).")
flags.DEFINE_integer("seeds", 3, "Fine-tuning seeds.")
flags.DEFINE_float("distill_temperature", 4.0, "KD temperature.")
flags.DEFINE_float("distill_weight", 0.5, "KD share of the loss.")
flags.DEFINE_bool("quick", False, "Smoke run: tiny data, 1-epoch trainings.")
flags.DEFINE_bool("summarize_only", False, "Only rebuild the summary, tables and figure of results/<name>.json from "
                  "its stored runs (no data, no training).")
flags.DEFINE_string("workdir", None, "Models and nets (for resuming); default runs/pretrained_bench for small_cnn, "
                    "runs/pretrained_bench_<model> otherwise.")
flags.DEFINE_string("output_dir", _common.RESULTS_DIR, "Where <name>.json/.png go.")
flags.DEFINE_string("name", None, "Result file name (default: pretrained for small_cnn, pretrained_<model> "
                    "otherwise).")

METHODS = ("metaprune", "l1_uniform", "global_magnitude", "uniform_scratch")


def _space_suffix():
  """'' for the family's own grid, else e.g. '_minw10_div4' (another space: its own results and nets)."""
  if FLAGS.model == "small_cnn":
    if FLAGS.min_width_ratio is not None or FLAGS.divisor is not None:
      raise app.UsageError("--min_width_ratio/--divisor apply to --model=mobilenet_v2_demo only (small_cnn's grid is "
                           "fixed: ratios 0.10-1.00, divisor 8)")
    return ""
  suffix = ""
  if FLAGS.min_width_ratio is not None and FLAGS.min_width_ratio != _common.DEMO_MOBILENET_V2["min_width_ratio"]:
    suffix += f"_minw{int(round(100 * FLAGS.min_width_ratio)):02d}"
  if FLAGS.divisor is not None and FLAGS.divisor != 8:
    suffix += f"_div{FLAGS.divisor}"
  return suffix


def _apply_defaults():
  suffix = ("" if FLAGS.model == "small_cnn" else "_" + FLAGS.model) + _space_suffix()
  if FLAGS.name is None:
    FLAGS["name"].value = "pretrained" + suffix
  if FLAGS.workdir is None:
    FLAGS["workdir"].value = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runs",
                                          "pretrained_bench" + suffix)


def default_ratios(space):
  """0.25 and 0.1 when the space reaches under 10% of the full FLOPs, else 0.5 and 0.25."""
  smallest = space.mflops(space.smallest()) / space.mflops(space.largest())
  return [0.25, 0.1] if smallest < 0.1 else [0.5, 0.25]


def user_model_space():
  """(space of the family, kwargs of TrainedModel, description) of `--model`."""
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  if FLAGS.model == "small_cnn":
    return tfmp.models.small_cnn((28, 28, 1), 10), dict(divisor=8), "small_cnn (16-32-64-128)"
  overrides = {k: v for k, v in (("min_width_ratio", FLAGS.min_width_ratio), ("divisor", FLAGS.divisor))
               if v is not None}
  try:
    config = pipeline.PipelineConfig(**dict(_common.DEMO_MOBILENET_V2, **overrides))   # divisor 8, step 0.03
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  ratios = pipeline.width_ratios(config.min_width_ratio, config.width_step)
  space = pipeline.build_space(config, (28, 28, 1), 10)
  return (space, dict(width_ratios=ratios, divisor=config.divisor),
          f"mobilenet_v2 of make demo (width 0.5, stride 32, stage repeats 1,2,2,2,1,1,1), width ratios from "
          f"{config.min_width_ratio:g}, divisor {config.divisor}")


def _apply_quick():
  for name, value in (("train_examples", 1200), ("search_examples", 200), ("test_examples", 500),
                      ("original_epochs", 1), ("finetune_epochs", 1), ("pruningnet_pre_epochs", 1),
                      ("pruningnet_scratch_epochs", 1), ("probe_structures", 3), ("probes_per_epoch", 1), ("probes_per_epoch_scratch", 1),
                      ("population_size", 6), ("num_generations", 2), ("seeds", 2)):
    FLAGS[name].value = value
  FLAGS["name"].value = FLAGS.name + "_quick"
  FLAGS["workdir"].value = FLAGS.workdir + "_quick"


read_idx = _common.read_idx   # the idx reader is shared with tight_budgets.py


def load_splits():
  """Fashion-MNIST: a stratified training subset, its held-out search split, the official test set."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_metaprune import data as data_lib  # pylint: disable=g-import-not-at-top
  d = FLAGS.data_dir
  x = read_idx(os.path.join(d, "train-images-idx3-ubyte.gz"))
  y = read_idx(os.path.join(d, "train-labels-idx1-ubyte.gz")).astype(np.int32)
  xt = read_idx(os.path.join(d, "t10k-images-idx3-ubyte.gz"))[:FLAGS.test_examples]
  yt = read_idx(os.path.join(d, "t10k-labels-idx1-ubyte.gz")).astype(np.int32)[:FLAGS.test_examples]
  rng = np.random.default_rng(0)
  per_class = FLAGS.train_examples // 10
  search_per_class = FLAGS.search_examples // 10
  train_idx, search_idx = [], []
  for c in range(10):
    idx = rng.permutation(np.flatnonzero(y == c))[:per_class]
    search_idx += list(idx[:search_per_class])
    train_idx += list(idx[search_per_class:])
  train_idx, search_idx = rng.permutation(train_idx), np.array(search_idx)

  def arrays(images, labels):
    return (images[..., None].astype(np.float32) / 255.0), labels

  xtr, ytr = arrays(x[train_idx], y[train_idx])
  xs, ys = arrays(x[search_idx], y[search_idx])
  xte, yte = arrays(xt, yt)
  b = FLAGS.batch_size

  def make_train(seed=0):
    return (tf.data.Dataset.from_tensor_slices((xtr, ytr)).shuffle(len(xtr), seed=seed, reshuffle_each_iteration=True)
            .batch(b, drop_remainder=True).prefetch(tf.data.AUTOTUNE))

  def fixed(xa, ya):
    return tf.data.Dataset.from_tensor_slices((xa, ya)).batch(b).prefetch(tf.data.AUTOTUNE)

  config = {"dataset": "fashion_mnist (idx files)", "train_examples": len(xtr), "search_examples": len(xs),
            "test_examples": len(xte), "batch_size": b, "subset_seed": 0}
  return data_lib.DatasetSplits(
      train=make_train(), search=fixed(xs, ys), test=fixed(xte, yte), num_classes=10, input_shape=(28, 28, 1),
      num_examples={"train": len(xtr), "search": len(xs), "test": len(xte)}, name="fashion_mnist", config=config,
      calibration=fixed(xtr[:8 * b], ytr[:8 * b]), make_train=make_train)


def finetune_key(r, method, distill, seed):
  """The results key of one fine-tuning run."""
  return f"finetune_{r:g}_{method}_{'kd' if distill else 'plain'}_seed{seed}"


class Store:
  """results JSON: every finished run is written at once; a rerun skips what is there."""

  BOOKKEEPING = ("load_average", "finished_utc")   # what `put` adds to every run

  @classmethod
  def measured(cls, run):
    """`run` without the fields `put` added (what two results must agree on)."""
    return {k: v for k, v in (run or {}).items() if k not in cls.BOOKKEEPING}

  def __init__(self, path):
    self.path = path
    self.data = {"runs": {}}
    if os.path.exists(path):
      with open(path) as f:
        self.data = json.load(f)
      self.data.setdefault("runs", {})

  def get(self, key):
    return self.data["runs"].get(key)

  def put(self, key, value):
    """Stores `value` (a copy of another run's fine: its load average and time are replaced) and saves."""
    value = dict(value, load_average=list(os.getloadavg()), finished_utc=time.strftime("%H:%M:%S", time.gmtime()))
    self.data["runs"][key] = value
    self.save()

  def save(self):
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(_common.jsonable(self.data), f, indent=1)
    os.replace(tmp, self.path)


def main(argv):
  del argv
  _apply_defaults()
  if FLAGS.quick:
    _apply_quick()
  if FLAGS.summarize_only:
    store = Store(os.path.join(FLAGS.output_dir, FLAGS.name + ".json"))
    if not store.data["runs"]:
      raise app.UsageError(f"--summarize_only: {store.path} holds no runs; run without --summarize_only first")
    summarize(store, store.data["recipe"]["ratios"], store.get("original")["test_accuracy"], None)
    return
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  from tf_metaprune import pretrained  # pylint: disable=g-import-not-at-top

  t_start = time.time()
  os.makedirs(FLAGS.workdir, exist_ok=True)
  store = Store(os.path.join(FLAGS.output_dir, FLAGS.name + ".json"))
  store.data.update(benchmark=FLAGS.name, model=FLAGS.model, command=_common.command_line(),
                    machine=store.data.get("machine") or _common.machine())
  splits = load_splits()
  store.data["data"] = splits.get_config()
  ft = dict(epochs=FLAGS.finetune_epochs, learning_rate=FLAGS.finetune_learning_rate, optimizer="adam", verbose=0)
  space0, trained_kwargs, description = user_model_space()
  ratios = [float(r) for r in FLAGS.ratios] if FLAGS.ratios else default_ratios(space0)
  store.data["recipe"] = {
      "original": f"{description}, {FLAGS.original_epochs} epochs Adam 3e-3 cosine, batch "
                  f"{FLAGS.batch_size}",
      "finetune": f"{FLAGS.finetune_epochs} epochs Adam {FLAGS.finetune_learning_rate:g} cosine, BN momentum 0.9; KD: "
                  f"T={FLAGS.distill_temperature:g}, weight {FLAGS.distill_weight:g}",
      "pruningnet_pretrained": f"{FLAGS.pruningnet_pre_epochs} epochs Adam {FLAGS.pruningnet_pre_learning_rate:g} "
                               f"cosine, hidden_units "
                               f"{FLAGS.hidden_units}, from the L1-reordered trained weights" +
                               (f", distilled from the trained model (weight {FLAGS.pruningnet_pre_distill_weight:g}, "
                                f"T={FLAGS.distill_temperature:g})" if FLAGS.pruningnet_pre_distill_weight > 0 else ""),
      "pruningnet_scratch": f"{FLAGS.pruningnet_scratch_epochs} epochs Adam 3e-3 cosine (the pipeline's default), "
                            f"hidden_units {FLAGS.hidden_units}",
      "search": f"evolution population {FLAGS.population_size} x {FLAGS.num_generations} generations, 4 "
                "calibration batches, search split", "seeds": FLAGS.seeds, "ratios": ratios}
  store.save()

  def log(msg):
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())} load {os.getloadavg()[0]:.1f}] {msg}", flush=True)

  # 1. The user's trained model.
  model_path = os.path.join(FLAGS.workdir, "original.keras")
  if not os.path.exists(model_path):
    keras.utils.set_random_seed(0)
    model = tfmp.rebuild(space0, space0.largest(), name="user_cnn" if FLAGS.model == "small_cnn" else "user_mbv2",
                         bn_momentum=0.9)
    t0 = time.perf_counter()
    tfmp.training.fit(model, splits.fresh_train(), epochs=FLAGS.original_epochs, learning_rate=3e-3,
                      optimizer="adam", verbose=0)
    seconds = time.perf_counter() - t0
    model.save(model_path)
    store.put("original_training", {"seconds": seconds})
  model = keras.saving.load_model(model_path)
  model.compile(loss=tfmp.training.SparseCrossentropyWithSmoothing(), metrics=["accuracy"])
  if store.get("original") is None:
    _, acc = model.evaluate(splits.test, verbose=0)
    store.put("original", {"test_accuracy": float(acc), "mflops": tfmp.count_mflops(model),
                           "params": model.count_params()})
  original_acc = store.get("original")["test_accuracy"]
  log(f"original model: test accuracy {100 * original_acc:.2f}%")

  t0 = time.perf_counter()
  trained = pretrained.TrainedModel(model, **trained_kwargs)
  reorder_seconds = time.perf_counter() - t0
  space = trained.space
  full_mflops = space.mflops(space.largest())
  store.data["space"] = {"genes": [g.name for g in space.genes], "full_mflops": full_mflops,
                         "reorder_seconds": reorder_seconds}
  x_check = next(iter(splits.test))[0][:64]
  ref = model(x_check, training=False).numpy()
  got = trained.reordered_model()(x_check, training=False).numpy()
  store.data["space"]["reordered_max_rel_logit_diff"] = float(np.abs(ref - got).max() / np.abs(ref).max())
  store.save()

  # The probe: a fixed set of structures inside the FLOPs window of the ratios.
  rng = np.random.default_rng(123)
  lo, hi = min(ratios) * full_mflops, max(ratios) * full_mflops
  probe = []
  for r in ratios:
    probe.append(pretrained.l1_uniform_structure(space, tfmp.FlopsBudget(max_mflops=r * full_mflops))[1])
  tries = 0
  while len(probe) < FLAGS.probe_structures and tries < 100000:
    tries += 1
    cap = rng.uniform(0.1, 1.0)   # a width cap per structure, so the window is reached
    s = tfmp.Structure([int(rng.integers(0, max(1, int(round(cap * g.num_choices))))) for g in space.genes])
    if lo <= space.mflops(s) <= hi and s not in probe:
      probe.append(s)
  store.data["probe"] = {"structures": [list(s.choices) for s in probe],
                         "mflops": [space.mflops(s) for s in probe]}

  def probe_quality(net):
    evaluator = tfmp.Evaluator(net, tfmp.EvaluationData.from_dataset(
        splits.search, num_calibration_batches=4, calibration_dataset=splits.calibration))
    return float(np.mean([float(evaluator.accuracy_tensor(tf.constant(s.choices, tf.int32))) for s in probe]))

  class Probe(keras.callbacks.Callback):
    """Search quality of `net` every `every` steps (its own time is not counted as training time)."""

    def __init__(self, net, every):
      super().__init__()
      self.net, self.every, self.step, self.points, self.probe_seconds = net, every, 0, [], 0.0
      self.t0 = None

    def record(self):
      t = time.perf_counter()
      q = probe_quality(self.net)
      self.probe_seconds += time.perf_counter() - t
      train_s = time.perf_counter() - self.t0 - self.probe_seconds
      self.points.append({"step": self.step, "quality": q, "train_seconds": train_s})

    def on_train_begin(self, logs=None):
      self.t0 = time.perf_counter()
      self.record()

    def on_train_batch_end(self, batch, logs=None):
      self.step += 1
      if self.step % self.every == 0:
        self.record()

  steps_per_epoch = int(splits.train.cardinality())

  def train_pruning_net(key, from_trained, epochs, lr, probes_per_epoch):
    path = os.path.join(FLAGS.workdir, key + ".keras" if FLAGS.name == "pretrained" else f"{FLAGS.name}_{key}.keras")
    if store.get(key) is not None and os.path.exists(path):
      return keras.saving.load_model(path)
    keras.utils.set_random_seed(0)
    if from_trained:
      net = trained.pruning_net(hidden_units=FLAGS.hidden_units, seed=0)
    else:
      net = tfmp.PruningNet(space, hidden_units=FLAGS.hidden_units, seed=0)
    probe_cb = Probe(net, max(1, steps_per_epoch // probes_per_epoch))
    kd = {}
    if from_trained and FLAGS.pruningnet_pre_distill_weight > 0:   # the user's model teaches every sampled structure
      kd = dict(teacher=model, distill_temperature=FLAGS.distill_temperature,
                distill_weight=FLAGS.pruningnet_pre_distill_weight)
    t0 = time.perf_counter()
    tfmp.training.fit(net, splits.fresh_train(), epochs=epochs, learning_rate=lr, optimizer="adam", verbose=0,
                      callbacks=[probe_cb], **kd)
    seconds = time.perf_counter() - t0 - probe_cb.probe_seconds
    net.save(path)
    store.put(key, {"epochs": epochs, "steps": epochs * steps_per_epoch, "train_seconds": seconds,
                    "learning_rate": lr, "distill_weight": kd.get("distill_weight", 0.0),
                    "probe": probe_cb.points, "final_quality": probe_cb.points[-1]["quality"]})
    log(f"{key}: {epochs * steps_per_epoch} steps in {seconds:.0f} s, probe quality "
        f"{probe_cb.points[0]['quality']:.3f} -> {probe_cb.points[-1]['quality']:.3f}")
    return net

  # 2. MetaPruning from the trained model: PruningNet + one search per ratio.
  net = train_pruning_net("pruningnet_pretrained", True, FLAGS.pruningnet_pre_epochs, FLAGS.pruningnet_pre_learning_rate,
                          FLAGS.probes_per_epoch)
  if FLAGS.steps_only:
    main_name = ("pretrained" if FLAGS.model == "small_cnn" else "pretrained_" + FLAGS.model)
    main_name += _space_suffix()
    main_run = Store(os.path.join(FLAGS.output_dir, main_name + ".json")).get("pruningnet_scratch")
    if store.get("pruningnet_scratch") is None and main_run and main_run["epochs"] == FLAGS.pruningnet_scratch_epochs:
      store.put("pruningnet_scratch", dict(main_run, note="the scratch run of pretrained.json (same data and recipe)"))
    else:
      train_pruning_net("pruningnet_scratch", False, FLAGS.pruningnet_scratch_epochs, 3e-3,
                        FLAGS.probes_per_epoch_scratch)
    summarize_steps(store)
    return
  structures = {}
  for r in ratios:
    budget = tfmp.FlopsBudget.from_ratio(space, r)
    key = f"search_{r:g}"
    if store.get(key) is None:
      t0 = time.perf_counter()
      found = tfmp.search.evolutionary(net, splits, budget, population_size=FLAGS.population_size,
                                       num_generations=FLAGS.num_generations, top_k=min(10, FLAGS.population_size // 2),
                                       num_mutations=FLAGS.population_size // 2,
                                       num_crossovers=FLAGS.population_size // 2, seed=0, verbose=0)
      store.put(key, {"choices": list(found.best_structure.choices), "search_accuracy": found.best_accuracy,
                      "seconds": time.perf_counter() - t0, "evaluations": found.num_evaluations})
    t0 = time.perf_counter()
    ratio_u, s_u = trained.l1_uniform(budget)
    thr, s_g = trained.global_magnitude(budget)
    pick_seconds = time.perf_counter() - t0
    structures[r] = {"metaprune": tfmp.Structure(store.get(key)["choices"]), "l1_uniform": s_u,
                     "global_magnitude": s_g, "uniform_scratch": s_u}
    store.data.setdefault("structures", {})[f"{r:g}"] = {
        m: {"choices": list(s.choices), "channels": space.channels(s), "mflops": space.mflops(s),
            "flops_ratio": space.mflops(s) / full_mflops, "params": space.params(s)} for m, s in structures[r].items()}
    store.data["structures"][f"{r:g}"]["uniform_width_ratio"] = ratio_u
    store.data["structures"][f"{r:g}"]["global_threshold"] = thr
    store.data["structures"][f"{r:g}"]["baseline_pick_seconds"] = pick_seconds
    store.save()
    log(f"ratio {r:g}: " + ", ".join(f"{m} {space.mflops(s):.3f} MFLOPs" for m, s in structures[r].items()))

  # 3. Fine-tuning: seed-major, so a cut-off run has every method at the first seeds.
  donor = None
  if FLAGS.baselines_from:
    donor = Store(os.path.join(FLAGS.output_dir, FLAGS.baselines_from + ".json"))

    def comparable(data):
      original = Store.measured(data["runs"].get("original"))
      baselines = {r: {m: v["choices"] for m, v in st.items() if m in METHODS[1:]}
                   for r, st in (data.get("structures") or {}).items() if r in store.data["structures"]}
      return {"original model": original, "data": data.get("data"),
              "fine-tuning recipe": (data.get("recipe") or {}).get("finetune"), "baseline structures": baselines}

    store.data["baselines_from"] = FLAGS.baselines_from
    mine, theirs = comparable(store.data), comparable(donor.data)
    mismatch = [what for what in mine if mine[what] != theirs[what]]
    if mismatch:
      raise app.UsageError(f"--baselines_from={FLAGS.baselines_from}: its {', '.join(mismatch)} differ from this "
                           "run's; run the baselines here (drop --baselines_from)")

  def finetune(r, method, distill, seed):
    key = finetune_key(r, method, distill, seed)
    if store.get(key) is not None:
      return
    if donor is not None and method != "metaprune" and donor.get(key) is not None:
      store.put(key, dict(donor.get(key), reused_from=FLAGS.baselines_from))
      return
    s = structures[r][method]
    if method == "global_magnitude" and s == structures[r]["l1_uniform"]:
      twin = finetune_key(r, "l1_uniform", distill, seed)
      if store.get(twin) is not None:   # the same structure from the same weights and seed: the same run
        store.put(key, dict(store.get(twin), method=method, same_run_as=twin))
        log(f"{key}: the structure of l1_uniform, its run reused ({twin})")
        return
    keras.utils.set_random_seed(seed)
    if method == "uniform_scratch":
      student = tfmp.rebuild(space, s, bn_momentum=0.9)
    else:
      student = trained.rebuild(s, bn_momentum=0.9)
    student.compile(loss=tfmp.training.SparseCrossentropyWithSmoothing(), metrics=["accuracy"])
    _, acc_before = student.evaluate(splits.test, verbose=0)
    kd = dict(teacher=model, distill_temperature=FLAGS.distill_temperature,
              distill_weight=FLAGS.distill_weight) if distill else {}
    t0 = time.perf_counter()
    tfmp.training.fit(student, splits.make_train(seed), **ft, **kd)   # the seed sets the data order too
    seconds = time.perf_counter() - t0
    _, acc = student.evaluate(splits.test, verbose=0)
    store.put(key, {"ratio": r, "method": method, "distill": distill, "seed": seed, "test_accuracy": float(acc),
                    "test_accuracy_before_finetune": float(acc_before), "drop_pt": 100 * (original_acc - acc),
                    "finetune_seconds": seconds, "mflops": space.mflops(s), "params": space.params(s)})
    log(f"{key}: {100 * acc_before:.2f}% -> {100 * acc:.2f}% ({seconds:.0f} s)")

  for seed in range(FLAGS.seeds):
    for r in ratios:
      for method in METHODS:
        for distill in (False, True):
          finetune(r, method, distill, seed)
    if seed == 0 and donor is not None and donor.get("pruningnet_scratch") and store.get("pruningnet_scratch") is None:
      store.put("pruningnet_scratch", dict(donor.get("pruningnet_scratch"), reused_from=FLAGS.baselines_from))
    if seed == 0 and store.get("pruningnet_scratch") is None:   # 4. the step comparison, after seed 0 of each method
      train_pruning_net("pruningnet_scratch", False, FLAGS.pruningnet_scratch_epochs, 3e-3,
                        FLAGS.probes_per_epoch_scratch)

  summarize(store, ratios, original_acc, t_start)


def _ci(values):
  """(mean, half width of the 95% Student-t interval)."""
  from tf_metaprune import stats  # pylint: disable=g-import-not-at-top
  mean, low, _ = stats.t_interval95(values)
  return mean, mean - low


def steps_to_reach(points, target):
  for p in points:
    if p["quality"] >= target:
      return p["step"], p["train_seconds"]
  return None, None


def summarize_steps(store):
  """The step comparison alone (--steps_only)."""
  runs = store.data["runs"]
  pre, scratch = runs["pruningnet_pretrained"], runs["pruningnet_scratch"]
  target = scratch["final_quality"]
  step, secs = steps_to_reach(pre["probe"], target)
  store.data["steps"] = {"scratch_steps": scratch["steps"], "scratch_final_quality": target,
                         "pretrained_steps_trained": pre["steps"], "pretrained_final_quality": pre["final_quality"],
                         "pretrained_steps_to_scratch_quality": step, "pretrained_seconds_to_scratch_quality": secs,
                         "fraction_of_scratch_steps": None if step is None else step / scratch["steps"]}
  store.data["load_average_after"] = list(os.getloadavg())
  store.save()
  print(json.dumps(store.data["steps"], indent=1))


def paired_differences(runs, ratios):
  """MetaPruning minus each other method, and KD minus plain per method, paired by fine-tuning seed.

  Returns:
    (rows of dicts, Markdown table): differences of test accuracy in points, mean and 95% Student-t interval
    over the seeds both runs of a pair have.
  """

  def acc(r, method, distill, seed):
    run = runs.get(finetune_key(r, method, distill, seed))
    return None if run is None else 100 * run["test_accuracy"]

  seeds = sorted({v["seed"] for k, v in runs.items() if k.startswith("finetune_")})
  comparisons = []
  for r in ratios:
    for distill in (False, True):
      for other in METHODS[1:]:
        comparisons.append((r, "KD" if distill else "plain", f"metaprune - {other}", (r, "metaprune", distill),
                            (r, other, distill)))
    for method in METHODS:
      comparisons.append((r, "-", f"{method}: KD - plain", (r, method, True), (r, method, False)))
  rows = []
  for r, setting, label, a, b in comparisons:
    pairs = [(seed, acc(*a, seed), acc(*b, seed)) for seed in seeds]
    row = _paired_row(r, setting, label, [(seed, x, y) for seed, x, y in pairs if x is not None and y is not None])
    if row is not None:
      rows.append(row)

  def cell(r, setting, label):
    return _cell(next((x for x in rows if x["ratio"] == r and x["fine_tuning"] == setting
                       and x["comparison"] == label), None))

  versus = [[f"{100 * r:g}%", other, cell(r, "plain", f"metaprune - {other}"), cell(r, "KD", f"metaprune - {other}")]
            for r in ratios for other in METHODS[1:]]
  kd = [[f"{100 * r:g}%", method, cell(r, "-", f"{method}: KD - plain")] for r in ratios for method in METHODS]
  table = (_common.markdown_table(["FLOPs budget", "MetaPruning from the trained model minus", "plain fine-tuning, pt",
                                   "both with KD, pt"], versus) + "\n\n" +
           _common.markdown_table(["FLOPs budget", "method", "KD minus plain, pt"], kd) +
           "\n\nTest-accuracy differences paired by fine-tuning seed: mean [95% Student-t interval] (n = pairs); "
           "* = the interval excludes 0.")
  return rows, table


def _paired_row(r, setting, label, pairs):
  """A paired-difference row from (seed, a, b) accuracies in points (None without pairs)."""
  from tf_metaprune import stats  # pylint: disable=g-import-not-at-top
  if not pairs:
    return None
  mean, low, high = stats.paired_interval95([a for _, a, _ in pairs], [b for _, _, b in pairs])
  return {"ratio": r, "fine_tuning": setting, "comparison": label, "difference_pt_mean": mean,
          "difference_pt_ci95": [low, high], "num_pairs": len(pairs),
          "pairs": [{"seed": seed, "a": a, "b": b} for seed, a, b in pairs]}


def _cell(row):
  """A paired row as 'mean [low, high] * (n=k)' ('-' for none; no interval for one pair)."""
  if row is None:
    return "-"
  low, high = row["difference_pt_ci95"]
  mark = " *" if row["num_pairs"] > 1 and (low > 0 or high < 0) else ""
  ci = f" [{low:+.2f}, {high:+.2f}]" if row["num_pairs"] > 1 else ""
  return f"{row['difference_pt_mean']:+.2f}{ci}{mark} (n={row['num_pairs']})"


def variant_differences(runs, donor_runs, ratios, donor_name):
  """This run's MetaPruning minus the donor result's, per budget and fine-tuning, paired by seed."""
  seeds = sorted({v["seed"] for k, v in runs.items() if k.startswith("finetune_")})
  rows, cells = [], []
  for r in ratios:
    for distill in (False, True):
      keys = [(seed, finetune_key(r, "metaprune", distill, seed)) for seed in seeds]
      setting = "KD" if distill else "plain"
      row = _paired_row(r, setting, f"metaprune - metaprune of {donor_name}",
                        [(seed, 100 * runs[k]["test_accuracy"], 100 * donor_runs[k]["test_accuracy"])
                         for seed, k in keys if k in runs and k in donor_runs])
      if row is not None:
        rows.append(row)
        cells.append([f"{100 * r:g}%", setting, _cell(row)])
  table = _common.markdown_table(["FLOPs budget", "fine-tuning", f"MetaPruning here minus MetaPruning of "
                                  f"{donor_name}, pt"], cells)
  return rows, table


def summarize(store, ratios, original_acc, t_start):
  """Tables, the paired differences, the step comparison, the figure (t_start None: keep the stored wall time)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  runs = store.data["runs"]
  pre, scratch = runs.get("pruningnet_pretrained"), runs.get("pruningnet_scratch")
  search_seconds = {f"{r:g}": runs.get(f"search_{r:g}", {}).get("seconds", float("nan")) for r in ratios}
  rows, summary = [], {}
  for r in ratios:
    st = store.data["structures"][f"{r:g}"]
    for method in METHODS:
      for distill in (False, True):
        sel = [v for k, v in runs.items() if k.startswith("finetune_") and v["ratio"] == r and v["method"] == method
               and v["distill"] == distill]
        if not sel:
          continue
        drop, drop_ci = _ci([v["drop_pt"] for v in sel])
        acc, _ = _ci([100 * v["test_accuracy"] for v in sel])
        ft_s = float(np.mean([v["finetune_seconds"] for v in sel]))
        select_s = {"metaprune": store.data["space"]["reorder_seconds"] + (pre or {}).get("train_seconds", np.nan)
                                 + search_seconds[f"{r:g}"],
                    "l1_uniform": store.data["space"]["reorder_seconds"] + st["baseline_pick_seconds"],
                    "global_magnitude": store.data["space"]["reorder_seconds"] + st["baseline_pick_seconds"],
                    "uniform_scratch": 0.0}[method]
        before = float(np.mean([100 * v["test_accuracy_before_finetune"] for v in sel]))
        label = f"{method}{' + KD' if distill else ''}"
        summary[f"{r:g}/{label}"] = {"ratio": r, "method": method, "distill": distill, "n": len(sel),
                                     "test_accuracy_mean": acc, "drop_pt_mean": drop, "drop_pt_ci95": drop_ci,
                                     "accuracy_before_finetune": before, "select_seconds": select_s,
                                     "finetune_seconds": ft_s, "mflops": st[method]["mflops"],
                                     "flops_ratio": st[method]["flops_ratio"], "params": st[method]["params"]}
        rows.append([f"{100 * r:g}%", label, f"{st[method]['mflops']:.3f} ({100 * st[method]['flops_ratio']:.1f}%)",
                     f"{st[method]['params']:,}", f"{before:.2f}%", f"{acc:.2f}%",
                     f"{drop:+.2f} ± {drop_ci:.2f}", str(len(sel)), f"{select_s:.0f} + {ft_s:.0f}"])
  table = _common.markdown_table(
      ["FLOPs budget", "method", "MFLOPs (of full)", "params", "test acc. before fine-tuning", "test acc. after",
       "drop vs original, pt (95% CI)", "seeds", "wall s: select + fine-tune"], rows)
  steps = {}
  if pre and scratch:
    target = scratch["final_quality"]
    step, secs = steps_to_reach(pre["probe"], target)
    steps = {"scratch_steps": scratch["steps"], "scratch_final_quality": target,
             "scratch_train_seconds": scratch["train_seconds"], "pretrained_steps_trained": pre["steps"],
             "pretrained_quality_at_step0": pre["probe"][0]["quality"], "pretrained_final_quality": pre["final_quality"],
             "pretrained_steps_to_scratch_quality": step, "pretrained_seconds_to_scratch_quality": secs,
             "fraction_of_scratch_steps": None if step is None else step / scratch["steps"]}
  paired, paired_table = paired_differences(runs, ratios)
  if store.data.get("baselines_from"):   # this MetaPruning variant against the donor's MetaPruning, same seeds
    donor = Store(os.path.join(os.path.dirname(store.path), store.data["baselines_from"] + ".json"))
    versus, versus_table = variant_differences(runs, donor.data["runs"], ratios, store.data["baselines_from"])
    paired += versus
    paired_table += "\n\n" + versus_table
  store.data["summary"] = summary
  store.data["paired"] = paired
  store.data["paired_table_md"] = paired_table
  store.data["steps"] = steps
  store.data["table_md"] = table
  if t_start is not None:
    store.data["load_average_after"] = list(os.getloadavg())
    store.data["seconds_this_run"] = time.time() - t_start
    store.data.setdefault("seconds_per_invocation", []).append(store.data["seconds_this_run"])   # resumed runs add up
  store.save()
  print(f"\noriginal test accuracy {100 * original_acc:.2f}%\n\n{table}\n\nPaired by seed:\n\n{paired_table}\n\n"
        f"PruningNet steps: {json.dumps(steps)}")
  try:
    plot(store, ratios)
  except Exception as e:  # pylint: disable=broad-except  (a figure must not lose the JSON)
    print(f"no figure: {e}")


def plot(store, ratios):
  plt = _common.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  summary = store.data["summary"]
  ax = axes[0]
  labels = sorted({v["method"] + (" + KD" if v["distill"] else "") for v in summary.values()},
                  key=lambda l: (METHODS.index(l.split(" ")[0]), l))
  width = 0.8 / max(1, len(ratios))
  for i, r in enumerate(ratios):
    vals = [summary.get(f"{r:g}/{l}", {}) for l in labels]
    ax.bar([j + i * width for j in range(len(labels))], [v.get("drop_pt_mean", 0) for v in vals], width,
           yerr=[v.get("drop_pt_ci95", 0) for v in vals], label=f"{100 * r:g}% FLOPs", capsize=3)
  ax.set_xticks([j + width * (len(ratios) - 1) / 2 for j in range(len(labels))])
  ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
  ax.set_ylabel("accuracy drop vs original (pt, 95% CI)")
  ax.legend()
  ax = axes[1]
  for key, label in (("pruningnet_pretrained", "from the trained model"), ("pruningnet_scratch", "from scratch")):
    run = store.data["runs"].get(key)
    if run:
      ax.plot([p["step"] for p in run["probe"]], [p["quality"] for p in run["probe"]], marker="o", label=label)
  ax.set_xlabel("PruningNet steps")
  ax.set_ylabel("search quality (mean recalibrated search acc.)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.output_dir, FLAGS.name + ".png"), dpi=100)


if __name__ == "__main__":
  app.run(main)
