"""Host timing: a table measured on this machine (`measure_latency_table`) and the check of a table against
whole models (`prediction_error`)."""

import os
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

from tf_metaprune import budgets as budgets_lib
from tf_metaprune import space as space_lib
from tf_metaprune.latency_lut.models import _convert_plan
from tf_metaprune.latency_lut.models import _Progress
from tf_metaprune.latency_lut.models import _reference_structure
from tf_metaprune.latency_lut.models import _whole_model_flatbuffer
from tf_metaprune.latency_lut.plan import _check_quantization
from tf_metaprune.latency_lut.plan import _check_space
from tf_metaprune.latency_lut.plan import _plan
from tf_metaprune.latency_lut.plan import table_from_timings
from tf_metaprune.latency_lut.tables import EMPTY_MODEL
from tf_metaprune.latency_lut.tables import MeasuredLatencyTable
from tf_metaprune.latency_lut.tables import OVERHEAD_MODEL
from tf_metaprune.latency_lut.tables import REFERENCE_MODEL
from tflite_export.benchmark import benchmark
from tflite_export.benchmark import device_description
from tflite_export.benchmark import HOST_NOTES
from tflite_export.benchmark import SOURCE_HOST

# Pause between the last conversion and the first timing (spinning TF threads).
_SETTLE_S = 0.5


class _Timer:
  """Times models in interleaved rounds; keeps each model's fastest round median.

  Conversion first, timing after: TensorFlow's thread pools keep spinning
  for a moment after a conversion, and timing right after one measured some
  layers up to ~50% slow. Every round times every model once, in a new
  shuffled order, so slow stretches caused by other jobs on the machine hit
  all models alike; the fastest of the rounds is kept.
  """

  def __init__(self, num_runs, num_warmup_runs, num_threads):
    self.kwargs = dict(num_runs=num_runs, num_warmup_runs=num_warmup_runs, num_threads=num_threads)

  def rounds(self, flatbuffers: Dict[Any, bytes], num_rounds: int, seed: int = 0,
             progress: bool = False) -> Dict[Any, float]:
    names = list(flatbuffers)
    rng = np.random.default_rng(seed)
    best = {name: float("inf") for name in names}
    status = _Progress(num_rounds * len(names), progress, "timings")
    time.sleep(_SETTLE_S)
    for r in range(num_rounds):
      for j, i in enumerate(rng.permutation(len(names))):
        ms = benchmark(flatbuffers[names[i]], **self.kwargs).latency_ms
        best[names[i]] = min(best[names[i]], ms)
        status.update(r * len(names) + j + 1)
    return best


def _check_timing_args(num_runs, num_warmup_runs, num_threads, num_rounds):
  def bad(value, low):
    return isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low
  if bad(num_runs, 1):
    raise ValueError(f"num_runs={num_runs!r} must be an int >= 1")
  if bad(num_warmup_runs, 0):
    raise ValueError(f"num_warmup_runs={num_warmup_runs!r} must be an int >= 0")
  if bad(num_threads, 1):
    raise ValueError(f"num_threads={num_threads!r} must be an int >= 1 (1 gives the most repeatable numbers)")
  if bad(num_rounds, 1):
    raise ValueError(f"num_rounds={num_rounds!r} must be an int >= 1 (timing rounds; the fastest is kept)")


