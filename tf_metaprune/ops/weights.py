"""Ops with generated weights: Conv2D, DepthwiseConv2D, Dense, SeparableConv2D."""

import copy

import keras
import numpy as np
import tensorflow as tf

from tf_metaprune import layers as tfmp_layers
from tf_metaprune.ops.base import (compact, _geometry, keras_activation, _keras_layer_of, L, Op, pair, _read_bn,
                                   register, _set_base_kernel, _set_width_bn, tf_activation, _VECTOR_AXES,
                                   _width_bn_weights, _window)


class _WeightOp(Op):
  """Shared parts of the ops with generated weights (conv, dwconv, sepconv, dense).

  What differs between them is said by the subclasses, never by testing an op's name here:
  `conv_like` (a built-in node of the op is a conv: batch norm when `node.bn`, then its activation and
  channel mask; a Keras-read one takes padding and dilation; Dense: False), `bias_in_kernels` (the
  generated bias is sliced with the kernel, `DepthwiseConv`), and the built-in Keras layer it rebuilds
  and times (`builtin_layer`).
  """
  weight_op = True
  conv_like = True
  bias_in_kernels = False
  holds_weights = True
  latency_role = "table"
  fuses_activation = True
  _kernel_keys = ("kernel",)      # the kernels of the node's own Keras layer, in get_weights order
  _kernel_axes = {"kernel": (2, 3)}

  def weight_axes(self, node):
    return dict(self._kernel_axes, **_VECTOR_AXES)

  def read_weights(self, node, model):
    layer = _keras_layer_of(model, node.name, node)
    arrays = [np.asarray(a, np.float32) for a in layer.get_weights()]
    w = dict(zip(self._kernel_keys, arrays))
    if len(arrays) > len(self._kernel_keys):
      w["bias"] = arrays[len(self._kernel_keys)]
    if node.layer is None and self.conv_like and node.bn:   # a built-in family's conv + its BN layer
      w.update(_read_bn(_keras_layer_of(model, node.name + "_bn", node), {}))
    return w

  def filter_norms(self, node, weights):
    kernel = weights[self._kernel_keys[-1]]
    return np.abs(kernel.reshape(-1, kernel.shape[-1])).sum(axis=0)

  def bn_scale(self, node, weights):
    return weights["gamma"] if (node.layer is None and "gamma" in weights) else None

  def set_pruning_weights(self, net, node, weights):
    layer = net.generator_layers[net.layer_of[node.name]]
    _set_base_kernel(layer, weights[self._kernel_keys[-1]])
    if getattr(layer, "use_bias", False):
      layer.bias.assign(weights.get("bias", np.zeros(layer.bias.shape, np.float32)))
    if node.name in net.bn_of:
      _set_width_bn(net, node, weights)

  def _implied_params(self, node, couts, one):
    if node.layer is None and self.conv_like and node.bn:
      return [(4, co, one) for co in couts]  # the implied BN: gamma, beta, mean, var
    if node.has_bias:
      return [(1, co, one) for co in couts]  # bias
    return []

  def _common(self, net, node):
    common = dict(hidden_units=net.hidden_units)
    if node.layer is not None:
      common.update(use_bias=node.has_bias)
      if self.conv_like:
        common.update(padding=node.padding, dilation_rate=node.dilation)
    return common

  def build_pruning(self, net, node):
    if node.layer is not None:
      net.node_activations[node.name] = keras.activations.get(node.layer["config"].get("activation"))
    self._build_generators(net, node, net.layout_rows(node), net.space.max_channels(node.inputs[0]),  # pylint: disable=protected-access
                           net.space.max_channels(node.name), self._common(net, node))
    if self.conv_like and node.bn and node.layer is None:
      net.add_width_bn(node, affine=net.bn_affine, epsilon=1e-3, name=node.name + "_bn")

  def _build_generators(self, net, node, rows, cin_max, cout_max, common):
    raise NotImplementedError

  def pruning_call(self, net, node, inputs, call):
    y = self._generated_call(net, node, inputs[0], call)
    if node.layer is not None:
      return net.node_activations[node.name](y)
    if self.conv_like:
      if node.bn:
        y = call.batch_norm(y, node.name)
      y = tf_activation(y, node.activation)
    return y

  def _generated_call(self, net, node, x, call):
    li = net.layer_of[node.name]
    layer = net.generator_layers[li]
    if call.in_index is not None:
      return layer(x, encoding=call.encodings[li], out_channels=call.widths[li], in_index=call.in_index)
    return layer(x, encoding=call.encodings[li], out_channels=call.widths[li])

  def generated_weights(self, net, node, gen):
    li = net.layer_of[node.name]
    layer = net.generator_layers[li]
    w = self._generated_kernels(net, node, gen, layer, tf.constant(gen.layout_ratio[net.encoding_index[li]]))  # pylint: disable=protected-access
    if not self.bias_in_kernels and getattr(layer, "use_bias", False):
      w["bias"] = layer.bias.numpy()[:gen.cout]
    if self.conv_like and node.bn and node.layer is None:
      w.update(_width_bn_weights(net, node, gen))
    return w

  def _generated_kernels(self, net, node, gen, layer, enc):
    return {"kernel": layer.sliced_kernel(enc, gen.cin, gen.cout, gen.index(node.inputs[0])).numpy()}

  def read_keras(self, layer, ins, out, in_lay, groups):
    out_group = groups.new(out.shape[-1], layer.name)
    fields = {"use_bias": bool(layer.use_bias)}
    if not isinstance(layer, L.Dense):
      k, s = _window(layer)
      fields.update(kernel_size=compact(k), strides=compact(s), padding=layer.padding,
                    dilation=compact(pair(layer.dilation_rate)))
    return (out_group,), fields, out_group

  def layout(self, space, node, in_layouts, out_source):
    return (out_source(),)

  def keras_layer(self, node, channels):
    config = copy.deepcopy(node.layer)
    config["config"]["filters"] = int(channels)
    return keras.layers.deserialize(config)

  def channel_axes(self, node):
    return ((2, 3),) + (((None, 0),) if node.has_bias else ())

  def _builtin_masked_export(self, net, node, model, cin, cout):
    i = net.node_index[node.name]
    src = net.node_layers[i].get_weights()
    model.get_layer(node.name).set_weights(self._builtin_export_arrays(node, src, cin, cout))
    if self.conv_like and node.bn:
      bn = net.node_layers[i + 1].get_weights()
      model.get_layer(node.name + "_bn").set_weights([w[cout] for w in bn])

  def masked_export(self, net, node, model, in_index, out_index):
    if node.layer is None:
      self._builtin_masked_export(net, node, model, in_index, out_index)
    else:
      super().masked_export(net, node, model, in_index, out_index)

  def builtin_layer(self, node, channels, name=None):
    """The Keras layer of a built-in (not read from Keras) node of this op at `channels` ("same" padding)."""
    raise NotImplementedError(f"op {self.name!r} has no built-in form: its nodes are read from a Keras model")

  def build_masked(self, net, node):
    if node.layer is not None:
      return super().build_masked(net, node)
    layers = [self._builtin_masked_layer(net, node)]
    if self.conv_like and node.bn:
      layers.append(L.BatchNormalization(momentum=net.bn_momentum, epsilon=1e-3, name=node.name + "_bn"))
    net.add_node_layers(node, layers)

  def _builtin_masked_layer(self, net, node):
    return self.builtin_layer(node, net.space.max_channels(node.name), name=node.name)

  def masked_call(self, net, node, inputs, training, mask):
    if node.layer is not None:
      return super().masked_call(net, node, inputs, training, mask)
    i = net.node_index[node.name]
    y = net.node_layers[i](inputs[0])
    if self.conv_like and node.bn:
      y = net.node_layers[i + 1](y, training=training)
    if self.conv_like:
      y = tf_activation(y, node.activation)
      if net.space.gene_of(node.name) is not None:
        y = mask(y, node.name)
    return y

  def rebuild(self, node, inputs, channels, weights, bn_momentum):
    if node.layer is not None:
      return super().rebuild(node, inputs, channels, weights, bn_momentum)
    layer = self.builtin_layer(node, channels, name=node.name)
    y = layer(inputs[0])
    to_copy = []
    if weights is not None:
      to_copy.append((layer, [weights["kernel"]] + ([] if node.bn else [weights.get("bias", np.zeros(channels, np.float32))])))
    if node.bn:
      bn = L.BatchNormalization(momentum=bn_momentum, epsilon=1e-3, name=node.name + "_bn")
      y = bn(y)
      if weights is not None:
        to_copy.append((bn, [weights["gamma"], weights["beta"], weights["moving_mean"],
                             weights["moving_variance"]]))
    return keras_activation(y, node.activation, node.name), to_copy

  def latency_signature(self, space, node):
    fields = super().latency_signature(space, node)
    if node.layer is None:  # a built-in node: its batch norm and activation are part of the timed model
      fields.update(activation=node.activation, bn=node.bn)
    return fields

  def profile_kinds(self, space, node):
    return ("weights",)

  def latency_model(self, sig):
    if sig.layer is not None:
      return super().latency_model(sig)
    h, w = sig.in_hw
    x = keras.Input((h, w, sig.cin))
    y = self.builtin_layer(sig, sig.cout)(x)   # a signature has the node's kernel_size, strides and bn
    if sig.bn:
      y = L.BatchNormalization(epsilon=1e-3)(y)
    return keras.Model(x, keras_activation(y, sig.activation), name=sig.name)


