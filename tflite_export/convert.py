"""Converts a plain Keras 3 model to a TFLite flatbuffer, optionally quantized.

The idea: a pruned network leaves the search as an ordinary `keras.Model`
(Conv2D, DepthwiseConv2D, BatchNormalization, ReLU, Add, pooling, Dense...).
Shipping it to a phone is one call to TensorFlow's `TFLiteConverter`, plus
the right switches for the number format you want on the device:

| quantization      | weights | activations | needs data | size vs float32 |
| ----------------- | ------- | ----------- | ---------- | --------------- |
| `"float32"`       | float32 | float32     | no         | 1x              |
| `"float16"`       | float16 | float32     | no         | about 1/2       |
| `"dynamic_range"` | int8    | float32 (*) | no         | about 1/4       |
| `"int8"`          | int8    | int8        | yes        | about 1/4       |

(*) dynamic-range kernels quantize activations on the fly where they can.

Full-integer `"int8"` is post-training quantization: the converter runs the
model on a few hundred real inputs (the *representative dataset*) to pick a
scale and zero point for every activation tensor. It is the format that runs
on integer-only hardware (DSPs, NPUs, microcontrollers) and is the fastest on
most phone CPUs. With `int8_io=True` even the model's input and output are
int8, so the app feeds quantized pixels and reads quantized logits (see
`tflite_export.parity` for the scale/zero-point arithmetic).

Conversion goes through `tf.lite.TFLiteConverter.from_keras_model`, which for
Keras 3 exports the model's inference call (`training=False`) and freezes its
variables. (Building a concrete function yourself and passing the model to
`from_concrete_functions` leaves the variables unfrozen: NaN float outputs and
a crash in int8 conversion.)

Example:

  import tflite_export

  flatbuffer = tflite_export.convert(
      model, quantization="int8", representative_data=train_ds,
      int8_io=True)
  tflite_export.save(flatbuffer, "/tmp/model_int8.tflite")
  print(tflite_export.tensor_dtypes(flatbuffer))  # {'int8': 31, 'int32': 9}
"""

import collections
import contextlib
import io
import os
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

from absl import logging
from ai_edge_litert import interpreter as litert_interpreter
import keras
import numpy as np
import tensorflow as tf

QUANTIZATION_MODES = ("float32", "float16", "dynamic_range", "int8")

# A NumPy array of representative images is read in batches of this size.
_ARRAY_BATCH_SIZE = 32

# Images (N, H, W, C), a tf.data.Dataset of images or of (images, labels).
RepresentativeData = Union[tf.data.Dataset, np.ndarray]


