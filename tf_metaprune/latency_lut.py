"""Measures a per-layer latency lookup table (LUT) for a search space (tf_metaprune.latency_lut).

The idea (NetAdapt, AMC; MetaPruning Sec. 4.3): a network of plain layers
takes about as long as the sum of its layers, each timed alone. So time every
layer of a `SearchSpace` once per (input channels, output channels) it can
take, store the milliseconds in a `tf_metaprune.budgets.LatencyTable`, and a
latency budget can score thousands of candidate structures without running
any of them:

  predicted_ms(structure) = overhead_ms + sum over layers of table[layer][cin, cout]

How each entry is measured
--------------------------

1. For every conv, depthwise conv and dense node (the keys of
   `LatencyTable.required_keys(space)`), build a one-layer Keras model that
   reproduces it at its input spatial size: Conv2D / DepthwiseConv2D ->
   BatchNormalization -> ReLU/ReLU6 exactly as `tf_metaprune.rebuild` makes
   it (the converter folds batch norm and the activation into the conv, as in
   the whole model); a dense node is GlobalAveragePooling2D -> Dense, so the
   pooling is timed too. Residual adds and max pools have no table entry of
   their own: their cost depends only on their width, which is the output
   width of the conv that feeds them, so it is timed separately and added to
   that conv's entries (an add or pool fed straight by the network input has
   a fixed width and goes into `overhead_ms`).
2. Convert it with `tflite_export.convert` in the table's number format
   (int8: calibrated on random images, with int8 input and output so no
   quantize/dequantize op is timed that the whole model does not run) and
   time `invoke()` with `tflite_export.benchmark`: the median of `num_runs`
   invokes, in `num_rounds` interleaved rounds over all models once they are
   all converted, keeping the fastest round (other jobs on the host slow
   whole stretches of time down).
3. Subtract the fixed per-invoke cost, measured on an "empty" model (one ReLU
   on a 1x1x1 tensor, same number format), and clip at 0.
4. `overhead_ms` is the empty model at the network's input shape with the
   exported model's float input and output (for int8 this includes the input
   quantize op): what one invoke of the whole model costs beyond its layers.

Layers with the same signature (op, kernel, stride, input size, activation,
cin, cout) are measured once: the blocks of a MobileNet stage share theirs.

Spaces read from a Keras model (`SearchSpace.from_keras_model`) are timed the
same way with the user's own layers: each conv, depthwise, separable and
dense layer is re-created from its config at (cin, cout) (a dense layer on its
flat input); pools, adds and upsampling are folded into the layer that sets
their width, walking back through batch norm, activations and padding, which
are not timed (the converter fuses batch norm, and usually the activation,
into the conv). A pool or add of a concatenation's several widths is timed
once at full width into `overhead_ms`. Which op is timed how is its
`latency_role` in `tf_metaprune.ops`.

Grid and interpolation
----------------------

A MobileNetV2 space has thousands of (cin, cout) pairs (3,518 for
`mobilenet_v2((32, 32, 1), 10, width_multiplier=0.35)`), so by default each
node is measured on a grid -- at most `grid_size` channel counts per axis,
evenly spaced over its choices and always including the smallest and largest
-- and the other pairs are interpolated bilinearly in (cin, cout) (linearly
in c for depthwise convs, whose cin equals cout). Conv time is close to
a + b*cin + c*cout + d*cin*cout, which bilinear interpolation reproduces
exactly. With the default `grid_size=6` that space needs 362 one-layer
models (about 3-4 minutes on 2 cores, nearly all of it conversion);
`grid_size=None` measures every pair (1,513 models). The
returned `MeasuredLatencyTable` records which keys were measured and which
interpolated, plus every raw timing, in the `"measurement"` block of its JSON
(`LatencyTable.load` ignores that block, so the file stays a plain table).

Measuring on a phone
--------------------

Host (x86) latency ranks structures, but budgets belong to the target device,
where int8 pays off. The same plan runs there:

  write_layer_models(space, "lut_int8", quantization="int8")  # ~365 files + manifest.json

then, in a shell (see tflite_export.benchmark's module docstring for getting
benchmark_model onto the phone):

  for f in lut_int8/*.tflite; do
    adb push "$f" /data/local/tmp/layer.tflite
    adb shell /data/local/tmp/benchmark_model --graph=/data/local/tmp/layer.tflite \\
        --num_threads=1 --num_runs=100 --warmup_runs=10 > "${f%.tflite}.txt" 2>&1
  done

and back in Python:

  table = latency_table_from_logs(space, "lut_int8", device="Pixel 7, 1 thread")
  table.save("pixel7_int8.json")

`latency_table_from_logs` reads each log with
`tflite_export.parse_benchmark_model_output` and assembles the table exactly
as `measure_latency_table` does (subtracting the empty model, folding adds,
interpolating). (Timed some other way, the numbers go through
`table_from_timings`; `layer_signatures` lists the models.) `profile_entries` maps
the per-operator profile of one whole model (`--enable_op_profiling=true`)
back to the layers of a structure, to check a table against a phone.

Example:

  import tf_metaprune as tfmp
  from tf_metaprune import latency_lut

  space = tfmp.models.mobilenet_v2((32, 32, 1), 10, width_multiplier=0.35)
  table = latency_lut.measure_latency_table(space, quantization="int8")
  table.save("host_int8.json")
  budget = tfmp.budgets.LatencyBudget(max_ms=0.8, lut=table)
  print(latency_lut.prediction_error(space, table, [space.uniform(0.5)]))

(This module was `tflite_export.latency_lut`; it lives on the tf_metaprune side
because it reads search spaces, while tflite_export only converts, quantizes
and times Keras models. `tflite_export.measure_latency_table` etc. still
resolve, for old callers.)
"""

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import sys
import time
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from tf_metaprune import budgets as budgets_lib
from tf_metaprune import io as io_lib
from tf_metaprune import ops
from tf_metaprune.rebuild import rebuild
from tf_metaprune import space as space_lib
# Not `from tflite_export import convert`: the package hands out the functions
# under the module names.
from tflite_export.benchmark import benchmark
from tflite_export.benchmark import device_description
from tflite_export.benchmark import HOST_NOTES
from tflite_export.benchmark import parse_benchmark_model_output
from tflite_export.benchmark import SOURCE_HOST
from tflite_export.convert import convert
from tflite_export.convert import QUANTIZATION_MODES
from tflite_export.convert import save

