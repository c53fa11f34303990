"""Weight ops read from other forms of the standard layers: Conv2D(groups=C) and Dense on feature maps.

* `GroupedConv`: `Conv2D(filters=C, groups=C)` on C channels is a depthwise
  conv written as a conv (ConvNeXt): it follows its input's width, like
  `DepthwiseConv`; its kernel is (kh, kw, 1, C) instead of (kh, kw, C, 1).
  Other group counts are refused with one line.
* `DepthwiseMultiplier`: `DepthwiseConv2D(depth_multiplier>1)` kept whole
  (its input and output channels fixed), the layers around it pruned.
* `PointwiseDense`: `Dense` on an (H, W, C) feature map is a 1x1 conv
  (ConvNeXt's MLP): H * W * cin * cout multiply-adds, the Dense kernel.
"""

import copy
import warnings

import keras
import numpy as np
import tensorflow as tf

from tf_metaprune.layers import leading
from tf_metaprune.ops.base import L, _set_base_kernel, _set_width_bn, _window, compact, pair, register
from tf_metaprune.ops.channelwise import FixedLayer
from tf_metaprune.ops.weights import Dense, DepthwiseConv


def _dw_to_grouped(kernel):
  """A depthwise kernel (kh, kw, C, 1) as the kernel of Conv2D(groups=C) (kh, kw, 1, C), and back."""
  return np.transpose(kernel, (0, 1, 3, 2))


@register
class GroupedConv(DepthwiseConv):
  """Conv2D(groups=C) over C channels with C filters: a depthwise conv; follows its input's width."""
  name = "gconv"
  keras_types = ()
  keras_doc = "Conv2D(groups=channels)"

  def reads(self, layer):
    return type(layer) is L.Conv2D and layer.groups != 1

  def read_keras(self, layer, ins, out, in_lay, groups):
    cin, cout = int(ins[0].shape[-1]), int(out.shape[-1])
    if not layer.groups == cin == cout:
      raise ValueError(f"layer {layer.name!r} (Conv2D) has groups={layer.groups} over {cin} input channels and "
                       f"{cout} filters; only groups = input channels = filters (a depthwise conv) is supported")
    k, s = _window(layer)
    return in_lay[0], dict(kernel_size=compact(k), strides=compact(s), padding=layer.padding,
                           use_bias=bool(layer.use_bias), dilation=compact(pair(layer.dilation_rate))), None

  _kernel_axes = {"kernel": (None, 3)}

  def channel_axes(self, node):
    return ((None, 3),) + (((None, 0),) if node.has_bias else ())

  def generated_weights(self, net, node, gen):
    li = net.layer_of[node.name]
    layer = net.generator_layers[li]
    w = self._generated_kernels(net, node, gen, layer, tf.constant(gen.layout_ratio[net.encoding_index[li]]))  # pylint: disable=protected-access
    w["kernel"] = _dw_to_grouped(w["kernel"])
    return w

  def set_pruning_weights(self, net, node, weights):
    layer = net.generator_layers[net.layer_of[node.name]]
    _set_base_kernel(layer, _dw_to_grouped(weights["kernel"]))
    if layer.use_bias:
      layer.bias.assign(weights.get("bias", np.zeros(layer.bias.shape, np.float32)))
    if node.name in net.bn_of:
      _set_width_bn(net, node, weights)

  def keras_layer(self, node, channels):
    config = copy.deepcopy(node.layer)
    config["config"]["filters"] = int(channels)
    config["config"]["groups"] = int(channels)
    return keras.layers.deserialize(config)


@register
class PointwiseDense(Dense):
  """Dense on an (H, W, C) feature map: a 1x1 conv of `out` channels, applied at every position."""
  name = "pointwise"
  keras_types = ()
  keras_doc = "Dense on feature maps"
  windowed = False

  def reads(self, layer):
    if type(layer) is not L.Dense:  # pylint: disable=unidiomatic-typecheck
      return False
    try:
      return len(layer.input.shape) == 4
    except (AttributeError, ValueError):   # not called yet
      return False

  def out_spatial(self, space, node, in_spatial):
    return self._feature_map(node, in_spatial[0])

  def count_terms(self, space, node, one):
    cins, couts, positions, _ = _geometry_1x1(space, node)
    terms = [(1, ci, co) for ci in cins for co in couts]
    return [(positions, ci, co) for ci in cins for co in couts], terms + self._implied_params(node, couts, one)

  def read_keras(self, layer, ins, out, in_lay, groups):
    out_group = groups.new(out.shape[-1], layer.name)
    return (out_group,), {"use_bias": bool(layer.use_bias)}, out_group

  def _common(self, net, node):
    return dict(hidden_units=net.hidden_units, use_bias=node.has_bias)

  def _generated_call(self, net, node, x, call):
    li = net.layer_of[node.name]
    layer = net.generator_layers[li]
    kernel = layer.sliced_kernel(call.encodings[li], tf.shape(x)[-1], call.widths[li], call.in_index)
    y = tf.tensordot(x, kernel, axes=[[3], [0]])
    return y + leading(layer.bias, [call.widths[li]]) if layer.use_bias else y


def _geometry_1x1(space, node):
  (oh, ow) = space.spatial[node.name]
  return space.layout_indices(node.inputs[0]), space.layout_indices(node.name), oh * ow, 1



@register
class DepthwiseMultiplier(FixedLayer):
  """DepthwiseConv2D(depth_multiplier=m > 1): its input channels stay fixed, its C*m outputs are a fixed width.

  Output channel c*m + j comes from input channel c, so pruning the input
  would have to remove m outputs per channel: a width the space's genes do
  not express. The layer is kept whole (read with a warning), trained in the
  PruningNet as the plain layer, copied into every rebuilt model; the layers
  after it are pruned as usual.
  """
  name = "dwconv_multiplier"
  keras_types = ()
  keras_doc = "DepthwiseConv2D(depth_multiplier>1, fixed channels)"
  windowed = True
  latency_role = "folded"

  def reads(self, layer):
    return type(layer) is L.DepthwiseConv2D and layer.depth_multiplier != 1  # pylint: disable=unidiomatic-typecheck

  def read_keras(self, layer, ins, out, in_lay, groups):
    if any(not groups.fixed[groups.find(g)] for g in in_lay[0]):
      warnings.warn(f"layer {layer.name!r} (DepthwiseConv2D) has depth_multiplier={layer.depth_multiplier}: the "
                    "channels feeding it stay at full width (fixed)", stacklevel=5)
    for g in in_lay[0]:
      groups.freeze(g)
    k, s = _window(layer)
    out_group = groups.new(out.shape[-1], layer.name, fixed=True)
    return (out_group,), dict(kernel_size=compact(k), strides=compact(s), padding=layer.padding,
                              use_bias=bool(layer.use_bias), dilation=compact(pair(layer.dilation_rate))), out_group

  def layout(self, space, node, in_layouts, out_source):
    return (out_source(),)

  def count_terms(self, space, node, one):
    (oh, ow), (kh, kw) = space.spatial[node.name], node.kernel_hw
    return [(oh * ow * kh * kw * space.max_channels(node.name), one, one)], [(self._params(space, node), one, one)]

  def profile_kinds(self, space, node):
    return ("weights",)

  def latency_model(self, sig):
    """The layer on cout / depth_multiplier input channels (the plan gives a folded node cin = cout)."""
    multiplier = int(sig.layer["config"]["depth_multiplier"])
    h, w = sig.in_hw
    x = keras.Input((h, w, sig.cout // multiplier))
    return keras.Model(x, keras.layers.deserialize(copy.deepcopy(sig.layer))(x), name=sig.name)
