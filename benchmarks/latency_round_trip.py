"""Benchmark: does the host latency table predict whole int8 models of Keras MobileNetV2 spaces?

Two spaces read by `SearchSpace.from_keras_model` (default ratios 0.1-1.0, divisor 8), int8, 32x32x3
input, 10 classes:

1. `keras.applications.MobileNetV2(alpha=0.35, weights=None)`: SE-free inverted residuals (zero
   padding before the stride-2 depthwise convs, ReLU6, residual adds, global average pooling).
2. A small MobileNetV2-like model with squeeze-and-excitation in every block (global average pooling
   with keepdims -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid -> Multiply with the block's features):
   MobileNetV3's SE pattern built from plain Keras layers.

For each, `measure_latency_table(space, "int8", grid_size=...)` times every one-layer model on this
host and, in the same interleaved rounds, the whole models of `--num_structures` random structures
(`validation_structures`: the same machine conditions for table and models, so drift between the two
is not counted); the figure is the median of |predicted - measured| / measured over them.

Host latency: LiteRT interpreter, XNNPACK, 1 thread; on x86 int8 is not faster than float32 (phones
are where int8 pays). Run it alone: `flock /tmp/heavy.lock` (other jobs change the speed by tens of
percent); the JSON records the load average before and after.

Usage:

  flock /tmp/heavy.lock env PYTHONPATH=. .venv/bin/python benchmarks/latency_round_trip.py   # ~15-20 min
"""

import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import keras
import numpy as np

import tf_metaprune as tfmp
from tf_metaprune import io as io_lib
from tf_metaprune import latency_lut
import tflite_export

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

_NUM = flags.DEFINE_integer("num_structures", 20, "Random structures per space.")
_GRID = flags.DEFINE_integer("grid_size", 4, "Channel counts timed per layer axis (rest interpolated).")
_RUNS = flags.DEFINE_integer("num_runs", 100, "Timed invokes per model and round.")
_ROUNDS = flags.DEFINE_integer("num_rounds", 5, "Interleaved timing rounds (fastest kept).")
_MODELS = flags.DEFINE_list("models", ["mobilenet_v2", "mobilenet_v2_se"], "Which spaces.")
_OUT = flags.DEFINE_string("out", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                               "latency_round_trip.json"), "Output JSON path.")

INPUT_SHAPE = (32, 32, 3)


def mobilenet_v2():
  return keras.applications.MobileNetV2(input_shape=INPUT_SHAPE, alpha=0.35, weights=None, classes=10)


def mobilenet_v2_se(expansion=4, blocks=((16, 1), (24, 2), (24, 1), (40, 2), (40, 1), (80, 2), (80, 1))):
  """A MobileNetV2-like network with a squeeze-excite (Multiply) gate in every inverted residual."""
  layers = keras.layers
  x = inputs = keras.Input(INPUT_SHAPE)
  x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem")(x)
  x = layers.ReLU(6.0, name="stem_relu")(layers.BatchNormalization(name="stem_bn")(x))
  for i, (out, stride) in enumerate(blocks):
    cin = x.shape[-1]
    h = layers.Conv2D(cin * expansion, 1, use_bias=False, name=f"b{i}_expand")(x)
    h = layers.ReLU(6.0)(layers.BatchNormalization()(h))
    h = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"b{i}_dw")(h)
    h = layers.ReLU(6.0)(layers.BatchNormalization()(h))
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"b{i}_squeeze")(h)
    s = layers.Conv2D(max(8, cin * expansion // 4), 1, activation="relu", name=f"b{i}_se_reduce")(s)
    s = layers.Conv2D(cin * expansion, 1, name=f"b{i}_se_expand")(s)
    s = layers.Activation("sigmoid", name=f"b{i}_gate")(s)
    h = layers.Multiply(name=f"b{i}_excite")([h, s])
    h = layers.BatchNormalization()(layers.Conv2D(out, 1, use_bias=False, name=f"b{i}_project")(h))
    x = layers.Add(name=f"b{i}_add")([x, h]) if stride == 1 and cin == out else h
  x = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(256, 1, use_bias=False, name="head")(x)))
  x = layers.GlobalAveragePooling2D()(x)
  return keras.Model(inputs, layers.Dense(10, name="logits")(x), name="mobilenet_v2_se")


