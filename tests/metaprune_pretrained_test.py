"""examples/metaprune.py --keras_model: a saved trained model pruned end to end, with the peers' baselines."""

import json
import os
import warnings

import keras
import numpy as np
import pytest

import testutil  # tests/testutil.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  return testutil.run_binary("metaprune.py", *args, timeout=900)


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


def _keras_applications_style_model():
  """A tiny model shaped like keras.applications' defaults: BN momentum 0.999 and a Dense(activation="softmax") head."""
  L = keras.layers
  x = inputs = keras.Input((12, 12, 1))
  x = L.ReLU(6.0, name="stem_relu")(L.BatchNormalization(momentum=0.999, name="stem_bn")(
      L.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(x)))
  x = L.ReLU(6.0, name="dw_relu")(L.BatchNormalization(momentum=0.999, name="dw_bn")(
      L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)))
  x = L.ReLU(6.0, name="out_relu")(L.BatchNormalization(momentum=0.999, name="out_bn")(
      L.Conv2D(16, 1, use_bias=False, name="out")(x)))
  outputs = L.Dense(10, activation="softmax", name="predictions")(L.GlobalAveragePooling2D(name="gap")(x))
  return keras.Model(inputs, outputs, name="apps_style")


@pytest.mark.slow
def test_softmax_head_with_stale_batch_norms_is_recalibrated_trained_on_logits_and_handed_back_with_softmax(tmp_path):
  """The --keras_model run end to end on a keras.applications-style model, with the peers' baselines."""
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  splits = tfmp.data.load_dataset("mnist_subset", input_size=12, max_examples=400, batch_size=32, seed=0)
  keras.utils.set_random_seed(0)
  user = _keras_applications_style_model()
  user.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(),
               metrics=["accuracy"])
  user.fit(splits.train, epochs=3, verbose=0)   # 30 steps: momentum 0.999 keeps 97% of the initial statistics
  path = str(tmp_path / "user.keras")
  user.save(path)
  config = pipeline.PipelineConfig(
      keras_model=path, dataset="mnist_subset", input_size=12, max_examples=400, batch_size=32, divisor=1,
      pruningnet_epochs=1, hidden_units=4, flops_ratio=0.5, min_flops_ratio=0.05, population_size=6, num_generations=2, retrain_epochs=1,
      export_num_runs=3, init="pretrained", distill=True)
  lines = []
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    report = pipeline.run(config, str(tmp_path / "run"), verbose=0, log=lines.append)
  from_logits = [str(w.message) for w in caught if "from_logits" in str(w.message)]
  assert not from_logits, from_logits      # the PruningNet, the retrainings and the teacher all give logits
  stale = [line for line in lines if "batch-norm statistics are stale" in line]
  assert len(stale) == 1 and "recalibrated them" in stale[0], lines
  bn = report["original"]["batch_norm"]
  assert bn["recalibrated"] and bn["train_accuracy_batch_stats"] - bn["train_accuracy_inference"] > 0.05
  assert bn["train_accuracy_recalibrated"] > bn["train_accuracy_inference"]
  assert report["original"]["test_accuracy"] != bn["test_accuracy_as_saved"]
  table = pipeline.format_report(report)
  assert "after recalibrating its stale batch norms" in table
  assert "Original model" in table and "L1 uniform x" in table and "global magnitude" in table
  assert "drop vs original" in table
  assert report["rows"] == ["searched", "uniform", "global_magnitude", "uniform_scratch"]
  assert set(report["stage_seconds"]) == set(pipeline.PRETRAINED_STAGES)
  for key in report["rows"]:   # every drop is measured against the recalibrated original
    assert report[key]["mflops"] <= 0.5 * report["full_width"]["mflops"] + 1e-9
    assert report[key]["accuracy_drop_pt"] == pytest.approx(
        100 * (report["original"]["test_accuracy"] - report[key]["test_accuracy"]))
  searched = keras.saving.load_model(str(tmp_path / "run" / "model.keras"))
  assert searched.layers[-1].get_config()["activation"] == "softmax"   # a drop-in replacement again
  images = next(iter(splits.test))[0].numpy()
  np.testing.assert_allclose(searched(images).numpy().sum(axis=-1), 1.0, atol=1e-5)
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  interpreter = Interpreter(model_path=str(tmp_path / "run" / "model_int8.tflite"))
  interpreter.allocate_tensors()
  (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
  sums = []
  for image in images[:8]:
    interpreter.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
    interpreter.invoke()
    sums.append(float(interpreter.get_tensor(out["index"]).sum()))
  np.testing.assert_allclose(sums, 1.0, atol=0.03)   # int8 softmax: 10 outputs rounded to 1/256
