"""Tests of tf_metaprune.space: genes, structures, JSON, validation."""

import json

import numpy as np
import pytest

import tf_metaprune as tfmp
from tf_metaprune import space as space_lib


def _tiny():
  return tfmp.models.small_cnn((12, 12, 1), 4, channels=(8, 12, 16, 16), divisor=1)


def test_paper_width_ratios_are_31_steps_of_003():
  r = tfmp.PAPER_WIDTH_RATIOS
  assert len(r) == 31 and r[0] == 0.10 and r[-1] == 1.00
  assert np.allclose(np.diff(r), 0.03)


def test_round_channels_respects_divisor_and_bounds():
  assert space_lib.round_channels(64, 0.5, 8) == 32
  assert space_lib.round_channels(64, 0.1, 8) == 8     # never below the divisor
  assert space_lib.round_channels(10, 1.0, 8) == 10    # ratio 1.0 is the base width exactly
  assert space_lib.round_channels(64, 0.37, 1) == 24


def test_gene_channels_are_unique_sorted_and_end_at_base():
  g = tfmp.Gene("g", 32, divisor=8)
  assert g.channels == (8, 16, 24, 32)
  assert g.num_choices == 4


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_width_ratio_outside_unit_interval_is_rejected(bad):
  with pytest.raises(ValueError, match="outside"):
    tfmp.Gene("g", 32, width_ratios=(0.5, bad))


def test_uniform_largest_smallest_and_random_are_valid():
  space = _tiny()
  assert space.channels(space.largest()) == {"conv1": 8, "conv2": 12, "conv3": 16, "conv4": 16}
  assert all(c == 0 for c in space.smallest())
  half = space.channels(space.uniform(0.5))
  assert half == {"conv1": 4, "conv2": 6, "conv3": 8, "conv4": 8}
  assert space.random(seed=3) == space.random(seed=3)
  space.validate(space.random(seed=4))


def test_uniform_ratio_outside_unit_interval_is_rejected():
  with pytest.raises(ValueError, match="width_ratio=1.2"):
    _tiny().uniform(1.2)


def test_structure_of_wrong_length_names_both_lengths():
  with pytest.raises(ValueError, match="3 choices but space 'small_cnn' has 4 genes"):
    _tiny().validate([0, 0, 0])


def test_out_of_range_choice_names_gene_and_range():
  space = _tiny()
  with pytest.raises(ValueError, match="choice 99 for gene 'conv2' is out of range"):
    space.validate([0, 99, 0, 0])


def test_structure_json_round_trip_keeps_choices_and_channels(tmp_path):
  space = _tiny()
  s = space.random(seed=1)
  path = tmp_path / "s.json"
  space.save_structure(s, str(path), accuracy=0.5)
  data = json.loads(path.read_text())
  assert data["channels"] == space.channels(s) and data["accuracy"] == 0.5
  assert space.load_structure(str(path)) == s


def test_structure_json_of_another_space_is_rejected():
  a = _tiny()
  b = tfmp.models.small_cnn((12, 12, 1), 4, channels=(16, 16, 16, 16), divisor=1)
  text = a.structure_to_json(a.largest())
  with pytest.raises(ValueError, match="made for space"):
    b.structure_from_json(text)


@pytest.mark.parametrize("text,match", [("{not json", "cannot parse"), ("[1, 2]", "must be an object"),
                                        ('{"format": "other"}', "not a tf_metaprune structure")])
def test_malformed_structure_json_is_rejected_clearly(text, match):
  with pytest.raises(ValueError, match=match):
    _tiny().structure_from_json(text)


def test_space_config_round_trips_through_json():
  space = tfmp.models.resnet20((32, 32, 3), 10)
  again = tfmp.SearchSpace.from_json(space.to_json())
  assert again.get_config() == space.get_config()
  assert again.fingerprint() == space.fingerprint()


def test_from_channels_inverts_channels():
  space = _tiny()
  s = space.random(seed=7)
  assert space.from_channels(space.channels(s)) == s
  with pytest.raises(ValueError, match="cannot have 9 channels"):
    space.from_channels({"conv1": 9, "conv2": 6, "conv3": 8, "conv4": 8})


def test_add_of_different_genes_is_rejected():
  b = tfmp.SpaceBuilder("bad", (8, 8, 1), 2, divisor=1)
  x = b.input()
  a = b.conv("a", x, out=b.gene("ga", 4))
  c = b.conv("c", x, out=b.gene("gc", 4))
  b.add("sum", [a, c])
  b.gap("pool", "sum")
  b.dense("logits", "pool", out=2)
  with pytest.raises(ValueError, match="different widths"):
    b.build()


def test_input_too_small_for_strides_names_node_and_fix():
  with pytest.raises(ValueError, match=r"too small for 'resnet50'.*stride 2"):
    tfmp.models.resnet50((16, 16, 3), 10, small_input=False)


def test_saved_structure_file_is_readable_by_others(tmp_path):
  import os
  import stat
  space = _tiny()
  path = tmp_path / "s.json"
  old = os.umask(0o022)
  try:
    space.save_structure(space.largest(), str(path))
  finally:
    os.umask(old)
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_structure_json_of_a_longer_space_names_the_space_not_a_choice():
  big = tfmp.models.small_cnn((12, 12, 1), 4, channels=(8, 12, 16, 16, 16), divisor=1)
  with pytest.raises(ValueError, match="made for space 'small_cnn'"):
    _tiny().structure_from_json(big.structure_to_json(big.largest()))
