"""Reads what a phone printed for a TFLite model, in any of the three forms Android tools give it.

The idea: the phone-latency round trip should not care how the numbers came back. LiteRT's benchmark
tool reaches the host in three layouts, and `read_device_log(text)` recognizes each by its content
(never by the file ending) and returns one `DeviceLog`:

1. **benchmark_model stdout** (`adb shell benchmark_model ... > X.txt 2>&1`): "INFO: "-prefixed
   lines, the run statistics ("count=50 first=.. curr=.. min=.. max=.. avg=.. std=.. p5=.. median=..
   p95=.."), the "Inference timings in us: ..." line and, with `--enable_op_profiling=true`, the
   tab-separated profile tables. Read by `tflite_export.parse_benchmark_model_output`.
2. **The op-profile CSV** of `--profiling_output_csv_file=F`: only the profiling tables, comma-
   separated (header `node type, first, avg_ms, %, cdf%, mem KB, times called, name`; older builds
   add `start`), first for initialization, then under "Operator-wise Profiling Info for Regular
   Benchmark Runs:", each subgraph closed by "Timings (microseconds): count=.. avg=..". There is no
   "Inference timings" line: the model's time is that closing line's average (the sum of its
   operators per run), else the sum of the Run Order rows.
3. **logcat of the Android benchmark app** (`adb logcat -s tflite`): the same messages with a logcat
   prefix per line (threadtime `12-02 21:15:03.123  4321  4337 I tflite  : ...`, or the brief /
   time / tag forms `I/tflite  ( 4321): ...`), plus the app's own "Average inference timings in us:
   Warmup: .., Init: .., Inference: .." line. Prefixes are stripped, other tags dropped, and the
   text is read as (1).

Delegates: with `--use_gpu=true` or `--use_nnapi=true` the whole graph usually becomes one
delegate kernel, so the Run Order table holds one row (node type `TfLiteGpuDelegateV2`, ...) and
the log says "Explicitly applied GPU delegate, and the model graph will be completely executed by
the delegate". `DeviceLog.delegate` names it; such a log still times the model as a whole, but
cannot be split into layers.

Layouts follow the LiteRT / TensorFlow sources: tflite/tools/benchmark/benchmark_model.cc
(BenchmarkLoggingListener, the run statistics), benchmark_tflite_model.cc (delegate lines),
tflite/profiling/profile_summary_formatter.cc and profiling_listener.cc (the CSV file),
tensorflow/core/util/stats_calculator.cc (table and CSV columns), tflite/tools/logging.h (logcat tag
"tflite") and tools/benchmark/android/jni/benchmark_model_jni.cc (the app's line).

Example:

  log = read_device_log(open("layer.txt").read())
  print(log.format, log.latency_ms, log.delegate)
"""

import dataclasses
import re
from typing import List, Optional

from tflite_export.benchmark import _NUMBER
from tflite_export.benchmark import LatencyResult
from tflite_export.benchmark import OpProfileEntry
from tflite_export.benchmark import parse_benchmark_model_output

FORMAT_STDOUT = "benchmark_model stdout"
FORMAT_CSV = "benchmark_model --profiling_output_csv_file"
FORMAT_LOGCAT = "logcat (tag tflite)"
FORMATS = (FORMAT_STDOUT, FORMAT_CSV, FORMAT_LOGCAT)

_RUN_HEADER = "Operator-wise Profiling Info for Regular Benchmark Runs"
# logcat -v threadtime: "MM-DD HH:MM:SS.mmm  PID  TID L TAG: msg" (optionally with a year or uid);
# -v time: "MM-DD HH:MM:SS.mmm L/TAG( PID): msg"; -v brief: "L/TAG( PID): msg"; -v tag: "L/TAG: msg".
_LOGCAT_RES = (
    re.compile(r"^(?:\d{4}-)?\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+(?:\S+\s+)?\d+\s+\d+\s+[VDIWEFA]\s+"
               r"(?P<tag>[^:]*?)\s*: ?(?P<msg>.*)$"),
    re.compile(r"^(?:(?:\d{4}-)?\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+)?[VDIWEFA]/(?P<tag>[^(:]*?)\s*"
               r"(?:\(\s*\d+\))?: ?(?P<msg>.*)$"),
)
_LOGCAT_TAG = "tflite"
_CSV_HEADER_RE = re.compile(r"^\s*node type\s*,")
_TITLE_RE = re.compile(r"^=+\s*(?P<title>[A-Za-z][^=]*?)\s*=+$")
_SUMMARY_RE = re.compile(r"Timings \(microseconds\):\s*(?P<stats>.*)$")
_KEY_VALUE_RE = re.compile(r"(\w+)=({n})".format(n=_NUMBER))
_APPLIED_RE = re.compile(r"Explicitly applied (?P<name>.+?) delegate, and the model graph will be completely")
_DELEGATE_ROW_RE = re.compile(r"delegate", re.IGNORECASE)
# Operators that only convert the input/output; they are not the graph's layers.
_IO_TYPES = ("QUANTIZE", "DEQUANTIZE", "Convert (")


