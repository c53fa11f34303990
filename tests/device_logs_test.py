"""Tests for tflite_export.device_logs: the three layouts a phone's timing comes back in.

The logs are tests/device_log_fixtures.py's: the layouts of the LiteRT sources named there, with
SYNTHETIC numbers. No TensorFlow model is built.
"""

import pytest

import device_log_fixtures as fixtures  # tests/device_log_fixtures.py
from tflite_export import device_logs

ROWS = [("QUANTIZE", 0.002), ("Convolution (NHWC, QC8) IGEMM", 0.050), ("Add (ND, QS8)", 0.004),
        ("DEQUANTIZE", 0.001)]


def test_each_layout_is_recognized_by_its_content():
  assert device_logs.detect_format(fixtures.stdout_log("m", 120, ROWS)) == device_logs.FORMAT_STDOUT
  assert device_logs.detect_format(fixtures.csv_log(ROWS)) == device_logs.FORMAT_CSV
  assert device_logs.detect_format(fixtures.logcat_log("m", 120, ROWS)) == device_logs.FORMAT_LOGCAT


def test_stdout_and_logcat_give_the_runs_median_and_the_same_op_profile():
  stdout = device_logs.read_device_log(fixtures.stdout_log("m", 120, ROWS))
  logcat = device_logs.read_device_log(fixtures.logcat_log("m", 120, ROWS))
  for log in (stdout, logcat):
    assert log.latency_ms == pytest.approx(0.120) and log.statistic == "median"
    assert [(r.node_type, r.avg_ms) for r in log.op_profile] == ROWS
    assert log.delegate is None and not log.fused_by_delegate
  assert stdout.result.num_threads == 1 and stdout.result.num_runs == 100


def test_csv_rows_keep_node_types_with_commas_and_time_is_the_profilers_total():
  log = device_logs.read_device_log(fixtures.csv_log(ROWS))
  assert [(r.node_type, r.avg_ms) for r in log.op_profile] == ROWS   # not the initialization section's rows
  assert log.latency_ms == pytest.approx(0.057) and log.statistic == "op profile total"
  assert log.op_profile[1].percent == pytest.approx(100 * 0.050 / 0.057, rel=1e-4)


def test_logcat_keeps_only_the_tflite_tag_without_prefixes():
  text = fixtures.logcat_log("m", 120, ROWS)
  stripped = device_logs.strip_logcat(text)
  assert "ActivityManager" not in stripped and "Start proc" not in stripped
  assert "Inference timings in us: Init: 3100" in stripped and " I tflite" not in stripped
  assert device_logs.strip_logcat(fixtures.stdout_log("m", 120)) is None
  brief = "I/tflite  ( 4321): Inference timings in us: Init: 5, First inference: 9, Warmup (avg): 8, Inference (avg): 7\n"
  assert device_logs.read_device_log(brief).latency_ms == pytest.approx(0.007)


def test_a_delegate_that_ran_the_whole_graph_is_named():
  rows = [("TfLiteGpuDelegateV2", 0.08)]
  for text in (fixtures.stdout_log("m", 90, rows, delegate="gpu"), fixtures.csv_log(rows),
               fixtures.logcat_log("m", 90, rows, delegate="gpu")):
    log = device_logs.read_device_log(text)
    assert log.fused_by_delegate and "gpu" in log.delegate.lower()
  unprofiled = device_logs.read_device_log(fixtures.stdout_log("m", 90, delegate="gpu"))
  assert unprofiled.delegate == "GPU" and not unprofiled.op_profile


@pytest.mark.parametrize("make", [lambda: fixtures.stdout_log("m", 120, ROWS), lambda: fixtures.csv_log(ROWS),
                                  lambda: fixtures.logcat_log("m", 120, ROWS)])
def test_a_log_cut_anywhere_before_its_closing_figures_is_truncated(make):
  text = make()
  end = max(text.rfind("Timings (microseconds)"), text.rfind("Inference timings in us"))
  for cut in (len(text) // 5, len(text) // 2, end):
    with pytest.raises(device_logs.TruncatedLogError):
      device_logs.read_device_log(text[:cut])
  device_logs.read_device_log(text)


def test_empty_and_foreign_text_get_a_one_line_error():
  with pytest.raises(ValueError, match="empty"):
    device_logs.read_device_log("  \n")
  with pytest.raises(ValueError, match="not a benchmark_model log") as error:
    device_logs.read_device_log("adb: device 'emulator-5554' not found\n")
  assert "\n" not in str(error.value)
