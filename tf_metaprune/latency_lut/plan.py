"""The plan of a table: which one-layer models to time for a space, and how their timings become entries
(grid, folding of width-only ops into the layer that sets their width, interpolation)."""

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tf_metaprune import budgets as budgets_lib
from tf_metaprune import ops
from tf_metaprune import space as space_lib
from tf_metaprune.latency_lut.tables import LayerSignature
from tf_metaprune.latency_lut.tables import MeasuredLatencyTable
from tflite_export.convert import QUANTIZATION_MODES

@dataclasses.dataclass
class _NodePlan:
  name: str
  template: LayerSignature            # cin/cout filled per grid point
  pairs: List[Tuple[int, int]]        # required (cin, cout), LatencyTable.required_keys order
  diagonal: bool                      # cin == cout always (dwconv, conv reading its own gene)
  cin_grid: List[int]
  cout_grid: List[int]
  folded: List[Tuple[str, LayerSignature]]  # (node name, template): adds / pools of this node's width

  def grid_signatures(self) -> List[LayerSignature]:
    if self.diagonal:
      points = [(c, c) for c in self.cin_grid]
    else:
      points = [(ci, co) for ci in self.cin_grid for co in self.cout_grid]
    sigs = [dataclasses.replace(self.template, cin=ci, cout=co) for ci, co in points]
    for _, extra in self.folded:
      sigs += [dataclasses.replace(extra, cin=c, cout=c) for c in self.cout_grid]
    return sigs


@dataclasses.dataclass
class _Plan:
  """What to time for a space, and how the timings become a table."""
  fingerprint: str
  nodes: List[_NodePlan]
  fixed_extras: List[Tuple[str, LayerSignature]]  # adds/pools of fixed width -> overhead
  input_shape: Tuple[int, int, int]
  grid_size: Optional[int]

  def signatures(self) -> List[LayerSignature]:
    """Unique one-layer models to time, in a stable order."""
    seen = {}
    for node in self.nodes:
      for sig in node.grid_signatures():
        seen.setdefault(sig.name, sig)
    for _, sig in self.fixed_extras:
      seen.setdefault(sig.name, sig)
    return list(seen.values())


def _grid(values: Sequence[int], grid_size: Optional[int]) -> List[int]:
  """At most `grid_size` of the sorted `values`, evenly spaced, ends included."""
  values = sorted(set(int(v) for v in values))
  if grid_size is None or len(values) <= grid_size:
    return values
  index = np.unique(np.round(np.linspace(0, len(values) - 1, grid_size)).astype(int))
  return [values[i] for i in index]


def _plan(space: space_lib.SearchSpace, grid_size: Optional[int]) -> _Plan:
  """Works out the one-layer models of `space` and the grid of each node."""
  if grid_size is not None and (isinstance(grid_size, bool) or not isinstance(grid_size, (int, np.integer))
                                or grid_size < 2):
    raise ValueError(f"grid_size={grid_size!r} must be an int >= 2 (channel counts per axis to measure; "
                     "the rest are interpolated) or None (measure every pair)")
  required = budgets_lib.LatencyTable.required_keys(space)
  by_name = space.node_by_name
  # Width-only ops ("folded"): timed per width, added to the table node that sets that width.
  folded: Dict[str, List[Tuple[str, LayerSignature]]] = {name: [] for name in required}
  fixed_extras = []
  for node in space.nodes:
    op = ops.get(node.op)
    if node.name in required or op.latency_kind(space, node) != "folded":
      continue
    c = space.max_channels(node.name)
    extra = LayerSignature(**{**op.latency_signature(space, node), "cin": c, "cout": c})
    owner = node.inputs[-1]
    # Walk back to the node that sets this width: through one-input ops and other folded ones.
    while owner not in required and by_name[owner].inputs and (
        _is_folded(space, by_name[owner]) or not ops.get(by_name[owner].op).multi_input):
      owner = by_name[owner].inputs[-1]
    if owner in required and node.name in space.source and space.source.get(owner) == space.source[node.name]:
      folded[owner].append((node.name, extra))
    else:  # fed by the input (fixed width), or of several widths: a constant at full width
      fixed_extras.append((node.name, extra))

  nodes = []
  for name, pairs in required.items():
    node = by_name[name]
    template = LayerSignature(**{**ops.get(node.op).latency_signature(space, node), "cin": 0, "cout": 0})
    diagonal = all(ci == co for ci, co in pairs) and space.layout[node.inputs[0]] == space.layout[name]
    cin_grid = _grid([ci for ci, _ in pairs], grid_size)
    cout_grid = cin_grid if diagonal else _grid([co for _, co in pairs], grid_size)
    nodes.append(_NodePlan(name, template, list(pairs), diagonal, cin_grid, cout_grid, folded[name]))
  return _Plan(space.fingerprint(), nodes, fixed_extras, tuple(space.input_shape), grid_size)


