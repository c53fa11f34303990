"""Exports a (pruned) Keras model to TFLite and reports size, accuracy, parity and latency.

Either a saved plain Keras model:

  python examples/export_tflite.py --model=runs/retrained.keras --output_dir=runs/export

or a searched structure, rebuilt from its search space (plus trained weights):

  python examples/export_tflite.py --space=runs/search/space.json \
      --structure=runs/search/best_structure.json --weights=runs/retrain/model.weights.h5 \
      --quantization=float32,int8 --output_dir=runs/export

Outputs in --output_dir: <name>_<format>.tflite for every --quantization, and
export_report.json (per file: size, Keras and TFLite accuracy on the test split,
top-1 agreement, max |logit difference|, median/p90 latency on this host, the
device). int8 is calibrated on --calibration_batches training batches. Host
latency is for comparing files; on x86 int8 is not faster than float32 -- time
on the phone (tflite_export.benchmark's docstring) for budgets.
"""

import os
import zipfile

from absl import app
from absl import flags

import common_flags  # examples/common_flags.py: the quiet start, check_output_dir, fail

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "A saved plain Keras model (.keras). Or use --structure and --space.")
flags.DEFINE_string("structure", None, "A structure JSON (SearchSpace.save_structure), with --space.")
flags.DEFINE_string("space", None, "The search space JSON (SearchSpace.to_json) the structure belongs to.")
flags.DEFINE_string("weights", None, "Weights for the rebuilt structure (model.weights.h5); default: untrained.")
flags.DEFINE_string("name", None, "File name stem (default: the --model or --structure file name).")
flags.DEFINE_string("dataset", "mnist_subset", "mnist_subset (offline default), tfds:NAME or folder:PATH.")
flags.DEFINE_integer("input_size", None, "Resize images to this square size (default: keep).")
flags.DEFINE_integer("batch_size", 128, "Evaluation and calibration batch size.")
flags.DEFINE_bool("skip_bad_images", False, "folder:/tfds: datasets: skip images that do not decode (with a warning) "
                  "instead of stopping before any work.")
flags.DEFINE_integer("calibration_batches", 8, "Training batches that calibrate int8 activation ranges.")
flags.DEFINE_list("quantization", ["float32", "int8"], "Comma list of float32, float16, dynamic_range, int8.")
flags.DEFINE_bool("recalibrate_bn", False, "Before converting, set every BatchNormalization's moving statistics to "
                  "the exact statistics of the --dataset training images (tf_metaprune.training."
                  "recalibrate_batch_norm): for a model trained elsewhere for few steps or with BN momentum 0.999, "
                  "whose inference-mode accuracy lags. Models of retrain.py / metaprune.py are recalibrated already.")
flags.DEFINE_string("output_dir", "runs/export", "Where the .tflite files and export_report.json go.")
flags.DEFINE_integer("num_runs", 100, "Timed invokes per file. The whole export with the defaults (float32 + "
                     "int8, a small_cnn, MNIST subset): about 1 min here.")
flags.DEFINE_integer("num_threads", 1, "Interpreter threads for the latency figures.")


_fail = common_flags.fail


def _check_file(flag, path):
  if not os.path.isfile(path):
    _fail(f"--{flag}={path!r}: no such file")


def _check_keras_archive(path):
  """One line for a --model file that is not a Keras model file (load_model would say "File not found")."""
  ext = os.path.splitext(path)[1].lower()
  if ext == ".keras" and not zipfile.is_zipfile(path):
    _fail(f"--model={path!r} is not a Keras archive (a .keras file is a zip written by model.save(\"model.keras\")); "
          "pass the model.keras of examples/retrain.py or metaprune.py")
  if ext not in (".keras", ".h5"):
    _fail(f"--model={path!r}: expected a Keras model file, model.keras (model.save) or a legacy .h5; for a structure "
          "and weights use --structure, --space and --weights")


