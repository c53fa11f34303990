"""Tests of tf_metaprune.search: population ops, evolutionary search, uniform baseline, state, results, plot.

One tiny PruningNet (small_cnn on 12x12 synthetic images, 4 classes) is trained
once for the module (a few seconds) and shared, together with one Evaluator, so
the candidate-evaluation function is traced once for all tests.
"""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import testutil  # tests/testutil.py
from testutil import net_fixture, space_fixture, splits_fixture  # pylint: disable=unused-import  (shared fixtures: net, space, splits)
import tf_metaprune as tfmp
from tf_metaprune import budgets
from tf_metaprune import search
from tf_metaprune.search import evolution

SMALL = dict(population_size=12, top_k=4, num_mutations=4, num_crossovers=4)




@pytest.fixture(scope="module")
def evaluator(net, splits):
  data = tfmp.EvaluationData.from_dataset(splits.search, num_calibration_batches=2)
  return tfmp.Evaluator(net, data)


@pytest.fixture(scope="module")
def budget(space):
  # Tight enough that accuracy is not saturated and most random structures are rejected.
  return budgets.FlopsBudget.from_ratio(space, 0.15)


@pytest.fixture(scope="module")
def mbv2():
  return tfmp.models.mobilenet_v2(input_shape=(28, 28, 1), num_classes=10, width_multiplier=0.35)


def _comparable(result):
  """Everything of a result that must not depend on timing."""
  d = json.loads(result.to_json())
  d.pop("seconds")
  d.pop("trace_counts")
  for h in d["history"]:
    h.pop("seconds")
    h.pop("elapsed_seconds")
  return d


# ---- population operations --------------------------------------------------------------------


def test_mutation_moves_every_chosen_gene_to_a_different_choice_within_range(mbv2):
  n = np.array(mbv2.num_choices, np.int32)
  assert (n == 1).any() and (n > 2).any()  # genes with one choice must never move
  gen = tf.random.Generator.from_seed(1)
  parents = np.array([mbv2.random(np.random.default_rng(i)).choices for i in range(3)], np.int32)
  children, idx = evolution.mutate(gen, tf.constant(parents), 400, 1.0, tf.constant(n))
  children, base = children.numpy(), parents[idx.numpy()]
  assert ((children >= 0) & (children < n)).all()
  np.testing.assert_array_equal(children[:, n == 1], base[:, n == 1])
  assert (children[:, n > 1] != base[:, n > 1]).all()  # probability 1: every movable gene moved
  # Every other choice is reachable (uniform over the n-1 others), e.g. for the widest gene.
  g = int(np.argmax(n))
  assert len(set(children[:, g].tolist())) >= n[g] - 2
  # With the paper's 0.1 roughly a tenth of the movable genes move, and moved ones still differ.
  children, idx = evolution.mutate(gen, tf.constant(parents), 2000, 0.1, tf.constant(n))
  moved = children.numpy() != parents[idx.numpy()]
  assert 0.07 < moved[:, n > 1].mean() < 0.13
  assert ((children.numpy() >= 0) & (children.numpy() < n)).all()


def test_crossover_takes_each_gene_from_one_of_two_different_parents(mbv2):
  gen = tf.random.Generator.from_seed(2)
  parents = np.array([mbv2.random(np.random.default_rng(10 + i)).choices for i in range(4)], np.int32)
  children, a, b = (t.numpy() for t in evolution.crossover(gen, tf.constant(parents), 300))
  assert (a != b).all() and set(a.tolist()) == set(range(4)) and set(b.tolist()) == set(range(4))
  from_a = children == parents[a]
  from_b = children == parents[b]
  assert (from_a | from_b).all()
  differ = parents[a] != parents[b]
  assert 0.4 < from_a[differ].mean() < 0.6  # uniform crossover


