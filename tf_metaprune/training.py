"""Training recipes shared by the PruningNet and the rebuilt (retrained) models.

One recipe for both, so searched and uniform models are compared fairly:
SGD with momentum 0.9 and a cosine learning-rate decay (MetaPruning's
optimizer; scaled down from ImageNet's tens of epochs to what small data
needs), cross-entropy on logits with optional label smoothing (the reference
uses 0.1), and the Keras callbacks that make long runs safe: `BackupAndRestore`
(an interrupted run resumes at the last finished epoch), `ModelCheckpoint`,
`TensorBoard` and `TerminateOnNaN`.

Distributed training: build the model under `strategy.scope()` (see
`tf_metaprune.distribute`) and call `fit` the same way on every worker, with
`train_data` batched by the *global* batch size; Keras splits each batch across
the replicas. Under a multi-worker strategy only the chief writes
checkpoints, logs and backups; every worker restores from the chief's backup,
so `output_dir` must be on a filesystem all workers share. When a worker dies
the others stop with a `tf_metaprune.distribute.WorkerLostError` naming the
cause; rerunning all workers resumes at the last finished epoch.

Example:

  >>> net = tfmp.PruningNet(space)
  >>> history = tfmp.training.fit(net, splits.train, epochs=5, learning_rate=0.05,
  ...                              output_dir="runs/pruningnet")    # doctest: +SKIP
"""

import contextlib
import math
import os

import keras
import numpy as np
import tensorflow as tf

from tf_metaprune import distribute


@keras.saving.register_keras_serializable(package="tf_metaprune")
class SparseCrossentropyWithSmoothing(keras.losses.Loss):
  """Cross-entropy of integer labels against logits, with label smoothing.

  `keras.losses.SparseCategoricalCrossentropy` has no label smoothing; this is
  `CategoricalCrossentropy(from_logits=True, label_smoothing=...)` applied to
  one-hot integer labels.

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
    labels = tf.one_hot(tf.reshape(tf.cast(y_true, tf.int32), [-1]), depth, dtype=y_pred.dtype)
    return keras.losses.categorical_crossentropy(labels, y_pred, from_logits=True,
                                                 label_smoothing=self.label_smoothing)

  def get_config(self):
    return {"label_smoothing": self.label_smoothing, "name": self.name}


def steps_per_epoch(dataset):
  """Number of batches of a finite dataset (counts them if TF does not know)."""
  n = int(dataset.cardinality())
  if n == tf.data.INFINITE_CARDINALITY:
    raise ValueError("the training dataset is infinite; pass a finite dataset (no .repeat())")
  if n < 0:
    n = sum(1 for _ in dataset)
  if n == 0:
    raise ValueError("the training dataset is empty (0 batches); check the data and the batch size")
  return n


def compile_model(model, learning_rate=0.05, total_steps=1000, momentum=0.9, weight_decay=5e-5,
                  label_smoothing=0.0, optimizer="sgd", steps_per_execution=1):
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
      opt = keras.optimizers.SGD(schedule, momentum=momentum, nesterov=True, weight_decay=wd)
    else:
      opt = keras.optimizers.AdamW(schedule, weight_decay=wd or 0.0) if wd else keras.optimizers.Adam(schedule)
    model.compile(optimizer=opt, loss=SparseCrossentropyWithSmoothing(label_smoothing),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  steps_per_execution=steps_per_execution)
  return model


def fit(model, train_data, epochs, learning_rate=0.05, output_dir=None, validation_data=None, verbose=1,
        callbacks=None, **compile_kwargs):
  """Compiles and trains `model` with the shared recipe; resumable.

  With `output_dir`, the run keeps `output_dir/backup` (BackupAndRestore: a
  rerun after an interruption continues at the last finished epoch, with the
  same learning-rate schedule and -- for a PruningNet -- the same structure
  sequence), `output_dir/logs` (TensorBoard) and `output_dir/last.weights.h5`.

  Args:
    model: a `PruningNet` or plain Keras model.
    train_data: a finite batched `tf.data.Dataset` of (images, labels).
    epochs: number of epochs (>= 1).
    learning_rate: peak learning rate.
    output_dir: where checkpoints and logs go (None: nothing is written).
    validation_data: optional dataset for Keras' validation metrics.
    verbose: Keras verbosity (1 = progress bar).
    callbacks: extra Keras callbacks.
    **compile_kwargs: passed to `compile_model`.

  Returns:
    The Keras `History.history` dict.

  Raises:
    ValueError: on a bad epoch count, learning rate or an empty dataset.
    tf_metaprune.distribute.WorkerLostError: under a multi-worker strategy,
      if another worker stopped (rerun all workers to resume).
    FloatingPointError: if the loss became NaN/Inf (the last good epoch's
      backup is kept).
  """
  if int(epochs) < 1:
    raise ValueError(f"epochs={epochs!r} must be >= 1")
  steps = steps_per_epoch(train_data)
  compile_model(model, learning_rate=learning_rate, total_steps=steps * int(epochs), **compile_kwargs)
  cbs = [keras.callbacks.TerminateOnNaN()]
  strategy = model.distribute_strategy
  chief = distribute.is_chief(strategy)
  if output_dir:
    if chief:
      os.makedirs(output_dir, exist_ok=True)
    cbs.append(ChiefBackupAndRestore(os.path.join(output_dir, "backup"), chief=chief))
    if chief:
      cbs += [keras.callbacks.TensorBoard(os.path.join(output_dir, "logs"), update_freq="epoch"),
              keras.callbacks.ModelCheckpoint(os.path.join(output_dir, "last.weights.h5"), save_weights_only=True)]
  cbs += list(callbacks or [])
  try:
    with _multi_worker_build(model, train_data, strategy):
      history = model.fit(train_data, epochs=int(epochs), validation_data=validation_data, callbacks=cbs,
                          shuffle=False, verbose=verbose if chief else 0)
  except Exception as e:  # pylint: disable=broad-except
    lost = distribute.worker_lost_error(
        e, strategy, f"training resumes at the last finished epoch from {os.path.join(output_dir, 'backup')!r}"
        if output_dir else "pass output_dir to fit() so that a rerun resumes instead of starting over")
    if lost is None:
      raise
    raise lost from e
  losses = history.history.get("loss", [])
  if losses and not np.all(np.isfinite(losses)):
    raise FloatingPointError(
        f"training stopped: the loss became {losses[-1]} in epoch {len(losses)}; lower the learning rate "
        f"(was {learning_rate}). The last finished epoch's backup is kept in {output_dir!r}.")
  return history.history


class ChiefBackupAndRestore(keras.callbacks.BackupAndRestore):
  """`keras.callbacks.BackupAndRestore` that only the chief writes.

  Keras 3's callback writes from every process, so the workers of a
  multi-worker job would overwrite one file together and each delete it at
  the end. Here every worker *restores* from `backup_dir` (the model state is
  identical on all workers: mirrored variables), and only the chief saves and
  deletes it. A rerun after a crash therefore resumes every worker at the
  chief's last finished epoch; `backup_dir` must be on a filesystem all
  workers share. With one process it is the Keras callback.

  Args:
    backup_dir: where the backup lives.
    chief: whether this process is the chief (`distribute.is_chief()`).
    **kwargs: passed to `keras.callbacks.BackupAndRestore`.
  """

  def __init__(self, backup_dir, chief=True, **kwargs):
    super().__init__(backup_dir, **kwargs)
    self.chief = bool(chief)

  def _save_model(self):
    if self.chief:
      super()._save_model()

  def on_train_end(self, logs=None):
    if self.chief:
      super().on_train_end(logs)


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
