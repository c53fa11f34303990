"""The pipeline as Stage objects: a stage added from outside runs, is recorded, skipped when done, checked on resume.

Also the config's sections and the searcher settings that reach it from the searcher's config class.
"""

import json

import pytest

from tf_metaprune import pipeline
from tf_metaprune import search

TINY = dict(model="small_cnn", divisor=1, max_examples=256, input_size=8, batch_size=32, hidden_units=2,
            pruningnet_epochs=1, flops_ratio=0.5, min_flops_ratio=0.0, population_size=4, num_generations=1,
            calibration_batches=1, retrain_epochs=1, export_num_runs=2, export_calibration_batches=1)


class Note(pipeline.Stage):
  """A stage of someone else's: it reads what the search made and keeps a line of it in its record."""
  name, sections = "note", ("search",)
  runs = 0

  def run(self, ctx):
    Note.runs += 1
    ctx.log(f"[note] searched {ctx.found.best_mflops:.4f} MFLOPs")
    return {"best_mflops": ctx.found.best_mflops}


def test_a_stage_added_from_outside_runs_after_the_search_and_resumes_like_the_built_in_ones(tmp_path, monkeypatch):
  monkeypatch.setattr(pipeline.stages_lib, "_REGISTRY", list(pipeline.stages_lib._REGISTRY))  # pylint: disable=protected-access
  pipeline.register_stage(Note(), after="search")
  config = pipeline.PipelineConfig(**TINY)
  assert pipeline.stage_names(config) == ("pruningnet", "search", "note", "retrain_searched", "retrain_uniform",
                                          "export")
  lines = []
  report = pipeline.run(config, str(tmp_path / "run"), verbose=0, log=lines.append)
  assert Note.runs == 1 and any(l.startswith("[note] searched") for l in lines)
  assert lines.index(next(l for l in lines if l.startswith("[metaprune] 3/6 note:"))) > lines.index(
      next(l for l in lines if l.startswith("[metaprune] 2/6 search:")))
  record = json.loads((tmp_path / "run" / "stages" / "note.json").read_text())
  assert record["finished"] and record["best_mflops"] == pytest.approx(report["searched"]["mflops"])
  assert record["identity"]["flops_ratio"] == 0.5 and record["identity"]["pruningnet_epochs"] == 1
  assert set(report["stage_seconds"]) == set(pipeline.stage_names(config))
  again = []
  pipeline.run(config, str(tmp_path / "run"), verbose=0, log=again.append)
  assert Note.runs == 1 and "[metaprune] 3/6 note: done already" in again
  with pytest.raises(ValueError, match=r"pipeline stage 'search' record .* belongs to another run: population_size "
                                       r"differs \(saved 4, now 6\).*rerun with the same settings"):
    pipeline.run(config.replace(population_size=6), str(tmp_path / "run"), verbose=0, log=again.append)


def test_register_stage_refuses_a_duplicate_or_an_unknown_place(monkeypatch):
  monkeypatch.setattr(pipeline.stages_lib, "_REGISTRY", list(pipeline.stages_lib._REGISTRY))  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="a stage named 'search' is registered already"):
    pipeline.register_stage(pipeline.SearchStage())
  with pytest.raises(ValueError, match=r"after='searchh' is not a stage"):
    pipeline.register_stage(Note(), after="searchh")
  with pytest.raises(TypeError, match="is not a Stage with a name"):
    pipeline.register_stage(object())


def test_config_sections_hold_every_setting_once_and_rebuild_the_config():
  config = pipeline.PipelineConfig(**TINY)
  assert config.net.hidden_units == 2 and config.search.flops_ratio == 0.5 and config.data.input_size == 8
  assert isinstance(config.retrain, pipeline.RetrainConfig) and config.export.export_num_runs == 2
  again = pipeline.PipelineConfig.from_sections(**{name: config.section(name) for name in pipeline.SECTIONS})
  assert again == config
  with pytest.raises(ValueError, match="unknown section 'model'"):
    pipeline.PipelineConfig.from_sections(model={})


def test_searcher_settings_come_from_the_searchers_config_class():
  rl = pipeline.PipelineConfig(searcher="rl", searcher_settings={"episodes": 7}, seed=3).searcher_config()
  assert isinstance(rl, search.RLConfig) and (rl.episodes, rl.seed) == (7, 3)
  evolution = pipeline.PipelineConfig(population_size=6, num_generations=2).searcher_config()
  assert (evolution.population_size, evolution.num_generations, evolution.top_k) == (6, 2, 6)
  assert evolution.max_candidates() == 12
  with pytest.raises(ValueError, match=r"searcher_settings=\{'episode': 7\}\).*unknown settings \['episode'\]"):
    pipeline.PipelineConfig(searcher="rl", searcher_settings={"episode": 7})
  with pytest.raises(ValueError, match="uniform has no settings; drop searcher_settings"):
    pipeline.PipelineConfig(searcher="uniform", searcher_settings={"seed": 1})
