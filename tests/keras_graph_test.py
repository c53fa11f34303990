"""Tests of SearchSpace.from_keras_model (tf_metaprune/keras_graph.py): pruning the user's own model."""

import os

import keras
import numpy as np
import pytest

import tf_metaprune as tfmp
from tf_metaprune import flops


def _branchy_model():
  """A hand-made CNN with every kind of join: concat, squeeze-excite multiply, residual add, flatten."""
  inp = keras.Input((16, 16, 3), name="image")
  x = keras.layers.Rescaling(2.0, offset=-1.0, name="scale")(inp)
  x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(x)
  x = keras.layers.BatchNormalization(name="stem_bn")(x)
  x = keras.layers.ReLU(name="stem_relu")(x)
  a = keras.layers.Conv2D(6, 1, activation="relu", name="branch_a")(x)
  b = keras.layers.DepthwiseConv2D(3, padding="same", name="branch_b_dw")(x)
  b = keras.layers.Conv2D(10, 1, name="branch_b")(b)
  x = keras.layers.Concatenate(name="cat")([a, b])
  x = keras.layers.BatchNormalization(name="cat_bn")(x)
  x = keras.layers.MaxPooling2D(name="pool")(x)
  y = keras.layers.SeparableConv2D(12, 3, padding="same", activation="relu", name="sep")(x)
  s = keras.layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(y)
  s = keras.layers.Conv2D(4, 1, activation="relu", name="se_reduce")(s)
  s = keras.layers.Conv2D(12, 1, activation="sigmoid", name="se_expand")(s)
  y = x_se = keras.layers.Multiply(name="se_mul")([y, s])
  y = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name="pad")(y)
  y = keras.layers.Conv2D(16, 3, strides=2, padding="valid", activation="swish", name="down")(y)
  z = keras.layers.Conv2D(16, 1, name="skip")(y)
  y = keras.layers.Add(name="add")([y, z])
  y = keras.layers.GlobalMaxPooling2D(keepdims=True, name="gmp")(y)
  y = keras.layers.Reshape((16,), name="squeeze")(y)
  y = keras.layers.Concatenate(name="heads")([keras.layers.GlobalAveragePooling2D(name="se_gap")(x_se), y])
  y = keras.layers.Activation("tanh", name="tanh")(y)
  y = keras.layers.Dropout(0.2, name="drop")(y)
  out = keras.layers.Dense(5, name="logits")(y)
  return keras.Model(inp, out, name="branchy")


_MODELS = {
    "branchy": _branchy_model,
    # keras.applications ends with a softmax by default; logits are what PruningNet training expects.
    "mobilenet": lambda: keras.applications.MobileNet((32, 32, 3), alpha=0.25, weights=None, classes=10,
                                                      classifier_activation=None),
    "mobilenet_v2": lambda: keras.applications.MobileNetV2((32, 32, 3), alpha=0.35, weights=None, classes=10,
                                                           classifier_activation=None),
    "resnet50": lambda: keras.applications.ResNet50(input_shape=(32, 32, 3), weights=None, classes=10,
                                                    classifier_activation=None),
}
_CACHE = {}


def _model_and_space(key):
  """Each model is built and read once per test session (ResNet-50 takes seconds)."""
  if key not in _CACHE:
    model = _MODELS[key]()
    _CACHE[key] = (model, tfmp.SearchSpace.from_keras_model(model, divisor=1 if key == "branchy" else 8))
  return _CACHE[key]


@pytest.mark.parametrize("key", sorted(_MODELS))
def test_full_width_structure_has_the_original_params_and_flops(key):
  model, space = _model_and_space(key)
  assert space.params(space.largest()) == model.count_params()
  assert flops.structure_flops(space, space.largest()) == tfmp.count_flops(model)
  assert len(space.genes) >= 4


