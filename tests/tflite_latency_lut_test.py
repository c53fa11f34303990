"""Tests for tf_metaprune.latency_lut (formerly tflite_export.latency_lut): measuring, assembling, checking tables.

One tiny residual space (stem conv -> max pool -> expand conv -> depthwise ->
project conv + add -> pooling -> dense, 8x8x1 input, 3 width choices per gene)
is measured once in int8 with a 2-point grid, so interpolation, folding of
adds/pools and the multi-input int8 add conversion are all exercised (about
10 s). No test asserts a time: host timings vary with load.
"""

import dataclasses
import json
import os

import numpy as np
import pytest

import tf_metaprune as tfmp
import tflite_export
from tf_metaprune import budgets
from tf_metaprune import latency_lut

import device_log_fixtures as fixtures  # tests/device_log_fixtures.py


def _residual_space():
  b = tfmp.SpaceBuilder("tiny_residual", (8, 8, 1), 3, width_ratios=(0.5, 0.75, 1.0), divisor=1)
  x = b.input()
  x = b.conv("stem", x, out=b.gene("stem", 4), kernel_size=3)             # 1 -> {2, 3, 4}
  p = b.maxpool("pool1", x, pool_size=2, strides=2)                          # 4x4, folded into stem
  h = b.conv("expand", p, out=b.gene("expand", 8), kernel_size=1)          # {2,3,4} -> {4, 6, 8}
  h = b.dwconv("dw", h)                                                     # diagonal {4, 6, 8}
  h = b.conv("project", h, out="stem", kernel_size=1, activation=None)     # {4,6,8} -> {2,3,4}
  y = b.add("add", [p, h])                                                  # folded into project
  y = b.gap("gap", y)
  b.dense("logits", y, out=3)
  return b.build()


@pytest.fixture(scope="module")
def space():
  return _residual_space()


@pytest.fixture(scope="module")
def table(space):
  return latency_lut.measure_latency_table(space, quantization="int8", grid_size=2, num_runs=30,
                                             num_warmup_runs=5, num_rounds=2, progress=False,
                                             validation_structures=[space.smallest(), space.largest()])


def _single_conv_space():
  b = tfmp.SpaceBuilder("one_conv", (6, 6, 1), 2, width_ratios=(0.5, 1.0), divisor=1)
  x = b.conv("conv", b.input(), out=b.gene("conv", 4), kernel_size=3)
  b.dense("logits", b.gap("gap", x), out=2)
  return b.build()


def test_table_covers_exactly_the_required_keys_of_the_space(space, table):
  table.validate(space)
  assert table.missing_entries(space) == []
  required = budgets.LatencyTable.required_keys(space)
  assert set(table.entries) == set(required)
  for node, pairs in required.items():
    assert set(table.entries[node]) == {f"{ci},{co}" for ci, co in pairs}
  assert table.space_fingerprint == space.fingerprint()


def test_measured_timings_are_positive_and_entries_are_not_negative(space, table):
  raw = table.measurement["layer_ms"]
  assert len(raw) == table.measurement["num_layer_models"]
  assert all(ms > 0 for ms in raw.values())
  assert table.measurement["empty_ms"] > 0 and table.measurement["overhead_model_ms"] > 0
  assert table.measurement["reference_ms"] > table.overhead_ms
  # calibrated: the whole reference model timed with the layers is predicted exactly
  reference = space.validate(table.measurement["reference_structure"])
  predicted = table.predict_ms(space, reference)
  assert predicted == pytest.approx(table.measurement["reference_ms"]) or (
      table.overhead_ms == 0 and predicted > table.measurement["reference_ms"])   # the overhead clipped at 0
  values = [ms for entries in table.entries.values() for ms in entries.values()]
  assert min(values) >= 0 and max(values) > 0


