"""The per-layer latency table of a search space: measured on this host, or on an Android phone.

A latency budget (`metaprune.py --max_latency_ms=... --latency_table=T.json`) needs the table of the
space the run prunes; the --model / --keras_model / --dataset / --input_size flags choose that space
exactly as in metaprune.py (same defaults), so pass both binaries the same ones. Three modes:

  # 1. on this machine (LiteRT interpreter, XNNPACK): a few minutes for a MobileNetV2
  python examples/latency_table.py --measure_host --output=runs/lut_host_int8.json

  # 2. for a phone: the one-layer models, manifest.json and run_on_device.sh
  python examples/latency_table.py --write_device_models=runs/lut_pixel --delegate=xnnpack --num_threads=1
  sh runs/lut_pixel/run_on_device.sh          # adb push + adb shell taskset f0 benchmark_model ... > X.txt

  # 3. back from the phone: the table from the logs beside the models
  python examples/latency_table.py --from_device_logs=runs/lut_pixel --device="Pixel 7, 1 big core" \
      --output=runs/lut_pixel_int8.json

  python examples/metaprune.py --max_latency_ms=2.5 --latency_table=runs/lut_pixel_int8.json ... \
      --output_dir=runs/mp
  sh runs/mp/run_on_device.sh                  # the exported int8 models, same recipe
  python examples/latency_table.py --run_dir=runs/mp    # predicted vs measured, host and phone

A log may be benchmark_model's stdout, its --profiling_output_csv_file CSV or the Android benchmark
app's logcat, saved as <model>.txt (recognized by content). Missing or unreadable logs are listed,
one line each. Host figures rank structures; budget with the phone's (on x86, int8 is not faster than
float32).
"""

import os

from absl import app
from absl import flags

import common_flags  # examples/common_flags.py

FLAGS = flags.FLAGS
# The same space flags and defaults as metaprune.py, so one set of flags names one space in both.
common_flags.define_dataset_flags()
common_flags.define_model_flags(default_model="mobilenet_v2", width_multiplier=0.5, min_width_ratio=0.3,
                                small_input=False, stage_repeats="1,2,2,2,1,1,1")
common_flags.define_keras_model_flags(" Its space is SearchSpace.from_keras_model, as in metaprune.py.")
flags.DEFINE_bool("measure_host", False, "Measure the table on this machine (LiteRT interpreter).")
flags.DEFINE_string("write_device_models", None, "Write the one-layer models, manifest.json and "
                    "run_on_device.sh to this folder, to time them on a phone.")
flags.DEFINE_string("from_device_logs", None, "Build the table from the logs (<model>.txt) in this "
                    "--write_device_models folder.")
flags.DEFINE_string("run_dir", None, "A metaprune.py run folder: the table's predicted latency of its exported "
                    "models beside their host latency and, when their logs are there, the phone's.")
flags.DEFINE_string("device_logs", None, "--run_dir: folder of the phone's logs of the exported models "
                    "(<file>.txt, as run_on_device.sh writes them; default: the run folder).")
flags.DEFINE_string("latency_table", None, "--run_dir: the table to predict with (default: the run's "
                    "--latency_table).")
flags.DEFINE_string("output", None, "Table JSON written by --measure_host / --from_device_logs "
                    "(for metaprune.py --latency_table).")
flags.DEFINE_enum("quantization", "int8", ["int8", "float32", "float16", "dynamic"], "Number format the model "
                  "ships in (a table holds for one format).")
flags.DEFINE_integer("grid_size", 6, "Channel counts timed per layer axis; the others are interpolated "
                     "(0: time every pair).")
flags.DEFINE_enum("delegate", "xnnpack", ["cpu", "xnnpack", "gpu", "nnapi"], "--write_device_models: how the "
                  "phone runs the models (cpu: built-in kernels, --use_xnnpack=false).")
