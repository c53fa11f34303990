"""The whole MetaPruning job, stage by stage, resumable: data in, int8 TFLite out.

A run lives in one output folder and goes through the stages of `STAGES`
(one `Stage` object each, `stages.py`); each stage writes its files and
records itself in `stages/<stage>.json` (an `io.StateFile` whose identity is
the stage's settings, `state.py`), so a rerun with the same folder skips every
finished stage and continues an interrupted one from its own checkpoint
(`tf_metaprune.training`'s checkpointer, `backup/state.json`, for training;
the searcher's JSON state for the search):

  1. pruningnet        train the PruningNet (a random structure per step)
                       -> pruningnet/pruningnet.keras, pruningnet/space.json
  2. search            the searcher of `config.searcher` (default: the evolution)
                       under the budget, and the uniform baseline at the same
                       budget, both scored on the held-out search split after BN
                       recalibration, no fine-tuning
                       -> structure.json, uniform_structure.json, search_state.json
                          (the searcher's state), searcher_<name>/,
                          search_result.json, uniform_result.json, pareto.png
  3. retrain_searched  the searched structure rebuilt as a plain Keras model
                       and trained (from scratch, or from the PruningNet's
                       generated weights) -> model.keras
  4. retrain_uniform   the uniform one, with the same recipe -> uniform.keras
  5. export            both converted to full-integer int8 TFLite, checked
                       against Keras on the test split and timed on this host
                       -> model_int8.tflite, uniform_int8.tflite, export.json
  then report.json and report.md (searched vs uniform).

Every stage records the settings it was computed with. A rerun whose settings
differ for a started or finished stage stops before any work, naming the
settings, so results of different settings never mix; settings of stages not
yet started may change (e.g. retrain longer after looking at the search).
Adding a stage is one `Stage` subclass and `register_stage` (tests/
pipeline_stages_test.py adds one from outside).

The package: `config` (PipelineConfig and its sections), `build` (data, space,
budget, training), `searching`, `estimate`, `state`, `stages`, `report`,
`runner` (`run`).

Example:

  >>> config = PipelineConfig(model="small_cnn", flops_ratio=0.5, pruningnet_epochs=3)
  >>> report = run(config, "runs/metaprune")        # doctest: +SKIP
  >>> print(format_report(report))                  # doctest: +SKIP
"""


from tf_metaprune.pipeline import build
from tf_metaprune.pipeline import config as config_lib
from tf_metaprune.pipeline import estimate
from tf_metaprune.pipeline import report as report_lib
from tf_metaprune.pipeline import searching
from tf_metaprune.pipeline import stages as stages_lib
from tf_metaprune.pipeline import state as state_lib
from tf_metaprune.pipeline.build import BN_LAG_WARNING_POINTS
from tf_metaprune.pipeline.build import DEFAULT_WINDOW
from tf_metaprune.pipeline.build import ORIGINAL_CHECK_IMAGES
from tf_metaprune.pipeline.build import bn_check
from tf_metaprune.pipeline.build import build_budget
from tf_metaprune.pipeline.build import build_space
from tf_metaprune.pipeline.build import check_original
from tf_metaprune.pipeline.build import config_budget
from tf_metaprune.pipeline.build import load_data
from tf_metaprune.pipeline.build import load_trained_model
from tf_metaprune.pipeline.build import original_record
from tf_metaprune.pipeline.build import retrain
from tf_metaprune.pipeline.build import save_model_atomic
from tf_metaprune.pipeline.build import times
from tf_metaprune.pipeline.build import train_pruning_net
from tf_metaprune.pipeline.build import trained_model_and_space
from tf_metaprune.pipeline.build import width_ratios
from tf_metaprune.pipeline.config import DataConfig
from tf_metaprune.pipeline.config import ExportConfig
from tf_metaprune.pipeline.config import NetConfig
from tf_metaprune.pipeline.config import LARGE_BATCH
from tf_metaprune.pipeline.config import LARGE_DATA_IMAGES
from tf_metaprune.pipeline.config import PRUNINGNET_STEPS
from tf_metaprune.pipeline.config import PipelineConfig
from tf_metaprune.pipeline.config import RESCORE_TOP_K
from tf_metaprune.pipeline.config import RETRAIN_STEPS
from tf_metaprune.pipeline.config import RetrainConfig
from tf_metaprune.pipeline.config import SEARCH_IMAGES
from tf_metaprune.pipeline.config import SECTIONS
from tf_metaprune.pipeline.config import SMALL_BATCH
from tf_metaprune.pipeline.config import SearchConfig
from tf_metaprune.pipeline.config import batch_for
from tf_metaprune.pipeline.config import epochs_for
from tf_metaprune.pipeline.config import pipeline_search_metric
from tf_metaprune.pipeline.config import sized_epochs
from tf_metaprune.pipeline.config import sized_for
from tf_metaprune.pipeline.estimate import EXPORT_SECONDS_PER_TEST_IMAGE
from tf_metaprune.pipeline.estimate import FORWARD_SHARE_OF_STEP
from tf_metaprune.pipeline.estimate import estimate_run
from tf_metaprune.pipeline.estimate import measure_step_times
from tf_metaprune.pipeline.report import format_report
from tf_metaprune.pipeline.report import make_report
from tf_metaprune.pipeline.report import original_batch_norm_note
from tf_metaprune.pipeline.runner import run
from tf_metaprune.pipeline.searching import _evaluator  # pylint: disable=unused-import  (benchmarks use it)
from tf_metaprune.pipeline.searching import estimate_search
from tf_metaprune.pipeline.searching import read_settings
from tf_metaprune.pipeline.searching import search_and_save
from tf_metaprune.pipeline.searching import write_settings
from tf_metaprune.pipeline.stages import ExportStage
from tf_metaprune.pipeline.stages import PRETRAINED_STAGES
from tf_metaprune.pipeline.stages import PruningNetStage
from tf_metaprune.pipeline.stages import RetrainStage
from tf_metaprune.pipeline.stages import RunContext
from tf_metaprune.pipeline.stages import STAGES
from tf_metaprune.pipeline.stages import SearchStage
from tf_metaprune.pipeline.stages import Stage
from tf_metaprune.pipeline.stages import register_stage
from tf_metaprune.pipeline.stages import rows_for
from tf_metaprune.pipeline.stages import stage_names
from tf_metaprune.pipeline.stages import stages_for
from tf_metaprune.pipeline.state import Run
from tf_metaprune.pipeline.state import TrainingRun
from tf_metaprune.pipeline.state import load_training_run
from tf_metaprune.stats import seed_verdict  # pylint: disable=unused-import  (old import path)
from tf_metaprune.stats import t_interval95  # pylint: disable=unused-import  (old import path)


def __getattr__(name):
  """Names of the former single-module tf_metaprune.pipeline, resolved in the module that holds them now."""
  for module in (config_lib, build, searching, estimate, state_lib, stages_lib, report_lib):
    if name in vars(module):
      return getattr(module, name)
  raise AttributeError(f"module 'tf_metaprune.pipeline' has no attribute {name!r}")
