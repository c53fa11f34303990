"""Ops with one weight vector per channel, and fixed preprocessing layers.

* `LayerNorm`: `LayerNormalization` over the channel axis (ConvNeXt). At a
  pruned width it normalizes over the kept channels, with their gamma/beta.
* `ChannelScale`: a learned per-channel scale `x * gamma` -- ConvNeXt's
  `LayerScale` (its `projection_dim` follows the width).
* `FixedLayer` / `FixedChannels`: a layer with weights (or per-channel
  constants) that must keep every channel, such as `Normalization` on the
  image (EfficientNet, ConvNeXt) or a per-channel `Rescaling`: its input
  channels stay fixed (never pruned), its weights are copied as they are.

In the PruningNet the vectors live at full width in a `ChannelVectors` layer
and are sliced to the structure's width (or gathered, behind a
concatenation), like the width batch norm.
"""

import copy

import keras
import numpy as np
import tensorflow as tf

from tf_metaprune.ops.base import L, Op, _keras_layer_of, register

_VECTOR = (None, 0)


@keras.saving.register_keras_serializable(package="tf_metaprune")
class ChannelVectors(keras.layers.Layer):
  """Full-width per-channel vectors (e.g. gamma, beta) that a structure slices to its width.

  Args:
    channels: the full width.
    names: the vectors' names, each initialized to `inits[name]` (a float).
  """

  def __init__(self, channels, names=("gamma", "beta"), inits=None, **kwargs):
    super().__init__(**kwargs)
    self.channels, self.names = int(channels), tuple(names)
    self.inits = dict(inits or {"gamma": 1.0, "beta": 0.0})
    self.vectors = {}

  def build(self, input_shape=None):
    for n in self.names:
      self.vectors[n] = self.add_weight(name=n, shape=(self.channels,),
                                        initializer=keras.initializers.Constant(self.inits.get(n, 0.0)))
    self.built = True

  def take(self, name, channels, in_index=None):
    """Vector `name` at the leading `channels` entries, or at `in_index` (int32 [c])."""
    v = self.vectors[name]
    return tf.slice(v, [0], [channels]) if in_index is None else tf.gather(v, in_index)

  def call(self, x):
    return x

  def get_config(self):
    config = super().get_config()
    config.update(channels=self.channels, names=list(self.names), inits=self.inits)
    return config


def _vectors_of(net, node):
  return net.op_layers[node.name]


class _VectorOp(Op):
  """Shared parts of ops whose weights are per-channel vectors (`_keys`, in the Keras layer's get_weights order)."""
  holds_weights = True
  latency_role = "folded"

  def _keys(self, node):
    raise NotImplementedError

  def _inits(self, node):
    return {"gamma": 1.0, "beta": 0.0}

  def count_terms(self, space, node, one):
    return [], [(len(self._keys(node)), c, one) for c in space.layout_indices(node.name)]

  def weight_axes(self, node):
    return {k: _VECTOR for k in self._keys(node)}

  def channel_axes(self, node):
    return (_VECTOR,) * len(self._keys(node))

  def read_weights(self, node, model):
    arrays = _keras_layer_of(model, node.name, node).get_weights()
    return {k: np.asarray(a, np.float32) for k, a in zip(self._keys(node), arrays)}

  def keras_weights(self, node, w):
    return [w[k] for k in self._keys(node)]

  def build_pruning(self, net, node):
    layer = ChannelVectors(net.space.max_channels(node.name), self._keys(node), self._inits(node),
                           name=node.name)
    layer.build()
    net.op_layers[node.name] = layer

  def _taken(self, net, node, x, call):
    layer = _vectors_of(net, node)
    width = tf.shape(x)[-1]
    return {k: layer.take(k, width, call.in_index) for k in self._keys(node)}

  def generated_weights(self, net, node, gen):
    layer = _vectors_of(net, node)
    idx = gen.index(node.name)
    return {k: (layer.vectors[k].numpy()[:gen.cout] if idx is None else layer.vectors[k].numpy()[idx])
            for k in self._keys(node)}

  def set_pruning_weights(self, net, node, weights):
    layer = _vectors_of(net, node)
    for k in self._keys(node):
      layer.vectors[k].assign(weights[k])

  def rebuild(self, node, inputs, channels, weights, bn_momentum):
    layer = self.keras_layer(node, channels)
    y = layer(inputs[0])
    return y, ([(layer, self.keras_weights(node, weights))] if weights is not None else [])


@register
class LayerNorm(_VectorOp):
  """LayerNormalization over the channel axis: normalizes over the structure's kept channels."""
  name = "layernorm"
  keras_types = (L.LayerNormalization,)
  keras_doc = "LayerNormalization (channel axis)"

  def _keys(self, node):
    config = node.layer["config"]
    return tuple(k for k, on in (("gamma", config.get("scale", True)), ("beta", config.get("center", True))) if on)

  def read_keras(self, layer, ins, out, in_lay, groups):
    rank = len(out.shape)
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
    if axis not in (-1, rank - 1):
      raise ValueError(f"layer {layer.name!r} (LayerNormalization) normalizes axis={layer.axis!r}; only the channel "
                       "axis (-1) is supported")
    if getattr(layer, "rms_scaling", False):
      raise ValueError(f"layer {layer.name!r} (LayerNormalization) uses rms_scaling=True; only the standard "
                       "mean/variance form is supported")
    return in_lay[0], {}, None

  def pruning_call(self, net, node, inputs, call):
    x = inputs[0]
    w = self._taken(net, node, x, call)
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    y = (x - mean) * tf.math.rsqrt(variance + float(node.layer["config"].get("epsilon", 1e-3)))
    if "gamma" in w:
      y = y * w["gamma"]
    if "beta" in w:
      y = y + w["beta"]
    return y

  def build_masked(self, net, node):
    raise ValueError(f"node {node.name!r} (LayerNormalization) cannot be masked: a zeroed channel still moves the "
                     "mean over channels; search this space with the PruningNet searchers, not PaS")


