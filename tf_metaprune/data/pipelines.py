"""The batched tf.data pipelines of the splits: decoding, resizing, augmentation, shuffling."""

import dataclasses
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from tf_metaprune.data.sources import _Source
from tf_metaprune.data.splits import DatasetSplits


# Train shuffling holds the whole train split in the buffer up to this many
# examples (a full shuffle for every dataset this library targets).
_MAX_SHUFFLE_BUFFER = 50_000


# --------------------------------------------------------------------------
# Pipelines.


def _to_float(image: tf.Tensor, size_hw: Optional[Tuple[int, int]]):
  """Image of any dtype -> float32 in [0, 1], resized to size_hw if given."""
  image = tf.image.convert_image_dtype(image, tf.float32)  # uint8: / 255.
  if size_hw is not None and tuple(image.shape[:2]) != tuple(size_hw):
    image = tf.image.resize(image, size_hw, antialias=True)
    image = tf.clip_by_value(image, 0.0, 1.0)
  return image


def _augment(image: tf.Tensor, seed: tf.Tensor, flip: bool) -> tf.Tensor:
  """Random crop after zero-padding by 2-4 px, then an optional flip."""
  height, width, _ = image.shape
  pad = int(np.clip(min(height, width) // 8, 2, 4))
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
  image = tf.image.stateless_random_crop(padded, tf.shape(image), crop_seed)
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return image


def _pipeline(source: _Source, *, training: bool, batch_size: int,
              size_hw, augment: bool, flip: bool, seed: int,
              image_shape) -> tf.data.Dataset:
  """Raw examples -> batched, prefetched (float32 image, int32 label)."""

  def prepare(*raw):
    image, label = source.decode(*raw)
    image = _to_float(image, size_hw)
    return tf.ensure_shape(image, image_shape), tf.cast(label, tf.int32)

  ds = source.dataset
  if training:
    ds = ds.shuffle(min(source.num_examples, _MAX_SHUFFLE_BUFFER), seed=seed,
                    reshuffle_each_iteration=True)
  if training and augment:
    seeds = tf.data.Dataset.random(
        seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds)

    def prepare_and_augment(raw, example_seed):
      image, label = prepare(*raw) if isinstance(raw, tuple) else prepare(raw)
      return _augment(image, example_seed, flip), label

    ds = ds.map(prepare_and_augment, num_parallel_calls=tf.data.AUTOTUNE)
  else:
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  drop_remainder = training and source.num_examples >= batch_size
  return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(
      tf.data.AUTOTUNE)


def _build_splits(name, sources, num_classes, image_shape, config, *,
                  batch_size, size_hw, augment, flip, seed, max_examples,
                  search_fraction, test_fraction) -> DatasetSplits:
  """Truncates, checks and wraps the three sources into a DatasetSplits."""
  fixes = {
      "train": "lower search_fraction / test_fraction or use more data",
      "search": f"raise search_fraction (now {search_fraction}) or use more "
                "data",
      "test": f"raise test_fraction (now {test_fraction}) or use more data",
  }
  rebatched = lambda b: _build_splits(name, dict(sources), num_classes, image_shape, dict(config, batch_size=b),
                                      batch_size=b, size_hw=size_hw, augment=augment, flip=flip, seed=seed,
                                      max_examples=max_examples, search_fraction=search_fraction,
                                      test_fraction=test_fraction)
  counts = {}
  for split in ("train", "search", "test"):
    source = sources[split]
    if max_examples is not None and source.num_examples > max_examples:
      source = dataclasses.replace(
          source, dataset=source.dataset.take(max_examples),
          num_examples=max_examples)
      sources[split] = source
    counts[split] = source.num_examples
  for split, count in counts.items():
    if count == 0:
      raise ValueError(
          f"The {split!r} split of {name!r} is empty (split sizes: {counts}); "
          f"{fixes[split]}")

  if size_hw is not None:
    image_shape = tuple(size_hw) + (image_shape[-1],)
  image_shape = tuple(int(d) for d in image_shape)
  build = lambda split: _pipeline(sources[split], training=(split == "train"), batch_size=batch_size,
                                  size_hw=size_hw, augment=augment, flip=flip, seed=seed,
                                  image_shape=image_shape)
  pipelines = {split: build(split) for split in ("train", "search", "test")}
  calibration = _pipeline(sources["train"], training=False, batch_size=batch_size, size_hw=size_hw,
                          augment=False, flip=flip, seed=seed, image_shape=image_shape)
  config = dict(config, num_classes=int(num_classes),
                input_shape=list(image_shape), num_examples=dict(counts))
  return DatasetSplits(
      train=pipelines["train"],
      search=pipelines["search"],
      test=pipelines["test"],
      num_classes=int(num_classes),
      input_shape=image_shape,
      num_examples=counts,
      name=name,
      config=config,
      calibration=calibration,
      make_train=lambda: build("train"),
      make_batched=rebatched)
