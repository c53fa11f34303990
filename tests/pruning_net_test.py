"""Tests of tf_metaprune.PruningNet: training with fit, sampling, saving."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_metaprune as tfmp

_FAMILIES = {
    "small_cnn": dict(channels=(8, 8, 16, 16), divisor=1),
    "mobilenet_v1": dict(width_multiplier=0.125, divisor=4),
    "mobilenet_v2": dict(width_multiplier=0.125, divisor=4),
    "resnet20": dict(width_multiplier=0.5, divisor=4),
    "resnet56": dict(width_multiplier=0.25, divisor=4),
    "resnet50": dict(width_multiplier=0.125, divisor=8),
}


def _tiny_data(shape=(16, 16, 3), n=32, classes=4):
  rng = np.random.default_rng(0)
  x = rng.random((n,) + shape, dtype=np.float32)
  y = rng.integers(0, classes, n).astype(np.int32)
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def _compile(net):
  net.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])


# Tracing a deep PruningNet's training step costs 15-60 s on 2 cores, so fit runs on three families that
# cover every node kind the built-in spaces use (conv, depthwise, residual add, pooling); every family
# still round-trips through save.
@pytest.mark.parametrize("family", ["small_cnn", "mobilenet_v2", "resnet20"])
def test_families_train_with_fit(family):
  kwargs = dict(_FAMILIES[family])
  if family == "mobilenet_v2":
    kwargs["stage_repeats"] = (1, 2, 1, 1, 1, 1, 1)   # one residual add is enough; 17 blocks trace for 45 s
  space = tfmp.models.get(family)((16, 16, 3), 4, **kwargs)
  net = tfmp.PruningNet(space, hidden_units=2)
  _compile(net)
  history = net.fit(_tiny_data(), epochs=1, verbose=0)
  assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("family", sorted(_FAMILIES))
def test_every_family_round_trips_through_save(family, tmp_path):
  space = tfmp.models.get(family)((16, 16, 3), 4, **_FAMILIES[family])
  net = tfmp.PruningNet(space, hidden_units=2)
  x = np.random.default_rng(1).random((4, 16, 16, 3), dtype=np.float32)
  net(x)   # builds the variables
  for v in net.trainable_variables:   # non-trivial generator weights, so a lost weight would show
    v.assign(v + 0.01 * np.random.default_rng(0).standard_normal(v.shape).astype(np.float32))
  path = os.path.join(tmp_path, "net.keras")
  net.save(path)
  loaded = keras.saving.load_model(path)
  assert isinstance(loaded, tfmp.PruningNet)
  assert loaded.space.get_config() == space.get_config()
  s = space.random(seed=2)
  a = net.call_structure(x, s, training=True)
  b = loaded.call_structure(x, s, training=True)
  np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_training_step_samples_a_different_structure_each_step_and_is_reproducible():
  space = tfmp.models.small_cnn((8, 8, 1), 2, channels=(8, 8, 8, 8), divisor=1)
  net = tfmp.PruningNet(space, hidden_units=0, seed=5)
  seqs = [tuple(net.sample_choices(tf.constant(step)).numpy()) for step in range(20)]
  assert len(set(seqs)) > 15
  again = tfmp.PruningNet(space, hidden_units=0, seed=5)
  assert seqs == [tuple(again.sample_choices(tf.constant(step)).numpy()) for step in range(20)]
  other = tfmp.PruningNet(space, hidden_units=0, seed=6)
  assert seqs != [tuple(other.sample_choices(tf.constant(step)).numpy()) for step in range(20)]
  counts = np.zeros(8)
  for step in range(400):
    counts[net.sample_choices(tf.constant(step)).numpy()[0]] += 1
  assert counts.min() > 20   # every choice of gene 0 is drawn (uniform: ~50 each)


def test_fit_traces_the_training_step_once_for_all_structures():
  space = tfmp.models.small_cnn((8, 8, 1), 2, channels=(8, 8, 8, 8), divisor=1)
  net = tfmp.PruningNet(space, hidden_units=2)
  _compile(net)
  traced = []
  forward = net.forward

  def counting_forward(*args, **kwargs):   # Python runs only while tf.function traces
    traced.append(1)
    return forward(*args, **kwargs)

  net.forward = counting_forward
  ds = _tiny_data((8, 8, 1), n=64, classes=2).unbatch().batch(8, drop_remainder=True)
  net.fit(ds, epochs=1, verbose=0)
  first = len(traced)          # Keras traces its step function once or twice (first-step variant)
  net.fit(ds, epochs=3, verbose=0)   # 24 more steps, 24 more structures
  seen = {tuple(net.sample_choices(tf.constant(step)).numpy()) for step in range(32)}
  assert len(seen) > 20
  assert first <= 2
  assert len(traced) == first   # no retrace for any of the new structures


def test_narrow_structure_computes_narrow_activations():
  space = tfmp.models.small_cnn((8, 8, 1), 2, channels=(8, 8, 8, 8), divisor=1)
  net = tfmp.PruningNet(space, hidden_units=0)
  conv = net.generator_layers[0]
  x = tf.zeros([1, 8, 8, 1])
  y = conv(x, encoding=tf.constant([1.0, 0.25]), out_channels=tf.constant(2))
  assert y.shape[-1] == 2


def test_non_space_argument_is_rejected_with_the_fix():
  with pytest.raises(TypeError, match="needs a tf_metaprune.SearchSpace"):
    tfmp.PruningNet("mobilenet_v2")


def test_unknown_family_lists_known_ones():
  with pytest.raises(ValueError, match=r"unknown model family 'vgg'.*mobilenet_v2"):
    tfmp.models.get("vgg")


def test_generator_params_count_matches_hidden_units():
  space = tfmp.models.small_cnn((8, 8, 1), 2, channels=(8, 8, 8, 8), divisor=1)
  assert tfmp.PruningNet(space, hidden_units=0).generator_params() == 0
  g8 = tfmp.PruningNet(space, hidden_units=8).generator_params()
  g16 = tfmp.PruningNet(space, hidden_units=16).generator_params()
  assert g16 > 1.9 * g8 > 0


def test_sandwich_step_trains_the_largest_and_the_smallest_structure():
  space = tfmp.models.small_cnn((8, 8, 1), 2, channels=(16, 16, 16, 16), width_ratios=(0.5, 0.75, 1.0),
                                divisor=1)
  net = tfmp.PruningNet(space, hidden_units=2, sampling="sandwich", structures_per_step=3, bn_mode="switchable")
  _compile(net)
  bn = net.bn_layers[0]
  before = bn.gamma.numpy().copy()
  ds = _tiny_data((8, 8, 1), n=8, classes=2).unbatch().batch(8)
  history = net.fit(ds, epochs=1, verbose=0)   # exactly one step
  after = bn.gamma.numpy()
  assert np.isfinite(history.history["loss"][0])
  assert np.abs(after[0] - before[0]).max() > 0          # smallest choice's BN row was trained
  assert np.abs(after[-1] - before[-1]).max() > 0        # largest choice's BN row was trained
  again = tfmp.PruningNet.from_config(net.get_config())
  assert again.sampling == "sandwich" and again.structures_per_step == 3


def test_bad_sampling_settings_are_rejected():
  space = tfmp.models.small_cnn((8, 8, 1), 2, channels=(8, 8, 8, 8), divisor=1)
  with pytest.raises(ValueError, match="sampling='greedy'"):
    tfmp.PruningNet(space, sampling="greedy")
  with pytest.raises(ValueError, match="structures_per_step=1"):
    tfmp.PruningNet(space, sampling="sandwich", structures_per_step=1)


def test_pipeline_bn_affine_reaches_the_pruning_net_and_a_bad_value_is_named(tmp_path):
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  import testutil  # pylint: disable=g-import-not-at-top
  config = pipeline.PipelineConfig(model="small_cnn", divisor=1, hidden_units=0, pruningnet_epochs=1,
                                   bn_affine=False)
  space, splits = testutil.tiny_search_space(), testutil.tiny_search_splits()
  net, _ = pipeline.train_pruning_net(config, splits, space, str(tmp_path / "net"), verbose=0)
  assert net.bn_affine is False
  assert net.bn_layers and not any(bn.affine for bn in net.bn_layers)
  assert not any("gamma" in w.path or "beta" in w.path for bn in net.bn_layers for w in bn.weights)
  with pytest.raises(ValueError, match=r"^PipelineConfig\(bn_affine='no'\): must be True or False$"):
    pipeline.PipelineConfig(bn_affine="no")
