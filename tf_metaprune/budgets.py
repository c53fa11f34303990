"""Budgets: the constraints a searched structure must meet (FLOPs, params, latency).

A budget answers one question -- may this structure be a candidate? -- in two
ways that agree: `is_feasible(space, structure)` in Python for one structure,
and `is_feasible_tensor(counter, choices)` as TensorFlow ops for a whole
population `[P, num_genes]` inside `tf.function` (the evolutionary search
rejects infeasible candidates where it creates them, MetaPruning Sec. 3.3:
"hard rejection"). `check(space)` fails at once, before any search work, when
not even the smallest structure of the space fits.

Budgets are small config objects: `get_config()` returns a JSON-able dict
that names its class, `budget_from_config(config)` rebuilds any of them, so a
search's budget is stored beside its result and its resumable state.

Latency budgets read a lookup table (LUT): the latency of a network is
predicted as a constant overhead plus the sum, over its layers, of the
measured latency of that layer at its (input channels, output channels)
(MetaPruning Sec. 4.3; the LUTs of AMC/NetAdapt). `LatencyTable` is that
table as a JSON file; `tflite_export` measures one for a device.

Example:

  >>> space = tf_metaprune.models.mobilenet_v2((28, 28, 1), 10, width_multiplier=0.35)
  >>> budget = FlopsBudget.from_ratio(space, 0.5)          # half the full FLOPs
  >>> budget.check(space)                                    # raises if impossible
  >>> budget.is_feasible(space, space.uniform(0.5))
  True
  >>> both = AllOf(budget, ParamsBudget(max_params=200_000))
  >>> budget_from_config(both.get_config()).get_config() == both.get_config()
  True
"""

import json
import math
from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf

from tf_metaprune import flops
from tf_metaprune import io as io_lib
from tf_metaprune import ops
from tf_metaprune import space as space_lib

_TABLE_FORMAT = "tf_metaprune.LatencyTable"

# The in-graph methods hold no tensor-dependent Python control flow; without
# this, autograph would convert every Python helper they call (table lookups,
# validation), which made tracing a latency budget take seconds.
_graph_method = tf.autograph.experimental.do_not_convert


def _check_number(owner, name, value, allow_none=False, allow_zero=False):
  """Returns `value` as a float, or raises ValueError quoting it."""
  if value is None and allow_none:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    raise ValueError(f"{owner}({name}={value!r}): {name} must be a number")
  value = float(value)
  if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"{owner}({name}={value!r}): {name} must be finite and {bound}")
  return value


def _fmt(value):
  return f"{value:.6g}"


def _counter_of(counter_or_space):
  """A `flops.SpaceCounter` for a counter (returned as is) or a `SearchSpace`."""
  if isinstance(counter_or_space, flops.SpaceCounter):
    return counter_or_space
  if isinstance(counter_or_space, space_lib.SearchSpace):
    return flops.SpaceCounter(counter_or_space)
  raise TypeError(f"expected a SearchSpace or a flops.SpaceCounter, got {type(counter_or_space).__name__}")


