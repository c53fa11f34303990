"""Ops that change the spatial size or the tensor's shape: ZeroPadding2D, Flatten, Reshape, UpSampling2D."""

import copy
import warnings

import keras
import numpy as np
import tensorflow as tf

from tf_metaprune.ops.base import compact, L, Op, pair, register


@register
class Pad(Op):
  """Zero padding ((top, bottom), (left, right)) of a model read from Keras."""
  name = "pad"
  keras_types = (L.ZeroPadding2D,)
  keras_doc = "ZeroPadding2D"
  # XNNPACK (the default CPU path) folds an explicit zero padding into the conv or pool after it.
  latency_role = "free"

  def profile_kinds(self, space, node):
    return ("pad",)   # a PAD row when the kernels run without XNNPACK

  def out_spatial(self, space, node, in_spatial):
    x = self._feature_map(node, in_spatial[0])
    (t, b), (l, r) = node.padding
    return (x[0] + t + b, x[1] + l + r)

  def read_keras(self, layer, ins, out, in_lay, groups):
    return in_lay[0], {"padding": tuple(tuple(int(v) for v in p) for p in layer.padding)}, None


class _Flat(Op):
  """Flatten / Reshape: keep the channels, or (with a fixed `out`) move positions into channels."""
  latency_role = "free"   # a reshape moves no data

  def profile_kinds(self, space, node):
    return ("reshape",)

  def layout(self, space, node, in_layouts, out_source):
    if node.out is None:
      return in_layouts[0]
    if any(kind != "fixed" for kind, _ in in_layouts[0]):
      raise ValueError(f"{node.op} node {node.name!r} changes the channel count, so its input must have a "
                       f"fixed width, got {in_layouts[0]}")
    if not isinstance(node.out, (int, np.integer)) or int(node.out) < 1:
      raise ValueError(f"node {node.name!r}: out={node.out!r} must be a positive int (the fixed width)")
    return (("fixed", int(node.out)),)

  def read_keras(self, layer, ins, out, in_lay, groups):
    in_shape, out_shape = tuple(ins[0].shape[1:]), tuple(out.shape[1:])
    fields = {}
    if isinstance(layer, L.Reshape):
      if len(out_shape) not in (1, 3):
        raise ValueError(f"layer {layer.name!r} (Reshape) outputs shape {out_shape}; only (C,) or (H, W, C) "
                         "targets are supported")
      fields["target_shape"] = tuple(int(d) for d in out_shape)
    channels_only = in_shape[-1] == out_shape[-1] and all(d == 1 for d in in_shape[:-1] + out_shape[:-1])
    if channels_only:
      return in_lay[0], fields, None
    if any(not groups.fixed[groups.find(g)] for g in in_lay[0]):
      warnings.warn(f"layer {layer.name!r} ({type(layer).__name__}) turns a {in_shape} tensor into {out_shape}: "
                    "the channels feeding it stay at full width (fixed)", stacklevel=5)
    for g in in_lay[0]:
      groups.freeze(g)
    lay = (groups.new(out_shape[-1], layer.name, fixed=True),)
    return lay, fields, lay[0]


@register
class Flatten(_Flat):
  """Flatten of a model read from Keras."""
  name = "flatten"
  keras_types = (L.Flatten,)
  keras_doc = "Flatten"

  def out_spatial(self, space, node, in_spatial):
    x = in_spatial[0]
    if node.out is None and x not in (None, (1, 1)):
      raise ValueError(f"flatten node {node.name!r} of a {x} feature map mixes positions into channels: give "
                       "it a fixed out=H*W*C (its input must then have a fixed width)")
    return None


@register
class Reshape(_Flat):
  """Reshape to (C,) or (H, W, C) of a model read from Keras; the channel count follows the structure."""
  name = "reshape"
  keras_types = (L.Reshape,)
  keras_doc = "Reshape"

  def out_spatial(self, space, node, in_spatial):
    x, target = in_spatial[0], node.target_shape
    if target is None or len(target) not in (1, 3):
      raise ValueError(f"reshape node {node.name!r}: target_shape={target!r} must be (C,) or (H, W, C)")
    if node.out is None:
      if x not in (None, (1, 1)) or tuple(target[:-1]) not in ((), (1, 1)):
        raise ValueError(f"reshape node {node.name!r} ({x} -> {target}) moves positions into channels: give "
                         "it a fixed out= width (its input must then have a fixed width)")
    return None if len(target) == 1 else (target[0], target[1])

  def build_pruning(self, net, node):
    pass

  def pruning_call(self, net, node, inputs, call):
    inp = inputs[0]
    return tf.reshape(inp, tf.concat([tf.shape(inp)[:1], list(node.target_shape[:-1]), [-1]], axis=0))

  def keras_layer(self, node, channels):
    config = copy.deepcopy(node.layer)
    config["config"]["target_shape"] = list(node.target_shape[:-1]) + [int(channels)]
    return keras.layers.deserialize(config)


# ---- an op added through the registry alone ------------------------------------------------------


@register
class UpSample(Op):
  """Nearest-neighbour (or the Keras layer's own) upsampling by an integer factor; no weights, FLOPs 0.

  `Node.strides` holds the factor (h, w): the output is (H * sh, W * sw) with
  the input's channels. Read from `keras.layers.UpSampling2D` (its `size`;
  its `interpolation` stays in the node's layer config); built-in nodes use
  nearest-neighbour.
  """
  name = "upsample"
  keras_types = (L.UpSampling2D,)
  keras_doc = "UpSampling2D"
  latency_role = "folded"

  def out_spatial(self, space, node, in_spatial):
    h, w = self._feature_map(node, in_spatial[0])
    sh, sw = node.strides_hw
    return (h * sh, w * sw)

  def read_keras(self, layer, ins, out, in_lay, groups):
    return in_lay[0], {"strides": compact(pair(layer.size))}, None

  def _layer(self, node, name=None):
    if node.layer is not None:
      return keras.layers.deserialize(copy.deepcopy(node.layer))
    return L.UpSampling2D(size=node.strides_hw, name=name)

  def build_pruning(self, net, node):
    net.op_layers[node.name] = self._layer(node)  # pylint: disable=protected-access

  def build_masked(self, net, node):
    net.add_node_layers(node, [self._layer(node)])  # pylint: disable=protected-access

  def rebuild(self, node, inputs, channels, weights, bn_momentum):
    return self._layer(node, name=node.name)(inputs[0]), []

  def latency_signature(self, space, node):
    return {**super().latency_signature(space, node), "kernel_size": 1}

  def profile_kinds(self, space, node):
    return ("resize",)

  def latency_model(self, sig):
    h, w = sig.in_hw
    x = keras.Input((h, w, sig.cin))
    layer = (keras.layers.deserialize(copy.deepcopy(sig.layer)) if sig.layer is not None
             else L.UpSampling2D(size=pair(sig.strides)))
    return keras.Model(x, layer(x), name=sig.name)
