"""Pruning-as-Search, PaS (Li et al. 2022): differentiable per-channel masks.

The idea: put a learnable per-channel mask after every prunable activation
and train the network and the masks together, with a penalty that pulls the
network's MACs (counted from the *active* channels) to the target. The masks
are hard in the forward pass (`1[w > 0.5]`: a channel is on or off) and
straight-through in the backward pass (the gradient reaches `w` unchanged).
Then the masks are frozen, the network fine-tuned, and the masked channels
removed -- exactly, because a kept channel is multiplied by exactly 1 and a
removed one contributes exactly 0 to the layers that read it.

Here:

* `MaskedNet(space)` is the full-width network of a `SearchSpace` (plain
  Conv2D / DepthwiseConv2D / BatchNormalization / Dense layers) with one
  `ChannelMask` per gene, applied after every conv and depthwise conv that
  produces that gene's channels (residual-tied layers share one mask, so they
  keep the same channels and every add stays aligned). A mask never drops
  below its gene's smallest width choice (its top channels stay on). For a
  space read from a Keras model the layers are the user's own at full width,
  and every layer whose output carries a gene is masked (after batch norm
  and biases too, so a removed channel is exactly 0 wherever it is read; a
  concatenation is masked slice by slice). Each op's part lives in its class
  in `tf_metaprune.ops`.
* Loss = cross-entropy + `alpha * ((MACs(masks) - target) / MACs_full)^2`
  per FLOPs (or params) bound of the budget, with `MACs(masks)` the one
  counter's formula (`flops.SpaceCounter.flops_of_widths`) on the
  straight-through channel counts. Reference: alpha 5.
* After `search_epochs`, each gene's count of active channels is snapped to
  its widest choice not above it (and genes shrink further, the most
  FLOPs-saving first, until the budget holds); the highest mask weights are
  the kept channels. Masks are then frozen (hard 0/1) and the network is
  fine-tuned for `finetune_epochs` with the shared recipe.
* `export(net)` returns the plain Keras model of the found `Structure`
  (`tf_metaprune.rebuild(space, s)` with the kept channels' weights copied):
  its logits equal the masked network's (the tests check it).

Unlike the other searchers PaS trains its own network and returns it
trained: the `SearchResult`'s accuracy is the fine-tuned network's top-1 on
the search split (inference mode), not a PruningNet's recalibrated accuracy.

Example:

  >>> found, model, masked = pruning_as_search(space, splits, FlopsBudget.from_ratio(space, 0.5),  # doctest: +SKIP
  ...                                          PaSConfig(search_epochs=4))
  >>> model.evaluate(...)            # the exported plain model, already trained   # doctest: +SKIP
"""

import dataclasses
import os
import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from tf_metaprune import budgets as budgets_lib
from tf_metaprune import calibration
from tf_metaprune import data as data_lib
from tf_metaprune import flops as flops_lib
from tf_metaprune import io as io_lib
from tf_metaprune import ops
from tf_metaprune.rebuild import rebuild as rebuild_fn
from tf_metaprune import space as space_lib
from tf_metaprune import training as training_lib
from tf_metaprune.search import _common
from tf_metaprune.search import registry
from tf_metaprune.search import result as result_lib

_OPTIMIZERS = ("adam", "sgd")