class Budget:
  """Base class of budgets. Subclasses define the methods below.

  A budget must be a pure function of the structure: the same structure is
  always feasible or always not (the search caches on it).
  """

  def is_feasible(self, space, structure) -> bool:
    """Whether `structure` of `space` meets the budget."""
    raise NotImplementedError

  @_graph_method
  def is_feasible_tensor(self, counter, choices):
    """bool tensor [P]: which rows of int32 `choices` [P, num_genes] meet the budget.

    Args:
      counter: a `flops.SpaceCounter` (reuse one inside `tf.function`) or the
        `SearchSpace`.
      choices: int32 tensor [P, num_genes] (or [num_genes], giving a scalar).
    """
    raise NotImplementedError

  def check(self, space) -> None:
    """Raises ValueError if no structure of `space` can meet the budget."""
    raise NotImplementedError

  def get_config(self) -> Dict[str, Any]:
    raise NotImplementedError

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    name = config.pop("class_name", cls.__name__)
    if name != cls.__name__:
      raise ValueError(f"{cls.__name__}.from_config got a config of class_name={name!r}; "
                       "use tf_metaprune.budgets.budget_from_config to rebuild any budget")
    return cls(**config)

  def leaves(self):
    """The single budgets this budget is made of (itself, or an `AllOf`'s parts)."""
    return [self]

  def __eq__(self, other):
    return isinstance(other, Budget) and other.get_config() == self.get_config()

  def __hash__(self):
    return hash(json.dumps(self.get_config(), sort_keys=True))

  def __repr__(self):
    # Floats to 6 significant digits: a ratio of the full width reads min_mflops=0.252644, not 0.25264440000000005.
    args = ", ".join(f"{k}={float(f'{v:.6g}')!r}" if isinstance(v, float) else f"{k}={v!r}"
                     for k, v in self.get_config().items()
                     if k != "class_name" and v is not None and k != "lut")
    return f"{type(self).__name__}({args})"


class _RangeBudget(Budget):
  """A budget `min_value <= value(structure) <= max_value` on one counted quantity.

  Subclasses set `_max_name`, `_min_name`, `_unit` and define `value` and
  `value_tensor`.
  """

  _max_name = "max"
  _min_name = "min"
  _unit = ""

  def __init__(self, max_value, min_value=None):
    owner = type(self).__name__
    self._max = _check_number(owner, self._max_name, max_value)
    self._min = _check_number(owner, self._min_name, min_value, allow_none=True, allow_zero=True)
    if self._min is not None and self._min > self._max:
      raise ValueError(f"{owner}({self._max_name}={max_value!r}, {self._min_name}={min_value!r}): "
                       f"{self._min_name} is above {self._max_name}; swap them or drop {self._min_name}")

  def value(self, space, structure) -> float:
    """The constrained quantity of one structure (MFLOPs, params, ms)."""
    raise NotImplementedError

  @_graph_method
  def value_tensor(self, counter, choices):
    """The constrained quantity as a float64 tensor, one per row of `choices`."""
    raise NotImplementedError

  def is_feasible(self, space, structure) -> bool:
    v = self.value(space, structure)
    return bool(v <= self._max and (self._min is None or v >= self._min))

  @_graph_method
  def is_feasible_tensor(self, counter, choices):
    v = self.value_tensor(counter, choices)
    ok = tf.less_equal(v, tf.constant(self._max, tf.float64))
    if self._min is not None:
      ok = tf.logical_and(ok, tf.greater_equal(v, tf.constant(self._min, tf.float64)))
    return ok

  def _extreme_structures(self, space):
    """(structures whose minimum bounds the smallest value, same for the largest)."""
    return [space.smallest()], [space.largest()]

  def check(self, space) -> None:
    smallest, largest = self._extreme_structures(space)
    low = min(self.value(space, s) for s in smallest)
    if low > self._max:
      raise ValueError(
          f"{self!r} is below the smallest structure in this space ({_fmt(low)}{self._unit}); "
          "raise the budget or widen the width choices")
    if self._min is not None:
      high = max(self.value(space, s) for s in largest)
      if high < self._min:
        raise ValueError(
            f"{self!r} asks for at least {_fmt(self._min)}{self._unit}, above the largest structure in "
            f"this space ({_fmt(high)}{self._unit}); lower {self._min_name} or drop it")

  def get_config(self):
    return {"class_name": type(self).__name__, self._max_name: self._max, self._min_name: self._min}


