"""Learned upsampling: `keras.layers.Conv2DTranspose` (U-Net decoders, FCN/DeepLab heads).

A transposed conv starts a channel group of its `filters` like a Conv2D; its
output is larger than its input (H * stride for "same" padding, H * stride +
max(kernel - stride, 0) for "valid"), and its multiply-adds are counted per
*input* position: (input H * W) * kh * kw * c_in * c_out, as
`flops.count_flops` counts the Keras layer.

Keras stores its kernel as (kh, kw, c_out, c_in); the weight form every other
generated conv uses -- the PruningNet's base kernel, `generated_weights`,
`pretrained` reordering and importance -- is (kh, kw, c_in, c_out), so this op
transposes once when it reads a trained layer and once when it writes the
rebuilt one, and nothing else needs to know.
"""

import numpy as np

from tf_metaprune import layers as tfmp_layers
from tf_metaprune.ops.base import L, pair, register
from tf_metaprune.ops.weights import _WeightOp, Conv


def _to_generated(kernel):
  """Keras' (kh, kw, c_out, c_in) kernel as (kh, kw, c_in, c_out), and back (the same swap)."""
  return np.transpose(kernel, (0, 1, 3, 2))


@register
class ConvTranspose(Conv):
  """A Conv2DTranspose read from a Keras model: `out` channels (a gene or fixed), output upsampled by `strides`."""
  name = "conv_transpose"
  keras_types = (L.Conv2DTranspose,)
  keras_doc = "Conv2DTranspose"

  def out_spatial(self, space, node, in_spatial):
    h, w = self._feature_map(node, in_spatial[0])
    (sh, sw), (kh, kw) = node.strides_hw, node.kernel_hw
    if node.padding == "same":
      return (h * sh, w * sw)
    return (h * sh + max(kh - sh, 0), w * sw + max(kw - sw, 0))

  def count_terms(self, space, node, one):
    cins, couts = space.layout_indices(node.inputs[0]), space.layout_indices(node.name)
    (ih, iw), (kh, kw) = space.spatial[node.inputs[0]], node.kernel_hw
    positions, k2 = ih * iw, kh * kw
    flops = [(positions * k2, ci, co) for ci in cins for co in couts]
    params = [(k2, ci, co) for ci in cins for co in couts]
    return flops, params + self._implied_params(node, couts, one)

  def read_keras(self, layer, ins, out, in_lay, groups):
    if layer.output_padding is not None:
      raise ValueError(f"layer {layer.name!r} (Conv2DTranspose) has output_padding={layer.output_padding!r}; only "
                       "None is supported (its output size then follows the stride)")
    if pair(layer.dilation_rate) != (1, 1):
      raise ValueError(f"layer {layer.name!r} (Conv2DTranspose) has dilation_rate={layer.dilation_rate!r}; only 1 "
                       "is supported")
    return _WeightOp.read_keras(self, layer, ins, out, in_lay, groups)  # Conv's own check is of Conv2D's groups

  def _build_generators(self, net, node, rows, cin_max, cout_max, common):
    net.add_generator(tfmp_layers.GeneratedConv2DTranspose(
        cin_max, cout_max, node.kernel_size, node.strides, name=node.name, **common), node.name,
                       net.layer_of, rows)

  def keras_weights(self, node, w):
    return [_to_generated(w["kernel"])] + ([w["bias"]] if "bias" in w else [])

  def channel_axes(self, node):
    return ((3, 2),) + (((None, 0),) if node.has_bias else ())

  def read_weights(self, node, model):
    w = super().read_weights(node, model)
    w["kernel"] = _to_generated(w["kernel"])
    return w

  def rebuild(self, node, inputs, channels, weights, bn_momentum):
    if node.layer is None:
      raise ValueError(f"node {node.name!r} (conv_transpose) has no plain Keras form without its Keras layer")
    return super().rebuild(node, inputs, channels, weights, bn_momentum)

  def latency_model(self, sig):
    if sig.layer is None:
      raise ValueError(f"LayerSignature(op={sig.op!r}) has no one-layer model without its Keras layer")
    return super().latency_model(sig)
