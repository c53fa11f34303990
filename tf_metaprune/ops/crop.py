"""Cropping2D (NASNet): removes rows and columns at the borders; channels unchanged."""

from tf_metaprune.ops.base import L, Op, register


@register
class Crop(Op):
  """Cropping ((top, bottom), (left, right)) of a model read from Keras; `Node.padding` holds the amounts."""
  name = "crop"
  keras_types = (L.Cropping2D,)
  keras_doc = "Cropping2D"

  def out_spatial(self, space, node, in_spatial):
    h, w = self._feature_map(node, in_spatial[0])
    (t, b), (l, r) = node.padding
    if h - t - b < 1 or w - l - r < 1:
      raise ValueError(f"input_shape={space.input_shape} is too small for {space.name!r}: node {node.name!r} crops "
                       f"{node.padding} from a {h}x{w} feature map; use a larger input")
    return (h - t - b, w - l - r)

  def read_keras(self, layer, ins, out, in_lay, groups):
    return in_lay[0], {"padding": tuple(tuple(int(v) for v in p) for p in layer.cropping)}, None
