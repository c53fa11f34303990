"""The one FLOPs and parameter counter of tf_metaprune.

"FLOPs" here follows the MetaPruning / AutoSlim papers: the number of
multiply-adds (MACs) of convolutions, depthwise convolutions and dense layers
for ONE image. Batch norm, activations, pooling and additions are not counted.
Parameter counts follow `keras.Model.count_params()`: every weight, including
batch-norm moving statistics (4 numbers per channel).

Every structure in a `SearchSpace` reduces to a sum of terms
`coef * width_a * width_b`, where a width is a gene's channel count, a fixed
width or 1. The same term table is evaluated three ways, so they cannot drift
apart:

  * `structure_mflops(space, s)` / `structure_params(space, s)` in numpy;
  * `SpaceCounter(space).mflops(choices)` as TensorFlow ops, usable inside
    `tf.function` on one structure `[num_genes]` or a population
    `[population, num_genes]` (the search uses it);
  * `count_flops(model)` for any plain Keras model (by layer type), which the
    tests pin to the space count of the rebuilt model.

Example:

  >>> space = tf_metaprune.models.small_cnn((28, 28, 1), 10)
  >>> space.mflops(space.largest()) == tf_metaprune.count_flops(
  ...     tf_metaprune.rebuild(space, space.largest())) / 1e6
  True
"""

import keras
import numpy as np
import tensorflow as tf

from tf_metaprune import ops


def _terms(space):
  """Returns (flops_terms, params_terms): int arrays [T, 3] of (coef, a, b).

  `a` and `b` index the extended channel vector [genes..., fixed..., 1].
  """
  cached = getattr(space, "_tfmp_terms", None)
  if cached is not None:
    return cached
  one = len(space.genes) + len(space.fixed_widths)
  flops, params = [], []
  for node in space.nodes:
    node_flops, node_params = ops.get(node.op).count_terms(space, node, one)
    flops += node_flops
    params += node_params
  result = (np.array(flops, np.int64).reshape(-1, 3), np.array(params, np.int64).reshape(-1, 3))
  space._tfmp_terms = result  # pylint: disable=protected-access
  return result


def _ext_full(space, structure):
  return np.concatenate([space.ext_channels(structure), [1]]).astype(np.int64)


def structure_flops(space, structure) -> int:
  """Multiply-adds of `structure` for one image (an exact integer)."""
  t, _ = _terms(space)
  ext = _ext_full(space, structure)
  return int(np.sum(t[:, 0] * ext[t[:, 1]] * ext[t[:, 2]]))


def structure_mflops(space, structure) -> float:
  """Millions of multiply-adds of `structure` for one image."""
  return structure_flops(space, structure) / 1e6


def structure_params(space, structure) -> int:
  """Weights of the rebuilt plain Keras model (as `count_params()` counts them)."""
  _, t = _terms(space)
  ext = _ext_full(space, structure)
  return int(np.sum(t[:, 0] * ext[t[:, 1]] * ext[t[:, 2]]))


