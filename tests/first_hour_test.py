"""What a new user meets in the first hour: stated times, a quiet start, bad images and paths that fail clearly.

The binaries run as forks of one process that imported TensorFlow (tests/binary_zygote.py: a fresh TF runtime,
their own environment, without the import's seconds); the start-up filter of TensorFlow's import lines is checked
on real processes at the end. Each case stops before any training (or trains a few steps of a tiny net).
"""

import os
import pathlib
import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import tensorflow as tf

import testutil  # tests/testutil.py
import tf_metaprune as tfmp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
BINARIES = ("metaprune.py", "train_pruningnet.py", "search.py", "retrain.py", "export_tflite.py")
# The flags whose defaults decide how long a binary runs; their help must say how long (measured, README).
LONG_RUNNING = {"metaprune.py": ("epochs", "num_generations", "retrain_epochs"),
                "train_pruningnet.py": ("epochs",), "search.py": ("num_generations",), "retrain.py": ("epochs",),
                "export_tflite.py": ("num_runs",)}
TIME = re.compile(r"about \d+(\.\d+)? (s|min|h)\b")
BENIGN = ("cuInit", "absl::InitializeLog", "Could not find cuda drivers", "oneDNN custom operations are on")


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}   # as a user starts them
  return dict(env, PYTHONPATH=ROOT, **extra)


def _run(binary, *args, timeout=300):
  return testutil.run_binary(binary, *args, env=_env(), timeout=timeout)


def _flag_help(helpfull, flag):
  """The help text of --flag in absl's --helpfull output (its lines up to the next flag)."""
  match = re.search(rf"^  --(?:\[no\])?{flag}: (.*?)(?=^  --|\Z)", helpfull, re.M | re.S)
  assert match, f"--{flag} not in --helpfull"
  return " ".join(match.group(1).split())


@pytest.mark.parametrize("binary", BINARIES)
def test_help_states_the_time_of_every_long_running_default(binary):
  proc = _run(binary, "--helpfull")   # absl prints the help and exits with status 1
  assert f"{binary}:" in proc.stdout, proc.stderr[-2000:]
  for flag in LONG_RUNNING[binary]:
    text = _flag_help(proc.stdout, flag)
    assert TIME.search(text), f"{binary} --{flag}: no 'about N min' in its help: {text!r}"


def _tiny_model_file(path):
  space = tfmp.models.small_cnn((28, 28, 1), 10, channels=(4, 4, 4, 4), divisor=1)
  tfmp.rebuild(space, space.smallest()).save(str(path))


@pytest.mark.parametrize("binary", BINARIES)
def test_output_dir_that_is_a_file_is_one_line_naming_it(binary, tmp_path):
  taken = tmp_path / "taken.txt"
  taken.write_text("mine")
  extra = []
  if binary == "export_tflite.py":
    _tiny_model_file(tmp_path / "m.keras")
    extra = [f"--model={tmp_path / 'm.keras'}"]
  proc = _run(binary, *extra, f"--output_dir={taken}")
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert f"{binary}: error: --output_dir='{taken}' is a file, not a folder" in lines[0]
  assert taken.read_text() == "mine"


def test_a_real_start_of_a_binary_shows_only_the_one_error_line():
  """As a user starts it (a new process, TensorFlow's import lines filtered): the one line, nothing else."""
  taken = pathlib.Path(tempfile.mkdtemp()) / "taken.txt"
  taken.write_text("mine")
  proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, "metaprune.py"), f"--output_dir={taken}"],
                        capture_output=True, text=True, env=_env(), timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      f"metaprune.py: error: --output_dir='{taken}' is a file, not a folder; pass a new or existing folder (it is "
      "created if missing)"], proc.stderr[-2000:]


@pytest.mark.parametrize("name,content,expected", [
    ("model.keras", b"not a zip", "is not a Keras archive"),
    ("weights.npy", b"\x93NUMPY", "expected a Keras model file")])
def test_export_of_a_file_that_is_not_a_keras_model_is_one_line_naming_it(name, content, expected, tmp_path):
  bad = tmp_path / name
  bad.write_bytes(content)
  proc = _run("export_tflite.py", f"--model={bad}", f"--output_dir={tmp_path / 'out'}")
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert f"--model='{bad}'" in lines[0] and expected in lines[0]
  assert not (tmp_path / "out").exists()


