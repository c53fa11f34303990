"""Tests of tf_metaprune.calibration: exact BN statistics and candidate scoring."""

import numpy as np
import pytest
import tensorflow as tf

import tf_metaprune as tfmp


def _net():
  space = tfmp.models.small_cnn((10, 10, 1), 3, channels=(6, 8, 8, 8), divisor=1)
  net = tfmp.PruningNet(space, hidden_units=2)
  return space, net


def test_recalibration_is_the_exact_average_over_all_batches():
  space, net = _net()
  rng = np.random.default_rng(0)
  batches = rng.random((3, 8, 10, 10, 1), dtype=np.float32)
  s = space.uniform(0.5)
  n = net.recalibrate(s, batches)
  assert n == 24
  # First BN follows conv1: its input statistics over all 24 images at once.
  conv1 = tfmp.rebuild(net, s).get_layer("conv1")
  pre = conv1(batches.reshape(24, 10, 10, 1)).numpy()
  c = pre.shape[-1]
  bn = net.bn_layers[0]
  np.testing.assert_allclose(bn.moving_mean.numpy()[:c], pre.mean(axis=(0, 1, 2)), atol=1e-5)
  np.testing.assert_allclose(bn.moving_variance.numpy()[:c], pre.var(axis=(0, 1, 2)), atol=1e-4)


def test_evaluator_accuracy_equals_rebuilt_model_accuracy_and_traces_once():
  space, net = _net()
  rng = np.random.default_rng(1)
  x = rng.random((50, 10, 10, 1), dtype=np.float32)
  y = rng.integers(0, 3, 50).astype(np.int32)
  ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)   # last batch has 2 images: padded + masked
  data = tfmp.EvaluationData.from_dataset(ds, num_calibration_batches=3)
  assert data.num_eval_images == 50
  ev = tfmp.Evaluator(net, data)
  for seed in range(3):
    s = space.random(seed=seed)
    acc = ev.accuracy(s)
    net.recalibrate(s, data.calibration_images)
    pred = np.argmax(tfmp.rebuild(net, s)(x, training=False).numpy(), -1)
    assert acc == pytest.approx(np.mean(pred == y), abs=1e-6)
  assert ev.trace_count == 1


def test_empty_calibration_dataset_is_rejected():
  _, net = _net()
  empty = tf.data.Dataset.from_tensor_slices(np.zeros((0, 10, 10, 1), np.float32)).batch(4)
  with pytest.raises(ValueError, match="empty"):
    net.recalibrate(net.space.largest(), empty)


def test_recalibration_traces_for_a_layer_one_channel_wide():
  # Found by tests/properties_test.py: the summing loop lost the static width of a 1-channel BN.
  space = tfmp.models.small_cnn((8, 8, 1), 3, channels=(1, 4, 4, 4), divisor=1)
  net = tfmp.PruningNet(space, hidden_units=0)
  x = np.random.default_rng(0).random((2, 4, 8, 8, 1), dtype=np.float32)
  assert net.recalibrate(space.largest(), x) == 8
  pre = tfmp.rebuild(net, space.largest()).get_layer("conv1")(x.reshape(8, 8, 8, 1)).numpy()
  np.testing.assert_allclose(net.bn_layers[0].moving_mean.numpy(), pre.mean(axis=(0, 1, 2)), atol=1e-5)
