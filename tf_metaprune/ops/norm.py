"""Normalization ops: BatchNormalization read from a Keras model (width-aware in the PruningNet)."""

from tf_metaprune.ops.base import (fused_into_producer, _keras_layer_of, L, Op, _read_bn, register, _set_width_bn,
                                   _VECTOR_AXES, _width_bn_weights)


@register
class BatchNorm(Op):
  """A BatchNormalization layer of a model read by `from_keras_model` (width-aware in the PruningNet)."""
  name = "bn"
  keras_types = (L.BatchNormalization,)
  keras_doc = "BatchNormalization"

  def latency_kind(self, space, node):
    # The converter folds a batch norm into the conv / dense before it; elsewhere it is a MUL and an ADD.
    return "free" if fused_into_producer(space, node) else "folded"

  def count_terms(self, space, node, one):
    config = node.layer["config"]
    per_channel = 2 + int(bool(config.get("center", True))) + int(bool(config.get("scale", True)))
    return [], [(per_channel, c, one) for c in space.layout_indices(node.name)]

  def read_keras(self, layer, ins, out, in_lay, groups):
    rank = len(out.shape)
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
    if axis not in (-1, rank - 1):
      raise ValueError(f"layer {layer.name!r} (BatchNormalization) normalizes axis={layer.axis!r}; only the "
                       "channel axis (-1) is supported")
    return in_lay[0], {}, None

  def build_pruning(self, net, node):
    net.layout_rows(node)
    config = node.layer["config"]
    net.add_width_bn(node, affine=net.bn_affine and config.get("center", True) and config.get("scale", True),
                      epsilon=config.get("epsilon", 1e-3), name=node.name)

  def pruning_call(self, net, node, inputs, call):
    return call.batch_norm(inputs[0], node.name, in_index=call.in_index)

  def generated_weights(self, net, node, gen):
    return _width_bn_weights(net, node, gen)

  def keras_weights(self, node, w):
    config = node.layer["config"]
    return (([w["gamma"]] if config.get("scale", True) else []) + ([w["beta"]] if config.get("center", True) else [])
            + [w["moving_mean"], w["moving_variance"]])

  def channel_axes(self, node):
    config = node.layer["config"]
    return ((None, 0),) * (2 + int(bool(config.get("center", True))) + int(bool(config.get("scale", True))))

  holds_weights = True

  def weight_axes(self, node):
    return dict(_VECTOR_AXES)

  def read_weights(self, node, model):
    return _read_bn(_keras_layer_of(model, node.name, node), node.layer["config"])

  def bn_scale(self, node, weights):
    return weights["gamma"] if node.layer["config"].get("scale", True) else None

  def set_pruning_weights(self, net, node, weights):
    _set_width_bn(net, node, weights)
