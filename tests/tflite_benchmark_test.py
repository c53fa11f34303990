"""Tests for tflite_export.benchmark: host timing and benchmark_model logs."""

import os

import pytest

import tflite_export
import tflite_testutil as tu

# What TensorFlow Lite's benchmark_model prints on a phone, for the tiny CNN
# converted to int8 (numbers invented for this model, layout real), from
#   adb shell /data/local/tmp/benchmark_model \
#       --graph=/data/local/tmp/tiny_cnn_int8.tflite --num_threads=4 \
#       --num_runs=100 --warmup_runs=10 --enable_op_profiling=true
# The layout follows the tool's source and documentation in the TensorFlow
# repository (tensorflow/lite/tools/benchmark): the "Inference timings in us:
# Init: .., First inference: .., Warmup (avg): .., Inference (avg): .." line of
# BenchmarkLoggingListener::OnBenchmarkEnd (benchmark_model.cc), the
# "count= first= curr= min= max= avg= std=" stats lines (Stat::OutputToStream
# in the stats calculator), and, from the profiling listener, "Operator-wise
# Profiling Info for Regular Benchmark Runs:" followed by tab-separated
# "Run Order", "Top by Computation Time" and "Summary by node type" tables
# with bracketed headers; with XNNPACK (the default CPU path) the rows are
# XNNPACK operators such as "Convolution (NHWC, QC8) IGEMM". Recent builds
# prefix log lines with "INFO: " and have no [start] column.
# pylint: disable=line-too-long
BENCHMARK_MODEL_INT8_XNNPACK_OUTPUT = """INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [100]
INFO: Num threads: [4]
INFO: Min warmup runs: [10]
INFO: Graph: [/data/local/tmp/tiny_cnn_int8.tflite]
INFO: Enable op profiling: [1]
INFO: #threads used for CPU inference: [4]
INFO: Loaded model /data/local/tmp/tiny_cnn_int8.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 0.013424
INFO: Initialized session in 3.412ms.
INFO: Running benchmark for at least 10 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=4129 first=412 curr=101 min=88 max=1204 avg=113.6 std=31

INFO: Running benchmark for at least 100 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=9402 first=109 curr=104 min=87 max=391 avg=102.4 std=12

INFO: Inference timings in us: Init: 3412, First inference: 412, Warmup (avg): 113.6, Inference (avg): 102.4
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=3.24219 overall=4.10547
INFO: Profiling Info for Benchmark Initialization:
============================== Run Order ==============================
\t                           [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t               ModifyGraphWithDelegate\t    1.902\t    1.902\t 95.386%\t 95.386%\t     0.000\t        1\tModifyGraphWithDelegate/0
\t                       AllocateTensors\t    0.183\t    0.092\t  4.614%\t100.000%\t     0.000\t        1\tAllocateTensors/0

============================== Top by Computation Time ==============================
\t                           [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t               ModifyGraphWithDelegate\t    1.902\t    1.902\t 95.386%\t 95.386%\t     0.000\t        1\tModifyGraphWithDelegate/0
\t                       AllocateTensors\t    0.183\t    0.092\t  4.614%\t100.000%\t     0.000\t        1\tAllocateTensors/0

Number of nodes executed: 2
============================== Summary by node type ==============================
\t                           [Node type]\t  [count]\t [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t               ModifyGraphWithDelegate\t        1\t    1.902\t    95.386%\t    95.386%\t     0.000\t        1
\t                       AllocateTensors\t        1\t    0.092\t     4.614%\t   100.000%\t     0.000\t        1

Timings (microseconds): count=1 curr=2085
Memory (bytes): count=0
2 nodes observed



INFO: Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
\t                           [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t         Convolution (NHWC, QC8) IGEMM\t    0.021\t    0.019\t 22.619%\t 22.619%\t     0.000\t        1\tDelegate/Convolution (NHWC, QC8) IGEMM:0
\t        Convolution (NHWC, QC8) DWConv\t    0.012\t    0.011\t 13.095%\t 35.714%\t     0.000\t        1\tDelegate/Convolution (NHWC, QC8) DWConv:1
\t          Convolution (NHWC, QC8) GEMM\t    0.008\t    0.007\t  8.333%\t 44.048%\t     0.000\t        1\tDelegate/Convolution (NHWC, QC8) GEMM:2
\t                         Add (ND, QS8)\t    0.004\t    0.004\t  4.762%\t 48.810%\t     0.000\t        1\tDelegate/Add (ND, QS8):3
\t                Max Pooling (NHWC, S8)\t    0.005\t    0.004\t  4.762%\t 53.571%\t     0.000\t        1\tDelegate/Max Pooling (NHWC, S8):4
\t         Convolution (NHWC, QC8) IGEMM\t    0.037\t    0.034\t 40.476%\t 94.048%\t     0.000\t        1\tDelegate/Convolution (NHWC, QC8) IGEMM:5
\t                        Mean (ND) Mean\t    0.003\t    0.003\t  3.571%\t 97.619%\t     0.000\t        1\tDelegate/Mean (ND) Mean:6
\t  Fully Connected (NC, QS8, QC8W) GEMM\t    0.002\t    0.002\t  2.381%\t100.000%\t     0.000\t        1\tDelegate/Fully Connected (NC, QS8, QC8W) GEMM:7

============================== Top by Computation Time ==============================
\t                           [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t         Convolution (NHWC, QC8) IGEMM\t    0.037\t    0.034\t 40.476%\t 40.476%\t     0.000\t        1\tDelegate/Convolution (NHWC, QC8) IGEMM:5
\t         Convolution (NHWC, QC8) IGEMM\t    0.021\t    0.019\t 22.619%\t 63.095%\t     0.000\t        1\tDelegate/Convolution (NHWC, QC8) IGEMM:0
\t        Convolution (NHWC, QC8) DWConv\t    0.012\t    0.011\t 13.095%\t 76.190%\t     0.000\t        1\tDelegate/Convolution (NHWC, QC8) DWConv:1
\t          Convolution (NHWC, QC8) GEMM\t    0.008\t    0.007\t  8.333%\t 84.524%\t     0.000\t        1\tDelegate/Convolution (NHWC, QC8) GEMM:2
\t                         Add (ND, QS8)\t    0.004\t    0.004\t  4.762%\t 89.286%\t     0.000\t        1\tDelegate/Add (ND, QS8):3
\t                Max Pooling (NHWC, S8)\t    0.005\t    0.004\t  4.762%\t 94.048%\t     0.000\t        1\tDelegate/Max Pooling (NHWC, S8):4
\t                        Mean (ND) Mean\t    0.003\t    0.003\t  3.571%\t 97.619%\t     0.000\t        1\tDelegate/Mean (ND) Mean:6
\t  Fully Connected (NC, QS8, QC8W) GEMM\t    0.002\t    0.002\t  2.381%\t100.000%\t     0.000\t        1\tDelegate/Fully Connected (NC, QS8, QC8W) GEMM:7

Number of nodes executed: 8
============================== Summary by node type ==============================
\t                           [Node type]\t  [count]\t [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t         Convolution (NHWC, QC8) IGEMM\t        2\t    0.053\t    63.095%\t    63.095%\t     0.000\t        2
\t        Convolution (NHWC, QC8) DWConv\t        1\t    0.011\t    13.095%\t    76.190%\t     0.000\t        1
\t          Convolution (NHWC, QC8) GEMM\t        1\t    0.007\t     8.333%\t    84.524%\t     0.000\t        1
\t                         Add (ND, QS8)\t        1\t    0.004\t     4.762%\t    89.286%\t     0.000\t        1
\t                Max Pooling (NHWC, S8)\t        1\t    0.004\t     4.762%\t    94.048%\t     0.000\t        1
\t                        Mean (ND) Mean\t        1\t    0.003\t     3.571%\t    97.619%\t     0.000\t        1
\t  Fully Connected (NC, QS8, QC8W) GEMM\t        1\t    0.002\t     2.381%\t   100.000%\t     0.000\t        1

Timings (microseconds): count=9402 first=96 curr=88 min=79 max=371 avg=86.1 std=9
Memory (bytes): count=0
8 nodes observed

"""

