"""Synthetic phone logs in the exact layouts LiteRT's benchmark tools print (test fixtures).

THE NUMBERS ARE SYNTHETIC: made up by the tests, not measured on any phone. Only the layouts are
real; they follow these LiteRT / TensorFlow / Android sources (read, not copied):

- tflite/tools/benchmark/benchmark_model.cc: BenchmarkModel::Run prints "Running benchmark for at
  least N iterations and at least S seconds but terminate if exceeding M seconds." and the run
  statistics; BenchmarkLoggingListener::OnBenchmarkEnd prints "Inference timings in us: Init: ..,
  First inference: .., Warmup (avg): .., Inference (avg): .." and the memory lines.
- tflite/tools/benchmark/benchmark_tflite_model.cc: the parameter lines ("Graph: [..]", "Num threads:
  [..]"), "Loaded model ..", and "Explicitly applied GPU delegate, and the model graph will be
  completely executed by the delegate."
- tensorflow/core/util/stats_calculator.h / .cc: Stat::OutputToStream ("count=.. first=.. curr=..
  min=.. max=.. avg=.. std=.."; StatWithPercentiles adds " p5=.. median=.. p95=.."); HeaderString /
  ColumnString (tab-separated fields right-aligned in fixed widths, 3 decimals; CSV: "node type,
  first, avg_ms, %, cdf%, mem KB, times called, name"); GetStatsByNodeType; GetShortSummary
  ("Timings (microseconds): ..", "Memory (bytes): ..", "N nodes observed").
- tflite/profiling/profile_summary_formatter.cc and tflite/tools/benchmark/profiling_listener.cc:
  "Profiling Info for Benchmark Initialization:" then "Operator-wise Profiling Info for Regular
  Benchmark Runs:", each followed by its tables, to the CSV file or to TFLITE_LOG(INFO).
- tflite/tools/logging.h: "INFO: " before the first line of each message on stdout; on Android the
  same message goes to logcat under the tag "tflite" without that prefix.
- tensorflow/lite/tools/benchmark/android/jni/benchmark_model_jni.cc: the app's own "Average
  inference timings in us: Warmup: .., Init: .., Inference: .." line (logged at ERROR level).
- Android system/logging liblog/logprint.cpp: the logcat "threadtime" prefix
  "MM-DD HH:MM:SS.mmm  PID  TID P TAG     : ".
"""

_INIT_ROWS = (("ModifyGraphWithDelegate", 2.913), ("AllocateTensors", 0.187))


def _field(value, width):
  text = f"{value:.3f}" if isinstance(value, float) else str(value)
  return "\t" + text.rjust(width)


def _table(title, rows, csv):
  """A Run Order / Top by Computation Time table: rows are (node type, avg ms)."""
  total = sum(ms for _, ms in rows) or 1.0
  out = [f"============================== {title} =============================="]
  if csv:
    out.append("node type, first, avg_ms, %, cdf%, mem KB, times called, name")
  else:
    out.append(_field("[node type]", 24) + _field("[first]", 9) + _field("[avg ms]", 9) + _field("[%]", 8)
               + _field("[cdf%]", 8) + _field("[mem KB]", 10) + _field("[times called]", 9) + "\t[Name]")
  cdf = 0.0
  for i, (node_type, ms) in enumerate(rows):
    pct = 100.0 * ms / total
    cdf += pct
    name = f"[{node_type.lower()}_{i}]:{i}"
    if csv:
      out.append(f"{node_type}, {ms * 1.02:g}, {ms:g}, {pct:g}%, {cdf:g}%, 0, 1, {name}")
    else:
      out.append(_field(node_type, 24) + _field(ms * 1.02, 9) + _field(ms, 9) + _field(pct, 7) + "%"
                 + _field(cdf, 7) + "%" + _field(0.0, 10) + _field(1, 9) + "\t" + name)
  return out + [""]


def _report(rows, csv, runs):
  """What a StatsCalculator prints for one graph: the tables, then its short summary."""
  out = _table("Run Order", rows, csv)
  out += _table("Top by Computation Time", sorted(rows, key=lambda r: -r[1])[:10], csv)
  types = {}
  for node_type, ms in rows:
    count, total = types.get(node_type, (0, 0.0))
    types[node_type] = (count + 1, total + ms)
  out.append(f"Number of nodes executed: {len(rows)}")
  out.append("============================== Summary by node type ==============================")
  out.append("node type, count, avg_ms, avg %, cdf %, mem KB, times called" if csv else
             _field("[Node type]", 24) + _field("[count]", 9) + _field("[avg ms]", 10) + _field("[avg %]", 11)
             + _field("[cdf %]", 11) + _field("[mem KB]", 10) + _field("[times called]", 10))
  grand = sum(t for _, t in types.values()) or 1.0
  cdf = 0.0
  for node_type, (count, ms) in sorted(types.items(), key=lambda kv: -kv[1][1]):
    pct = 100.0 * ms / grand
    cdf += pct
    out.append(f"{node_type}, {count}, {ms:g}, {pct:g}%, {cdf:g}%, 0, {count}" if csv else
               _field(node_type, 24) + _field(count, 9) + _field(ms, 10) + _field(pct, 10) + "%"
               + _field(cdf, 10) + "%" + _field(0.0, 10) + _field(count, 9))
  out.append("")
  total_us = 1000 * sum(ms for _, ms in rows)
  whole = int(round(total_us))
  out.append(f"Timings (microseconds): count={runs} first={whole + 7} curr={whole} min={whole - 3} "
             f"max={whole + 9} avg={total_us:g} std=2")
  out.append("Memory (bytes): count=0")
  out.append(f"{len(rows)} nodes observed")
  return out + [""]


