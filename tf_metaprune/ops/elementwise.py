"""Parameter-free element-wise layers (activations, dropout, scalar rescaling)."""

import numpy as np

from tf_metaprune.ops.base import L, Op, register


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