@register
class Conv(_WeightOp):
  """A 2-D convolution of `out` channels (a gene or a fixed width)."""
  windowed = True
  name = "conv"
  keras_types = (L.Conv2D,)
  keras_doc = "Conv2D"

  def count_terms(self, space, node, one):
    cins, couts, positions, k2 = _geometry(space, node)
    flops = [(positions * k2, ci, co) for ci in cins for co in couts]
    params = [(k2, ci, co) for ci in cins for co in couts]
    return flops, params + self._implied_params(node, couts, one)

  def read_keras(self, layer, ins, out, in_lay, groups):
    if layer.groups != 1:
      raise ValueError(f"layer {layer.name!r} (Conv2D) has groups={layer.groups}; grouped convolutions are not "
                       "supported")
    return super().read_keras(layer, ins, out, in_lay, groups)

  def _build_generators(self, net, node, rows, cin_max, cout_max, common):
    net.add_generator(tfmp_layers.GeneratedConv2D(cin_max, cout_max, node.kernel_size, node.strides,
                                                   name=node.name, **common), node.name, net.layer_of, rows)

  def _builtin_export_arrays(self, node, src, cin, cout):
    return [src[0][:, :, cin][:, :, :, cout]] + ([] if node.bn else [src[1][cout]])

  def builtin_layer(self, node, channels, name=None):
    return L.Conv2D(channels, node.kernel_size, strides=node.strides, padding="same", use_bias=not node.bn,
                    name=name)


