"""The whole MetaPruning job, stage by stage, resumable: data in, int8 TFLite out.

A run lives in one output folder and goes through the five stages of
`STAGES`; each stage writes its files, then records itself as done in
`stages.json` (an `io.StateFile`, atomically), so a rerun with the same
folder skips every finished stage and continues an interrupted one from its
own checkpoint (`tf_metaprune.training`'s own checkpointer, `backup/state.json`,
for training; the searcher's JSON state for the search):

  1. pruningnet        train the PruningNet (a random structure per step)
                       -> pruningnet/pruningnet.keras, pruningnet/space.json
  2. search            the searcher of `config.searcher` (default: evolutionary)
                       under the budget, and the uniform baseline at the same
                       budget, both scored on the held-out search split after BN
                       recalibration, no fine-tuning
                       -> structure.json, uniform_structure.json, search_state.json
                          (evolutionary; searcher_<name>/ for the others),
                          search_result.json, uniform_result.json, pareto.png
  3. retrain_searched  the searched structure rebuilt as a plain Keras model
                       and trained (from scratch, or from the PruningNet's
                       generated weights) -> model.keras
  4. retrain_uniform   the uniform one, with the same recipe -> uniform.keras
  5. export            both converted to full-integer int8 TFLite, checked
                       against Keras on the test split and timed on this host
                       -> model_int8.tflite, uniform_int8.tflite, export.json
  then report.json and report.md (searched vs uniform).

Every stage records the settings it was computed with. A rerun whose settings
differ for a finished stage stops before any work, naming the settings, so
results of different settings never mix; settings of stages not yet done may
change (e.g. retrain longer after looking at the search).

Example:

  >>> config = PipelineConfig(model="small_cnn", flops_ratio=0.5, pruningnet_epochs=3)
  >>> report = run(config, "runs/metaprune")        # doctest: +SKIP
  >>> print(format_report(report))                  # doctest: +SKIP
"""

import dataclasses
import os
import time
from typing import Any, Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from tf_metaprune import budgets
from tf_metaprune import calibration
from tf_metaprune import data as data_lib
from tf_metaprune import distribute
from tf_metaprune import flops
from tf_metaprune import io as io_lib
from tf_metaprune import latency_lut
from tf_metaprune import models
from tf_metaprune import pretrained
from tf_metaprune import pruning_net
from tf_metaprune import search as search_lib
from tf_metaprune import space as space_lib
from tf_metaprune import stats
from tf_metaprune import training
from tf_metaprune.rebuild import rebuild as rebuild_model
from tf_metaprune.rebuild import with_output_activation
from tf_metaprune.search import dispatch
from tf_metaprune.stats import seed_verdict  # pylint: disable=unused-import  (old import path)
from tf_metaprune.stats import t_interval95  # pylint: disable=unused-import  (old import path)
import tflite_export

STAGES = ("pruningnet", "search", "retrain_searched", "retrain_uniform", "export")
# A run that prunes a trained model (`keras_model`) also retrains the peers' baselines.
PRETRAINED_STAGES = ("pruningnet", "search", "retrain_searched", "retrain_uniform", "retrain_global_magnitude",
                     "retrain_uniform_scratch", "export")
# The retrained rows of a report: (key, structure file, model file, TFLite file).
_ROWS = (("searched", "structure.json", "model.keras", "model_int8.tflite"),
         ("uniform", "uniform_structure.json", "uniform.keras", "uniform_int8.tflite"))
_PRETRAINED_ROWS = _ROWS + (
    ("global_magnitude", "global_magnitude_structure.json", "global_magnitude.keras", "global_magnitude_int8.tflite"),
    ("uniform_scratch", "uniform_structure.json", "uniform_scratch.keras", "uniform_scratch_int8.tflite"))
_STAGES_FILE = "stages.json"
_STAGES_FORMAT = "tf_metaprune.PipelineStages"

# Which settings each stage's results depend on (cumulative along the stages).
_DATA_KEYS = ("dataset", "input_size", "batch_size", "max_examples", "seed", "skip_bad_images")
_NET_KEYS = ("keras_model", "importance", "recalibrate_original", "model", "width_multiplier", "min_width_ratio",
             "width_step", "divisor",
             "small_input", "stage_repeats", "full_width_classifier_input", "pruningnet_epochs",
             "pruningnet_learning_rate", "pruningnet_optimizer", "hidden_units", "bn_mode", "bn_affine", "sampling")
_SEARCH_KEYS = ("searcher", "max_mflops", "flops_ratio", "min_flops_ratio", "max_params", "max_latency_ms",
                "latency_table", "population_size", "num_generations", "calibration_batches", "search_images",
                "rescore_top_k", "search_metric")
_RETRAIN_KEYS = ("retrain_epochs", "retrain_learning_rate", "retrain_optimizer", "init", "distill",
                 "distill_temperature", "distill_weight")
