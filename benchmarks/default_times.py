"""How long each binary takes with its defaults on the MNIST subset (what README and --helpfull state).

Runs, one after the other in a fresh temporary folder, exactly what README's "The stages" shows with every
other flag at its default:

  examples/train_pruningnet.py --output_dir=T/pn
  examples/search.py --pruningnet_dir=T/pn --output_dir=T/search      (budget: --flops_ratio=0.5)
  examples/retrain.py --search_dir=T/search --output_dir=T/searched
  examples/export_tflite.py --model=T/searched/model.keras --output_dir=T/export
  examples/metaprune.py --output_dir=T/mp                              (= make demo; with --metaprune)

and writes benchmarks/results/default_times.json after every binary (wall seconds, the load average
before and after, the first lines of its output): a run cut off keeps what it measured. Not a test;
the machine is shared, so read the load averages beside the times.

  python benchmarks/default_times.py               # the four stage binaries (about 10 min here)
  python benchmarks/default_times.py --metaprune   # and the whole pipeline (about 7 min more)
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results", "default_times.json")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--metaprune", action="store_true", help="also time examples/metaprune.py with its defaults")
  parser.add_argument("--only_metaprune", action="store_true", help="time examples/metaprune.py alone")
  args = parser.parse_args()
  tmp = tempfile.mkdtemp(prefix="default_times_")
  t = lambda *p: os.path.join(tmp, *p)
  runs = [("train_pruningnet.py", [f"--output_dir={t('pn')}"]),
          ("search.py", [f"--pruningnet_dir={t('pn')}", "--flops_ratio=0.5", f"--output_dir={t('search')}"]),
          ("retrain.py", [f"--search_dir={t('search')}", f"--output_dir={t('searched')}"]),
          ("export_tflite.py", [f"--model={t('searched', 'model.keras')}", f"--output_dir={t('export')}"])]
  if args.only_metaprune:
    runs = []
  if args.metaprune or args.only_metaprune:
    runs.append(("metaprune.py", [f"--output_dir={t('mp')}"]))
  result = {"command": " ".join(["python", "benchmarks/default_times.py"] + sys.argv[1:]), "folder": tmp,
            "cpus": os.cpu_count(), "runs": []}
  env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
  for binary, flags in runs:
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", binary), *flags], capture_output=True,
                          text=True, env=env)
    seconds = time.perf_counter() - t0
    row = {"binary": binary, "flags": flags, "seconds": round(seconds, 1), "returncode": proc.returncode,
           "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
           "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
           "estimates": [line for line in proc.stdout.splitlines() if "(measured)" in line],
           "stdout_tail": proc.stdout[-1500:], "stderr_tail": proc.stderr[-1500:]}
    result["runs"].append(row)
    print(f"{binary:<22} {seconds / 60:6.1f} min  rc {proc.returncode}  load {row['load_before'][0]:.1f} -> "
          f"{row['load_after'][0]:.1f}", flush=True)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT + ".tmp", "w") as f:
      json.dump(result, f, indent=1)
    os.replace(OUT + ".tmp", OUT)
    if proc.returncode != 0:
      print(proc.stderr[-3000:], file=sys.stderr)
      break


if __name__ == "__main__":
  main()