@register
class DepthwiseConv(_WeightOp):
  """A depthwise conv: one k x k filter per channel; follows its input's width."""
  windowed = True
  name = "dwconv"
  keras_types = (L.DepthwiseConv2D,)
  keras_doc = "DepthwiseConv2D"
  bias_in_kernels = True   # its bias is sliced with the kernel (`_generated_kernels`)

  def builtin_layer(self, node, channels, name=None):
    del channels   # a depthwise conv has its input's channels
    return L.DepthwiseConv2D(node.kernel_size, strides=node.strides, padding="same", use_bias=not node.bn,
                             name=name)

  def layout(self, space, node, in_layouts, out_source):
    return in_layouts[0]

  def count_terms(self, space, node, one):
    _, couts, positions, k2 = _geometry(space, node)
    flops = [(positions * k2, co, one) for co in couts]
    params = [(k2, co, one) for co in couts]
    return flops, params + self._implied_params(node, couts, one)

  def read_keras(self, layer, ins, out, in_lay, groups):
    if layer.depth_multiplier != 1:
      raise ValueError(f"layer {layer.name!r} (DepthwiseConv2D) has depth_multiplier={layer.depth_multiplier}; "
                       "only 1 is supported")
    k, s = _window(layer)
    return in_lay[0], dict(kernel_size=compact(k), strides=compact(s), padding=layer.padding,
                           use_bias=bool(layer.use_bias), dilation=compact(pair(layer.dilation_rate))), None

  def _build_generators(self, net, node, rows, cin_max, cout_max, common):
    net.add_generator(tfmp_layers.GeneratedDepthwiseConv2D(cout_max, node.kernel_size, node.strides,
                                                            name=node.name, **common),
                       node.name, net.layer_of, rows)

  def _generated_call(self, net, node, x, call):
    li = net.layer_of[node.name]
    return net.generator_layers[li](x, encoding=call.encodings[li][1:], in_index=call.in_index)

  def _generated_kernels(self, net, node, gen, layer, enc):
    idx = gen.index(node.inputs[0])
    w = {"kernel": layer.sliced_kernel(enc[1:], gen.cout, idx).numpy()}  # encoded by its own width
    if layer.use_bias:
      w["bias"] = layer.sliced_bias(gen.cout, idx).numpy()
    return w

  def keras_layer(self, node, channels):
    return Op.keras_layer(self, node, channels)

  def channel_axes(self, node):
    return ((None, 2),) + (((None, 0),) if node.has_bias else ())

  _kernel_axes = {"kernel": (None, 2)}

  def filter_norms(self, node, weights):
    return None   # one filter per input channel: it follows its input, produces no gene

  def _builtin_export_arrays(self, node, src, cin, cout):
    return [src[0][:, :, cout, :]] + ([] if node.bn else [src[1][cout]])


