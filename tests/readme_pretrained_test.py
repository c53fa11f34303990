"""The README's "Prune your trained model" example runs (shrunk: fewer images, epochs and generations)."""

import keras
import numpy as np

import testutil
import tf_metaprune as tfmp


def _save_trained_model(path):
  """A small trained CNN for the MNIST subset, saved where the README loads it from."""
  splits = tfmp.data.load_dataset("mnist_subset", max_examples=256, batch_size=64)
  space = tfmp.models.small_cnn(splits.input_shape, splits.num_classes, channels=(8, 16), divisor=4)
  model = tfmp.rebuild(space, space.largest(), name="my_cnn")
  tfmp.training.fit(model, splits.train, epochs=1, learning_rate=3e-3, optimizer="adam", verbose=0)
  model.save(path)
  return model


def test_readme_pretrained_example_prunes_the_users_trained_model(tmp_path):
  original = _save_trained_model(str(tmp_path / "my_cnn.keras"))
  shrink = [('load_dataset("mnist_subset")', 'load_dataset("mnist_subset", max_examples=256, batch_size=64)'),
            ('"my_cnn.keras"', repr(str(tmp_path / "my_cnn.keras"))),
            ("TrainedModel(model)", "TrainedModel(model, divisor=4)"),
            ("pruning_net()", "pruning_net(hidden_units=2)"),
            ('optimizer="adam")', 'optimizer="adam", verbose=0)'),
            ("distill_weight=0.5)", "distill_weight=0.5, verbose=0)"),
            ("epochs=2", "epochs=1"), ("epochs=3", "epochs=1"),
            ("evolutionary(net, splits, budget)", "evolutionary(net, splits, budget, population_size=6, top_k=3, "
             "num_mutations=3, num_crossovers=3, num_generations=1, verbose=0)")]
  scope = testutil.run_readme_example("## Prune your trained model", shrink, max_lines=15)
  trained, pruned, budget = scope["trained"], scope["pruned"], scope["budget"]
  x = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype(np.float32)
  np.testing.assert_allclose(trained.reordered_model()(x, training=False), original(x, training=False),
                             rtol=1e-5, atol=1e-5)
  assert [l.name for l in pruned.layers] == [l.name for l in original.layers]
  for s in (scope["found"].structure(trained.space), scope["l1_uniform"], scope["global_magnitude"]):
    assert budget.is_feasible(trained.space, s)
  assert isinstance(scope["model"], keras.Model)