def measure_latency_table(
    space: space_lib.SearchSpace,
    quantization: str = "int8",
    num_runs: int = 200,
    num_warmup_runs: int = 20,
    num_threads: int = 1,
    grid_size: Optional[int] = 6,
    num_rounds: int = 7,
    validation_structures: Optional[Sequence[Any]] = None,
    progress: bool = True,
    seed: int = 0,
    device: Optional[str] = None,
    calibrate: bool = True,
) -> MeasuredLatencyTable:
  """Times every layer of a space on this host and returns its latency table.

  See the module docstring for what is measured and how. Every one-layer
  model is converted with `tflite_export.convert` (the slow part: about 0.5 s
  each), then all are timed with `tflite_export.benchmark` in `num_rounds`
  interleaved rounds (a few seconds each); an entry is the fastest round's
  median. Identical layer signatures are measured once. The whole model of
  `space.uniform(0.5)` is timed in the same rounds as a reference
  (`measurement["reference_ms"]`): `prediction_error` times it again to see
  how much the machine's speed has drifted since.

  Args:
    space: the `tf_metaprune.SearchSpace`.
    quantization: the number format the pruned model will ship in (one of
      `tflite_export.QUANTIZATION_MODES`); "int8" layers are calibrated on
      random images. On x86 hosts int8 is not faster than float32.
    num_runs, num_warmup_runs, num_threads: as in `tflite_export.benchmark`.
      Use the thread count the app will use.
    grid_size: at most this many channel counts per axis are measured per
      node; the other (cin, cout) pairs are interpolated bilinearly. None
      measures every pair (slow for MobileNets: thousands of models).
    num_rounds: timing rounds over all models (the fastest median of each is
      kept). Timing is cheap next to conversion.
    validation_structures: structures whose whole models are timed in the
      same rounds as the layers, under the same conditions; their prediction
      error is stored in `measurement["validation"]` (same rows as
      `prediction_error`). Unlike a later `prediction_error`, this is free of
      drift in the machine's speed between the two measurements.
    progress: print progress lines to stderr.
    seed: seed of the random calibration images and the timing order.
    device: label stored in the table (default: `device_description()` plus
      threads and format).
    calibrate: correct the overhead with the whole reference model timed in
      the same rounds (see `table_from_timings`); False keeps the raw sum.

  Returns:
    A `MeasuredLatencyTable` (a `tf_metaprune.budgets.LatencyTable`) covering
    exactly `LatencyTable.required_keys(space)`, in milliseconds.

  Raises:
    ValueError: for an unknown `quantization`, a bad `grid_size` or timing
      argument.

  Example:

    table = measure_latency_table(space, quantization="float32", grid_size=4)
    table.is_measured("stem", 1, 8), table.predict_ms(space, space.largest())
  """
  _check_space(space)
  _check_quantization(quantization)
  _check_timing_args(num_runs, num_warmup_runs, num_threads, num_rounds)
  start = time.monotonic()
  load_before = _load_average()
  plan = _plan(space, grid_size)
  validation = [space.validate(v) for v in (validation_structures or ())]
  rng = np.random.default_rng(seed + 1)
  flatbuffers = {f"validation_{i}": _whole_model_flatbuffer(space, v, quantization, rng)
                 for i, v in enumerate(validation)}
  flatbuffers.update(_convert_plan(space, plan, quantization, seed, progress))
  times = _Timer(num_runs, num_warmup_runs, num_threads).rounds(flatbuffers, num_rounds, seed, progress)
  empty_ms, overhead_model_ms = times.pop(EMPTY_MODEL), times.pop(OVERHEAD_MODEL)
  reference_ms = times.pop(REFERENCE_MODEL)
  validation_ms = [times.pop(f"validation_{i}") for i in range(len(validation))]
  if device is None:
    device = f"{device_description()}, {num_threads} thread(s), {quantization}"
  measurement = {"method": SOURCE_HOST, "quantization": quantization, "num_threads": num_threads,
                 "num_runs": num_runs, "num_warmup_runs": num_warmup_runs, "num_rounds": num_rounds,
                 "statistic": f"median of num_runs invokes, fastest of {num_rounds} rounds",
                 "reference_structure": list(_reference_structure(space).choices), "reference_ms": reference_ms,
                 "seconds": round(time.monotonic() - start, 1),
                 "load_average": {"before": load_before, "after": _load_average()}}
  table = table_from_timings(space, times, empty_ms, overhead_model_ms, plan.grid_size, device, measurement,
                             calibrate=calibrate)
  if validation:
    table.measurement["validation"] = _error_report(space, table, validation, validation_ms)
    table.measurement["validation"]["notes"] = (
        "whole models timed in the same interleaved rounds as the table's layers: same conditions")
  return table


def _error_report(space, table, structures, measured_ms, speed_ratio=None) -> Dict[str, Any]:
  """Per-structure predicted vs measured ms, and mean/max absolute relative errors."""
  rows = []
  for s, measured in zip(structures, measured_ms):
    predicted = table.predict_ms(space, s)
    corrected = predicted * (speed_ratio or 1.0)
    rows.append({"choices": list(s.choices), "mflops": space.mflops(s), "predicted_ms": predicted,
                 "measured_ms": measured, "relative_error": (predicted - measured) / measured,
                 "drift_corrected_relative_error": (corrected - measured) / measured})
  errors = np.abs([r["relative_error"] for r in rows])
  corrected_errors = np.abs([r["drift_corrected_relative_error"] for r in rows])
  return {"structures": rows, "mean_abs_relative_error": float(errors.mean()),
          "max_abs_relative_error": float(errors.max()),
          "drift_corrected_mean_abs_relative_error": float(corrected_errors.mean()),
          "drift_corrected_max_abs_relative_error": float(corrected_errors.max()), "speed_ratio": speed_ratio}


def _load_average() -> Optional[List[float]]:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except (AttributeError, OSError):
    return None


