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

from tf_metaprune import budgets
from tf_metaprune import calibration
from tf_metaprune import data
from tf_metaprune import distribute
from tf_metaprune import flops
from tf_metaprune import io
from tf_metaprune import layers
from tf_metaprune import models
from tf_metaprune import pipeline
from tf_metaprune import pretrained
from tf_metaprune import search
from tf_metaprune import training
from tf_metaprune.budgets import AllOf
from tf_metaprune.budgets import FlopsBudget
from tf_metaprune.budgets import LatencyBudget
from tf_metaprune.budgets import LatencyTable
from tf_metaprune.budgets import ParamsBudget
from tf_metaprune.calibration import EvaluationData
from tf_metaprune.calibration import Evaluator
from tf_metaprune.calibration import recalibrate
from tf_metaprune.flops import count_flops
from tf_metaprune.flops import count_mflops
from tf_metaprune.layers import GeneratedConv2D
from tf_metaprune.layers import GeneratedDense
from tf_metaprune.layers import GeneratedDepthwiseConv2D
from tf_metaprune.layers import WidthBatchNorm
from tf_metaprune.pruning_net import PruningNet
from tf_metaprune.pipeline import PipelineConfig
from tf_metaprune.rebuild import rebuild
from tf_metaprune.search import AutoSlimConfig
from tf_metaprune.search import EvolutionConfig
from tf_metaprune.search import PaSConfig
from tf_metaprune.search import RLConfig
from tf_metaprune.search import SearchResult
from tf_metaprune.space import Gene
from tf_metaprune.space import Node
from tf_metaprune.space import PAPER_WIDTH_RATIOS
from tf_metaprune.space import SearchSpace
from tf_metaprune.space import SpaceBuilder
from tf_metaprune.space import Structure

__all__ = [
    "__version__",
    "AllOf",
    "AutoSlimConfig",
    "budgets",
    "calibration",
    "count_flops",
    "count_mflops",
    "data",
    "distribute",
    "EvaluationData",
    "Evaluator",
    "EvolutionConfig",
    "FlopsBudget",
    "flops",
    "Gene",
    "GeneratedConv2D",
    "GeneratedDense",
    "GeneratedDepthwiseConv2D",
    "io",
    "LatencyBudget",
    "LatencyTable",
    "layers",
    "models",
    "Node",
    "PAPER_WIDTH_RATIOS",
    "PaSConfig",
    "ParamsBudget",
    "pipeline",
    "PipelineConfig",
    "pretrained",
    "PruningNet",
    "rebuild",
    "recalibrate",
    "RLConfig",
    "search",
    "SearchResult",
    "SearchSpace",
    "SpaceBuilder",
    "Structure",
    "training",
    "WidthBatchNorm",
]
