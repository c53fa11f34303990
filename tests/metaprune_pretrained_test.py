"""examples/metaprune.py --keras_model: a saved trained model pruned end to end, with the peers' baselines."""

import json
import os

import pytest

import testutil  # tests/testutil.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--divisor=1", "--max_examples=400", "--input_size=12", "--batch_size=32", "--epochs=1", "--hidden_units=4",
        "--flops_ratio=0.5", "--population_size=6", "--num_generations=2", "--retrain_epochs=1", "--num_runs=3",
        "--verbose=0", "--init=pretrained", "--distill"]


def _run(*args):
  return testutil.run_binary("metaprune.py", *args, timeout=900)


@pytest.mark.slow
def test_metaprune_prunes_a_saved_trained_model_and_reports_every_method(tmp_path):
  model_path = str(tmp_path / "user.keras")
  testutil.save_concat_user_model(model_path)
  out = tmp_path / "run"
  proc = _run(f"--keras_model={model_path}", f"--output_dir={out}", *TINY)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  report = json.loads((out / "report.json").read_text())
  assert report["rows"] == ["searched", "uniform", "global_magnitude", "uniform_scratch"]
  assert 0.0 <= report["original"]["test_accuracy"] <= 1.0
  for key in report["rows"]:
    row = report[key]
    assert row["mflops"] <= 0.5 * report["full_width"]["mflops"] + 1e-9
    assert row["accuracy_drop_pt"] == pytest.approx(100 * (report["original"]["test_accuracy"] - row["test_accuracy"]))
    assert (out / {"searched": "model_int8.tflite"}.get(key, f"{key}_int8.tflite")).exists()
  table = (out / "report.md").read_text()
  assert "Original model" in table and "L1 uniform x" in table and "global magnitude" in table
  assert "drop vs original" in proc.stdout
  assert json.loads((out / "stages.json").read_text())["stages"].keys() == {
      "pruningnet", "search", "retrain_searched", "retrain_uniform", "retrain_global_magnitude",
      "retrain_uniform_scratch", "export"}


def test_pretrained_init_without_a_trained_model_stops_with_one_line(tmp_path):
  proc = _run("--init=pretrained", f"--output_dir={tmp_path / 'run'}", "--model=small_cnn", "--flops_ratio=0.5")
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert "keras_model" in last and "init='pretrained'" in last


def _stage(binary, *args):
  proc = testutil.run_binary(binary, *args, timeout=900)
  assert proc.returncode == 0, f"{binary}: " + proc.stdout[-2000:] + proc.stderr[-3000:]
  return proc


@pytest.mark.slow
def test_stage_binaries_start_from_a_saved_trained_model_and_fine_tune_its_kept_channels(tmp_path):
  model_path = str(tmp_path / "user.keras")
  testutil.save_concat_user_model(model_path)
  data = ["--max_examples=400", "--input_size=12", "--batch_size=32"]
  _stage("train_pruningnet.py", f"--keras_model={model_path}", *data, "--divisor=1", "--epochs=1",
         "--hidden_units=4", "--num_random=0", f"--output_dir={tmp_path / 'pn'}")
  run = json.loads((tmp_path / "pn" / "run.json").read_text())
  assert run["config"]["keras_model"] == model_path
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  assert tfmp.SearchSpace.from_json((tmp_path / "pn" / "space.json").read_text()).name == "user_cnn"
  _stage("search.py", f"--pruningnet_dir={tmp_path / 'pn'}", "--flops_ratio=0.5", "--population_size=6",
         "--num_generations=2", "--verbose=0", f"--output_dir={tmp_path / 's'}")
  proc = _stage("retrain.py", f"--search_dir={tmp_path / 's'}", "--init=pretrained", "--distill", "--epochs=1",
                f"--output_dir={tmp_path / 'r'}")
  result = json.loads((tmp_path / "r" / "retrain.json").read_text())
  assert result["config"]["init"] == "pretrained" and result["config"]["distill"]
  assert result["accuracy_drop_pt"] == pytest.approx(100 * (result["original_test_accuracy"] -
                                                            result["test_accuracy"]))
  assert "drop" in proc.stdout