# An older benchmark_model (about TF 2.1) run with --use_xnnpack=false and
# --num_threads=1 on a float32 model, pasted from a terminal so the tabs
# became spaces: a [start] column, builtin operator names, and the old
# closing line "Average inference timings in us: Warmup: .., Init: ..,
# Inference: .." (as in the tool's README of that time).
OLD_BENCHMARK_MODEL_FLOAT32_OUTPUT = """STARTING!
Num runs: [50]
Inter-run delay (seconds): [-1]
Num threads: [1]
Benchmark name: []
Output prefix: []
Warmup runs: [1]
Graph: [/data/local/tmp/tiny_cnn_float32.tflite]
Input layers: []
Input shapes: []
Use nnapi : [0]
Loaded model /data/local/tmp/tiny_cnn_float32.tflite
resolved reporter
Initialized session in 1.873ms
Running benchmark for 1 iterations
count=1 curr=517

Running benchmark for 50 iterations
count=50 first=311 curr=298 min=289 max=702 avg=303.9 std=58

Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
             [node type]          [start]         [first]        [avg ms]            [%]          [cdf%]          [mem KB]      [times called]  [Name]
                 CONV_2D            0.000           0.071           0.069        23.232%         23.232%             0.000              1       [tiny_cnn/re_lu/Relu]
       DEPTHWISE_CONV_2D            0.071           0.044           0.043        14.478%         37.710%             0.000              1       [tiny_cnn/re_lu_1/Relu]
                 CONV_2D            0.115           0.025           0.024         8.081%         45.791%             0.000              1       [tiny_cnn/batch_normalization_2/FusedBatchNormV3]
                     ADD            0.140           0.012           0.011         3.704%         49.495%             0.000              1       [tiny_cnn/re_lu_2/Relu]
             MAX_POOL_2D            0.152           0.010           0.010         3.367%         52.862%             0.000              1       [tiny_cnn/max_pooling2d/MaxPool]
                 CONV_2D            0.162           0.131           0.127        42.761%         95.623%             0.000              1       [tiny_cnn/activation/Relu]
                    MEAN            0.290           0.008           0.008         2.694%         98.316%             0.000              1       [tiny_cnn/global_average_pooling2d/Mean]
         FULLY_CONNECTED            0.298           0.005           0.005         1.684%        100.000%             0.000              1       [Identity]

============================== Summary by node type ==============================
             [Node type]          [count]        [avg ms]         [avg %]         [cdf %]       [mem KB]     [times called]
                 CONV_2D                3           0.220         74.074%         74.074%          0.000              3
       DEPTHWISE_CONV_2D                1           0.043         14.478%         88.552%          0.000              1
                     ADD                1           0.011          3.704%         92.256%          0.000              1
             MAX_POOL_2D                1           0.010          3.367%         95.623%          0.000              1
                    MEAN                1           0.008          2.694%         98.316%          0.000              1
         FULLY_CONNECTED                1           0.005          1.684%        100.000%          0.000              1

Timings (microseconds): count=50 first=306 curr=295 min=287 max=698 avg=297.2 std=57
Memory (bytes): count=0
8 nodes observed


Average inference timings in us: Warmup: 517, Init: 1873, Inference: 303.9
"""
# pylint: enable=line-too-long


