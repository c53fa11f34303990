"""Bad input across the library: each is refused with a message naming the value and the way out.

Files (structures, latency tables, search results, search state) that are
damaged, foreign or of another space; search data that does not fit the net;
empty data; a budget no structure can meet; an unwritable folder; and a write
killed halfway. Training's own cases (NaN loss, data that does not fit the
model, training state) are in training_test.py.
"""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import testutil  # tests/testutil.py
import tf_metaprune as tfmp
from tf_metaprune import budgets
from tf_metaprune import search

ROOT = pathlib.Path(__file__).resolve().parent.parent
SMALL = dict(population_size=4, top_k=2, num_mutations=1, num_crossovers=1, verbose=0)


@pytest.fixture(scope="module")
def space():
  return tfmp.models.small_cnn((8, 8, 1), 3, channels=(4, 4, 8, 8), divisor=1)


@pytest.fixture(scope="module")
def net(space):
  return tfmp.PruningNet(space, hidden_units=0)


def _dataset(shape=(8, 8, 1), n=24, classes=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.random((n,) + shape, dtype=np.float32)
  y = rng.integers(0, classes, n).astype(np.int32)
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(8)


@pytest.fixture(scope="module")
def evaluator(net):
  return tfmp.Evaluator(net, tfmp.EvaluationData.from_dataset(_dataset(), num_calibration_batches=1))


# ---- files -------------------------------------------------------------------------------------


def test_structure_file_damaged_foreign_or_of_another_space_is_refused_naming_the_file(space, tmp_path):
  good = tmp_path / "s.json"
  space.save_structure(space.largest(), str(good))
  other = tfmp.models.small_cnn((8, 8, 1), 3, channels=(4, 4, 8, 16), divisor=1)
  cases = {"truncated.json": (good.read_text()[:40], "cannot parse structure JSON"),
           "list.json": ("[1, 2, 3]", "must be an object"),
           "result.json": ('{"format": "tf_metaprune.SearchResult"}', "not a tf_metaprune structure"),
           "other.json": (other.structure_to_json(other.largest()), "made for space 'small_cnn'"),
           "binary.json": (None, "not a text file")}
  for name, (text, match) in cases.items():
    path = tmp_path / name
    if text is None:
      path.write_bytes(b"\x80\x81\xfe\xff")
    else:
      path.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
      space.load_structure(str(path))
    assert str(path) in str(e.value), name
  with pytest.raises(ValueError, match="does not exist"):
    space.load_structure(str(tmp_path / "missing.json"))
  assert space.load_structure(str(good)) == space.largest()


def test_latency_table_damaged_or_of_another_space_is_refused(space, tmp_path):
  table = budgets.LatencyTable.from_function(space, lambda node, ci, co: 1e-3 * ci * co)
  other = tfmp.models.small_cnn((8, 8, 1), 3, channels=(4, 4, 8, 16), divisor=1)
  other_table = budgets.LatencyTable.from_function(other, lambda node, ci, co: 1e-3 * ci * co)
  with pytest.raises(ValueError, match=r"measured for a space with fingerprint .* not for 'small_cnn'"):
    budgets.LatencyBudget(max_ms=1.0, lut=other_table).check(space)
  path = tmp_path / "lut.json"
  table.save(str(path))
  for text, match in [(path.read_text()[:50], "cannot parse LatencyTable JSON"),
                      ('{"format": "tf_metaprune.LatencyTable"}', "has no 'entries'"),
                      ('{"format": "tf_metaprune.LatencyTable", "entries": {"conv1": {"4x4": 1.0}}}',
                       "keys are 'in_channels,out_channels'"),
                      ('{"format": "tf_metaprune.LatencyTable", "entries": {"conv1": {"4,4": -1.0}}}',
                       r"must be finite and >= 0")]:
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
      budgets.LatencyTable.load(str(bad))
    assert str(bad) in str(e.value)
  assert budgets.LatencyTable.load(str(path)) == table


def test_search_result_file_that_is_not_a_result_is_refused_naming_the_file(tmp_path):
  path = tmp_path / "result.json"
  path.write_text('{"format": "tf_metaprune.Structure", "choices": [0]}')
  with pytest.raises(ValueError, match=r"result\.json'.*not a tf_metaprune search result"):
    search.SearchResult.load(str(path))
  path.write_text('{"format": "tf_metaprune.SearchResult"}')
  with pytest.raises(ValueError, match=r"result\.json'.*KeyError"):
    search.SearchResult.load(str(path))


def test_malformed_search_space_json_is_a_value_error(space):
  config = json.loads(space.to_json())
  config["space"]["nodes"][1]["kernel"] = 3   # an unknown field
  with pytest.raises(ValueError, match="search space JSON is malformed"):
    tfmp.SearchSpace.from_json(json.dumps(config))


def test_damaged_search_state_is_refused_naming_the_file_and_left_untouched(net, evaluator, space, tmp_path):
  budget = budgets.FlopsBudget.from_ratio(space, 0.6)
  path = tmp_path / "state.json"
  search.evolutionary(net, evaluator, budget, num_generations=1, state_path=str(path), **SMALL)
  good = json.loads(path.read_text())
  truncated = path.read_text()[:-200]
  no_cache = json.dumps({k: v for k, v in good.items() if k != "cache"})
  bad_choice = json.dumps(dict(good, cache=[dict(good["cache"][0], choices=[0, 0, 0, 99])]))
  for text, match in [(truncated, "is not valid JSON"), (no_cache, r"is damaged \(KeyError: 'cache'\)"),
                      (bad_choice, r"is damaged \(ValueError: .*choice 99 for gene 'conv4' is out of range"),
                      ("", "is not valid JSON")]:
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
      search.evolutionary(net, evaluator, budget, num_generations=2, state_path=str(path), **SMALL)
    assert str(path) in str(e.value) and path.read_text() == text


# ---- data -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    (dict(shape=(8, 8, 3)), r"calibration images have 3 channels \(image shape \(8, 8, 3\)\) but space "
                            r"'small_cnn' takes 1 \(input_shape=\(8, 8, 1\)\)"),
    (dict(shape=(10, 10, 1)), r"calibration images are 10x10 .* takes 8x8"),
    (dict(classes=5), r"the search data holds label 4 but space 'small_cnn' has 3 classes .*num_classes=5"),
])
def test_search_data_that_does_not_fit_the_net_is_refused_naming_the_values(net, space, kwargs, match):
  data = _dataset(seed=3, **kwargs)
  with pytest.raises(ValueError, match=match):
    search.evolutionary(net, data, budgets.FlopsBudget.from_ratio(space, 0.6), **SMALL)
  with pytest.raises(ValueError, match=match):
    tfmp.Evaluator(net, tfmp.EvaluationData.from_dataset(data, num_calibration_batches=1))
  if "shape" in kwargs:
    with pytest.raises(ValueError, match=match):
      net.recalibrate(space.largest(), data)


