"""Search spaces: the genes of a network, their width choices, and structures.

A `SearchSpace` is a small, serializable description of a convolutional network
(a topologically ordered list of `Node`s: convs, depthwise convs, batch norm is
implied, residual adds, pooling, a classifier) plus the `Gene`s that set how
many channels each prunable node produces. A `Structure` is one choice index
per gene: the unit every searcher returns and every rebuild consumes.

Layers joined by a residual addition read the *same* gene, so they can only
move together (MetaPruning, Liu et al. 2019, Sec. 3.3); depthwise convs, pools
and adds follow the width of their input; the classifier and any node given a
fixed integer width are never pruned.

`SearchSpace.from_keras_model(model)` derives a space from your own Keras
model (see `tf_metaprune.keras_graph`); a node's output may then be a
concatenation of several widths (its `layout`), each keeping its own gene.

Example:

  >>> import tf_metaprune as tfmp
  >>> space = tfmp.models.small_cnn(input_shape=(28, 28, 1), num_classes=10)
  >>> s = space.uniform(0.5)
  >>> space.channels(s)                      # doctest: +SKIP
  {'conv1': 8, 'conv2': 16, ...}
  >>> space.mflops(s) < space.mflops(space.largest())
  True
"""

import dataclasses
import hashlib
import json
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from tf_metaprune import flops
from tf_metaprune import io
from tf_metaprune import keras_graph
from tf_metaprune import ops

# The reference's 31 width ratios: 0.10, 0.13, ..., 1.00.
PAPER_WIDTH_RATIOS = tuple(round(0.10 + 0.03 * i, 2) for i in range(31))

_STRUCTURE_FORMAT = "tf_metaprune.Structure"
_SPACE_FORMAT = "tf_metaprune.SearchSpace"
# Ops whose node owns weights the PruningNet generates (the built-in ones; `ops.weight_op_names()` is the
# live list, which includes ops registered later from user code).
WEIGHT_OPS = ops.weight_op_names()
# Node fields added after the first release: left out of get_config at their default, so the
# fingerprints of spaces that do not use them stay what they were.
_OPTIONAL_FIELDS = {"padding": "same", "dilation": 1, "use_bias": None, "keepdims": False,
                    "target_shape": None, "layer": None}
_ACTIVATIONS = (None, "relu", "relu6")


def _check_width_ratios(width_ratios):
  ratios = tuple(float(r) for r in width_ratios)
  if not ratios:
    raise ValueError("width_ratios=() is empty; give at least one ratio in (0, 1], "
                     "e.g. tf_metaprune.PAPER_WIDTH_RATIOS")
  for r in ratios:
    if not (0.0 < r <= 1.0) or math.isnan(r):
      raise ValueError(f"width ratio {r!r} in width_ratios={ratios} is outside (0, 1]; "
                       "ratios are fractions of a layer's base width")
  return tuple(sorted(set(ratios)))


def round_channels(base_channels: int, width_ratio: float, divisor: int) -> int:
  """Channel count of `base_channels * width_ratio`, rounded to a multiple of `divisor`.

  The result is at least `min(divisor, base_channels)` and at most
  `base_channels`; a ratio of 1.0 always gives `base_channels` exactly.
  """
  if width_ratio >= 1.0:
    return int(base_channels)
  rounded = int(round(base_channels * width_ratio / divisor)) * divisor
  return int(min(base_channels, max(min(divisor, base_channels), rounded)))


