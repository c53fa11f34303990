"""PruningNet: one Keras model that can run every structure of a search space.

Each prunable conv, depthwise conv and dense node of a `SearchSpace` becomes a
weight-generating layer (`tf_metaprune.layers`), followed by a width-aware
batch norm. During training every call samples a fresh random structure *in
the graph* (stochastic structure sampling, MetaPruning Sec. 3.2), so plain
`net.compile(...); net.fit(ds)` trains it, with any Keras callback
(ModelCheckpoint, TensorBoard, BackupAndRestore) and any
`steps_per_execution`.

How a structure is sampled: from `tf.random.stateless_uniform` seeded by
`(seed, optimizer.iterations)`. The structure is therefore a pure function of
the step number: it is reproducible, it resumes exactly after a checkpoint
restore, and it is the same on every replica of a `tf.distribute` strategy:
`optimizer.iterations` is a mirrored variable (one value on every replica of
every worker) and the stateless generator holds no per-replica state, so no
Python-side or per-replica randomness enters a step -- what TPUStrategy needs
too. Create the net under `strategy.scope()`; with several replicas, batch
norm uses the moments of the global batch (`sync_batch_norm`), so training on
R replicas follows the one-device trajectory for the same global batch
(`tf_metaprune.distribute`).

Spaces read from a Keras model (`SearchSpace.from_keras_model`) run the same
way: their parameter-free layers (activations, pooling, padding, dropout --
run as identity) are the user's own Keras layers, their batch norms are
width-aware, and a tensor concatenated from pruned branches carries the
index of its kept channels so the next layer takes the matching kernel rows.

Widths travel as int32 tensors, so a single trace serves every structure
(Python-int widths would retrace every step), and kernels are sliced to the
sampled widths, so a narrow structure costs narrow compute.

Example:

  >>> space = tf_metaprune.models.small_cnn((28, 28, 1), 10)
  >>> net = tf_metaprune.PruningNet(space)
  >>> net.compile(optimizer="adam",
  ...             loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
  ...             metrics=["accuracy"])
  >>> net.fit(train_ds, epochs=1)                                  # doctest: +SKIP
  >>> s = space.uniform(0.5)
  >>> net.recalibrate(s, search_ds)                                # doctest: +SKIP
  >>> logits = net.call_structure(images, s)                       # doctest: +SKIP
"""

import keras
import numpy as np
import tensorflow as tf

from tf_metaprune import calibration
from tf_metaprune import layers as tfmp_layers
from tf_metaprune import ops
from tf_metaprune import space as space_lib