@register
class Dense(_WeightOp):
  """A dense layer on a flat vector (the classifier, or a hidden layer)."""
  name = "dense"
  keras_types = (L.Dense,)
  conv_like = False   # no batch norm, no window; a built-in one is the classifier (no activation, no mask)

  def out_spatial(self, space, node, in_spatial):
    x = in_spatial[0]
    if x is not None:
      raise ValueError(f"dense node {node.name!r} must follow a 'gap' node (it reads a {x} feature map; "
                       "flatten or pool it first)")
    return None

  def count_terms(self, space, node, one):
    cins, couts = space.layout_indices(node.inputs[0]), space.layout_indices(node.name)
    terms = [(1, ci, co) for ci in cins for co in couts]
    return list(terms), terms + self._implied_params(node, couts, one)

  def read_keras(self, layer, ins, out, in_lay, groups):
    if len(ins[0].shape) != 2:
      raise ValueError(f"layer {layer.name!r} (Dense) reads a rank-{len(ins[0].shape)} tensor; put a Flatten or "
                       "global pooling before it (or use a 1x1 Conv2D)")
    return super().read_keras(layer, ins, out, in_lay, groups)

  def _build_generators(self, net, node, rows, cin_max, cout_max, common):
    net.add_generator(tfmp_layers.GeneratedDense(cin_max, cout_max, name=node.name, **common), node.name,
                       net.layer_of, rows)

  def keras_layer(self, node, channels):
    config = copy.deepcopy(node.layer)
    config["config"]["units"] = int(channels)
    return keras.layers.deserialize(config)

  def channel_axes(self, node):
    return ((0, 1),) + (((None, 0),) if node.has_bias else ())

  _kernel_axes = {"kernel": (0, 1)}

  def _builtin_masked_layer(self, net, node):
    return L.Dense(net.space.max_channels(node.name), name=node.name)

  def _builtin_export_arrays(self, node, src, cin, cout):
    return [src[0][cin][:, cout], src[1][cout]]

  def rebuild(self, node, inputs, channels, weights, bn_momentum):
    if node.layer is not None:
      return super().rebuild(node, inputs, channels, weights, bn_momentum)
    layer = L.Dense(channels, name=node.name)
    y = layer(inputs[0])
    return y, ([(layer, [weights["kernel"], weights["bias"]])] if weights is not None else [])

  def latency_model(self, sig):
    if sig.layer is not None:
      return super().latency_model(sig)
    x = keras.Input((sig.cin,))   # the pooling before it is timed on its own (a folded "gap" node)
    return keras.Model(x, keras_activation(L.Dense(sig.cout)(x), sig.activation), name=sig.name)