def test_host_benchmark_returns_positive_ordered_figures():
  result = tflite_export.benchmark(tu.trained_tflite("float32"), num_runs=50,
                                   num_warmup_runs=5, num_threads=1)
  assert result.num_runs == 50 and result.num_threads == 1
  assert 0 < result.min_ms <= result.median_ms <= result.p90_ms
  assert result.p90_ms <= result.max_ms
  assert result.min_ms <= result.mean_ms <= result.max_ms
  assert result.latency_ms == result.median_ms
  assert result.source == "host_interpreter"
  assert "XNNPACK" in result.device and "int8" in result.notes
  assert tflite_export.LatencyResult.from_json(result.to_json()) == result


def test_host_benchmark_feeds_int8_inputs_to_int8_models():
  result = tflite_export.benchmark(tu.trained_tflite("int8", int8_io=True),
                                   num_runs=20, num_warmup_runs=2,
                                   num_threads=2)
  assert result.num_threads == 2
  assert 0 < result.median_ms <= result.p90_ms


@pytest.mark.parametrize("kwargs", [
    {"num_runs": 0}, {"num_warmup_runs": -1}, {"num_threads": 0}])
def test_host_benchmark_rejects_bad_arguments(kwargs):
  with pytest.raises(ValueError, match=list(kwargs)[0]):
    tflite_export.benchmark(tu.trained_tflite("float32"), **kwargs)


def test_device_description_names_cpu_cores_and_runtime():
  description = tflite_export.device_description()
  assert f"{os.cpu_count()} cores" in description
  assert "LiteRT interpreter" in description and "XNNPACK" in description
  assert not description.startswith(",")  # A CPU name comes first.


