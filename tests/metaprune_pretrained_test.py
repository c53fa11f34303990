"""examples/metaprune.py --keras_model: a saved trained model pruned end to end, with the peers' baselines."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--divisor=1", "--max_examples=400", "--input_size=12", "--batch_size=32", "--epochs=1", "--hidden_units=4",
        "--flops_ratio=0.5", "--population_size=6", "--num_generations=2", "--retrain_epochs=1", "--num_runs=3",
        "--verbose=0", "--init=pretrained", "--distill"]


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, os.path.join(ROOT, "examples", "metaprune.py"), *args], capture_output=True,
                        text=True, env=env, timeout=900)


def _save_user_model(path):
  import keras  # pylint: disable=g-import-not-at-top
  L = keras.layers
  x = inputs = keras.Input((12, 12, 1))
  a = L.Conv2D(8, 3, padding="same", activation="relu", name="a")(x)
  b = L.Conv2D(4, 1, activation="relu", name="b")(x)
  x = L.BatchNormalization(name="bn")(L.Concatenate(name="cat")([a, b]))
  x = L.Conv2D(12, 3, strides=2, padding="same", activation="relu", name="c")(x)
  model = keras.Model(inputs, L.Dense(10, name="logits")(L.GlobalAveragePooling2D()(x)), name="user_cnn")
  model.save(path)


@pytest.mark.slow
def test_metaprune_prunes_a_saved_trained_model_and_reports_every_method(tmp_path):
  model_path = str(tmp_path / "user.keras")
  _save_user_model(model_path)
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
