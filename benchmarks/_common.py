"""What every benchmark script shares: side-by-side timing, tables, JSON and plots.

Benchmarks are not tests. Each script in this folder measures something,
prints a Markdown table, and writes `results/<name>.json` (the figures, the
table, the command that made them, the date, the machine and its load
average before and after) and `results/<name>.png`.

Speed *ratios* are only ever taken inside one process run: `interleaved`
times the contenders in alternating rounds and keeps each one's median, so
other jobs on a shared machine slow all of them alike.
"""

import datetime
import json
import os
import platform
import sys
import time

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# The `make demo` MobileNetV2 (examples/metaprune.py's model defaults) as PipelineConfig fields: 10 blocks,
# width 0.5, stride 32, per-layer ratios from 0.3 (1.168 MFLOPs at 28x28x1). The benchmarks that run on it add
# their own grid (divisor, width_step).
DEMO_MOBILENET_V2 = {"model": "mobilenet_v2", "width_multiplier": 0.5, "min_width_ratio": 0.3, "small_input": False,
                     "stage_repeats": "1,2,2,2,1,1,1"}


def command_line():
  """The command that ran this script, as typed from the repository root."""
  script = os.path.relpath(os.path.abspath(sys.argv[0]), os.path.dirname(os.path.dirname(RESULTS_DIR)))
  return " ".join(["python", script] + sys.argv[1:])


def machine():
  """Where and when: date (UTC), CPU, core count, library versions, load average now."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    import tflite_export  # pylint: disable=g-import-not-at-top
    device = tflite_export.device_description()
  except Exception:  # pylint: disable=broad-except
    device = platform.processor() or platform.machine()
  return {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
          "device": device, "cpus": os.cpu_count(), "platform": platform.platform(),
          "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
          "load_average": list(os.getloadavg())}


def interleaved(contenders, rounds, warmup=1):
  """Median wall seconds per call of each contender, timed in alternating rounds.

  Args:
    contenders: dict name -> zero-argument callable (one timed unit of work).
    rounds: timed rounds; each round calls every contender once, in turn.
    warmup: untimed calls of each contender first (tracing, caches).

  Returns:
    dict name -> {"median_s", "all_s", "min_s", "median_cpu_s"} (cpu: this process's CPU seconds,
    less sensitive to other jobs than wall time but counting idle-spinning threads too).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  if rounds < 1:
    raise ValueError(f"rounds={rounds!r}: time at least 1 round (3 or more for a meaningful median)")
  for fn in contenders.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in contenders}
  cpu = {name: [] for name in contenders}
  for r in range(rounds):
    # Alternate the order as well, so neither contender always runs right after the other.
    order = list(contenders) if r % 2 == 0 else list(reversed(list(contenders)))
    for name in order:
      start, start_cpu = time.perf_counter(), time.process_time()
      contenders[name]()
      times[name].append(time.perf_counter() - start)
      cpu[name].append(time.process_time() - start_cpu)
  return {name: {"median_s": float(np.median(t)), "all_s": [float(x) for x in t], "min_s": float(np.min(t)),
                 "median_cpu_s": float(np.median(cpu[name]))} for name, t in times.items()}


def cached_batches(batch_size, steps):
  """`steps` batches of MNIST-subset images (28x28x1) as a cached dataset."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  images, labels = tfmp.data.mnist_subset_arrays()
  rng = np.random.default_rng(0)
  idx = rng.permutation(len(images))[:batch_size * steps]
  x = images[idx].astype(np.float32).reshape(-1, 28, 28, 1) / 255.0
  return tf.data.Dataset.from_tensor_slices((x, labels[idx])).batch(batch_size, drop_remainder=True).cache()


def read_idx(path):
  """An idx file (gzip) as a numpy array (magic 0x0803 images, 0x0801 labels): the Fashion-MNIST files."""
  import gzip  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  with gzip.open(path, "rb") as f:
    data = f.read()
  magic = int.from_bytes(data[:4], "big")
  ndim = magic & 0xFF
  dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def markdown_table(headers, rows):
  """A Markdown table from a header list and row lists (already formatted strings)."""
  lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in
                                                             range(len(headers))) + "|"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def kendall_tau(a, b):
  """Kendall's tau-b between two equally long sequences (ties handled), and its p-value."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  tau, p = stats.kendalltau(a, b)
  return float(tau), float(p)


class Report:
  """Collects one benchmark's results and writes them.

  Usage:
    report = Report("train_step_speed", output_dir)   # records machine + load average now
    ...
    report.write(data, table_md, title)                # JSON + prints the table
    report.save_figure(fig)                            # PNG
  """

  def __init__(self, name, output_dir=None):
    self.name = name
    self.output_dir = output_dir or RESULTS_DIR
    self.started = time.time()
    self.machine = machine()

  def path(self, suffix):
    return os.path.join(self.output_dir, self.name + suffix)

  def write(self, data, table_md, title):
    """Writes results/<name>.json and prints `title` and the table."""
    os.makedirs(self.output_dir, exist_ok=True)
    out = {"benchmark": self.name, "title": title, "command": command_line(), "machine": self.machine,
           "load_average_after": list(os.getloadavg()), "seconds": time.time() - self.started,
           "table_md": table_md, **data}
    tmp = self.path(".json.tmp")
    with open(tmp, "w") as f:
      json.dump(jsonable(out), f, indent=1)
    os.replace(tmp, self.path(".json"))
    print(f"\n## {title}\n\n{table_md}\n\n(load average {self.machine['load_average'][0]:.1f} -> "
          f"{os.getloadavg()[0]:.1f}; {time.time() - self.started:.0f} s; wrote {self.path('.json')})")
    return out

  def save_figure(self, fig):
    os.makedirs(self.output_dir, exist_ok=True)
    fig.tight_layout()
    fig.savefig(self.path(".png"), dpi=100)
    return self.path(".png")


def pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def jsonable(value):
  """`value` with numpy scalars and arrays turned into Python numbers and lists (for json.dump)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if isinstance(value, dict):
    return {str(k): jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  return value
