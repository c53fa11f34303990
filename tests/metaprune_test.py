"""End-to-end tests of examples/metaprune.py (and search.py / retrain.py on its folder).

One tiny run (small CNN, 12x12 MNIST subset, 1 epoch per training), shared by
the tests that read its outputs; they check every output file, that a rerun
recomputes nothing, and that changed settings of a finished stage are refused
before any work. (Kills at every stage and their resumes are
tests/kill_resume_test.py's.) The binaries run as forks of one process that
imported TensorFlow (tests/binary_zygote.py).
"""

import json
import os
import subprocess

import pytest

import testutil  # tests/testutil.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
TINY = ["--model=small_cnn", "--divisor=1", "--max_examples=500", "--input_size=12", "--batch_size=32",
        "--epochs=1", "--hidden_units=4", "--flops_ratio=0.5", "--population_size=6", "--num_generations=2",
        "--retrain_epochs=1", "--num_runs=3", "--verbose=0"]


def _run(binary, *args, timeout=600):
  return testutil.run_binary(binary, *args, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT,
                                                     PYTHONUNBUFFERED="1"), timeout=timeout)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  base = tmp_path_factory.mktemp("metaprune")
  out = base / "run"
  flagfile = base / "tiny.flags"   # absl's --flagfile: one flag per line
  flagfile.write_text("\n".join(TINY) + "\n")
  args = [f"--flagfile={flagfile}", f"--output_dir={out}"]
  first = _run("metaprune.py", *args)
  assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
  return {"dir": out, "args": args, "first": first}


@pytest.mark.slow
def test_metaprune_writes_every_output_file_and_a_consistent_report(run_dir):
  out = run_dir["dir"]
  for name in ("pruningnet/pruningnet.keras", "pruningnet/run.json", "pruningnet/logs", "structure.json",
               "uniform_structure.json", "search_state.json", "search_result.json", "uniform_result.json",
               "space.json", "pareto.png", "model.keras", "uniform.keras", "model_int8.tflite",
               "uniform_int8.tflite", "export.json", "report.json", "report.md", "stages", "config.json"):
    assert (out / name).exists(), name
  report = json.loads((out / "report.json").read_text())
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  space = tfmp.SearchSpace.from_json((out / "space.json").read_text())
  budget = tfmp.budgets.budget_from_config(report["budget"])
  for key in ("searched", "uniform"):
    row = report[key]
    structure = space.load_structure(str(out / row["structure_file"]))
    assert budget.is_feasible(space, structure) and row["mflops"] == pytest.approx(space.mflops(structure))
    assert 0.0 <= row["test_accuracy"] <= 1.0 and 0.0 <= row["int8_test_accuracy"] <= 1.0
    assert row["int8_size_bytes"] == os.path.getsize(out / ("model_int8.tflite" if key == "searched"
                                                             else "uniform_int8.tflite"))
    assert row["int8_latency_median_ms"] > 0
  assert report["searched"]["channels"] == space.channels(space.load_structure(str(out / "structure.json")))
  table = (out / "report.md").read_text()
  assert "| searched |" in table and "| uniform x" in table
  assert "| searched |" in run_dir["first"].stdout   # the table is printed too
  assert "model_int8 uniform_int8" in (out / "run_on_device.sh").read_text()
  assert sorted(p.stem for p in (out / "stages").iterdir()) == sorted(
      ["pruningnet", "search", "retrain_searched", "retrain_uniform", "export"])


