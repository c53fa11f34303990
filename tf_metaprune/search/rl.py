"""Constrained reinforcement learning (AMC, He et al. 2018; PPO-Lagrangian flavour).

The idea: an agent walks the genes of a network in order and chooses each
one's width; at the end of the walk (an *episode*) the structure is scored
and the score is the reward. The budget is respected *by construction*:
before each choice the action is clipped so that the genes still to come,
at their smallest widths, can still meet the budget (AMC's action clipping).
Budgets that cannot be clipped -- a measured latency with no lookup table,
or any budget in `constraint="lagrangian"` mode -- are enforced instead by a
Lagrange multiplier `lambda` that penalises the reward by
`lambda * (value / bound - 1)` and grows while episodes overshoot (dual
ascent, as in PPO-Lagrangian).

Reward: top-1 accuracy on the held-out search split after BN recalibration,
with a trained `PruningNet`'s (or slimmable network's) weights
(`calibration.Evaluator`) -- an episode needs no training. Rewards are
cached per structure.

The agent (kept small and readable, numpy only):

* state per step (8 numbers): step / genes, base width / widest base width,
  the gene's share of the full MACs, MACs already removed, MACs share of the
  genes still to come, the previous action, the clipped upper bound of this
  action, and the budget's fraction of the full MACs;
* policy: MLP `8 -> hidden -> hidden -> 1` (tanh, sigmoid output = the mean
  keep ratio in [0, 1]; AMC uses 300-300), Gaussian exploration whose width
  decays geometrically per episode from `sigma` to `min_sigma` (AMC's
  truncated-normal noise);
* action a in [0, 1] -> choice `round(a * (num_choices - 1))`, then clipped;
* REINFORCE with a moving-average baseline, Adam, one update every
  `episodes_per_update` episodes. (AMC's DDPG needs a critic and a replay
  buffer; with rewards only at the end of an episode and a few hundred
  episodes, REINFORCE with a baseline learns as well here and is a third of
  the code.)

The whole state (policy, Adam moments, RNG, baseline, lambda, episodes) is
JSON; `state_path` makes a search resume where it stopped.

Example:

  >>> result = rl.reinforce(net, splits, FlopsBudget.from_ratio(space, 0.5), RLConfig(episodes=200))
"""

import dataclasses
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from tf_metaprune import budgets as budgets_lib
from tf_metaprune import io as io_lib
from tf_metaprune import space as space_lib
from tf_metaprune.search import _common
from tf_metaprune.search import registry
from tf_metaprune.search import result as result_lib

_STATE_FORMAT = "tf_metaprune.RLState"
_CONSTRAINTS = ("auto", "clip", "lagrangian")
_NUM_FEATURES = 8


