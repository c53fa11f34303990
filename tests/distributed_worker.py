"""One process of the distributed tests: train a tiny PruningNet, search, report as JSON.

Run by tests/distribute_test.py as a child process -- once with
`--strategy=mirrored` over two logical CPU devices, twice (two workers on
127.0.0.1, `TF_CONFIG` set by the test) with `--strategy=multi_worker` -- and
imported by the test to compute the one-device reference with the same
`run()` in its own process. Everything is tiny (8x8 images, a 4-gene small
CNN, a few steps) so a process spends most of its time importing TensorFlow.

  python tests/distributed_worker.py --strategy=multi_worker --out=/tmp/w0.json \\
      --output_dir=/tmp/run [--die_at_epoch=2] [--search]
"""

import argparse
import json
import os
import sys


def data(seed=0):
  """(train dataset without reshuffling, EvaluationData): identical in every process."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  splits = tfmp.data.synthetic(num_examples=320, input_shape=(8, 8, 1), num_classes=4, batch_size=16, seed=seed)
  xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in splits.train])
  x, y = np.concatenate(xs)[:192], np.concatenate(ys)[:192]
  train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16, drop_remainder=True)   # 12 steps an epoch
  evaluation = tfmp.EvaluationData.from_dataset(splits.search, num_calibration_batches=4,
                                                calibration_dataset=splits.train)
  return train, evaluation


def run(strategy_name="default", output_dir=None, epochs=3, search=False, die_at_epoch=None, sandwich=False):
  """Trains (and searches) under `strategy_name`; returns a JSON-able report.

  With `sandwich`, also reports the losses of 4 sandwich-rule steps (3
  structures a step; its loop is unrolled on several replicas).
  """
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top

  strategy = tfmp.distribute.get_strategy(strategy_name)
  train, evaluation = data()
  space = tfmp.models.small_cnn((8, 8, 1), 4, channels=(4, 8, 8, 8), divisor=1)
  with strategy.scope():
    keras.utils.set_random_seed(0)
    net = tfmp.PruningNet(space, hidden_units=4)

  epochs_run = []   # the epochs this process trained (a resumed run skips the finished ones)

  class Die(keras.callbacks.Callback):
    """Kills this worker (SIGKILL, no cleanup) when `die_at_epoch` begins: a crashed machine."""

    def on_epoch_begin(self, epoch, logs=None):
      epochs_run.append(epoch)
      if die_at_epoch is not None and epoch == die_at_epoch:
        sys.stdout.flush()
        os.kill(os.getpid(), 9)

  report = {"strategy": strategy_name, "replicas": tfmp.distribute.num_replicas(strategy),
            "chief": tfmp.distribute.is_chief(strategy), "task": tfmp.distribute.task_name(strategy)}
  try:
    history = tfmp.training.fit(net, train, epochs=epochs, learning_rate=0.05, output_dir=output_dir, verbose=0,
                                callbacks=[Die()])
  except tfmp.distribute.WorkerLostError as e:
    report["error"] = str(e)
    return report
  report["loss"] = [float(v) for v in history["loss"]]
  report["epochs_run"] = epochs_run
  report["iterations"] = int(net.optimizer.iterations.numpy())
  report["weights"] = [float(np.sum(np.abs(w.numpy()))) for w in net.trainable_weights]

  @tf.function
  def sampled():
    return strategy.run(lambda: net.sample_choices(net.optimizer.iterations))

  report["sampled_per_replica"] = [[int(c) for c in t.numpy()] for t in
                                   strategy.experimental_local_results(sampled())]
  evaluator = tfmp.Evaluator(net, evaluation)
  report["accuracy"] = {name: evaluator.accuracy(s) for name, s in
                        [("largest", space.largest()), ("half", space.uniform(0.5)), ("smallest", space.smallest())]}
  if sandwich:
    with strategy.scope():
      keras.utils.set_random_seed(1)
      slim = tfmp.PruningNet(space, hidden_units=4, sampling="sandwich", structures_per_step=3)
    report["sandwich_loss"] = tfmp.training.fit(slim, train.take(4), epochs=1, verbose=0)["loss"]
  if search:
    state = os.path.join(output_dir, "search_state.json") if output_dir else None
    config = tfmp.EvolutionConfig(population_size=6, top_k=3, num_mutations=3, num_crossovers=3, num_generations=2)
    found = tfmp.search.evolutionary(net, evaluator, None, config, state_path=state, verbose=0)
    report["search"] = [[list(c.choices), c.accuracy] for c in found.top_k]
    report["state_written"] = bool(state and os.path.exists(state))
  return report


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--strategy", default="default", choices=["default", "mirrored", "multi_worker"])
  parser.add_argument("--logical_cpus", type=int, default=0, help="split the CPU into this many logical devices")
  parser.add_argument("--out", required=True)
  parser.add_argument("--output_dir", default=None)
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--die_at_epoch", type=int, default=None)
  parser.add_argument("--sandwich", action="store_true", help="also a few sandwich-rule steps")
  parser.add_argument("--search", action="store_true")
  args = parser.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
  if args.logical_cpus:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    cpu = tf.config.list_physical_devices("CPU")[0]
    # Must run before TensorFlow initializes its devices (hence a child process).
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)
  report = run(args.strategy, args.output_dir, args.epochs, args.search, args.die_at_epoch, args.sandwich)
  with open(args.out, "w") as f:
    json.dump(report, f)
  return 3 if "error" in report else 0


if __name__ == "__main__":
  sys.exit(main())
