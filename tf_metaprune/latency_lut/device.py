"""The phone round trip: write the one-layer models for a device, the script that times them, and read
back what the phone printed (any of the three layouts of `tflite_export.device_logs`)."""

import os
import shlex
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tf_metaprune import io as io_lib
from tf_metaprune import space as space_lib
from tf_metaprune.latency_lut.models import _convert_plan
from tf_metaprune.latency_lut.models import _reference_structure
from tf_metaprune.latency_lut.plan import _check_quantization
from tf_metaprune.latency_lut.plan import _check_space
from tf_metaprune.latency_lut.plan import _plan
from tf_metaprune.latency_lut.plan import table_from_timings
from tf_metaprune.latency_lut.tables import EMPTY_MODEL
from tf_metaprune.latency_lut.tables import MeasuredLatencyTable
from tf_metaprune.latency_lut.tables import OVERHEAD_MODEL
from tf_metaprune.latency_lut.tables import REFERENCE_MODEL
from tflite_export.convert import save
from tflite_export.device_logs import read_device_log
from tflite_export.device_logs import TruncatedLogError

_MANIFEST = "manifest.json"
_MANIFEST_FORMAT = "tflite_export.LayerModels"
SCRIPT = "run_on_device.sh"

# benchmark_model flags of each delegate (tflite/tools/delegates/*_delegate_provider.cc): "cpu" is the
# built-in kernels without XNNPACK, "xnnpack" the default CPU path of an app.
DELEGATE_FLAGS = {
    "cpu": ("--use_xnnpack=false",),
    "xnnpack": ("--use_xnnpack=true",),
    "gpu": ("--use_gpu=true",),
    "nnapi": ("--use_nnapi=true",),
}
# What the log calls each delegate ("Explicitly applied GPU delegate", a "TfLiteGpuDelegateV2" row).
_DELEGATE_NAMES = {"gpu": ("gpu",), "nnapi": ("nnapi",), "xnnpack": ("xnnpack",), "cpu": ()}
DEFAULT_TIMING = {"num_threads": 1, "num_runs": 100, "warmup_runs": 10, "delegate": "xnnpack",
                  "cpu_mask": "f0"}


def timing_recipe(num_threads: int = 1, delegate: str = "xnnpack", num_runs: int = 100, warmup_runs: int = 10,
                  cpu_mask: str = "f0") -> Dict[str, Any]:
  """The phone timing settings a manifest records (checked: a bad value gets a one-line error).

  Args:
    num_threads: `--num_threads` of benchmark_model (the threads the app will use).
    delegate: one of `DELEGATE_FLAGS` ("cpu", "xnnpack", "gpu", "nnapi").
    num_runs, warmup_runs: `--num_runs` / `--warmup_runs`.
    cpu_mask: `taskset` mask pinning the run to the big cores (hex; "f0" = cores 4-7 on most
      4+4 phones; check /sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq), "" for none.
  """
  if delegate not in DELEGATE_FLAGS:
    raise ValueError(f"delegate={delegate!r} is not one of {sorted(DELEGATE_FLAGS)}")
  for name, value, low in (("num_threads", num_threads, 1), ("num_runs", num_runs, 1),
                           ("warmup_runs", warmup_runs, 0)):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ValueError(f"{name}={value!r} must be an int >= {low}")
  if cpu_mask and not all(c in "0123456789abcdefABCDEF" for c in cpu_mask):
    raise ValueError(f"cpu_mask={cpu_mask!r} must be a hex taskset mask such as 'f0' (or '' for no pinning)")
  return {"num_threads": num_threads, "delegate": delegate, "num_runs": num_runs, "warmup_runs": warmup_runs,
          "cpu_mask": cpu_mask}


