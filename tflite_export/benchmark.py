"""Measures TFLite inference latency: on this host, or parsed from a phone.

The idea: a latency budget is only as good as the clock behind it. Two
clocks are supported and both produce the same `LatencyResult`:

1. `benchmark(tflite_model)` times `Interpreter.invoke()` in the LiteRT
   interpreter on this machine (XNNPACK CPU kernels), one image per call,
   random input of the right shape and type. Good for comparing candidate
   structures with each other on one machine. Host x86 figures do not
   transfer to phones: on an x86 server CPU int8 is usually *not* faster than
   float32 (XNNPACK's float kernels are excellent there), while on ARM phone
   CPUs int8 typically is. `LatencyResult.notes` says so.

2. `parse_benchmark_model_output(text)` reads the log of TensorFlow Lite's
   `benchmark_model` binary run on a real phone, including the per-operator
   table printed with `--enable_op_profiling=true`.

Measuring on an Android phone
-----------------------------

Get the `benchmark_model` binary for the phone's ABI (the TensorFlow Lite
project publishes nightly prebuilt `android_aarch64_benchmark_model`
binaries, or build it: `bazel build -c opt --config=android_arm64
//tensorflow/lite/tools/benchmark:benchmark_model`), write the model with
`tflite_export.save(flatbuffer, "model_int8.tflite")`, then:

  adb push android_aarch64_benchmark_model /data/local/tmp/benchmark_model
  adb shell chmod +x /data/local/tmp/benchmark_model
  adb push model_int8.tflite /data/local/tmp/model_int8.tflite
  adb shell /data/local/tmp/benchmark_model \\
      --graph=/data/local/tmp/model_int8.tflite \\
      --num_threads=4 --num_runs=100 --warmup_runs=10 \\
      --enable_op_profiling=true \\
      > benchmark_model_output.txt 2>&1

(`adb shell` returns the tool's output on the host, so the redirect lands in
a local file. To keep the log on the phone instead, redirect inside the
quoted shell command to `/data/local/tmp/benchmark_model_output.txt` and
`adb pull /data/local/tmp/benchmark_model_output.txt .`.) On big.LITTLE
phones, pin the run to the big cores for stable numbers, e.g. `adb shell
taskset f0 /data/local/tmp/benchmark_model ...` (the mask depends on the
device). Then:

  text = open("benchmark_model_output.txt").read()
  result = tflite_export.parse_benchmark_model_output(
      text, device="Pixel 7, 4 threads")
  print(result.latency_ms, result.op_profile[0].node_type)

`benchmark_model` reports the mean, min, max and standard deviation of its
regular runs, not percentiles: for parsed results `median_ms` and `p90_ms`
are None, and `LatencyResult.latency_ms` (the median when measured, else the
mean) is the figure to budget with.

Example on the host:

  result = tflite_export.benchmark(flatbuffer, num_runs=200, num_threads=1)
  print(f"{result.median_ms:.3f} ms (p90 {result.p90_ms:.3f}) on "
        f"{result.device}")
"""

import dataclasses
import json
import os
import platform
import re
import time
from typing import Any, Dict, List, Optional, Sequence, Union

from ai_edge_litert import interpreter as litert_interpreter
import numpy as np

from tflite_export.convert import load_tflite_bytes

SOURCE_HOST = "host_interpreter"
SOURCE_BENCHMARK_MODEL = "benchmark_model"

HOST_NOTES = (
    "Measured on the host CPU with the LiteRT interpreter (XNNPACK). On x86 "
    "int8 is often no faster than float32; phone CPUs are where int8 pays. "
    "Compare structures with each other here; budget with phone numbers.")

PARSED_NOTES = (
    "Parsed from TensorFlow Lite benchmark_model output, which reports "
    "mean/min/max/std of its runs but no percentiles: latency_ms is the mean.")


@dataclasses.dataclass
class OpProfileEntry:
  """One row of benchmark_model's per-operator "Run Order" table.

  Attributes:
    node_type: Operator, e.g. `CONV_2D`, or an XNNPACK kernel such as
      `Convolution (NHWC, QC8) IGEMM` when the delegate is profiled.
    name: The node's name column (output tensor names and node index).
    avg_ms: Mean time per run in milliseconds.
    first_ms: Time in the first profiled run, in milliseconds.
    percent: Share of the total time, in percent.
    cdf_percent: Cumulative share up to this row, in percent.
    mem_kb: Memory column, in KB (usually 0 for TFLite).
    times_called: Calls per run.
    start_ms: Start offset within a run, in ms (older versions only).
  """
  node_type: str
  name: str
  avg_ms: float
  first_ms: Optional[float] = None
  percent: Optional[float] = None
  cdf_percent: Optional[float] = None
  mem_kb: Optional[float] = None
  times_called: Optional[int] = None
  start_ms: Optional[float] = None