_TABLE_OPS = tuple(n for n in ops.names() if ops.get(n).latency_role == "table")
_FOLDED_OPS = tuple(n for n in ops.names() if ops.get(n).latency_role == "folded")
_MANIFEST = "manifest.json"
_MANIFEST_FORMAT = "tflite_export.LayerModels"
EMPTY_MODEL = "empty"
OVERHEAD_MODEL = "overhead"
REFERENCE_MODEL = "reference"

# Random calibration images per one-layer int8 model: ranges of random
# weights on random inputs; latency does not depend on them.
_NUM_CALIBRATION_IMAGES = 8
# Pause between the last conversion and the first timing (spinning TF threads).
_SETTLE_S = 0.5


@dataclasses.dataclass(frozen=True)
class LayerSignature:
  """Everything that decides one layer's latency: shape, op and widths.

  Attributes:
    op: "conv", "dwconv", "dense" (timed after global average pooling),
      "add" or "maxpool".
    in_hw: (height, width) of the layer's input (for "dense": of the pooled
      feature map).
    cin: input channels.
    cout: output channels (== cin for "dwconv", "add", "maxpool").
    kernel_size: conv / pool window.
    strides: conv / pool stride ("same" padding).
    activation: None, "relu" or "relu6", after batch norm (or after the add).
    bn: batch normalization after the conv (then the conv has no bias).
    num_inputs: inputs of an "add".
    layer: for a node of a space read by `SearchSpace.from_keras_model`, its
      serialized Keras layer (re-created at `cout`); None for the built-in
      families. `in_hw` (0, 0) means a flat (cin,) input.
  """
  op: str
  in_hw: Tuple[int, int]
  cin: int
  cout: int
  kernel_size: int = 1
  strides: int = 1
  activation: Optional[str] = None
  bn: bool = False
  num_inputs: int = 1
  layer: Optional[Dict[str, Any]] = dataclasses.field(default=None, hash=False)

  @property
  def name(self) -> str:
    """A readable id, also the file name stem of its `.tflite` model."""
    h, w = self.in_hw
    parts = [self.op, f"k{self.kernel_size}", f"s{self.strides}", f"{h}x{w}",
             f"{self.cin}to{self.cout}"]
    if self.bn:
      parts.append("bn")
    if self.activation:
      parts.append(self.activation)
    if self.num_inputs != 1:
      parts.append(f"in{self.num_inputs}")
    if self.layer is not None:  # the user's layer: its class and a hash of its settings
      blob = json.dumps(self.layer, sort_keys=True, default=str).encode()
      parts += [self.layer.get("class_name", "layer"), hashlib.sha256(blob).hexdigest()[:8]]
    return "_".join(parts)

  def build_model(self) -> keras.Model:
    """The one-layer Keras model of this signature (batch size 1 when converted): its op's `latency_model`."""
    return ops.get(self.op).latency_model(self)

  def get_config(self) -> Dict[str, Any]:
    config = dataclasses.asdict(self)
    config["in_hw"] = list(self.in_hw)
    if config["layer"] is None:
      del config["layer"]
    return config

  @classmethod
  def from_config(cls, config: Dict[str, Any]) -> "LayerSignature":
    return cls(**{**config, "in_hw": tuple(config["in_hw"])})