def _space_hint(structure_path, space):
  """Names the space a structure file was saved from, when it is not `space`."""
  import json  # pylint: disable=g-import-not-at-top
  try:
    with open(structure_path) as f:
      saved = json.load(f)
    recorded = saved.get("space_fingerprint")
  except (OSError, ValueError, AttributeError):
    return ""
  if recorded in (None, space.fingerprint()):
    return ""
  return (f" -- the structure was saved from space {saved.get('space')!r} (fingerprint {recorded}), not from "
          f"this {space.name!r} (fingerprint {space.fingerprint()}): pass the --space it was searched in")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Everything checkable without TensorFlow is checked first.
  from_structure = FLAGS.structure is not None or FLAGS.space is not None
  if (FLAGS.model is None) == (not from_structure):
    _fail("give either --model=model.keras, or --structure=structure.json with --space=space.json")
  if from_structure:
    if FLAGS.structure is None or FLAGS.space is None:
      _fail("--structure and --space go together: the structure's choices only mean something in its space")
    _check_file("space", FLAGS.space)
    _check_file("structure", FLAGS.structure)
    if FLAGS.weights is not None:
      _check_file("weights", FLAGS.weights)
  else:
    if FLAGS.weights is not None:
      _fail("--weights goes with --structure/--space; a .keras file (--model) holds its own weights")
    _check_file("model", FLAGS.model)
    _check_keras_archive(FLAGS.model)
  common_flags.check_output_dir(FLAGS.output_dir)
  from tflite_export import export_report  # pylint: disable=g-import-not-at-top
  try:
    quantizations = export_report.check_quantizations(FLAGS.quantization)
  except ValueError as e:
    _fail(f"--quantization: {e}")

  common_flags.quiet_tensorflow()
  import keras  # pylint: disable=g-import-not-at-top
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  if from_structure:
    try:
      with open(FLAGS.space) as f:
        space = tfmp.SearchSpace.from_json(f.read())
    except ValueError as e:
      _fail(f"--space={FLAGS.space!r}: {e}")
    try:
      structure = space.load_structure(FLAGS.structure)
    except ValueError as e:
      _fail(f"--space={FLAGS.space!r} / --structure={FLAGS.structure!r}: {e}{_space_hint(FLAGS.structure, space)}")
    model = tfmp.rebuild(space, structure)
    if FLAGS.weights is not None:
      try:
        model.load_weights(FLAGS.weights)
      except (ValueError, OSError) as e:
        _fail(f"--weights={FLAGS.weights!r} do not fit the rebuilt structure: {e}")
    else:
      print("note: no --weights: the rebuilt model is untrained (accuracy near chance; size and latency hold)")
    name = FLAGS.name or os.path.splitext(os.path.basename(FLAGS.structure))[0]
  else:
    try:
      model = keras.saving.load_model(FLAGS.model)
    except (ValueError, OSError) as e:
      _fail(f"--model={FLAGS.model!r} is not a loadable Keras model: {e}")
    name = FLAGS.name or os.path.splitext(os.path.basename(FLAGS.model))[0]

  try:
    splits = tfmp.data.load_dataset(FLAGS.dataset, batch_size=FLAGS.batch_size, input_size=FLAGS.input_size,
                                    skip_bad_images=FLAGS.skip_bad_images)
  except ValueError as e:
    _fail(f"--dataset={FLAGS.dataset!r}: {e}")
  model_shape = tuple(model.inputs[0].shape[1:])
  if model_shape != tuple(splits.input_shape):
    _fail(f"the model takes images of shape {model_shape} but --dataset={FLAGS.dataset!r} "
          f"(--input_size={FLAGS.input_size}) gives {tuple(splits.input_shape)}; set --input_size")

  if FLAGS.recalibrate_bn:
    n = tfmp.training.recalibrate_batch_norm(model, splits.calibration)
    print(f"recalibrated {n} batch norm(s) on {splits.num_examples['train']:,} training images")
  report = export_report.export_and_report(
      model, FLAGS.output_dir, name, quantizations, representative_data=splits.calibration,
      eval_data=splits.test, num_calibration_batches=FLAGS.calibration_batches, num_runs=FLAGS.num_runs,
      num_threads=FLAGS.num_threads)
  report.update({"source": FLAGS.model or {"space": FLAGS.space, "structure": FLAGS.structure,
                                           "weights": FLAGS.weights},
                 "dataset": splits.get_config()})
  tfmp.io.write_json_atomic(os.path.join(FLAGS.output_dir, export_report.REPORT_FILE), report)
  print(export_report.format_report(report))
  print(f"wrote {len(quantizations)} .tflite files and {export_report.REPORT_FILE} to {FLAGS.output_dir}")


if __name__ == "__main__":
  app.run(main)
