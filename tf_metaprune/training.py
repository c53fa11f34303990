"""Training recipes shared by the PruningNet and the rebuilt (retrained) models.

One recipe for both, so searched and uniform models are compared fairly:
SGD with momentum 0.9 and a cosine learning-rate decay (MetaPruning's
optimizer; scaled down from ImageNet's tens of epochs to what small data
needs), cross-entropy on logits with optional label smoothing (the reference
uses 0.1), and checkpoints that make long runs safe to interrupt:

* After every finished epoch, `fit(..., output_dir=...)` writes the weights
  and the optimizer state (step counter included) atomically, then a small
  JSON state naming them; a process killed at any moment -- even mid-write --
  leaves the previous complete checkpoint. Rerunning the same call resumes at
  the last finished epoch and ends exactly where an uninterrupted run would:
  same learning-rate schedule, same PruningNet structure sequence (a function
  of the step counter), same data order (a reshuffling dataset is advanced by
  the epochs already done). A run that already finished is not redone: its
  weights are loaded and its history returned.
* A NaN/Inf loss stops training at once with the step number; the checkpoint
  of the last good epoch is kept (never overwritten by NaN weights) and loaded
  back into the model.
* A state file of another run (other model, epochs, learning rate, ...) or a
  damaged one is a ValueError naming the file, which is left untouched.

Knowledge distillation (Hinton et al. 2015) for a pruned model:
`fit(pruned, data, epochs, teacher=original)` trains on
(1 - w) * label loss + w * T^2 * KL(teacher || student) at temperature T
(`distillation_loss`, `Distiller`; `distill_temperature`, `distill_weight`).

Distributed training: build the model under `strategy.scope()` (see
`tf_metaprune.distribute`) and call `fit` the same way on every worker, with
`train_data` batched by the *global* batch size; Keras splits each batch across
the replicas. Under a multi-worker strategy only the chief writes
checkpoints and logs; every worker restores from the chief's checkpoint, so
`output_dir` must be on a filesystem all workers share. When a worker dies
the others stop with a `tf_metaprune.distribute.WorkerLostError` naming the
cause; rerunning all workers resumes at the last finished epoch.

Example:

  >>> net = tfmp.PruningNet(space)
  >>> history = tfmp.training.fit(net, splits.train, epochs=5, learning_rate=0.05,
  ...                              output_dir="runs/pruningnet")    # doctest: +SKIP
"""

import contextlib
import functools
import glob
import hashlib
import inspect
import json
import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from tf_metaprune import distribute
from tf_metaprune import io as io_lib

_STATE_FORMAT = "tf_metaprune.TrainingState"
# Marker in the message of the in-graph label check (see SparseCrossentropyWithSmoothing).
_LABEL_CHECK = "tf_metaprune: label out of range"


@keras.saving.register_keras_serializable(package="tf_metaprune")
class SparseCrossentropyWithSmoothing(keras.losses.Loss):
  """Cross-entropy of integer labels against logits, with label smoothing.

  `keras.losses.SparseCategoricalCrossentropy` has no label smoothing; this is
  `CategoricalCrossentropy(from_logits=True, label_smoothing=...)` applied to
  one-hot integer labels.

  Labels outside [0, number of logits) stop the step with an error (a one-hot
  of such a label would be all zeros: a silently wrong loss); `fit` turns it
  into a ValueError naming the label and the model's number of classes.

  Args:
    label_smoothing: in [0, 1); 0 is plain cross-entropy.
  """

  def __init__(self, label_smoothing=0.0, name="crossentropy", **kwargs):
    super().__init__(name=name, **kwargs)
    if not 0.0 <= float(label_smoothing) < 1.0:
      raise ValueError(f"label_smoothing={label_smoothing!r} must be in [0, 1)")
    self.label_smoothing = float(label_smoothing)

  def call(self, y_true, y_pred):
    depth = tf.shape(y_pred)[-1]
    ids = tf.reshape(tf.cast(y_true, tf.int32), [-1])
    checks = [tf.debugging.assert_non_negative(ids, message=_LABEL_CHECK),
              tf.debugging.assert_less(ids, depth, message=_LABEL_CHECK)]
    with tf.control_dependencies(checks):
      labels = tf.one_hot(ids, depth, dtype=y_pred.dtype)
    return keras.losses.categorical_crossentropy(labels, y_pred, from_logits=True,
                                                 label_smoothing=self.label_smoothing)

  def get_config(self):
    return {"label_smoothing": self.label_smoothing, "name": self.name}