_EXPORT_KEYS = ("export_num_runs", "export_num_threads", "export_calibration_batches")
_STAGE_KEYS = {
    "pruningnet": _DATA_KEYS + _NET_KEYS,
    "search": _DATA_KEYS + _NET_KEYS + _SEARCH_KEYS,
    "retrain_searched": _DATA_KEYS + _NET_KEYS + _SEARCH_KEYS + _RETRAIN_KEYS,
    "retrain_uniform": _DATA_KEYS + _NET_KEYS + _SEARCH_KEYS + _RETRAIN_KEYS,
    "retrain_global_magnitude": _DATA_KEYS + _NET_KEYS + _SEARCH_KEYS + _RETRAIN_KEYS,
    "retrain_uniform_scratch": _DATA_KEYS + _NET_KEYS + _SEARCH_KEYS + _RETRAIN_KEYS,
    "export": _DATA_KEYS + _NET_KEYS + _SEARCH_KEYS + _RETRAIN_KEYS + _EXPORT_KEYS,
}
# Where an unfinished stage keeps what it has done so far.
_CHECKPOINTS = {"pruningnet": ("pruningnet",), "search": ("search_state.json",),
                "retrain_searched": ("retrain", "searched"), "retrain_uniform": ("retrain", "uniform"),
                "retrain_global_magnitude": ("retrain", "global_magnitude"),
                "retrain_uniform_scratch": ("retrain", "uniform_scratch"),
                "export": ("export.json",)}


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Every setting of a MetaPruning run (the flags of `examples/metaprune.py`).

  These defaults are the binaries' defaults too (an unset flag means the value
  here). The training budgets default to None: `sized_for(config, splits)`
  turns them into epochs from the training set's size, so the `make demo`
  recipe (MNIST subset) keeps its steps and a 54,000-image dataset trains one
  epoch per stage instead of 15 (`run` and the stage binaries call it).

  Attributes:
    dataset: "mnist_subset" (offline default), "tfds:NAME" or "folder:PATH".
    input_size: resize images to this square size (None: keep).
    batch_size: batch size of every stage.
    max_examples: use at most this many examples of the dataset (None: all).
    seed: seed of the data split, structure sampling, search and retraining.
    skip_bad_images: a folder dataset's unreadable images are skipped with a
      warning instead of stopping the run before any work.
    keras_model: path of a trained Keras model (.keras) to prune instead of
      a family: its space is `SearchSpace.from_keras_model`, its channels are
      reordered by `importance`, the PruningNet starts from its weights
      (`tf_metaprune.pretrained`), and the peers' baselines are retrained
      beside the searched structure: L1-norm pruning at uniform width (the
      "uniform" row, with init="pretrained"), global magnitude pruning and
      the uniform structure from scratch. `model`, `width_multiplier`,
      `small_input` and `stage_repeats` do not apply then.
    importance: "l1" (filter L1 norms, default) or "bn_gamma" (batch-norm
      |gamma|): how a trained model's channels are ranked.
    recalibrate_original: before anything trains, `keras_model` is scored on
      the same training images in inference mode and with batch statistics
      (`pretrained.batch_norm_check`); when inference mode is more than
      `BN_LAG_WARNING_POINTS` lower its batch norms are stale, the run says
      so and (True, default) recalibrates them on the training images, so
      the original's accuracy, every row's drop, the PruningNet's start and
      init="pretrained" all use the recalibrated model. False: the check
      still warns, but the model is used as saved.
    model: a family of `tf_metaprune.models` (e.g. "mobilenet_v2").
    width_multiplier: base width multiplier of the family (not small_cnn).
    min_width_ratio: the smallest per-layer width ratio a gene may take; the
      choices are the paper's ratios 0.10, 0.13, ..., 1.00 from this value up.
    width_step: the step of that grid (paper 0.03; 0.01 gives a finer grid,
      so a uniform width ratio can land inside a narrow FLOPs window).
    divisor: channel counts are rounded to multiples of it (1 for small nets:
      with 8, a 16-channel layer can only be 8 or 16 wide).
    full_width_classifier_input: keep the layer feeding the classifier at
      full width, as the reference does (small_cnn: the last conv;
      mobilenet_v2: the last 1x1 conv; resnets and mobilenet_v1 keep their
      last stage full already).
    small_input: MobileNets / ResNet-50 only: keep early strides at 1 for
      small images (None: decide from the image size, under 96 px = yes).
    stage_repeats: mobilenet_v2 only: blocks per stage as "1,2,2,2,1,1,1"
      (None: the paper's 1,2,3,4,3,3,1).
    pruningnet_epochs, pruningnet_learning_rate, pruningnet_optimizer: the
      PruningNet's training (cosine decay; "sgd" or "adam"). None (default):
      sized by the training set, `PRUNINGNET_IMAGES` images in all (`sized_for`:
      15 epochs of the 3,600-image MNIST subset, 1 of Fashion-MNIST's 54,000).
    hidden_units: generator hidden size (paper 32; 0 = weight sharing).
    bn_mode: "shared" or "switchable" batch-norm affine parameters.
    bn_affine: learn the PruningNet's batch-norm gamma/beta at all (True,
      default); False is the reference's non-affine BN for ResNet and
      MobileNetV2 (each structure's scale and shift then come from its
      recalibrated statistics only). `benchmarks/fashion_ablation.py`
      measures both on Fashion-MNIST.
    sampling: "random" (MetaPruning) or "sandwich" structures per step.
    max_mflops / flops_ratio / max_params / max_latency_ms: the budget; `run`
      needs at least one (flops_ratio is a fraction of the full-width MFLOPs;
      max_latency_ms needs `latency_table`, a LatencyTable JSON file).
    min_flops_ratio: the lower end of the FLOPs window of a `flops_ratio`
      budget, also a fraction of the full-width MFLOPs. None (default) means
      `DEFAULT_WINDOW` (0.9) x flops_ratio; 0 means no lower bound. Searched
      and uniform structures both land inside [min_flops_ratio, flops_ratio],
      so "equal FLOPs" holds (the reference's ResNet search uses the window
      1950-2050 MFLOPs). Without one, a search whose fitness is coarse returned
      a 21.9%-FLOPs structure for a 50% budget.
    searcher: "evolutionary" (MetaPruning, the default), "autoslim", "pas",
      "rl" or "uniform" (`tf_metaprune.search.SEARCHERS`); the uniform
      baseline is reported beside it whatever the searcher.
    population_size, num_generations: evolutionary search size (paper 50, 20).
    calibration_batches: training batches for BN recalibration per candidate.
    search_images: score search candidates on at most this many images of the
      search split (None: all); with `rescore_top_k` the final best few are
      re-scored on the whole split before the pick. Default `SEARCH_IMAGES`
      (1,024), so the search costs about what the PruningNet's training does
      (`SEARCH_IMAGES` says why); the MNIST subset's 400 are all scored.
    rescore_top_k: re-score the search's best k on the whole search split
      with 4x the calibration batches and pick the best of them (0: off).
      None (default): `RESCORE_TOP_K` when `search_images` leaves part of the
      search split out, else 0 (`sized_for`).
    search_metric: what the search ranks structures by
      (`tf_metaprune.calibration.SearchMetric`): None or "accuracy" (top-1,
      MetaPruning's), "loss" (the training loss), or any Keras metric or
      loss name, e.g. "sparse_categorical_crossentropy" (applied to logits).
    retrain_epochs, retrain_learning_rate, retrain_optimizer: the recipe that
      trains both the searched and the uniform structure. None (default):
      `RETRAIN_IMAGES` images per structure (8 epochs of the MNIST subset, 1
      of Fashion-MNIST).
    init: "scratch" (fresh weights, the paper), "generated" (start from the
      PruningNet's generated weights) or "pretrained" (the trained model's
      most important channels; needs `keras_model`).
    distill: retrain with knowledge distillation from `keras_model`
      (`tf_metaprune.training.Distiller`); distill_temperature and
      distill_weight are its T and its share of the loss.
    export_num_runs, export_num_threads: TFLite latency timing.
    export_calibration_batches: training batches calibrating int8 ranges.
  """
  dataset: str = "mnist_subset"
  input_size: Optional[int] = None
  batch_size: int = 32
  max_examples: Optional[int] = None
  seed: int = 0
  skip_bad_images: bool = False
  keras_model: Optional[str] = None
  importance: str = "l1"
  recalibrate_original: bool = True
  model: str = "mobilenet_v2"
  width_multiplier: float = 1.0
  min_width_ratio: float = 0.1
  width_step: float = 0.03
  divisor: int = 8
  full_width_classifier_input: bool = False
  small_input: Optional[bool] = None
  stage_repeats: Optional[str] = None
  pruningnet_epochs: Optional[int] = None   # None: sized_for (PRUNINGNET_IMAGES)
  pruningnet_learning_rate: float = 0.003
  pruningnet_optimizer: str = "adam"
  hidden_units: int = 8
  bn_mode: str = "shared"
  bn_affine: bool = True
  sampling: str = "random"
  max_mflops: Optional[float] = None
  flops_ratio: Optional[float] = None
  min_flops_ratio: Optional[float] = None
  max_params: Optional[int] = None
  max_latency_ms: Optional[float] = None
  latency_table: Optional[str] = None
  searcher: str = "evolutionary"
  population_size: int = 50
  num_generations: int = 12
  calibration_batches: int = 4
  search_images: Optional[int] = 1024
  rescore_top_k: Optional[int] = None
  search_metric: Optional[str] = None
  retrain_epochs: Optional[int] = None
  retrain_learning_rate: float = 0.003
  retrain_optimizer: str = "adam"
  init: str = "scratch"
  distill: bool = False
  distill_temperature: float = 4.0
  distill_weight: float = 0.5
  export_num_runs: int = 100
  export_num_threads: int = 1
  export_calibration_batches: int = 8

  def __post_init__(self):
    def bad(name, why):
      raise ValueError(f"PipelineConfig({name}={getattr(self, name)!r}): {why}")

    for name in ("pruningnet_epochs", "retrain_epochs"):
      v = getattr(self, name)
      if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
        bad(name, "must be None (sized by the training set: sized_for) or an integer >= 1")
    for name in ("batch_size", "population_size", "num_generations", "calibration_batches", "export_num_runs",
                 "export_num_threads", "export_calibration_batches",
                 "divisor"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        bad(name, "must be an integer >= 1")
    for name in ("skip_bad_images", "bn_affine", "full_width_classifier_input", "recalibrate_original"):
      if not isinstance(getattr(self, name), (bool, np.bool_)):
        bad(name, "must be True or False")
    if self.hidden_units < 0:
      bad("hidden_units", "must be >= 0 (0 = plain weight sharing)")
    for name in ("input_size", "max_examples", "search_images"):
      v = getattr(self, name)
      if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
        bad(name, "must be None or an integer >= 1")
    if not 0.1 - 1e-9 <= float(self.min_width_ratio) <= 1.0:
      bad("min_width_ratio", "must be in [0.1, 1.0] (the paper's ratios run from 0.10 to 1.00)")
    for name in ("pruningnet_learning_rate", "retrain_learning_rate", "width_multiplier"):
      v = float(getattr(self, name))
      if not v > 0 or not np.isfinite(v):
        bad(name, "must be a finite number > 0")
    for name in ("pruningnet_optimizer", "retrain_optimizer"):
      if getattr(self, name) not in ("sgd", "adam"):
        bad(name, "must be 'sgd' or 'adam'")
    if self.bn_mode not in ("shared", "switchable"):
      bad("bn_mode", "must be 'shared' or 'switchable'")
    if self.sampling not in ("random", "sandwich"):
      bad("sampling", "must be 'random' or 'sandwich'")
    if self.searcher not in dispatch.SEARCHERS:
      bad("searcher", f"must be one of {dispatch.SEARCHERS}")
    if self.init not in ("scratch", "generated", "pretrained"):
      bad("init", "must be 'scratch' (fresh weights), 'generated' (the PruningNet's weights) or 'pretrained' (the "
          "trained keras_model's most important channels)")
    if self.keras_model is None and (self.init == "pretrained" or self.distill):
      raise ValueError(f"PipelineConfig(init={self.init!r}, distill={self.distill!r}): init='pretrained' and "
                       "distillation start from a trained model; give keras_model (--keras_model=PATH.keras)")
    if self.keras_model is not None and os.path.isdir(self.keras_model):
      bad("keras_model", "is a folder, not a model file; pass the .keras file that model.save('model.keras') wrote "
          "(a SavedModel folder: load it in Keras and save it as .keras)")
    if self.keras_model is not None and not os.path.isfile(self.keras_model):
      bad("keras_model", "no such file; save your trained model with model.save('model.keras')")
    if self.importance not in ("l1", "bn_gamma"):
      bad("importance", "must be 'l1' (filter L1 norms) or 'bn_gamma' (batch-norm |gamma|)")
    if not float(self.distill_temperature) > 0:
      bad("distill_temperature", "must be > 0")
    if not 0.0 <= float(self.distill_weight) <= 1.0:
      bad("distill_weight", "must be in [0, 1] (the distillation term's share of the loss)")
    if self.max_mflops is not None and self.flops_ratio is not None:
      raise ValueError(f"PipelineConfig(max_mflops={self.max_mflops!r}, flops_ratio={self.flops_ratio!r}): give "
                       "one of the two FLOPs limits, not both")
    if self.flops_ratio is not None and not 0.0 < float(self.flops_ratio) <= 1.0:
      bad("flops_ratio", "must be in (0, 1]: a fraction of the full-width network's FLOPs")
    if self.min_flops_ratio is not None:
      if self.flops_ratio is None:
        bad("min_flops_ratio", "needs flops_ratio (the window's upper end); set --flops_ratio too, or drop it")
      if not 0.0 <= float(self.min_flops_ratio) < float(self.flops_ratio):
        bad("min_flops_ratio", f"must be in [0, flops_ratio={self.flops_ratio}): the lower end of the FLOPs "
            "window (0 = no lower bound)")
    if not 0.0 < float(self.width_step) <= 0.9:
      bad("width_step", "must be in (0, 0.9], e.g. 0.03 (the paper) or 0.01")
    if self.rescore_top_k is not None and (isinstance(self.rescore_top_k, bool) or not isinstance(
        self.rescore_top_k, (int, np.integer)) or self.rescore_top_k < 0):
      bad("rescore_top_k", "must be None (sized: sized_for) or an integer >= 0 (0 = no re-scoring)")
    if self.search_metric is not None:
      try:
        pipeline_search_metric(self.search_metric)
      except ValueError as e:
        bad("search_metric", str(e))
    for name in ("max_mflops", "max_params", "max_latency_ms"):
      v = getattr(self, name)
      if v is not None and not float(v) > 0:
        bad(name, "must be > 0")
    if (self.max_latency_ms is None) != (self.latency_table is None):
      raise ValueError(f"PipelineConfig(max_latency_ms={self.max_latency_ms!r}, latency_table="
                       f"{self.latency_table!r}): a latency budget needs a latency table (measure one with "
                       "tflite_export.measure_latency_table) and a table needs max_latency_ms")
    if self.latency_table is not None and not os.path.isfile(self.latency_table):
      bad("latency_table", "no such file; measure a table with examples/export_tflite.py's LUT tools or "
          "tflite_export.measure_latency_table")

  def get_config(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_config(cls, config: Dict[str, Any]) -> "PipelineConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - known)
    if unknown:
      raise ValueError(f"PipelineConfig.from_config: unknown settings {unknown}; known ones are {sorted(known)}")
    return cls(**config)

  def replace(self, **changes) -> "PipelineConfig":
    return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------
# Building blocks (also used by examples/train_pruningnet.py, search.py and retrain.py).


#: Training images the PruningNet sees by default (`sized_for`): the `make demo` recipe, 15 epochs of the
#: 3,600-image MNIST subset at batch 32 (1,700 steps, what its MobileNetV2 needs to learn under structure
#: switching); on Fashion-MNIST's 54,000 training images it is one epoch.
PRUNINGNET_IMAGES = 54_000
#: Training images each retrained structure sees by default: the demo's 8 epochs of the MNIST subset (one
#: epoch of Fashion-MNIST; a trained model's kept channels need little fine-tuning).
RETRAIN_IMAGES = 28_800


#: Search images each candidate is scored on by default. Measured (benchmarks/search_cost.py, the keras.applications
#: MobileNetV2 0.35 of issue 23 on Fashion-MNIST at 32 px, batch 32): a candidate costs 0.045 s + 0.71 ms per search
#: image, a PruningNet step 9.3 ms per image (0.30 s a batch), so 50 x 12 = 600 candidates on 1,024 images cost
#: 0.92x the PruningNet's 54,000 training images, and on the whole 6,000-image split 5.1x (issue 23's 317 s
#: search after a 130 s PruningNet). The best `RESCORE_TOP_K` are then re-scored on the whole split (5 x 6,000
#: images: 0.04x more), so the pick is not decided by 1,024 images alone.
SEARCH_IMAGES = 1024
RESCORE_TOP_K = 5


def epochs_for(images, num_train):
  """Epochs of a `num_train`-image training set that see about `images` images (at least 1)."""
  return max(1, int(round(float(images) / max(1, int(num_train)))))


def sized_for(config: PipelineConfig, splits) -> PipelineConfig:
  """`config` with its unset training budgets (None) turned into epochs of `splits.train`.

  pruningnet_epochs: `PRUNINGNET_IMAGES` images; retrain_epochs:
  `RETRAIN_IMAGES` per structure; rescore_top_k: `RESCORE_TOP_K` if
  `search_images` scores only part of the search split, else 0. Values
  already set are kept, so a sized config sizes to itself.
  """
  num_train = splits.num_examples["train"]
  changes = {}
  if config.pruningnet_epochs is None:
    changes["pruningnet_epochs"] = epochs_for(PRUNINGNET_IMAGES, num_train)
  if config.retrain_epochs is None:
    changes["retrain_epochs"] = epochs_for(RETRAIN_IMAGES, num_train)
  if config.rescore_top_k is None:
    partial = config.search_images is not None and config.search_images < splits.num_examples["search"]
    changes["rescore_top_k"] = RESCORE_TOP_K if partial else 0
  return config.replace(**changes) if changes else config


#: The default lower end of a `flops_ratio` budget's window, as a fraction of the limit: 0.9 keeps the
#: uniform baseline of every built-in family on its default grid inside the window at 25% (and the
#: small CNN's at 10% too) while leaving the search a band of structures to choose from (measured: 1-7%
#: of random structures fall in it); the reference's ResNet window is +-2.5%.
DEFAULT_WINDOW = 0.9


def width_ratios(min_width_ratio, width_step=0.03):
  """The width ratios 0.10, 0.10 + step, ..., 1.00 (the paper's with step 0.03) from `min_width_ratio` up."""
  if abs(float(width_step) - 0.03) < 1e-12:
    grid = space_lib.PAPER_WIDTH_RATIOS
  else:
    count = int(round(0.9 / float(width_step)))
    grid = tuple(sorted({round(min(1.0, 0.10 + float(width_step) * i), 4) for i in range(count + 1)} | {1.0}))
  ratios = tuple(r for r in grid if r >= float(min_width_ratio) - 1e-9)
  return ratios or (1.0,)


def load_data(config: PipelineConfig):
  """The dataset splits of a run (`tf_metaprune.data.load_dataset`)."""
  return data_lib.load_dataset(config.dataset, batch_size=config.batch_size, input_size=config.input_size,
                               seed=config.seed, max_examples=config.max_examples,
                               skip_bad_images=config.skip_bad_images)


def build_space(config: PipelineConfig, input_shape, num_classes):
  """The search space of `config.model` for images of `input_shape`."""
  family = models.get(config.model)
  kwargs = dict(width_ratios=width_ratios(config.min_width_ratio, config.width_step), divisor=config.divisor)
  if config.full_width_classifier_input:
    if config.model == "small_cnn":
      kwargs["prune_last"] = False
    elif config.model == "mobilenet_v2":
      kwargs["prune_last_conv"] = False
    # resnets and mobilenet_v1 keep their last stage at full width by default.
  if config.small_input is not None:
    if config.model not in ("mobilenet_v1", "mobilenet_v2", "resnet50"):
      raise ValueError(f"small_input={config.small_input!r} applies to mobilenet_v1, mobilenet_v2 and resnet50, "
                       f"not {config.model!r}; leave it unset")
    kwargs["small_input"] = bool(config.small_input)
  if config.stage_repeats is not None:
    if config.model != "mobilenet_v2":
      raise ValueError(f"stage_repeats={config.stage_repeats!r} applies to mobilenet_v2 only, not {config.model!r}")
    try:
      kwargs["stage_repeats"] = tuple(int(r) for r in str(config.stage_repeats).split(","))
    except ValueError:
      raise ValueError(f"stage_repeats={config.stage_repeats!r} must be 7 comma-separated integers, e.g. "
                       "'1,2,2,2,1,1,1'") from None
  if config.model != "small_cnn":
    kwargs["width_multiplier"] = config.width_multiplier
  elif config.width_multiplier != 1.0:
    raise ValueError(f"width_multiplier={config.width_multiplier!r} does not apply to small_cnn (its channels are "
                     "fixed); leave it at 1.0 or pick another --model")
  return family(input_shape=tuple(input_shape), num_classes=int(num_classes), **kwargs)


def build_budget(space, max_mflops=None, flops_ratio=None, max_params=None, max_latency_ms=None,
                 latency_table=None, min_flops_ratio=None):
  """One budget from the budget settings (several limits -> `AllOf`), checked against `space`.

  `flops_ratio` gets a FLOPs window: at least `min_flops_ratio` of the full
  width (None: `DEFAULT_WINDOW` x flops_ratio; 0: no lower bound).

  Raises:
    ValueError: for no limit, or a limit below the smallest structure of the
      space (the message gives the minimum).
  """
  parts = []
  if flops_ratio is not None:
    low = DEFAULT_WINDOW * float(flops_ratio) if min_flops_ratio is None else float(min_flops_ratio)
    parts.append(budgets.FlopsBudget.from_ratio(space, flops_ratio, min_ratio=low if low > 0 else None))
  if max_mflops is not None:
    parts.append(budgets.FlopsBudget(max_mflops=max_mflops))
  if max_params is not None:
    parts.append(budgets.ParamsBudget(max_params=max_params))
  if max_latency_ms is not None:
    if latency_table is None:
      raise ValueError(f"max_latency_ms={max_latency_ms!r} needs a latency table (a LatencyTable JSON file)")
    table = budgets.LatencyTable.load(latency_table) if isinstance(latency_table, str) else latency_table
    parts.append(budgets.LatencyBudget(max_ms=max_latency_ms, lut=table))
  if not parts:
    raise ValueError("no budget given: set max_mflops, flops_ratio, max_params or max_latency_ms (e.g. "
                     "flops_ratio=0.5 for half the full-width FLOPs)")
  budget = parts[0] if len(parts) == 1 else budgets.AllOf(*parts)
  budget.check(space)
  return budget


def config_budget(config: PipelineConfig, space):
  """The run's budget; raises at once (before any training) if the uniform baseline cannot meet it.

  Under a FLOPs window the uniform baseline must land inside it; on a coarse grid (`divisor=8`) it may not,
  and finding that out after the search would waste the PruningNet's training.
  """
  budget = build_budget(space, max_mflops=config.max_mflops, flops_ratio=config.flops_ratio,
                        max_params=config.max_params, max_latency_ms=config.max_latency_ms,
                        latency_table=config.latency_table, min_flops_ratio=config.min_flops_ratio)
  search_lib.largest_uniform(space, budget)
  return budget


def save_model_atomic(model, path):
  """`model.save(path)` through a temporary file, so a kill never leaves half a model."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = io_lib.temp_path_for(path, ".keras")
  try:
    model.save(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def _scope(strategy):
  return (strategy or tf.distribute.get_strategy()).scope()


def _is_chief(strategy):
  if strategy is None:
    return True
  return distribute.is_chief(strategy)


def train_pruning_net(config: PipelineConfig, splits, space, output_dir, verbose=1, strategy=None, trained=None):
  """Trains a PruningNet of `space` into `output_dir` (resumes an interrupted run).

  Args:
    trained: a `tf_metaprune.pretrained.TrainedModel`: the net starts from
      its reordered weights (at full width it is that model).

  Returns:
    (net, history dict).
  """
  config = sized_for(config, splits)
  keras.utils.set_random_seed(config.seed)
  net_kwargs = dict(hidden_units=config.hidden_units, bn_mode=config.bn_mode, bn_affine=bool(config.bn_affine),
                    seed=config.seed, sampling=config.sampling)
  with _scope(strategy):
    net = (pruning_net.PruningNet(space, **net_kwargs) if trained is None else trained.pruning_net(**net_kwargs))
  # A fresh copy of the training split: its order must not depend on what this process read before (a
  # resumed run may skip earlier stages).
  history = training.fit(net, splits.fresh_train(), epochs=config.pruningnet_epochs,
                         learning_rate=config.pruningnet_learning_rate, optimizer=config.pruningnet_optimizer,
                         output_dir=output_dir, verbose=verbose)
  return net, history


def retrain(config: PipelineConfig, splits, space, structure, output_dir, net=None, verbose=1, strategy=None,
            trained=None, init=None):
  """Rebuilds `structure` as a plain Keras model and trains it with the run's recipe.

  Args:
    config: the run's settings (retrain_* and init).
    splits: the dataset splits (trained on `.train`, scored on `.test`).
    space, structure: what to rebuild.
    output_dir: the training checkpoints (an interrupted retraining resumes).
    net: the trained PruningNet, needed for `init="generated"`.
    trained: the `tf_metaprune.pretrained.TrainedModel` of `config.keras_model`,
      needed for `init="pretrained"` and `config.distill` (the teacher).
    init: overrides `config.init` (the uniform-from-scratch baseline).
    strategy: a `tf.distribute` strategy the model is built under (None:
      the default one).

  Returns:
    (model, {"history", "test_accuracy", "test_loss", "params", "mflops"}); the model outputs logits (save
    `tf_metaprune.rebuild.with_output_activation(model, space)` for a space read from a softmax head).
  """
  config = sized_for(config, splits)
  keras.utils.set_random_seed(config.seed)
  init = init or config.init
  if (init == "pretrained" or config.distill) and trained is None:
    raise ValueError("init='pretrained' and distill need the trained model (keras_model) to start from")
  if init == "pretrained":
    with _scope(strategy):
      model = trained.rebuild(structure, bn_momentum=0.9)
  elif init == "generated":
    if net is None:
      raise ValueError("init='generated' needs the trained PruningNet to take the weights from")
    calibration.recalibrate(net, structure, splits.calibration, num_batches=config.calibration_batches)
    with _scope(strategy):
      model = rebuild_model(net, structure, bn_momentum=0.9)
  else:
    with _scope(strategy):
      model = rebuild_model(space, structure, bn_momentum=0.9)
  distill = dict(teacher=trained.logits_model(), distill_temperature=config.distill_temperature,
                 distill_weight=config.distill_weight) if config.distill else {}
  # fit() recalibrates the batch norms on the training images (fixed order, no augmentation) after training.
  history = training.fit(model, splits.fresh_train(), epochs=config.retrain_epochs,
                         learning_rate=config.retrain_learning_rate, optimizer=config.retrain_optimizer,
                         output_dir=output_dir, verbose=verbose, bn_data=splits.calibration, **distill)
  loss, acc = model.evaluate(splits.test, verbose=0)
  # The same training images in inference mode against the last epoch's training accuracy (batch statistics):
  # batch norms whose statistics lag their weights show as a gap here, whatever the test accuracy.
  _, train_inference_acc = model.evaluate(splits.calibration, verbose=0)
  return model, {"history": history, "test_accuracy": float(acc), "test_loss": float(loss),
                 "train_accuracy_inference": float(train_inference_acc),
                 "train_accuracy_last_epoch": float(history["accuracy"][-1]) if history.get("accuracy") else None,
                 "params": int(model.count_params()), "mflops": float(space.mflops(structure))}


def _diff(then, now):
  """"k: old -> new" for every setting of `now` that differs in `then` ('' if none)."""
  # A setting added after `then` was recorded counts as its default there (old runs stay resumable).
  defaults = {f.name: f.default for f in dataclasses.fields(PipelineConfig)}
  diff = {k: (then.get(k, defaults.get(k)), v) for k, v in now.items() if then.get(k, defaults.get(k)) != v}
  return ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))


class TrainingRun:
  """A folder holding one PruningNet training (examples/train_pruningnet.py).

  Files: run.json (settings), backup/ (tf_metaprune.training's checkpoint), logs/
  (TensorBoard), last.weights.h5, history.json, space.json and, once
  finished, pruningnet.keras.

  Args:
    output_dir: the folder.
    config: the settings (data, model and PruningNet ones are used).
    resume: continue a run already in the folder. Without it a folder that
      holds a run is refused, so a finished net is never overwritten by
      accident; with it, a run with other settings is refused.

  Raises:
    ValueError / PermissionError: as above, or for a folder not writable.
  """

  def __init__(self, output_dir, config: PipelineConfig, resume=False):
    self.output_dir = str(output_dir)
    self.config = config
    self.settings = {k: getattr(config, k) for k in _STAGE_KEYS["pruningnet"]}
    self.net_path = os.path.join(self.output_dir, "pruningnet.keras")
    marks = [f for f in ("run.json", "backup", "pruningnet.keras") if os.path.exists(os.path.join(self.output_dir, f))]
    if marks and not resume:
      raise ValueError(f"output_dir={self.output_dir!r} already holds a PruningNet run ({', '.join(marks)}); pass "
                       "--resume (resume=True) to continue it with the same settings, or choose another output_dir")
    run_json = os.path.join(self.output_dir, "run.json")
    if os.path.exists(run_json):
      recorded = io_lib.read_json(run_json, "PruningNet run file").get("config", {})
      changed = _diff(recorded, self.settings)
      if changed:
        raise ValueError(f"--resume: the run in {self.output_dir!r} was started with other settings ({changed}); "
                         "resume with the same flags, or train into a new output_dir")
    io_lib.check_writable_dir(self.output_dir, "output_dir")

  @property
  def finished(self):
    return os.path.exists(self.net_path)

  def train(self, splits, space, verbose=1, strategy=None, trained=None):
    """Trains (or resumes, or loads the finished) PruningNet; returns it.

    Under a multi-worker strategy every worker calls this; only the chief
    writes the files (all workers must see the same `output_dir`).
    """
    if self.finished:
      print(f"{self.net_path} is finished already: loading it (delete it to train again)")
      with _scope(strategy):
        net = keras.saving.load_model(self.net_path)
      if net.space.fingerprint() != space.fingerprint():
        raise ValueError(f"{self.net_path!r} holds a net of another search space ({net.space.name}); use a new "
                         "output_dir")
      return net
    chief = _is_chief(strategy)
    if chief:
      io_lib.write_json_atomic(os.path.join(self.output_dir, "run.json"),
                               {"format": "tf_metaprune.PruningNetRun", "config": self.config.get_config(),
                                "dataset": splits.get_config()})
      io_lib.write_text_atomic(os.path.join(self.output_dir, "space.json"), space.to_json())
    net, history = train_pruning_net(self.config, splits, space, self.output_dir, verbose=verbose,
                                     strategy=strategy, trained=trained)
    if chief:
      io_lib.write_json_atomic(os.path.join(self.output_dir, "history.json"), history)
      save_model_atomic(net, self.net_path)
    return net


def load_training_run(pruningnet_dir, strategy=None):
  """(PipelineConfig, PruningNet) of a finished `TrainingRun` folder.

  Raises:
    ValueError: if the folder holds no finished PruningNet run.
  """
  run_json = os.path.join(str(pruningnet_dir), "run.json")
  net_path = os.path.join(str(pruningnet_dir), "pruningnet.keras")
  if not os.path.exists(net_path) or not os.path.exists(run_json):
    raise ValueError(f"{pruningnet_dir!r} holds no finished PruningNet (pruningnet.keras and run.json); train one "
                     "with examples/train_pruningnet.py --output_dir=... (or finish it with --resume)")
  config = PipelineConfig.from_config(io_lib.read_json(run_json, "PruningNet run file")["config"])
  with _scope(strategy):
    net = keras.saving.load_model(net_path)
  return config, net


# ---------------------------------------------------------------------------------------------
# The run.


class Run:
  """One output folder: its stages, their settings, and the files they made.

  `Run(output_dir, config).check()` compares the settings of every finished
  stage with `config` and raises before anything is computed.
  """

  def __init__(self, output_dir, config: PipelineConfig):
    self.output_dir = str(output_dir)
    self.config = config
    self.path = os.path.join(self.output_dir, _STAGES_FILE)
    self.stages = {}
    # Finished stages carry their own settings (checked by `check`), so the file's identity is empty.
    self.state_file = io_lib.StateFile(self.path, _STAGES_FORMAT, {}, what="pipeline stages file")
    state = self.state_file.load()
    if state is not None:
      self.stages = dict(state.get("stages", {}))
    elif os.path.isdir(self.output_dir) and os.listdir(self.output_dir):
      known = set(STAGES) | {"pruningnet", "retrain", "config.json", _STAGES_FILE, "search_state.json"}
      foreign = sorted(f for f in set(os.listdir(self.output_dir)) - known if not f.startswith("searcher_"))
      if foreign:
        raise ValueError(f"output_dir={self.output_dir!r} is not empty and holds no pipeline run ({foreign[:5]}); "
                         "pick a new or empty folder, so nothing of yours is overwritten")

  def file(self, *parts):
    return os.path.join(self.output_dir, *parts)

  def stage_settings(self, stage):
    return {k: getattr(self.config, k) for k in _STAGE_KEYS[stage]}

  def check(self):
    """Raises ValueError if a finished stage was computed with other settings."""
    for stage, record in self.stages.items():
      if stage not in _STAGE_KEYS:
        continue
      listed = _diff(record.get("settings", {}), self.stage_settings(stage))
      if listed:
        raise ValueError(
            f"{self.output_dir!r} holds a run whose finished stage {stage!r} used other settings ({listed}); "
            f"rerun with the same settings to resume, or use a new output_dir (or delete "
            f"{self.output_dir!r} to start over)")
    pending = [s for s in stage_names(self.config) if s not in self.stages]
    started = self.file("config.json")
    if pending and os.path.exists(started) and os.path.exists(self.file(*_CHECKPOINTS[pending[0]])):
      recorded = io_lib.read_json(started, "pipeline config file").get("config", {})
      listed = _diff(recorded, self.stage_settings(pending[0]))
      if listed:
        raise ValueError(
            f"{self.output_dir!r} holds an interrupted stage {pending[0]!r} started with other settings "
            f"({listed}); rerun with the same settings to resume it, or delete "
            f"{self.file(*_CHECKPOINTS[pending[0]])!r} to restart that stage with the new ones")
    io_lib.check_writable_dir(self.output_dir, "output_dir")

  def done(self, stage):
    return stage in self.stages

  def finish(self, stage, seconds, **extra):
    self.stages[stage] = dict(settings=self.stage_settings(stage), seconds=float(seconds),
                              finished=time.strftime("%Y-%m-%d %H:%M:%S"), **extra)
    self.state_file.save(stages=self.stages)


def stage_names(config: PipelineConfig):
  """The stages of a run of `config` (a trained `keras_model` adds the baselines' retrainings)."""
  return PRETRAINED_STAGES if config.keras_model else STAGES


def load_trained_model(config: PipelineConfig):
  """The `tf_metaprune.pretrained.TrainedModel` of `config.keras_model` (its space, reordered channels)."""
  try:
    model = keras.saving.load_model(config.keras_model)
  except Exception as e:  # pylint: disable=broad-except  (Keras raises many types for a bad file)
    raise ValueError(f"keras_model={config.keras_model!r} cannot be loaded ({type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''}); save it with model.save('model.keras')") from None
  return pretrained.TrainedModel(model, importance=config.importance, width_ratios=width_ratios(config.min_width_ratio),
                                 divisor=config.divisor)


def trained_model_and_space(config: PipelineConfig, splits, log: Callable[[str], None] = print):
  """(TrainedModel or None, SearchSpace) of `config`: its `keras_model`'s, else the family's on `splits`.

  A trained model's batch norms are checked first (`check_original`): stale
  ones are recalibrated on `splits.calibration` (unless
  `config.recalibrate_original` is False), and the result is in
  `trained.batch_norm`.

  Raises:
    ValueError: for a keras_model that does not load, or whose input shape or
      class count is not the dataset's.
  """
  if not config.keras_model:
    return None, build_space(config, splits.input_shape, splits.num_classes)
  trained = load_trained_model(config)
  space = trained.space
  if not space.is_classifier:
    shapes = ", ".join(f"{o} {space.output_shape(o)}" for o in space.outputs)
    raise ValueError(f"keras_model {config.keras_model!r} predicts {shapes} per image, not one vector of class "
                     "logits, and the pipeline's datasets hold one class id per image; prune it through the library "
                     "(SearchSpace.from_keras_model, PruningNet fit with your losses, Evaluator(metric=...)): "
                     "docs/dense_prediction.md")
  if tuple(splits.input_shape) != tuple(space.input_shape) or splits.num_classes != space.num_classes:
    raise ValueError(f"keras_model {config.keras_model!r} takes {space.input_shape} images and has "
                     f"{space.num_classes} classes, but dataset {config.dataset!r} gives {splits.input_shape} and "
                     f"{splits.num_classes}; pick the dataset it was trained on (--input_size to resize)")
  check_original(trained, splits, config, log)
  return trained, space


#: Training images the original model's batch-norm check scores (and a stale model is recalibrated on).
ORIGINAL_CHECK_IMAGES = 4096


def check_original(trained, splits, config: PipelineConfig, log: Callable[[str], None] = print):
  """The stale batch-norm check of a trained model (`pretrained.batch_norm_check`), recalibrating it if stale.

  Scores `trained.model` on the first `ORIGINAL_CHECK_IMAGES` images of
  `splits.calibration` in inference mode and with batch statistics. When
  inference mode is more than `BN_LAG_WARNING_POINTS` lower, one line says
  so; with `config.recalibrate_original` the model's test accuracy as saved
  is measured and its batch norms are recalibrated on those images
  (`TrainedModel.recalibrate_batch_norm`, the same precise BN that follows
  every retraining).

  Returns:
    The record, also set as `trained.batch_norm`: train_accuracy_inference,
    train_accuracy_batch_stats, images, stale, recalibrated, and when
    recalibrated test_accuracy_as_saved and train_accuracy_recalibrated.
  """
  batches = max(1, -(-ORIGINAL_CHECK_IMAGES // config.batch_size))
  record = pretrained.batch_norm_check(trained.model, splits.calibration, num_batches=batches)
  gap = 100 * (record["train_accuracy_batch_stats"] - record["train_accuracy_inference"])
  record.update(stale=bool(gap > BN_LAG_WARNING_POINTS), recalibrated=False)
  seen = (f"{record['images']:,} training images: {100 * record['train_accuracy_inference']:.2f}% in inference "
          f"mode vs {100 * record['train_accuracy_batch_stats']:.2f}% with batch statistics")
  if record["stale"] and config.recalibrate_original:
    record["test_accuracy_as_saved"] = pretrained.accuracy(trained.model, splits.test)
    trained.recalibrate_batch_norm(splits.calibration, num_batches=batches)
    record["train_accuracy_recalibrated"] = pretrained.accuracy(trained.model, splits.calibration, batches)
    record["recalibrated"] = True
    log(f"[metaprune] {config.keras_model}: its batch-norm statistics are stale ({seen}); recalibrated them on "
        f"those images ({100 * record['train_accuracy_recalibrated']:.2f}% now); the original's accuracy and "
        "every drop are the recalibrated model's (--norecalibrate_original keeps it as saved)")
  elif record["stale"]:
    log(f"[metaprune] {config.keras_model}: WARNING: its batch-norm statistics are stale ({seen}); used as saved "
        "(--norecalibrate_original), so the original's accuracy and every drop are measured against that")
  trained.batch_norm = record
  return record


def run(config: PipelineConfig, output_dir, verbose=1, log: Callable[[str], None] = print,
        strategy=None) -> Dict[str, Any]:
  """Runs (or resumes) every stage of the MetaPruning job into `output_dir`.

  Args:
    config: a `PipelineConfig`.
    output_dir: the run folder (created; an existing run in it is resumed).
    verbose: 1 shows Keras progress bars and a search line per generation.
    log: where stage messages go.
    strategy: a `tf.distribute` strategy of this machine's devices (e.g.
      `tf_metaprune.distribute.get_strategy("mirrored")`) for the trainings;
      None = the default. A multi-worker job runs the stage binaries instead.

  Returns:
    The report dict (also written as report.json; report.md holds the table).

  Raises:
    ValueError: before any training, for an unknown model or dataset, a
      budget below the smallest structure, or an output_dir that holds a run
      with other settings.
  """

  t_start = time.perf_counter()
  if strategy is not None and distribute.is_multi_worker(strategy):
    raise ValueError("run() (examples/metaprune.py) works on one machine (strategy default or mirrored); for several "
                     "machines run examples/train_pruningnet.py and examples/retrain.py with --strategy=multi_worker "
                     "and examples/search.py on the chief")
  splits = load_data(config)
  config = sized_for(config, splits)   # the budgets in epochs of this training set, recorded as such
  state = Run(output_dir, config)
  state.check()   # before any model work: a folder of other settings stops here
  trained, space = trained_model_and_space(config, splits, log)
  budget = config_budget(config, space)
  stages = stage_names(config)
  n_stages = len(stages)
  full = space.largest()
  io_lib.write_json_atomic(state.file("config.json"), {"config": config.get_config(),
                                                       "dataset": splits.get_config()})
  log(f"[metaprune] {space.name} on {splits.name} {splits.input_shape}: {len(space.genes)} genes, full width "
      f"{space.mflops(full):.3f} MFLOPs / {space.params(full):,} params; budget {budget!r}")
  pending = [s for s in stages if not state.done(s)]
  if verbose and pending:
    times_s = measure_step_times(config, splits, space, budget, trained)
    for line in estimate_run(config, splits.num_examples, training.steps_per_epoch(splits.train), times_s,
                             pending)[0]:
      log(line)

  # 1. PruningNet (its folder is a TrainingRun: examples/search.py can read it too).
  net_dir = state.file("pruningnet")
  if state.done("pruningnet"):
    log(f"[metaprune] 1/{n_stages} pruningnet: done already ({net_dir}/pruningnet.keras), loading it")
    with _scope(strategy):
      net = keras.saving.load_model(os.path.join(net_dir, "pruningnet.keras"))
  else:
    log(f"[metaprune] 1/{n_stages} pruningnet: training {config.pruningnet_epochs} epochs ({config.sampling} "
        f"structures per step{', from the trained model' if trained is not None else ''}) -> {net_dir}")
    t0 = time.perf_counter()
    net = TrainingRun(net_dir, config, resume=True).train(splits, space, verbose=verbose, strategy=strategy,
                                                          trained=trained)
    history = io_lib.read_json(os.path.join(net_dir, "history.json"), "training history")
    state.finish("pruningnet", time.perf_counter() - t0, final_loss=float(history["loss"][-1]))
  if net.space.fingerprint() != space.fingerprint():
    raise ValueError(f"{net_dir!r} holds a net trained in another search space ({net.space.name}, fingerprint "
                     f"{net.space.fingerprint()}) than these settings give ({space.fingerprint()}); use a new "
                     "output_dir")

  # 2. Search + uniform baseline.
  if state.done("search"):
    log(f"[metaprune] 2/{n_stages} search: done already, loading structure.json and uniform_structure.json")
    found = search_lib.SearchResult.load(state.file("search_result.json"))
    base = search_lib.SearchResult.load(state.file("uniform_result.json"))
  else:
    how = (f"evolution, population {config.population_size} x {config.num_generations} generations"
           if config.searcher == "evolutionary" else config.searcher)
    log(f"[metaprune] 2/{n_stages} search: {how}, on the held-out search split")
    t0 = time.perf_counter()
    found, base = search_and_save(net, splits, budget, config, state.output_dir, verbose=verbose)
    state.finish("search", time.perf_counter() - t0)
  searched_s = space.load_structure(state.file("structure.json"))
  uniform_s = space.load_structure(state.file("uniform_structure.json"))
  log(f"[metaprune]   searched: {found.summary()}")
  log(f"[metaprune]   uniform:  {base.summary()}")

  # 3. Retrain every structure with one recipe (a trained model adds the peers' baselines).
  structures = {"searched": searched_s, "uniform": uniform_s}
  inits = {}
  if trained is not None:
    structures["global_magnitude"] = _global_magnitude_structure(state, trained, budget)
    structures["uniform_scratch"] = uniform_s
    inits["uniform_scratch"] = "scratch"
  rows = _PRETRAINED_ROWS if trained is not None else _ROWS
  retrained = {}
  for key, _, model_file, _ in rows:
    structure = structures[key]
    stage = f"retrain_{key}"
    number = stages.index(stage) + 1
    init = inits.get(key, config.init)
    if state.done(stage):
      log(f"[metaprune] {number}/{n_stages} {stage}: done already ({model_file})")
      retrained[key] = state.stages[stage]["result"]
      continue
    log(f"[metaprune] {number}/{n_stages} {stage}: {config.retrain_epochs} epochs from {init}"
        f"{' with distillation' if config.distill else ''} ({space.mflops(structure):.3f} MFLOPs)")
    t0 = time.perf_counter()
    model, result = retrain(config, splits, space, structure, state.file("retrain", key),
                            net=net if init == "generated" else None, verbose=verbose, strategy=strategy,
                            trained=trained, init=init)
    save_model_atomic(with_output_activation(model, space), state.file(model_file))  # the user's head again
    state.finish(stage, time.perf_counter() - t0, result=result)
    retrained[key] = result
    full_mflops, full_params = space.mflops(space.largest()), space.params(space.largest())
    check = bn_check(result)
    log(f"[metaprune]   {key}: test accuracy {100 * result['test_accuracy']:.2f}%, {result['mflops']:.3f} MFLOPs "
        f"({times(full_mflops, result['mflops'])} fewer), {result['params']:,} params "
        f"({times(full_params, result['params'])} fewer)" + ("" if check is None else f"; {check}"))

  # 4. Export to int8 TFLite.
  if state.done("export"):
    log(f"[metaprune] {n_stages}/{n_stages} export: done already (model_int8.tflite)")
    exported = io_lib.read_json(state.file("export.json"), "export report")
  else:
    log(f"[metaprune] {n_stages}/{n_stages} export: int8 TFLite, parity on the test split, latency on this host")
    t0 = time.perf_counter()
    exported = _export(state, splits, config, rows)
    io_lib.write_json_atomic(state.file("export.json"), exported)
    state.finish("export", time.perf_counter() - t0)

  original = _original_accuracy(state, trained, splits) if trained is not None else None
  report = make_report(config, splits, space, budget, found, base, retrained, exported, state,
                       structures=structures, original=original)
  report["total_seconds_this_run"] = time.perf_counter() - t_start
  io_lib.write_json_atomic(state.file("report.json"), report)
  io_lib.write_text_atomic(state.file("report.md"), format_report(report) + "\n")
  return report


def write_settings(output_dir, config: PipelineConfig, splits, strategy=None):
  """Records the settings (and data) of a stage run by hand in `output_dir/settings.json`."""
  if not _is_chief(strategy):
    return
  io_lib.check_writable_dir(output_dir, "output_dir")
  io_lib.write_json_atomic(os.path.join(str(output_dir), "settings.json"),
                           {"format": "tf_metaprune.Settings", "config": config.get_config(),
                            "dataset": splits.get_config()})


def read_settings(folder) -> PipelineConfig:
  """The `PipelineConfig` recorded by `write_settings` in `folder`."""
  path = os.path.join(str(folder), "settings.json")
  if not os.path.exists(path):
    raise ValueError(f"{folder!r} has no settings.json: pass the output folder of examples/search.py")
  return PipelineConfig.from_config(io_lib.read_json(path, "settings file")["config"])


def search_and_save(net, splits, budget, config: PipelineConfig, output_dir, verbose=1):
  """Evolutionary search + uniform baseline of `net` under `budget`; writes the results.

  `config.searcher` picks the searcher (`tf_metaprune.search.run`); the
  uniform baseline is scored with the PruningNet whatever the searcher.

  Files in `output_dir`: search_state.json (resumes an interrupted search),
  search_result.json, uniform_result.json, structure.json,
  uniform_structure.json, space.json, pareto.png.

  Returns:
    (evolutionary SearchResult, uniform SearchResult).
  """
  space = net.space
  io_lib.check_writable_dir(output_dir, "output_dir")
  out = lambda name: os.path.join(str(output_dir), name)
  evaluator = _evaluator(net, splits, config)
  if verbose and config.searcher == "evolutionary" and _is_chief(net.distribute_strategy):
    print(estimate_search(evaluator, space, config), flush=True)
  if config.searcher == "evolutionary":
    evolution = search_lib.EvolutionConfig(population_size=config.population_size,
                                           num_generations=config.num_generations, seed=config.seed,
                                           top_k=min(10, config.population_size))
    found = search_lib.evolutionary(net, evaluator, budget, evolution, state_path=out("search_state.json"),
                                    verbose=verbose)
  else:
    # AutoSlim and PaS train their own network (slimmable / masked) on the training split and score on the
    # search split; RL and uniform score with the PruningNet. Their states live in searcher_<name>/.
    own_net = config.searcher in ("autoslim", "pas")
    found = search_lib.run(config.searcher, space, budget, train_data=splits,
                           search_data=splits if own_net else evaluator, pruning_net=None if own_net else net,
                           output_dir=out("searcher_" + config.searcher), seed=config.seed, verbose=verbose)
  if config.rescore_top_k and found.top_k and found.method != "uniform":
    found = search_lib.rescore(found, _evaluator(net, splits, config, rescore=True), top_k=config.rescore_top_k)
  base = search_lib.uniform(net, evaluator, budget, verbose=verbose)
  if not _is_chief(net.distribute_strategy):
    return found, base   # the chief writes the files
  found.save(out("search_result.json"))
  base.save(out("uniform_result.json"))
  io_lib.write_text_atomic(out("space.json"), space.to_json())
  space.save_structure(found.best_structure, out("structure.json"), accuracy=found.best_accuracy)
  space.save_structure(base.best_structure, out("uniform_structure.json"), accuracy=base.best_accuracy,
                       width_ratio=base.extra["width_ratio"])
  search_lib.plot_pareto(found, out("pareto.png"), uniform_result=base)
  return found, base


def estimate_search(evaluator, space, config: PipelineConfig) -> str:
  """"[search] N candidates x t s (measured) = about M min": one candidate timed after its trace.

  An upper bound: the evolution scores at most population x generations
  structures (repeats are not scored again), and the uniform baseline a few more.
  """
  evaluator.accuracy(space.largest())          # traces the evaluation once
  t0 = time.perf_counter()
  evaluator.accuracy(space.uniform(0.5))
  seconds = time.perf_counter() - t0
  n = config.population_size * config.num_generations
  return (f"[search] at most {n:,} candidates ({config.population_size} x {config.num_generations} generations) x "
          f"{seconds:.2f} s (measured) = {training.describe_seconds(n * seconds)} at most")


#: Seconds per model and test image the export stage takes (int8 conversion, parity on the test split through
#: the interpreter, host timing), from a measured run (issue 23: 110 s for 4 models x 10,000 test images).
EXPORT_SECONDS_PER_TEST_IMAGE = 0.0028


def _time_steps(model, data, steps=5):
  """Seconds per training step of a compiled `model` on `data`, warm (its first step traces and is not timed)."""
  model.make_train_function()
  batches = iter(data.repeat())
  model.train_function(batches)
  t0 = time.perf_counter()
  for _ in range(steps):
    model.train_function(batches)
  return (time.perf_counter() - t0) / steps


def measure_step_times(config: PipelineConfig, splits, space, budget, trained=None):
  """{"pruningnet_step_s", "candidate_s", "retrain_step_s"} measured now, warm (about 10-40 s of tracing).

  One PruningNet training step (from `trained` when given), one search
  candidate at the budget's uniform structure, one retraining step of that
  structure (with the teacher when `config.distill`).
  """
  net_kwargs = dict(hidden_units=config.hidden_units, bn_mode=config.bn_mode, bn_affine=bool(config.bn_affine),
                    seed=config.seed, sampling=config.sampling)
  net = pruning_net.PruningNet(space, **net_kwargs) if trained is None else trained.pruning_net(**net_kwargs)
  training.compile_model(net, learning_rate=config.pruningnet_learning_rate, optimizer=config.pruningnet_optimizer)
  net_step = _time_steps(net, splits.train)
  uniform = search_lib.largest_uniform(space, budget)[1]
  evaluator = _evaluator(net, splits, config)
  evaluator.accuracy(space.largest())   # traces
  t0 = time.perf_counter()
  evaluator.accuracy(uniform)
  candidate = time.perf_counter() - t0
  model = rebuild_model(space, uniform)
  if config.distill and trained is not None:
    model = training.Distiller(model, trained.logits_model(), config.distill_temperature, config.distill_weight)
  training.compile_model(model, learning_rate=config.retrain_learning_rate, optimizer=config.retrain_optimizer)
  return {"pruningnet_step_s": net_step, "candidate_s": candidate, "retrain_step_s": _time_steps(model, splits.train)}


def estimate_run(config: PipelineConfig, num_examples, steps_per_epoch, times, pending=None):
  """Lines estimating the whole run, stage by stage, from measured step times, and how to shorten it.

  Args:
    config: a sized config (`sized_for`).
    num_examples: the splits' {"train", "search", "test"} image counts.
    steps_per_epoch: training batches per epoch.
    times: `measure_step_times`'s figures. The evolution's count is an upper
      bound; the export is rough (`EXPORT_SECONDS_PER_TEST_IMAGE`).
    pending: the stages still to run (default: all of the run's).

  Returns:
    (two lines, {stage: seconds}).
  """
  stages = stage_names(config)
  pending = list(stages if pending is None else pending)
  steps = int(steps_per_epoch)
  candidates = config.population_size * config.num_generations if config.searcher == "evolutionary" else None
  rows = [k for k, _, _, _ in (_PRETRAINED_ROWS if config.keras_model else _ROWS)]
  scored = min(config.search_images or num_examples["search"], num_examples["search"])
  rescored = (config.rescore_top_k or 0) * num_examples["search"] / max(1, scored)   # in candidates' worth
  seconds = {"pruningnet": config.pruningnet_epochs * steps * times["pruningnet_step_s"],
             "search": ((candidates or 0) + rescored) * times["candidate_s"]}
  for key in rows:
    seconds[f"retrain_{key}"] = config.retrain_epochs * steps * times["retrain_step_s"]
  seconds["export"] = len(rows) * num_examples["test"] * EXPORT_SECONDS_PER_TEST_IMAGE
  seconds = {k: v for k, v in seconds.items() if k in pending}
  rescore = f" + re-scoring the best {config.rescore_top_k}" if config.rescore_top_k else ""
  words = {"pruningnet": (f"pruningnet {config.pruningnet_epochs} x {steps:,} steps x "
                          f"{times['pruningnet_step_s']:.3f} s"),
           "search": (f"search at most {candidates:,} candidates x {times['candidate_s']:.2f} s{rescore}" if candidates
                      else f"search ({config.searcher}: not estimated)"),
           "export": f"export {len(rows)} models (rough)"}
  parts = []
  retrains = [k for k in seconds if k.startswith("retrain_")]
  for stage in seconds:
    if not stage.startswith("retrain_"):
      parts.append(f"{words[stage]} = {training.describe_seconds(seconds[stage])}")
    elif stage == retrains[0]:
      parts.append(f"{len(retrains)} retraining{'s' if len(retrains) > 1 else ''} x {config.retrain_epochs} x "
                   f"{steps:,} steps x {times['retrain_step_s']:.3f} s = "
                   f"{training.describe_seconds(sum(seconds[k] for k in retrains))}")
  lines = [f"[metaprune] estimate (step times measured now, on this machine): {'; '.join(parts)}; total "
           f"{training.describe_seconds(sum(seconds.values()))}",
           f"[metaprune]   shorter: --epochs (PruningNet, now {config.pruningnet_epochs}), --retrain_epochs (now "
           f"{config.retrain_epochs}), --num_generations (now {config.num_generations}) or --search_images (now "
           f"{config.search_images or 'all'}), --max_examples (now {config.max_examples or 'all'}; the training "
           f"set has {num_examples['train']:,} images)"]
  return lines, seconds


def _evaluator(net, splits, config, rescore=False):
  """The search's evaluator (on `search_images` of the search split), or the re-score's (all of it, 4x calibration)."""
  batches = None
  if config.search_images is not None and not rescore:
    batches = max(1, -(-int(config.search_images) // config.batch_size))
  data = calibration.EvaluationData.from_dataset(
      splits.search, num_calibration_batches=config.calibration_batches * (4 if rescore else 1),
      calibration_dataset=splits.calibration, max_eval_batches=batches)
  return calibration.Evaluator(net, data, metric=pipeline_search_metric(config.search_metric))


def pipeline_search_metric(name):
  """The `SearchMetric` of `PipelineConfig.search_metric`: "loss" is the training loss (sparse cross-entropy on logits).

  Raises:
    ValueError: for a name that is neither a Keras metric nor a loss (one line, with examples).
  """
  if name == "loss":
    return calibration.SearchMetric("loss", losses=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)])
  return calibration.search_metric(name)


def _global_magnitude_structure(state, trained, budget):
  """The global-magnitude baseline's structure, saved as global_magnitude_structure.json (read back on resume)."""
  path = state.file("global_magnitude_structure.json")
  if os.path.exists(path):
    return trained.space.load_structure(path)
  threshold, structure = trained.global_magnitude(budget)
  trained.space.save_structure(structure, path, threshold=threshold)
  return structure


def _original_accuracy(state, trained, splits):
  """Test accuracy of the trained keras_model (original.json caches it)."""
  path = state.file("original.json")
  if os.path.exists(path):
    return io_lib.read_json(path, "original model record")
  record = original_record(trained, splits)
  io_lib.write_json_atomic(path, record)
  return record


def original_record(trained, splits):
  """{test_accuracy, mflops, params, importance, batch_norm} of a `TrainedModel`'s model on `splits.test`.

  test_accuracy is the model's as used by the run (recalibrated if `check_original` found its batch norms
  stale); batch_norm is `check_original`'s record (with test_accuracy_as_saved when it recalibrated).
  """
  model = trained.logits_model()   # a softmax head's logits: the loss below takes logits
  model.compile(loss=training.SparseCrossentropyWithSmoothing(), metrics=["accuracy"])
  _, acc = model.evaluate(splits.test, verbose=0)
  record = {"test_accuracy": float(acc), "mflops": float(flops.count_mflops(model)),
            "params": int(model.count_params()), "importance": trained.importance}
  if trained.batch_norm is not None:
    record["batch_norm"] = dict(trained.batch_norm)
  return record


def _export(state, splits, config, table_rows=_ROWS):
  rows = {}
  for key, _, model_file, tflite_file in table_rows:
    model = keras.saving.load_model(state.file(model_file))
    # The calibration split (train images in a fixed order): `splits.train` reshuffles on every pass, so its
    # first batches -- and the int8 ranges -- would depend on how many passes this process made before.
    flatbuffer = tflite_export.convert(model, "int8", representative_data=splits.calibration,
                                       num_calibration_batches=config.export_calibration_batches)
    tflite_export.save(flatbuffer, state.file(tflite_file))  # atomic
    parity = tflite_export.check_parity(flatbuffer, model, splits.test)
    latency = tflite_export.benchmark(flatbuffer, num_runs=config.export_num_runs,
                                      num_threads=config.export_num_threads)
    rows[key] = {"file": tflite_file, "size_bytes": len(flatbuffer), "keras_accuracy": parity.keras_accuracy,
                 "int8_accuracy": parity.tflite_accuracy, "top1_agreement": parity.top1_agreement,
                 "max_abs_logit_diff": parity.max_abs_logit_diff, "latency_median_ms": latency.median_ms,
                 "latency_p90_ms": latency.p90_ms, "num_threads": config.export_num_threads,
                 "num_runs": config.export_num_runs}
  # The same script the phone's latency table uses, for the exported files: its logs (<file>.txt beside them)
  # are read by examples/latency_table.py --run_dir.
  latency_lut.write_device_script(state.file(""), [f[:-len(".tflite")] for _, _, _, f in table_rows],
                                  latency_lut.timing_recipe(num_threads=config.export_num_threads),
                                  "the exported int8 models of this run")
  return {"device": tflite_export.device_description(), "files": rows,
          "note": "host latency (LiteRT/XNNPACK on this CPU) compares the two files; int8 is not faster than "
                  "float32 on x86 -- time on the phone with benchmark_model for absolute figures"}


def make_report(config, splits, space, budget, found, base, retrained, exported, state=None, structures=None,
                original=None):
  """The report dict: every retrained structure side by side, with the settings that made them.

  Args:
    structures: key -> Structure of the rows beyond "searched" and "uniform"
      (a pruned trained model's baselines).
    original: the trained model's record (its test accuracy): each row then
      gets its accuracy drop.
  """
  full = space.largest()
  rows = {}
  searched = {"searched": found, "uniform": base}
  structures = dict(structures or {})
  files = {key: structure_file for key, structure_file, _, _ in _PRETRAINED_ROWS}
  for key in retrained:
    result = searched.get(key)
    s = result.best_structure if (result is not None and key != "uniform_scratch") else structures[key]
    e = exported["files"][key]
    rows[key] = {
        "structure_file": files[key],
        "channels": space.channels(s),
        "mflops": space.mflops(s), "flops_ratio": space.mflops(s) / space.mflops(full), "params": space.params(s),
        "search_accuracy": result.best_accuracy if (result is not None and key != "uniform_scratch") else None,
        "test_accuracy": retrained[key]["test_accuracy"],
        "int8_test_accuracy": e["int8_accuracy"], "int8_top1_agreement": e["top1_agreement"],
        "int8_size_bytes": e["size_bytes"], "int8_latency_median_ms": e["latency_median_ms"],
        "int8_latency_p90_ms": e["latency_p90_ms"],
        # The batch-norm check: training images in inference mode vs the last epoch's training accuracy.
        "train_accuracy_inference": retrained[key].get("train_accuracy_inference"),
        "train_accuracy_last_epoch": retrained[key].get("train_accuracy_last_epoch"),
        # Ratios for reading at a glance: how many times smaller than the full-width network.
        "mflops_reduction": space.mflops(full) / max(space.mflops(s), 1e-12),
        "params_reduction": space.params(full) / max(space.params(s), 1),
        "int8_size_reduction_vs_float32_full": 4 * space.params(full) / max(e["size_bytes"], 1)}
    if original is not None:
      rows[key]["accuracy_drop_pt"] = 100 * (original["test_accuracy"] - retrained[key]["test_accuracy"])
    if config.latency_table:  # a latency budget: the table's prediction beside the host measurement
      predicted = budgets.LatencyTable.load(config.latency_table).predict_ms(space, s)
      rows[key]["predicted_latency_ms"] = predicted
      rows[key]["measured_over_predicted"] = e["latency_median_ms"] / predicted if predicted > 0 else None
  if base.extra.get("width_ratio") is not None:
    for key in ("uniform", "uniform_scratch"):
      if key in rows:
        rows[key]["width_ratio"] = base.extra["width_ratio"]
  stage_seconds = {} if state is None else {k: v["seconds"] for k, v in state.stages.items()}
  report = {
      "format": "tf_metaprune.PipelineReport", "version": 1,
      "space": space.name, "space_fingerprint": space.fingerprint(),
      "full_width": {"mflops": space.mflops(full), "params": space.params(full)},
      "budget": budget.get_config(), "budget_repr": repr(budget),
      "dataset": splits.get_config(), "config": config.get_config(),
      "rows": list(rows), **rows,
      "search": {"evaluations": found.num_evaluations, "seconds": found.seconds},
      "device": exported["device"], "latency_note": exported["note"], "stage_seconds": stage_seconds,
  }
  if original is not None:
    report["original"] = original
  return report


_ROW_LABELS = {"searched": "searched", "global_magnitude": "global magnitude (one L1 threshold)",
               "uniform_scratch": "uniform x{ratio:.2f} from scratch"}


#: Points by which a model's training images may score lower in inference mode than during its last training
#: epoch (batch statistics) before the report calls its batch norms stale. The epoch average lags the final
#: weights, so inference mode is usually the higher one; 10% (chance) against 64% is what a lag looks like.
BN_LAG_WARNING_POINTS = 5.0


def times(larger, smaller):
  """"x4.1" for how many times `smaller` goes into `larger` (two significant digits from x10 up)."""
  ratio = float(larger) / float(smaller) if smaller else float("inf")
  return f"x{ratio:.0f}" if ratio >= 10 else f"x{ratio:.1f}"


def bn_check(row):
  """One line comparing a retrained model's inference-mode and training accuracy (batch-norm lag guard)."""
  inference, last_epoch = row.get("train_accuracy_inference"), row.get("train_accuracy_last_epoch")
  if inference is None or last_epoch is None:
    return None
  gap = 100 * (last_epoch - inference)
  text = (f"train images {100 * inference:.2f}% in inference mode vs {100 * last_epoch:.2f}% in the last "
          "training epoch (batch statistics)")
  if gap > BN_LAG_WARNING_POINTS:
    return (f"WARNING: {text}: {gap:.1f} points lower in inference mode, so its batch-norm statistics do not "
            "match its weights; recalibrate them (tf_metaprune.training.recalibrate_batch_norm) before using it")
  return f"{text}: consistent"


def original_batch_norm_note(original):
  """The report's words on the original's batch-norm check ('' when it was not stale or not checked)."""
  bn = original.get("batch_norm")
  if not bn or not bn.get("stale"):
    return ""
  seen = (f"{100 * bn['train_accuracy_inference']:.2f}% of {bn['images']:,} training images in inference mode vs "
          f"{100 * bn['train_accuracy_batch_stats']:.2f}% with batch statistics")
  if bn.get("recalibrated"):
    return (f" after recalibrating its stale batch norms ({100 * bn['test_accuracy_as_saved']:.2f}% as saved; "
            f"{seen}); every drop is measured against the recalibrated model")
  return f" as saved, with stale batch norms ({seen}; not recalibrated: --norecalibrate_original)"


def format_report(report: Dict[str, Any]) -> str:
  """The report as Markdown: every retrained structure (and a trained model's baselines), sizes as ratios,
  the seed and batch-norm notes."""
  full = report["full_width"]
  float32_full_kb = 4 * full["params"] / 1024
  original = report.get("original")
  pretrained = report["config"].get("keras_model") is not None
  lines = [f"MetaPruning of {report['space']} on {report['dataset'].get('dataset', report['dataset'])}, budget "
           f"{report['budget_repr']} (full width {full['mflops']:.3f} MFLOPs, {full['params']:,} params)"]
  if original is not None:
    lines.append(f"Original model {report['config']['keras_model']}: test accuracy "
                 f"{100 * original['test_accuracy']:.2f}%{original_batch_norm_note(original)}; channels ranked by "
                 f"{original['importance']}, structures retrained from {report['config']['init']}"
                 f"{' with distillation' if report['config'].get('distill') else ''}.")
  drop = original is not None
  metric = report["config"].get("search_metric")
  by_accuracy = metric in (None, "accuracy", "acc", "sparse_categorical_accuracy")
  score_header = "search acc. (PruningNet)" if by_accuracy else f"search score: {metric} (PruningNet; losses negated)"
  lines += ["", f"| structure | MFLOPs | FLOPs ratio | params | {score_header} | test acc. (retrained) "
            + ("| drop vs original (pt) " if drop else "") + "| int8 test acc. | int8 size KB | int8 latency ms (median) |",
            "|---|---:|---:|---:|---:|---:|" + ("---:|" if drop else "") + "---:|---:|---:|"]
  for key in report.get("rows", ["searched", "uniform"]):
    r = report[key]
    if key == "uniform":
      label = (f"L1 uniform x{r.get('width_ratio', float('nan')):.2f} (Li et al.)" if pretrained
               and report["config"].get("init") == "pretrained" else f"uniform x{r.get('width_ratio', float('nan')):.2f}")
    else:
      label = _ROW_LABELS.get(key, key).format(ratio=r.get("width_ratio", float("nan")))
    search = ("-" if r.get("search_accuracy") is None else f"{100 * r['search_accuracy']:.2f}%" if by_accuracy
              else f"{r['search_accuracy']:.4f}")
    lines.append(f"| {label} | {r['mflops']:.3f} | {100 * r['flops_ratio']:.1f}% | {r['params']:,} | "
                 f"{search} | {100 * r['test_accuracy']:.2f}% | "
                 + (f"{r['accuracy_drop_pt']:+.2f} | " if drop else "")
                 + f"{100 * r['int8_test_accuracy']:.2f}% | {r['int8_size_bytes'] / 1024:.1f} | "
                 f"{r['int8_latency_median_ms']:.3f} |")
  lines.append("")
  for key in report.get("rows", ["searched", "uniform"]):
    r = report[key]
    lines.append(f"- {key}: {times(full['mflops'], r['mflops'])} fewer MFLOPs, {times(full['params'], r['params'])} "
                 f"fewer params than full width; int8 {r['int8_size_bytes'] / 1024:.1f} KB = "
                 f"{times(4 * full['params'], r['int8_size_bytes'])} smaller than float32 full width "
                 f"({float32_full_kb:.1f} KB = 4 bytes x {full['params']:,} params)")
  s, u = report["searched"], report["uniform"]
  lines.append(f"- {stats.seed_verdict(100 * (s['test_accuracy'] - u['test_accuracy']))}")
  for key in report.get("rows", ["searched", "uniform"]):
    check = bn_check(report[key])
    if check is not None:
      lines.append(f"- batch norms, {key}: {check}")
  for key in report["rows"]:
    r = report[key]
    if r.get("predicted_latency_ms") is not None:
      lines.append(f"- latency, {key}: predicted {r['predicted_latency_ms']:.3f} ms by the table, measured (int8, "
                   f"this host) {r['int8_latency_median_ms']:.3f} ms: {r['measured_over_predicted']:.2f}x; on a "
                   "phone: sh run_on_device.sh, then examples/latency_table.py --run_dir=<this folder>")
  lines += ["", f"Search: {report['search']['evaluations']} structures evaluated in "
                f"{report['search']['seconds']:.1f} s. Latency: {report['device']}; {report['latency_note']}."]
  if report.get("stage_seconds"):
    lines.append("Stage time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in report["stage_seconds"].items()))
  return "\n".join(lines)
