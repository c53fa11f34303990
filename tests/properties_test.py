"""Properties that hold for every space and structure, checked with hypothesis.

Spaces are drawn at random: a family among the small ones (small CNN,
MobileNetV1/V2, ResNet-20) with random channels or width multiplier, width
ratios and divisor, input 8..16 pixels a side with 1..3 channels, 2..5
classes; structures are random choices in those spaces. Example counts are
low (the suite's time budget) and the draws are derandomized, so CI sees the
same examples every run.
"""

import json

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest
import tensorflow as tf

import tf_metaprune as tfmp
from tf_metaprune import budgets
from tf_metaprune import flops
from tf_metaprune.search import evolution


def _settings(n):
  # No shrinking: a failure reports the example as drawn (shrinking would rebuild models for minutes).
  return hypothesis.settings(max_examples=n, deadline=None, derandomize=True, database=None,
                             phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                             suppress_health_check=list(hypothesis.HealthCheck))


@st.composite
def spaces(draw):
  family = draw(st.sampled_from(["small_cnn", "mobilenet_v1", "mobilenet_v2", "resnet20"]))
  low = 8 if family in ("small_cnn", "resnet20") else 12   # MobileNets stride down to 1x1 below 9-12 px
  shape = (draw(st.integers(low, 16)), draw(st.integers(low, 16)), draw(st.integers(1, 3)))
  ratios = draw(st.lists(st.sampled_from([0.2, 0.25, 0.4, 0.5, 0.75, 1.0]), min_size=1, max_size=4, unique=True))
  kwargs = dict(width_ratios=ratios, divisor=draw(st.sampled_from([1, 2, 4])))
  if family == "small_cnn":
    kwargs["channels"] = tuple(draw(st.integers(1, 12)) for _ in range(4))
  else:
    kwargs["width_multiplier"] = draw(st.sampled_from([0.125, 0.25]))
  return tfmp.models.get(family)(shape, draw(st.integers(2, 5)), **kwargs)


def _structure(data, space):
  return tfmp.Structure([data.draw(st.integers(0, n - 1)) for n in space.num_choices])


@pytest.mark.slow
@_settings(4)
@hypothesis.given(space=spaces(), data=st.data())
def test_rebuilt_model_logits_equal_pruning_net_logits(space, data):
  s = _structure(data, space)
  net = tfmp.PruningNet(space, hidden_units=data.draw(st.integers(0, 3)),
                        bn_mode=data.draw(st.sampled_from(["shared", "switchable"])))
  rng = np.random.default_rng(data.draw(st.integers(0, 100)))
  for v in net.trainable_variables:   # move every weight off its initial value
    v.assign(v.numpy() + 0.05 * rng.standard_normal(v.shape).astype(np.float32))
  x = rng.random((6,) + space.input_shape, dtype=np.float32)
  net.recalibrate(s, x)
  expected = net.call_structure(x, s).numpy()
  got = tfmp.rebuild(net, s)(x, training=False).numpy()
  # float32 sums in another order differ by ~1e-4 after many layers; a wrong slice is O(1) off.
  scale = max(1.0, float(np.abs(expected).max()))
  np.testing.assert_allclose(got, expected, atol=1e-3 * scale, rtol=1e-3)


@_settings(10)
@hypothesis.given(space=spaces(), data=st.data())
def test_space_flops_and_params_equal_those_of_the_rebuilt_model(space, data):
  s = _structure(data, space)
  model = tfmp.rebuild(space, s)
  assert tfmp.count_flops(model) == flops.structure_flops(space, s)
  assert model.count_params() == space.params(s)
  counter = flops.SpaceCounter(space)
  assert int(counter.flops(tf.constant(s.choices, tf.int32)).numpy()) == flops.structure_flops(space, s)
  assert int(counter.params(tf.constant(s.choices, tf.int32)).numpy()) == space.params(s)


@_settings(25)
@hypothesis.given(space=spaces(), data=st.data())
def test_structure_and_space_round_trip_through_json(space, data):
  s = _structure(data, space)
  text = space.structure_to_json(s, accuracy=0.5)
  assert space.structure_from_json(text) == s
  payload = json.loads(text)
  assert payload["channels"] == space.channels(s) and payload["params"] == space.params(s)
  assert tfmp.Structure.from_config(json.loads(json.dumps(s.get_config()))) == s
  again = tfmp.SearchSpace.from_json(space.to_json())
  assert again.fingerprint() == space.fingerprint() and again.structure_from_json(text) == s
  assert space.from_channels(space.channels(s)) == s


