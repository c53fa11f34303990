"""Quantization-aware training (QAT) of a Keras 3 model, in a child process.

The idea: post-training int8 quantization (`convert(..., "int8")`) rounds a
model trained in float; usually that costs well under a point of accuracy,
but small or heavily pruned networks can lose more. QAT fine-tunes the model
with the int8 rounding simulated in the forward pass ("fake quantization"),
so the weights learn to live with it, then converts to a full-integer
TFLite model.

Why a child process: TensorFlow Model Optimization (tfmot), which provides
`quantize_model`, only accepts tf_keras (Keras 2) models, and importing it
sets `TF_USE_LEGACY_KERAS=1`, switching `tf.keras` to tf_keras for the whole
process. This library and its callers use Keras 3. So this module never
imports tfmot or tf_keras; it writes a job folder and runs
`python -m tflite_export._qat_worker JOB_DIR`, which does the Keras 2 part:

  parent (Keras 3)                        worker (tf_keras + tfmot)
  graph.json  layer classes, the config   rebuild the same graph in tf_keras,
              keys tf_keras understands,  set_weights layer by layer,
              inbound layer names         quantize_model, compile, fit,
  weights.npz per-layer arrays            TFLiteConverter (Optimize.DEFAULT)
  data.npz    images, labels              -> model.tflite + report.json
  config.json epochs, batch size, ...

Everything crosses the boundary as JSON and `.npz` arrays (loaded with
`allow_pickle=False`); nothing is pickled.

Supported layers (`SUPPORTED_LAYER_CONFIG_KEYS`): InputLayer, Conv2D,
DepthwiseConv2D, SeparableConv2D, BatchNormalization, ReLU, Activation,
Softmax, Add, Multiply, Concatenate, GlobalAveragePooling2D,
GlobalMaxPooling2D, MaxPooling2D, AveragePooling2D, ZeroPadding2D,
Cropping2D, UpSampling2D, Rescaling, LayerNormalization, Flatten, Reshape,
Dense, Dropout. With `fallback_to_post_training=True`, a model with any other
layer (a Keras op applied to a tensor, a custom layer, Normalization ...) is
converted with post-training int8 instead, and the one line naming the
layer that blocks QAT is in `QatResult.fallback`. tfmot folds batch norm into the preceding
convolution only for Conv -> BN -> ReLU with the convolution *without* its
own activation; a Conv2D(activation="relu") followed by BatchNormalization
is rejected by `quantize_model`.

Example:

  result = tflite_export.quantization_aware_train(
      model, train_ds, epochs=1, output_path="/tmp/model_qat.tflite")
  print(result.train_accuracy_per_epoch, result.size_bytes)
  report = tflite_export.check_parity(result.tflite_model, model, test_ds)
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tflite_export.convert import convert as convert_tflite
from tflite_export.convert import save as save_tflite

GRAPH_FORMAT = "tflite_export.qat_graph"
GRAPH_FORMAT_VERSION = 1

# Config keys copied from each Keras 3 layer: those tf_keras 2.x accepts with
# the same meaning. Initializers, regularizers and constraints are left out:
# the weights are copied and QAT fine-tunes without regularization.
SUPPORTED_LAYER_CONFIG_KEYS: Dict[str, Tuple[str, ...]] = {
    "InputLayer": (),  # Rebuilt from batch_shape and dtype.
    "Conv2D": ("filters", "kernel_size", "strides", "padding", "data_format",
               "dilation_rate", "groups", "activation", "use_bias"),
    "DepthwiseConv2D": ("kernel_size", "strides", "padding",
                        "depth_multiplier", "data_format", "dilation_rate",
                        "activation", "use_bias"),
    "BatchNormalization": ("axis", "momentum", "epsilon", "center", "scale"),
    "ReLU": ("max_value", "negative_slope", "threshold"),
    "Activation": ("activation",),
    "Add": (),
    "GlobalAveragePooling2D": ("data_format", "keepdims"),
    "MaxPooling2D": ("pool_size", "strides", "padding", "data_format"),
    "AveragePooling2D": ("pool_size", "strides", "padding", "data_format"),
    "ZeroPadding2D": ("padding", "data_format"),
    "Flatten": ("data_format",),
    "Reshape": ("target_shape",),
    "Dense": ("units", "activation", "use_bias"),
    "Dropout": ("rate", "noise_shape", "seed"),
    # The other layers keras.applications models are made of (issue 27). tfmot quantizes the first five
    # itself; Multiply, Rescaling and LayerNormalization, which it has no rule for, get their output
    # quantized (the worker annotates them), as the converter's int8 kernels expect.
    "SeparableConv2D": ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
                        "depth_multiplier", "activation", "use_bias"),
    "Concatenate": ("axis",),
    "GlobalMaxPooling2D": ("data_format", "keepdims"),
    "Cropping2D": ("cropping", "data_format"),
    "UpSampling2D": ("size", "data_format", "interpolation"),
    "Softmax": ("axis",),
    "Multiply": (),
    "Rescaling": ("scale", "offset"),
    "LayerNormalization": ("axis", "epsilon", "center", "scale"),
}

_STDERR_TAIL_LINES = 40
_NUM_REFERENCE_IMAGES = 16


@dataclasses.dataclass
class QatResult:
  """The int8 TFLite model from quantization-aware training, and its report.

  Attributes:
    tflite_model: The full-integer TFLite flatbuffer (None after
      `from_json`, which does not carry bytes; read `output_path`).
    size_bytes: Size of the flatbuffer.
    output_path: Where it was saved, or None.
    epochs: Epochs of QAT fine-tuning.
    num_train_examples: Training images used.
    train_accuracy_per_epoch: Training accuracy (fake-quantized model) after
      each epoch, in [0, 1].
    train_loss_per_epoch: Training loss after each epoch.
    validation_accuracy: Accuracy of the QAT Keras model on the validation
      data after training, or None without validation data.
    rebuild_max_abs_diff: Largest output difference between the worker's
      tf_keras copy and the Keras 3 model on a few training images, before
      QAT (float rounding: about 1e-6; the worker stops above 1e-3).
    wall_time_s: Time of the whole call, in seconds, including the child's
      TensorFlow import.
    tfmot_version: tensorflow-model-optimization version in the worker.
    fallback: None after QAT; with `fallback_to_post_training`, the one line
      saying which layer blocked QAT (the model was then converted with
      post-training int8: epochs 0, no training figures).
  """
  tflite_model: Optional[bytes]
  size_bytes: int
  output_path: Optional[str]
  epochs: int
  num_train_examples: int
  train_accuracy_per_epoch: List[float]
  train_loss_per_epoch: List[float]
  validation_accuracy: Optional[float]
  rebuild_max_abs_diff: Optional[float]
  wall_time_s: float
  tfmot_version: str
  fallback: Optional[str] = None

  def to_json(self, indent: Optional[int] = 2) -> str:
    """Returns the report as JSON (without the flatbuffer bytes)."""
    fields = dataclasses.asdict(self)
    del fields["tflite_model"]
    return json.dumps(fields, indent=indent, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> "QatResult":
    """Rebuilds a report from `to_json()` output; `tflite_model` is None."""
    return cls(tflite_model=None, **json.loads(text))


def quantization_aware_train(
    model: keras.Model,
    train_dataset: Union[tf.data.Dataset, Tuple[np.ndarray, np.ndarray]],
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 1e-4,
    max_train_batches: Optional[int] = None,
    validation_dataset: Optional[
        Union[tf.data.Dataset, Tuple[np.ndarray, np.ndarray]]] = None,
    from_logits: Optional[bool] = None,
    int8_io: bool = False,
    output_path: Optional[Union[str, os.PathLike]] = None,
    seed: int = 0,
    timeout_s: Optional[float] = 3600.0,
    fallback_to_post_training: bool = False,
) -> QatResult:
  """Fine-tunes `model` with simulated int8 and converts it to int8 TFLite.

  The model itself is not changed: a tf_keras copy is trained in a child
  process (see the module docstring for why).

  Args:
    model: A functional or sequential Keras 3 classifier made of the
      supported layers (see `SUPPORTED_LAYER_CONFIG_KEYS`), single input and
      output, usually already trained in float.
    train_dataset: A `tf.data.Dataset` of `(images, labels)` (batched or
      not), or an `(images, labels)` tuple of arrays. Labels are class ids or
      one-hot. The data is copied to the child as arrays, so keep it to what
      fits in memory (see `max_train_batches`).
    epochs: Epochs of QAT fine-tuning. One or a few is typical.
    batch_size: Batch size in the child (the dataset's own batching is
      undone when it is copied).
    learning_rate: Adam learning rate. Fine-tuning wants a small one.
    max_train_batches: Use at most this many dataset elements (None: all).
    validation_dataset: Optional data of the same form, evaluated with the
      QAT Keras model after training.
    from_logits: Whether the model outputs logits. None: True unless the
      last layer ends in a softmax.
    int8_io: Make the TFLite model's input and output int8 too.
    output_path: If given, the `.tflite` is also saved there.
    seed: Seed for the child's shuffling and initialization.
    timeout_s: Kill the child after this many seconds (None: no limit).
    fallback_to_post_training: If a layer blocks QAT (or the tfmot worker
      fails on the model), log the one line that says which, and convert the
      model with post-training int8 (`convert(model, "int8")`, calibrated on
      the training images) instead of raising.

  Returns:
    A `QatResult` holding the flatbuffer and the training report.

  Raises:
    ValueError: If the model has a layer or structure the worker cannot
      rebuild, the data is empty, or epochs/batch_size are below 1.
    RuntimeError: If the worker fails or times out; the message ends with
      the tail of its stderr.
  """
  start = time.perf_counter()
  if epochs < 1 or batch_size < 1:
    raise ValueError(
        f"epochs={epochs} and batch_size={batch_size} must both be >= 1")
  try:
    graph, weights = keras_model_to_graph(model)
  except ValueError as e:
    if not fallback_to_post_training:
      raise
    return _post_training_fallback(model, train_dataset, max_train_batches, int8_io, output_path, start,
                                   str(e).split(";")[0].split(". Rebuild the model")[0])
  if from_logits is None:
    from_logits = not _ends_in_softmax(model)
  image_rank = len(model.inputs[0].shape) - 1
  images, labels = _dataset_to_arrays(train_dataset, max_train_batches,
                                      "train_dataset", image_rank)
  config = {
      "epochs": int(epochs),
      "batch_size": int(batch_size),
      "learning_rate": float(learning_rate),
      "from_logits": bool(from_logits),
      "int8_io": bool(int8_io),
      "seed": int(seed),
  }
  with tempfile.TemporaryDirectory(prefix="tflite_export_qat_") as job_dir:
    with open(os.path.join(job_dir, "graph.json"), "w") as f:
      json.dump(graph, f, indent=1)
    np.savez(os.path.join(job_dir, "weights.npz"), **weights)
    # A few Keras 3 outputs let the worker prove its tf_keras copy is exact.
    reference_images = images[:_NUM_REFERENCE_IMAGES]
    arrays = {
        "train_images": images,
        "train_labels": labels,
        "reference_images": reference_images,
        "reference_outputs": keras.ops.convert_to_numpy(
            model(reference_images, training=False)),
    }
    if validation_dataset is not None:
      arrays["val_images"], arrays["val_labels"] = _dataset_to_arrays(
          validation_dataset, None, "validation_dataset", image_rank)
    np.savez(os.path.join(job_dir, "data.npz"), **arrays)
    with open(os.path.join(job_dir, "config.json"), "w") as f:
      json.dump(config, f, indent=1)

    try:
      run_worker(job_dir, timeout_s=timeout_s)
    except RuntimeError as e:
      if not fallback_to_post_training:
        raise
      tail = [l for l in str(e).splitlines() if l.strip()][-1]
      return _post_training_fallback(model, train_dataset, max_train_batches, int8_io, output_path, start,
                                     f"the tfmot QAT worker failed on {model.name!r}: {tail.strip()}")

    with open(os.path.join(job_dir, "model.tflite"), "rb") as f:
      flatbuffer = f.read()
    with open(os.path.join(job_dir, "report.json")) as f:
      report = json.load(f)

  if output_path is not None:
    output_path = save_tflite(flatbuffer, output_path)
  result = QatResult(
      tflite_model=flatbuffer,
      size_bytes=len(flatbuffer),
      output_path=output_path,
      epochs=int(epochs),
      num_train_examples=int(len(images)),
      train_accuracy_per_epoch=[float(a) for a in report["train_accuracy"]],
      train_loss_per_epoch=[float(a) for a in report["train_loss"]],
      validation_accuracy=report.get("validation_accuracy"),
      rebuild_max_abs_diff=report.get("rebuild_max_abs_diff"),
      wall_time_s=time.perf_counter() - start,
      tfmot_version=report.get("tfmot_version", "unknown"),
  )
  logging.info("QAT done: %s", result.to_json(indent=None))
  return result


def _post_training_fallback(model, train_dataset, max_train_batches, int8_io, output_path, start, reason):
  """Post-training int8 of `model`, calibrated on the training images, reported as a QatResult with `fallback`."""
  image_rank = len(model.inputs[0].shape) - 1
  images, _ = _dataset_to_arrays(train_dataset, max_train_batches, "train_dataset", image_rank)
  line = " ".join(f"QAT is not possible: {reason}; converted with post-training int8 instead".split())
  logging.warning("%s", line)
  flatbuffer = convert_tflite(model, "int8", representative_data=images[:1024],
                              num_calibration_batches=min(32, -(-len(images[:1024]) // 32)), int8_io=int8_io)
  if output_path is not None:
    output_path = save_tflite(flatbuffer, output_path)
  return QatResult(tflite_model=flatbuffer, size_bytes=len(flatbuffer), output_path=output_path, epochs=0,
                   num_train_examples=int(len(images)), train_accuracy_per_epoch=[], train_loss_per_epoch=[],
                   validation_accuracy=None, rebuild_max_abs_diff=None, wall_time_s=time.perf_counter() - start,
                   tfmot_version="not used", fallback=line)


def run_worker(job_dir: str, timeout_s: Optional[float] = 3600.0) -> None:
  """Runs `python -m tflite_export._qat_worker job_dir` and checks it.

  Args:
    job_dir: A folder with graph.json, weights.npz, data.npz, config.json.
    timeout_s: Seconds before the child is killed (None: no limit).

  Raises:
    RuntimeError: If the child exits non-zero, times out, or writes no
      model; the message carries the tail of its stderr.
  """
  package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (package_root, env.get("PYTHONPATH")) if p)
  # `python -m` imports this package (and so TensorFlow) before the worker
  # runs: switch tf.keras to tf_keras from the start, as tfmot requires.
  env["TF_USE_LEGACY_KERAS"] = "1"
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  command = [sys.executable, "-m", "tflite_export._qat_worker", job_dir]
  logging.info("Running QAT worker: %s", " ".join(command))
  try:
    completed = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout_s,
        check=False)
  except subprocess.TimeoutExpired as e:
    stderr = e.stderr.decode(errors="replace") if isinstance(
        e.stderr, bytes) else (e.stderr or "")
    raise RuntimeError(
        f"QAT worker timed out after {timeout_s} s: use fewer epochs or "
        "max_train_batches, or raise timeout_s. Tail of its stderr:\n"
        f"{_tail(stderr)}") from None
  logging.debug("QAT worker stdout:\n%s", completed.stdout)
  if completed.returncode != 0:
    raise RuntimeError(
        f"QAT worker failed with exit code {completed.returncode} "
        f"({' '.join(command)}). Tail of its stderr:\n"
        f"{_tail(completed.stderr)}")
  if not os.path.exists(os.path.join(job_dir, "model.tflite")):
    raise RuntimeError(
        "QAT worker exited 0 but wrote no model.tflite. Tail of its "
        f"stderr:\n{_tail(completed.stderr)}")


def keras_model_to_graph(
    model: keras.Model) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
  """Describes a Keras 3 model as a JSON graph plus named weight arrays.

  The graph holds, per layer in topological order, its class name, its name,
  the config keys tf_keras understands, its inbound layer names, and the
  keys of its weights in the returned dict. It is what the QAT worker
  rebuilds in tf_keras; it is also a compact, human-readable record of a
  pruned structure.

  Args:
    model: A functional or sequential Keras 3 model of supported layers.

  Returns:
    (graph dict, {weight key: array}) ready for `json.dump` and `np.savez`.

  Raises:
    ValueError: For subclassed models, nested models, shared layers,
      unsupported layer classes, non-string activations, or models without
      exactly one input and one output.
  """
  if not isinstance(model, keras.Model):
    raise ValueError(
        f"Expected a Keras 3 keras.Model, got {type(model).__module__}."
        f"{type(model).__name__}")
  if not isinstance(model, keras.Sequential):
    layer_entries = _functional_entries(model)
  try:
    inputs, outputs = model.inputs, model.outputs
  except AttributeError:
    inputs = outputs = None
  if not inputs or not outputs:
    raise ValueError(
        f"{model.name!r} has no defined inputs: start a Sequential model "
        "with keras.Input(shape) (or build it) before QAT export")
  if len(inputs) != 1 or len(outputs) != 1:
    raise ValueError(
        f"QAT supports single-input, single-output models; {model.name!r} "
        f"has {len(inputs)} inputs and {len(outputs)} outputs")
  if isinstance(model, keras.Sequential):
    layer_entries = _sequential_entries(model)

  layers_by_name = {layer.name: layer for layer in model.layers}
  graph_layers, weights = [], {}
  for index, (class_name, name, config, inbound) in enumerate(layer_entries):
    if class_name not in SUPPORTED_LAYER_CONFIG_KEYS:
      raise ValueError(
          f"Layer {name!r} is a {class_name}, which QAT export does not "
          "support; supported: "
          f"{', '.join(sorted(SUPPORTED_LAYER_CONFIG_KEYS))}. Rebuild the "
          "model from supported layers, or use post-training quantization: "
          "tflite_export.convert(model, 'int8', ...)")
    entry = {"class_name": class_name, "name": name, "inbound": inbound}
    if class_name == "InputLayer":
      entry["config"] = {
          "batch_shape": list(config.get("batch_shape") or
                              [None] + list(model.inputs[0].shape[1:])),
          "dtype": _dtype_name(config.get("dtype", "float32")),
      }
    else:
      entry["config"] = {
          key: config[key] for key in SUPPORTED_LAYER_CONFIG_KEYS[class_name]
          if key in config}
      activation = entry["config"].get("activation")
      if activation is not None and not isinstance(activation, str):
        raise ValueError(
            f"Layer {name!r} has a non-builtin activation {activation!r}; "
            "use a builtin name such as 'relu', or a separate ReLU layer")
    layer = layers_by_name.get(name)
    keys = []
    if layer is not None:
      for j, array in enumerate(layer.get_weights()):
        key = f"layer{index:03d}_w{j}"
        weights[key] = np.asarray(array)
        keys.append(key)
    entry["weights"] = keys
    graph_layers.append(entry)

  graph = {
      "format": GRAPH_FORMAT,
      "version": GRAPH_FORMAT_VERSION,
      "name": model.name,
      "layers": graph_layers,
      "input": graph_layers[0]["name"],
      "output": _output_layer_name(model),
  }
  return graph, weights


# (class name, layer name, Keras 3 config, inbound layer names) per layer.
_LayerEntry = Tuple[str, str, Dict[str, Any], List[str]]


def _functional_entries(model: keras.Model) -> List[_LayerEntry]:
  """(class, name, config, inbound names) per layer of a functional model."""
  try:
    config = model.get_config()
  except (NotImplementedError, TypeError):
    config = {}
  if "layers" not in config or "input_layers" not in config:
    raise ValueError(
        f"{type(model).__name__} {model.name!r} is not a functional or "
        "sequential model (subclassed models have no layer graph to copy): "
        "rebuild it with the functional API")
  entries = []
  for layer_config in config["layers"]:
    class_name = layer_config["class_name"]
    name = layer_config.get("name") or layer_config["config"]["name"]
    module = layer_config.get("module") or "keras.layers"
    if module.startswith("keras.src.ops") or module.startswith("keras.ops"):
      raise ValueError(
          f"Layer {name!r} is a Keras op applied to a tensor ({class_name}, {module}), which QAT export "
          "does not support; write it as a layer, or use post-training quantization: "
          "tflite_export.convert(model, 'int8', ...)")
    nodes = layer_config.get("inbound_nodes", [])
    if len(nodes) > 1:
      raise ValueError(
          f"Layer {name!r} is called {len(nodes)} times (shared layer); QAT "
          "export needs each layer called once")
    inbound = []
    if nodes:
      _collect_history(nodes[0].get("args", []), inbound)
      kwargs_history = []
      _collect_history(nodes[0].get("kwargs", {}), kwargs_history)
      if kwargs_history:
        raise ValueError(
            f"Layer {name!r} takes tensors as keyword arguments; QAT export "
            "supports positional tensor inputs only")
    entries.append((class_name, name, layer_config["config"], inbound))
  return entries


def _sequential_entries(model: keras.Sequential) -> List[_LayerEntry]:
  """(class, name, config, inbound names) for a sequential model (a chain)."""
  input_shape = [None] + list(model.inputs[0].shape[1:])
  entries = [("InputLayer", "input_layer",
              {"batch_shape": input_shape,
               "dtype": _dtype_name(model.inputs[0].dtype)}, [])]
  previous = "input_layer"
  for layer in model.layers:
    entries.append((type(layer).__name__, layer.name, layer.get_config(),
                    [previous]))
    previous = layer.name
  return entries


def _collect_history(value: Any, out: List[str]) -> None:
  """Appends the layer names of all Keras tensors found in a call config."""
  if isinstance(value, dict):
    if value.get("class_name") == "__keras_tensor__":
      history = value["config"]["keras_history"]
      if history[2] != 0 or history[1] != 0:
        raise ValueError(
            f"Input {history} comes from a layer with several outputs or "
            "calls; QAT export supports one output per layer")
      out.append(history[0])
      return
    for v in value.values():
      _collect_history(v, out)
  elif isinstance(value, (list, tuple)):
    for v in value:
      _collect_history(v, out)


def _tail(text: str, num_lines: int = _STDERR_TAIL_LINES) -> str:
  """Returns the last lines of a child's stderr."""
  lines = (text or "").rstrip().splitlines()
  return "\n".join(lines[-num_lines:]) or "(empty)"