flags.DEFINE_integer("num_threads", 1, "Threads of the timing runs (use the app's).")
flags.DEFINE_integer("num_runs", None, "Timed runs per model (default: 200 on the host, 100 on the phone).")
flags.DEFINE_integer("warmup_runs", None, "Warm-up runs per model (default: 20 on the host, 10 on the phone).")
flags.DEFINE_integer("num_rounds", 7, "--measure_host: interleaved timing rounds; the fastest is kept.")
flags.DEFINE_string("cpu_mask", "f0", "--write_device_models: taskset mask of the big cores ('' for none).")
common_flags.define_strategy_flag()
flags.DEFINE_string("device", None, "Label of the table (default: this host's CPU, or 'Android device').")


def _space():
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top  (after the quiet TensorFlow start)
  try:
    config = pipeline.PipelineConfig(**common_flags.dataset_kwargs(), **common_flags.model_kwargs(),
                                     **common_flags.keras_model_kwargs())
    splits = pipeline.load_data(config)
    return pipeline.trained_model_and_space(config, splits)[1]
  except (ValueError, FileNotFoundError) as e:
    common_flags.fail(str(e).replace("PipelineConfig(", "settings ("))


def _compare_run(run_dir):
  """Predicted vs measured latency of a run's exported models: on this host, and on the phone if logged."""
  from tf_metaprune import budgets  # pylint: disable=g-import-not-at-top
  from tf_metaprune import io as io_lib  # pylint: disable=g-import-not-at-top
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  import tflite_export  # pylint: disable=g-import-not-at-top
  try:
    report = io_lib.read_json(os.path.join(run_dir, "report.json"), "run report")
    exported = io_lib.read_json(os.path.join(run_dir, "export.json"), "export report")
    config = pipeline.PipelineConfig.from_config(report["config"])
    table_path = FLAGS.latency_table or config.latency_table
    if not table_path:
      raise ValueError(f"the run in {run_dir!r} had no latency budget: give --latency_table=T.json to predict with")
    table = budgets.LatencyTable.load(table_path)
    space = pipeline.trained_model_and_space(config, pipeline.load_data(config))[1]
    table.validate(space)
  except (ValueError, FileNotFoundError, KeyError) as e:
    common_flags.fail(str(e))
  logs_dir = FLAGS.device_logs or run_dir
  rows, problems = {}, []
  for key in report["rows"]:
    structure = space.load_structure(os.path.join(run_dir, report[key]["structure_file"]))
    predicted = table.predict_ms(space, structure)
    host = report[key]["int8_latency_median_ms"]
    stem = exported["files"][key]["file"][:-len(".tflite")]
    row = {"predicted_ms": predicted, "host_ms": host, "host_over_predicted": host / predicted if predicted else None,
           "phone_ms": None, "phone_over_predicted": None, "log": None}
    log_path = os.path.join(logs_dir, stem + ".txt")
    if os.path.exists(log_path):
      try:
        log = tflite_export.read_device_log(open(log_path, errors="replace").read())
        row.update(phone_ms=log.latency_ms, phone_over_predicted=log.latency_ms / predicted if predicted else None,
                   log=f"{os.path.basename(log_path)} ({log.format}, {log.statistic})")
      except ValueError as e:
        problems.append(f"{os.path.basename(log_path)}: {e}")
    rows[key] = row
  print(f"table: {table.device} ({table_path})")
  print(f"{'model':<18} {'predicted ms':>12} {'host ms':>9} {'host/pred':>9} {'phone ms':>9} {'phone/pred':>10}")
  for key, r in rows.items():
    phone = (f"{r['phone_ms']:9.3f} {r['phone_over_predicted']:9.2f}x" if r["phone_ms"] is not None
             else f"{'-':>9} {'-':>10}")
    print(f"{key:<18} {r['predicted_ms']:12.3f} {r['host_ms']:9.3f} {r['host_over_predicted']:8.2f}x {phone}")
  for line in problems:
    print(f"unreadable log: {line}")
  if not any(r["phone_ms"] is not None for r in rows.values()):
    print(f"no phone logs in {logs_dir!r}: sh {os.path.join(run_dir, 'run_on_device.sh')} writes them")
  out = os.path.join(run_dir, "device_latency.json")
  io_lib.write_json_atomic(out, {"table": table_path, "table_device": table.device, "rows": rows,
                                 "problems": problems, "host": report.get("device")})
  print(f"wrote {out}")


