"""Weight-generating Keras layers and a width-aware batch norm.

A MetaPruning layer does not own a kernel: a tiny dense hypernetwork (the
"PruningNet block" of Liu et al., ICCV 2019) maps the layer's encoding -- the
normalized widths the layer touches, e.g. `[c_in / C_in_max, c_out / C_out_max]`
-- to a full-size kernel, which is then sliced from the front to the sampled
`[:, :, :c_in, :c_out]`. Narrow structures reuse the leading channels.

The generator is `Dense(k -> h) -> ReLU -> Dense(h -> C_out_max * C_in_max * kh * kw)`
as in the paper. We write its second bias as `base_kernel` and initialize the
second kernel to zero, so an untrained generator is exactly a weight-sharing
network with a He-initialized kernel and `hidden_units=0` *is* plain weight
sharing (the ablation of the paper's RQ5).

Call the layers with keyword tensors (Keras 3 refuses non-tensor positional
arguments): `layer(x, encoding=enc, out_channels=c_out)`; widths are int32
tensors so that one trace serves every structure.

Example:

  >>> conv = GeneratedConv2D(max_in_channels=16, max_out_channels=32, kernel_size=3)
  >>> y = conv(tf.zeros([2, 8, 8, 12]), encoding=tf.constant([0.75, 0.5]),
  ...          out_channels=tf.constant(16))
  >>> y.shape
  TensorShape([2, 8, 8, 16])
"""

import math

import keras
import numpy as np
import tensorflow as tf


def leading(t, sizes):
  """`t[:sizes[0], :sizes[1], ...]` as one Slice op (sizes: ints, -1 = all, or int32 scalars).

  Cheaper to trace than Python slicing, which builds begin/end/stride packs per
  call; deep PruningNets slice hundreds of times per trace.
  """
  if all(isinstance(v, int) for v in sizes):
    size = list(sizes)
  else:
    size = tf.stack([tf.constant(v, tf.int32) if isinstance(v, int) else tf.cast(v, tf.int32) for v in sizes])
  out = tf.slice(t, [0] * len(sizes), size)
  # A size tensor hides every static dimension; keep those given as ints (-1: the input's), so a kernel's
  # window stays known and a strided "valid" conv keeps its output's static height and width (a bilinear
  # UpSampling2D further on needs them).
  out.set_shape([t.shape[i] if isinstance(v, int) and v == -1 else (v if isinstance(v, int) else None)
                 for i, v in enumerate(sizes)])
  return out


def _take(v, channels, index):
  """The leading `channels` entries of vector `v`, or its entries at `index`."""
  return leading(v, [channels]) if index is None else tf.gather(v, index)


def _int_or_pair(v):
  if isinstance(v, (list, tuple)):
    if len(v) != 2:
      raise ValueError(f"expected an int or an (height, width) pair, got {v!r}")
    return int(v[0]) if v[0] == v[1] else (int(v[0]), int(v[1]))
  return int(v)


def _hw(v):
  return (v, v) if isinstance(v, int) else tuple(v)


def _check_padding(padding):
  if str(padding).lower() not in ("same", "valid"):
    raise ValueError(f"padding={padding!r} must be 'same' or 'valid'")
  return str(padding).lower()


