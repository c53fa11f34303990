"""Converting the one-layer models of a plan (and the empty, overhead and reference models) to TFLite."""

import contextlib
import io
import sys
import time
import warnings
from typing import Dict

import keras
import numpy as np
import tensorflow as tf

from tf_metaprune.latency_lut.plan import _Plan
from tf_metaprune.latency_lut.tables import EMPTY_MODEL
from tf_metaprune.latency_lut.tables import OVERHEAD_MODEL
from tf_metaprune.latency_lut.tables import REFERENCE_MODEL
from tf_metaprune.rebuild import rebuild
# Not `from tflite_export import convert`: the package hands out the functions under the module names.
from tflite_export.convert import convert

# Random calibration images per one-layer int8 model: ranges of random
# weights on random inputs; latency does not depend on them.
_NUM_CALIBRATION_IMAGES = 8


def _convert(model: keras.Model, quantization: str, int8_io: bool, rng: np.random.Generator) -> bytes:
  if quantization != "int8":
    return convert(model, quantization)
  inputs = model.inputs
  if len(inputs) == 1:
    shape = (_NUM_CALIBRATION_IMAGES,) + tuple(inputs[0].shape[1:])
    data = rng.random(shape, dtype=np.float32)
    return convert(model, "int8", representative_data=data, num_calibration_batches=1,
                               int8_io=int8_io)
  # Several inputs (an add): convert() calibrates single-input models only.
  return _convert_multi_input_int8(model, rng, int8_io)


def _convert_multi_input_int8(model, rng, int8_io):
  # By input name: the converter may order inputs of different shapes (a broadcast gate) unlike model.inputs.
  shapes = {t.name.split(":")[0]: (1,) + tuple(t.shape[1:]) for t in model.inputs}

  def representative():
    for _ in range(_NUM_CALIBRATION_IMAGES):
      yield {name: rng.random(s, dtype=np.float32) for name, s in shapes.items()}

  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = representative
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  if int8_io:
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
  return _quiet_convert(converter)


def _quiet_convert(converter):
  with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
    warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
    return converter.convert()


def _empty_model(input_shape) -> keras.Model:
  x = keras.Input(tuple(input_shape))
  return keras.Model(x, keras.layers.ReLU()(x), name="empty")


class _Progress:
  """Prints 'k/n <what> (elapsed, ~left)' to stderr, at most every 10 s and at the end."""

  def __init__(self, total, enabled, what, interval_s=10.0):
    self.total, self.enabled, self.what, self.interval_s = total, enabled, what, interval_s
    self.start = self.last = time.monotonic()

  def update(self, done):
    now = time.monotonic()
    if not self.enabled or (now - self.last < self.interval_s and done != self.total):
      return
    self.last = now
    elapsed = now - self.start
    left = elapsed / done * (self.total - done) if done else float("nan")
    print(f"[latency table] {done}/{self.total} {self.what} ({elapsed:.0f} s, ~{left:.0f} s left)",
          file=sys.stderr, flush=True)


def _whole_model_flatbuffer(space, structure, quantization, rng, representative_data=None) -> bytes:
  """The rebuilt structure converted as it would be exported (float input/output)."""
  model = rebuild(space, structure)
  if quantization != "int8":
    return convert(model, quantization)
  if representative_data is None:
    representative_data = rng.random((32,) + tuple(space.input_shape), dtype=np.float32)
  return convert(model, "int8", representative_data=representative_data)


def _convert_plan(space, plan: _Plan, quantization: str, seed: int, progress: bool) -> Dict[str, bytes]:
  """Converts every one-layer model of the plan, the empty models and the reference.

  Returns:
    {signature name, EMPTY_MODEL, OVERHEAD_MODEL or REFERENCE_MODEL: flatbuffer}.
  """
  rng = np.random.default_rng(seed)
  int8_io = quantization == "int8"
  signatures = plan.signatures()
  status = _Progress(len(signatures) + 3, progress, "models converted")
  todo = [(EMPTY_MODEL, lambda: _convert(_empty_model((1, 1, 1)), quantization, int8_io, rng)),
          # The exported model keeps float input and output (an int8 model quantizes its input).
          (OVERHEAD_MODEL, lambda: _convert(_empty_model(space.input_shape), quantization, False, rng)),
          (REFERENCE_MODEL, lambda: _whole_model_flatbuffer(space, _reference_structure(space), quantization,
                                                            rng))]
  todo += [(sig.name, lambda sig=sig: _convert(sig.build_model(), quantization, int8_io, rng))
           for sig in signatures]
  flatbuffers = {}
  for i, (name, make) in enumerate(todo):
    flatbuffers[name] = make()
    status.update(i + 1)
  return flatbuffers


def _reference_structure(space):
  return space.uniform(0.5)

