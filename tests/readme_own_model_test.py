"""The README's "Prune your own Keras model" example runs (shrunk: fewer images, epochs and generations)."""

import testutil


def test_readme_own_model_example_prunes_the_users_model():
  shrink = [('load_dataset("mnist_subset")', 'load_dataset("mnist_subset", max_examples=256, batch_size=64)'),
            ("epochs=10", "epochs=1"),
            ("[(16, 1), (32, 2), (64, 2)]", "[(8, 1), (16, 2)]"),   # same code, two stages trace faster
            ("learning_rate=0.1)", "learning_rate=0.1, verbose=0)"),
            ("PruningNet(space)", "PruningNet(space, hidden_units=2)"),
            ("FlopsBudget.from_ratio(space, 0.5))", "FlopsBudget.from_ratio(space, 0.5), population_size=6, top_k=3, "
             "num_mutations=3, num_crossovers=3, num_generations=1, verbose=0)")]
  scope = testutil.run_readme_example("## Prune your own Keras model", shrink, max_lines=14)
  model, space, pruned = scope["model"], scope["space"], scope["pruned"]
  assert [g.name for g in space.genes] == [f"stage{i}_{k}" for i in range(2) for k in ("3x3", "1x1")]
  assert space.params(space.largest()) == model.count_params()
  assert [l.name for l in pruned.layers] == [l.name for l in model.layers]
  assert scope["found"].best_mflops <= space.mflops(space.largest()) * 0.5 + 1e-9
  assert pruned.count_params() == space.params(scope["found"].structure(space))
