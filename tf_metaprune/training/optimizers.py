"""Fused SGD / Adam / AdamW (Keras' own updates in TF's fused kernels) and `compile_model`, the shared recipe."""

import math

import keras
import tensorflow as tf

from tf_metaprune.training.losses import loss_object
from tf_metaprune.training.losses import SparseCrossentropyWithSmoothing


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
      (e.g. `losses.user_losses(trained_model)`, the losses it was compiled
      with). None: label-smoothed sparse cross-entropy with an accuracy
      metric (the classifier recipe); a given loss gets no metric.
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
      compiled = [loss_object(l) for l in loss] if isinstance(loss, (list, tuple)) else loss_object(loss)
      model.compile(optimizer=opt, loss=compiled, loss_weights=None if loss_weights is None else list(loss_weights),
                    steps_per_execution=steps_per_execution)
  return model
