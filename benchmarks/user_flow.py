"""Benchmark: a new user's trained model pruned with the default flags, timed end to end (issue 23).

The flow, as a user runs it:

  1. train `keras.applications.MobileNetV2(alpha=0.35, weights=None,
     input_shape=(32, 32, 1), classes=10)` (its default softmax head and BN
     momentum 0.999) with plain `model.compile(Adam(2e-3),
     SparseCategoricalCrossentropy(), ["accuracy"])` and `model.fit` for 3
     epochs on `tfmp.data.load_dataset("fashion_mnist", input_size=32,
     batch_size=128)`, then `model.save("user.keras")`;
  2. `python examples/metaprune.py --keras_model=user.keras
     --dataset=fashion_mnist --input_size=32 --init=pretrained
     --flops_ratio=0.25 --output_dir=RUN` with every other flag at its
     default -- the wall time of this command is the figure;
  3. reads RUN/report.json and checks what the user gets: the original's
     test accuracy as saved and recalibrated, the searched model ending in
     the user's softmax, and its int8 TFLite output summing to 1 per image.

It is a time: run it alone, under the machine's lock, and read the load
average recorded beside it (other jobs slow it down):

  flock /tmp/heavy.lock .venv/bin/python benchmarks/user_flow.py      # about 25 min (16 of them timed)

or in two steps, the untimed training first (it needs no lock):

  nice -n 19 .venv/bin/python benchmarks/user_flow.py --step=train
  flock /tmp/heavy.lock .venv/bin/python benchmarks/user_flow.py --step=prune

Writes benchmarks/results/user_flow.json (and the run folder under --work_dir).
"""

import os
import resource
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags
import keras
import numpy as np

import tf_metaprune as tfmp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_WORK_DIR = flags.DEFINE_string("work_dir", "runs/user_flow", "Where user.keras and the run folder go (the run "
                                "folder is started afresh).")
_EPOCHS = flags.DEFINE_integer("user_epochs", 3, "Epochs of the user's own model.fit.")
_STEP = flags.DEFINE_enum("step", "all", ["all", "train", "prune"], "all: train the user's model, then time the "
                          "command; train: only train and save it (not a time: no lock needed); prune: time the "
                          "command on the user.keras a --step=train left in --work_dir.")
_EXTRA = flags.DEFINE_list("extra_flags", [], "Flags added to the metaprune.py command (default: none, the "
                           "figure is of the default flags).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", _common.RESULTS_DIR, "Where results go.")


def _train_user_model(path):
  """The user's step: plain Keras, nothing of tf_metaprune but the data loader."""
  splits = tfmp.data.load_dataset("fashion_mnist", input_size=32, batch_size=128)
  keras.utils.set_random_seed(0)
  model = keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(32, 32, 1), classes=10)
  model.compile(optimizer=keras.optimizers.Adam(2e-3), loss=keras.losses.SparseCategoricalCrossentropy(),
                metrics=["accuracy"])
  t0 = time.perf_counter()
  history = model.fit(splits.train, epochs=_EPOCHS.value, verbose=2)
  seconds = time.perf_counter() - t0
  _, test_accuracy = model.evaluate(splits.test, verbose=0)
  model.save(path)
  return {"train_accuracy_last_epoch": float(history.history["accuracy"][-1]),
          "test_accuracy_model_evaluate": float(test_accuracy), "fit_seconds": seconds,
          "steps_per_epoch": tfmp.training.steps_per_epoch(splits.train)}, splits


