"""`make demo` over several seeds: benchmarks/README.md's table as mean +- std, and whether searched beats uniform.

One run of the demo is one draw: the same command on another CPU (other kernels, other rounding) sends
training down another path and moves the test accuracies by points. This script runs
examples/metaprune.py with its defaults (= `make demo`) once per seed, each into its own folder
(rerunning resumes: finished seeds and stages are not recomputed), and writes
benchmarks/results/demo_seeds.json after every seed, with every seed's report row, the mean and the
sample std of each figure, and a verdict that calls one structure better only when the 95%
confidence interval of the searched-minus-uniform difference (paired by seed) excludes zero.

  python benchmarks/demo_seeds.py                       # seeds 0,1,2 (about 7 min a seed on 2 idle cores)
  python benchmarks/demo_seeds.py --seeds=0,1,2,3,4 --output_dir=runs/demo_seeds
  python benchmarks/demo_seeds.py --extra_flags=--epochs=2,--num_generations=2   # a quick smoke run
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tf_metaprune import stats  # pylint: disable=g-import-not-at-top,wrong-import-position

FIGURES = ("mflops", "params", "search_accuracy", "test_accuracy", "int8_test_accuracy", "int8_size_bytes",
           "int8_latency_median_ms")


def mean_std(values):
  values = [float(v) for v in values]
  mean, std = stats.mean_std(values)
  return {"mean": mean, "std": std if len(values) > 1 else None,
          "n": len(values), "values": values}


def summarize(reports):
  """Mean +- std of every figure per structure over the seeds' reports, and the verdict."""
  out = {}
  for key in ("searched", "uniform"):
    out[key] = {f: mean_std([r[key][f] for r in reports]) for f in FIGURES}
  diffs = [100 * (r["searched"]["test_accuracy"] - r["uniform"]["test_accuracy"]) for r in reports]
  d = mean_std(diffs)
  out["test_accuracy_difference_points"] = d
  mean, low, high = stats.t_interval95(diffs)
  d["ci95"] = [low, high]
  out["verdict"] = stats.seed_verdict(diffs)
  return out


def table(summary):
  """benchmarks/README.md's table with mean +- std over the seeds."""
  def pm(stat, scale=1.0, fmt="{:.2f}"):
    if stat["std"] is None:
      return fmt.format(scale * stat["mean"])
    return f"{fmt.format(scale * stat['mean'])} +- {fmt.format(scale * stat['std'])}"
  n = summary["searched"]["test_accuracy"]["n"]
  lines = [f"| structure ({n} seeds, mean +- std) | MFLOPs | params | search acc. (PruningNet) % | test acc. "
           "(retrained) % | int8 test acc. % | int8 size KB |", "|---|---:|---:|---:|---:|---:|---:|"]
  for key in ("searched", "uniform"):
    s = summary[key]
    lines.append(f"| {key} | {pm(s['mflops'], fmt='{:.3f}')} | {pm(s['params'], fmt='{:,.0f}')} | "
                 f"{pm(s['search_accuracy'], 100)} | {pm(s['test_accuracy'], 100)} | "
                 f"{pm(s['int8_test_accuracy'], 100)} | {pm(s['int8_size_bytes'], 1 / 1024, '{:.1f}')} |")
  return "\n".join(lines + ["", summary["verdict"]])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
  parser.add_argument("--output_dir", default=os.path.join(ROOT, "runs", "demo_seeds"), help="one folder per seed")
  parser.add_argument("--extra_flags", default="", help="comma list of extra metaprune.py flags (e.g. for a smoke run)")
  parser.add_argument("--result", default=os.path.join(ROOT, "benchmarks", "results", "demo_seeds.json"))
  parser.add_argument("--summarize_only", action="store_true",
                      help="recompute the summary and table of --result from the seeds it holds (no runs)")
  args = parser.parse_args()
  if args.summarize_only:
    with open(args.result) as f:
      result = json.load(f)
    result["summary"] = summarize(result["seeds"])
    result["table"] = table(result["summary"])
    with open(args.result + ".tmp", "w") as f:
      json.dump(result, f, indent=1)
    os.replace(args.result + ".tmp", args.result)
    print(result["table"])
    return
  seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
  extra = [f for f in args.extra_flags.split(",") if f]
  env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
  result = {"command": " ".join(["python", "benchmarks/demo_seeds.py"] + sys.argv[1:]), "seeds": [], "cpus": os.cpu_count()}
  reports = []
  for seed in seeds:
    folder = os.path.join(args.output_dir, f"seed_{seed}")
    cmd = [sys.executable, os.path.join(ROOT, "examples", "metaprune.py"), f"--seed={seed}", f"--output_dir={folder}",
           "--verbose=0", *extra]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
      sys.exit(f"demo_seeds.py: seed {seed} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(os.path.join(folder, "report.json")) as f:
      report = json.load(f)
    reports.append(report)
    result["seeds"].append({"seed": seed, "folder": folder, "seconds_this_call": round(seconds, 1),
                            "load_before": [round(x, 2) for x in load_before],
                            "load_after": [round(x, 2) for x in os.getloadavg()],
                            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
                            "searched": {f: report["searched"][f] for f in FIGURES},
                            "uniform": {f: report["uniform"][f] for f in FIGURES}})
    result["summary"] = summarize(reports)
    result["table"] = table(result["summary"])
    os.makedirs(os.path.dirname(args.result), exist_ok=True)
    with open(args.result + ".tmp", "w") as f:
      json.dump(result, f, indent=1)
    os.replace(args.result + ".tmp", args.result)
    print(f"seed {seed}: searched {100 * report['searched']['test_accuracy']:.2f}%, uniform "
          f"{100 * report['uniform']['test_accuracy']:.2f}% ({seconds / 60:.1f} min)", flush=True)
  print()
  print(result["table"])
  print(f"\nwrote {args.result}")


if __name__ == "__main__":
  main()