@pytest.mark.slow
def test_run_dir_puts_the_tables_prediction_beside_host_and_phone_latency(run_dir, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top  (runs the generated shell script)
  import fake_adb  # pylint: disable=g-import-not-at-top  (tests/fake_adb.py: a phone with synthetic logs)
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  from tf_metaprune import latency_lut  # pylint: disable=g-import-not-at-top
  out = tmp_path / "run"
  shutil.copytree(run_dir["dir"], out)
  space = tfmp.SearchSpace.from_json((out / "space.json").read_text())
  sigs = latency_lut.layer_signatures(space, grid_size=2)
  table = latency_lut.table_from_timings(space, {s.name: 0.02 + 0.001 * s.cout for s in sigs}, 0.01, 0.05,
                                         grid_size=2, device="made-up table")
  table.save(str(tmp_path / "table.json"))
  done = subprocess.run(["sh", str(out / "run_on_device.sh")], capture_output=True, text=True,
                        env=fake_adb.environment(tmp_path), timeout=120)
  assert done.returncode == 0 and (out / "model_int8.txt").exists(), done.stderr
  proc = _run("latency_table.py", f"--run_dir={out}", f"--latency_table={tmp_path / 'table.json'}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((out / "device_latency.json").read_text())
  report = json.loads((out / "report.json").read_text())
  for key in ("searched", "uniform"):
    row = result["rows"][key]
    predicted = table.predict_ms(space, space.load_structure(str(out / report[key]["structure_file"])))
    assert row["predicted_ms"] == pytest.approx(predicted)
    assert row["host_ms"] == report[key]["int8_latency_median_ms"]
    assert row["host_over_predicted"] == pytest.approx(row["host_ms"] / predicted)
    # the fake phone times a model without channel counts in its name at 20 us + 3.4 us
    assert row["phone_ms"] == pytest.approx(0.0234) and row["phone_over_predicted"] == pytest.approx(0.0234 / predicted)
  assert "| phone ms" not in proc.stdout and "phone/pred" in proc.stdout


@pytest.mark.slow
def test_finished_run_rerun_recomputes_nothing(run_dir):
  out = run_dir["dir"]
  files = ("model_int8.tflite", "model.keras", "uniform.keras", "structure.json", "search_state.json")
  before = {f: os.path.getmtime(out / f) for f in files}
  again = _run("metaprune.py", *run_dir["args"])
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("done already") == 5
  assert {f: os.path.getmtime(out / f) for f in files} == before


@pytest.mark.slow
def test_changed_setting_of_a_finished_stage_stops_before_any_work(run_dir):
  args = run_dir["args"] + ["--epochs=2"]   # later flags win over the flagfile's
  proc = _run("metaprune.py", *args)
  assert proc.returncode != 0
  assert ("pipeline stage 'pruningnet' record" in proc.stderr and
          "belongs to another run: pruningnet_epochs differs (saved 1, now 2)" in proc.stderr), proc.stderr[-2000:]
  assert "rerun with the same settings to resume, or use a new output_dir" in proc.stderr


@pytest.mark.slow
def test_search_and_retrain_binaries_continue_the_pipelines_net_and_refuse_pretrained_init(run_dir, tmp_path):
  search = _run("search.py", f"--pruningnet_dir={run_dir['dir'] / 'pruningnet'}", "--flops_ratio=0.7",
                "--searcher=uniform", "--verbose=0", f"--output_dir={tmp_path / 's'}")   # through search.run
  assert search.returncode == 0, search.stderr[-3000:]
  assert json.loads((tmp_path / "s" / "search_result.json").read_text())["method"] == "uniform"
  for name in ("structure.json", "uniform_structure.json", "search_result.json", "pareto.png", "settings.json"):
    assert (tmp_path / "s" / name).exists(), name
  retrain = _run("retrain.py", f"--search_dir={tmp_path / 's'}", "--uniform", "--epochs=1",
                 f"--output_dir={tmp_path / 'r'}")
  assert retrain.returncode == 0, retrain.stderr[-3000:]
  result = json.loads((tmp_path / "r" / "retrain.json").read_text())
  assert result["structure"] == "uniform_structure.json" and 0.0 <= result["test_accuracy"] <= 1.0
  assert (tmp_path / "r" / "model.keras").exists()
  # A family's search has no trained model to fine-tune from: one line that names the way out.
  refused = _run("retrain.py", f"--search_dir={tmp_path / 's'}", "--init=pretrained", f"--output_dir={tmp_path / 'p'}")
  assert refused.returncode != 0
  assert "train_pruningnet.py --keras_model" in refused.stderr.strip().splitlines()[-1]


def test_budget_below_the_smallest_structure_stops_before_training(tmp_path):
  proc = _run("metaprune.py", *[a for a in TINY if not a.startswith("--flops_ratio")], "--max_mflops=0.00001",
              f"--output_dir={tmp_path / 'x'}")
  assert proc.returncode != 0
  assert "max_mflops=1e-05" in proc.stderr and "smallest" in proc.stderr
  assert not (tmp_path / "x" / "pruningnet").exists()


def test_settings_errors_name_the_flag_value_and_way_out():
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r"max_mflops=1.0, flops_ratio=0.5\): give one of the two"):
    pipeline.PipelineConfig(max_mflops=1.0, flops_ratio=0.5)
  with pytest.raises(ValueError, match=r"flops_ratio=1.5\): must be in \(0, 1\]"):
    pipeline.PipelineConfig(flops_ratio=1.5)
  with pytest.raises(ValueError, match=r"max_latency_ms=0.3.*needs a latency table"):
    pipeline.PipelineConfig(max_latency_ms=0.3)
  with pytest.raises(ValueError, match=r"init='warm'"):
    pipeline.PipelineConfig(flops_ratio=0.5, init="warm")


def test_output_dir_with_foreign_files_is_refused(tmp_path):
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  (tmp_path / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match=r"not empty and holds no pipeline run \(\['notes.txt'\]\)"):
    config = pipeline.PipelineConfig(flops_ratio=0.5)
    pipeline.Run(str(tmp_path), config, pipeline.stages_for(config))


def test_run_without_a_budget_stops_before_training(tmp_path):
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  config = pipeline.PipelineConfig(model="small_cnn", divisor=1, max_examples=200, input_size=8)
  with pytest.raises(ValueError, match="no budget given: set max_mflops, flops_ratio"):
    pipeline.run(config, str(tmp_path / "x"))
  assert not (tmp_path / "x" / "pruningnet").exists()


def test_keras_model_that_is_a_folder_is_named_as_a_folder(tmp_path):
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r"keras_model=.*\): is a folder, not a model file"):
    pipeline.PipelineConfig(keras_model=str(tmp_path), flops_ratio=0.5)