@dataclasses.dataclass(frozen=True)
class Gene:
  """One searchable width: the output channels of every node that reads it.

  Attributes:
    name: unique name (usually the first node that reads it, or the stage).
    base_channels: full width (the width of the unpruned network).
    width_ratios: the requested fractions of `base_channels`.
    divisor: channel counts are rounded to a multiple of this (8 is friendly to
      phone kernels; 1 for tiny test networks).
  """
  name: str
  base_channels: int
  width_ratios: Tuple[float, ...] = PAPER_WIDTH_RATIOS
  divisor: int = 8

  @property
  def is_input(self) -> bool:
    """Whether this is the image input node (its op's `is_input` role)."""
    return ops.get(self.op).is_input

  def __post_init__(self):
    if int(self.base_channels) < 1:
      raise ValueError(f"Gene {self.name!r}: base_channels={self.base_channels!r} must be >= 1")
    if int(self.divisor) < 1:
      raise ValueError(f"Gene {self.name!r}: divisor={self.divisor!r} must be >= 1 (use 1 for no rounding)")
    object.__setattr__(self, "width_ratios", _check_width_ratios(self.width_ratios))
    object.__setattr__(self, "base_channels", int(self.base_channels))
    object.__setattr__(self, "divisor", int(self.divisor))

  @property
  def channels(self) -> Tuple[int, ...]:
    """The distinct channel counts this gene can take, ascending (choice i -> channels[i])."""
    return tuple(sorted({round_channels(self.base_channels, r, self.divisor) for r in self.width_ratios}))

  @property
  def num_choices(self) -> int:
    return len(self.channels)

  def get_config(self):
    return {"name": self.name, "base_channels": self.base_channels,
            "width_ratios": list(self.width_ratios), "divisor": self.divisor}

  @classmethod
  def from_config(cls, config):
    return cls(name=config["name"], base_channels=config["base_channels"],
               width_ratios=tuple(config["width_ratios"]), divisor=config["divisor"])


@dataclasses.dataclass(frozen=True)
class Node:
  """One operation of a search-space graph.

  Attributes:
    name: unique name; the rebuilt Keras layers are named after it.
    op: one of "input", "conv", "dwconv", "add", "maxpool", "gap", "dense";
      spaces read from a Keras model also use "sepconv" (depthwise then
      pointwise), "bn" (a BatchNormalization layer), "act" (a parameter-free
      elementwise layer), "multiply", "concat" (channel axis), "avgpool",
      "pad" (zero padding), "gmp" (global max pooling), "flatten", "reshape",
      "upsample" (its `strides` is the factor). What each op means lives in
      its class in `tf_metaprune.ops` (`ops.names()` lists them).
    inputs: names of the input nodes (empty for "input").
    out: for "conv"/"dense"/"sepconv": a gene name (prunable) or an int (fixed
      width); for a "flatten"/"reshape" that moves positions into channels:
      its fixed output width;
      for "input": the number of image channels; otherwise None (the node
      follows its input's width).
    kernel_size, strides: for conv, dwconv and maxpool ("same" padding).
    activation: None, "relu" or "relu6", applied after batch norm (or after the
      add, for "add").
    bn: conv/dwconv are followed by batch normalization (and have no bias).
    padding: "same" or "valid" for conv, dwconv, sepconv and pools; for "pad"
      ((top, bottom), (left, right)).
    dilation: dilation rate of a conv (int or (h, w)).
    use_bias: whether a conv/dwconv/sepconv/dense has a bias; None means "not
      `bn`" (the built-in families).
    keepdims: "gap"/"gmp" keep a 1x1 spatial shape.
    target_shape: for "reshape", the per-example output shape.
    layer: the serialized Keras layer this node was read from
      (`SearchSpace.from_keras_model`): rebuild re-creates it from this config
      at the pruned width, so the user's names, activations and settings stay.

  `kernel_size`, `strides` and `dilation` are ints or (h, w) pairs.
  """
  name: str
  op: str
  inputs: Tuple[str, ...] = ()
  out: Union[str, int, None] = None
  kernel_size: int = 1
  strides: int = 1
  activation: Optional[str] = None
  bn: bool = True
  padding: Union[str, Tuple] = "same"
  dilation: Union[int, Tuple[int, int]] = 1
  use_bias: Optional[bool] = None
  keepdims: bool = False
  target_shape: Optional[Tuple[int, ...]] = None
  layer: Optional[dict] = dataclasses.field(default=None, hash=False)

  @property
  def is_input(self) -> bool:
    """Whether this is the image input node (its op's `is_input` role)."""
    return ops.get(self.op).is_input

  def __post_init__(self):
    object.__setattr__(self, "inputs", tuple(self.inputs))
    for field in ("kernel_size", "strides", "dilation", "target_shape"):
      v = getattr(self, field)
      if isinstance(v, (list, tuple)):
        object.__setattr__(self, field, tuple(int(d) for d in v))
    if isinstance(self.padding, (list, tuple)):
      object.__setattr__(self, "padding", tuple(tuple(int(d) for d in p) for p in self.padding))
    if self.op not in ops.names():   # looked up now, so an op registered from user code after import is found
      raise ValueError(f"Node {self.name!r}: op={self.op!r} is not one of {ops.names()}; register an Op subclass "
                       "with @tf_metaprune.ops.register to add one")
    if self.activation not in _ACTIVATIONS:
      raise ValueError(f"Node {self.name!r}: activation={self.activation!r} is not one of {_ACTIVATIONS}")

  @property
  def has_bias(self) -> bool:
    """Whether this conv/dwconv/sepconv/dense node carries a bias vector."""
    return (not self.bn) if self.use_bias is None else bool(self.use_bias)

  @property
  def kernel_hw(self) -> Tuple[int, int]:
    return _pair(self.kernel_size)

  @property
  def strides_hw(self) -> Tuple[int, int]:
    return _pair(self.strides)

  def get_config(self):
    config = dataclasses.asdict(self) | {"inputs": list(self.inputs)}
    for field, default in _OPTIONAL_FIELDS.items():
      if config[field] == default:
        del config[field]
    return config

  @classmethod
  def from_config(cls, config):
    return cls(**config)


