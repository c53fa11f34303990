"""Tests of tf_metaprune.training: the shared recipe learns and resumes."""

import os

import keras
import numpy as np
import pytest

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
