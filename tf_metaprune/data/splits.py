"""DatasetSplits and the deterministic, class-stratified train / search / test split."""

import dataclasses
import math
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf


#: Seed of the train / search / test split. Fixed (not the `seed` argument) so
#: the split is the same in every run; `seed` only shuffles and augments train.
SPLIT_SEED = 20190318


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
    make_batched: Builds these splits again at another batch size (see
      `with_batch_size`); None for splits made by hand.

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
  make_batched: Optional[Callable[[int], "DatasetSplits"]] = dataclasses.field(default=None, compare=False)

  @property
  def batch_size(self) -> Optional[int]:
    """Examples per batch of every split (None for splits made by hand without a config)."""
    return self.config.get("batch_size")

  def with_batch_size(self, batch_size: int) -> "DatasetSplits":
    """The same splits (same images, same split, same seed) batched by `batch_size`.

    Nothing is read or checked again (a folder's images are decoded once), so
    a caller that learns the training set's size first can pick the batch
    from it (`tf_metaprune.pipeline.sized_for`).

    Raises:
      ValueError: for splits made by hand (no `make_batched`).
    """
    if batch_size == self.batch_size:
      return self
    if self.make_batched is None:
      raise ValueError(f"these splits ({self.name!r}) were made by hand and cannot be re-batched to "
                       f"batch_size={batch_size!r}; build them at that batch size")
    return self.make_batched(int(batch_size))

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


def _is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _copy_json(value):
  """Deep copy of a dict/list/scalar tree (what get_config hands out)."""
  if isinstance(value, dict):
    return {k: _copy_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_copy_json(v) for v in value]
  return value