def test_empty_search_data_is_refused(net, space):
  empty = _dataset(n=0)
  with pytest.raises(ValueError, match=r"the calibration dataset is empty \(0 batches\)"):
    search.evolutionary(net, empty, None, **SMALL)
  with pytest.raises(ValueError, match=r"the evaluation \(search\) dataset is empty \(0 batches\)"):
    search.uniform(net, empty, None, calibration_data=_dataset())


def test_budget_no_structure_can_meet_is_refused_before_any_evaluation(net, evaluator, space):
  # Each part alone is feasible; together they ask for the FLOPs of the smallest structure and
  # the parameters of the largest one.
  impossible = budgets.AllOf(budgets.FlopsBudget(max_mflops=space.mflops(space.smallest())),
                             budgets.ParamsBudget(max_params=1e9, min_params=space.params(space.largest())))
  impossible.check(space)
  calls = []

  spy = testutil.counting_evaluator(net, evaluator.data, calls)
  with pytest.raises(ValueError, match=r"no feasible structure among \d+ random samples for budget AllOf\("
                     r"FlopsBudget\(max_mflops=.*\), ParamsBudget\(.*\)\).*raise the budget"):
    search.evolutionary(net, spy, impossible, **SMALL)
  with pytest.raises(ValueError, match=r"no uniform width ratio in \[0.01, 1.0\] meets AllOf"):
    search.uniform(net, spy, impossible)
  assert not calls


