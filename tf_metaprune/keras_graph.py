"""Reads a Keras model's graph into a `SearchSpace`: prune your own network.

MetaPruning's reference code writes a PruningNet by hand for every
architecture. Here the search space is derived from any functional or
Sequential Keras 3 CNN by walking its graph:

  * every Conv2D, SeparableConv2D (its pointwise part) and Dense layer starts
    a *channel group* of its output width;
  * DepthwiseConv2D, BatchNormalization, activations, dropout, pooling,
    zero-padding, upsampling and global pooling keep their input's group (a depthwise
    conv follows its input);
  * Add and Multiply join the groups of their inputs into one (residual and
    squeeze-and-excitation branches move together);
  * Concatenate keeps each input's group in its own slice of the output;
  * groups that touch the model's input or an output (the classifier, a
    segmentation map's classes, a detector's box coordinates) are fixed,
    and so are groups that a Flatten or Reshape turns into positions x
    channels (a warning names the layer);
  * every prunable group becomes one `Gene` named after its first layer;
  * a final softmax or sigmoid (keras.applications' default
    `classifier_activation="softmax"`, a `Dense(activation="softmax")` or a
    separate `Softmax`/`Activation` layer) is read off: the space computes
    its pre-activation, the logits, which the PruningNet trains and the
    searches score on, and records the activation (`SearchSpace.
    output_activation`) so rebuilt models and TFLite files end with it again.

Nested models (a Sequential stem, say) are flattened: their layers are read
as if called on the outer model's tensors. Keras ops applied to tensors
(`x + 3.0`, `inputs + x`, `keras.ops.hard_sigmoid(x)`) are read as
parameter-free ops. Any other layer (custom layers, shared layers) stops with
a ValueError naming the layer, its type and the extension point: an `Op`
subclass registered from your code (`@tf_metaprune.ops.register`) reads it.
Each node keeps the serialized Keras layer, so `tf_metaprune.rebuild`
re-creates the user's layers -- names, order, activations, initializers and
non-prunable layers -- at the pruned widths.

Example:

  >>> model = keras.applications.MobileNetV2((32, 32, 3), alpha=0.35, weights=None, classes=10,
  ...                                        classifier_activation=None)
  >>> space = tf_metaprune.SearchSpace.from_keras_model(model, divisor=8)    # reads it with read_keras_model
  >>> space.params(space.largest()) == model.count_params()
  True
"""

import copy

import keras

from tf_metaprune import ops

class _Groups:
  """Union-find over channel groups; a group is fixed if any member is."""

  def __init__(self):
    self.parent, self.width, self.fixed, self.first = [], [], [], []

  def new(self, width, first_layer, fixed=False):
    self.parent.append(len(self.parent))
    self.width.append(int(width))
    self.fixed.append(bool(fixed))
    self.first.append(first_layer)
    return len(self.parent) - 1

  def find(self, g):
    while self.parent[g] != g:
      self.parent[g] = self.parent[self.parent[g]]
      g = self.parent[g]
    return g

  def union(self, a, b, layer):
    ra, rb = self.find(a), self.find(b)
    if ra == rb:
      return
    if self.width[ra] != self.width[rb]:
      raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) joins {self.width[ra]} and "
                       f"{self.width[rb]} channels; only equal widths can be pruned together")
    lo, hi = sorted((ra, rb))  # the older group names the union
    self.parent[hi] = lo
    self.fixed[lo] = self.fixed[lo] or self.fixed[hi]

  def freeze(self, g):
    self.fixed[self.find(g)] = True


def _functional(model):
  """`model` as a functional graph (a Sequential model is re-applied to a fresh Input)."""
  if not isinstance(model, keras.Model):
    raise TypeError(f"from_keras_model needs a keras.Model, got {type(model).__name__}")
  if isinstance(model, keras.Sequential):
    try:
      shape = model.input_shape
    except (AttributeError, ValueError):
      shape = None
    if shape is None:
      raise ValueError(f"Sequential model {model.name!r} is not built; start it with keras.Input(shape) or "
                       "call model.build((None, H, W, C)) first")
    inputs = keras.Input(shape=tuple(shape[1:]), name="input")
    return _unique_names(model, inputs, _call_flat(model, inputs))
  if len(model.inputs) != 1:
    raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs; from_keras_model reads models with one "
                     "image input")
  if not any(isinstance(op, keras.Model) for op in model.operations):
    return model
  source = model.inputs[0]
  inputs = keras.Input(shape=tuple(source.shape[1:]), dtype=source.dtype, name=source._keras_history[0].name)  # pylint: disable=protected-access
  return _unique_names(model, inputs, _call_flat(model, inputs))


