"""Dense-prediction and multi-output graphs: a U-Net and a two-head detector through the whole path.

The models are `tf_metaprune.models.dense_prediction`'s, at tiny sizes: read by
`SearchSpace.from_keras_model`, reordered, run as a PruningNet, rebuilt, counted,
converted to int8 and ranked by a metric that is not top-1 accuracy.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_metaprune as tfmp
import testutil  # tests/testutil.py
import tflite_export
from tf_metaprune import calibration
from tf_metaprune import pipeline
from tf_metaprune import training
from tf_metaprune import layers as tfmp_layers
from tf_metaprune import ops
from tf_metaprune.models import dense_prediction

_CACHE = {}


def _randomized(model, seed=0):
  """`model` with random weights everywhere (BN statistics too), so reordering mistakes would show."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if layer.weights:
      layer.set_weights([(np.abs(rng.normal(size=w.shape)) + 0.5 if "variance" in w.name
                          else rng.normal(size=w.shape) * 0.3).astype(np.float32) for w in layer.weights])
  return model


def _model(kind):
  if kind not in _CACHE:
    if kind == "unet":
      model = dense_prediction.unet((16, 16, 3), num_classes=3, filters=(4, 8, 8))
    else:
      model = dense_prediction.two_head_detector((16, 16, 3), num_classes=3, filters=(8, 16), head_filters=8)
    model = _randomized(model)
    _CACHE[kind] = (model, tfmp.SearchSpace.from_keras_model(model, divisor=1))
  return _CACHE[kind]


def _images(n=8, seed=1):
  return np.random.default_rng(seed).random((n, 16, 16, 3)).astype(np.float32)


def _labels(kind, n=8, seed=2):
  rng = np.random.default_rng(seed)
  if kind == "unet":
    return rng.integers(0, 3, (n, 16, 16)).astype(np.int32)
  return rng.integers(0, 3, (n, 4, 4)).astype(np.int32), rng.random((n, 4, 4, 4)).astype(np.float32)


def _outputs(y):
  return [np.asarray(t) for t in y] if isinstance(y, (list, tuple)) else [np.asarray(y)]


@pytest.mark.parametrize("kind", ["unet", "two_head"])
def test_outputs_stay_fixed_and_every_inner_conv_is_a_gene(kind):
  model, space = _model(kind)
  want = ("logits",) if kind == "unet" else ("class_logits", "boxes")
  assert space.outputs == want
  assert [space.output_shape(o) for o in space.outputs] == [tuple(t.shape[1:]) for t in model.outputs]
  prunable = {n.name for n in space.nodes if n.op in ("conv", "conv_transpose") and n.name not in want}
  assert prunable == {n.name for n in space.nodes if isinstance(n.out, str)}
  assert all(space.gene_of(o) is None for o in want)
  if kind == "unet":
    assert {"conv_transpose", "upsample", "concat"} <= {n.op for n in space.nodes}
  assert space.params(space.largest()) == model.count_params()
  assert space.mflops(space.largest()) == pytest.approx(tfmp.count_mflops(model), abs=1e-12)


@pytest.mark.parametrize("kind", ["unet", "two_head"])
def test_half_and_random_structures_rebuild_run_and_count_like_the_rebuilt_model(kind):
  model, space = _model(kind)
  x = _images(2)
  for s in (space.uniform(0.5), space.random(3)):
    pruned = tfmp.rebuild(space, s)
    outs = _outputs(pruned(x))
    assert [o.shape for o in outs] == [(2,) + space.output_shape(o) for o in space.outputs]
    assert pruned.count_params() == space.params(s) < model.count_params()
    assert tfmp.count_flops(pruned) == round(space.mflops(s) * 1e6)


@pytest.mark.parametrize("kind", ["unet", "two_head"])
def test_reordered_model_and_full_width_pruning_net_equal_the_model(kind):
  model, space = _model(kind)
  x = _images(4)
  trained = tfmp.pretrained.TrainedModel(model, space=space)
  expected = _outputs(model(x, training=False))
  assert max(float(np.std(e)) for e in expected) > 0.1
  for got in (trained.reordered_model()(x, training=False), trained.pruning_net(hidden_units=0).call_structure(
      x, space.largest())):
    for e, g in zip(expected, _outputs(got)):
      np.testing.assert_allclose(g, e, atol=2e-5)
  # The importance order was not the identity somewhere, so the test above could fail.
  assert any((p != np.arange(len(p))).any() for p in trained.perms.values())


