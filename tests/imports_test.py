"""The import graph of tf_metaprune and tflite_export: imports at the top, no cycle, one direction.

Read from the source (every `import` statement, at the top of a module or
inside a function), so an import hidden in a function still counts; and
checked once for real, in a fresh interpreter that imports tflite_export
before tf_metaprune (the order that used to meet a cycle).
"""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("tf_metaprune", "tflite_export")
# The only imports from tflite_export back into tf_metaprune, each resolved on first use (never at
# import time): the shared atomic file writer, and the latency-table names that moved to
# tf_metaprune.latency_lut (still reachable from tflite_export for old callers).
ALLOWED_BACK_EDGES = {("tflite_export.convert", "tf_metaprune.io"),
                      ("tflite_export", "tf_metaprune.latency_lut")}


def _modules():
  """{module name: path} of every Python file of the packages."""
  found = {}
  for package in PACKAGES:
    for path in (ROOT / package).rglob("*.py"):
      parts = list(path.relative_to(ROOT).with_suffix("").parts)
      if parts[-1] == "__init__":
        parts = parts[:-1]
      found[".".join(parts)] = path
  return found


def _imports(modules):
  """[(importer, imported module, at top level?)] for imports of our packages."""
  edges = []
  for name, path in modules.items():
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module:
        targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                   for a in node.names]
      else:
        continue
      for target in targets:
        if target.split(".")[0] in PACKAGES:
          edges.append((name, target, id(node) in top))
  # A string handed to importlib.import_module(...) counts too (the packages' compatibility aliases).
  for name, path in modules.items():
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules and (
          node.value.split(".")[0] != name.split(".")[0]):
        edges.append((name, node.value, False))
  return edges


def test_library_modules_import_each_other_at_the_top():
  modules = _modules()
  inner = [(a, b) for a, b, top in _imports(modules) if not top and (a, b) not in ALLOWED_BACK_EDGES]
  assert not inner, f"imports inside functions hide the graph (move them to the top): {inner}"


def test_the_module_import_graph_has_no_cycle():
  modules = _modules()
  graph = {m: set() for m in modules}
  for a, b, _ in _imports(modules):
    if b in graph and a != b and not a.startswith(b + "."):   # a module always runs its parent packages first
      graph[a].add(b)
  state, stack = {}, []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for n in sorted(graph[m]):
      if state.get(n) == "open":
        raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(n):] + [n])}")
      if n not in state:
        visit(n)
    stack.pop()
    state[m] = "done"

  for m in sorted(graph):
    if m not in state:
      visit(m)


def test_tflite_export_depends_on_tf_metaprune_only_through_the_two_named_lazy_edges():
  back = {(a, b) for a, b, _ in _imports(_modules())
          if a.split(".")[0] == "tflite_export" and b.split(".")[0] == "tf_metaprune"}
  assert back == ALLOWED_BACK_EDGES


def test_tflite_export_imports_first_and_its_moved_names_still_resolve():
  code = ("import tflite_export\n"
          "import tflite_export.convert\n"
          "import tf_metaprune.latency_lut as lut\n"
          "assert tflite_export.measure_latency_table is lut.measure_latency_table\n"
          "import tf_metaprune as tfmp\n"
          "assert tfmp.Gene is tfmp.space.Gene and tfmp.training.fit\n")
  done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"})
  assert done.returncode == 0, done.stderr[-2000:]