def test_grid_entries_are_layer_minus_empty_model_plus_folded_add_and_pool(space, table):
  m = table.measurement
  nodes = m["nodes"]
  assert nodes["stem"]["folded"] == ["pool1"]
  assert nodes["project"]["folded"] == ["add", "gap"]   # the global pooling has the add's width
  assert nodes["dw"]["diagonal"] and not nodes["expand"]["diagonal"]

  def net(name):
    return m["layer_ms"][name] - m["empty_ms"]

  # project 8 -> 4 is a grid point: its conv plus the add and the global pooling of width 4.
  expected = net("conv_k1_s1_4x4_8to4_bn") + net("add_k1_s1_4x4_4to4_in2") + net("gap_k1_s1_4x4_4to4")
  assert table.entries["project"]["8,4"] == pytest.approx(max(0.0, expected), abs=1e-12)
  assert table.is_measured("project", 8, 4)
  expected = net("conv_k3_s1_8x8_1to2_bn_relu") + net("maxpool_k2_s2_8x8_2to2")
  assert table.entries["stem"]["1,2"] == pytest.approx(max(0.0, expected), abs=1e-12)
  # the dense model is the layer alone, on its flat input
  assert table.entries["logits"]["4,3"] == pytest.approx(max(0.0, net("dense_k1_s1_0x0_4to3")), abs=1e-12)


def test_measured_and_interpolated_keys_partition_every_node(table):
  for node, record in table.measurement["nodes"].items():
    measured, interpolated = set(record["measured"]), set(record["interpolated"])
    assert not measured & interpolated
    assert measured | interpolated == set(table.entries[node])
  assert table.measurement["nodes"]["expand"]["interpolated"]  # 3x3 pairs on a 2x2 grid
  assert not table.is_measured("expand", 3, 6)
  assert table.measurement["num_interpolated_entries"] > 0


def test_table_round_trips_through_json_and_loads_as_a_plain_table(table, tmp_path):
  again = latency_lut.MeasuredLatencyTable.from_json(table.to_json())
  assert again == table
  assert again.measurement == json.loads(json.dumps(table.measurement))
  path = os.path.join(tmp_path, "lut.json")
  table.save(path)
  plain = budgets.LatencyTable.load(path)  # the contract: the extra block is ignored
  assert plain.entries == table.entries and plain.overhead_ms == table.overhead_ms
  assert latency_lut.MeasuredLatencyTable.load(path).measurement["nodes"] == table.measurement["nodes"]


def test_predicted_latency_is_overhead_plus_the_structures_entries(space, table):
  for s in [space.smallest(), space.largest(), space.uniform(0.75)] + [space.random(i) for i in range(5)]:
    ch = space.node_channels(s)
    total = table.overhead_ms + sum(
        table.entries[n.name][f"{ch[n.inputs[0]]},{ch[n.name]}"] for n in space.nodes if n.name in table.entries)
    assert table.predict_ms(space, s) == pytest.approx(total, rel=1e-12)
  budget = budgets.LatencyBudget(max_ms=table.predict_ms(space, space.largest()), lut=table)
  budget.check(space)
  assert budget.is_feasible(space, space.largest())


