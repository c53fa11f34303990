"""The README's 10-line example runs (shrunk: fewer images, epochs and generations)."""

import testutil


def test_readme_example_runs_end_to_end(tmp_path):
  shrink = [('load_dataset("mnist_subset")', 'load_dataset("mnist_subset", max_examples=384, batch_size=64)'),
            ("epochs=10", "epochs=1"),
            ("tfmp.models.resnet20(", "tfmp.models.small_cnn("),   # same API, traces in seconds
            ("PruningNet(space)", "PruningNet(space, hidden_units=2)"),
            ('state_path="search_state.json"', 'state_path="search_state.json", population_size=6, top_k=3, '
             'num_mutations=3, num_crossovers=3, num_generations=2, verbose=0'),
            ("search.uniform(net, splits, budget)", "search.uniform(net, splits, budget, verbose=0)")]
  scope = testutil.run_readme_example(None, shrink, cwd=tmp_path)
  assert scope["budget"].is_feasible(scope["space"], scope["found"].structure(scope["space"]))
  assert (tmp_path / "search_state.json").exists()
  assert isinstance(scope["int8"], bytes) and len(scope["int8"]) > 1000
