"""Search spaces of the built-in families (see `tf_metaprune.models`)."""

import numpy as np

from tf_metaprune.space import SpaceBuilder


def _make_divisible(value, divisor=8):
  """Rounds a width-multiplied channel count like keras.applications does."""
  new = max(divisor, int(value + divisor / 2) // divisor * divisor)
  if new < 0.9 * value:
    new += divisor
  return int(new)


def _small(input_shape, small_input):
  if small_input is None:
    return min(input_shape[0], input_shape[1]) < 96
  return bool(small_input)


def _check_multiplier(width_multiplier):
  if not float(width_multiplier) > 0:
    raise ValueError(f"width_multiplier={width_multiplier!r} must be > 0")
  return float(width_multiplier)


def small_cnn(input_shape=(28, 28, 1), num_classes=10, channels=(16, 32, 64, 128), width_ratios=None,
              divisor=8, prune_last=True):
  """A plain 4-conv CNN (for tests and quick experiments).

  conv3x3 (stride 1) -> conv3x3 (stride 2) -> conv3x3 (stride 2) -> conv3x3
  (stride 1), each with BN + ReLU and its own gene, then global average
  pooling and a dense classifier.

  Args:
    input_shape: (H, W, C).
    num_classes: classifier outputs.
    channels: full widths of the convs (one gene each).
    width_ratios: each gene's width choices (default: the paper's 31 ratios).
    divisor: channel counts are multiples of this (1 = any count).
    prune_last: make the last conv (the classifier's input) a gene; False
      keeps it at full width, as MetaPruning keeps the last stage.

  Returns:
    A `SearchSpace`.
  """
  b = SpaceBuilder("small_cnn", input_shape, num_classes, width_ratios, divisor)
  x = b.input()
  strides = (1, 2, 2, 1) + (1,) * max(0, len(channels) - 4)
  for i, c in enumerate(channels):
    name = f"conv{i + 1}"
    last = i == len(channels) - 1
    out = c if (last and not prune_last) else b.gene(name, c)
    x = b.conv(name, x, out=out, kernel_size=3, strides=strides[i], activation="relu")
  x = b.gap("pool", x)
  b.dense("logits", x, out=num_classes)
  return b.build()


def mobilenet_v1(input_shape=(224, 224, 3), num_classes=1000, width_multiplier=1.0, width_ratios=None,
                 divisor=8, small_input=None, prune_last_stage=False):
  """MobileNetV1 (Howard et al. 2017): a stem and 13 depthwise-separable blocks.

  Genes: the stem and every pointwise conv. Depthwise convs follow their
  input. As in MetaPruning, the last stage (the two 1024-wide blocks) stays at
  full width unless `prune_last_stage=True`.
  With `small_input` (default for inputs under 96 px) the stem has stride 1
  (total stride 16).

  Args:
    input_shape, num_classes: as usual.
    width_multiplier: scales every base width (keras.applications' alpha).
    width_ratios, divisor: each gene's width choices and rounding.
    small_input: None = decide from the input size.
    prune_last_stage: make the last stage's widths genes too.

  Returns:
    A `SearchSpace`.
  """
  wm = _check_multiplier(width_multiplier)
  b = SpaceBuilder("mobilenet_v1", input_shape, num_classes, width_ratios, divisor)
  x = b.input()
  x = b.conv("stem", x, out=b.gene("stem", _make_divisible(32 * wm)), kernel_size=3,
             strides=1 if _small(input_shape, small_input) else 2, activation="relu6")
  blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
  for i, (c, s) in enumerate(blocks):
    x = b.dwconv(f"block{i + 1}_dw", x, kernel_size=3, strides=s, activation="relu6")
    width = _make_divisible(c * wm)
    last_stage = i >= len(blocks) - 2
    out = width if (last_stage and not prune_last_stage) else b.gene(f"block{i + 1}_pw", width)
    x = b.conv(f"block{i + 1}_pw", x, out=out, kernel_size=1, activation="relu6")
  x = b.gap("pool", x)
  b.dense("logits", x, out=num_classes)
  return b.build()


def mobilenet_v2(input_shape=(224, 224, 3), num_classes=1000, width_multiplier=1.0, width_ratios=None,
                 divisor=8, small_input=None, last_channels=1280, prune_last_conv=True, stage_repeats=None):
  """MobileNetV2 (Sandler et al. 2018): inverted residual blocks.

  Genes (MetaPruning's encoding): the stem; one output gene per stage, shared
  by every projection conv of the stage so each identity add lines up; the
  expansion width of every block; the final 1x1 conv. Depthwise convs follow
  the expansion width.
  With `small_input` (default for inputs under 96 px) the stem and the second
  stage have stride 1 (total stride 8), the usual CIFAR variant.

  Args:
    input_shape, num_classes: as usual.
    width_multiplier: scales every base width (keras.applications' alpha).
    width_ratios, divisor: each gene's width choices and rounding.
    small_input: None = decide from the input size.
    last_channels: width of the final 1x1 conv at multiplier <= 1.
    prune_last_conv: make the final 1x1 conv's width a gene.
    stage_repeats: blocks per stage, 7 ints (default: the paper's
      1, 2, 3, 4, 3, 3, 1); e.g. (1, 1, 1, 1, 1, 1, 1) is a shallow
      MobileNetV2-style net that trains in minutes on a CPU. A stage with 0
      blocks is skipped.

  Returns:
    A `SearchSpace`.
  """
  wm = _check_multiplier(width_multiplier)
  small = _small(input_shape, small_input)
  repeats = (1, 2, 3, 4, 3, 3, 1) if stage_repeats is None else tuple(stage_repeats)
  if len(repeats) != 7 or any(not isinstance(r, (int, np.integer)) or r < 0 for r in repeats) or sum(repeats) < 1:
    raise ValueError(f"stage_repeats={stage_repeats!r} must be 7 integers >= 0 (blocks per stage), not all 0; "
                     "the paper's are (1, 2, 3, 4, 3, 3, 1)")
  name = "mobilenet_v2" if stage_repeats is None else "mobilenet_v2_" + "".join(str(r) for r in repeats)
  b = SpaceBuilder(name, input_shape, num_classes, width_ratios, divisor)
  x = b.input()
  stem = _make_divisible(32 * wm)
  x = b.conv("stem", x, out=b.gene("stem", stem), kernel_size=3, strides=1 if small else 2,
             activation="relu6")
  settings = [(1, 16, 1, 1), (6, 24, 2, 1 if small else 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1)]
  settings = [(t, c, n, s) for (t, c, _, s), n in zip(settings, repeats)]
  in_base = stem
  for si, (t, c, n, s) in enumerate(settings):
    if n == 0:
      continue
    out_base = _make_divisible(c * wm)
    stage_gene = b.gene(f"stage{si + 1}", out_base)
    for bi in range(n):
      prefix = f"stage{si + 1}_block{bi + 1}"
      stride = s if bi == 0 else 1
      block_in = x
      h = x
      if t != 1:
        h = b.conv(prefix + "_expand", h, out=b.gene(prefix + "_expand", in_base * t), kernel_size=1,
                   activation="relu6")
      h = b.dwconv(prefix + "_dw", h, kernel_size=3, strides=stride, activation="relu6")
      h = b.conv(prefix + "_project", h, out=stage_gene, kernel_size=1, activation=None)
      if bi > 0:
        h = b.add(prefix + "_add", [block_in, h])
      x = h
      in_base = out_base
  last = _make_divisible(last_channels * wm) if wm > 1.0 else last_channels
  out = b.gene("last_conv", last) if prune_last_conv else last
  x = b.conv("last_conv", x, out=out, kernel_size=1, activation="relu6")
  x = b.gap("pool", x)
  b.dense("logits", x, out=num_classes)
  return b.build()


def _cifar_resnet(name, depth, input_shape, num_classes, width_multiplier, width_ratios, divisor,
                  prune_last_stage):
  wm = _check_multiplier(width_multiplier)
  n = (depth - 2) // 6
  b = SpaceBuilder(name, input_shape, num_classes, width_ratios, divisor)
  x = b.input()
  widths = [_make_divisible(c * wm) for c in (16, 32, 64)]
  genes = []
  for si, w in enumerate(widths):
    last = si == len(widths) - 1
    genes.append(w if (last and not prune_last_stage) else b.gene(f"stage{si + 1}", w))
  x = b.conv("stem", x, out=genes[0], kernel_size=3, activation="relu")
  in_w = widths[0]
  for si, w in enumerate(widths):
    for bi in range(n):
      prefix = f"stage{si + 1}_block{bi + 1}"
      stride = 2 if (si > 0 and bi == 0) else 1
      h = b.conv(prefix + "_conv1", x, out=b.gene(prefix + "_mid", w), kernel_size=3, strides=stride,
                 activation="relu")
      h = b.conv(prefix + "_conv2", h, out=genes[si], kernel_size=3, activation=None)
      shortcut = x
      if stride != 1 or in_w != w:
        shortcut = b.conv(prefix + "_shortcut", x, out=genes[si], kernel_size=1, strides=stride, activation=None)
      x = b.add(prefix + "_add", [shortcut, h], activation="relu")
      in_w = w
  x = b.gap("pool", x)
  b.dense("logits", x, out=num_classes)
  return b.build()


def resnet20(input_shape=(32, 32, 3), num_classes=10, width_multiplier=1.0, width_ratios=None, divisor=8,
             prune_last_stage=False):
  """CIFAR ResNet-20 (He et al. 2016): 3 stages x 3 basic blocks, widths 16/32/64.

  Genes: one output gene per stage (the stem shares stage 1's, because stage
  1's identity adds join them) and one middle-width gene per block. The last
  stage's output stays at full width unless `prune_last_stage=True`
  (MetaPruning's choice for ResNet). Downsampling shortcuts are 1x1 convs + BN.

  Returns:
    A `SearchSpace`.
  """
  return _cifar_resnet("resnet20", 20, input_shape, num_classes, width_multiplier, width_ratios, divisor,
                       prune_last_stage)


def resnet56(input_shape=(32, 32, 3), num_classes=10, width_multiplier=1.0, width_ratios=None, divisor=8,
             prune_last_stage=False):
  """CIFAR ResNet-56: as `resnet20` with 9 blocks per stage."""
  return _cifar_resnet("resnet56", 56, input_shape, num_classes, width_multiplier, width_ratios, divisor,
                       prune_last_stage)


def resnet50(input_shape=(224, 224, 3), num_classes=1000, width_multiplier=1.0, width_ratios=None, divisor=8,
             small_input=None, prune_last_stage=False):
  """ResNet-50 (v1.5: stride on the 3x3 conv) with bottleneck blocks [3, 4, 6, 3].

  Genes: the stem; one output gene per stage; one middle (bottleneck) gene per
  block, shared by its 1x1-reduce and 3x3 convs. The last stage's output
  (2048) stays at full width unless `prune_last_stage=True`.
  With `small_input` (default under 96 px) the stem is a stride-1 3x3 conv
  without max-pooling (total stride 8).

  Returns:
    A `SearchSpace`.
  """
  wm = _check_multiplier(width_multiplier)
  small = _small(input_shape, small_input)
  b = SpaceBuilder("resnet50", input_shape, num_classes, width_ratios, divisor)
  x = b.input()
  stem = _make_divisible(64 * wm)
  if small:
    x = b.conv("stem", x, out=b.gene("stem", stem), kernel_size=3, activation="relu")
  else:
    x = b.conv("stem", x, out=b.gene("stem", stem), kernel_size=7, strides=2, activation="relu")
    x = b.maxpool("stem_pool", x, pool_size=3, strides=2)
  stages = [(64, 256, 3, 1), (128, 512, 4, 2), (256, 1024, 6, 2), (512, 2048, 3, 2)]
  for si, (mid, out, n, s) in enumerate(stages):
    out_w = _make_divisible(out * wm)
    last = si == len(stages) - 1
    gene = out_w if (last and not prune_last_stage) else b.gene(f"stage{si + 1}", out_w)
    for bi in range(n):
      prefix = f"stage{si + 1}_block{bi + 1}"
      stride = s if bi == 0 else 1
      mid_gene = b.gene(prefix + "_mid", _make_divisible(mid * wm))
      h = b.conv(prefix + "_conv1", x, out=mid_gene, kernel_size=1, activation="relu")
      h = b.conv(prefix + "_conv2", h, out=mid_gene, kernel_size=3, strides=stride, activation="relu")
      h = b.conv(prefix + "_conv3", h, out=gene, kernel_size=1, activation=None)
      shortcut = x
      if bi == 0:
        shortcut = b.conv(prefix + "_shortcut", x, out=gene, kernel_size=1, strides=stride, activation=None)
      x = b.add(prefix + "_add", [shortcut, h], activation="relu")
  x = b.gap("pool", x)
  b.dense("logits", x, out=num_classes)
  return b.build()