@pytest.mark.parametrize("key", sorted(_MODELS))
def test_random_structure_rebuilds_with_the_users_layers_at_counted_size(key):
  model, space = _model_and_space(key)
  s = space.random(seed=7)
  assert s != space.largest()
  pruned = tfmp.rebuild(space, s)
  assert [l.name for l in pruned.layers] == [l.name for l in model.layers]
  assert [type(l) for l in pruned.layers] == [type(l) for l in model.layers]
  for old, new in zip(model.layers, pruned.layers):
    if hasattr(old, "activation"):
      assert new.get_config()["activation"] == old.get_config()["activation"], old.name
  assert pruned.count_params() == space.params(s)
  assert tfmp.count_flops(pruned) == flops.structure_flops(space, s)
  assert pruned.count_params() < model.count_params()
  x = np.random.default_rng(0).random((2,) + space.input_shape, np.float32)
  assert pruned(x).shape == (2, space.num_classes)


def test_concatenate_keeps_each_inputs_gene_in_its_slice():
  _, space = _model_and_space("branchy")
  assert space.layout["cat"] == (("gene", space.genes.index(_gene(space, "branch_a"))),
                                 ("gene", space.genes.index(_gene(space, "branch_b"))))
  s = space.random(seed=3)
  ch = space.channels(s)
  assert space.node_channels(s)["cat_bn"] == ch["branch_a"] + ch["branch_b"]
  assert space.node_channels(s)["heads"] == ch["sep"] + ch["down"]   # the classifier reads both slices


def test_multiply_and_add_tie_their_inputs_and_depthwise_follows_its_input():
  _, space = _model_and_space("branchy")
  by = space.node_by_name
  assert by["se_expand"].out == by["sep"].out == "sep"           # squeeze-excite scale moves with its input
  assert by["skip"].out == by["down"].out                         # residual add: one width
  assert space.layout["branch_b_dw"] == space.layout["stem"]       # depthwise: its input's width
  _, v2 = _model_and_space("mobilenet_v2")
  assert v2.node_by_name["block_2_project"].out == v2.node_by_name["block_1_project"].out


def test_classifier_output_is_never_pruned():
  _, space = _model_and_space("branchy")
  assert space.node_by_name["logits"].out == 5
  assert space.node_by_name["down"].out == "down"   # the features before the classifier are prunable
  mobilenet, mspace = _model_and_space("mobilenet")  # conv classifier -> Reshape -> softmax
  assert mspace.node_by_name["conv_preds"].out == 10
  assert "conv_preds" not in [g.name for g in mspace.genes]
  assert mspace.num_classes == 10 and mobilenet.name == mspace.name


def test_pruning_net_on_a_user_model_matches_its_rebuilt_model_and_saves(tmp_path):
  _, space = _model_and_space("branchy")
  net = tfmp.PruningNet(space, hidden_units=4)
  images = np.random.default_rng(1).random((16,) + space.input_shape, np.float32)
  for v in net.trainable_variables:  # away from the initial values, so generators change every kernel
    v.assign_add(0.05 * np.random.default_rng(v.shape.num_elements()).standard_normal(v.shape).astype(np.float32))
  assert net(images[:4], training=True).shape == (4, space.num_classes)   # a random structure
  for seed in (0, 1):
    s = space.random(seed=seed)
    net.recalibrate(s, images)
    expected = net.call_structure(images, s).numpy()
    got = tfmp.rebuild(net, s)(images, training=False).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
  path = os.path.join(tmp_path, "net.keras")
  net.save(path)
  loaded = keras.saving.load_model(path)
  np.testing.assert_allclose(loaded.call_structure(images, s).numpy(), expected, atol=1e-5)


def test_pruning_net_runs_keras_mobilenet_at_random_widths():
  _, space = _model_and_space("mobilenet")
  net = tfmp.PruningNet(space, hidden_units=0)
  images = np.random.default_rng(2).random((2,) + space.input_shape, np.float32)
  logits = net.forward(images, net.sample_choices(3), batch_stats=True).numpy()
  assert logits.shape == (2, 10) and np.isfinite(logits).all()