class _Generator(keras.layers.Layer):
  """Shared base: builds `base_kernel` and the hypernetwork, and generates kernels."""

  def __init__(self, kernel_shape, encoding_size, hidden_units=32, fan_in=1, **kwargs):
    super().__init__(**kwargs)
    self.hidden_units = int(hidden_units)
    if self.hidden_units < 0:
      raise ValueError(f"hidden_units={hidden_units!r} must be >= 0 (0 = plain weight sharing)")
    self._kernel_shape = tuple(int(d) for d in kernel_shape)
    self._encoding_size = int(encoding_size)
    self._fan_in = int(fan_in)

  def _build_generator(self):
    stddev = math.sqrt(2.0 / max(1, self._fan_in))  # He normal at full width
    self.base_kernel = self.add_weight(
        name="base_kernel", shape=self._kernel_shape,
        initializer=keras.initializers.TruncatedNormal(stddev=stddev / 0.87962566103423978))
    if self.hidden_units:
      size = int(np.prod(self._kernel_shape))
      self.gen_hidden_kernel = self.add_weight(
          name="gen_hidden_kernel", shape=(self._encoding_size, self.hidden_units),
          initializer="glorot_uniform")
      self.gen_hidden_bias = self.add_weight(
          name="gen_hidden_bias", shape=(self.hidden_units,), initializer=keras.initializers.Constant(0.1))
      self.gen_out_kernel = self.add_weight(
          name="gen_out_kernel", shape=(self.hidden_units, size), initializer="zeros")

  def generated_kernel(self, encoding):
    """The full-size kernel for `encoding` (float [encoding_size])."""
    if not self.hidden_units:
      return self.base_kernel
    with tf.name_scope("generator"):  # benchmarks/profile_step.py files these ops under the generator
      enc = tf.reshape(tf.cast(encoding, self.base_kernel.dtype), [1, self._encoding_size])
      hidden = tf.nn.relu(tf.matmul(enc, self.gen_hidden_kernel) + self.gen_hidden_bias)
      # Scaled by 1/sqrt(h): without it, every generated weight moves sqrt(h) to h times
      # faster than a plain kernel under the same learning rate (SGD: by |hidden|^2; Adam:
      # by h * lr per step), which made deep PruningNets diverge (measured on MobileNetV2).
      # The scale is applied to the h hidden units, not to the kernel-sized product: the same
      # delta (up to rounding) without a pass over the whole kernel forward and backward.
      hidden = hidden * (1.0 / math.sqrt(self.hidden_units))
      delta = tf.reshape(tf.matmul(hidden, self.gen_out_kernel), self._kernel_shape)
      return self.base_kernel + delta

  def generator_params(self):
    """Weights of the hypernetwork (0 when hidden_units=0)."""
    if not self.hidden_units:
      return 0
    return sum(int(np.prod(w.shape)) for w in (self.gen_hidden_kernel, self.gen_hidden_bias, self.gen_out_kernel))

  def compute_output_spec(self, x, **kwargs):
    raise NotImplementedError(f"{type(self).__name__} has data-dependent output channels; call it on tensors")


@keras.saving.register_keras_serializable(package="tf_metaprune")
class GeneratedConv2D(_Generator):
  """A conv whose kernel is generated from the layer encoding and sliced to width.

  Args:
    max_in_channels: input channels at full width.
    max_out_channels: output channels at full width.
    kernel_size: kernel size, an int or (height, width).
    strides: stride, an int or (height, width).
    hidden_units: the generator's hidden size (paper: 32; 0 = weight sharing).
    encoding_size: length of the encoding vector (default 2: in and out ratio).
    padding: "same" or "valid".
    dilation_rate: an int or (height, width).
    use_bias: add a (shared, sliced) bias.

  Call args:
    x: [B, H, W, c_in] with c_in <= max_in_channels (the input is already sliced).
    encoding: float [encoding_size].
    out_channels: int32 scalar tensor, c_out <= max_out_channels.
    in_index: optional int32 [c_in]: which rows of the full kernel the input
      channels are (for an input concatenated from several pruned tensors);
      default: the leading c_in rows.
  """

  def __init__(self, max_in_channels, max_out_channels, kernel_size=3, strides=1, hidden_units=32,
               encoding_size=2, padding="same", dilation_rate=1, use_bias=False, **kwargs):
    self.max_in_channels = int(max_in_channels)
    self.max_out_channels = int(max_out_channels)
    self.kernel_size = _int_or_pair(kernel_size)
    self.strides = _int_or_pair(strides)
    self.padding = _check_padding(padding)
    self.dilation_rate = _int_or_pair(dilation_rate)
    self.use_bias = bool(use_bias)
    kh, kw = _hw(self.kernel_size)
    shape = (kh, kw, self.max_in_channels, self.max_out_channels)
    super().__init__(shape, encoding_size, hidden_units, fan_in=kh * kw * self.max_in_channels, **kwargs)

  def build(self, input_shape=None):
    self._build_generator()
    if self.use_bias:
      self.bias = self.add_weight(name="bias", shape=(self.max_out_channels,), initializer="zeros")
    self.built = True

  def sliced_kernel(self, encoding, in_channels, out_channels, in_index=None):
    kernel = self.generated_kernel(encoding)
    if in_index is not None:
      return leading(tf.gather(kernel, in_index, axis=2), [-1, -1, -1, out_channels])
    return leading(kernel, [-1, -1, in_channels, out_channels])

  @tf.autograph.experimental.do_not_convert
  def call(self, x, encoding=None, out_channels=None, in_index=None):
    kernel = self.sliced_kernel(encoding, tf.shape(x)[-1], out_channels, in_index)
    y = tf.nn.conv2d(x, kernel, strides=list(_hw(self.strides)), padding=self.padding.upper(),
                     dilations=list(_hw(self.dilation_rate)))
    return y + leading(self.bias, [out_channels]) if self.use_bias else y

  def get_config(self):
    config = super().get_config()
    config.update(max_in_channels=self.max_in_channels, max_out_channels=self.max_out_channels,
                  kernel_size=self.kernel_size, strides=self.strides, hidden_units=self.hidden_units,
                  encoding_size=self._encoding_size, padding=self.padding, dilation_rate=self.dilation_rate,
                  use_bias=self.use_bias)
    return config


