"""Keeps the Bazel BUILD files true: every module and test file has its target.

`bazel test //...` needs network access (Bazel fetches rules_cc), so CI cannot
run it here; this test checks, without Bazel, that each Python file of the
library, the exporter, the examples and the tests is listed in its folder's
BUILD file under the right rule, and that each py_test names an existing file.
"""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ["tf_metaprune", "tf_metaprune/data", "tf_metaprune/latency_lut", "tf_metaprune/models", "tf_metaprune/ops", "tf_metaprune/pipeline", "tf_metaprune/search", "tf_metaprune/training",
            "tflite_export", "examples", "tests"]


def _rules(build_file):
  """[(rule kind, name, srcs)] parsed from a BUILD file (Starlark is Python syntax here)."""
  tree = ast.parse(build_file.read_text())
  rules = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("py_"):
      kw = {k.arg: k.value for k in node.keywords}
      srcs = [e.value for e in kw["srcs"].elts] if "srcs" in kw else []
      rules.append((node.func.id, kw["name"].value, srcs))
  return rules


def test_workspace_exists():
  assert (ROOT / "WORKSPACE").exists()


@pytest.mark.parametrize("package", PACKAGES)
def test_every_python_file_has_a_bazel_target(package):
  folder = ROOT / package
  if not folder.exists():
    pytest.skip(f"{package} does not exist yet")
  build = folder / "BUILD"
  assert build.exists(), f"{package}/BUILD is missing"
  rules = _rules(build)
  listed = {src for _, _, srcs in rules for src in srcs}
  files = sorted(p.name for p in folder.glob("*.py") if p.name != "conftest.py")
  missing = [f for f in files if f not in listed]
  assert not missing, f"{package}/BUILD lacks targets for {missing}"
  for kind, name, srcs in rules:
    for src in srcs:
      assert (folder / src).exists(), f"{package}/BUILD target {name} lists missing file {src}"
    if package == "tests" and kind == "py_test":
      assert srcs == [name + ".py"], (name, srcs)
  if package == "tests":
    tests = {p.stem for p in folder.glob("*_test.py")}
    assert tests == {name for kind, name, _ in rules if kind == "py_test"}