class MeasuredLatencyTable(budgets_lib.LatencyTable):
  """A `LatencyTable` that also records how it was measured.

  Behaves exactly like its base class (budgets, `predict_ms`, configs); its
  JSON adds a `"measurement"` block, which `LatencyTable.from_json` ignores:

    "measurement": {
      "method": "host_interpreter" | "benchmark_model_logs",
      "quantization": "int8", "num_threads": 1, "num_runs": 100,
      "grid_size": 6, "num_layer_models": 331,
      "empty_ms": 0.0021,          # per-invoke cost subtracted from every layer
      "overhead_model_ms": 0.0024, # the whole model's fixed cost (-> overhead_ms)
      "layer_ms": {"conv_k1_s1_8x8_16to48_bn_relu6": 0.0113, ...},  # raw medians
      "nodes": {"stage4_block2_expand": {
          "signature": {...}, "cin_grid": [...], "cout_grid": [...],
          "diagonal": false, "folded": ["stage4_block2_add"],
          "measured": ["16,16", ...], "interpolated": ["16,24", ...]}, ...}}

  Attributes:
    measurement: that block as a dict.
  """

  def __init__(self, space_fingerprint, entries, overhead_ms=0.0, device="unknown", measurement=None):
    super().__init__(space_fingerprint, entries, overhead_ms=overhead_ms, device=device)
    self.measurement = dict(measurement or {})

  def is_measured(self, node_name: str, cin: int, cout: int) -> bool:
    """Whether entry (cin, cout) of a node was timed (True) or interpolated (False)."""
    node = self.measurement.get("nodes", {}).get(node_name)
    if node is None:
      raise KeyError(f"node {node_name!r} has no measurement record; nodes: "
                     f"{sorted(self.measurement.get('nodes', {}))[:5]}...")
    return f"{int(cin)},{int(cout)}" in node["measured"]

  def to_json(self) -> str:
    data = json.loads(super().to_json())
    data["measurement"] = self.measurement
    return json.dumps(data, indent=1)

  @classmethod
  def from_json(cls, text):
    table = budgets_lib.LatencyTable.from_json(text)
    measurement = json.loads(text).get("measurement")
    return cls(table.space_fingerprint, table.entries, table.overhead_ms, table.device, measurement)

  def __repr__(self):
    return (f"MeasuredLatencyTable(device={self.device!r}, nodes={len(self.entries)}, "
            f"overhead_ms={self.overhead_ms:.4f}, "
            f"layer_models={self.measurement.get('num_layer_models')})")


# ---- the plan: which one-layer models to time, and how to fill the table ------------------


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
  # Adds and max pools: folded into the conv/dwconv that sets their width.
  folded: Dict[str, List[Tuple[str, LayerSignature]]] = {name: [] for name in required}
  fixed_extras = []
  for node in space.nodes:
    if node.op not in _FOLDED_OPS:
      continue
    c = space.max_channels(node.name)
    extra = LayerSignature(op=node.op, in_hw=tuple(space.in_spatial[node.name]), cin=c, cout=c,
                           kernel_size=node.kernel_size if node.op == "maxpool" else 1,
                           strides=node.strides if node.op in ("maxpool", "upsample") else 1,
                           activation=node.activation if node.op == "add" else None,
                           num_inputs=len(node.inputs) if node.op == "add" else 1, layer=_layer_of(node))
    owner = node.inputs[-1]
    # Walk back to the node that sets this width: through folded ops and untimed one-input ops
    # (batch norm, activations, padding of a model read from Keras).
    while owner not in required and by_name[owner].op != "input" and (
        by_name[owner].op in _FOLDED_OPS or not ops.get(by_name[owner].op).multi_input):
      owner = by_name[owner].inputs[-1]
    if owner in required and node.name in space.source and space.source.get(owner) == space.source[node.name]:
      folded[owner].append((node.name, extra))
    else:  # fed by the input (fixed width), or of several widths: a constant at full width
      fixed_extras.append((node.name, extra))

  nodes = []
  for name, pairs in required.items():
    node = by_name[name]
    if node.layer is not None:  # the user's own layer at its input size (flat: in_hw (0, 0))
      in_hw = space.in_spatial[name]
      template = LayerSignature(op=node.op, in_hw=(0, 0) if in_hw is None else tuple(in_hw), cin=0, cout=0,
                                kernel_size=node.kernel_size, strides=node.strides, layer=_layer_of(node))
    elif node.op == "dense":
      gap = by_name[node.inputs[0]]
      in_hw = tuple(space.in_spatial[gap.name])
      template = LayerSignature(op="dense", in_hw=in_hw, cin=0, cout=0)
    else:
      template = LayerSignature(op=node.op, in_hw=tuple(space.in_spatial[name]), cin=0, cout=0,
                                kernel_size=node.kernel_size, strides=node.strides,
                                activation=node.activation, bn=node.bn)
    diagonal = all(ci == co for ci, co in pairs) and space.layout[node.inputs[0]] == space.layout[name]
    cin_grid = _grid([ci for ci, _ in pairs], grid_size)
    cout_grid = cin_grid if diagonal else _grid([co for _, co in pairs], grid_size)
    nodes.append(_NodePlan(name, template, list(pairs), diagonal, cin_grid, cout_grid, folded[name]))
  return _Plan(space.fingerprint(), nodes, fixed_extras, tuple(space.input_shape), grid_size)


def _layer_of(node):
  """A node's serialized Keras layer without its name (identical layers share a timing), or None."""
  if node.layer is None:
    return None
  layer = {**node.layer, "config": {k: v for k, v in node.layer["config"].items() if k != "name"}}
  return layer


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
    measurement: extra facts for the `"measurement"` record.

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
  return table


# ---- converting the one-layer models -------------------------------------------------------


