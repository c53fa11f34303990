"""benchmarks/tight_budgets.py: the order of its work, its seed sizing and its crash-safe files (no training)."""

import importlib
import json
import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
tb = importlib.import_module("tight_budgets")


@pytest.fixture(autouse=True)
def default_flags():
  if not tb.FLAGS.is_parsed():
    tb.FLAGS(["tight_budgets"])
  yield


def test_schedule_puts_every_headline_at_min_seeds_first_and_variants_last():
  steps = tb.schedule(tb.parse_settings(tb.DEFAULT_SETTINGS.split(",")))
  first = [(s["setting"], s["what"]) for s in steps[:4]]
  assert first == [(("mbv2", "trained", 0.1), "pairs"), (("mbv2", "trained", 0.1), "convergence"),
                   (("mbv2", "scratch", 0.1), "pairs"), (("mbv2", "scratch", 0.1), "convergence")]
  assert steps[0]["pairs"] == [("metaprune", "l1_uniform")] and steps[0]["cap"] == tb.FLAGS.min_seeds
  assert steps[2]["pairs"] == [("searched", "uniform")]
  passes = [s["pass"] for s in steps]
  assert passes == sorted(passes)   # every pass-1 step before any pass-2 step, and so on
  headline_pairs = {p for s in steps if s["pass"] < 3 for p in s["pairs"]}
  assert headline_pairs == {("metaprune", "l1_uniform"), ("searched", "uniform")}
  variant_steps = [s for s in steps if any("_" in a and a != "l1_uniform" for a, _ in s["pairs"])]
  assert variant_steps and all(s["pass"] == 3 and s["setting"][2] == 0.1 for s in variant_steps)
  assert sum(s["what"] == "convergence" for s in steps) == 4   # once per (network, start)


def test_seeds_needed_follows_the_paired_sd():
  rng = np.random.default_rng(0)
  assert tb.seeds_needed([0.5, 0.6]) == tb.FLAGS.min_seeds          # too few pairs to measure the SD
  assert tb.seeds_needed([1.0, 1.1, 0.9, 1.05]) == tb.FLAGS.min_seeds  # SD 0.08: min_seeds is enough
  noisy = list(rng.normal(0, 1.3, 40))
  sd = np.std(noisy, ddof=1)
  n = tb.seeds_needed(noisy)
  assert n == tb.FLAGS.max_seeds or 2.2 * sd / np.sqrt(n) <= tb.FLAGS.target_half_width_pt
  assert tb.seeds_needed(list(rng.normal(0, 5, 10))) == tb.FLAGS.max_seeds


def test_runs_resume_after_a_kill_mid_write(tmp_path):
  runs = tb.Runs(str(tmp_path))
  runs.put("trained_0.1/metaprune_seed0", {"test_accuracy": 0.8})
  (tmp_path / "trained_0.1" / "metaprune_seed1.json.tmp").write_text('{"test_acc')   # a kill inside json.dump
  assert set(runs.all()) == {"trained_0.1/metaprune_seed0"}
  assert runs.get("trained_0.1/metaprune_seed1") is None
  assert json.loads((tmp_path / "trained_0.1" / "metaprune_seed0.json").read_text())["test_accuracy"] == 0.8


def test_save_atomic_writes_a_whole_model_and_leaves_no_temporary(tmp_path):
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  path, weights = str(tmp_path / "m.keras"), str(tmp_path / "m.weights.h5")
  tb._save_atomic(model, path)
  tb._save_atomic(model, weights, weights_only=True)
  assert sorted(os.listdir(tmp_path)) == ["m.keras", "m.weights.h5"]
  np.testing.assert_allclose(keras.saving.load_model(path).get_weights()[0], model.get_weights()[0])
