"""Tests of tf_metaprune.budgets: feasibility (numpy and in-graph), checks, configs, latency tables."""

import json
import re

import numpy as np
import pytest
import tensorflow as tf

import tf_metaprune as tfmp
from tf_metaprune import budgets
from tf_metaprune import flops


@pytest.fixture(scope="module")
def space():
  return tfmp.models.small_cnn(input_shape=(12, 12, 1), num_classes=4, channels=(8, 8, 16, 16), divisor=1)


@pytest.fixture(scope="module")
def mbv2():
  return tfmp.models.mobilenet_v2(input_shape=(28, 28, 1), num_classes=10, width_multiplier=0.35)


def _population(space, n, seed=0):
  rng = np.random.default_rng(seed)
  return np.array([space.random(rng).choices for _ in range(n)], np.int32)


def _toy_table(space, overhead_ms=0.25):
  """A table with distinct, hand-checkable entries: ms = 0.001 * cin * cout + 0.01 * node index."""
  index = {n.name: i for i, n in enumerate(space.nodes)}
  return budgets.LatencyTable.from_function(
      space, lambda node, cin, cout: 0.001 * cin * cout + 0.01 * index[node.name], overhead_ms=overhead_ms,
      device="toy")


# ---- in-graph counting ------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["space", "mbv2"])
def test_in_graph_mflops_and_params_of_a_population_equal_the_numpy_count(which, request):
  sp = request.getfixturevalue(which)
  pop = _population(sp, 64)
  counter = flops.SpaceCounter(sp)
  fn = tf.function(lambda c: (counter.mflops(c), counter.params(c)))
  mflops, params = (t.numpy() for t in fn(tf.constant(pop)))
  # Exact in multiply-adds; MFLOPs may differ by one ulp inside tf.function
  # (Grappler turns `/ 1e6` into `* 1e-6`), which budgets compensate for.
  np.testing.assert_array_equal(np.round(mflops * 1e6).astype(np.int64),
                                [flops.structure_flops(sp, s) for s in pop])
  np.testing.assert_allclose(mflops, [sp.mflops(s) for s in pop], rtol=1e-15, atol=0)
  np.testing.assert_array_equal(params, [sp.params(s) for s in pop])


def test_flops_budget_on_the_exact_boundary_agrees_in_graph_and_in_python(space):
  pop = _population(space, 200, seed=5)
  counter = flops.SpaceCounter(space)
  for s in pop[:12]:
    # max = min = this structure's own MFLOPs: feasible in both paths, for every structure.
    b = budgets.FlopsBudget(max_mflops=space.mflops(s), min_mflops=space.mflops(s))
    ok = tf.function(lambda c, b=b: b.is_feasible_tensor(counter, c))(tf.constant(pop)).numpy()
    np.testing.assert_array_equal(ok, [b.is_feasible(space, t) for t in pop])
    assert b.is_feasible(space, s)


def test_in_graph_feasibility_equals_python_feasibility_for_every_budget_kind(mbv2):
  pop = _population(mbv2, 300, seed=1)
  mf = np.array([mbv2.mflops(s) for s in pop])
  table = _toy_table(mbv2)
  ms = np.array([table.predict_ms(mbv2, s) for s in pop])
  params = np.array([mbv2.params(s) for s in pop])
  cases = [
      budgets.FlopsBudget(max_mflops=float(np.median(mf))),
      budgets.FlopsBudget(max_mflops=float(np.quantile(mf, 0.8)), min_mflops=float(np.quantile(mf, 0.3))),
      budgets.ParamsBudget(max_params=int(np.median(params))),
      budgets.LatencyBudget(max_ms=float(np.median(ms)), lut=table),
      budgets.AllOf(budgets.FlopsBudget(max_mflops=float(np.quantile(mf, 0.7))),
                    budgets.LatencyBudget(max_ms=float(np.quantile(ms, 0.6)), lut=table)),
  ]
  counter = flops.SpaceCounter(mbv2)
  for b in cases:
    got = tf.function(lambda c, b=b: b.is_feasible_tensor(counter, c))(tf.constant(pop)).numpy()
    want = np.array([b.is_feasible(mbv2, s) for s in pop])
    np.testing.assert_array_equal(got, want, err_msg=repr(b))
    assert 0 < want.sum() < len(pop), f"{b!r} should split the population"


# ---- checks and errors ------------------------------------------------------------------------


