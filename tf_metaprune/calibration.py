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


def check_evaluation_data(space, data):
  """Checks that `EvaluationData` fits a space: image shape and channels, label range.

  Raises:
    ValueError: naming the offending shape or label and the space's values.
  """
  _check_images(space, data.calibration_images.shape, "calibration images")
  _check_images(space, data.eval_images.shape, "search (evaluation) images")
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
    eval_labels: int32 [Ne, B].
    eval_mask: float32 [Ne, B] (1 for real images, 0 for padding).
  """

  def __init__(self, calibration_images, eval_images, eval_labels, eval_mask):
    self.calibration_images = np.asarray(calibration_images, np.float32)
    self.eval_images = np.asarray(eval_images, np.float32)
    self.eval_labels = np.asarray(eval_labels, np.int32)
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
      xs.append(np.asarray(element[0], np.float32))
      ys.append(np.asarray(element[1]).astype(np.int32).reshape(-1))
      if max_eval_batches is not None and len(xs) >= max_eval_batches:
        break
    if not xs:
      raise ValueError("the evaluation (search) dataset is empty (0 batches); pass the held-out search split, "
                       "e.g. load_dataset(...).search, with at least one image")
    images = np.concatenate(xs)
    labels = np.concatenate(ys)
    b = xs[0].shape[0]
    n_batches = -(-images.shape[0] // b)
    pad = n_batches * b - images.shape[0]
    mask = np.concatenate([np.ones(images.shape[0], np.float32), np.zeros(pad, np.float32)])
    images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], np.float32)])
    labels = np.concatenate([labels, np.zeros(pad, np.int32)])
    return cls(calib, images.reshape((n_batches, b) + images.shape[1:]), labels.reshape(n_batches, b),
               mask.reshape(n_batches, b))


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

  Raises:
    ValueError: if the data does not fit the net's space (image size or
      channels, labels outside [0, num_classes)).
  """

  def __init__(self, net, data, strategy=None):
    if not isinstance(data, EvaluationData):
      raise TypeError(f"Evaluator(data=...) needs an EvaluationData, got {type(data).__name__}; build one with "
                      "EvaluationData.from_dataset(search_split)")
    check_evaluation_data(net.space, data)
    self.net = net
    self.data = data
    self.strategy = strategy if strategy is not None else net.distribute_strategy
    self._calib = tf.constant(data.calibration_images)
    self._x = tf.constant(data.eval_images)
    self._y = tf.constant(data.eval_labels)
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

  def scores_tensor(self, choices):
    """[top-1 accuracy, mean cross-entropy loss] (float32 [2] tensor) of int32 `choices`.

    Both come from the same recalibrated forward passes. The loss is the
    continuous part of the fitness: two structures with the same accuracy on
    a few thousand images (0.02-0.25 pt steps) are told apart by it rather
    than by their FLOPs (`search.result.rank`). Usable in `tf.function`.
    """
    return self._fn(choices)

  def accuracy_tensor(self, choices):
    """Top-1 accuracy (float32 scalar tensor) of int32 `choices`; usable in `tf.function`."""
    return self.scores_tensor(choices)[0]

  def accuracy(self, structure) -> float:
    """Top-1 accuracy in [0, 1] of `structure` after BN recalibration."""
    return float(self.accuracy_tensor(self.net.choices_tensor(structure)))

  def scores(self, structure):
    """(top-1 accuracy in [0, 1], mean cross-entropy loss) of `structure` after BN recalibration."""
    acc, loss = self.scores_tensor(self.net.choices_tensor(structure)).numpy().tolist()
    return float(acc), float(loss)