def distillation_loss(student_logits, teacher_logits, temperature=4.0):
  """Knowledge distillation: T^2 * KL(softmax(teacher / T) || softmax(student / T)), batch mean.

  Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network"
  (2015): the temperature T softens both distributions so the student also
  learns how the teacher ranks the wrong classes; the T^2 factor keeps the
  gradient's scale independent of T, so the weight against the label loss
  means the same at every temperature.

  Args:
    student_logits, teacher_logits: float [batch, classes].
    temperature: T > 0 (1 = plain probabilities).

  Returns:
    A scalar tensor.
  """
  if not float(temperature) > 0:
    raise ValueError(f"temperature={temperature!r} must be > 0")
  t = float(temperature)
  student = tf.cast(student_logits, tf.float32) / t
  teacher = tf.cast(teacher_logits, tf.float32) / t
  kl = tf.reduce_sum(tf.nn.softmax(teacher) * (tf.nn.log_softmax(teacher) - tf.nn.log_softmax(student)), axis=-1)
  return t * t * tf.reduce_mean(kl)


@keras.saving.register_keras_serializable(package="tf_metaprune")
class Distiller(keras.Model):
  """Trains `student` on (1 - weight) * label loss + weight * `distillation_loss` against `teacher`.

  The model calls the student (so `evaluate` and `predict` are the
  student's); the loss adds the distillation term against the frozen
  teacher's logits (batch norm in inference mode). `fit(..., teacher=...)`
  builds one for you, freezing the teacher only while it trains.

  Args:
    student: the Keras model to train (logits out).
    teacher: the Keras model to learn from (logits out, same classes); set
      `teacher.trainable = False` before training (fit() does).
    temperature: T of `distillation_loss` (Hinton et al.: 2-20; 4 is common
      for pruning recovery, e.g. in Torch-Pruning's and NNI's examples).
    weight: share of the distillation term, in [0, 1] (0 = labels only).
  """

  def __init__(self, student, teacher, temperature=4.0, weight=0.5, **kwargs):
    super().__init__(**kwargs)
    if not 0.0 <= float(weight) <= 1.0:
      raise ValueError(f"distillation weight={weight!r} must be in [0, 1] (the distillation term's share of the loss)")
    if not float(temperature) > 0:
      raise ValueError(f"distillation temperature={temperature!r} must be > 0")
    self.student = student
    self.teacher = teacher
    self.temperature = float(temperature)
    self.weight = float(weight)
    self.built = bool(student.built and teacher.built)   # so a checkpoint loads before the first step

  def call(self, inputs, training=None):
    return self.student(inputs, training=training)

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    label_loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
    if self.weight == 0.0:
      return label_loss
    teacher_logits = tf.stop_gradient(self.teacher(x, training=False))
    kd = distillation_loss(y_pred, teacher_logits, self.temperature)
    return (1.0 - self.weight) * label_loss + self.weight * kd

  def get_config(self):
    return {"student": keras.saving.serialize_keras_object(self.student),
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "temperature": self.temperature, "weight": self.weight, "name": self.name}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    student = keras.saving.deserialize_keras_object(config.pop("student"))
    teacher = keras.saving.deserialize_keras_object(config.pop("teacher"))
    return cls(student, teacher, **config)


def steps_per_epoch(dataset):
  """Number of batches of a finite dataset (counts them if TF does not know).

  Raises:
    ValueError: for an infinite or an empty dataset.
  """
  if not isinstance(dataset, tf.data.Dataset):
    raise TypeError(f"train_data must be a batched tf.data.Dataset of (images, labels), got "
                    f"{type(dataset).__name__}; e.g. tf_metaprune.data.load_dataset(...).train")
  n = int(dataset.cardinality())
  if n == tf.data.INFINITE_CARDINALITY:
    raise ValueError("the training dataset is infinite; pass a finite dataset (no .repeat())")
  if n < 0:
    n = sum(1 for _ in dataset)
  if n == 0:
    raise ValueError("the training dataset is empty (0 batches); check the data and the batch size")
  return n


def expected_input_shape(model):
  """(H, W, C) a model takes (None where any size goes), or None if unknown."""
  space = getattr(model, "space", None)
  if space is not None and hasattr(space, "input_shape"):
    return tuple(space.input_shape)
  try:
    shape = model.input_shape
  except (AttributeError, ValueError):
    return None
  if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
    return None  # several inputs
  return tuple(shape[1:]) if shape else None


def num_classes_of(model):
  """Number of logits a model produces, or None if unknown."""
  space = getattr(model, "space", None)
  if space is not None and hasattr(space, "num_classes"):
    return int(space.num_classes)
  try:
    return int(model.output_shape[-1])
  except (AttributeError, ValueError, TypeError):
    return None


def _model_name(model):
  space = getattr(model, "space", None)
  if space is not None and hasattr(space, "name"):
    return f"the {type(model).__name__} of space {space.name!r}"
  return f"model {model.name!r}"