def benchmark_command(model_path: str, recipe: Dict[str, Any], benchmark_path: str = "$BENCHMARK",
                      mask: Optional[str] = None) -> str:
  """The `taskset MASK benchmark_model --graph=... ...` line the phone runs for one model (`mask`: the
  taskset argument as written, default the recipe's)."""
  flags = [f"--graph={model_path}", f"--num_threads={recipe['num_threads']}",
           f"--num_runs={recipe['num_runs']}", f"--warmup_runs={recipe['warmup_runs']}"]
  flags += list(DELEGATE_FLAGS[recipe["delegate"]])
  pin = f"taskset {mask or recipe['cpu_mask']} " if recipe.get("cpu_mask") else ""
  return pin + benchmark_path + " " + " ".join(flags)


def write_device_script(folder: str, models: Sequence[str], recipe: Dict[str, Any], what: str) -> str:
  """Writes `run_on_device.sh`: push each model, time it on the phone, bring its log back beside it.

  The script reads `ADB`, `BENCHMARK` (benchmark_model on the phone) and `REMOTE` (a phone folder)
  from the environment; a failed model leaves its log (for `--from_device_logs` to name) and the
  loop goes on.
  """
  quoted = " ".join(shlex.quote(m) for m in models)
  command = benchmark_command('"$REMOTE/$name.tflite"', recipe, mask='"$CPU_MASK"')
  text = f"""#!/bin/sh
# Times {what} on an Android phone with LiteRT's benchmark_model (written by tf_metaprune).
# Needs adb and a benchmark_model binary for the phone's ABI on it, e.g.
#   adb push android_aarch64_benchmark_model /data/local/tmp/benchmark_model
#   adb shell chmod +x /data/local/tmp/benchmark_model
# Recipe: {recipe['num_threads']} thread(s), delegate {recipe['delegate']}, {recipe['warmup_runs']} warm-up runs,
# {recipe['num_runs']} runs after them, pinned to the cores of taskset mask CPU_MASK (default
# {recipe.get('cpu_mask') or 'none'}: on most 4+4-core phones the big cores; compare the cores'
# /sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq). Keep the phone idle, screen on, not charging hot.
# Each model's output lands in <model>.txt beside it; then read them with
#   python examples/latency_table.py ... --from_device_logs=<this folder>
set -u
ADB=${{ADB:-adb}}
BENCHMARK=${{BENCHMARK:-/data/local/tmp/benchmark_model}}
REMOTE=${{REMOTE:-/data/local/tmp/tf_metaprune}}
CPU_MASK=${{CPU_MASK:-{recipe.get('cpu_mask', '')}}}
HERE=$(cd "$(dirname "$0")" && pwd)
"$ADB" shell mkdir -p "$REMOTE"
for name in {quoted}; do
  "$ADB" push "$HERE/$name.tflite" "$REMOTE/$name.tflite" > /dev/null || {{ echo "push failed: $name" >&2; continue; }}
  "$ADB" shell {command} > "$HERE/$name.txt" 2>&1 || echo "benchmark_model failed: $name (see $name.txt)" >&2
  "$ADB" shell rm -f "$REMOTE/$name.tflite"
done
"""
  path = os.path.join(folder, SCRIPT)
  io_lib.write_text_atomic(path, text)
  os.chmod(path, 0o755)
  return path


