"""AutoSlim (Yu & Huang 2019): a slimmable network, then greedy slimming.

The idea: train ONE weight-sharing network whose every layer can run at any
width (it slices its leading channels), then walk from the full width down,
each step shrinking the one group of layers whose shrinking costs the least
accuracy on held-out data. The path passes every FLOPs target on its way
down, so one walk serves several budgets.

* **The slimmable network** is a `PruningNet` with `hidden_units=0` (plain
  weight sharing of the leading channels, no generators),
  `sampling="sandwich"` (each training step runs the largest, the smallest
  and `structures_per_step - 2` random structures, non-uniform per layer, and
  sums their gradients) and `distill=True` (in-place distillation: the
  largest learns from the labels, the others from its stop-gradient soft
  predictions). All of it happens inside `train_step`, so plain `model.fit`
  (and `tf_metaprune.training.fit`) trains it. `slimmable_net(space)` builds
  it, `train_slimmable(...)` trains it (resumable).
* **BN recalibration per width**: every candidate is scored by
  `calibration.Evaluator` -- exact BN statistics over a few training batches,
  then top-1 accuracy on the held-out search split.
* **Greedy slimming** (`greedy_slimming`): start at full width; each step
  tries shrinking every gene by one step (`step_width_ratio` of its base
  width, paper: 1/12, at least one choice), scores each trial, commits the
  most accurate one (ties: fewer MFLOPs); the first structure on the path that
  meets a budget is recorded for that budget; stop once every budget is met.
  Residual-tied layers read one gene (`SearchSpace`), so they shrink together.

Any `PruningNet` can be slimmed greedily (a MetaPruning one too);
`run("autoslim", ...)` trains its own slimmable network unless given one.

Example:

  >>> net = autoslim.train_slimmable(space, splits.train, AutoSlimConfig(epochs=8), output_dir="runs/slim")
  >>> half, quarter = autoslim.slim(net, splits, [FlopsBudget.from_ratio(space, 0.5),
  ...                                             FlopsBudget.from_ratio(space, 0.25)])
  >>> model = tf_metaprune.rebuild(space, quarter.structure(space))
"""

import dataclasses
import os
import time
from typing import Callable, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_metaprune import pruning_net as pruning_net_lib
from tf_metaprune import space as space_lib
from tf_metaprune import training as training_lib
from tf_metaprune.search import _common
from tf_metaprune.search import registry
from tf_metaprune.search import result as result_lib

_OPTIMIZERS = ("adam", "sgd")


@registry.register("autoslim", order=1)
@dataclasses.dataclass(frozen=True)
class AutoSlimConfig(_common.FrozenConfig):
  """Settings of AutoSlim: slimmable-network training and greedy slimming.

  Attributes:
    step_width_ratio: a greedy step shrinks a gene to its widest choice at
      most `step_width_ratio * base_channels` below its current width (at
      least one choice down). Paper: 1/12 of the base width.
    epochs: slimmable-network training epochs (only when AutoSlim trains its
      own network, `train_slimmable` / `run`). The paper trains a full
      schedule; small data needs a few epochs.
    learning_rate: peak learning rate of `tf_metaprune.training.fit`.
    optimizer: "adam" or "sgd" (the shared recipe's optimizers).
    structures_per_step: sandwich size n: largest + smallest + n-2 random
      structures per step (paper: 4).
    seed: seeds the network's structure sampling.

  Example:

    >>> AutoSlimConfig.from_config(AutoSlimConfig(epochs=3).get_config()) == AutoSlimConfig(epochs=3)
    True
  """
  step_width_ratio: float = 1.0 / 12.0
  epochs: int = 10
  learning_rate: float = 0.003
  optimizer: str = "adam"
  structures_per_step: int = 4
  seed: int = 0

  def __post_init__(self):
    object.__setattr__(self, "step_width_ratio",
                       _common.check_float("AutoSlimConfig", "step_width_ratio", self.step_width_ratio, 0.0, 1.0))
    object.__setattr__(self, "epochs", _common.check_int("AutoSlimConfig", "epochs", self.epochs, 1))
    object.__setattr__(self, "learning_rate", _common.check_float(
        "AutoSlimConfig", "learning_rate", self.learning_rate, 0.0, float("inf")))
    if self.optimizer not in _OPTIMIZERS:
      raise ValueError(f"AutoSlimConfig(optimizer={self.optimizer!r}): choose one of {_OPTIMIZERS}")
    object.__setattr__(self, "structures_per_step", _common.check_int(
        "AutoSlimConfig", "structures_per_step", self.structures_per_step, 2))
    object.__setattr__(self, "seed", _common.check_int("AutoSlimConfig", "seed", self.seed, 0))

  trains_own_network = True
  uses_given_pruning_net = True   # slims a given PruningNet greedily instead of training a slimmable one
  shares_network_across_budgets = True

  def run(self, context: _common.SearchContext) -> result_lib.SearchResult:
    """The searcher contract: slims `context.pruning_net`, or trains a slimmable network first.

    The trained network is kept in `slimmable/` of the output folder;
    `extra["train_seconds"]` is its training time (not in `seconds`).
    """
    train_seconds = 0.0
    net = context.pruning_net
    if net is None:
      keras.utils.set_random_seed(int(context.seed))
      t0 = time.perf_counter()
      net = train_slimmable(context.space, context.train_split(), self, output_dir=context.file("slimmable"),
                            verbose=context.keras_verbose)
      train_seconds = time.perf_counter() - t0
    result = autoslim(net, context.search_data, context.budget, self, verbose=context.progress)
    result.extra["train_seconds"] = train_seconds
    return result