def check_training_data(model, dataset, what="train_data"):
  """Checks a dataset's element shapes against what `model` takes, before any step.

  Images must match the model's input (H, W, C) (channels above all: a colour
  dataset for a grayscale space fails here, not deep inside a convolution),
  and labels must be integer class ids, not one-hot vectors. Label *values*
  are checked in the training step (see `SparseCrossentropyWithSmoothing`).

  Raises:
    ValueError: naming the dataset's and the model's shapes.
  """
  spec = dataset.element_spec
  if not isinstance(spec, (tuple, list)) or len(spec) < 2:
    raise ValueError(f"{what} must yield (images, labels) pairs, got elements {spec}; e.g. "
                     "tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)")
  images, labels = spec[0], spec[1]
  want = expected_input_shape(model)
  got = tuple(images.shape[1:]) if images.shape.rank is not None else None
  if got is not None and len(got) != 3:
    raise ValueError(f"{what} images have shape {tuple(images.shape)}; batched images of shape "
                     "(batch, height, width, channels) are needed (did you forget .batch()?)")
  if want is not None and got is not None and len(want) == 3:
    if want[-1] is not None and got[-1] is not None and want[-1] != got[-1]:
      raise ValueError(f"{what} images have {got[-1]} channels (shape {got}) but {_model_name(model)} takes "
                       f"{want[-1]} (input shape {want}); build the space with input_shape={got}, or convert "
                       "the images")
    if any(w is not None and g is not None and w != g for w, g in zip(want[:2], got[:2])):
      raise ValueError(f"{what} images are {got[0]}x{got[1]} (shape {got}) but {_model_name(model)} takes "
                       f"{want[0]}x{want[1]} (input shape {want}); build the space with input_shape={got} "
                       "or resize the images (load_dataset(..., input_size=...))")
  n = num_classes_of(model)
  space = getattr(model, "space", None)
  outputs = getattr(model, "outputs", None) if space is None else None
  dense = outputs is not None and (len(outputs) != 1 or len(outputs[0].shape) != 2)
  if isinstance(labels, (tuple, list, dict)) or dense or (space is not None and not space.is_classifier):
    return   # per-output or per-pixel targets: their losses check them
  if labels.shape.rank is not None and labels.shape.rank >= 2 and labels.shape[-1] not in (None, 1):
    raise ValueError(f"{what} labels have shape {tuple(labels.shape)}: they look one-hot; pass integer class "
                     f"ids in [0, {n}) of shape (batch,)")


def _label_range(dataset):
  lo, hi = None, None
  for element in dataset:
    y = np.asarray(element[1])
    if y.size:
      lo = y.min() if lo is None else min(lo, y.min())
      hi = y.max() if hi is None else max(hi, y.max())
  return lo, hi


class _FusedUpdates:
  """Mixin: a Keras optimizer's update as TF's fused training kernels, value for value.

  Keras 3 writes each optimizer's update as separate element-wise ops (about
  25 reads and writes of every variable-sized array a step for SGD with
  momentum and weight decay, more for Adam); TF's fused kernels (the ones
  Keras 2 used) make about 8. That matters for a PruningNet, whose generators
  hold (hidden_units + 1)x the network's weights: their update was the largest
  part of a stride-32 MobileNetV2's PruningNet step
  (`python benchmarks/profile_step.py`). The arithmetic is Keras' own, in the
  same order: SGD's result is bit for bit Keras' one; Adam's agrees to float
  rounding (about 1e-7 relative a step: the fused kernel's sqrt and its scalar
  step size round differently) -- `tests/training_test.py` checks both.
  Sparse gradients, non-TF backends and options without a fused kernel
  (amsgrad) fall back to Keras' own update.
  """

  def _fused(self, variable):
    return keras.backend.backend() == "tensorflow" and hasattr(_tf_variable(variable), "handle")

  def _apply_weight_decay(self, variables):
    # Decoupled weight decay as Keras writes it, `var -= var * wd * lr`, in one kernel.
    if self.weight_decay is None or not all(self._fused(v) for v in variables):
      return super()._apply_weight_decay(variables)

    def apply(distribution, variables):
      def decay(variable):
        if self._use_weight_decay(variable):
          lr = tf.cast(self.learning_rate, variable.dtype)
          wd = tf.cast(self.weight_decay, variable.dtype)
          tf.raw_ops.ResourceApplyGradientDescent(var=variable.handle, alpha=lr, delta=variable * wd)

      for variable in variables:
        distribution.extended.update(_tf_variable(variable), decay, group=False)

    tf.__internal__.distribute.interim.maybe_merge_call(apply, self._distribution_strategy, variables)

  def _can_fuse(self, gradient, variable):
    return not isinstance(gradient, tf.IndexedSlices) and self._fused(variable)


