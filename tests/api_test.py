"""The public API: every name in __all__ imports, and nothing else leaks in."""

import importlib

import tf_metaprune as tfmp


def test_every_public_name_is_importable():
  for name in tfmp.__all__:
    assert getattr(tfmp, name) is not None, name


def test_documented_entry_points_exist():
  for name in ("PruningNet", "rebuild", "count_flops", "SearchSpace", "Structure", "models", "data"):
    assert name in tfmp.__all__
  for family in ("small_cnn", "mobilenet_v1", "mobilenet_v2", "resnet20", "resnet56", "resnet50"):
    assert callable(getattr(tfmp.models, family))


def test_the_door_is_at_most_30_names_and_the_rest_is_reachable_by_module():
  assert len(tfmp.__all__) <= 30, tfmp.__all__
  for name in ("io", "distribute", "training", "Gene", "Node", "GeneratedConv2D", "EvolutionConfig"):
    assert name not in tfmp.__all__
  # Names that left the door still resolve, from the module that defines them (for existing callers).
  from tf_metaprune import layers, space, training  # pylint: disable=g-import-not-at-top
  assert tfmp.Gene is space.Gene and tfmp.GeneratedConv2D is layers.GeneratedConv2D and tfmp.training is training
  assert tfmp.EvolutionConfig is tfmp.search.EvolutionConfig


def test_version_is_a_string_matching_setup():
  assert isinstance(tfmp.__version__, str) and tfmp.__version__.count(".") == 2


def test_every_public_callable_has_a_docstring():
  missing = [n for n in tfmp.__all__ if callable(getattr(tfmp, n)) and not getattr(tfmp, n).__doc__]
  assert not missing, missing


def test_library_never_reads_flags_or_tf_keras():
  import pathlib
  root = pathlib.Path(importlib.import_module("tf_metaprune").__file__).parent
  for path in root.rglob("*.py"):
    text = path.read_text()
    assert "flags.FLAGS" not in text, path
    assert "tf.keras" not in text.replace("`tf.keras`", ""), path
    assert "import pickle" not in text, path
