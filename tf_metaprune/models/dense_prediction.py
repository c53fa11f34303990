"""Two small Keras models of the dense-prediction kind: a U-Net and a two-head detector.

They are plain Keras 3 functional models (not search spaces): what a user
brings to `SearchSpace.from_keras_model`, and what the tests and the
keras.applications coverage benchmark run through the whole path -- the
rows Torch-Pruning covers with DeepLab, SSD and Faster R-CNN.

* `unet`: an encoder-decoder with concatenated skips, one decoder step up by
  a learned `Conv2DTranspose`, the next by `UpSampling2D` (bilinear) then a
  conv; its output is per-pixel class logits (H x W x num_classes).
* `two_head_detector`: a residual backbone shared by two SSD-style heads on
  its last feature map: class logits per grid cell (h x w x num_classes) and
  box regression per grid cell (h x w x 4) -- two outputs.

Every inner width is prunable; the output channels (classes, box
coordinates) stay fixed. Batch norms follow bias-free convs (Conv -> BN ->
ReLU), which QAT takes too.

Example:

  >>> model = tf_metaprune.models.dense_prediction.unet((32, 32, 3), num_classes=3)
  >>> space = tf_metaprune.SearchSpace.from_keras_model(model)
  >>> space.outputs, space.output_shape("logits")
  (('logits',), (32, 32, 3))
"""

import keras

L = keras.layers


def _conv_bn_relu(x, filters, name, kernel_size=3, strides=1):
  x = L.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False, name=name)(x)
  x = L.BatchNormalization(name=name + "_bn")(x)
  return L.ReLU(name=name + "_relu")(x)


def unet(input_shape=(32, 32, 3), num_classes=3, filters=(8, 16, 32), name="unet"):
  """A U-Net (Ronneberger et al., 2015) with per-pixel class logits.

  Args:
    input_shape: (H, W, C); H and W divisible by 2 ** (len(filters) - 1).
    num_classes: classes per pixel (the output's channels, never pruned).
    filters: widths of the encoder levels, the last one the bottleneck;
      at least two levels. Decoder level i has `filters[i]` channels.
    name: the model's name.

  Returns:
    A `keras.Model` from (B, H, W, C) images to (B, H, W, num_classes) logits,
    with the output layer named "logits".

  Raises:
    ValueError: for fewer than two levels or an input not divisible by the
      total stride.
  """
  filters = tuple(int(f) for f in filters)
  if len(filters) < 2:
    raise ValueError(f"unet(filters={filters!r}) needs at least two levels (an encoder level and the bottleneck)")
  stride = 2 ** (len(filters) - 1)
  if input_shape[0] % stride or input_shape[1] % stride:
    raise ValueError(f"unet: input_shape={tuple(input_shape)!r} is not divisible by the total stride {stride} of "
                     f"{len(filters)} levels; use a multiple of {stride} or fewer levels")
  inputs = keras.Input(input_shape, name="image")
  x, skips = inputs, []
  for i, f in enumerate(filters[:-1]):
    x = _conv_bn_relu(x, f, f"enc{i}_a")
    x = _conv_bn_relu(x, f, f"enc{i}_b")
    skips.append(x)
    x = L.MaxPooling2D(2, name=f"enc{i}_pool")(x)
  x = _conv_bn_relu(x, filters[-1], "bottleneck")
  for i in reversed(range(len(filters) - 1)):
    if (len(filters) - 2 - i) % 2 == 0:   # the first decoder step (and every other one): learned upsampling
      up = L.Conv2DTranspose(filters[i], 2, strides=2, padding="same", use_bias=False, name=f"dec{i}_up")(x)
      up = L.BatchNormalization(name=f"dec{i}_up_bn")(up)
      up = L.ReLU(name=f"dec{i}_up_relu")(up)
    else:
      up = L.UpSampling2D(2, interpolation="bilinear", name=f"dec{i}_up")(x)
    x = L.Concatenate(name=f"dec{i}_concat")([up, skips[i]])
    x = _conv_bn_relu(x, filters[i], f"dec{i}_a")
    x = _conv_bn_relu(x, filters[i], f"dec{i}_b")
  outputs = L.Conv2D(num_classes, 1, name="logits")(x)
  return keras.Model(inputs, outputs, name=name)


def two_head_detector(input_shape=(32, 32, 3), num_classes=4, filters=(8, 16, 32), head_filters=16,
                      name="two_head_detector"):
  """A single-shot detector's shape: a shared backbone, a class head and a box head (two outputs).

  The backbone downsamples by 2 per level (a strided conv, then a residual
  block whose add ties its widths into one gene); both heads read its last
  feature map, each through a 3x3 conv of its own, and predict per grid
  cell -- as SSD (Liu et al., 2016) and RetinaNet heads do, with one anchor.

  Args:
    input_shape: (H, W, C).
    num_classes: class logits per grid cell (fixed).
    filters: backbone widths, one level each.
    head_filters: width of each head's hidden conv.
    name: the model's name.

  Returns:
    A `keras.Model` with outputs [class logits (B, h, w, num_classes), boxes
    (B, h, w, 4)], the output layers named "class_logits" and "boxes".
  """
  inputs = keras.Input(input_shape, name="image")
  x = inputs
  for i, f in enumerate(filters):
    x = _conv_bn_relu(x, f, f"stage{i}_down", strides=2)
    y = _conv_bn_relu(x, f, f"stage{i}_res_a")
    y = L.Conv2D(f, 3, padding="same", use_bias=False, name=f"stage{i}_res_b")(y)
    y = L.BatchNormalization(name=f"stage{i}_res_b_bn")(y)
    x = L.Add(name=f"stage{i}_add")([x, y])
    x = L.ReLU(name=f"stage{i}_out")(x)
  cls = _conv_bn_relu(x, head_filters, "class_head")
  cls = L.Conv2D(num_classes, 1, name="class_logits")(cls)
  box = _conv_bn_relu(x, head_filters, "box_head")
  box = L.Conv2D(4, 1, name="boxes")(box)
  return keras.Model(inputs, [cls, box], name=name)