def _call_flat(model, x):
  """`model` applied to tensor `x` with every nested model's layers called one by one (flattened)."""
  if isinstance(model, keras.Sequential):
    for layer in model.layers:
      x = _call_flat(layer, x) if isinstance(layer, keras.Model) else layer(x)
    return x

  def call(op, *args, **kwargs):
    if isinstance(op, keras.Model):
      return _call_flat(op, args[0])
    return op(*args, **kwargs)

  return model._run_through_graph(x, call_fn=call)  # pylint: disable=protected-access


def _unique_names(model, inputs, outputs):
  try:
    return keras.Model(inputs, outputs, name=model.name)
  except ValueError as e:
    raise ValueError(f"model {model.name!r} flattened (its nested models' layers called on the outer tensors) "
                     f"has a layer name twice ({e}); give the nested models' layers unique names") from None


def _graph_nodes(model):
  """The Keras graph nodes of `model`, found by walking back from its output."""
  seen, stack = {}, list(model.outputs)
  while stack:
    tensor = stack.pop()
    op, node_index, _ = tensor._keras_history  # pylint: disable=protected-access
    node = op._inbound_nodes[node_index]  # pylint: disable=protected-access
    if id(node) in seen:
      continue
    seen[id(node)] = node
    stack.extend(node.input_tensors)
  return seen


def _serialize(layer):
  config = keras.layers.serialize(layer)
  config.pop("build_config", None)  # rebuilt at the pruned width, not the original one
  config.pop("compile_config", None)
  return config


class KerasGraph:
  """A Keras model read as plain data: what `SearchSpace.from_keras_model` turns into a space.

  Attributes:
    name: the model's name.
    input_shape: (H, W, C) of its image input.
    num_classes: its (first) output's width.
    genes: [(gene name, full width)] of the prunable channel groups, in order.
    nodes: one dict of `Node` fields per layer, topologically ordered; `out`
      names a gene of `genes` or a fixed width. They end with the logits: a
      final softmax/sigmoid is not among them.
    outputs: the names of the layers whose outputs are the model's, in order.
    output_activation: "softmax" or "sigmoid" if the model ended with one
      (its nodes then compute the pre-activation, the logits), else None.
      Read off single-output models only.
    output_layer: the serialized Keras layer that applies it again (the
      user's own `Softmax`/`Activation` layer, or an `Activation` named
      "<classifier>_<activation>" for a `Dense(activation=...)`), or None.
  """

  def __init__(self, name, input_shape, num_classes, genes, nodes, output_activation=None, output_layer=None,
               outputs=None):
    self.name, self.input_shape, self.num_classes = name, tuple(input_shape), int(num_classes)
    self.genes, self.nodes = list(genes), list(nodes)
    self.output_activation, self.output_layer = output_activation, output_layer
    self.outputs = list(outputs) if outputs is not None else [self.nodes[-1]["name"]]


def read_keras_model(model) -> KerasGraph:
  """The channel groups and layers of a Keras CNN (see the module docstring for how groups are found).

  `SearchSpace.from_keras_model(model, width_ratios, divisor)` makes the
  space of it; its full-width structure is the original model (same
  parameter count, same multiply-adds).

  Args:
    model: a built Keras 3 functional or Sequential model with one
      channels-last image input and one or more outputs, each (batch,
      classes) or (batch, H, W, channels) (never pruned).

  Returns:
    A `KerasGraph`.

  Raises:
    ValueError: a layer that cannot be read (its name and type are quoted,
      with the supported list), shared layers, channels-first
      data, Concatenate on another axis than channels, grouped convolutions,
      depth multipliers other than 1, or a model with no prunable channels.
  """
  model = _functional(model)
  graph = _graph_nodes(model)
  groups = _Groups()
  layout = {}   # tensor id -> tuple of group ids concatenated on the channel axis
  records = []  # (layer, op, input layer names, extra Node fields, group of the output or None)
  producer = {}  # tensor id -> layer name
  for op in model.operations:
    nodes = [n for n in op._inbound_nodes if id(n) in graph]  # pylint: disable=protected-access
    if not nodes:
      continue
    if len(nodes) > 1:
      raise ValueError(f"layer {op.name!r} ({type(op).__name__}) is called {len(nodes)} times; shared layers "
                       "cannot be pruned per call: give every call its own layer")
    node = nodes[0]
    reader = ops.for_keras_layer(op)
    if reader is None and not isinstance(op, keras.layers.Layer):
      raise ValueError(f"operation {op.name!r} ({type(op).__name__}) is a Keras op applied to a tensor that "
                       "from_keras_model cannot read; write it as a layer, or register an Op that reads it "
                       "(@tf_metaprune.ops.register, see tf_metaprune.ops)")
    if len(node.output_tensors) != 1:
      raise ValueError(f"layer {op.name!r} ({type(op).__name__}) has {len(node.output_tensors)} outputs; "
                       "only single-output layers are supported")
    ins = list(node.input_tensors)
    in_names = []
    for t in ins:
      src, _, tensor_index = t._keras_history  # pylint: disable=protected-access
      if tensor_index != 0:
        raise ValueError(f"layer {op.name!r} reads output {tensor_index} of {src.name!r}; multi-output layers "
                         "are not supported")
      in_names.append(src.name)
    out = node.output_tensors[0]
    if getattr(op, "data_format", "channels_last") != "channels_last":
      raise ValueError(f"layer {op.name!r} ({type(op).__name__}) uses data_format={op.data_format!r}; "
                       "only channels_last models are supported (rebuild the model channels_last)")
    in_lay = [layout[id(t)] for t in ins]
    if reader is None:
      raise ValueError(
          f"layer {op.name!r} of type {type(op).__name__} cannot be read by from_keras_model: it is not one of "
          f"the supported layers ({ops.supported_keras_layers()}); register an Op subclass that reads it "
          "(@tf_metaprune.ops.register, see tf_metaprune.ops), replace it with supported layers, or prune the "
          "model without it")
    lay, fields, out_group = reader.read_keras(op, ins, out, in_lay, groups)
    optype = reader.name
    layout[id(out)] = lay
    records.append((op, optype, in_names, fields, out_group, out))
  output_names = []
  for out_tensor in model.outputs:
    if len(out_tensor.shape) not in (2, 4):
      raise ValueError(f"model {model.name!r} outputs shape {tuple(out_tensor.shape)}; from_keras_model reads "
                       "(batch, classes) logits or (batch, height, width, channels) dense predictions")
    src, _, tensor_index = out_tensor._keras_history  # pylint: disable=protected-access
    if src.name in output_names or tensor_index != 0:
      raise ValueError(f"model {model.name!r} returns layer {src.name!r}'s output twice (or one of several of its "
                       "outputs); give every model output its own layer")
    output_names.append(src.name)
    for g in layout[id(out_tensor)]:
      groups.freeze(g)  # an output's channels (classes, box coordinates, ...) are never pruned
  graph = _describe(model, records, groups, output_names)
  if graph.outputs != [graph.nodes[-1]["name"]]:
    return graph   # several outputs: each head is read as it is (no activation taken off)
  graph = _split_output_activation(graph)
  graph.outputs = [graph.nodes[-1]["name"]]
  return graph