@registry.register("rl", order=3)
@dataclasses.dataclass(frozen=True)
class RLConfig(_common.FrozenConfig):
  """Settings of the constrained-RL searcher.

  Attributes:
    episodes: episodes (structures proposed) in all (AMC: about 800).
    episodes_per_update: episodes per policy-gradient update.
    hidden_units: width of the policy's two hidden layers (AMC: 300).
    learning_rate: Adam step size of the policy.
    sigma: initial exploration noise (std of the action in [0, 1]).
    sigma_decay: the noise is multiplied by this after every episode (AMC:
      0.95 after its warm-up)...
    min_sigma: ... down to this floor.
    baseline_decay: the reward baseline is an exponential moving average
      with this decay.
    constraint: "auto" (clip FLOPs, params and lookup-table latency bounds;
      the Lagrangian penalty for any other predictor), "clip" (clip every
      bound: the budget must be monotone in the widths) or "lagrangian"
      (penalise every bound, clip none).
    lagrange_lr: step size of the multiplier's dual ascent (per update, on
      the mean relative overshoot `value / bound - 1`).
    seed: seeds the policy's initialization and exploration.

  Example:

    >>> RLConfig.from_config(RLConfig(episodes=50).get_config()) == RLConfig(episodes=50)
    True
  """
  episodes: int = 300
  episodes_per_update: int = 5
  hidden_units: int = 64
  learning_rate: float = 0.01
  sigma: float = 0.5
  sigma_decay: float = 0.99
  min_sigma: float = 0.05
  baseline_decay: float = 0.9
  constraint: str = "auto"
  lagrange_lr: float = 1.0
  seed: int = 0

  def __post_init__(self):
    own = "RLConfig"
    for name, low in (("episodes", 1), ("episodes_per_update", 1), ("hidden_units", 1), ("seed", 0)):
      object.__setattr__(self, name, _common.check_int(own, name, getattr(self, name), low))
    object.__setattr__(self, "learning_rate", _common.check_float(own, "learning_rate", self.learning_rate, 0.0,
                                                                  float("inf")))
    object.__setattr__(self, "sigma", _common.check_float(own, "sigma", self.sigma, 0.0, 1.0))
    object.__setattr__(self, "min_sigma", _common.check_float(own, "min_sigma", self.min_sigma, 0.0, 1.0))
    object.__setattr__(self, "sigma_decay", _common.check_float(own, "sigma_decay", self.sigma_decay, 0.0, 1.0))
    if self.min_sigma > self.sigma:
      raise ValueError(f"RLConfig(sigma={self.sigma!r}, min_sigma={self.min_sigma!r}): min_sigma is above sigma; "
                       "lower min_sigma or raise sigma")
    object.__setattr__(self, "baseline_decay", _common.check_float(own, "baseline_decay", self.baseline_decay, 0.0,
                                                                   1.0, low_open=False))
    if self.constraint not in _CONSTRAINTS:
      raise ValueError(f"RLConfig(constraint={self.constraint!r}): choose one of {_CONSTRAINTS}")
    object.__setattr__(self, "lagrange_lr", _common.check_float(own, "lagrange_lr", self.lagrange_lr, 0.0,
                                                                float("inf"), low_open=False))

  needs_pruning_net = True
  uses_given_pruning_net = True

  def run(self, context: _common.SearchContext) -> result_lib.SearchResult:
    """The searcher contract: `reinforce` with these settings, resuming `rl_state.json`."""
    return reinforce(context.pruning_net, context.search_data, context.budget, self,
                     state_path=context.state_file("rl_state.json"), verbose=context.progress)


# ---------------------------------------------------------------------------------------------
# The policy: a numpy MLP with a hand-written backward pass and Adam.


class Policy:
  """Gaussian policy `a ~ N(mu(state), sigma)`, `mu = sigmoid(MLP(state))`, trained by REINFORCE.

  Args:
    num_features: state size.
    hidden_units: hidden width (two tanh layers).
    rng: `np.random.Generator` for the initialization.
  """

  _NAMES = ("w1", "b1", "w2", "b2", "w3", "b3")

  def __init__(self, num_features, hidden_units, rng):
    h = hidden_units
    self.params = {
        "w1": rng.normal(0, 1 / np.sqrt(num_features), (num_features, h)), "b1": np.zeros(h),
        "w2": rng.normal(0, 1 / np.sqrt(h), (h, h)), "b2": np.zeros(h),
        "w3": rng.normal(0, 0.01, (h,)), "b3": np.zeros(())}
    self.m = {k: np.zeros_like(v) for k, v in self.params.items()}
    self.v = {k: np.zeros_like(v) for k, v in self.params.items()}
    self.t = 0

  def mean(self, states):
    """(mu [N], cache) for states [N, F]."""
    p = self.params
    h1 = np.tanh(states @ p["w1"] + p["b1"])
    h2 = np.tanh(h1 @ p["w2"] + p["b2"])
    mu = 1.0 / (1.0 + np.exp(-(h2 @ p["w3"] + p["b3"])))
    return mu, (states, h1, h2, mu)

  def update(self, states, actions, advantages, sigma, learning_rate):
    """One Adam step on `-sum(advantage * log N(action; mu(state), sigma))`.

    Returns:
      The loss before the step (a float).
    """
    mu, (s, h1, h2, _) = self.mean(states)
    loss = float(-np.sum(advantages * -(actions - mu) ** 2 / (2 * sigma ** 2)))
    dmu = -advantages * (actions - mu) / sigma ** 2          # d loss / d mu
    dz = dmu * mu * (1 - mu)                                 # through the sigmoid
    p = self.params
    grads = {"w3": h2.T @ dz, "b3": np.sum(dz)}
    dh2 = np.outer(dz, p["w3"]) * (1 - h2 ** 2)
    grads.update(w2=h1.T @ dh2, b2=dh2.sum(0))
    dh1 = dh2 @ p["w2"].T * (1 - h1 ** 2)
    grads.update(w1=s.T @ dh1, b1=dh1.sum(0))
    self.t += 1
    for k in self._NAMES:
      self.m[k] = 0.9 * self.m[k] + 0.1 * grads[k]
      self.v[k] = 0.999 * self.v[k] + 0.001 * grads[k] ** 2
      mh = self.m[k] / (1 - 0.9 ** self.t)
      vh = self.v[k] / (1 - 0.999 ** self.t)
      p[k] = p[k] - learning_rate * mh / (np.sqrt(vh) + 1e-8)
    return loss

  def get_state(self):
    arr = lambda d: {k: np.asarray(v).tolist() for k, v in d.items()}  # pylint: disable=unnecessary-lambda-assignment
    return {"params": arr(self.params), "m": arr(self.m), "v": arr(self.v), "t": self.t}

  def set_state(self, state):
    for key in ("params", "m", "v"):
      setattr(self, key, {k: np.array(v, np.float64) for k, v in state[key].items()})
    self.t = int(state["t"])