def convert(
    model: keras.Model,
    quantization: str = "float32",
    representative_data: Optional[RepresentativeData] = None,
    num_calibration_batches: int = 32,
    int8_io: bool = False,
) -> bytes:
  """Converts a Keras model to a TFLite flatbuffer in the given number format.

  Args:
    model: A built Keras 3 model (functional, sequential or subclassed and
      called once). Its inference behaviour (`training=False`) is exported:
      dropout off, batch norm with moving statistics.
    quantization: One of `"float32"`, `"float16"`, `"dynamic_range"`,
      `"int8"`; see the module docstring for what each one stores.
    representative_data: Required for `"int8"`, ignored otherwise. A
      `tf.data.Dataset` whose elements are images or `(images, labels)`
      pairs, batched or not, or a NumPy array of images `(N, H, W, C)`.
      Use the same preprocessing as at training time (e.g. pixels in [0, 1]).
    num_calibration_batches: How many dataset elements (batches, or single
      images for an unbatched dataset or array) to calibrate on. Each image
      is fed to the converter one at a time. A NumPy array is read in
      batches of 32. A few hundred to a thousand images is usual: 32
      batches of 32 is 1,024 (about 1.5 s for a small CNN). Too few images
      under-estimate activation ranges and clip rare large activations.
    int8_io: Only with `"int8"`: make the model's input and output tensors
      int8 too (otherwise they stay float32 with a quantize/dequantize op at
      each end). Integer-only accelerators need this.

  Returns:
    The TFLite flatbuffer as bytes. Write it with `save`.

  Raises:
    ValueError: For an unknown `quantization`, `"int8"` without
      `representative_data`, `int8_io` without `"int8"`, an empty
      representative dataset, or a model without exactly one input when
      calibrating.
  """
  if quantization not in QUANTIZATION_MODES:
    raise ValueError(
        f"quantization={quantization!r} is not supported; use one of "
        f"{', '.join(repr(m) for m in QUANTIZATION_MODES)}")
  if int8_io and quantization != "int8":
    raise ValueError(
        f"int8_io=True needs quantization='int8' (got {quantization!r}): "
        "only a fully integer model can take int8 inputs; pass "
        "quantization='int8' with representative_data, or drop int8_io")
  if num_calibration_batches < 1:
    raise ValueError(
        f"num_calibration_batches={num_calibration_batches} must be >= 1")

  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  if quantization == "float16":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  elif quantization == "dynamic_range":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  elif quantization == "int8":
    if representative_data is None:
      raise ValueError(
          "quantization='int8' needs representative_data to calibrate "
          "activation ranges, got None: pass a tf.data.Dataset of images or "
          "(images, labels) from the training set (a few hundred images, "
          "preprocessed as for training), or use "
          "quantization='dynamic_range', which needs no data")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative_dataset_fn(
        model, representative_data, num_calibration_batches)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
      converter.inference_input_type = tf.int8
      converter.inference_output_type = tf.int8

  with warnings.catch_warnings():
    # TF1-era warning about `quantized_input_stats`; the TF2 converter takes
    # the input scale from calibration, so it does not apply here.
    warnings.filterwarnings(
        "ignore", message="Statistics for quantized inputs were expected")
    # Keras' export prints "Saved artifact at ..." for its temporary
    # SavedModel; keep library output quiet and put it in the debug log.
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
      flatbuffer = converter.convert()
  logging.debug("TFLiteConverter output: %s", captured.getvalue())
  logging.info("Converted %s to TFLite (%s): %d bytes", model.name,
               quantization, len(flatbuffer))
  return flatbuffer


def save(tflite_bytes: bytes, path: Union[str, os.PathLike]) -> str:
  """Writes a TFLite flatbuffer to `path`, creating parent folders.

  The file is written next to its destination and renamed into place, so a
  reader (an `adb push` in another terminal, a benchmark) never sees half a
  model.

  Args:
    tflite_bytes: The flatbuffer returned by `convert`.
    path: Destination, conventionally ending in `.tflite`.

  Returns:
    The path written, as a string.

  Raises:
    TypeError: If `tflite_bytes` is not bytes.
    tf_metaprune.io.NotWritableError: If the folder is not writable.
  """
  if not isinstance(tflite_bytes, (bytes, bytearray)):
    raise TypeError(
        f"save() expects the bytes returned by convert(), got "
        f"{type(tflite_bytes).__name__}")
  path = os.fspath(path)
  from tf_metaprune import io as io_lib  # pylint: disable=g-import-not-at-top
  io_lib.write_bytes_atomic(path, bytes(tflite_bytes))   # also removes temporaries of writes killed mid-way
  return path


def load_tflite_bytes(tflite_model: Union[bytes, str, os.PathLike]) -> bytes:
  """Returns flatbuffer bytes from bytes or from a `.tflite` file path.

  Args:
    tflite_model: Flatbuffer bytes, or the path of a `.tflite` file.

  Returns:
    The flatbuffer bytes.

  Raises:
    FileNotFoundError: If a path is given and does not exist.
    TypeError: For any other type.
  """
  if isinstance(tflite_model, (bytes, bytearray)):
    return bytes(tflite_model)
  if isinstance(tflite_model, (str, os.PathLike)):
    path = os.fspath(tflite_model)
    if not os.path.exists(path):
      raise FileNotFoundError(
          f"No TFLite model at {path!r}: pass the bytes from "
          "tflite_export.convert() or the path given to tflite_export.save()")
    with open(path, "rb") as f:
      return f.read()
  raise TypeError(
      f"Expected TFLite flatbuffer bytes or a .tflite path, got "
      f"{type(tflite_model).__name__}")