class SpaceCounter:
  """MFLOPs and params of structures as TensorFlow ops (for use in `tf.function`).

  Args:
    space: the `SearchSpace`.

  Example:

    >>> space = tf_metaprune.models.small_cnn((28, 28, 1), 10)
    >>> counter = SpaceCounter(space)
    >>> population = tf.constant([space.smallest().choices, space.largest().choices])   # a population of two
    >>> float(counter.mflops(population)[1]) == space.mflops(space.largest())
    True
  """

  def __init__(self, space):
    self._tf = tf
    self.space = space
    max_c = max(g.num_choices for g in space.genes)
    table = np.zeros((len(space.genes), max_c), np.float64)
    for i, g in enumerate(space.genes):
      table[i, :g.num_choices] = g.channels
    self._table = tf.constant(table)
    self._tail = tf.constant(np.array(list(space.fixed_widths) + [1], np.float64))
    ft, pt = _terms(space)
    self._f = [tf.constant(ft[:, 0].astype(np.float64)), tf.constant(ft[:, 1]), tf.constant(ft[:, 2])]
    self._p = [tf.constant(pt[:, 0].astype(np.float64)), tf.constant(pt[:, 1]), tf.constant(pt[:, 2])]

  def ext_channels(self, choices):
    """float64 [..., num_genes + num_fixed + 1] channel vector of int choices [..., num_genes]."""
    tf = self._tf
    choices = tf.convert_to_tensor(choices, tf.int32)
    genes = tf.range(len(self.space.genes), dtype=tf.int32)
    genes = tf.broadcast_to(genes, tf.shape(choices))
    ch = tf.gather_nd(self._table, tf.stack([genes, choices], axis=-1))
    tail = tf.broadcast_to(self._tail, tf.concat([tf.shape(choices)[:-1], tf.shape(self._tail)], 0))
    return tf.concat([ch, tail], axis=-1)

  def _sum(self, terms, choices):
    tf = self._tf
    ext = self.ext_channels(choices)
    coef, a, b = terms
    return tf.reduce_sum(coef * tf.gather(ext, a, axis=-1) * tf.gather(ext, b, axis=-1), axis=-1)

  def flops(self, choices):
    """Exact multiply-add counts (float64 holding integers), one per structure."""
    return self._sum(self._f, choices)

  def mflops(self, choices):
    """Millions of multiply-adds, float64, one per structure in `choices`.

    Grappler may rewrite the division as a multiplication (1 ulp off); compare
    exact counts with `flops()` where a structure can sit exactly on a budget.
    """
    return self._sum(self._f, choices) / 1e6

  def params(self, choices):
    """Parameter counts (float64), one per structure in `choices`."""
    return self._sum(self._p, choices)

  def _sum_widths(self, terms, gene_channels):
    tf = self._tf
    ch = tf.cast(tf.convert_to_tensor(gene_channels), tf.float64)
    tail = tf.broadcast_to(self._tail, tf.concat([tf.shape(ch)[:-1], tf.shape(self._tail)], 0))
    ext = tf.concat([ch, tail], axis=-1)
    coef, a, b = terms
    return tf.reduce_sum(coef * tf.gather(ext, a, axis=-1) * tf.gather(ext, b, axis=-1), axis=-1)

  def flops_of_widths(self, gene_channels):
    """Multiply-adds (float64) of real-valued per-gene channel counts [..., num_genes].

    Differentiable in `gene_channels`, so a soft or straight-through count of
    active channels (Pruning-as-Search's masks) can be pushed toward a FLOPs
    target; at integer counts of a structure it equals `flops(choices)`.
    """
    return self._sum_widths(self._f, gene_channels)

  def params_of_widths(self, gene_channels):
    """Parameter counts (float64) of real-valued per-gene channel counts (see `flops_of_widths`)."""
    return self._sum_widths(self._p, gene_channels)


def _layer_flops(layer):
  """Multiply-adds of one Keras layer for one example (0 for layers without any)."""
  if isinstance(layer, keras.Model):
    return count_flops(layer)
  if isinstance(layer, keras.layers.SeparableConv2D):
    spatial = int(np.prod(layer.output.shape[1:-1]))
    return spatial * (int(np.prod(layer.depthwise_kernel.shape)) + int(np.prod(layer.pointwise_kernel.shape)))
  if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                        keras.layers.DepthwiseConv2D, keras.layers.Conv2DTranspose)):
    if isinstance(layer, keras.layers.Conv2DTranspose):
      spatial = int(np.prod(layer.input.shape[1:-1]))
    else:
      spatial = int(np.prod(layer.output.shape[1:-1]))
    kernel = getattr(layer, "depthwise_kernel", None)  # Keras 2 name; Keras 3 calls it `kernel`
    kernel = layer.kernel if kernel is None else kernel
    return spatial * int(np.prod(kernel.shape))
  if isinstance(layer, keras.layers.Dense):
    positions = int(np.prod(layer.input.shape[1:-1])) if len(layer.input.shape) > 2 else 1
    return positions * int(np.prod(layer.kernel.shape))
  return 0


def count_flops(model) -> int:
  """Multiply-adds for one example of any built plain Keras model.

  Counts Conv1D/2D/3D, Conv2DTranspose, DepthwiseConv2D, SeparableConv2D and
  Dense layers (recursing into nested models); every other layer counts 0.
  Same convention as `SearchSpace.mflops` (which is in millions).

  Args:
    model: a built functional or Sequential `keras.Model`.

  Returns:
    The number of multiply-adds, an int.
  """
  return int(sum(_layer_flops(layer) for layer in model.layers))


def count_mflops(model) -> float:
  """`count_flops(model) / 1e6`."""
  return count_flops(model) / 1e6