def test_random_samplers_stay_in_range_and_scaled_sampling_reaches_tight_budgets(mbv2):
  gen = tf.random.Generator.from_seed(3)
  n = tf.constant(mbv2.num_choices, tf.int32)
  uni = evolution.sample_uniform(gen, tf.constant(500), n).numpy()
  sca = evolution.sample_scaled(gen, tf.constant(500), n).numpy()
  for pop in (uni, sca):
    assert ((pop >= 0) & (pop < np.array(mbv2.num_choices))).all()
  b = budgets.FlopsBudget.from_ratio(mbv2, 0.25)
  acc_uni = b.is_feasible_tensor(mbv2, uni).numpy().mean()
  acc_sca = b.is_feasible_tensor(mbv2, sca).numpy().mean()
  assert acc_sca > 5 * acc_uni and acc_sca > 0.2


def test_evolution_config_round_trips_and_rejects_bad_settings():
  c = search.EvolutionConfig(population_size=20, num_generations=5, seed=7)
  assert search.EvolutionConfig.from_config(json.loads(json.dumps(c.get_config()))) == c
  assert search.EvolutionConfig() == search.EvolutionConfig(
      population_size=50, top_k=10, num_mutations=25, mutation_prob=0.1, num_crossovers=25, num_generations=20)
  with pytest.raises(ValueError, match="mutation_prob=0.0"):
    search.EvolutionConfig(mutation_prob=0.0)
  assert (c.num_mutations, c.num_crossovers) == (10, 10)  # half the population each by default
  with pytest.raises(ValueError, match="exceed the population"):
    search.EvolutionConfig(population_size=10, num_mutations=8)
  with pytest.raises(ValueError, match=r"unknown settings \['populaton_size'\]"):
    search.EvolutionConfig.from_config({"populaton_size": 3})


# ---- the search -------------------------------------------------------------------------------


def test_no_evaluated_candidate_violates_the_budget_and_none_is_evaluated_twice(net, evaluator, space, budget):
  table = budgets.LatencyTable.from_function(space, lambda node, ci, co: 1e-3 * ci * co, overhead_ms=0.1)
  full = budgets.FlopsBudget.from_ratio(space, 1.0)
  ms = table.predict_ms(space, space.uniform(0.4))
  combined = budgets.AllOf(budgets.FlopsBudget.from_ratio(space, 0.3), budgets.ParamsBudget(max_params=900),
                           budgets.LatencyBudget(max_ms=ms, lut=table))
  for b in (budget, combined):
    result = search.evolutionary(net, evaluator, b, num_generations=3, verbose=0, **SMALL)
    assert result.num_evaluations >= 12
    assert all(b.is_feasible(space, c.structure) for c in result.candidates)
    assert len({c.choices for c in result.candidates}) == result.num_evaluations
    # A real constraint: the unconstrained random start would have broken it.
    assert any(not b.is_feasible(space, space.random(i)) for i in range(20))
    assert full.is_feasible(space, result.best_structure)
  # Latency was recorded for every candidate because a LatencyBudget was given.
  assert all(c.latency_ms == pytest.approx(table.predict_ms(space, c.structure)) for c in result.candidates)
  assert result.best_latency_ms is not None and result.best_latency_ms <= ms


def test_search_traces_evaluation_and_population_functions_once(net, evaluator, budget):
  result = search.evolutionary(net, evaluator, budget, num_generations=3, verbose=0, **SMALL)
  assert result.trace_counts == {"evaluator": 1, "population_ops": 1}
  assert [h["generation"] for h in result.history] == [0, 1, 2]
  assert result.history[-1]["evaluations"] == result.num_evaluations
  # Fitness: the Evaluator's accuracy (recalibration + top-1 on the search split), cached per structure.
  c = result.candidates[5]
  assert c.accuracy == pytest.approx(evaluator.accuracy(c.structure))


def test_search_finds_a_structure_at_least_as_accurate_as_the_uniform_baseline(net, evaluator, space, budget):
  base = search.uniform(net, evaluator, budget)
  found = search.evolutionary(net, evaluator, budget, num_generations=4, verbose=0, **SMALL)
  assert budget.is_feasible(space, found.best_structure) and budget.is_feasible(space, base.best_structure)
  assert found.best_accuracy >= base.best_accuracy
  # The best of the history never decreases, and the top-k is sorted best first.
  best = [h["best_accuracy"] for h in found.history]
  assert best == sorted(best)
  assert [c.accuracy for c in found.top_k] == sorted((c.accuracy for c in found.top_k), reverse=True)


