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

The ops live in a few modules by kind: `base` (the registry, `Op`, shared
helpers, the input), `weights` (conv, depthwise, dense, separable conv),
`norm`, `elementwise`, `joins` (add, multiply, concat), `pooling`, `shape`
(pad, flatten, reshape, upsample), `transpose` (Conv2DTranspose), and what
keras.applications needs: `keras_ops` (Keras ops applied to tensors, `x + 3.0`),
`convs` (Conv2D(groups=C), Dense on feature maps), `channelwise`
(LayerNormalization, LayerScale, fixed Normalization / Rescaling) and `crop`.

Adding an op is one class decorated with `@register` (and its tests), from
this package or from your own code: see `shape.UpSample`, which was added
that way. An op registered after `tf_metaprune` is imported is found by every
module (they look ops up when they run, never copy the registry). The design
follows Torch-Pruning's `pruner/function.py` (one pruner class per layer type,
registered in `PrunerBox`) and tfmot's `prune_registry.py`.

This package imports no other tf_metaprune module but `layers`: spaces,
counters, nets and readers come in as arguments, so nothing here can form an
import cycle.
"""

from tf_metaprune.ops.base import (L, Op, compact, for_keras_layer, get, keras_activation, merge_fixed, names, pair,
                                   register, supported_keras_layers, tf_activation, weight_op_names, window_out)
from tf_metaprune.ops.base import Input
from tf_metaprune.ops.weights import Conv, Dense, DepthwiseConv, SeparableConv
from tf_metaprune.ops.joins import Add, Concat, Multiply
from tf_metaprune.ops.pooling import AvgPool, GlobalAvgPool, GlobalMaxPool, MaxPool
from tf_metaprune.ops.norm import BatchNorm
from tf_metaprune.ops.elementwise import Act
from tf_metaprune.ops.shape import Flatten, Pad, Reshape, UpSample
from tf_metaprune.ops.transpose import ConvTranspose
from tf_metaprune.ops.convs import DepthwiseMultiplier, GroupedConv, PointwiseDense
from tf_metaprune.ops.channelwise import ChannelScale, ChannelVectors, FixedLayer, LayerNorm
from tf_metaprune.ops.crop import Crop
from tf_metaprune.ops.keras_ops import KerasOp