# ---------------------------------------------------------------------------------------------
# The environment: genes in order, clipped actions.


def _bound(leaf):
  """The upper bound of a single budget (MFLOPs, params or ms), or None if it has no `value`."""
  if not callable(getattr(leaf, "value", None)):
    return None
  for name in ("max_mflops", "max_params", "max_ms", "max_value"):
    if getattr(leaf, name, None) is not None:
      return float(getattr(leaf, name))
  return None


def _leaf_kind(leaf, mode):
  """"clip" or "penalty" for one budget leaf."""
  if mode == "clip":
    return "clip"
  if mode == "lagrangian":
    return "penalty"
  if isinstance(leaf, (budgets_lib.FlopsBudget, budgets_lib.ParamsBudget)):
    return "clip"
  if isinstance(leaf, budgets_lib.LatencyBudget) and isinstance(leaf.lut, budgets_lib.LatencyTable):
    return "clip"
  return "penalty"


class PruningEnv:
  """Walks the genes of a space; clips each action so the budget stays reachable.

  Args:
    space: the `SearchSpace`.
    budget: a `Budget` or None.
    constraint: "auto", "clip" or "lagrangian" (see `RLConfig`).

  Attributes:
    clipped: the budget leaves enforced by clipping.
    penalized: the leaves enforced by the Lagrangian penalty.
  """

  def __init__(self, space, budget, constraint="auto"):
    self.space = space
    self.budget = budget
    leaves = [] if budget is None else budget.leaves()
    self.clipped = [l for l in leaves if _leaf_kind(l, constraint) == "clip"]
    self.penalized = [l for l in leaves if _leaf_kind(l, constraint) == "penalty"]
    for leaf in self.penalized:
      if _bound(leaf) is None:
        raise ValueError(f"the Lagrangian penalty needs a budget with value(space, structure) and a max bound; "
                         f"{leaf!r} has none; use constraint='clip'")
    full = space.largest()
    self.full_flops = float(space.mflops(full))
    self.num_genes = len(space.genes)
    self.max_base = max(g.base_channels for g in space.genes)
    smallest = space.smallest()
    self.gene_share = []
    for i in range(self.num_genes):
      t = list(full.choices)
      t[i] = 0
      self.gene_share.append((self.full_flops - space.mflops(space_lib.Structure(t))) / self.full_flops)
    self.smallest = smallest
    flops_leaf = [l for l in leaves if isinstance(l, budgets_lib.FlopsBudget)]
    self.budget_share = flops_leaf[0].max_mflops / self.full_flops if flops_leaf else 1.0

  def _fits(self, choices):
    s = space_lib.Structure(choices)
    for leaf in self.clipped:
      bound = _bound(leaf)
      ok = leaf.value(self.space, s) <= bound if bound is not None else leaf.is_feasible(self.space, s)
      if not ok:
        return False
    return True

  def max_choice(self, prefix):
    """The widest choice of gene `len(prefix)` that keeps the budget reachable (0 if none)."""
    i = len(prefix)
    rest = list(self.smallest.choices[i + 1:])
    for c in range(self.space.genes[i].num_choices - 1, 0, -1):
      if self._fits(list(prefix) + [c] + rest):
        return c
    return 0

  def state(self, prefix, prev_action, cmax):
    i = len(prefix)
    g = self.space.genes[i]
    partial = list(prefix) + list(self.space.largest().choices[i:])
    removed = (self.full_flops - self.space.mflops(space_lib.Structure(partial))) / self.full_flops
    rest = float(sum(self.gene_share[i + 1:]))
    return np.array([i / self.num_genes, g.base_channels / self.max_base, self.gene_share[i], removed, rest,
                     prev_action, cmax / max(1, g.num_choices - 1), self.budget_share], np.float64)

  def to_choice(self, gene, action, cmax):
    n = self.space.genes[gene].num_choices
    return int(min(cmax, int(round(float(np.clip(action, 0.0, 1.0)) * (n - 1)))))

  def overshoot(self, structure):
    """Sum over penalized leaves of `value / bound - 1` (negative: under budget)."""
    total = 0.0
    for leaf in self.penalized:
      total += leaf.value(self.space, structure) / _bound(leaf) - 1.0
    return total

  def feasible(self, structure):
    return self.budget is None or self.budget.is_feasible(self.space, structure)