def _convert(model: keras.Model, quantization: str, int8_io: bool, rng: np.random.Generator) -> bytes:
  if quantization != "int8":
    return convert(model, quantization)
  inputs = model.inputs
  if len(inputs) == 1:
    shape = (_NUM_CALIBRATION_IMAGES,) + tuple(inputs[0].shape[1:])
    data = rng.random(shape, dtype=np.float32)
    return convert(model, "int8", representative_data=data, num_calibration_batches=1,
                               int8_io=int8_io)
  # Several inputs (an add): convert() calibrates single-input models only.
  return _convert_multi_input_int8(model, rng, int8_io)


def _convert_multi_input_int8(model, rng, int8_io):
  shapes = [(1,) + tuple(t.shape[1:]) for t in model.inputs]

  def representative():
    for _ in range(_NUM_CALIBRATION_IMAGES):
      yield [rng.random(s, dtype=np.float32) for s in shapes]

  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = representative
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  if int8_io:
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
  return _quiet_convert(converter)


def _quiet_convert(converter):
  with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
    warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
    return converter.convert()


def _empty_model(input_shape) -> keras.Model:
  x = keras.Input(tuple(input_shape))
  return keras.Model(x, keras.layers.ReLU()(x), name="empty")


def _check_quantization(quantization):
  if quantization not in QUANTIZATION_MODES:
    raise ValueError(f"quantization={quantization!r} is not supported; use one of "
                     f"{', '.join(repr(m) for m in QUANTIZATION_MODES)} (the format the model "
                     "will ship in: a table is only valid for one format)")


def _check_space(space):
  if not isinstance(space, space_lib.SearchSpace):
    raise TypeError(f"expected a tf_metaprune.SearchSpace, got {type(space).__name__}")


class _Progress:
  """Prints 'k/n <what> (elapsed, ~left)' to stderr, at most every 10 s and at the end."""

  def __init__(self, total, enabled, what, interval_s=10.0):
    self.total, self.enabled, self.what, self.interval_s = total, enabled, what, interval_s
    self.start = self.last = time.monotonic()

  def update(self, done):
    now = time.monotonic()
    if not self.enabled or (now - self.last < self.interval_s and done != self.total):
      return
    self.last = now
    elapsed = now - self.start
    left = elapsed / done * (self.total - done) if done else float("nan")
    print(f"[latency table] {done}/{self.total} {self.what} ({elapsed:.0f} s, ~{left:.0f} s left)",
          file=sys.stderr, flush=True)


# ---- host measurement ----------------------------------------------------------------------


def _whole_model_flatbuffer(space, structure, quantization, rng, representative_data=None) -> bytes:
  """The rebuilt structure converted as it would be exported (float input/output)."""
  model = rebuild(space, structure)
  if quantization != "int8":
    return convert(model, quantization)
  if representative_data is None:
    representative_data = rng.random((32,) + tuple(space.input_shape), dtype=np.float32)
  return convert(model, "int8", representative_data=representative_data)


def _convert_plan(space, plan: _Plan, quantization: str, seed: int, progress: bool) -> Dict[str, bytes]:
  """Converts every one-layer model of the plan, the empty models and the reference.

  Returns:
    {signature name, EMPTY_MODEL, OVERHEAD_MODEL or REFERENCE_MODEL: flatbuffer}.
  """
  rng = np.random.default_rng(seed)
  int8_io = quantization == "int8"
  signatures = plan.signatures()
  status = _Progress(len(signatures) + 3, progress, "models converted")
  todo = [(EMPTY_MODEL, lambda: _convert(_empty_model((1, 1, 1)), quantization, int8_io, rng)),
          # The exported model keeps float input and output (an int8 model quantizes its input).
          (OVERHEAD_MODEL, lambda: _convert(_empty_model(space.input_shape), quantization, False, rng)),
          (REFERENCE_MODEL, lambda: _whole_model_flatbuffer(space, _reference_structure(space), quantization,
                                                            rng))]
  todo += [(sig.name, lambda sig=sig: _convert(sig.build_model(), quantization, int8_io, rng))
           for sig in signatures]
  flatbuffers = {}
  for i, (name, make) in enumerate(todo):
    flatbuffers[name] = make()
    status.update(i + 1)
  return flatbuffers


def _reference_structure(space):
  return space.uniform(0.5)


class _Timer:
  """Times models in interleaved rounds; keeps each model's fastest round median.

  Conversion first, timing after: TensorFlow's thread pools keep spinning
  for a moment after a conversion, and timing right after one measured some
  layers up to ~50% slow. Every round times every model once, in a new
  shuffled order, so slow stretches caused by other jobs on the machine hit
  all models alike; the fastest of the rounds is kept.
  """

  def __init__(self, num_runs, num_warmup_runs, num_threads):
    self.kwargs = dict(num_runs=num_runs, num_warmup_runs=num_warmup_runs, num_threads=num_threads)

  def rounds(self, flatbuffers: Dict[Any, bytes], num_rounds: int, seed: int = 0,
             progress: bool = False) -> Dict[Any, float]:
    names = list(flatbuffers)
    rng = np.random.default_rng(seed)
    best = {name: float("inf") for name in names}
    status = _Progress(num_rounds * len(names), progress, "timings")
    time.sleep(_SETTLE_S)
    for r in range(num_rounds):
      for j, i in enumerate(rng.permutation(len(names))):
        ms = benchmark(flatbuffers[names[i]], **self.kwargs).latency_ms
        best[names[i]] = min(best[names[i]], ms)
        status.update(r * len(names) + j + 1)
    return best


