"""Exports one Keras model in several TFLite formats and reports on each file.

The idea: the question after pruning is "which file do I ship?". For every
requested number format, convert (`tflite_export.convert`), save, check it
against the Keras model on held-out data (`tflite_export.check_parity`) and
time it (`tflite_export.benchmark`); collect size, accuracy, agreement and
latency side by side in one JSON-able report.

Example:

  report = export_and_report(model, "export/", name="mbv2_50pct",
                             quantizations=("float32", "int8"),
                             representative_data=splits.calibration,
                             eval_data=splits.test)
  print(format_report(report))
"""

import os
from typing import Any, Dict, Optional, Sequence

import keras

# Not `from tflite_export import convert`: the package hands out the functions
# under the module names.
from tflite_export.benchmark import benchmark
from tflite_export.benchmark import device_description
from tflite_export.convert import convert
from tflite_export.convert import QUANTIZATION_MODES
from tflite_export.convert import save
from tflite_export.parity import check_parity

REPORT_FILE = "export_report.json"
X86_NOTE = ("Latency measured on this host's CPU (LiteRT interpreter, XNNPACK). On x86 hosts int8 is not "
            "faster than float32 (XNNPACK's float kernels are excellent there); int8 pays on phone CPUs, "
            "so budget with numbers measured on the phone (benchmark_model).")


def check_quantizations(quantizations: Sequence[str]) -> list:
  """Returns the formats as a list, or raises ValueError naming the bad one."""
  quantizations = [q.strip() for q in quantizations if q.strip()]
  if not quantizations:
    raise ValueError(f"no quantization given; use a comma list of {', '.join(QUANTIZATION_MODES)}")
  for q in quantizations:
    if q not in QUANTIZATION_MODES:
      raise ValueError(f"quantization {q!r} is not supported; use a comma list of "
                       f"{', '.join(QUANTIZATION_MODES)}")
  if len(set(quantizations)) != len(quantizations):
    raise ValueError(f"quantizations {quantizations} repeat a format; list each once")
  return quantizations


def export_and_report(
    model: keras.Model,
    output_dir: str,
    name: str,
    quantizations: Sequence[str] = ("float32", "int8"),
    representative_data: Optional[Any] = None,
    eval_data: Optional[Any] = None,
    num_calibration_batches: int = 32,
    num_runs: int = 100,
    num_warmup_runs: int = 10,
    num_threads: int = 1,
) -> Dict[str, Any]:
  """Converts `model` to each format, writes `<name>_<format>.tflite`, checks and times them.

  Args:
    model: a plain Keras model (e.g. `tf_metaprune.rebuild(space, structure)`).
    output_dir: folder for the `.tflite` files (created if needed). The
      report is returned, not written: write it with `tf_metaprune.io`.
    name: file name stem.
    quantizations: formats from `tflite_export.QUANTIZATION_MODES`.
    representative_data: images (or (images, labels)) to calibrate "int8".
    eval_data: a batched `tf.data.Dataset` of (images, labels) for accuracy and
      parity; None skips them (the entries are None).
    num_calibration_batches: as in `tflite_export.convert`.
    num_runs, num_warmup_runs, num_threads: as in `tflite_export.benchmark`.

  Returns:
    {"model", "params", "device", "num_threads", "note", "files": [one dict
    per format: file, quantization, size_bytes, keras_accuracy,
    tflite_accuracy, accuracy_drop_pt, top1_agreement, max_abs_logit_diff,
    mean_abs_logit_diff, num_eval_examples, latency_median_ms,
    latency_p90_ms, device, num_threads, note]}.

  Raises:
    ValueError: for an unknown format, or "int8" without representative data.
  """
  quantizations = check_quantizations(quantizations)
  if "int8" in quantizations and representative_data is None:
    raise ValueError("quantization 'int8' needs representative_data (training images) to calibrate")
  rows = []
  for q in quantizations:
    kwargs = {}
    if q == "int8":
      kwargs = {"representative_data": representative_data, "num_calibration_batches": num_calibration_batches}
    flatbuffer = convert(model, q, **kwargs)
    path = save(flatbuffer, os.path.join(output_dir, f"{name}_{q}.tflite"))
    row = {"file": os.path.basename(path), "quantization": q, "size_bytes": len(flatbuffer)}
    if eval_data is not None:
      parity = check_parity(flatbuffer, model, eval_data, int8_drop_warn_pt=float("inf"))
      row.update({"keras_accuracy": parity.keras_accuracy, "tflite_accuracy": parity.tflite_accuracy,
                  "accuracy_drop_pt": parity.accuracy_drop_pt, "top1_agreement": parity.top1_agreement,
                  "max_abs_logit_diff": parity.max_abs_logit_diff,
                  "mean_abs_logit_diff": parity.mean_abs_logit_diff,
                  "num_eval_examples": parity.num_examples})
    else:
      row.update(dict.fromkeys(("keras_accuracy", "tflite_accuracy", "accuracy_drop_pt", "top1_agreement",
                                "max_abs_logit_diff", "mean_abs_logit_diff", "num_eval_examples")))
    latency = benchmark(flatbuffer, num_runs=num_runs, num_warmup_runs=num_warmup_runs, num_threads=num_threads)
    row.update({"latency_median_ms": latency.median_ms, "latency_p90_ms": latency.p90_ms,
                "device": latency.device, "num_threads": num_threads, "note": X86_NOTE})
    rows.append(row)
  return {"model": model.name, "params": int(model.count_params()), "device": device_description(),
          "num_threads": num_threads, "num_runs": num_runs, "note": X86_NOTE, "files": rows}


def format_report(report: Dict[str, Any]) -> str:
  """The report as a fixed-width text table (one line per file)."""

  def pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"

  lines = [f"{'file':<34} {'size KB':>8} {'keras':>7} {'tflite':>7} {'agree':>7} {'max|dlogit|':>11} "
           f"{'median ms':>9} {'p90 ms':>7}"]
  for r in report["files"]:
    diff = "-" if r["max_abs_logit_diff"] is None else f"{r['max_abs_logit_diff']:.4f}"
    lines.append(f"{r['file']:<34} {r['size_bytes'] / 1024:8.1f} {pct(r['keras_accuracy']):>7} "
                 f"{pct(r['tflite_accuracy']):>7} {pct(r['top1_agreement']):>7} {diff:>11} "
                 f"{r['latency_median_ms']:9.3f} {r['latency_p90_ms']:7.3f}")
  reference = next((r for r in report["files"] if r.get("quantization") == "float32"), None)
  if reference is not None:
    for r in report["files"]:
      if r is not reference and r["size_bytes"]:
        ratio = reference["size_bytes"] / r["size_bytes"]
        lines.append(f"{r['file']}: x{ratio:.1f} smaller than {reference['file']} "
                     f"({r['size_bytes'] / 1024:.1f} KB vs {reference['size_bytes'] / 1024:.1f} KB)")
  lines.append(f"device: {report['device']}, {report['num_threads']} thread(s)")
  lines.append(f"note: {report['note']}")
  return "\n".join(lines)