@keras.saving.register_keras_serializable(package="tf_metaprune")
class FusedSGD(_FusedUpdates, keras.optimizers.SGD):
  """`keras.optimizers.SGD` with its momentum step in one `ResourceApplyKerasMomentum` kernel.

  `m = m * momentum - g * lr; var += m * momentum - g * lr` (Nesterov) or
  `var += m`, exactly Keras' update (see `_FusedUpdates`).
  """

  def update_step(self, gradient, variable, learning_rate):
    if self.momentum == 0 or not self._can_fuse(gradient, variable):
      return super().update_step(gradient, variable, learning_rate)
    variable = _tf_variable(variable)
    m = _tf_variable(self.momentums[self._get_variable_index(variable)])
    tf.raw_ops.ResourceApplyKerasMomentum(
        var=variable.handle, accum=m.handle, lr=tf.cast(learning_rate, variable.dtype),
        grad=tf.cast(gradient, variable.dtype), momentum=tf.cast(self.momentum, variable.dtype),
        use_nesterov=bool(self.nesterov))


class _FusedAdamStep:
  """Adam's step in one `ResourceApplyAdam` kernel: Keras' formula, same order of operations."""

  def update_step(self, gradient, variable, learning_rate):
    if self.amsgrad or not self._can_fuse(gradient, variable):
      return super().update_step(gradient, variable, learning_rate)
    dtype = variable.dtype
    local_step = tf.cast(self.iterations + 1, dtype)
    index = self._get_variable_index(variable)
    tf.raw_ops.ResourceApplyAdam(
        var=_tf_variable(variable).handle, m=_tf_variable(self._momentums[index]).handle,
        v=_tf_variable(self._velocities[index]).handle,
        beta1_power=tf.pow(tf.cast(self.beta_1, dtype), local_step),
        beta2_power=tf.pow(tf.cast(self.beta_2, dtype), local_step),
        lr=tf.cast(learning_rate, dtype), beta1=tf.cast(self.beta_1, dtype), beta2=tf.cast(self.beta_2, dtype),
        epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype), use_nesterov=False)


@keras.saving.register_keras_serializable(package="tf_metaprune")
class FusedAdam(_FusedAdamStep, _FusedUpdates, keras.optimizers.Adam):
  """`keras.optimizers.Adam` with its step in one fused kernel (see `_FusedUpdates`)."""


@keras.saving.register_keras_serializable(package="tf_metaprune")
class FusedAdamW(_FusedAdamStep, _FusedUpdates, keras.optimizers.AdamW):
  """`keras.optimizers.AdamW` with its step and weight decay in fused kernels (see `_FusedUpdates`)."""


def _tf_variable(variable):
  """The tf.Variable behind a Keras variable (or the variable itself)."""
  return variable.value if isinstance(variable, keras.Variable) else variable


def compile_model(model, learning_rate=0.05, total_steps=1000, momentum=0.9, weight_decay=5e-5,
                  label_smoothing=0.0, optimizer="sgd", steps_per_execution=1, loss=None, loss_weights=None):
  """Compiles `model` with the shared recipe.

  Args:
    model: a `PruningNet` or a plain Keras model producing logits.
    learning_rate: peak learning rate (cosine-decayed to 0 over `total_steps`).
    total_steps: length of the schedule in optimizer steps.
    momentum: SGD momentum.
    weight_decay: decoupled weight decay (0 to disable).
    label_smoothing: see `SparseCrossentropyWithSmoothing`.
    optimizer: "sgd" (the paper) or "adam".
    steps_per_execution: passed to `compile` (structure sampling happens in the
      training step, so any value works).
    loss: the loss of a model that is not a classifier -- a segmentation
      net, a detector's heads: one Keras loss (name, serialized config or
      object) or a list of them, one per output in the model's output order
      (e.g. `user_losses(trained_model)`, the losses it was compiled with).
      None: label-smoothed sparse cross-entropy with an accuracy metric (the
      classifier recipe); a given loss gets no metric.
    loss_weights: one weight per output (with `loss`).
  """
  if not float(learning_rate) > 0 or math.isnan(float(learning_rate)):
    raise ValueError(f"learning_rate={learning_rate!r} must be > 0")
  if optimizer not in ("sgd", "adam"):
    raise ValueError(f"optimizer={optimizer!r} must be 'sgd' or 'adam'")
  schedule = keras.optimizers.schedules.CosineDecay(float(learning_rate), max(1, int(total_steps)))
  wd = float(weight_decay) or None
  # The optimizer (it binds the current strategy) and the metrics are made under the model's strategy.
  with model.distribute_strategy.scope():
    if optimizer == "sgd":
      opt = FusedSGD(schedule, momentum=momentum, nesterov=True, weight_decay=wd)
    else:
      opt = FusedAdamW(schedule, weight_decay=wd or 0.0) if wd else FusedAdam(schedule)
    if loss is None:
      model.compile(optimizer=opt, loss=SparseCrossentropyWithSmoothing(label_smoothing),
                    metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                    steps_per_execution=steps_per_execution)
    else:
      losses = [_loss_object(l) for l in loss] if isinstance(loss, (list, tuple)) else _loss_object(loss)
      model.compile(optimizer=opt, loss=losses, loss_weights=None if loss_weights is None else list(loss_weights),
                    steps_per_execution=steps_per_execution)
  return model


