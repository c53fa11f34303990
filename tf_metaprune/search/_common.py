"""Helpers shared by the searchers: the evaluator, candidate measurement, fingerprints."""

import dataclasses
import hashlib
import json
import os
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from tf_metaprune import budgets as budgets_lib
from tf_metaprune import calibration
from tf_metaprune import data as data_lib
from tf_metaprune import io as io_lib
from tf_metaprune import pruning_net
from tf_metaprune.search import result as result_lib


def check_net(net, who):
  if not isinstance(net, pruning_net.PruningNet):
    raise TypeError(f"{who}(net=...) needs a trained tf_metaprune.PruningNet, got {type(net).__name__}")


def make_evaluator(net, search_data, calibration_data=None, num_calibration_batches=4, who="search"):
  """An `Evaluator` of `net` on the held-out search data.

  Args:
    net: the `PruningNet`.
    search_data: an `Evaluator` of this net (reused: no new trace), an
      `EvaluationData`, a batched `tf.data.Dataset` of (images, labels) (the
      held-out search split, never the test split), or a `DatasetSplits`
      (scored on `.search`, BN recalibrated on the first batches of
      `.calibration`, the train split in a fixed order; `.test` is never read).
    calibration_data: where BN-calibration batches come from when
      `search_data` is a dataset (default: `search_data` itself).
    num_calibration_batches: full batches used to recalibrate BN statistics.
    who: the caller's name, for error messages.

  Raises:
    TypeError / ValueError: for another kind of `search_data`, or an
      `Evaluator` of another net.
  """
  if isinstance(search_data, calibration.Evaluator):
    if search_data.net is not net:
      raise ValueError(f"{who}: the Evaluator passed as search_data belongs to another PruningNet; "
                       "build Evaluator(net, data) for this net")
    if calibration_data is not None:
      raise ValueError(f"{who}: calibration_data={calibration_data!r} is ignored when search_data is an "
                       "Evaluator (it has its calibration batches); drop it")
    return search_data
  if isinstance(search_data, data_lib.DatasetSplits):
    if calibration_data is None:
      # The reference recalibrates on training batches; in a fixed order, so a resumed search
      # (in a new process, training not redone) calibrates on the same images.
      calibration_data = search_data.calibration if search_data.calibration is not None else search_data.train
    search_data = search_data.search
  if isinstance(search_data, tf.data.Dataset):
    data = calibration.EvaluationData.from_dataset(search_data, num_calibration_batches=num_calibration_batches,
                                                   calibration_dataset=calibration_data)
  elif isinstance(search_data, calibration.EvaluationData):
    if calibration_data is not None:
      raise ValueError(f"{who}: calibration_data={calibration_data!r} is ignored when search_data is an "
                       "EvaluationData (it holds its calibration images); drop it")
    data = search_data
  else:
    raise TypeError(f"{who}(search_data=...) must be an EvaluationData, an Evaluator, a DatasetSplits or a "
                    f"batched tf.data.Dataset of (images, labels) from the search split; got "
                    f"{type(search_data).__name__}")
  return calibration.Evaluator(net, data)


def check_budget(budget, space):
  """Returns the budget as an object (from a config dict too), after `check(space)`."""
  if budget is None:
    return None
  if isinstance(budget, dict):
    budget = budgets_lib.budget_from_config(budget)
  if not isinstance(budget, budgets_lib.Budget):
    raise TypeError(f"budget={budget!r} is not a budget; use tf_metaprune.budgets.FlopsBudget(max_mflops=...) "
                    "or another Budget")
  budget.check(space)
  return budget


def latency_lut(budget, latency_table, space):
  lut = latency_table if latency_table is not None else budgets_lib.latency_predictor(budget)
  if isinstance(lut, budgets_lib.LatencyTable):
    lut.validate(space)
  return lut