def _tflite_sums(path, images):
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  interpreter = Interpreter(model_path=path)
  interpreter.allocate_tensors()
  (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
  sums = []
  for image in images:
    x = image[None]
    if inp["dtype"] != np.float32:
      scale, zero = inp["quantization"]
      x = np.round(x / scale + zero).astype(inp["dtype"])
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(out["index"]).astype(np.float32)
    if out["dtype"] != np.float32:
      scale, zero = out["quantization"]
      y = (y - zero) * scale
    sums.append(float(y.sum()))
  return sums


def main(argv):
  del argv
  report = _common.Report("user_flow", _OUTPUT_DIR.value)
  work = os.path.abspath(_WORK_DIR.value)
  os.makedirs(work, exist_ok=True)
  user_path = os.path.join(work, "user.keras")
  record_path = os.path.join(work, "user_model.json")
  if _STEP.value == "prune":
    user = tfmp.io.read_json(record_path, "user model record")
    splits = tfmp.data.load_dataset("fashion_mnist", input_size=32, batch_size=128)
  else:
    user, splits = _train_user_model(user_path)
    tfmp.io.write_json_atomic(record_path, user)
    if _STEP.value == "train":
      print(f"wrote {user_path}: {user}")
      return
  run_dir = os.path.join(work, "run")
  shutil.rmtree(run_dir, ignore_errors=True)
  command = [sys.executable, os.path.join(ROOT, "examples", "metaprune.py"), f"--keras_model={user_path}",
             "--dataset=fashion_mnist", "--input_size=32", "--init=pretrained", "--flops_ratio=0.25",
             f"--output_dir={run_dir}", *_EXTRA.value]
  load_before = list(os.getloadavg())
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  t0 = time.perf_counter()
  proc = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
  wall = time.perf_counter() - t0
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  # CPU seconds of the command (user + system, all its threads): less sensitive to other jobs than the wall
  # time; on an idle 2-core machine the wall time is about this divided by the cores TensorFlow keeps busy.
  cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
  load_after = list(os.getloadavg())
  with open(os.path.join(work, "metaprune_stdout.txt"), "w") as f:
    f.write(proc.stdout)
  with open(os.path.join(work, "metaprune_stderr.txt"), "w") as f:
    f.write(proc.stderr)
  if proc.returncode != 0:
    sys.exit(f"user_flow.py: metaprune.py failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
  run = tfmp.io.read_json(os.path.join(run_dir, "report.json"), "report")
  searched = keras.saving.load_model(os.path.join(run_dir, "model.keras"))
  images = next(iter(splits.test))[0].numpy()[:64]
  sums = _tflite_sums(os.path.join(run_dir, "model_int8.tflite"), images)
  estimate = [line for line in proc.stdout.splitlines() if "[metaprune] estimate" in line]
  bn = run["original"].get("batch_norm", {})
  data = {"command": " ".join(["python", "examples/metaprune.py"] + command[2:]).replace(work, _WORK_DIR.value),
          "wall_seconds": wall, "cpu_seconds": cpu, "cpus": os.cpu_count(), "load_average_before": load_before,
          "load_average_after": load_after,
          "user_model": user, "estimate_line": estimate[0] if estimate else None,
          "stage_seconds": run["stage_seconds"], "original": run["original"],
          "config": {k: run["config"][k] for k in ("batch_size", "pruningnet_epochs", "retrain_epochs",
                                                  "population_size", "num_generations", "search_images",
                                                  "calibration_batches")},
          "rows": {k: {"test_accuracy": run[k]["test_accuracy"], "accuracy_drop_pt": run[k]["accuracy_drop_pt"],
                       "mflops": run[k]["mflops"], "int8_test_accuracy": run[k]["int8_test_accuracy"]}
                   for k in run["rows"]},
          "searched_last_layer_activation": searched.layers[-1].get_config().get("activation"),
          "int8_output_sums": {"min": min(sums), "max": max(sums), "images": len(sums)}}
  rows = [[k, f"{100 * v['test_accuracy']:.2f}", f"{v['accuracy_drop_pt']:+.2f}", f"{v['mflops']:.3f}"]
          for k, v in data["rows"].items()]
  table = _common.markdown_table(["row", "test %", "drop vs original (pt)", "MFLOPs"], rows)
  table += (f"\n\nWall time of the metaprune.py command: {wall / 60:.1f} min (load average {load_before[0]:.1f} "
            f"before, {load_after[0]:.1f} after, {os.cpu_count()} cores); CPU time {cpu / 60:.1f} min. Stage seconds: "
            + ", ".join(f"{k} {v:.0f}" for k, v in run["stage_seconds"].items())
            + f". Original: {100 * bn.get('test_accuracy_as_saved', run['original']['test_accuracy']):.2f}% as "
            f"saved, {100 * run['original']['test_accuracy']:.2f}% recalibrated. Searched model ends in "
            f"{data['searched_last_layer_activation']}; int8 outputs sum to {min(sums):.3f}-{max(sums):.3f}.")
  report.write(data, table, "A trained keras.applications MobileNetV2 pruned with the default flags")


if __name__ == "__main__":
  app.run(main)