def _loss_object(loss):
  """A Keras loss from a name (on logits where the loss takes `from_logits`), a serialized config or an object."""
  if isinstance(loss, dict):
    return keras.losses.deserialize(loss)
  if isinstance(loss, str):
    try:
      found = keras.losses.get(loss)
    except ValueError:
      raise ValueError(f"loss {loss!r} is not a Keras loss name; use e.g. 'sparse_categorical_crossentropy', "
                       "'huber' or 'mse'") from None
    if not isinstance(found, keras.losses.Loss) and "from_logits" in inspect.signature(found).parameters:
      return functools.partial(found, from_logits=True)
    return found
  return loss


def user_losses(model):
  """(losses, loss_weights) a Keras model was compiled with, one per output in output order, or (None, None).

  `keras.saving.load_model` restores the compile settings saved with a
  model, so a segmentation net or a detector saved after `compile(loss=...)`
  brings its own losses: what its PruningNet then trains with and what
  `SearchMetric("loss", losses=...)` ranks structures by. A dict of losses
  (by output name) is put in output order.
  """
  loss = getattr(model, "loss", None)
  if loss is None:
    return None, None
  weights = getattr(model, "loss_weights", None)
  names = list(getattr(model, "output_names", None) or [])
  if isinstance(loss, dict):
    loss = [loss.get(n) for n in names]
  if isinstance(weights, dict):
    weights = [float(weights.get(n, 1.0)) for n in names]
  if not isinstance(loss, (list, tuple)):
    loss = [loss] * max(1, len(model.outputs))
  return list(loss), (None if weights is None else [float(w) for w in weights])


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


def fit(model, train_data, epochs, learning_rate=0.05, output_dir=None, validation_data=None, verbose=1,
        callbacks=None, recalibrate_bn=True, bn_data=None, teacher=None, distill_temperature=4.0, distill_weight=0.5,
        **compile_kwargs):
  """Compiles and trains `model` with the shared recipe; resumable.

  With `output_dir`, the run keeps `output_dir/backup/` (a checkpoint of the
  last finished epoch: weights, optimizer state, history; see the module
  docstring), `output_dir/last.weights.h5` (the same weights, for
  `model.load_weights`) and `output_dir/logs` (TensorBoard). Calling `fit`
  again with the same model, data and settings after an interruption
  continues at the last finished epoch, with the same learning-rate schedule,
  structure sequence and data order as an uninterrupted run; after a finished
  run it trains nothing, loads the final weights and returns the history.

  Reproducibility: seed the weights with `keras.utils.set_random_seed(s)`
  before building the model; a PruningNet's structures are drawn from its
  `seed` and the step counter; `tf_metaprune.data` shuffles with its `seed`.

  Args:
    model: a `PruningNet` or plain Keras model.
    train_data: a finite batched `tf.data.Dataset` of (images, labels), images
      shaped like the model's input, labels integer class ids.
    epochs: number of epochs (>= 1).
    learning_rate: peak learning rate.
    output_dir: where checkpoints and logs go (None: nothing is written and
      nothing resumes).
    validation_data: optional dataset for Keras' validation metrics.
    verbose: Keras verbosity (1 = progress bar); 0 also silences the resume
      message.
    callbacks: extra Keras callbacks.
    recalibrate_bn: after training, set the moving statistics of every
      `keras.layers.BatchNormalization` of a functional or Sequential model to
      the exact statistics of the training images (`recalibrate_batch_norm`),
      so the model scores in inference mode what it learned (a PruningNet has
      none: its candidates are recalibrated per structure). The checkpoint in
      `output_dir` keeps the trained, unrecalibrated weights; every return
      (also of a finished run) recalibrates them the same way.
    bn_data: the images for that (default `train_data`; pass an unaugmented,
      fixed-order copy such as `DatasetSplits.calibration` for a result that
      does not depend on the shuffle order).
    teacher: a Keras model to distill from (e.g. the trained model a pruned
      one came from): the loss becomes (1 - distill_weight) * label loss +
      distill_weight * `distillation_loss` (see `Distiller`). The teacher is
      frozen while `model` trains and left as it was.
    distill_temperature: T of the distillation term.
    distill_weight: its share of the loss, in [0, 1].
    **compile_kwargs: passed to `compile_model`.

  Returns:
    The history dict (metric -> per-epoch values), over all runs of a resumed
    training.

  Raises:
    ValueError: on a bad epoch count or learning rate, an empty dataset,
      images that do not fit the model (channels, size), labels outside
      [0, num_classes), or a state in `output_dir` of another run or damaged.
    tf_metaprune.io.NotWritableError: if `output_dir` is not writable (before
      any training).
    FloatingPointError: if the loss became NaN/Inf; the message names the
      step, and the last good epoch's checkpoint is kept and loaded into
      `model`.

  Example:

    >>> history = fit(net, splits.train, epochs=10, output_dir="runs/net")   # doctest: +SKIP
    >>> # killed? run the same line again: it resumes at the last finished epoch.
  """
  if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or int(epochs) < 1:
    raise ValueError(f"epochs={epochs!r} must be an int >= 1")
  epochs = int(epochs)
  steps = steps_per_epoch(train_data)
  check_training_data(model, train_data)
  if isinstance(validation_data, tf.data.Dataset):
    check_training_data(model, validation_data, "validation_data")
  if teacher is not None:
    n_student, n_teacher = num_classes_of(model), num_classes_of(teacher)
    if n_student is not None and n_teacher is not None and n_student != n_teacher:
      raise ValueError(f"teacher {teacher.name!r} has {n_teacher} classes but {_model_name(model)} has {n_student}; "
                       "distill from a model of the same task")
    was_trainable = teacher.trainable
    teacher.trainable = False
    try:
      with model.distribute_strategy.scope():
        distiller = Distiller(model, teacher, distill_temperature, distill_weight, name=f"{model.name}_distiller")
      identity_extra = dict(distill_temperature=float(distill_temperature), distill_weight=float(distill_weight))
      history = _train(distiller, train_data, epochs, steps, learning_rate, output_dir, validation_data, verbose,
                       callbacks, identity_extra, compile_kwargs, recalibrate_bn, bn_data, bn_model=model)
      # The student is compiled with the same recipe, so model.evaluate works as after a plain fit.
      compile_model(model, learning_rate=learning_rate, total_steps=steps * epochs, **compile_kwargs)
      return history
    finally:
      teacher.trainable = was_trainable
  return _train(model, train_data, epochs, steps, learning_rate, output_dir, validation_data, verbose, callbacks, {},
                compile_kwargs, recalibrate_bn, bn_data, bn_model=model)


