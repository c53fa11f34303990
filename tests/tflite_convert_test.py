"""Tests for tflite_export.convert: formats, int8 tensors, errors, save."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tflite_export
import tflite_testutil as tu


def test_public_api_exports_every_name_in_all():
  for name in tflite_export.__all__:
    assert hasattr(tflite_export, name), name
  for name in ("convert", "save", "tensor_dtypes", "check_parity",
               "ParityReport", "benchmark", "LatencyResult",
               "parse_benchmark_model_output", "device_description",
               "quantization_aware_train"):
    assert name in tflite_export.__all__, name
  # `convert` and `benchmark` are also module names: the door must hand out
  # the functions.
  assert callable(tflite_export.convert)
  assert callable(tflite_export.benchmark)


def test_float32_conversion_reproduces_keras_logits():
  flatbuffer = tu.trained_tflite("float32")
  report = tflite_export.check_parity(flatbuffer, tu.trained_tiny_cnn(),
                                      tu.test_dataset())
  assert report.num_examples == 1000
  assert report.max_abs_logit_diff < 1e-4
  assert report.top1_agreement == 1.0
  assert report.tflite_accuracy == report.keras_accuracy
  dtypes = tflite_export.tensor_dtypes(flatbuffer)
  assert dtypes.get("float32", 0) > 0
  assert "int8" not in dtypes and "float16" not in dtypes


def test_int8_model_is_integer_and_agrees_with_keras_on_97_percent():
  flatbuffer = tu.trained_tflite("int8", int8_io=True)
  dtypes = tflite_export.tensor_dtypes(flatbuffer)
  assert dtypes["int8"] >= 10  # Activations and weights.
  assert "float32" not in dtypes  # int8 io: no float tensor at all.
  report = tflite_export.check_parity(flatbuffer, tu.trained_tiny_cnn(),
                                      tu.test_dataset())
  assert report.input_dtype == "int8" and report.output_dtype == "int8"
  assert report.num_examples == 1000
  assert report.top1_agreement >= 0.97, report.to_json()
  assert abs(report.accuracy_drop_pt) <= 2.0, report.to_json()
  assert len(flatbuffer) < 0.6 * len(tu.trained_tflite("float32"))


def test_int8_without_int8_io_keeps_float_input_and_output():
  flatbuffer = tu.trained_tflite("int8", int8_io=False)
  dtypes = tflite_export.tensor_dtypes(flatbuffer)
  assert dtypes["int8"] >= 10
  report = tflite_export.check_parity(flatbuffer, tu.trained_tiny_cnn(),
                                      tu.test_dataset(), max_batches=5)
  assert report.input_dtype == "float32" and report.output_dtype == "float32"
  assert report.top1_agreement >= 0.97


@pytest.mark.parametrize("quantization, stored_dtype, min_agreement",
                         [("float16", "float16", 0.99), ("dynamic_range", "int8", 0.98)])
def test_reduced_precision_stores_its_weight_dtype_and_runs(quantization, stored_dtype, min_agreement):
  flatbuffer = tu.trained_tflite(quantization)
  assert tflite_export.tensor_dtypes(flatbuffer)[stored_dtype] > 0
  report = tflite_export.check_parity(flatbuffer, tu.trained_tiny_cnn(), tu.test_dataset())
  assert report.input_dtype == "float32"
  assert report.top1_agreement >= min_agreement


def test_float16_keeps_logits_close_in_a_smaller_file():
  flatbuffer = tu.trained_tflite("float16")
  report = tflite_export.check_parity(flatbuffer, tu.trained_tiny_cnn(), tu.test_dataset())
  assert report.max_abs_logit_diff < 0.1
  assert len(flatbuffer) < 0.8 * len(tu.trained_tflite("float32"))


def test_int8_without_representative_data_raises_with_the_fix():
  with pytest.raises(ValueError, match="representative_data") as error:
    tflite_export.convert(tu.build_tiny_cnn(), "int8")
  assert "dynamic_range" in str(error.value)  # The way out.


def test_unknown_quantization_is_quoted_in_the_error():
  with pytest.raises(ValueError, match="'int4'.*'float32'"):
    tflite_export.convert(tu.build_tiny_cnn(), "int4")


def test_int8_io_needs_int8_quantization():
  with pytest.raises(ValueError, match="int8_io"):
    tflite_export.convert(tu.build_tiny_cnn(), "float16", int8_io=True)


def test_empty_representative_dataset_raises():
  empty = tf.data.Dataset.from_tensor_slices(
      np.zeros((0, 28, 28, 1), np.float32)).batch(8)
  with pytest.raises(ValueError, match="no images"):
    tflite_export.convert(tu.build_tiny_cnn(), "int8",
                          representative_data=empty)


def test_representative_data_of_wrong_shape_raises():
  with pytest.raises(ValueError, match=r"\(None, 28, 28, 1\)"):
    tflite_export.convert(tu.build_tiny_cnn(), "int8",
                          representative_data=np.zeros((4, 14, 14, 1)))


def test_representative_data_may_be_unbatched_images_or_an_array():
  x_train = tu.mnist_subset_arrays()[0][:64]
  model = tu.trained_tiny_cnn()
  unbatched_images = tf.data.Dataset.from_tensor_slices(x_train)
  for data in (unbatched_images, x_train):
    flatbuffer = tflite_export.convert(model, "int8",
                                       representative_data=data)
    assert tflite_export.tensor_dtypes(flatbuffer)["int8"] >= 10


def test_sequential_model_with_flatten_converts_exactly():
  keras.utils.set_random_seed(1)
  model = keras.Sequential([
      keras.Input((28, 28, 1)),
      keras.layers.Conv2D(8, 3, activation="relu"),
      keras.layers.MaxPooling2D(),
      keras.layers.Flatten(),
      keras.layers.Dropout(0.5),
      keras.layers.Dense(10, activation="softmax"),
  ])
  flatbuffer = tflite_export.convert(model)
  report = tflite_export.check_parity(flatbuffer, model, tu.test_dataset(),
                                      max_batches=2)
  assert report.num_examples == 200
  assert report.max_abs_logit_diff < 1e-5  # Dropout is off in the export.
  assert report.top1_agreement == 1.0


def test_save_writes_the_bytes_and_creates_folders(tmp_path):
  flatbuffer = tu.trained_tflite("float32")
  path = tmp_path / "nested" / "dir" / "model.tflite"
  written = tflite_export.save(flatbuffer, path)
  assert written == str(path)
  assert path.read_bytes() == flatbuffer
  assert os.listdir(path.parent) == ["model.tflite"]  # No temp file left.
  assert tflite_export.tensor_dtypes(str(path)) == (
      tflite_export.tensor_dtypes(flatbuffer))


def test_save_rejects_non_bytes(tmp_path):
  with pytest.raises(TypeError, match="str"):
    tflite_export.save("not a model", tmp_path / "m.tflite")