def test_infeasible_flops_budget_errors_quoting_budget_and_smallest_structure(space):
  smallest = space.mflops(space.smallest())
  b = budgets.FlopsBudget(max_mflops=smallest / 2)
  with pytest.raises(ValueError) as e:
    b.check(space)
  msg = str(e.value)
  assert msg.startswith(f"FlopsBudget(max_mflops={smallest / 2!r}) is below the smallest structure")
  assert f"({smallest:.6g} MFLOPs)" in msg and "raise the budget" in msg
  budgets.FlopsBudget(max_mflops=smallest).check(space)  # exactly the smallest is feasible


def test_infeasible_params_budget_and_unreachable_minimum_error(space):
  with pytest.raises(ValueError, match=r"ParamsBudget\(max_params=10.0\) is below the smallest structure"):
    budgets.ParamsBudget(max_params=10).check(space)
  full = space.mflops(space.largest())
  with pytest.raises(ValueError, match="above the largest structure"):
    budgets.FlopsBudget(max_mflops=2 * full, min_mflops=1.5 * full).check(space)


def test_bad_budget_arguments_error_with_the_value(space):
  with pytest.raises(ValueError, match=r"max_mflops=-1.0"):
    budgets.FlopsBudget(max_mflops=-1)
  with pytest.raises(ValueError, match="min_mflops is above max_mflops"):
    budgets.FlopsBudget(max_mflops=1.0, min_mflops=2.0)
  with pytest.raises(ValueError, match=r"from_ratio\(ratio=1.5\)"):
    budgets.FlopsBudget.from_ratio(space, 1.5)
  with pytest.raises(ValueError, match="predict_ms"):
    budgets.LatencyBudget(max_ms=1.0, lut=object())
  with pytest.raises(ValueError, match="at least one budget"):
    budgets.AllOf()


def test_from_ratio_is_that_fraction_of_the_full_width_mflops(space):
  b = budgets.FlopsBudget.from_ratio(space, 0.25)
  assert b.max_mflops == pytest.approx(0.25 * space.mflops(space.largest()))
  assert b.is_feasible(space, space.smallest()) and not b.is_feasible(space, space.largest())


# ---- configs ----------------------------------------------------------------------------------


def test_every_budget_round_trips_through_config_and_json(space):
  table = _toy_table(space)
  cases = [
      budgets.FlopsBudget(max_mflops=0.02),
      budgets.FlopsBudget(max_mflops=0.02, min_mflops=0.01),
      budgets.ParamsBudget(max_params=5000),
      budgets.LatencyBudget(max_ms=3.0, lut=table, min_ms=1.0),
      budgets.AllOf(budgets.FlopsBudget(max_mflops=0.03), budgets.ParamsBudget(max_params=4000),
                    budgets.LatencyBudget(max_ms=2.0, lut=table)),
  ]
  pop = _population(space, 50)
  for b in cases:
    config = json.loads(json.dumps(b.get_config()))
    again = budgets.budget_from_config(config)
    assert type(again) is type(b) and again.get_config() == b.get_config() and again == b
    assert [again.is_feasible(space, s) for s in pop] == [b.is_feasible(space, s) for s in pop]
    if not isinstance(b, budgets.AllOf):
      assert type(b).from_config(config) == b


def test_budget_from_config_rejects_unknown_class_and_missing_class_name():
  with pytest.raises(ValueError, match="unknown budget class_name='Nope'"):
    budgets.budget_from_config({"class_name": "Nope"})
  with pytest.raises(ValueError, match="has no 'class_name'"):
    budgets.budget_from_config({"max_mflops": 1.0})


# ---- latency tables ---------------------------------------------------------------------------


def test_latency_table_prediction_is_overhead_plus_sum_of_the_selected_entries(space):
  table = _toy_table(space, overhead_ms=0.25)
  s = space.uniform(0.5)
  ch = space.node_channels(s)
  expected = 0.25
  for node in space.nodes:
    if node.op in ("conv", "dense"):
      expected += table.entries[node.name][f"{ch[node.inputs[0]]},{ch[node.name]}"]
  # Hand check of one term: conv1 reads the 1-channel image.
  assert table.entries["conv1"][f"1,{ch['conv1']}"] == pytest.approx(0.001 * ch["conv1"] + 0.01)
  assert table.predict_ms(space, s) == pytest.approx(expected, rel=1e-12)


def test_latency_table_in_graph_prediction_matches_python(mbv2):
  table = _toy_table(mbv2)
  pop = _population(mbv2, 40, seed=3)
  got = tf.function(lambda c: table.predict_ms_tensor(mbv2, c))(tf.constant(pop)).numpy()
  np.testing.assert_allclose(got, [table.predict_ms(mbv2, s) for s in pop], rtol=1e-12)