def test_interpolation_reproduces_grid_points_and_is_exact_for_bilinear_costs(space):
  sigs = latency_lut.layer_signatures(space, grid_size=2)
  first = lambda op: next(s for s in sigs if s.op == op)  # pylint: disable=unnecessary-lambda-assignment
  folded = {"stem": [first("maxpool")], "project": [first("add"), first("gap")]}

  def check(table, cost, empty_ms, keys):
    for node, record in table.measurement["nodes"].items():
      template = latency_lut.LayerSignature.from_config(record["signature"])
      for key in keys(record):
        ci, co = map(int, key.split(","))
        expected = cost(dataclasses.replace(template, cin=ci, cout=co)) - empty_ms
        for extra in folded.get(node, []):
          expected += cost(dataclasses.replace(extra, cin=co, cout=co)) - empty_ms
        assert table.entries[node][key] == pytest.approx(expected, rel=1e-12), (node, key)

  # Arbitrary timings: the measured (grid) entries are the timings themselves.
  rng = np.random.default_rng(0)
  random_ms = {sig.name: float(rng.uniform(1.0, 2.0)) for sig in sigs}
  table = latency_lut.table_from_timings(space, random_ms, empty_ms=0.5, overhead_model_ms=0.25, grid_size=2)
  check(table, lambda sig: random_ms[sig.name], 0.5, lambda record: record["measured"])
  assert table.overhead_ms == 0.25

  # Timings a + b*cin + c*cout + d*cin*cout (linear in c for the ops whose
  # cin == cout, interpolated along c only): every entry is exact.
  def bilinear(sig):
    if sig.op in ("dwconv", "add", "maxpool", "gap"):
      return 1.0 + 0.1 * sig.cin
    return 1.0 + 0.1 * sig.cin + 0.01 * sig.cout + 0.001 * sig.cin * sig.cout

  table = latency_lut.table_from_timings(space, {sig.name: bilinear(sig) for sig in sigs}, empty_ms=0.5,
                                         overhead_model_ms=0.25, grid_size=2)
  check(table, bilinear, 0.5, lambda record: record["measured"] + record["interpolated"])


def test_every_pair_is_measured_without_a_grid(space):
  sigs = latency_lut.layer_signatures(space, grid_size=None)
  table = latency_lut.table_from_timings(space, {s.name: 1.0 for s in sigs}, 0.5, 0.1, grid_size=None)
  assert table.measurement["num_interpolated_entries"] == 0
  assert len(latency_lut.layer_signatures(space, grid_size=2)) < len(sigs)


def test_prediction_error_reports_each_structure(space, table):
  structures = [space.smallest(), space.largest()]
  report = latency_lut.prediction_error(space, table, structures, num_runs=20, num_rounds=1)
  assert [r["choices"] for r in report["structures"]] == [list(s.choices) for s in structures]
  for row, s in zip(report["structures"], structures):
    assert row["predicted_ms"] == pytest.approx(table.predict_ms(space, s))
    assert row["measured_ms"] > 0
    assert row["relative_error"] == pytest.approx((row["predicted_ms"] - row["measured_ms"]) / row["measured_ms"])
  assert report["mean_abs_relative_error"] == pytest.approx(
      np.mean([abs(r["relative_error"]) for r in report["structures"]]))
  assert report["quantization"] == "int8" and report["speed_ratio"] > 0
  json.dumps(report)


def test_phone_route_builds_the_table_from_benchmark_model_logs(tmp_path):
  space = _single_conv_space()
  manifest_path = latency_lut.write_layer_models(space, str(tmp_path), quantization="float32", progress=False)
  manifest = json.loads(open(manifest_path).read())
  assert {"empty", "overhead", "reference"} <= set(manifest["models"])
  for name in manifest["models"]:
    assert os.path.getsize(os.path.join(tmp_path, name + ".tflite")) > 0
  with pytest.raises(ValueError, match=r"(?s)9 of 9 logs in .* cannot be used:\n  .*\n  empty.txt: missing\n"):
    latency_lut.latency_table_from_logs(space, str(tmp_path))
  # Fake phone logs: 100 us per model plus 10 us per output channel.
  for name in manifest["models"]:
    cout = int(name.split("to")[1].split("_")[0]) if "to" in name else 0
    us = 100.0 + 10.0 * cout
    with open(os.path.join(tmp_path, name + ".txt"), "w") as f:
      f.write("INFO: count=100 first=1 curr=1 min=1 max=1 avg=1 std=0\n"
              f"INFO: Inference timings in us: Init: 3000, First inference: 500, Warmup (avg): {us}, "
              f"Inference (avg): {us}\n")
  table = latency_lut.latency_table_from_logs(space, str(tmp_path), device="test phone")
  assert table.device == "test phone" and table.measurement["method"] == "benchmark_model_logs"
  # the conv's own 10 us per channel, plus the global pooling of its width (folded into it)
  assert table.entries["conv"] == {"1,2": pytest.approx(0.04), "1,4": pytest.approx(0.08)}
  # The overhead model took 100 us; the reference (uniform 0.5: conv 1->2 with its pooling 0.04 ms, dense
  # 2->2 0.02 ms) also took 100 us, so the calibration moves -0.06 ms into the overhead.
  assert table.measurement["uncalibrated_overhead_ms"] == pytest.approx(0.1)
  assert table.overhead_ms == pytest.approx(0.04)
  assert table.predict_ms(space, space.uniform(0.5)) == pytest.approx(0.1)
  other = tfmp.models.small_cnn(input_shape=(8, 8, 1), num_classes=3, channels=(4, 4, 4, 4), divisor=1)
  with pytest.raises(ValueError, match=r"written for space 'one_conv'"):
    latency_lut.latency_table_from_logs(other, str(tmp_path))