def test_uniform_baseline_is_the_largest_grid_ratio_meeting_the_budget(net, evaluator, space, budget):
  base = search.uniform(net, evaluator, budget)
  r = base.extra["width_ratio"]
  assert base.best_structure == space.uniform(r) and budget.is_feasible(space, space.uniform(r))
  larger = [x for x in search.default_ratio_grid(space) if x > r]
  assert larger and not any(budget.is_feasible(space, space.uniform(x)) for x in larger)
  assert base.best_accuracy == pytest.approx(evaluator.accuracy(space.uniform(r)))
  assert search.uniform(net, evaluator, None).best_structure == space.largest()


def test_dataset_search_data_is_turned_into_evaluation_data_of_the_search_split(net, splits, budget):
  result = search.uniform(net, splits, budget, num_calibration_batches=1)
  assert result.extra["num_eval_images"] == splits.num_examples["search"]
  assert result.extra["num_calibration_images"] == 32
  with pytest.raises(TypeError, match="search_data"):
    search.uniform(net, np.zeros((4, 12, 12, 1)), budget)


def test_infeasible_budget_errors_at_once_before_any_evaluation(net, evaluator, space):
  smallest = space.mflops(space.smallest())
  calls = []

  spy = testutil.counting_evaluator(net, evaluator.data, calls)
  too_small = budgets.FlopsBudget(max_mflops=smallest * 0.5)
  with pytest.raises(ValueError, match=r"FlopsBudget\(max_mflops=.*\) is below the smallest structure in this "
                     r"space \(.* MFLOPs\); raise the budget"):
    search.evolutionary(net, spy, too_small, verbose=0)
  with pytest.raises(ValueError, match="below the smallest structure"):
    search.uniform(net, spy, too_small)
  assert not calls and spy.trace_count == 0


def test_resumed_search_ends_with_the_same_result_as_an_uninterrupted_one(net, evaluator, budget, tmp_path):
  path = str(tmp_path / "state.json")
  first = search.evolutionary(net, evaluator, budget, num_generations=2, state_path=path, verbose=0, **SMALL)
  state = json.load(open(path))
  assert state["generation"] == 2 and len(state["cache"]) == first.num_evaluations
  assert {"rng", "population", "history"} <= set(state)   # the payload; what must match to resume:
  assert {"config", "budget", "space_fingerprint"} <= set(state["identity"]) and state["format"].endswith("State")
  resumed = search.evolutionary(net, evaluator, budget, num_generations=4, state_path=path, verbose=0, **SMALL)
  straight = search.evolutionary(net, evaluator, budget, num_generations=4, verbose=0, **SMALL)
  assert resumed.candidates[:first.num_evaluations] == first.candidates
  assert resumed.num_evaluations > first.num_evaluations
  assert _comparable(resumed) == _comparable(straight)
  # A finished state returns the same result without evaluating anything.
  again = search.evolutionary(net, evaluator, budget, num_generations=4, state_path=path, verbose=0, **SMALL)
  assert _comparable(again) == _comparable(straight)


def test_state_file_of_another_search_is_rejected_and_left_untouched(net, evaluator, space, budget, tmp_path):
  path = str(tmp_path / "state.json")
  search.evolutionary(net, evaluator, budget, num_generations=1, state_path=path, verbose=0, **SMALL)
  before = open(path).read()
  other_budget = budgets.FlopsBudget.from_ratio(space, 0.5)
  with pytest.raises(ValueError, match=r"belongs to another run: the budget differs .*FlopsBudget"):
    search.evolutionary(net, evaluator, other_budget, num_generations=2, state_path=path, verbose=0, **SMALL)
  with pytest.raises(ValueError, match=r"config\.seed differs \(saved 0, now 1\); only \['config\.num_generations'\] may change"):
    search.evolutionary(net, evaluator, budget, num_generations=2, state_path=path, verbose=0, seed=1, **SMALL)
  other_space = tfmp.models.small_cnn(input_shape=(12, 12, 1), num_classes=4, channels=(8, 8, 16, 12), divisor=1)
  other_net = tfmp.PruningNet(other_space, hidden_units=4)
  with pytest.raises(ValueError, match="the search space differs"):
    search.evolutionary(other_net, evaluator.data, budgets.FlopsBudget.from_ratio(other_space, 0.15),
                        num_generations=2, state_path=path, verbose=0, **SMALL)
  junk = str(tmp_path / "junk.json")
  with open(junk, "w") as f:
    f.write('{"hello": 1}')
  with pytest.raises(ValueError, match="not an evolution search state"):
    search.evolutionary(net, evaluator, budget, state_path=junk, verbose=0, **SMALL)
  assert open(path).read() == before


