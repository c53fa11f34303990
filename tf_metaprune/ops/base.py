"""The op registry, the `Op` base class and the helpers every op module shares.

See `tf_metaprune.ops` for what an op is and how to add one.
"""

import copy
from typing import Dict, Tuple

import keras
import numpy as np
import tensorflow as tf

L = keras.layers

_REGISTRY: Dict[str, "Op"] = {}


def register(cls):
  """Class decorator: registers one instance of an `Op` subclass under `cls.name`."""
  if not cls.name or cls.name in _REGISTRY:
    raise ValueError(f"op {cls.name!r} ({cls.__name__}) has no name or is registered twice")
  _REGISTRY[cls.name] = cls()
  return cls


def get(name) -> "Op":
  """The registered op called `name`.

  Raises:
    ValueError: naming the registered ops, for an unknown name.
  """
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(f"op={name!r} is not one of {names()}; register an Op subclass with "
                     "@tf_metaprune.ops.register to add one") from None


def names() -> Tuple[str, ...]:
  """All registered op names, in registration order."""
  return tuple(_REGISTRY)


def weight_op_names() -> Tuple[str, ...]:
  """Ops whose node owns weights the PruningNet generates."""
  return tuple(n for n, op in _REGISTRY.items() if op.weight_op)


def for_keras_layer(layer):
  """The op that reads Keras layer (or Keras operation) `layer`, or None.

  Asks each op's `reads(layer)` (by default: the exact type is one of its
  `keras_types`), the most recently registered first, so an op registered
  from user code can take over a layer type from a built-in one.
  """
  for op in reversed(tuple(_REGISTRY.values())):
    if op.reads(layer):
      return op
  return None


def supported_keras_layers() -> str:
  """The readable list of Keras layers `from_keras_model` reads (for error messages)."""
  return ", ".join(op.keras_doc for op in _REGISTRY.values() if op.keras_doc)


# ---- small shared helpers ------------------------------------------------------------------------


def pair(v) -> Tuple[int, int]:
  """(h, w) of an int or a pair."""
  return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def compact(p):
  """An (h, w) pair as an int when both are equal."""
  return p[0] if p[0] == p[1] else tuple(p)