def main(argv):
  modes = [m for m in ("measure_host", "write_device_models", "from_device_logs", "run_dir") if FLAGS[m].value]
  if len(modes) != 1:
    common_flags.fail(f"give exactly one of --measure_host, --write_device_models=DIR, --from_device_logs=DIR, "
                      f"--run_dir=DIR (got {', '.join('--' + m for m in modes) or 'none'})")
  if modes[0] == "run_dir":
    common_flags.start(argv)
    return _compare_run(FLAGS.run_dir)
  if modes[0] != "write_device_models" and not FLAGS.output:
    common_flags.fail(f"--{modes[0]} writes a table: give --output=PATH.json")
  if FLAGS.output:
    common_flags.check_output_dir(os.path.dirname(os.path.abspath(FLAGS.output)), "output")
  common_flags.start(argv)  # after the flag checks above: they need no TensorFlow
  grid_size = FLAGS.grid_size or None
  from tf_metaprune import latency_lut  # pylint: disable=g-import-not-at-top
  space = _space()
  try:
    if FLAGS.measure_host:
      table = latency_lut.measure_latency_table(
          space, quantization=FLAGS.quantization, grid_size=grid_size, num_threads=FLAGS.num_threads,
          num_runs=FLAGS.num_runs or 200, num_warmup_runs=20 if FLAGS.warmup_runs is None else FLAGS.warmup_runs,
          num_rounds=FLAGS.num_rounds, device=FLAGS.device)
    elif FLAGS.write_device_models:
      common_flags.check_output_dir(FLAGS.write_device_models, "write_device_models")
      timing = latency_lut.timing_recipe(num_threads=FLAGS.num_threads, delegate=FLAGS.delegate,
                                         num_runs=FLAGS.num_runs or 100,
                                         warmup_runs=10 if FLAGS.warmup_runs is None else FLAGS.warmup_runs,
                                         cpu_mask=FLAGS.cpu_mask)
      manifest = latency_lut.write_layer_models(space, FLAGS.write_device_models, quantization=FLAGS.quantization,
                                                grid_size=grid_size, timing=timing)
      folder = os.path.dirname(manifest)
      count = len([f for f in os.listdir(folder) if f.endswith(".tflite")])
      print(f"wrote {count} models, {manifest} and {os.path.join(folder, latency_lut.SCRIPT)}\n"
            f"next: sh {os.path.join(folder, latency_lut.SCRIPT)}   (adb and benchmark_model on the phone; "
            f"see the script's header)\nthen: python examples/latency_table.py <same flags> "
            f"--from_device_logs={FLAGS.write_device_models} --output=TABLE.json")
      return
    else:
      table = latency_lut.latency_table_from_logs(space, FLAGS.from_device_logs,
                                                  device=FLAGS.device or "Android device (benchmark_model)")
  except ValueError as e:
    common_flags.fail(str(e))
  table.save(FLAGS.output)
  m = table.measurement
  largest, smallest = table.predict_ms(space, space.largest()), table.predict_ms(space, space.smallest())
  print(f"{table.device}: {len(table.entries)} layers, {m.get('num_layer_models')} one-layer models "
        f"({m.get('num_measured_entries')} entries timed, {m.get('num_interpolated_entries')} interpolated), "
        f"overhead {table.overhead_ms:.4f} ms; predicted {smallest:.3f} ms (narrowest) to {largest:.3f} ms "
        f"(full width); statistic: {m.get('statistic')}")
  print(f"wrote {FLAGS.output}: use it with metaprune.py <same flags> --latency_table={FLAGS.output} "
        f"--max_latency_ms=<ms between those>")


if __name__ == "__main__":
  app.run(main)
