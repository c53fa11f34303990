"""Child process of `tflite_export.qat`: QAT in tf_keras, then int8 TFLite.

Run as `python -m tflite_export._qat_worker JOB_DIR` with
`TF_USE_LEGACY_KERAS=1` in the environment (`tflite_export.qat.run_worker`
does both); never import it into a Keras 3 process. Importing
tensorflow_model_optimization sets `TF_USE_LEGACY_KERAS=1` and turns
`tf.keras` into tf_keras for the whole process, which is why this runs in a
process of its own.

JOB_DIR holds (written by `tflite_export.qat.quantization_aware_train`):

  graph.json   layers in topological order: class_name, name, config (keys
               tf_keras understands), inbound layer names, weight keys
  weights.npz  the weight arrays, by key
  data.npz     train_images, train_labels, optionally val_images,
               val_labels, and reference_images/reference_outputs (the
               Keras 3 model's outputs, to check the rebuild)
  config.json  epochs, batch_size, learning_rate, from_logits, int8_io, seed

and receives model.tflite and report.json. Errors go to stderr with a
non-zero exit code; the parent shows their tail.
"""

import json
import os
import sys
import time

import numpy as np

_REQUIRED_FILES = ("graph.json", "weights.npz", "data.npz", "config.json")
# The rebuilt tf_keras model must reproduce the Keras 3 outputs this closely
# before QAT starts (float32 rounding differences are around 1e-6).
_REBUILD_TOLERANCE = 1e-3
_MERGE_LAYERS = ("Add", "Multiply", "Concatenate")


def main(argv):
  if len(argv) != 2:
    sys.exit("usage: python -m tflite_export._qat_worker JOB_DIR "
             f"(got {argv[1:]})")
  job_dir = argv[1]
  missing = [f for f in _REQUIRED_FILES
             if not os.path.exists(os.path.join(job_dir, f))]
  if missing:
    sys.exit(f"QAT job folder {job_dir!r} lacks {', '.join(missing)}; it is "
             "written by tflite_export.quantization_aware_train")
  with open(os.path.join(job_dir, "graph.json")) as f:
    graph = json.load(f)
  with open(os.path.join(job_dir, "config.json")) as f:
    config = json.load(f)
  if graph.get("format") != "tflite_export.qat_graph":
    sys.exit(f"graph.json has format {graph.get('format')!r}, expected "
             "'tflite_export.qat_graph'")

  start = time.perf_counter()
  # tfmot needs tf.keras to be tf_keras. The parent already sets this in the
  # child's environment, because `python -m` imports the tflite_export
  # package (and TensorFlow) before this module runs.
  os.environ["TF_USE_LEGACY_KERAS"] = "1"
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  import tensorflow_model_optimization as tfmot
  import tf_keras
  # pylint: enable=g-import-not-at-top

  tf_keras.utils.set_random_seed(config["seed"])
  with np.load(os.path.join(job_dir, "weights.npz"),
               allow_pickle=False) as weights_file:
    weights = {k: weights_file[k] for k in weights_file.files}
  with np.load(os.path.join(job_dir, "data.npz"),
               allow_pickle=False) as data_file:
    data = {k: data_file[k] for k in data_file.files}

  model = build_tf_keras_model(graph, weights, tf_keras)
  rebuild_diff = None
  if "reference_images" in data:
    outputs = model(data["reference_images"], training=False).numpy()
    rebuild_diff = float(np.abs(outputs - data["reference_outputs"]).max())
    print(f"tf_keras rebuild max |diff| vs Keras 3: {rebuild_diff:.3g}")
    if not rebuild_diff <= _REBUILD_TOLERANCE:
      sys.exit(f"The tf_keras rebuild of {graph['name']!r} differs from the "
               f"Keras 3 model by {rebuild_diff:.3g} (> {_REBUILD_TOLERANCE})"
               ": a layer option is not carried over; report the model")

  qat_model = quantize(model, tfmot, tf_keras)
  qat_model.compile(
      optimizer=tf_keras.optimizers.Adam(learning_rate=config["learning_rate"]),
      loss=tf_keras.losses.SparseCategoricalCrossentropy(
          from_logits=config["from_logits"]),
      metrics=["accuracy"])
  history = qat_model.fit(
      data["train_images"], data["train_labels"],
      batch_size=config["batch_size"], epochs=config["epochs"], shuffle=True,
      verbose=2)

  validation_accuracy = None
  if "val_images" in data:
    _, validation_accuracy = qat_model.evaluate(
        data["val_images"], data["val_labels"],
        batch_size=config["batch_size"], verbose=0)
    validation_accuracy = float(validation_accuracy)

  converter = tf.lite.TFLiteConverter.from_keras_model(qat_model)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if config["int8_io"]:
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
  flatbuffer = converter.convert()
  with open(os.path.join(job_dir, "model.tflite"), "wb") as f:
    f.write(flatbuffer)

  report = {
      "train_accuracy": [float(a) for a in history.history["accuracy"]],
      "train_loss": [float(a) for a in history.history["loss"]],
      "validation_accuracy": validation_accuracy,
      "rebuild_max_abs_diff": rebuild_diff,
      "tfmot_version": getattr(tfmot, "__version__", "unknown"),
      "tf_version": tf.__version__,
      "worker_time_s": time.perf_counter() - start,
  }
  with open(os.path.join(job_dir, "report.json"), "w") as f:
    json.dump(report, f, indent=1)
  print(json.dumps(report))


