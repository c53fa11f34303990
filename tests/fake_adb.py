"""A stand-in for `adb` in tests: a phone whose benchmark_model prints synthetic logs.

THE NUMBERS ARE SYNTHETIC (see device_log_fixtures.py for the layouts and their sources). `push`
remembers which host file went where; `shell ... benchmark_model --graph=F ...` prints a log for F
in the layout FAKE_ADB_FORMAT names (stdout, csv or logcat); other shell commands do nothing. A model
named in FAKE_ADB_GPU is reported as run whole by the GPU delegate; one in FAKE_ADB_CUT has its log
cut in half. Each model's time follows from its file name (see `model_rows`).
"""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import device_log_fixtures as fixtures  # pylint: disable=g-import-not-at-top,wrong-import-position

INVOKE_US = 20.0  # the per-invoke cost every stdout/logcat timing holds on top of its operators


def model_rows(name):
  """Synthetic operator rows (node type, ms) of a one-layer model, from its file name."""
  if name == "empty":
    return [("RELU", 0.001)]
  if name == "overhead":
    return [("QUANTIZE", 0.003), ("RELU", 0.002), ("DEQUANTIZE", 0.002)]
  if name == "reference":
    return [("QUANTIZE", 0.003), ("Convolution (NHWC, QC8) IGEMM", 20.0), ("Mean (ND, QS8)", 0.01),
            ("Fully Connected (NC, QS8) GEMM", 0.02), ("DEQUANTIZE", 0.002)]
  match = re.search(r"_(\d+)to(\d+)", name)
  cin, cout = (int(match.group(1)), int(match.group(2))) if match else (1, 1)
  return [("Convolution (NHWC, QC8) IGEMM", 0.001 + 0.0004 * cin * cout + 0.002 * cout)]


def environment(folder, fmt="stdout", **extra):
  """The environment for a generated run_on_device.sh to run on this fake phone, logs in layout `fmt`.

  Writes `folder/adb`: plain shell for push / mkdir / rm (it records pushes), Python only for
  benchmark_model. Extra keys (FAKE_ADB_GPU, FAKE_ADB_CUT) are added as they are.
  """
  adb = os.path.join(str(folder), "adb")
  with open(adb, "w") as f:
    f.write("#!/bin/sh\n"
            'case "$*" in *benchmark_model*) ;; *) exec ' + sys.executable + ' -c "import os,sys,json; '
            "p=os.environ['FAKE_ADB_STATE']; s=json.load(open(p)) if os.path.exists(p) else {}; "
            "a=sys.argv[1:]; s.update({a[2]: a[1]} if a[:1]==['push'] else {}); json.dump(s, open(p,'w'))"
            '" "$@";; esac\n'
            f"exec {sys.executable} {os.path.abspath(__file__)} \"$@\"\n")
  os.chmod(adb, 0o755)
  return dict(os.environ, ADB=adb, FAKE_ADB_STATE=os.path.join(str(folder), f"adb_state_{fmt}.json"),
              FAKE_ADB_FORMAT=fmt, **extra)


def main(argv):
  state_path = os.environ["FAKE_ADB_STATE"]
  state = json.load(open(state_path)) if os.path.exists(state_path) else {}
  if argv[:1] == ["push"]:
    state[argv[2]] = argv[1]
    json.dump(state, open(state_path, "w"))
    return 0
  command = " ".join(argv[1:]) if argv[:1] == ["shell"] else ""
  graph = re.search(r"--graph=(\S+)", command)
  if "benchmark_model" not in command or not graph:
    return 0
  name = os.path.basename(graph.group(1))[:-len(".tflite")]
  rows = model_rows(name)
  threads = int(re.search(r"--num_threads=(\d+)", command).group(1))
  fmt = os.environ.get("FAKE_ADB_FORMAT", "stdout")
  delegate = "gpu" if name in os.environ.get("FAKE_ADB_GPU", "").split(",") else None
  if delegate:
    rows = [("TfLiteGpuDelegateV2", sum(ms for _, ms in rows))]
  total_us = INVOKE_US + 1000 * sum(ms for _, ms in rows)
  if fmt == "csv":
    text = fixtures.csv_log(rows)
  elif fmt == "logcat":
    text = fixtures.logcat_log(name, total_us, rows, num_threads=threads, delegate=delegate)
  else:
    text = fixtures.stdout_log(name, total_us, rows, num_threads=threads, delegate=delegate)
  if name in os.environ.get("FAKE_ADB_CUT", "").split(","):
    text = text[:len(text) // 2]
  sys.stdout.write(text)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