@keras.saving.register_keras_serializable(package="tf_metaprune")
class GeneratedConv2DTranspose(GeneratedConv2D):
  """A transposed conv (learned upsampling) whose kernel is generated and sliced like `GeneratedConv2D`'s.

  The generated kernel is kept as (kh, kw, c_in, c_out), the layout every
  other generated conv uses (so slicing, reordering and importance need
  nothing new), and transposed to the (kh, kw, c_out, c_in) that
  `tf.nn.conv2d_transpose` (and `keras.layers.Conv2DTranspose`) take. Output
  size: Keras' rule without `output_padding` -- "same": H * stride;
  "valid": H * stride + max(kernel - stride, 0). Dilation is not supported.

  Args and call args: as `GeneratedConv2D` (`dilation_rate` must be 1).
  """

  def __init__(self, max_in_channels, max_out_channels, kernel_size=3, strides=1, hidden_units=32,
               encoding_size=2, padding="same", dilation_rate=1, use_bias=False, **kwargs):
    if _hw(_int_or_pair(dilation_rate)) != (1, 1):
      raise ValueError(f"GeneratedConv2DTranspose: dilation_rate={dilation_rate!r} is not supported (only 1)")
    super().__init__(max_in_channels, max_out_channels, kernel_size, strides, hidden_units, encoding_size, padding,
                     1, use_bias, **kwargs)

  @tf.autograph.experimental.do_not_convert
  def call(self, x, encoding=None, out_channels=None, in_index=None):
    kernel = tf.transpose(self.sliced_kernel(encoding, tf.shape(x)[-1], out_channels, in_index), [0, 1, 3, 2])
    (sh, sw), (kh, kw) = _hw(self.strides), _hw(self.kernel_size)
    shape = tf.shape(x)
    if self.padding == "same":
      out_h, out_w = shape[1] * sh, shape[2] * sw
    else:
      out_h, out_w = shape[1] * sh + max(kh - sh, 0), shape[2] * sw + max(kw - sw, 0)
    out_shape = tf.stack([shape[0], out_h, out_w, tf.cast(out_channels, tf.int32)])
    y = tf.nn.conv2d_transpose(x, kernel, out_shape, strides=[1, sh, sw, 1], padding=self.padding.upper())
    return y + leading(self.bias, [out_channels]) if self.use_bias else y


