"""`fit`: the one training loop (resume, distillation, multi-worker), its input checks and batch-norm recalibration."""

import contextlib
import os

import keras
import numpy as np
import tensorflow as tf

from tf_metaprune import distribute
from tf_metaprune import io as io_lib
from tf_metaprune.training.checkpoint import _Checkpointer
from tf_metaprune.training.checkpoint import _NonFiniteLossGuard
from tf_metaprune.training.checkpoint import _TimeEstimate
from tf_metaprune.training.checkpoint import run_identity
from tf_metaprune.training.losses import Distiller
from tf_metaprune.training.losses import _LABEL_CHECK
from tf_metaprune.training.optimizers import compile_model


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


def evaluate(model, data, **kwargs):
  """`model.evaluate(data, verbose=0, **kwargs)`, also under MultiWorkerMirroredStrategy.

  Keras 3.15's `evaluate` fails there as `fit` does (see `_multi_worker_build`);
  this applies the same work-arounds. Every worker must call it (it is a
  collective operation); each gets the result over all workers' batches.

  Returns:
    What `model.evaluate` returns (e.g. [loss, accuracy]).
  """
  with _multi_worker_build(model, data, model.distribute_strategy):
    return model.evaluate(data, verbose=0, **kwargs)


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