def window_out(size, kernel, stride, dilation, padding):
  """Output length of a conv/pool window along one axis (Keras' rule)."""
  if padding == "same":
    return -(-size // stride)
  effective = dilation * (kernel - 1) + 1
  return (size - effective) // stride + 1


def merge_fixed(sources):
  """A concatenation's layout: adjacent fixed widths are one fixed width (never pruned, never sliced)."""
  out = []
  for kind, v in sources:
    if kind == "fixed" and out and out[-1][0] == "fixed":
      out[-1] = ("fixed", out[-1][1] + v)
    else:
      out.append((kind, v))
  return tuple(out)


def tf_activation(y, name):
  """relu / relu6 / identity as TensorFlow ops (PruningNet, MaskedNet)."""
  if name == "relu":
    return tf.nn.relu(y)
  if name == "relu6":
    return tf.nn.relu6(y)
  return y


def keras_activation(y, activation, node_name=None):
  """relu / relu6 / identity as Keras layers, named "<node>_relu(6)" when `node_name` is given."""
  if activation == "relu":
    return L.ReLU(name=None if node_name is None else node_name + "_relu")(y)
  if activation == "relu6":
    return L.ReLU(max_value=6.0, name=None if node_name is None else node_name + "_relu6")(y)
  return y


def _window(layer):
  kernel = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
  strides = layer.strides if layer.strides is not None else kernel
  return pair(kernel), pair(strides)


def _single(x):
  return x[0] if len(x) == 1 else x


# ---- the base class ------------------------------------------------------------------------------


class Op:
  """What one op means. Subclass it, set the attributes, override what differs, `@register` it.

  The defaults describe a parameter-free layer that keeps its input's channels
  and spatial size (batch norm aside, most layers read from a Keras model are
  like that), so a new op overrides only what it changes.

  Attributes:
    name: the `Node.op` string.
    is_input: the node is the image input (the graph's source: no inputs,
      no layer of its own); `Node.is_input` and `SearchSpace.layer_nodes`
      read it, so no caller tests the op's name.
    weight_op: the node owns weights the PruningNet generates.
    multi_input: the node joins several inputs (otherwise exactly one).
    keras_types: Keras layer classes (exact types) `from_keras_model` reads
      into this op; `keras_doc` is how the "supported layers" message names
      them.
    windowed: a conv or pool window (output size by Keras' rule, checked
      against the input size).
    latency_role: "table" -- the node has its own latency-table entries, one
      per (cin, cout) (`LatencyTable.required_keys` reads this attribute);
      "folded" (the default) -- its cost depends only on its width, so it is
      timed per width with its own one-layer model and added to the entry of
      the node that sets that width (at full width into the table's overhead
      when its width is fixed or joins several genes); "free" -- not timed:
      the converter fuses it into its producer (batch norm, ReLU after a
      conv), or it is no work (dropout, a reshape). An op a latency table
      does not know is therefore timed, never silently free.

  Methods, by the module that calls them (`space` is the `SearchSpace`, `node`
  the `Node`):
    * space.py: `layout(space, node, in_layouts, out_source)` -- the output's
      channel layout, a tuple of ("gene", i) / ("fixed", n) sources;
      `out_spatial(space, node, in_spatial)` -- output (H, W), or None for a
      flat vector.
    * flops.py: `count_terms(space, node, one)` -> (flops_terms,
      params_terms), lists of (coef, a, b) over the extended channel vector
      (`one` is the index of the constant 1).
    * keras_graph.py: `reads(layer)` -- whether the op reads that Keras layer
      or operation; `read_keras(layer, ins, out, in_lay, groups)` -> (layout
      of group ids, extra `Node` fields, the group the node starts or None).
      A "layer" entry in the fields replaces the serialized Keras layer the
      node keeps (e.g. a Keras op applied to a tensor, with its constants).
    * pruning_net.py: `build_pruning(net, node)` creates the node's generators
      and width batch norms through `net.add_generator` / `net.add_width_bn`;
      `pruning_call(net, node, inputs, call)` runs it (`call` holds the
      structure's encodings, widths, `in_index` and `batch_norm`);
      `generated_weights(net, node, gen)` returns its sliced arrays (dict) or
      None.
    * rebuild.py: `rebuild(node, inputs, channels, weights, bn_momentum)` ->
      (output tensor, [(Keras layer, arrays to set)]).
    * search/pas.py: `build_masked(net, node)`, `masked_call(net, node,
      inputs, training, mask)` and `masked_export(net, node, model, in_index,
      out_index)` (copies the kept channels' weights into the plain model).
    * latency tables (tf_metaprune.latency_lut), every op declares its own
      latency entry: `latency_kind(space, node)` -- "table", "folded" or
      "free" for this node (default `latency_role`; batch norm and
      activations are free only right after the layer the converter fuses
      them into); `latency_signature(space, node)` -- the fields of the
      `LayerSignature` (without cin/cout) of the one-layer model that times
      it (default: its input size, window, input count and its own Keras
      layer); `fuses_activation` -- a batch norm / ReLU after this op costs
      nothing (conv, dense, add); `latency_model(sig)` -- that one-layer Keras model;
      `profile_kinds(space, node)` -- the kinds of the rows the node shows in
      a whole model's TFLite op profile, in order ("weights", "add", "mul",
      "pool", "concat", "resize", "activation", "pad", "reshape", "other"), ()
      when fused away (default: () if free, else ("other",)).

    * pretrained.py (a trained model's weights, in `generated_weights`
      form): `read_weights(node, model)` reads the node's full-width arrays
      from a Keras model; `take_channels(node, weights, in_index, out_index)`
      keeps (and orders) given input / output channels -- a permutation and
      a slice are both takes -- using `weight_axes(node)`;
      `filter_norms(node, weights)` and `bn_scale(node, weights)` give the
      per-output-channel L1 norms / BN gamma the importance is read from;
      `set_pruning_weights(net, node, weights)` loads full-width arrays into
      the PruningNet's base kernels and batch norms. `holds_weights` says
      whether the op has any.

  Per-op methods that receive a node and its Keras layer's weights (the
  arrays of `layer.get_weights()`, in that order) use `channel_axes(node)`:
  for each array, the axis holding input channels and the axis holding output
  channels (None when there is none). `select_channels` keeps given channels
  with it; a channel permutation can use the same axes.
  """

  name = None
  is_input = False
  weight_op = False
  holds_weights = False
  multi_input = False
  keras_types = ()
  keras_doc = ""
  latency_role = "folded"
  fuses_activation = False  # TFLite fuses a following batch norm / ReLU(6) into this op (conv, dense, add)
  windowed = False   # a conv/pool window: output size by Keras' rule (see `_window_spatial`)

  def reads(self, layer):
    """Whether this op reads Keras layer (or operation) `layer` (default: its exact type is in `keras_types`)."""
    return type(layer) in self.keras_types

  # ---- space.py ----------------------------------------------------------------------------
  def layout(self, space, node, in_layouts, out_source):
    """Output channel layout (default: the input's)."""
    del space, node, out_source
    return in_layouts[0]

  def out_spatial(self, space, node, in_spatial):
    """Output (H, W) or None (default: a window's output for `windowed` ops, else the input's)."""
    if self.windowed:
      return self._window_spatial(space, node, in_spatial[0])
    return in_spatial[0]

  def _feature_map(self, node, x):
    if x is None:
      raise ValueError(f"node {node.name!r} ({node.op}) needs a feature map but comes after global pooling")
    return x

  def _window_spatial(self, space, node, x):
    """Output (H, W) of a conv/pool window on an (H, W) input, checking the input is large enough."""
    x = self._feature_map(node, x)
    (kh, kw), (sh, sw), (dh, dw) = node.kernel_hw, node.strides_hw, pair(node.dilation)
    ih, iw = x
    if max(sh, sw) > 1 and min(ih, iw) < max(sh, sw):
      raise ValueError(
          f"input_shape={space.input_shape} is too small for {space.name!r}: node {node.name!r} "
          f"(stride {node.strides}) receives a {ih}x{iw} feature map; use a larger input "
          "(or the model's small_input=True option, which removes early strides)")
    out = (window_out(ih, kh, sh, dh, node.padding), window_out(iw, kw, sw, dw, node.padding))
    if min(out) < 1:
      raise ValueError(f"input_shape={space.input_shape} is too small for {space.name!r}: node {node.name!r} "
                       f"({node.op}, kernel {node.kernel_size}, padding {node.padding!r}) receives a {ih}x{iw} "
                       "feature map; use a larger input")
    return out

  # ---- flops.py ----------------------------------------------------------------------------
  def count_terms(self, space, node, one):
    """(flops_terms, params_terms) of the node (default: none)."""
    del space, node, one
    return [], []

  # ---- keras_graph.py ------------------------------------------------------------------------
  def read_keras(self, layer, ins, out, in_lay, groups):
    """(layout of group ids, extra Node fields, group started here or None); default: follows its input."""
    del layer, ins, out, groups
    return in_lay[0], {}, None

  # ---- pruning_net.py ------------------------------------------------------------------------
  def build_pruning(self, net, node):
    """Creates the node's PruningNet layers (default: its own Keras layer, parameter-free)."""
    if node.layer is not None:
      net.op_layers[node.name] = keras.layers.deserialize(node.layer)

  def pruning_call(self, net, node, inputs, call):
    """The node's output in the PruningNet forward pass."""
    del call
    return net.op_layers[node.name](inputs[0], training=False)

  def generated_weights(self, net, node, gen):
    """The arrays a structure runs this node with (dict), or None for a node without weights."""
    del net, node, gen
    return None

  # ---- rebuild.py ----------------------------------------------------------------------------
  def keras_layer(self, node, channels):
    """The Keras layer a node was read from, re-created at `channels` output channels."""
    del channels
    return keras.layers.deserialize(copy.deepcopy(node.layer))

  def keras_weights(self, node, w):
    """A node's generated arrays (`generated_weights`) in its Keras layer's `set_weights` order."""
    del node
    return [w["kernel"]] + ([w["bias"]] if "bias" in w else [])

  def rebuild(self, node, inputs, channels, weights, bn_momentum):
    """(output, [(layer, arrays)]) of the node in the plain Keras model.

    The default re-creates the user's layer of a node read from a Keras model;
    built-in ops override it.
    """
    del bn_momentum
    if node.layer is None:
      raise ValueError(f"node {node.name!r} (op {node.op!r}) has no plain Keras form without its Keras layer")
    layer = self.keras_layer(node, channels)
    y = layer(inputs if self.multi_input else inputs[0])
    to_copy = [(layer, self.keras_weights(node, weights))] if weights is not None else []
    return y, to_copy

  # ---- search/pas.py -------------------------------------------------------------------------
  def build_masked(self, net, node):
    """Creates the node's full-width plain layers in a MaskedNet (default: its own Keras layer)."""
    if node.layer is not None:
      net.add_node_layers(node, [self.keras_layer(node, net.space.max_channels(node.name))])

  def masked_call(self, net, node, inputs, training, mask):
    """The node's output in the MaskedNet; `mask(y, node_name)` masks a node's output channels."""
    layer = net.node_layers[net.node_index[node.name]]
    y = layer(inputs if self.multi_input else inputs[0], training=training)
    has_gene = any(kind == "gene" for kind, _ in net.space.layout[node.name])
    return mask(y, node.name) if has_gene else y

  def masked_export(self, net, node, model, in_index, out_index):
    """Copies the kept channels (`in_index`, `out_index`: full-width positions) into the plain model."""
    i = net.node_index.get(node.name)
    if i is None:
      return
    arrays = net.node_layers[i].get_weights()
    if arrays:
      model.get_layer(node.name).set_weights(self.select_channels(node, arrays, in_index, out_index))

  def channel_axes(self, node):
    """Per array of the node's Keras layer `get_weights()`: (input-channel axis, output-channel axis)."""
    del node
    return ()

  def select_channels(self, node, arrays, in_index, out_index):
    """`arrays` (the Keras layer's weights) with only the channels at `in_index` / `out_index` kept."""
    out = []
    for a, (ai, ao) in zip(arrays, self.channel_axes(node)):
      if ai is not None:
        a = np.take(a, in_index, axis=ai)
      if ao is not None:
        a = np.take(a, out_index, axis=ao)
      out.append(a)
    return out

  # ---- pretrained.py: a trained model's channels --------------------------------------------
  def weight_axes(self, node):
    """Per array of the node's weights (`generated_weights` form): name -> (input axis, output axis)."""
    del node
    return {}

  def take_channels(self, node, weights, in_index, out_index):
    """`weights` (`generated_weights` form) with the channels at `in_index` / `out_index`, in that order.

    A channel permutation (every index, reordered) and a slice to a structure
    (the kept indices) are both such takes, so one rule per op serves both.
    """
    out = {}
    for key, (ai, ao) in self.weight_axes(node).items():
      if key not in weights:
        continue
      a = weights[key]
      if ai is not None:
        a = np.take(a, in_index, axis=ai)
      if ao is not None:
        a = np.take(a, out_index, axis=ao)
      out[key] = a
    return out

  def read_weights(self, node, model):
    """The node's full-width arrays (`generated_weights` form) in trained Keras `model`, or None."""
    del node, model
    return None

  def filter_norms(self, node, weights):
    """L1 norm of each output filter (float [cout]) if the node produces its channels, else None."""
    del node, weights
    return None

  def bn_scale(self, node, weights):
    """The batch-norm gamma over the node's output channels, or None if it has no learned scale."""
    del node, weights
    return None

  def set_pruning_weights(self, net, node, weights):
    """Loads full-width `weights` into the node's PruningNet layers (generators start as weight sharing)."""
    del net, node, weights

  # ---- latency tables ------------------------------------------------------------------------
  def latency_kind(self, space, node):
    """How this node is timed: "table", "folded" or "free" (see `latency_role`)."""
    del space, node
    return self.latency_role

  def latency_signature(self, space, node):
    """The `LayerSignature` fields (all but cin/cout) of the one-layer model that times `node`.

    Default: the node's own Keras layer (name dropped, so identical layers
    share one timing) at its input size ((0, 0) for a flat input), with its
    window and number of inputs. Override to time a built-in node (no Keras
    layer) or to record more of what decides its latency.
    """
    in_hw = space.in_spatial.get(node.name)
    return {"op": node.op, "in_hw": (0, 0) if in_hw is None else tuple(in_hw), "kernel_size": node.kernel_size,
            "strides": node.strides, "num_inputs": len(node.inputs) if self.multi_input else 1,
            "layer": layer_without_name(node)}

  def profile_kinds(self, space, node):
    """The kinds of the TFLite op-profile rows this node becomes, in order (see the class docstring)."""
    return () if self.latency_kind(space, node) == "free" else ("other",)

  def latency_model(self, sig):
    """The one-layer Keras model of `LayerSignature` `sig` (of this op)."""
    if sig.layer is None:
      raise ValueError(f"LayerSignature(op={sig.op!r}) has no one-layer model: op {sig.op!r} is not timed")
    h, w = sig.in_hw
    shape = (sig.cin,) if sig.in_hw == (0, 0) else (h, w, sig.cin)
    node_like = _LayerNode(sig.op, sig.layer)
    inputs = [keras.Input(shape) for _ in range(sig.num_inputs)]
    y = self.keras_layer(node_like, sig.cout)(_single(inputs))
    return keras.Model(_single(inputs), y, name=sig.name)


def layer_without_name(node):
  """A node's serialized Keras layer without its name (identical layers share a timing), or None."""
  if node.layer is None:
    return None
  return {**node.layer, "config": {k: v for k, v in node.layer["config"].items() if k != "name"}}


def fused_into_producer(space, node):
  """True if the converter fuses this one-input node into what feeds it: walking back through nodes
  that are themselves free (a batch norm already folded), it reaches an op whose `fuses_activation`
  is set (a conv folds batch norm and ReLU/ReLU6, an add a ReLU)."""
  producer = space.node_by_name[node.inputs[0]] if node.inputs else None
  while producer is not None:
    op = get(producer.op)
    if op.fuses_activation:
      return True
    if not producer.inputs or op.multi_input or op.latency_kind(space, producer) != "free":
      return False
    producer = space.node_by_name[producer.inputs[0]]
  return False


class _LayerNode:
  """The fields of a `Node` a layer re-creation needs (for latency-table signatures)."""

  def __init__(self, op, layer, target_shape=None):
    self.op, self.layer, self.target_shape = op, layer, target_shape


def _geometry(space, node):
  """(input layout indices, output layout indices, output positions H*W, kernel taps kh*kw) of a conv node."""
  (oh, ow), (kh, kw) = space.spatial[node.name], node.kernel_hw
  return space.layout_indices(node.inputs[0]), space.layout_indices(node.name), oh * ow, kh * kw


def _width_bn_weights(net, node, gen):
  """gamma/beta/moving statistics of a node's WidthBatchNorm at the structure's width."""
  bn = net.bn_layers[net.bn_of[node.name]]
  g = gen.space.gene_of(node.name)
  idx = gen.index(node.name)
  gamma, beta = bn.affine_params(gen.structure[g] if g is not None else 0, gen.cout,
                                 None if idx is None else tf.constant(idx))
  cout = gen.cout
  take = (lambda v: v[:cout]) if idx is None else (lambda v: v[idx])
  return {"gamma": np.ones(cout, np.float32) if gamma is None else gamma.numpy(),
          "beta": np.zeros(cout, np.float32) if beta is None else beta.numpy(),
          "moving_mean": take(bn.moving_mean.numpy()), "moving_variance": take(bn.moving_variance.numpy())}


_BN_KEYS = ("gamma", "beta", "moving_mean", "moving_variance")
_VECTOR_AXES = {k: (None, 0) for k in ("bias",) + _BN_KEYS}


def _find_layer(model, name):
  """Layer `name` of `model` or of a model nested in it (from_keras_model flattens nested models), or None."""
  for layer in model.layers:
    if layer.name == name:
      return layer
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      found = _find_layer(layer, name)
      if found is not None:
        return found
  return None


def _keras_layer_of(model, name, node):
  layer = _find_layer(model, name)
  if layer is None:
    raise ValueError(f"model {model.name!r} has no layer {name!r} (of space node {node.name!r}, op {node.op}); pass "
                     "the model the space was made from (SearchSpace.from_keras_model(model), or "
                     "rebuild(space, space.largest()) for a built-in family)")
  return layer


def _read_bn(layer, config):
  """gamma, beta, moving statistics of a Keras BatchNormalization (ones / zeros where it has no scale / center)."""
  arrays = iter(np.asarray(a, np.float32) for a in layer.get_weights())
  n = int(layer.get_weights()[-1].shape[0])
  gamma = next(arrays) if config.get("scale", True) else np.ones(n, np.float32)
  beta = next(arrays) if config.get("center", True) else np.zeros(n, np.float32)
  return {"gamma": gamma, "beta": beta, "moving_mean": next(arrays), "moving_variance": next(arrays)}


def _set_width_bn(net, node, w):
  """Loads a node's full-width batch-norm arrays into its WidthBatchNorm (every switchable row alike)."""
  bn = net.bn_layers[net.bn_of[node.name]]
  if bn.affine:
    rows = bn.gamma.shape[0]
    bn.gamma.assign(np.tile(w["gamma"][None], (rows, 1)))
    bn.beta.assign(np.tile(w["beta"][None], (rows, 1)))
  elif not (np.allclose(w["gamma"], 1.0) and np.allclose(w["beta"], 0.0)):
    raise ValueError(f"batch norm of node {node.name!r} has a learned scale/shift but the PruningNet's is not affine "
                     "(bn_affine=False, or a BatchNormalization with only one of center/scale); use bn_affine=True")
  bn.moving_mean.assign(w["moving_mean"])
  bn.moving_variance.assign(w["moving_variance"])


def _set_base_kernel(layer, kernel):
  layer.base_kernel.assign(kernel)
  if layer.hidden_units:   # a zero generator output: plain weight sharing of `kernel`
    layer.gen_out_kernel.assign(np.zeros(layer.gen_out_kernel.shape, np.float32))


# ---- the input ---------------------------------------------------------------------------------


@register
class Input(Op):
  """The image input: its channels are fixed."""
  name = "input"
  is_input = True
  keras_types = (L.InputLayer,)
  keras_doc = "InputLayer"
  latency_role = "free"

  def layout(self, space, node, in_layouts, out_source):
    return (("fixed", space.input_shape[-1]),)

  def read_keras(self, layer, ins, out, in_lay, groups):
    if len(out.shape) != 4:
      raise ValueError(f"input {layer.name!r} has shape {tuple(out.shape)}; from_keras_model reads image models "
                       "with (batch, height, width, channels) inputs")
    if any(d is None for d in out.shape[1:]):
      raise ValueError(f"input {layer.name!r} has shape {tuple(out.shape)} with unknown sizes; FLOPs depend on "
                       "the image size: build the model with a fixed input, e.g. keras.Input((32, 32, 3)) or "
                       "keras.applications.MobileNetV2(input_shape=(32, 32, 3), ...)")
    return (groups.new(out.shape[-1], layer.name, fixed=True),), {}, None
