"""Per-structure batch-norm recalibration and candidate evaluation.

A PruningNet's batch-norm statistics mean nothing for any one structure: every
training step used another one. Before a structure is judged, its statistics
are recomputed from a few training batches: forward passes in training mode,
no gradient, and an *exact* average of every BN layer's batch mean and mean of
squares (AutoSlim/slimmable networks; cheaper and better than the reference's
EMA over 100 batches). Variance = E[x^2] - E[x]^2 over all calibration images.

Everything here runs in `tf.function` with the structure as an int32 tensor,
so one trace serves every candidate of a search.

Under a `tf.distribute` strategy with several replicas (the net built under
`strategy.scope()`, or `Evaluator(..., strategy=...)`), an `Evaluator` gives
each replica of each worker every R-th calibration and evaluation batch and
sums, across replicas, the BN moments with their batch counts and the
correct/total prediction counts -- exact sums, so the accuracy equals the
one-device accuracy whatever the number of replicas. Every worker must score
the same candidates in the same order (the searchers are deterministic).

Example:

  >>> data = EvaluationData.from_dataset(search_ds, num_calibration_batches=4)
  >>> evaluator = Evaluator(net, data)
  >>> evaluator.accuracy(space.uniform(0.5))        # recalibrate + top-1 accuracy
"""

import inspect

import keras
import numpy as np
import tensorflow as tf

from tf_metaprune import distribute


def _images_of(element):
  if isinstance(element, (tuple, list)):
    return element[0]
  if isinstance(element, dict):
    return element.get("image", next(iter(element.values())))
  return element


def batch_norm_moments(net, choices, image_batches):
  """Exact BN statistics of structure `choices` over `image_batches` (in-graph).

  Args:
    net: a `PruningNet`.
    choices: int32 [num_genes] tensor.
    image_batches: float32 [num_batches, batch, H, W, C] tensor (full batches).

  Returns:
    list with one (mean, variance) pair per BN layer, padded to full width.
  """
  sums, count = _moment_sums(net, choices, image_batches, 0, 1)
  return _stats_from_sums(sums, count)


# ---- what a search ranks structures by ---------------------------------------------------------