def prediction_error(
    space: space_lib.SearchSpace,
    table: budgets_lib.LatencyTable,
    structures: Iterable[Any],
    quantization: Optional[str] = None,
    num_runs: Optional[int] = None,
    num_warmup_runs: Optional[int] = None,
    num_threads: Optional[int] = None,
    num_rounds: Optional[int] = None,
    representative_data: Optional[Any] = None,
    seed: int = 0,
) -> Dict[str, Any]:
  """Measures whole models on this host and compares them with the table's predictions.

  Each structure is rebuilt (`tf_metaprune.rebuild`, fresh weights: latency
  does not depend on their values), converted in the table's format and timed
  as the table's layers were (median of `num_runs`, fastest of `num_rounds`
  interleaved rounds). Only meaningful for a table measured on this host.

  Host timings drift when other jobs load the machine. A table from
  `measure_latency_table` records the time of a reference model (the whole
  `space.uniform(0.5)`); it is timed again here, in the same rounds, and
  `speed_ratio` = now / then. `relative_error` is the plain comparison;
  `drift_corrected_relative_error` compares `predicted * speed_ratio`
  instead, i.e. what the error would be had the machine been as busy as
  while the table was measured.

  Args:
    space: the `SearchSpace` the table was measured for.
    table: a `LatencyTable` (e.g. from `measure_latency_table`).
    structures: structures of the space (or choice lists).
    quantization: format to convert to; None takes it from a
      `MeasuredLatencyTable`'s record.
    num_runs, num_warmup_runs, num_threads, num_rounds: None takes them from
      the table's record (else 200, 20, 1, 7).
    representative_data: int8 calibration images (None: random images; the
      timing does not depend on them).
    seed: seed of the random calibration images and the timing order.

  Returns:
    A JSON-able dict: `"structures"`, one row per structure with `choices`,
    `mflops`, `predicted_ms`, `measured_ms`, `relative_error`
    ((predicted - measured) / measured) and `drift_corrected_relative_error`;
    `mean_abs_relative_error`, `max_abs_relative_error`, their
    drift-corrected twins, `speed_ratio` (None without a reference),
    `quantization`, `num_threads`, `num_rounds`, `device`, `load_average` and
    `notes`.

  Raises:
    ValueError: if the table does not cover the space, no structure is given,
      or the format is unknown.

  Example:

    report = prediction_error(space, table, [space.uniform(0.5), space.random(0)])
    print(f"{100 * report['mean_abs_relative_error']:.1f}% mean error")
  """
  _check_space(space)
  table.validate(space)
  record = getattr(table, "measurement", None) or {}
  if quantization is None:
    quantization = record.get("quantization")
    if quantization is None:
      raise ValueError("prediction_error(quantization=None) needs a MeasuredLatencyTable that records its "
                       "format; pass quantization='int8' or 'float32' (the table's format)")
  _check_quantization(quantization)

  def setting(value, key, default):
    return int(record.get(key, default)) if value is None else value

  num_runs = setting(num_runs, "num_runs", 200)
  num_warmup_runs = setting(num_warmup_runs, "num_warmup_runs", 20)
  num_threads = setting(num_threads, "num_threads", 1)
  num_rounds = setting(num_rounds, "num_rounds", 7)
  _check_timing_args(num_runs, num_warmup_runs, num_threads, num_rounds)
  structures = [space.validate(s) for s in structures]
  if not structures:
    raise ValueError("prediction_error(structures=[]) needs at least one structure, e.g. [space.uniform(0.5)]")
  load_before = _load_average()
  rng = np.random.default_rng(seed)
  flatbuffers = {i: _whole_model_flatbuffer(space, s, quantization, rng, representative_data)
                 for i, s in enumerate(structures)}
  reference_ms = record.get("reference_ms")
  same_host = record.get("method") == SOURCE_HOST and record.get("quantization") == quantization
  if reference_ms and same_host:
    reference = space.validate(record["reference_structure"])
    flatbuffers[REFERENCE_MODEL] = _whole_model_flatbuffer(space, reference, quantization, rng,
                                                           representative_data)
  measured = _Timer(num_runs, num_warmup_runs, num_threads).rounds(flatbuffers, num_rounds, seed)
  speed_ratio = measured[REFERENCE_MODEL] / reference_ms if REFERENCE_MODEL in measured else None
  report = _error_report(space, table, structures, [measured[i] for i in range(len(structures))], speed_ratio)
  report.update({"quantization": quantization, "num_threads": num_threads, "num_runs": num_runs,
                 "num_rounds": num_rounds, "device": device_description(),
                 "load_average": {"before": load_before, "after": _load_average()}, "notes": HOST_NOTES})
  return report

