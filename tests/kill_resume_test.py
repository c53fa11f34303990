"""SIGKILL the pipeline at random moments; every rerun resumes, the end is the same.

The job is the whole pipeline (`tf_metaprune.pipeline.run`, the code behind
examples/metaprune.py; tests/resume_driver.py), which holds the library's two
resumable kinds of work: `training.fit(output_dir=...)` (three trainings) and
the evolutionary search's `state_path` (a library-level train-then-search job
killed the same way was a subset of this one and was folded into it).

The pipeline (small CNN, 3 PruningNet epochs, a 4-generation search, 3
retraining epochs per structure, int8 export) is SIGKILLed three times in
each of its five stages, at seeded random points (a training step in each
epoch, an evaluation in generation 0, 1 and after a resume, a point of the
export), and rerun after each kill (after a random delay of up to 0.3 s past the aimed point,
so some kills land while a checkpoint is being written); its saved models (bit
for bit), search results (every candidate), accuracies, training histories and
TFLite files must equal an uninterrupted run's, and no temporary file remains.

Jobs are forked from one process that imported TensorFlow once (see
resume_driver.py): each job is still a separate process killed with SIGKILL.
"""

import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DRIVER = pathlib.Path(__file__).resolve().with_name("resume_driver.py")
TIMEOUT_S = 900   # per wait; generous: a shared CI machine can be many times slower than a quiet one