@pytest.mark.parametrize("kind", ["unet", "two_head"])
def test_int8_tflite_converts_and_agrees(kind):
  model, _ = _model(kind)
  labels = _labels(kind, 16)
  ds = tf.data.Dataset.from_tensor_slices((_images(16), labels)).batch(8)
  int8 = tflite_export.convert(model, "int8", representative_data=ds.map(lambda x, y: x))
  report = tflite_export.check_parity(int8, model, ds)
  assert report.num_examples == 16
  assert report.top1_agreement >= 0.9       # of pixels (U-Net) / of grid cells' classes (detector)
  assert report.max_abs_logit_diff < 0.1    # over every output


def test_generated_conv_transpose_equals_keras_conv2d_transpose():
  x = _images(2)
  for padding, kernel, strides in (("same", 2, 2), ("valid", 3, 2), ("same", 3, 1)):
    layer = keras.layers.Conv2DTranspose(5, kernel, strides=strides, padding=padding, use_bias=True)
    want = layer(x)
    gen = tfmp_layers.GeneratedConv2DTranspose(3, 5, kernel, strides, hidden_units=0, padding=padding, use_bias=True)
    gen.build()
    kernel_keras, bias = layer.get_weights()
    gen.base_kernel.assign(np.transpose(kernel_keras, (0, 1, 3, 2)))
    gen.bias.assign(bias + 0.5)
    got = gen(x, encoding=tf.constant([1.0, 1.0]), out_channels=tf.constant(5))
    np.testing.assert_allclose(got.numpy(), want.numpy() + 0.5, atol=1e-5)
    narrow = gen(x, encoding=tf.constant([1.0, 0.4]), out_channels=tf.constant(2))
    np.testing.assert_allclose(narrow.numpy(), want.numpy()[..., :2] + 0.5, atol=1e-5)


def test_conv_transpose_with_output_padding_is_refused_in_one_line():
  inp = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(4, 3, padding="same")(inp)
  x = keras.layers.Conv2DTranspose(4, 3, strides=2, output_padding=1, name="up")(x)
  model = keras.Model(inp, keras.layers.Conv2D(2, 1)(x))
  with pytest.raises(ValueError, match=r"'up' \(Conv2DTranspose\) has output_padding=.*only None") as e:
    tfmp.SearchSpace.from_keras_model(model)
  assert "\n" not in str(e.value)
  assert ops.get("conv_transpose").keras_doc in ops.supported_keras_layers()


def _evaluation_data(kind, n=32):
  labels = _labels(kind, n)
  ds = tf.data.Dataset.from_tensor_slices((_images(n, seed=5), labels)).batch(8)
  return ds, calibration.EvaluationData.from_dataset(ds, num_calibration_batches=2)


def test_mean_iou_search_metric_equals_keras_mean_iou_of_the_rebuilt_model():
  model, space = _model("unet")
  net = tfmp.pretrained.TrainedModel(model, space=space).pruning_net(hidden_units=0)
  ds, data = _evaluation_data("unet")
  evaluator = calibration.Evaluator(net, data, metric="mean_iou")
  s = space.uniform(0.5)
  score, value = evaluator.scores(s)
  net.recalibrate(s, data.calibration_images)
  pruned = tfmp.rebuild(net, s)
  iou = keras.metrics.MeanIoU(num_classes=3, sparse_y_pred=False)
  for x, y in ds:
    iou.update_state(y, pruned(x, training=False))
  assert score == value == pytest.approx(float(iou.result()), abs=1e-5)
  evaluator.scores(space.random(0))
  assert evaluator.trace_count == 1


