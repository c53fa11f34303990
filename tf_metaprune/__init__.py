"""tf_metaprune: automatic channel pruning for TensorFlow / Keras 3.

Give it a convolutional network's search space and a budget; it trains a
MetaPruning PruningNet, searches the best per-layer widths, and rebuilds the
winner as a plain Keras model ready for retraining and TFLite export.

  >>> import tf_metaprune as tfmp
  >>> space = tfmp.models.mobilenet_v2(input_shape=(32, 32, 3), num_classes=10)
  >>> net = tfmp.PruningNet(space)
  >>> model = tfmp.rebuild(net, space.uniform(0.5))

The whole job (PruningNet, search, retraining, int8 TFLite, report) in one
resumable call: `tfmp.pipeline.run(tfmp.PipelineConfig(flops_ratio=0.25), "runs/mp")`.
"""

__version__ = "0.1.0"

# The door follows the data path: data -> a search space -> the PruningNet -> budgets -> a search ->
# the rebuilt model (-> its latency table) -> the whole pipeline. Everything else is reachable by
# module: tf_metaprune.training, .io, .distribute, .calibration, .layers, .keras_graph, ...
from tf_metaprune import budgets
from tf_metaprune import data
from tf_metaprune import flops
from tf_metaprune import latency_lut
from tf_metaprune import models
from tf_metaprune import ops
from tf_metaprune import pipeline
from tf_metaprune import pretrained
from tf_metaprune import search
from tf_metaprune.budgets import AllOf
from tf_metaprune.budgets import FlopsBudget
from tf_metaprune.budgets import LatencyBudget
from tf_metaprune.budgets import LatencyTable
from tf_metaprune.budgets import ParamsBudget
from tf_metaprune.calibration import EvaluationData
from tf_metaprune.calibration import Evaluator
from tf_metaprune.flops import count_flops
from tf_metaprune.flops import count_mflops
from tf_metaprune.pipeline import PipelineConfig
from tf_metaprune.pruning_net import PruningNet
from tf_metaprune.rebuild import rebuild
from tf_metaprune.search import SearchResult
from tf_metaprune.space import PAPER_WIDTH_RATIOS
from tf_metaprune.space import SearchSpace
from tf_metaprune.space import SpaceBuilder
from tf_metaprune.space import Structure

__all__ = [
    "__version__",
    # data
    "data",
    # the network to prune, as a search space
    "models",
    "SearchSpace",
    "SpaceBuilder",
    "Structure",
    "PAPER_WIDTH_RATIOS",
    "ops",
    # the PruningNet, and scoring its structures
    "PruningNet",
    "EvaluationData",
    "Evaluator",
    # budgets and counting
    "budgets",
    "FlopsBudget",
    "ParamsBudget",
    "LatencyBudget",
    "LatencyTable",
    "AllOf",
    "flops",
    "count_flops",
    "count_mflops",
    # searching
    "search",
    "SearchResult",
    # the pruned model and its latency
    "rebuild",
    "latency_lut",
    # a model you trained: its important channels, a PruningNet from its weights
    "pretrained",
    # the whole job
    "pipeline",
    "PipelineConfig",
]

# Names that stood at the top level before the door was narrowed: they still resolve (on first use)
# for existing callers, from the module that defines them, but are not part of the door.
_MOVED = {
    "io": ("tf_metaprune.io", None), "distribute": ("tf_metaprune.distribute", None),
    "training": ("tf_metaprune.training", None), "calibration": ("tf_metaprune.calibration", None),
    "layers": ("tf_metaprune.layers", None), "space": ("tf_metaprune.space", None),
    "recalibrate": ("tf_metaprune.calibration", "recalibrate"), "Gene": ("tf_metaprune.space", "Gene"),
    "Node": ("tf_metaprune.space", "Node"), "GeneratedConv2D": ("tf_metaprune.layers", "GeneratedConv2D"),
    "GeneratedDense": ("tf_metaprune.layers", "GeneratedDense"),
    "GeneratedDepthwiseConv2D": ("tf_metaprune.layers", "GeneratedDepthwiseConv2D"),
    "WidthBatchNorm": ("tf_metaprune.layers", "WidthBatchNorm"),
    "AutoSlimConfig": ("tf_metaprune.search", "AutoSlimConfig"),
    "EvolutionConfig": ("tf_metaprune.search", "EvolutionConfig"),
    "PaSConfig": ("tf_metaprune.search", "PaSConfig"), "RLConfig": ("tf_metaprune.search", "RLConfig"),
}


def __getattr__(name):
  if name in _MOVED:
    import importlib  # pylint: disable=g-import-not-at-top  (a compatibility alias, resolved on first use)
    module_name, attr = _MOVED[name]
    module = importlib.import_module(module_name)
    return module if attr is None else getattr(module, attr)
  raise AttributeError(f"module 'tf_metaprune' has no attribute {name!r}")
