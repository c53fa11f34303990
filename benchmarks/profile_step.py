"""Where a PruningNet training step's time goes, beside the plain full-width model's.

For each configuration, builds the PruningNet (a random structure per step,
sampled in the graph) and the plain rebuilt full-width model, compiles both
with the pipeline's recipe (SGD + Nesterov momentum + weight decay), warms them
up, then records `--steps` training steps of each with TensorFlow's profiler
(`tf.profiler.experimental`), reads the trace (`*.xplane.pb`, the XSpace
protobuf shipped with TensorFlow) and files every executed TF op, forward and
backward, under one category:

  convolutions    Conv2D / DepthwiseConv2dNative / their backprops, the
                  classifier MatMul (what the sampled network itself computes)
  generator fwd   the hypernetworks' ops (the `generator` name scope of
                  `tf_metaprune.layers`)
  generator bwd   their gradients
  optimizer       the optimizer update of every variable (`sgd` name scope)
  batch norm      moments, normalization and their gradients (fused or not)
  slicing/shapes  Slice, Pad (the gradient of a slice), Shape, Gather,
                  Concat, Pack, ... (the dynamic-width bookkeeping)
  data input      IteratorGetNext (waiting for the next batch)
  other           activations, adds, loss, metrics, casts

and prints, per configuration, the milliseconds per step of each category
(op time summed over both cores' threads, divided by the steps) and its share.
Shares are of the summed op time; the wall step time (profiler on) is given
beside it.

  python benchmarks/profile_step.py                 # the four configurations of the issue, hidden_units 8
  python benchmarks/profile_step.py --name=profile_step_before   # e.g. on an older checkout
  python benchmarks/profile_step.py --quick         # smoke run (batch 8, 2 steps, small_cnn only)

Writes benchmarks/results/<name>.json and .png (stacked bars, share of the op time).
"""

import collections
import glob
import os
import re
import sys
import tempfile
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
# name -> (family, space kwargs, batch size)
CONFIGS = {
    "small_cnn": ("small_cnn", {}, 128),
    "mobilenet_v2:0.35": ("mobilenet_v2", {"width_multiplier": 0.35}, 128),
    "resnet20": ("resnet20", {}, 128),
    "mobilenet_v2:0.5/stride32/batch32": ("mobilenet_v2", {"width_multiplier": 0.5, "small_input": False}, 32),
    "mobilenet_v2:1.0/stride32/batch32": ("mobilenet_v2", {"width_multiplier": 1.0, "small_input": False}, 32),
}
flags.DEFINE_list("configs", ["small_cnn", "mobilenet_v2:0.35", "resnet20", "mobilenet_v2:0.5/stride32/batch32"],
                  f"Configurations to profile, from: {', '.join(CONFIGS)}.")
flags.DEFINE_string("name", "profile_step", "Result file name (benchmarks/results/<name>.json).")
flags.DEFINE_integer("steps", 6, "Profiled training steps per model.")
flags.DEFINE_integer("hidden_units", 8, "PruningNet generator hidden size (the pipeline's default: 8).")
flags.DEFINE_bool("quick", False, "Smoke run: small_cnn only, batch 8, 2 steps.")
flags.DEFINE_string("output_dir", _common.RESULTS_DIR, "Where results go.")

CATEGORIES = ["convolutions", "generator fwd", "generator bwd", "optimizer", "batch norm", "slicing/shapes",
              "data input", "other"]
_CONV_TYPES = re.compile(r"^(_Fused)?(Conv2D|DepthwiseConv2dNative|MatMul|BatchMatMul)")
_BN = re.compile(r"(^|/)(moments|batchnorm|batch_norm|batch_norm_grad|batch_normalization|[^/]*_bn)(_\d+)?(/|$)")
_BN_TYPES = re.compile(r"^FusedBatchNorm")
_SHAPE_TYPES = {"Slice", "Pad", "PadV2", "Shape", "ShapeN", "StridedSlice", "StridedSliceGrad", "GatherV2",
                "GatherNd", "ConcatV2", "Pack", "Unpack", "Fill", "Range", "ScatterNd", "BroadcastArgs",
                "BroadcastGradientArgs", "Size", "TensorScatterUpdate"}
_OPTIMIZER = re.compile(r"^(sgd|adam|adamw|fused_sgd)(_\d+)?$", re.IGNORECASE)  # Keras' optimizer name scopes
_INPUT_TYPES = {"IteratorGetNext", "IteratorGetNextAsOptional", "OptionalGetValue", "OptionalHasValue"}


def categorize(name, op_type):
  """The category of one executed op, from its full name and type."""
  if op_type in _INPUT_TYPES:
    return "data input"
  parts = name.split("/")
  if any(_OPTIMIZER.match(p) for p in parts) or op_type.startswith("ResourceApply"):
    return "optimizer"
  if "generator" in parts:
    return "generator bwd" if "gradient_tape" in parts else "generator fwd"
  if _BN_TYPES.match(op_type) or _BN.search(name):
    return "batch norm"
  if _CONV_TYPES.match(op_type):
    return "convolutions"
  if op_type in _SHAPE_TYPES:
    return "slicing/shapes"
  return "other"