def _run_stats(count, us):
  return (f"count={count} first={us + 11:g} curr={us:g} min={us - 4:g} max={us + 13:g} avg={us:g} std=3 "
          f"p5={us - 3:g} median={us:g} p95={us + 8:g}")


def _messages(model, total_us, rows, num_threads, runs, warmup, delegate):
  """The benchmark tool's messages for one run, each a list of lines (first line gets the prefix)."""
  msgs = [["STARTING!"], ["Log parameter values verbosely: [0]"], [f"Min num runs: [{runs}]"],
          [f"Num threads: [{num_threads}]"], [f"Min warmup runs: [{warmup}]"],
          [f"Graph: [/data/local/tmp/tf_metaprune/{model}.tflite]"]]
  if rows:
    msgs.append(["Enable op profiling: [1]"])
  if delegate == "gpu":
    msgs += [["Use gpu: [1]"]]
  msgs += [[f"#threads used for CPU inference: [{num_threads}]"],
           [f"Loaded model /data/local/tmp/tf_metaprune/{model}.tflite"]]
  if delegate == "gpu":
    msgs += [["Created TensorFlow Lite delegate for GPU."], ["Initialized OpenCL-based API."],
             ["Created 1 GPU delegate kernels."],
             ["Explicitly applied GPU delegate, and the model graph will be completely executed by the delegate."]]
  else:
    msgs.append(["Created TensorFlow Lite XNNPACK delegate for CPU."])
  msgs += [["The input model file size (MB): 0.018424"], ["Initialized session in 3.1ms."],
           [f"Running benchmark for at least {warmup} iterations and at least 0.5 seconds but terminate if "
            "exceeding 150 seconds."], [_run_stats(warmup, total_us + 6), ""],
           [f"Running benchmark for at least {runs} iterations and at least 1 seconds but terminate if "
            "exceeding 150 seconds."], [_run_stats(runs, total_us), ""],
           [f"Inference timings in us: Init: 3100, First inference: {total_us + 17:g}, Warmup (avg): "
            f"{total_us + 6:g}, Inference (avg): {total_us:g}"],
           ["Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to "
            "the actual memory footprint of the model at runtime. Take the information at your discretion."],
           ["Memory footprint delta from the start of the tool (MB): init=1.98047 overall=2.10547"]]
  if rows:
    msgs.append(["Profiling Info for Benchmark Initialization:"] + _report(list(_INIT_ROWS), False, 1))
    msgs.append(["Operator-wise Profiling Info for Regular Benchmark Runs:"] + _report(rows, False, runs))
  return msgs


def stdout_log(model, total_us, rows=(), num_threads=1, runs=100, warmup=10, delegate=None):
  """`adb shell benchmark_model ... > model.txt 2>&1`: "INFO: " before each message's first line."""
  lines = []
  for msg in _messages(model, total_us, list(rows), num_threads, runs, warmup, delegate):
    lines.append("INFO: " + msg[0])
    lines += msg[1:]
  return "\n".join(lines) + "\n"


def csv_log(rows, runs=100):
  """The `--profiling_output_csv_file` file: only the two profile sections, comma-separated."""
  lines = ["Profiling Info for Benchmark Initialization:"] + _report(list(_INIT_ROWS), True, 1)
  lines += ["Operator-wise Profiling Info for Regular Benchmark Runs:"] + _report(list(rows), True, runs)
  return "\n".join(lines) + "\n"


def logcat_log(model, total_us, rows=(), num_threads=1, runs=100, warmup=10, delegate=None):
  """`adb logcat -d` after the Android benchmark app ran: threadtime prefixes, tag "tflite", each line of a
  multi-line message prefixed, another app's line in between, and the app's own timing line."""
  out = ["--------- beginning of main"]
  second = 3

  def line(level, tag, text):
    nonlocal second
    second += 1
    out.append(f"12-02 21:{second // 60:02d}:{second % 60:02d}.{(7 * second) % 1000:03d}  4321  4337 {level} "
               f"{tag:<8}: {text}")

  line("I", "ActivityManager", "Start proc 4321:org.tensorflow.lite.benchmark/u0a211 for top-activity")
  for msg in _messages(model, total_us, list(rows), num_threads, runs, warmup, delegate):
    for text in msg:
      line("I", "tflite", text)
  line("E", "tflite", f"Average inference timings in us: Warmup: {total_us + 6:g}, Init: 3100, Inference: "
       f"{total_us:g}Overall max resident set size = 14.2891 MB, total malloc-ed size = 3.10547 MB")
  return "\n".join(out) + "\n"
