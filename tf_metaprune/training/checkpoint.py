"""The resumable state of a training run: atomic per-epoch checkpoints, its identity, the time estimate, the NaN guard."""

import glob
import hashlib
import json
import math
import os
import shutil
import time

import keras

from tf_metaprune import io as io_lib


_STATE_FORMAT = "tf_metaprune.TrainingState"


# ---------------------------------------------------------------------------------------------
# Checkpoints: atomic, resumable, never overwritten with NaN weights.


def _json_value(v):
  return v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)


def run_identity(model, epochs, steps, learning_rate, compile_kwargs):
  """What must not change between a run and its resumption (stored in the state)."""
  config_hash = None
  if getattr(model, "space", None) is not None:   # a PruningNet: its config is small and stable
    config = {k: v for k, v in model.get_config().items() if k not in ("name", "trainable", "dtype")}
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
  return {"model_class": type(model).__name__, "model_config_hash": config_hash,
          "weight_shapes": [list(map(int, w.shape)) for w in model.weights],
          "epochs": int(epochs), "steps_per_epoch": int(steps), "learning_rate": float(learning_rate),
          "compile": {k: _json_value(v) for k, v in sorted(compile_kwargs.items())}}


class _Checkpointer(keras.callbacks.Callback):
  """Saves weights + optimizer state after every finished, finite epoch (atomically).

  Layout: `backup/epoch_NNNN.weights.h5` (written to a temporary name, then
  renamed), then `backup/state.json` naming it (atomic JSON), then
  `last.weights.h5` (a hard link or copy, renamed into place), then older
  epoch files are removed. A kill at any point leaves `state.json` naming a
  complete weights file.
  """

  def __init__(self, output_dir, identity, chief=True):
    super().__init__()
    self.chief = bool(chief)   # under a multi-worker strategy only the chief writes; all restore
    self.output_dir = output_dir
    self.backup_dir = os.path.join(output_dir, "backup")
    self.state_path = os.path.join(self.backup_dir, "state.json")
    self.last_path = os.path.join(output_dir, "last.weights.h5")
    self.identity = identity
    self.epoch = 0             # finished epochs in the checkpoint
    self.history = {}          # metric -> per-epoch values, over all (resumed) runs
    self._batches = 0

  # ---- loading -------------------------------------------------------------------------------
  def state_file(self):
    """The `io.StateFile` of `backup/state.json` (the identity is this run's settings)."""
    return io_lib.StateFile(self.state_path, _STATE_FORMAT, self.identity, what="training state",
                            chief=self.chief)

  def load(self):
    """Reads the state (None if there is none); raises ValueError for a foreign or damaged one."""
    state = self.state_file().load()
    if state is None:
      return None
    try:
      epoch = int(state["epoch"])
      weights = os.path.join(self.backup_dir, os.path.basename(str(state["weights"])))
      history = {str(k): [float(x) for x in v] for k, v in dict(state["history"]).items()}
    except (KeyError, TypeError, ValueError) as e:
      raise self.state_file().damaged(e) from None
    if not os.path.exists(weights):
      raise ValueError(f"training state {self.state_path!r} names {weights!r}, which is missing; move the "
                       "backup folder away to start over")
    self.epoch, self.history = epoch, history
    state["weights_path"] = weights
    return state

  def restore(self, weights_path):
    """Loads a checkpoint (weights and optimizer state) into the model."""
    model = self.model
    try:
      with model.distribute_strategy.scope():   # optimizer slots are made under the model's strategy
        if model.optimizer is not None and not model.optimizer.built:
          model.optimizer.build(model.trainable_variables)
        model.load_weights(weights_path)
    except Exception as e:  # pylint: disable=broad-except  (h5py: OSError/KeyError/ValueError)
      raise ValueError(f"checkpoint {weights_path!r} cannot be loaded ({type(e).__name__}: {e}); it is damaged "
                       "or of another model. Move the output_dir's backup folder away to start over") from None

  # ---- saving --------------------------------------------------------------------------------
  def save(self):
    if not self.chief:
      return
    os.makedirs(self.backup_dir, exist_ok=True)
    name = f"epoch_{self.epoch:04d}.weights.h5"
    final = os.path.join(self.backup_dir, name)
    tmp = io_lib.temp_path_for(final, ".weights.h5")
    self.model.save_weights(tmp)
    _fsync(tmp)
    os.replace(tmp, final)
    self.state_file().save(epoch=self.epoch, weights=name, history=self.history)
    link_tmp = io_lib.temp_path_for(self.last_path, ".weights.h5")
    try:
      os.link(final, link_tmp)
    except OSError:
      shutil.copyfile(final, link_tmp)
      _fsync(link_tmp)
    os.replace(link_tmp, self.last_path)
    for old in glob.glob(os.path.join(self.backup_dir, "*.weights.h5")):
      if os.path.basename(old) != name:
        os.remove(old)

  # ---- Keras hooks ---------------------------------------------------------------------------
  def on_epoch_begin(self, epoch, logs=None):
    self._batches = 0

  def on_train_batch_end(self, batch, logs=None):
    self._batches = batch + 1

  def on_epoch_end(self, epoch, logs=None):
    logs = logs or {}
    loss = logs.get("loss")
    steps = self.identity["steps_per_epoch"]
    if self._batches < steps or (loss is not None and not math.isfinite(float(loss))):
      return   # an epoch cut short (NaN loss, stop request) is not a checkpoint
    for k, v in logs.items():
      self.history.setdefault(k, []).append(float(v))
    self.epoch = epoch + 1
    self.save()


def describe_seconds(seconds):
  """"about 40 s" / "about 6 min" / "about 1.5 h": a duration a person reads at a glance."""
  seconds = float(seconds)
  if seconds < 90:
    return f"about {seconds:.0f} s"
  if seconds < 90 * 60:
    return f"about {seconds / 60:.0f} min"
  return f"about {seconds / 3600:.1f} h"


class _TimeEstimate(keras.callbacks.Callback):
  """Prints, early in a long training, steps x measured step time = the time it will take.

  Steps 2-6 are timed (the first one traces the step function); trainings
  under 30 steps are too short to announce.
  """

  _FIRST, _LAST = 2, 6

  def __init__(self, total_steps, log=print):
    super().__init__()
    self.total_steps = int(total_steps)
    self.log = log
    self._seen = 0
    self._t0 = None

  def on_train_batch_end(self, batch, logs=None):
    self._seen += 1
    if self.total_steps < 30 or self._seen > self._LAST:
      return
    if self._seen == self._FIRST - 1:
      self._t0 = time.perf_counter()
    elif self._seen == self._LAST:
      step_s = (time.perf_counter() - self._t0) / (self._LAST - self._FIRST + 1)
      self.log(f"\n[training] {self.total_steps:,} steps x {step_s:.3f} s/step (measured) = "
               f"{describe_seconds(self.total_steps * step_s)} for this training")


def _fsync(path):
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


class _NonFiniteLossGuard(keras.callbacks.Callback):
  """Stops training at the first step whose loss is NaN or infinite, recording where."""

  def __init__(self, steps):
    super().__init__()
    self.steps = steps
    self.bad = None
    self._epoch = 0

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    loss = (logs or {}).get("loss")
    if loss is not None and self.bad is None and not math.isfinite(float(loss)):
      self.bad = {"step": self._epoch * self.steps + batch + 1, "epoch": self._epoch + 1, "batch": batch + 1,
                  "loss": float(loss)}
      self.model.stop_training = True
