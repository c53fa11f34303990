"""Tests of tf_metaprune.search.autoslim: slimmable network, greedy slimming, budgets, resuming.

One slimmable network (small_cnn on 12x12 synthetic images, 4 classes, 3
epochs) is trained once for the module and shared with one Evaluator, so the
candidate-evaluation function is traced once.
"""

import json
import os

import keras
import numpy as np
import pytest

import tf_metaprune as tfmp
from tf_metaprune import budgets
from tf_metaprune import search
from tf_metaprune import training
from tf_metaprune.search import autoslim


RATIOS = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)   # smallest: 2, 2, 4, 4 channels
CONFIG = search.AutoSlimConfig(epochs=3, step_width_ratio=0.125)


@pytest.fixture(scope="module")
def space():
  return tfmp.models.small_cnn(input_shape=(12, 12, 1), num_classes=4, channels=(8, 8, 16, 16), divisor=1,
                               width_ratios=RATIOS)


@pytest.fixture(scope="module")
def splits():
  return tfmp.data.synthetic(num_examples=512, input_shape=(12, 12, 1), num_classes=4, batch_size=32)


@pytest.fixture(scope="module")
def data(splits):
  return tfmp.EvaluationData.from_dataset(splits.search, num_calibration_batches=2, calibration_dataset=splits.train)


@pytest.fixture(scope="module")
def untrained_accuracy(space, data):
  keras.utils.set_random_seed(0)
  net = autoslim.slimmable_net(space)
  evaluator = tfmp.Evaluator(net, data)
  return {s: evaluator.accuracy(getattr(space, s)()) for s in ("smallest", "largest")}


@pytest.fixture(scope="module")
def run_dir(space, splits, untrained_accuracy, tmp_path_factory):
  """`search.run("autoslim", ...)` once: trains the slimmable network (3 epochs) and slims it to 50%."""
  del untrained_accuracy  # measured on a fresh net before this one is trained
  out = str(tmp_path_factory.mktemp("autoslim"))
  search.run("autoslim", space, budgets.FlopsBudget.from_ratio(space, 0.5), train_data=splits, config=CONFIG,
             output_dir=out, verbose=0)
  return out


@pytest.fixture(scope="module")
def net(space, splits, run_dir):
  return autoslim.train_slimmable(space, splits.train, CONFIG, output_dir=os.path.join(run_dir, "slimmable"))


@pytest.fixture(scope="module")
def evaluator(net, data):
  return tfmp.Evaluator(net, data)


def _fake_accuracy(space, weights):
  """A known accuracy: a weighted sum of each gene's width ratio (so the greedy choice is predictable)."""
  def fn(s):
    ch = space.gene_channels(s) / np.array([g.base_channels for g in space.genes])
    return float(np.dot(weights, ch) / np.sum(weights))
  return fn


def test_slimmable_net_is_a_sandwich_trained_weight_sharing_pruning_net_that_learns(net, evaluator,
                                                                                     untrained_accuracy, space):
  assert isinstance(net, tfmp.PruningNet)
  assert (net.hidden_units, net.sampling, net.distill, net.structures_per_step) == (0, "sandwich", True, 4)
  assert net.generator_params() == 0
  # The sandwich rule trains both ends: the smallest and the largest beat their untrained selves.
  for end in ("smallest", "largest"):
    assert evaluator.accuracy(getattr(space, end)()) > untrained_accuracy[end] + 0.1, end


def test_shrink_moves_one_gene_down_by_at_least_the_step(space):
  s = space.largest()
  g = space.genes[2]                              # base 16: choices 4, 6, ..., 16
  t = autoslim.shrink(space, s, 2, 0.2)
  assert [a == b for a, b in zip(s, t)] == [True, True, False, True]
  assert g.channels[t[2]] == 12 == max(c for c in g.channels if c <= 16 - 0.2 * 16)
  assert autoslim.shrink(space, space.smallest(), 0, 0.1) is None
  # At least one choice down even for a tiny step.
  assert autoslim.shrink(space, s, 0, 1e-6)[0] == s[0] - 1


def test_greedy_walk_commits_the_best_trial_and_records_each_budget_where_first_met(space):
  weights = np.array([4.0, 1.0, 3.0, 2.0])        # gene 1 is the cheapest to shrink, then 3, 2, 0
  b50, b25 = budgets.FlopsBudget.from_ratio(space, 0.5), budgets.FlopsBudget.from_ratio(space, 0.25)
  path = autoslim.greedy_slimming(space, _fake_accuracy(space, weights), [b25, b50], 0.125)
  assert path.steps[0].choices == space.largest().choices
  for step, committed in enumerate(path.steps[1:], start=1):
    trials = [c for c in path.trials if c.generation == step]
    assert committed.accuracy == max(c.accuracy for c in trials)
    assert committed.mflops < path.steps[step - 1].mflops
    assert sum(a != b for a, b in zip(committed.choices, path.steps[step - 1].choices)) == 1
  first = path.steps[1]
  assert first.choices[1] < space.largest().choices[1]   # the least important gene went first
  for budget, reached in zip([b25, b50], path.reached):
    i = reached.generation
    assert budget.is_feasible(space, reached.structure)
    assert not any(budget.is_feasible(space, c.structure) for c in path.steps[:i])
  # One pass: the walk stopped at the tighter budget, passing the looser one on its way.
  assert path.reached[1].generation < path.reached[0].generation == len(path.steps) - 1
  with pytest.raises(ValueError, match="at least one budget"):
    autoslim.greedy_slimming(space, _fake_accuracy(space, weights), [])