@registry.register("pas", order=2)
@dataclasses.dataclass(frozen=True)
class PaSConfig(_common.FrozenConfig):
  """Settings of Pruning-as-Search.

  Attributes:
    alpha: weight of the MACs penalty (paper: 5 for ResNet/MobileNet).
    search_epochs: epochs training weights and masks together.
    finetune_epochs: epochs fine-tuning with frozen masks (0: none).
    learning_rate: peak learning rate (cosine decay) of both phases.
    optimizer: "adam" or "sgd" (the shared recipe's).
    mask_learning_rate: step of the masks (plain gradient descent, not the
      network's optimizer): each step moves a gene's mask weights by this much
      in root-mean-square, along their gradient, then clips them to [0, 1].
      Normalizing per gene (not per weight, as Adam would) keeps the
      differences between a gene's channels, which decide which ones go.
    target_margin: the penalty aims at `target_margin` times the budget's
      bound, leaving room for snapping counts to width choices.
    bn_momentum: momentum of the network's batch norm (0.9: short runs).
    seed: seeds the network's initialization (through `keras.utils.set_random_seed`
      in `run`; PaS itself draws nothing at random).

  Example:

    >>> PaSConfig.from_config(PaSConfig(alpha=2.0).get_config()) == PaSConfig(alpha=2.0)
    True
  """
  alpha: float = 5.0
  search_epochs: int = 5
  finetune_epochs: int = 2
  learning_rate: float = 0.003
  optimizer: str = "adam"
  mask_learning_rate: float = 0.02
  target_margin: float = 0.98
  bn_momentum: float = 0.9
  seed: int = 0

  def __post_init__(self):
    own = "PaSConfig"
    object.__setattr__(self, "alpha", _common.check_float(own, "alpha", self.alpha, 0.0, float("inf")))
    object.__setattr__(self, "search_epochs", _common.check_int(own, "search_epochs", self.search_epochs, 1))
    object.__setattr__(self, "finetune_epochs", _common.check_int(own, "finetune_epochs", self.finetune_epochs, 0))
    object.__setattr__(self, "learning_rate", _common.check_float(own, "learning_rate", self.learning_rate, 0.0,
                                                                  float("inf")))
    if self.optimizer not in _OPTIMIZERS:
      raise ValueError(f"PaSConfig(optimizer={self.optimizer!r}): choose one of {_OPTIMIZERS}")
    object.__setattr__(self, "mask_learning_rate", _common.check_float(own, "mask_learning_rate",
                                                                       self.mask_learning_rate, 0.0, 1.0))
    object.__setattr__(self, "target_margin", _common.check_float(own, "target_margin", self.target_margin, 0.0,
                                                                  1.0))
    object.__setattr__(self, "bn_momentum", _common.check_float(own, "bn_momentum", self.bn_momentum, 0.0, 1.0,
                                                                low_open=False))
    object.__setattr__(self, "seed", _common.check_int(own, "seed", self.seed, 0))

  trains_own_network = True   # its masked network, trained per budget

  def run(self, context: _common.SearchContext) -> result_lib.SearchResult:
    """The searcher contract: `pruning_as_search` trains, scores on the search split, exports to `pas/`."""
    keras.utils.set_random_seed(int(context.seed))
    result, _, _ = pruning_as_search(context.space, context.train_split(), context.budget, self,
                                     search_data=context.search_split(), output_dir=context.file("pas"),
                                     verbose=context.keras_verbose)
    return result


@keras.saving.register_keras_serializable(package="tf_metaprune")
class ChannelMask(keras.layers.Layer):
  """A per-channel 0/1 mask: hard forward, straight-through backward (PaS).

  The mask weight `w` (initialized to 1) turns channel
  c on when `w[c] > 0.5`; the top `min_channels` weights are always on, so a
  layer never loses all its channels. In training, the forward pass uses the
  hard mask and the gradient flows to `w` as if the mask were `w`
  (straight-through estimator); otherwise (and once `frozen`) the mask is the
  hard 0/1 vector exactly.

  Args:
    channels: number of channels.
    min_channels: channels that always stay on (>= 1).

  Call args:
    x: [..., channels].
    training: straight-through in training (unless `frozen`).
  """

  def __init__(self, channels, min_channels=1, **kwargs):
    super().__init__(**kwargs)
    self.channels = int(channels)
    self.min_channels = int(min_channels)
    if not 1 <= self.min_channels <= self.channels:
      raise ValueError(f"ChannelMask(channels={channels!r}, min_channels={min_channels!r}): min_channels must "
                       "be in [1, channels]")
    self.frozen = False

  def build(self, input_shape=None):
    self.raw = self.add_weight(name="mask", shape=(self.channels,),
                               initializer="ones")
    self.built = True

  def weights_value(self):
    """The mask weights `w` (a tensor)."""
    return tf.convert_to_tensor(self.raw)

  def hard(self):
    """float32 [channels] of 0/1: which channels are on."""
    w = self.weights_value()
    kth = tf.math.top_k(w, k=self.min_channels).values[-1]
    return tf.cast(tf.logical_or(w > 0.5, w >= kth), w.dtype)

  def soft(self, training=False):
    """The mask the forward pass multiplies by: hard, straight-through in training."""
    h = self.hard()
    if training and not self.frozen:
      w = self.weights_value()
      return w + tf.stop_gradient(h - w)
    return h

  def call(self, x, training=None):
    return x * tf.cast(self.soft(bool(training)), x.dtype)

  def set_kept(self, kept):
    """Sets the mask to exactly the channels `kept` (indices) on, the others off."""
    w = np.zeros(self.channels, np.float32)
    w[np.asarray(kept, np.int64)] = 1.0
    self.raw.assign(w)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update(channels=self.channels, min_channels=self.min_channels)
    return config


