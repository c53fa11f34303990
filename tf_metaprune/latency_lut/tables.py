"""The table types of a measured latency table: `LayerSignature` (what one one-layer model is) and
`MeasuredLatencyTable` (a `LatencyTable` that records how it was measured)."""

import dataclasses
import hashlib
import json
from typing import Any, Dict, Optional, Tuple

import keras

from tf_metaprune import budgets as budgets_lib
from tf_metaprune import ops

EMPTY_MODEL = "empty"
OVERHEAD_MODEL = "overhead"
REFERENCE_MODEL = "reference"


@dataclasses.dataclass(frozen=True)
class LayerSignature:
  """Everything that decides one layer's latency: shape, op and widths.

  Every op declares its own: `ops.get(op).latency_signature(space, node)`
  gives the fields (all but cin/cout), `latency_model(sig)` the model.

  Attributes:
    op: the node's op ("conv", "dwconv", "dense" on a flat input, "add",
      "maxpool", "gap", "multiply", "concat", ...).
    in_hw: (height, width) of the layer's input (for "dense": of the pooled
      feature map).
    cin: input channels.
    cout: output channels (== cin for "dwconv", "add", "maxpool").
    kernel_size: conv / pool window.
    strides: conv / pool stride ("same" padding).
    activation: None, "relu" or "relu6", after batch norm (or after the add).
    bn: batch normalization after the conv (then the conv has no bias).
    num_inputs: inputs of an "add", "multiply" or "concat".
    broadcast: the inputs after the first are 1x1 (a squeeze-excite gate).
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
  broadcast: bool = False
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
    if self.broadcast:
      parts.append("bc")
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
    if not config["broadcast"]:
      del config["broadcast"]
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

