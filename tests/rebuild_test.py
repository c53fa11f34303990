"""Tests of tf_metaprune.rebuild: the plain model equals the PruningNet's structure."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_metaprune as tfmp


@pytest.mark.parametrize("family,kwargs", [
    ("small_cnn", dict(channels=(8, 12, 16, 16), divisor=1)),
    ("mobilenet_v2", dict(width_multiplier=0.25, divisor=4)),
    ("resnet20", dict(width_multiplier=0.5, divisor=2)),
    ("mobilenet_v1", dict(width_multiplier=0.125, divisor=4)),
])
def test_rebuilt_model_matches_pruning_net_logits(family, kwargs):
  space = tfmp.models.get(family)((16, 16, 3), 5, **kwargs)
  net = tfmp.PruningNet(space, hidden_units=3, bn_mode="shared" if family == "mobilenet_v1" else "switchable")
  # Give the generators and BN affine parameters non-trivial values.
  rng = np.random.default_rng(0)
  for v in net.trainable_variables:
    v.assign(v.numpy() + 0.05 * rng.standard_normal(v.shape).astype(np.float32))
  x = rng.random((24, 16, 16, 3), dtype=np.float32)
  for seed in range(3):
    s = space.random(seed=seed)
    net.recalibrate(s, x)
    model = tfmp.rebuild(net, s)
    expected = net.call_structure(x, s).numpy()
    got = model(x, training=False).numpy()
    # float32 sums in a different order (sliced vs. plain kernels) differ by ~1e-4 after 14
    # layers on some CPUs; a wrong slice or BN statistic is off by O(1).
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, atol=1e-3 * scale, rtol=1e-3)
    assert tfmp.count_flops(model) / 1e6 == pytest.approx(space.mflops(s), rel=1e-12)


def test_rebuilt_model_uses_only_standard_keras_layers():
  space = tfmp.models.mobilenet_v2((16, 16, 3), 5, width_multiplier=0.25)
  model = tfmp.rebuild(space, space.uniform(0.5))
  allowed = (keras.layers.InputLayer, keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
             keras.layers.BatchNormalization, keras.layers.ReLU, keras.layers.Add,
             keras.layers.GlobalAveragePooling2D, keras.layers.Dense, keras.layers.MaxPooling2D)
  assert all(isinstance(l, allowed) for l in model.layers)
  assert model.get_layer("stage2_block2_add") is not None   # names follow the space's nodes


def test_rebuild_from_space_is_fresh_and_copy_needs_a_net():
  space = tfmp.models.small_cnn((8, 8, 1), 2, channels=(8, 8, 8, 8), divisor=1)
  with pytest.raises(ValueError, match="copy_weights=True needs a PruningNet"):
    tfmp.rebuild(space, space.largest(), copy_weights=True)
  a = tfmp.rebuild(space, space.largest())
  b = tfmp.rebuild(space, space.largest())
  assert a is not b and a.count_params() == b.count_params()


def test_rebuild_rejects_structure_of_wrong_length():
  space = tfmp.models.small_cnn((8, 8, 1), 2, channels=(8, 8, 8, 8), divisor=1)
  with pytest.raises(ValueError, match="has 4 genes"):
    tfmp.rebuild(space, [0, 0])
