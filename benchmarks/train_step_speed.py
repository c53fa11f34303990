"""PruningNet training step vs the full-width plain Keras model, side by side.

For each family, builds the PruningNet and the plain rebuilt full-width model,
trains both through `model.fit` on the same batches (same batch size, input,
optimizer), alternating short timed rounds so machine load hits both alike,
and reports milliseconds per step, their ratio, the generator parameter count
as a multiple of the network's, and how many times each training step was
traced. Writes benchmarks/results/train_step_speed.json and .png.

  python benchmarks/train_step_speed.py [--families=small_cnn,mobilenet_v2,resnet20] [--rounds=3]
"""

import json
import os
import platform
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_list("families", ["small_cnn", "mobilenet_v2", "resnet20"], "Families to measure.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("steps", 8, "Steps per timed round.")
flags.DEFINE_integer("rounds", 3, "Alternating timed rounds per model.")
flags.DEFINE_integer("hidden_units", 32, "PruningNet generator hidden size.")
flags.DEFINE_float("width_multiplier", 0.35, "Width multiplier of mobilenet_v2.")
flags.DEFINE_string("output_dir", os.path.join(os.path.dirname(__file__), "results"), "Where results go.")


def main(argv):
  del argv
  import keras  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top

  images, labels = tfmp.data.mnist_subset_arrays()
  n = FLAGS.batch_size * FLAGS.steps
  x = images[:n].astype(np.float32) / 255.0
  y = labels[:n]
  ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(FLAGS.batch_size, drop_remainder=True).cache()
  rows = []
  for family in FLAGS.families:
    kwargs = {"width_multiplier": FLAGS.width_multiplier} if family.startswith("mobilenet") else {}
    space = tfmp.models.get(family)((28, 28, 1), 10, **kwargs)
    keras.utils.set_random_seed(0)
    net = tfmp.PruningNet(space, hidden_units=FLAGS.hidden_units)
    traced = []
    forward = net.forward

    def counting_forward(*args, _forward=forward, _traced=traced, **kwargs):  # runs only while tracing
      _traced.append(1)
      return _forward(*args, **kwargs)

    net.forward = counting_forward
    models = {"pruning_net": net, "plain_full_width": tfmp.rebuild(space, space.largest())}
    for m in models.values():
      tfmp.training.compile_model(m, learning_rate=0.05, total_steps=10_000)
      m.fit(ds, epochs=1, verbose=0)   # trace + warm up
    times = {k: [] for k in models}
    for _ in range(FLAGS.rounds):
      for name, m in models.items():
        start = time.perf_counter()
        m.fit(ds, epochs=1, verbose=0)
        times[name].append((time.perf_counter() - start) / FLAGS.steps * 1000)
    traces = {"pruning_net_forward_traces": len(traced),
              "structures_trained": FLAGS.steps * (FLAGS.rounds + 1)}
    row = {"family": family, "space_kwargs": kwargs, "batch_size": FLAGS.batch_size,
           "pruning_net_ms_per_step": float(np.median(times["pruning_net"])),
           "plain_ms_per_step": float(np.median(times["plain_full_width"])),
           "generator_params": net.generator_params(), "network_params": space.params(space.largest()),
           "traces": traces, "steps_timed": FLAGS.steps * FLAGS.rounds}
    row["ratio"] = row["pruning_net_ms_per_step"] / row["plain_ms_per_step"]
    row["generator_multiple"] = row["generator_params"] / row["network_params"]
    rows.append(row)
    print(f"{family:<13} PruningNet {row['pruning_net_ms_per_step']:7.1f} ms/step  plain {row['plain_ms_per_step']:7.1f}"
          f" ms/step  ratio {row['ratio']:.2f}  generators {row['generator_multiple']:.1f}x network  "
          f"traces {traces}")
  load = os.getloadavg()
  out = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
         f"load average {load[0]:.1f}", "hidden_units": FLAGS.hidden_units, "rows": rows,
         "command": "python benchmarks/train_step_speed.py --families=" + ",".join(FLAGS.families)}
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  with open(os.path.join(FLAGS.output_dir, "train_step_speed.json"), "w") as f:
    json.dump(out, f, indent=1)
  plt.bar([r["family"] for r in rows], [r["ratio"] for r in rows])
  plt.axhline(1.0, color="k", lw=0.5)
  plt.ylabel("PruningNet step / plain full-width step")
  plt.title(f"Training step time ratio (batch {FLAGS.batch_size}, 28x28x1)")
  plt.savefig(os.path.join(FLAGS.output_dir, "train_step_speed.png"), dpi=100)


if __name__ == "__main__":
  app.run(main)