def _image_folder(root, bad_name="b/03.png"):
  """root/{a,b}/NN.png: 12 tiny 8x8 PNGs per class (class a dark, b bright), one of them truncated."""
  rng = np.random.default_rng(0)
  for k, name in enumerate("ab"):
    os.makedirs(root / name)
    for i in range(12):
      pixels = rng.integers(0, 100, (8, 8, 1)) + 150 * k
      (root / name / f"{i:02d}.png").write_bytes(tf.io.encode_png(pixels.astype(np.uint8)).numpy())
  good = (root / bad_name).read_bytes()
  (root / bad_name).write_bytes(good[:len(good) // 2])   # a truncated download
  return root / bad_name


def test_corrupt_image_stops_loading_naming_it_and_skip_bad_images_trains_on_the_rest(tmp_path):
  bad = _image_folder(tmp_path / "imgs")
  with pytest.raises(ValueError, match=re.escape(f"1 of 24 images in '{tmp_path / 'imgs'}' cannot be decoded: "
                                                 f"{bad} (")) as e:
    tfmp.data.load_dataset(f"folder:{tmp_path / 'imgs'}", batch_size=4)
  assert "skip_bad_images" in str(e.value)
  splits = tfmp.data.load_dataset(f"folder:{tmp_path / 'imgs'}", batch_size=4, skip_bad_images=True)
  assert sum(splits.num_examples.values()) == 23
  model = tfmp.rebuild(tfmp.models.small_cnn((8, 8, 1), 2, channels=(4, 4, 4, 4), divisor=1),
                       tfmp.Structure([0, 0, 0, 0]))
  history = tfmp.training.fit(model, splits.train, epochs=1, verbose=0)   # reads every remaining image
  assert np.isfinite(history["loss"][-1])


def test_binary_on_a_folder_with_a_corrupt_image_fails_before_the_first_step_and_skips_it_when_asked(tmp_path):
  bad = _image_folder(tmp_path / "imgs")
  common = [f"--dataset=folder:{tmp_path / 'imgs'}", "--model=small_cnn", "--divisor=1", "--hidden_units=0",
            "--batch_size=4", "--epochs=1", "--num_random=0"]
  proc = _run("train_pruningnet.py", *common, f"--output_dir={tmp_path / 'run'}")
  assert proc.returncode == 1
  assert "Epoch 1" not in proc.stdout and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert str(bad) in proc.stderr and "--skip_bad_images" in proc.stderr
  assert not (tmp_path / "run").exists()
  proc = _run("train_pruningnet.py", *common, "--skip_bad_images", f"--output_dir={tmp_path / 'run'}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "skipping 1 unreadable image(s) of 24" in proc.stdout and str(bad) in proc.stdout
  assert (tmp_path / "run" / "pruningnet.keras").exists()   # trained on the other 23


def test_start_shows_no_benign_tensorflow_lines_but_passes_a_real_error_line():
  code = ("import os, sys; sys.path.insert(0, sys.argv[1]); import common_flags\n"
          "os.write(2, b'E0000 00:00:1.5 42 real_op.cc:7] a real C++ error\\n')\n"
          "common_flags.quiet_tensorflow()\n"
          "import tensorflow as tf; tf.constant(1.0) + 1\n"
          "print('after the window', file=sys.stderr)\n")
  proc = subprocess.run([sys.executable, "-c", code, EXAMPLES], capture_output=True, text=True, env=_env(),
                        timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert not [line for line in proc.stderr.splitlines() if any(b in line for b in BENIGN)], proc.stderr
  assert "E0000 00:00:1.5 42 real_op.cc:7] a real C++ error" in proc.stderr
  assert "after the window" in proc.stderr


def test_sizes_read_as_ratios():
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  assert pipeline.times(1.168, 0.282) == "x4.1"
  assert pipeline.times(4 * 446_586, 154.3 * 1024) == "x11"


def test_report_warns_when_inference_mode_lags_training_accuracy():
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  lagging = pipeline.bn_check({"train_accuracy_inference": 0.10, "train_accuracy_last_epoch": 0.645})
  assert lagging.startswith("WARNING:") and "batch-norm statistics do not match" in lagging
  fine = pipeline.bn_check({"train_accuracy_inference": 0.98, "train_accuracy_last_epoch": 0.95})
  assert fine.endswith("consistent")


def test_tfds_record_whose_image_does_not_decode_is_named_before_training_and_skipped_when_asked(tmp_path):
  import io  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class FirstHourBadRecord(tfds.core.GeneratorBasedBuilder):
    """20 train + 8 test 8x8 images of 2 classes; train record 5's image is truncated PNG bytes."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
          {"image": tfds.features.Image(shape=(8, 8, 1)), "label": tfds.features.ClassLabel(num_classes=2)}),
          supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(20, 5), "test": self._generate_examples(8, None)}

    def _generate_examples(self, n, bad_index):
      rng = np.random.default_rng(n)
      for i in range(n):
        png = tf.io.encode_png(rng.integers(0, 255, (8, 8, 1)).astype(np.uint8)).numpy()
        yield i, {"image": io.BytesIO(png[:len(png) // 2] if i == bad_index else png), "label": i % 2}

  FirstHourBadRecord(data_dir=str(tmp_path)).download_and_prepare()
  spec = "tfds:first_hour_bad_record"
  with pytest.raises(ValueError, match=r"1 of 28 records of 'tfds:first_hour_bad_record' have images that cannot be "
                                       r"decoded: train\[:90%\] record #\d+\. .*skip_bad_images"):
    tfmp.data.load_dataset(spec, data_dir=str(tmp_path), batch_size=4)
  splits = tfmp.data.load_dataset(spec, data_dir=str(tmp_path), batch_size=4, skip_bad_images=True)
  assert splits.num_examples == {"train": 17, "search": 2, "test": 8}
  assert sum(int(y.shape[0]) for _, y in splits.calibration) == 17   # every remaining record decodes