def write_layer_models(
    space: space_lib.SearchSpace,
    output_dir: str,
    quantization: str = "int8",
    grid_size: Optional[int] = 6,
    seed: int = 0,
    progress: bool = True,
    timing: Optional[Dict[str, Any]] = None,
) -> str:
  """Writes the one-layer `.tflite` models of a table, the manifest and `run_on_device.sh`.

  The same models `measure_latency_table` times on the host: one file per
  layer signature (`<signature>.tflite`), plus `empty.tflite` (the per-invoke
  cost subtracted from every layer), `overhead.tflite` (the whole model's
  fixed cost) and `reference.tflite` (a whole model, to check the table);
  `manifest.json` lists them with the timing recipe, and `run_on_device.sh`
  times every file on the phone into `<same name>.txt` beside it. Then call
  `latency_table_from_logs`.

  Args:
    space: the `SearchSpace`.
    output_dir: folder to write (created if needed).
    quantization, grid_size, seed, progress: as in `measure_latency_table`.
    timing: `timing_recipe(...)` (threads, delegate, runs, big-core mask); None: 1 thread, XNNPACK,
      100 runs after 10 warm-up runs, taskset f0.

  Returns:
    The path of `manifest.json`.

  Raises:
    ValueError: for an unknown `quantization`, a bad `grid_size` or timing recipe.
  """
  _check_space(space)
  _check_quantization(quantization)
  recipe = timing_recipe(**{**DEFAULT_TIMING, **(timing or {})})
  plan = _plan(space, grid_size)
  io_lib.check_writable_dir(output_dir, "device model folder")
  flatbuffers = _convert_plan(space, plan, quantization, seed, progress)
  for name, flatbuffer in flatbuffers.items():
    save(flatbuffer, os.path.join(output_dir, name + ".tflite"))
  models = sorted(flatbuffers)
  write_device_script(output_dir, models, recipe, f"the {len(models)} one-layer models of {space.name!r}")
  path = os.path.join(output_dir, _MANIFEST)
  io_lib.write_json_atomic(path, {
      "format": _MANIFEST_FORMAT, "version": 2, "space": space.name, "space_fingerprint": space.fingerprint(),
      "quantization": quantization, "grid_size": grid_size, "empty_model": EMPTY_MODEL,
      "overhead_model": OVERHEAD_MODEL, "reference_model": REFERENCE_MODEL,
      "reference_structure": list(_reference_structure(space).choices), "models": models, "timing": recipe,
      "how_to_time": f"sh {SCRIPT} (each X.tflite: adb push, adb shell {benchmark_command('X.tflite', recipe)}"
                     " > X.txt 2>&1); logs may also be the --profiling_output_csv_file CSV or the benchmark "
                     "app's logcat, saved as X.txt"})
  return path


def read_manifest(layer_dir: str, space: space_lib.SearchSpace) -> Dict[str, Any]:
  """The manifest of a `write_layer_models` folder, checked against `space`."""
  manifest_path = os.path.join(layer_dir, _MANIFEST)
  if not os.path.exists(manifest_path):
    raise ValueError(f"no {_MANIFEST} in {layer_dir!r}: write the one-layer models first "
                     "(examples/latency_table.py --write_device_models=DIR, or write_layer_models(space, DIR))")
  manifest = io_lib.read_json(manifest_path, "layer model manifest")
  if manifest.get("format") != _MANIFEST_FORMAT:
    raise ValueError(f"{manifest_path!r} is not a write_layer_models manifest (format={manifest.get('format')!r})")
  if manifest.get("space_fingerprint") != space.fingerprint():
    raise ValueError(f"the models in {layer_dir!r} were written for space {manifest.get('space')!r} (fingerprint "
                     f"{manifest.get('space_fingerprint')}), not for {space.name!r} (fingerprint "
                     f"{space.fingerprint()}); write them again for this space")
  return manifest


def read_device_logs(layer_dir: str, names: Sequence[str], delegate: Optional[str] = None,
                     log_suffix: str = ".txt") -> Tuple[Dict[str, Any], List[str]]:
  """Reads `<name><log_suffix>` for every name: ({name: DeviceLog}, [one problem line per bad file]).

  A log is a problem when it is missing, empty, truncated, not a benchmark log, or ran with another
  delegate than `delegate` (the manifest's).
  """
  logs, problems = {}, []
  for name in names:
    file_name = name + log_suffix
    path = os.path.join(layer_dir, file_name)
    if not os.path.exists(path):
      problems.append(f"{file_name}: missing")
      continue
    with open(path, errors="replace") as f:
      text = f.read()
    try:
      log = read_device_log(text)
    except TruncatedLogError as e:
      problems.append(f"{file_name}: truncated ({e})")
      continue
    except ValueError as e:
      problems.append(f"{file_name}: unreadable ({e})")
      continue
    ran = (log.delegate or "").lower()
    if delegate is not None and ran and not any(n in ran for n in _DELEGATE_NAMES[delegate]):
      problems.append(f"{file_name}: ran with the {log.delegate} delegate (one delegate row / 'Explicitly applied' "
                      f"line), but the models were written for --delegate={delegate}; time it again with the "
                      "manifest's recipe (run_on_device.sh) or write the models for that delegate")
      continue
    logs[name] = log
  return logs, problems


