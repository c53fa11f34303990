"""The docstring examples that run cheaply are run (doctest), so the documentation cannot drift.

Examples that need data or training are marked `# doctest: +SKIP` where they
stand; everything else in these modules runs here, in a few seconds.
"""

import doctest

import keras
import pytest

import tf_metaprune
from tf_metaprune import flops
from tf_metaprune import io
from tf_metaprune import ops
from tf_metaprune import pipeline
from tf_metaprune import space
from tf_metaprune import stats
from tf_metaprune.models import dense_prediction
from tf_metaprune.search import evolution
from tf_metaprune.search import pas

MODULES = [ops, io, space, flops, evolution, pas, pipeline, stats, dense_prediction]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
  failures, tried = doctest.testmod(
      module, extraglobs={"tf_metaprune": tf_metaprune, "tfmp": tf_metaprune, "keras": keras},
      optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False, report=True)
  assert tried > 0, f"{module.__name__} has no docstring example"
  assert failures == 0, f"{failures} of {tried} docstring examples of {module.__name__} failed (see the log)"