@dataclasses.dataclass
class NodeTypeSummary:
  """One row of benchmark_model's "Summary by node type" table.

  Attributes:
    node_type: Operator type.
    count: Number of nodes of this type.
    avg_ms: Mean time per run of all nodes of this type, in milliseconds.
    avg_percent: Share of the total time, in percent.
    cdf_percent: Cumulative share, in percent.
    mem_kb: Memory column, in KB.
    times_called: Calls per run.
  """
  node_type: str
  count: int
  avg_ms: float
  avg_percent: Optional[float] = None
  cdf_percent: Optional[float] = None
  mem_kb: Optional[float] = None
  times_called: Optional[int] = None


@dataclasses.dataclass
class LatencyResult:
  """Latency of one TFLite model on one device, in milliseconds per image.

  Attributes:
    median_ms: Median invoke time, or None when the source does not report
      it (benchmark_model prints mean/min/max/std only).
    p90_ms: 90th percentile invoke time, or None when not reported.
    mean_ms: Mean invoke time.
    min_ms: Fastest invoke.
    num_runs: Timed runs (warm-up runs excluded).
    num_threads: Interpreter threads, or None if unknown.
    device: What ran it: CPU model, cores and runtime.
    max_ms: Slowest invoke, or None.
    std_ms: Standard deviation, or None.
    source: `"host_interpreter"` or `"benchmark_model"`.
    init_ms: Interpreter initialization time (benchmark_model), or None.
    first_inference_ms: First (cold) inference (benchmark_model), or None.
    warmup_mean_ms: Mean of the warm-up runs (benchmark_model), or None.
    notes: Caveats that belong next to the number.
    op_profile: Per-operator rows in run order (benchmark_model with
      `--enable_op_profiling=true`), else empty.
    node_type_summary: Per-operator-type totals, else empty.
  """
  median_ms: Optional[float]
  p90_ms: Optional[float]
  mean_ms: float
  min_ms: float
  num_runs: int
  num_threads: Optional[int]
  device: str
  max_ms: Optional[float] = None
  std_ms: Optional[float] = None
  source: str = SOURCE_HOST
  init_ms: Optional[float] = None
  first_inference_ms: Optional[float] = None
  warmup_mean_ms: Optional[float] = None
  notes: str = ""
  op_profile: List[OpProfileEntry] = dataclasses.field(default_factory=list)
  node_type_summary: List[NodeTypeSummary] = dataclasses.field(
      default_factory=list)

  @property
  def latency_ms(self) -> float:
    """The figure to budget with: the median when measured, else the mean."""
    return self.median_ms if self.median_ms is not None else self.mean_ms

  def to_json(self, indent: Optional[int] = 2) -> str:
    """Returns the result (with any op profile) as a JSON string."""
    return json.dumps(dataclasses.asdict(self), indent=indent, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> "LatencyResult":
    """Rebuilds a result from `to_json()` output."""
    fields = json.loads(text)
    fields["op_profile"] = [
        OpProfileEntry(**row) for row in fields.get("op_profile", [])]
    fields["node_type_summary"] = [
        NodeTypeSummary(**row) for row in fields.get("node_type_summary", [])]
    return cls(**fields)


def benchmark(
    tflite_model: Union[bytes, str, os.PathLike],
    num_runs: int = 100,
    num_warmup_runs: int = 10,
    num_threads: int = 1,
    seed: int = 0,
) -> LatencyResult:
  """Times `invoke()` of a TFLite model in the LiteRT interpreter on this host.

  One image per call (batch 1, the phone case). The input is random data of
  the input tensor's shape and type (uniform [0, 1) for float, the full range
  for integers): latency of these models does not depend on the values. Only
  `invoke()` is timed, with `time.perf_counter_ns`.

  Args:
    tflite_model: Flatbuffer bytes or a `.tflite` path.
    num_runs: Timed runs.
    num_warmup_runs: Untimed runs first (kernel setup, caches).
    num_threads: Interpreter threads. 1 gives the most repeatable numbers.
    seed: Seed for the random input.

  Returns:
    A `LatencyResult` with median, p90, mean, min, max and std in ms.

  Raises:
    ValueError: If `num_runs < 1`, `num_warmup_runs < 0` or
      `num_threads < 1`.
  """
  if num_runs < 1:
    raise ValueError(f"num_runs={num_runs} must be >= 1")
  if num_warmup_runs < 0:
    raise ValueError(f"num_warmup_runs={num_warmup_runs} must be >= 0")
  if num_threads < 1:
    raise ValueError(
        f"num_threads={num_threads} must be >= 1 (use 1 for repeatable "
        f"numbers; this host has {os.cpu_count()} cores)")
  interpreter = litert_interpreter.Interpreter(
      model_content=load_tflite_bytes(tflite_model),
      num_threads=num_threads)
  rng = np.random.default_rng(seed)
  for detail in interpreter.get_input_details():
    shape = [1 if d == -1 else int(d) for d in detail["shape_signature"]]
    if list(detail["shape"]) != shape:
      interpreter.resize_tensor_input(detail["index"], shape)
  interpreter.allocate_tensors()
  for detail in interpreter.get_input_details():
    interpreter.set_tensor(
        detail["index"], _random_input(rng, detail["shape"], detail["dtype"]))

  for _ in range(num_warmup_runs):
    interpreter.invoke()
  times_ns = np.empty(num_runs, dtype=np.int64)
  for i in range(num_runs):
    start = time.perf_counter_ns()
    interpreter.invoke()
    times_ns[i] = time.perf_counter_ns() - start
  times_ms = times_ns / 1e6
  return LatencyResult(
      median_ms=float(np.median(times_ms)),
      p90_ms=float(np.percentile(times_ms, 90)),
      mean_ms=float(times_ms.mean()),
      min_ms=float(times_ms.min()),
      max_ms=float(times_ms.max()),
      std_ms=float(times_ms.std()),
      num_runs=num_runs,
      num_threads=num_threads,
      device=device_description(),
      source=SOURCE_HOST,
      notes=HOST_NOTES,
  )


def device_description() -> str:
  """Describes this host for a latency figure: CPU, cores, runtime.

  Returns:
    e.g. `"AMD EPYC 7B13, 2 cores, LiteRT interpreter 2.3.0, XNNPACK"`.
  """
  try:
    import ai_edge_litert  # pylint: disable=g-import-not-at-top
    litert_version = getattr(ai_edge_litert, "__version__", "unknown")
  except ImportError:
    litert_version = "not installed"
  return (f"{_cpu_model()}, {os.cpu_count()} cores, "
          f"LiteRT interpreter {litert_version}, XNNPACK")


def _cpu_model() -> str:
  """Returns the CPU model from /proc/cpuinfo (x86 or ARM), else platform."""
  try:
    with open("/proc/cpuinfo") as f:
      fields = {}
      for line in f:
        key, sep, value = line.partition(":")
        if sep and value.strip():
          fields.setdefault(key.strip(), value.strip())
  except OSError:
    fields = {}
  for key in ("model name", "Hardware", "Processor", "cpu model"):
    if key in fields:
      return fields[key]
  if "CPU part" in fields:
    return (f"ARM CPU implementer {fields.get('CPU implementer', '?')} "
            f"part {fields['CPU part']}")
  return platform.processor() or platform.machine() or "unknown CPU"


def _random_input(rng: np.random.Generator, shape: Sequence[int],
                  dtype: Any) -> np.ndarray:
  """Random data of a tensor's shape and type."""
  dtype = np.dtype(dtype)
  if np.issubdtype(dtype, np.integer):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True,
                        dtype=dtype)
  if dtype == np.bool_:
    return rng.integers(0, 1, size=shape, endpoint=True).astype(np.bool_)
  return rng.random(size=shape).astype(dtype)