# ---------------------------------------------------------------------------------------------
# The slimmable network.


def slimmable_net(space, seed=0, structures_per_step=4, **kwargs) -> pruning_net_lib.PruningNet:
  """AutoSlim's slimmable network over `space`: a weight-sharing, sandwich-trained `PruningNet`.

  `PruningNet(space, hidden_units=0, sampling="sandwich", distill=True)`:
  shared leading-channel weights, the sandwich rule and in-place distillation
  inside `train_step`, per-structure BN recalibration through `Evaluator`.

  Args:
    space: the `SearchSpace`.
    seed: seeds the in-graph structure sampling.
    structures_per_step: sandwich size (>= 2; paper: 4).
    **kwargs: other `PruningNet` arguments (e.g. `bn_mode`).

  Returns:
    A new, untrained `PruningNet`.
  """
  return pruning_net_lib.PruningNet(space, hidden_units=0, sampling="sandwich", distill=True, seed=seed,
                                    structures_per_step=structures_per_step, **kwargs)


def train_slimmable(space, train_data, config: Optional[AutoSlimConfig] = None, *, output_dir=None, verbose=0,
                    **overrides) -> pruning_net_lib.PruningNet:
  """Builds and trains the slimmable network with the shared recipe; resumable.

  With `output_dir`, a finished network is kept as
  `output_dir/slimmable.weights.h5` and a rerun loads it instead of training
  again; an interrupted training resumes from `output_dir/training/backup`
  (`tf_metaprune.training.fit`). `output_dir/identity.json` records the space
  and training settings; a rerun with others is a ValueError.

  Args:
    space: the `SearchSpace`.
    train_data: batched `tf.data.Dataset` of (images, labels), the training split.
    config: an `AutoSlimConfig` (epochs, learning rate, optimizer, sandwich size).
    output_dir: where the weights and the training backup go (None: nowhere).
    verbose: Keras verbosity.
    **overrides: `AutoSlimConfig` fields replacing those of `config`.

  Returns:
    The trained `PruningNet` (see `slimmable_net`).
  """
  config = _common.resolve_config(AutoSlimConfig, config, overrides, "train_slimmable")
  net = slimmable_net(space, seed=config.seed, structures_per_step=config.structures_per_step)
  done = None if output_dir is None else os.path.join(output_dir, "slimmable.weights.h5")
  if output_dir is not None:
    training_settings = {k: v for k, v in config.get_config().items() if k != "step_width_ratio"}
    _common.check_run_identity(output_dir, {"space_fingerprint": space.fingerprint(), "config": training_settings},
                               "slimmable network")
  if done is not None and os.path.exists(done):
    net.load_weights(done)
    return net
  training_lib.fit(net, train_data, epochs=config.epochs, learning_rate=config.learning_rate,
                   optimizer=config.optimizer, verbose=verbose,
                   output_dir=None if output_dir is None else os.path.join(output_dir, "training"))
  if done is not None:
    os.makedirs(output_dir, exist_ok=True)
    net.save_weights(done)
  return net


