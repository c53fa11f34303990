"""Evolutionary search of the best structure under a budget (MetaPruning Sec. 3.3).

The idea: a trained PruningNet can score any structure cheaply -- generate its
weights, recalibrate its batch-norm statistics on a few training batches,
measure top-1 accuracy on a held-out split -- so an evolutionary algorithm
can explore the space of per-layer widths with real accuracies as fitness,
rejecting every candidate that breaks the budget at the moment it is created.

One generation, with the paper's defaults (`EvolutionConfig()`):

  1. Parents are the `top_k` (10) best structures ever evaluated.
  2. `num_mutations` (25) children: a random parent whose every gene moves,
     with probability `mutation_prob` (0.1), to a *different* choice. Genes
     are already tied (residual-joined layers read one gene), so tied layers
     move together.
  3. `num_crossovers` (25) children: each gene taken at random from one of two
     *different* random parents.
  4. Random structures refill the generation up to `population_size` (50)
     when constraints (or repeats) reject too many.
  Generation 0 is all random. Every candidate must be feasible (hard
  rejection) and never evaluated before; at most `max_tries_factor` (10)
  proposals are drawn per wanted candidate, after which the generation goes
  on with fewer. 20 generations is about 1000 evaluations.

Fitness is top-1 accuracy on the held-out search split (never the test
split), ties broken by the lower cross-entropy loss (never by FLOPs: see
`result.rank`), after exact BN recalibration, with the PruningNet's generated weights
and no fine-tuning (`calibration.Evaluator`: one `tf.function` trace for all
candidates). Every evaluation is cached by its choices.

Proposals run in one `tf.function` on int32 tensors with a Philox
`tf.random.Generator` (traced once), the budget check included
(`Budget.is_feasible_tensor`), so a generation's population work is well
under a millisecond. After each generation the full state -- evaluated
candidates, RNG state, generation, settings, budget, fingerprints of space,
weights and data -- is written atomically as JSON to `state_path`; a search
started again with the same arguments resumes from it and ends exactly where
an uninterrupted one would.

Under `tf.distribute` (the net built in `strategy.scope()`), every worker
runs this same loop: the proposals are a deterministic function of the seed
and of the accuracies, which the `Evaluator` sums across all replicas, so all
workers propose and score the same candidates, each replica on its share of
the batches. Only the chief writes `state_path` and prints; every worker reads
it when resuming, so it must be on a filesystem all workers share (they check
that they agree on it before going on).

Example:

  >>> budget = tf_metaprune.budgets.FlopsBudget.from_ratio(space, 0.5)          # doctest: +SKIP
  >>> result = tf_metaprune.search.evolutionary(net, splits.search, budget,  # doctest: +SKIP
  ...                                           state_path="/tmp/evo_state.json")
  >>> print(result.summary())                                                 # doctest: +SKIP
  >>> model = tf_metaprune.rebuild(space, result.structure(space))            # doctest: +SKIP
"""

import dataclasses
import os
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from tf_metaprune import distribute
from tf_metaprune import flops as flops_lib
from tf_metaprune import io as io_lib
from tf_metaprune.search import _common
from tf_metaprune.search import registry
from tf_metaprune.search import result as result_lib
from tf_metaprune.search import uniform as uniform_lib

_STATE_FORMAT = "tf_metaprune.EvolutionState"
_SAMPLING = ("auto", "uniform", "scaled")
# Settings a resumed search may change: extending a search is allowed.
_RESUMABLE_CHANGES = ("num_generations",)