# --- Parsing benchmark_model logs -------------------------------------------
#
# The format follows TensorFlow Lite's benchmark tool
# (tensorflow/lite/tools/benchmark): BenchmarkLoggingListener::OnBenchmarkEnd
# prints "Inference timings in us: Init: ..., First inference: ..., Warmup
# (avg): ..., Inference (avg): ..."; each phase prints a stats line
# "count=N first=.. curr=.. min=.. max=.. avg=.. std=.." (in microseconds);
# the profiling listener prints "Operator-wise Profiling Info for Regular
# Benchmark Runs:" followed by the stats calculator's tab-separated tables
# ("Run Order", "Top by Computation Time", "Summary by node type") with
# bracketed column headers. Older builds print "Average inference timings in
# us: Warmup: .., Init: .., Inference: .." instead, and some include a
# [start] column. Lines may carry an "INFO: " prefix.

_NUMBER = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_TIMINGS_RE = re.compile(
    r"Inference timings in us:\s*Init:\s*(?P<init>{n}),\s*"
    r"First inference:\s*(?P<first>{n}),\s*"
    r"Warmup \(avg\):\s*(?P<warmup>{n}),\s*"
    r"Inference \(avg\):\s*(?P<inference>{n})".format(n=_NUMBER))
_OLD_TIMINGS_RE = re.compile(
    r"Average inference timings in us:\s*Warmup:\s*(?P<warmup>{n}),\s*"
    r"Init:\s*(?P<init>{n}),\s*Inference:\s*(?P<inference>{n})".format(
        n=_NUMBER))