def _ties_hold(space, choices):
  """Every residual add joins inputs of one width (layers reading one gene move together)."""
  ch = space.node_channels(tfmp.Structure(choices))
  return all(len({ch[i] for i in node.inputs}) == 1 for node in space.nodes if node.op == "add")


@_settings(20)
@hypothesis.given(space=spaces(), data=st.data())
def test_mutation_and_crossover_stay_in_range_and_respect_ties(space, data):
  n = np.array(space.num_choices, np.int32)
  parents = np.array([_structure(data, space).choices for _ in range(data.draw(st.integers(2, 5)))], np.int32)
  gen = tf.random.Generator.from_seed(data.draw(st.integers(0, 2**31 - 1)))
  prob = data.draw(st.floats(0.05, 1.0))
  children, idx = (t.numpy() for t in evolution.mutate(gen, tf.constant(parents), 40, prob, tf.constant(n)))
  base = parents[idx]
  assert ((children >= 0) & (children < n)).all()
  np.testing.assert_array_equal(children[:, n == 1], base[:, n == 1])   # a single choice never moves
  moved = children != base
  assert all(_ties_hold(space, c) for c in children)
  if prob == 1.0:
    assert moved[:, n > 1].all()
  kids, a, b = (t.numpy() for t in evolution.crossover(gen, tf.constant(parents), 40))
  assert (a != b).all() and ((kids == parents[a]) | (kids == parents[b])).all()
  assert ((kids >= 0) & (kids < n)).all() and all(_ties_hold(space, c) for c in kids)


@st.composite
def budgets_for(draw, space):
  """A random budget whose bounds lie inside the space's range, and the toy latency table."""
  table = budgets.LatencyTable.from_function(space, lambda node, ci, co: 1e-3 * ci * co + 1e-2, overhead_ms=0.1)
  lo_s, hi_s = space.smallest(), space.largest()
  ranges = {"flops": (space.mflops(lo_s), space.mflops(hi_s)), "params": (space.params(lo_s), space.params(hi_s)),
            "latency": (table.predict_ms(space, lo_s), table.predict_ms(space, hi_s))}

  def leaf(kind):
    lo, hi = ranges[kind]
    top = draw(st.floats(lo, hi))
    bottom = draw(st.one_of(st.none(), st.floats(0.0, top)))
    if kind == "flops":
      return budgets.FlopsBudget(max_mflops=top, min_mflops=bottom)
    if kind == "params":
      return budgets.ParamsBudget(max_params=top, min_params=bottom)
    return budgets.LatencyBudget(max_ms=top, lut=table, min_ms=bottom)

  kinds = draw(st.lists(st.sampled_from(["flops", "params", "latency"]), min_size=1, max_size=3))
  leaves = [leaf(k) for k in kinds]
  return (leaves[0] if len(leaves) == 1 else budgets.AllOf(*leaves)), table


@_settings(25)
@hypothesis.given(space=spaces(), data=st.data())
def test_every_budget_is_feasible_agrees_with_the_counted_value(space, data):
  budget, table = data.draw(budgets_for(space))
  structures = [_structure(data, space) for _ in range(6)] + [space.smallest(), space.largest()]

  def counted_ok(leaf, s):
    if isinstance(leaf, budgets.FlopsBudget):
      v, lo, hi = flops.structure_flops(space, s) / 1e6, leaf.min_mflops, leaf.max_mflops
    elif isinstance(leaf, budgets.ParamsBudget):
      v, lo, hi = space.params(s), leaf.min_params, leaf.max_params
    else:
      v, lo, hi = table.predict_ms(space, s), leaf.min_ms, leaf.max_ms
    return v <= hi and (lo is None or v >= lo)

  in_graph = budget.is_feasible_tensor(space, tf.constant([s.choices for s in structures], tf.int32)).numpy()
  for s, graph_ok in zip(structures, in_graph):
    want = all(counted_ok(leaf, s) for leaf in budget.leaves())
    assert budget.is_feasible(space, s) == want == bool(graph_ok), (budget, s)
  roundtrip = budgets.budget_from_config(json.loads(json.dumps(budget.get_config())))
  assert [roundtrip.is_feasible(space, s) for s in structures] == [budget.is_feasible(space, s) for s in structures]
