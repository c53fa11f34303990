"""Prune a model you already trained: keep its important channels, start from its weights.

MetaPruning's PruningNet and leading-channel slicing keep whichever channels
come first. For a trained network that throws its weights away. This module
makes the leading channels the *important* ones, so every narrower structure
of the space starts from the best part of your model:

1. **Importance per gene.** Each channel of a gene is scored by the L1 norm of
   its output filter, summed over every layer that produces that gene (layers
   tied by a residual add are summed), as in Li et al., "Pruning Filters for
   Efficient ConvNets" (ICLR 2017) -- or by the batch-norm |gamma| of the
   channel (Liu et al., "Network Slimming", ICCV 2017), summed the same way.
2. **Reordering.** Each gene's channels are sorted by importance, and the one
   permutation per gene is applied to every weight that touches the gene's
   channels: the producing kernels' output axis, the next layers' input axis,
   depthwise kernels, batch norm, the slices of a concatenation, both sides of
   a residual add. The space already knows where every gene sits in every
   node's output (`SearchSpace.layout`), so the driver is short and the
   per-op part is one method of the op registry (`ops.Op.take_channels`). The
   reordered full-width network computes the same function (logits equal to
   float rounding: tests/pretrained_test.py).
3. **Pretrained weights for any structure**: the reordered weights sliced to
   the structure's leading channels (`TrainedModel.rebuild`, the pipeline's
   `init="pretrained"`), and a PruningNet whose base kernels, batch norm and
   classifier are the reordered weights (`TrainedModel.pruning_net`): its
   generators start at zero (weight sharing), so at full width it *is* your
   model.

The peers' baselines live here too, because they are importance rules:
`l1_uniform_structure` (every gene at one width ratio, keeping the highest-L1
channels: Li et al. 2017, Torch-Pruning's default) and
`global_magnitude_structure` (one importance threshold across all genes, each
gene's scores divided by their mean: Torch-Pruning's global pruning with its
default "mean" normalizer).

A permutation and a slice are both a *take* of channel indices, so one
method per op serves both: `ops.get(node.op).take_channels(node, weights,
in_index, out_index)` returns the node's arrays restricted (and ordered) to
those input and output channels. Reading the trained arrays, the filter norms
and BN scales the importance comes from, and loading a PruningNet are op
methods too (`read_weights`, `filter_norms`, `bn_scale`,
`set_pruning_weights`): this module holds no per-op code.

Example:

  >>> model = keras.saving.load_model("my_trained_cnn.keras")    # doctest: +SKIP
  >>> trained = tfmp.pretrained.TrainedModel(model)              # space + L1 reordering
  >>> net = trained.pruning_net()                                # = your model at full width
  >>> pruned = trained.rebuild(trained.space.uniform(0.5))       # the important half of every layer
"""

import warnings
from typing import Dict

import keras
import numpy as np
import tensorflow as tf

from tf_metaprune import ops
from tf_metaprune import pruning_net as pruning_net_lib
from tf_metaprune import space as space_lib
from tf_metaprune import training
from tf_metaprune.rebuild import rebuild as rebuild_model
from tf_metaprune.search.uniform import largest_uniform

IMPORTANCE = ("l1", "bn_gamma")


# ---------------------------------------------------------------------------------------------
# Reading a trained model's weights into the space's node form (per op: `ops.Op.read_weights`).


def check_reorderable(model):
  """Raises ValueError naming the first layer of `model` whose weights cannot be reordered.

  A layer with weights must be read by an op of the registry that holds
  weights (`tf_metaprune.ops`: Conv2D, DepthwiseConv2D, SeparableConv2D,
  Dense, BatchNormalization); parameter-free layers are fine.
  """
  for layer in _all_layers(model):
    op = ops.for_keras_layer(layer)
    if layer.weights and (op is None or not op.holds_weights):
      shapes = [tuple(int(d) for d in v.shape) for v in layer.weights]
      known = ", ".join(o.keras_doc for o in map(ops.get, ops.names()) if o.holds_weights and o.keras_doc)
      raise ValueError(
          f"layer {layer.name!r} ({type(layer).__name__}) holds weights {shapes} whose channels tf_metaprune cannot "
          f"reorder (only {known} can be); replace it with those layers, or prune the model without it")


def _all_layers(model):
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      yield from _all_layers(layer)
    else:
      yield layer