def measure(space, choices, accuracy, lut=None, generation=0, loss=None) -> result_lib.Candidate:
  """A `Candidate` with accuracy (and loss), MFLOPs, params (and predicted latency) of `choices`."""
  s = space.validate(choices)
  latency = None if lut is None else float(lut.predict_ms(space, s))
  return result_lib.Candidate(choices=s.choices, accuracy=float(accuracy), mflops=space.mflops(s),
                              params=space.params(s), latency_ms=latency, generation=generation,
                              loss=None if loss is None else float(loss))


def net_fingerprint(net) -> str:
  """Hash of the PruningNet's trainable weights (a retrained net gets another one)."""
  h = hashlib.sha256()
  for w in net.trainable_weights:
    a = np.ascontiguousarray(w.numpy())
    h.update(str(a.shape).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def data_fingerprint(data, metric=None) -> str:
  """Hash of an `EvaluationData`'s calibration and evaluation arrays (and of a search metric other than accuracy)."""
  h = hashlib.sha256()
  labels = data.eval_labels if isinstance(data.eval_labels, tuple) else (data.eval_labels,)
  for a in (data.calibration_images, data.eval_images) + labels + (data.eval_mask,):
    a = np.ascontiguousarray(a)
    h.update(str(a.shape).encode())
    h.update(a.tobytes())
  if metric is not None and not metric.builtin:  # the default leaves older fingerprints as they were
    h.update(json.dumps(metric.get_config(), sort_keys=True).encode())
  return h.hexdigest()[:16]


@dataclasses.dataclass
class SearchContext:
  """What every searcher's `run(context)` receives: the one searcher contract.

  Each searcher is a config object (`EvolutionConfig`, `AutoSlimConfig`,
  `PaSConfig`, `RLConfig`, `UniformConfig`) whose `run(context)` returns a
  `SearchResult`; `tf_metaprune.search.run(name, ...)` only looks the config
  class up by name and builds the context (optax's one
  `GradientTransformation` for every optimizer).

  Attributes:
    space: the `SearchSpace`.
    budget: a `Budget` or None.
    train_data: the training split (`DatasetSplits` or a batched dataset), for
      searchers that train their own network.
    search_data: the held-out split (a `DatasetSplits`, dataset,
      `EvaluationData` or `Evaluator`).
    pruning_net: a trained `PruningNet` (or None).
    output_dir: where states and trained networks go (None: nothing written).
    state_path: overrides the searcher's state file in `output_dir`.
    seed: seeds the initialization of networks a searcher trains.
    verbose: 0 silent, 1 progress lines, 2 also Keras' progress.
  """
  space: Any
  budget: Any = None
  train_data: Any = None
  search_data: Any = None
  pruning_net: Any = None
  output_dir: Optional[str] = None
  state_path: Optional[str] = None
  seed: int = 0
  verbose: int = 1

  def file(self, *parts):
    """A path in `output_dir`, or None without one."""
    return None if self.output_dir is None else os.path.join(self.output_dir, *parts)

  def state_file(self, default_name):
    """`state_path`, or `default_name` in `output_dir` (None without either)."""
    return self.state_path if self.state_path is not None else self.file(default_name)

  def train_split(self):
    return self.train_data.train if isinstance(self.train_data, data_lib.DatasetSplits) else self.train_data

  def search_split(self):
    """`search_data`, or the `.search` split of a `DatasetSplits`."""
    return self.search_data.search if isinstance(self.search_data, data_lib.DatasetSplits) else self.search_data

  @property
  def progress(self) -> int:
    """Verbosity of the searcher's own progress lines (0 or 1)."""
    return int(bool(self.verbose))

  @property
  def keras_verbose(self) -> int:
    """Verbosity of Keras training inside a searcher (1 only at verbose > 1)."""
    return 1 if self.verbose > 1 else 0


class FrozenConfig:
  """`get_config` / `from_config` for the searchers' frozen dataclass configs, and their capabilities.

  The capabilities are class attributes, read by `search.run`, the pipeline and
  the benchmarks (nothing branches on a searcher's name):

  * `needs_pruning_net`: it scores structures with a trained PruningNet, which
    `run` then requires (evolutionary, rl, uniform).
  * `trains_own_network`: it trains a network of its own on the training split
    (autoslim's slimmable net, pas's masked net); `run` then requires
    `train_data`, unless `uses_given_pruning_net` and a PruningNet is given.
  * `uses_given_pruning_net`: a given PruningNet is used (autoslim slims it
    instead of training; pas ignores it).
  * `shares_network_across_budgets`: the network it trains serves every
    budget, so one output folder trains it once (autoslim).
  * `has_settings`: False for the uniform baseline.
  """
  needs_pruning_net = False
  trains_own_network = False
  uses_given_pruning_net = False
  shares_network_across_budgets = False
  has_settings = True

  ranks_candidates = True   # its result's top_k are candidates worth re-scoring (not the uniform baseline's)

  def max_candidates(self):
    """The most structures this search scores (None: not bounded in advance); the time estimates use it."""
    return None

  def describe(self) -> str:
    """A few words on the search's size, for progress lines ('' by default)."""
    return ""

  @classmethod
  def trains_network_with(cls, pruning_net) -> bool:
    """Whether `run` trains a network of its own when given `pruning_net` (None or a PruningNet)."""
    return cls.trains_own_network and not (pruning_net is not None and cls.uses_given_pruning_net)

  def get_config(self):
    return dataclasses.asdict(self)

  @classmethod
  def from_config(cls, config):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - known)
    if unknown:
      raise ValueError(f"{cls.__name__}.from_config: unknown settings {unknown}; known ones are {sorted(known)}")
    return cls(**config)


