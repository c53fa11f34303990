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

from tf_metaprune import ops
from tf_metaprune import pruning_net
from tf_metaprune import space as space_lib


def rebuild(net_or_space, structure, copy_weights=None, name=None, bn_momentum=0.99, weights=None,
            output_activation=False):
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
    output_activation: end with the space's `output_activation` (the
      softmax/sigmoid a model read by `SearchSpace.from_keras_model` ended
      with): the drop-in replacement of that model. False (default): end
      with the logits, what `tf_metaprune.training` trains on. No effect for
      a space without one.

  Returns:
    A new built `keras.Model`; the inputs are not modified.

  Raises:
    ValueError: if `structure` does not fit the space, `copy_weights=True`
      is asked of a bare `SearchSpace`, or both `copy_weights` and `weights`
      are given.
  """
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
    missing = [n.name for n in space.nodes if ops.get(n.op).holds_weights and n.name not in weights]
    if missing:
      raise ValueError(f"weights=... hold no arrays for nodes {missing[:5]} of space {space.name!r}")
    copy_weights = True
  for node in space.nodes:
    if node.is_input:
      values[node.name] = keras.Input(shape=space.input_shape, name=node.name)
      continue
    node_weights = weights.get(node.name) if copy_weights else None
    y, copies = ops.get(node.op).rebuild(node, [values[i] for i in node.inputs], ch[node.name], node_weights,
                                         bn_momentum)
    to_copy += copies
    values[node.name] = y
  outputs = [values[o] for o in space.outputs]
  model = keras.Model(values[space.nodes[0].name], outputs[0] if len(outputs) == 1 else outputs,
                      name=name or f"{space.name}_pruned")
  for layer, arrays in to_copy:
    layer.set_weights(arrays)
  return with_output_activation(model, space) if output_activation else model


def with_output_activation(model, space):
  """`model` (logits, e.g. a retrained rebuild) ending with `space.output_activation` again.

  The new model shares `model`'s layers and weights and appends the layer of
  `space.output_layer` (the user's own Softmax/Activation layer, or
  `Activation(activation)` after a `Dense(activation=...)` head), so it is a
  drop-in replacement of the model the space was read from. A space without
  an output activation gives `model` back unchanged.
  """
  if space.output_activation is None:
    return model
  config = copy.deepcopy(space.output_layer) if space.output_layer is not None else keras.layers.serialize(
      keras.layers.Activation(space.output_activation, name=f"{space.nodes[-1].name}_{space.output_activation}"))
  y = keras.layers.deserialize(config)(model.outputs[0])
  return keras.Model(model.inputs, y, name=model.name)
