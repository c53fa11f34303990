"""The phone round trip: write the one-layer models for a device, read back what it printed."""

import os
from typing import Optional

from tf_metaprune import io as io_lib
from tf_metaprune import space as space_lib
from tf_metaprune.latency_lut.models import _convert_plan
from tf_metaprune.latency_lut.models import _reference_structure
from tf_metaprune.latency_lut.plan import _check_quantization
from tf_metaprune.latency_lut.plan import _check_space
from tf_metaprune.latency_lut.plan import _plan
from tf_metaprune.latency_lut.plan import table_from_timings
from tf_metaprune.latency_lut.tables import EMPTY_MODEL
from tf_metaprune.latency_lut.tables import MeasuredLatencyTable
from tf_metaprune.latency_lut.tables import OVERHEAD_MODEL
from tf_metaprune.latency_lut.tables import REFERENCE_MODEL
from tflite_export.benchmark import parse_benchmark_model_output
from tflite_export.convert import save

_MANIFEST = "manifest.json"
_MANIFEST_FORMAT = "tflite_export.LayerModels"


def write_layer_models(
    space: space_lib.SearchSpace,
    output_dir: str,
    quantization: str = "int8",
    grid_size: Optional[int] = 6,
    seed: int = 0,
    progress: bool = True,
) -> str:
  """Writes the one-layer `.tflite` models of a table, to time them on a phone.

  The same models `measure_latency_table` times on the host: one file per
  layer signature (`<signature>.tflite`), plus `empty.tflite` (the per-invoke
  cost subtracted from every layer) and `overhead.tflite` (the whole model's
  fixed cost), and `manifest.json` listing them. Time each file with
  `benchmark_model` into `<same name>.txt` beside it (see the module
  docstring), then call `latency_table_from_logs`.

  Args:
    space: the `SearchSpace`.
    output_dir: folder to write (created if needed).
    quantization, grid_size, seed, progress: as in `measure_latency_table`.

  Returns:
    The path of `manifest.json`.

  Raises:
    ValueError: for an unknown `quantization` or a bad `grid_size`.
  """
  _check_space(space)
  _check_quantization(quantization)
  plan = _plan(space, grid_size)
  flatbuffers = _convert_plan(space, plan, quantization, seed, progress)
  for name, flatbuffer in flatbuffers.items():
    save(flatbuffer, os.path.join(output_dir, name + ".tflite"))
  path = os.path.join(output_dir, _MANIFEST)
  io_lib.write_json_atomic(path, {
      "format": _MANIFEST_FORMAT, "version": 1, "space": space.name, "space_fingerprint": space.fingerprint(),
      "quantization": quantization, "grid_size": grid_size, "empty_model": EMPTY_MODEL,
      "overhead_model": OVERHEAD_MODEL, "reference_model": REFERENCE_MODEL,
      "reference_structure": list(_reference_structure(space).choices), "models": sorted(flatbuffers),
      "how_to_time": "for each X.tflite: adb shell benchmark_model --graph=X.tflite --num_threads=1 "
                     "--num_runs=100 --warmup_runs=10 > X.txt 2>&1; then "
                     "tflite_export.latency_table_from_logs(space, this folder)"})
  return path


def latency_table_from_logs(
    space: space_lib.SearchSpace,
    layer_dir: str,
    device: str = "Android device (benchmark_model)",
    log_suffix: str = ".txt",
) -> MeasuredLatencyTable:
  """Builds a latency table from `benchmark_model` logs of `write_layer_models` files.

  Every `<name>.tflite` listed in the folder's `manifest.json` must have a
  `<name><log_suffix>` log beside it; each is read with
  `tflite_export.parse_benchmark_model_output` (its mean, the only figure
  benchmark_model prints) and the table is assembled exactly as on the host.

  Args:
    space: the `SearchSpace` the models were written for.
    layer_dir: the folder `write_layer_models` wrote.
    device: what the logs were measured on, e.g. "Pixel 7, 1 thread".
    log_suffix: file name ending of the logs.

  Returns:
    A `MeasuredLatencyTable` with `measurement["method"] == "benchmark_model_logs"`.

  Raises:
    ValueError: if the manifest is missing or made for another space, or logs
      are missing or unreadable (the message lists them).
  """
  _check_space(space)
  manifest_path = os.path.join(layer_dir, _MANIFEST)
  if not os.path.exists(manifest_path):
    raise ValueError(f"no {_MANIFEST} in {layer_dir!r}: write the one-layer models with "
                     "tflite_export.write_layer_models(space, layer_dir) first")
  manifest = io_lib.read_json(manifest_path, "layer model manifest")
  if manifest.get("format") != _MANIFEST_FORMAT:
    raise ValueError(f"{manifest_path!r} is not a write_layer_models manifest (format={manifest.get('format')!r})")
  if manifest.get("space_fingerprint") != space.fingerprint():
    raise ValueError(f"the models in {layer_dir!r} were written for space {manifest.get('space')!r} (fingerprint "
                     f"{manifest.get('space_fingerprint')}), not for {space.name!r} (fingerprint "
                     f"{space.fingerprint()}); write them again for this space")
  plan = _plan(space, manifest.get("grid_size"))
  times, missing = {}, []
  for name in manifest["models"]:
    log = os.path.join(layer_dir, name + log_suffix)
    if not os.path.exists(log):
      missing.append(os.path.basename(log))
      continue
    with open(log) as f:
      try:
        times[name] = parse_benchmark_model_output(f.read(), device=device).latency_ms
      except ValueError as e:
        raise ValueError(f"cannot read the benchmark_model log {log!r}: {e}") from None
  if missing:
    raise ValueError(f"{len(missing)} of {len(manifest['models'])} benchmark_model logs are missing in "
                     f"{layer_dir!r}, e.g. {missing[:3]}; time every .tflite file listed in {_MANIFEST}")
  empty_ms, overhead_model_ms = times.pop(EMPTY_MODEL), times.pop(OVERHEAD_MODEL)
  measurement = {"method": "benchmark_model_logs", "quantization": manifest["quantization"],
                 "statistic": "benchmark_model mean", "layer_dir": os.path.abspath(layer_dir),
                 "reference_structure": manifest.get("reference_structure"),
                 "reference_ms": times.pop(REFERENCE_MODEL, None)}
  return table_from_timings(space, times, empty_ms, overhead_model_ms, plan.grid_size, device, measurement)

