"""Tests of tf_metaprune.search.run: one entry point for every searcher, resuming from output_dir.

The searchers themselves are tested in their own files; here an untrained
tiny PruningNet is enough (only the plumbing is under test).
"""

import os

import pytest

import tf_metaprune as tfmp
from tf_metaprune import budgets
from tf_metaprune import search
from tf_metaprune.search import dispatch
from tf_metaprune.search import registry


@pytest.fixture(scope="module")
def space():
  return tfmp.models.small_cnn(input_shape=(8, 8, 1), num_classes=3, channels=(4, 4, 8, 8), divisor=1,
                               width_ratios=(0.25, 0.5, 0.75, 1.0))


@pytest.fixture(scope="module")
def splits():
  return tfmp.data.synthetic(num_examples=192, input_shape=(8, 8, 1), num_classes=3, batch_size=32)


@pytest.fixture(scope="module")
def net(space):
  return tfmp.PruningNet(space, hidden_units=0)


def test_searchers_are_named_once_with_their_config_classes():
  assert search.SEARCHERS == ("evolutionary", "autoslim", "pas", "rl", "uniform")
  assert [search.config_class(n) for n in search.SEARCHERS] == [
      search.EvolutionConfig, search.AutoSlimConfig, search.PaSConfig, search.RLConfig, None]
  with pytest.raises(ValueError, match=r"searcher 'amc' is not one of \('evolutionary'"):
    search.config_class("amc")


def test_searchers_scoring_with_a_pruning_net_write_and_reuse_their_results(net, space, splits, tmp_path):
  budget = budgets.FlopsBudget.from_ratio(space, 0.5)
  configs = {"evolutionary": search.EvolutionConfig(population_size=6, top_k=2, num_mutations=2, num_crossovers=2,
                                                    num_generations=2),
             "rl": {"episodes": 6, "episodes_per_update": 3}, "uniform": None}
  out = str(tmp_path)
  for name, config in configs.items():
    result = search.run(name, space, budget, search_data=splits, pruning_net=net, config=config, output_dir=out,
                        seed=2, verbose=0)
    assert result.method == name and budget.is_feasible(space, result.structure(space))
    if config is not None:
      assert result.config["seed"] == 2      # `seed` replaces the config's
    assert search.run(name, space, budget, search_data=splits, pruning_net=net, config=config, output_dir=out,
                      seed=2, verbose=0) == search.SearchResult.load(os.path.join(out, f"{name}_result.json"))
  assert {"evolution_state.json", "rl_state.json", "uniform_result.json"} <= set(os.listdir(out))


def test_missing_network_or_data_and_mismatches_are_named_with_the_way_out(net, space, splits):
  budget = budgets.FlopsBudget.from_ratio(space, 0.5)
  with pytest.raises(ValueError, match=r"searcher 'rl' scores structures with a trained PruningNet; pass pruning_net="):
    search.run("rl", space, budget, search_data=splits)
  with pytest.raises(ValueError, match=r"run\('pas'\) trains its own network: pass train_data="):
    search.run("pas", space, budget, search_data=splits)
  with pytest.raises(ValueError, match="pass search_data="):
    search.run("uniform", space, budget, pruning_net=net)
  with pytest.raises(ValueError, match="the uniform baseline has no settings"):
    search.run("uniform", space, budget, search_data=splits, pruning_net=net, config={"seed": 1})
  other = tfmp.models.small_cnn(input_shape=(8, 8, 1), num_classes=3, channels=(4, 4, 8, 6), divisor=1)
  with pytest.raises(ValueError, match="pruning_net was built for space"):
    search.run("uniform", other, None, search_data=splits, pruning_net=net)
  with pytest.raises(ValueError, match=r"searcher 'ga' is not one of"):
    search.run("ga", space, budget, search_data=splits, pruning_net=net)


def test_a_searcher_registered_from_outside_with_the_decorator_is_run_by_name(net, space, splits, monkeypatch,
                                                                             tmp_path):
  monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # pylint: disable=protected-access
  monkeypatch.setattr(registry, "_ORDER", dict(registry._ORDER))  # pylint: disable=protected-access
  monkeypatch.setattr(registry, "SEARCHERS", registry.SEARCHERS)
  seen = []

  @search.register("recorded")
  class Recorded(search.UniformConfig):
    def run(self, context):
      seen.append(context)
      return super().run(context)

  assert search.SEARCHERS[-1] == "recorded" and dispatch.SEARCHERS == search.SEARCHERS
  assert search.searcher_class("recorded") is Recorded
  state = str(tmp_path / "my_state.json")
  result = search.run("recorded", space, None, search_data=splits, pruning_net=net, state_path=state, verbose=0)
  assert result.method == "uniform" and seen[0].space is space and seen[0].pruning_net is net
  assert seen[0].state_file("default.json") == state
  with pytest.raises(TypeError, match="has no run\\(context\\) method"):
    search.register("broken", object)
  with pytest.raises(ValueError, match="searcher 'recorded' is already registered"):
    search.register("recorded", Recorded)


def test_capabilities_are_class_attributes_the_callers_read():
  cls = {name: search.searcher_class(name) for name in search.SEARCHERS}
  assert [n for n, c in cls.items() if c.needs_pruning_net] == ["evolutionary", "rl", "uniform"]
  assert [n for n, c in cls.items() if c.trains_own_network] == ["autoslim", "pas"]
  assert cls["autoslim"].trains_network_with(None) and not cls["autoslim"].trains_network_with(object())
  assert cls["pas"].trains_network_with(None) and cls["pas"].trains_network_with(object())   # pas ignores a net
  assert [n for n, c in cls.items() if c.shares_network_across_budgets] == ["autoslim"]