# ---- writing ----------------------------------------------------------------------------------


def test_unwritable_state_folder_is_refused_before_any_evaluation(net, evaluator, space, tmp_path):
  folder = tmp_path / "locked"
  folder.mkdir()
  with testutil.without_write_permission(folder):
    with pytest.raises(tfmp.io.NotWritableError, match=r"the folder of state_path='.*locked' is not writable"):
      search.evolutionary(net, evaluator, None, state_path=str(folder / "state.json"), **SMALL)
    with pytest.raises(PermissionError, match=r"cannot write '.*locked/s.json': its folder is not writable"):
      space.save_structure(space.largest(), str(folder / "s.json"))
  assert not list(folder.iterdir())


def test_a_write_killed_halfway_leaves_the_previous_file_whole(tmp_path):
  # A child process (no TensorFlow: io.py alone) dies by SIGKILL after writing the new text
  # to its temporary file but before the rename.
  target = tmp_path / "state.json"
  tfmp.io.write_json_atomic(str(target), {"generation": 1})
  code = (
      "import importlib.util, os, signal, sys\n"
      "spec = importlib.util.spec_from_file_location('tfmp_io', sys.argv[1])\n"
      "io = importlib.util.module_from_spec(spec); spec.loader.exec_module(io)\n"
      "os.replace = lambda a, b: os.kill(os.getpid(), signal.SIGKILL)\n"
      "io.write_json_atomic(sys.argv[2], {'generation': 2, 'cache': list(range(100000))})\n")
  proc = subprocess.Popen([sys.executable, "-c", code, str(ROOT / "tf_metaprune" / "io.py"), str(target)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert json.loads(target.read_text()) == {"generation": 1}
  leftovers = [p for p in tmp_path.iterdir() if p != target]
  assert len(leftovers) == 1, leftovers
  writer = re.fullmatch(r"\.state\.json\.(\d+)@.+\.[0-9a-f]{8}\.tmp", leftovers[0].name)
  assert writer and int(writer.group(1)) == proc.pid   # the dead writer's temporary file, named after it,
  assert json.loads(leftovers[0].read_text())["generation"] == 2   # complete, never renamed
  # The next write of the file removes the dead writer's temporary; a live writer's one is left alone.
  live = tmp_path / f".state.json.{os.getpid()}@{socket.gethostname()}.0123abcd.tmp"
  live.write_text("being written")
  tfmp.io.write_json_atomic(str(target), {"generation": 3})
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name])


def test_no_file_format_can_run_code_when_loaded():
  # Every reader is json.loads + explicit field checks: no pickle, eval, exec, yaml or marshal,
  # no npz with pickles, no Keras "unsafe" deserialization, in the library or the exporter.
  banned = ["import pickle", "pickle.load", "eval(", "exec(", "yaml.load", "marshal.", "shelve.",
            "allow_pickle=True", "safe_mode=False", "__import__(", "importlib.import_module(config"]
  found = []
  for folder in ("tf_metaprune", "tflite_export"):
    for path in (ROOT / folder).rglob("*.py"):
      text = path.read_text()
      found += [(str(path.relative_to(ROOT)), b) for b in banned if b in text]
  assert not found, found
  # A config naming a class is looked up in a fixed table, never imported by name.
  with pytest.raises(ValueError, match="unknown budget class_name='os.system'"):
    budgets.budget_from_config({"class_name": "os.system", "max_mflops": 1.0})


def test_pipeline_run_folders_that_cannot_be_written_get_the_library_error(tmp_path):
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  locked = tmp_path / "locked"
  locked.mkdir()
  taken = tmp_path / "taken"
  taken.write_text("a file, not a folder")
  with testutil.without_write_permission(locked):
    with pytest.raises(tfmp.io.NotWritableError, match=r"output_dir='.*locked/run' is not writable"):
      pipeline.TrainingRun(str(locked / "run"), pipeline.PipelineConfig())
  # A file where the folder should be: the same one-line error, not os.makedirs' FileExistsError.
  with pytest.raises(tfmp.io.NotWritableError, match=r"output_dir='.*taken' is not writable"):
    pipeline.TrainingRun(str(taken), pipeline.PipelineConfig())
