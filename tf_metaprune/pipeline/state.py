"""The resumable state of a run folder and of a PruningNet training folder, through `io.StateFile`.

Each stage of a run keeps its record in `stages/<stage>.json`: an `io.StateFile`
whose identity is the stage's settings (its sections' and every earlier
stage's, `Run.stage_settings`). It is written when the stage starts (so an
interrupted stage is known by its settings too) and again when it finishes,
with its time and results. A rerun loads every record of the run's stages
before any work: a stage started or finished with other settings is refused
in `StateFile`'s one message shape, naming each setting (saved, now), and left
untouched. Stages not started yet may change their settings.
"""

import os
import time

import keras

from tf_metaprune import io as io_lib
from tf_metaprune.pipeline.build import _is_chief
from tf_metaprune.pipeline.build import _scope
from tf_metaprune.pipeline.build import save_model_atomic
from tf_metaprune.pipeline.build import train_pruning_net
from tf_metaprune.pipeline.config import PipelineConfig
from tf_metaprune.pipeline.config import SECTIONS

_STAGE_FORMAT = "tf_metaprune.PipelineStage"
_RUN_FORMAT = "tf_metaprune.PruningNetRun"
_RUN_WAY_OUT = "rerun with the same settings to resume, or use a new output_dir"


def settings_of(config: PipelineConfig, sections):
  """The settings of `config` in `sections` (names of `SECTIONS`), by flag name."""
  return {k: getattr(config, k) for name in sections for k in SECTIONS[name]}


class TrainingRun:
  """A folder holding one PruningNet training (examples/train_pruningnet.py).

  Files: run.json (an `io.StateFile`: the data and net settings are its
  identity; the whole config and the data are its payload), backup/
  (tf_metaprune.training's checkpoint), logs/ (TensorBoard), last.weights.h5,
  history.json, space.json and, once finished, pruningnet.keras.

  Args:
    output_dir: the folder.
    config: the settings (data, model and PruningNet ones are used).
    resume: continue a run already in the folder. Without it a folder that
      holds a run is refused, so a finished net is never overwritten by
      accident; with it, a run with other settings is refused.

  Raises:
    ValueError / PermissionError: as above, or for a folder not writable.
  """

  def __init__(self, output_dir, config: PipelineConfig, resume=False):
    self.output_dir = str(output_dir)
    self.config = config
    self.net_path = os.path.join(self.output_dir, "pruningnet.keras")
    marks = [f for f in ("run.json", "backup", "pruningnet.keras") if os.path.exists(os.path.join(self.output_dir, f))]
    if marks and not resume:
      raise ValueError(f"output_dir={self.output_dir!r} already holds a PruningNet run ({', '.join(marks)}); pass "
                       "--resume (resume=True) to continue it with the same settings, or choose another output_dir")
    self.state_file = io_lib.StateFile(os.path.join(self.output_dir, "run.json"), _RUN_FORMAT,
                                       settings_of(config, ("data", "net")), what="PruningNet run file",
                                       way_out="resume with the same flags, or train into a new output_dir")
    self.state_file.load()   # a run of other settings stops here
    io_lib.check_writable_dir(self.output_dir, "output_dir")

  @property
  def finished(self):
    return os.path.exists(self.net_path)

  def train(self, splits, space, verbose=1, strategy=None, trained=None):
    """Trains (or resumes, or loads the finished) PruningNet; returns it.

    Under a multi-worker strategy every worker calls this; only the chief
    writes the files (all workers must see the same `output_dir`).
    """
    if self.finished:
      print(f"{self.net_path} is finished already: loading it (delete it to train again)")
      with _scope(strategy):
        net = keras.saving.load_model(self.net_path)
      if net.space.fingerprint() != space.fingerprint():
        raise ValueError(f"{self.net_path!r} holds a net of another search space ({net.space.name}); use a new "
                         "output_dir")
      return net
    chief = _is_chief(strategy)
    if chief:
      self.state_file.save(config=self.config.get_config(), dataset=splits.get_config())
      io_lib.write_text_atomic(os.path.join(self.output_dir, "space.json"), space.to_json())
    net, history = train_pruning_net(self.config, splits, space, self.output_dir, verbose=verbose,
                                     strategy=strategy, trained=trained)
    if chief:
      io_lib.write_json_atomic(os.path.join(self.output_dir, "history.json"), history)
      save_model_atomic(net, self.net_path)
    return net