# ---------------------------------------------------------------------------------------------
# Greedy slimming (pure: any accuracy function).


def shrink(space, structure, gene, step_width_ratio):
  """`structure` with gene `gene` one greedy step narrower, or None at its smallest choice.

  The new choice is the widest one at least `step_width_ratio * base_channels`
  below the current width, and at least one choice down.
  """
  s = space.validate(structure)
  g = space.genes[gene]
  c = s[gene]
  if c == 0:
    return None
  target = g.channels[c] - step_width_ratio * g.base_channels
  new = c - 1
  while new > 0 and g.channels[new] > target + 1e-9:
    new -= 1
  choices = list(s.choices)
  choices[gene] = new
  return space_lib.Structure(choices)


@dataclasses.dataclass
class SlimmingPath:
  """What `greedy_slimming` walked through.

  Attributes:
    steps: the committed `Candidate`s, full width first (its `generation` is
      the step number).
    trials: every evaluated `Candidate`, in evaluation order (the committed
      ones included).
    reached: one committed `Candidate` per budget, in the order given (the
      first structure on the path that met it).
    step_seconds: wall time of each step.
  """
  steps: List[result_lib.Candidate]
  trials: List[result_lib.Candidate]
  reached: List[result_lib.Candidate]
  step_seconds: List[float]


def greedy_slimming(space, accuracy_fn: Callable[[space_lib.Structure], float], budgets: Sequence,
                    step_width_ratio=1.0 / 12.0, lut=None, verbose=0) -> SlimmingPath:
  """AutoSlim's greedy walk from full width down through every budget.

  Each step shrinks every gene by one step in turn (`shrink`), scores every
  trial with `accuracy_fn`, and commits the most accurate (ties: fewer
  MFLOPs, then the earlier gene). A budget is "reached" by the first
  committed structure that meets it. Stops once every budget is reached.

  Args:
    space: the `SearchSpace`.
    accuracy_fn: structure -> accuracy in [0, 1] (e.g. `Evaluator.accuracy`);
      called once per distinct structure.
    budgets: the `Budget`s (FLOPs targets, usually); each must be met
      somewhere on a path of shrinking widths, i.e. have no lower bound above
      what the walk passes.
    step_width_ratio: see `shrink`.
    lut: optional latency predictor recorded for every candidate.
    verbose: 1 prints a line per step.

  Returns:
    A `SlimmingPath`.

  Raises:
    ValueError: if no budget is given, or the walk reaches the smallest
      structure with a budget still unmet (e.g. a lower bound it jumped over).
  """
  budgets = list(budgets)
  if not budgets:
    raise ValueError("greedy_slimming(budgets=[]) needs at least one budget, e.g. [FlopsBudget.from_ratio(space, 0.5)]")
  cache = {}
  trials = []

  def score(s, step):
    if s.choices not in cache:
      cand = _common.measure(space, s.choices, float(accuracy_fn(s)), lut, step)
      cache[s.choices] = cand
      trials.append(cand)
    return cache[s.choices]

  t0 = time.perf_counter()
  current = score(space.largest(), 0)
  steps, step_seconds = [current], [time.perf_counter() - t0]
  reached = [None] * len(budgets)

  def record(cand):
    for i, b in enumerate(budgets):
      if reached[i] is None and b.is_feasible(space, cand.structure):
        reached[i] = cand

  record(current)
  step = 0
  while any(r is None for r in reached):
    t0 = time.perf_counter()
    step += 1
    options = [shrink(space, current.structure, g, step_width_ratio) for g in range(len(space.genes))]
    options = [s for s in options if s is not None]
    if not options:
      missing = [repr(b) for b, r in zip(budgets, reached) if r is None]
      raise ValueError(f"greedy slimming reached the smallest structure ({space.mflops(space.smallest()):.4g} "
                       f"MFLOPs) without meeting {missing}; a lower bound the walk stepped over? Lower or drop "
                       "it, or use a smaller step_width_ratio")
    scored = [score(s, step) for s in options]
    order = sorted(range(len(scored)), key=lambda i: (-scored[i].accuracy, scored[i].mflops, i))
    current = scored[order[0]]
    steps.append(current)
    record(current)
    step_seconds.append(time.perf_counter() - t0)
    if verbose:
      print(f"[autoslim] step {step}: {current.accuracy:.4f} at {current.mflops:.4g} MFLOPs "
            f"({len(options)} trials, {step_seconds[-1]:.1f} s)", flush=True)
  return SlimmingPath(steps=steps, trials=trials, reached=reached, step_seconds=step_seconds)


