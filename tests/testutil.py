"""Helpers shared by several test files: a read-only folder, a tiny trained PruningNet, README examples, binaries."""

import atexit
import contextlib
import json
import os
import pathlib
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time

import keras
import pytest

import tf_metaprune as tfmp

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


# examples/common_flags.py's pattern of TensorFlow's cuInit error on a machine without a CUDA driver.
_CUINIT = re.compile(r"^E\d{4} [\d:. ]+\d+ cuda_platform\.cc:\d+\] failed call to cuInit: ")


class _BinaryZygote:
  """tests/binary_zygote.py, started once per pytest process (the first `run_binary`), stopped at exit."""

  def __init__(self):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
               TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "binary_zygote.py")], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
    self.lock = threading.Lock()
    atexit.register(self.close)
    self.no_cuda_driver = self._answer(time.monotonic() + 600)["no_cuda_driver"]

  def _answer(self, deadline, pid=None):
    wait = max(0.0, deadline - time.monotonic())
    ready, _, _ = select.select([self.proc.stdout], [], [], wait)
    if not ready:
      if pid is not None:
        os.kill(pid, signal.SIGKILL)
        json.loads(self.proc.stdout.readline())   # the killed run's return code
      raise subprocess.TimeoutExpired("binary", wait)
    line = self.proc.stdout.readline()
    assert line, f"the binary zygote died (exit code {self.proc.poll()})"
    return json.loads(line)

  def run(self, argv, env, cwd, timeout):
    with self.lock, tempfile.TemporaryDirectory() as tmp:
      out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
      self.proc.stdin.write(json.dumps({"argv": argv, "env": env, "cwd": cwd, "stdout": out, "stderr": err}) + "\n")
      self.proc.stdin.flush()
      deadline = time.monotonic() + timeout
      pid = self._answer(deadline)["pid"]
      code = self._answer(deadline, pid)["returncode"]
      stderr = pathlib.Path(err).read_text()
      if self.no_cuda_driver:   # what the binaries' start-up filter drops after TF's "no CUDA driver" line
        stderr = "".join(l for l in stderr.splitlines(keepends=True) if not _CUINIT.match(l))
      return subprocess.CompletedProcess(argv, code, pathlib.Path(out).read_text(), stderr)

  def close(self):
    if self.proc.poll() is None:
      self.proc.stdin.close()
      try:
        self.proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        self.proc.kill()


_ZYGOTE = []


def run_binary(binary, *args, env=None, timeout=600, cwd=None):
  """Runs examples/`binary` with `args` like `subprocess.run(..., capture_output=True, text=True)` would.

  The run is a fork of tests/binary_zygote.py, which imported TensorFlow once: a fresh TF runtime, its
  own environment (`env`, default: this one with PYTHONPATH at the repository) and folder, without the
  import's 5 s. Returns a `subprocess.CompletedProcess` (returncode, stdout, stderr).
  """
  if not _ZYGOTE:
    _ZYGOTE.append(_BinaryZygote())
  if env is None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
  argv = [str(EXAMPLES / binary), *[str(a) for a in args]]
  return _ZYGOTE[0].run(argv, dict(env), str(cwd or ROOT), timeout)


@contextlib.contextmanager
def without_write_permission(folder):
  """Makes `folder` read-only for this process (as root, by dropping to uid 65534 meanwhile)."""
  folder.chmod(0o500)
  dropped = False
  try:
    if os.geteuid() == 0:
      try:
        os.seteuid(65534)   # root ignores permission bits: act as "nobody" for the duration
      except OSError:
        pytest.skip("running as root without the right to change uid: no folder is read-only here")
      dropped = True
    yield
  finally:
    if dropped:
      os.seteuid(0)
    folder.chmod(0o700)


def tiny_search_space():
  """A 4-gene small CNN on 12x12x1 images, 4 classes (the searchers' tests)."""
  return tfmp.models.small_cnn(input_shape=(12, 12, 1), num_classes=4, channels=(8, 8, 16, 16), divisor=1)


def tiny_search_splits():
  """512 synthetic 12x12x1 images of 4 classes, batches of 32."""
  return tfmp.data.synthetic(num_examples=512, input_shape=(12, 12, 1), num_classes=4, batch_size=32)


def trained_pruning_net(space, splits, epochs=3):
  """A PruningNet of `space` (hidden size 4, seed 0) trained `epochs` epochs on `splits.train`."""
  keras.utils.set_random_seed(0)
  net = tfmp.PruningNet(space, hidden_units=4)
  net.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  net.fit(splits.train, epochs=epochs, verbose=0)
  return net


def run_readme_example(heading, shrink, max_lines=None, cwd=None):
  """Runs the first ```python block after `heading` in README.md with `shrink`'s replacements; returns its scope.

  Each (old, new) pair must occur in the block (so a README edit that drops it fails here, naming it), and
  `max_lines` bounds the block's length as README promises.
  """
  text = (ROOT / "README.md").read_text()
  section = text[text.index(heading):] if heading else text
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  if max_lines is not None:
    assert len(code.strip().splitlines()) <= max_lines, f"the README promises an example of at most {max_lines} lines"
  for old, new in shrink:
    assert old in code, f"README example changed: {old!r} not found; update this test"
    code = code.replace(old, new)
  previous = os.getcwd()
  if cwd is not None:
    os.chdir(cwd)
  try:
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)  # pylint: disable=exec-used
  finally:
    os.chdir(previous)
  return scope


def counting_evaluator(net, data, calls):
  """An `Evaluator` that appends every batch of choices it scores to `calls` (to prove what was evaluated)."""

  class CountingEvaluator(tfmp.Evaluator):

    def scores_tensor(self, choices):
      calls.append(choices)
      return super().scores_tensor(choices)

  return CountingEvaluator(net, data)


# Module-scoped fixtures over the tiny space, shared by the search tests:
#   from testutil import net_fixture, space_fixture, splits_fixture
@pytest.fixture(scope="module", name="space")
def space_fixture():
  return tiny_search_space()


@pytest.fixture(scope="module", name="splits")
def splits_fixture():
  return tiny_search_splits()


@pytest.fixture(scope="module", name="net")
def net_fixture(space, splits):
  return trained_pruning_net(space, splits)


def save_concat_user_model(path):
  """A small trained-model stand-in (12x12x1, a concatenation, BN, 10 classes) saved as .keras at `path`."""
  L = keras.layers
  x = inputs = keras.Input((12, 12, 1))
  a = L.Conv2D(8, 3, padding="same", activation="relu", name="a")(x)
  b = L.Conv2D(4, 1, activation="relu", name="b")(x)
  x = L.BatchNormalization(name="bn")(L.Concatenate(name="cat")([a, b]))
  x = L.Conv2D(12, 3, strides=2, padding="same", activation="relu", name="c")(x)
  model = keras.Model(inputs, L.Dense(10, name="logits")(L.GlobalAveragePooling2D()(x)), name="user_cnn")
  model.save(path)
  return model
