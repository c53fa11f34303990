"""Runs the examples/ binaries for the tests without paying the TensorFlow import each time (not a test).

`python tests/binary_zygote.py` imports TensorFlow, Keras and tf_metaprune once, then reads one JSON request
per stdin line, {"argv": [BINARY, ARGS...], "env": {...}, "cwd": DIR, "stdout": PATH, "stderr": PATH}, and
forks: the child takes that environment, folder and argv, sends its stdout and stderr to the two files and
runs BINARY as `__main__` (as `python BINARY ARGS...` would: its folder first on sys.path, exit code from
SystemExit, atexit handlers run at the end). The zygote first says {"no_cuda_driver": BOOL} (whether
TensorFlow's import said so), then answers each request with {"pid": PID} at once and {"returncode": N}
when the child ends (-N for a signal, as subprocess reports it).

Nothing runs a TensorFlow op before a fork, so every run starts its TF runtime fresh, like a new process
(tests/resume_driver.py forks its jobs the same way); what a run no longer pays is the import, about 5 s.
The binaries' start-up filter of TensorFlow's import lines is tested with real processes
(tests/first_hour_test.py); the tests that run a binary here check what it does after it started.
"""

import atexit
import json
import os
import runpy
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import re  # pylint: disable=g-import-not-at-top,wrong-import-position
import tempfile  # pylint: disable=g-import-not-at-top,wrong-import-position

# The import, with its stderr kept aside: whether TensorFlow said it found no CUDA driver there (a real start of
# a binary says so through its start-up filter, which then also drops the later cuInit error; here the child
# does not see the first line, so the caller drops that error -- see testutil.run_binary).
with tempfile.TemporaryFile() as _log:
  _saved = os.dup(2)
  os.dup2(_log.fileno(), 2)
  try:
    import keras  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import
    import tensorflow  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import

    import tf_metaprune  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import
    import tflite_export  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import
  finally:
    os.dup2(_saved, 2)
    os.close(_saved)
  _log.seek(0)
  NO_CUDA_DRIVER = bool(re.search(rb"cudart_stub\.cc:\d+\] Could not find cuda drivers", _log.read()))


def _child(request):
  os.environ.clear()
  os.environ.update(request["env"])
  os.chdir(request["cwd"])
  devnull = os.open(os.devnull, os.O_RDONLY)   # the zygote's stdin carries the requests
  os.dup2(devnull, 0)
  os.close(devnull)
  for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(target, fd)
    os.close(target)
  binary = request["argv"][0]
  sys.argv = list(request["argv"])
  sys.path[0] = os.path.dirname(os.path.abspath(binary))
  code = 0
  try:
    runpy.run_path(binary, run_name="__main__")
  except SystemExit as e:
    if e.code is None:
      code = 0
    elif isinstance(e.code, int):
      code = e.code
    else:
      print(e.code, file=sys.stderr)
      code = 1
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    code = 1
  try:
    atexit._run_exitfuncs()  # pylint: disable=protected-access  (what interpreter exit would run)
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access


def main():
  print(json.dumps({"no_cuda_driver": NO_CUDA_DRIVER}), flush=True)
  for line in sys.stdin:
    if not line.strip():
      continue
    request = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
      _child(request)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    print(json.dumps({"returncode": code}), flush=True)


if __name__ == "__main__":
  main()
