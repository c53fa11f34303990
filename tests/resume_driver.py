"""A small train-then-search job for tests/kill_resume_test.py (not a test itself).

`python tests/resume_driver.py WORK_DIR` trains a tiny PruningNet with
`tf_metaprune.training.fit(output_dir=WORK_DIR/train)`, then searches it with
`tf_metaprune.search.evolutionary(state_path=WORK_DIR/search_state.json)`. It
prints a line per training step ("train step N", N counted over the whole
training, resumed or not) and per evaluated candidate ("search eval N", N
counted in this process), writes WORK_DIR/result.json (best structure, every
candidate, a hash of the final weights, the loss history) and prints "DONE".
Killed and started again with the same WORK_DIR, it resumes.

`python tests/resume_driver.py --zygote` imports TensorFlow and tf_metaprune
once, then forks one job per line "WORK_DIR LOG_PATH" read on stdin (the job's
stdout and stderr go to LOG_PATH) and answers each line with the job's pid.
A test can so start, SIGKILL and restart jobs without paying the TF import
(about 6 s) each time. Nothing runs a TensorFlow op before a fork, so every
job starts its TF runtime fresh, like a new process.
"""

import hashlib
import json
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

EPOCHS = 3
SEARCH = dict(population_size=8, top_k=3, num_mutations=3, num_crossovers=3, num_generations=4)


class _StepPrinter(keras.callbacks.Callback):

  def __init__(self, steps):
    super().__init__()
    self.steps = steps
    self.epoch = 0

  def on_epoch_begin(self, epoch, logs=None):
    self.epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    print(f"train step {self.epoch * self.steps + batch + 1}", flush=True)


class _CountingEvaluator(tfmp.Evaluator):
  count = 0

  def accuracy_tensor(self, choices):
    acc = super().accuracy_tensor(choices)
    time.sleep(0.03)   # an evaluation takes ~1 ms here: slow down so a kill lands where it is aimed
    _CountingEvaluator.count += 1
    print(f"search eval {_CountingEvaluator.count}", flush=True)
    return acc


def run(work_dir):
  """The job: train (resumable), search (resumable), write result.json."""
  keras.utils.set_random_seed(0)
  splits = tfmp.data.synthetic(num_examples=192, input_shape=(8, 8, 1), num_classes=4, batch_size=32, seed=0)
  space = tfmp.models.small_cnn((8, 8, 1), 4, channels=(4, 8, 8, 8), divisor=1)
  keras.utils.set_random_seed(0)
  net = tfmp.PruningNet(space, hidden_units=2, seed=1)
  steps = tfmp.training.steps_per_epoch(splits.train)
  history = tfmp.training.fit(net, splits.train, epochs=EPOCHS, learning_rate=0.05, verbose=0,
                              output_dir=os.path.join(work_dir, "train"), callbacks=[_StepPrinter(steps)])
  data = tfmp.EvaluationData.from_dataset(splits.search, num_calibration_batches=2,
                                          calibration_dataset=splits.calibration)
  result = tfmp.search.evolutionary(net, _CountingEvaluator(net, data), tfmp.FlopsBudget.from_ratio(space, 0.5),
                                    state_path=os.path.join(work_dir, "search_state.json"), verbose=1, **SEARCH)
  digest = hashlib.sha256()
  for w in net.weights:
    digest.update(np.ascontiguousarray(w.numpy()).tobytes())
  tfmp.io.write_json_atomic(os.path.join(work_dir, "result.json"), {
      "best": list(result.best.choices), "candidates": [c.to_dict() for c in result.candidates],
      "weights_sha256": digest.hexdigest(), "loss": history["loss"]})
  print("DONE", flush=True)


def zygote():
  """Forks a job per stdin line "WORK_DIR LOG_PATH"; prints each job's pid."""
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
        run(work_dir)
      except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
        print("FAILED", flush=True)
        code = 1
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(code)  # pylint: disable=protected-access
    print(pid, flush=True)


if __name__ == "__main__":
  if sys.argv[1:] == ["--zygote"]:
    zygote()
  elif len(sys.argv) == 2:
    run(sys.argv[1])
  else:
    sys.exit("usage: resume_driver.py WORK_DIR | --zygote")