def test_space_json_round_trip_keeps_fingerprint_and_rebuilds():
  _, space = _model_and_space("branchy")
  again = tfmp.SearchSpace.from_json(space.to_json())
  assert again.fingerprint() == space.fingerprint()
  s = space.random(seed=5)
  assert again.params(s) == space.params(s)
  assert tfmp.rebuild(again, s).count_params() == space.params(s)


def test_sequential_model_is_read_like_a_functional_one():
  model = keras.Sequential([keras.Input((12, 12, 1)),
                            keras.layers.Conv2D(8, 3, activation="relu", name="c1"),
                            keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="c2"),
                            keras.layers.Flatten(name="flat"),
                            keras.layers.Dense(4, name="out")], name="seq")
  with pytest.warns(UserWarning, match="'flat' \\(Flatten\\).*stay at full width"):
    space = tfmp.SearchSpace.from_keras_model(model, divisor=1)
  assert [g.name for g in space.genes] == ["c1"]   # c2 feeds a Flatten: fixed
  assert space.params(space.largest()) == model.count_params()
  pruned = tfmp.rebuild(space, space.smallest())
  assert [l.name for l in pruned.layers][1:] == ["c1", "c2", "flat", "out"]   # a functional model


@pytest.mark.parametrize("family", ["mobilenet_v2", "mobilenet"])
def test_keras_applications_default_softmax_head_is_read_as_logits_and_restored(family):
  # keras.applications' default classifier_activation="softmax": MobileNetV2 ends in Dense(activation="softmax"),
  # MobileNet (v1) in a separate Activation("softmax") layer after a conv classifier and a Reshape.
  make = getattr(keras.applications, {"mobilenet_v2": "MobileNetV2", "mobilenet": "MobileNet"}[family])
  alpha = {"mobilenet_v2": 0.35, "mobilenet": 0.25}[family]
  model = make((32, 32, 3), alpha=alpha, weights=None, classes=10)
  assert model.layers[-1].get_config()["activation"] == "softmax"
  space = tfmp.SearchSpace.from_keras_model(model)
  assert space.output_activation == "softmax"
  assert space.nodes[-1].layer["config"].get("activation") in (None, "linear")   # the space ends in the logits
  assert space.params(space.largest()) == model.count_params()
  _, logits_space = _model_and_space(family)   # the same network built with classifier_activation=None
  assert space.fingerprint() != logits_space.fingerprint()      # the activation is part of the space
  # the same graph up to the logits (MobileNet's classifier_activation=None keeps a linear Activation at the end)
  assert [(n.op, n.out) for n in space.nodes] == [(n.op, n.out) for n in logits_space.nodes][:len(space.nodes)]
  again = tfmp.SearchSpace.from_json(space.to_json())
  assert again.output_activation == "softmax" and again.fingerprint() == space.fingerprint()

  trained = tfmp.pretrained.TrainedModel(model)
  x = np.random.default_rng(0).random((4, 32, 32, 3), np.float32)
  probabilities = model(x, training=False).numpy()
  logits = trained.pruning_net().call_structure(x, space.largest(), training=False).numpy()
  np.testing.assert_allclose(keras.ops.softmax(logits).numpy(), probabilities, atol=1e-5)   # net: the logits
  restored = trained.rebuild(space.largest(), output_activation=True)
  assert restored.layers[-1].get_config()["activation"] == "softmax"
  np.testing.assert_allclose(restored(x, training=False).numpy(), probabilities, atol=1e-5)
  if family == "mobilenet":   # the user's own output layer comes back, by name
    assert restored.layers[-1].name == model.layers[-1].name
  pruned = tfmp.rebuild(space, space.uniform(0.5), output_activation=True)
  np.testing.assert_allclose(pruned(x).numpy().sum(axis=-1), 1.0, atol=1e-5)
  assert tfmp.rebuild(space, space.uniform(0.5)).layers[-1].get_config().get("activation") in (None, "linear")