def _check_timing_args(num_runs, num_warmup_runs, num_threads, num_rounds):
  def bad(value, low):
    return isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low
  if bad(num_runs, 1):
    raise ValueError(f"num_runs={num_runs!r} must be an int >= 1")
  if bad(num_warmup_runs, 0):
    raise ValueError(f"num_warmup_runs={num_warmup_runs!r} must be an int >= 0")
  if bad(num_threads, 1):
    raise ValueError(f"num_threads={num_threads!r} must be an int >= 1 (1 gives the most repeatable numbers)")
  if bad(num_rounds, 1):
    raise ValueError(f"num_rounds={num_rounds!r} must be an int >= 1 (timing rounds; the fastest is kept)")


def measure_latency_table(
    space: space_lib.SearchSpace,
    quantization: str = "int8",
    num_runs: int = 200,
    num_warmup_runs: int = 20,
    num_threads: int = 1,
    grid_size: Optional[int] = 6,
    num_rounds: int = 7,
    validation_structures: Optional[Sequence[Any]] = None,
    progress: bool = True,
    seed: int = 0,
    device: Optional[str] = None,
) -> MeasuredLatencyTable:
  """Times every layer of a space on this host and returns its latency table.

  See the module docstring for what is measured and how. Every one-layer
  model is converted with `tflite_export.convert` (the slow part: about 0.5 s
  each), then all are timed with `tflite_export.benchmark` in `num_rounds`
  interleaved rounds (a few seconds each); an entry is the fastest round's
  median. Identical layer signatures are measured once. The whole model of
  `space.uniform(0.5)` is timed in the same rounds as a reference
  (`measurement["reference_ms"]`): `prediction_error` times it again to see
  how much the machine's speed has drifted since.

  Args:
    space: the `tf_metaprune.SearchSpace`.
    quantization: the number format the pruned model will ship in (one of
      `tflite_export.QUANTIZATION_MODES`); "int8" layers are calibrated on
      random images. On x86 hosts int8 is not faster than float32.
    num_runs, num_warmup_runs, num_threads: as in `tflite_export.benchmark`.
      Use the thread count the app will use.
    grid_size: at most this many channel counts per axis are measured per
      node; the other (cin, cout) pairs are interpolated bilinearly. None
      measures every pair (slow for MobileNets: thousands of models).
    num_rounds: timing rounds over all models (the fastest median of each is
      kept). Timing is cheap next to conversion.
    validation_structures: structures whose whole models are timed in the
      same rounds as the layers, under the same conditions; their prediction
      error is stored in `measurement["validation"]` (same rows as
      `prediction_error`). Unlike a later `prediction_error`, this is free of
      drift in the machine's speed between the two measurements.
    progress: print progress lines to stderr.
    seed: seed of the random calibration images and the timing order.
    device: label stored in the table (default: `device_description()` plus
      threads and format).

  Returns:
    A `MeasuredLatencyTable` (a `tf_metaprune.budgets.LatencyTable`) covering
    exactly `LatencyTable.required_keys(space)`, in milliseconds.

  Raises:
    ValueError: for an unknown `quantization`, a bad `grid_size` or timing
      argument.

  Example:

    table = measure_latency_table(space, quantization="float32", grid_size=4)
    table.is_measured("stem", 1, 8), table.predict_ms(space, space.largest())
  """
  _check_space(space)
  _check_quantization(quantization)
  _check_timing_args(num_runs, num_warmup_runs, num_threads, num_rounds)
  start = time.monotonic()
  load_before = _load_average()
  plan = _plan(space, grid_size)
  validation = [space.validate(v) for v in (validation_structures or ())]
  rng = np.random.default_rng(seed + 1)
  flatbuffers = {f"validation_{i}": _whole_model_flatbuffer(space, v, quantization, rng)
                 for i, v in enumerate(validation)}
  flatbuffers.update(_convert_plan(space, plan, quantization, seed, progress))
  times = _Timer(num_runs, num_warmup_runs, num_threads).rounds(flatbuffers, num_rounds, seed, progress)
  empty_ms, overhead_model_ms = times.pop(EMPTY_MODEL), times.pop(OVERHEAD_MODEL)
  reference_ms = times.pop(REFERENCE_MODEL)
  validation_ms = [times.pop(f"validation_{i}") for i in range(len(validation))]
  if device is None:
    device = f"{device_description()}, {num_threads} thread(s), {quantization}"
  measurement = {"method": SOURCE_HOST, "quantization": quantization, "num_threads": num_threads,
                 "num_runs": num_runs, "num_warmup_runs": num_warmup_runs, "num_rounds": num_rounds,
                 "statistic": f"median of num_runs invokes, fastest of {num_rounds} rounds",
                 "reference_structure": list(_reference_structure(space).choices), "reference_ms": reference_ms,
                 "seconds": round(time.monotonic() - start, 1),
                 "load_average": {"before": load_before, "after": _load_average()}}
  table = table_from_timings(space, times, empty_ms, overhead_model_ms, plan.grid_size, device, measurement)
  if validation:
    table.measurement["validation"] = _error_report(space, table, validation, validation_ms)
    table.measurement["validation"]["notes"] = (
        "whole models timed in the same interleaved rounds as the table's layers: same conditions")
  return table