_pair = ops.pair  # kept for callers of the former private helper


class Structure:
  """One point of a search space: a choice index per gene.

  Structures are plain, hashable value objects; a `SearchSpace` turns them into
  channel counts, FLOPs and parameter counts. Save them with
  `space.structure_to_json(s)` so the file also records the channel counts and
  can be checked against the space it is loaded into.
  """

  __slots__ = ("_choices",)

  def __init__(self, choices: Sequence[int]):
    self._choices = tuple(int(c) for c in choices)

  @property
  def choices(self) -> Tuple[int, ...]:
    return self._choices

  def __len__(self):
    return len(self._choices)

  def __iter__(self):
    return iter(self._choices)

  def __getitem__(self, i):
    return self._choices[i]

  def __eq__(self, other):
    return isinstance(other, Structure) and other._choices == self._choices

  def __hash__(self):
    return hash(self._choices)

  def __repr__(self):
    return f"Structure({list(self._choices)})"

  def get_config(self):
    return {"choices": list(self._choices)}

  @classmethod
  def from_config(cls, config):
    return cls(config["choices"])


class SearchSpace:
  """A network's prunable widths: genes, the graph that reads them, and counting.

  Args:
    name: a label, e.g. "mobilenet_v2".
    input_shape: (H, W, C) of one image.
    num_classes: classifier outputs.
    genes: the `Gene`s (their order is the order of a `Structure`'s choices).
    nodes: the graph, topologically ordered, starting with one "input" node and
      ending with the classifier (its logits).
    outputs: names of the nodes that are the network's outputs, in order
      (default: the last node alone). Several outputs make a multi-output
      network (e.g. a detector's class logits and box regression); an output
      may be a feature map (a segmentation net's H x W x K logits). Output
      channels are never pruned; `num_classes` is the first output's width.
    output_activation: "softmax" or "sigmoid" if the network ends with it
      (a model read by `from_keras_model` whose classifier had one): the
      nodes compute the logits, which the PruningNet trains and searches on,
      and `rebuild(..., output_activation=True)` appends it again. None: the
      network outputs logits.
    output_layer: the serialized Keras layer that applies
      `output_activation` (default: `keras.layers.Activation(activation)`).

  Raises:
    ValueError: on a malformed graph (unknown inputs or genes, an add whose
      inputs can have different widths) or an input too small for the strides.

  Example:

    >>> space = tf_metaprune.models.resnet20(input_shape=(32, 32, 3), num_classes=10)
    >>> len(space.genes), space.mflops(space.largest())      # doctest: +SKIP
  """

  def __init__(self, name: str, input_shape: Sequence[int], num_classes: int,
               genes: Sequence[Gene], nodes: Sequence[Node], output_activation: Optional[str] = None,
               output_layer: Optional[dict] = None, outputs: Optional[Sequence[str]] = None):
    self.name = str(name)
    if output_activation not in (None,) + keras_graph.OUTPUT_ACTIVATIONS:
      raise ValueError(f"output_activation={output_activation!r} must be None (logits) or one of "
                       f"{keras_graph.OUTPUT_ACTIVATIONS}")
    if output_layer is not None and output_activation is None:
      raise ValueError("output_layer=... needs output_activation (the activation that layer applies)")
    self.output_activation = output_activation
    self.output_layer = output_layer
    self.input_shape = tuple(int(d) for d in input_shape)
    if len(self.input_shape) != 3 or min(self.input_shape) < 1:
      raise ValueError(f"input_shape={tuple(input_shape)!r} must be (height, width, channels) with all >= 1")
    self.num_classes = int(num_classes)
    if self.num_classes < 1:
      raise ValueError(f"num_classes={num_classes!r} must be >= 1 (the first output's width: classes, or 1 for a "
                       "binary mask)")
    self.genes = tuple(genes)
    self.nodes = tuple(nodes)
    if outputs is not None and (isinstance(outputs, str) or not len(outputs)):
      raise ValueError(f"outputs={outputs!r} must be a non-empty list of node names")
    self.outputs = tuple(outputs) if outputs is not None else ((self.nodes[-1].name,) if self.nodes else ())
    self._gene_index = {}
    for i, g in enumerate(self.genes):
      if g.name in self._gene_index:
        raise ValueError(f"duplicate gene name {g.name!r} in space {self.name!r}")
      self._gene_index[g.name] = i
    self._validate_graph()

  @property
  def layer_nodes(self) -> Tuple[Node, ...]:
    """Every node but the image input: the ones that are (or hold) a layer."""
    return tuple(n for n in self.nodes if not n.is_input)

  # ---- graph -------------------------------------------------------------------------------
  def _validate_graph(self):
    if not self.nodes or not self.nodes[0].is_input:
      raise ValueError(f"space {self.name!r}: the first node must be the 'input' node")
    h, w, _ = self.input_shape
    self.node_by_name: Dict[str, Node] = {}
    self.spatial: Dict[str, Tuple[int, int]] = {}   # output (H, W) of each node (None after gap/dense)
    self.in_spatial: Dict[str, Tuple[int, int]] = {}
    # Channel layout of each node's output: a tuple of sources ("gene", index) or ("fixed", n),
    # concatenated on the channel axis (one source except after a "concat").
    self.layout: Dict[str, Tuple[Tuple[str, int], ...]] = {}
    # channel source of each single-source node's output: ("gene", index) or ("fixed", n)
    self.source: Dict[str, Tuple[str, int]] = {}
    used_genes = set()
    for node in self.nodes:
      if node.name in self.node_by_name:
        raise ValueError(f"space {self.name!r}: duplicate node name {node.name!r}")
      for i in node.inputs:
        if i not in self.node_by_name:
          raise ValueError(f"node {node.name!r} reads {i!r}, which is not defined before it")
      lays = [self.layout[i] for i in node.inputs]
      ins = [self.spatial[i] for i in node.inputs]
      op = ops.get(node.op)
      if not op.is_input and not op.multi_input and len(node.inputs) != 1:
        raise ValueError(f"node {node.name!r} ({node.op}) needs exactly one input, got {node.inputs}")
      layout = op.layout(self, node, lays, lambda node=node: self._out_source(node, used_genes))
      if op.is_input:
        self.spatial[node.name] = (h, w)
      self.layout[node.name] = layout
      if len(layout) == 1:
        self.source[node.name] = layout[0]
      if not op.is_input:
        self.in_spatial[node.name] = ins[0]
        self.spatial[node.name] = op.out_spatial(self, node, ins)
      self.node_by_name[node.name] = node
    unused = [g.name for g in self.genes if g.name not in used_genes]
    if unused:
      raise ValueError(f"space {self.name!r}: genes {unused} are read by no node")
    self._validate_outputs()
    # Extended channel vector: [gene channels..., fixed widths...]; sources index into it.
    fixed = sorted({n for lay in self.layout.values() for kind, n in lay if kind == "fixed"})
    self.fixed_widths = tuple(fixed)
    self._layout_index = {}
    for name, lay in self.layout.items():
      self._layout_index[name] = tuple(v if kind == "gene" else len(self.genes) + fixed.index(v) for kind, v in lay)
    self._ext_index = {name: idx[0] for name, idx in self._layout_index.items() if len(idx) == 1}

  def _validate_outputs(self):
    if self.outputs == (self.nodes[-1].name,):
      last = self.nodes[-1]
      if self.layout[last.name] != (("fixed", self.num_classes),):
        raise ValueError(f"space {self.name!r}: the last node (the output) must have the fixed width "
                         f"out={self.num_classes} (num_classes), got {last}")
      return
    if len(set(self.outputs)) != len(self.outputs):
      raise ValueError(f"space {self.name!r}: outputs={list(self.outputs)} names a node twice")
    for o in self.outputs:
      if o not in self.node_by_name:
        raise ValueError(f"space {self.name!r}: output {o!r} is not a node of the space")
      if any(kind == "gene" for kind, _ in self.layout[o]):
        raise ValueError(f"space {self.name!r}: output {o!r} has prunable channels {self.layout[o]}; an output's "
                         "width must be fixed (give its node a fixed integer out=)")
    first = self.max_channels(self.outputs[0])
    if first != self.num_classes:
      raise ValueError(f"space {self.name!r}: the first output {self.outputs[0]!r} has {first} channels but "
                       f"num_classes={self.num_classes}; they must be equal")

  def output_shape(self, node_name: str) -> Tuple[int, ...]:
    """Per-example shape of an output node: (C,) for a flat vector, (H, W, C) for a feature map."""
    hw = self.spatial[node_name]
    c = self.max_channels(node_name)
    return (c,) if hw is None else (int(hw[0]), int(hw[1]), c)

  @property
  def is_classifier(self) -> bool:
    """One output, a flat vector of class logits (what top-1 accuracy and the int8 agreement are for)."""
    return len(self.outputs) == 1 and self.spatial[self.outputs[0]] is None

  def _out_source(self, node, used_genes):
    if isinstance(node.out, str):
      if node.out not in self._gene_index:
        raise ValueError(f"node {node.name!r} reads gene {node.out!r}, which is not in the space")
      used_genes.add(node.out)
      return ("gene", self._gene_index[node.out])
    if isinstance(node.out, (int, np.integer)) and int(node.out) >= 1:
      return ("fixed", int(node.out))
    raise ValueError(f"node {node.name!r}: out={node.out!r} must be a gene name or a positive int")

  def ext_index(self, node_name: str) -> int:
    """Index of `node_name`'s output width in the extended channel vector.

    Raises:
      ValueError: for a node whose output concatenates several widths (use
        `layout_indices`).
    """
    if node_name not in self._ext_index and node_name in self._layout_index:
      raise ValueError(f"node {node_name!r} outputs a concatenation of {len(self._layout_index[node_name])} "
                       "widths; use layout_indices()")
    return self._ext_index[node_name]

  def layout_indices(self, node_name: str) -> Tuple[int, ...]:
    """Extended-vector indices of the widths concatenated in `node_name`'s output (one, except after a concat)."""
    return self._layout_index[node_name]

  def max_channels(self, node_name: str) -> int:
    """Output channels of a node at full width."""
    return sum(self.genes[v].base_channels if kind == "gene" else v for kind, v in self.layout[node_name])

  def gene_of(self, node_name: str) -> Optional[int]:
    """Index of the gene setting a node's output width, or None if fixed (or a concatenation)."""
    kind, v = self.source.get(node_name, ("concat", None))
    return v if kind == "gene" else None

  # ---- structures --------------------------------------------------------------------------
  @property
  def num_choices(self) -> Tuple[int, ...]:
    return tuple(g.num_choices for g in self.genes)

  def validate(self, structure) -> Structure:
    """Returns `structure` as a `Structure`, or raises ValueError naming what is wrong."""
    if not isinstance(structure, Structure):
      structure = Structure(structure)
    if len(structure) != len(self.genes):
      raise ValueError(f"{structure!r} has {len(structure)} choices but space {self.name!r} has "
                       f"{len(self.genes)} genes; was it made for another space?")
    for g, c in zip(self.genes, structure):
      if not 0 <= c < g.num_choices:
        raise ValueError(f"{structure!r}: choice {c} for gene {g.name!r} is out of range "
                         f"[0, {g.num_choices - 1}] (its channel choices are {g.channels})")
    return structure

  def channels(self, structure) -> Dict[str, int]:
    """Gene name -> channel count of `structure`."""
    s = self.validate(structure)
    return {g.name: g.channels[c] for g, c in zip(self.genes, s)}

  def gene_channels(self, structure) -> np.ndarray:
    """int array [num_genes] of the channel count of each gene."""
    s = self.validate(structure)
    return np.array([g.channels[c] for g, c in zip(self.genes, s)], dtype=np.int64)

  def ext_channels(self, structure) -> np.ndarray:
    """int array: gene channels followed by the fixed widths (see `ext_index`)."""
    return np.concatenate([self.gene_channels(structure), np.array(self.fixed_widths, np.int64)])

  def node_channels(self, structure) -> Dict[str, int]:
    """Node name -> output channels of that node under `structure`."""
    ext = self.ext_channels(structure)
    return {n.name: int(sum(ext[i] for i in self._layout_index[n.name])) for n in self.nodes}

  def from_channels(self, channels: Dict[str, int]) -> Structure:
    """The structure whose gene channel counts are `channels` (gene name -> count)."""
    missing = [g.name for g in self.genes if g.name not in channels]
    if missing:
      raise ValueError(f"channels is missing genes {missing}")
    choices = []
    for g in self.genes:
      c = int(channels[g.name])
      if c not in g.channels:
        raise ValueError(f"gene {g.name!r} cannot have {c} channels; its choices are {g.channels}")
      choices.append(g.channels.index(c))
    return Structure(choices)

  def uniform(self, width_ratio: float) -> Structure:
    """Every gene at `round_channels(base * width_ratio)`, snapped to its nearest choice.

    Raises:
      ValueError: if `width_ratio` is outside (0, 1].
    """
    if not (0.0 < float(width_ratio) <= 1.0):
      raise ValueError(f"width_ratio={width_ratio!r} is outside (0, 1]")
    choices = []
    for g in self.genes:
      target = round_channels(g.base_channels, float(width_ratio), g.divisor)
      chs = np.array(g.channels)
      choices.append(int(np.argmin(np.abs(chs - target) + 1e-9 * chs)))  # ties -> smaller
    return Structure(choices)

  def largest(self) -> Structure:
    return Structure([g.num_choices - 1 for g in self.genes])

  def smallest(self) -> Structure:
    return Structure([0] * len(self.genes))

  def random(self, seed=None) -> Structure:
    """A uniformly random structure (each gene's choice independently uniform).

    Args:
      seed: an int, a `np.random.Generator`, or None (fresh entropy).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return Structure([int(rng.integers(0, g.num_choices)) for g in self.genes])

  # ---- counting (delegated to the one counter, flops.py) -----------------------------------
  def mflops(self, structure) -> float:
    """Millions of multiply-adds (the paper's "FLOPs") of `structure` for one image.

    Counts conv, depthwise conv and dense multiply-adds; batch norm, activations,
    pooling and additions are not counted (the MetaPruning/AutoSlim convention).
    """
    return flops.structure_mflops(self, structure)

  def params(self, structure) -> int:
    """Number of weights of the rebuilt plain Keras model (what `model.count_params()` says)."""
    return flops.structure_params(self, structure)

  # ---- from a Keras model -------------------------------------------------------------------
  @classmethod
  def from_keras_model(cls, model, width_ratios=None, divisor=8, name=None) -> "SearchSpace":
    """The search space of your own Keras CNN (functional or Sequential).

    Walks the model's graph: every Conv2D / SeparableConv2D / Dense output is a
    channel group; depthwise convs, batch norm, activations, pooling and
    padding follow their input; Add and Multiply tie their inputs' groups into
    one gene; Concatenate keeps each input's gene in its slice; groups touching
    the input or the classifier output stay fixed. Rebuilt models keep the
    user's layer names, order, activations and non-prunable layers.

    Args:
      model: a built Keras 3 model with one channels-last image input and
        one or more outputs: (batch, classes) logits, or (batch, H, W, K)
        dense predictions (segmentation), or several such heads (a
        detector's class logits and boxes). Output channels stay fixed.
      width_ratios: width choices as fractions of each group's full width
        (default: the paper's 31 ratios 0.10 ... 1.00).
      divisor: channel counts are multiples of this (1 = any count).
      name: the space's name (default: the model's).

    Returns:
      A `SearchSpace` whose largest structure is the original model (same
      parameter count and multiply-adds). A final softmax or sigmoid (e.g.
      keras.applications' default head) is read off: the space computes the
      logits and records the activation in `output_activation` (and in its
      fingerprint); `rebuild(..., output_activation=True)` ends with it again.

    Raises:
      ValueError: for a layer it cannot read (named, with its type and the
        supported list) or a model without a single image input.

    Example:

      >>> model = keras.applications.MobileNetV2((32, 32, 3), alpha=0.35, weights=None, classes=10)
      >>> space = SearchSpace.from_keras_model(model)
      >>> space.output_activation                                          # the head's, read off
      'softmax'
      >>> pruned = tf_metaprune.rebuild(space, space.uniform(0.5), output_activation=True)   # ends in it again
    """
    graph = keras_graph.read_keras_model(model)
    builder = SpaceBuilder(name or graph.name, graph.input_shape, graph.num_classes, width_ratios, divisor)
    for gene_name, width in graph.genes:
      builder.gene(gene_name, width)
    nodes = [Node(**fields) for fields in graph.nodes]
    outputs = None if list(graph.outputs) == [nodes[-1].name] else graph.outputs
    return cls(builder.name, builder.input_shape, builder.num_classes, builder.genes, nodes,
               output_activation=graph.output_activation, output_layer=graph.output_layer, outputs=outputs)

  # ---- serialization -----------------------------------------------------------------------
  def get_config(self):
    config = {"name": self.name, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
              "genes": [g.get_config() for g in self.genes], "nodes": [n.get_config() for n in self.nodes]}
    if self.outputs != (self.nodes[-1].name,):  # left out at the default: older fingerprints stay
      config["outputs"] = list(self.outputs)
    if self.output_activation is not None:   # left out for logits, so older spaces keep their fingerprints
      config.update(output_activation=self.output_activation, output_layer=self.output_layer)
    return config

  @classmethod
  def from_config(cls, config):
    return cls(name=config["name"], input_shape=config["input_shape"], num_classes=config["num_classes"],
               genes=[Gene.from_config(g) for g in config["genes"]],
               nodes=[Node.from_config(n) for n in config["nodes"]],
               output_activation=config.get("output_activation"), output_layer=config.get("output_layer"),
               outputs=config.get("outputs"))

  def to_json(self) -> str:
    return json.dumps({"format": _SPACE_FORMAT, "version": 1, "space": self.get_config()}, indent=1)

  @classmethod
  def from_json(cls, text: str) -> "SearchSpace":
    data = _load_json(text, "search space")
    if data.get("format") != _SPACE_FORMAT:
      raise ValueError(f"this JSON is not a tf_metaprune search space (format={data.get('format')!r})")
    try:
      return cls.from_config(data["space"])
    except (KeyError, TypeError) as e:
      raise ValueError(f"search space JSON is malformed ({type(e).__name__}: {e}); write spaces with "
                       "SearchSpace.to_json") from None

  def fingerprint(self) -> str:
    """A short hash of the space's config: structures and state files record it."""
    blob = json.dumps(self.get_config(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

  def structure_to_json(self, structure, **extra) -> str:
    """JSON text of `structure` with its channel counts and this space's fingerprint.

    Args:
      structure: the structure.
      **extra: JSON-able values stored beside it (e.g. accuracy, mflops).
    """
    s = self.validate(structure)
    payload = {"format": _STRUCTURE_FORMAT, "version": 1, "space": self.name,
               "space_fingerprint": self.fingerprint(), "choices": list(s.choices),
               "channels": self.channels(s), "mflops": self.mflops(s), "params": self.params(s)}
    payload.update(extra)
    return json.dumps(payload, indent=1)

  def structure_from_json(self, text: str) -> Structure:
    """Parses `structure_to_json` output and checks it belongs to this space.

    Raises:
      ValueError: malformed JSON, another format, or a structure made for a
        different space (other fingerprint, or channels that do not match).
    """
    data = _load_json(text, "structure")
    if data.get("format") != _STRUCTURE_FORMAT:
      raise ValueError(f"this JSON is not a tf_metaprune structure (format={data.get('format')!r}); "
                       "write structures with SearchSpace.structure_to_json")
    choices = data.get("choices", [])
    if data.get("space_fingerprint") not in (None, self.fingerprint()):
      recorded = data.get("channels") or {}
      try:
        same = recorded == self.channels(choices)
      except ValueError:
        same = False
      if not same:
        raise ValueError(
            f"structure was made for space {data.get('space')!r} (fingerprint {data.get('space_fingerprint')}), "
            f"not this {self.name!r} (fingerprint {self.fingerprint()}): its channels {recorded} do not fit "
            "this space; load it into the space it was searched in")
    s = self.validate(choices)
    return s

  def save_structure(self, structure, path: str, **extra):
    """Writes `structure_to_json` atomically to `path`."""
    io.write_text_atomic(path, self.structure_to_json(structure, **extra))

  def load_structure(self, path: str) -> Structure:
    """Reads a structure file written by `save_structure`, checked against this space.

    Raises:
      ValueError: naming the file, if it is missing, not JSON, not a structure,
        or a structure of another space.
    """
    text = io.read_text(path, "structure file")
    try:
      return self.structure_from_json(text)
    except ValueError as e:
      raise ValueError(f"structure file {path!r}: {e}") from None

  def __repr__(self):
    head = "" if self.output_activation is None else f", output_activation={self.output_activation!r}"
    return (f"SearchSpace({self.name!r}, input_shape={self.input_shape}, genes={len(self.genes)}, "
            f"nodes={len(self.nodes)}{head})")


def _load_json(text, what):
  try:
    data = json.loads(text)
  except (TypeError, ValueError) as e:
    raise ValueError(f"cannot parse {what} JSON: {e}") from None
  if not isinstance(data, dict):
    raise ValueError(f"{what} JSON must be an object, got {type(data).__name__}")
  return data


class SpaceBuilder:
  """Builds a `SearchSpace` node by node (used by `tf_metaprune.models`).

  Example:

    >>> b = SpaceBuilder("tiny", (28, 28, 1), 10, divisor=1)
    >>> x = b.input()
    >>> x = b.conv("conv1", x, out=b.gene("conv1", 16), kernel_size=3)
    >>> x = b.gap("pool", x)
    >>> b.dense("logits", x, out=10)
    'logits'
    >>> space = b.build()
  """

  def __init__(self, name, input_shape, num_classes, width_ratios=None, divisor=8):
    self.name = name
    self.input_shape = tuple(input_shape)
    self.num_classes = num_classes
    self.width_ratios = _check_width_ratios(PAPER_WIDTH_RATIOS if width_ratios is None else width_ratios)
    if int(divisor) < 1:
      raise ValueError(f"divisor={divisor!r} must be >= 1 (1 means no rounding)")
    self.divisor = int(divisor)
    self.genes: List[Gene] = []
    self.nodes: List[Node] = []

  def gene(self, name, base_channels) -> str:
    self.genes.append(Gene(name, int(base_channels), self.width_ratios, self.divisor))
    return name

  def _add(self, node):
    self.nodes.append(node)
    return node.name

  def input(self, name="input"):
    return self._add(Node(name, "input", (), out=self.input_shape[-1]))

  def conv(self, name, x, out, kernel_size=3, strides=1, activation="relu"):
    return self._add(Node(name, "conv", (x,), out=out, kernel_size=kernel_size, strides=strides,
                          activation=activation))

  def dwconv(self, name, x, kernel_size=3, strides=1, activation="relu"):
    return self._add(Node(name, "dwconv", (x,), kernel_size=kernel_size, strides=strides,
                          activation=activation))

  def add(self, name, inputs, activation=None):
    return self._add(Node(name, "add", tuple(inputs), activation=activation, bn=False))

  def maxpool(self, name, x, pool_size=3, strides=2):
    return self._add(Node(name, "maxpool", (x,), kernel_size=pool_size, strides=strides, bn=False))

  def gap(self, name, x):
    return self._add(Node(name, "gap", (x,), bn=False))

  def dense(self, name, x, out):
    return self._add(Node(name, "dense", (x,), out=out, bn=False))

  def build(self) -> SearchSpace:
    return SearchSpace(self.name, self.input_shape, self.num_classes, self.genes, self.nodes)