def test_sigmoid_head_and_separate_softmax_layer_are_read_off():
  inp = keras.Input((8, 8, 3))
  x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, name="conv")(inp))
  sigmoid = tfmp.SearchSpace.from_keras_model(
      keras.Model(inp, keras.layers.Dense(3, activation="sigmoid", name="scores")(x)))
  assert sigmoid.output_activation == "sigmoid"
  restored = tfmp.rebuild(sigmoid, sigmoid.largest(), output_activation=True)
  assert [layer.name for layer in restored.layers][-2:] == ["scores", "scores_sigmoid"]
  softmax = tfmp.SearchSpace.from_keras_model(
      keras.Model(inp, keras.layers.Softmax(name="probs")(keras.layers.Dense(3, name="logits")(x))))
  assert softmax.output_activation == "softmax" and softmax.nodes[-1].name == "logits"
  assert type(tfmp.rebuild(softmax, softmax.largest(), output_activation=True).layers[-1]) is keras.layers.Softmax
  plain = tfmp.SearchSpace.from_keras_model(keras.Model(inp, keras.layers.Dense(3, name="logits")(x)))
  assert plain.output_activation is None and "output_activation" not in plain.get_config()


class _Scale(keras.layers.Layer):
  def call(self, x):
    return 2.0 * x


def test_unsupported_custom_layer_is_named_with_its_type():
  inp = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(8, 3, name="conv")(inp)
  x = _Scale(name="my_scale")(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  model = keras.Model(inp, keras.layers.Dense(3)(x))
  with pytest.raises(ValueError, match="layer 'my_scale' of type _Scale cannot be read.*supported layers"):
    tfmp.SearchSpace.from_keras_model(model)


def test_shared_layer_and_channel_broadcast_are_rejected_clearly():
  inp = keras.Input((8, 8, 3))
  conv = keras.layers.Conv2D(3, 3, padding="same", name="shared")
  x = conv(conv(inp))
  model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
  with pytest.raises(ValueError, match="'shared' \\(Conv2D\\) is called 2 times"):
    tfmp.SearchSpace.from_keras_model(model)
  inp = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(8, 3, name="c")(inp)
  m = keras.layers.Conv2D(1, 1, name="mask")(x)
  x = keras.layers.Multiply(name="mul")([x, m])
  model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
  with pytest.raises(ValueError, match="'mul' \\(Multiply\\) broadcasts over channels"):
    tfmp.SearchSpace.from_keras_model(model)


def test_input_without_a_fixed_image_size_is_rejected():
  inp = keras.Input((None, None, 3), name="any_size")
  x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3)(inp))
  with pytest.raises(ValueError, match="'any_size' has shape \\(None, None, None, 3\\).*fixed input"):
    tfmp.SearchSpace.from_keras_model(keras.Model(inp, keras.layers.Dense(3)(x)))


def test_latency_table_covers_a_space_read_from_a_model_but_not_in_graph_across_a_concat():
  _, space = _model_and_space("branchy")
  required = tfmp.LatencyTable.required_keys(space)
  assert {"stem", "branch_a", "branch_b_dw", "branch_b", "sep", "se_reduce", "down", "logits"} <= set(required)
  table = tfmp.LatencyTable.from_function(space, lambda node, cin, cout: 0.001 * cin * cout)
  s = space.smallest()
  ch = space.node_channels(s)
  assert table.predict_ms(space, s) == pytest.approx(sum(0.001 * ch[space.node_by_name[n].inputs[0]] * ch[n]
                                                         for n in required))
  with pytest.raises(ValueError, match="concatenation of several widths.*predict_ms covers it"):
    table.predict_ms_tensor(space, np.array([s.choices], np.int32))


def _gene(space, name):
  return next(g for g in space.genes if g.name == name)