def test_profile_entries_maps_a_phone_op_profile_to_table_entries(space):
  s = space.largest()
  rows = [("QUANTIZE", 0.001), ("Convolution (NHWC, QC8) IGEMM", 0.010), ("Max Pooling (NHWC, S8)", 0.002),
          ("Convolution (NHWC, QC8) GEMM", 0.020), ("Convolution (NHWC, QC8) DWConv", 0.005),
          ("Convolution (NHWC, QC8) GEMM", 0.030), ("Add (ND, QS8)", 0.003), ("Mean (ND, QS8)", 0.004),
          ("Fully Connected (NC, QS8) GEMM", 0.006), ("DEQUANTIZE", 0.001)]
  for log in (fixtures.stdout_log("whole", 85, rows), fixtures.csv_log(rows), fixtures.logcat_log("whole", 85, rows)):
    profile = latency_lut.profile_entries(space, s, log)
    # the pool folds into the stem, the add and the global pooling into the project conv, as in the table
    assert profile["entries"] == {"stem": {"1,4": pytest.approx(0.012)}, "expand": {"4,8": pytest.approx(0.020)},
                                  "dw": {"8,8": pytest.approx(0.005)}, "project": {"8,4": pytest.approx(0.037)},
                                  "logits": {"4,3": pytest.approx(0.006)}}
    assert profile["unattributed_ms"] == pytest.approx(0.002)
  assert profile["total_ms"] == pytest.approx(0.085)
  with pytest.raises(ValueError, match="do not line up.*weights: 4 rows vs 5 nodes"):
    latency_lut.profile_entries(space, s, fixtures.stdout_log("whole", 85, rows[:1] + rows[2:]))
  gpu = fixtures.stdout_log("whole", 85, [("TfLiteGpuDelegateV2", 0.08)], delegate="gpu")
  with pytest.raises(ValueError, match="GPU delegate fused the graph into one row.*--write_device_models"):
    latency_lut.profile_entries(space, s, gpu)


def test_validation_structures_are_timed_with_the_table_and_compared(space, table):
  report = table.measurement["validation"]
  assert [r["choices"] for r in report["structures"]] == [list(space.smallest().choices),
                                                          list(space.largest().choices)]
  for row in report["structures"]:
    assert row["predicted_ms"] == pytest.approx(table.predict_ms(space, space.validate(row["choices"])))
    assert row["measured_ms"] > 0
    assert row["relative_error"] == pytest.approx((row["predicted_ms"] - row["measured_ms"]) / row["measured_ms"])
  assert "same conditions" in report["notes"]


def test_bad_arguments_are_quoted_with_the_way_out(space, table):
  with pytest.raises(ValueError, match=r"quantization='int4'"):
    latency_lut.measure_latency_table(space, quantization="int4")
  with pytest.raises(ValueError, match=r"grid_size=1 must be an int >= 2"):
    latency_lut.measure_latency_table(space, grid_size=1)
  with pytest.raises(ValueError, match=r"num_rounds=0"):
    latency_lut.measure_latency_table(space, num_rounds=0)
  other = _single_conv_space()
  with pytest.raises(ValueError, match="measure a table for this space"):
    latency_lut.prediction_error(other, table, [other.largest()])
  with pytest.raises(ValueError, match="at least one structure"):
    latency_lut.prediction_error(space, table, [])


