"""The stages of a run, one `Stage` object each; adding a stage is one class and `register_stage`.

A stage names the config sections its results depend on (`sections`; the
stages before it add theirs), where an unfinished run of it keeps its work
(`checkpoint`), whether it applies to a run (`applies`), whether the chief
alone runs it under a multi-worker strategy (`chief_only`: work without
collective ops whose only product is files), and does its work in
`run(ctx)` (or, when its record says it finished, restores what later stages
read in `load(ctx, record)`). `run` returns what its record keeps. The stages
share one `RunContext`: the settings, data, space, budget, and what earlier
stages made (the PruningNet, the search results, the structures, the
retrained rows, the export).

Example, a stage added from outside (it runs after the search, is recorded,
skipped when done and checked on resume like the built-in ones):

  >>> class Note(Stage):
  ...   name, sections = "note", ("search",)
  ...   def run(self, ctx):
  ...     ctx.log(f"searched {ctx.found.summary()}")
  ...     return {}
  >>> register_stage(Note(), after="search")   # doctest: +SKIP
"""

import dataclasses
import os
import time
from typing import Any, Callable, Dict, Optional

import keras

from tf_metaprune import distribute
from tf_metaprune import io as io_lib
from tf_metaprune import latency_lut
from tf_metaprune import search as search_lib
from tf_metaprune.pipeline.build import _scope
from tf_metaprune.pipeline.build import bn_check
from tf_metaprune.pipeline.build import original_record
from tf_metaprune.pipeline.build import retrain
from tf_metaprune.pipeline.build import save_model_atomic
from tf_metaprune.pipeline.build import times
from tf_metaprune.pipeline.searching import search_and_save
from tf_metaprune.pipeline.state import TrainingRun
from tf_metaprune.rebuild import with_output_activation
import tflite_export


@dataclasses.dataclass
class RunContext:
  """What the stages of one run share: its settings and data, and what each stage made for the next."""
  config: Any
  state: Any
  splits: Any
  space: Any
  budget: Any
  trained: Any = None
  strategy: Any = None
  verbose: int = 1
  log: Callable[[str], None] = print
  net: Any = None
  found: Any = None
  base: Any = None
  structures: Dict[str, Any] = dataclasses.field(default_factory=dict)
  retrained: Dict[str, Any] = dataclasses.field(default_factory=dict)
  exported: Optional[Dict[str, Any]] = None

  @property
  def chief(self) -> bool:
    """Whether this process writes the run's files (always, but for the other workers of a multi-worker job)."""
    return self.strategy is None or distribute.is_chief(self.strategy)


class Stage:
  """One stage of a run. Subclass it, set `name` and `sections`, override `run` (and `load`, `applies`)."""
  name = None
  sections = ()        # names of config.SECTIONS its results depend on (besides the earlier stages')
  checkpoint = None    # path parts, in the run folder, of an unfinished run of this stage's work
  chief_only = False   # True: under a multi-worker strategy the other workers skip it (see the module docstring)

  def applies(self, config) -> bool:
    """Whether a run of `config` has this stage (default: every run)."""
    del config
    return True

  def describe(self, ctx) -> str:
    """The words of the line announcing the stage."""
    del ctx
    return "running"

  def run(self, ctx) -> Dict[str, Any]:
    """Does the stage's work; returns what its record keeps (JSON-able)."""
    raise NotImplementedError

  def load(self, ctx, record):
    """Restores what later stages read, from the files of the finished stage (default: nothing)."""
    del ctx, record


class PruningNetStage(Stage):
  """Trains the PruningNet (its folder is a `TrainingRun`: examples/search.py reads it too)."""
  name, sections, checkpoint = "pruningnet", ("data", "net"), ("pruningnet",)

  def describe(self, ctx):
    return (f"training {ctx.config.pruningnet_epochs} epochs ({ctx.config.sampling} structures per step"
            f"{', from the trained model' if ctx.trained is not None else ''}) -> {ctx.state.file('pruningnet')}")

  def run(self, ctx):
    net_dir = ctx.state.file("pruningnet")
    ctx.net = TrainingRun(net_dir, ctx.config, resume=True).train(ctx.splits, ctx.space, verbose=ctx.verbose,
                                                                  strategy=ctx.strategy, trained=ctx.trained)
    self._check(ctx)
    if not ctx.chief:   # history.json is the chief's (and so is the record)
      return {}
    return {"final_loss": float(io_lib.read_json(os.path.join(net_dir, "history.json"), "training history")["loss"][-1])}

  def load(self, ctx, record):
    with _scope(ctx.strategy):
      ctx.net = keras.saving.load_model(ctx.state.file("pruningnet", "pruningnet.keras"))
    self._check(ctx)

  def _check(self, ctx):
    if ctx.net.space.fingerprint() != ctx.space.fingerprint():
      raise ValueError(f"{ctx.state.file('pruningnet')!r} holds a net trained in another search space "
                       f"({ctx.net.space.name}, fingerprint {ctx.net.space.fingerprint()}) than these settings give "
                       f"({ctx.space.fingerprint()}); use a new output_dir")


