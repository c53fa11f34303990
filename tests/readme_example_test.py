"""The README's 10-line example runs (shrunk: fewer images, epochs and generations)."""

import os
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_readme_example_runs_end_to_end(tmp_path):
  text = (ROOT / "README.md").read_text()
  code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
  shrink = [('load_dataset("mnist_subset")', 'load_dataset("mnist_subset", max_examples=384, batch_size=64)'),
            ("epochs=10", "epochs=1"),
            ("tfmp.models.resnet20(", "tfmp.models.small_cnn("),   # same API, traces in seconds
            ("PruningNet(space)", "PruningNet(space, hidden_units=2)"),
            ('state_path="search_state.json"', 'state_path="search_state.json", population_size=6, top_k=3, '
             'num_mutations=3, num_crossovers=3, num_generations=2, verbose=0'),
            ("search.uniform(net, splits, budget)", "search.uniform(net, splits, budget, verbose=0)")]
  for old, new in shrink:
    assert old in code, f"README example changed: {old!r} not found; update this test"
    code = code.replace(old, new)
  cwd = os.getcwd()
  os.chdir(tmp_path)
  try:
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)  # pylint: disable=exec-used
  finally:
    os.chdir(cwd)
  assert scope["budget"].is_feasible(scope["space"], scope["found"].structure(scope["space"]))
  assert (tmp_path / "search_state.json").exists()
  assert isinstance(scope["int8"], bytes) and len(scope["int8"]) > 1000
