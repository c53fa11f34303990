"""Tests of tf_metaprune.search.rl: policy gradient, action clipping, Lagrangian penalty, resuming.

One tiny PruningNet (small_cnn on 12x12 synthetic images, 4 classes) is
trained once for the module and shared with one Evaluator (one trace).
"""

import json

import numpy as np
import pytest
import tensorflow as tf

import testutil  # tests/testutil.py
from testutil import net_fixture, space_fixture, splits_fixture  # pylint: disable=unused-import  (shared fixtures: net, space, splits)
import tf_metaprune as tfmp
from tf_metaprune import budgets
from tf_metaprune import search
from tf_metaprune.search import rl

SHORT = dict(episodes=25, episodes_per_update=5, verbose=0)




@pytest.fixture(scope="module")
def evaluator(net, splits):
  data = tfmp.EvaluationData.from_dataset(splits.search, num_calibration_batches=2, calibration_dataset=splits.train)
  return tfmp.Evaluator(net, data)


@pytest.fixture(scope="module")
def budget(space):
  return budgets.FlopsBudget.from_ratio(space, 0.25)


class MeasuredLatency:
  """A latency predictor without a lookup table (stands for on-device measurement): no clipping possible."""

  def predict_ms(self, space, structure):
    return float(0.01 + 1e-4 * np.sum(space.gene_channels(structure) ** 2))


class KnownReward(tfmp.Evaluator):
  """Scores a structure by a fixed weighted sum of its width ratios (genes 1 and 3 matter, 0 and 2 hardly).

  A reward without evaluation noise, so "the agent learned" is a statement
  about the agent, not about which random images the net got right.
  """

  WEIGHTS = np.array([0.1, 1.0, 0.1, 1.0])

  def accuracy_tensor(self, choices):
    space = self.net.space
    ratio = space.gene_channels(tfmp.Structure(np.asarray(choices).tolist())) / np.array(
        [g.base_channels for g in space.genes])
    return tf.constant(float(np.dot(self.WEIGHTS, ratio) / self.WEIGHTS.sum()))


def test_policy_gradient_moves_the_mean_action_toward_rewarded_actions():
  rng = np.random.default_rng(0)
  policy = rl.Policy(8, 16, rng)
  states = rng.uniform(size=(32, 8))
  before, _ = policy.mean(states)
  for _ in range(30):   # actions above the mean are rewarded, those below punished
    mu, _ = policy.mean(states)
    actions = mu + np.where(np.arange(32) % 2 == 0, 0.1, -0.1)
    policy.update(states, actions, np.where(np.arange(32) % 2 == 0, 1.0, -1.0), 0.2, 0.01)
  after, _ = policy.mean(states)
  assert (after > before + 0.05).all()
  state = json.loads(json.dumps(policy.get_state()))
  clone = rl.Policy(8, 16, np.random.default_rng(5))
  clone.set_state(state)
  np.testing.assert_allclose(clone.mean(states)[0], after)


def test_action_clipping_keeps_every_episode_within_the_budget(net, evaluator, space, budget):
  table = budgets.LatencyTable.from_function(space, lambda node, ci, co: 1e-3 * ci * co, overhead_ms=0.1)
  combined = budgets.AllOf(budgets.FlopsBudget.from_ratio(space, 0.3), budgets.ParamsBudget(max_params=900),
                           budgets.LatencyBudget(max_ms=table.predict_ms(space, space.uniform(0.4)), lut=table))
  for b in (budget, combined):
    result = search.reinforce(net, evaluator, b, **SHORT)
    episodes = result.extra["episodes"]
    assert len(episodes) == 25 and all(e["feasible"] for e in episodes)     # by construction, not by luck
    assert all(b.is_feasible(space, c.structure) for c in result.candidates)
    assert any(not b.is_feasible(space, space.random(i)) for i in range(20))  # a real constraint
    assert result.extra["penalized_budgets"] == [] and result.extra["lambda"] == 0.0
    assert space.validate(result.best.choices) == result.best_structure
    assert result.trace_counts == {"evaluator": 1}
  assert len(result.extra["clipped_budgets"]) == 3