# Keras metric classes whose value is an error (lower is better); every loss is too.
_LOWER_IS_BETTER = tuple(getattr(keras.metrics, n) for n in (
    "MeanSquaredError", "MeanAbsoluteError", "MeanAbsolutePercentageError", "MeanSquaredLogarithmicError",
    "RootMeanSquaredError", "LogCoshError", "Hinge", "SquaredHinge", "CategoricalHinge", "BinaryCrossentropy",
    "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "KLDivergence", "Poisson"))
_ACCURACY_NAMES = ("accuracy", "acc", "sparse_categorical_accuracy")
_IOU_NAMES = ("mean_iou", "miou", "iou")
_METRIC_EXAMPLES = ("'accuracy', 'mean_iou', 'loss' (the model's own losses), a Keras loss such as "
                    "'sparse_categorical_crossentropy' / 'huber' / 'mse', or a Keras metric such as 'mae'")


def _loss_function(loss, who):
  """A Keras loss (name, function, `Loss` object or its config) as (function, fixed kwargs); names mean logits."""
  if isinstance(loss, dict):   # a serialized loss, e.g. from training.user_losses
    loss = keras.losses.deserialize(loss)
  if isinstance(loss, keras.losses.Loss):
    fn = getattr(loss, "fn", None)
    if fn is None:
      raise ValueError(f"{who}: loss {loss!r} ({type(loss).__name__}) has no per-example function; give a Keras "
                       "loss name or a function (y_true, y_pred) -> per-example values")
    return fn, dict(getattr(loss, "_fn_kwargs", {}))
  if isinstance(loss, str):
    try:
      fn = keras.losses.get(loss)
    except ValueError:
      return None, None
    if isinstance(fn, keras.losses.Loss):
      return _loss_function(fn, who)
    kwargs = {"from_logits": True} if "from_logits" in inspect.signature(fn).parameters else {}
    return fn, kwargs
  if callable(loss):
    return loss, {}
  raise ValueError(f"{who}: loss={loss!r} is not a Keras loss name, function or Loss object")


class SearchMetric:
  """What a search ranks structures by: top-1 accuracy, or any Keras metric or loss over the search split.

  The default, "accuracy", is MetaPruning's fitness (top-1 accuracy, with
  the cross-entropy as the tie-break) and what every search of a classifier
  used so far. A segmentation net can be ranked by mean IoU, a detector by
  its own training losses (`"loss"` with `losses=`), a regressor by an
  error. The value is accumulated over every search image (padding masked
  out) with the metric's stateless API inside the evaluator's
  `tf.function`, so every candidate still shares one trace, and summed
  across replicas (Keras' metrics keep sums: totals, counts, confusion
  matrices).

  A searcher maximizes `Candidate.accuracy`, which holds the *score*: the
  metric's value when higher is better, its negative for a loss or an
  error; `Candidate.loss` holds the value itself (for "accuracy": the mean
  cross-entropy).

  Args:
    metric: "accuracy"; "mean_iou" (per-pixel classes: `keras.metrics.MeanIoU`
      over the output's channels, predictions by argmax); "loss" (the sum of
      `losses`, weighted by `loss_weights`); any other Keras loss name
      (applied to logits: `from_logits=True` where the loss takes it) or
      metric name; or a `keras.metrics.Metric` / loss function / `Loss`
      object.
    output: which output the metric reads (index or output node name) in a
      multi-output space; default the first. Ignored by "loss".
    higher_is_better: the metric's direction; default: False for losses and
      Keras' error metrics (MSE, MAE, cross-entropies, ...), else True.
    losses: for "loss": one loss per output (list, or dict by output node
      name), each a name, function or `Loss` object -- e.g. the losses the
      model was compiled with.
    loss_weights: for "loss": one weight per output (default 1 each).

  Raises:
    ValueError: a name that is neither a Keras metric nor a loss (one line
      naming it and examples), or `losses` that do not fit the outputs.

  Example:

    >>> metric = SearchMetric("mean_iou")
    >>> evaluator = Evaluator(net, data, metric=metric)    # every searcher takes it as search_data
  """

  def __init__(self, metric="accuracy", output=None, higher_is_better=None, losses=None, loss_weights=None):
    self.metric = metric
    self.output = output
    self.losses = losses
    self.loss_weights = loss_weights
    self._higher = higher_is_better
    if isinstance(metric, str):
      self.name = metric
    else:
      self.name = getattr(metric, "name", None) or getattr(metric, "__name__", type(metric).__name__)
    if metric == "loss":
      if losses is None:
        raise ValueError("SearchMetric('loss') needs losses= (one Keras loss per output, e.g. the losses the model "
                         "was compiled with)")
    elif isinstance(metric, str) and metric not in _ACCURACY_NAMES + _IOU_NAMES:
      fn, _ = _loss_function(metric, "SearchMetric")
      if fn is None:
        try:
          keras.metrics.get(metric)
        except ValueError:
          raise ValueError(f"search metric {metric!r} is neither a Keras metric nor a Keras loss; use "
                           f"{_METRIC_EXAMPLES}") from None

  @property
  def builtin(self) -> bool:
    """Whether this is the default top-1 accuracy (the evaluator's own fast path)."""
    return isinstance(self.metric, str) and self.metric in _ACCURACY_NAMES and self.output in (None, 0)

  def get_config(self):
    """JSON-able settings (objects are named by their class): what a search state records."""
    metric = self.metric if isinstance(self.metric, str) else f"<{type(self.metric).__name__} {self.name}>"
    config = {"metric": metric}
    if self.output is not None:
      config["output"] = self.output
    if self._higher is not None:
      config["higher_is_better"] = bool(self._higher)
    if self.losses is not None:
      losses = self.losses.values() if isinstance(self.losses, dict) else self.losses
      config["losses"] = [l if isinstance(l, str) else l.get("class_name") if isinstance(l, dict)
                          else getattr(l, "name", None) or type(l).__name__ for l in losses]
    if self.loss_weights is not None:
      config["loss_weights"] = [float(w) for w in self.loss_weights]
    return config

  def _output_index(self, space, output):
    if output is None:
      return 0
    if isinstance(output, str):
      if output not in space.outputs:
        raise ValueError(f"search metric output={output!r} is not an output of space {space.name!r} "
                         f"(outputs {list(space.outputs)})")
      return space.outputs.index(output)
    if not 0 <= int(output) < len(space.outputs):
      raise ValueError(f"search metric output={output!r} is out of range: space {space.name!r} has "
                       f"{len(space.outputs)} outputs {list(space.outputs)}")
    return int(output)

  def terms(self, space):
    """[(output index, keras Metric, weight)] whose weighted sum of results is the value, for `space`."""
    if self.metric == "loss":
      losses = self.losses
      if isinstance(losses, dict):
        unknown = sorted(set(losses) - set(space.outputs))
        if unknown:
          raise ValueError(f"losses name outputs {unknown} that space {space.name!r} does not have (outputs "
                           f"{list(space.outputs)})")
        losses = [losses.get(o) for o in space.outputs]
      elif not isinstance(losses, (list, tuple)):
        losses = [losses] * len(space.outputs)
      if len(losses) != len(space.outputs):
        raise ValueError(f"{len(losses)} losses for the {len(space.outputs)} outputs {list(space.outputs)} of space "
                         f"{space.name!r}; give one per output")
      weights = [1.0] * len(losses) if self.loss_weights is None else [float(w) for w in self.loss_weights]
      if len(weights) != len(losses):
        raise ValueError(f"loss_weights={self.loss_weights!r} has {len(weights)} entries for {len(losses)} outputs")
      terms = []
      for j, (loss, w) in enumerate(zip(losses, weights)):
        if loss is None or w == 0:
          continue
        fn, kwargs = _loss_function(loss, "SearchMetric('loss')")
        if fn is None:
          raise ValueError(f"loss {loss!r} of output {space.outputs[j]!r} is not a Keras loss; use {_METRIC_EXAMPLES}")
        terms.append((j, keras.metrics.MeanMetricWrapper(fn, name=f"loss_{j}", **kwargs), w))
      return terms
    j = self._output_index(space, self.output)
    metric = self.metric
    if isinstance(metric, keras.metrics.Metric):
      return [(j, metric, 1.0)]
    if isinstance(metric, str) and metric in _ACCURACY_NAMES:
      return [(j, keras.metrics.SparseCategoricalAccuracy(), 1.0)]
    if isinstance(metric, str) and metric in _IOU_NAMES:
      classes = space.output_shape(space.outputs[j])[-1]
      return [(j, keras.metrics.MeanIoU(num_classes=classes, sparse_y_true=True, sparse_y_pred=False), 1.0)]
    fn, kwargs = _loss_function(metric, "SearchMetric") if isinstance(metric, (str, keras.losses.Loss)) else (None, None)
    if fn is not None:
      return [(j, keras.metrics.MeanMetricWrapper(fn, name=self.name, **kwargs), 1.0)]
    if isinstance(metric, str):
      found = keras.metrics.get(metric)
      if isinstance(found, keras.metrics.Metric):
        return [(j, found, 1.0)]
      metric = found
    return [(j, keras.metrics.MeanMetricWrapper(metric, name=self.name), 1.0)]

  def higher_is_better(self, terms=None) -> bool:
    """The metric's direction (see Args)."""
    if self._higher is not None:
      return bool(self._higher)
    if self.metric == "loss":
      return False
    if isinstance(self.metric, str) and self.metric in _ACCURACY_NAMES + _IOU_NAMES:
      return True
    if isinstance(self.metric, keras.losses.Loss) or (
        isinstance(self.metric, str) and _loss_function(self.metric, "SearchMetric")[0] is not None):
      return False
    if terms:
      return not isinstance(terms[0][1], _LOWER_IS_BETTER)
    return True

  def __repr__(self):
    return f"SearchMetric({self.get_config()})"


def search_metric(metric) -> SearchMetric:
  """`metric` as a `SearchMetric` (None: top-1 accuracy; a name or object: `SearchMetric(metric)`)."""
  if metric is None:
    return SearchMetric()
  if isinstance(metric, SearchMetric):
    return metric
  return SearchMetric(metric)


def _as_target(labels):
  a = np.asarray(labels)
  return a.astype(np.int32) if np.issubdtype(a.dtype, np.integer) or a.dtype == bool else a.astype(np.float32)


def _as_labels(labels):
  """Labels of one batch as an array: int32 class ids (a (B, 1) column flattened) or float32 targets."""
  a = np.asarray(labels)
  if a.ndim == 2 and a.shape[1] == 1:
    a = a.reshape(-1)
  return a.astype(np.int32) if np.issubdtype(a.dtype, np.integer) or a.dtype == bool else a.astype(np.float32)


def _moment_sums(net, choices, image_batches, first, stride):
  """Sums of every BN layer's per-batch (mean, E[x^2]) over batches first, first+stride, ...

  All batches have the same size, so these sums divided by the number of
  batches are the exact moments over all their images. Each batch is
  normalized with its own statistics (no cross-replica sync), as on one device.

  Returns:
    (list of (sum of means, sum of E[x^2]) per BN layer, float32 number of batches).
  """
  n = tf.shape(image_batches)[0]
  sums = [(tf.zeros([bn.max_channels]), tf.zeros([bn.max_channels])) for bn in net.bn_layers]
  count = tf.constant(0.0)
  for i in tf.range(first, n, stride):
    _, moments = net.forward(image_batches[i], choices, batch_stats=True, return_moments=True)
    sums = [(s0 + m0, s1 + m1) for (s0, s1), (m0, m1) in zip(sums, moments)]
    count += 1.0
  return sums, count


def _stats_from_sums(sums, count):
  count = tf.maximum(count, 1.0)
  stats = []
  for s0, s1 in sums:
    mean = s0 / count
    stats.append((mean, tf.maximum(s1 / count - tf.square(mean), 0.0)))
  return stats


def _stack_images(data, num_batches):
  """float32 [num_batches, B, H, W, C] of full batches from a dataset or an array."""
  if isinstance(data, tf.data.Dataset):
    batches = []
    for element in data:
      batches.append(np.asarray(_images_of(element), np.float32))
      if num_batches is not None and len(batches) >= num_batches:
        break
    if not batches:
      raise ValueError("the calibration dataset is empty (0 batches); pass a dataset with at least one batch of "
                       "images, e.g. load_dataset(...).train")
    size = batches[0].shape[0]
    full = [b for b in batches if b.shape[0] == size]
    return np.stack(full)
  images = np.asarray(data, np.float32)
  if images.ndim == 4:
    images = images[None]
  if images.ndim != 5:
    raise ValueError(f"calibration images must be [N, H, W, C] or [num_batches, B, H, W, C], got shape {images.shape}")
  if num_batches is not None:
    images = images[:num_batches]
  return images


def _check_images(space, shape, what):
  """Raises ValueError if images of `shape` [..., H, W, C] do not fit `space`'s input."""
  got = tuple(int(d) for d in shape[-3:])
  want = tuple(space.input_shape)
  if got[-1] != want[-1]:
    raise ValueError(f"{what} have {got[-1]} channels (image shape {got}) but space {space.name!r} takes "
                     f"{want[-1]} (input_shape={want}); build the space with input_shape={got}, or convert the "
                     "images")
  if got != want:
    raise ValueError(f"{what} are {got[0]}x{got[1]} (image shape {got}) but space {space.name!r} takes "
                     f"{want[0]}x{want[1]} (input_shape={want}): FLOPs and accuracies would be of another "
                     f"network; build the space with input_shape={got} or resize the images")


def check_evaluation_data(space, data, metric=None):
  """Checks that `EvaluationData` fits a space: image shape and channels, labels per output, label range.

  Raises:
    ValueError: naming the offending shape or label and the space's values.
  """
  _check_images(space, data.calibration_images.shape, "calibration images")
  _check_images(space, data.eval_images.shape, "search (evaluation) images")
  labels = data.eval_labels if isinstance(data.eval_labels, tuple) else (data.eval_labels,)
  if len(labels) != len(space.outputs) and (len(labels) > 1 or metric is None or search_metric(metric).builtin):
    raise ValueError(f"the search data holds {len(labels)} label arrays per batch but space {space.name!r} has "
                     f"{len(space.outputs)} outputs {list(space.outputs)}; yield (images, (labels_1, ..., "
                     f"labels_{len(space.outputs)})) in the outputs' order")
  if not search_metric(metric).builtin:
    return
  if not space.is_classifier:
    raise ValueError(f"space {space.name!r} has outputs {[space.output_shape(o) for o in space.outputs]}, not one "
                     "vector of class logits, so top-1 accuracy does not rank its structures; give a search metric "
                     f"({_METRIC_EXAMPLES})")
  real = data.eval_labels[data.eval_mask > 0]
  if real.size and (real.min() < 0 or real.max() >= space.num_classes):
    bad = int(real.max() if real.max() >= space.num_classes else real.min())
    raise ValueError(f"the search data holds label {bad} but space {space.name!r} has {space.num_classes} "
                     f"classes (labels must be in [0, {space.num_classes})); build the space with "
                     f"num_classes={max(int(real.max()) + 1, space.num_classes)} or fix the labels")


def recalibrate(net, structure, data, num_batches=None):
  """Writes the exact BN statistics of `structure` into `net`'s moving statistics.

  After this, `net.call_structure(x, structure)` and `rebuild(net, structure)`
  use them. Statistics of any other structure are overwritten.

  Args:
    net: a `PruningNet`.
    structure: a `Structure` (or a list of choices).
    data: `tf.data.Dataset` of images or (images, labels); or an array of images
      [N, H, W, C] (one batch) or [num_batches, B, H, W, C].
    num_batches: use at most this many batches (default: all).

  Returns:
    The number of images the statistics were computed from.
  """
  images = _stack_images(data, num_batches)
  _check_images(net.space, images.shape, "calibration images")
  images = tf.constant(images)
  choices = net.choices_tensor(structure)
  fn = net.moments_fn
  if fn is None:
    spec = tf.TensorSpec([None, None] + list(net.space.input_shape), tf.float32)
    fn = tf.function(lambda ch, im: batch_norm_moments(net, ch, im),
                     input_signature=[tf.TensorSpec([len(net.space.genes)], tf.int32), spec])
    net.moments_fn = fn
  stats = fn(choices, images)
  for bn, (mean, var) in zip(net.bn_layers, stats):
    bn.moving_mean.assign(mean)
    bn.moving_variance.assign(var)
  return int(images.shape[0] * images.shape[1])


class EvaluationData:
  """Fixed calibration and evaluation batches for judging candidates.

  Every candidate of a search is calibrated on the same images and scored on
  the same held-out images, so their accuracies are comparable. Evaluation
  batches are padded to full size with a mask, so no image is dropped.

  Attributes:
    calibration_images: float32 [Nc, B, H, W, C].
    eval_images: float32 [Ne, B, H, W, C].
    eval_labels: int32 [Ne, B] class ids; or, for other targets, [Ne, B, ...]
      (int32 class ids per pixel, float32 boxes or values); for a
      multi-output network a tuple of such arrays, one per output.
    eval_mask: float32 [Ne, B] (1 for real images, 0 for padding).
  """

  def __init__(self, calibration_images, eval_images, eval_labels, eval_mask):
    self.calibration_images = np.asarray(calibration_images, np.float32)
    self.eval_images = np.asarray(eval_images, np.float32)
    if isinstance(eval_labels, (tuple, list)):
      self.eval_labels = tuple(_as_target(y) for y in eval_labels)
    else:
      self.eval_labels = _as_target(eval_labels)
    self.eval_mask = np.asarray(eval_mask, np.float32)
    if self.calibration_images.shape[0] < 1:
      raise ValueError("EvaluationData needs at least one full calibration batch")
    if self.eval_mask.sum() < 1:
      raise ValueError("EvaluationData needs at least one evaluation image")

  @property
  def num_eval_images(self) -> int:
    return int(self.eval_mask.sum())

  @classmethod
  def from_dataset(cls, dataset, num_calibration_batches=4, calibration_dataset=None, max_eval_batches=None):
    """Builds it from batched datasets of (images, labels).

    Args:
      dataset: the held-out search split, batched (scored in full unless
        `max_eval_batches` is given).
      num_calibration_batches: full batches used for BN statistics.
      calibration_dataset: where calibration images come from (default:
        `dataset`). The reference recalibrates on training images: pass
        `splits.calibration` (the train split in a fixed order), not the
        reshuffling `splits.train`, whose first batches change with every
        pass -- a search resumed in a new process would then calibrate on
        other images, and its state would be refused as of other data.
      max_eval_batches: score only the first batches.

    Raises:
      ValueError: if a dataset is empty or yields no labels.
    """
    calib = _stack_images(calibration_dataset if calibration_dataset is not None else dataset,
                          num_calibration_batches)
    xs, ys = [], []
    for element in dataset:
      if not isinstance(element, (tuple, list)) or len(element) < 2:
        raise ValueError("the evaluation dataset must yield (images, labels)")
      if isinstance(element[1], dict):
        raise ValueError("the evaluation dataset yields labels as a dict; yield a tuple of label arrays in the "
                         "order of the model's outputs")
      xs.append(np.asarray(element[0], np.float32))
      multi = isinstance(element[1], (tuple, list))
      ys.append(tuple(_as_labels(y) for y in element[1]) if multi else (_as_labels(element[1]),))
      if max_eval_batches is not None and len(xs) >= max_eval_batches:
        break
    if not xs:
      raise ValueError("the evaluation (search) dataset is empty (0 batches); pass the held-out search split, "
                       "e.g. load_dataset(...).search, with at least one image")
    images = np.concatenate(xs)
    b = xs[0].shape[0]
    n_batches = -(-images.shape[0] // b)
    pad = n_batches * b - images.shape[0]
    mask = np.concatenate([np.ones(images.shape[0], np.float32), np.zeros(pad, np.float32)])
    images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], np.float32)])
    per_output = []
    for j in range(len(ys[0])):
      labels = np.concatenate([y[j] for y in ys])
      labels = np.concatenate([labels, np.zeros((pad,) + labels.shape[1:], labels.dtype)])
      per_output.append(labels.reshape((n_batches, b) + labels.shape[1:]))
    return cls(calib, images.reshape((n_batches, b) + images.shape[1:]),
               per_output[0] if len(per_output) == 1 else tuple(per_output), mask.reshape(n_batches, b))