def _se_keras_model():
  """One inverted residual with a squeeze-excite gate, a concat and both global poolings (Keras layers)."""
  import keras  # pylint: disable=g-import-not-at-top
  L = keras.layers
  x = inputs = keras.Input((8, 8, 3))
  x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", use_bias=False)(x)))
  h = L.ReLU(6.0)(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)))
  s = L.GlobalAveragePooling2D(keepdims=True)(h)
  s = L.Activation("sigmoid")(L.Conv2D(8, 1)(L.Conv2D(4, 1, activation="relu")(s)))
  h = L.Multiply()([h, s])
  y = L.Concatenate()([L.Conv2D(8, 1)(h), L.Conv2D(4, 1)(x)])
  y = L.AveragePooling2D(2)(y)
  y = L.Concatenate()([L.GlobalAveragePooling2D()(y), L.GlobalMaxPooling2D()(y)])
  return keras.Model(inputs, L.Dense(3)(y))


def test_every_op_of_a_keras_space_declares_its_latency_entry():
  space = tfmp.SearchSpace.from_keras_model(_se_keras_model(), width_ratios=(0.5, 1.0), divisor=1)
  kinds = {}
  for node in space.nodes:
    op = tfmp.ops.get(node.op)
    kinds.setdefault(node.op, set()).add(op.latency_kind(space, node))
    assert op.latency_kind(space, node) in ("table", "folded", "free")
    assert set(op.profile_kinds(space, node)) <= {"weights", "add", "mul", "pool", "concat", "resize",
                                                  "activation", "pad", "reshape", "other"}
  assert kinds["multiply"] == kinds["concat"] == kinds["avgpool"] == kinds["gmp"] == kinds["gap"] == {"folded"}
  assert kinds["bn"] == {"free"}            # folded into the conv before it by the converter
  assert kinds["act"] == {"free", "folded"}   # ReLU6 after a conv is fused; the sigmoid gate is timed
  sigs = latency_lut.layer_signatures(space, grid_size=2)
  gate = [s for s in sigs if s.op == "multiply"]
  assert gate and all(s.broadcast and s.in_hw == (8, 8) and s.num_inputs == 2 for s in gate)
  assert {s.op for s in sigs} >= {"conv", "dwconv", "dense", "multiply", "concat", "avgpool", "gap", "gmp", "act"}
  table = latency_lut.table_from_timings(space, {s.name: 1.0 for s in sigs}, 0.5, 0.1, grid_size=2)
  # The multiply has the gated features' width: it is folded into a conv of that gene, not into the overhead.
  assert any(name.startswith("multiply") for record in table.measurement["nodes"].values()
             for name in record["folded"])
  # The concatenations join several genes: a constant at full width in the overhead.
  assert sum(n.startswith("concatenate") for n in table.measurement["fixed_width_extras"]) == 2


def test_a_broadcast_gate_and_a_concat_convert_to_int8():
  for sig in (latency_lut.LayerSignature(op="multiply", in_hw=(4, 4), cin=8, cout=8, num_inputs=2, broadcast=True),
              latency_lut.LayerSignature(op="concat", in_hw=(4, 4), cin=9, cout=9, num_inputs=2)):
    model = sig.build_model()
    flatbuffer = latency_lut.models._convert(model, "int8", True, np.random.default_rng(0))  # pylint: disable=protected-access
    assert tflite_export.benchmark(flatbuffer, num_runs=2, num_warmup_runs=0).latency_ms > 0
  assert [tuple(t.shape[1:]) for t in latency_lut.LayerSignature(
      op="concat", in_hw=(4, 4), cin=9, cout=9, num_inputs=2).build_model().inputs] == [(4, 4, 5), (4, 4, 4)]