@keras.saving.register_keras_serializable(package="tf_metaprune")
class MaskedNet(keras.Model):
  """The full-width network of a `SearchSpace` with one `ChannelMask` per gene (PaS).

  Args:
    space: the `SearchSpace` (or its config dict).
    alpha: weight of the MACs/params penalty in the training loss.
    targets: [(kind, target, full)] with kind "flops" or "params": the
      penalty `alpha * ((count - target) / full)^2` for each (set by `pas`;
      empty: no penalty).
    mask_learning_rate: see `PaSConfig.mask_learning_rate`.
    bn_momentum: batch-norm momentum.
    **kwargs: `keras.Model` arguments.

  Calling it: `net(x, training=...)` runs the masked full-width network;
  `net.structure()` is the structure its current hard masks select (counts
  snapped down to width choices).
  """

  def __init__(self, space, alpha=5.0, targets=(), mask_learning_rate=0.02, bn_momentum=0.9, **kwargs):
    super().__init__(**kwargs)
    if isinstance(space, dict):
      space = space_lib.SearchSpace.from_config(space)
    if not isinstance(space, space_lib.SearchSpace):
      raise TypeError(f"MaskedNet(space=...) needs a tf_metaprune.SearchSpace, got {type(space).__name__}")
    self.space = space
    self.alpha = float(alpha)
    self.targets = [(str(k), float(t), float(f)) for k, t, f in targets]
    for kind, _, _ in self.targets:
      if kind not in ("flops", "params"):
        raise ValueError(f"MaskedNet target kind {kind!r} must be 'flops' or 'params'")
    self.mask_learning_rate = float(mask_learning_rate)
    self.bn_momentum = float(bn_momentum)
    self.counter = flops_lib.SpaceCounter(space)
    self.masks = [ChannelMask(g.base_channels, min_channels=g.channels[0], name=f"{g.name}_mask")
                  for g in space.genes]
    for m in self.masks:
      m.build()
    self.node_layers = []
    self.node_index = {}
    for node in space.layer_nodes:
      ops.get(node.op).build_masked(self, node)  # full-width plain layers (tf_metaprune.ops)
    self._build_layers()

  def _build_layers(self):
    self(tf.zeros((1,) + tuple(self.space.input_shape)))

  def add_node_layers(self, node, layers):
    """Called by the ops' `build_masked`: a node's full-width layers, in call order."""
    self.node_index[node.name] = len(self.node_layers)
    self.node_layers.extend(layers)

  def _mask(self, y, node_name, training):
    """`y` (a node's output) times the masks of the genes in its channel layout (fixed widths: ones)."""
    layout = self.space.layout[node_name]
    if len(layout) == 1:
      return self.masks[layout[0][1]](y, training=training)
    parts = [self.masks[v].soft(bool(training)) if kind == "gene" else tf.ones([v]) for kind, v in layout]
    return y * tf.cast(tf.concat(parts, 0), y.dtype)

  def call(self, inputs, training=None):
    sp = self.space
    values = {}
    mask = lambda y, name: self._mask(y, name, training)  # pylint: disable=unnecessary-lambda-assignment
    for node in sp.nodes:
      if node.is_input:
        values[node.name] = tf.cast(inputs, tf.float32)
        continue
      values[node.name] = ops.get(node.op).masked_call(self, node, [values[i] for i in node.inputs], training,
                                                       mask)
    return values[sp.outputs[0]] if len(sp.outputs) == 1 else [values[o] for o in sp.outputs]

  # ---- the penalty ---------------------------------------------------------------------------
  def active_channels(self, training=False):
    """float32 [num_genes]: channels each mask keeps (straight-through in training)."""
    return tf.stack([tf.reduce_sum(m.soft(training)) for m in self.masks])

  def penalty(self, training=True):
    """`alpha * sum ((count - target) / full)^2` over the targets (a float32 scalar)."""
    if not self.targets or self.alpha == 0.0:
      return tf.constant(0.0)
    ch = self.active_channels(training)
    total = tf.constant(0.0, tf.float64)
    for kind, target, full in self.targets:
      count = self.counter.flops_of_widths(ch) if kind == "flops" else self.counter.params_of_widths(ch)
      total += tf.square((count - target) / full)
    return tf.cast(self.alpha * total, tf.float32)

  def train_step(self, data):
    """One step: the network's optimizer on the weights, per-gene normalized descent on the masks."""
    if self.masks_frozen:
      return super().train_step(data)
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    masks = [m.raw for m in self.masks]
    others = [v for v in self.trainable_variables if not any(v is m for m in masks)]
    with tf.GradientTape() as tape:
      y_pred = self(x, training=True)
      loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
      scaled = self.optimizer.scale_loss(loss)
    grads = tape.gradient(scaled, others + masks)
    self.optimizer.apply_gradients(zip(grads[:len(others)], others))
    for m, g in zip(masks, grads[len(others):]):
      g = tf.convert_to_tensor(g)
      step = self.mask_learning_rate * g / (tf.sqrt(tf.reduce_mean(tf.square(g))) + 1e-12)
      m.assign(tf.clip_by_value(m - step, 0.0, 1.0))
    tracker = getattr(self, "_loss_tracker", None)  # private in Keras 3.15: reports the loss in fit's logs
    if tracker is not None:
      tracker.update_state(loss, sample_weight=tf.shape(x)[0])
    return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
    if training and not self.masks_frozen:
      loss = loss + self.penalty(training=True)
    return loss

  # ---- masks -> structure --------------------------------------------------------------------
  @property
  def masks_frozen(self) -> bool:
    return all(m.frozen for m in self.masks)

  def freeze_masks(self, structure=None):
    """Freezes the masks (hard 0/1, not trained, no penalty), optionally to `structure`.

    With `structure`, each gene keeps exactly its channel count: the channels
    with the highest mask weights (ties: lower index).
    """
    if structure is not None:
      s = self.space.validate(structure)
      for g, m, c in zip(self.space.genes, self.masks, s):
        w = m.weights_value().numpy()
        order = np.lexsort((np.arange(len(w)), -w))
        m.set_kept(np.sort(order[:g.channels[c]]))
    for m in self.masks:
      m.frozen = True
      m.trainable = False

  def kept_channels(self):
    """Per gene, the sorted indices of the channels the hard masks keep."""
    return [np.flatnonzero(m.hard().numpy() > 0.5) for m in self.masks]

  def structure(self, budget=None):
    """The structure of the current masks: each gene's count snapped down to a width choice.

    With `budget`, genes then shrink one choice at a time (the one saving the
    most FLOPs first) until the budget holds.

    Raises:
      ValueError: if the budget cannot be met by shrinking.
    """
    sp = self.space
    choices = []
    for g, kept in zip(sp.genes, self.kept_channels()):
      fits = [i for i, c in enumerate(g.channels) if c <= len(kept)]
      choices.append(fits[-1] if fits else 0)
    s = space_lib.Structure(choices)
    while budget is not None and not budget.is_feasible(sp, s):
      options = []
      for i, c in enumerate(s):
        if c > 0:
          t = list(s.choices)
          t[i] -= 1
          options.append((sp.mflops(space_lib.Structure(t)), i, space_lib.Structure(t)))
      if not options:
        raise ValueError(f"PaS: no structure below the masks' widths meets {budget!r}; a lower bound? "
                         "lower or drop it")
      s = min(options)[2]
    return s

  def get_config(self):
    config = super().get_config()
    config.update(space=self.space.get_config(), alpha=self.alpha, targets=[list(t) for t in self.targets],
                  mask_learning_rate=self.mask_learning_rate, bn_momentum=self.bn_momentum)
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    return cls(config.pop("space"), **config)


