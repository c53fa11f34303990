"""SIGKILL a train-then-search job at random moments; every rerun resumes, the end is the same.

The job (tests/resume_driver.py) trains a tiny PruningNet with
`training.fit(output_dir=...)` (3 epochs of 4 steps) and runs the evolutionary
search with `state_path=...` (4 generations of 8). One copy runs without
interruption; another is SIGKILLed three times during training and three
times during the search, at points drawn from a seeded RNG (a step or an
evaluation, plus a random delay of up to 0.2 s, so some kills land while a
checkpoint is being written), and started again after each kill. The final
structure, every evaluated candidate, the final weights (bit for bit) and the
loss history must equal the uninterrupted run's.

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
STEPS_PER_EPOCH = 4
TIMEOUT_S = 900   # per wait; generous: a shared CI machine can be many times slower than a quiet one


class _Zygote:
  """The forking job server of resume_driver.py."""

  def __init__(self):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    self.proc = subprocess.Popen([sys.executable, str(DRIVER), "--zygote"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))

  def start(self, work_dir, log_path):
    self.proc.stdin.write(f"{work_dir} {log_path}\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    assert line.strip().isdigit(), f"zygote answered {line!r}"
    return int(line)

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


@pytest.mark.slow
def test_job_killed_three_times_in_training_and_three_in_search_ends_like_an_uninterrupted_one(tmp_path):
  rng = random.Random(20261123)
  zygote = _Zygote()
  try:
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    reference_log = str(tmp_path / "reference.log")
    reference_pid = zygote.start(reference_dir, reference_log)

    work = tmp_path / "killed"
    work.mkdir()
    # Kill points: (kind, the count at which to kill). Training steps are global (12 in all,
    # a checkpoint after steps 4, 8, 12); search evaluations count within one process
    # (8 per generation; a resumed search starts at the generation after its last state).
    kills = [("train step", rng.randint(1, 3)),      # epoch 1: no checkpoint yet
             ("train step", rng.randint(5, 7)),      # epoch 2: resumes from the epoch-1 checkpoint
             ("train step", rng.randint(8, 11)),     # around / after the epoch-2 checkpoint
             ("search eval", rng.randint(1, 4)),     # generation 0: no search state yet
             ("search eval", rng.randint(9, 13)),    # generation 1 of a search started afresh
             ("search eval", rng.randint(2, 6))]     # the generation after a resumed search's state
    logs = []
    for i, (what, at) in enumerate(kills):
      log = str(tmp_path / f"run{i}.log")
      pid = zygote.start(work, log)
      lines = _wait(pid, log, lambda ls, what=what, at=at: _count(ls, what) >= at or "DONE" in ls)
      assert "DONE" not in lines, f"run {i} finished before its kill point {what} {at}"
      _kill(pid, rng.uniform(0.0, 0.1 if what == "train step" else 0.03))
      logs.append(_lines(log))
    log = str(tmp_path / "final.log")
    pid = zygote.start(work, log)
    final = _wait(pid, log, lambda ls: "DONE" in ls)
    logs.append(final)
    reference = _wait(reference_pid, reference_log, lambda ls: "DONE" in ls)
  finally:
    zygote.close()

  # Every rerun resumed training at the start of the epoch after its last checkpoint (the
  # kill may land just before or just after the checkpoint of the last step it printed).
  for before, after in zip(logs[0:3], logs[1:4]):
    first, last = _first(after, "train step"), _count(before, "train step")
    assert first is not None and first % STEPS_PER_EPOCH == 1 and last - 3 <= first <= last + 1, (first, last)
  assert _first(logs[2], "train step") > 1 and _first(logs[3], "train step") > 1
  # Training finished in run 3: later runs train nothing (a finished stage is not redone).
  assert all(_first(l, "train step") is None for l in logs[4:])
  # The search resumed from its state file after the kills in generations >= 1.
  assert any(l.startswith("[evolution] resuming") for l in logs[5])
  assert any(l.startswith("[evolution] resuming") for l in logs[6])
  assert not any(l.startswith("[evolution] resuming") for l in logs[3])

  got = json.loads((work / "result.json").read_text())
  want = json.loads((reference_dir / "result.json").read_text())
  assert got["best"] == want["best"]
  assert got["candidates"] == want["candidates"]
  assert got["loss"] == want["loss"]
  assert got["weights_sha256"] == want["weights_sha256"]
  assert len(want["candidates"]) >= 24 and len(want["loss"]) == 3
  # No half-written state or checkpoint remains, and the state files parse.
  leftovers = [p.name for p in work.rglob("*") if p.name.endswith(".tmp") or p.name.startswith("tmp_")]
  assert json.loads((work / "train" / "backup" / "state.json").read_text())["epoch"] == 3
  assert json.loads((work / "search_state.json").read_text())["generation"] == 4
  assert not [n for n in leftovers if n.startswith("tmp_")], leftovers
