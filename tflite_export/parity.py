"""Checks that a TFLite model still computes what its Keras model computes.

The idea: conversion can change numbers (float16 rounding, int8
quantization, a mis-exported training-mode layer). Run the Keras model and
the TFLite model on the same images and compare: accuracy of each against
the labels, how often their top-1 classes agree, and the largest difference
between their outputs. Quantized outputs are dequantized first, so the logit
difference is in the Keras model's units.

The TFLite model runs in the LiteRT interpreter (`ai_edge_litert`, the
successor of the deprecated `tf.lite.Interpreter`). Batches are fed whole by
resizing the input tensor to the batch size (measured to work for float32 and
for int8-in/int8-out models with dynamic batch size); a model converted with
a fixed batch size, or one whose resize fails, is fed one image at a time.
`ParityReport.mode` says which way was used.

For int8 input and output tensors the interpreter's (scale, zero_point) pair
does the arithmetic:

  q = clip(round(x / scale) + zero_point, -128, 127)     # feed the model
  y = (q_out - zero_point_out) * scale_out                # read the logits

Example:

  report = tflite_export.check_parity(int8_bytes, model, test_ds)
  print(report.keras_accuracy, report.tflite_accuracy, report.top1_agreement)
  open("parity.json", "w").write(report.to_json())

A drop of more than `int8_drop_warn_pt` percentage points from Keras to
TFLite accuracy raises an `AccuracyDropWarning` (and an absl warning log):
that is the sign to calibrate on more or better data, or to use
quantization-aware training (`tflite_export.quantization_aware_train`).
"""

import dataclasses
import json
import os
import warnings
from typing import Any, Dict, List, Optional, Tuple, Union

from absl import logging
from ai_edge_litert import interpreter as litert_interpreter
import keras
import numpy as np
import tensorflow as tf

from tflite_export.convert import load_tflite_bytes

MODE_BATCHED = "batched"
MODE_ONE_AT_A_TIME = "one_example_at_a_time"


class AccuracyDropWarning(UserWarning):
  """TFLite accuracy fell further below Keras accuracy than allowed."""