class FlopsBudget(_RangeBudget):
  """At most `max_mflops` (and at least `min_mflops`) millions of multiply-adds.

  FLOPs follow the papers' convention (multiply-adds of convs and dense layers
  for one image, `SearchSpace.mflops`); the in-graph check uses the same term
  table (`flops.SpaceCounter`), so both agree exactly.

  Args:
    max_mflops: the upper bound, in millions of multiply-adds.
    min_mflops: optional lower bound (keeps the search near the budget, as the
      reference's FLOPs window does); None for no lower bound.

  Raises:
    ValueError: for a non-positive or non-finite bound, or min above max.

  Example:

    >>> FlopsBudget(max_mflops=6.0).is_feasible(space, space.uniform(0.5))
  """

  _max_name = "max_mflops"
  _min_name = "min_mflops"
  _unit = " MFLOPs"

  def __init__(self, max_mflops, min_mflops=None):
    super().__init__(max_mflops, min_mflops)

  @property
  def max_mflops(self) -> float:
    return self._max

  @property
  def min_mflops(self) -> Optional[float]:
    return self._min

  @classmethod
  def from_ratio(cls, space, ratio, min_ratio=None):
    """A budget of `ratio` times the full-width (largest structure's) MFLOPs.

    Args:
      space: the `SearchSpace`.
      ratio: fraction of the full FLOPs, in (0, 1], e.g. 0.5.
      min_ratio: optional lower bound as a fraction.

    Raises:
      ValueError: if a ratio is outside (0, 1].
    """
    for name, r in (("ratio", ratio), ("min_ratio", min_ratio)):
      if r is None and name == "min_ratio":
        continue
      if isinstance(r, bool) or not isinstance(r, (int, float, np.integer, np.floating)) or not 0 < r <= 1:
        raise ValueError(f"FlopsBudget.from_ratio({name}={r!r}): {name} must be in (0, 1], a fraction of "
                         "the full-width FLOPs (0.5 = half)")
    full = space.mflops(space.largest())
    return cls(max_mflops=float(ratio) * full,
               min_mflops=None if min_ratio is None else float(min_ratio) * full)

  def value(self, space, structure) -> float:
    return space.mflops(structure)

  @_graph_method
  def value_tensor(self, counter, choices):
    return _counter_of(counter).mflops(choices)

  @_graph_method
  def is_feasible_tensor(self, counter, choices):
    # Compare exact integer multiply-adds, not MFLOPs: inside tf.function
    # Grappler rewrites `/ 1e6` as `* 1e-6`, which can move MFLOPs by one ulp
    # and flip a structure lying exactly on the budget. The integer thresholds
    # below accept exactly the counts whose `count / 1e6` passes `is_feasible`.
    count = _counter_of(counter).flops(choices)
    ok = tf.less_equal(count, tf.constant(float(_largest_count_within(self._max)), tf.float64))
    if self._min is not None:
      ok = tf.logical_and(ok, tf.greater_equal(count, tf.constant(float(_smallest_count_from(self._min)),
                                                                 tf.float64)))
    return ok


def _largest_count_within(max_mflops):
  """The largest integer n with n / 1e6 <= max_mflops (as Python computes it)."""
  n = math.floor(max_mflops * 1e6)
  while (n + 1) / 1e6 <= max_mflops:
    n += 1
  while n / 1e6 > max_mflops:
    n -= 1
  return n


def _smallest_count_from(min_mflops):
  """The smallest integer n with n / 1e6 >= min_mflops."""
  n = math.ceil(min_mflops * 1e6)
  while (n - 1) / 1e6 >= min_mflops:
    n -= 1
  while n / 1e6 < min_mflops:
    n += 1
  return n


class ParamsBudget(_RangeBudget):
  """At most `max_params` (and at least `min_params`) weights in the rebuilt model.

  Parameters are counted like `keras.Model.count_params()` of the rebuilt
  plain model (`SearchSpace.params`).

  Args:
    max_params: upper bound on the number of weights.
    min_params: optional lower bound.

  Example:

    >>> ParamsBudget(max_params=100_000).check(space)
  """

  _max_name = "max_params"
  _min_name = "min_params"
  _unit = " params"

  def __init__(self, max_params, min_params=None):
    super().__init__(max_params, min_params)

  @property
  def max_params(self) -> float:
    return self._max

  @property
  def min_params(self) -> Optional[float]:
    return self._min

  def value(self, space, structure) -> float:
    return float(space.params(structure))

  @_graph_method
  def value_tensor(self, counter, choices):
    return _counter_of(counter).params(choices)


