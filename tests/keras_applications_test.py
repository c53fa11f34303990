"""The phones' networks through examples/metaprune.py --keras_model: MobileNetV3Small and EfficientNetB0.

keras.applications constructors with default arguments (preprocessing, the
softmax head) and `weights=None`, at tiny scale (32x32 grayscale, 10 classes,
96 images): the PruningNet starts from the reordered model and trains one
epoch, the evolution searches at 50% FLOPs, the pick is rebuilt, retrained one
epoch from the kept channels and exported to int8 TFLite -- which keeps the
softmax head. Every constructor through the library path is
benchmarks/keras_applications.py.
"""

import json

import keras
import numpy as np
import pytest

import testutil  # tests/testutil.py


@pytest.mark.slow
@pytest.mark.parametrize("constructor", ["MobileNetV3Small", "EfficientNetB0"])
def test_keras_applications_model_is_pruned_at_half_the_flops_and_exported_to_int8(constructor, tmp_path):
  model = getattr(keras.applications, constructor)(input_shape=(32, 32, 1), weights=None, classes=10)
  path = str(tmp_path / f"{constructor}.keras")
  model.save(path)
  proc = testutil.run_binary(
      "metaprune.py", f"--keras_model={path}", "--init=pretrained", "--dataset=mnist_subset", "--input_size=32",
      "--max_examples=96", "--batch_size=32", "--epochs=1", "--hidden_units=4", "--flops_ratio=0.5",
      "--population_size=4", "--num_generations=1", "--retrain_epochs=1", "--num_runs=1", "--verbose=0",
      f"--output_dir={tmp_path / 'run'}", timeout=1500)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / "run" / "report.json") as f:
    report = json.load(f)
  assert report["searched"]["mflops"] <= 0.5 * report["full_width"]["mflops"] + 1e-9
  searched = keras.saving.load_model(str(tmp_path / "run" / "model.keras"))
  assert searched.layers[-1].get_config().get("activation") == "softmax"   # the user's head, handed back
  assert searched.count_params() < model.count_params()
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  interpreter = Interpreter(model_path=str(tmp_path / "run" / "model_int8.tflite"))
  interpreter.allocate_tensors()
  (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
  image = np.random.default_rng(0).uniform(0, 1, (1, 32, 32, 1)).astype(inp["dtype"])
  interpreter.set_tensor(inp["index"], image)
  interpreter.invoke()
  probabilities = interpreter.get_tensor(out["index"])
  assert probabilities.shape == (1, 10)
  np.testing.assert_allclose(probabilities.sum(), 1.0, atol=0.05)   # int8 softmax: 10 outputs rounded to 1/256
