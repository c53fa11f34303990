"""Tests of tf_metaprune.layers: slicing, generation, serialization."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_metaprune as tfmp

_LAYERS = [
    tfmp.GeneratedConv2D(6, 10, kernel_size=3, strides=2, hidden_units=4),
    tfmp.GeneratedDepthwiseConv2D(6, kernel_size=3, hidden_units=0),
    tfmp.GeneratedDense(6, 5, hidden_units=3),
    tfmp.WidthBatchNorm(10, num_choices=4, mode="shared", affine=False),
]


@pytest.mark.parametrize("layer", _LAYERS, ids=lambda l: type(l).__name__)
def test_layer_config_round_trips_through_json(layer):
  config = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
  again = keras.saving.deserialize_keras_object(config)
  assert type(again) is type(layer) and again.get_config() == layer.get_config()


def test_conv_output_has_sampled_width_and_uses_leading_channels():
  conv = tfmp.GeneratedConv2D(8, 16, kernel_size=3, hidden_units=0)
  conv.build()
  x = tf.random.normal([2, 5, 5, 3])
  y = conv(x, encoding=tf.constant([0.375, 0.25]), out_channels=tf.constant(4))
  assert y.shape == (2, 5, 5, 4)
  expected = tf.nn.conv2d(x, conv.base_kernel[:, :, :3, :4], 1, "SAME")
  np.testing.assert_allclose(y.numpy(), expected.numpy(), atol=1e-5)


def test_generator_output_depends_on_the_encoding_after_training_its_weights():
  conv = tfmp.GeneratedConv2D(4, 4, kernel_size=1, hidden_units=3)
  conv.build()
  # Untrained generator == weight sharing (second kernel initialised to zero).
  a = conv.generated_kernel(tf.constant([0.5, 0.5]))
  np.testing.assert_allclose(a.numpy(), conv.base_kernel.numpy())
  conv.gen_hidden_kernel.assign([[1.0, 0.5, -0.3], [0.2, -0.4, 1.0]])   # no dead ReLU units
  conv.gen_out_kernel.assign(tf.random.normal(conv.gen_out_kernel.shape, seed=1))
  b = conv.generated_kernel(tf.constant([0.5, 0.5]))
  c = conv.generated_kernel(tf.constant([1.0, 0.25]))
  assert np.abs(b.numpy() - c.numpy()).max() > 1e-3


def test_generator_params_scale_with_hidden_units():
  conv = tfmp.GeneratedConv2D(8, 8, kernel_size=3, hidden_units=32)
  conv.build()
  assert conv.generator_params() == 2 * 32 + 32 + 32 * 3 * 3 * 8 * 8
  none = tfmp.GeneratedConv2D(8, 8, kernel_size=3, hidden_units=0)
  none.build()
  assert none.generator_params() == 0


def test_negative_hidden_units_is_rejected():
  with pytest.raises(ValueError, match="hidden_units=-1"):
    tfmp.GeneratedConv2D(8, 8, hidden_units=-1)


def test_switchable_bn_selects_affine_row_by_choice():
  bn = tfmp.WidthBatchNorm(4, num_choices=3, mode="switchable")
  bn.build()
  bn.gamma.assign(np.arange(12, dtype=np.float32).reshape(3, 4) + 1)
  x = tf.random.normal([8, 2])
  y0 = bn(x, choice=tf.constant(0), training=True)
  y2 = bn(x, choice=tf.constant(2), training=True)
  norm = (x - tf.reduce_mean(x, 0)) / tf.sqrt(tf.math.reduce_variance(x, 0) + 1e-3)
  np.testing.assert_allclose(y0.numpy(), (norm * [1, 2]).numpy(), atol=1e-4)
  np.testing.assert_allclose(y2.numpy(), (norm * [9, 10]).numpy(), atol=1e-4)


def test_bn_inference_uses_leading_moving_statistics():
  bn = tfmp.WidthBatchNorm(4, affine=False)
  bn.build()
  bn.moving_mean.assign([1.0, 2.0, 3.0, 4.0])
  bn.moving_variance.assign([4.0, 4.0, 4.0, 4.0])
  y = bn(tf.constant([[3.0, 4.0]]), training=False)
  np.testing.assert_allclose(y.numpy(), [[2 / np.sqrt(4.001), 2 / np.sqrt(4.001)]], rtol=1e-5)


@pytest.mark.parametrize("shape, affine", [((4, 5, 5, 6), True), ((4, 5, 5, 6), False), ((7, 6), True)])
def test_training_bn_matches_tf_moments_and_its_autodiff_gradient(shape, affine):
  # WidthBatchNorm's training path has a hand-written gradient; it must equal TF's own.
  bn = tfmp.layers.WidthBatchNorm(8, affine=affine)
  bn.build()
  if affine:
    bn.gamma.assign(np.random.RandomState(1).uniform(0.5, 2, (1, 8)))
    bn.beta.assign(np.random.RandomState(2).randn(1, 8))
  x = tf.constant(np.random.RandomState(0).randn(*shape) * 3 + 1, tf.float32)
  w = tf.constant(np.random.RandomState(3).randn(*shape), tf.float32)
  c = shape[-1]

  def reference(x):
    mean, var = tf.nn.moments(x, list(range(len(shape) - 1)))
    gamma, beta = (bn.gamma[0, :c], bn.beta[0, :c]) if affine else (None, None)
    return tf.nn.batch_normalization(x, mean, var, beta, gamma, bn.epsilon)

  results = []
  for f in (lambda x: bn(x, training=True), reference):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = f(x)
      loss = tf.reduce_sum(tf.sin(y) * w)
    results.append([y] + tape.gradient(loss, [x] + bn.trainable_weights))
  assert len(results[0]) == (4 if affine else 2)
  for got, want in zip(*results):
    np.testing.assert_allclose(tf.convert_to_tensor(got).numpy(), tf.convert_to_tensor(want).numpy(), atol=1e-5)
