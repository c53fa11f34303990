"""Tests for tflite_export.check_parity: quantized io, modes, warnings."""

import logging
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tflite_export
import tflite_testutil as tu
from tflite_export import parity


def test_int8_outputs_are_dequantized_to_keras_units():
  report = tflite_export.check_parity(
      tu.trained_tflite("int8", int8_io=True), tu.trained_tiny_cnn(),
      tu.test_dataset(), max_batches=3)
  # Raw int8 outputs would differ from the logits by tens; dequantized ones
  # differ by a few quantization steps.
  assert report.mean_abs_logit_diff < 0.3, report.to_json()
  assert report.mode == parity.MODE_BATCHED


def test_fixed_batch_model_is_fed_one_example_at_a_time_with_same_result():
  model = tu.trained_tiny_cnn()
  single = keras.Input(batch_shape=(1, 28, 28, 1))
  fixed_batch_model = keras.Model(single, model(single))
  flatbuffer = tflite_export.convert(fixed_batch_model)
  one_at_a_time = tflite_export.check_parity(
      flatbuffer, model, tu.test_dataset(), max_batches=2)
  batched = tflite_export.check_parity(
      tu.trained_tflite("float32"), model, tu.test_dataset(), max_batches=2)
  assert one_at_a_time.mode == parity.MODE_ONE_AT_A_TIME
  assert batched.mode == parity.MODE_BATCHED
  assert one_at_a_time.num_examples == batched.num_examples == 200
  assert one_at_a_time.tflite_accuracy == batched.tflite_accuracy
  assert one_at_a_time.max_abs_logit_diff < 1e-4


def test_accuracy_drop_beyond_threshold_warns_loudly(caplog):
  # An untrained network's TFLite model stands in for a broken conversion.
  keras.utils.set_random_seed(3)
  broken = tflite_export.convert(tu.build_tiny_cnn())
  with caplog.at_level(logging.WARNING):
    with pytest.warns(parity.AccuracyDropWarning, match="percentage points"):
      report = tflite_export.check_parity(
          broken, tu.trained_tiny_cnn(), tu.test_dataset(), max_batches=2,
          int8_drop_warn_pt=1.0)
  assert report.warned
  assert report.accuracy_drop_pt > 20
  assert any("percentage points" in r.getMessage() for r in caplog.records)


def test_no_warning_when_accuracy_holds():
  with warnings.catch_warnings():
    warnings.simplefilter("error", parity.AccuracyDropWarning)
    report = tflite_export.check_parity(
        tu.trained_tflite("float32"), tu.trained_tiny_cnn(), tu.test_dataset(),
        max_batches=2)
  assert not report.warned


def test_dataset_without_labels_reports_agreement_only():
  images = tf.data.Dataset.from_tensor_slices(
      tu.mnist_subset_arrays()[2][:150]).batch(50)
  report = tflite_export.check_parity(tu.trained_tflite("float32"),
                                      tu.trained_tiny_cnn(), images)
  assert report.num_examples == 150
  assert report.keras_accuracy is None and report.tflite_accuracy is None
  assert report.accuracy_drop_pt is None
  assert report.top1_agreement == 1.0


def test_one_hot_and_unbatched_labels_give_the_same_accuracy():
  _, _, x_test, y_test = tu.mnist_subset_arrays()
  x, y = x_test[:100], y_test[:100]
  flatbuffer, model = tu.trained_tflite("float32"), tu.trained_tiny_cnn()
  ids = tflite_export.check_parity(
      flatbuffer, model, tf.data.Dataset.from_tensor_slices((x, y)).batch(25))
  one_hot = tflite_export.check_parity(
      flatbuffer, model, tf.data.Dataset.from_tensor_slices(
          (x, np.eye(10, dtype=np.float32)[y])).batch(25))
  unbatched = tflite_export.check_parity(
      flatbuffer, model, tf.data.Dataset.from_tensor_slices((x, y)))
  expected = float(np.mean(
      model.predict(x, verbose=0).argmax(axis=-1) == y))
  assert ids.keras_accuracy == one_hot.keras_accuracy == expected
  assert unbatched.keras_accuracy == expected
  assert unbatched.num_examples == 100


def test_accepts_a_tflite_path_and_report_round_trips_through_json(tmp_path):
  path = tflite_export.save(tu.trained_tflite("float32"),
                            tmp_path / "m.tflite")
  report = tflite_export.check_parity(path, tu.trained_tiny_cnn(),
                                      tu.test_dataset(), max_batches=1)
  assert report.num_examples == 100
  restored = tflite_export.ParityReport.from_json(report.to_json())
  assert restored == report


def test_empty_dataset_raises():
  empty = tf.data.Dataset.from_tensor_slices(
      (np.zeros((0, 28, 28, 1), np.float32), np.zeros((0,), np.int64)))
  with pytest.raises(ValueError, match="no examples"):
    tflite_export.check_parity(tu.trained_tflite("float32"),
                               tu.trained_tiny_cnn(), empty)