def load_training_run(pruningnet_dir, strategy=None):
  """(PipelineConfig, PruningNet) of a finished `TrainingRun` folder.

  Raises:
    ValueError: if the folder holds no finished PruningNet run.
  """
  run_json = os.path.join(str(pruningnet_dir), "run.json")
  net_path = os.path.join(str(pruningnet_dir), "pruningnet.keras")
  if not os.path.exists(net_path) or not os.path.exists(run_json):
    raise ValueError(f"{pruningnet_dir!r} holds no finished PruningNet (pruningnet.keras and run.json); train one "
                     "with examples/train_pruningnet.py --output_dir=... (or finish it with --resume)")
  config = PipelineConfig.from_config(io_lib.read_json(run_json, "PruningNet run file")["config"])
  with _scope(strategy):
    net = keras.saving.load_model(net_path)
  return config, net


class Run:
  """One output folder: its stages' records, their settings, and the files they made.

  Args:
    output_dir: the run folder.
    config: the run's settings.
    stages: the run's `Stage` objects, in order (their `sections` give each
      record's identity).
    chief: whether this process writes the records (under a multi-worker
      strategy only the chief does; every worker reads them).

  `Run(output_dir, config, stages).check()` loads every stage's record (refusing
  one of other settings) before anything is computed.
  """

  def __init__(self, output_dir, config: PipelineConfig, stages, chief=True):
    self.output_dir = str(output_dir)
    self.config = config
    self.chief = bool(chief)
    self.stage_list = list(stages)
    self.records = {}
    known = {"stages", "config.json"} | {s.checkpoint[0] for s in self.stage_list if s.checkpoint}
    if os.path.isdir(self.output_dir) and os.listdir(self.output_dir) and not os.path.isdir(self.file("stages")):
      foreign = sorted(f for f in set(os.listdir(self.output_dir)) - known if not f.startswith("searcher_"))
      if foreign:
        raise ValueError(f"output_dir={self.output_dir!r} is not empty and holds no pipeline run ({foreign[:5]}); "
                         "pick a new or empty folder, so nothing of yours is overwritten")

  def file(self, *parts):
    return os.path.join(self.output_dir, *parts)

  def stage_settings(self, stage):
    """The settings stage `stage` (a name) depends on: its sections' and every earlier stage's."""
    sections = []
    for s in self.stage_list:
      sections += [n for n in s.sections if n not in sections]
      if s.name == stage:
        return settings_of(self.config, sections)
    raise ValueError(f"stage {stage!r} is not one of this run's {[s.name for s in self.stage_list]}")

  def record_file(self, stage):
    return io_lib.StateFile(self.file("stages", f"{stage}.json"), _STAGE_FORMAT,
                            dict(stage=stage, **self.stage_settings(stage)), what=f"pipeline stage {stage!r} record",
                            way_out=_RUN_WAY_OUT, chief=self.chief)

  def check(self):
    """Loads every stage's record; raises ValueError (`io.StateFile`'s) for one of other settings."""
    for s in self.stage_list:
      record = self.record_file(s.name).load()
      if record is not None:
        self.records[s.name] = record
    io_lib.check_writable_dir(self.output_dir, "output_dir")

  @property
  def stages(self):
    """{stage: record} of the finished stages, in order."""
    return {name: r for name, r in self.records.items() if r.get("finished")}

  def done(self, stage):
    return bool(self.records.get(stage, {}).get("finished"))

  def start(self, stage):
    """Records that `stage` started, with its settings (so an interrupted stage is checked on resume)."""
    if stage not in self.records:
      self.records[stage] = {"finished": False}
      self.record_file(stage).save(**self.records[stage])

  def finish(self, stage, seconds, **extra):
    self.records[stage] = dict(finished=True, seconds=float(seconds), finished_at=time.strftime("%Y-%m-%d %H:%M:%S"),
                               **extra)
    self.record_file(stage).save(**self.records[stage])