class SearchStage(Stage):
  """The searcher of `config.searcher` and the uniform baseline at the same budget."""
  name, sections, checkpoint = "search", ("search",), ("search_state.json",)

  def describe(self, ctx):
    searcher = ctx.config.searcher_config()
    return f"{ctx.config.searcher}{'' if searcher is None else ' ' + searcher.describe()}, on the held-out search split"

  def run(self, ctx):
    ctx.found, ctx.base = search_and_save(ctx.net, ctx.splits, ctx.budget, ctx.config, ctx.state.output_dir,
                                          verbose=ctx.verbose)
    # From the results, not the files: on the other workers of a multi-worker job the chief may still be writing.
    self._structures(ctx, ctx.found.best_structure, ctx.base.best_structure)
    return {}

  def load(self, ctx, record):
    ctx.found = search_lib.SearchResult.load(ctx.state.file("search_result.json"))
    ctx.base = search_lib.SearchResult.load(ctx.state.file("uniform_result.json"))
    self._structures(ctx, ctx.space.load_structure(ctx.state.file("structure.json")),
                     ctx.space.load_structure(ctx.state.file("uniform_structure.json")))

  def _structures(self, ctx, searched, uniform):
    ctx.structures["searched"], ctx.structures["uniform"] = searched, uniform
    ctx.log(f"[metaprune]   searched: {ctx.found.summary()}")
    ctx.log(f"[metaprune]   uniform:  {ctx.base.summary()}")


class RetrainStage(Stage):
  """One structure (a report row) rebuilt as a plain Keras model and trained with the run's recipe."""
  sections = ("retrain",)

  def __init__(self, key, structure_file, init=None, trained_model_only=False):
    self.key, self.name, self.checkpoint = key, f"retrain_{key}", ("retrain", key)
    self.structure_file, self.model_file = structure_file, "model.keras" if key == "searched" else f"{key}.keras"
    self.tflite_file = "model_int8.tflite" if key == "searched" else f"{key}_int8.tflite"
    self.init, self.trained_model_only = init, trained_model_only

  def applies(self, config):
    return bool(config.keras_model) or not self.trained_model_only

  def structure(self, ctx):
    if self.key in ctx.structures:
      return ctx.structures[self.key]
    path = ctx.state.file(self.structure_file)
    if self.key == "global_magnitude" and not os.path.exists(path):   # computed once, saved, read back on resume
      threshold, structure = ctx.trained.global_magnitude(ctx.budget)
      if ctx.chief:
        ctx.space.save_structure(structure, path, threshold=threshold)
    else:
      structure = ctx.space.load_structure(path)
    ctx.structures[self.key] = structure
    return structure

  def describe(self, ctx):
    init = self.init or ctx.config.init
    return (f"{ctx.config.retrain_epochs} epochs from {init}{' with distillation' if ctx.config.distill else ''} "
            f"({ctx.space.mflops(self.structure(ctx)):.3f} MFLOPs)")

  def run(self, ctx):
    init, space = self.init or ctx.config.init, ctx.space
    model, result = retrain(ctx.config, ctx.splits, space, self.structure(ctx), ctx.state.file(*self.checkpoint),
                            net=ctx.net if init == "generated" else None, verbose=ctx.verbose, strategy=ctx.strategy,
                            trained=ctx.trained, init=init)
    if ctx.chief:
      save_model_atomic(with_output_activation(model, space), ctx.state.file(self.model_file))  # the user's head again
    ctx.retrained[self.key] = result
    full = space.largest()
    check = bn_check(result)
    ctx.log(f"[metaprune]   {self.key}: test accuracy {100 * result['test_accuracy']:.2f}%, {result['mflops']:.3f} "
            f"MFLOPs ({times(space.mflops(full), result['mflops'])} fewer), {result['params']:,} params "
            f"({times(space.params(full), result['params'])} fewer)" + ("" if check is None else f"; {check}"))
    return {"result": result}

  def load(self, ctx, record):
    self.structure(ctx)
    ctx.retrained[self.key] = record["result"]


class ExportStage(Stage):
  """Every retrained model to full-integer int8 TFLite, checked against Keras on the test split, timed here."""
  name, sections, checkpoint, chief_only = "export", ("export",), ("export.json",), True

  def describe(self, ctx):
    return "int8 TFLite, parity on the test split, latency on this host"

  def run(self, ctx):
    ctx.exported = export(ctx.state, ctx.splits, ctx.config, rows_for(ctx.config))
    io_lib.write_json_atomic(ctx.state.file("export.json"), ctx.exported)
    return {}

  def load(self, ctx, record):
    ctx.exported = io_lib.read_json(ctx.state.file("export.json"), "export report")