def test_loss_search_metric_sums_the_users_losses_over_both_heads_and_ranks_lower_first():
  model, space = _model("two_head")
  net = tfmp.pretrained.TrainedModel(model, space=space).pruning_net(hidden_units=0)
  ds, data = _evaluation_data("two_head")
  losses = [keras.losses.SparseCategoricalCrossentropy(from_logits=True), "huber"]
  metric = calibration.SearchMetric("loss", losses=losses, loss_weights=[1.0, 2.0])
  evaluator = calibration.Evaluator(net, data, metric=metric)
  s = space.random(4)
  score, value = evaluator.scores(s)
  net.recalibrate(s, data.calibration_images)
  pruned = tfmp.rebuild(net, s)
  pruned.compile(loss=losses, loss_weights=[1.0, 2.0])
  assert value == pytest.approx(pruned.evaluate(ds, verbose=0)[0], rel=1e-4)
  assert score == -value
  # Every searcher scores through the evaluator: the uniform baseline reports the metric.
  result = tfmp.search.run("uniform", space, tfmp.budgets.FlopsBudget(max_mflops=space.mflops(space.largest())),
                           search_data=evaluator, pruning_net=net, verbose=0)
  assert result.best.loss == pytest.approx(evaluator.scores(result.best_structure)[1])
  assert result.best.accuracy == -result.best.loss
  assert result.extra["search_metric"] == metric.get_config()


def test_search_metric_errors_are_one_line_and_name_the_value():
  for bad, pattern in (("mean_iuo", r"search metric 'mean_iuo' is neither a Keras metric nor a Keras loss; use"),
                       ("loss", r"needs losses=")):
    with pytest.raises(ValueError, match=pattern) as e:
      calibration.SearchMetric(bad)
    assert "\n" not in str(e.value)
  model, space = _model("two_head")
  net = tfmp.PruningNet(space, hidden_units=0)
  _, data = _evaluation_data("two_head", n=8)
  with pytest.raises(ValueError, match=r"not one vector of class logits.*give a search metric"):
    calibration.Evaluator(net, data)
  with pytest.raises(ValueError, match=r"output='box' is not an output.*\['class_logits', 'boxes'\]"):
    calibration.Evaluator(net, data, metric=calibration.SearchMetric("mse", output="box"))


