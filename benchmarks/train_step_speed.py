"""PruningNet training step vs the full-width plain Keras model, side by side.

For each model, builds the PruningNet (a random structure per step, in the
graph) and the plain rebuilt full-width model, trains both through
`model.fit` on the same cached batches (same batch size, input, optimizer),
alternating timed rounds so machine load hits both alike, and reports
milliseconds per step, their ratio (goal: <= 0.7), the generators' parameter
count as a multiple of the network's, and how often the PruningNet's forward
pass was traced.

Run with `--models=resnet20,resnet56,mobilenet_v2:0.5,mobilenet_v2:1.0
--name=scaling` it shows how the cost grows with the network (issue item 4).

  python benchmarks/train_step_speed.py                       # small_cnn, mobilenet_v2 (0.35), resnet20
  python benchmarks/train_step_speed.py --name=scaling --models=resnet20,resnet56,mobilenet_v2:0.5,mobilenet_v2:1.0
  python benchmarks/train_step_speed.py --hidden_units=8 --name=train_step_speed_h8   # the pipeline's default
  python benchmarks/train_step_speed.py --quick               # a smoke run (tiny batches, 1 round)

Writes benchmarks/results/<name>.json and .png.
"""

import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["small_cnn", "mobilenet_v2:0.35", "resnet20"],
                  "Models as family[:width_multiplier].")
flags.DEFINE_string("name", "train_step_speed", "Result file name (benchmarks/results/<name>.json).")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("steps", 8, "Steps per timed round (one model.fit epoch).")
flags.DEFINE_integer("rounds", 5, "Alternating timed rounds per model (medians; 5 for a loaded machine).")
flags.DEFINE_integer("hidden_units", 32, "PruningNet generator hidden size (paper: 32).")
flags.DEFINE_enum("small_input", "auto", ["auto", "yes", "no"],
                  "MobileNets: keep early strides at 1 for 28x28 images (auto: yes under 96 px; no = stride 32 as in "
                  "make demo, much cheaper).")
flags.DEFINE_enum("sampling", "random", ["random", "sandwich"],
                  "PruningNet sampling: 'random' (MetaPruning, one structure a step) or 'sandwich' (AutoSlim: "
                  "largest + smallest + random ones, --structures_per_step of them).")
flags.DEFINE_integer("structures_per_step", 4, "Structures per step with --sampling=sandwich.")
flags.DEFINE_bool("quick", False, "Smoke run: batch 16, 2 steps, 1 round.")
flags.DEFINE_string("output_dir", _common.RESULTS_DIR, "Where results go.")


def parse_model(text):
  """'mobilenet_v2:0.5' -> ('mobilenet_v2', {'width_multiplier': 0.5})."""
  family, _, width = text.partition(":")
  if not width:
    return family, {}
  try:
    return family, {"width_multiplier": float(width)}
  except ValueError:
    raise ValueError(f"--models entry {text!r}: write family[:width_multiplier], e.g. mobilenet_v2:0.5") from None


def sampled_mflops_fraction(net, num_steps):
  """Mean MFLOPs of the structures steps 0..num_steps-1 train, over the full width's.

  The convolutions of a PruningNet step cost about this fraction of the plain
  full-width step's; it is the floor of the ratio if nothing but the
  convolutions remained. (With "sandwich" the structures of a step are summed.)
  """
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  space = net.space
  full = space.mflops(space.largest())
  if net.sampling == "random":
    per_step = [space.mflops(tfmp.Structure(net.sample_choices(s).numpy())) for s in range(num_steps)]
  else:
    n = net.structures_per_step
    per_step = [full + space.mflops(space.smallest()) +
                sum(space.mflops(tfmp.Structure(net.sample_choices(s * n + i).numpy())) for i in range(n - 2))
                for s in range(num_steps)]
  return sum(per_step) / len(per_step) / full


