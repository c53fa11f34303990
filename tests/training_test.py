"""Tests of tf_metaprune.training: the shared recipe learns and resumes."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import testutil  # tests/testutil.py
import tf_metaprune as tfmp


def test_pruning_net_learns_synthetic_data_above_chance(tmp_path):
  splits = tfmp.data.synthetic(num_examples=384, input_shape=(12, 12, 1), num_classes=4, batch_size=32)
  space = tfmp.models.small_cnn(splits.input_shape, 4, channels=(8, 8, 16, 16), divisor=1)
  keras.utils.set_random_seed(0)
  net = tfmp.PruningNet(space, hidden_units=4)
  history = tfmp.training.fit(net, splits.train, epochs=4, learning_rate=0.05, verbose=0,
                              output_dir=str(tmp_path))
  assert history["loss"][-1] < history["loss"][0]
  ev = tfmp.Evaluator(net, tfmp.EvaluationData.from_dataset(splits.search, 2, splits.train))
  assert ev.accuracy(space.largest()) > 0.5        # chance is 0.25
  assert os.path.exists(tmp_path / "last.weights.h5")


def _sine_gradient_step(opt, var):
  return tf.function(lambda i: opt.apply_gradients([(tf.sin(var * (i + 1.0)), var)]))


@pytest.mark.parametrize("fused, keras_cls, kwargs, atol", [
    ("FusedSGD", "SGD", dict(momentum=0.9, nesterov=True, weight_decay=5e-5), 0.0),   # bit for bit
    ("FusedSGD", "SGD", dict(momentum=0.9, nesterov=False), 0.0),
    ("FusedAdam", "Adam", {}, 1e-5),                                                   # float rounding
    ("FusedAdamW", "AdamW", dict(weight_decay=5e-5), 1e-5),
])
def test_fused_optimizers_update_like_keras_own(fused, keras_cls, kwargs, atol):
  results = []
  for cls in (getattr(tfmp.training, fused), getattr(keras.optimizers, keras_cls)):
    var = keras.Variable(np.random.RandomState(0).randn(6, 5).astype(np.float32))
    opt = cls(keras.optimizers.schedules.CosineDecay(0.05, 100), **kwargs)

    step = _sine_gradient_step(opt, var)
    for i in range(4):
      step(tf.constant(i, tf.float32))
    results.append([var.numpy()] + [w.numpy() for w in opt.variables[1:]])   # weights, then slots
  for got, want in zip(*results):
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)
  assert not np.allclose(results[0][0], np.random.RandomState(0).randn(6, 5))   # it did move


def test_label_smoothing_loss_matches_categorical_crossentropy():
  loss = tfmp.training.SparseCrossentropyWithSmoothing(0.1)
  logits = np.array([[2.0, 0.5, -1.0]], np.float32)
  expected = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(
      np.array([[0.0, 1.0, 0.0]], np.float32), logits)
  assert float(loss(np.array([1]), logits)) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("kwargs,match", [(dict(epochs=0), "epochs=0"), (dict(learning_rate=-1.0), "learning_rate=-1.0")])
def test_bad_training_arguments_are_rejected(kwargs, match):
  splits = tfmp.data.synthetic(num_examples=64, input_shape=(8, 8, 1), num_classes=2, batch_size=16)
  model = tfmp.rebuild(tfmp.models.small_cnn((8, 8, 1), 2, channels=(4, 4, 4, 4), divisor=1),
                       tfmp.Structure([0, 0, 0, 0]))
  args = dict(epochs=1, learning_rate=0.1) | kwargs
  with pytest.raises(ValueError, match=match):
    tfmp.training.fit(model, splits.train, verbose=0, **args)


# ---- checkpoints, resumption, NaN, bad input ------------------------------------------------------


def _tiny_run(seed=0):
  """A 4-step-per-epoch dataset in a fixed order and a tiny PruningNet, seeded."""
  keras.utils.set_random_seed(seed)
  rng = np.random.default_rng(seed)
  x = rng.random((64, 8, 8, 1), dtype=np.float32)
  y = rng.integers(0, 3, 64).astype(np.int32)
  ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
  space = tfmp.models.small_cnn((8, 8, 1), 3, channels=(4, 4, 4, 4), divisor=1)
  return ds, tfmp.PruningNet(space, hidden_units=0, seed=1)


class _EpochWeights(keras.callbacks.Callback):
  """Records the model's weights at every epoch end, and counts training batches."""

  def __init__(self):
    super().__init__()
    self.weights, self.batches = {}, 0

  def on_train_batch_end(self, batch, logs=None):
    self.batches += 1

  def on_epoch_end(self, epoch, logs=None):
    self.weights[epoch + 1] = [w.numpy().copy() for w in self.model.weights]


class _PoisonAfterStep(keras.callbacks.Callback):
  """Sets a kernel to NaN after global step `step`, so the next step's loss is NaN."""

  def __init__(self, step):
    super().__init__()
    self.step, self.seen = step, 0

  def on_train_batch_end(self, batch, logs=None):
    self.seen += 1
    if self.seen == self.step:
      v = self.model.trainable_variables[0]
      v.assign(np.full(v.shape, np.nan, np.float32))


