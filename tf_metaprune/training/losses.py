"""Losses of the shared recipe: cross-entropy with label smoothing and a label check, and knowledge distillation."""

import functools
import inspect

import keras
import tensorflow as tf


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


def loss_object(loss):
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
  brings its own losses: what its PruningNet then trains with
  (`compile_model(loss=...)`, `fit(loss=...)`) and what
  `calibration.SearchMetric("loss", losses=...)` ranks structures by. They
  come back serialized (a loss name, or a Keras config dict), so a run's
  identity can record them; losses given by output name are put in output
  order.
  """
  config = model.get_compile_config() if hasattr(model, "get_compile_config") else None
  if not config or config.get("loss") is None:
    return None, None
  loss, weights = config["loss"], config.get("loss_weights")
  names = list(getattr(model, "output_names", None) or [])
  if isinstance(loss, dict) and "class_name" not in loss:   # by output name, not one serialized loss
    loss = [loss.get(n) for n in names]
  if isinstance(weights, dict):
    weights = [float(weights.get(n, 1.0)) for n in names]
  if not isinstance(loss, (list, tuple)):
    loss = [loss] * max(1, len(names))
  return list(loss), (None if weights is None else [float(w) for w in weights])