def test_progress_lines_print_per_generation_and_verbose_zero_is_silent(net, evaluator, budget, capsys):
  search.evolutionary(net, evaluator, budget, num_generations=2, verbose=0, **SMALL)
  assert capsys.readouterr().out == ""
  search.evolutionary(net, evaluator, budget, num_generations=2, verbose=1, **SMALL)
  lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("[evolution]")]
  assert len(lines) == 2 and "generation 2/2" in lines[1] and "evaluated" in lines[1]


# ---- results and plots ------------------------------------------------------------------------


def test_search_result_round_trips_through_json_and_file_and_checks_its_space(net, evaluator, space, budget,
                                                                             tmp_path):
  result = search.evolutionary(net, evaluator, budget, num_generations=2, verbose=0, **SMALL)
  again = search.SearchResult.from_json(result.to_json())
  assert again == result
  path = str(tmp_path / "result.json")
  result.save(path)
  loaded = search.SearchResult.load(path)
  assert loaded == result and loaded.structure(space) == result.best_structure
  assert budgets.budget_from_config(loaded.budget) == budget
  assert loaded.best_mflops == space.mflops(loaded.best_structure)
  assert loaded.best_params == space.params(loaded.best_structure)
  other = tfmp.models.small_cnn(input_shape=(12, 12, 1), num_classes=4, channels=(8, 8, 16, 12), divisor=1)
  with pytest.raises(ValueError, match="pass the space the search ran on"):
    loaded.structure(other)


def test_plot_pareto_writes_a_png(net, evaluator, budget, tmp_path):
  result = search.evolutionary(net, evaluator, budget, num_generations=2, verbose=0, **SMALL)
  base = search.uniform(net, evaluator, budget)
  path = str(tmp_path / "plots" / "pareto.png")
  assert search.plot_pareto(result, path, uniform_result=base) == path
  with open(path, "rb") as f:
    head = f.read(8)
  assert head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 10_000


# ---- the FLOPs window, the uniform baseline, the fitness --------------------------------------------------------


def test_every_candidate_the_evolution_evaluates_lies_inside_the_flops_window(net, evaluator, space):
  budget = budgets.FlopsBudget.from_ratio(space, 0.5, min_ratio=0.4)
  calls = []
  spy = testutil.counting_evaluator(net, evaluator.data, calls)
  result = search.evolutionary(net, spy, budget, num_generations=3, verbose=0, **SMALL)
  scored = [tuple(np.asarray(c).tolist()) for c in calls]
  assert len(scored) == result.num_evaluations >= 12
  flops = [space.mflops(tfmp.Structure(c)) for c in scored]
  assert min(flops) >= budget.min_mflops and max(flops) <= budget.max_mflops


def test_uniform_baseline_is_one_ratio_for_every_gene_and_inside_the_window(net, evaluator):
  # The small CNN's real widths (16-128) on the finer grid: divisor 1, width ratios 0.10, 0.11, ..., 1.00.
  fine = tfmp.models.small_cnn(input_shape=(28, 28, 1), num_classes=10, divisor=1,
                               width_ratios=tfmp.pipeline.width_ratios(0.1, 0.01))
  for ratio in (0.1, 0.25, 0.5):
    budget = budgets.FlopsBudget.from_ratio(fine, ratio, min_ratio=0.9 * ratio)
    r, s = search.largest_uniform(fine, budget)
    assert budget.is_feasible(fine, s)
    for gene, layer_ratio in search.layer_width_ratios(fine, s).items():
      base = next(g.base_channels for g in fine.genes if g.name == gene)
      assert abs(layer_ratio - r) <= 0.5 / base + 1e-9, (gene, layer_ratio, r)   # one ratio, up to a channel
  base = search.uniform(net, evaluator, budgets.FlopsBudget.from_ratio(net.space, 0.5, min_ratio=0.4))
  assert set(base.extra["layer_width_ratios"]) == {g.name for g in net.space.genes}
  assert 0.4 * net.space.mflops(net.space.largest()) <= base.best_mflops