def check_int(owner, name, value, minimum):
  """Returns `value` as an int, or raises ValueError quoting it."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{owner}({name}={value!r}): {name} must be an int >= {minimum}")
  return int(value)


def check_float(owner, name, value, low, high, low_open=True):
  """Returns `value` as a float in (low, high] (or [low, high]), or raises ValueError quoting it."""
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    raise ValueError(f"{owner}({name}={value!r}): {name} must be a number")
  v = float(value)
  ok = (low < v if low_open else low <= v) and v <= high
  if not ok or v != v:
    bracket = "(" if low_open else "["
    raise ValueError(f"{owner}({name}={value!r}): {name} must be in {bracket}{low}, {high}]")
  return v


def resolve_config(cls, config, overrides, who):
  """`config` (None, an instance or its dict) with `overrides` applied, as a `cls`."""
  if config is None:
    config = cls()
  elif isinstance(config, dict):
    config = cls.from_config(config)
  elif not isinstance(config, cls):
    raise TypeError(f"{who}(config={config!r}) must be a {cls.__name__} (or its get_config() dict)")
  if overrides:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
      raise ValueError(f"{who}() got unknown settings {unknown}; {cls.__name__} has {sorted(known)}")
    config = dataclasses.replace(config, **overrides)
  return config


def history_entry(step, new, candidates, best, seconds, elapsed, top_k=5, **extra):
  """One `SearchResult.history` row in the common format (see `SearchResult`)."""
  top = result_lib.rank(candidates)[:top_k]
  row = {"generation": int(step), "new_candidates": int(new), "evaluations": len(candidates),
         "best_accuracy": float(best.accuracy), "mean_top_k_accuracy": float(np.mean([c.accuracy for c in top])),
         "best_mflops": float(best.mflops), "seconds": float(seconds), "elapsed_seconds": float(elapsed)}
  row.update(extra)
  return row


def check_run_identity(output_dir, identity, what):
  """Writes `identity` to `output_dir/identity.json`, or checks it against the one there.

  Keeps a rerun from loading weights trained with other settings (an
  `io.StateFile` whose payload is empty).

  Raises:
    ValueError: if `output_dir` holds the files of another run.
  """
  state = io_lib.StateFile(os.path.join(output_dir, "identity.json"), "tf_metaprune.RunIdentity", identity,
                           what=f"{what} identity")
  if state.load() is None:
    os.makedirs(output_dir, exist_ok=True)
    state.save()