_STATS_RE = re.compile(r"\bcount=(?P<count>\d+)\s+(?P<rest>.*)")
_KEY_VALUE_RE = re.compile(r"(\w+)=({n})".format(n=_NUMBER))
_THREADS_RE = re.compile(
    r"(?:#threads used for CPU inference|Num threads):\s*\[(\d+)\]")
_PROFILE_HEADER = "Operator-wise Profiling Info for Regular Benchmark Runs"
_TABLE_TITLE_RE = re.compile(r"=+\s*(?P<title>[A-Za-z][^=]*?)\s*=+")
_COLUMNS_RE = re.compile(r"\[([^\]]+)\]")


def parse_benchmark_model_output(
    text: str,
    device: str = "Android device (benchmark_model)",
) -> LatencyResult:
  """Reads the log of TensorFlow Lite's `benchmark_model` into a result.

  See the module docstring for the adb commands that produce the log.
  Times in the log are microseconds; the result is in milliseconds.

  Args:
    text: The complete stdout/stderr of one `benchmark_model` run.
    device: What it ran on, e.g. `"Pixel 7 (Tensor G2), big cores"`:
      benchmark_model does not print the phone model.

  Returns:
    A `LatencyResult` with `source="benchmark_model"`: mean/min/max/std of
    the regular runs, init and first-inference times, thread count, and,
    when the run used `--enable_op_profiling=true`, the per-operator table in
    `op_profile` and the per-type table in `node_type_summary`.

  Raises:
    ValueError: If the text has no "Inference timings in us" line (the run
      failed or the log is truncated).

  Example:

    >>> result = parse_benchmark_model_output(open("bm.txt").read())
    >>> result.mean_ms, result.op_profile[0].node_type
    (3.76, 'CONV_2D')
  """
  lines = text.splitlines()
  timings_index, timings = None, None
  for i, line in enumerate(lines):
    match = _TIMINGS_RE.search(line) or _OLD_TIMINGS_RE.search(line)
    if match:
      timings_index, timings = i, match.groupdict()
  if timings is None:
    head = text.strip()[:200]
    raise ValueError(
        "No 'Inference timings in us: ...' line in the benchmark_model "
        f"output (starts with {head!r}): pass the complete output of a "
        "successful run (adb shell ... > out.txt 2>&1) and check it for "
        "errors such as a missing --graph file")

  # The regular runs' stats line is the last "count=" line before the
  # timings line (the one before it belongs to the warm-up runs).
  stats = {}
  for line in reversed(lines[:timings_index]):
    match = _STATS_RE.search(line)
    if match and not any(table_stat in line for table_stat in (
        "Timings (microseconds)", "Memory (bytes)")):
      stats = {k: float(v) for k, v in _KEY_VALUE_RE.findall(match.group(0))}
      break

  mean_us = float(timings["inference"])
  num_threads = None
  for line in lines:
    match = _THREADS_RE.search(line)
    if match:
      num_threads = int(match.group(1))
      break

  def ms(key: str) -> Optional[float]:
    return stats[key] / 1000.0 if key in stats else None

  op_profile, node_type_summary = _parse_op_profile(lines)
  return LatencyResult(
      median_ms=None,
      p90_ms=None,
      mean_ms=mean_us / 1000.0,
      min_ms=ms("min") if "min" in stats else mean_us / 1000.0,
      max_ms=ms("max"),
      std_ms=ms("std"),
      num_runs=int(stats.get("count", 0)),
      num_threads=num_threads,
      device=device,
      source=SOURCE_BENCHMARK_MODEL,
      init_ms=float(timings["init"]) / 1000.0,
      first_inference_ms=(float(timings["first"]) / 1000.0
                          if timings.get("first") is not None else None),
      warmup_mean_ms=float(timings["warmup"]) / 1000.0,
      notes=PARSED_NOTES,
      op_profile=op_profile,
      node_type_summary=node_type_summary,
  )