@dataclasses.dataclass
class ParityReport:
  """How closely a TFLite model follows its Keras model on a dataset.

  Attributes:
    num_examples: Images compared.
    keras_accuracy: Top-1 accuracy of the Keras model in [0, 1], or None when
      the dataset has no labels.
    tflite_accuracy: Top-1 accuracy of the TFLite model, or None.
    accuracy_drop_pt: `(keras_accuracy - tflite_accuracy) * 100`, in
      percentage points (positive = TFLite worse), or None.
    top1_agreement: Fraction of images on which both models pick the same
      class. For a dense-prediction output (B, H, W, K): of pixels; for a
      model of several outputs: of the first output (the class logits),
      while the differences below cover all outputs.
    max_abs_logit_diff: Largest |keras - tflite| over all outputs, after
      dequantizing int8 outputs. "Logit" is whatever the model outputs
      (probabilities for a softmax head).
    mean_abs_logit_diff: Mean of the same differences.
    input_dtype: The TFLite input tensor type (`"float32"`, `"int8"`, ...).
    output_dtype: The TFLite output tensor type.
    mode: `"batched"` or `"one_example_at_a_time"`: how images were fed.
    warned: Whether the accuracy drop exceeded the threshold.
  """
  num_examples: int
  keras_accuracy: Optional[float]
  tflite_accuracy: Optional[float]
  accuracy_drop_pt: Optional[float]
  top1_agreement: float
  max_abs_logit_diff: float
  mean_abs_logit_diff: float
  input_dtype: str
  output_dtype: str
  mode: str
  warned: bool = False

  def to_json(self, indent: Optional[int] = 2) -> str:
    """Returns the report as a JSON string."""
    return json.dumps(dataclasses.asdict(self), indent=indent, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> "ParityReport":
    """Rebuilds a report from `to_json()` output."""
    return cls(**json.loads(text))


def check_parity(
    tflite_model: Union[bytes, str, os.PathLike],
    keras_model: keras.Model,
    dataset: tf.data.Dataset,
    max_batches: Optional[int] = None,
    int8_drop_warn_pt: float = 1.0,
    num_threads: Optional[int] = None,
) -> ParityReport:
  """Runs a TFLite model and its Keras model on a dataset and compares them.

  Args:
    tflite_model: Flatbuffer bytes or a `.tflite` path, e.g. from `convert`.
    keras_model: The Keras model it was converted from, called with
      `training=False`.
    dataset: A `tf.data.Dataset` of `(images, labels)` or of images, batched
      or not. Labels may be class ids or one-hot vectors; without labels the
      accuracies are None and only agreement and differences are reported.
    max_batches: Compare on at most this many dataset elements (None: all).
    int8_drop_warn_pt: Warn when TFLite accuracy is more than this many
      percentage points below Keras accuracy. Named for int8, where it
      matters, but applied to every model.
    num_threads: Interpreter threads (None: LiteRT's default).

  Returns:
    A `ParityReport`.

  Raises:
    ValueError: If the dataset is empty, its images do not fit the model, or
      the TFLite model has not exactly one input and one output.
  """
  flatbuffer = load_tflite_bytes(tflite_model)
  runner = _TfliteRunner(flatbuffer, num_threads=num_threads)
  model_rank = len(runner.input_detail["shape_signature"])

  if max_batches is not None:
    dataset = dataset.take(max_batches)
  keras_outputs, tflite_outputs, labels = [], [], []
  for element in dataset.as_numpy_iterator():
    images, batch_labels = _split_element(element)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == model_rank - 1:
      images = images[np.newaxis]
      batch_labels = (None if batch_labels is None else
                      np.asarray(batch_labels)[np.newaxis])
    if images.ndim != model_rank:
      raise ValueError(
          f"dataset yields images of shape {images.shape}; the TFLite model "
          f"expects {tuple(runner.input_detail['shape_signature'])}: batch "
          "the dataset or fix its preprocessing")
    outs = keras_model(images, training=False)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    keras_outputs.append([keras.ops.convert_to_numpy(o) for o in outs])
    tflite_outputs.append(runner.run(images))
    if batch_labels is not None:
      if isinstance(batch_labels, (list, tuple)):  # one label array per output: the first output's
        batch_labels = batch_labels[0]
      labels.append(_class_ids(np.asarray(batch_labels)))

  if not keras_outputs:
    raise ValueError(
        "dataset produced no examples: pass a non-empty dataset "
        f"(max_batches={max_batches})")
  if len(keras_outputs[0]) != runner.num_outputs:
    raise ValueError(
        f"the Keras model has {len(keras_outputs[0])} outputs but the TFLite "
        f"model {runner.num_outputs}: pass the model it was converted from")
  num_examples = sum(len(o[0]) for o in keras_outputs)
  # Per output, (examples x positions, channels): a classifier has one position, a dense-prediction map H*W.
  keras_all = [np.concatenate([o[j] for o in keras_outputs]) for j in range(runner.num_outputs)]
  tflite_all = [np.concatenate([o[j] for o in tflite_outputs]).reshape(k.shape) for j, k in enumerate(keras_all)]
  keras_out = keras_all[0].reshape(-1, keras_all[0].shape[-1])
  tflite_out = tflite_all[0].reshape(keras_out.shape)
  keras_top1 = keras_out.argmax(axis=-1)
  tflite_top1 = tflite_out.argmax(axis=-1)
  diff = np.concatenate([np.abs(k.astype(np.float64) - t.astype(np.float64)).reshape(-1)
                         for k, t in zip(keras_all, tflite_all)])

  keras_accuracy = tflite_accuracy = drop_pt = None
  if labels:
    label_ids = np.concatenate(labels)
    keras_accuracy = float(np.mean(keras_top1 == label_ids))
    tflite_accuracy = float(np.mean(tflite_top1 == label_ids))
    drop_pt = (keras_accuracy - tflite_accuracy) * 100.0

  report = ParityReport(
      num_examples=int(num_examples),
      keras_accuracy=keras_accuracy,
      tflite_accuracy=tflite_accuracy,
      accuracy_drop_pt=drop_pt,
      top1_agreement=float(np.mean(keras_top1 == tflite_top1)),
      max_abs_logit_diff=float(diff.max()),
      mean_abs_logit_diff=float(diff.mean()),
      input_dtype=np.dtype(runner.input_detail["dtype"]).name,
      output_dtype=np.dtype(runner.output_detail["dtype"]).name,
      mode=runner.mode,
  )
  logging.info("TFLite parity: %s", report.to_json(indent=None))
  if drop_pt is not None and drop_pt > int8_drop_warn_pt:
    report.warned = True
    message = (
        f"TFLite accuracy {tflite_accuracy:.4f} is {drop_pt:.2f} percentage "
        f"points below Keras accuracy {keras_accuracy:.4f} on "
        f"{report.num_examples} examples (threshold {int8_drop_warn_pt} pt). "
        "Calibrate on more, representative images (num_calibration_batches), "
        "keep float32 inputs/outputs, or use quantization-aware training "
        "(tflite_export.quantization_aware_train).")
    logging.warning(message)
    warnings.warn(message, AccuracyDropWarning, stacklevel=2)
  return report


def _split_element(element: Any) -> Tuple[np.ndarray, Optional[np.ndarray]]:
  """Splits a dataset element into (images, labels or None)."""
  if isinstance(element, dict):
    raise ValueError(
        "dataset yields dicts; map it to (images, labels) tuples first")
  if isinstance(element, (tuple, list)):
    if len(element) == 1:
      return element[0], None
    return element[0], element[1]
  return element, None


def _class_ids(labels: np.ndarray) -> np.ndarray:
  """Returns integer class ids from ids (N,) / (N, 1) or one-hot (N, K)."""
  if labels.ndim == 2 and labels.shape[1] > 1:
    return labels.argmax(axis=-1)
  return labels.reshape(-1).astype(np.int64)


class _TfliteRunner:
  """Feeds float images to a LiteRT interpreter, (de)quantizing int8 io."""

  def __init__(self, flatbuffer: bytes, num_threads: Optional[int] = None):
    self._interpreter = litert_interpreter.Interpreter(
        model_content=flatbuffer, num_threads=num_threads)
    inputs = self._interpreter.get_input_details()
    outputs = _outputs_in_model_order(self._interpreter)
    if len(inputs) != 1:
      raise ValueError(
          f"check_parity compares single-input models; this TFLite model "
          f"has {len(inputs)} inputs")
    self.input_detail = inputs[0]
    self.output_details = outputs
    self.output_detail = outputs[0]
    self.num_outputs = len(outputs)
    self._interpreter.allocate_tensors()
    self._batch_size = int(self.input_detail["shape"][0])
    dynamic_batch = int(self.input_detail["shape_signature"][0]) == -1
    self.mode = MODE_BATCHED if dynamic_batch else MODE_ONE_AT_A_TIME

  def run(self, images: np.ndarray) -> List[np.ndarray]:
    """Returns the dequantized float32 outputs (one array per output) for a batch of float images."""
    quantized = _quantize(images, self.input_detail)
    if self.mode == MODE_BATCHED:
      try:
        return self._invoke(quantized)
      except (RuntimeError, ValueError) as e:
        logging.warning(
            "Batched TFLite inference failed (%s); feeding one example at a "
            "time instead", e)
        self.mode = MODE_ONE_AT_A_TIME
    per_example = [self._invoke(x[np.newaxis]) for x in quantized]
    return [np.concatenate([o[j] for o in per_example]) for j in range(self.num_outputs)]

  def _invoke(self, batch: np.ndarray) -> List[np.ndarray]:
    index = self.input_detail["index"]
    if batch.shape[0] != self._batch_size:
      self._interpreter.resize_tensor_input(index, list(batch.shape))
      self._interpreter.allocate_tensors()
      self._batch_size = batch.shape[0]
    self._interpreter.set_tensor(index, batch)
    self._interpreter.invoke()
    return [_dequantize(self._interpreter.get_tensor(d["index"]), d) for d in self.output_details]


def _outputs_in_model_order(interpreter) -> List[Dict[str, Any]]:
  """The interpreter's output details in the Keras model's output order.

  The converter lists a multi-output model's tensors in its own order; its
  one signature names them output_0, output_1, ... in the model's order.
  """
  outputs = interpreter.get_output_details()
  signatures = interpreter.get_signature_list()
  if len(outputs) < 2 or len(signatures) != 1:
    return outputs
  named = interpreter.get_signature_runner(next(iter(signatures))).get_output_details()
  def position(name):
    tail = name.rsplit("_", 1)[-1]
    return (0, int(tail), name) if tail.isdigit() else (1, 0, name)
  order = [named[n]["index"] for n in sorted(named, key=position)]
  if sorted(order) != sorted(d["index"] for d in outputs):
    return outputs
  by_index = {d["index"]: d for d in outputs}
  return [by_index[i] for i in order]


def _quantize(x: np.ndarray, detail: Dict[str, Any]) -> np.ndarray:
  """Converts float input to the tensor's type using its scale/zero point."""
  dtype = np.dtype(detail["dtype"])
  if not np.issubdtype(dtype, np.integer):
    return x.astype(dtype)
  scale, zero_point = detail["quantization"]
  if scale == 0:
    raise ValueError(
        f"TFLite input tensor {detail['name']!r} is {dtype.name} without "
        "quantization parameters (scale 0); feed it pre-quantized data "
        "through the interpreter directly")
  info = np.iinfo(dtype)
  q = np.round(x / scale) + zero_point
  return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(q: np.ndarray, detail: Dict[str, Any]) -> np.ndarray:
  """Converts integer output back to float using its scale/zero point."""
  dtype = np.dtype(detail["dtype"])
  if not np.issubdtype(dtype, np.integer):
    return q.astype(np.float32)
  scale, zero_point = detail["quantization"]
  return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)