# ---------------------------------------------------------------------------------------------
# The search.


def _identity(space, net, evaluator, budget, config):
  return {"space_fingerprint": space.fingerprint(), "net_fingerprint": _common.net_fingerprint(net),
          "data_fingerprint": _common.data_fingerprint(evaluator.data, evaluator.metric),
          "budget": None if budget is None else budget.get_config(), "config": config.get_config()}


def reinforce(net, search_data, budget=None, config: Optional[RLConfig] = None, *, state_path=None,
              latency_table=None, calibration_data=None, num_calibration_batches=4, verbose=1,
              **overrides) -> result_lib.SearchResult:
  """Searches a structure with a constrained policy-gradient agent (see the module docstring).

  Args:
    net: a trained `PruningNet` (MetaPruning's or AutoSlim's slimmable one)
      whose recalibrated accuracy is the reward.
    search_data: the held-out search split, as for `search.evolutionary`.
    budget: a `Budget` (or its config dict); None = unconstrained.
    config: an `RLConfig`.
    state_path: JSON of the whole search state, written after every update;
      an existing one of the same search is resumed (`episodes` may grow),
      one of another search is a ValueError and left untouched.
    latency_table: latency predictor recorded per candidate.
    calibration_data, num_calibration_batches: as for `search.evolutionary`.
    verbose: 1 prints a line per 10 updates.
    **overrides: `RLConfig` fields.

  Returns:
    A `SearchResult` (method "rl"): every distinct episode structure as a
    candidate (`generation` = its update), the best *feasible* one as `best`,
    one history row per update with "mean_reward", "sigma" and "lambda".

  Raises:
    ValueError: for a budget below the smallest structure (at once), a state
      file of another search, or if no episode met a penalized budget.
  """
  _common.check_net(net, "rl")
  config = _common.resolve_config(RLConfig, config, overrides, "rl")
  space = net.space
  budget = _common.check_budget(budget, space)
  lut = _common.latency_lut(budget, latency_table, space)
  evaluator = _common.make_evaluator(net, search_data, calibration_data, num_calibration_batches, "rl")
  env = PruningEnv(space, budget, config.constraint)
  rng = np.random.default_rng(config.seed)
  policy = Policy(_NUM_FEATURES, config.hidden_units, rng)
  identity = _identity(space, net, evaluator, budget, config)

  candidates, cache, history = [], {}, []
  episodes, baseline, lam, elapsed = [], None, 0.0, 0.0
  state_file = None if state_path is None else io_lib.StateFile(
      state_path, _STATE_FORMAT, identity, may_change=("config.episodes",), what="RL search state")
  state = None if state_file is None else state_file.load()
  if state is not None:
    try:
      policy.set_state(state["policy"])
      rng.bit_generator.state = state["rng"]
      candidates = [result_lib.Candidate.from_dict(c) for c in state["candidates"]]
      cache = {c.choices: c for c in candidates}
      history = list(state["history"])
      episodes = [dict(e) for e in state["episodes"]]
      baseline, lam, elapsed = state["baseline"], float(state["lambda"]), float(state["elapsed_seconds"])
    except (KeyError, TypeError, ValueError) as e:
      raise state_file.damaged(e) from None

  n_updates = -(-config.episodes // config.episodes_per_update)
  update = len(history)
  while len(episodes) < config.episodes:
    t0 = time.perf_counter()
    # A function of the episode count alone, so an extended (resumed) search continues the same schedule.
    sigma = max(config.min_sigma, config.sigma * config.sigma_decay ** len(episodes))
    batch_states, batch_actions, batch_adv, rewards, new = [], [], [], [], 0
    batch = min(config.episodes_per_update, config.episodes - len(episodes))
    for _ in range(batch):
      prefix, prev, states, actions = [], 1.0, [], []
      for i in range(env.num_genes):
        cmax = env.max_choice(prefix)
        s = env.state(prefix, prev, cmax)
        mu, _ = policy.mean(s[None])
        a = float(mu[0] + sigma * rng.standard_normal())
        prefix.append(env.to_choice(i, a, cmax))
        states.append(s)
        actions.append(a)
        prev = float(np.clip(a, 0, 1))
      structure = space_lib.Structure(prefix)
      if structure.choices not in cache:
        acc = float(evaluator.accuracy_tensor(tf.constant(structure.choices, tf.int32)))
        cand = _common.measure(space, structure.choices, acc, lut, update)
        cache[cand.choices] = cand
        candidates.append(cand)
        new += 1
      cand = cache[structure.choices]
      over = env.overshoot(structure)
      reward = cand.accuracy - lam * over
      episodes.append({"choices": list(structure.choices), "reward": reward, "overshoot": over,
                       "feasible": env.feasible(structure)})
      rewards.append(reward)
      batch_states.append(np.array(states))
      batch_actions.append(np.array(actions))
    if baseline is None:
      baseline = float(np.mean(rewards))
    # Advantages: reward minus the moving baseline, scaled by the batch's spread (when it has one).
    scale = float(np.std(rewards)) if len(rewards) > 1 and np.std(rewards) > 1e-6 else 1.0
    for ac, r in zip(batch_actions, rewards):
      batch_adv.append(np.full(len(ac), (r - baseline) / scale))
    loss = policy.update(np.concatenate(batch_states), np.concatenate(batch_actions), np.concatenate(batch_adv),
                         sigma, config.learning_rate)
    baseline = config.baseline_decay * baseline + (1 - config.baseline_decay) * float(np.mean(rewards))
    if env.penalized:
      recent = [e["overshoot"] for e in episodes[-batch:]]
      lam = max(0.0, lam + config.lagrange_lr * float(np.mean(recent)))
    seconds = time.perf_counter() - t0
    elapsed += seconds
    feasible = [c for c in candidates if env.feasible(c.structure)] or candidates
    best = result_lib.rank(feasible)[0]
    history.append(_common.history_entry(update, new, candidates, best, seconds, elapsed,
                                         mean_reward=float(np.mean(rewards)), sigma=float(sigma), loss=loss,
                                         **{"lambda": lam, "episodes": len(episodes)}))
    update += 1
    if verbose and (update % 10 == 0 or update == n_updates):
      print(f"[rl] update {update}/{n_updates}: mean reward {np.mean(rewards):.4f}, best {best.accuracy:.4f} "
            f"({best.mflops:.4g} MFLOPs), sigma {sigma:.3f}, lambda {lam:.3f}, {len(candidates)} evaluated, "
            f"{elapsed:.1f} s", flush=True)
    if state_file is not None:
      state_file.save(policy=policy.get_state(), rng=rng.bit_generator.state,
                      candidates=[c.to_dict() for c in candidates], history=history, episodes=episodes,
                      baseline=baseline, **{"lambda": lam, "elapsed_seconds": elapsed})

  feasible = [c for c in candidates if env.feasible(c.structure)]
  if not feasible:
    raise ValueError(f"no episode met {budget!r} in {len(episodes)} episodes (the Lagrangian penalty did not "
                     "pull the policy inside the budget in time); raise episodes or lagrange_lr, or use "
                     "constraint='clip' for a monotone budget")
  ranked = result_lib.rank(feasible)
  return result_lib.SearchResult(
      method="rl", space_name=space.name, space_fingerprint=space.fingerprint(), best=ranked[0],
      top_k=ranked[:10], candidates=candidates, history=history,
      budget=None if budget is None else budget.get_config(), config=config.get_config(),
      trace_counts={"evaluator": evaluator.trace_count}, seconds=elapsed,
      extra={"episodes": episodes, "clipped_budgets": [repr(l) for l in env.clipped],
             "penalized_budgets": [repr(l) for l in env.penalized], "lambda": lam,
             "num_eval_images": evaluator.data.num_eval_images,
             "num_calibration_images": int(np.prod(evaluator.data.calibration_images.shape[:2]))})
