"""Helpers shared by several test files: a read-only folder, a tiny trained PruningNet."""

import contextlib
import os

import keras
import pytest

import tf_metaprune as tfmp


@contextlib.contextmanager
def without_write_permission(folder):
  """Makes `folder` read-only for this process (as root, by dropping to uid 65534 meanwhile)."""
  folder.chmod(0o500)
  dropped = False
  try:
    if os.geteuid() == 0:
      try:
        os.seteuid(65534)   # root ignores permission bits: act as "nobody" for the duration
      except OSError:
        pytest.skip("running as root without the right to change uid: no folder is read-only here")
      dropped = True
    yield
  finally:
    if dropped:
      os.seteuid(0)
    folder.chmod(0o700)


def tiny_search_space():
  """A 4-gene small CNN on 12x12x1 images, 4 classes (the searchers' tests)."""
  return tfmp.models.small_cnn(input_shape=(12, 12, 1), num_classes=4, channels=(8, 8, 16, 16), divisor=1)


def tiny_search_splits():
  """512 synthetic 12x12x1 images of 4 classes, batches of 32."""
  return tfmp.data.synthetic(num_examples=512, input_shape=(12, 12, 1), num_classes=4, batch_size=32)


def trained_pruning_net(space, splits, epochs=3):
  """A PruningNet of `space` (hidden size 4, seed 0) trained `epochs` epochs on `splits.train`."""
  keras.utils.set_random_seed(0)
  net = tfmp.PruningNet(space, hidden_units=4)
  net.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  net.fit(splits.train, epochs=epochs, verbose=0)
  return net
