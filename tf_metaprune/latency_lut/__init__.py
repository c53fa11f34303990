"""Measures a per-layer latency lookup table (LUT) for a search space (tf_metaprune.latency_lut).

The package, by job: `tables` (LayerSignature, MeasuredLatencyTable), `plan` (which one-layer models,
how timings become entries), `models` (converting them), `host` (timing on this machine, checking a table
against whole models), `device` (the phone round trip: models, manifest, run_on_device.sh, reading the logs),
`profile` (a whole model's op profile mapped to table entries). Every name is importable from here.

The idea (NetAdapt, AMC; MetaPruning Sec. 4.3): a network of plain layers
takes about as long as the sum of its layers, each timed alone. So time every
layer of a `SearchSpace` once per (input channels, output channels) it can
take, store the milliseconds in a `tf_metaprune.budgets.LatencyTable`, and a
latency budget can score thousands of candidate structures without running
any of them:

  predicted_ms(structure) = overhead_ms + sum over layers of table[layer][cin, cout]

How each entry is measured
--------------------------

1. For every conv, depthwise conv and dense node (the keys of
   `LatencyTable.required_keys(space)`), build a one-layer Keras model that
   reproduces it at its input spatial size: Conv2D / DepthwiseConv2D ->
   BatchNormalization -> ReLU/ReLU6 exactly as `tf_metaprune.rebuild` makes
   it (the converter folds batch norm and the activation into the conv, as in
   the whole model); a dense node is the Dense layer on its flat input. Ops
   whose cost depends only on their width (residual adds, max / average /
   global pooling, squeeze-excite multiplies, upsampling, a sigmoid) have no
   entry of their own: they are timed per width and added to the entries of
   the conv that sets that width (one fed straight by the network input, or
   joining several genes like a concatenation, has a fixed cost at full
   width and goes into `overhead_ms`). Every op declares which it is and
   its one-layer model: `Op.latency_kind`, `Op.latency_signature`,
   `Op.latency_model` in `tf_metaprune.ops`.
2. Convert it with `tflite_export.convert` in the table's number format
   (int8: calibrated on random images, with int8 input and output so no
   quantize/dequantize op is timed that the whole model does not run) and
   time `invoke()` with `tflite_export.benchmark`: the median of `num_runs`
   invokes, in `num_rounds` interleaved rounds over all models once they are
   all converted, keeping the fastest round (other jobs on the host slow
   whole stretches of time down).
3. Subtract the fixed per-invoke cost, measured on an "empty" model (one ReLU
   on a 1x1x1 tensor, same number format), and clip at 0.
4. `overhead_ms` is the empty model at the network's input shape with the
   exported model's float input and output (for int8 this includes the input
   quantize op): what one invoke of the whole model costs beyond its layers.

Layers with the same signature (op, kernel, stride, input size, activation,
cin, cout) are measured once: the blocks of a MobileNet stage share theirs.

Spaces read from a Keras model (`SearchSpace.from_keras_model`) are timed the
same way with the user's own layers: each conv, depthwise, separable and
dense layer is re-created from its config at (cin, cout); width-only ops are
folded into the layer that sets their width, walking back through batch norm,
activations and padding, which are free when the converter fuses them (batch
norm and ReLU after a conv; XNNPACK folds zero padding into the next conv).

Grid and interpolation
----------------------

A MobileNetV2 space has thousands of (cin, cout) pairs (3,518 for
`mobilenet_v2((32, 32, 1), 10, width_multiplier=0.35)`), so by default each
node is measured on a grid -- at most `grid_size` channel counts per axis,
evenly spaced over its choices and always including the smallest and largest
-- and the other pairs are interpolated bilinearly in (cin, cout) (linearly
in c for depthwise convs, whose cin equals cout). Conv time is close to
a + b*cin + c*cout + d*cin*cout, which bilinear interpolation reproduces
exactly. With the default `grid_size=6` that space needs 362 one-layer
models (about 3-4 minutes on 2 cores, nearly all of it conversion);
`grid_size=None` measures every pair (1,513 models). The
returned `MeasuredLatencyTable` records which keys were measured and which
interpolated, plus every raw timing, in the `"measurement"` block of its JSON
(`LatencyTable.load` ignores that block, so the file stays a plain table).

Measuring on a phone
--------------------

Host (x86) latency ranks structures, but budgets belong to the target device,
where int8 pays off. The same plan runs there (`examples/latency_table.py`
does all three steps from the command line):

  write_layer_models(space, "lut", quantization="int8",
                     timing=timing_recipe(num_threads=1, delegate="xnnpack"))
  # -> one .tflite per signature, manifest.json (the recipe), run_on_device.sh

`sh lut/run_on_device.sh` pushes each model with adb, runs `taskset MASK
benchmark_model --graph=... --num_threads=.. --num_runs=.. --warmup_runs=..`
on the phone's big cores and writes `<model>.txt` beside it; then

  table = latency_table_from_logs(space, "lut", device="Pixel 7, 1 thread")
  table.save("pixel7_int8.json")

Each log may be the binary's stdout, its `--profiling_output_csv_file` CSV or
the Android benchmark app's logcat (`tflite_export.read_device_log`); missing,
truncated or wrong-delegate logs are listed one per line. The table is
assembled exactly as `measure_latency_table` does (subtracting the empty
model, folding, interpolating). (Timed some other way, the numbers go through
`table_from_timings`; `layer_signatures` lists the models.) `profile_entries`
maps the per-operator profile of one whole model (`--enable_op_profiling=true`)
back to the layers of a structure, to check a table against a phone.

Example:

  import tf_metaprune as tfmp
  from tf_metaprune import latency_lut

  space = tfmp.models.mobilenet_v2((32, 32, 1), 10, width_multiplier=0.35)
  table = latency_lut.measure_latency_table(space, quantization="int8")
  table.save("host_int8.json")
  budget = tfmp.budgets.LatencyBudget(max_ms=0.8, lut=table)
  print(latency_lut.prediction_error(space, table, [space.uniform(0.5)]))

(This module was `tflite_export.latency_lut`; it lives on the tf_metaprune side
because it reads search spaces, while tflite_export only converts, quantizes
and times Keras models. `tflite_export.measure_latency_table` etc. still
resolve, for old callers.)
"""