# ---------------------------------------------------------------------------------------------
# Latency lookup tables.


def _table_key(cin, cout):
  return f"{int(cin)},{int(cout)}"


class LatencyTable:
  """Per-layer latency lookup table: predicted ms = overhead + sum over layers.

  The idea (NetAdapt, AMC, MetaPruning Sec. 4.3): on-device latency of a
  network of plain layers is close to the sum of each layer's latency measured
  alone at its channel counts. The table stores, for every node (layer) of a
  `SearchSpace` and every (input channels, output channels) it can take, the
  measured milliseconds; a structure's latency is `overhead_ms` plus the sum of
  the entries its nodes select. Nodes without an entry (adds, pooling) cost
  nothing beyond the overhead; every conv, depthwise conv and dense node must
  have one.

  The JSON format (`to_json`) is the contract with `tflite_export`:

    {"format": "tf_metaprune.LatencyTable", "version": 1,
     "space_fingerprint": "3f0c...", "device": "pixel7-xnnpack-1thread",
     "overhead_ms": 0.05,
     "entries": {"stem": {"8,16": 0.021, "8,24": 0.030, ...}, ...}}

  Keys are "<in_channels>,<out_channels>" (a depthwise conv has both equal).

  Args:
    space_fingerprint: `SearchSpace.fingerprint()` of the space the table was
      measured for (None: not checked).
    entries: {node name: {"cin,cout": ms}}.
    overhead_ms: constant added to every prediction (interpreter overhead,
      input/output copies).
    device: free-text description of where it was measured.

  Raises:
    ValueError: for a malformed entry (bad key or a negative/non-finite ms).

  Example:

    >>> table = LatencyTable.from_function(space, lambda node, cin, cout: 1e-4 * cin * cout)
    >>> table.predict_ms(space, space.uniform(0.5))
  """

  def __init__(self, space_fingerprint, entries, overhead_ms=0.0, device="unknown"):
    self.space_fingerprint = None if space_fingerprint is None else str(space_fingerprint)
    self.overhead_ms = _check_number("LatencyTable", "overhead_ms", overhead_ms, allow_zero=True)
    self.device = str(device)
    if not isinstance(entries, dict):
      raise ValueError(f"LatencyTable(entries=...) must be a dict {{node: {{'cin,cout': ms}}}}, "
                       f"got {type(entries).__name__}")
    self.entries = {}
    for node, table in entries.items():
      if not isinstance(table, dict):
        raise ValueError(f"LatencyTable entries[{node!r}] must be a dict {{'cin,cout': ms}}, got {table!r}")
      clean = {}
      for key, ms in table.items():
        parts = str(key).split(",")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
          raise ValueError(f"LatencyTable entries[{node!r}] has key {key!r}; keys are 'in_channels,out_channels' "
                           "such as '16,24'")
        clean[_table_key(parts[0], parts[1])] = _check_number(
            "LatencyTable", f"entries[{node!r}][{key!r}]", ms, allow_zero=True)
      self.entries[str(node)] = clean
    self._compiled = {}

  # ---- building ------------------------------------------------------------------------------
  @staticmethod
  def required_keys(space) -> Dict[str, list]:
    """{node name: [(cin, cout), ...]} every node with its own entries can take.

    The nodes whose op has `latency_role == "table"` in `tf_metaprune.ops`
    (conv, dwconv, sepconv, dense). An input concatenated from several widths
    takes every sum of their channel choices.
    """
    out = {}
    for node in space.nodes:
      if ops.get(node.op).latency_role != "table":
        continue
      out[node.name] = [(ci, co) for ci, co in _node_pairs(space, node)]
    return out

  @classmethod
  def from_function(cls, space, ms_fn, overhead_ms=0.0, device="unknown"):
    """Fills a table by calling `ms_fn(node, in_channels, out_channels) -> ms`.

    Args:
      space: the `SearchSpace`.
      ms_fn: called once per (node, cin, cout) of every conv, dwconv and dense
        node; `node` is the `space.Node`.
      overhead_ms, device: as in the constructor.
    """
    entries = {}
    for name, pairs in cls.required_keys(space).items():
      node = space.node_by_name[name]
      entries[name] = {_table_key(ci, co): float(ms_fn(node, ci, co)) for ci, co in pairs}
    return cls(space.fingerprint(), entries, overhead_ms=overhead_ms, device=device)

  # ---- checking ------------------------------------------------------------------------------
  def missing_entries(self, space):
    """[(node, "cin,cout"), ...] the space needs but the table lacks (empty = complete)."""
    missing = []
    for name, pairs in self.required_keys(space).items():
      table = self.entries.get(name, {})
      missing += [(name, _table_key(ci, co)) for ci, co in pairs if _table_key(ci, co) not in table]
    return missing

  def validate(self, space):
    """Raises ValueError if the table was made for another space or misses entries."""
    if self.space_fingerprint is not None and self.space_fingerprint != space.fingerprint():
      raise ValueError(
          f"this LatencyTable was measured for a space with fingerprint {self.space_fingerprint}, not for "
          f"{space.name!r} (fingerprint {space.fingerprint()}); measure a table for this space")
    unknown = sorted(set(self.entries) - set(space.node_by_name))
    if unknown:
      raise ValueError(f"LatencyTable has entries for nodes {unknown[:5]} that are not in space "
                       f"{space.name!r}; it belongs to another network")
    missing = self.missing_entries(space)
    if missing:
      raise ValueError(f"LatencyTable ({self.device}) lacks {len(missing)} entries the space {space.name!r} "
                       f"needs, e.g. {missing[:3]}; measure every (in, out) channel pair of every layer "
                       "(LatencyTable.required_keys(space) lists them)")

  # ---- predicting ----------------------------------------------------------------------------
  def predict_ms(self, space, structure) -> float:
    """Predicted latency in ms of `structure`: overhead + sum of its nodes' entries.

    Raises:
      ValueError: if an entry the structure needs is missing.
    """
    ch = space.node_channels(structure)
    total = self.overhead_ms
    for node in space.nodes:
      table = self.entries.get(node.name)
      if table is None or node.is_input:
        continue
      key = _table_key(ch[node.inputs[0]], ch[node.name])
      if key not in table:
        raise ValueError(f"LatencyTable has no entry {key!r} for node {node.name!r} (it has "
                         f"{sorted(table)[:6]}...); the table does not cover this space")
      total += table[key]
    return float(total)

  def _compile(self, space):
    """Flat float64 table + per-node (offset, in gene, out gene, ncols) for the in-graph lookup."""
    fp = space.fingerprint()
    if fp in self._compiled:
      return self._compiled[fp]
    self.validate(space)
    g = len(space.genes)
    flat, offsets, in_idx, out_idx, ncols = [], [], [], [], []
    for node in space.nodes:
      table = self.entries.get(node.name)
      if table is None or node.is_input:
        continue
      if node.inputs[0] not in space.source or node.name not in space.source:
        raise ValueError(f"node {node.name!r} reads or writes a concatenation of several widths, which the "
                         "in-graph latency lookup (predict_ms_tensor) does not index; predict_ms covers it, or "
                         "constrain this space with FlopsBudget or ParamsBudget")
      cin_src, cout_src = space.source[node.inputs[0]], space.source[node.name]
      cin_opts = _source_channels(space, cin_src)
      cout_opts = _source_channels(space, cout_src)
      same = cin_src == cout_src
      block = np.zeros((len(cin_opts), len(cout_opts)), np.float64)
      for i, ci in enumerate(cin_opts):
        for j, co in enumerate(cout_opts):
          if same and i != j:
            continue  # a node whose in and out share a gene only ever sees the diagonal
          key = _table_key(ci, co)
          if key not in table:
            raise ValueError(f"LatencyTable has no entry {key!r} for node {node.name!r}")
          block[i, j] = table[key]
      offsets.append(len(flat))
      flat.extend(block.reshape(-1).tolist())
      in_idx.append(cin_src[1] if cin_src[0] == "gene" else g)
      out_idx.append(cout_src[1] if cout_src[0] == "gene" else g)
      ncols.append(len(cout_opts))
    compiled = (np.array(flat, np.float64), np.array(offsets, np.int32), np.array(in_idx, np.int32),
                np.array(out_idx, np.int32), np.array(ncols, np.int32))
    self._compiled[fp] = compiled
    return compiled

  @_graph_method
  def predict_ms_tensor(self, space, choices):
    """Predicted ms as a float64 tensor, one per row of int32 `choices` [..., num_genes].

    A gather over each node's [in choices, out choices] block of the table:
    no Python per candidate, so it runs inside `tf.function` on a population.
    """
    flat, offsets, in_idx, out_idx, ncols = self._compile(space)
    choices = tf.convert_to_tensor(choices, tf.int32)
    ext = tf.concat([choices, tf.zeros_like(choices[..., :1])], axis=-1)  # index g: fixed width -> 0
    ci = tf.gather(ext, in_idx, axis=-1)
    co = tf.gather(ext, out_idx, axis=-1)
    index = offsets + ci * ncols + co
    return tf.constant(self.overhead_ms, tf.float64) + tf.reduce_sum(tf.gather(tf.constant(flat), index), -1)

  # ---- serialization -------------------------------------------------------------------------
  def get_config(self):
    return {"space_fingerprint": self.space_fingerprint, "entries": {n: dict(t) for n, t in self.entries.items()},
            "overhead_ms": self.overhead_ms, "device": self.device}

  @classmethod
  def from_config(cls, config):
    return cls(**config)

  def to_json(self) -> str:
    return json.dumps({"format": _TABLE_FORMAT, "version": 1, **self.get_config()}, indent=1)

  @classmethod
  def from_json(cls, text):
    try:
      data = json.loads(text)
    except (TypeError, ValueError) as e:
      raise ValueError(f"cannot parse LatencyTable JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != _TABLE_FORMAT:
      got = data.get("format") if isinstance(data, dict) else type(data).__name__
      raise ValueError(f"this JSON is not a tf_metaprune latency table (format={got!r}); "
                       "write tables with LatencyTable.to_json / save")
    if "entries" not in data:
      raise ValueError("this latency table has no 'entries'; it is truncated or damaged: measure it again")
    return cls(data.get("space_fingerprint"), data["entries"], data.get("overhead_ms", 0.0),
               data.get("device", "unknown"))

  def save(self, path):
    """Writes `to_json()` atomically to `path`."""
    io_lib.write_text_atomic(path, self.to_json() + "\n")

  @classmethod
  def load(cls, path):
    """Reads a table written by `save` (or `tflite_export`).

    Raises:
      ValueError: naming the file, if it is missing, not JSON, not a latency
        table, or has malformed entries. (A table of another space is caught
        by `validate(space)`, which every budget and search calls.)
    """
    text = io_lib.read_text(path, "latency table")
    try:
      return cls.from_json(text)
    except ValueError as e:
      raise ValueError(f"latency table {path!r}: {e}") from None
    except (KeyError, TypeError) as e:
      raise ValueError(f"latency table {path!r} is damaged ({type(e).__name__}: {e}); measure it again") from None

  def __eq__(self, other):
    return isinstance(other, LatencyTable) and other.get_config() == self.get_config()

  def __repr__(self):
    return f"LatencyTable(device={self.device!r}, nodes={len(self.entries)}, overhead_ms={self.overhead_ms})"


def _source_channels(space, source):
  kind, v = source
  return space.genes[v].channels if kind == "gene" else (v,)


def _layout_channels(space, layout):
  """Every channel count of a layout: a source's choices, or the sums of a concatenation's."""
  sums = {0}
  for source in layout:
    sums = {a + c for a in sums for c in _source_channels(space, source)}
  return tuple(sorted(sums))


def _node_pairs(space, node):
  cin_lay, cout_lay = space.layout[node.inputs[0]], space.layout[node.name]
  if cin_lay == cout_lay:
    return [(c, c) for c in _layout_channels(space, cin_lay)]
  return [(ci, co) for ci in _layout_channels(space, cin_lay) for co in _layout_channels(space, cout_lay)]


class LatencyBudget(_RangeBudget):
  """At most `max_ms` predicted milliseconds (and at least `min_ms`).

  Args:
    max_ms: upper bound on the predicted latency, in ms.
    lut: the predictor: a `LatencyTable`, or any object with
      `predict_ms(space, structure) -> float`. If it also has
      `predict_ms_tensor(space, choices) -> float64 [P]` the in-graph check is
      a pure TensorFlow computation; otherwise it calls `predict_ms` through
      `tf.numpy_function` (correct, but slower and not serializable into a
      SavedModel).
    min_ms: optional lower bound.

  Note: `check(space)` takes the fastest of the smallest structure and every
  uniform-width structure as "the smallest latency"; measured tables are
  nearly monotone in width, so this is the real minimum up to noise.

  Example:

    >>> table = LatencyTable.load("pixel7.json")
    >>> budget = LatencyBudget(max_ms=2.5, lut=table)
  """

  _max_name = "max_ms"
  _min_name = "min_ms"
  _unit = " ms"

  def __init__(self, max_ms, lut, min_ms=None):
    super().__init__(max_ms, min_ms)
    if isinstance(lut, dict):
      lut = _lut_from_config(lut)
    if not callable(getattr(lut, "predict_ms", None)):
      raise ValueError(f"LatencyBudget(lut={lut!r}): lut needs a predict_ms(space, structure) -> float "
                       "method; use a tf_metaprune.budgets.LatencyTable")
    self.lut = lut

  @property
  def max_ms(self) -> float:
    return self._max

  @property
  def min_ms(self) -> Optional[float]:
    return self._min

  def value(self, space, structure) -> float:
    return float(self.lut.predict_ms(space, structure))

  @_graph_method
  def value_tensor(self, counter, choices):
    space = _counter_of(counter).space
    if callable(getattr(self.lut, "predict_ms_tensor", None)):
      return self.lut.predict_ms_tensor(space, choices)
    choices = tf.convert_to_tensor(choices, tf.int32)

    def predict(rows):
      flat = rows.reshape(-1, rows.shape[-1])
      return np.array([self.lut.predict_ms(space, space_lib.Structure(r)) for r in flat],
                      np.float64).reshape(rows.shape[:-1])

    out = tf.numpy_function(predict, [choices], tf.float64, stateful=False)
    return tf.ensure_shape(out, choices.shape[:-1])

  def _extreme_structures(self, space):
    ratios = sorted({r for g in space.genes for r in g.width_ratios})
    uniform = [space.uniform(r) for r in ratios]
    return [space.smallest()] + uniform, [space.largest()] + uniform

  def check(self, space) -> None:
    if isinstance(self.lut, LatencyTable):
      self.lut.validate(space)
    super().check(space)

  def get_config(self):
    config = super().get_config()
    config["lut"] = _lut_config(self.lut)
    return config

  def __repr__(self):
    args = f"max_ms={self._max!r}" + ("" if self._min is None else f", min_ms={self._min!r}")
    return f"LatencyBudget({args}, lut={self.lut!r})"


def _lut_config(lut):
  if isinstance(lut, LatencyTable):
    return {"class_name": "LatencyTable", "config": lut.get_config()}
  get_config = getattr(lut, "get_config", None)
  return {"class_name": type(lut).__name__, "config": get_config() if callable(get_config) else None}


def _lut_from_config(config, custom_objects=None):
  name = config.get("class_name")
  if name == "LatencyTable":
    return LatencyTable.from_config(config["config"])
  cls = (custom_objects or {}).get(name)
  if cls is None or config.get("config") is None:
    raise ValueError(f"cannot rebuild a latency predictor of class {name!r} from its config; pass "
                     f"custom_objects={{{name!r}: {name}}} (it needs get_config/from_config), or use a LatencyTable")
  return cls.from_config(config["config"])


class AllOf(Budget):
  """Feasible when every one of `budgets` is (e.g. FLOPs and latency together).

  Args:
    *budgets: one or more budgets.

  Example:

    >>> AllOf(FlopsBudget(max_mflops=5.0), ParamsBudget(max_params=50_000))
  """

  def __init__(self, *budgets):
    if len(budgets) == 1 and isinstance(budgets[0], (list, tuple)):
      budgets = tuple(budgets[0])
    if not budgets:
      raise ValueError("AllOf() needs at least one budget, e.g. AllOf(FlopsBudget(max_mflops=5.0))")
    for b in budgets:
      if not isinstance(b, Budget):
        raise ValueError(f"AllOf got {b!r}, which is not a budget; pass FlopsBudget/ParamsBudget/LatencyBudget "
                         "objects")
    self.budgets = tuple(budgets)

  def is_feasible(self, space, structure) -> bool:
    return all(b.is_feasible(space, structure) for b in self.budgets)

  @_graph_method
  def is_feasible_tensor(self, counter, choices):
    counter = _counter_of(counter)
    masks = [b.is_feasible_tensor(counter, choices) for b in self.budgets]
    return tf.reduce_all(tf.stack(masks, axis=0), axis=0)

  def check(self, space) -> None:
    for b in self.budgets:
      b.check(space)

  def leaves(self):
    return [leaf for b in self.budgets for leaf in b.leaves()]

  def get_config(self):
    return {"class_name": "AllOf", "budgets": [b.get_config() for b in self.budgets]}

  @classmethod
  def from_config(cls, config, custom_objects=None):
    return cls(*[budget_from_config(c, custom_objects) for c in config["budgets"]])

  def __repr__(self):
    return "AllOf(" + ", ".join(repr(b) for b in self.budgets) + ")"


_BUDGETS = {"FlopsBudget": FlopsBudget, "ParamsBudget": ParamsBudget, "LatencyBudget": LatencyBudget,
            "AllOf": AllOf}


def budget_from_config(config, custom_objects=None) -> Budget:
  """Rebuilds any budget from its `get_config()` dict (dispatching on "class_name").

  Args:
    config: the dict (e.g. read back from a search result's JSON).
    custom_objects: {class name: class} for user-defined budgets or latency
      predictors (they need `from_config`).

  Raises:
    ValueError: for a config without a known "class_name".
  """
  if isinstance(config, Budget):
    return config
  if not isinstance(config, dict) or "class_name" not in config:
    raise ValueError(f"budget config {config!r} has no 'class_name'; pass the dict budget.get_config() returned")
  name = config["class_name"]
  custom_objects = dict(custom_objects or {})
  cls = custom_objects.get(name) or _BUDGETS.get(name)
  if cls is None:
    raise ValueError(f"unknown budget class_name={name!r}; known: {sorted(_BUDGETS)} (pass "
                     "custom_objects={name: cls} for your own)")
  body = {k: v for k, v in config.items() if k != "class_name"}
  if cls is AllOf:
    return AllOf.from_config(body, custom_objects)
  if cls is LatencyBudget:
    return LatencyBudget(body["max_ms"], _lut_from_config(body["lut"], custom_objects), body.get("min_ms"))
  return cls.from_config(body)


def latency_predictor(budget) -> Optional[Any]:
  """The latency predictor (lut) of the first `LatencyBudget` in `budget`, or None."""
  if budget is None:
    return None
  for leaf in budget.leaves():
    if isinstance(leaf, LatencyBudget):
      return leaf.lut
  return None


__all__ = ["AllOf", "Budget", "FlopsBudget", "LatencyBudget", "LatencyTable", "ParamsBudget",
           "budget_from_config", "latency_predictor"]