_REGISTRY = [PruningNetStage(), SearchStage(), RetrainStage("searched", "structure.json"),
             RetrainStage("uniform", "uniform_structure.json"),
             RetrainStage("global_magnitude", "global_magnitude_structure.json", trained_model_only=True),
             RetrainStage("uniform_scratch", "uniform_structure.json", init="scratch", trained_model_only=True),
             ExportStage()]


def register_stage(stage, after=None):
  """Adds `stage` (a `Stage`) to every run, after the stage named `after` (default: last)."""
  if not isinstance(stage, Stage) or not stage.name:
    raise TypeError(f"{stage!r} is not a Stage with a name; subclass tf_metaprune.pipeline.Stage")
  names = [s.name for s in _REGISTRY]
  if stage.name in names:
    raise ValueError(f"a stage named {stage.name!r} is registered already ({names})")
  if after is not None and after not in names:
    raise ValueError(f"after={after!r} is not a stage; the stages are {names}")
  _REGISTRY.insert(len(_REGISTRY) if after is None else names.index(after) + 1, stage)


def stages_for(config):
  """The `Stage` objects of a run of `config`, in order."""
  return [s for s in _REGISTRY if s.applies(config)]


def stage_names(config):
  """The stage names of a run of `config` (a trained `keras_model` adds the baselines' retrainings)."""
  return tuple(s.name for s in stages_for(config))


def rows_for(config):
  """The `RetrainStage`s of a run of `config`: the report's rows."""
  return [s for s in stages_for(config) if isinstance(s, RetrainStage)]


STAGES = tuple(s.name for s in _REGISTRY if not getattr(s, "trained_model_only", False))
PRETRAINED_STAGES = tuple(s.name for s in _REGISTRY)


def original_accuracy(state, trained, splits):
  """Test accuracy of the trained keras_model (original.json caches it)."""
  path = state.file("original.json")
  if os.path.exists(path):
    return io_lib.read_json(path, "original model record")
  record = original_record(trained, splits)
  io_lib.write_json_atomic(path, record)
  return record


def export(state, splits, config, rows):
  """Each row's model to int8 TFLite (`RetrainStage.tflite_file`), with parity and host latency."""
  files = {}
  for row in rows:
    model = keras.saving.load_model(state.file(row.model_file))
    # The calibration split (train images in a fixed order): `splits.train` reshuffles on every pass, so its
    # first batches -- and the int8 ranges -- would depend on how many passes this process made before.
    flatbuffer = tflite_export.convert(model, "int8", representative_data=splits.calibration,
                                       num_calibration_batches=config.export_calibration_batches)
    tflite_export.save(flatbuffer, state.file(row.tflite_file))  # atomic
    parity = tflite_export.check_parity(flatbuffer, model, splits.test)
    latency = tflite_export.benchmark(flatbuffer, num_runs=config.export_num_runs,
                                      num_threads=config.export_num_threads)
    files[row.key] = {"file": row.tflite_file, "size_bytes": len(flatbuffer), "keras_accuracy": parity.keras_accuracy,
                      "int8_accuracy": parity.tflite_accuracy, "top1_agreement": parity.top1_agreement,
                      "max_abs_logit_diff": parity.max_abs_logit_diff, "latency_median_ms": latency.median_ms,
                      "latency_p90_ms": latency.p90_ms, "num_threads": config.export_num_threads,
                      "num_runs": config.export_num_runs}
  # The same script the phone's latency table uses, for the exported files: its logs (<file>.txt beside them)
  # are read by examples/latency_table.py --run_dir.
  latency_lut.write_device_script(state.file(""), [row.tflite_file[:-len(".tflite")] for row in rows],
                                  latency_lut.timing_recipe(num_threads=config.export_num_threads),
                                  "the exported int8 models of this run")
  return {"device": tflite_export.device_description(), "files": files,
          "note": "host latency (LiteRT/XNNPACK on this CPU) compares the two files; int8 is not faster than "
                  "float32 on x86 -- time on the phone with benchmark_model for absolute figures"}


def run_stages(ctx, stages):
  """Runs (or restores, when done) every stage in order, recording each; returns nothing (ctx holds it all)."""
  for number, stage in enumerate(stages, 1):
    head = f"[metaprune] {number}/{len(stages)} {stage.name}:"
    if stage.chief_only and not ctx.chief:
      continue
    record = ctx.state.records.get(stage.name, {})
    if record.get("finished"):
      ctx.log(f"{head} done already")
      stage.load(ctx, record)
      continue
    ctx.log(f"{head} {stage.describe(ctx)}")
    ctx.state.start(stage.name)
    t0 = time.perf_counter()
    extra = stage.run(ctx) or {}
    ctx.state.finish(stage.name, time.perf_counter() - t0, **extra)