def read_trace(logdir):
  """Summed duration (ms) and count per (op name, op type) from the newest profile under `logdir`."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
  if not files:
    raise RuntimeError(f"the profiler wrote no *.xplane.pb under {logdir}")
  space = xplane_pb2.XSpace()
  with open(files[-1], "rb") as f:
    space.ParseFromString(f.read())
  ops = collections.defaultdict(lambda: [0.0, 0])
  for plane in space.planes:
    if not plane.name.startswith("/host:CPU"):
      continue
    for line in plane.lines:
      for event in line.events:
        label = plane.event_metadata[event.metadata_id].name
        # TF op events read "<full op name>:<OpType>"; the executor's own events have no such suffix.
        name, sep, op_type = label.rpartition(":")
        if not sep or not op_type or not op_type[0].isupper() or " " in op_type or "::" in label:
          continue
        entry = ops[(name, op_type)]
        entry[0] += event.duration_ps / 1e9
        entry[1] += 1
  return ops


def profile_model(model, ds, steps):
  """Category ms per step of `model.fit` over `ds` (`steps` batches), profiler on."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model.fit(ds, epochs=1, verbose=0)  # trace + warm up
  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    model.fit(ds, epochs=1, verbose=0)
    wall_s = time.perf_counter() - start
    tf.profiler.experimental.stop()
    ops = read_trace(logdir)
  per_cat = {c: 0.0 for c in CATEGORIES}
  for (name, op_type), (ms, _) in ops.items():
    per_cat[categorize(name, op_type)] += ms / steps
  total = sum(per_cat.values())
  by_cat = collections.defaultdict(list)
  for (name, op_type), (ms, _) in ops.items():
    by_cat[categorize(name, op_type)].append((ms / steps, f"{name}:{op_type}"))
  top = [(t, n, c) for c, items in by_cat.items() for t, n in sorted(items, reverse=True)[:8]]  # 8 per category
  by_type = collections.defaultdict(float)
  for (name, op_type), (ms, _) in ops.items():
    by_type[f"{categorize(name, op_type)}: {op_type}"] += ms / steps
  return {"wall_ms_per_step": 1000 * wall_s / steps, "op_ms_per_step": total, "category_ms_per_step": per_cat,
          "category_share": {c: (v / total if total else 0.0) for c, v in per_cat.items()},
          "top_ops": [{"ms_per_step": t, "op": n, "category": c} for t, n, c in top],
          "op_type_ms_per_step": dict(sorted(by_type.items(), key=lambda kv: -kv[1])[:40])}


def main(argv):
  del argv
  import keras  # pylint: disable=g-import-not-at-top
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  configs = ["small_cnn"] if FLAGS.quick else FLAGS.configs
  unknown = [c for c in configs if c not in CONFIGS]
  if unknown:
    raise app.UsageError(f"--configs={','.join(unknown)} unknown; choose from {', '.join(CONFIGS)}")
  steps = 2 if FLAGS.quick else FLAGS.steps
  report = _common.Report(FLAGS.name, FLAGS.output_dir)
  rows = []
  for cname in configs:
    family, kwargs, batch = CONFIGS[cname]
    batch = 8 if FLAGS.quick else batch
    ds = _common.cached_batches(batch, steps)
    space = tfmp.models.get(family)((28, 28, 1), 10, **kwargs)
    keras.utils.set_random_seed(0)
    net = tfmp.PruningNet(space, hidden_units=FLAGS.hidden_units, seed=0)
    plain = tfmp.rebuild(space, space.largest())
    for model_name, model in (("pruning_net", net), ("plain_full_width", plain)):
      tfmp.training.compile_model(model, learning_rate=0.05, total_steps=10_000)
      prof = profile_model(model, ds, steps)
      prof.update(config=cname, model=model_name, batch_size=batch, hidden_units=FLAGS.hidden_units,
                  steps=steps)
      rows.append(prof)
      shares = "  ".join(f"{c} {100 * prof['category_share'][c]:.0f}%" for c in CATEGORIES
                         if prof["category_share"][c] >= 0.005)
      print(f"{cname:<36} {model_name:<17} wall {prof['wall_ms_per_step']:7.1f} ms/step  ops "
            f"{prof['op_ms_per_step']:7.1f} ms/step  {shares}", flush=True)
  headers = ["configuration", "model", "wall ms/step", "op ms/step"] + CATEGORIES
  table = _common.markdown_table(headers, [
      [r["config"], "PruningNet" if r["model"] == "pruning_net" else "plain", f"{r['wall_ms_per_step']:.0f}",
       f"{r['op_ms_per_step']:.0f}"] +
      [f"{r['category_ms_per_step'][c]:.1f} ({100 * r['category_share'][c]:.0f}%)" for c in CATEGORIES]
      for r in rows])
  title = (f"Where a training step's time goes: op time per category, ms/step (share), "
           f"hidden_units {FLAGS.hidden_units}, profiler on")
  report.write({"rows": rows, "categories": CATEGORIES, "hidden_units": FLAGS.hidden_units, "quick": FLAGS.quick},
               table, title)
  plt = _common.pyplot()
  fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4.5))
  labels = [f"{r['config']}\n{'PruningNet' if r['model'] == 'pruning_net' else 'plain'}" for r in rows]
  bottom = [0.0] * len(rows)
  for c in CATEGORIES:
    vals = [100 * r["category_share"][c] for r in rows]
    ax.bar(range(len(rows)), vals, bottom=bottom, label=c)
    bottom = [b + v for b, v in zip(bottom, vals)]
  ax.set_xticks(range(len(rows)))
  ax.set_xticklabels(labels, fontsize=7)
  ax.set_ylabel("share of the step's op time, %")
  ax.legend(fontsize=7)
  ax.set_title(title, fontsize=8)
  report.save_figure(fig)


if __name__ == "__main__":
  app.run(main)