def read_weights(space, model) -> Dict[str, Dict[str, np.ndarray]]:
  """The full-width weights of a trained `model`, per node of `space`.

  Args:
    space: the model's `SearchSpace` (`SearchSpace.from_keras_model(model)`,
      or a built-in family whose plain rebuild `model` is).
    model: the trained Keras model (its layers named as the space's nodes).

  Returns:
    dict node name -> dict of numpy arrays, in the form of
    `PruningNet.generated_weights` ("kernel", "bias", "depthwise_kernel",
    "pointwise_kernel", "gamma", "beta", "moving_mean", "moving_variance");
    gamma/beta of a batch norm without scale/center are ones/zeros.

  Raises:
    ValueError: for a layer that cannot be reordered, a layer the space
      names but the model lacks, or weights of the wrong shape.
  """
  check_reorderable(model)
  out = {}
  for node in space.nodes:
    w = ops.get(node.op).read_weights(node, model)
    if w is not None:
      _check_shapes(space, node, w)
      out[node.name] = w
  return out


def _check_shapes(space, node, w):
  """Every weight axis of the node has the space's full width (the model is the space's)."""
  widths = (space.max_channels(node.inputs[0]), space.max_channels(node.name))
  for key, axes in ops.get(node.op).weight_axes(node).items():
    for axis, width in zip(axes, widths):
      if key in w and axis is not None and w[key].shape[axis] != width:
        raise ValueError(f"layer {node.name!r} has {key} of shape {tuple(w[key].shape)}, but node {node.name!r} of "
                         f"space {space.name!r} needs {width} channels on axis {axis}; is the space made from "
                         "another model?")


# ---------------------------------------------------------------------------------------------
# Importance and permutations.


def channel_importance(space, weights, importance="l1") -> Dict[str, np.ndarray]:
  """Importance of every channel of every gene, summed over the layers tied to it.

  Args:
    space: the `SearchSpace`.
    weights: full-width weights from `read_weights`.
    importance: "l1" -- the L1 norm of each output filter (kernel entries of
      one output channel) of every conv, separable conv and dense layer that
      produces the gene -- or "bn_gamma" -- |gamma| of every batch norm over
      the gene's channels (a concatenation's batch norm gives each gene its
      slice).

  Returns:
    dict gene name -> float array [base_channels].

  Genes that no scaled batch norm covers (e.g. a squeeze-and-excitation
  conv) are ranked by "l1" under "bn_gamma", with a warning naming them.

  Raises:
    ValueError: for an unknown `importance`.
  """
  if importance not in IMPORTANCE:
    raise ValueError(f"importance={importance!r} must be one of {IMPORTANCE} (L1 norm of the output filters, or "
                     "batch-norm |gamma|)")
  scores = [np.zeros(g.base_channels, np.float64) for g in space.genes]
  covered = [False] * len(space.genes)
  for node in space.nodes:
    w = weights.get(node.name)
    if w is None:
      continue
    op = ops.get(node.op)
    if importance == "l1":
      g, norms = space.gene_of(node.name), op.filter_norms(node, w)
      if g is not None and norms is not None:
        scores[g] += norms
        covered[g] = True
      continue
    gamma = op.bn_scale(node, w)
    if gamma is None:
      continue
    offset = 0
    for kind, v in space.layout[node.name]:   # a concatenation's batch norm: each gene its slice
      width = space.genes[v].base_channels if kind == "gene" else v
      if kind == "gene":
        scores[v] += np.abs(gamma[offset:offset + width])
        covered[v] = True
      offset += width
  missing = [g.name for g, c in zip(space.genes, covered) if not c]
  if missing:
    warnings.warn(f"importance={importance!r}: genes {missing} have no scaled batch norm to read |gamma| from; "
                  "they are ranked by the L1 norm of their filters", stacklevel=2)
    l1 = channel_importance(space, weights, "l1")
    for i, g in enumerate(space.genes):
      if not covered[i]:
        scores[i] = l1[g.name]
  return {g.name: s for g, s in zip(space.genes, scores)}


def permutations(space, scores) -> Dict[str, np.ndarray]:
  """One permutation per gene: its channels, most important first (ties keep their order)."""
  return {g.name: np.argsort(-scores[g.name], kind="stable").astype(np.int64) for g in space.genes}


