"""Tests for tflite_export.qat: graph export and QAT in a child process."""

import json
import sys

import keras
import numpy as np
import pytest

import tflite_export
import tflite_testutil as tu
from tflite_export import qat


def test_graph_export_lists_layers_inbound_names_and_weights():
  model = tu.trained_tiny_cnn()
  graph, weights = qat.keras_model_to_graph(model)
  json.dumps(graph)  # JSON-able as it stands.
  layers = {entry["name"]: entry for entry in graph["layers"]}
  assert graph["layers"][0]["class_name"] == "InputLayer"
  assert graph["input"] == "image" and graph["output"] == model.layers[-1].name
  assert len(graph["layers"]) == len(model.layers)
  (add,) = [e for e in graph["layers"] if e["class_name"] == "Add"]
  assert len(add["inbound"]) == 2
  # Every inbound name refers to an earlier layer: a topological order.
  seen = set()
  for entry in graph["layers"]:
    assert set(entry["inbound"]) <= seen, entry
    seen.add(entry["name"])
  # All weights travel, in each layer's own order.
  assert len(weights) == len(model.get_weights())
  conv = model.get_layer(graph["layers"][1]["name"])
  key = layers[conv.name]["weights"][0]
  np.testing.assert_array_equal(weights[key], conv.get_weights()[0])
  assert layers[conv.name]["config"]["filters"] == 16
  assert "kernel_initializer" not in layers[conv.name]["config"]


def test_graph_export_chains_a_sequential_model():
  model = keras.Sequential([
      keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3),
      keras.layers.Flatten(), keras.layers.Dense(3)])
  graph, weights = qat.keras_model_to_graph(model)
  names = [entry["name"] for entry in graph["layers"]]
  assert [entry["inbound"] for entry in graph["layers"]] == (
      [[]] + [[name] for name in names[:-1]])
  assert graph["layers"][0]["config"]["batch_shape"] == [None, 8, 8, 1]
  assert len(weights) == 4


def test_graph_export_rejects_unsupported_layers_by_name():
  inputs = keras.Input((8, 8, 1))
  outputs = keras.layers.UnitNormalization(name="un")(inputs)
  with pytest.raises(ValueError, match="'un' is a UnitNormalization.*Conv2D"):
    qat.keras_model_to_graph(keras.Model(inputs, outputs))
  with pytest.raises(ValueError, match=r"'add\w*' is a Keras op applied to a tensor \(Add"):
    qat.keras_model_to_graph(keras.Model(inputs, keras.layers.ReLU()(inputs + 3.0)))


def test_graph_export_rejects_subclassed_models():

  class Subclassed(keras.Model):

    def __init__(self):
      super().__init__()
      self.dense = keras.layers.Dense(2)

    def call(self, x):
      return self.dense(x)

  model = Subclassed()
  model(np.zeros((1, 3), np.float32))
  with pytest.raises(ValueError, match="functional API"):
    qat.keras_model_to_graph(model)


def test_qat_runs_in_a_child_process_and_returns_int8_tflite(tmp_path):
  legacy_loaded_before = {
      m for m in ("tf_keras", "tensorflow_model_optimization")
      if m in sys.modules}
  output_path = tmp_path / "qat" / "tiny_cnn_qat.tflite"
  model = tu.trained_tiny_cnn()
  result = tflite_export.quantization_aware_train(
      model, tu.train_dataset().take(32), epochs=1,
      validation_dataset=tu.test_dataset(), output_path=output_path)

  assert result.num_train_examples == 32 * tu.BATCH_SIZE
  assert len(result.train_accuracy_per_epoch) == 1
  assert 0.5 < result.train_accuracy_per_epoch[0] <= 1.0
  assert result.rebuild_max_abs_diff < 1e-4  # tf_keras copy == Keras 3.
  assert tflite_export.tensor_dtypes(result.tflite_model)["int8"] >= 10
  assert output_path.read_bytes() == result.tflite_model
  assert result.size_bytes == len(result.tflite_model)
  # The TFLite model computes what the QAT Keras model computed.
  report = tflite_export.check_parity(result.tflite_model, model,
                                      tu.test_dataset())
  assert report.tflite_accuracy == pytest.approx(result.validation_accuracy,
                                                 abs=0.01)
  assert report.tflite_accuracy > 0.7
  # The parent never loaded Keras 2 or tfmot.
  for module in ("tf_keras", "tensorflow_model_optimization"):
    if module not in legacy_loaded_before:
      assert module not in sys.modules, module
  restored = tflite_export.QatResult.from_json(result.to_json())
  assert restored.tflite_model is None
  assert restored.train_accuracy_per_epoch == result.train_accuracy_per_epoch


