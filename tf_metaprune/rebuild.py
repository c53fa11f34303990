"""Turns a structure into a plain Keras model.

The result uses only standard layers -- Conv2D, DepthwiseConv2D,
BatchNormalization, ReLU, Add, MaxPooling2D, GlobalAveragePooling2D, Dense --
so it trains, saves, quantizes (tfmot QAT included: conv -> BN -> ReLU are
separate layers) and converts to TFLite like any hand-written model, with no
tf_metaprune code needed at load time. Layers are named after the space's
nodes ("<node>", "<node>_bn", "<node>_relu", ...). For a space read from your
own model (`SearchSpace.from_keras_model`) every layer is re-created from the
model's own layer config -- same names, order, activations and settings --
with only the pruned `filters`/`units` (and a following Reshape) changed.

Example:

  >>> model = tfmp.rebuild(net, s)      # PruningNet's generated weights + BN statistics
  >>> model = tfmp.rebuild(space, s)    # fresh initialization, for retraining
"""

import copy

import keras
import numpy as np

from tf_metaprune import space as space_lib


def rebuild(net_or_space, structure, copy_weights=None, name=None, bn_momentum=0.99, weights=None):
  """Builds the plain Keras model of `structure`.

  Args:
    net_or_space: a `PruningNet` (weights can be copied from it) or a
      `SearchSpace` (fresh initialization).
    structure: a `Structure` of that space.
    copy_weights: copy the PruningNet's generated kernels and its current
      batch-norm statistics (call `net.recalibrate(structure, data)` first).
      Default: True for a PruningNet, False for a SearchSpace.
    name: model name (default "<space name>_pruned").
    bn_momentum: momentum of the rebuilt BatchNormalization layers (lower it,
      e.g. 0.9, for short retraining runs).
    weights: arrays to load instead, per node, already cut to `structure`, in
      the form of `PruningNet.generated_weights` (e.g.
      `tf_metaprune.pretrained.TrainedModel.sliced_weights`: a trained
      model's most important channels).

  Returns:
    A new built `keras.Model`; the inputs are not modified.

  Raises:
    ValueError: if `structure` does not fit the space, `copy_weights=True`
      is asked of a bare `SearchSpace`, or both `copy_weights` and `weights`
      are given.
  """
  from tf_metaprune import pruning_net  # pylint: disable=g-import-not-at-top
  net = net_or_space if isinstance(net_or_space, pruning_net.PruningNet) else None
  space = net.space if net is not None else net_or_space
  if not isinstance(space, space_lib.SearchSpace):
    raise TypeError(f"rebuild() needs a PruningNet or a SearchSpace, got {type(net_or_space).__name__}")
  s = space.validate(structure)
  if copy_weights is None:
    copy_weights = net is not None and weights is None
  if copy_weights and net is None:
    raise ValueError("copy_weights=True needs a PruningNet to copy from; pass the net, not the space")
  if copy_weights and weights is not None:
    raise ValueError("rebuild() got both copy_weights=True and weights=...; pass one source of weights")
  ch = space.node_channels(s)
  values = {}
  to_copy = []  # (layer, list of arrays)
  if weights is None:
    weights = net.generated_weights(s) if copy_weights else {}
  else:
    missing = [n.name for n in space.nodes if (n.op in space_lib.WEIGHT_OPS or n.op == "bn") and n.name not in weights]
    if missing:
      raise ValueError(f"weights=... hold no arrays for nodes {missing[:5]} of space {space.name!r}")
    copy_weights = True
  for node in space.nodes:
    if node.op == "input":
      values[node.name] = keras.Input(shape=space.input_shape, name=node.name)
      continue
    x = values[node.inputs[0]]
    if node.layer is not None:  # a layer of a model read by SearchSpace.from_keras_model
      layer = _user_layer(node, ch[node.name])
      y = layer([values[i] for i in node.inputs] if node.op in ("add", "multiply", "concat") else x)
      if copy_weights and node.name in weights:
        to_copy.append((layer, _keras_weights(node, weights[node.name])))
    elif node.op in ("conv", "dwconv"):
      if node.op == "conv":
        layer = keras.layers.Conv2D(ch[node.name], node.kernel_size, strides=node.strides, padding="same",
                                    use_bias=not node.bn, name=node.name)
      else:
        layer = keras.layers.DepthwiseConv2D(node.kernel_size, strides=node.strides, padding="same",
                                             use_bias=not node.bn, name=node.name)
      y = layer(x)
      if copy_weights:
        w = weights[node.name]
        bias = [] if node.bn else [w.get("bias", np.zeros(ch[node.name], np.float32))]
        to_copy.append((layer, [w["kernel"]] + bias))
      if node.bn:
        bn = keras.layers.BatchNormalization(momentum=bn_momentum, epsilon=1e-3, name=node.name + "_bn")
        y = bn(y)
        if copy_weights:
          w = weights[node.name]
          to_copy.append((bn, [w["gamma"], w["beta"], w["moving_mean"], w["moving_variance"]]))
      y = _activation(y, node.activation, node.name)
    elif node.op == "add":
      y = keras.layers.Add(name=node.name)([values[i] for i in node.inputs])
      y = _activation(y, node.activation, node.name)
    elif node.op == "maxpool":
      y = keras.layers.MaxPooling2D(node.kernel_size, strides=node.strides, padding="same", name=node.name)(x)
    elif node.op == "gap":
      y = keras.layers.GlobalAveragePooling2D(name=node.name)(x)
    elif node.op == "dense":
      layer = keras.layers.Dense(ch[node.name], name=node.name)
      y = layer(x)
      if copy_weights:
        w = weights[node.name]
        to_copy.append((layer, [w["kernel"], w["bias"]]))
    else:  # pragma: no cover
      raise ValueError(f"unknown op {node.op!r}")
    values[node.name] = y
  model = keras.Model(values[space.nodes[0].name], values[space.nodes[-1].name],
                      name=name or f"{space.name}_pruned")
  for layer, arrays in to_copy:
    layer.set_weights(arrays)
  return model


def _user_layer(node, channels):
  """The Keras layer a node was read from, re-created at `channels` output channels."""
  config = copy.deepcopy(node.layer)
  if node.op in ("conv", "sepconv"):
    config["config"]["filters"] = int(channels)
  elif node.op == "dense":
    config["config"]["units"] = int(channels)
  elif node.op == "reshape":
    config["config"]["target_shape"] = list(node.target_shape[:-1]) + [int(channels)]
  return keras.layers.deserialize(config)


def _keras_weights(node, w):
  """The generated arrays of a node in the order its Keras layer's `set_weights` takes."""
  if node.op == "bn":
    cfg = node.layer["config"]
    return (([w["gamma"]] if cfg.get("scale", True) else []) + ([w["beta"]] if cfg.get("center", True) else [])
            + [w["moving_mean"], w["moving_variance"]])
  if node.op == "sepconv":
    return [w["depthwise_kernel"], w["pointwise_kernel"]] + ([w["bias"]] if "bias" in w else [])
  return [w["kernel"]] + ([w["bias"]] if "bias" in w else [])


def _activation(y, activation, node_name):
  if activation == "relu":
    return keras.layers.ReLU(name=node_name + "_relu")(y)
  if activation == "relu6":
    return keras.layers.ReLU(max_value=6.0, name=node_name + "_relu6")(y)
  return y