#: The activations a classifier may end with that `read_keras_model` reads off as the logits' activation.
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid")


def _split_output_activation(graph):
  """`graph` with a final softmax/sigmoid taken off its nodes and recorded in `output_activation`.

  Training and search need logits (`from_logits=True`), so the classifier is
  read up to its pre-activation: a last `Dense(activation="softmax")` becomes
  linear, a last `Softmax` / `Activation("softmax")` layer is dropped, and
  `output_layer` keeps the layer that puts the activation back
  (`tf_metaprune.rebuild(..., output_activation=True)`).
  """
  nodes, last = graph.nodes, graph.nodes[-1]
  config = (last["layer"] or {}).get("config", {})
  if last["op"] == "act" and len(nodes) > 2 and tuple(last["inputs"]) == (nodes[-2]["name"],):
    kind = last["layer"].get("class_name")
    activation = "softmax" if kind == "Softmax" else (config.get("activation") if kind == "Activation" else None)
    if activation in OUTPUT_ACTIVATIONS:
      graph.nodes, graph.output_activation, graph.output_layer = nodes[:-1], activation, last["layer"]
  elif last["op"] != "act" and config.get("activation") in OUTPUT_ACTIVATIONS:
    activation = config["activation"]
    layer = copy.deepcopy(last["layer"])
    layer["config"]["activation"] = "linear"
    graph.nodes = nodes[:-1] + [dict(last, layer=layer)]
    graph.output_activation = activation
    graph.output_layer = _serialize(keras.layers.Activation(activation, name=f"{last['name']}_{activation}"))
  return graph


def _describe(model, records, groups, output_names):
  """Turns the grouped records into genes and node fields."""
  genes, gene_of_root, nodes = [], {}, []
  for op, optype, in_names, fields, out_group, out in records:
    node_fields = dict(fields)
    is_input = ops.get(optype).is_input
    layer = node_fields.pop("layer", None) or (None if is_input else _serialize(op))
    if is_input:
      node_fields["out"] = int(out.shape[-1])
    elif out_group is not None:
      root = groups.find(out_group)
      if groups.fixed[root]:
        node_fields["out"] = groups.width[root]
      else:
        if root not in gene_of_root:
          gene_of_root[root] = groups.first[root]
          genes.append((groups.first[root], groups.width[root]))
        node_fields["out"] = gene_of_root[root]
    nodes.append(dict(name=op.name, op=optype, inputs=tuple(in_names), bn=False,
                      layer=layer, **node_fields))
  if not genes:
    raise ValueError(f"model {model.name!r} has no prunable channels: every channel group touches the input, "
                     "the classifier output or a Flatten/Reshape; there is nothing to search")
  return KerasGraph(model.name, tuple(model.inputs[0].shape[1:]), int(model.outputs[0].shape[-1]), genes, nodes,
                    outputs=output_names)