@keras.saving.register_keras_serializable(package="tf_metaprune")
class GeneratedDepthwiseConv2D(_Generator):
  """A depthwise conv whose kernel is generated and sliced on its channel axis.

  Args:
    max_channels: channels at full width.
    kernel_size, strides: as in `keras.layers.DepthwiseConv2D` (ints or pairs).
    hidden_units: generator hidden size (0 = weight sharing).
    encoding_size: default 1 (the channel ratio).
    padding: "same" or "valid".
    dilation_rate: an int or (height, width).
    use_bias: add a per-channel bias.

  Call args:
    x: [B, H, W, c]; the kernel is sliced to c.
    encoding: float [encoding_size].
    in_index: optional int32 [c]: the full-width channels x holds (default:
      the leading c).
  """

  def __init__(self, max_channels, kernel_size=3, strides=1, hidden_units=32, encoding_size=1, padding="same",
               dilation_rate=1, use_bias=False, **kwargs):
    self.max_channels = int(max_channels)
    self.kernel_size = _int_or_pair(kernel_size)
    self.strides = _int_or_pair(strides)
    self.padding = _check_padding(padding)
    self.dilation_rate = _int_or_pair(dilation_rate)
    self.use_bias = bool(use_bias)
    kh, kw = _hw(self.kernel_size)
    shape = (kh, kw, self.max_channels, 1)
    super().__init__(shape, encoding_size, hidden_units, fan_in=kh * kw, **kwargs)

  def build(self, input_shape=None):
    self._build_generator()
    if self.use_bias:
      self.bias = self.add_weight(name="bias", shape=(self.max_channels,), initializer="zeros")
    self.built = True

  def sliced_kernel(self, encoding, channels, in_index=None):
    if in_index is not None:
      return tf.gather(self.generated_kernel(encoding), in_index, axis=2)
    return leading(self.generated_kernel(encoding), [-1, -1, channels, -1])

  def sliced_bias(self, channels, in_index=None):
    return tf.gather(self.bias, in_index) if in_index is not None else leading(self.bias, [channels])

  @tf.autograph.experimental.do_not_convert
  def call(self, x, encoding=None, in_index=None):
    channels = tf.shape(x)[-1]
    kernel = self.sliced_kernel(encoding, channels, in_index)
    sh, sw = _hw(self.strides)
    y = tf.nn.depthwise_conv2d(x, kernel, strides=[1, sh, sw, 1], padding=self.padding.upper(),
                               dilations=list(_hw(self.dilation_rate)))
    return y + self.sliced_bias(channels, in_index) if self.use_bias else y

  def get_config(self):
    config = super().get_config()
    config.update(max_channels=self.max_channels, kernel_size=self.kernel_size, strides=self.strides,
                  hidden_units=self.hidden_units, encoding_size=self._encoding_size, padding=self.padding,
                  dilation_rate=self.dilation_rate, use_bias=self.use_bias)
    return config


@keras.saving.register_keras_serializable(package="tf_metaprune")
class GeneratedDense(_Generator):
  """A dense layer whose kernel is generated and sliced; the bias is shared.

  Call args:
    x: [B, c_in].
    encoding: float [encoding_size].
    out_channels: int32 scalar tensor.
    in_index: optional int32 [c_in]: the kernel rows of the input features
      (default: the leading c_in).
  """

  def __init__(self, max_in_channels, max_out_channels, hidden_units=32, encoding_size=2, use_bias=True,
               **kwargs):
    self.max_in_channels = int(max_in_channels)
    self.max_out_channels = int(max_out_channels)
    self.use_bias = bool(use_bias)
    super().__init__((self.max_in_channels, self.max_out_channels), encoding_size, hidden_units,
                     fan_in=self.max_in_channels / 2, **kwargs)  # glorot-like scale for logits

  def build(self, input_shape=None):
    self._build_generator()
    if self.use_bias:
      self.bias = self.add_weight(name="bias", shape=(self.max_out_channels,), initializer="zeros")
    self.built = True

  def sliced_kernel(self, encoding, in_channels, out_channels, in_index=None):
    kernel = self.generated_kernel(encoding)
    if in_index is not None:
      return leading(tf.gather(kernel, in_index, axis=0), [-1, out_channels])
    return leading(kernel, [in_channels, out_channels])

  @tf.autograph.experimental.do_not_convert
  def call(self, x, encoding=None, out_channels=None, in_index=None):
    kernel = self.sliced_kernel(encoding, tf.shape(x)[-1], out_channels, in_index)
    y = tf.matmul(x, kernel)
    return y + leading(self.bias, [out_channels]) if self.use_bias else y

  def get_config(self):
    config = super().get_config()
    config.update(max_in_channels=self.max_in_channels, max_out_channels=self.max_out_channels,
                  hidden_units=self.hidden_units, encoding_size=self._encoding_size, use_bias=self.use_bias)
    return config