def export(net: MaskedNet, name=None, bn_momentum=0.99) -> keras.Model:
  """The plain Keras model of a frozen `MaskedNet`: masked channels removed, weights copied.

  Every conv keeps the input channels its input's mask keeps and the output
  channels its own mask keeps; batch norm and dense layers likewise. Since the
  frozen masks are exactly 0 or 1, the plain model's logits equal the masked
  network's (in inference mode).

  Args:
    net: a `MaskedNet` whose masks keep, per gene, a count that is one of
      the gene's width choices (`freeze_masks(structure)` ensures it).
    name: model name (default "<space>_pas").
    bn_momentum: momentum of the plain model's batch norm (for retraining).

  Returns:
    A new `keras.Model` built by `tf_metaprune.rebuild(space, structure)`.

  Raises:
    ValueError: if some mask keeps a count that is not a width choice.
  """
  sp = net.space
  kept = net.kept_channels()
  counts = {g.name: len(k) for g, k in zip(sp.genes, kept)}
  bad = {g.name: counts[g.name] for g in sp.genes if counts[g.name] not in g.channels}
  if bad:
    raise ValueError(f"masks keep {bad} channels, not width choices of their genes; call "
                     "net.freeze_masks(net.structure(budget)) before exporting")
  s = sp.from_channels(counts)
  model = rebuild_fn(sp, s, copy_weights=False, name=name or f"{sp.name}_pas", bn_momentum=bn_momentum)

  def idx(node_name):  # full-width positions of a node's kept output channels
    parts, offset = [], 0
    for kind, v in sp.layout[node_name]:
      width = sp.genes[v].base_channels if kind == "gene" else v
      parts.append(offset + (kept[v] if kind == "gene" else np.arange(width)))
      offset += width
    return np.concatenate(parts).astype(np.int64)

  for node in sp.layer_nodes:
    ops.get(node.op).masked_export(net, node, model, idx(node.inputs[0]), idx(node.name))
  return model


