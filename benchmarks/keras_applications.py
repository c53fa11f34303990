"""Every keras.applications CNN through the whole path: read, reorder, PruningNet, rebuild, int8, latency (issue 27).

Torch-Pruning proves its coverage with one script over the torchvision models;
this is ours, over every CNN constructor of `keras.applications` (Keras 3:
40), each built with its default arguments (preprocessing layers and the
softmax head included) and `weights=None` at the smallest input it accepts
(32x32, Xception 71, InceptionV3 / InceptionResNetV2 75) -- plus the two
dense-prediction graphs of `tf_metaprune.models.dense_prediction` (`unet`: an
H x W x K output; `two_head_detector`: class and box outputs) at 32x32x3 with
their defaults. Per model, in
stages (the first that fails is the model's "stage" and its one-line error):

1. `read`: `SearchSpace.from_keras_model` reads it (a final softmax is read as
   logits + the user's activation); its full-width params and FLOPs equal
   `count_params()` / `tf_metaprune.count_flops` of the model.
2. `reorder`: `pretrained.TrainedModel` reorders every gene by L1 importance;
   the reordered model computes what the model computes (`logit_max_abs_diff`:
   max |difference| of the logits, read as log-probabilities minus their mean
   for a softmax head, over 4 images).
3. `pruning_net`: the PruningNet loaded from the reordered weights equals the
   model at full width (same measure, `pruning_net_max_abs_diff`).
4. `rebuild`: a uniform 50% structure and a random one rebuild (from the
   PruningNet) and run; their params and FLOPs equal the space's counts and
   their logits the PruningNet's.
5. `tflite`: the 50% model converts to int8 (calibrated on 16 images) and
   `tflite_export.check_parity` compares it with Keras on 16 other images
   (`tflite_agreement`: top-1 agreement; `tflite_rel_diff`: max |logit
   difference| over the range of the logits). It is checked on the logits:
   an int8 softmax output steps by 1/256, coarser than a 1000-class
   probability (the exported model with the softmax is the pipeline's; see
   tests/keras_applications_test.py).
6. `latency`: every node's op declares a latency-table entry
   (`Op.latency_kind`), `latency_lut.layer_signatures(space, grid_size=2)`
   plans them, and one one-layer model per kind of layer builds.

Weights: the models are untrained (`weights=None`), so before the checks
their batch-norm gammas/betas are drawn at random and the moving statistics
recalibrated on 64 random images (`tf_metaprune.training.recalibrate_batch_norm`):
otherwise the logits of the deep ones are degenerate (near zero or equal) and
a wrong channel permutation would not show. The PruningNet has generators
of 8 hidden units up to 30M parameters and plain weight sharing
(`hidden_units=0`) above (memory: the generators hold hidden x params).

InceptionResNetV2's `CustomScaleLayer` is read through the extension point a
user has: `ScaledResidual` below, an `Op` registered from this script.

Resumable per model: results already in the JSON are kept (`--rerun` redoes
them); each model runs in its own subprocess (`--timeout_s`). Prints progress
and an estimate of the time left. The per-model seconds are not timing
figures (the machine is shared; the run is meant for `nice -n 19`): the JSON
records the load average.

  nice -n 19 python benchmarks/keras_applications.py            # all 40
  python benchmarks/keras_applications.py --models=MobileNetV3Small,EfficientNetB0
"""

import inspect
import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the repository (tf_metaprune)
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_list("models", [], "Constructors to run (default: every keras.applications CNN).")
flags.DEFINE_bool("rerun", False, "Run models that already have a result again.")
flags.DEFINE_integer("timeout_s", 3600, "Per-model time limit (its subprocess is stopped; status 'refused', "
                     "stage 'timeout').")
flags.DEFINE_string("output_dir", _common.RESULTS_DIR, "Where keras_applications.json goes.")
flags.DEFINE_bool("write_readme", False, "Only rewrite the table between the keras_applications markers of "
                  "benchmarks/README.md from the JSON (no model is run).")
flags.DEFINE_string("_child", None, "Internal: run this one model and write its row to --_child_out.")
flags.DEFINE_string("_child_out", None, "Internal.")
FLAGS = flags.FLAGS