def _train(model, train_data, epochs, steps, learning_rate, output_dir, validation_data, verbose, callbacks,
           identity_extra, compile_kwargs, recalibrate_bn, bn_data, bn_model):
  """`fit` after its argument checks.

  `identity_extra` joins the run identity (distillation settings); `bn_model`
  is the model whose batch norms are recalibrated afterwards (the student,
  when `model` is a `Distiller`).
  """
  if output_dir:
    if distribute.is_chief(model.distribute_strategy):   # only the chief writes (multi-worker)
      output_dir = io_lib.check_writable_dir(output_dir, "output_dir")
    else:
      output_dir = os.path.abspath(output_dir)
  compile_model(model, learning_rate=learning_rate, total_steps=steps * epochs, **compile_kwargs)
  guard = _NonFiniteLossGuard(steps)
  cbs = [guard]
  estimate = _TimeEstimate(steps * epochs) if verbose and distribute.is_chief(model.distribute_strategy) else None
  if estimate is not None:
    cbs.append(estimate)
  checkpointer = None
  initial_epoch = 0
  strategy = model.distribute_strategy
  chief = distribute.is_chief(strategy)
  if output_dir:
    checkpointer = _Checkpointer(output_dir, run_identity(model, epochs, steps, learning_rate,
                                                          dict(compile_kwargs, **identity_extra)), chief=chief)
    checkpointer.set_model(model)
    state = checkpointer.load()
    if state is not None:
      checkpointer.restore(state["weights_path"])
      initial_epoch = checkpointer.epoch
      if verbose and chief:
        done = "already finished: nothing to train" if initial_epoch >= epochs else "resuming"
        print(f"[training] {output_dir}: {initial_epoch}/{epochs} epochs done, {done}", flush=True)
      if estimate is not None:
        estimate.total_steps = steps * (epochs - initial_epoch)
      if initial_epoch >= epochs:
        if recalibrate_bn:
          if bn_data is None:   # the order an uninterrupted run recalibrates in: after `epochs` passes
            for _ in range(epochs):
              iter(train_data)
          _recalibrate_after_fit(bn_model, train_data if bn_data is None else bn_data)
        return {k: list(v) for k, v in checkpointer.history.items()}
    cbs.append(checkpointer)
    if chief:
      cbs.append(keras.callbacks.TensorBoard(os.path.join(output_dir, "logs"), update_freq="epoch"))
  cbs += list(callbacks or [])
  # A dataset reshuffling each epoch draws its order from a per-iterator seed. Keras makes one
  # iterator per epoch when it is given `steps_per_epoch` for a dataset of known length, or
  # when the length is unknown (without `steps_per_epoch` and a known length it makes two).
  # Skipping the iterators of the epochs already done gives a resumed epoch the order of an
  # uninterrupted run (tests/kill_resume_test.py pins this).
  known_length = int(train_data.cardinality()) >= 0
  for _ in range(initial_epoch):
    iter(train_data)
  try:
    with _multi_worker_build(model, train_data, strategy):
      history = model.fit(train_data, epochs=epochs, initial_epoch=initial_epoch, validation_data=validation_data,
                          steps_per_epoch=steps if known_length else None, callbacks=cbs, shuffle=False,
                          verbose=verbose if chief else 0)
  except tf.errors.InvalidArgumentError as e:
    lost = distribute.worker_lost_error(e, strategy, _resume_hint(output_dir))
    if lost is not None:
      raise lost from e
    if _LABEL_CHECK not in str(e):
      raise
    n = num_classes_of(model)
    for name, ds in (("train_data", train_data), ("validation_data", validation_data)):
      if not isinstance(ds, tf.data.Dataset) or n is None:
        continue
      lo, hi = _label_range(ds)
      if lo is not None and (lo < 0 or hi >= n):
        bad = hi if hi >= n else lo
        raise ValueError(f"the data holds label {bad} but {_model_name(model)} has {n} classes (labels must be "
                         f"in [0, {n})); build the space with num_classes={max(int(hi) + 1, n)} or fix the "
                         f"labels of {name}") from None
    raise
  except Exception as e:  # pylint: disable=broad-except
    lost = distribute.worker_lost_error(e, strategy, _resume_hint(output_dir))
    if lost is None:
      raise
    raise lost from e
  if guard.bad is not None:
    b = guard.bad
    where = f"step {b['step']} (epoch {b['epoch']}, batch {b['batch']} of {steps})"
    if checkpointer is not None and checkpointer.epoch > 0:
      checkpointer.restore(os.path.join(checkpointer.backup_dir, f"epoch_{checkpointer.epoch:04d}.weights.h5"))
      kept = (f"The checkpoint of the last good epoch ({checkpointer.epoch}) is kept in {output_dir!r} and loaded "
              "into the model; rerunning with the same settings would resume there and likely diverge again, "
              "so use another output_dir.")
    elif checkpointer is not None:
      kept = f"No epoch finished, so {output_dir!r} holds no checkpoint; the model's weights are not finite."
    else:
      kept = "No output_dir was given, so there is no checkpoint; the model's weights are not finite."
    raise FloatingPointError(f"training stopped at {where}: the loss became {b['loss']}. Lower the learning rate "
                             f"(was {learning_rate}) or check the data. {kept}")
  if recalibrate_bn:
    _recalibrate_after_fit(bn_model, train_data if bn_data is None else bn_data)
  if checkpointer is not None:
    return {k: list(v) for k, v in checkpointer.history.items()}
  return history.history


