"""End-to-end test of examples/train_pruningnet.py (the current `make demo`)."""

import json

import testutil  # tests/testutil.py: the binary runs as a fork of one process that imported TensorFlow


def _run(*args):
  return testutil.run_binary("train_pruningnet.py", *args)


def test_binary_trains_saves_reports_and_only_resumes_with_resume_and_same_settings(tmp_path):
  out = tmp_path / "run"
  proc = _run("--model=small_cnn", "--epochs=1", "--hidden_units=4", "--num_random=1", f"--output_dir={out}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((out / "report.json").read_text())
  names = [r["structure"] for r in report["structures"]]
  assert names == ["full width", "uniform 0.50", "uniform 0.25", "random #1"]
  assert all(0.0 <= r["search_accuracy"] <= 1.0 for r in report["structures"])
  assert report["structures"][0]["mflops"] > report["structures"][2]["mflops"]
  assert (out / "pruningnet.keras").exists() and (out / "logs").is_dir()
  assert "evaluation traced 1 time(s)" in proc.stdout


  again = _run("--model=small_cnn", "--epochs=1", "--hidden_units=4", f"--output_dir={out}")
  assert again.returncode != 0
  assert "already holds a PruningNet run" in again.stderr and "--resume" in again.stderr
  resumed = _run("--model=small_cnn", "--epochs=1", "--hidden_units=4", "--num_random=1", "--resume",
                 f"--output_dir={out}")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "finished already: loading it" in resumed.stdout
  other = _run("--model=small_cnn", "--epochs=2", "--hidden_units=4", "--resume", f"--output_dir={out}")
  assert other.returncode != 0 and "pruningnet_epochs differs (saved 1, now 2)" in other.stderr


def test_unknown_model_stops_before_training_with_the_known_names(tmp_path):
  proc = _run("--model=vgg16", f"--output_dir={tmp_path / 'x'}")
  assert proc.returncode != 0
  assert "unknown model family 'vgg16'" in proc.stderr and "mobilenet_v2" in proc.stderr
  assert not (tmp_path / "x").exists()