def _output_layer_name(model: keras.Model) -> str:
  if isinstance(model, keras.Sequential):
    return model.layers[-1].name
  output_layers = model.get_config()["output_layers"]
  # Keras 3 stores a single output as [name, node, tensor] and several as a
  # list of those.
  if output_layers and isinstance(output_layers[0], list):
    output_layers = output_layers[0]
  return output_layers[0]


def _ends_in_softmax(model: keras.Model) -> bool:
  last = model.layers[-1]
  config = last.get_config()
  return (type(last).__name__ == "Softmax" or
          config.get("activation") == "softmax")


def _dtype_name(dtype: Any) -> str:
  if isinstance(dtype, dict):  # A serialized DTypePolicy.
    return dtype.get("config", {}).get("name", "float32")
  return str(dtype)


def _dataset_to_arrays(
    data: Union[tf.data.Dataset, Tuple[np.ndarray, np.ndarray]],
    max_batches: Optional[int],
    what: str,
    image_rank: int,
) -> Tuple[np.ndarray, np.ndarray]:
  """Returns (float32 images, int64 class ids) from a dataset or arrays."""
  if isinstance(data, tf.data.Dataset):
    if max_batches is not None:
      data = data.take(max_batches)
    images, labels = [], []
    for element in data.as_numpy_iterator():
      if not isinstance(element, (tuple, list)) or len(element) < 2:
        raise ValueError(
            f"{what} must yield (images, labels) pairs; QAT trains on labels")
      x, y = np.asarray(element[0]), np.asarray(element[1])
      if x.ndim == image_rank:  # An unbatched example.
        x, y = x[np.newaxis], y[np.newaxis]
      images.append(x)
      labels.append(y)
    if not images:
      raise ValueError(f"{what} produced no examples: pass a non-empty one")
    x, y = np.concatenate(images), np.concatenate(labels)
  else:
    if max_batches is not None:
      raise ValueError(
          f"max_train_batches applies to datasets; slice the arrays instead "
          f"(got max_train_batches={max_batches})")
    x, y = (np.asarray(a) for a in data)
  if len(x) == 0 or len(x) != len(y):
    raise ValueError(
        f"{what} has {len(x)} images and {len(y)} labels; need the same "
        "non-zero number")
  if y.ndim == 2 and y.shape[1] > 1:
    y = y.argmax(axis=-1)
  return x.astype(np.float32), y.reshape(-1).astype(np.int64)
