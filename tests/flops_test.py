"""Tests of tf_metaprune.flops: known answers and agreement of all three counts."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_metaprune as tfmp
from tf_metaprune import flops


def test_conv2d_known_answer():
  x = keras.Input((8, 8, 3))
  y = keras.layers.Conv2D(16, 3, strides=2, padding="same")(x)   # 4x4 out
  m = keras.Model(x, y)
  assert tfmp.count_flops(m) == 4 * 4 * 3 * 3 * 3 * 16


def test_depthwise_conv2d_known_answer():
  x = keras.Input((10, 10, 6))
  y = keras.layers.DepthwiseConv2D(3, padding="same")(x)
  assert tfmp.count_flops(keras.Model(x, y)) == 10 * 10 * 3 * 3 * 6


def test_dense_known_answer():
  x = keras.Input((20,))
  y = keras.layers.Dense(7)(x)
  assert tfmp.count_flops(keras.Model(x, y)) == 140


def test_space_count_known_answer_for_tiny_cnn():
  space = tfmp.models.small_cnn((8, 8, 1), 2, channels=(4, 4, 4, 4), divisor=1)
  s = space.largest()
  # conv1 8x8, conv2 4x4, conv3 2x2, conv4 2x2 (3x3 kernels), dense 4->2
  expected = 64 * 9 * 1 * 4 + 16 * 9 * 4 * 4 + 4 * 9 * 4 * 4 + 4 * 9 * 4 * 4 + 4 * 2
  assert flops.structure_flops(space, s) == expected
  params = (9 * 4 + 4 * 4) + 3 * (9 * 16 + 4 * 4) + (4 * 2 + 2)
  assert space.params(s) == params


@pytest.mark.parametrize("family", ["small_cnn", "mobilenet_v1", "mobilenet_v2", "resnet20", "resnet50"])
def test_space_count_equals_count_of_rebuilt_model(family):
  kwargs = {} if family in ("small_cnn", "resnet20") else {"width_multiplier": 0.25}
  space = tfmp.models.get(family)((32, 32, 3), 10, **kwargs)
  for s in (space.largest(), space.random(seed=0), space.smallest()):
    model = tfmp.rebuild(space, s)
    assert tfmp.count_flops(model) == flops.structure_flops(space, s)
    assert model.count_params() == space.params(s)


def test_in_graph_count_equals_numpy_count_for_a_population():
  space = tfmp.models.mobilenet_v2((32, 32, 3), 10, width_multiplier=0.5)
  pop = [space.random(seed=i) for i in range(5)]
  counter = flops.SpaceCounter(space)
  fn = tf.function(lambda c: (counter.mflops(c), counter.params(c)))
  mf, pa = fn(tf.constant([list(s) for s in pop], tf.int32))
  np.testing.assert_allclose(mf.numpy(), [space.mflops(s) for s in pop], rtol=1e-12)
  np.testing.assert_allclose(pa.numpy(), [space.params(s) for s in pop], rtol=1e-12)


def test_in_graph_exact_count_is_integer_and_equals_numpy():
  space = tfmp.models.resnet20((32, 32, 3), 10)
  counter = flops.SpaceCounter(space)
  s = space.random(seed=9)
  got = tf.function(counter.flops)(tf.constant([list(s)], tf.int32)).numpy()[0]
  assert got == flops.structure_flops(space, s) and float(got).is_integer()
