"""The building blocks of a run, also used by the stage binaries: data, space, budget, training, a trained model."""

import os
from typing import Callable

import keras
import tensorflow as tf

from tf_metaprune import budgets
from tf_metaprune import calibration
from tf_metaprune import data as data_lib
from tf_metaprune import distribute
from tf_metaprune import flops
from tf_metaprune import io as io_lib
from tf_metaprune import models
from tf_metaprune import pretrained
from tf_metaprune import pruning_net
from tf_metaprune import search as search_lib
from tf_metaprune import space as space_lib
from tf_metaprune import training
from tf_metaprune.pipeline.config import PipelineConfig
from tf_metaprune.pipeline.config import SMALL_BATCH
from tf_metaprune.pipeline.config import batch_for
from tf_metaprune.pipeline.config import sized_for
from tf_metaprune.rebuild import rebuild as rebuild_model


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
  """The dataset splits of a run (`tf_metaprune.data.load_dataset`), batched by `config.batch_size`.

  An unset batch size (None) is `batch_for` the training set's size, the one
  `sized_for` records: the splits are read once and re-batched
  (`DatasetSplits.with_batch_size`).
  """
  splits = data_lib.load_dataset(config.dataset, batch_size=config.batch_size or SMALL_BATCH,
                                 input_size=config.input_size, seed=config.seed, max_examples=config.max_examples,
                                 skip_bad_images=config.skip_bad_images)
  if config.batch_size is None:
    splits = splits.with_batch_size(batch_for(splits.num_examples["train"]))
  return splits


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
  loss, acc = training.evaluate(model, splits.test)   # model.evaluate, also under a multi-worker strategy
  # The same training images in inference mode against the last epoch's training accuracy (batch statistics):
  # batch norms whose statistics lag their weights show as a gap here, whatever the test accuracy.
  _, train_inference_acc = training.evaluate(model, splits.calibration)
  return model, {"history": history, "test_accuracy": float(acc), "test_loss": float(loss),
                 "train_accuracy_inference": float(train_inference_acc),
                 "train_accuracy_last_epoch": float(history["accuracy"][-1]) if history.get("accuracy") else None,
                 "params": int(model.count_params()), "mflops": float(space.mflops(structure))}


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
  batches = max(1, -(-ORIGINAL_CHECK_IMAGES // sized_for(config, splits).batch_size))
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
