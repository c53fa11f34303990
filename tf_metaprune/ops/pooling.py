"""Pooling ops: max / average windows, global average / max."""

import keras
import tensorflow as tf

from tf_metaprune.ops.base import compact, keras_activation, L, Op, register, _window


class _Pool(Op):
  """Max / average pooling windows."""
  windowed = True

  def read_keras(self, layer, ins, out, in_lay, groups):
    k, s = _window(layer)
    return in_lay[0], dict(kernel_size=compact(k), strides=compact(s), padding=layer.padding), None

  def profile_kinds(self, space, node):
    return ("pool",)


@register
class MaxPool(_Pool):
  """Max pooling ("same" padding in the built-in families)."""
  name = "maxpool"
  keras_types = (L.MaxPooling2D,)
  keras_doc = "MaxPooling2D"
  latency_role = "folded"

  def build_pruning(self, net, node):
    super().build_pruning(net, node)

  def pruning_call(self, net, node, inputs, call):
    if node.layer is not None:
      return super().pruning_call(net, node, inputs, call)
    return tf.nn.max_pool2d(inputs[0], node.kernel_size, node.strides, "SAME")

  def build_masked(self, net, node):
    if node.layer is not None:
      super().build_masked(net, node)

  def masked_call(self, net, node, inputs, training, mask):
    if node.layer is not None:
      return super().masked_call(net, node, inputs, training, mask)
    return tf.nn.max_pool2d(inputs[0], node.kernel_size, node.strides, "SAME")

  def rebuild(self, node, inputs, channels, weights, bn_momentum):
    if node.layer is not None:
      return super().rebuild(node, inputs, channels, weights, bn_momentum)
    return L.MaxPooling2D(node.kernel_size, strides=node.strides, padding="same", name=node.name)(inputs[0]), []

  def latency_model(self, sig):
    if sig.layer is not None:
      return super().latency_model(sig)
    h, w = sig.in_hw
    x = keras.Input((h, w, sig.cin))
    y = L.MaxPooling2D(sig.kernel_size, strides=sig.strides, padding="same")(x)
    return keras.Model(x, keras_activation(y, sig.activation), name=sig.name)


class _GlobalPool(Op):
  """Global pooling: a flat vector (or 1x1 with keepdims)."""

  def out_spatial(self, space, node, in_spatial):
    return (1, 1) if node.keepdims else None

  def read_keras(self, layer, ins, out, in_lay, groups):
    return in_lay[0], {"keepdims": bool(layer.keepdims)}, None

  def latency_signature(self, space, node):
    return {**super().latency_signature(space, node), "kernel_size": 1, "strides": 1}

  def profile_kinds(self, space, node):
    return ("pool",)   # MEAN / REDUCE_MAX, or XNNPACK's global pooling


@register
class GlobalAvgPool(_GlobalPool):
  """Global average pooling."""
  name = "gap"
  keras_types = (L.GlobalAveragePooling2D,)
  keras_doc = "GlobalAveragePooling2D"

  def pruning_call(self, net, node, inputs, call):
    if node.layer is not None:
      return super().pruning_call(net, node, inputs, call)
    return tf.reduce_mean(inputs[0], axis=[1, 2])

  def build_masked(self, net, node):
    if node.layer is not None:
      super().build_masked(net, node)

  def masked_call(self, net, node, inputs, training, mask):
    if node.layer is not None:
      return super().masked_call(net, node, inputs, training, mask)
    return tf.reduce_mean(inputs[0], axis=[1, 2])

  def rebuild(self, node, inputs, channels, weights, bn_momentum):
    if node.layer is not None:
      return super().rebuild(node, inputs, channels, weights, bn_momentum)
    return L.GlobalAveragePooling2D(name=node.name)(inputs[0]), []

  def latency_model(self, sig):
    if sig.layer is not None:
      return super().latency_model(sig)
    h, w = sig.in_hw
    x = keras.Input((h, w, sig.cin))
    return keras.Model(x, L.GlobalAveragePooling2D()(x), name=sig.name)


@register
class AvgPool(_Pool):
  """Average pooling of a model read from Keras."""
  name = "avgpool"
  keras_types = (L.AveragePooling2D,)
  keras_doc = "AveragePooling2D"


@register
class GlobalMaxPool(_GlobalPool):
  """Global max pooling of a model read from Keras."""
  name = "gmp"
  keras_types = (L.GlobalMaxPooling2D,)
  keras_doc = "GlobalMaxPooling2D"