@keras.saving.register_keras_serializable(package="tf_metaprune")
class WidthBatchNorm(keras.layers.Layer):
  """Batch norm for a layer whose width changes from step to step.

  Statistics: in training mode the layer normalizes with the moments of the
  current batch (the only meaningful choice for a random structure); in
  inference mode it uses `moving_mean` / `moving_variance`, which hold the
  statistics of ONE structure and are filled by `tf_metaprune.calibration`
  (an exact average over a few batches, not an EMA). They are kept at full
  width; a narrower structure uses the leading entries.

  Affine parameters (`mode`):
    * "switchable" (the paper's choice): one gamma/beta row per width choice of
      the layer's gene, selected by the choice index;
    * "shared": one gamma/beta sliced to the width, like slimmable networks
      without private BN.

  Args:
    max_channels: channels at full width.
    num_choices: number of width choices of the gene (1 for a fixed width).
    mode: "switchable" or "shared".
    affine: learn gamma/beta (False: plain normalization, as the reference
      does for ResNet and MobileNetV2).
    epsilon: as in `keras.layers.BatchNormalization` (1e-3).

  Call args:
    x: [B, H, W, c] (or [B, c]).
    choice: int32 scalar tensor, the gene's choice index (used in "switchable").
    training: batch statistics if True, moving statistics otherwise.
    stats: optional (mean, variance) padded to `max_channels`, overriding both.
    return_moments: also return the batch (mean, mean of squares), padded to
      `max_channels` (used by recalibration).
    in_index: optional int32 [c]: the full-width channels x holds (after a
      concatenation of pruned tensors); default: the leading c.
    synchronized: in training mode under a `tf.distribute` strategy with
      several replicas, normalize with the moments of the *global* batch:
      per-channel sums, sums of squares and counts are summed over all
      replicas (one all-reduce of max_channels*2+1 floats) -- a step on R
      replicas then equals the step on one device with the same global
      batch. No effect with one replica.
  """

  def __init__(self, max_channels, num_choices=1, mode="switchable", affine=True, epsilon=1e-3, **kwargs):
    super().__init__(**kwargs)
    if mode not in ("switchable", "shared"):
      raise ValueError(f"WidthBatchNorm mode={mode!r} must be 'switchable' or 'shared'")
    self.max_channels = int(max_channels)
    self.num_choices = int(num_choices)
    self.mode = mode
    self.affine = bool(affine)
    self.epsilon = float(epsilon)

  def build(self, input_shape=None):
    if self.affine:
      rows = self.num_choices if self.mode == "switchable" else 1
      self.gamma = self.add_weight(name="gamma", shape=(rows, self.max_channels), initializer="ones")
      self.beta = self.add_weight(name="beta", shape=(rows, self.max_channels), initializer="zeros")
    self.moving_mean = self.add_weight(name="moving_mean", shape=(self.max_channels,), initializer="zeros",
                                       trainable=False)
    self.moving_variance = self.add_weight(name="moving_variance", shape=(self.max_channels,),
                                           initializer="ones", trainable=False)
    self.built = True

  def affine_params(self, choice, channels, in_index=None):
    """(gamma, beta) sliced to `channels` for gene choice `choice` (None, None if not affine)."""
    if not self.affine:
      return None, None
    if self.mode == "switchable":
      gamma, beta = tf.gather(self.gamma, choice), tf.gather(self.beta, choice)
    else:
      gamma, beta = self.gamma[0], self.beta[0]
    return _take(gamma, channels, in_index), _take(beta, channels, in_index)

  @tf.autograph.experimental.do_not_convert
  def call(self, x, choice=None, training=None, stats=None, return_moments=False, in_index=None,
           synchronized=False):
    channels = tf.shape(x)[-1]
    axes = list(range(len(x.shape) - 1))
    if choice is None:
      choice = tf.constant(0, tf.int32)
    gamma, beta = self.affine_params(choice, channels, in_index)
    if stats is not None:
      mean, var = _take(stats[0], channels, in_index), _take(stats[1], channels, in_index)
    elif training and synchronized and _num_replicas() > 1:
      mean, var = self._global_moments(x, axes, channels)
    elif training and not return_moments:
      return _normalize_with_batch_moments(x, gamma, beta, self.epsilon)
    elif training:
      mean, var = tf.nn.moments(x, axes)
    else:
      mean, var = _take(self.moving_mean, channels, in_index), _take(self.moving_variance, channels, in_index)
    y = tf.nn.batch_normalization(x, mean, var, beta, gamma, self.epsilon)
    if not return_moments:
      return y
    if stats is not None or not training:
      mean, var = tf.nn.moments(x, axes)
    if in_index is not None:
      shape = [self.max_channels]
      return y, (tf.scatter_nd(in_index[:, None], mean, shape),
                 tf.scatter_nd(in_index[:, None], var + tf.square(mean), shape))
    pad = [[0, self.max_channels - channels]]
    # Static shape [max_channels]: recalibration sums these in a loop whose state must keep one
    # shape (with max_channels == 1 TF could not infer it, and the loop refused to trace).
    return y, (tf.reshape(tf.pad(mean, pad), [self.max_channels]),
               tf.reshape(tf.pad(var + tf.square(mean), pad), [self.max_channels]))

  def _global_moments(self, x, axes, channels):
    """Mean and variance over the global batch: exact sums all-reduced across replicas."""
    pad = [[0, self.max_channels - channels]]
    local = tf.concat([tf.pad(tf.reduce_sum(x, axes), pad), tf.pad(tf.reduce_sum(tf.square(x), axes), pad),
                       [tf.cast(tf.size(x) // channels, x.dtype)]], axis=0)
    total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, local)
    count = tf.maximum(total[-1], 1.0)
    mean = leading(total, [channels]) / count
    mean_sq = tf.slice(total, [self.max_channels], tf.reshape(channels, [1])) / count
    return mean, tf.maximum(mean_sq - tf.square(mean), 0.0)

  def compute_output_spec(self, x, **kwargs):
    raise NotImplementedError("WidthBatchNorm is called on tensors by PruningNet")

  def get_config(self):
    config = super().get_config()
    config.update(max_channels=self.max_channels, num_choices=self.num_choices, mode=self.mode,
                  affine=self.affine, epsilon=self.epsilon)
    return config


def _normalize_with_batch_moments(x, gamma, beta, epsilon):
  """Training-mode batch norm of `x` over all axes but the last, with a hand-written gradient.

  The forward pass is `tf.nn.moments` + `tf.nn.batch_normalization`, op for op
  (same values). The gradient is the closed form
    dbeta = sum(dy),  dgamma = rstd * (sum(dy * x) - mean * sum(dy)),
    dx = k * dy + a * x + c  with k = gamma * rstd, a = -k * rstd * dgamma / n,
         c = k * (mean * rstd * dgamma - dbeta) / n,
  which reads and writes the activations about half as often as the gradient
  TF derives from the forward ops (that one broadcasts the per-channel terms
  back to full size several times): batch norm was 17-46% of a PruningNet
  step's op time (`python benchmarks/profile_step.py`). `gamma`/`beta` may be
  None (non-affine: 1 and 0).
  """
  axes = list(range(len(x.shape) - 1))
  affine = gamma is not None

  def forward(x, gamma, beta):
    mean = tf.reduce_mean(x, axes)
    var = tf.reduce_mean(tf.math.squared_difference(x, mean), axes)
    rstd = tf.math.rsqrt(var + epsilon)
    k = rstd * gamma if affine else rstd
    shift = beta - mean * k if affine else -mean * k
    y = x * k + shift

    def grad(dy):
      with tf.name_scope("batch_norm_grad"):  # (TF names custom-gradient ops at the top level otherwise)
        n = tf.cast(tf.size(x) // tf.shape(x)[-1], x.dtype)
        dbeta = tf.reduce_sum(dy, axes)
        dgamma = rstd * (tf.reduce_sum(dy * x, axes) - mean * dbeta)
        a = -k * rstd * dgamma / n
        c = k * (mean * rstd * dgamma - dbeta) / n
        dx = dy * k + (x * a + c)
        return (dx, dgamma, dbeta) if affine else dx

    return y, grad

  with tf.name_scope("batch_norm"):
    if affine:
      return tf.custom_gradient(forward)(x, gamma, beta)
    return tf.custom_gradient(lambda x: forward(x, None, None))(x)


def _num_replicas():
  ctx = tf.distribute.get_replica_context()
  return 1 if ctx is None else int(ctx.num_replicas_in_sync)