def test_uniform_that_cannot_land_in_the_window_says_how_to_widen_it(space):
  full = space.mflops(space.largest())
  ratio, s = search.largest_uniform(space, budgets.FlopsBudget.from_ratio(space, 0.5))
  below = space.mflops(s)   # the largest uniform structure under 50%; a window just above it holds none
  budget = budgets.FlopsBudget(max_mflops=0.5 * full, min_mflops=min(0.5 * full, below * 1.0001))
  if budget.is_feasible(space, s):
    pytest.skip("the uniform structure sits on the limit")
  with pytest.raises(ValueError, match=r"below the window's .*lower min_flops_ratio .*divisor=1, width_step=0.01"):
    search.largest_uniform(space, budget)


def test_ranking_never_prefers_fewer_flops_on_a_tie():
  big = search.Candidate(choices=(1, 1), accuracy=0.5, mflops=9.0, params=90, loss=0.7)
  small = search.Candidate(choices=(0, 0), accuracy=0.5, mflops=1.0, params=10, loss=0.9)
  assert search.result.rank([small, big])[0] is big   # equal accuracy: the lower loss wins, not fewer FLOPs
  same_small = search.Candidate(choices=(0, 0), accuracy=0.5, mflops=1.0, params=10, loss=0.7)
  assert search.result.rank([big, same_small])[0] is big   # a full tie: the earlier evaluated, whatever the FLOPs
  assert search.result.rank([same_small, big])[0] is same_small
  better = search.Candidate(choices=(2, 2), accuracy=0.51, mflops=1.0, params=10, loss=2.0)
  assert search.result.rank([big, better])[0] is better   # accuracy first


def test_evolution_records_the_loss_and_rescore_picks_the_best_of_the_top_k_on_more_data(net, evaluator, space,
                                                                                          splits):
  budget = budgets.FlopsBudget.from_ratio(space, 0.5, min_ratio=0.4)
  found = search.evolutionary(net, evaluator, budget, num_generations=2, verbose=0, **SMALL)
  assert all(c.loss is not None and c.loss > 0 for c in found.candidates)
  more = tfmp.Evaluator(net, tfmp.EvaluationData.from_dataset(splits.search, num_calibration_batches=4,
                                                              calibration_dataset=splits.calibration))
  picked = search.rescore(found, more, top_k=3)
  assert len(picked.extra["rescored"]) == 3 and picked.extra["search_best"]["choices"] == list(found.best.choices)
  assert picked.best.choices in {c.choices for c in found.top_k[:3]}
  assert picked.best.accuracy == max(r["rescored_accuracy"] for r in picked.extra["rescored"])
  assert search.SearchResult.from_json(picked.to_json()).best.loss == picked.best.loss


# ---- per-layer minimum width and trust region ---------------------------------------------------


def _gene_ratios(space, choices):
  return np.array([g.channels[c] / g.base_channels for g, c in zip(space.genes, choices)])