def _error_report(space, table, structures, measured_ms, speed_ratio=None) -> Dict[str, Any]:
  """Per-structure predicted vs measured ms, and mean/max absolute relative errors."""
  rows = []
  for s, measured in zip(structures, measured_ms):
    predicted = table.predict_ms(space, s)
    corrected = predicted * (speed_ratio or 1.0)
    rows.append({"choices": list(s.choices), "mflops": space.mflops(s), "predicted_ms": predicted,
                 "measured_ms": measured, "relative_error": (predicted - measured) / measured,
                 "drift_corrected_relative_error": (corrected - measured) / measured})
  errors = np.abs([r["relative_error"] for r in rows])
  corrected_errors = np.abs([r["drift_corrected_relative_error"] for r in rows])
  return {"structures": rows, "mean_abs_relative_error": float(errors.mean()),
          "max_abs_relative_error": float(errors.max()),
          "drift_corrected_mean_abs_relative_error": float(corrected_errors.mean()),
          "drift_corrected_max_abs_relative_error": float(corrected_errors.max()), "speed_ratio": speed_ratio}


def _load_average() -> Optional[List[float]]:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except (AttributeError, OSError):
    return None


# ---- phone measurement: write the models, read benchmark_model logs ------------------------


def write_layer_models(
    space: space_lib.SearchSpace,
    output_dir: str,
    quantization: str = "int8",
    grid_size: Optional[int] = 6,
    seed: int = 0,
    progress: bool = True,
) -> str:
  """Writes the one-layer `.tflite` models of a table, to time them on a phone.

  The same models `measure_latency_table` times on the host: one file per
  layer signature (`<signature>.tflite`), plus `empty.tflite` (the per-invoke
  cost subtracted from every layer) and `overhead.tflite` (the whole model's
  fixed cost), and `manifest.json` listing them. Time each file with
  `benchmark_model` into `<same name>.txt` beside it (see the module
  docstring), then call `latency_table_from_logs`.

  Args:
    space: the `SearchSpace`.
    output_dir: folder to write (created if needed).
    quantization, grid_size, seed, progress: as in `measure_latency_table`.

  Returns:
    The path of `manifest.json`.

  Raises:
    ValueError: for an unknown `quantization` or a bad `grid_size`.
  """
  _check_space(space)
  _check_quantization(quantization)
  plan = _plan(space, grid_size)
  flatbuffers = _convert_plan(space, plan, quantization, seed, progress)
  for name, flatbuffer in flatbuffers.items():
    save(flatbuffer, os.path.join(output_dir, name + ".tflite"))
  path = os.path.join(output_dir, _MANIFEST)
  io_lib.write_json_atomic(path, {
      "format": _MANIFEST_FORMAT, "version": 1, "space": space.name, "space_fingerprint": space.fingerprint(),
      "quantization": quantization, "grid_size": grid_size, "empty_model": EMPTY_MODEL,
      "overhead_model": OVERHEAD_MODEL, "reference_model": REFERENCE_MODEL,
      "reference_structure": list(_reference_structure(space).choices), "models": sorted(flatbuffers),
      "how_to_time": "for each X.tflite: adb shell benchmark_model --graph=X.tflite --num_threads=1 "
                     "--num_runs=100 --warmup_runs=10 > X.txt 2>&1; then "
                     "tflite_export.latency_table_from_logs(space, this folder)"})
  return path