class Evaluator:
  """Recalibrates and scores structures of one PruningNet in one `tf.function`.

  The structure is an int32 tensor argument, so all candidates share one trace
  (`trace_count` stays 1). Nothing is written to the network's variables.

  With a strategy of several replicas the batches are split across replicas
  (replica r takes batches r, r+R, ...) and the BN moment sums, batch counts
  and correct/total counts are summed across replicas (see the module
  docstring); every worker holds the same `EvaluationData` and gets the same
  accuracy.

  Args:
    net: a trained `PruningNet`.
    data: an `EvaluationData`.
    strategy: a `tf.distribute.Strategy`; default: the one `net` was built
      under (`net.distribute_strategy`), i.e. one device unless the net was
      created inside `strategy.scope()`.
    metric: what structures are ranked by: a `SearchMetric`, a metric or
      loss name or object (`SearchMetric(metric)`), or None for top-1
      accuracy. Every searcher scores through the evaluator, so passing
      this `Evaluator` as their `search_data` makes them all rank by it.

  Raises:
    ValueError: if the data does not fit the net's space (image size or
      channels, labels outside [0, num_classes), one label array per
      output), or the metric does not fit it.
  """

  def __init__(self, net, data, strategy=None, metric=None):
    if not isinstance(data, EvaluationData):
      raise TypeError(f"Evaluator(data=...) needs an EvaluationData, got {type(data).__name__}; build one with "
                      "EvaluationData.from_dataset(search_split)")
    self.metric = search_metric(metric)
    check_evaluation_data(net.space, data, self.metric)
    self.net = net
    self.data = data
    self.strategy = strategy if strategy is not None else net.distribute_strategy
    self._calib = tf.constant(data.calibration_images)
    self._x = tf.constant(data.eval_images)
    if self.metric.builtin:
      self._y = tf.constant(np.asarray(data.eval_labels).astype(np.int32))
      self._terms, self._higher = None, True
    else:
      labels = data.eval_labels if isinstance(data.eval_labels, tuple) else (data.eval_labels,)
      self._ys = [tf.constant(y) for y in labels]
      self._terms = self.metric.terms(net.space)
      self._higher = self.metric.higher_is_better(self._terms)
    self._mask = tf.constant(data.eval_mask)
    self.trace_count = 0
    self._fn = tf.function(self._scores, input_signature=[tf.TensorSpec([len(net.space.genes)], tf.int32)])

  @property
  def num_replicas(self) -> int:
    """Replicas (over all workers) the batches are split across."""
    return int(self.strategy.num_replicas_in_sync)

  def _scores(self, choices):
    self.trace_count += 1
    if self.num_replicas == 1:
      return self._replica_scores(choices)
    per_replica = self.strategy.run(self._replica_scores, args=(choices,))
    return self.strategy.experimental_local_results(per_replica)[0]

  def _replica_scores(self, choices):
    """This replica's share of calibration and evaluation, summed over all replicas."""
    first, stride = distribute.replica_shard()
    sums, count = _moment_sums(self.net, choices, self._calib, first, stride)
    flat = [t for pair in sums for t in pair] + [count]
    flat = distribute.all_reduce_sum(flat)
    stats = _stats_from_sums(list(zip(flat[:-1:2], flat[1:-1:2])), flat[-1])
    if self._terms is not None:
      return self._metric_scores(choices, stats, first, stride)
    correct, total, loss_sum = tf.constant(0.0), tf.constant(0.0), tf.constant(0.0)
    for i in tf.range(first, tf.shape(self._x)[0], stride):
      logits = self.net.forward(self._x[i], choices, batch_stats=False, bn_stats=stats)
      hit = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), self._y[i]), tf.float32)
      loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=self._y[i], logits=tf.cast(logits, tf.float32))
      correct += tf.reduce_sum(hit * self._mask[i])
      loss_sum += tf.reduce_sum(loss * self._mask[i])
      total += tf.reduce_sum(self._mask[i])
    correct, total, loss_sum = distribute.all_reduce_sum([correct, total, loss_sum])
    return tf.stack([correct / total, loss_sum / total])

  def _metric_scores(self, choices, stats, first, stride):
    """[score, value] of a `SearchMetric` other than top-1 accuracy (see `scores_tensor`)."""
    multi = len(self.net.space.outputs) > 1
    states = [[tf.zeros_like(v) for v in m.variables] for _, m, _ in self._terms]
    for i in tf.range(first, tf.shape(self._x)[0], stride):
      preds = self.net.forward(self._x[i], choices, batch_stats=False, bn_stats=stats)
      preds = preds if multi else [preds]
      new_states = []
      for (j, m, _), state in zip(self._terms, states):
        y_true = self._ys[j][i]
        weight = self._mask[i]
        if isinstance(m, keras.metrics.IoU):  # confusion-matrix metrics weigh every element of y_true
          weight = tf.broadcast_to(tf.reshape(weight, [-1] + [1] * (len(y_true.shape) - 1)), tf.shape(y_true))
          weight = tf.cast(weight, m.dtype)   # 0/1: exact in the metric's (possibly integer) dtype
        new_states.append(m.stateless_update_state(state, y_true, tf.cast(preds[j], tf.float32),
                                                   sample_weight=weight))
      states = new_states
    value = tf.constant(0.0)
    for (_, m, w), state in zip(self._terms, states):
      state = distribute.all_reduce_sum(list(state))
      value += w * tf.cast(m.stateless_result(state), tf.float32)
    score = value if self._higher else -value
    return tf.stack([score, value])

  def scores_tensor(self, choices):
    """[score, loss] (float32 [2] tensor) of int32 `choices`.

    With the default metric: [top-1 accuracy, mean cross-entropy]. Both come
    from the same recalibrated forward passes. The loss is the continuous
    part of the fitness: two structures with the same accuracy on a few
    thousand images (0.02-0.25 pt steps) are told apart by it rather than by
    their FLOPs (`search.result.rank`). With another `SearchMetric`: [its
    value if higher is better else minus it, its value]. Usable in
    `tf.function`.
    """
    return self._fn(choices)

  def accuracy_tensor(self, choices):
    """Top-1 accuracy (the search metric's score, see `scores_tensor`) of int32 `choices`; usable in `tf.function`."""
    return self.scores_tensor(choices)[0]

  def accuracy(self, structure) -> float:
    """Top-1 accuracy in [0, 1] (the search metric's score) of `structure` after BN recalibration."""
    return float(self.accuracy_tensor(self.net.choices_tensor(structure)))

  def scores(self, structure):
    """(top-1 accuracy in [0, 1], mean cross-entropy loss) of `structure` after BN recalibration."""
    acc, loss = self.scores_tensor(self.net.choices_tensor(structure)).numpy().tolist()
    return float(acc), float(loss)
