"""End-to-end tests of examples/export_tflite.py, run as a user would (a fork of tests/binary_zygote.py).

A tiny small_cnn structure (channels 8-8-16-16, half width) with its space
JSON, structure JSON and (untrained) weights is exported to float32 and int8
on the MNIST subset; bad inputs must stop with a clear message before any
file is written.
"""

import json
import os

import pytest

import testutil  # tests/testutil.py
import tf_metaprune as tfmp
from tflite_export import export_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT_KEYS = {"file", "quantization", "size_bytes", "keras_accuracy", "tflite_accuracy", "accuracy_drop_pt",
               "top1_agreement", "max_abs_logit_diff", "mean_abs_logit_diff", "num_eval_examples",
               "latency_median_ms", "latency_p90_ms", "device", "num_threads", "note"}


def _run(*args):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
             TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  return testutil.run_binary("export_tflite.py", *args, env=env, timeout=300)


def _space():
  return tfmp.models.small_cnn(input_shape=(28, 28, 1), num_classes=10, channels=(8, 8, 16, 16), divisor=8)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  folder = tmp_path_factory.mktemp("inputs")
  space = _space()
  structure = space.uniform(0.5)
  with open(folder / "space.json", "w") as f:
    f.write(space.to_json())
  space.save_structure(structure, str(folder / "half.json"))
  tfmp.rebuild(space, structure).save_weights(str(folder / "half.weights.h5"))
  return folder


def test_structure_export_writes_every_file_and_the_report(inputs, tmp_path):
  out = tmp_path / "export"
  result = _run(f"--space={inputs / 'space.json'}", f"--structure={inputs / 'half.json'}",
                f"--weights={inputs / 'half.weights.h5'}", "--dataset=mnist_subset", "--quantization=float32,int8",
                f"--output_dir={out}", "--num_runs=5", "--calibration_batches=2")
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(os.listdir(out)) == ["export_report.json", "half_float32.tflite", "half_int8.tflite"]
  report = json.loads((out / "export_report.json").read_text())
  assert {"model", "params", "device", "note", "files", "source", "dataset"} <= set(report)
  assert "x86" in report["note"] and "int8 is not faster" in report["note"]
  assert report["params"] == _space().params(_space().uniform(0.5))
  rows = {row["quantization"]: row for row in report["files"]}
  assert set(rows) == {"float32", "int8"}
  for q, row in rows.items():
    assert set(row) == REPORT_KEYS
    assert row["file"] == f"half_{q}.tflite"
    assert row["size_bytes"] == os.path.getsize(out / row["file"])
    assert row["num_eval_examples"] == 1000  # the MNIST subset's test split
    assert 0 < row["latency_median_ms"] <= row["latency_p90_ms"]
  assert rows["int8"]["size_bytes"] < rows["float32"]["size_bytes"]
  assert rows["float32"]["max_abs_logit_diff"] < 1e-3
  assert rows["float32"]["top1_agreement"] >= 0.99
  assert rows["float32"]["keras_accuracy"] == rows["int8"]["keras_accuracy"]
  assert "half_int8.tflite" in result.stdout and "median ms" in result.stdout


@pytest.mark.parametrize("case", ["missing_model", "structure_of_another_space"])
def test_bad_inputs_stop_with_a_clear_message_before_any_work(case, inputs, tmp_path):
  out = tmp_path / "export"
  if case == "missing_model":
    args, fragments = [f"--model={tmp_path / 'nope.keras'}"], ["--model=", "nope.keras", "no such file"]
  else:
    other = tfmp.models.small_cnn(input_shape=(28, 28, 1), num_classes=10, channels=(16, 32, 64, 128), divisor=8)
    other.save_structure(other.uniform(0.5), str(tmp_path / "other.json"))
    args = [f"--space={inputs / 'space.json'}", f"--structure={tmp_path / 'other.json'}"]
    fragments = ["other.json", "saved from space 'small_cnn'", "pass the --space it was searched in"]
  result = _run(*args, f"--output_dir={out}")
  assert result.returncode != 0
  assert "export_tflite.py: error:" in result.stderr
  for fragment in fragments:
    assert fragment in result.stderr, result.stderr[-2000:]
  assert not out.exists()


def test_unknown_or_repeated_quantization_is_rejected_with_the_choices():
  # The binary passes --quantization through this check before converting anything.
  with pytest.raises(ValueError, match=r"'int4' is not supported; use a comma list of float32, float16"):
    export_report.check_quantizations(["float32", "int4"])
  with pytest.raises(ValueError, match="repeat"):
    export_report.check_quantizations(["int8", "int8"])
  assert export_report.check_quantizations([" float32", "int8 "]) == ["float32", "int8"]


def test_keras_model_export_names_files_after_the_model_file(tmp_path):
  space = _space()
  tfmp.rebuild(space, space.smallest()).save(str(tmp_path / "tiny.keras"))
  out = tmp_path / "export"
  result = _run(f"--model={tmp_path / 'tiny.keras'}", "--quantization=dynamic_range", f"--output_dir={out}",
                "--num_runs=3")
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(os.listdir(out)) == ["export_report.json", "tiny_dynamic_range.tflite"]
  report = json.loads((out / "export_report.json").read_text())
  assert report["source"] == str(tmp_path / "tiny.keras")
  assert [row["quantization"] for row in report["files"]] == ["dynamic_range"]
