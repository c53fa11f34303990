"""A whole model's per-operator profile (benchmark_model --enable_op_profiling) mapped back to a structure's
table entries."""

from typing import Any, Dict, Optional

from tf_metaprune import space as space_lib
from tf_metaprune.latency_lut.plan import _check_space
from tf_metaprune.latency_lut.plan import _FOLDED_OPS
from tf_metaprune.latency_lut.plan import _plan
from tf_metaprune.latency_lut.plan import _TABLE_OPS
from tflite_export.benchmark import parse_benchmark_model_output


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