def _recalibrate_after_fit(model, data):
  """`recalibrate_batch_norm` for a graph model with BN layers (subclassed models have no graph to probe)."""
  if not hasattr(model, "inputs") or not batch_norm_layers(model):
    return
  with model.distribute_strategy.scope():
    recalibrate_batch_norm(model, data)


def batch_norm_layers(model):
  """The `keras.layers.BatchNormalization` layers of `model`'s own graph, in call order."""
  return [layer for layer in getattr(model, "layers", []) if isinstance(layer, keras.layers.BatchNormalization)]


def recalibrate_batch_norm(model, data, num_batches=None):
  """Sets every batch norm's moving mean and variance to the exact statistics of its input over `data`.

  Keras keeps a BN layer's inference statistics as an exponential moving
  average (`momentum`, 0.99 by default, 0.999 in `keras.applications`). After
  a short training that average still remembers its start (mean 0, variance
  1) and the earlier weights: at momentum 0.999, 2 epochs of 94 steps leave
  83% of the initial values in it (0.999^188), and a keras.applications
  MobileNetV2 that scored 64.5% with batch statistics scored 10% (chance) in
  inference mode (Fashion-MNIST, 12,000 images, issue 18). Here the weights are
  frozen and the statistics recomputed as in training, "precise BN" (Wu &
  Johnson, "Rethinking BatchNorm", 2021; what `calibration` does for every
  PruningNet candidate): forward passes in training mode (each BN normalises
  with its batch, as during the training steps) accumulate every BN input's
  per-channel sum and sum of squares, weighted by images, and
  mean = E[x], variance = E[x^2] - E[x]^2 over all images seen. Weights are
  not changed; dropout and noise layers run as in training.

  Args:
    model: a plain Keras model (functional or Sequential, built). BN layers
      inside a nested sub-model are left as they are (with a warning).
    data: a batched `tf.data.Dataset` of images or (images, labels): the
      training images, preferably unaugmented and in a fixed order
      (`DatasetSplits.calibration`).
    num_batches: use at most this many batches (None: all of `data`).

  Returns:
    The number of BN layers recalibrated (0 if `model` has none).

  Example:

    >>> tfmp.training.recalibrate_batch_norm(model, splits.calibration)   # doctest: +SKIP
  """
  bns = batch_norm_layers(model)
  nested = [layer.name for layer in getattr(model, "layers", []) if isinstance(layer, keras.Model) and
            any(isinstance(sub, keras.layers.BatchNormalization) for sub in layer._flatten_layers())]  # pylint: disable=protected-access
  if nested:
    print(f"[training] warning: batch norms inside the nested model(s) {nested} keep their moving statistics "
          "(recalibrate_batch_norm reads only the outer graph)", flush=True)
  if not bns:
    return 0
  probe = keras.Model(model.inputs, [bn.input for bn in bns])
  reduce_axes = []
  for bn in bns:
    rank = len(bn.input.shape)
    kept = {a % rank for a in ([bn.axis] if isinstance(bn.axis, int) else bn.axis)}
    reduce_axes.append([a for a in range(rank) if a not in kept])

  @tf.function
  def moments(images):
    outputs = probe(images, training=True)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    sums = []
    for x, axes in zip(outputs, reduce_axes):
      x = tf.cast(x, tf.float32)
      values_per_channel = tf.reduce_prod(tf.cast(tf.gather(tf.shape(x), axes), tf.float32))
      sums.append((tf.reduce_sum(x, axes), tf.reduce_sum(tf.square(x), axes), values_per_channel))
    return sums

  saved = [(bn.moving_mean.numpy(), bn.moving_variance.numpy()) for bn in bns]
  totals = None
  for i, element in enumerate(data):
    if num_batches is not None and i >= int(num_batches):
      break
    images = element[0] if isinstance(element, (tuple, list)) else element
    batch = [(s.numpy().astype(np.float64), q.numpy().astype(np.float64), float(n)) for s, q, n in moments(images)]
    totals = batch if totals is None else [(a + s, b + q, c + n) for (a, b, c), (s, q, n) in zip(totals, batch)]
  if totals is None:
    raise ValueError("recalibrate_batch_norm: `data` yielded no batch; pass the training images")
  for bn, (mean_old, var_old), (s, q, n) in zip(bns, saved, totals):
    mean = s / n
    var = np.maximum(q / n - mean ** 2, 0.0)
    bn.moving_mean.assign(mean.reshape(mean_old.shape).astype(mean_old.dtype))
    bn.moving_variance.assign(var.reshape(var_old.shape).astype(var_old.dtype))
  return len(bns)