def test_residual_tied_layers_shrink_together():
  space = tfmp.models.resnet20(input_shape=(8, 8, 3), num_classes=4, width_ratios=(0.25, 0.5, 0.75, 1.0),
                               divisor=1)
  adds = [n for n in space.nodes if n.op == "add"]
  path = autoslim.greedy_slimming(space, _fake_accuracy(space, np.ones(len(space.genes))),
                                  [budgets.FlopsBudget.from_ratio(space, 0.3)], 0.25)
  assert len(path.steps) > 5
  moved_stage = False
  for a, b in zip(path.steps, path.steps[1:]):
    ca, cb = space.node_channels(a.structure), space.node_channels(b.structure)
    for add in adds:   # every residual add still joins equal widths
      assert len({cb[i] for i in add.inputs}) == 1
    changed = {n for n in ca if ca[n] != cb[n] and space.node_by_name[n].op == "conv"}
    moved_stage |= len(changed) > 1
  assert moved_stage  # a stage gene moved several convs at once


def test_slim_meets_each_budget_in_one_pass_and_beats_uniform(net, evaluator, space):
  b50, b25 = budgets.FlopsBudget.from_ratio(space, 0.5), budgets.FlopsBudget.from_ratio(space, 0.25)
  r50, r25 = search.slim(net, evaluator, [b50, b25], step_width_ratio=0.125, verbose=0)
  for r, b in ((r50, b50), (r25, b25)):
    assert r.method == "autoslim" and b.is_feasible(space, r.best_structure)
    assert space.validate(r.best.choices) == r.structure(space)
    assert r.best.accuracy == pytest.approx(evaluator.accuracy(r.best_structure))
    assert r.trace_counts == {"evaluator": 1}
    assert search.SearchResult.from_json(r.to_json()) == r
  assert r25.extra["path"][:len(r50.extra["path"])] == r50.extra["path"]   # the same walk
  assert r25.num_evaluations > r50.num_evaluations
  # Improves over its own start: better than shrinking every layer alike to the same budget.
  base = search.uniform(net, evaluator, b25)
  assert r25.best_accuracy >= base.best_accuracy
  assert [h["generation"] for h in r25.history] == list(range(len(r25.extra["path"])))


def test_autoslim_config_round_trips_and_rejects_bad_settings():
  c = search.AutoSlimConfig(epochs=3, step_width_ratio=0.2)
  assert search.AutoSlimConfig.from_config(json.loads(json.dumps(c.get_config()))) == c
  with pytest.raises(ValueError, match=r"step_width_ratio=0"):
    search.AutoSlimConfig(step_width_ratio=0)
  with pytest.raises(ValueError, match=r"structures_per_step=1\): structures_per_step must be an int >= 2"):
    search.AutoSlimConfig(structures_per_step=1)
  with pytest.raises(ValueError, match=r"unknown settings \['epoch'\]"):
    search.AutoSlimConfig.from_config({"epoch": 3})


def test_infeasible_budget_fails_before_any_evaluation(net, evaluator, space):
  low = budgets.FlopsBudget(max_mflops=space.mflops(space.smallest()) * 0.5)
  with pytest.raises(ValueError, match="below the smallest structure"):
    search.slim(net, evaluator, [low], verbose=0)


def test_run_trains_once_and_a_rerun_reuses_the_trained_network(space, splits, run_dir, monkeypatch):
  budget = budgets.FlopsBudget.from_ratio(space, 0.5)
  assert os.path.exists(os.path.join(run_dir, "slimmable", "slimmable.weights.h5"))
  first = search.SearchResult.load(os.path.join(run_dir, "autoslim_result.json"))
  assert first.extra["train_seconds"] > 0 and budget.is_feasible(space, first.best_structure)

  def no_training(*args, **kwargs):
    raise AssertionError("the slimmable network was trained again")

  monkeypatch.setattr(training, "fit", no_training)
  again = search.run("autoslim", space, budget, train_data=splits, config=CONFIG, output_dir=run_dir, verbose=0)
  assert again == first                                    # the finished result, read back
  os.remove(os.path.join(run_dir, "autoslim_result.json"))
  redo = search.run("autoslim", space, budget, train_data=splits, config=CONFIG, output_dir=run_dir, verbose=0)
  assert redo.best.choices == first.best.choices and redo.extra["train_seconds"] < first.extra["train_seconds"]
  with pytest.raises(ValueError, match=r"slimmable network identity '.*identity\.json' belongs to another run: config differs"):
    search.run("autoslim", space, budget, train_data=splits, config=CONFIG.get_config() | {"epochs": 2},
               output_dir=run_dir, verbose=0)