def _targets(space, budget, margin):
  targets = []
  for leaf in budget.leaves():
    if isinstance(leaf, budgets_lib.FlopsBudget):
      targets.append(("flops", leaf.max_mflops * 1e6 * margin, float(space.mflops(space.largest())) * 1e6))
    elif isinstance(leaf, budgets_lib.ParamsBudget):
      targets.append(("params", leaf.max_params * margin, float(space.params(space.largest()))))
    else:
      raise ValueError(f"PaS pushes counted MACs/params toward the budget and cannot follow {leaf!r}; use a "
                       "FlopsBudget or ParamsBudget (or the 'rl' searcher with a Lagrangian penalty, or "
                       "'evolutionary', for latency)")
  return targets


def _split(data, which):
  if isinstance(data, data_lib.DatasetSplits):
    return getattr(data, which)
  if isinstance(data, tf.data.Dataset):
    return data
  raise TypeError(f"pas: {which} data must be a DatasetSplits or a batched tf.data.Dataset of (images, labels), "
                  f"got {type(data).__name__}")


def accuracy(model, dataset) -> float:
  """Top-1 accuracy of `model(x, training=False)` over a batched dataset of (images, labels)."""
  if isinstance(dataset, calibration.EvaluationData):
    hit = n = 0.0
    for x, y, m in zip(dataset.eval_images, dataset.eval_labels, dataset.eval_mask):
      pred = np.argmax(model(x, training=False).numpy(), -1)
      hit += float(((pred == y) * m).sum())
      n += float(m.sum())
    return hit / n
  hit = n = 0
  for x, y in dataset:
    pred = np.argmax(model(x, training=False).numpy(), -1)
    y = np.asarray(y).reshape(-1)
    hit += int((pred == y).sum())
    n += len(y)
  if not n:
    raise ValueError("the evaluation dataset is empty")
  return hit / n