NAME = "keras_applications"
SMALLEST_INPUT = {"Xception": 71, "InceptionV3": 75, "InceptionResNetV2": 75}
HIDDEN_UNITS_MAX_PARAMS = 30_000_000
# Roughly by size, so a cut-off run has the small models (the ones phones run) first.
_SIZE_ORDER = ("unet", "two_head_detector", "MobileNetV3Small", "MobileNet", "MobileNetV2", "MobileNetV3Large", "EfficientNetB0", "NASNetMobile",
               "EfficientNetV2B0", "EfficientNetB1", "EfficientNetV2B1", "DenseNet121", "EfficientNetB2",
               "EfficientNetV2B2", "EfficientNetB3", "EfficientNetV2B3", "DenseNet169", "EfficientNetB4",
               "DenseNet201", "Xception", "EfficientNetV2S", "InceptionV3", "ResNet50V2", "ResNet50",
               "ConvNeXtTiny", "EfficientNetB5", "VGG16", "VGG19", "EfficientNetB6", "ResNet101V2", "ResNet101",
               "ConvNeXtSmall", "InceptionResNetV2", "EfficientNetV2M", "ResNet152V2", "ResNet152", "EfficientNetB7",
               "ConvNeXtBase", "NASNetLarge", "EfficientNetV2L", "ConvNeXtLarge", "ConvNeXtXLarge")
STAGES = ("build", "read", "reorder", "pruning_net", "rebuild", "tflite", "latency")


# The dense-prediction graphs of issue 27 item 3 (tf_metaprune.models.dense_prediction), at their defaults.
EXTRA_GRAPHS = ("unet", "two_head_detector")


def constructors():
  import keras  # pylint: disable=g-import-not-at-top
  return sorted(k for k in dir(keras.applications)
                if k[0].isupper() and inspect.isfunction(getattr(keras.applications, k)))


def _build(name, size):
  import keras  # pylint: disable=g-import-not-at-top
  from tf_metaprune.models import dense_prediction  # pylint: disable=g-import-not-at-top
  if name in EXTRA_GRAPHS:
    return getattr(dense_prediction, name)((size, size, 3))
  return getattr(keras.applications, name)(input_shape=(size, size, 3), weights=None)


def _outputs(y):
  import numpy as np  # pylint: disable=g-import-not-at-top
  return [np.asarray(t) for t in y] if isinstance(y, (list, tuple)) else [np.asarray(y)]


# ---- the user's op for InceptionResNetV2 (the extension point, from outside tf_metaprune.ops) ----------------


def register_user_ops():
  """Registers `ScaledResidual` for keras.applications' CustomScaleLayer (x + r * scale)."""
  from keras.src.applications.inception_resnet_v2 import CustomScaleLayer  # pylint: disable=g-import-not-at-top
  from tf_metaprune import ops  # pylint: disable=g-import-not-at-top

  class ScaledResidual(ops.Add):
    """InceptionResNetV2's CustomScaleLayer: inputs[0] + inputs[1] * scale, a residual join."""
    name = "scaled_residual"
    keras_types = (CustomScaleLayer,)
    keras_doc = "CustomScaleLayer"

    def pruning_call(self, net, node, inputs, call):
      return inputs[0] + inputs[1] * node.layer["config"]["scale"]

    def masked_call(self, net, node, inputs, training, mask):
      return self.pruning_call(net, node, inputs, None)

  if "scaled_residual" not in ops.names():
    ops.register(ScaledResidual)


# ---- one model ----------------------------------------------------------------------------------------------


def _one_line(e):
  text = f"{type(e).__name__}: {e}" if not isinstance(e, ValueError) else str(e)
  return " ".join(text.split())[:400]


def _prepare(model, x):
  """Random BN gammas/betas, then moving statistics recalibrated on `x` (see the module docstring)."""
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_metaprune import training  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  bns = []

  def walk(m):
    for layer in m.layers:
      if isinstance(layer, keras.Model):
        walk(layer)
      elif isinstance(layer, keras.layers.BatchNormalization):
        bns.append(layer)

  walk(model)
  for layer in bns:
    if layer.gamma is not None:
      layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype(np.float32))
    if layer.beta is not None:
      layer.beta.assign(rng.normal(0, 0.1, layer.beta.shape).astype(np.float32))
  if bns:
    training.recalibrate_batch_norm(model, tf.data.Dataset.from_tensor_slices(x).batch(16))
  return len(bns)


