"""Keras ops applied to tensors in a functional graph: `x + 3.0`, `inputs + x`, `keras.ops.hard_sigmoid(x)`.

Keras 3 records such a call as an `Operation` (not a layer) in the model's
graph: MobileNetV3's hard sigmoid is `ReLU(6)(x + 3.0) * (1 / 6)`, ConvNeXt's
residual is `inputs + x`. Element-wise ops of one tensor and scalar constants
keep their input's channels; element-wise ops of several tensors join their
channel groups as `Add` / `Multiply` do. The node keeps the serialized
operation and the call's constants (`Node.layer` = {"class_name": "KerasOp",
"config": {"name", "op", "args"}}), so the PruningNet, the masked net and the
rebuilt model all apply the same operation. FLOPs 0, like activations.
"""

import keras
import numpy as np
from keras.src.ops import nn as keras_nn   # the operation classes Keras 3 records in a functional graph
from keras.src.ops import numpy as keras_numpy

from tf_metaprune.ops.base import Op, register
from tf_metaprune.ops.joins import _joined_layout, _joined_spatial, _read_join


def _classes(module, names):
  return tuple(getattr(module, n) for n in names if hasattr(module, n))


# Element-wise operations (the output has the inputs' shape, channel by channel).
_BINARY = _classes(keras_numpy, ("Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum",
                                 "Power"))
_UNARY = (_classes(keras_numpy, ("Negative", "Square", "Sqrt", "Abs", "Absolute", "Exp", "Log", "Tanh",
                                 "Reciprocal", "Clip"))
          + _classes(keras_nn, ("Relu", "Relu6", "Sigmoid", "HardSigmoid", "HardSilu", "Silu", "Swish",
                                "Gelu", "Elu", "Selu", "Softplus", "Softsign", "LeakyRelu", "Mish", "Celu",
                                "Glu", "HardTanh", "Tanh", "Sparseplus", "Squareplus", "LogSigmoid",
                                "ReLU6", "SoftShrink", "HardShrink", "TanhShrink", "Threshold")))
_UNARY = tuple(c for c in _UNARY if c not in _BINARY and c.__name__ != "Glu")   # Glu halves the channels


def _is_tensor(v):
  return isinstance(v, keras.KerasTensor)


def _constant(op, v):
  """A call argument that is not a tensor, as JSON (a scalar), or ValueError."""
  if isinstance(v, (bool, int, float, np.integer, np.floating)) or v is None:
    return {"value": v if v is None or isinstance(v, bool) else float(v) if isinstance(v, (float, np.floating))
            else int(v)}
  if isinstance(v, np.ndarray) and v.ndim == 0:
    return {"value": float(v)}
  shown = f"array of shape {tuple(np.shape(v))}" if np.ndim(v) else repr(v)
  raise ValueError(f"operation {op.name!r} ({type(op).__name__}) is applied with the constant {shown}; only scalar "
                   "constants are supported (per-channel constants would have to be pruned with the channels): "
                   "write it as a layer with weights, or register an Op that reads it")


def _call_arguments(op, out):
  """The call of the graph node that produced `out`: args as [{"input": i} | {"value": v}], kwargs likewise."""
  producer, node_index, _ = out._keras_history  # pylint: disable=protected-access
  node = producer._inbound_nodes[node_index]  # pylint: disable=protected-access
  ids = [id(t) for t in node.input_tensors]

  def encode(v):
    return {"input": ids.index(id(v))} if _is_tensor(v) else _constant(op, v)

  args = [encode(v) for v in node.arguments.args]
  kwargs = {k: encode(v) for k, v in node.arguments.kwargs.items()}
  return args, kwargs


def _decode(entries, inputs):
  return [inputs[e["input"]] if "input" in e else e["value"] for e in entries]


@register
class KerasOp(Op):
  """An element-wise Keras operation applied to tensors (with scalar constants) in a functional graph."""
  name = "keras_op"
  multi_input = True   # one or more tensor inputs; the call's constants sit in the node's layer config
  keras_types = _BINARY + _UNARY
  keras_doc = "Keras ops on tensors (x + 3.0, inputs + x, keras.ops.hard_sigmoid(x), ...)"

  def layout(self, space, node, in_layouts, out_source):
    if len(node.inputs) == 1:
      return in_layouts[0]
    return _joined_layout(node, in_layouts)

  def out_spatial(self, space, node, in_spatial):
    if len(node.inputs) == 1:
      return in_spatial[0]
    return _joined_spatial(node, in_spatial, broadcast=True)

  def read_keras(self, layer, ins, out, in_lay, groups):
    args, kwargs = _call_arguments(layer, out)
    if tuple(out.shape[1:]) not in [tuple(t.shape[1:]) for t in ins]:
      raise ValueError(f"operation {layer.name!r} ({type(layer).__name__}) outputs shape {tuple(out.shape)} from "
                       f"inputs {[tuple(t.shape) for t in ins]}; only element-wise ops that keep an input's shape "
                       "are read")
    lay = in_lay[0] if len(ins) == 1 else _read_join(layer, ins, in_lay, groups)
    config = {"name": layer.name, "op": keras.saving.serialize_keras_object(layer), "args": args,
              "kwargs": kwargs}
    return lay, {"layer": {"class_name": "KerasOp", "config": config}}, None

  @staticmethod
  def operation(node):
    """A new Keras operation of the node's kind (same settings)."""
    return keras.saving.deserialize_keras_object(node.layer["config"]["op"])

  def apply(self, operation, node, inputs):
    """The node's operation applied to `inputs` (tensors of the node's inputs, in order)."""
    config = node.layer["config"]
    kwargs = dict(zip(config["kwargs"], _decode(config["kwargs"].values(), inputs)))
    return operation(*_decode(config["args"], inputs), **kwargs)

  def build_pruning(self, net, node):
    net.op_layers[node.name] = self.operation(node)

  def pruning_call(self, net, node, inputs, call):
    return self.apply(net.op_layers[node.name], node, inputs)

  def build_masked(self, net, node):
    pass

  def masked_call(self, net, node, inputs, training, mask):
    return self.apply(self.operation(node), node, inputs)

  def rebuild(self, node, inputs, channels, weights, bn_momentum):
    return self.apply(self.operation(node), node, inputs), []

  def latency_signature(self, space, node):
    fields = super().latency_signature(space, node)
    config = fields["layer"]["config"]
    op = {**config["op"], "config": {k: v for k, v in config["op"].get("config", {}).items() if k != "name"}}
    fields["layer"] = {**fields["layer"], "config": {**config, "op": op}}   # identical ops share one timing
    return fields

  def profile_kinds(self, space, node):
    kind = node.layer["config"]["op"].get("class_name")
    if kind == "Add":
      return ("add",)
    if kind == "Multiply":
      return ("mul",)
    return ("activation",) if len(node.inputs) == 1 and kind not in ("Subtract", "Divide", "TrueDivide") else ("other",)

  def latency_model(self, sig):
    h, w = sig.in_hw
    node_like = _NodeLike(sig.layer)
    inputs = [keras.Input((h, w, sig.cin)) for _ in range(sig.num_inputs)]
    y = self.apply(self.operation(node_like), node_like, inputs)
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, y, name=sig.name)


class _NodeLike:
  def __init__(self, layer):
    self.layer = layer