# ---------------------------------------------------------------------------------------------
# The searcher.


def slim(net, search_data, budgets: Sequence, config: Optional[AutoSlimConfig] = None, *, latency_table=None,
         calibration_data=None, num_calibration_batches=4, verbose=1, **overrides) -> List[result_lib.SearchResult]:
  """Greedy slimming of a trained (slimmable) network to several budgets in one pass.

  Args:
    net: a trained `PruningNet` (`train_slimmable`'s, or any other).
    search_data: the held-out search split, as for `search.evolutionary`
      (dataset, `DatasetSplits`, `EvaluationData` or an `Evaluator` of `net`).
    budgets: the budgets (e.g. FLOPs at 50% and 25%); each gets its result.
    config: an `AutoSlimConfig` (only `step_width_ratio` matters here).
    latency_table: latency predictor recorded per candidate (default: a
      `LatencyBudget`'s).
    calibration_data, num_calibration_batches: as for `search.evolutionary`.
    verbose: 1 prints a line per step.
    **overrides: `AutoSlimConfig` fields.

  Returns:
    One `SearchResult` (method "autoslim") per budget, in order. Each holds
    the whole path's evaluations as `candidates`, one history row per greedy
    step up to where its budget was reached, and `extra["path"]` (choices of
    the committed steps up to it).

  Raises:
    ValueError: for a budget no structure of the space meets (before any
      evaluation), or one the walk cannot meet.
  """
  _common.check_net(net, "autoslim")
  config = _common.resolve_config(AutoSlimConfig, config, overrides, "autoslim")
  space = net.space
  budgets = [_common.check_budget(b, space) for b in budgets]
  if not budgets or any(b is None for b in budgets):
    raise ValueError(f"autoslim needs budgets to slim to, got {budgets!r}; pass e.g. "
                     "[FlopsBudget.from_ratio(space, 0.5)]")
  lut = None
  for b in budgets:
    lut = lut or _common.latency_lut(b, latency_table, space)
  evaluator = _common.make_evaluator(net, search_data, calibration_data, num_calibration_batches, "autoslim")
  path = greedy_slimming(space, lambda s: float(evaluator.accuracy_tensor(tf.constant(s.choices, tf.int32))),
                         budgets, config.step_width_ratio, lut, verbose)
  results = []
  for budget, best in zip(budgets, path.reached):
    last = best.generation
    history, elapsed = [], 0.0
    for step in range(last + 1):
      elapsed += path.step_seconds[step]
      so_far = [c for c in path.trials if c.generation <= step]
      history.append(_common.history_entry(step, sum(c.generation == step for c in path.trials), so_far,
                                           path.steps[step], path.step_seconds[step], elapsed))
    candidates = [c for c in path.trials if c.generation <= last]
    results.append(result_lib.SearchResult(
        method="autoslim", space_name=space.name, space_fingerprint=space.fingerprint(), best=best,
        top_k=[best], candidates=candidates, history=history, budget=budget.get_config(),
        config=config.get_config(), trace_counts={"evaluator": evaluator.trace_count}, seconds=elapsed,
        extra={"path": [list(c.choices) for c in path.steps[:last + 1]],
               "path_accuracy": [c.accuracy for c in path.steps[:last + 1]],
               "path_mflops": [c.mflops for c in path.steps[:last + 1]],
               "num_eval_images": evaluator.data.num_eval_images,
               "num_calibration_images": int(np.prod(evaluator.data.calibration_images.shape[:2]))}))
    if verbose:
      print(f"[autoslim] {budget!r}: {results[-1].summary()}", flush=True)
  return results


def autoslim(net, search_data, budget, config: Optional[AutoSlimConfig] = None, **kwargs) -> result_lib.SearchResult:
  """Greedy slimming of `net` to one budget (see `slim` for several in one pass).

  Args:
    net: a trained `PruningNet` (best: `train_slimmable`'s).
    search_data: the held-out search split (see `slim`).
    budget: the `Budget`.
    config: an `AutoSlimConfig`.
    **kwargs: as for `slim`.

  Returns:
    A `SearchResult` (method "autoslim").
  """
  return slim(net, search_data, [budget], config, **kwargs)[0]