BUILDERS = {"mobilenet_v2": mobilenet_v2, "mobilenet_v2_se": mobilenet_v2_se}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  started, load_before = time.time(), os.getloadavg()
  results = {}
  for name in _MODELS.value:
    keras.utils.set_random_seed(0)
    model = BUILDERS[name]()
    space = tfmp.SearchSpace.from_keras_model(model)
    structures = [space.random(seed=i) for i in range(_NUM.value)]
    t0 = time.time()
    table = latency_lut.measure_latency_table(space, quantization="int8", grid_size=_GRID.value,
                                              num_runs=_RUNS.value, num_rounds=_ROUNDS.value,
                                              validation_structures=structures)
    seconds = time.time() - t0
    report = table.measurement["validation"]
    errors = np.array([row["relative_error"] for row in report["structures"]])
    kinds = {}
    for node in space.nodes:
      kind = tfmp.ops.get(node.op).latency_kind(space, node)
      kinds.setdefault(node.op, set()).add(kind)
    m = table.measurement
    results[name] = {
        "space": space.name, "nodes": len(space.nodes), "genes": len(space.genes),
        "full_mflops": space.mflops(space.largest()), "ops": {op: sorted(k) for op, k in sorted(kinds.items())},
        "num_layer_models": m["num_layer_models"], "num_measured_entries": m["num_measured_entries"],
        "num_interpolated_entries": m["num_interpolated_entries"], "overhead_ms": table.overhead_ms,
        "empty_ms": m["empty_ms"], "table_seconds": seconds, "table_load_average": m["load_average"],
        "median_abs_relative_error": float(np.median(np.abs(errors))),
        "mean_abs_relative_error": float(np.mean(np.abs(errors))),
        "max_abs_relative_error": float(np.max(np.abs(errors))),
        "mean_relative_error": float(np.mean(errors)),
        "structures": report["structures"]}
    r = results[name]
    print(f"{name}: {len(space.nodes)} nodes, {m['num_layer_models']} one-layer models, table + "
          f"{len(structures)} whole models in {seconds:.0f} s (load {m['load_average']}); |error| median "
          f"{100 * r['median_abs_relative_error']:.1f}%, mean {100 * r['mean_abs_relative_error']:.1f}%, max "
          f"{100 * r['max_abs_relative_error']:.1f}% (mean signed {100 * r['mean_relative_error']:+.1f}%)",
          flush=True)
    for row in report["structures"]:
      print(f"  {row['mflops']:6.2f} MFLOPs predicted {row['predicted_ms']:.3f} ms, measured "
            f"{row['measured_ms']:.3f} ms ({100 * row['relative_error']:+.1f}%)")
  out = {"benchmark": "latency_round_trip", "input_shape": list(INPUT_SHAPE), "quantization": "int8",
         "grid_size": _GRID.value, "num_runs": _RUNS.value, "num_rounds": _ROUNDS.value,
         "num_structures": _NUM.value, "results": results,
         "host": {"device": tflite_export.device_description(), "load_average_before": list(load_before),
                  "load_average_after": list(os.getloadavg()), "seconds": time.time() - started},
         "command": "flock /tmp/heavy.lock env PYTHONPATH=. .venv/bin/python benchmarks/latency_round_trip.py",
         "notes": ("Host latency (x86, LiteRT interpreter, XNNPACK, 1 thread, int8): on x86 int8 is not faster "
                   "than float32; phones are where int8 pays. Whole models timed in the same interleaved rounds "
                   "as the table's one-layer models (validation_structures). Random weights: latency does not "
                   "depend on them.")}
  io_lib.write_json_atomic(_OUT.value, _common.jsonable(out))
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