def _logits_diff(a, b, softmax):
  """Max |a - b| over every output (for a softmax head: of the log-probabilities minus their mean)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  worst = 0.0
  for a, b in zip(_outputs(a), _outputs(b)):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if softmax:   # probabilities: compare log-probabilities, centred (logits up to a constant per image)
      a, b = np.log(np.maximum(a, 1e-30)), np.log(np.maximum(b, 1e-30))
      a, b = a - a.mean(axis=-1, keepdims=True), b - b.mean(axis=-1, keepdims=True)
    worst = max(worst, float(np.abs(a - b).max()))
  return worst


def run_model(name):
  """The row of one constructor (see the module docstring); stops at the first failing stage."""
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  import tflite_export  # pylint: disable=g-import-not-at-top
  from tf_metaprune import flops  # pylint: disable=g-import-not-at-top
  from tf_metaprune import latency_lut  # pylint: disable=g-import-not-at-top
  from tf_metaprune import ops  # pylint: disable=g-import-not-at-top
  from tf_metaprune import pretrained  # pylint: disable=g-import-not-at-top
  register_user_ops()
  size = SMALLEST_INPUT.get(name, 32)
  args = ({"input_shape": [size, size, 3]} if name in EXTRA_GRAPHS
          else {"weights": None, "input_shape": [size, size, 3]})
  row = {"name": name, "input_size": size, "constructor_args": args,
         "status": "refused", "stage": "build", "error": None}
  started = time.time()
  times = {}
  stage_start = [time.time()]

  def stage(s):
    times[row["stage"]] = round(time.time() - stage_start[0], 1)
    stage_start[0] = time.time()
    row["stage"] = s

  try:
    model = _build(name, size)
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (64, size, size, 3)).astype(np.float32)
    probe = x[:4]
    row["batch_norm_layers"] = _prepare(model, x)
    ref = model(probe, training=False)
    row["params_model"] = int(model.count_params())
    stage("read")
    space = tfmp.SearchSpace.from_keras_model(model)
    softmax = space.output_activation == "softmax"
    row.update(genes=len(space.genes), nodes=len(space.nodes), output_activation=space.output_activation,
               outputs=len(model.outputs),
               params_full=int(space.params(space.largest())), mflops_full=float(space.mflops(space.largest())))
    if row["params_full"] != row["params_model"]:
      raise ValueError(f"space params {row['params_full']} != model.count_params() {row['params_model']}")
    counted = flops.count_flops(model) / 1e6
    if abs(counted - row["mflops_full"]) > 1e-6:
      raise ValueError(f"space MFLOPs {row['mflops_full']} != count_flops(model) {counted}")
    stage("reorder")
    trained = pretrained.TrainedModel(model, space=space)
    reordered = trained.reordered_model()   # with the user's head
    row["logit_max_abs_diff"] = _logits_diff(reordered(probe, training=False), ref, softmax)
    row["logit_scale"] = max(float(np.abs(o).max()) for o in _outputs(
        trained.reordered_model(output_activation=False)(probe, training=False)))
    tolerance = 1e-3 * max(1.0, row["logit_scale"])
    if not row["logit_max_abs_diff"] <= tolerance:
      raise ValueError(f"reordered model differs from the model by {row['logit_max_abs_diff']:.3g} (logit scale "
                       f"{row['logit_scale']:.3g})")
    del reordered
    stage("pruning_net")
    row["hidden_units"] = 8 if row["params_full"] <= HIDDEN_UNITS_MAX_PARAMS else 0
    net = trained.pruning_net(hidden_units=row["hidden_units"])
    full = net.call_structure(probe, space.largest())
    as_model = tf.nn.softmax(full).numpy() if softmax else full
    row["pruning_net_max_abs_diff"] = _logits_diff(as_model, ref, softmax)
    if not row["pruning_net_max_abs_diff"] <= tolerance:
      raise ValueError(f"PruningNet at full width differs from the model by {row['pruning_net_max_abs_diff']:.3g}")
    stage("rebuild")
    half = space.uniform(0.5)
    row["rebuild_max_abs_diff"] = 0.0
    for label, s in (("half", half), ("random", space.random(seed=0))):
      rebuilt = tfmp.rebuild(net, s)
      params, mflops = int(rebuilt.count_params()), flops.count_flops(rebuilt) / 1e6
      if params != space.params(s) or abs(mflops - space.mflops(s)) > 1e-6:
        raise ValueError(f"{label} structure: rebuilt params/MFLOPs {params}/{mflops} != space's "
                         f"{space.params(s)}/{space.mflops(s)}")
      diff = _logits_diff(rebuilt(probe, training=False), net.call_structure(probe, s), False)
      row["rebuild_max_abs_diff"] = max(row["rebuild_max_abs_diff"], diff)
      row[f"params_{label}"], row[f"mflops_{label}"] = params, mflops
      del rebuilt
    del net
    stage("tflite")
    half_model = trained.rebuild(half)   # logits: an int8 softmax output steps by 1/256, coarser than 1/1000
    flat = tflite_export.convert(half_model, "int8", representative_data=x[:16], num_calibration_batches=16)
    report = tflite_export.check_parity(flat, half_model, tf.data.Dataset.from_tensor_slices(x[16:32]).batch(8))
    logit_range = min(float(np.ptp(o)) for o in _outputs(half_model(x[16:32], training=False)))
    row.update(tflite_agreement=float(report.top1_agreement), tflite_max_abs_diff=float(report.max_abs_logit_diff),
               tflite_rel_diff=float(report.max_abs_logit_diff) / max(logit_range, 1e-12),
               tflite_kb=round(len(flat) / 1024, 1))
    del half_model, flat
    stage("latency")
    kinds = [ops.get(n.op).latency_kind(space, n) for n in space.nodes if n.op != "input"]
    if not set(kinds) <= {"table", "folded", "free"}:
      raise ValueError(f"latency kinds {sorted(set(kinds))} are not table/folded/free")
    signatures = latency_lut.layer_signatures(space, grid_size=2)
    kinds_built = {}
    for sig in signatures:   # one one-layer model per kind of layer (the others differ only in widths)
      key = (sig.op, json.dumps(sig.layer, sort_keys=True, default=str)[:200] if sig.layer else None, sig.in_hw)
      if key not in kinds_built:
        kinds_built[key] = sig.build_model().count_params()
    row.update(latency_signatures=len(signatures), latency_models_built=len(kinds_built), latency_table_nodes=kinds.count("table"),
               latency_folded_nodes=kinds.count("folded"), latency_free_nodes=kinds.count("free"))
    times[row["stage"]] = round(time.time() - stage_start[0], 1)
    row.update(status="ok", stage="done")
  except Exception as e:  # pylint: disable=broad-except
    times[row["stage"]] = round(time.time() - stage_start[0], 1)
    row["error"] = _one_line(e)
  row["stage_seconds"] = times
  row["seconds"] = round(time.time() - started, 1)
  return row


# ---- the driver ----------------------------------------------------------------------------------------------


def _load(path):
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return {r["name"]: r for r in json.load(f).get("models", [])}


def _table(rows):
  headers = ["model", "input", "status", "genes", "params full -> 50%", "MFLOPs full -> 50%",
             "max logit diff (reorder / PruningNet)", "int8 top-1 agreement", "seconds", "stopped at: reason"]
  body = []
  for r in rows:
    ok = r["status"] == "ok"
    body.append([
        r["name"], f"{r['input_size']}x{r['input_size']}", r["status"], r.get("genes", "-"),
        f"{r['params_full'] / 1e6:.2f}M -> {r['params_half'] / 1e6:.2f}M" if "params_half" in r else "-",
        f"{r['mflops_full']:.1f} -> {r['mflops_half']:.1f}" if "mflops_half" in r else "-",
        (f"{r['logit_max_abs_diff']:.1e} / {r['pruning_net_max_abs_diff']:.1e}"
         if "pruning_net_max_abs_diff" in r else "-"),
        f"{r['tflite_agreement']:.2f}" if "tflite_agreement" in r else "-",
        f"{r['seconds']:.0f}", "" if ok else f"{r['stage']}: {r['error']}"])
  return _common.markdown_table(headers, body)


README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")
START, END = "<!-- keras_applications:start -->", "<!-- keras_applications:end -->"


def readme_section(data):
  """The Markdown written between the markers: what was run, the table, the refusals by name."""
  rows = data["models"]
  ok = [r for r in rows if r["status"] == "ok"]
  seconds = [r["seconds"] for r in rows]
  loads = [r["load_average"][0] for r in rows if r.get("load_average")]
  refused = [f"{r['name']} ({r['stage']}: {r['error']})" for r in rows if r["status"] != "ok"]
  by_nice = {}
  for r in rows:
    by_nice.setdefault(r.get("nice", "?"), []).append(r["name"])
  niceness = "; ".join(f"nice {n}: {len(v)} model{'s' if len(v) > 1 else ''}" for n, v in sorted(by_nice.items(),
                                                                                                 key=str))
  missing = [n for n in constructors() + list(EXTRA_GRAPHS) if n not in {r["name"] for r in rows}]
  lines = [f"Measured (started {data['machine'].get('date_utc', '')} UTC) on {data['machine'].get('device', '?')}, "
           f"TF {data['machine'].get('tensorflow', '?')}, Keras {data['machine'].get('keras', '?')}. Command: "
           "`nice -n 19 python benchmarks/keras_applications.py` (then `--write_readme`). "
           f"**{len(ok)} of {len(rows)} ok**" + (f"; refused: {'; '.join(refused)}." if refused else ".")
           + (f" Not run yet ({len(missing)}; the run resumes where it stopped): {', '.join(missing)}."
              if missing else ""),
           "",
           f"Seconds per model are wall time on a shared 2-core machine (load average "
           f"{min(loads, default=0):.1f}-{max(loads, default=0):.1f} while they ran; total {sum(seconds) / 60:.0f} "
           f"min; niceness per model in the JSON: {niceness}): not a speed figure. No constructor argument was changed: default arguments, `weights=None`, "
           "the smallest input (InceptionResNetV2's CustomScaleLayer is read by an `Op` this script registers, "
           "as a user would: [docs/own_layers.md](../docs/own_layers.md)).", "", _table(rows)]
  return "\n".join(lines)


def write_readme(path):
  with open(path) as f:
    data = json.load(f)
  with open(README) as f:
    text = f.read()
  if START not in text or END not in text:
    raise ValueError(f"{README} has no {START} ... {END} markers; add them where the table goes")
  head, rest = text.split(START, 1)
  _, tail = rest.split(END, 1)
  with open(README, "w") as f:
    f.write(head + START + "\n" + readme_section(data) + "\n" + END + tail)
  print(f"wrote the table of {len(data['models'])} models into {README}")


def main(argv):
  del argv
  if FLAGS.write_readme:
    write_readme(os.path.join(FLAGS.output_dir, NAME + ".json"))
    return
  if FLAGS._child:  # pylint: disable=protected-access
    row = run_model(FLAGS._child)  # pylint: disable=protected-access
    with open(FLAGS._child_out, "w") as f:  # pylint: disable=protected-access
      json.dump(_common.jsonable(row), f)
    return
  names = FLAGS.models or constructors() + list(EXTRA_GRAPHS)
  unknown = sorted(set(names) - set(constructors()) - set(EXTRA_GRAPHS))
  if unknown:
    raise app.UsageError(f"--models={','.join(unknown)}: not keras.applications constructors; choose from "
                         f"{', '.join(constructors() + list(EXTRA_GRAPHS))}")
  report = _common.Report(NAME, FLAGS.output_dir)
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  done = _load(report.path(".json"))
  todo = sorted((n for n in names if FLAGS.rerun or n not in done), key=lambda n: (_SIZE_ORDER.index(n)
                                                                                 if n in _SIZE_ORDER else 99, n))
  spent = []
  for i, name in enumerate(todo):
    out = report.path(f".{name}.tmp")
    cmd = [sys.executable, os.path.abspath(__file__), f"--_child={name}", f"--_child_out={out}"]
    start = time.time()
    try:
      done_run = subprocess.run(cmd, timeout=FLAGS.timeout_s, check=False, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
      if not os.path.exists(out):
        tail = [l for l in done_run.stderr.splitlines() if l.strip()][-1:] or [f"exit code {done_run.returncode}"]
        raise OSError(f"the model's subprocess ended without a result (exit code {done_run.returncode}): {tail[0]}")
      with open(out) as f:
        row = json.load(f)
      os.remove(out)
    except subprocess.TimeoutExpired:
      row = {"name": name, "input_size": SMALLEST_INPUT.get(name, 32), "status": "refused", "stage": "timeout",
             "error": f"stopped after --timeout_s={FLAGS.timeout_s}", "seconds": FLAGS.timeout_s}
    except (OSError, ValueError) as e:   # the subprocess died (e.g. out of memory) before writing its row
      row = {"name": name, "input_size": SMALLEST_INPUT.get(name, 32), "status": "refused", "stage": "crash",
             "error": _one_line(e), "seconds": round(time.time() - start, 1)}
    row["load_average"] = list(os.getloadavg())
    row.setdefault("nice", os.nice(0))   # the niceness the model ran at (inherited by its subprocess)
    done[name] = row
    spent.append(time.time() - start)
    left = (len(todo) - i - 1) * sum(spent) / len(spent)
    print(f"[{i + 1}/{len(todo)}] {name}: {row['status']} ({row['stage']}) in {spent[-1]:.0f} s; about "
          f"{left / 60:.0f} min left", flush=True)
    rows = [done[n] for n in sorted(done)]
    ok = sum(r["status"] == "ok" for r in rows)
    report.write({"models": rows, "ok": ok, "total": len(rows)}, _table(rows),
                 f"keras.applications through the whole path: {ok} of {len(rows)} ok")
  if not todo:
    rows = [done[n] for n in sorted(done)]
    print(_table(rows))


if __name__ == "__main__":
  app.run(main)
