"""What every searcher returns: `SearchResult`, a JSON-able record of one search.

A searcher speaks two words: a `SearchSpace` in, a `Structure` out. The
`SearchResult` carries that structure together with what was measured about
it (held-out accuracy after BN recalibration, MFLOPs, params, predicted
latency), the best few runners-up, every candidate ever evaluated and the
per-generation history, so a search can be plotted (`search.plot_pareto`),
compared with the uniform baseline and rebuilt without pasting an encoding by
hand (a weak point of the reference code).

Example:

  >>> result = tf_metaprune.search.evolutionary(net, splits.search, budget)
  >>> result.save("/tmp/search.json")
  >>> s = SearchResult.load("/tmp/search.json").structure(space)   # checked against the space
  >>> model = tf_metaprune.rebuild(space, s)
"""

import dataclasses
import json
from typing import Any, Dict, List, Optional, Tuple

from tf_metaprune import io as io_lib
from tf_metaprune import space as space_lib

_RESULT_FORMAT = "tf_metaprune.SearchResult"


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One evaluated structure.

  Attributes:
    choices: one choice index per gene (a `Structure`'s choices).
    accuracy: top-1 accuracy on the held-out search split, in [0, 1], after BN
      recalibration, with the PruningNet's generated weights -- or, with
      another `calibration.SearchMetric`, its score (the metric's value when
      higher is better, minus it for a loss or an error), so that higher is
      always better.
    mflops: millions of multiply-adds for one image.
    params: weights of the rebuilt plain model.
    latency_ms: predicted latency (None without a latency table).
    generation: the generation that created it (0 = the random start).
    loss: mean cross-entropy on the search split (the tie-break of equal
      accuracies; None for searchers that do not measure it); with another
      `SearchMetric`, the metric's value itself.
  """
  choices: Tuple[int, ...]
  accuracy: float
  mflops: float
  params: int
  latency_ms: Optional[float] = None
  generation: int = 0
  loss: Optional[float] = None

  def __post_init__(self):
    object.__setattr__(self, "choices", tuple(int(c) for c in self.choices))

  @property
  def structure(self) -> space_lib.Structure:
    return space_lib.Structure(self.choices)

  def to_dict(self) -> Dict[str, Any]:
    d = {"choices": list(self.choices), "accuracy": float(self.accuracy), "mflops": float(self.mflops),
         "params": int(self.params), "generation": int(self.generation)}
    if self.latency_ms is not None:
      d["latency_ms"] = float(self.latency_ms)
    if self.loss is not None:
      d["loss"] = float(self.loss)
    return d

  @classmethod
  def from_dict(cls, d) -> "Candidate":
    return cls(choices=tuple(d["choices"]), accuracy=float(d["accuracy"]), mflops=float(d["mflops"]),
               params=int(d["params"]), latency_ms=d.get("latency_ms"), generation=int(d.get("generation", 0)),
               loss=None if d.get("loss") is None else float(d["loss"]))


def rank(candidates) -> List[Candidate]:
  """Candidates best first: higher accuracy, then lower loss, then evaluated earlier.

  FLOPs never break a tie. The budget already says how many FLOPs are
  allowed; preferring fewer among equally accurate structures would pick
  one far below the budget whenever the accuracy is coarse (400 images:
  0.25-pt steps), which then loses to the uniform baseline for want of
  capacity, not of a better shape. The reference (MetaPruning) ranks by
  top-1 error alone; the loss is the continuous tie-break.
  """
  def key(i):
    loss = candidates[i].loss
    return (-candidates[i].accuracy, float("inf") if loss is None else loss, i)
  order = sorted(range(len(candidates)), key=key)
  return [candidates[i] for i in order]


@dataclasses.dataclass
class SearchResult:
  """The outcome of one search (evolutionary, uniform baseline, ...).

  Attributes:
    method: "evolutionary", "uniform", ...
    space_name, space_fingerprint: the `SearchSpace` searched
      (`structure(space)` refuses another space).
    best: the best `Candidate`.
    top_k: the best candidates, best first (`best` is `top_k[0]`).
    candidates: every evaluated candidate, in evaluation order.
    history: one dict per generation: "generation", "evaluations" (so far),
      "new_candidates", "best_accuracy", "mean_top_k_accuracy", "best_mflops",
      "seconds" (that generation), "elapsed_seconds".
    budget: the budget's `get_config()` (None if unconstrained).
    config: the searcher's settings (`get_config()`).
    trace_counts: how many times each `tf.function` was traced (1 each is the
      goal: no retracing per candidate).
    seconds: wall time of the search (summed over resumed runs).
    extra: method-specific values (e.g. the uniform baseline's "width_ratio").
  """
  method: str
  space_name: str
  space_fingerprint: str
  best: Candidate
  top_k: List[Candidate]
  candidates: List[Candidate]
  history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
  budget: Optional[Dict[str, Any]] = None
  config: Optional[Dict[str, Any]] = None
  trace_counts: Dict[str, int] = dataclasses.field(default_factory=dict)
  seconds: float = 0.0
  extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

  # ---- the winner ----------------------------------------------------------------------------
  @property
  def best_structure(self) -> space_lib.Structure:
    return self.best.structure

  @property
  def best_accuracy(self) -> float:
    return self.best.accuracy

  @property
  def best_mflops(self) -> float:
    return self.best.mflops

  @property
  def best_params(self) -> int:
    return self.best.params

  @property
  def best_latency_ms(self) -> Optional[float]:
    return self.best.latency_ms

  @property
  def num_evaluations(self) -> int:
    return len(self.candidates)

  def structure(self, space) -> space_lib.Structure:
    """The best structure, checked against `space`.

    Raises:
      ValueError: if `space` is not the space this result was searched in.
    """
    if space.fingerprint() != self.space_fingerprint:
      raise ValueError(f"this result was searched in space {self.space_name!r} (fingerprint "
                       f"{self.space_fingerprint}), not in {space.name!r} (fingerprint {space.fingerprint()}); "
                       "pass the space the search ran on")
    return space.validate(self.best.choices)

  def summary(self) -> str:
    """One line: method, accuracy, MFLOPs, params (and latency), evaluations."""
    lat = "" if self.best.latency_ms is None else f", {self.best.latency_ms:.3f} ms"
    return (f"{self.method}: accuracy {self.best.accuracy:.4f} at {self.best.mflops:.4g} MFLOPs, "
            f"{self.best.params} params{lat} ({self.num_evaluations} evaluated, {self.seconds:.1f} s)")

  # ---- JSON ----------------------------------------------------------------------------------
  def to_dict(self) -> Dict[str, Any]:
    return {"format": _RESULT_FORMAT, "version": 1, "method": self.method, "space_name": self.space_name,
            "space_fingerprint": self.space_fingerprint, "best": self.best.to_dict(),
            "top_k": [c.to_dict() for c in self.top_k], "candidates": [c.to_dict() for c in self.candidates],
            "history": [dict(h) for h in self.history], "budget": self.budget, "config": self.config,
            "trace_counts": dict(self.trace_counts), "seconds": float(self.seconds), "extra": dict(self.extra)}

  @classmethod
  def from_dict(cls, d) -> "SearchResult":
    if not isinstance(d, dict) or d.get("format") != _RESULT_FORMAT:
      got = d.get("format") if isinstance(d, dict) else type(d).__name__
      raise ValueError(f"this JSON is not a tf_metaprune search result (format={got!r}); "
                       "write results with SearchResult.save / to_json")
    return cls(method=d["method"], space_name=d["space_name"], space_fingerprint=d["space_fingerprint"],
               best=Candidate.from_dict(d["best"]), top_k=[Candidate.from_dict(c) for c in d["top_k"]],
               candidates=[Candidate.from_dict(c) for c in d["candidates"]],
               history=[dict(h) for h in d.get("history", [])],
               budget=d.get("budget"), config=d.get("config"), trace_counts=dict(d.get("trace_counts", {})),
               seconds=float(d.get("seconds", 0.0)), extra=dict(d.get("extra", {})))

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=1)

  @classmethod
  def from_json(cls, text) -> "SearchResult":
    try:
      data = json.loads(text)
    except (TypeError, ValueError) as e:
      raise ValueError(f"cannot parse search result JSON: {e}") from None
    return cls.from_dict(data)

  def save(self, path):
    """Writes the result as JSON, atomically, to `path`."""
    io_lib.write_text_atomic(path, self.to_json() + "\n")

  @classmethod
  def load(cls, path) -> "SearchResult":
    """Reads a result written by `save`.

    Raises:
      ValueError: naming the file, if it is missing, not JSON or not a search
        result.
    """
    data = io_lib.read_json(path, "search result")
    try:
      return cls.from_dict(data)
    except ValueError as e:
      raise ValueError(f"search result {path!r}: {e}") from None
    except (KeyError, TypeError) as e:
      raise ValueError(f"search result {path!r} is damaged ({type(e).__name__}: {e}); write results with "
                       "SearchResult.save") from None