class _Zygote:
  """The forking job server of resume_driver.py."""

  def __init__(self):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    self.proc = subprocess.Popen([sys.executable, str(DRIVER), "--zygote"],
                                 stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))

  def start(self, work_dir, log_path):
    self.proc.stdin.write(f"{work_dir} {log_path}\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    assert line.strip().isdigit(), f"zygote answered {line!r}"
    return int(line)

  def start_in_new_folder(self, folder):
    """Starts a job in the new `folder`, logging to `folder`.log; returns (folder, log path, pid)."""
    folder.mkdir()
    log = str(folder) + ".log"
    return folder, log, self.start(folder, log)

  def close(self):
    self.proc.stdin.close()
    try:
      self.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      self.proc.kill()


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  return True


def _lines(log_path):
  return pathlib.Path(log_path).read_text().splitlines() if os.path.exists(log_path) else []


def _wait(pid, log_path, until):
  """Polls the job's log until `until(lines)` holds; fails if the job dies first."""
  deadline = time.monotonic() + TIMEOUT_S
  while time.monotonic() < deadline:
    lines = _lines(log_path)
    if until(lines):
      return lines
    if "FAILED" in lines or not _alive(pid):
      lines = _lines(log_path)
      if until(lines):
        return lines
      pytest.fail(f"job {pid} ended before the awaited point; its log:\n" + "\n".join(lines[-40:]))
    time.sleep(0.02)
  pytest.fail(f"job {pid} timed out; its log:\n" + "\n".join(_lines(log_path)[-40:]))


def _count(lines, what):
  """The last N of "<what> N" lines (0 if none)."""
  nums = [int(m.group(1)) for m in (re.fullmatch(rf"{what} (\d+)", l) for l in lines) if m]
  return nums[-1] if nums else 0


def _first(lines, what):
  nums = [int(m.group(1)) for m in (re.fullmatch(rf"{what} (\d+)", l) for l in lines) if m]
  return nums[0] if nums else None


def _kill(pid, delay_s):
  time.sleep(delay_s)
  os.kill(pid, signal.SIGKILL)
  deadline = time.monotonic() + 30
  while _alive(pid) and time.monotonic() < deadline:
    time.sleep(0.01)
  assert not _alive(pid)


_TRAININGS = ("pruningnet", "retrain_searched", "retrain_uniform")


def _steps_per_epoch(lines, stage):
  return _first(lines, f"{stage} steps_per_epoch")


@pytest.mark.slow
def test_pipeline_killed_three_times_in_every_stage_ends_like_an_uninterrupted_one(tmp_path):
  rng = random.Random(20261129)
  export_points = sorted(rng.sample(range(6), 3))   # export steps: convert, parity, benchmark per model
  zygote = _Zygote()
  try:
    reference_dir, reference_log, reference_pid = zygote.start_in_new_folder(tmp_path / "reference")

    work = tmp_path / "killed"
    work.mkdir()
    runs = []   # (stage, k, the log of the killed run)
    for stage in _TRAININGS[:1] + ("search",) + _TRAININGS[1:] + ("export",):
      for k in range(3):
        log = str(tmp_path / f"{stage}{k}.log")
        pid = zygote.start(work, log)
        if stage in _TRAININGS:
          # Kill k lands in epoch k + 1 (a checkpoint closes each epoch; the rerun resumes after it).
          lines = _wait(pid, log, lambda ls, s=stage: _steps_per_epoch(ls, s) is not None or "DONE" in ls)
          steps = _steps_per_epoch(lines, stage)
          what, at, delay_s = f"{stage} step", rng.randint(k * steps + 1, (k + 1) * steps), rng.uniform(0, 0.1)
        elif stage == "search":
          # Generation 0 (no state yet), generation 1 of a search begun afresh, a generation after a resume.
          what, at, delay_s = "search eval", (rng.randint(1, 7), rng.randint(9, 15), rng.randint(2, 6))[k], \
              rng.uniform(0, 0.03)
        else:
          what, at, delay_s = "export step", export_points[k], rng.uniform(0, 0.3)
        started = "[metaprune] 5/5 export: int8" if stage == "export" else what
        lines = _wait(pid, log, lambda ls, w=what, a=at, s=started: (any(l.startswith(s) for l in ls)
                                                                    and _count(ls, w) >= a) or "DONE" in ls)
        assert "DONE" not in lines, f"run {stage}{k} finished before its kill point {what} {at}"
        _kill(pid, delay_s)
        runs.append((stage, k, _lines(log)))
    log = str(tmp_path / "final.log")
    final = _wait(zygote.start(work, log), log, lambda ls: "DONE" in ls)
    reference = _wait(reference_pid, reference_log, lambda ls: "DONE" in ls)
  finally:
    zygote.close()

  logs = [lines for _, _, lines in runs] + [final]
  for i, (stage, k, lines) in enumerate(runs):
    after = logs[i + 1]
    if stage in _TRAININGS:
      # The rerun resumed at the start of the epoch after its last checkpoint (the kill may land just
      # before or after the checkpoint of the last step printed); it trains nothing only if the killed
      # run had done every step (the last kill may land after the final checkpoint or the stage's end).
      steps, first, last = _steps_per_epoch(lines, stage), _first(after, f"{stage} step"), _count(lines, f"{stage} step")
      if first is None:
        assert k == 2 and last == 3 * steps, (stage, k, last, after[-20:])
      else:
        assert first % steps == 1 and last - steps + 1 <= first <= last + 1, (stage, k, first, last)
        assert k == 0 or first > 1, (stage, k, first)
    elif stage == "search":
      # Killed in generation 0, a search starts afresh; killed later, it resumes from its state file.
      starts = _first(after, "search starts at generation")
      assert starts == 0 if k == 0 else starts is None or starts >= 1, (k, starts)
  assert all(f"{s}: done already" in "\n".join(final) for s in ("pruningnet", "search", "retrain_searched",
                                                                 "retrain_uniform"))

  got, want = (json.loads((d / "result.json").read_text()) for d in (work, reference_dir))
  assert got == want
  for name in ("search_result.json", "uniform_result.json"):   # all but timings and trace counts
    a, b = (json.loads((d / "run" / name).read_text()) for d in (work, reference_dir))
    for key in ("best", "top_k", "candidates", "budget", "config"):
      assert a[key] == b[key], (name, key)
    assert [{k: v for k, v in h.items() if "seconds" not in k} for h in a["history"]] == \
        [{k: v for k, v in h.items() if "seconds" not in k} for h in b["history"]], name
  for name in ("structure.json", "uniform_structure.json", "pruningnet/history.json"):
    assert (work / "run" / name).read_text() == (reference_dir / "run" / name).read_text(), name
  for name in ("model_int8.tflite", "uniform_int8.tflite"):
    assert (work / "run" / name).read_bytes() == (reference_dir / "run" / name).read_bytes(), name
  for stage in ("pruningnet", "search", "retrain_searched", "retrain_uniform", "export"):
    assert json.loads((work / "run" / "stages" / f"{stage}.json").read_text())["finished"], stage
  assert not [p.name for p in work.rglob("*") if ".tmp" in p.name]