@dataclasses.dataclass
class DeviceLog:
  """What one log says about one model run on a device.

  Attributes:
    format: one of `FORMATS`: how the log was recognized.
    latency_ms: the model's time per run, in ms: the median of the regular runs when the log prints
      it, else their mean; for the CSV, the profiler's per-run total.
    statistic: which figure `latency_ms` is ("median", "mean" or "op profile total").
    op_profile: the Run Order rows (empty without `--enable_op_profiling=true`).
    delegate: the delegate that ran the whole graph ("GPU", "NNAPI", "TfLiteGpuDelegateV2", ...),
      or None when the operators ran (or were profiled) one by one.
    result: the parsed `LatencyResult` (stdout and logcat; None for the CSV).
  """
  format: str
  latency_ms: float
  statistic: str
  op_profile: List[OpProfileEntry]
  delegate: Optional[str] = None
  result: Optional[LatencyResult] = None

  @property
  def fused_by_delegate(self) -> bool:
    """True when the profile is one delegate row: the per-operator split is not visible."""
    layer_rows = [r for r in self.op_profile if not r.node_type.startswith(_IO_TYPES)]
    return len(layer_rows) == 1 and bool(_DELEGATE_ROW_RE.search(layer_rows[0].node_type))


class TruncatedLogError(ValueError):
  """The log ends before the figures a run prints at its end (the run failed or the copy was cut)."""


def strip_logcat(text: str) -> Optional[str]:
  """The messages of the `tflite` tag without their logcat prefixes, or None if `text` is not logcat.

  Lines of other tags are dropped; lines without a prefix (a "--------- beginning of main" banner)
  too.
  """
  messages, seen = [], False
  for line in text.splitlines():
    for pattern in _LOGCAT_RES:
      match = pattern.match(line)
      if match:
        seen = True
        if match.group("tag").strip() == _LOGCAT_TAG:
          messages.append(match.group("msg"))
        break
  return "\n".join(messages) + "\n" if seen else None


def detect_format(text: str) -> str:
  """Which of `FORMATS` a log is, from its content."""
  if strip_logcat(text) is not None:
    return FORMAT_LOGCAT
  if any(_CSV_HEADER_RE.match(line) for line in text.splitlines()):
    return FORMAT_CSV
  return FORMAT_STDOUT


def read_device_log(text: str) -> DeviceLog:
  """Reads one log in any of the three layouts (see the module docstring).

  Args:
    text: the whole file.

  Returns:
    A `DeviceLog`.

  Raises:
    TruncatedLogError: if the log lacks its closing figures ("Inference timings in us" for stdout
      and logcat, "Timings (microseconds)" for the CSV).
    ValueError: if it is empty or holds none of the three layouts.
  """
  if not text.strip():
    raise ValueError("the log is empty: the run printed nothing (was the output redirected with 2>&1?)")
  fmt = detect_format(text)
  if fmt == FORMAT_CSV:
    return _read_csv(text)
  body = strip_logcat(text) if fmt == FORMAT_LOGCAT else text
  try:
    result = parse_benchmark_model_output(body)
  except ValueError:
    if "Running benchmark for at least" in body or "STARTING!" in body or _RUN_HEADER in body:
      raise TruncatedLogError("the log stops before its 'Inference timings in us' line: the run failed or the "
                              "file was cut; time the model again") from None
    raise ValueError(f"not a benchmark_model log, its CSV or a logcat of the benchmark app (starts with "
                     f"{text.strip()[:80]!r})") from None
  profiled = "Enable op profiling: [1]" in body or _RUN_HEADER in body
  run_part = body.split(_RUN_HEADER, 1)[1] if _RUN_HEADER in body else ""
  if profiled and "Timings (microseconds)" not in run_part:
    raise TruncatedLogError("the log stops inside (or before) its operator profile, which ends with a "
                            "'Timings (microseconds)' line: the file was cut; time the model again")
  median = _run_median_ms(body)
  applied = _APPLIED_RE.search(body)
  log = DeviceLog(fmt, median if median is not None else result.mean_ms, "median" if median is not None else "mean",
                  result.op_profile, applied.group("name") if applied else None, result)
  if log.delegate is None and log.fused_by_delegate:
    log.delegate = next(r.node_type for r in log.op_profile if _DELEGATE_ROW_RE.search(r.node_type))
  return log


