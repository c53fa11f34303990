"""Switchable vs shared batch-norm affine parameters in a PruningNet.

Trains the same PruningNet twice on the MNIST subset -- once with one
gamma/beta row per width choice ("switchable", MetaPruning's choice), once
with one gamma/beta sliced to the width ("shared") -- with the same seed,
schedule and structure sequence, then scores the same structures after exact
BN recalibration on the held-out search split. Writes
benchmarks/results/bn_mode.json and bn_mode.png.

  python benchmarks/bn_mode.py [--model=small_cnn] [--epochs=8] [--seeds=2]
"""

import json
import os
import platform
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "small_cnn", "Model family.")
flags.DEFINE_integer("epochs", 8, "Training epochs per run.")
flags.DEFINE_integer("seeds", 2, "Seeds per mode.")
flags.DEFINE_integer("num_structures", 12, "Structures scored per run (full, smallest, uniform, random).")
flags.DEFINE_string("output_dir", os.path.join(os.path.dirname(__file__), "results"), "Where results go.")


def main(argv):
  del argv
  import keras  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top

  splits = tfmp.data.load_dataset("mnist_subset", batch_size=128)
  space = tfmp.models.get(FLAGS.model)(splits.input_shape, splits.num_classes)
  rng = np.random.default_rng(123)
  structures = [space.largest(), space.smallest(), space.uniform(0.5), space.uniform(0.25)]
  structures += [space.random(seed=rng) for _ in range(FLAGS.num_structures - len(structures))]
  rows = []
  for mode in ("switchable", "shared"):
    for seed in range(FLAGS.seeds):
      keras.utils.set_random_seed(seed)
      net = tfmp.PruningNet(space, hidden_units=32, bn_mode=mode, seed=seed)
      start = time.perf_counter()
      hist = tfmp.training.fit(net, splits.train, epochs=FLAGS.epochs, learning_rate=0.1, verbose=0)
      seconds = time.perf_counter() - start
      ev = tfmp.Evaluator(net, tfmp.EvaluationData.from_dataset(splits.search, 4, splits.train))
      accs = [ev.accuracy(s) for s in structures]
      rows.append({"bn_mode": mode, "seed": seed, "train_seconds": seconds, "final_train_loss": hist["loss"][-1],
                   "accuracies": accs, "mean_accuracy": float(np.mean(accs))})
      print(f"{mode:<10} seed {seed}: mean recalibrated accuracy {100 * np.mean(accs):.1f}% over "
            f"{len(structures)} structures, final train loss {hist['loss'][-1]:.3f}, {seconds:.0f} s")
  summary = {}
  for mode in ("switchable", "shared"):
    means = [r["mean_accuracy"] for r in rows if r["bn_mode"] == mode]
    summary[mode] = {"mean": float(np.mean(means)), "std": float(np.std(means))}
  print("\nbn_mode     mean accuracy over structures and seeds")
  for mode, v in summary.items():
    print(f"{mode:<11} {100 * v['mean']:.1f}% +- {100 * v['std']:.1f}")
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores", "model": FLAGS.model, "epochs": FLAGS.epochs,
            "structures": [{"choices": list(s.choices), "mflops": space.mflops(s)} for s in structures],
            "runs": rows, "summary": summary,
            "command": f"python benchmarks/bn_mode.py --model={FLAGS.model} --epochs={FLAGS.epochs} "
                       f"--seeds={FLAGS.seeds}"}
  with open(os.path.join(FLAGS.output_dir, "bn_mode.json"), "w") as f:
    json.dump(result, f, indent=1)
  mflops = [space.mflops(s) for s in structures]
  for mode, marker in (("switchable", "o"), ("shared", "x")):
    acc = np.mean([r["accuracies"] for r in rows if r["bn_mode"] == mode], axis=0)
    plt.scatter(mflops, 100 * acc, marker=marker, label=mode)
  plt.xlabel("MFLOPs (multiply-adds)")
  plt.ylabel("recalibrated search-split accuracy (%)")
  plt.title(f"PruningNet BN affine parameters ({FLAGS.model}, MNIST subset)")
  plt.legend()
  plt.savefig(os.path.join(FLAGS.output_dir, "bn_mode.png"), dpi=100)


if __name__ == "__main__":
  app.run(main)
