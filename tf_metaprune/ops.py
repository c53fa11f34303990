"""The op registry: everything one kind of search-space node means, in one class.

A `SearchSpace` is a graph of `Node`s; `node.op` names what the node does.
What that means -- its output's channel layout and spatial size, its FLOPs
and parameters, its call in the `PruningNet` and the weights it generates
there, the plain Keras layers `rebuild` makes of it, its call in PaS's
`MaskedNet`, the one-layer model a latency table times, and which Keras
layer(s) `SearchSpace.from_keras_model` reads into it -- is written once, in
one `Op` subclass, and every module looks it up here:

  >>> from tf_metaprune import ops
  >>> ops.get("conv").weight_op, ops.get("add").multi_input
  (True, True)
  >>> "upsample" in ops.names()
  True

Adding an op is one class decorated with `@register` (and its tests): see
`UpSample` at the end of this file, which was added that way. The design
follows Torch-Pruning's `pruner/function.py` (one pruner class per layer type,
registered in `PrunerBox`) and tfmot's `prune_registry.py`.

This module imports no other tf_metaprune module but `layers`: spaces,
counters, nets and readers come in as arguments, so nothing here can form an
import cycle.
"""

import copy
import warnings
from typing import Dict, Tuple

import keras
import numpy as np
import tensorflow as tf

