"""Parameter-free element-wise layers (activations, dropout, scalar rescaling)."""

import numpy as np

from tf_metaprune.ops.base import fused_into_producer, L, Op, register


# No work at inference (converted to nothing).
_INFERENCE_NO_OPS = ("Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
                     "ActivityRegularization", "Identity")
# Activations TFLite fuses into the conv / add before them.
_FUSABLE = ("relu", "relu6", "linear")

_ELEMENTWISE = (L.ReLU, L.Activation, L.LeakyReLU, L.ELU, L.Softmax, L.Dropout, L.SpatialDropout2D,
                L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization, L.Identity)


@register
class Act(Op):
  """A parameter-free element-wise layer (activation, dropout, scalar rescaling) of a model read from Keras."""
  name = "act"
  keras_types = _ELEMENTWISE + (L.Rescaling,)
  keras_doc = ("ReLU/Activation/LeakyReLU/ELU/Softmax, Rescaling (scalar), "
               "Dropout/SpatialDropout2D/GaussianNoise/GaussianDropout")

  def latency_kind(self, space, node):
    if _activation_name(node) in _INFERENCE_NO_OPS:
      return "free"
    if _activation_name(node) in _FUSABLE and fused_into_producer(space, node):
      return "free"
    return "folded"   # sigmoid, hard-swish, a ReLU after a concat or pool, rescaling: timed at its width

  def profile_kinds(self, space, node):
    return () if self.latency_kind(space, node) == "free" else ("activation",)

  def read_keras(self, layer, ins, out, in_lay, groups):
    rank = len(out.shape)
    if isinstance(layer, L.Rescaling) and (np.ndim(layer.scale) or np.ndim(layer.offset)):
      raise ValueError(f"layer {layer.name!r} (Rescaling) has per-channel scale/offset; only scalars are "
                       "supported (or move it into the input pipeline)")
    if isinstance(layer, L.Softmax) and layer.axis not in (-1, rank - 1):
      raise ValueError(f"layer {layer.name!r} (Softmax) over axis={layer.axis!r} is not supported; use axis=-1")
    return in_lay[0], {}, None


def _activation_name(node):
  """"relu", "relu6", "linear", "sigmoid", ... of an act node, or its Keras class name (Dropout, ...)."""
  if node.layer is None:
    return node.activation or "linear"
  cls, config = node.layer.get("class_name"), node.layer.get("config", {})
  if cls == "ReLU":
    plain = not config.get("negative_slope") and not config.get("threshold")
    if plain and config.get("max_value") is None:
      return "relu"
    return "relu6" if plain and float(config.get("max_value")) == 6.0 else "relu_clipped"
  if cls == "Activation":
    act = config.get("activation")
    return act if isinstance(act, str) else str(act)
  return cls