def test_latency_table_json_round_trip_and_file(space, tmp_path):
  table = _toy_table(space)
  again = budgets.LatencyTable.from_json(table.to_json())
  assert again == table and again.space_fingerprint == space.fingerprint()
  path = str(tmp_path / "lut.json")
  table.save(path)
  assert budgets.LatencyTable.load(path) == table
  with pytest.raises(ValueError, match="not a tf_metaprune latency table"):
    budgets.LatencyTable.from_json(json.dumps({"format": "something else"}))


def test_latency_table_for_another_space_or_with_gaps_is_rejected(space, mbv2):
  table = _toy_table(space)
  with pytest.raises(ValueError, match="measure a table for this space"):
    budgets.LatencyBudget(max_ms=100.0, lut=table).check(mbv2)
  entries = {k: dict(v) for k, v in table.entries.items()}
  del entries["conv2"][next(iter(entries["conv2"]))]
  gappy = budgets.LatencyTable(None, entries)
  with pytest.raises(ValueError, match=r"lacks 1 entries .*'conv2'"):
    budgets.LatencyBudget(max_ms=100.0, lut=gappy).check(space)
  with pytest.raises(ValueError, match=re.escape("keys are 'in_channels,out_channels'")):
    budgets.LatencyTable(None, {"conv1": {"8x8": 1.0}})


def test_infeasible_latency_budget_quotes_the_fastest_structure(space):
  table = _toy_table(space)
  fastest = table.predict_ms(space, space.smallest())
  with pytest.raises(ValueError, match=r"LatencyBudget\(max_ms=0.1, .*below the smallest structure"):
    budgets.LatencyBudget(max_ms=0.1, lut=table).check(space)
  budgets.LatencyBudget(max_ms=fastest, lut=table).check(space)


def test_latency_budget_accepts_any_predictor_with_predict_ms(space):

  class FlopsTimesTwo:
    def predict_ms(self, sp, structure):
      return 2.0 * sp.mflops(structure)

  full = space.mflops(space.largest())
  b = budgets.LatencyBudget(max_ms=full, lut=FlopsTimesTwo())
  b.check(space)
  pop = _population(space, 40)
  got = tf.function(lambda c: b.is_feasible_tensor(space, c))(tf.constant(pop)).numpy()
  np.testing.assert_array_equal(got, [2 * space.mflops(s) <= full for s in pop])
  assert budgets.latency_predictor(budgets.AllOf(budgets.FlopsBudget(max_mflops=1.0), b)) is b.lut


def test_a_flops_ratio_budget_gets_a_window_by_default_and_zero_turns_it_off(space):
  from tf_metaprune import pipeline
  full = space.mflops(space.largest())
  windowed = pipeline.build_budget(space, flops_ratio=0.5)
  assert windowed.max_mflops == pytest.approx(0.5 * full)
  assert windowed.min_mflops == pytest.approx(pipeline.DEFAULT_WINDOW * 0.5 * full)
  assert pipeline.build_budget(space, flops_ratio=0.5, min_flops_ratio=0.3).min_mflops == pytest.approx(0.3 * full)
  assert pipeline.build_budget(space, flops_ratio=0.5, min_flops_ratio=0).min_mflops is None
  with pytest.raises(ValueError, match=r"min_flops_ratio=0.6\): must be in \[0, flops_ratio=0.5\)"):
    pipeline.PipelineConfig(flops_ratio=0.5, min_flops_ratio=0.6)
  with pytest.raises(ValueError, match=r"min_flops_ratio=0.2\): needs flops_ratio"):
    pipeline.PipelineConfig(max_mflops=1.0, min_flops_ratio=0.2)


def test_a_window_the_uniform_baseline_cannot_land_in_is_refused_before_any_training():
  from tf_metaprune import pipeline
  coarse = pipeline.PipelineConfig(model="small_cnn", flops_ratio=0.5)   # divisor 8: uniform at 42.9%, window 45-50%
  with pytest.raises(ValueError, match=r"below the window's .*lower min_flops_ratio"):
    pipeline.config_budget(coarse, pipeline.build_space(coarse, (28, 28, 1), 10))
  fine = coarse.replace(divisor=1, width_step=0.01)
  assert pipeline.config_budget(fine, pipeline.build_space(fine, (28, 28, 1), 10)).min_mflops is not None


def test_budget_repr_rounds_its_floats_to_six_significant_digits():
  budget = budgets.FlopsBudget(max_mflops=0.2807160000000001, min_mflops=0.25264440000000005)
  assert repr(budget) == "FlopsBudget(max_mflops=0.280716, min_mflops=0.252644)"
  assert budget.min_mflops == 0.25264440000000005   # the limit itself is exact; only its repr is rounded
