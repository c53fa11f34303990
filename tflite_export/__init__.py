"""tflite_export: ship a (pruned) Keras 3 model to phones as TFLite.

One door for the whole export path:

  convert -> save -> check_parity -> benchmark / parse_benchmark_model_output

- `convert(model, quantization=...)`: float32, float16, dynamic-range or
  full-integer int8 flatbuffer; `save` writes it, `tensor_dtypes` shows what
  is inside.
- `check_parity(tflite, model, dataset)`: accuracy, top-1 agreement and
  output differences between the TFLite and the Keras model (`ParityReport`).
- `benchmark(tflite)`: latency on this host (`LatencyResult`);
  `parse_benchmark_model_output(text)`: the same from TensorFlow Lite's
  `benchmark_model` run on a phone, with its per-operator profile.
- `read_device_log(text)`: any of the three layouts a phone returns (benchmark_model stdout,
  its `--profiling_output_csv_file` CSV, the Android benchmark app's logcat), recognized by content.
- `quantization_aware_train(model, train_ds)`: QAT through
  tensorflow-model-optimization in a child process, to int8 TFLite.
- (moved to `tf_metaprune.latency_lut`, still reachable here)
  `measure_latency_table(space)`: a per-layer latency lookup table
  (`tf_metaprune.budgets.LatencyTable`) for latency budgets, timed on this
  host; `prediction_error` checks it against whole models;
  `write_layer_models` / `latency_table_from_logs` build one on a phone.
- `export_and_report(model, dir, name)`: every format at once, with size,
  accuracy, parity and latency per file.

Example:

  import tflite_export

  int8 = tflite_export.convert(model, "int8", representative_data=train_ds)
  tflite_export.save(int8, "model_int8.tflite")
  print(tflite_export.check_parity(int8, model, test_ds).top1_agreement)
  print(tflite_export.benchmark(int8).median_ms)
"""

from tflite_export.benchmark import benchmark
from tflite_export.benchmark import device_description
from tflite_export.benchmark import LatencyResult
from tflite_export.benchmark import NodeTypeSummary
from tflite_export.benchmark import OpProfileEntry
from tflite_export.benchmark import parse_benchmark_model_output
from tflite_export.convert import convert
from tflite_export.device_logs import DeviceLog
from tflite_export.device_logs import read_device_log
from tflite_export.convert import QUANTIZATION_MODES
from tflite_export.convert import save
from tflite_export.convert import tensor_dtypes
from tflite_export.export_report import export_and_report
from tflite_export.parity import AccuracyDropWarning
from tflite_export.parity import check_parity
from tflite_export.parity import ParityReport
from tflite_export.qat import QatResult
from tflite_export.qat import quantization_aware_train

__all__ = [
    "AccuracyDropWarning",
    "DeviceLog",
    "LatencyResult",
    "NodeTypeSummary",
    "OpProfileEntry",
    "ParityReport",
    "QUANTIZATION_MODES",
    "QatResult",
    "benchmark",
    "check_parity",
    "convert",
    "device_description",
    "export_and_report",
    "parse_benchmark_model_output",
    "quantization_aware_train",
    "read_device_log",
    "save",
    "tensor_dtypes",
]

# The space-aware latency table moved to `tf_metaprune.latency_lut` (this package is generic: Keras ->
# TFLite, quantize, parity, benchmark, and knows no search space). Its names still resolve here, on
# first use, for callers of the old place; new code imports them from tf_metaprune.latency_lut.
_MOVED_TO_TF_METAPRUNE = ("LayerSignature", "MeasuredLatencyTable", "latency_table_from_logs", "layer_signatures",
                          "measure_latency_table", "prediction_error", "profile_entries", "table_from_timings",
                          "write_layer_models")


def __getattr__(name):
  if name in _MOVED_TO_TF_METAPRUNE:
    import importlib  # pylint: disable=g-import-not-at-top  (the one lazy edge back, on first use only)
    return getattr(importlib.import_module("tf_metaprune.latency_lut"), name)
  raise AttributeError(f"module 'tflite_export' has no attribute {name!r}")