def test_two_output_pruning_net_trains_with_the_losses_the_saved_model_was_compiled_with(tmp_path):
  model, space = _model("two_head")
  model.compile(loss={"class_logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "boxes": "huber"},
                loss_weights={"class_logits": 1.0, "boxes": 3.0})
  path = str(tmp_path / "detector.keras")
  model.save(path)
  losses, weights = training.user_losses(keras.saving.load_model(path))
  assert losses[0]["class_name"] == "SparseCategoricalCrossentropy" and losses[1] == "huber"   # output order
  assert weights == [1.0, 3.0]
  assert training.user_losses(_model("unet")[0]) == (None, None)   # never compiled: pass loss= yourself
  net = tfmp.PruningNet(space, hidden_units=4)
  ds = tf.data.Dataset.from_tensor_slices((_images(16), _labels("two_head", 16))).batch(8)
  history = training.fit(net, ds, epochs=1, loss=losses, loss_weights=weights, optimizer="adam", learning_rate=1e-3,
                         verbose=0)
  assert np.isfinite(history["loss"][-1])
  _, data = _evaluation_data("two_head", n=8)   # the same serialized losses rank structures
  metric = calibration.SearchMetric("loss", losses=losses, loss_weights=weights)
  assert metric.get_config()["losses"] == ["SparseCategoricalCrossentropy", "huber"]
  assert np.isfinite(calibration.Evaluator(net, data, metric=metric).scores(space.uniform(0.5))[1])
  with pytest.raises(ValueError, match=r"distill=True distills one softmax output.*pass distill=False"):
    tfmp.PruningNet(space, sampling="sandwich")


def test_pipeline_ranks_by_the_configured_search_metric_and_refuses_bad_names():
  space = testutil.tiny_search_space()
  splits = testutil.tiny_search_splits()
  net = tfmp.PruningNet(space, hidden_units=0)
  config = pipeline.PipelineConfig(model="small_cnn", search_metric="sparse_categorical_crossentropy")
  evaluator = pipeline._evaluator(net, splits, config)  # pylint: disable=protected-access
  default = pipeline._evaluator(net, splits, config.replace(search_metric=None))  # pylint: disable=protected-access
  s = space.uniform(0.5)
  score, value = evaluator.scores(s)
  accuracy, cross_entropy = default.scores(s)
  assert value == pytest.approx(cross_entropy, rel=1e-5) and score == -value and 0 <= accuracy <= 1
  with pytest.raises(ValueError, match=r"^PipelineConfig\(search_metric='mean_iuo'\): search metric 'mean_iuo' is "
                     r"neither a Keras metric nor a Keras loss") as e:
    pipeline.PipelineConfig(search_metric="mean_iuo")
  assert "\n" not in str(e.value)


def test_metaprune_binary_refuses_an_unknown_metric_and_a_segmentation_model_in_one_line(tmp_path):
  proc = testutil.run_binary("metaprune.py", "--search_metric=mean_iuo", f"--output_dir={tmp_path / 'a'}")
  assert proc.returncode != 0
  assert "search metric 'mean_iuo' is neither a Keras metric nor a Keras loss" in proc.stderr.strip().splitlines()[-1]
  path = str(tmp_path / "unet.keras")
  dense_prediction.unet((28, 28, 1), num_classes=3, filters=(4, 8)).save(path)
  proc = testutil.run_binary("metaprune.py", f"--keras_model={path}", "--flops_ratio=0.5",
                             f"--output_dir={tmp_path / 'b'}")
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert "predicts logits (28, 28, 3) per image" in last and "docs/dense_prediction.md" in last


def test_space_json_keeps_the_outputs_and_a_single_output_space_keeps_its_fingerprint():
  _, space = _model("two_head")
  again = tfmp.SearchSpace.from_json(space.to_json())
  assert again.outputs == space.outputs and again.fingerprint() == space.fingerprint()
  assert "outputs" in space.get_config()
  _, unet = _model("unet")
  assert "outputs" not in unet.get_config()   # the default (the last node): configs of older spaces unchanged
  config = dict(space.get_config(), outputs=["class_head"])
  with pytest.raises(ValueError, match=r"output 'class_head' has prunable channels"):
    tfmp.SearchSpace.from_config(config)


def test_two_flat_heads_on_pooled_features_are_read_counted_and_equal_at_full_width():
  inp = keras.Input((12, 12, 3))
  x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
  x = keras.layers.Conv2D(12, 3, strides=2, padding="same", activation="relu", name="body")(x)
  x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
  h = keras.layers.Dense(10, activation="relu", name="hidden")(x)
  model = _randomized(keras.Model(inp, [keras.layers.Dense(5, name="cls")(h), keras.layers.Dense(4, name="box")(x)]))
  space = tfmp.SearchSpace.from_keras_model(model, divisor=1)
  assert space.outputs == ("cls", "box") and [space.output_shape(o) for o in space.outputs] == [(5,), (4,)]
  assert {g.name for g in space.genes} == {"stem", "body", "hidden"}
  assert space.params(space.largest()) == model.count_params() and not space.is_classifier
  pruned = tfmp.rebuild(space, space.uniform(0.5))
  assert pruned.count_params() == space.params(space.uniform(0.5))
  x = _images(3)[:, :12, :12]
  net = tfmp.pretrained.TrainedModel(model, space=space).pruning_net(hidden_units=0)
  for e, g in zip(_outputs(model(x)), _outputs(net.call_structure(x, space.largest()))):
    np.testing.assert_allclose(g, e, atol=2e-5)


def test_bilinear_upsampling_after_a_strided_valid_conv_runs_in_the_pruning_net():
  # keras-hub's BASNet shape: a padded, strided "valid" conv, then bilinear upsampling. Slicing kernels to
  # tensor widths used to hide the conv output's static size, which UpSampling2D(bilinear) needs.
  inp = keras.Input((16, 16, 3))
  x = keras.layers.ZeroPadding2D(1)(inp)
  x = keras.layers.Conv2D(8, 3, strides=2, padding="valid", activation="relu", name="down")(x)
  x = keras.layers.UpSampling2D(2, interpolation="bilinear", name="up")(x)
  model = _randomized(keras.Model(inp, keras.layers.Conv2D(2, 1, name="logits")(x)))
  space = tfmp.SearchSpace.from_keras_model(model, divisor=1)
  net = tfmp.pretrained.TrainedModel(model, space=space).pruning_net(hidden_units=0)
  x = _images(2)
  np.testing.assert_allclose(net.call_structure(x, space.largest()).numpy(), model(x).numpy(), atol=2e-5)
  assert net.call_structure(x, space.smallest()).shape == (2, 16, 16, 2)
