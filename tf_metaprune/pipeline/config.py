"""PipelineConfig: every setting of a run, in sections (one per stage kind), with the binaries' flat names.

`PipelineConfig(model="small_cnn", flops_ratio=0.5)` takes and shows the
settings by their flag names; `SECTIONS` groups them, and `config.data`,
`config.net`, `config.search`, `config.retrain`, `config.export` are the
sections as frozen dataclasses (`DataConfig`, ...). A stage's results depend on
the sections it names (`Stage.sections`) and on every earlier stage's, which is
what a rerun must match to resume.
"""

import dataclasses
import os
from typing import Any, Dict, Optional

import keras
import numpy as np

from tf_metaprune import calibration
from tf_metaprune import search as search_lib


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Every setting of a MetaPruning run (the flags of `examples/metaprune.py`).

  These defaults are the binaries' defaults too (an unset flag means the value
  here). The batch size and the training budgets default to None:
  `sized_for(config, splits)` sets them from the training set's size (`run`
  and the stage binaries call it). The budgets are in steps, the `make demo`
  recipe's (MNIST subset, batch 32: 15 and 8 epochs); a training set of
  `LARGE_DATA_IMAGES` or more trains at batch `LARGE_BATCH`, the same steps
  in fewer epochs (Fashion-MNIST's 54,000: 4 and 2).

  Attributes:
    dataset: "mnist_subset" (offline default), "tfds:NAME" or "folder:PATH".
    input_size: resize images to this square size (None: keep).
    batch_size: batch size of every stage. None (default): `batch_for` the
      training set's size (`sized_for`): 32 below `LARGE_DATA_IMAGES`
      training images, else `LARGE_BATCH` (128).
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
      sized by the training set, about `PRUNINGNET_STEPS` steps (`sized_for`:
      15 epochs of the 3,600-image MNIST subset at batch 32, 4 of
      Fashion-MNIST's 54,000 at batch 128).
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
    searcher: a name of `tf_metaprune.search.SEARCHERS` (default: evolutionary,
      MetaPruning's); the uniform baseline is reported beside it whatever the
      searcher.
    searcher_settings: that searcher's config-class settings over the ones
      below (e.g. {"episodes": 200} for rl, `--searcher_settings=episodes=200`).
    population_size, num_generations: search size of a searcher that has them
      (the evolution; paper 50, 20).
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
      about `RETRAIN_STEPS` steps per structure (8 epochs of the MNIST
      subset, 2 of Fashion-MNIST).
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
  batch_size: Optional[int] = None          # None: sized_for (batch_for the training set)
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
  pruningnet_epochs: Optional[int] = None   # None: sized_for (PRUNINGNET_STEPS)
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
  searcher_settings: Optional[Dict[str, Any]] = None
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
    for name in ("population_size", "num_generations", "calibration_batches", "export_num_runs",
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
    for name in ("batch_size", "input_size", "max_examples", "search_images"):
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
    if self.searcher not in search_lib.SEARCHERS:
      bad("searcher", f"must be one of {search_lib.SEARCHERS}")
    if self.searcher_settings is not None and not isinstance(self.searcher_settings, dict):
      bad("searcher_settings", "must be None or a dict of the searcher's settings")
    self.searcher_config()   # the searcher's own checks, naming the value
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

  def searcher_config(self):
    """The config object of `searcher` (None for one without settings): its defaults, the run's seed and search
    size where it has them (top_k at most the population), then `searcher_settings`."""
    cls = search_lib.searcher_class(self.searcher)
    if not cls.has_settings:
      if self.searcher_settings:
        raise ValueError(f"PipelineConfig(searcher={self.searcher!r}, searcher_settings={self.searcher_settings!r}): "
                         f"{self.searcher} has no settings; drop searcher_settings")
      return None
    fields = {f.name for f in dataclasses.fields(cls)}
    base = {"seed": self.seed, "population_size": self.population_size, "num_generations": self.num_generations,
            "top_k": min(10, self.population_size)}
    settings = dict({k: v for k, v in base.items() if k in fields}, **(self.searcher_settings or {}))
    try:
      return cls.from_config(settings)
    except (TypeError, ValueError) as e:
      raise ValueError(f"PipelineConfig(searcher={self.searcher!r}, searcher_settings={self.searcher_settings!r}): "
                       f"{e}") from None

  def section(self, name):
    """The settings of section `name` of `SECTIONS` as its frozen dataclass (e.g. `config.section("net")`)."""
    return _SECTION_CLASSES[name](**{k: getattr(self, k) for k in SECTIONS[name]})

  data = property(lambda self: self.section("data"), doc="The data settings (a `DataConfig`).")
  net = property(lambda self: self.section("net"), doc="The space and PruningNet settings (a `NetConfig`).")
  search = property(lambda self: self.section("search"), doc="The budget and search settings (a `SearchConfig`).")
  retrain = property(lambda self: self.section("retrain"), doc="The retraining settings (a `RetrainConfig`).")
  export = property(lambda self: self.section("export"), doc="The TFLite export settings (an `ExportConfig`).")

  @classmethod
  def from_sections(cls, **sections) -> "PipelineConfig":
    """A config from section objects (or dicts), e.g. `from_sections(data=DataConfig(...), search={...})`."""
    flat = {}
    for name, value in sections.items():
      if name not in SECTIONS:
        raise ValueError(f"PipelineConfig.from_sections: unknown section {name!r}; the sections are {tuple(SECTIONS)}")
      flat.update(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else dict(value))
    return cls.from_config(flat)

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


#: The settings of each section, by their flat (flag) names. Every setting is in exactly one section.
SECTIONS = {
    "data": ("dataset", "input_size", "batch_size", "max_examples", "seed", "skip_bad_images"),
    "net": ("keras_model", "importance", "recalibrate_original", "model", "width_multiplier", "min_width_ratio",
            "width_step", "divisor", "small_input", "stage_repeats", "full_width_classifier_input", "pruningnet_epochs",
            "pruningnet_learning_rate", "pruningnet_optimizer", "hidden_units", "bn_mode", "bn_affine", "sampling"),
    "search": ("searcher", "searcher_settings", "max_mflops", "flops_ratio", "min_flops_ratio", "max_params",
               "max_latency_ms", "latency_table", "population_size", "num_generations", "calibration_batches",
               "search_images", "rescore_top_k", "search_metric"),
    "retrain": ("retrain_epochs", "retrain_learning_rate", "retrain_optimizer", "init", "distill",
                "distill_temperature", "distill_weight"),
    "export": ("export_num_runs", "export_num_threads", "export_calibration_batches"),
}
_FIELDS = {f.name: f for f in dataclasses.fields(PipelineConfig)}
assert sorted(k for keys in SECTIONS.values() for k in keys) == sorted(_FIELDS), "every setting in one section"
_SECTION_CLASSES = {
    name: dataclasses.make_dataclass(f"{name.capitalize()}Config",
                                     [(k, _FIELDS[k].type, dataclasses.field(default=_FIELDS[k].default)) for k in keys],
                                     frozen=True)
    for name, keys in SECTIONS.items()}
DataConfig, NetConfig, SearchConfig, RetrainConfig, ExportConfig = (_SECTION_CLASSES[n] for n in SECTIONS)


#: The batch size below `LARGE_DATA_IMAGES` training images (`batch_for`): the `make demo` recipe's.
SMALL_BATCH = 32
#: Training sets of this many images or more train at `LARGE_BATCH`. Batch 32 leaves this 2-core CPU idle
#: between small steps: measured on issue 23's keras.applications MobileNetV2 0.35 (Fashion-MNIST, 32 px,
#: load about 3), a PruningNet step costs 3.6 ms an image at batch 32 and 1.15 ms at 128 (0.115 s / 0.148 s a
#: step), a retraining step 0.98 / 0.71 ms an image and a search candidate 0.29 / 0.16 s. The learning rates
#: are kept (Adam 3e-3): at batch 128 the retrained models score as at 32 (benchmarks/README.md, user flow).
LARGE_DATA_IMAGES = 20_000
LARGE_BATCH = 128
#: PruningNet training steps by default (`sized_for`, in whole epochs, at least 1): the `make demo` recipe, 15
#: epochs of the 3,600-image MNIST subset at batch 32 (what its MobileNetV2 needs to learn under structure
#: switching); 4 epochs of Fashion-MNIST's 54,000 at batch 128.
PRUNINGNET_STEPS = 1_688
#: Retraining steps per structure by default: the demo's 8 epochs of the MNIST subset at batch 32; 2 epochs
#: of Fashion-MNIST at batch 128.
RETRAIN_STEPS = 900


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


def batch_for(num_train):
  """The default batch size of a `num_train`-image training set: `SMALL_BATCH`, or `LARGE_BATCH` from
  `LARGE_DATA_IMAGES` images up."""
  return LARGE_BATCH if int(num_train) >= LARGE_DATA_IMAGES else SMALL_BATCH


def sized_epochs(steps, num_train):
  """Epochs of a `num_train`-image training set, at its default batch (`batch_for`), that make about `steps` steps."""
  return epochs_for(int(steps) * batch_for(num_train), num_train)


def sized_for(config: PipelineConfig, splits) -> PipelineConfig:
  """`config` with its unset batch size and training budgets (None) set from the size of `splits.train`.

  batch_size: the batch of `splits` (`load_data` batches them by
  `batch_for` the training set); pruningnet_epochs:
  `PRUNINGNET_STEPS` steps at that batch; retrain_epochs: `RETRAIN_STEPS`
  per structure; rescore_top_k: `RESCORE_TOP_K` if `search_images` scores
  only part of the search split, else 0. Values already set are kept, so a
  sized config sizes to itself. The splits themselves are batched by
  `load_data`, which uses the same `batch_for`.
  """
  num_train = splits.num_examples["train"]
  changes = {}
  batch = config.batch_size
  if batch is None:   # the splits' own batch (load_data batches them by batch_for), else batch_for
    batch = changes["batch_size"] = int(getattr(splits, "batch_size", None) or batch_for(num_train))
  if config.pruningnet_epochs is None:
    changes["pruningnet_epochs"] = epochs_for(PRUNINGNET_STEPS * batch, num_train)   # = sized_epochs at batch_for
  if config.retrain_epochs is None:
    changes["retrain_epochs"] = epochs_for(RETRAIN_STEPS * batch, num_train)
  if config.rescore_top_k is None:
    partial = config.search_images is not None and config.search_images < splits.num_examples["search"]
    changes["rescore_top_k"] = RESCORE_TOP_K if partial else 0
  return config.replace(**changes) if changes else config


def pipeline_search_metric(name):
  """The `SearchMetric` of `PipelineConfig.search_metric`: "loss" is the training loss (sparse cross-entropy on logits).

  Raises:
    ValueError: for a name that is neither a Keras metric nor a loss (one line, with examples).
  """
  if name == "loss":
    return calibration.SearchMetric("loss", losses=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)])
  return calibration.search_metric(name)