@register
class SeparableConv(_WeightOp):
  """SeparableConv2D: a depthwise k x k conv on the input, then a pointwise 1x1 conv of `out` channels."""
  windowed = True
  name = "sepconv"
  keras_types = (L.SeparableConv2D,)
  keras_doc = "SeparableConv2D"

  def profile_kinds(self, space, node):
    return ("weights", "weights")   # depthwise then pointwise

  def count_terms(self, space, node, one):
    cins, couts, positions, k2 = _geometry(space, node)
    flops = [(positions * k2, ci, one) for ci in cins] + [(positions, ci, co) for ci in cins for co in couts]
    params = [(k2, ci, one) for ci in cins] + [(1, ci, co) for ci in cins for co in couts]
    return flops, params + self._implied_params(node, couts, one)

  def read_keras(self, layer, ins, out, in_lay, groups):
    if layer.depth_multiplier != 1:
      raise ValueError(f"layer {layer.name!r} (SeparableConv2D) has depth_multiplier={layer.depth_multiplier}; "
                       "only 1 is supported")
    return super().read_keras(layer, ins, out, in_lay, groups)

  def _build_generators(self, net, node, rows, cin_max, cout_max, common):
    net.add_generator(tfmp_layers.GeneratedDepthwiseConv2D(
        cin_max, node.kernel_size, node.strides, name=node.name + "_depthwise", padding=node.padding,
        dilation_rate=node.dilation, hidden_units=net.hidden_units), node.name, net.depthwise_of, (rows[0], rows[0]))
    net.add_generator(tfmp_layers.GeneratedConv2D(cin_max, cout_max, 1, 1, name=node.name,
                                                   hidden_units=net.hidden_units, use_bias=node.has_bias),
                       node.name, net.layer_of, rows)

  def _generated_call(self, net, node, x, call):
    li, di = net.layer_of[node.name], net.depthwise_of[node.name]
    y = net.generator_layers[di](x, encoding=call.encodings[di][1:], in_index=call.in_index)
    return net.generator_layers[li](y, encoding=call.encodings[li], out_channels=call.widths[li],
                                    in_index=call.in_index)

  def _generated_kernels(self, net, node, gen, layer, enc):
    di = net.depthwise_of[node.name]
    dw = net.generator_layers[di]
    idx = gen.index(node.inputs[0])
    return {"depthwise_kernel": dw.sliced_kernel(tf.constant(gen.layout_ratio[net.encoding_index[di]])[1:],
                                                 gen.cin, idx).numpy(),
            "pointwise_kernel": layer.sliced_kernel(enc, gen.cin, gen.cout, idx).numpy()}

  def keras_weights(self, node, w):
    return [w["depthwise_kernel"], w["pointwise_kernel"]] + ([w["bias"]] if "bias" in w else [])

  def channel_axes(self, node):
    return ((2, None), (2, 3)) + (((None, 0),) if node.has_bias else ())

  _kernel_keys = ("depthwise_kernel", "pointwise_kernel")
  _kernel_axes = {"depthwise_kernel": (2, None), "pointwise_kernel": (2, 3)}

  def set_pruning_weights(self, net, node, weights):
    _set_base_kernel(net.generator_layers[net.depthwise_of[node.name]], weights["depthwise_kernel"])
    super().set_pruning_weights(net, node, weights)