def problems_message(problems: Sequence[str], total: int, layer_dir: str) -> str:
  """One message, one line per bad log, ending with the way out."""
  return (f"{len(problems)} of {total} logs in {layer_dir!r} cannot be used:\n  " + "\n  ".join(problems)
          + f"\ntime those models again (sh {SCRIPT}, or benchmark_model per model into <model>.txt) and rerun")


def latency_table_from_logs(
    space: space_lib.SearchSpace,
    layer_dir: str,
    device: str = "Android device (benchmark_model)",
    log_suffix: str = ".txt",
    calibrate: bool = True,
) -> MeasuredLatencyTable:
  """Builds a latency table from the phone's logs of `write_layer_models` files.

  Every `<name>.tflite` listed in the folder's `manifest.json` must have a
  `<name><log_suffix>` log beside it, in any of the three layouts
  `tflite_export.read_device_log` recognizes (benchmark_model stdout, its
  `--profiling_output_csv_file` CSV, the benchmark app's logcat). One figure
  is used for all models: the median (or mean) of the runs when every log
  has one; the profiler's per-run total when some logs are CSVs (which hold
  no run timings: that total leaves out the per-invoke cost, so the table's
  overhead is smaller by it; the entries agree). The table is assembled
  exactly as on the host.

  Args:
    space: the `SearchSpace` the models were written for.
    layer_dir: the folder `write_layer_models` wrote.
    device: what the logs were measured on, e.g. "Pixel 7, 1 thread".
    log_suffix: file name ending of the logs.
    calibrate: correct the overhead with the phone's time of the whole
      reference model (see `table_from_timings`).

  Returns:
    A `MeasuredLatencyTable` with `measurement["method"] == "benchmark_model_logs"`.

  Raises:
    ValueError: if the manifest is missing or made for another space, or logs
      are missing, truncated, unreadable or ran with another delegate (one
      line per file).
  """
  _check_space(space)
  manifest = read_manifest(layer_dir, space)
  plan = _plan(space, manifest.get("grid_size"))
  recipe = manifest.get("timing", {})
  logs, problems = read_device_logs(layer_dir, manifest["models"], recipe.get("delegate"), log_suffix)
  if problems:
    raise ValueError(problems_message(problems, len(manifest["models"]), layer_dir))
  formats = sorted({log.format for log in logs.values()})
  use_profile = any(log.statistic == "op profile total" for log in logs.values())
  if use_profile:
    unprofiled = [n + log_suffix for n, log in logs.items() if not log.op_profile]
    if unprofiled:
      raise ValueError(problems_message(
          [f"{n}: no operator profile, while other logs are profiling CSVs (time it with "
           "--enable_op_profiling=true, or give every model its stdout)" for n in unprofiled],
          len(logs), layer_dir))
    times = {n: sum(r.avg_ms for r in log.op_profile) if log.statistic != "op profile total" else log.latency_ms
             for n, log in logs.items()}
    statistic = "operator profile total per run (no per-invoke cost)"
  else:
    times = {n: log.latency_ms for n, log in logs.items()}
    statistic = "benchmark_model " + "/".join(sorted({log.statistic for log in logs.values()}))
  empty_ms, overhead_model_ms = times.pop(EMPTY_MODEL), times.pop(OVERHEAD_MODEL)
  measurement = {"method": "benchmark_model_logs", "quantization": manifest["quantization"],
                 "statistic": statistic, "log_formats": formats, "timing": recipe,
                 "layer_dir": os.path.abspath(layer_dir),
                 "reference_structure": manifest.get("reference_structure"),
                 "reference_ms": times.pop(REFERENCE_MODEL, None)}
  return table_from_timings(space, times, empty_ms, overhead_model_ms, plan.grid_size, device, measurement,
                            calibrate=calibrate)