class _Splits:   # what sized_for reads of a DatasetSplits
  def __init__(self, train):
    self.num_examples = {"train": train, "search": train // 9, "test": 1000}


def test_unset_batch_and_budgets_are_sized_by_the_training_set_and_set_ones_are_kept():
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  config = pipeline.PipelineConfig(flops_ratio=0.25)
  assert config.pruningnet_epochs is None and config.retrain_epochs is None and config.batch_size is None
  demo = pipeline.sized_for(config, _Splits(3600))            # the MNIST subset: make demo's recipe
  assert (demo.pruningnet_epochs, demo.retrain_epochs, demo.batch_size) == (15, 8, 32)
  fashion = pipeline.sized_for(config, _Splits(54000))        # Fashion-MNIST: batch 128, the same steps
  assert (fashion.pruningnet_epochs, fashion.retrain_epochs, fashion.batch_size) == (4, 2, 128)
  assert pipeline.sized_for(fashion, _Splits(3600)) == fashion  # a sized config sizes to itself
  assert config.search_images == pipeline.SEARCH_IMAGES
  assert (demo.rescore_top_k, fashion.rescore_top_k) == (0, pipeline.RESCORE_TOP_K)  # 400 search images: all scored
  mine = pipeline.sized_for(config.replace(pruningnet_epochs=3, batch_size=32), _Splits(54000))
  assert (mine.pruningnet_epochs, mine.retrain_epochs, mine.batch_size) == (3, 1, 32)   # steps at the set batch


def test_load_data_batches_by_the_sized_batch_and_rebatching_keeps_the_images():
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  splits = pipeline.load_data(pipeline.PipelineConfig(flops_ratio=0.25, max_examples=200))
  assert splits.batch_size == pipeline.SMALL_BATCH == next(iter(splits.search))[0].shape[0]
  wide = splits.with_batch_size(100)
  assert wide.batch_size == 100 and wide.get_config()["batch_size"] == 100 and wide.num_examples == splits.num_examples
  images = lambda s: np.concatenate([x.numpy() for x, _ in s.test])
  np.testing.assert_array_equal(images(wide), images(splits))
  assert pipeline.batch_for(54000) == pipeline.LARGE_BATCH and pipeline.batch_for(3600) == pipeline.SMALL_BATCH


def test_run_estimate_adds_up_every_pending_stage_and_says_how_to_shorten_it():
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  config = pipeline.sized_for(pipeline.PipelineConfig(keras_model=None, flops_ratio=0.25), _Splits(54000))
  times = {"pruningnet_step_s": 0.1, "candidate_s": 0.2, "retrain_step_s": 0.05}
  counts = {"train": 54000, "search": 6000, "test": 10000}
  config = config.replace(pruningnet_epochs=1, retrain_epochs=1)
  lines, seconds = pipeline.estimate_run(config, counts, 1688, times)
  assert "(+ tracing)" not in lines[0]
  assert list(seconds) == list(pipeline.STAGES)
  assert seconds["pruningnet"] == pytest.approx(1688 * 0.1)
  assert seconds["search"] == pytest.approx((50 * 12 + 5 * 6000 / 1024) * 0.2)   # and the re-score of the best 5
  evaluated = (54000 + 10000) / 54000 * 1688 * pipeline.FORWARD_SHARE_OF_STEP   # test + train images, forward only
  assert seconds["retrain_searched"] == seconds["retrain_uniform"] == pytest.approx((1688 + evaluated) * 0.05)
  _, traced = pipeline.estimate_run(config, counts, 1688, dict(times, pruningnet_trace_s=30.0, retrain_trace_s=10.0))
  assert traced["pruningnet"] == pytest.approx(1688 * 0.1 + 30.0)
  assert traced["retrain_uniform"] == pytest.approx((1688 + evaluated) * 0.05 + 10.0)
  assert "pruningnet 1 x 1,688 steps x 0.100 s = about 3 min" in lines[0]
  assert "2 retrainings x 1 x 1,688 steps" in lines[0] and "total about" in lines[0]
  assert "--epochs (PruningNet, now 1)" in lines[1] and "54,000 images" in lines[1]
  _, later = pipeline.estimate_run(config, counts, 1688, times, pending=["export"])
  assert list(later) == ["export"]


def test_binary_stops_a_nan_loss_with_one_line_and_no_traceback(tmp_path):
  proc = _run("train_pruningnet.py", "--model=small_cnn", "--divisor=1", "--max_examples=200", "--input_size=8",
              "--hidden_units=0", "--epochs=1", "--num_random=0", "--learning_rate=1e9", "--optimizer=sgd",
              f"--output_dir={tmp_path / 'run'}", timeout=300)
  assert proc.returncode == 1
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert "the loss became nan" in last.lower() and "Lower the learning rate" in last, last