def _is_folded(space, node):
  return ops.get(node.op).latency_kind(space, node) == "folded"


def _interp_1d(grid: Sequence[int], values: np.ndarray, x: int) -> float:
  if len(grid) == 1:
    return float(values[0])
  return float(np.interp(x, grid, values))


def _interp_2d(cin_grid, cout_grid, values: np.ndarray, ci: int, co: int) -> float:
  """Bilinear interpolation of values[len(cin_grid), len(cout_grid)] at (ci, co)."""
  rows = np.array([_interp_1d(cout_grid, values[i], co) for i in range(len(cin_grid))])
  return _interp_1d(cin_grid, rows, ci)


def layer_signatures(space: space_lib.SearchSpace, grid_size: Optional[int] = 6) -> List[LayerSignature]:
  """The one-layer models a table of `space` needs timed (each signature once).

  Args:
    space: the `SearchSpace`.
    grid_size: as in `measure_latency_table`.

  Returns:
    `LayerSignature`s in a stable order; `sig.build_model()` gives the Keras
    model, `sig.name` the key `table_from_timings` expects.
  """
  _check_space(space)
  return _plan(space, grid_size).signatures()


def table_from_timings(
    space: space_lib.SearchSpace,
    layer_ms: Dict[str, float],
    empty_ms: float,
    overhead_model_ms: float,
    grid_size: Optional[int] = 6,
    device: str = "unknown",
    measurement: Optional[Dict[str, Any]] = None,
    calibrate: bool = True,
) -> MeasuredLatencyTable:
  """Builds a table from timings of the one-layer models, however they were taken.

  Entry = (timing - `empty_ms`) of the node's conv/dense model plus that of
  every add/pool folded into it, on the grid; bilinear (linear for
  depthwise) interpolation in between; clipped at 0. `overhead_ms` =
  `overhead_model_ms` plus adds/pools of fixed width.

  Args:
    space: the `SearchSpace`.
    layer_ms: {`LayerSignature.name`: ms} for every signature of
      `layer_signatures(space, grid_size)` (extra keys are ignored).
    empty_ms: time of the empty model (one ReLU on 1x1x1): the per-invoke
      cost inside every one-layer timing.
    overhead_model_ms: time of the empty model at the network input shape,
      with the exported model's input/output types.
    grid_size: the grid the signatures were planned with.
    device: where the timings were taken.
    measurement: extra facts for the `"measurement"` record. With its
      `reference_ms` and `reference_structure` (a whole model timed with the
      layers) and `calibrate`, the overhead is corrected so that the table
      predicts the reference exactly: the layers' excess cost when timed alone
      is the same for every structure (`"reference_correction_ms"`).
    calibrate: apply that correction (False: the raw sum of the layers).

  Returns:
    A `MeasuredLatencyTable` covering `LatencyTable.required_keys(space)`.

  Raises:
    ValueError: if a signature has no timing, or a timing is not finite.
  """
  _check_space(space)
  plan = _plan(space, grid_size)
  for name, ms in list(layer_ms.items()) + [("empty_ms", empty_ms), ("overhead_model_ms", overhead_model_ms)]:
    if not np.isfinite(ms) or ms < 0:
      raise ValueError(f"timing {name}={ms!r} ms must be finite and >= 0")
  missing = [sig.name for sig in plan.signatures() if sig.name not in layer_ms]
  if missing:
    raise ValueError(f"no timing for {len(missing)} one-layer models, e.g. {missing[:3]}; time every model "
                     "of layer_signatures(space, grid_size) (write_layer_models lists them in its manifest)")

  def net(sig):
    return layer_ms[sig.name] - empty_ms

  entries, records = {}, {}
  for node in plan.nodes:
    if node.diagonal:
      grid = np.array([net(dataclasses.replace(node.template, cin=c, cout=c)) for c in node.cin_grid])
    else:
      grid = np.array([[net(dataclasses.replace(node.template, cin=ci, cout=co)) for co in node.cout_grid]
                       for ci in node.cin_grid])
    extras = [np.array([net(dataclasses.replace(extra, cin=c, cout=c)) for c in node.cout_grid])
              for _, extra in node.folded]
    table, measured, interpolated = {}, [], []
    for ci, co in node.pairs:
      if node.diagonal:
        ms = _interp_1d(node.cin_grid, grid, ci)
        on_grid = ci in node.cin_grid
      else:
        ms = _interp_2d(node.cin_grid, node.cout_grid, grid, ci, co)
        on_grid = ci in node.cin_grid and co in node.cout_grid
      ms += sum(_interp_1d(node.cout_grid, e, co) for e in extras)
      key = f"{ci},{co}"
      table[key] = max(0.0, float(ms))
      (measured if on_grid else interpolated).append(key)
    entries[node.name] = table
    records[node.name] = {
        "signature": dataclasses.replace(node.template, cin=0, cout=0).get_config(),
        "diagonal": node.diagonal, "cin_grid": node.cin_grid, "cout_grid": node.cout_grid,
        "folded": [name for name, _ in node.folded], "measured": measured, "interpolated": interpolated}
  fixed_ms = sum(max(0.0, net(sig)) for _, sig in plan.fixed_extras)
  overhead_ms = max(0.0, overhead_model_ms) + fixed_ms
  measurement = dict(measurement or {})
  measurement.update({
      "grid_size": plan.grid_size, "num_layer_models": len(plan.signatures()),
      "empty_ms": empty_ms, "overhead_model_ms": overhead_model_ms,
      "fixed_width_extras": {name: sig.name for name, sig in plan.fixed_extras},
      "num_measured_entries": sum(len(r["measured"]) for r in records.values()),
      "num_interpolated_entries": sum(len(r["interpolated"]) for r in records.values()),
      "layer_ms": dict(sorted(layer_ms.items())), "nodes": records})
  table = MeasuredLatencyTable(plan.fingerprint, entries, overhead_ms=overhead_ms, device=device,
                               measurement=measurement)
  table.validate(space)
  reference_ms, reference = measurement.get("reference_ms"), measurement.get("reference_structure")
  if calibrate and reference_ms is not None and reference is not None:
    # A one-layer model costs a little more than its layer inside a whole model (measured on this host:
    # about 0.1 us a layer, 7-8 us over a MobileNetV2's 60-90 layers, a third of its 21 us). Every
    # structure of a space has the same layers, so that excess is one constant: the whole reference model,
    # timed with the layers, fixes it, and it moves into the overhead.
    correction = reference_ms - table.predict_ms(space, space.validate(reference))
    table.overhead_ms = max(0.0, overhead_ms + correction)
    table.measurement.update({"uncalibrated_overhead_ms": overhead_ms, "reference_correction_ms": correction})
  return table


def _check_quantization(quantization):
  if quantization not in QUANTIZATION_MODES:
    raise ValueError(f"quantization={quantization!r} is not supported; use one of "
                     f"{', '.join(repr(m) for m in QUANTIZATION_MODES)} (the format the model "
                     "will ship in: a table is only valid for one format)")


def _check_space(space):
  if not isinstance(space, space_lib.SearchSpace):
    raise TypeError(f"expected a tf_metaprune.SearchSpace, got {type(space).__name__}")

