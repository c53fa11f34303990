"""Tests of the op registry (tf_metaprune/ops/): one class per op, looked up by every module.

The registry is proven by what it makes possible: an op added as one class
(UpSampling2D) is read from Keras, counted, trained, rebuilt, masked and timed;
PaS and latency tables run on a space read from a Keras model with batch norm
and concatenation, because their per-op code is the registry's.
"""

import keras
import numpy as np
import pytest

import tf_metaprune as tfmp
from tf_metaprune import budgets
from tf_metaprune import latency_lut
from tf_metaprune import ops
from tf_metaprune.search import pas


def _conv_bn_relu(x, filters, name):
  x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
  return keras.layers.ReLU(name=name + "_relu")(keras.layers.BatchNormalization(name=name + "_bn")(x))


def _upsampling_model():
  inp = keras.Input((6, 6, 2), name="image")
  x = keras.layers.UpSampling2D(2, name="up")(_conv_bn_relu(inp, 8, "conv1"))   # 6x6 -> 12x12, conv1's gene
  x = keras.layers.Conv2D(6, 3, strides=2, activation="relu", name="conv2")(x)
  x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
  return keras.Model(inp, keras.layers.Dense(3, name="logits")(x), name="upsampler")


def _branchy_bn_concat_model():
  """Conv -> BN -> ReLU -> UpSampling2D, two branches concatenated, BN over the concatenation, a conv reading it."""
  inp = keras.Input((8, 8, 1), name="image")
  x = keras.layers.UpSampling2D(2, name="up")(_conv_bn_relu(inp, 8, "stem"))   # 8x8 -> 16x16, the stem's width
  branches = [keras.layers.Conv2D(6, 1, activation="relu", name="branch_a")(x),
              keras.layers.Conv2D(8, 1, name="branch_b")(
                  keras.layers.DepthwiseConv2D(3, padding="same", name="branch_b_dw")(x))]
  x = keras.layers.BatchNormalization(name="cat_bn")(keras.layers.Concatenate(name="cat")(branches))
  x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="head")(keras.layers.MaxPooling2D(name="pool")(x))
  return keras.Model(inp, keras.layers.Dense(4, name="logits")(keras.layers.GlobalAveragePooling2D(name="gap")(x)),
                     name="bn_concat")


def test_every_op_a_space_accepts_is_registered_with_its_methods():
  assert set(tfmp.space.WEIGHT_OPS) == {"conv", "dwconv", "sepconv", "dense", "gconv", "pointwise", "conv_transpose"}
  for name in ops.names():
    op = ops.get(name)
    assert op.name == name and op.latency_role in ("table", "folded", "free")
  with pytest.raises(ValueError, match=r"op='deconv' is not one of .*register an Op subclass"):
    ops.get("deconv")
  with pytest.raises(ValueError, match=r"op='deconv' is not one of"):
    tfmp.space.Node("x", "deconv", ("input",))
  assert "UpSampling2D" in ops.supported_keras_layers()


def test_upsampling_op_is_read_counted_and_rebuilt_at_the_original_size():
  model = _upsampling_model()
  space = tfmp.SearchSpace.from_keras_model(model, width_ratios=(0.5, 1.0), divisor=1)
  up = space.node_by_name["up"]
  assert up.op == "upsample" and space.spatial["up"] == (12, 12) and space.gene_of("up") == space.gene_of("conv1")
  assert space.params(space.largest()) == model.count_params()
  assert tfmp.flops.structure_flops(space, space.largest()) == tfmp.count_flops(model)  # upsampling: 0 FLOPs
  s = space.smallest()
  plain = tfmp.rebuild(space, s)
  assert plain.get_layer("up").output.shape[1:3] == (12, 12)
  assert plain.count_params() == space.params(s) and tfmp.count_flops(plain) == tfmp.flops.structure_flops(space, s)


def test_upsampling_op_runs_in_the_pruning_net_like_its_rebuilt_model():
  space = tfmp.SearchSpace.from_keras_model(_upsampling_model(), width_ratios=(0.5, 1.0), divisor=1)
  net = tfmp.PruningNet(space, hidden_units=4)
  x = np.random.default_rng(0).random((4, 6, 6, 2)).astype(np.float32)
  s = space.smallest()
  net.recalibrate(s, x)
  expected = net.call_structure(x, s).numpy()
  got = tfmp.rebuild(net, s)(x, training=False).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_pas_runs_on_a_keras_model_space_with_batch_norm_and_concat_and_exports_exactly():
  keras.utils.set_random_seed(0)
  space = tfmp.SearchSpace.from_keras_model(_branchy_bn_concat_model(), width_ratios=(0.25, 0.5, 0.75, 1.0),
                                            divisor=1)
  assert {"bn", "concat"} <= {n.op for n in space.nodes}
  splits = tfmp.data.synthetic(num_examples=128, input_shape=(8, 8, 1), num_classes=4, batch_size=32)
  budget = budgets.FlopsBudget.from_ratio(space, 0.5)
  result, model, net = tfmp.search.pruning_as_search(
      space, splits, budget, tfmp.search.PaSConfig(search_epochs=2, finetune_epochs=0, mask_learning_rate=0.2))
  s = result.structure(space)
  assert budget.is_feasible(space, s) and s != space.largest()
  assert model.count_params() == space.params(s) and tfmp.count_flops(model) == tfmp.flops.structure_flops(space, s)
  for x, _ in splits.search:
    masked = net(x, training=False).numpy()
    np.testing.assert_allclose(model(x, training=False).numpy(), masked, rtol=0,
                               atol=1e-5 * max(1.0, np.abs(masked).max()))
  # The concatenation's batch norm kept exactly the channels of both branches' masks.
  kept = {g.name: k for g, k in zip(space.genes, net.kept_channels())}
  cat_bn = model.get_layer("cat_bn").get_weights()[0]
  assert cat_bn.shape == (len(kept["branch_a"]) + len(kept["branch_b"]),)


def test_masked_net_of_a_keras_model_space_masks_every_pruned_output():
  space = tfmp.SearchSpace.from_keras_model(_branchy_bn_concat_model(), width_ratios=(0.5, 1.0), divisor=1)
  net = pas.MaskedNet(space)
  assert net.get_layer("up") is not None   # the new op's masked call is its own Keras layer
  net.freeze_masks(space.smallest())
  x = np.random.default_rng(1).random((2, 8, 8, 1)).astype(np.float32)
  np.testing.assert_allclose(pas.export(net)(x).numpy(), net(x).numpy(), rtol=0, atol=1e-5)


def test_latency_table_is_measured_for_a_keras_model_space_with_batch_norm_and_concat():
  space = tfmp.SearchSpace.from_keras_model(_branchy_bn_concat_model(), width_ratios=(0.5, 1.0), divisor=1)
  required = budgets.LatencyTable.required_keys(space)
  assert set(required) == {"stem", "branch_a", "branch_b_dw", "branch_b", "head", "logits"}
  assert (3 + 4, 8) in required["head"]   # reads the concatenation: every sum of the branches' widths
  table = latency_lut.measure_latency_table(space, quantization="float32", grid_size=2, num_runs=2,
                                              num_warmup_runs=0, num_rounds=1, progress=False)
  table.validate(space)
  assert table.measurement["nodes"]["stem"]["folded"] == ["up"]      # timed per stem width, through BN and ReLU
  assert "pool" in table.measurement["fixed_width_extras"]           # of several widths: timed at full width
  assert table.predict_ms(space, space.smallest()) >= table.overhead_ms > 0