@register
class ChannelScale(_VectorOp):
  """A learned per-channel scale, `x * gamma` (ConvNeXt's LayerScale; `projection_dim` follows the width)."""
  name = "channel_scale"
  keras_doc = "LayerScale (ConvNeXt)"

  def reads(self, layer):
    # ConvNeXt's LayerScale: one weight vector over the channels, config key `projection_dim`.
    return (type(layer).__name__ == "LayerScale" and hasattr(layer, "projection_dim")
            and [tuple(w.shape) for w in layer.weights] == [(int(layer.projection_dim),)])

  def _keys(self, node):
    return ("gamma",)

  def _inits(self, node):
    return {"gamma": float(node.layer["config"].get("init_values", 1.0))}

  def read_keras(self, layer, ins, out, in_lay, groups):
    return in_lay[0], {}, None

  def pruning_call(self, net, node, inputs, call):
    return inputs[0] * self._taken(net, node, inputs[0], call)["gamma"]

  def profile_kinds(self, space, node):
    return ("mul",)

  def keras_layer(self, node, channels):
    config = copy.deepcopy(node.layer)
    config["config"]["projection_dim"] = int(channels)
    return keras.layers.deserialize(config)

  def build_masked(self, net, node):
    net.add_node_layers(node, [self.keras_layer(node, net.space.max_channels(node.name))])


@register
class FixedLayer(Op):
  """A layer with weights whose channels are never pruned (Normalization of the image, ...): copied as is.

  Its input channels are fixed; its weights (e.g. Normalization's mean and
  variance) are read from the model, kept in the PruningNet and copied into
  every rebuilt model unchanged.
  """
  name = "fixed_layer"
  holds_weights = True
  keras_types = (L.Normalization,)
  keras_doc = "Normalization (fixed channels)"

  def read_keras(self, layer, ins, out, in_lay, groups):
    axis = layer.axis if isinstance(layer.axis, (int, type(None))) else tuple(layer.axis)
    if axis not in (-1, len(out.shape) - 1, (-1,), (len(out.shape) - 1,)):
      raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) works on axis={layer.axis!r}; only the "
                       "channel axis (-1) is supported")
    for g in in_lay[0]:
      groups.freeze(g)
    return in_lay[0], {}, None

  def count_terms(self, space, node, one):
    return [], [(self._params(space, node), one, one)]

  def _params(self, space, node):
    """The layer's weight count (count_params), from its arrays' shapes at the node's fixed input width."""
    return int(sum(int(np.prod(w.shape)) for w in self._built_layer(space, node).weights))

  def weight_axes(self, node):
    return {}

  def take_channels(self, node, weights, in_index, out_index):
    return dict(weights)   # its channels are fixed: every permutation and slice keeps them all, in order

  def read_weights(self, node, model):
    arrays = _keras_layer_of(model, node.name, node).get_weights()
    return {f"w{i}": np.asarray(a) for i, a in enumerate(arrays)}

  def keras_weights(self, node, w):
    return [w[f"w{i}"] for i in range(len(w))]

  @staticmethod
  def _built_layer(space, node):
    layer = keras.layers.deserialize(copy.deepcopy(node.layer))
    spatial = space.spatial[node.inputs[0]]
    layer.build((None,) + (tuple(spatial) if spatial is not None else ()) + (space.max_channels(node.inputs[0]),))
    return layer

  def build_pruning(self, net, node):
    net.op_layers[node.name] = self._built_layer(net.space, node)  # pylint: disable=protected-access

  def pruning_call(self, net, node, inputs, call):
    x = inputs[0]   # a fixed width, whose static size the PruningNet's sliced tensors do not carry
    x = tf.ensure_shape(x, (None,) * (len(x.shape) - 1) + (net.space.max_channels(node.inputs[0]),))
    return net.op_layers[node.name](x)

  def generated_weights(self, net, node, gen):
    return {f"w{i}": np.asarray(a) for i, a in enumerate(net.op_layers[node.name].get_weights())}

  def set_pruning_weights(self, net, node, weights):
    net.op_layers[node.name].set_weights(self.keras_weights(node, weights))

  def rebuild(self, node, inputs, channels, weights, bn_momentum):
    layer = keras.layers.deserialize(copy.deepcopy(node.layer))
    y = layer(inputs[0])
    return y, ([(layer, self.keras_weights(node, weights))] if weights else [])


@register
class FixedChannels(Op):
  """A parameter-free layer with per-channel constants (Rescaling by a vector): its channels stay fixed."""
  name = "fixed_channels"
  keras_doc = "Rescaling (per channel, fixed channels)"

  def reads(self, layer):
    return type(layer) is L.Rescaling and bool(np.ndim(layer.scale) or np.ndim(layer.offset))  # pylint: disable=unidiomatic-typecheck

  def read_keras(self, layer, ins, out, in_lay, groups):
    for g in in_lay[0]:
      groups.freeze(g)
    return in_lay[0], {}, None