def latency_table_from_logs(
    space: space_lib.SearchSpace,
    layer_dir: str,
    device: str = "Android device (benchmark_model)",
    log_suffix: str = ".txt",
) -> MeasuredLatencyTable:
  """Builds a latency table from `benchmark_model` logs of `write_layer_models` files.

  Every `<name>.tflite` listed in the folder's `manifest.json` must have a
  `<name><log_suffix>` log beside it; each is read with
  `tflite_export.parse_benchmark_model_output` (its mean, the only figure
  benchmark_model prints) and the table is assembled exactly as on the host.

  Args:
    space: the `SearchSpace` the models were written for.
    layer_dir: the folder `write_layer_models` wrote.
    device: what the logs were measured on, e.g. "Pixel 7, 1 thread".
    log_suffix: file name ending of the logs.

  Returns:
    A `MeasuredLatencyTable` with `measurement["method"] == "benchmark_model_logs"`.

  Raises:
    ValueError: if the manifest is missing or made for another space, or logs
      are missing or unreadable (the message lists them).
  """
  _check_space(space)
  manifest_path = os.path.join(layer_dir, _MANIFEST)
  if not os.path.exists(manifest_path):
    raise ValueError(f"no {_MANIFEST} in {layer_dir!r}: write the one-layer models with "
                     "tflite_export.write_layer_models(space, layer_dir) first")
  manifest = io_lib.read_json(manifest_path, "layer model manifest")
  if manifest.get("format") != _MANIFEST_FORMAT:
    raise ValueError(f"{manifest_path!r} is not a write_layer_models manifest (format={manifest.get('format')!r})")
  if manifest.get("space_fingerprint") != space.fingerprint():
    raise ValueError(f"the models in {layer_dir!r} were written for space {manifest.get('space')!r} (fingerprint "
                     f"{manifest.get('space_fingerprint')}), not for {space.name!r} (fingerprint "
                     f"{space.fingerprint()}); write them again for this space")
  plan = _plan(space, manifest.get("grid_size"))
  times, missing = {}, []
  for name in manifest["models"]:
    log = os.path.join(layer_dir, name + log_suffix)
    if not os.path.exists(log):
      missing.append(os.path.basename(log))
      continue
    with open(log) as f:
      try:
        times[name] = parse_benchmark_model_output(f.read(), device=device).latency_ms
      except ValueError as e:
        raise ValueError(f"cannot read the benchmark_model log {log!r}: {e}") from None
  if missing:
    raise ValueError(f"{len(missing)} of {len(manifest['models'])} benchmark_model logs are missing in "
                     f"{layer_dir!r}, e.g. {missing[:3]}; time every .tflite file listed in {_MANIFEST}")
  empty_ms, overhead_model_ms = times.pop(EMPTY_MODEL), times.pop(OVERHEAD_MODEL)
  measurement = {"method": "benchmark_model_logs", "quantization": manifest["quantization"],
                 "statistic": "benchmark_model mean", "layer_dir": os.path.abspath(layer_dir),
                 "reference_structure": manifest.get("reference_structure"),
                 "reference_ms": times.pop(REFERENCE_MODEL, None)}
  return table_from_timings(space, times, empty_ms, overhead_model_ms, plan.grid_size, device, measurement)


_PROFILE_KINDS = (  # (substring of a lower-case node type, kind); first match wins; None: no layer
    ("quantize", None), ("convert", None),  # QUANTIZE/DEQUANTIZE, XNNPACK "Convert (NC, F32, QD8)"
    ("dwconv", "dwconv"), ("depthwise", "dwconv"), ("conv", "conv"),
    ("fully connected", "dense"), ("fully_connected", "dense"),
    ("max pool", "maxpool"), ("max_pool", "maxpool"),
    ("global average pool", "gap"), ("mean", "gap"), ("average pool", "gap"),
    ("add", "add"))


def _profile_kind(node_type: str) -> Optional[str]:
  lower = node_type.lower()
  for needle, kind in _PROFILE_KINDS:
    if needle in lower:
      return kind
  return None


def profile_entries(space: space_lib.SearchSpace, structure: Any, benchmark_model_text: str) -> Dict[str, Any]:
  """Maps a whole model's per-operator profile back to the table entries of a structure.

  Run the structure's `.tflite` on the phone with
  `benchmark_model ... --enable_op_profiling=true` and pass the log: the
  operators of the "Run Order" table are matched in order to the space's
  conv, depthwise conv, add, pool and dense nodes (quantize/dequantize and
  other conversions are "unattributed"), adds and pools are folded into
  their conv as in the table, pooling before the classifier into the dense
  node. Compare the result with a table's entries to see which layers it
  mispredicts on that phone.

  Args:
    space: the `SearchSpace`.
    structure: the structure the profiled model was rebuilt from.
    benchmark_model_text: the complete benchmark_model log.

  Returns:
    {"entries": {node: {"cin,cout": ms}}, "unattributed_ms": ms of
    operators that belong to no layer, "total_ms": the run's mean}.

  Raises:
    ValueError: if the log has no operator profile, or its operators do not
      line up with the space's layers (e.g. XNNPACK shown as one delegate
      row: rerun with a newer benchmark_model or `--use_xnnpack=false`).
  """
  _check_space(space)
  s = space.validate(structure)
  result = parse_benchmark_model_output(benchmark_model_text)
  if not result.op_profile:
    raise ValueError("the benchmark_model log has no per-operator profile: rerun it with "
                     "--enable_op_profiling=true")
  rows, unattributed = [], 0.0
  for row in result.op_profile:
    kind = _profile_kind(row.node_type)
    if kind is None:
      unattributed += row.avg_ms
    else:
      rows.append((kind, row))
  layers = [n for n in space.nodes if n.op in _TABLE_OPS + _FOLDED_OPS + ("gap",)]
  kinds = [kind for kind, _ in rows]
  expected = [n.op for n in layers]
  if kinds != expected:
    raise ValueError(f"the profiled operators {kinds[:8]}... ({len(kinds)}) do not line up with the layers of "
                     f"space {space.name!r} {expected[:8]}... ({len(expected)}): profile the model rebuilt from "
                     "this structure, with per-operator rows (a newer benchmark_model, or "
                     "--use_xnnpack=false)")
  plan = _plan(space, None)
  owner = {name: node.name for node in plan.nodes for name, _ in node.folded}
  table_nodes = {node.name for node in plan.nodes}
  ch = space.node_channels(s)
  ms_by_node: Dict[str, float] = {}
  for node, (_, row) in zip(layers, rows):
    if node.op == "gap":
      target = next(n.name for n in space.nodes if n.op == "dense" and n.inputs[0] == node.name)
    else:
      target = owner.get(node.name, node.name)
    if target not in table_nodes:
      unattributed += row.avg_ms  # a pool/add of fixed width: part of the overhead
      continue
    ms_by_node[target] = ms_by_node.get(target, 0.0) + row.avg_ms
  entries = {name: {f"{ch[space.node_by_name[name].inputs[0]]},{ch[name]}": ms}
             for name, ms in ms_by_node.items()}
  return {"entries": entries, "unattributed_ms": unattributed, "total_ms": result.latency_ms}