def layout_index(space, node_name, perms, gene_channels=None) -> np.ndarray:
  """Channels of a node's full-width output to take, in order: each gene's kept channels, per slice.

  Args:
    space: the `SearchSpace`.
    node_name: the node whose output channels are indexed.
    perms: gene name -> permutation (from `permutations`), or None for the
      identity (plain leading-channel slicing).
    gene_channels: int array [num_genes] of kept channels per gene (default:
      every gene at full width: the index is then a permutation).

  Returns:
    int64 array: for each slice of the node's layout (one, except after a
    concatenation), the first `gene_channels[g]` entries of gene g's
    permutation, offset by the full width of the slices before it; fixed
    slices are kept whole and in order.
  """
  parts, offset = [], 0
  for kind, v in space.layout[node_name]:
    if kind == "gene":
      gene = space.genes[v]
      keep = gene.base_channels if gene_channels is None else int(gene_channels[v])
      perm = np.arange(gene.base_channels) if perms is None else perms[gene.name]
      parts.append(perm[:keep] + offset)
      offset += gene.base_channels
    else:
      parts.append(np.arange(v) + offset)
      offset += v
  return np.concatenate(parts).astype(np.int64)


def take_weights(space, weights, perms, gene_channels=None) -> Dict[str, Dict[str, np.ndarray]]:
  """`weights` with every gene's channels permuted by `perms` and cut to `gene_channels`.

  The reorder driver: for each node with weights, its input and output
  channel indices come from the space's layouts (`layout_index`), and the
  node's op takes them (`ops.Op.take_channels`). Ops without weights act on
  every channel alike (activations, pooling, add, concat, ...), so a
  permutation of their input is the same permutation of their output.
  """
  out = {}
  for node in space.nodes:
    if node.name in weights:
      in_index = layout_index(space, node.inputs[0], perms, gene_channels)
      out_index = layout_index(space, node.name, perms, gene_channels)
      out[node.name] = ops.get(node.op).take_channels(node, weights[node.name], in_index, out_index)
  return out


# ---------------------------------------------------------------------------------------------
# Baseline structures (the peers' methods).


def l1_uniform_structure(space, budget):
  """Li et al. (2017) at uniform width: the largest single width ratio meeting `budget`.

  With a `TrainedModel`'s L1 reordering, rebuilding this structure keeps the
  highest-L1 filters of every layer (what Torch-Pruning does by default).

  Returns:
    (width_ratio, Structure).
  """
  return largest_uniform(space, budget)


def global_magnitude_structure(space, scores, budget):
  """One importance threshold across all genes (Torch-Pruning's global pruning).

  Each gene's scores are divided by their mean (Torch-Pruning's default
  "mean" normalizer: raw L1 norms grow with a layer's fan-in, so a raw
  global threshold would empty the thin layers first), then every channel at
  or above one threshold is kept; a gene keeps the largest of its width
  choices not above its count. The threshold is the lowest that meets
  `budget` (the structure shrinks as the threshold rises; with a FLOPs window
  the first structure from the top that lands inside it).

  Args:
    space: the `SearchSpace`.
    scores: gene name -> importance (from `channel_importance`).
    budget: a `Budget`.

  Returns:
    (threshold, Structure).

  Raises:
    ValueError: if no threshold's structure meets the budget (e.g. a window
      narrower than the jumps between thresholds).
  """
  normalized = {g.name: scores[g.name] / max(float(np.mean(scores[g.name])), 1e-30) for g in space.genes}
  levels = np.unique(np.concatenate(list(normalized.values())))

  def structure_at(threshold):
    choices = []
    for g in space.genes:
      keep = int(np.sum(normalized[g.name] >= threshold))
      fits = [i for i, c in enumerate(g.channels) if c <= keep]
      choices.append(fits[-1] if fits else 0)
    return space_lib.Structure(choices)

  # The structure shrinks as the threshold rises; with a FLOPs window (a lower bound too) feasibility is not
  # monotone in the threshold, so walk the distinct structures from the largest down and take the first
  # feasible one (a few hundred to a few thousand levels: cheap next to one training step).
  tried = []
  for threshold in list(levels) + [float(levels[-1]) + 1.0]:
    structure = structure_at(threshold)
    if tried and structure.choices == tried[-1][1].choices:
      continue
    if budget.is_feasible(space, structure):
      return float(threshold), structure
    tried.append((float(threshold), structure))
  sizes = sorted({round(space.mflops(s), 6) for _, s in tried})
  raise ValueError(f"no single global threshold lands in {budget!r} on space {space.name!r}: its structures "
                   f"have {', '.join(f'{m:.4g}' for m in sizes[:3])} ... {sizes[-1]:.4g} MFLOPs; widen the "
                   "budget's window (min_flops_ratio / --min_flops_ratio) or raise the budget")


