"""End to end: examples/latency_table.py measures a table on the host, writes the phone's models and
script, and reads the phone's logs back in each of the three layouts (through a fake adb).

The space is a tiny small_cnn (divisor 1, 2-point grid, float32): a few seconds of conversion per
run. The phone is tests/fake_adb.py: its logs are synthetic (the numbers are made up; the layouts
follow the LiteRT sources named in tests/device_log_fixtures.py). No test asserts a time.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

import fake_adb  # tests/fake_adb.py
from tf_metaprune import budgets
from tf_metaprune import latency_lut

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "examples", "latency_table.py")
SPACE_FLAGS = ("--model=small_cnn", "--divisor=1", "--grid_size=2", "--quantization=float32", "--max_examples=200")


def _run(*args, env=None):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, **(env or {}))
  return subprocess.run([sys.executable, BINARY, *SPACE_FLAGS, *args], capture_output=True, text=True, env=env,
                        timeout=600)


def _space():
  """The space the binary builds from SPACE_FLAGS (small_cnn on 28x28x1 MNIST, 10 classes)."""
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.build_space(pipeline.PipelineConfig(model="small_cnn", divisor=1), (28, 28, 1), 10)


@pytest.fixture(scope="module")
def device_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("lut") / "phone"
  proc = _run(f"--write_device_models={folder}", "--delegate=xnnpack", "--num_threads=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "run_on_device.sh" in proc.stdout
  return folder


def test_write_device_models_writes_models_manifest_and_a_ready_script(device_dir):
  manifest = json.loads((device_dir / "manifest.json").read_text())
  assert manifest["timing"] == {"num_threads": 2, "delegate": "xnnpack", "num_runs": 100, "warmup_runs": 10,
                                "cpu_mask": "f0"}
  assert {"empty", "overhead", "reference"} <= set(manifest["models"])
  for name in manifest["models"]:
    assert (device_dir / f"{name}.tflite").stat().st_size > 0
  script = (device_dir / "run_on_device.sh").read_text()
  assert os.access(device_dir / "run_on_device.sh", os.X_OK)
  assert '"$ADB" push "$HERE/$name.tflite"' in script
  assert ('"$ADB" shell taskset "$CPU_MASK" $BENCHMARK --graph="$REMOTE/$name.tflite" --num_threads=2 '
          '--num_runs=100 --warmup_runs=10 --use_xnnpack=true > "$HERE/$name.txt" 2>&1') in script
  assert all(name in script for name in manifest["models"])


def _time_on_fake_phone(tmp_path, device_dir, fmt, **extra):
  """A copy of the device folder, timed by run_on_device.sh on the fake phone; returns the folder."""
  folder = tmp_path / fmt
  shutil.copytree(device_dir, folder)
  done = subprocess.run(["sh", str(folder / "run_on_device.sh")], capture_output=True, text=True,
                        env=fake_adb.environment(tmp_path, fmt, **extra), timeout=300)
  assert done.returncode == 0, done.stderr
  return folder


def test_from_device_logs_writes_the_table_of_the_phone(tmp_path, device_dir):
  folder = _time_on_fake_phone(tmp_path, device_dir, "stdout")
  out = tmp_path / "phone.json"
  proc = _run(f"--from_device_logs={folder}", f"--output={out}", "--device=fake phone")
  assert proc.returncode == 0, proc.stderr[-3000:]
  data = json.loads(out.read_text())
  assert data["device"] == "fake phone" and data["measurement"]["timing"]["num_threads"] == 2
  assert data["measurement"]["log_formats"] == ["benchmark_model stdout"]
  # A one-layer conv of cin -> cout took 0.001 + 0.0004 cin cout + 0.002 cout ms, the empty model 0.001.
  assert data["entries"]["conv1"]["1,16"] == pytest.approx(0.0004 * 16 + 0.002 * 16, rel=1e-4)
  assert "--latency_table=" in proc.stdout


def test_the_three_log_layouts_give_the_same_table(tmp_path, device_dir):
  space = _space()
  tables = {fmt: latency_lut.latency_table_from_logs(space, str(_time_on_fake_phone(tmp_path, device_dir, fmt)))
            for fmt in ("stdout", "logcat", "csv")}
  stdout, logcat, csv = tables["stdout"], tables["logcat"], tables["csv"]
  assert [t.measurement["log_formats"] for t in tables.values()] == [
      ["benchmark_model stdout"], ["logcat (tag tflite)"], ["benchmark_model --profiling_output_csv_file"]]
  assert stdout.entries.keys() == csv.entries.keys() and stdout.entries
  for node, row in stdout.entries.items():
    assert logcat.entries[node] == pytest.approx(row, rel=1e-6)
    assert csv.entries[node] == pytest.approx(row, rel=1e-4, abs=1e-6)
  assert logcat.overhead_ms == pytest.approx(stdout.overhead_ms)
  # The CSV holds operator times only: its overhead (calibrated on the reference model) lacks the 20 us
  # per-invoke cost.
  assert stdout.overhead_ms > 0 and csv.overhead_ms > 0
  assert stdout.overhead_ms - csv.overhead_ms == pytest.approx(0.020, rel=1e-3)


def test_a_delegate_row_and_a_truncated_log_each_get_one_line_naming_the_file(tmp_path, device_dir):
  manifest = json.loads((device_dir / "manifest.json").read_text())
  gpu, cut, lost = manifest["models"][:3]
  folder = _time_on_fake_phone(tmp_path, device_dir, "logcat", FAKE_ADB_GPU=gpu, FAKE_ADB_CUT=cut)
  os.remove(folder / f"{lost}.txt")
  with pytest.raises(ValueError) as error:
    latency_lut.latency_table_from_logs(_space(), str(folder))
  lines = str(error.value).splitlines()
  assert lines[0].startswith(f"3 of {len(manifest['models'])} logs") and "cannot be used" in lines[0]
  named = {name: [l for l in lines if l.strip().startswith(f"{name}.txt:")] for name in (gpu, cut, lost)}
  assert all(len(v) == 1 for v in named.values()), lines
  assert "GPU delegate" in named[gpu][0] and "--delegate=xnnpack" in named[gpu][0]
  assert "truncated" in named[cut][0] and "missing" in named[lost][0]
  assert "run_on_device.sh" in lines[-1]


def test_measure_host_writes_a_table_metaprune_can_load(tmp_path):
  out = tmp_path / "host.json"
  proc = _run("--measure_host", f"--output={out}", "--num_runs=3", "--warmup_runs=1", "--num_rounds=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  data = json.loads(out.read_text())
  assert data["measurement"]["method"] == "host_interpreter"
  table = budgets.LatencyTable.load(str(out))
  assert all(ms >= 0 for row in table.entries.values() for ms in row.values()) and table.entries
  assert "--latency_table=" in proc.stdout


def test_modes_are_exclusive():
  proc = _run("--measure_host", "--from_device_logs=/nonexistent", "--output=x.json")
  assert proc.returncode == 1 and "exactly one of" in proc.stderr and "Traceback" not in proc.stderr
