"""Tests of tf_metaprune.search.pas: straight-through masks, MACs penalty, exact export, resuming.

One Pruning-as-Search run (small_cnn on 12x12 synthetic images, 4 search
epochs + 1 fine-tuning epoch) is shared by the module.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_metaprune as tfmp
from tf_metaprune import budgets
from tf_metaprune import search
from tf_metaprune import training
from tf_metaprune.search import pas

CONFIG = search.PaSConfig(search_epochs=4, finetune_epochs=1, mask_learning_rate=0.05)


@pytest.fixture(scope="module")
def space():
  return tfmp.models.small_cnn(input_shape=(12, 12, 1), num_classes=4, channels=(8, 8, 16, 16), divisor=1)


@pytest.fixture(scope="module")
def splits():
  return tfmp.data.synthetic(num_examples=512, input_shape=(12, 12, 1), num_classes=4, batch_size=32)


@pytest.fixture(scope="module")
def budget(space):
  return budgets.FlopsBudget.from_ratio(space, 0.25)


@pytest.fixture(scope="module")
def outcome(space, splits, budget, tmp_path_factory):
  keras.utils.set_random_seed(0)
  out = str(tmp_path_factory.mktemp("pas"))
  result, model, net = search.pruning_as_search(space, splits, budget, CONFIG, output_dir=out)
  return result, model, net, out


def test_channel_mask_is_hard_forward_and_straight_through_backward():
  mask = pas.ChannelMask(4, min_channels=1)
  mask.build()
  mask.raw.assign([0.9, 0.2, 0.6, 0.1])
  x = tf.constant([[1.0, 2.0, 3.0, 4.0]])
  np.testing.assert_array_equal(mask(x).numpy(), [[1.0, 0.0, 3.0, 0.0]])    # exactly 0/1
  with tf.GradientTape() as tape:
    y = tf.reduce_sum(mask(x, training=True) * tf.constant([[1.0, 1.0, 1.0, 1.0]]))
  np.testing.assert_allclose(tape.gradient(y, mask.raw).numpy(), [1.0, 2.0, 3.0, 4.0])  # as if the mask were w
  assert float(y) == 4.0
  mask.raw.assign([0.1, 0.3, 0.2, 0.0])        # all below 0.5: the top min_channels stay on
  np.testing.assert_array_equal(mask.hard().numpy(), [0.0, 1.0, 0.0, 0.0])
  with pytest.raises(ValueError, match=r"min_channels=5\): min_channels must be in \[1, channels\]"):
    pas.ChannelMask(4, min_channels=5)


def test_exported_plain_model_equals_the_masked_network_output(outcome, space, splits):
  result, model, net, _ = outcome
  s = result.structure(space)
  assert net.masks_frozen and [len(k) for k in net.kept_channels()] == list(space.gene_channels(s))
  assert {type(l).__name__ for l in model.layers} <= {"InputLayer", "Conv2D", "BatchNormalization", "ReLU",
                                                      "GlobalAveragePooling2D", "Dense"}
  assert tfmp.count_flops(model) == round(space.mflops(s) * 1e6) and model.count_params() == space.params(s)
  for x, _ in splits.search:
    masked = net(x, training=False).numpy()
    plain = model(x, training=False).numpy()
    np.testing.assert_allclose(plain, masked, rtol=0, atol=1e-5 * max(1.0, np.abs(masked).max()))
  # Channels were really removed (the comparison is not full width against full width).
  assert any(len(k) < g.base_channels for k, g in zip(net.kept_channels(), space.genes))


def test_result_meets_the_budget_with_a_valid_structure(outcome, space, budget):
  result, _, _, out = outcome
  assert result.method == "pas" and budget.is_feasible(space, result.best_structure)
  assert space.validate(result.best.choices) == result.best_structure
  assert result.best_mflops == space.mflops(result.best_structure)
  assert search.SearchResult.from_json(result.to_json()) == result
  assert os.path.exists(os.path.join(out, "model.keras")) and result.extra["model_path"].endswith("model.keras")


def test_penalty_pulls_the_masks_from_full_width_toward_the_target(outcome, space, budget):
  result, _, _, _ = outcome
  mflops = [h["mask_mflops"] for h in result.history if "mask_mflops" in h]
  full = space.mflops(space.largest())
  assert len(mflops) == CONFIG.search_epochs
  assert min(mflops) <= budget.max_mflops * 1.2 < full
  assert abs(mflops[-1] - budget.max_mflops) < abs(full - budget.max_mflops)


def test_short_run_improves_over_its_start(outcome, space):
  result, _, _, _ = outcome
  start, snapped, best = result.candidates
  assert start.choices == space.largest().choices
  assert best.accuracy > start.accuracy + 0.2       # trained vs the untrained full-width network
  assert best.accuracy >= snapped.accuracy - 0.05    # fine-tuning the frozen structure did not hurt


def test_rerun_skips_finished_phases_and_rejects_other_settings(outcome, space, splits, budget, monkeypatch):
  result, _, _, out = outcome

  def no_training(*args, **kwargs):
    raise AssertionError("PaS trained again")

  monkeypatch.setattr(training, "fit", no_training)
  again, model, _ = search.pruning_as_search(space, splits, budget, CONFIG, output_dir=out)
  assert again.best == result.best and model.count_params() == space.params(result.best_structure)
  assert again.history[:-1] == result.history[:-1]       # the search epochs' mask history is kept
  with pytest.raises(ValueError, match=r"Pruning-as-Search run identity '.*identity\.json' belongs to another run: budget differs"):
    search.pruning_as_search(space, splits, budgets.FlopsBudget.from_ratio(space, 0.5), CONFIG, output_dir=out)


def test_latency_budget_and_bad_settings_are_refused_with_the_way_out(space, splits):
  table = budgets.LatencyTable.from_function(space, lambda node, ci, co: 1e-3 * ci * co)
  with pytest.raises(ValueError, match=r"cannot follow LatencyBudget.*use a FlopsBudget or ParamsBudget"):
    search.pruning_as_search(space, splits, budgets.LatencyBudget(max_ms=0.2, lut=table), CONFIG)
  with pytest.raises(ValueError, match=r"PaSConfig\(search_epochs=0\)"):
    search.PaSConfig(search_epochs=0)
  c = search.PaSConfig(alpha=2.0, finetune_epochs=0)
  assert search.PaSConfig.from_config(json.loads(json.dumps(c.get_config()))) == c


def test_masked_net_round_trips_its_config_and_snaps_masks_to_the_budget(space, budget):
  net = pas.MaskedNet(space, alpha=3.0, targets=[("flops", 1e4, 6e4)])
  again = pas.MaskedNet.from_config(json.loads(json.dumps(net.get_config())))
  assert again.space.fingerprint() == space.fingerprint() and again.targets == net.targets
  assert net.structure() == space.largest()            # untouched masks keep everything
  s = net.structure(budget)                              # shrunk until the budget holds
  assert budget.is_feasible(space, s)
  coarse = tfmp.models.small_cnn(input_shape=(12, 12, 1), num_classes=4, channels=(8, 8, 16, 16), divisor=1,
                                 width_ratios=(0.5, 1.0))
  net = pas.MaskedNet(coarse)
  net.masks[0].raw.assign(np.r_[np.ones(7), 0.0])          # 7 channels: not a choice of {4, 8}
  with pytest.raises(ValueError, match=r"masks keep \{'conv1': 7\} channels, not width choices.*freeze_masks"):
    pas.export(net)
  net.freeze_masks(net.structure())                         # snapped down to 4
  assert [len(k) for k in net.kept_channels()] == [4, 8, 16, 16]


def test_penalty_counts_macs_of_the_active_channels_with_the_one_counter(space):
  s = tfmp.Structure([2, 5, 9, 12])
  net = pas.MaskedNet(space, alpha=5.0, targets=[("flops", 0.0, 1.0)])
  net.freeze_masks(s)
  ch = net.active_channels()
  np.testing.assert_array_equal(ch.numpy(), space.gene_channels(s))
  assert float(net.counter.flops_of_widths(ch)) == space.mflops(s) * 1e6 == float(net.counter.flops(s.choices))
  assert float(net.counter.params_of_widths(ch)) == space.params(s)
  live = pas.MaskedNet(space, alpha=5.0, targets=[("flops", 1e4, space.mflops(space.largest()) * 1e6)])
  with tf.GradientTape() as tape:
    penalty = live.penalty(training=True)
  grads = tape.gradient(penalty, [m.raw for m in live.masks])
  assert float(penalty) > 0 and all(float(tf.reduce_min(g)) > 0 for g in grads)  # every mask is pushed down