def _run_median_ms(text: str) -> Optional[float]:
  """The regular runs' median (newer benchmark_model builds print p5/median/p95), in ms."""
  lines = text.splitlines()
  end = next((i for i in range(len(lines) - 1, -1, -1) if "Inference timings in us" in lines[i]), None)
  if end is None:
    return None
  for line in reversed(lines[:end]):
    if "count=" in line and "Timings (microseconds)" not in line:
      stats = dict(_KEY_VALUE_RE.findall(line))
      return float(stats["median"]) / 1000.0 if "median" in stats else None
  return None


def _read_csv(text: str) -> DeviceLog:
  lines = text.splitlines()
  start = next((i for i, line in enumerate(lines) if _RUN_HEADER in line), None)
  if start is None:
    raise TruncatedLogError(f"the profiling CSV has no '{_RUN_HEADER}' section (only initialization): the run "
                            "stopped early; time the model again")
  title, columns, rows, total_us = None, None, [], None
  for line in lines[start + 1:]:
    stripped = line.strip()
    summary = _SUMMARY_RE.search(stripped)
    if summary:
      stats = dict(_KEY_VALUE_RE.findall(summary.group("stats")))
      total_us = float(stats.get("avg", stats.get("curr", "nan")))
      break  # the primary graph's report ends here
    title_match = _TITLE_RE.match(stripped)
    if title_match:
      title, columns = title_match.group("title"), None
      continue
    if title != "Run Order" or not stripped:
      continue
    if columns is None:
      if _CSV_HEADER_RE.match(stripped):
        columns = [c.strip().lower().replace("_", " ") for c in stripped.split(",")]
      continue
    row = _split_csv_row(stripped, columns)
    if row is not None:
      rows.append(row)
  if total_us is None:
    raise TruncatedLogError("the profiling CSV stops before its 'Timings (microseconds)' line: the file was "
                            "cut or the run failed; time the model again")
  profile = [OpProfileEntry(node_type=r["node type"], name=r.get("name", ""), avg_ms=_num(r.get("avg ms")),
                            first_ms=_num(r.get("first")), percent=_num(r.get("%")),
                            cdf_percent=_num(r.get("cdf%")), mem_kb=_num(r.get("mem kb")),
                            times_called=None if r.get("times called") is None else int(_num(r["times called"])),
                            start_ms=_num(r.get("start"))) for r in rows]
  if total_us != total_us:  # NaN: no average printed
    total_us = 1000.0 * sum(r.avg_ms for r in profile)
  log = DeviceLog(FORMAT_CSV, total_us / 1000.0, "op profile total", profile)
  if log.fused_by_delegate:
    log.delegate = next(r.node_type for r in profile if _DELEGATE_ROW_RE.search(r.node_type))
  return log


def _split_csv_row(line: str, columns: List[str]):
  """One CSV row by name: the numeric middle anchors it (node types such as
  "Convolution (NHWC, QC8) IGEMM" and tensor names may hold commas)."""
  last_is_name = columns[-1] == "name"
  num_numeric = len(columns) - 1 - int(last_is_name)
  numeric = r",\s*".join([r"(" + _NUMBER + r"%?)"] * num_numeric)
  pattern = r"^(.+?),\s*" + numeric + (r",\s*(.*)$" if last_is_name else r"\s*$")
  match = re.match(pattern, line)
  return None if match is None else dict(zip(columns, (g.strip() for g in match.groups())))


def _num(cell: Optional[str]) -> Optional[float]:
  return None if cell is None else float(cell.rstrip("%"))