def tensor_dtypes(
    tflite_model: Union[bytes, str, os.PathLike]) -> Dict[str, int]:
  """Counts the tensors of a TFLite model by element type.

  A quick check of what a conversion produced: a full-integer model is mostly
  `int8` tensors (activations and weights) with `int32` biases; a float16
  model stores its weights as `float16`; a float32 model has no integer
  tensors at all (apart from shape constants).

  Args:
    tflite_model: Flatbuffer bytes or a `.tflite` path.

  Returns:
    A dict from NumPy dtype name (`"int8"`, `"float32"`, ...) to the number of
    tensors of that type, sorted by name.

  Example:

    >>> counts = tensor_dtypes(convert(model, "int8", representative_data=ds))
    >>> counts["int8"] > 0
    True
  """
  interpreter = litert_interpreter.Interpreter(
      model_content=load_tflite_bytes(tflite_model))
  counts = collections.Counter(
      np.dtype(detail["dtype"]).name
      for detail in interpreter.get_tensor_details())
  return dict(sorted(counts.items()))


def _representative_dataset_fn(
    model: keras.Model,
    data: RepresentativeData,
    num_batches: int,
) -> Callable[[], Iterator[List[np.ndarray]]]:
  """Builds the generator the converter calls to calibrate int8 ranges.

  Args:
    model: The model being converted; its input rank tells batched elements
      (rank of the input) from single images (one less).
    data: See `convert(representative_data=...)`.
    num_batches: How many dataset elements (or array rows) to use.

  Returns:
    A function returning an iterator of `[image]` lists, each image float32
    with a leading batch dimension of 1.

  Raises:
    ValueError: If the model has not exactly one input, or the data is empty
      or of the wrong shape.
  """
  if len(model.inputs) != 1:
    raise ValueError(
        f"int8 calibration supports models with exactly one input; "
        f"{model.name!r} has {len(model.inputs)}: convert with "
        "quantization='dynamic_range' instead, or wrap the model")
  input_shape = tuple(model.inputs[0].shape)
  model_rank = len(input_shape)

  def as_images(element: Any) -> np.ndarray:
    if isinstance(element, dict):
      raise ValueError(
          "representative_data yields dicts; yield images or "
          "(images, labels) tuples instead")
    if isinstance(element, (tuple, list)):
      element = element[0]
    images = np.asarray(element, dtype=np.float32)
    if images.ndim == model_rank - 1:
      images = images[np.newaxis]
    fits = images.ndim == model_rank and all(
        want is None or want == got
        for want, got in zip(input_shape[1:], images.shape[1:]))
    if not fits:
      raise ValueError(
          f"representative_data yields arrays of shape {images.shape}, but "
          f"the model input is {input_shape}: yield batches of that shape "
          "or single images without the batch dimension")
    return images

  def generator() -> Iterator[List[np.ndarray]]:
    if isinstance(data, tf.data.Dataset):
      elements = data.take(num_batches).as_numpy_iterator()
    else:
      array = np.asarray(data, dtype=np.float32)
      if array.ndim == model_rank:  # Rows are images: batches of 32.
        elements = (array[i:i + _ARRAY_BATCH_SIZE] for i in range(
            0, min(len(array), num_batches * _ARRAY_BATCH_SIZE),
            _ARRAY_BATCH_SIZE))
      else:
        elements = iter([array])
    num_images = 0
    for element in elements:
      for image in as_images(element):
        num_images += 1
        yield [image[np.newaxis]]
    if num_images == 0:
      raise ValueError(
          "representative_data produced no images: pass a non-empty "
          "dataset (check .take()/.filter() upstream)")
    logging.info("int8 calibration used %d images", num_images)

  return generator
