"""Benchmark: TFLite export of a pruned MobileNetV2, and how well a latency LUT predicts it.

Space: `mobilenet_v2(input_shape=(32, 32, 1), num_classes=10,
width_multiplier=0.35)` on the offline MNIST subset resized to 32x32 (one
channel). Structures: the uniform width whose FLOPs are closest to 50% of the
full width, plus 4 random structures (seeds 0-3).

1. Export: the 50% structure is trained briefly (`--epochs`, shared recipe,
   Adam, BN momentum 0.9) and exported to float32 and int8
   (`tflite_export.export_and_report`): size, Keras / TFLite test accuracy,
   parity and host latency of each file.
2. LUT: a per-layer latency table is measured on this host for each format
   (`tflite_export.measure_latency_table`, default grid) and every structure
   is rebuilt, converted and timed whole (random weights: latency does not
   depend on them) and compared with the table's prediction -- twice: timed
   throughout the table's measurement (`validation_structures`, same
   conditions), and afterwards (`tflite_export.prediction_error`), which also
   sees any drift of the machine's speed in between.

Host timings: LiteRT interpreter, XNNPACK, 1 thread. On x86 int8 is not
faster than float32. Other jobs on a shared machine change the speed by tens
of percent over minutes; the JSON records the load average and
`speed_ratio` (a reference model timed with the table and again with the whole
models) so noisy runs can be recognised.

Usage:

  PYTHONPATH=. .venv/bin/python benchmarks/tflite_lut.py            # ~17 min on 2 cores
  PYTHONPATH=. .venv/bin/python benchmarks/tflite_lut.py --epochs=1 --quantization=float32
"""

import os
import sys
import tempfile
import time

from absl import app
from absl import logging
from absl import flags
import keras
import numpy as np

import tf_metaprune as tfmp
from tf_metaprune import io as io_lib
import tflite_export
from tflite_export import export_report

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

_EPOCHS = flags.DEFINE_integer("epochs", 3, "Training epochs of the 50% structure before export.")
_QUANT = flags.DEFINE_list("quantization", ["float32", "int8"], "Formats to export and measure tables for.")
_GRID = flags.DEFINE_integer("grid_size", 6, "Channel counts measured per axis per layer (rest interpolated).")
_NUM_RANDOM = flags.DEFINE_integer("num_random", 4, "Random structures besides the 50% one.")
_OUT = flags.DEFINE_string("out", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                               "tflite_lut.json"), "Output JSON path.")


