"""Why a PruningNet's generators barely change some layers: per-layer diagnosis of the hypernetworks.

The README's "What the hypernetwork does" table (fashion_quality) shows
||generated delta|| / ||base kernel|| near 0 in the `make demo`
MobileNetV2's last stage (stage7, last_conv, logits). This script measures,
for every generator layer of a trained PruningNet, the quantities that can
explain it, over random structures of its space:

* `delta_over_base`: mean ||generated kernel - base kernel|| / ||base kernel||;
* `spread_over_base`: how much the generated kernel *differs between
  structures* (RMS over structures of the delta minus its mean, over
  ||base||): the part that makes a hypernetwork more than weight sharing;
* `alive`: share of hidden units whose ReLU is active for at least one
  structure (a dead unit passes no gradient to its output row: that row
  stays at its zero initialisation);
* `encoding_spread`: SD over structures of the layer's encoding entries
  (a layer whose widths never change sees a constant encoding);
* `grad_rms_base`, `grad_rms_generator_out`: RMS gradients of the task loss
  on the base kernel and on the generator's output kernel, over a few
  training batches under random structures;
* `base_norm`, `generator_out_norm`.

  python benchmarks/generator_deltas.py --net=runs/tight_budgets/mbv2/trained_pn_default_run0.keras \\
      --name=generator_deltas_mbv2_trained
"""

import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("net", None, "A saved PruningNet (.keras).")
flags.DEFINE_string("data_dir", "/usr/share/datasets/fashion-mnist", "Folder of the Fashion-MNIST idx .gz files.")
flags.DEFINE_integer("structures", 64, "Random structures the deltas and activations are measured over.")
flags.DEFINE_integer("grad_batches", 4, "Training batches (128 images, one random structure each) for the gradients.")
flags.DEFINE_string("name", "generator_deltas", "Results: benchmarks/results/<name>.json.")


def measure(net, images, labels, num_structures, grad_batches):
  """Rows of per-layer measurements (see the module docstring)."""
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  space = net.space
  structures = [space.random(i) for i in range(num_structures)]
  rows = []
  enc_of = []
  for s in structures:
    ext = net._ext_channels(tf.constant(s.choices, tf.int32)).numpy()   # pylint: disable=protected-access
    widths = net._layout_counts @ ext   # pylint: disable=protected-access
    enc_of.append((widths.astype(np.float32) / net._layout_max)[net.encoding_index])   # pylint: disable=protected-access
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  grads = {}
  for b in range(grad_batches):
    x, y = images[128 * b:128 * (b + 1)], labels[128 * b:128 * (b + 1)]
    with tf.GradientTape() as tape:
      logits = net.forward(tf.constant(x), net.sample_choices(tf.constant(b, tf.int64)), batch_stats=True)
      loss = loss_fn(y, logits)
    variables = [v for l in net.generator_layers for v in ([l.base_kernel] + ([l.gen_out_kernel] if l.hidden_units
                                                                              else []))]
    for v, g in zip(variables, tape.gradient(loss, variables)):
      g = np.zeros(v.shape) if g is None else np.asarray(tf.convert_to_tensor(g))
      grads.setdefault(id(v), []).append(float(np.sqrt(np.mean(g ** 2))))
  for li, layer in enumerate(net.generator_layers):
    if not layer.hidden_units:
      continue
    size = int(layer.gen_hidden_kernel.shape[0])
    base = np.asarray(layer.base_kernel.numpy())
    encs = np.stack([e[li][-size:] for e in enc_of]).astype(np.float32)
    pre = encs @ layer.gen_hidden_kernel.numpy() + layer.gen_hidden_bias.numpy()
    deltas = np.stack([np.asarray(layer.generated_kernel(e).numpy()) - base for e in encs])
    bn = max(float(np.linalg.norm(base)), 1e-12)
    mean_delta = deltas.mean(axis=0)
    rows.append({
        "layer": layer.name, "encoding_size": size,
        "delta_over_base": float(np.mean([np.linalg.norm(d) for d in deltas]) / bn),
        "spread_over_base": float(np.sqrt(np.mean([np.linalg.norm(d - mean_delta) ** 2 for d in deltas])) / bn),
        "alive": float(np.mean((pre > 0).any(axis=0))),
        "alive_share_of_structures": float(np.mean(pre > 0)),
        "encoding_spread": [float(v) for v in encs.std(axis=0)],
        "grad_rms_base": float(np.mean(grads[id(layer.base_kernel)])),
        "grad_rms_generator_out": float(np.mean(grads[id(layer.gen_out_kernel)])),
        "base_norm": bn, "generator_out_norm": float(np.linalg.norm(layer.gen_out_kernel.numpy()))})
  return rows


def main(argv):
  del argv
  if not FLAGS.net or not os.path.exists(FLAGS.net):
    raise app.UsageError(f"--net={FLAGS.net!r}: give a saved PruningNet (.keras), e.g. one of runs/tight_budgets/")
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tf_metaprune  # pylint: disable=g-import-not-at-top,unused-import  (registers the PruningNet's layers)
  report = _common.Report(FLAGS.name)
  net = keras.saving.load_model(FLAGS.net)
  x = _common.read_idx(os.path.join(FLAGS.data_dir, "train-images-idx3-ubyte.gz"))[:128 * FLAGS.grad_batches]
  y = _common.read_idx(os.path.join(FLAGS.data_dir, "train-labels-idx1-ubyte.gz"))[:128 * FLAGS.grad_batches]
  rows = measure(net, x[..., None].astype(np.float32) / 255.0, y.astype(np.int32), FLAGS.structures,
                 FLAGS.grad_batches)
  table = _common.markdown_table(
      ["layer", "delta / base", "spread / base", "hidden alive", "encoding SD", "grad RMS base", "grad RMS gen. out",
       "||gen. out||"],
      [[r["layer"], f"{r['delta_over_base']:.3f}", f"{r['spread_over_base']:.3f}", f"{r['alive']:.2f}",
        "/".join(f"{v:.2f}" for v in r["encoding_spread"]), f"{r['grad_rms_base']:.2e}",
        f"{r['grad_rms_generator_out']:.2e}", f"{r['generator_out_norm']:.3f}"] for r in rows])
  report.write({"net": FLAGS.net, "rows": rows, "structures": FLAGS.structures}, table,
               f"Generator diagnosis of {os.path.basename(FLAGS.net)} over {FLAGS.structures} random structures")
  print(json.dumps({"layers": len(rows)}))


if __name__ == "__main__":
  app.run(main)