def test_parse_benchmark_model_output_reads_timings_in_ms():
  result = tflite_export.parse_benchmark_model_output(
      BENCHMARK_MODEL_INT8_XNNPACK_OUTPUT, device="Pixel 7, big cores")
  assert result.source == "benchmark_model"
  assert result.device == "Pixel 7, big cores"
  assert result.mean_ms == pytest.approx(0.1024)
  assert result.latency_ms == pytest.approx(0.1024)  # No median printed.
  assert result.median_ms is None and result.p90_ms is None
  # The regular runs' stats line, not the warm-up one before it.
  assert result.num_runs == 9402
  assert result.min_ms == pytest.approx(0.087)
  assert result.max_ms == pytest.approx(0.391)
  assert result.std_ms == pytest.approx(0.012)
  assert result.init_ms == pytest.approx(3.412)
  assert result.first_inference_ms == pytest.approx(0.412)
  assert result.warmup_mean_ms == pytest.approx(0.1136)
  assert result.num_threads == 4


def test_parse_benchmark_model_output_reads_the_op_profile():
  result = tflite_export.parse_benchmark_model_output(
      BENCHMARK_MODEL_INT8_XNNPACK_OUTPUT)
  # The regular-runs table, not the initialization table before it.
  assert len(result.op_profile) == 8
  first, slowest = result.op_profile[0], result.op_profile[5]
  assert first.node_type == "Convolution (NHWC, QC8) IGEMM"
  assert first.name == "Delegate/Convolution (NHWC, QC8) IGEMM:0"
  assert first.first_ms == pytest.approx(0.021)
  assert first.avg_ms == pytest.approx(0.019)
  assert first.percent == pytest.approx(22.619)
  assert first.times_called == 1 and first.start_ms is None
  assert slowest.avg_ms == max(op.avg_ms for op in result.op_profile)
  assert result.op_profile[-1].node_type == (
      "Fully Connected (NC, QS8, QC8W) GEMM")
  assert result.op_profile[-1].cdf_percent == pytest.approx(100.0)
  assert sum(op.percent for op in result.op_profile) == pytest.approx(
      100.0, abs=0.01)
  summary = {row.node_type: row for row in result.node_type_summary}
  assert len(summary) == 7
  assert summary["Convolution (NHWC, QC8) IGEMM"].count == 2
  assert summary["Convolution (NHWC, QC8) IGEMM"].avg_ms == pytest.approx(
      0.053)


def test_parse_old_space_separated_benchmark_model_output():
  result = tflite_export.parse_benchmark_model_output(
      OLD_BENCHMARK_MODEL_FLOAT32_OUTPUT)
  assert result.mean_ms == pytest.approx(0.3039)
  assert result.init_ms == pytest.approx(1.873)
  assert result.warmup_mean_ms == pytest.approx(0.517)
  assert result.first_inference_ms is None
  assert result.num_runs == 50 and result.num_threads == 1
  assert result.min_ms == pytest.approx(0.289)
  assert [op.node_type for op in result.op_profile] == [
      "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD", "MAX_POOL_2D",
      "CONV_2D", "MEAN", "FULLY_CONNECTED"]
  assert result.op_profile[5].start_ms == pytest.approx(0.162)
  assert result.op_profile[5].avg_ms == pytest.approx(0.127)
  assert result.op_profile[0].name == "[tiny_cnn/re_lu/Relu]"
  assert result.node_type_summary[0].node_type == "CONV_2D"
  assert result.node_type_summary[0].count == 3


def test_parse_output_without_op_profiling_has_empty_profile():
  text = BENCHMARK_MODEL_INT8_XNNPACK_OUTPUT.split(
      "INFO: Note: as the benchmark tool")[0]
  result = tflite_export.parse_benchmark_model_output(text)
  assert result.mean_ms == pytest.approx(0.1024)
  assert result.op_profile == [] and result.node_type_summary == []


def test_parse_rejects_output_without_timings_and_says_why():
  failed_run = ("INFO: STARTING!\nERROR: Could not open "
                "'/data/local/tmp/missing.tflite'.\n")
  with pytest.raises(ValueError, match="Inference timings in us") as error:
    tflite_export.parse_benchmark_model_output(failed_run)
  assert "missing.tflite" in str(error.value)


def test_parsed_result_round_trips_through_json():
  result = tflite_export.parse_benchmark_model_output(
      BENCHMARK_MODEL_INT8_XNNPACK_OUTPUT)
  restored = tflite_export.LatencyResult.from_json(result.to_json())
  assert restored == result
  assert isinstance(restored.op_profile[0], tflite_export.OpProfileEntry)