@registry.register("evolutionary", order=0)
@dataclasses.dataclass(frozen=True)
class EvolutionConfig(_common.FrozenConfig):
  """Settings of the evolutionary search; the defaults are the paper's.

  Attributes:
    population_size: candidates per generation (paper: 50).
    top_k: parents = the best `top_k` structures ever evaluated (paper: 10).
    num_mutations: mutated children per generation (default: half the
      population, the paper's 25 of 50).
    mutation_prob: probability that a gene moves to another choice (paper: 0.1).
    num_crossovers: uniform-crossover children per generation (default: half
      the population, the paper's 25).
    num_generations: generations, the random start included (paper: 20).
    max_tries_factor: at most this many proposals per wanted candidate before
      a generation goes on with fewer (the reference: 10).
    random_sampling: how random candidates are drawn. "uniform": each gene's
      choice uniform (the paper); "scaled": a random width cap per candidate,
      then uniform below it, which reaches small structures, so tight budgets
      still fill the population; "auto" (default): uniform first, scaled only
      for what a tight budget leaves unfilled.
    seed: seed of the Philox generator driving every random choice.
    min_layer_ratio: every gene's width ratio (its channels / its base
      channels) is at least this (0: any choice). BCNetV2's remedy for
      one-shot supernets: "a small dimension in one layer will destroy the
      performance", and the proxy is most over-optimistic about such shapes.
    trust_region: None (default: no limit), or every gene's width ratio lies
      within this distance of its ratio in the uniform structure that meets
      the budget (`search.uniform.largest_uniform`), e.g. 0.15: the search
      explores shapes near uniform, where the PruningNet's scores were
      measured to rank retrained structures, instead of the extreme shapes
      it is over-optimistic about. The uniform structure's own choice is
      always allowed.

  Both limits cut each gene's choices to one contiguous range, and every
  mutation, crossover and random sample is drawn inside it (so none is
  wasted on rejection); at their defaults the search is exactly the paper's
  (the same candidates for the same seed). `PopulationOps.choice_ranges`
  holds the ranges; the result records them in `extra["choice_ranges"]`.

  Example:

    >>> config = EvolutionConfig(population_size=20, num_generations=5)   # 10 + 10 children
    >>> EvolutionConfig.from_config(config.get_config()) == config
    True
  """
  population_size: int = 50
  top_k: int = 10
  num_mutations: Optional[int] = None
  mutation_prob: float = 0.1
  num_crossovers: Optional[int] = None
  num_generations: int = 20
  max_tries_factor: int = 10
  random_sampling: str = "auto"
  seed: int = 0
  min_layer_ratio: float = 0.0
  trust_region: Optional[float] = None

  def __post_init__(self):
    for name in ("population_size", "top_k", "num_generations", "max_tries_factor"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"EvolutionConfig({name}={v!r}): {name} must be an int >= 1")
    for name in ("num_mutations", "num_crossovers"):
      if getattr(self, name) is None:
        object.__setattr__(self, name, int(self.population_size) // 2)
    for name in ("num_mutations", "num_crossovers", "seed"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ValueError(f"EvolutionConfig({name}={v!r}): {name} must be an int >= 0")
    if not 0.0 < float(self.mutation_prob) <= 1.0:
      raise ValueError(f"EvolutionConfig(mutation_prob={self.mutation_prob!r}): must be in (0, 1] "
                       "(the paper uses 0.1)")
    if self.num_mutations + self.num_crossovers > self.population_size:
      raise ValueError(
          f"EvolutionConfig(num_mutations={self.num_mutations}, num_crossovers={self.num_crossovers}, "
          f"population_size={self.population_size}): mutations + crossovers exceed the population; "
          "lower them or raise population_size")
    if self.random_sampling not in _SAMPLING:
      raise ValueError(f"EvolutionConfig(random_sampling={self.random_sampling!r}): choose one of {_SAMPLING}")
    for name in ("population_size", "top_k", "num_generations", "max_tries_factor", "num_mutations",
                 "num_crossovers", "seed"):
      object.__setattr__(self, name, int(getattr(self, name)))
    object.__setattr__(self, "mutation_prob", float(self.mutation_prob))
    for name in ("min_layer_ratio", "trust_region"):
      v = getattr(self, name)
      if v is None and name == "trust_region":
        continue
      if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not 0.0 <= v < 1.0:
        raise ValueError(f"EvolutionConfig({name}={v!r}): must be a width ratio in [0, 1) "
                         f"({'e.g. 0.15' if name == 'trust_region' else '0 = no minimum, e.g. 0.2'})")
      object.__setattr__(self, name, float(v))

  def get_config(self):
    config = super().get_config()
    # At their defaults the two limits are left out, so the identity of a search saved before they existed
    # (its state file) is unchanged and it still resumes.
    if config["min_layer_ratio"] == 0.0:
      del config["min_layer_ratio"]
    if config["trust_region"] is None:
      del config["trust_region"]
    return config

  needs_pruning_net = True
  uses_given_pruning_net = True

  def max_candidates(self):
    return self.population_size * self.num_generations

  def describe(self):
    return f"population {self.population_size} x {self.num_generations} generations"

  def run(self, context: _common.SearchContext) -> result_lib.SearchResult:
    """The searcher contract: `evolutionary` with these settings, resuming `evolution_state.json`."""
    return evolutionary(context.pruning_net, context.search_data, context.budget, self,
                        state_path=context.state_file("evolution_state.json"), verbose=context.progress)


# ---------------------------------------------------------------------------------------------
# Population operations (graph functions: int32 tensors in, int32 tensors out).


def mutate(generator, parents, num, mutation_prob, num_choices):
  """`num` mutated copies of random `parents` (in-graph).

  Each gene of a child moves, with probability `mutation_prob`, to a choice
  *different* from its parent's (uniform over the other choices); genes with a
  single choice never move.

  Args:
    generator: a `tf.random.Generator`.
    parents: int32 [K, G] (K >= 1 when num > 0).
    num: int32 scalar, how many children.
    mutation_prob: float, per gene.
    num_choices: int32 [G], each gene's number of choices.

  Returns:
    (children int32 [num, G], parent index int32 [num]).
  """
  parents = tf.convert_to_tensor(parents, tf.int32)
  n = tf.convert_to_tensor(num_choices, tf.int32)
  k = tf.shape(parents)[0]
  g = tf.shape(parents)[1]
  idx = generator.uniform([num], 0, tf.maximum(k, 1), dtype=tf.int32)
  base = tf.gather(parents, idx)
  move = tf.logical_and(generator.uniform([num, g]) < mutation_prob, n > 1)
  # offset in [1, n-1]: the new choice is never the old one.
  span = tf.cast(tf.maximum(n - 1, 1), tf.float32)
  offset = 1 + tf.minimum(tf.cast(tf.floor(generator.uniform([num, g]) * span), tf.int32), tf.maximum(n - 2, 0))
  moved = tf.math.floormod(base + offset, tf.maximum(n, 1))
  return tf.where(move, moved, base), idx


def crossover(generator, parents, num):
  """`num` uniform crossovers of two *different* random parents (in-graph).

  Args:
    generator: a `tf.random.Generator`.
    parents: int32 [K, G] with K >= 2 when num > 0.
    num: int32 scalar.

  Returns:
    (children int32 [num, G], first parent index [num], second parent index
    [num]); each child gene is the first or the second parent's, with
    probability 1/2.
  """
  parents = tf.convert_to_tensor(parents, tf.int32)
  k = tf.shape(parents)[0]
  g = tf.shape(parents)[1]
  a = generator.uniform([num], 0, tf.maximum(k, 1), dtype=tf.int32)
  b = tf.math.floormod(a + generator.uniform([num], 1, tf.maximum(k, 2), dtype=tf.int32), tf.maximum(k, 1))
  take_a = generator.uniform([num, g]) < 0.5
  return tf.where(take_a, tf.gather(parents, a), tf.gather(parents, b)), a, b


def sample_uniform(generator, num, num_choices):
  """`num` random structures, each gene's choice uniform (in-graph), int32 [num, G]."""
  n = tf.convert_to_tensor(num_choices, tf.int32)
  u = generator.uniform(tf.stack([num, tf.size(n)]))
  return tf.minimum(tf.cast(tf.floor(u * tf.cast(n, tf.float32)), tf.int32), n - 1)


def sample_scaled(generator, num, num_choices):
  """`num` random structures under a random width cap (in-graph), int32 [num, G].

  A cap `a ~ U(0, 1)` is drawn per structure; each gene's choice is uniform
  over its lowest `max(1, ceil(a * n))` choices. FLOPs then spread from the
  smallest structure to the full one, so budgets far below the average random
  structure still accept many samples.
  """
  n = tf.convert_to_tensor(num_choices, tf.int32)
  nf = tf.cast(n, tf.float32)
  cap = tf.maximum(tf.math.ceil(generator.uniform(tf.stack([num, 1])) * nf), 1.0)
  u = generator.uniform(tf.stack([num, tf.size(n)]))
  return tf.minimum(tf.cast(tf.floor(u * cap), tf.int32), n - 1)


class PopulationOps:
  """Proposes a generation's candidates and checks the budget, in one `tf.function`.

  Args:
    space: the `SearchSpace`.
    budget: a `Budget` or None.
    config: an `EvolutionConfig` (its `seed` seeds the Philox generator).

  Attributes:
    generator: the `tf.random.Generator` (its state is saved with the search).
    trace_count: times the proposal function was traced (1 for a whole search).
    choice_ranges: per gene, the (lowest, highest) choice a candidate may
      take (the whole range unless `config.min_layer_ratio` or
      `config.trust_region` limit it).

  Raises:
    ValueError: if a limit leaves a gene no choice, or the trust region has
      no uniform structure to centre on (no uniform ratio meets the budget).
  """

  def __init__(self, space, budget, config):
    self.space = space
    self.budget = budget
    self.config = config
    self.counter = flops_lib.SpaceCounter(space)
    self.choice_ranges = choice_ranges(space, budget, config)
    self._low = np.array([lo for lo, _ in self.choice_ranges], np.int32)
    # Mutation, crossover and sampling run on each gene's own range (choice - low), then shift back.
    self.num_choices = np.array([hi - lo + 1 for lo, hi in self.choice_ranges], np.int32)
    self.generator = tf.random.Generator.from_seed(config.seed, alg="philox")
    self.trace_count = 0
    num_genes = len(space.genes)
    scalar = tf.TensorSpec([], tf.int32)
    self._fn = tf.function(self._propose, autograph=False,
                           input_signature=[tf.TensorSpec([None, num_genes], tf.int32)] + [scalar] * 4)

  def _propose(self, parents, n_mut, n_cross, n_uniform, n_scaled):
    self.trace_count += 1
    nc = tf.constant(self.num_choices)
    low = tf.constant(self._low)
    parents = parents - low[None, :]
    mut, _ = mutate(self.generator, parents, n_mut, self.config.mutation_prob, nc)
    cross, _, _ = crossover(self.generator, parents, n_cross)
    uni = sample_uniform(self.generator, n_uniform, nc)
    sca = sample_scaled(self.generator, n_scaled, nc)
    proposals = tf.concat([mut, cross, uni, sca], axis=0) + low[None, :]
    if self.budget is None:
      feasible = tf.ones(tf.shape(proposals)[:1], tf.bool)
    else:
      feasible = self.budget.is_feasible_tensor(self.counter, proposals)
    return proposals, feasible

  def propose(self, parents, n_mut, n_cross, n_uniform, n_scaled):
    """Returns numpy (proposals [n_mut + n_cross + n_uniform + n_scaled, G], feasible [N])."""
    parents = np.asarray(parents, np.int32).reshape(-1, len(self.space.genes))
    p, f = self._fn(tf.constant(parents), *(tf.constant(int(v), tf.int32) for v in
                                            (n_mut, n_cross, n_uniform, n_scaled)))
    return p.numpy(), f.numpy()

  def rng_state(self):
    return {"algorithm": int(self.generator.algorithm), "state": [int(v) for v in self.generator.state.numpy()]}

  def set_rng_state(self, state):
    if int(state["algorithm"]) != int(self.generator.algorithm):
      raise ValueError(f"saved RNG algorithm {state['algorithm']} differs from {int(self.generator.algorithm)}")
    self.generator.reset(tf.constant(state["state"], tf.int64))


def choice_ranges(space, budget, config):
  """Per gene, the (lowest, highest) choice `config`'s `min_layer_ratio` and `trust_region` allow.

  Args:
    space: the `SearchSpace`.
    budget: a `Budget` or None (the trust region is then centred on the full width).
    config: an `EvolutionConfig`.

  Returns:
    A list of (low, high) choice indices, one per gene, inclusive.

  Raises:
    ValueError: if a gene is left no choice, or no uniform structure meets the budget (the trust region's centre).

  Example:

    >>> space = tf_metaprune.models.small_cnn((28, 28, 1), 10)
    >>> [g.channels[:3] for g in space.genes]
    [(8, 16), (8, 16, 24), (8, 16, 24), (16, 24, 32)]
    >>> choice_ranges(space, None, EvolutionConfig(min_layer_ratio=0.5))   # at least half of every layer
    [(0, 1), (1, 3), (3, 7), (6, 14)]
  """
  centre = None
  if config.trust_region is not None:
    try:
      _, centre = uniform_lib.largest_uniform(space, budget)
    except ValueError as e:
      raise ValueError(f"EvolutionConfig(trust_region={config.trust_region!r}) centres on the uniform structure "
                       f"that meets the budget, and there is none: {e}") from None
  ranges = []
  for i, g in enumerate(space.genes):
    ratios = np.array(g.channels, np.float64) / g.base_channels
    ok = ratios >= config.min_layer_ratio - 1e-9
    if centre is not None:
      u = ratios[centre.choices[i]]
      near = np.abs(ratios - u) <= config.trust_region + 1e-9
      near[centre.choices[i]] = True
      ok &= near
    if not ok.any():
      raise ValueError(
          f"EvolutionConfig(min_layer_ratio={config.min_layer_ratio!r}, trust_region={config.trust_region!r}) "
          f"leaves gene {g.name!r} no choice (its width ratios run {ratios[0]:.3f}-{ratios[-1]:.3f}"
          + ("" if centre is None else f", the uniform structure's is {ratios[centre.choices[i]]:.3f}")
          + "); lower min_layer_ratio or widen trust_region")
    idx = np.flatnonzero(ok)
    ranges.append((int(idx[0]), int(idx[-1])))
  return ranges


def _take(proposals, feasible, num, seen):
  """The first `num` feasible, never-seen proposals (added to `seen`), in order."""
  out = []
  for row, ok in zip(proposals, feasible):
    if len(out) >= num:
      break
    key = tuple(int(c) for c in row)
    if ok and key not in seen:
      seen.add(key)
      out.append(key)
  return out


# ---------------------------------------------------------------------------------------------
# The search.


def _identity(space, net, evaluator, budget, config):
  return {"space_name": space.name, "space_fingerprint": space.fingerprint(),
          "net_fingerprint": _common.net_fingerprint(net),
          "data_fingerprint": _common.data_fingerprint(evaluator.data, evaluator.metric),
          "budget": None if budget is None else budget.get_config(),
          "config": config.get_config()}


# How the identity fields of a state file are named in the "belongs to another run" message.
_LABELS = {"space_fingerprint": "the search space", "net_fingerprint": "the PruningNet's weights",
           "data_fingerprint": "the search data (calibration or evaluation images)", "budget": "the budget"}


def _score(evaluator, choices, state_path):
  """The evaluator's (accuracy, loss) of `choices`; a lost worker becomes a `WorkerLostError` saying how to resume."""
  try:
    acc, loss = evaluator.scores_tensor(tf.constant(choices, tf.int32)).numpy().tolist()
    return acc, loss
  except Exception as e:  # pylint: disable=broad-except
    hint = (f"the search resumes from {state_path!r} at its last finished generation" if state_path
            else "pass state_path so that a rerun resumes instead of starting over")
    lost = distribute.worker_lost_error(e, evaluator.strategy, hint)
    if lost is None:
      raise
    raise lost from e


def evolutionary(net, search_data, budget=None, config: Optional[EvolutionConfig] = None, *, state_path=None,
                 latency_table=None, calibration_data=None, num_calibration_batches=4, verbose=1,
                 **overrides) -> result_lib.SearchResult:
  """Searches the most accurate structure of `net.space` that meets `budget`.

  The paper's evolutionary algorithm (see the module docstring), fitness =
  top-1 accuracy on the held-out search split after BN recalibration.

  Args:
    net: a trained `PruningNet`.
    search_data: the held-out search split: a batched `tf.data.Dataset` of
      (images, labels), a `DatasetSplits` (scored on `.search`, recalibrated
      on the train split in a fixed order, `.calibration`; `.test` is never read), an
      `EvaluationData`, or an `Evaluator` of `net` (shares its trace with
      other searches). Never pass the test split.
    budget: a `Budget` (or its config dict); None = unconstrained.
    config: an `EvolutionConfig` (default: the paper's settings).
    state_path: JSON file of the search state, written atomically after every
      generation (by the chief only under a multi-worker strategy; on a
      filesystem every worker can read). If it exists, the search resumes from it (only
      `num_generations` may differ, to extend a search); a state of another
      search (space, weights, data, budget or settings) is a ValueError and
      is left untouched.
    latency_table: a latency predictor (e.g. `LatencyTable`) recorded for
      every candidate; default: the one of a `LatencyBudget` in `budget`.
    calibration_data: batched dataset the BN statistics are recalibrated on
      (default: `search_data`); only when `search_data` is a dataset.
    num_calibration_batches: full batches for BN recalibration.
    verbose: 1 prints one progress line per generation, 0 is silent.
    **overrides: `EvolutionConfig` fields replacing those of `config`,
      e.g. `population_size=20, num_generations=5`.

  Returns:
    A `SearchResult` (method "evolutionary") whose `trace_counts` hold the
    evaluator's and the population function's trace counts.

  Raises:
    ValueError: if the budget is infeasible even for the smallest structure
      (at once, before any evaluation), if generation 0 finds no feasible
      structure within its tries, for search data that does not fit the net
      (image shape, labels), or for a state file of another search or a
      damaged one (named, and left untouched).
    tf_metaprune.io.NotWritableError: if the folder of `state_path` is not
      writable (before any evaluation).
  """
  _common.check_net(net, "evolutionary")
  space = net.space
  config = _common.resolve_config(EvolutionConfig, config, overrides, "evolutionary")
  budget = _common.check_budget(budget, space)
  lut = _common.latency_lut(budget, latency_table, space)
  evaluator = _common.make_evaluator(net, search_data, calibration_data, num_calibration_batches, "evolutionary")
  ops = PopulationOps(space, budget, config)
  identity = _identity(space, net, evaluator, budget, config)
  chief = distribute.is_chief(evaluator.strategy)

  candidates, history, generation, elapsed = [], [], 0, 0.0
  if state_path is not None:
    io_lib.check_writable_dir(os.path.dirname(os.path.abspath(state_path)), "the folder of state_path")
  state_file = None if state_path is None else io_lib.StateFile(
      state_path, _STATE_FORMAT, identity, may_change=tuple(f"config.{k}" for k in _RESUMABLE_CHANGES),
      what="evolution search state", labels=_LABELS, chief=chief)
  state = None if state_file is None else state_file.load()
  if state is not None:
    try:
      candidates = [result_lib.Candidate.from_dict(c) for c in state["cache"]]
      history = list(state["history"])
      generation = int(state["generation"])
      elapsed = float(state["elapsed_seconds"])
      ops.set_rng_state(state["rng"])
      for cand in candidates:
        space.validate(cand.choices)
    except (KeyError, TypeError, ValueError, tf.errors.InvalidArgumentError) as e:
      raise state_file.damaged(e) from None
    if verbose and chief:
      print(f"[evolution] resuming {state_path} at generation {generation} ({len(candidates)} evaluated)",
            flush=True)
  if state_path is not None:
    distribute.check_same_on_all_workers([generation, len(candidates)],
                                         f"the search state {state_path!r} (generation, evaluated candidates)",
                                         evaluator.strategy)
  cache = {c.choices: c for c in candidates}
  population = [c.choices for c in candidates if c.generation == generation - 1]

  c = config
  factor = c.max_tries_factor
  while generation < c.num_generations:
    t0 = time.perf_counter()
    parents = [x.choices for x in result_lib.rank(candidates)[:c.top_k]]
    n_mut = c.num_mutations * factor if generation > 0 and parents else 0
    n_cross = c.num_crossovers * factor if generation > 0 and len(parents) >= 2 else 0
    n_rand = c.population_size * factor
    n_uni = n_rand if c.random_sampling in ("auto", "uniform") else 0
    n_sca = n_rand if c.random_sampling in ("auto", "scaled") else 0
    proposals, feasible = ops.propose(np.array(parents, np.int32).reshape(-1, len(space.genes)),
                                      n_mut, n_cross, n_uni, n_sca)
    cuts = np.cumsum([n_mut, n_cross, n_uni, n_sca])[:-1]
    (mut_p, cross_p, uni_p, sca_p), (mut_f, cross_f, uni_f, sca_f) = (np.split(proposals, cuts),
                                                                        np.split(feasible, cuts))
    seen = set(cache)
    new = _take(mut_p, mut_f, c.num_mutations if n_mut else 0, seen)
    new += _take(cross_p, cross_f, c.num_crossovers if n_cross else 0, seen)
    new += _take(uni_p, uni_f, c.population_size - len(new), seen)
    new += _take(sca_p, sca_f, c.population_size - len(new), seen)
    if generation == 0 and not new:
      raise ValueError(
          f"no feasible structure among {n_uni + n_sca} random samples for budget {budget!r} (the smallest "
          f"structure has {space.mflops(space.smallest()):.4g} MFLOPs, the full one "
          f"{space.mflops(space.largest()):.4g}); raise the budget, or use "
          "random_sampling='scaled' / a larger max_tries_factor")
    for choices in new:
      acc, loss = _score(evaluator, choices, state_path)
      cand = _common.measure(space, choices, acc, lut, generation, loss=loss)
      candidates.append(cand)
      cache[cand.choices] = cand
    population = new
    seconds = time.perf_counter() - t0
    elapsed += seconds
    top = result_lib.rank(candidates)[:c.top_k]
    history.append({"generation": generation, "new_candidates": len(new), "evaluations": len(candidates),
                    "best_accuracy": top[0].accuracy,
                    "mean_top_k_accuracy": float(np.mean([x.accuracy for x in top])),
                    "best_mflops": top[0].mflops, "seconds": seconds, "elapsed_seconds": elapsed})
    generation += 1
    if verbose and chief:
      h = history[-1]
      short = "" if len(new) >= c.population_size else f" (only {len(new)} new: budget or repeats)"
      print(f"[evolution] generation {generation}/{c.num_generations}: best {h['best_accuracy']:.4f} "
            f"({h['best_mflops']:.4g} MFLOPs), top-{len(top)} mean {h['mean_top_k_accuracy']:.4f}, "
            f"{len(candidates)} evaluated{short}, {seconds:.1f} s ({elapsed:.1f} s total)", flush=True)
    if state_file is not None:
      state_file.save(generation=generation, rng=ops.rng_state(), population=[list(p) for p in population],
                      top_k=[list(x.choices) for x in top], cache=[x.to_dict() for x in candidates],
                      history=history, elapsed_seconds=elapsed)

  ranked = result_lib.rank(candidates)
  return result_lib.SearchResult(
      method="evolutionary", space_name=space.name, space_fingerprint=space.fingerprint(), best=ranked[0],
      top_k=ranked[:c.top_k], candidates=candidates, history=history,
      budget=None if budget is None else budget.get_config(), config=config.get_config(),
      trace_counts={"evaluator": evaluator.trace_count, "population_ops": ops.trace_count}, seconds=elapsed,
      extra={"num_calibration_images": int(np.prod(evaluator.data.calibration_images.shape[:2])),
             "num_eval_images": evaluator.data.num_eval_images,
             "choice_ranges": [list(r) for r in ops.choice_ranges]})