def _parse_op_profile(lines: List[str]):
  """Parses the tables after "Operator-wise Profiling Info ..." if present.

  Args:
    lines: All lines of the log.

  Returns:
    (op_profile rows in run order, node type summary rows).
  """
  start = next((i for i, line in enumerate(lines) if _PROFILE_HEADER in line),
               None)
  if start is None:
    return [], []
  tables: Dict[str, List[Dict[str, str]]] = {}
  title, columns = None, None
  for line in lines[start + 1:]:
    stripped = _strip_log_prefix(line).strip()
    if stripped.startswith("Timings (microseconds)") or (
        stripped.startswith("Operator-wise") and title is not None):
      break
    title_match = _TABLE_TITLE_RE.fullmatch(stripped)
    if title_match:
      title, columns = title_match.group("title"), None
      tables[title] = []
      continue
    if title is None or not stripped:
      continue
    if columns is None:
      if stripped.startswith("["):
        columns = [c.strip().lower() for c in _COLUMNS_RE.findall(stripped)]
      continue
    row = _split_row(line, columns)
    if row is not None:
      tables[title].append(row)

  op_profile = [
      OpProfileEntry(
          node_type=row["node type"],
          name=row.get("name", ""),
          avg_ms=_float(row.get("avg ms")),
          first_ms=_float(row.get("first")),
          percent=_float(row.get("%")),
          cdf_percent=_float(row.get("cdf%")),
          mem_kb=_float(row.get("mem kb")),
          times_called=_int(row.get("times called")),
          start_ms=_float(row.get("start")),
      ) for row in tables.get("Run Order", []) if "node type" in row]
  summary = [
      NodeTypeSummary(
          node_type=row["node type"],
          count=_int(row.get("count")) or 0,
          avg_ms=_float(row.get("avg ms")),
          avg_percent=_float(row.get("avg %")),
          cdf_percent=_float(row.get("cdf %")),
          mem_kb=_float(row.get("mem kb")),
          times_called=_int(row.get("times called")),
      ) for row in tables.get("Summary by node type", [])
      if "node type" in row]
  return op_profile, summary


def _strip_log_prefix(line: str) -> str:
  """Drops a leading "INFO: " style log prefix."""
  return re.sub(r"^\s*(?:INFO|WARNING|ERROR|VERBOSE):\s?", "", line)


def _split_row(line: str, columns: List[str]) -> Optional[Dict[str, str]]:
  """Splits a table row into named cells.

  The tool separates cells with tabs; logs copied through a terminal or a
  web page often have spaces instead, and node types such as "Convolution
  (NHWC, QC8) IGEMM" contain spaces. So: tabs when they give the right
  number of cells, else a pattern anchored on the numeric middle columns
  (everything between the first column, a node type, and the last, a name).
  """
  line = _strip_log_prefix(line)
  cells = [c.strip() for c in line.split("\t") if c.strip()]
  if len(cells) == len(columns):
    return dict(zip(columns, cells))
  last_is_name = columns[-1] == "name"
  num_numeric = len(columns) - 1 - int(last_is_name)
  numeric = r"\s+".join([r"(" + _NUMBER + r"%?)"] * num_numeric)
  pattern = r"^\s*(.+?)\s+" + numeric + (r"\s+(.*\S)\s*$" if last_is_name
                                         else r"\s*$")
  match = re.match(pattern, line)
  if not match:
    return None
  return dict(zip(columns, match.groups()))


def _float(cell: Optional[str]) -> Optional[float]:
  if cell is None:
    return None
  try:
    return float(cell.rstrip("%"))
  except ValueError:
    return None


def _int(cell: Optional[str]) -> Optional[int]:
  value = _float(cell)
  return None if value is None else int(value)
