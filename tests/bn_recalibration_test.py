"""After the tool's training a model scores in inference mode what it scores with batch statistics.

keras.applications models use batch-norm momentum 0.999: after a short training their moving
statistics still hold most of their initial values (mean 0, variance 1), and the model is at chance in
inference mode. `tfmp.training.fit` recalibrates them exactly after training
(`recalibrate_batch_norm`); `recalibrate_bn=False` shows the lag it removes.
"""

import keras
import numpy as np
import pytest

import tf_metaprune as tfmp


def _splits():
  return tfmp.data.synthetic(num_examples=1024, input_shape=(12, 12, 1), num_classes=4, batch_size=32)


def _slow_bn_model():
  """A conv net whose batch norms have keras.applications' momentum 0.999."""
  keras.utils.set_random_seed(0)
  x = inputs = keras.Input((12, 12, 1))
  for width in (8, 16):
    x = keras.layers.Conv2D(width, 3, 2, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.999)(x)
    x = keras.layers.ReLU()(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  return keras.Model(inputs, keras.layers.Dense(4)(x))


def _accuracies(model, dataset):
  """(inference-mode accuracy, batch-statistics accuracy) over the batches of `dataset`."""
  inference, batch_stats, total = 0, 0, 0
  for x, y in dataset:
    y = y.numpy()
    inference += int(np.sum(np.argmax(model(x, training=False), -1) == y))
    total += len(y)
  for x, y in dataset:   # training=True moves the moving statistics a little: score inference mode first
    batch_stats += int(np.sum(np.argmax(model(x, training=True), -1) == y.numpy()))
  return inference / total, batch_stats / total


@pytest.mark.parametrize("recalibrate", [True, False])
def test_momentum_0999_model_scores_in_inference_mode_what_it_scores_with_batch_statistics(recalibrate):
  splits = _splits()
  model = _slow_bn_model()
  tfmp.training.fit(model, splits.train, epochs=2, learning_rate=0.01, optimizer="adam", verbose=0,
                    recalibrate_bn=recalibrate, bn_data=splits.calibration)
  inference, batch_stats = _accuracies(model, splits.test)
  assert batch_stats > 0.6                      # it learned (chance is 0.25)
  if recalibrate:
    assert abs(inference - batch_stats) <= 0.01, (inference, batch_stats)
  else:                                         # the lag the recalibration removes
    assert inference < batch_stats - 0.2, (inference, batch_stats)


def test_recalibrated_statistics_are_the_exact_moments_of_the_first_batch_norm_input():
  splits = _splits()
  model = _slow_bn_model()
  assert tfmp.training.recalibrate_batch_norm(model, splits.calibration) == 2
  images = np.concatenate([x.numpy() for x, _ in splits.calibration])
  conv_out = model.layers[1](images).numpy()    # the first BN's input (nothing before it normalises)
  bn = model.layers[2]
  np.testing.assert_allclose(bn.moving_mean.numpy(), conv_out.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(bn.moving_variance.numpy(), conv_out.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-6)