def pruning_as_search(space, train_data, budget, config: Optional[PaSConfig] = None, *, search_data=None,
                      output_dir=None, verbose=0, **overrides):
  """Pruning-as-Search: trains a masked network under a MACs penalty, freezes, fine-tunes, exports.

  Args:
    space: the `SearchSpace`.
    train_data: the training split (a `DatasetSplits` -- then `.train` is
      trained on and `.search` scored -- or a batched dataset).
    budget: a `FlopsBudget` / `ParamsBudget` (or `AllOf` of them).
    config: a `PaSConfig`.
    search_data: the held-out split the result is scored on (default:
      `train_data.search` for a `DatasetSplits`); a dataset or `EvaluationData`.
    output_dir: keeps `masked_search.weights.h5` (after the search phase),
      `masked_final.weights.h5` and `model.keras` (the exported plain model),
      plus each phase's training backup; a rerun skips finished phases.
      `identity.json` records space, budget and config: a rerun with others
      is a ValueError.
    verbose: Keras verbosity.
    **overrides: `PaSConfig` fields.

  Returns:
    (`SearchResult`, plain `keras.Model`, `MaskedNet`): the result (method
    "pas"; its candidates are the full-width start, the snapped structure
    after the search phase and the same after fine-tuning, the best; its
    `history` has one row per search epoch -- "mask_channels",
    "mask_mflops" (of the hard masks) and "loss" -- then one summary row in
    the common format),
    the exported fine-tuned plain model, and the frozen masked network it
    was exported from.

  Raises:
    ValueError: for a budget PaS cannot count (latency), one below the
      smallest structure, or a bad config.
  """
  config = _common.resolve_config(PaSConfig, config, overrides, "pruning_as_search")
  budget = _common.check_budget(budget, space)
  if budget is None:
    raise ValueError("pruning_as_search(budget=None): PaS needs a FlopsBudget or ParamsBudget to prune toward")
  targets = _targets(space, budget, config.target_margin)
  train = _split(train_data, "train")
  if search_data is None:
    search_data = _split(train_data, "search")
  elif isinstance(search_data, calibration.Evaluator):
    search_data = search_data.data
  elif isinstance(search_data, data_lib.DatasetSplits):
    search_data = search_data.search
  t0 = time.perf_counter()
  net = MaskedNet(space, alpha=config.alpha, targets=targets, mask_learning_rate=config.mask_learning_rate,
                  bn_momentum=config.bn_momentum, name=f"{space.name}_masked")
  path = (lambda f: None) if output_dir is None else (lambda f: os.path.join(output_dir, f))
  if output_dir is not None:
    _common.check_run_identity(output_dir, {"space_fingerprint": space.fingerprint(),
                                            "budget": budget.get_config(), "config": config.get_config()},
                               "Pruning-as-Search run")
  lut = budgets_lib.latency_predictor(budget)
  start = _common.measure(space, space.largest().choices, accuracy(net, search_data), lut, 0)

  history = []
  full_mflops = space.mflops(space.largest())

  class _Record(keras.callbacks.Callback):

    def on_epoch_end(self, epoch, logs=None):
      ch = net.active_channels().numpy()
      history.append({"generation": epoch, "mask_channels": [int(c) for c in ch],
                      "mask_mflops": float(net.counter.flops_of_widths(ch).numpy()) / 1e6,
                      "loss": float((logs or {}).get("loss", float("nan")))})

  searched = path("masked_search.weights.h5")
  if searched is not None and os.path.exists(searched):
    net.load_weights(searched)
    history = io_lib.read_json(path("search_history.json"), "PaS search history")["epochs"]
  else:
    training_lib.fit(net, train, epochs=config.search_epochs, learning_rate=config.learning_rate,
                     optimizer=config.optimizer, verbose=verbose, callbacks=[_Record()],
                     output_dir=path("search"))
    if searched is not None:
      io_lib.write_json_atomic(path("search_history.json"), {"epochs": history})
      net.save_weights(searched)
  s = net.structure(budget)
  net.freeze_masks(s)
  snapped = _common.measure(space, s.choices, accuracy(net, search_data), lut, 1)
  final = path("masked_final.weights.h5")
  if config.finetune_epochs:
    if final is not None and os.path.exists(final):
      net.load_weights(final)
    else:
      training_lib.fit(net, train, epochs=config.finetune_epochs, learning_rate=config.learning_rate,
                       optimizer=config.optimizer, verbose=verbose, output_dir=path("finetune"))
      if final is not None:
        net.save_weights(final)
  best = _common.measure(space, s.choices, accuracy(net, search_data), lut, 2)
  model = export(net)
  if output_dir is not None:
    model.save(path("model.keras"))
  seconds = time.perf_counter() - t0
  candidates = [start, snapped, best]
  rows = [dict(h) for h in history]
  rows.append(_common.history_entry(len(rows), 3, candidates, best, seconds, seconds))
  result = result_lib.SearchResult(
      method="pas", space_name=space.name, space_fingerprint=space.fingerprint(), best=best, top_k=[best],
      candidates=candidates, history=rows, budget=budget.get_config(), config=config.get_config(),
      trace_counts={}, seconds=seconds,
      extra={"full_mflops": full_mflops, "snapped_accuracy": snapped.accuracy, "start_accuracy": start.accuracy,
             "kept_channels": [k.tolist() for k in net.kept_channels()],
             "model_path": path("model.keras")})
  return result, model, net
