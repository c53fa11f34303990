"""Ops that join several inputs: Add, Multiply, Concatenate."""

import warnings

import keras
import tensorflow as tf

from tf_metaprune.ops.base import keras_activation, L, merge_fixed, Op, register, tf_activation


@register
class Add(Op):
  """Element-wise sum of inputs of one width (residual joins), then an optional activation."""
  name = "add"
  multi_input = True
  keras_types = (L.Add,)
  keras_doc = "Add"
  latency_role = "folded"
  fuses_activation = True

  def layout(self, space, node, in_layouts, out_source):
    return _joined_layout(node, in_layouts)

  def out_spatial(self, space, node, in_spatial):
    return _joined_spatial(node, in_spatial)

  def read_keras(self, layer, ins, out, in_lay, groups):
    return _read_join(layer, ins, in_lay, groups), {}, None

  def build_pruning(self, net, node):
    pass

  def pruning_call(self, net, node, inputs, call):
    return tf_activation(tf.add_n(inputs), node.activation)

  def build_masked(self, net, node):
    pass

  def masked_call(self, net, node, inputs, training, mask):
    return tf_activation(tf.add_n(inputs), node.activation)

  def rebuild(self, node, inputs, channels, weights, bn_momentum):
    if node.layer is not None:
      return super().rebuild(node, inputs, channels, weights, bn_momentum)
    return keras_activation(L.Add(name=node.name)(inputs), node.activation, node.name), []

  def latency_signature(self, space, node):
    return {**super().latency_signature(space, node), "kernel_size": 1, "strides": 1, "activation": node.activation}

  def profile_kinds(self, space, node):
    return ("add",)

  def latency_model(self, sig):
    h, w = sig.in_hw
    inputs = [keras.Input((h, w, sig.cin)) for _ in range(sig.num_inputs)]
    y = L.Add()(inputs)
    return keras.Model(inputs, keras_activation(y, sig.activation), name=sig.name)


def _joined_layout(node, in_layouts):
  if len(node.inputs) < 2:
    raise ValueError(f"{node.op} node {node.name!r} needs at least two inputs")
  if len(set(in_layouts)) != 1:
    raise ValueError(
        f"{node.op} node {node.name!r} joins inputs of different widths {dict(zip(node.inputs, in_layouts))}; "
        "residual-joined layers must read the same gene (or the same fixed width)")
  return in_layouts[0]


def _joined_spatial(node, ins, broadcast=False):
  maps = [s for s in ins if s != (1, 1)] if broadcast else list(ins)
  if len(set(maps)) > 1:
    raise ValueError(f"{node.op} node {node.name!r} joins feature maps of different sizes {ins}")
  return maps[0] if maps else ins[0]


def _read_join(layer, ins, in_lay, groups):
  """Add / Multiply: ties the inputs' groups into one (or fixes them, for differently concatenated inputs)."""
  shapes = [tuple(t.shape[1:]) for t in ins]
  if len({s[-1] for s in shapes}) != 1:
    raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) broadcasts over channels {shapes}; only "
                     "inputs with equal channel counts are supported")
  width = lambda g: groups.width[groups.find(g)]  # pylint: disable=unnecessary-lambda-assignment
  if all(len(l) == len(in_lay[0]) and all(width(a) == width(b) for a, b in zip(l, in_lay[0])) for l in in_lay):
    for other in in_lay[1:]:
      for a, b in zip(in_lay[0], other):
        groups.union(a, b, layer)
  else:  # differently concatenated inputs: no per-slice tie fits, keep them all at full width
    warnings.warn(f"layer {layer.name!r} ({type(layer).__name__}) joins differently concatenated tensors: their "
                  "channels stay at full width (fixed)", stacklevel=5)
    for lay_i in in_lay:
      for g in lay_i:
        groups.freeze(g)
  return in_lay[0]


@register
class Multiply(Op):
  """Element-wise product (squeeze-and-excitation); a 1x1 input broadcasts over the other's positions."""
  name = "multiply"
  multi_input = True
  keras_types = (L.Multiply,)
  keras_doc = "Multiply"

  def layout(self, space, node, in_layouts, out_source):
    return _joined_layout(node, in_layouts)

  def out_spatial(self, space, node, in_spatial):
    return _joined_spatial(node, in_spatial, broadcast=True)

  def read_keras(self, layer, ins, out, in_lay, groups):
    return _read_join(layer, ins, in_lay, groups), {}, None

  def build_pruning(self, net, node):
    pass

  def pruning_call(self, net, node, inputs, call):
    y = inputs[0]
    for other in inputs[1:]:
      y = y * other
    return y

  def latency_signature(self, space, node):
    # Timed at the output's size, with the 1x1 inputs (a squeeze-excite gate) broadcast as in the model.
    out_hw = space.spatial[node.name]
    broadcast = any(space.spatial[i] == (1, 1) for i in node.inputs) and out_hw != (1, 1)
    return {**super().latency_signature(space, node), "in_hw": tuple(out_hw), "kernel_size": 1, "strides": 1,
            "broadcast": broadcast, "layer": None}

  def profile_kinds(self, space, node):
    return ("mul",)

  def latency_model(self, sig):
    h, w = sig.in_hw
    shapes = [(h, w, sig.cin)] + [(1, 1, sig.cin) if sig.broadcast else (h, w, sig.cin)] * (sig.num_inputs - 1)
    inputs = [keras.Input(shape) for shape in shapes]
    return keras.Model(inputs, L.Multiply()(inputs), name=sig.name)


@register
class Concat(Op):
  """Concatenation on the channel axis: each input keeps its own gene in its slice of the output."""
  name = "concat"
  multi_input = True
  keras_types = (L.Concatenate,)
  keras_doc = "Concatenate"

  def layout(self, space, node, in_layouts, out_source):
    if len(node.inputs) < 2:
      raise ValueError(f"{node.op} node {node.name!r} needs at least two inputs")
    return merge_fixed(src for lay in in_layouts for src in lay)

  def out_spatial(self, space, node, in_spatial):
    return _joined_spatial(node, in_spatial)

  def read_keras(self, layer, ins, out, in_lay, groups):
    if layer.axis not in (-1, len(out.shape) - 1):
      raise ValueError(f"layer {layer.name!r} (Concatenate) joins axis={layer.axis!r}; only the channel axis (-1) "
                       "is supported")
    return tuple(g for l in in_lay for g in l), {}, None

  def build_pruning(self, net, node):
    pass

  def pruning_call(self, net, node, inputs, call):
    return tf.concat(inputs, axis=-1)

  def latency_signature(self, space, node):
    return {**super().latency_signature(space, node), "kernel_size": 1, "strides": 1, "layer": None}

  def profile_kinds(self, space, node):
    return ("concat",)

  def latency_model(self, sig):
    # A copy of cin channels in total, split evenly over the inputs (the time depends on the total).
    h, w = sig.in_hw
    parts = [sig.cin // sig.num_inputs + (1 if i < sig.cin % sig.num_inputs else 0) for i in range(sig.num_inputs)]
    inputs = [keras.Input((h, w, max(1, c))) for c in parts]
    return keras.Model(inputs, L.Concatenate()(inputs), name=sig.name)