def test_env_clips_to_the_widest_choice_that_keeps_the_budget_reachable(space, budget):
  env = rl.PruningEnv(space, budget)
  prefix = []
  for i in range(len(space.genes)):
    c = env.max_choice(prefix)
    rest = list(space.smallest().choices[i + 1:])
    assert budget.is_feasible(space, tfmp.Structure(prefix + [c] + rest))
    if c + 1 < space.genes[i].num_choices:
      assert not budget.is_feasible(space, tfmp.Structure(prefix + [c + 1] + rest))
    prefix.append(c)                                    # greedy: take the widest allowed
  assert budget.is_feasible(space, tfmp.Structure(prefix))
  assert env.to_choice(0, 1.7, 3) == 3 and env.to_choice(0, -0.2, 3) == 0


@pytest.mark.parametrize("seed", [0, 2])
def test_short_run_improves_over_its_own_start(evaluator, space, budget, seed):
  known = KnownReward(evaluator.net, evaluator.data)
  result = search.reinforce(evaluator.net, known, budget, episodes=100, sigma_decay=0.97, seed=seed, verbose=0)
  rewards = [h["mean_reward"] for h in result.history]
  assert len(rewards) == 20
  assert np.mean(rewards[-4:]) > np.mean(rewards[:4]) + 0.08      # the policy learned where width pays
  assert result.best_accuracy > max(c.accuracy for c in result.candidates if c.generation == 0)
  assert budget.is_feasible(space, result.best_structure)
  assert [h["sigma"] for h in result.history] == sorted((h["sigma"] for h in result.history), reverse=True)


def test_lagrangian_penalty_enforces_a_budget_that_cannot_be_clipped(net, evaluator, space):
  lut = MeasuredLatency()
  b = budgets.LatencyBudget(max_ms=lut.predict_ms(space, space.uniform(0.5)), lut=lut)
  # The known reward always prefers more width: only the multiplier keeps the agent inside the budget.
  result = search.reinforce(net, KnownReward(net, evaluator.data), b, episodes=60, lagrange_lr=2.0, verbose=0)
  episodes = result.extra["episodes"]
  assert result.extra["clipped_budgets"] == [] and len(result.extra["penalized_budgets"]) == 1
  assert not all(e["feasible"] for e in episodes[:10])        # not clipped: early episodes overshoot
  assert max(h["lambda"] for h in result.history) > 0.0       # ... which raises the multiplier
  late = [e["feasible"] for e in episodes[-20:]]
  early = [e["feasible"] for e in episodes[:20]]
  assert np.mean(late) > np.mean(early)
  assert b.is_feasible(space, result.best_structure)          # the best is a feasible one
  # The same budget with a lookup table is clipped instead.
  table = budgets.LatencyTable.from_function(space, lambda node, ci, co: 1e-4 * co * co)
  assert rl.PruningEnv(space, budgets.LatencyBudget(1.0, table)).penalized == []
  assert rl.PruningEnv(space, budgets.LatencyBudget(1.0, table), "lagrangian").clipped == []


def test_resumed_search_ends_where_an_uninterrupted_one_does(net, evaluator, budget, tmp_path):
  path = str(tmp_path / "rl_state.json")
  first = search.reinforce(net, evaluator, budget, episodes=15, state_path=path, verbose=0)
  resumed = search.reinforce(net, evaluator, budget, episodes=30, state_path=path, verbose=0)
  straight = search.reinforce(net, evaluator, budget, episodes=30, verbose=0)
  assert resumed.candidates[:first.num_evaluations] == first.candidates
  assert resumed.extra["episodes"] == straight.extra["episodes"]
  assert resumed.best == straight.best
  with pytest.raises(ValueError, match=r"belongs to another run: config\.seed differs \(saved 0, now 3\)"):
    search.reinforce(net, evaluator, budget, episodes=30, state_path=path, seed=3, verbose=0)


def test_rl_config_round_trips_and_rejects_bad_settings():
  c = search.RLConfig(episodes=50, constraint="lagrangian")
  assert search.RLConfig.from_config(json.loads(json.dumps(c.get_config()))) == c
  with pytest.raises(ValueError, match=r"RLConfig\(constraint='soft'\): choose one of"):
    search.RLConfig(constraint="soft")
  with pytest.raises(ValueError, match=r"min_sigma is above sigma"):
    search.RLConfig(sigma=0.1, min_sigma=0.2)
  with pytest.raises(ValueError, match=r"RLConfig\(episodes=0\)"):
    search.RLConfig(episodes=0)