def test_min_layer_ratio_and_trust_region_keep_every_candidate_inside_their_ranges(net, evaluator, space):
  budget = budgets.FlopsBudget.from_ratio(space, 0.5, min_ratio=0.3)
  free = search.evolutionary(net, evaluator, budget, num_generations=3, verbose=0, **SMALL)
  _, centre = evolution.uniform_lib.largest_uniform(space, budget)
  u = _gene_ratios(space, centre.choices)
  limited = search.evolutionary(net, evaluator, budget, num_generations=3, verbose=0, min_layer_ratio=0.3,
                                trust_region=0.2, **SMALL)
  ranges = limited.extra["choice_ranges"]
  assert ranges != [[0, g.num_choices - 1] for g in space.genes]   # the limits bind in this space
  for c in limited.candidates:
    r = _gene_ratios(space, c.choices)
    assert (r >= 0.3 - 1e-9).all() and (np.abs(r - u) <= 0.2 + 1e-9).all()
    assert all(lo <= ch <= hi for ch, (lo, hi) in zip(c.choices, ranges))
    assert budget.is_feasible(space, c.structure)
  # Without the limits the same search does visit shapes outside them (so the check above could fail).
  outside = [c for c in free.candidates
             if (_gene_ratios(space, c.choices) < 0.3 - 1e-9).any()
             or (np.abs(_gene_ratios(space, c.choices) - u) > 0.2 + 1e-9).any()]
  assert outside
  assert len({c.choices for c in limited.candidates}) == limited.num_evaluations


def test_limits_at_their_defaults_leave_the_search_and_its_identity_unchanged(net, evaluator, budget):
  plain = search.evolutionary(net, evaluator, budget, num_generations=2, verbose=0, **SMALL)
  explicit = search.evolutionary(net, evaluator, budget, num_generations=2, verbose=0, min_layer_ratio=0.0,
                                 trust_region=None, **SMALL)
  assert [c.choices for c in plain.candidates] == [c.choices for c in explicit.candidates]
  config = evolution.EvolutionConfig()
  assert "min_layer_ratio" not in config.get_config() and "trust_region" not in config.get_config()
  limited = evolution.EvolutionConfig(min_layer_ratio=0.2, trust_region=0.15)
  assert evolution.EvolutionConfig.from_config(json.loads(json.dumps(limited.get_config()))) == limited
  assert limited.get_config()["trust_region"] == 0.15


@pytest.mark.parametrize("bad", [dict(min_layer_ratio=1.0), dict(min_layer_ratio=-0.1), dict(trust_region=True),
                                 dict(trust_region="0.2")])
def test_bad_limits_name_the_value(bad):
  (name, value), = bad.items()
  with pytest.raises(ValueError, match=f"{name}={value!r}"):
    evolution.EvolutionConfig(**bad)


def test_a_limit_that_leaves_a_gene_no_choice_names_the_gene(space):
  budget = budgets.FlopsBudget.from_ratio(space, 0.3)
  config = evolution.EvolutionConfig(min_layer_ratio=0.9, trust_region=0.05)
  with pytest.raises(ValueError, match="leaves gene .* no choice"):
    evolution.choice_ranges(space, budget, config)


# ---- the final pick by a short fine-tune --------------------------------------------------------


def test_finetune_pick_trains_each_of_the_top_k_and_picks_the_best_after_training(net, evaluator, space, splits):
  budget = budgets.FlopsBudget.from_ratio(space, 0.5, min_ratio=0.4)
  found = search.evolutionary(net, evaluator, budget, num_generations=2, verbose=0, **SMALL)
  built = []

  def build(s):
    built.append(s.choices)
    return tfmp.rebuild(net, s, bn_momentum=0.9)

  picked = search.finetune_pick(found, build, splits.train, splits.search, top_k=2, steps=2)
  rows = picked.extra["finetune_pick"]
  assert built == [c.choices for c in found.top_k[:2]]   # each of the search's best two, in its order
  assert [r["choices"] for r in rows] == [list(c) for c in built]
  assert picked.best.accuracy == max(r["finetuned_accuracy"] for r in rows)
  assert picked.best.choices in set(built) and picked.extra["search_best"]["choices"] == list(found.best.choices)
  assert [c.accuracy for c in picked.top_k] == sorted((r["finetuned_accuracy"] for r in rows), reverse=True)
  # The scores are of the fine-tuned models, not the search's proxy scores.
  assert any(r["finetuned_loss"] != pytest.approx(r["search_loss"]) for r in rows)
  assert search.SearchResult.from_json(picked.to_json()).best.choices == picked.best.choices
  with pytest.raises(ValueError, match="top_k=0"):
    search.finetune_pick(found, build, splits.train, splits.search, top_k=0)
  with pytest.raises(ValueError, match="no top-k"):
    search.finetune_pick(dataclasses.replace(found, top_k=[]), build, splits.train, splits.search)