# ---- checking a table against whole models -------------------------------------------------


def prediction_error(
    space: space_lib.SearchSpace,
    table: budgets_lib.LatencyTable,
    structures: Iterable[Any],
    quantization: Optional[str] = None,
    num_runs: Optional[int] = None,
    num_warmup_runs: Optional[int] = None,
    num_threads: Optional[int] = None,
    num_rounds: Optional[int] = None,
    representative_data: Optional[Any] = None,
    seed: int = 0,
) -> Dict[str, Any]:
  """Measures whole models on this host and compares them with the table's predictions.

  Each structure is rebuilt (`tf_metaprune.rebuild`, fresh weights: latency
  does not depend on their values), converted in the table's format and timed
  as the table's layers were (median of `num_runs`, fastest of `num_rounds`
  interleaved rounds). Only meaningful for a table measured on this host.

  Host timings drift when other jobs load the machine. A table from
  `measure_latency_table` records the time of a reference model (the whole
  `space.uniform(0.5)`); it is timed again here, in the same rounds, and
  `speed_ratio` = now / then. `relative_error` is the plain comparison;
  `drift_corrected_relative_error` compares `predicted * speed_ratio`
  instead, i.e. what the error would be had the machine been as busy as
  while the table was measured.

  Args:
    space: the `SearchSpace` the table was measured for.
    table: a `LatencyTable` (e.g. from `measure_latency_table`).
    structures: structures of the space (or choice lists).
    quantization: format to convert to; None takes it from a
      `MeasuredLatencyTable`'s record.
    num_runs, num_warmup_runs, num_threads, num_rounds: None takes them from
      the table's record (else 200, 20, 1, 7).
    representative_data: int8 calibration images (None: random images; the
      timing does not depend on them).
    seed: seed of the random calibration images and the timing order.

  Returns:
    A JSON-able dict: `"structures"`, one row per structure with `choices`,
    `mflops`, `predicted_ms`, `measured_ms`, `relative_error`
    ((predicted - measured) / measured) and `drift_corrected_relative_error`;
    `mean_abs_relative_error`, `max_abs_relative_error`, their
    drift-corrected twins, `speed_ratio` (None without a reference),
    `quantization`, `num_threads`, `num_rounds`, `device`, `load_average` and
    `notes`.

  Raises:
    ValueError: if the table does not cover the space, no structure is given,
      or the format is unknown.

  Example:

    report = prediction_error(space, table, [space.uniform(0.5), space.random(0)])
    print(f"{100 * report['mean_abs_relative_error']:.1f}% mean error")
  """
  _check_space(space)
  table.validate(space)
  record = getattr(table, "measurement", None) or {}
  if quantization is None:
    quantization = record.get("quantization")
    if quantization is None:
      raise ValueError("prediction_error(quantization=None) needs a MeasuredLatencyTable that records its "
                       "format; pass quantization='int8' or 'float32' (the table's format)")
  _check_quantization(quantization)

  def setting(value, key, default):
    return int(record.get(key, default)) if value is None else value

  num_runs = setting(num_runs, "num_runs", 200)
  num_warmup_runs = setting(num_warmup_runs, "num_warmup_runs", 20)
  num_threads = setting(num_threads, "num_threads", 1)
  num_rounds = setting(num_rounds, "num_rounds", 7)
  _check_timing_args(num_runs, num_warmup_runs, num_threads, num_rounds)
  structures = [space.validate(s) for s in structures]
  if not structures:
    raise ValueError("prediction_error(structures=[]) needs at least one structure, e.g. [space.uniform(0.5)]")
  load_before = _load_average()
  rng = np.random.default_rng(seed)
  flatbuffers = {i: _whole_model_flatbuffer(space, s, quantization, rng, representative_data)
                 for i, s in enumerate(structures)}
  reference_ms = record.get("reference_ms")
  same_host = record.get("method") == SOURCE_HOST and record.get("quantization") == quantization
  if reference_ms and same_host:
    reference = space.validate(record["reference_structure"])
    flatbuffers[REFERENCE_MODEL] = _whole_model_flatbuffer(space, reference, quantization, rng,
                                                           representative_data)
  measured = _Timer(num_runs, num_warmup_runs, num_threads).rounds(flatbuffers, num_rounds, seed)
  speed_ratio = measured[REFERENCE_MODEL] / reference_ms if REFERENCE_MODEL in measured else None
  report = _error_report(space, table, structures, [measured[i] for i in range(len(structures))], speed_ratio)
  report.update({"quantization": quantization, "num_threads": num_threads, "num_runs": num_runs,
                 "num_rounds": num_rounds, "device": device_description(),
                 "load_average": {"before": load_before, "after": _load_average()}, "notes": HOST_NOTES})
  return report
