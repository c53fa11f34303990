"""The ops keras.applications needs, one tiny representative each, through the whole path.

Each model is read by `from_keras_model`, reordered by `TrainedModel` (same
logits), loaded into a PruningNet (full width = the model), and rebuilt at a
uniform half and a random structure whose params/FLOPs equal the space's count
and whose logits equal the PruningNet's; two of them convert to int8 TFLite.
Covered: Keras ops on tensors (`x + 3.0`, `x * (1/6)`, `2.0 - x`, `inputs + x`,
hard sigmoid / hard swish), per-channel Rescaling and Normalization (fixed),
a nested Sequential (flattened), Conv2D(groups=C), LayerNormalization, ConvNeXt's
LayerScale, Dense on a feature map, Cropping2D, DepthwiseConv2D(depth_multiplier=2) (kept whole). The whole zoo is
benchmarks/keras_applications.py, not a test.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.applications.convnext import LayerScale

import tf_metaprune as tfmp
import tflite_export
from tf_metaprune import flops
from tf_metaprune import latency_lut
from tf_metaprune import ops
from tf_metaprune import pretrained

L = keras.layers


def _randomize(model, seed=0):
  """Non-degenerate weights: random kernels and vectors, positive variances (so a wrong permutation shows)."""
  rng = np.random.default_rng(seed)
  for v in model.weights:
    shape = tuple(v.shape)
    if "count" in v.path:
      continue
    if "variance" in v.path:
      v.assign(rng.uniform(0.5, 1.5, shape).astype(np.float32))
    else:
      v.assign((rng.normal(0, 1, shape) * (0.5 / np.sqrt(max(1, np.prod(shape[:-1]))) if len(shape) > 1 else 0.3)
                + (1.0 if len(shape) == 1 and "gamma" in v.path else 0.0)).astype(np.float32))
  return model


def _hard_swish(x):
  return x * (L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0))   # Keras ops Add, Multiply (constant), Multiply (tensors)


def _mobilenet_v3_like():
  inp = keras.Input((8, 8, 3), name="image")
  x = L.Rescaling(scale=[1 / 127.5, 1 / 100.0, 1 / 64.0], offset=-1.0, name="rescale")(inp)   # per channel: fixed
  stem = _hard_swish(L.BatchNormalization(name="stem_bn")(L.Conv2D(8, 3, padding="same", name="stem")(x)))
  x = L.DepthwiseConv2D(3, padding="same", name="dw")(stem)
  se = L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
  se = L.Conv2D(4, 1, activation="relu", name="se_reduce")(se)
  se = L.ReLU(6.0)(L.Conv2D(8, 1, name="se_expand")(se) + 3.0) * (1.0 / 6.0)   # hard sigmoid
  x = L.Multiply(name="se_mul")([x, se])
  x = L.Conv2D(8, 1, name="project")(x)
  x = stem + x                                                                  # residual as a Keras op
  x = 2.0 - x
  x = L.GlobalAveragePooling2D(name="gap")(x)
  return _randomize(keras.Model(inp, L.Dense(3, name="logits")(x), name="mbv3_like"))


def _convnext_like():
  inp = keras.Input((8, 8, 3), name="image")
  norm = L.Normalization(axis=-1, mean=None, variance=None, name="norm")
  x = norm(inp)
  stem = keras.Sequential([L.Conv2D(8, 2, strides=2, name="stem_conv"), L.LayerNormalization(epsilon=1e-6,
                                                                                             name="stem_ln")],
                          name="stem")
  x = stem(x)
  y = L.Conv2D(8, 3, padding="same", groups=8, name="dw")(x)     # depthwise written as a grouped conv
  y = L.LayerNormalization(epsilon=1e-6, name="ln")(y)
  y = L.Dense(16, name="pw1")(y)                                 # Dense on a feature map
  y = L.Activation("gelu", name="gelu")(y)
  y = L.Dense(8, name="pw2")(y)
  y = LayerScale(0.5, 8, name="layer_scale")(y)
  x = x + y                                                      # ConvNeXt's `inputs + x`
  x = L.LayerNormalization(epsilon=1e-6, name="head_ln")(L.GlobalAveragePooling2D(name="gap")(x))
  return _randomize(keras.Model(inp, L.Dense(3, name="logits")(x), name="convnext_like"))


def _nasnet_like():
  inp = keras.Input((9, 9, 3), name="image")
  x = L.Conv2D(8, 3, strides=2, name="stem")(inp)                  # 9 -> 4
  x = L.ZeroPadding2D(((0, 1), (0, 1)), name="pad")(x)              # 4 -> 5
  x = L.Cropping2D(((1, 0), (1, 0)), name="crop")(x)                # 5 -> 4
  x = L.SeparableConv2D(8, 3, padding="same", activation="relu", name="sep")(x)
  x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw_x2")(x)   # kept whole: 8 -> 16
  x = L.Conv2D(8, 1, activation="relu", name="after_dw_x2")(x)
  x = L.GlobalAveragePooling2D(name="gap")(x)
  return _randomize(keras.Model(inp, L.Dense(3, name="logits")(x), name="nasnet_like"))


MODELS = {"mbv3_like": _mobilenet_v3_like, "convnext_like": _convnext_like, "nasnet_like": _nasnet_like}


def _images(model, n=4):
  return np.random.default_rng(1).uniform(0, 255, (n,) + tuple(model.input_shape[1:])).astype(np.float32)


def _close(a, b, what):
  a, b = np.asarray(a), np.asarray(b)
  scale = max(1.0, float(np.abs(b).max()))
  assert np.abs(a - b).max() <= 1e-4 * scale, f"{what}: max |diff| {np.abs(a - b).max()} (scale {scale})"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_with_the_new_ops_reorders_trains_and_rebuilds_with_equal_counts(name):
  model = MODELS[name]()
  x = _images(model)
  ref = model(x, training=False).numpy()
  space = tfmp.SearchSpace.from_keras_model(model, width_ratios=(0.25, 0.5, 0.75, 1.0), divisor=1)
  assert space.genes, "the model has prunable channels"
  assert space.params(space.largest()) == model.count_params()
  assert space.mflops(space.largest()) == pytest.approx(flops.count_flops(model) / 1e6, abs=1e-9)
  trained = pretrained.TrainedModel(model, space=space)
  assert any(not np.array_equal(p, np.arange(len(p))) for p in trained.perms.values()), "a real permutation"
  _close(trained.reordered_model()(x, training=False), ref, "reordered model vs the original")
  net = trained.pruning_net(hidden_units=4)
  _close(net.call_structure(x, space.largest()), ref, "PruningNet at full width vs the original")
  for s in (space.uniform(0.5), space.random(seed=3)):
    rebuilt = tfmp.rebuild(net, s)
    assert rebuilt.count_params() == space.params(s)
    assert flops.count_flops(rebuilt) / 1e6 == pytest.approx(space.mflops(s), abs=1e-9)
    _close(rebuilt(x, training=False), net.call_structure(x, s), f"rebuilt {s.choices} vs the PruningNet")
    sliced = trained.rebuild(s)
    assert sliced.count_params() == space.params(s)


@pytest.mark.parametrize("name", ["mbv3_like", "convnext_like"])
def test_half_width_model_converts_to_int8_and_agrees_with_keras(name):
  model = MODELS[name]()
  x = _images(model, 8)
  trained = pretrained.TrainedModel(model, width_ratios=(0.5, 1.0), divisor=1)
  half = trained.rebuild(trained.space.uniform(0.5))
  flat = tflite_export.convert(half, "int8", representative_data=x, num_calibration_batches=8)
  report = tflite_export.check_parity(flat, half, tf.data.Dataset.from_tensor_slices(x).batch(4))
  scale = float(np.abs(half(x, training=False).numpy()).max())
  assert report.max_abs_logit_diff < 0.2 * scale, (report.max_abs_logit_diff, scale)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_node_has_a_latency_entry_whose_one_layer_model_builds(name):
  space = tfmp.SearchSpace.from_keras_model(MODELS[name](), width_ratios=(0.5, 1.0), divisor=1)
  kinds = {node.name: ops.get(node.op).latency_kind(space, node) for node in space.nodes if node.op != "input"}
  assert set(kinds.values()) <= {"table", "folded", "free"}
  signatures = latency_lut.layer_signatures(space, grid_size=2)
  timed_ops = {sig.op for sig in signatures}
  for node in space.nodes:
    if kinds.get(node.name) in ("table", "folded"):
      assert node.op in timed_ops, f"node {node.name!r} ({node.op}) has no one-layer model"
  for sig in signatures:
    model = sig.build_model()
    assert model.outputs[0].shape[-1] == sig.cout


def test_a_depth_multiplier_keeps_its_channels_and_the_layers_after_it_are_pruned():
  with pytest.warns(UserWarning, match=r"'dw_x2' \(DepthwiseConv2D\) has depth_multiplier=2"):
    space = tfmp.SearchSpace.from_keras_model(_nasnet_like(), divisor=1)
  assert space.layout["dw_x2"] == (("fixed", 16),) and space.layout["sep"] == (("fixed", 8),)
  assert space.gene_of("after_dw_x2") is not None


def test_the_fixed_preprocessing_keeps_its_channels_and_weights():
  model = _convnext_like()
  space = tfmp.SearchSpace.from_keras_model(model, divisor=1)
  assert space.layout["norm"] == (("fixed", 3),)
  half = pretrained.TrainedModel(model, space=space).rebuild(space.uniform(0.5))
  for a, b in zip(half.get_layer("norm").get_weights(), model.get_layer("norm").get_weights()):
    np.testing.assert_array_equal(a, b)
  assert half.get_layer("pw1").units < 16 and half.get_layer("layer_scale").projection_dim < 8


@pytest.mark.parametrize("build, match", [
    (lambda x: L.Conv2D(8, 3, groups=2, name="g2")(x), r"layer 'g2' \(Conv2D\) has groups=2 over 8 input channels"),
    (lambda x: x * np.linspace(0.5, 1.5, 8).astype(np.float32), r"applied with the constant .*only scalar"),
])
def test_unsupported_forms_are_refused_in_one_line_naming_the_layer(build, match):
  inp = keras.Input((8, 8, 3))
  x = build(L.Conv2D(8, 3, name="c")(inp))
  model = keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling2D()(x)))
  with pytest.raises(ValueError, match=match) as info:
    tfmp.SearchSpace.from_keras_model(model)
  assert "\n" not in str(info.value)