def step_times(space, ds, steps, rounds, hidden_units, seed=0, sampling="random", structures_per_step=4):
  """PruningNet vs plain full-width training step, interleaved in this process.

  Returns:
    dict with pruning_net_ms_per_step, plain_ms_per_step, ratio, generator
    params and their multiple of the network's params, forward traces.
  """
  import keras  # pylint: disable=g-import-not-at-top
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  net = tfmp.PruningNet(space, hidden_units=hidden_units, seed=seed, sampling=sampling,
                        structures_per_step=structures_per_step)
  traced = []
  forward = net.forward

  def counting_forward(*args, **kwargs):  # Python runs only while tracing
    traced.append(1)
    return forward(*args, **kwargs)

  net.forward = counting_forward
  plain = tfmp.rebuild(space, space.largest())
  models = {"pruning_net": net, "plain_full_width": plain}
  for m in models.values():
    tfmp.training.compile_model(m, learning_rate=0.05, total_steps=10_000)
  times = _common.interleaved({k: (lambda m=m: m.fit(ds, epochs=1, verbose=0)) for k, m in models.items()},
                              rounds=rounds)
  row = {"space": space.name, "batch_size": int(next(iter(ds))[0].shape[0]), "steps_per_round": steps,
         "rounds": rounds, "hidden_units": hidden_units, "sampling": sampling,
         "structures_per_step": structures_per_step if sampling == "sandwich" else 1,
         "pruning_net_ms_per_step": 1000 * times["pruning_net"]["median_s"] / steps,
         "plain_ms_per_step": 1000 * times["plain_full_width"]["median_s"] / steps,
         "pruning_net_round_s": times["pruning_net"]["all_s"], "plain_round_s": times["plain_full_width"]["all_s"],
         "generator_params": int(net.generator_params()), "network_params": int(space.params(space.largest())),
         "network_mflops": float(space.mflops(space.largest())),
         "pruning_net_forward_traces": len(traced), "structures_trained": steps * (rounds + 1)}
  row["ratio"] = row["pruning_net_ms_per_step"] / row["plain_ms_per_step"]
  # Two cross-checks of the median wall ratio on a loaded machine: fastest rounds, and CPU time.
  row["ratio_of_fastest_rounds"] = times["pruning_net"]["min_s"] / times["plain_full_width"]["min_s"]
  row["ratio_cpu_time"] = times["pruning_net"]["median_cpu_s"] / times["plain_full_width"]["median_cpu_s"]
  row["sampled_mflops_fraction"] = sampled_mflops_fraction(net, steps * (rounds + 1))
  row["generator_multiple"] = row["generator_params"] / row["network_params"]
  return row


def main(argv):
  del argv
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  batch, steps, rounds = (16, 2, 1) if FLAGS.quick else (FLAGS.batch_size, FLAGS.steps, FLAGS.rounds)
  report = _common.Report(FLAGS.name, FLAGS.output_dir)
  ds = _common.cached_batches(batch, steps)
  rows = []
  for text in FLAGS.models:
    family, kwargs = parse_model(text)
    if family.startswith("mobilenet") and FLAGS.small_input != "auto":
      kwargs["small_input"] = FLAGS.small_input == "yes"
    space = tfmp.models.get(family)((28, 28, 1), 10, **kwargs)
    row = step_times(space, ds, steps, rounds, FLAGS.hidden_units, sampling=FLAGS.sampling,
                     structures_per_step=FLAGS.structures_per_step)
    label = text + (" stride 32" if kwargs.get("small_input") is False else "")
    row.update({"model": label, "family": family, "space_kwargs": kwargs})
    rows.append(row)
    print(f"{text:<18} PruningNet {row['pruning_net_ms_per_step']:8.1f} ms/step  plain "
          f"{row['plain_ms_per_step']:8.1f} ms/step  ratio {row['ratio']:.2f}  generators "
          f"{row['generator_multiple']:.1f}x network  traces {row['pruning_net_forward_traces']}", flush=True)
  table = _common.markdown_table(
      ["model (28x28x1)", "network params", "MFLOPs", "PruningNet ms/step", "plain full-width ms/step",
       "ratio", "sampled / full MFLOPs", "generator params", "generators / network"],
      [[r["model"], f"{r['network_params']:,}", f"{r['network_mflops']:.1f}", f"{r['pruning_net_ms_per_step']:.0f}",
        f"{r['plain_ms_per_step']:.0f}", f"{r['ratio']:.2f}", f"{r['sampled_mflops_fraction']:.2f}",
        f"{r['generator_params']:,}", f"{r['generator_multiple']:.1f}x"] for r in rows])
  title = ("PruningNet training step vs plain full-width model" if FLAGS.name.startswith("train_step_speed") else
           "How the PruningNet's cost grows with the network") + f" (batch {batch}, hidden_units {FLAGS.hidden_units}"
  title += f", sandwich of {FLAGS.structures_per_step})" if FLAGS.sampling == "sandwich" else ")"
  report.write({"rows": rows, "hidden_units": FLAGS.hidden_units, "quick": FLAGS.quick}, table, title)
  plt = _common.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  labels = [r["model"] for r in rows]
  axes[0].bar(labels, [r["ratio"] for r in rows])
  axes[0].axhline(1.0, color="k", lw=0.5)
  axes[0].axhline(0.7, color="r", lw=0.5, ls="--", label="goal 0.7")
  axes[0].set_ylabel("PruningNet step / plain full-width step")
  axes[0].legend()
  axes[1].bar(labels, [r["generator_multiple"] for r in rows])
  axes[1].set_ylabel("generator params / network params")
  for ax in axes:
    ax.tick_params(axis="x", rotation=20)
  fig.suptitle(title)
  report.save_figure(fig)


if __name__ == "__main__":
  app.run(main)