from tf_metaprune import layers as tfmp_layers

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
  """The op that reads Keras layer `layer` (by exact type), or None."""
  kind = type(layer)
  for op in _REGISTRY.values():
    if kind in op.keras_types:
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
    weight_op: the node owns weights the PruningNet generates.
    multi_input: the node joins several inputs (otherwise exactly one).
    keras_types: Keras layer classes (exact types) `from_keras_model` reads
      into this op; `keras_doc` is how the "supported layers" message names
      them.
    windowed: a conv or pool window (output size by Keras' rule, checked
      against the input size).
    latency_role: "table" -- the node has its own latency-table entries, one
      per (cin, cout); "folded" -- its cost depends only on its width, so it is
      timed per width and added to the entry of the node that sets that
      width; "free" -- not timed (fused into its producer by the converter, or
      negligible).

  Methods, by the module that calls them (`space` is the `SearchSpace`, `node`
  the `Node`):
    * space.py: `layout(space, node, in_layouts, out_source)` -- the output's
      channel layout, a tuple of ("gene", i) / ("fixed", n) sources;
      `out_spatial(space, node, in_spatial)` -- output (H, W), or None for a
      flat vector.
    * flops.py: `count_terms(space, node, one)` -> (flops_terms,
      params_terms), lists of (coef, a, b) over the extended channel vector
      (`one` is the index of the constant 1).
    * keras_graph.py: `read_keras(layer, ins, out, in_lay, groups)` -> (layout
      of group ids, extra `Node` fields, the group the node starts or None).
    * pruning_net.py: `build_pruning(net, node)` creates the node's generators
      and width batch norms through `net._add_generator` / `net._add_width_bn`;
      `pruning_call(net, node, inputs, call)` runs it (`call` holds the
      structure's encodings, widths, `in_index` and `batch_norm`);
      `generated_weights(net, node, gen)` returns its sliced arrays (dict) or
      None.
    * rebuild.py: `rebuild(node, inputs, channels, weights, bn_momentum)` ->
      (output tensor, [(Keras layer, arrays to set)]).
    * search/pas.py: `build_masked(net, node)`, `masked_call(net, node,
      inputs, training, mask)` and `masked_export(net, node, model, in_index,
      out_index)` (copies the kept channels' weights into the plain model).
    * latency tables: `latency_model(sig)` -- the one-layer Keras model of a
      `LayerSignature` of this op.

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
  weight_op = False
  holds_weights = False
  multi_input = False
  keras_types = ()
  keras_doc = ""
  latency_role = "free"
  windowed = False   # a conv/pool window: output size by Keras' rule (see `_window_spatial`)

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
      net._op_layers[node.name] = keras.layers.deserialize(node.layer)  # pylint: disable=protected-access

  def pruning_call(self, net, node, inputs, call):
    """The node's output in the PruningNet forward pass."""
    del call
    return net._op_layers[node.name](inputs[0], training=False)  # pylint: disable=protected-access

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
      net._add_node_layers(node, [self.keras_layer(node, net.space.max_channels(node.name))])  # pylint: disable=protected-access

  def masked_call(self, net, node, inputs, training, mask):
    """The node's output in the MaskedNet; `mask(y, node_name)` masks a node's output channels."""
    layer = net.node_layers[net._index[node.name]]  # pylint: disable=protected-access
    y = layer(inputs if self.multi_input else inputs[0], training=training)
    has_gene = any(kind == "gene" for kind, _ in net.space.layout[node.name])
    return mask(y, node.name) if has_gene else y

  def masked_export(self, net, node, model, in_index, out_index):
    """Copies the kept channels (`in_index`, `out_index`: full-width positions) into the plain model."""
    i = net._index.get(node.name)  # pylint: disable=protected-access
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
  bn = net.bn_layers[net._bn_of[node.name]]  # pylint: disable=protected-access
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


def _keras_layer_of(model, name, node):
  try:
    return model.get_layer(name)
  except ValueError:
    raise ValueError(f"model {model.name!r} has no layer {name!r} (of space node {node.name!r}, op {node.op}); pass "
                     "the model the space was made from (SearchSpace.from_keras_model(model), or "
                     "rebuild(space, space.largest()) for a built-in family)") from None


def _read_bn(layer, config):
  """gamma, beta, moving statistics of a Keras BatchNormalization (ones / zeros where it has no scale / center)."""
  arrays = iter(np.asarray(a, np.float32) for a in layer.get_weights())
  n = int(layer.get_weights()[-1].shape[0])
  gamma = next(arrays) if config.get("scale", True) else np.ones(n, np.float32)
  beta = next(arrays) if config.get("center", True) else np.zeros(n, np.float32)
  return {"gamma": gamma, "beta": beta, "moving_mean": next(arrays), "moving_variance": next(arrays)}


def _set_width_bn(net, node, w):
  """Loads a node's full-width batch-norm arrays into its WidthBatchNorm (every switchable row alike)."""
  bn = net.bn_layers[net._bn_of[node.name]]  # pylint: disable=protected-access
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


# ---- the ops -------------------------------------------------------------------------------------


@register
class Input(Op):
  """The image input: its channels are fixed."""
  name = "input"
  keras_types = (L.InputLayer,)
  keras_doc = "InputLayer"

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


class _WeightOp(Op):
  """Shared parts of the ops with generated weights (conv, dwconv, sepconv, dense)."""
  weight_op = True
  holds_weights = True
  latency_role = "table"
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
    if node.layer is None and node.op != "dense" and node.bn:   # a built-in family's conv + its BN layer
      w.update(_read_bn(_keras_layer_of(model, node.name + "_bn", node), {}))
    return w

  def filter_norms(self, node, weights):
    kernel = weights[self._kernel_keys[-1]]
    return np.abs(kernel.reshape(-1, kernel.shape[-1])).sum(axis=0)

  def bn_scale(self, node, weights):
    return weights["gamma"] if (node.layer is None and "gamma" in weights) else None

  def set_pruning_weights(self, net, node, weights):
    layer = net.generator_layers[net._layer_of[node.name]]  # pylint: disable=protected-access
    _set_base_kernel(layer, weights[self._kernel_keys[-1]])
    if getattr(layer, "use_bias", False):
      layer.bias.assign(weights.get("bias", np.zeros(layer.bias.shape, np.float32)))
    if node.name in net._bn_of:  # pylint: disable=protected-access
      _set_width_bn(net, node, weights)

  def _implied_params(self, node, couts, one):
    if node.layer is None and node.op != "dense" and node.bn:
      return [(4, co, one) for co in couts]  # the implied BN: gamma, beta, mean, var
    if node.has_bias:
      return [(1, co, one) for co in couts]  # bias
    return []

  def _common(self, net, node):
    common = dict(hidden_units=net.hidden_units)
    if node.layer is not None:
      common.update(use_bias=node.has_bias)
      if node.op != "dense":
        common.update(padding=node.padding, dilation_rate=node.dilation)
    return common

  def build_pruning(self, net, node):
    if node.layer is not None:
      net._activations[node.name] = keras.activations.get(node.layer["config"].get("activation"))  # pylint: disable=protected-access
    self._build_generators(net, node, net._layout_rows(node), net.space.max_channels(node.inputs[0]),  # pylint: disable=protected-access
                           net.space.max_channels(node.name), self._common(net, node))
    if node.op != "dense" and node.bn and node.layer is None:
      net._add_width_bn(node, affine=net.bn_affine, epsilon=1e-3, name=node.name + "_bn")  # pylint: disable=protected-access

  def _build_generators(self, net, node, rows, cin_max, cout_max, common):
    raise NotImplementedError

  def pruning_call(self, net, node, inputs, call):
    y = self._generated_call(net, node, inputs[0], call)
    if node.layer is not None:
      return net._activations[node.name](y)  # pylint: disable=protected-access
    if node.op != "dense":
      if node.bn:
        y = call.batch_norm(y, node.name)
      y = tf_activation(y, node.activation)
    return y

  def _generated_call(self, net, node, x, call):
    li = net._layer_of[node.name]  # pylint: disable=protected-access
    layer = net.generator_layers[li]
    if call.in_index is not None:
      return layer(x, encoding=call.encodings[li], out_channels=call.widths[li], in_index=call.in_index)
    return layer(x, encoding=call.encodings[li], out_channels=call.widths[li])

  def generated_weights(self, net, node, gen):
    li = net._layer_of[node.name]  # pylint: disable=protected-access
    layer = net.generator_layers[li]
    w = self._generated_kernels(net, node, gen, layer, tf.constant(gen.layout_ratio[net._enc_index[li]]))  # pylint: disable=protected-access
    if node.op != "dwconv" and getattr(layer, "use_bias", False):
      w["bias"] = layer.bias.numpy()[:gen.cout]
    if node.op != "dense" and node.bn and node.layer is None:
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
    i = net._index[node.name]  # pylint: disable=protected-access
    src = net.node_layers[i].get_weights()
    model.get_layer(node.name).set_weights(self._builtin_export_arrays(node, src, cin, cout))
    if node.op != "dense" and node.bn:
      bn = net.node_layers[i + 1].get_weights()
      model.get_layer(node.name + "_bn").set_weights([w[cout] for w in bn])

  def masked_export(self, net, node, model, in_index, out_index):
    if node.layer is None:
      self._builtin_masked_export(net, node, model, in_index, out_index)
    else:
      super().masked_export(net, node, model, in_index, out_index)

  def _builtin_conv_layer(self, node, channels, name=None):
    """Conv2D / DepthwiseConv2D of a built-in (not read from Keras) conv node, "same" padding."""
    if node.op == "conv":
      return L.Conv2D(channels, node.kernel_size, strides=node.strides, padding="same", use_bias=not node.bn,
                      name=name)
    return L.DepthwiseConv2D(node.kernel_size, strides=node.strides, padding="same", use_bias=not node.bn,
                             name=name)

  def build_masked(self, net, node):
    if node.layer is not None:
      return super().build_masked(net, node)
    layers = [self._builtin_masked_layer(net, node)]
    if node.op != "dense" and node.bn:
      layers.append(L.BatchNormalization(momentum=net.bn_momentum, epsilon=1e-3, name=node.name + "_bn"))
    net._add_node_layers(node, layers)  # pylint: disable=protected-access

  def _builtin_masked_layer(self, net, node):
    return self._builtin_conv_layer(node, net.space.max_channels(node.name), name=node.name)

  def masked_call(self, net, node, inputs, training, mask):
    if node.layer is not None:
      return super().masked_call(net, node, inputs, training, mask)
    i = net._index[node.name]  # pylint: disable=protected-access
    y = net.node_layers[i](inputs[0])
    if node.op != "dense" and node.bn:
      y = net.node_layers[i + 1](y, training=training)
    if node.op != "dense":
      y = tf_activation(y, node.activation)
      if net.space.gene_of(node.name) is not None:
        y = mask(y, node.name)
    return y

  def rebuild(self, node, inputs, channels, weights, bn_momentum):
    if node.layer is not None:
      return super().rebuild(node, inputs, channels, weights, bn_momentum)
    layer = self._builtin_conv_layer(node, channels, name=node.name)
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

  def latency_model(self, sig):
    if sig.layer is not None:
      return super().latency_model(sig)
    h, w = sig.in_hw
    x = keras.Input((h, w, sig.cin))
    if sig.op == "conv":
      y = L.Conv2D(sig.cout, sig.kernel_size, strides=sig.strides, padding="same", use_bias=not sig.bn)(x)
    else:
      y = L.DepthwiseConv2D(sig.kernel_size, strides=sig.strides, padding="same", use_bias=not sig.bn)(x)
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
    net._add_generator(tfmp_layers.GeneratedConv2D(cin_max, cout_max, node.kernel_size, node.strides,  # pylint: disable=protected-access
                                                   name=node.name, **common), node.name, net._layer_of, rows)  # pylint: disable=protected-access

  def _builtin_export_arrays(self, node, src, cin, cout):
    return [src[0][:, :, cin][:, :, :, cout]] + ([] if node.bn else [src[1][cout]])


@register
class DepthwiseConv(_WeightOp):
  """A depthwise conv: one k x k filter per channel; follows its input's width."""
  windowed = True
  name = "dwconv"
  keras_types = (L.DepthwiseConv2D,)
  keras_doc = "DepthwiseConv2D"

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
    net._add_generator(tfmp_layers.GeneratedDepthwiseConv2D(cout_max, node.kernel_size, node.strides,  # pylint: disable=protected-access
                                                            name=node.name, **common),
                       node.name, net._layer_of, rows)  # pylint: disable=protected-access

  def _generated_call(self, net, node, x, call):
    li = net._layer_of[node.name]  # pylint: disable=protected-access
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
class Add(Op):
  """Element-wise sum of inputs of one width (residual joins), then an optional activation."""
  name = "add"
  multi_input = True
  keras_types = (L.Add,)
  keras_doc = "Add"
  latency_role = "folded"

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


class _Pool(Op):
  """Max / average pooling windows."""
  windowed = True

  def read_keras(self, layer, ins, out, in_lay, groups):
    k, s = _window(layer)
    return in_lay[0], dict(kernel_size=compact(k), strides=compact(s), padding=layer.padding), None


@register
class MaxPool(_Pool):
  """Max pooling ("same" padding in the built-in families)."""
  name = "maxpool"
  keras_types = (L.MaxPooling2D,)
  keras_doc = "MaxPooling2D"
  latency_role = "folded"

  def build_pruning(self, net, node):
    super().build_pruning(net, node)

  def pruning_call(self, net, node, inputs, call):
    if node.layer is not None:
      return super().pruning_call(net, node, inputs, call)
    return tf.nn.max_pool2d(inputs[0], node.kernel_size, node.strides, "SAME")

  def build_masked(self, net, node):
    if node.layer is not None:
      super().build_masked(net, node)

  def masked_call(self, net, node, inputs, training, mask):
    if node.layer is not None:
      return super().masked_call(net, node, inputs, training, mask)
    return tf.nn.max_pool2d(inputs[0], node.kernel_size, node.strides, "SAME")

  def rebuild(self, node, inputs, channels, weights, bn_momentum):
    if node.layer is not None:
      return super().rebuild(node, inputs, channels, weights, bn_momentum)
    return L.MaxPooling2D(node.kernel_size, strides=node.strides, padding="same", name=node.name)(inputs[0]), []

  def latency_model(self, sig):
    if sig.layer is not None:
      return super().latency_model(sig)
    h, w = sig.in_hw
    x = keras.Input((h, w, sig.cin))
    y = L.MaxPooling2D(sig.kernel_size, strides=sig.strides, padding="same")(x)
    return keras.Model(x, keras_activation(y, sig.activation), name=sig.name)


class _GlobalPool(Op):
  """Global pooling: a flat vector (or 1x1 with keepdims)."""

  def out_spatial(self, space, node, in_spatial):
    return (1, 1) if node.keepdims else None

  def read_keras(self, layer, ins, out, in_lay, groups):
    return in_lay[0], {"keepdims": bool(layer.keepdims)}, None


@register
class GlobalAvgPool(_GlobalPool):
  """Global average pooling."""
  name = "gap"
  keras_types = (L.GlobalAveragePooling2D,)
  keras_doc = "GlobalAveragePooling2D"

  def pruning_call(self, net, node, inputs, call):
    if node.layer is not None:
      return super().pruning_call(net, node, inputs, call)
    return tf.reduce_mean(inputs[0], axis=[1, 2])

  def build_masked(self, net, node):
    if node.layer is not None:
      super().build_masked(net, node)

  def masked_call(self, net, node, inputs, training, mask):
    if node.layer is not None:
      return super().masked_call(net, node, inputs, training, mask)
    return tf.reduce_mean(inputs[0], axis=[1, 2])

  def rebuild(self, node, inputs, channels, weights, bn_momentum):
    if node.layer is not None:
      return super().rebuild(node, inputs, channels, weights, bn_momentum)
    return L.GlobalAveragePooling2D(name=node.name)(inputs[0]), []


@register
class Dense(_WeightOp):
  """A dense layer on a flat vector (the classifier, or a hidden layer)."""
  name = "dense"
  keras_types = (L.Dense,)

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
    net._add_generator(tfmp_layers.GeneratedDense(cin_max, cout_max, name=node.name, **common), node.name,  # pylint: disable=protected-access
                       net._layer_of, rows)  # pylint: disable=protected-access

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
    h, w = sig.in_hw
    x = keras.Input((h, w, sig.cin))
    y = L.Dense(sig.cout)(L.GlobalAveragePooling2D()(x))
    return keras.Model(x, keras_activation(y, sig.activation), name=sig.name)


@register
class SeparableConv(_WeightOp):
  """SeparableConv2D: a depthwise k x k conv on the input, then a pointwise 1x1 conv of `out` channels."""
  windowed = True
  name = "sepconv"
  keras_types = (L.SeparableConv2D,)
  keras_doc = "SeparableConv2D"

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
    net._add_generator(tfmp_layers.GeneratedDepthwiseConv2D(  # pylint: disable=protected-access
        cin_max, node.kernel_size, node.strides, name=node.name + "_depthwise", padding=node.padding,
        dilation_rate=node.dilation, hidden_units=net.hidden_units), node.name, net._dw_of, (rows[0], rows[0]))  # pylint: disable=protected-access
    net._add_generator(tfmp_layers.GeneratedConv2D(cin_max, cout_max, 1, 1, name=node.name,  # pylint: disable=protected-access
                                                   hidden_units=net.hidden_units, use_bias=node.has_bias),
                       node.name, net._layer_of, rows)  # pylint: disable=protected-access

  def _generated_call(self, net, node, x, call):
    li, di = net._layer_of[node.name], net._dw_of[node.name]  # pylint: disable=protected-access
    y = net.generator_layers[di](x, encoding=call.encodings[di][1:], in_index=call.in_index)
    return net.generator_layers[li](y, encoding=call.encodings[li], out_channels=call.widths[li],
                                    in_index=call.in_index)

  def _generated_kernels(self, net, node, gen, layer, enc):
    di = net._dw_of[node.name]  # pylint: disable=protected-access
    dw = net.generator_layers[di]
    idx = gen.index(node.inputs[0])
    return {"depthwise_kernel": dw.sliced_kernel(tf.constant(gen.layout_ratio[net._enc_index[di]])[1:],  # pylint: disable=protected-access
                                                 gen.cin, idx).numpy(),
            "pointwise_kernel": layer.sliced_kernel(enc, gen.cin, gen.cout, idx).numpy()}

  def keras_weights(self, node, w):
    return [w["depthwise_kernel"], w["pointwise_kernel"]] + ([w["bias"]] if "bias" in w else [])

  def channel_axes(self, node):
    return ((2, None), (2, 3)) + (((None, 0),) if node.has_bias else ())

  _kernel_keys = ("depthwise_kernel", "pointwise_kernel")
  _kernel_axes = {"depthwise_kernel": (2, None), "pointwise_kernel": (2, 3)}

  def set_pruning_weights(self, net, node, weights):
    _set_base_kernel(net.generator_layers[net._dw_of[node.name]], weights["depthwise_kernel"])  # pylint: disable=protected-access
    super().set_pruning_weights(net, node, weights)


@register
class BatchNorm(Op):
  """A BatchNormalization layer of a model read by `from_keras_model` (width-aware in the PruningNet)."""
  name = "bn"
  keras_types = (L.BatchNormalization,)
  keras_doc = "BatchNormalization"

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
    net._layout_rows(node)  # pylint: disable=protected-access
    config = node.layer["config"]
    net._add_width_bn(node, affine=net.bn_affine and config.get("center", True) and config.get("scale", True),  # pylint: disable=protected-access
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


# Parameter-free layers that act on each channel alone (width and shape unchanged).
_ELEMENTWISE = (L.ReLU, L.Activation, L.LeakyReLU, L.ELU, L.Softmax, L.Dropout, L.SpatialDropout2D,
                L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization, L.Identity)


@register
class Act(Op):
  """A parameter-free element-wise layer (activation, dropout, scalar rescaling) of a model read from Keras."""
  name = "act"
  keras_types = _ELEMENTWISE + (L.Rescaling,)
  keras_doc = ("ReLU/Activation/LeakyReLU/ELU/Softmax, Rescaling (scalar), "
               "Dropout/SpatialDropout2D/GaussianNoise/GaussianDropout")

  def read_keras(self, layer, ins, out, in_lay, groups):
    rank = len(out.shape)
    if isinstance(layer, L.Rescaling) and (np.ndim(layer.scale) or np.ndim(layer.offset)):
      raise ValueError(f"layer {layer.name!r} (Rescaling) has per-channel scale/offset; only scalars are "
                       "supported (or move it into the input pipeline)")
    if isinstance(layer, L.Softmax) and layer.axis not in (-1, rank - 1):
      raise ValueError(f"layer {layer.name!r} (Softmax) over axis={layer.axis!r} is not supported; use axis=-1")
    return in_lay[0], {}, None


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


@register
class AvgPool(_Pool):
  """Average pooling of a model read from Keras."""
  name = "avgpool"
  keras_types = (L.AveragePooling2D,)
  keras_doc = "AveragePooling2D"


@register
class Pad(Op):
  """Zero padding ((top, bottom), (left, right)) of a model read from Keras."""
  name = "pad"
  keras_types = (L.ZeroPadding2D,)
  keras_doc = "ZeroPadding2D"

  def out_spatial(self, space, node, in_spatial):
    x = self._feature_map(node, in_spatial[0])
    (t, b), (l, r) = node.padding
    return (x[0] + t + b, x[1] + l + r)

  def read_keras(self, layer, ins, out, in_lay, groups):
    return in_lay[0], {"padding": tuple(tuple(int(v) for v in p) for p in layer.padding)}, None


@register
class GlobalMaxPool(_GlobalPool):
  """Global max pooling of a model read from Keras."""
  name = "gmp"
  keras_types = (L.GlobalMaxPooling2D,)
  keras_doc = "GlobalMaxPooling2D"


class _Flat(Op):
  """Flatten / Reshape: keep the channels, or (with a fixed `out`) move positions into channels."""

  def layout(self, space, node, in_layouts, out_source):
    if node.out is None:
      return in_layouts[0]
    if any(kind != "fixed" for kind, _ in in_layouts[0]):
      raise ValueError(f"{node.op} node {node.name!r} changes the channel count, so its input must have a "
                       f"fixed width, got {in_layouts[0]}")
    if not isinstance(node.out, (int, np.integer)) or int(node.out) < 1:
      raise ValueError(f"node {node.name!r}: out={node.out!r} must be a positive int (the fixed width)")
    return (("fixed", int(node.out)),)

  def read_keras(self, layer, ins, out, in_lay, groups):
    in_shape, out_shape = tuple(ins[0].shape[1:]), tuple(out.shape[1:])
    fields = {}
    if isinstance(layer, L.Reshape):
      if len(out_shape) not in (1, 3):
        raise ValueError(f"layer {layer.name!r} (Reshape) outputs shape {out_shape}; only (C,) or (H, W, C) "
                         "targets are supported")
      fields["target_shape"] = tuple(int(d) for d in out_shape)
    channels_only = in_shape[-1] == out_shape[-1] and all(d == 1 for d in in_shape[:-1] + out_shape[:-1])
    if channels_only:
      return in_lay[0], fields, None
    if any(not groups.fixed[groups.find(g)] for g in in_lay[0]):
      warnings.warn(f"layer {layer.name!r} ({type(layer).__name__}) turns a {in_shape} tensor into {out_shape}: "
                    "the channels feeding it stay at full width (fixed)", stacklevel=5)
    for g in in_lay[0]:
      groups.freeze(g)
    lay = (groups.new(out_shape[-1], layer.name, fixed=True),)
    return lay, fields, lay[0]


@register
class Flatten(_Flat):
  """Flatten of a model read from Keras."""
  name = "flatten"
  keras_types = (L.Flatten,)
  keras_doc = "Flatten"

  def out_spatial(self, space, node, in_spatial):
    x = in_spatial[0]
    if node.out is None and x not in (None, (1, 1)):
      raise ValueError(f"flatten node {node.name!r} of a {x} feature map mixes positions into channels: give "
                       "it a fixed out=H*W*C (its input must then have a fixed width)")
    return None


@register
class Reshape(_Flat):
  """Reshape to (C,) or (H, W, C) of a model read from Keras; the channel count follows the structure."""
  name = "reshape"
  keras_types = (L.Reshape,)
  keras_doc = "Reshape"

  def out_spatial(self, space, node, in_spatial):
    x, target = in_spatial[0], node.target_shape
    if target is None or len(target) not in (1, 3):
      raise ValueError(f"reshape node {node.name!r}: target_shape={target!r} must be (C,) or (H, W, C)")
    if node.out is None:
      if x not in (None, (1, 1)) or tuple(target[:-1]) not in ((), (1, 1)):
        raise ValueError(f"reshape node {node.name!r} ({x} -> {target}) moves positions into channels: give "
                         "it a fixed out= width (its input must then have a fixed width)")
    return None if len(target) == 1 else (target[0], target[1])

  def build_pruning(self, net, node):
    pass

  def pruning_call(self, net, node, inputs, call):
    inp = inputs[0]
    return tf.reshape(inp, tf.concat([tf.shape(inp)[:1], list(node.target_shape[:-1]), [-1]], axis=0))

  def keras_layer(self, node, channels):
    config = copy.deepcopy(node.layer)
    config["config"]["target_shape"] = list(node.target_shape[:-1]) + [int(channels)]
    return keras.layers.deserialize(config)


# ---- an op added through the registry alone ------------------------------------------------------


@register
class UpSample(Op):
  """Nearest-neighbour (or the Keras layer's own) upsampling by an integer factor; no weights, FLOPs 0.

  `Node.strides` holds the factor (h, w): the output is (H * sh, W * sw) with
  the input's channels. Read from `keras.layers.UpSampling2D` (its `size`;
  its `interpolation` stays in the node's layer config); built-in nodes use
  nearest-neighbour.
  """
  name = "upsample"
  keras_types = (L.UpSampling2D,)
  keras_doc = "UpSampling2D"
  latency_role = "folded"

  def out_spatial(self, space, node, in_spatial):
    h, w = self._feature_map(node, in_spatial[0])
    sh, sw = node.strides_hw
    return (h * sh, w * sw)

  def read_keras(self, layer, ins, out, in_lay, groups):
    return in_lay[0], {"strides": compact(pair(layer.size))}, None

  def _layer(self, node, name=None):
    if node.layer is not None:
      return keras.layers.deserialize(copy.deepcopy(node.layer))
    return L.UpSampling2D(size=node.strides_hw, name=name)

  def build_pruning(self, net, node):
    net._op_layers[node.name] = self._layer(node)  # pylint: disable=protected-access

  def build_masked(self, net, node):
    net._add_node_layers(node, [self._layer(node)])  # pylint: disable=protected-access

  def rebuild(self, node, inputs, channels, weights, bn_momentum):
    return self._layer(node, name=node.name)(inputs[0]), []

  def latency_model(self, sig):
    h, w = sig.in_hw
    x = keras.Input((h, w, sig.cin))
    layer = (keras.layers.deserialize(copy.deepcopy(sig.layer)) if sig.layer is not None
             else L.UpSampling2D(size=pair(sig.strides)))
    return keras.Model(x, layer(x), name=sig.name)
