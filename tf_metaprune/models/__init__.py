"""Built-in search spaces: one function per network family.

Each function takes `(input_shape, num_classes, ...)` and returns a
`SearchSpace`; build the PruningNet with `tf_metaprune.PruningNet(space)`.
Gene layout follows MetaPruning (Liu et al. 2019): every stage's output width
is one gene shared by all layers joined by its residual additions, each
block's middle (expansion / bottleneck) width is a free gene, the stem is a
gene, the classifier is fixed.

Small inputs: ImageNet strides (total 32) leave nothing of a 28x28 or 32x32
image, so for inputs smaller than 96 pixels (`small_input=None`, the default)
the families use the usual CIFAR variants -- stride-1 stems, no stem max-pool
-- and say so in their docstrings. Pass `small_input=False` to force the
ImageNet layout.

Example:

  >>> space = tf_metaprune.models.get("mobilenet_v2")(input_shape=(32, 32, 3), num_classes=10)
"""

from tf_metaprune.models import dense_prediction  # Keras models (U-Net, two-head detector), not spaces
from tf_metaprune.models.families import mobilenet_v1
from tf_metaprune.models.families import mobilenet_v2
from tf_metaprune.models.families import resnet20
from tf_metaprune.models.families import resnet50
from tf_metaprune.models.families import resnet56
from tf_metaprune.models.families import small_cnn

FAMILIES = {
    "small_cnn": small_cnn,
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
    "resnet20": resnet20,
    "resnet56": resnet56,
    "resnet50": resnet50,
}


def get(name):
  """The space-building function of family `name` (see `FAMILIES`).

  Raises:
    ValueError: for an unknown name, listing the known ones.
  """
  try:
    return FAMILIES[name]
  except (KeyError, TypeError):
    raise ValueError(f"unknown model family {name!r}; choose one of {sorted(FAMILIES)}") from None


__all__ = ["FAMILIES", "dense_prediction", "get"] + sorted(FAMILIES)