def test_worker_failure_surfaces_as_runtime_error_with_stderr_tail(tmp_path):
  with pytest.raises(RuntimeError, match="(?s)exit code.*lacks graph.json"):
    qat.run_worker(str(tmp_path))


def _zoo_layers_model():
  """The layers keras.applications models add: Rescaling, SeparableConv2D, squeeze-and-excitation Multiply,
  Concatenate, LayerNormalization, GlobalMaxPooling2D, Cropping2D, UpSampling2D, Softmax."""
  L = keras.layers
  inputs = keras.Input((28, 28, 1), name="image")
  x = L.Rescaling(2.0, offset=-1.0)(inputs)
  x = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)))
  a = L.SeparableConv2D(8, 3, padding="same", activation="relu")(x)
  se = L.GlobalAveragePooling2D(keepdims=True)(a)
  se = L.Conv2D(8, 1, activation="sigmoid")(L.Conv2D(4, 1, activation="relu")(se))
  a = L.Multiply()([a, se])
  b = L.UpSampling2D()(L.MaxPooling2D()(L.Cropping2D(((0, 0), (0, 0)))(x)))
  x = L.Concatenate()([a, b])
  x = L.LayerNormalization()(x)
  x = L.GlobalMaxPooling2D()(x)
  return keras.Model(inputs, L.Softmax()(L.Dense(10)(x)))


def test_qat_takes_the_layers_keras_applications_models_use():
  model = _zoo_layers_model()
  model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
  model.fit(tu.train_dataset().take(40), epochs=2, verbose=0)
  graph, _ = qat.keras_model_to_graph(model)
  assert {"SeparableConv2D", "Multiply", "Concatenate", "LayerNormalization", "GlobalMaxPooling2D",
          "Rescaling", "Cropping2D", "UpSampling2D", "Softmax"} <= {e["class_name"] for e in graph["layers"]}
  result = tflite_export.quantization_aware_train(model, tu.train_dataset().take(8), epochs=1)
  assert result.fallback is None and len(result.train_accuracy_per_epoch) == 1
  assert result.rebuild_max_abs_diff < 1e-4
  assert tflite_export.tensor_dtypes(result.tflite_model)["int8"] >= 10
  report = tflite_export.check_parity(result.tflite_model, model, tu.test_dataset().take(2))
  assert report.top1_agreement > 0.8


def test_a_layer_that_blocks_qat_is_named_in_one_line_and_post_training_int8_is_used():
  inputs = keras.Input((28, 28, 1))
  x = keras.layers.Conv2D(4, 3, strides=2)(inputs)
  x = x * (keras.layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0))       # MobileNetV3's hard swish, as Keras ops
  model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x)))
  with pytest.raises(ValueError, match="Keras op applied to a tensor"):
    tflite_export.quantization_aware_train(model, tu.train_dataset().take(2))
  result = tflite_export.quantization_aware_train(model, tu.train_dataset().take(2), fallback_to_post_training=True)
  assert result.epochs == 0 and "\n" not in result.fallback
  assert result.fallback.startswith("QAT is not possible: Layer 'add") or "Keras op applied to a tensor" in result.fallback
  assert result.fallback.endswith("converted with post-training int8 instead")
  assert tflite_export.tensor_dtypes(result.tflite_model)["int8"] >= 3