def _half_flops_structure(space):
  """The uniform structure whose MFLOPs are closest to half the full width's."""
  target = 0.5 * space.mflops(space.largest())
  ratios = sorted({r for g in space.genes for r in g.width_ratios})
  best = min(ratios, key=lambda r: abs(space.mflops(space.uniform(r)) - target))
  return best, space.uniform(best)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  load_before = os.getloadavg()
  started = time.time()
  splits = tfmp.data.load_dataset("mnist_subset", input_size=32, batch_size=64)
  space = tfmp.models.mobilenet_v2(input_shape=splits.input_shape, num_classes=splits.num_classes,
                                   width_multiplier=0.35)
  full_mflops = space.mflops(space.largest())
  ratio, half = _half_flops_structure(space)
  structures = [("uniform %.2f" % ratio, half)]
  structures += [(f"random seed {i}", space.random(seed=i)) for i in range(_NUM_RANDOM.value)]
  described = [{"name": name, "choices": list(s.choices), "mflops": space.mflops(s),
                "flops_fraction": space.mflops(s) / full_mflops, "params": space.params(s)}
               for name, s in structures]
  print(f"{space.name}: full width {full_mflops:.2f} MFLOPs; uniform {ratio:.2f} = "
        f"{space.mflops(half):.2f} MFLOPs ({100 * space.mflops(half) / full_mflops:.0f}%)")

  # 1. Train the 50% structure briefly and export it.
  keras.utils.set_random_seed(0)
  model = tfmp.rebuild(space, half, bn_momentum=0.9)
  t0 = time.time()
  history = tfmp.training.fit(model, splits.train, epochs=_EPOCHS.value, learning_rate=0.003, optimizer="adam",
                              verbose=2)
  train_s = time.time() - t0
  export_dir = tempfile.mkdtemp(prefix="tflite_lut_export_")  # the .tflite files are not kept
  export = tflite_export.export_and_report(model, export_dir, "mobilenet_v2_half", _QUANT.value,
                                           representative_data=splits.train, eval_data=splits.test,
                                           num_calibration_batches=16, num_runs=300, num_warmup_runs=30)
  export.update({"epochs": _EPOCHS.value, "train_seconds": train_s,
                 "train_accuracy_last_epoch": float(history["accuracy"][-1])})
  print(export_report.format_report(export))

  # 2. LUT per format, and its prediction error on whole models.
  luts = {}
  for q in _QUANT.value:
    table = tflite_export.measure_latency_table(space, quantization=q, grid_size=_GRID.value,
                                                validation_structures=[s for _, s in structures])
    table.save(os.path.join(os.path.dirname(_OUT.value), f"tflite_lut_table_{q}.json"))
    later = tflite_export.prediction_error(space, table, [s for _, s in structures])
    m = table.measurement
    same = m["validation"]
    for report_rows in (same["structures"], later["structures"]):
      for row, (name, _) in zip(report_rows, structures):
        row["name"] = name
    luts[q] = {"device": table.device, "overhead_ms": table.overhead_ms, "empty_ms": m["empty_ms"],
               "reference_ms": m["reference_ms"], "num_layer_models": m["num_layer_models"],
               "num_measured_entries": m["num_measured_entries"],
               "num_interpolated_entries": m["num_interpolated_entries"], "grid_size": m["grid_size"],
               "measure_seconds": m["seconds"], "measure_load_average": m["load_average"],
               "prediction_error_same_session": same, "prediction_error_afterwards": later}
    print(f"\n{q} LUT: {m['num_layer_models']} one-layer models in {m['seconds']:.0f} s, "
          f"{m['num_measured_entries']} measured + {m['num_interpolated_entries']} interpolated entries, "
          f"overhead {1000 * table.overhead_ms:.1f} us, load average {m['load_average']}")
    print(f"{'structure':<16} {'MFLOPs':>7} {'predicted':>9} | {'measured':>8} {'error':>7} (same session) | "
          f"{'measured':>8} {'error':>7} (afterwards)")
    for a, b in zip(same["structures"], later["structures"]):
      print(f"{a['name']:<16} {a['mflops']:7.2f} {a['predicted_ms']:9.3f} | {a['measured_ms']:8.3f} "
            f"{100 * a['relative_error']:6.1f}%                | {b['measured_ms']:8.3f} "
            f"{100 * b['relative_error']:6.1f}%")
    print(f"mean |error|: same session {100 * same['mean_abs_relative_error']:.1f}% (max "
          f"{100 * same['max_abs_relative_error']:.1f}%); afterwards {100 * later['mean_abs_relative_error']:.1f}% "
          f"(max {100 * later['max_abs_relative_error']:.1f}%, machine speed ratio now/then "
          f"{later['speed_ratio']:.2f}, drift-corrected {100 * later['drift_corrected_mean_abs_relative_error']:.1f}%)")

  report = {"benchmark": "tflite_lut", "space": space.name, "input_shape": list(space.input_shape),
            "width_multiplier": 0.35, "full_mflops": full_mflops, "uniform_ratio": ratio,
            "structures": described, "export": export, "luts": luts,
            "host": {"device": tflite_export.device_description(), "load_average_before": list(load_before),
                     "load_average_after": list(os.getloadavg()), "seconds": time.time() - started},
            "notes": ("Host latency (x86, LiteRT interpreter, XNNPACK, 1 thread): on x86 int8 is not faster than "
                      "float32; phones are where int8 pays. The export model was trained briefly; the random "
                      "structures are untrained (latency does not depend on weights). Other jobs shared the "
                      "2 cores: see load averages and speed_ratio.")}
  io_lib.write_json_atomic(_OUT.value, _common.jsonable(report))
  print(f"\nwrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