def test_nan_loss_stops_with_the_step_number_and_keeps_the_last_good_checkpoint(tmp_path):
  ds, net = _tiny_run()
  record = _EpochWeights()
  with pytest.raises(FloatingPointError, match=r"stopped at step 6 \(epoch 2, batch 2 of 4\): the loss became nan"
                     r".*last good epoch \(1\)"):
    tfmp.training.fit(net, ds, epochs=3, learning_rate=0.05, verbose=0, output_dir=str(tmp_path),
                      callbacks=[record, _PoisonAfterStep(5)])
  assert record.batches == 6   # stopped at once, not at the end of the epoch
  state = json.loads((tmp_path / "backup" / "state.json").read_text())
  assert state["epoch"] == 1 and all(np.isfinite(state["history"]["loss"]))
  good = record.weights[1]
  # The model holds the last good checkpoint again, and last.weights.h5 is that checkpoint, not NaN.
  for want, w in zip(good, net.weights):
    np.testing.assert_array_equal(w.numpy(), want)
  _, again = _tiny_run()
  again.load_weights(str(tmp_path / "last.weights.h5"))
  for want, w in zip(good, again.weights):
    np.testing.assert_array_equal(w.numpy(), want)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """(output_dir, history, weights) of a finished 2-epoch run of `_tiny_run()`."""
  out = tmp_path_factory.mktemp("finished")
  ds, net = _tiny_run()
  history = tfmp.training.fit(net, ds, epochs=2, learning_rate=0.05, verbose=0, output_dir=str(out))
  return out, history, [w.numpy() for w in net.weights]


def test_finished_training_is_not_redone_and_returns_its_history(finished_run):
  out, first, weights = finished_run
  ds, fresh = _tiny_run(seed=1)   # other initial weights: the checkpoint must replace them
  record = _EpochWeights()
  again = tfmp.training.fit(fresh, ds, epochs=2, learning_rate=0.05, verbose=0, output_dir=str(out),
                            callbacks=[record])
  assert record.batches == 0 and again == first and len(first["loss"]) == 2
  for a, b in zip(weights, fresh.weights):
    np.testing.assert_array_equal(a, b.numpy())
  assert int(fresh.optimizer.iterations) == 8   # the optimizer state came back too


def test_training_state_of_another_run_or_damaged_is_rejected_and_left_untouched(finished_run, tmp_path):
  shutil.copytree(finished_run[0], tmp_path, dirs_exist_ok=True)
  ds, net = _tiny_run()
  state = tmp_path / "backup" / "state.json"
  before = state.read_text()
  with pytest.raises(ValueError, match=r"state\.json' belongs to another run: epochs differs \(saved 2, now 3\)"):
    tfmp.training.fit(net, ds, epochs=3, learning_rate=0.05, verbose=0, output_dir=str(tmp_path))
  with pytest.raises(ValueError, match=r"belongs to another run: learning_rate differs \(saved 0.05, now 0.1\)"):
    tfmp.training.fit(net, ds, epochs=2, learning_rate=0.1, verbose=0, output_dir=str(tmp_path))
  assert state.read_text() == before
  for text, match in [(before[:len(before) // 2], "is not valid JSON"),
                      ('{"format": "tf_metaprune.EvolutionState"}', "is not a training state file"),
                      (before.replace('"epoch"', '"epoc"'), "is damaged")]:
    state.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
      tfmp.training.fit(net, ds, epochs=2, learning_rate=0.05, verbose=0, output_dir=str(tmp_path))
    assert str(state) in str(e.value)
    assert state.read_text() == text


@pytest.mark.parametrize("images,labels,match", [
    ((8, 8, 3), None, r"train_data images have 3 channels \(shape \(8, 8, 3\)\) but the PruningNet of space "
                      r"'small_cnn' takes 1 \(input shape \(8, 8, 1\)\)"),
    ((12, 12, 1), None, r"train_data images are 12x12 .* takes 8x8"),
    ((8, 8, 1), "onehot", r"labels have shape \(None, 3\): they look one-hot"),
    ((8, 8, 1), "big", r"the data holds label 7 but the PruningNet of space 'small_cnn' has 3 classes .*"
                       r"num_classes=8"),
])
def test_dataset_that_does_not_fit_the_model_is_rejected_naming_the_values(images, labels, match):
  _, net = _tiny_run()
  rng = np.random.default_rng(0)
  x = rng.random((32,) + images, dtype=np.float32)
  y = rng.integers(0, 3, 32).astype(np.int32)
  if labels == "onehot":
    y = np.eye(3, dtype=np.float32)[y]
  elif labels == "big":
    y[5] = 7
  ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
  with pytest.raises(ValueError, match=match):
    tfmp.training.fit(net, ds, epochs=1, verbose=0)


def test_empty_training_dataset_is_rejected():
  _, net = _tiny_run()
  empty = tf.data.Dataset.from_tensor_slices((np.zeros((0, 8, 8, 1), np.float32), np.zeros(0, np.int32))).batch(4)
  with pytest.raises(ValueError, match=r"the training dataset is empty \(0 batches\)"):
    tfmp.training.fit(net, empty, epochs=1, verbose=0)
  unknown = empty.filter(lambda x, y: True)   # unknown length: counted, still empty
  with pytest.raises(ValueError, match="empty"):
    tfmp.training.fit(net, unknown, epochs=1, verbose=0)


def test_output_dir_without_write_permission_fails_before_training(tmp_path):
  locked = tmp_path / "locked"
  locked.mkdir()
  ds, net = _tiny_run()
  record = _EpochWeights()
  with testutil.without_write_permission(locked):
    with pytest.raises(tfmp.io.NotWritableError, match=r"output_dir='.*locked/run' is not writable") as e:
      tfmp.training.fit(net, ds, epochs=1, verbose=0, output_dir=str(locked / "run"), callbacks=[record])
  assert isinstance(e.value, ValueError) and isinstance(e.value, PermissionError)
  assert record.batches == 0 and not (locked / "run").exists()