# ---------------------------------------------------------------------------------------------
# The user's door.


class TrainedModel:
  """A trained Keras model, read as a search space with its channels ordered by importance.

  Args:
    model: the trained Keras model: any model `SearchSpace.from_keras_model`
      reads, or the plain rebuild of a built-in family (then pass `space`).
    space: its `SearchSpace` (default: `SearchSpace.from_keras_model(model,
      width_ratios, divisor)`).
    importance: "l1" (default) or "bn_gamma"; see `channel_importance`.
    width_ratios, divisor: passed to `from_keras_model` when `space` is None.

  Attributes:
    model: the model (changed only by `recalibrate_batch_norm`).
    space: the search space.
    scores: gene name -> per-channel importance (original channel order).
    perms: gene name -> permutation, most important channel first.
    weights: the reordered full-width weights, per node.
    batch_norm: the record of the pipeline's stale batch-norm check
      (`tf_metaprune.pipeline.check_original`), or None.

  Raises:
    ValueError: naming the layer, for a layer whose weights cannot be
      reordered or that the space cannot read.

  Example:

    >>> trained = TrainedModel(model)                                  # doctest: +SKIP
    >>> same = trained.reordered_model()        # computes what `model` computes
    >>> small = trained.rebuild(trained.space.uniform(0.25))          # the most important quarter
  """

  def __init__(self, model, space=None, importance="l1", width_ratios=None, divisor=8):
    check_reorderable(model)
    if space is None:
      space = space_lib.SearchSpace.from_keras_model(model, width_ratios=width_ratios, divisor=divisor)
    self.model = model
    self.space = space
    self.importance = importance
    self.original_weights = read_weights(space, model)
    self.scores = channel_importance(space, self.original_weights, importance)
    self.perms = permutations(space, self.scores)
    self.weights = take_weights(space, self.original_weights, self.perms)
    self.batch_norm = None   # set by tf_metaprune.pipeline.check_original
    self._logits_model = None

  def recalibrate_batch_norm(self, data, num_batches=None):
    """Recomputes `model`'s batch-norm statistics on `data` (`training.recalibrate_batch_norm`) and re-reads them.

    For a model whose moving statistics lag its weights (`batch_norm_check`):
    every structure, the PruningNet and the logits model then start from the
    recalibrated statistics. The channel ranking does not change (it reads
    kernels or gammas, not statistics).

    Returns:
      The number of batch-norm layers recalibrated.
    """
    count = training.recalibrate_batch_norm(self.model, data, num_batches=num_batches)
    self.original_weights = read_weights(self.space, self.model)
    self.weights = take_weights(self.space, self.original_weights, self.perms)
    self._logits_model = None
    return count

  def sliced_weights(self, structure) -> Dict[str, Dict[str, np.ndarray]]:
    """The reordered weights cut to `structure` (each gene keeps its most important channels)."""
    channels = self.space.gene_channels(structure)
    return take_weights(self.space, self.weights, None, channels)

  def rebuild(self, structure, bn_momentum=0.99, name=None, output_activation=False):
    """`structure` as a plain Keras model holding the kept channels' trained weights (init="pretrained").

    It outputs logits unless `output_activation` (see `tf_metaprune.rebuild`).
    """
    return rebuild_model(self.space, structure, weights=self.sliced_weights(structure), bn_momentum=bn_momentum,
                         name=name, output_activation=output_activation)

  def reordered_model(self, output_activation=True):
    """The full-width model with every gene's channels reordered: the same function as `model`.

    With `output_activation=False` it ends with the logits (the same as
    `model` for a model that outputs logits).
    """
    return self.rebuild(self.space.largest(), name=f"{self.model.name}_reordered",
                        output_activation=output_activation)

  def logits_model(self):
    """`model` up to its logits: itself, or (a softmax/sigmoid head) its full-width rebuild without it.

    What distillation uses as the teacher and what scores the original with
    a logits loss; built once.
    """
    if self.space.output_activation is None:
      return self.model
    if self._logits_model is None:
      self._logits_model = self.reordered_model(output_activation=False)
    return self._logits_model

  def pruning_net(self, **kwargs):
    """A `PruningNet` of the space that starts from the reordered trained weights.

    Args:
      **kwargs: passed to `PruningNet` (hidden_units, bn_mode, seed, ...).

    Returns:
      The net; `net.call_structure(x, space.largest())` gives the model's
      logits (its BN moving statistics are the model's).
    """
    net = pruning_net_lib.PruningNet(self.space, **kwargs)
    load_into_pruning_net(net, self.weights)
    return net

  def l1_uniform(self, budget):
    """(width_ratio, Structure) of Li et al.'s uniform-width baseline under `budget`."""
    return l1_uniform_structure(self.space, budget)

  def global_magnitude(self, budget):
    """(threshold, Structure) of the global-magnitude baseline under `budget`."""
    return global_magnitude_structure(self.space, self.scores, budget)