from tf_metaprune.latency_lut.device import DELEGATE_FLAGS
from tf_metaprune.latency_lut.device import latency_table_from_logs
from tf_metaprune.latency_lut.device import SCRIPT
from tf_metaprune.latency_lut.device import timing_recipe
from tf_metaprune.latency_lut.device import write_device_script
from tf_metaprune.latency_lut.device import write_layer_models
from tf_metaprune.latency_lut.host import measure_latency_table
from tf_metaprune.latency_lut.host import prediction_error
from tf_metaprune.latency_lut.plan import layer_signatures
from tf_metaprune.latency_lut.plan import table_from_timings
from tf_metaprune.latency_lut.profile import profile_entries
from tf_metaprune.latency_lut.profile import tflite_kind
from tf_metaprune.latency_lut.tables import EMPTY_MODEL
from tf_metaprune.latency_lut.tables import LayerSignature
from tf_metaprune.latency_lut.tables import MeasuredLatencyTable
from tf_metaprune.latency_lut.tables import OVERHEAD_MODEL
from tf_metaprune.latency_lut.tables import REFERENCE_MODEL

__all__ = [
    "DELEGATE_FLAGS",
    "EMPTY_MODEL",
    "LayerSignature",
    "MeasuredLatencyTable",
    "OVERHEAD_MODEL",
    "REFERENCE_MODEL",
    "SCRIPT",
    "latency_table_from_logs",
    "layer_signatures",
    "measure_latency_table",
    "prediction_error",
    "profile_entries",
    "table_from_timings",
    "tflite_kind",
    "timing_recipe",
    "write_device_script",
    "write_layer_models",
]
