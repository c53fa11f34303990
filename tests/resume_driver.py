"""The resumable job of tests/kill_resume_test.py (not a test itself): the whole pipeline.

`python tests/resume_driver.py WORK_DIR` runs a tiny MetaPruning
pipeline (small CNN on 8x8 MNIST-subset images; 3 epochs of PruningNet
training, a 4-generation search, 3 epochs of retraining each, int8 export)
into WORK_DIR/run. It prints "STAGE step N" per training step (STAGE is
pruningnet, retrain_searched or retrain_uniform; N counts over the whole
training, resumed or not, and "STAGE steps_per_epoch S" first), "search
starts at generation G" then "search eval N" per scored candidate, and
"export step N" after each conversion, parity check and latency benchmark
(N counted in this process); then it writes
WORK_DIR/result.json (hashes of the saved models' weights, the report's
accuracies and file sizes) and prints "DONE".

Killed and started again with the same WORK_DIR, it resumes.

`python tests/resume_driver.py --zygote` imports TensorFlow and
tf_metaprune once, then forks one job per line "WORK_DIR LOG_PATH" read on
stdin (the job's stdout and stderr go to LOG_PATH) and answers each line with
the job's pid.
A test can so start, SIGKILL and restart jobs without paying the TF import
(about 6 s) each time. Nothing runs a TensorFlow op before a fork, so every
job starts its TF runtime fresh, like a new process.
"""

import hashlib
import os
import signal
import sys
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top,wrong-import-position

# min_flops_ratio=0: no FLOPs window, so every generation of this tiny space fills its 8 candidates and the kill
# points (counted in search evaluations) are reached; the window itself is tested in search_test.py.
PIPELINE = dict(model="small_cnn", divisor=1, max_examples=400, input_size=8, batch_size=32, hidden_units=2,
                pruningnet_epochs=3, flops_ratio=0.5, min_flops_ratio=0.0, population_size=8, num_generations=4,
                calibration_batches=2,
                retrain_epochs=3, export_num_runs=5, export_calibration_batches=2)


def _weights_sha256(model):
  digest = hashlib.sha256()
  for w in model.weights:
    digest.update(np.ascontiguousarray(w.numpy()).tobytes())
  return digest.hexdigest()


def _instrument_pipeline():
  """Makes the pipeline's trainings, candidate scores and export steps print a line each (in this process)."""
  import tflite_export  # pylint: disable=g-import-not-at-top
  from tf_metaprune import calibration  # pylint: disable=g-import-not-at-top
  from tf_metaprune import training  # pylint: disable=g-import-not-at-top

  class StagePrinter(keras.callbacks.Callback):

    def __init__(self, stage, steps):
      super().__init__()
      self.stage, self.steps, self.epoch = stage, steps, 0

    def on_epoch_begin(self, epoch, logs=None):
      self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
      print(f"{self.stage} step {self.epoch * self.steps + batch + 1}", flush=True)

  fit = training.fit

  def printing_fit(model, train_data, *args, output_dir=None, callbacks=None, **kwargs):
    parts = os.path.normpath(output_dir).split(os.sep)
    stage = "pruningnet" if parts[-1] == "pruningnet" else "retrain_" + parts[-1]
    steps = training.steps_per_epoch(train_data)
    print(f"{stage} steps_per_epoch {steps}", flush=True)
    return fit(model, train_data, *args, output_dir=output_dir,
               callbacks=[StagePrinter(stage, steps)] + list(callbacks or []), **kwargs)

  training.fit = printing_fit

  score = calibration.Evaluator.scores_tensor
  evals = [0]

  def printing_score(self, choices):
    acc = score(self, choices)
    time.sleep(0.03)   # a tiny candidate scores in ~1 ms: slow down so a kill lands where it is aimed
    evals[0] += 1
    print(f"search eval {evals[0]}", flush=True)
    return acc

  calibration.Evaluator.scores_tensor = printing_score

  steps = [0]

  def printing(fn):
    def wrapped(*args, **kwargs):
      out = fn(*args, **kwargs)
      steps[0] += 1
      print(f"export step {steps[0]}", flush=True)
      return out
    return wrapped

  for name in ("convert", "check_parity", "benchmark"):
    setattr(tflite_export, name, printing(getattr(tflite_export, name)))

  from tf_metaprune.search import evolution  # pylint: disable=g-import-not-at-top
  evolutionary = evolution.evolutionary   # what EvolutionConfig.run (search.run's evolution) calls

  def announcing_evolutionary(*args, state_path=None, **kwargs):
    generation = tfmp.io.read_json(state_path, "search state")["generation"] if os.path.exists(state_path) else 0
    print(f"search starts at generation {generation}", flush=True)
    return evolutionary(*args, state_path=state_path, **kwargs)

  evolution.evolutionary = announcing_evolutionary


def run_pipeline(work_dir):
  """The job: the whole pipeline (resumable), then WORK_DIR/result.json."""
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  _instrument_pipeline()
  out = os.path.join(work_dir, "run")
  report = pipeline.run(pipeline.PipelineConfig(**PIPELINE), out, verbose=0, log=lambda m: print(m, flush=True))
  models = {name: _weights_sha256(keras.saving.load_model(os.path.join(out, path)))
            for name, path in (("pruningnet", "pruningnet/pruningnet.keras"), ("searched", "model.keras"),
                               ("uniform", "uniform.keras"))}
  rows = {key: {k: report[key][k] for k in ("channels", "search_accuracy", "test_accuracy", "int8_test_accuracy",
                                             "int8_size_bytes")}
          for key in ("searched", "uniform")}
  tfmp.io.write_json_atomic(os.path.join(work_dir, "result.json"), {"weights_sha256": models, "report": rows})
  print("DONE", flush=True)


def zygote(job):
  """Forks a `job(work_dir)` per stdin line "WORK_DIR LOG_PATH"; prints each job's pid."""
  signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # killed jobs are reaped at once
  for line in sys.stdin:
    if not line.strip():
      continue
    work_dir, log_path = line.split()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
      signal.signal(signal.SIGCHLD, signal.SIG_DFL)
      fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
      os.dup2(fd, 1)
      os.dup2(fd, 2)
      code = 0
      try:
        job(work_dir)
      except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
        print("FAILED", flush=True)
        code = 1
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(code)  # pylint: disable=protected-access
    print(pid, flush=True)


if __name__ == "__main__":
  args = sys.argv[1:]
  if args == ["--zygote"]:
    zygote(run_pipeline)
  elif len(args) == 1 and not args[0].startswith("--"):
    run_pipeline(args[0])
  else:
    sys.exit("usage: resume_driver.py WORK_DIR | --zygote")
