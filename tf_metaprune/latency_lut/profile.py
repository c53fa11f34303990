"""A whole model's per-operator profile (benchmark_model --enable_op_profiling) mapped back to a structure's
table entries, to see which layers a table mispredicts on a phone."""

from typing import Any, Dict, List, Optional

from tf_metaprune import ops
from tf_metaprune import space as space_lib
from tf_metaprune.latency_lut.plan import _check_space
from tf_metaprune.latency_lut.plan import _plan
from tflite_export.device_logs import read_device_log

# TFLite builtin operators and XNNPACK kernel names -> the coarse kinds of `Op.profile_kinds`. First match
# of a substring of the lower-case node type wins; None: an input/output conversion, part of no layer.
# (XNNPACK runs a 1x1 convolution as "Fully Connected", so convs and dense layers share one kind.)
_TFLITE_KINDS = (
    ("dequantize", None), ("quantize", None), ("convert (", None),
    ("conv", "weights"), ("fully connected", "weights"), ("fully_connected", "weights"),
    ("batch matrix multiply", "weights"), ("batch_matmul", "weights"),
    ("add", "add"), ("multiply", "mul"), ("mul", "mul"),
    ("pool", "pool"), ("mean", "pool"), ("reduce", "pool"), ("sum", "pool"),
    ("concat", "concat"), ("copy", "reshape"), ("reshape", "reshape"), ("squeeze", "reshape"),
    ("resize", "resize"), ("pad", "pad"),
    ("logistic", "activation"), ("sigmoid", "activation"), ("swish", "activation"), ("tanh", "activation"),
    ("relu", "activation"), ("elu", "activation"), ("clamp", "activation"), ("softmax", "activation"),
    ("hard", "activation"), ("prelu", "activation"))
# Kinds whose rows depend on the converter and delegate (a pad folded into the conv, a reshape elided):
# when their count does not line up, their rows are unattributed instead of failing the whole profile.
_SOFT_KINDS = ("pad", "reshape", "activation", "other")


def tflite_kind(node_type: str) -> Optional[str]:
  """The coarse kind of a profile row's node type (None: quantize/dequantize, no layer; "other": unknown)."""
  lower = node_type.lower()
  for needle, kind in _TFLITE_KINDS:
    if needle in lower:
      return kind
  return "other"


def profile_entries(space: space_lib.SearchSpace, structure: Any, benchmark_model_text: str) -> Dict[str, Any]:
  """Maps a whole model's per-operator profile back to the table entries of a structure.

  Run the structure's `.tflite` on the phone with
  `benchmark_model ... --enable_op_profiling=true` and pass the log (any
  layout `tflite_export.read_device_log` reads). Each profile row gets a
  coarse kind from its node type; each space node declares the kinds of the
  rows it becomes (`Op.profile_kinds`). Rows are matched to nodes kind by
  kind, in run order; a width-only node's time goes to the layer its table
  entry is folded into, as in the table; rows of no layer (quantize,
  dequantize, a fixed-width add) are "unattributed". Compare the result with
  a table's entries to see which layers it mispredicts on that phone.

  Args:
    space: the `SearchSpace`.
    structure: the structure the profiled model was rebuilt from.
    benchmark_model_text: the complete log.

  Returns:
    {"entries": {node: {"cin,cout": ms}}, "unattributed_ms": ms of
    operators that belong to no layer, "total_ms": the run's time, "notes":
    kinds whose rows did not line up and were left unattributed}.

  Raises:
    ValueError: if the log has no operator profile, the delegate fused the
      graph into one row (then the per-layer models are the way), or the
      layers' rows do not line up with the space's nodes.
  """
  _check_space(space)
  s = space.validate(structure)
  log = read_device_log(benchmark_model_text)
  if not log.op_profile:
    raise ValueError("the benchmark_model log has no per-operator profile: rerun it with "
                     "--enable_op_profiling=true")
  if log.fused_by_delegate:
    raise ValueError(f"the {log.delegate} delegate fused the graph into one row, so its layers cannot be "
                     "told apart; time the per-layer models instead (examples/latency_table.py "
                     "--write_device_models=DIR with the same --delegate, then --from_device_logs=DIR)")
  rows: Dict[str, List[Any]] = {}
  unattributed = 0.0
  for row in log.op_profile:
    kind = tflite_kind(row.node_type)
    if kind is None:
      unattributed += row.avg_ms
    else:
      rows.setdefault(kind, []).append(row)
  expected: Dict[str, List[str]] = {}
  for node in space.nodes:
    for kind in ops.get(node.op).profile_kinds(space, node):
      expected.setdefault(kind, []).append(node.name)
  hard = [k for k in sorted(set(rows) | set(expected)) if k not in _SOFT_KINDS
          and len(rows.get(k, [])) != len(expected.get(k, []))]
  if hard:
    detail = ", ".join(f"{k}: {len(rows.get(k, []))} rows vs {len(expected.get(k, []))} nodes" for k in hard)
    raise ValueError(f"the profiled operators do not line up with the layers of space {space.name!r} ({detail}): "
                     "profile the model rebuilt from this structure (tf_metaprune.rebuild + "
                     "tflite_export.convert), with per-operator rows")
  plan = _plan(space, None)
  owner = {name: node.name for node in plan.nodes for name, _ in node.folded}
  table_nodes = {node.name for node in plan.nodes}
  ms_by_node: Dict[str, float] = {}
  notes = []
  for kind, kind_rows in rows.items():
    names = expected.get(kind, [])
    if len(names) != len(kind_rows):  # a soft kind that does not line up
      unattributed += sum(r.avg_ms for r in kind_rows)
      notes.append(f"{len(kind_rows)} {kind} rows for {len(names)} nodes: unattributed")
      continue
    for name, row in zip(names, kind_rows):
      target = name if name in table_nodes else owner.get(name)
      if target is None:
        unattributed += row.avg_ms  # a fixed-width or free node: part of the overhead
      else:
        ms_by_node[target] = ms_by_node.get(target, 0.0) + row.avg_ms
  ch = space.node_channels(s)
  entries = {name: {f"{ch[space.node_by_name[name].inputs[0]]},{ch[name]}": ms}
             for name, ms in ms_by_node.items()}
  return {"entries": entries, "unattributed_ms": unattributed, "total_ms": log.latency_ms, "notes": notes}