def load_into_pruning_net(net, weights):
  """Sets a PruningNet's base kernels, biases and batch norms to full-width `weights`.

  The generators' output kernels are set to zero, so the net is plain weight
  sharing of these weights until it trains: at full width it computes what
  the model they came from computes. Per op: `ops.Op.set_pruning_weights`.

  Args:
    net: a `PruningNet` of the space the weights belong to.
    weights: node name -> arrays, full width (`TrainedModel.weights`).

  Raises:
    ValueError: for a node missing from `weights`, or a batch norm with a
      learned scale/shift the net cannot hold (`bn_affine=False`).
  """
  space = net.space
  for node in space.nodes:
    op = ops.get(node.op)
    if not op.holds_weights:
      continue
    if node.name not in weights:
      raise ValueError(f"weights hold no entry for node {node.name!r} ({node.op}) of space {space.name!r}")
    op.set_pruning_weights(net, node, weights[node.name])


# ---------------------------------------------------------------------------------------------
# Are the trained model's batch-norm statistics those of its weights?


def accuracy(model, data, num_batches=None, training_mode=False):
  """Top-1 accuracy of `model` on (images, labels) batches: argmax of its outputs, logits or probabilities alike.

  No compile and no loss, so it works for any head (a softmax model scored
  with a logits loss would make Keras warn).

  Args:
    model: a Keras model outputting class scores [batch, classes].
    data: a batched `tf.data.Dataset` of (images, integer labels).
    num_batches: use at most this many batches (None: all).
    training_mode: call the model with `training=True`: each batch norm
      normalises with the batch's own statistics (dropout is on too). The
      model's moving statistics are put back afterwards, so it is unchanged.

  Returns:
    The accuracy in [0, 1].
  """
  right, seen = _count_correct(model, data, num_batches, training_mode)
  return right / seen


def _count_correct(model, data, num_batches, training_mode):
  """(correct predictions, images) of `model` on `data` (see `accuracy`)."""
  saved = [v.numpy() for v in model.non_trainable_variables] if training_mode else None

  @tf.function
  def correct(images, labels):
    predicted = tf.argmax(model(images, training=training_mode), axis=-1, output_type=tf.int64)
    return tf.reduce_sum(tf.cast(tf.equal(predicted, tf.reshape(tf.cast(labels, tf.int64), [-1])), tf.int64))

  right = seen = 0
  try:
    for i, (images, labels) in enumerate(data):
      if num_batches is not None and i >= int(num_batches):
        break
      right += int(correct(images, labels))
      seen += int(images.shape[0])
  finally:
    if saved is not None:
      for v, value in zip(model.non_trainable_variables, saved):
        v.assign(value)
  if not seen:
    raise ValueError("accuracy: `data` yielded no batch")
  return right, seen


def batch_norm_check(model, data, num_batches=None):
  """`model`'s accuracy on the same training images in inference mode and with batch statistics.

  A model trained briefly with batch-norm momentum 0.999 (keras.applications'
  default) scores at chance in inference mode while its weights are fine:
  its moving statistics still remember their start. With batch statistics
  (each batch normalised by itself, as during its training steps) the same
  images then score what the model learned; a gap of more than a few points
  means the statistics are stale and `TrainedModel.recalibrate_batch_norm`
  (precise BN on the training images) repairs them.

  Args:
    model: the trained Keras model.
    data: training images and labels, batched, fixed order (e.g.
      `DatasetSplits.calibration`).
    num_batches: at most this many batches (None: all).

  Returns:
    {"train_accuracy_inference", "train_accuracy_batch_stats", "images"}.
  """
  right, images = _count_correct(model, data, num_batches, False)
  right_batch_stats, _ = _count_correct(model, data, num_batches, True)
  return {"train_accuracy_inference": right / images, "train_accuracy_batch_stats": right_batch_stats / images,
          "images": images}