def quantize(model, tfmot, tf_keras):
  """`tfmot.quantization.keras.quantize_model`, with the layers tfmot has no rule for output-quantized.

  tfmot's default 8-bit registry quantizes conv, dense, pooling, add,
  concatenate and activations itself (and SeparableConv2D by a layout
  transform); Multiply, Rescaling, LayerNormalization ... it refuses. Those
  are annotated with its output-quantize config: their output is fake-
  quantized, so the int8 converter sees ranges on every tensor.
  """
  # pylint: disable=g-import-not-at-top
  from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
      default_8bit_quantize_configs as configs)
  from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
      default_8bit_quantize_registry as registry)
  # pylint: enable=g-import-not-at-top
  keras_q = tfmot.quantization.keras
  known = registry.Default8BitQuantizeRegistry()

  def annotate(layer):
    if isinstance(layer, tf_keras.layers.InputLayer):
      return layer.__class__.from_config(layer.get_config())
    if known.supports(layer) or isinstance(layer, tf_keras.layers.SeparableConv2D):
      return keras_q.quantize_annotate_layer(layer)
    return keras_q.quantize_annotate_layer(layer, configs.Default8BitOutputQuantizeConfig())

  annotated = tf_keras.models.clone_model(model, clone_function=annotate)
  with keras_q.quantize_scope({"Default8BitOutputQuantizeConfig": configs.Default8BitOutputQuantizeConfig}):
    return keras_q.quantize_apply(annotated)


def build_tf_keras_model(graph, weights, tf_keras):
  """Rebuilds the graph from `graph.json` as a tf_keras functional model.

  Args:
    graph: The parsed graph.json (see `tflite_export.qat.keras_model_to_graph`).
    weights: {weight key: array} from weights.npz.
    tf_keras: The tf_keras module.

  Returns:
    A tf_keras.Model with the Keras 3 model's weights.
  """
  tensors, layers = {}, {}
  for entry in graph["layers"]:
    name, class_name = entry["name"], entry["class_name"]
    config = entry["config"]
    if class_name == "InputLayer":
      batch_shape = config["batch_shape"]
      tensors[name] = tf_keras.Input(
          shape=tuple(batch_shape[1:]), batch_size=batch_shape[0],
          dtype=config["dtype"], name=name)
      continue
    layer = getattr(tf_keras.layers, class_name)(name=name, **config)
    inputs = [tensors[n] for n in entry["inbound"]]
    if class_name in _MERGE_LAYERS:
      tensors[name] = layer(inputs)
    elif len(inputs) == 1:
      tensors[name] = layer(inputs[0])
    else:
      raise ValueError(f"Layer {name!r} ({class_name}) has {len(inputs)} "
                       "inputs; only merge layers may have several")
    layers[name] = layer
  model = tf_keras.Model(tensors[graph["input"]], tensors[graph["output"]],
                         name=graph["name"])
  for entry in graph["layers"]:
    if entry["weights"]:
      layers[entry["name"]].set_weights([weights[k] for k in entry["weights"]])
  return model


if __name__ == "__main__":
  main(sys.argv)