def _resume_hint(output_dir):
  if output_dir:
    return f"training resumes at the last finished epoch from {os.path.join(output_dir, 'backup')!r}"
  return "pass output_dir to fit() so that a rerun resumes instead of starting over"


@contextlib.contextmanager
def _multi_worker_build(model, train_data, strategy):
  """Works around two Keras 3.15 `fit` failures under MultiWorkerMirroredStrategy.

  1. `fit` builds metrics, loss and optimizer from the first batch of the
     *distributed* dataset averaged with `strategy.reduce`, which
     MultiWorkerMirroredStrategy rejects for (images, labels) tuples
     ("Attempt to convert a value (PerReplica...) to a Tensor"). Here the
     same build runs from one local batch (only its shapes matter) under the
     strategy's scope, and Keras' own build is skipped during this `fit`.
  2. Each step's logs are averaged with `strategy.reduce("MEAN", v, axis=0)`,
     which fails on scalars ("Invalid reduction dimension 0 for input with 0
     dimensions"). The steps' scalar logs are returned as [1] vectors, which
     that reduction averages over all replicas back to scalars.

  Both patches are instance attributes removed when `fit` returns; nothing
  changes with one worker.
  """
  if not distribute.is_multi_worker(strategy):
    yield
    return
  batch = next(iter(train_data))
  with strategy.scope():
    model._symbolic_build(data_batch=batch)  # pylint: disable=protected-access

  def vector_logs(step):
    def wrapped(data):
      logs = step(data)
      return {k: tf.reshape(v, [1]) if hasattr(v, "shape") and v.shape.rank == 0 else v for k, v in logs.items()}
    return wrapped

  patches = {"_maybe_symbolic_build": lambda iterator=None, data_batch=None: None,
             "train_step": vector_logs(model.train_step), "test_step": vector_logs(model.test_step)}
  for name, fn in patches.items():
    object.__setattr__(model, name, fn)
  try:
    yield
  finally:
    for name in patches:
      object.__delattr__(model, name)