@keras.saving.register_keras_serializable(package="tf_metaprune")
class PruningNet(keras.Model):
  """A weight-generating network over a `SearchSpace` (MetaPruning's PruningNet).

  Args:
    space: the `SearchSpace` (or its `get_config()` dict).
    hidden_units: hidden size of every generator (default 8: about 8x the
      network's weights in generators, where the paper's 32 holds about 32x;
      the ablation in benchmarks/README.md ranks structures alike with both).
      0 disables the hypernetworks: plain weight sharing of the leading channels.
    bn_mode: "shared" (one gamma/beta sliced to the width; the default) or
      "switchable" (one gamma/beta per width choice, the paper's). Measured on
      the MNIST subset (small CNN, 8 epochs, 2 seeds, 12 structures):
      shared 86.7% +- 1.3 vs switchable 82.5% +- 0.3 mean recalibrated
      accuracy -- each switchable row only trains when its width is drawn
      (`python benchmarks/bn_mode.py`).
    bn_affine: learn gamma/beta at all (the reference uses non-affine BN for
      ResNet and MobileNetV2).
    seed: seeds structure sampling (see the module docstring).
    sampling: "random" -- one uniformly random structure per step, as in
      MetaPruning -- or "sandwich" -- the largest, the smallest and random
      structures in every step, gradients averaged (AutoSlim / US-Nets'
      sandwich rule). Measured on the MNIST subset: MobileNets barely learn
      in a few epochs with "random" (which needs the long schedules of the
      paper); "sandwich" learns them, at about `structures_per_step` times
      the cost of a step.
    structures_per_step: structures per step for "sandwich" (>= 2).
    distill: with "sandwich", the non-largest structures learn from the
      largest one's predictions (in-place distillation).
    sync_batch_norm: under a `tf.distribute` strategy with several replicas,
      training-mode batch norm uses the moments of the global batch (summed
      across replicas), as one device would; False = each replica's own batch
      (cheaper on many replicas, but then the replica count changes the
      results). No effect on one device.
    **kwargs: passed to `keras.Model` (e.g. `name`).

  Calling the model:
    * `net(x, training=True)` (what `fit` does): a random structure, batch
      statistics in batch norm.
    * `net(x)` / `net(x, training=False)` (what `evaluate`/`predict` do): the
      full-width structure with *batch* statistics, because the moving
      statistics hold whichever structure was recalibrated last.
    * `net.call_structure(x, s)`: structure `s` with its recalibrated statistics.
  """

  def __init__(self, space, hidden_units=8, bn_mode="shared", bn_affine=True, seed=0, sampling="random",
               structures_per_step=4, distill=True, sync_batch_norm=True, **kwargs):
    super().__init__(**kwargs)
    if sampling not in ("random", "sandwich"):
      raise ValueError(f"sampling={sampling!r} must be 'random' (MetaPruning: one random structure per step) "
                       "or 'sandwich' (largest + smallest + random ones per step, AutoSlim)")
    if sampling == "sandwich" and int(structures_per_step) < 2:
      raise ValueError(f"structures_per_step={structures_per_step!r} must be >= 2 for the sandwich rule "
                       "(the largest and the smallest structure, plus random ones)")
    self.sampling = sampling
    if isinstance(space, dict):
      space = space_lib.SearchSpace.from_config(space)
    if sampling == "sandwich" and distill and isinstance(space, space_lib.SearchSpace) and len(space.outputs) > 1:
      raise ValueError(f"sampling='sandwich' with distill=True distills one softmax output, but space "
                       f"{space.name!r} has {len(space.outputs)} outputs {list(space.outputs)}; pass distill=False "
                       "(each structure then learns from your losses)")
    self.structures_per_step = int(structures_per_step)
    self.distill = bool(distill)
    self.sync_batch_norm = bool(sync_batch_norm)
    if isinstance(space, dict):
      space = space_lib.SearchSpace.from_config(space)
    if not isinstance(space, space_lib.SearchSpace):
      raise TypeError(f"PruningNet(space=...) needs a tf_metaprune.SearchSpace, got {type(space).__name__}; "
                      "make one with tf_metaprune.models.<family>(input_shape, num_classes)")
    self.space = space
    self.hidden_units = int(hidden_units)
    if self.hidden_units < 0:
      raise ValueError(f"hidden_units={hidden_units!r} must be >= 0 (0 = plain weight sharing)")
    self.bn_mode = bn_mode
    self.bn_affine = bool(bn_affine)
    self.seed = int(seed)
    self._build_layers()
    self._num_genes = len(space.genes)
    max_c = max(g.num_choices for g in space.genes)
    table = np.ones((self._num_genes, max_c), np.int32)
    for i, g in enumerate(space.genes):
      table[i, :g.num_choices] = g.channels
      table[i, g.num_choices:] = g.channels[-1]
    self._channel_table = table
    self._num_choices = np.array(space.num_choices, np.int32)
    n_ext = self._num_genes + len(space.fixed_widths)
    self._max_ext = np.array([g.base_channels for g in space.genes] + list(space.fixed_widths), np.float32)
    assert self._max_ext.shape[0] == n_ext
    # Layouts (widths concatenated on the channel axis) as count rows over the extended vector.
    counts = np.zeros((len(self._layouts), n_ext), np.int32)
    for li, lay in enumerate(self._layouts):
      for i in lay:
        counts[li, i] += 1
    self._layout_counts = counts
    self._layout_max = (counts.astype(np.float32) @ self._max_ext).astype(np.float32)
    self._infer_fn = None
    self.moments_fn = None
    self.built = True

  # ---- construction ------------------------------------------------------------------------
  def _build_layers(self):
    sp = self.space
    self.generator_layers, self.bn_layers, self.layer_of, self.bn_of, self.depthwise_of = [], [], {}, {}, {}
    self._layouts, self._layout_id = [], {}
    self._enc_rows = []  # per generator layer: layout ids of (input, output)
    self.op_layers, self.node_activations = {}, {}
    for node in sp.layer_nodes:
      ops.get(node.op).build_pruning(self, node)  # generators, width batch norms, parameter-free layers
    # Per generator layer: layout ids of (input width, output width); per BN layer: the gene
    # of its width (num_genes = the constant choice 0 of fixed or concatenated widths).
    self.encoding_index = np.array(self._enc_rows, np.int32).reshape(-1, 2)
    self._width_index = self.encoding_index[:, 1].copy()
    bn_nodes = sorted(self.bn_of, key=self.bn_of.get)
    self._bn_gene = [len(sp.genes) if sp.gene_of(n) is None else sp.gene_of(n) for n in bn_nodes]
    # Layouts that concatenate several widths need an index of their channels in the full layout.
    self._multi_layouts = {lay for lay in (sp.layout_indices(n.name) for n in sp.nodes) if len(lay) > 1}

  # ---- the hooks the ops build and call the net through (tf_metaprune.ops) ----------------------
  # `layer_of` / `depthwise_of` / `bn_of`: node name -> index in `generator_layers` / `bn_layers`;
  # `encoding_index`: per generator layer, the layout ids its encoding reads; `op_layers`: node name ->
  # its parameter-free Keras layer; `node_activations`: node name -> the activation of a layer read
  # from Keras.
  def _layout_number(self, name):
    lay = self.space.layout_indices(name)
    if lay not in self._layout_id:
      self._layout_id[lay] = len(self._layouts)
      self._layouts.append(lay)
    return self._layout_id[lay]

  def layout_rows(self, node):
    """Layout ids of (input, output) of a node with weights (registers them)."""
    return (self._layout_number(node.inputs[0]), self._layout_number(node.name))

  def add_generator(self, layer, key, table, rows):
    """Adds generator `layer` as `table[key]` (`layer_of` or `depthwise_of`), encoded by layout `rows`."""
    layer.build()
    table[key] = len(self.generator_layers)
    self.generator_layers.append(layer)
    self._enc_rows.append(rows)

  def add_width_bn(self, node, affine, epsilon, name):
    """Adds the width-switchable batch norm of `node` (`bn_of[node.name]`)."""
    g = self.space.gene_of(node.name)
    bn = tfmp_layers.WidthBatchNorm(self.space.max_channels(node.name),
                                    self.space.genes[g].num_choices if g is not None else 1,
                                    mode=self.bn_mode, affine=affine, epsilon=epsilon, name=name)
    bn.build()
    self.bn_of[node.name] = len(self.bn_layers)
    self.bn_layers.append(bn)

  def get_config(self):
    config = super().get_config()
    config.update(space=self.space.get_config(), hidden_units=self.hidden_units, bn_mode=self.bn_mode,
                  bn_affine=self.bn_affine, seed=self.seed, sampling=self.sampling,
                  structures_per_step=self.structures_per_step, distill=self.distill,
                  sync_batch_norm=self.sync_batch_norm)
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    space = space_lib.SearchSpace.from_config(config.pop("space"))
    return cls(space, **config)

  def build(self, input_shape=None):
    self.built = True

  # ---- sizes ---------------------------------------------------------------------------------
  def generator_params(self) -> int:
    """Weights of all hypernetworks (the part weight sharing would not have)."""
    return sum(l.generator_params() for l in self.generator_layers)

  # ---- structures as tensors ---------------------------------------------------------------
  def choices_tensor(self, structure):
    """int32 [num_genes] tensor of a `Structure` (validated against the space)."""
    return tf.constant(self.space.validate(structure).choices, tf.int32)

  def sample_choices(self, step):
    """A uniform random structure (int32 [num_genes]) as a pure function of `step`."""
    seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
    u = tf.random.stateless_uniform([self._num_genes], seed=seed, dtype=tf.float32)
    n = tf.constant(self._num_choices)
    return tf.minimum(tf.cast(tf.floor(u * tf.cast(n, tf.float32)), tf.int32), n - 1)

  def _ext_channels(self, choices):
    idx = tf.stack([tf.range(self._num_genes, dtype=tf.int32), choices], axis=1)
    genes = tf.gather_nd(tf.constant(self._channel_table), idx)
    return tf.concat([genes, tf.constant(np.array(self.space.fixed_widths, np.int32))], axis=0)

  # ---- the forward pass --------------------------------------------------------------------
  # No tensor-dependent Python control flow here: skipping AutoGraph's conversion of this
  # (and the layers' call) cuts tracing time several-fold for deep spaces.
  @tf.autograph.experimental.do_not_convert
  def forward(self, x, choices, batch_stats=True, bn_stats=None, return_moments=False, sync_batch_stats=False):
    """Runs structure `choices` (int32 [num_genes] tensor) on `x`.

    Args:
      x: images [B, H, W, C].
      choices: int32 [num_genes] tensor.
      batch_stats: normalize with batch statistics (True) or with the BN
        layers' moving statistics (False).
      bn_stats: optional list of (mean, variance) per batch-norm layer, padded
        to full width, overriding both (used by candidate evaluation).
      return_moments: also return each BN layer's batch (mean, E[x^2]).
      sync_batch_stats: with `batch_stats` under a strategy with several
        replicas, normalize with the global batch's moments (all-reduced).

    Returns:
      logits (a list, one per output, for a space of several outputs), or
      (logits, moments) if `return_moments`.
    """
    sp = self.space
    x = tf.convert_to_tensor(x)
    if x.dtype != tf.float32:
      x = tf.cast(x, tf.float32)
    ext = self._ext_channels(choices)
    layout_widths = tf.reduce_sum(tf.constant(self._layout_counts) * ext[None, :], axis=1)
    ratio = tf.cast(layout_widths, tf.float32) / tf.constant(self._layout_max)
    # Everything a node needs from the structure, gathered once (few ops to trace).
    encodings = tf.unstack(tf.gather(ratio, tf.constant(self.encoding_index)), num=len(self.encoding_index))
    widths = tf.unstack(tf.gather(layout_widths, tf.constant(self._width_index)), num=len(self._width_index))
    bn_choices = tf.unstack(tf.gather(tf.concat([choices, [0]], 0), tf.constant(self._bn_gene)),
                            num=len(self._bn_gene)) if self._bn_gene else []
    index_of = {lay: _layout_channel_index(ext, lay, self._max_ext) for lay in self._multi_layouts}
    values, moments = {}, []

    def batch_norm(y, name, in_index=None):
      bi = self.bn_of[name]
      stats = None if bn_stats is None else bn_stats[bi]
      y = self.bn_layers[bi](y, choice=bn_choices[bi], training=batch_stats and stats is None, stats=stats,
                             return_moments=return_moments, in_index=in_index, synchronized=sync_batch_stats)
      if return_moments:
        y, m = y
        moments.append(m)
      return y

    call = _Call(encodings, widths, batch_norm)
    for node in sp.nodes:
      if node.is_input:
        values[node.name] = x
        continue
      call.in_index = index_of.get(sp.layout_indices(node.inputs[0])) if self._multi_layouts else None
      values[node.name] = ops.get(node.op).pruning_call(self, node, [values[i] for i in node.inputs], call)
    logits = values[sp.outputs[0]] if len(sp.outputs) == 1 else [values[o] for o in sp.outputs]
    return (logits, moments) if return_moments else logits

  def call(self, inputs, training=None):
    if training:
      opt = getattr(self, "optimizer", None)
      if opt is not None:
        choices = self.sample_choices(opt.iterations)
      else:
        choices = self.sample_choices(tf.random.uniform([], 0, 2**31 - 1, dtype=tf.int64))
    else:
      choices = tf.constant(np.array(self.space.largest().choices, np.int32))
    return self.forward(inputs, choices, batch_stats=True, sync_batch_stats=self.sync_batch_norm)

  def train_step(self, data):
    """One optimizer step; with `sampling="sandwich"`, over several structures.

    "random": Keras' own step, whose forward pass (`call(training=True)`)
    samples one structure. "sandwich": the largest, the smallest and
    `structures_per_step - 2` random structures all see the batch and their
    gradients are averaged into one update; with `distill`, all but the
    largest learn from the largest's (stop-gradient) soft predictions
    (in-place distillation). The structures loop in a `tf.while_loop`, so the
    graph holds one forward/backward pass whatever their number -- except
    with synchronized batch norm on several replicas, where the loop is
    unrolled (MirroredStrategy's cross-replica sums cannot run inside a
    while loop). Losses are scaled by 1/replicas like Keras' own step.
    """
    if self.sampling == "random":
      return super().train_step(data)
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    variables = self.trainable_variables
    step = tf.cast(self.optimizer.iterations, tf.int64)
    n = self.structures_per_step
    largest = tf.constant(np.array(self.space.largest().choices, np.int32))
    smallest = tf.constant(np.array(self.space.smallest().choices, np.int32))
    randoms = [self.sample_choices(step * n + i) for i in range(n - 2)]
    structures = tf.stack([largest, smallest] + randoms)

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    sync = self.sync_batch_norm and replicas > 1

    def dense_grads(grads):
      return [tf.zeros_like(v) if g is None else tf.reshape(tf.convert_to_tensor(g), v.shape)
              for g, v in zip(grads, variables)]

    with tf.GradientTape() as tape:
      logits_full = self.forward(x, largest, batch_stats=True, sync_batch_stats=sync)
      loss = self.compute_loss(x=x, y=y, y_pred=logits_full, sample_weight=sample_weight, training=True)
      scaled = self.optimizer.scale_loss(loss)
    grads = dense_grads(tape.gradient(scaled, variables))
    teacher = tf.stop_gradient(tf.nn.softmax(logits_full))

    def body(i, acc):
      with tf.GradientTape() as inner:
        logits = self.forward(x, tf.gather(structures, i), batch_stats=True, sync_batch_stats=sync)
        if self.distill:
          # Keras scales its own losses by 1/replicas (gradients are summed across replicas).
          sub_loss = tf.reduce_mean(keras.losses.categorical_crossentropy(teacher, logits, from_logits=True))
          sub_loss = sub_loss / tf.cast(replicas, sub_loss.dtype)
        else:
          sub_loss = self.compute_loss(x=x, y=y, y_pred=logits, sample_weight=sample_weight, training=True)
        sub_scaled = self.optimizer.scale_loss(sub_loss)
      g = dense_grads(inner.gradient(sub_scaled, variables))
      return i + 1, [a + b for a, b in zip(acc, g)]

    if sync:
      for i in range(1, n):
        _, grads = body(tf.constant(i), grads)
    else:
      _, grads = tf.while_loop(lambda i, _: i < n, body, [tf.constant(1), grads])
    self.optimizer.apply_gradients(zip([g / n for g in grads], variables))
    # Keras' loss tracker (private in Keras 3.15) reports the largest structure's loss.
    tracker = getattr(self, "_loss_tracker", None)
    if tracker is not None:
      tracker.update_state(loss * tf.cast(replicas, loss.dtype), sample_weight=tf.shape(x)[0])
    return self.compute_metrics(x, y, logits_full, sample_weight=sample_weight)

  def compute_output_spec(self, inputs, training=None):
    specs = [keras.KerasTensor((inputs.shape[0],) + self.space.output_shape(o), dtype="float32")
             for o in self.space.outputs]
    return specs[0] if len(specs) == 1 else specs

  # ---- one structure -----------------------------------------------------------------------
  def call_structure(self, x, structure, training=False):
    """Logits of `structure` on `x`, with its generated weights.

    In inference mode (default) batch norm uses the moving statistics, so call
    `recalibrate(structure, data)` first; with `training=True` it uses batch
    statistics. Traced once for all structures.
    """
    choices = self.choices_tensor(structure)
    if training:
      return self.forward(x, choices, batch_stats=True)
    if self._infer_fn is None:
      spec = tf.TensorSpec([None] + list(self.space.input_shape), tf.float32)
      self._infer_fn = tf.function(
          lambda images, ch: self.forward(images, ch, batch_stats=False),
          input_signature=[spec, tf.TensorSpec([self._num_genes], tf.int32)], reduce_retracing=True)
    return self._infer_fn(tf.cast(x, tf.float32), choices)

  def recalibrate(self, structure, data, num_batches=None):
    """Sets batch-norm statistics to those of `structure` (exact average over batches).

    Args:
      structure: the structure.
      data: a `tf.data.Dataset` of images or (images, labels), or a tensor/array
        of images [N, H, W, C].
      num_batches: how many batches of `data` to use (default: all).

    Returns:
      The number of images used.
    """
    return calibration.recalibrate(self, structure, data, num_batches=num_batches)

  def generated_weights(self, structure):
    """The weights `structure` runs with, sliced to its widths, as numpy arrays.

    Returns:
      dict node name -> dict with "kernel" (and "bias" for dense), and for
      nodes followed by batch norm "gamma", "beta", "moving_mean",
      "moving_variance" (gamma=1, beta=0 when BN is not affine).
    """
    sp = self.space
    s = sp.validate(structure)
    choices = self.choices_tensor(s)
    ext = self._ext_channels(choices).numpy()
    layout_widths = self._layout_counts @ ext
    layout_ratio = layout_widths.astype(np.float32) / self._layout_max

    def index(name):  # the full-layout channels of a node's output, or None for the leading ones
      lay = sp.layout_indices(name)
      if len(lay) == 1:
        return None
      return _layout_channel_index(tf.constant(ext.astype(np.int32)), lay, self._max_ext).numpy()

    out = {}
    for node in sp.layer_nodes:
      gen = _Generated(sp, s, layout_ratio, index, cin=int(sum(ext[i] for i in sp.layout_indices(node.inputs[0]))),
                       cout=int(sum(ext[i] for i in sp.layout_indices(node.name))))
      w = ops.get(node.op).generated_weights(self, node, gen)
      if w is not None:
        out[node.name] = w
    return out


class _Call:
  """What an op's `pruning_call` reads of the structure being run (see `PruningNet.forward`)."""

  def __init__(self, encodings, widths, batch_norm):
    self.encodings, self.widths, self.batch_norm = encodings, widths, batch_norm
    self.in_index = None  # int32 [c]: full-layout channels of a concatenated input, else None


class _Generated:
  """What an op's `generated_weights` reads of the structure (see `PruningNet.generated_weights`)."""

  def __init__(self, space, structure, layout_ratio, index, cin, cout):
    self.space, self.structure, self.layout_ratio, self.index = space, structure, layout_ratio, index
    self.cin, self.cout = cin, cout


def _layout_channel_index(ext, layout, max_ext):
  """int32 [width]: positions, in the full-width layout, of the channels a concatenation keeps.

  Each concatenated width keeps its leading channels, so the kept channels of
  segment j sit at `offset_j + range(width_j)` where offset_j is the full
  width of the segments before it.
  """
  parts, offset = [], 0
  for i in layout:
    parts.append(tf.range(ext[i], dtype=tf.int32) + offset)
    offset += int(max_ext[i])
  return tf.concat(parts, axis=0)
