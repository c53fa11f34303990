"""Pruning a trained model: reordering keeps the function, pretrained starts, distillation, baselines."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_metaprune as tfmp
from tf_metaprune import pretrained
from tf_metaprune import training

L = keras.layers


def _randomize(model, seed=0):
  """Gives every weight a random value (BN statistics too), as training would: no channel is like another."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    arrays = layer.get_weights()
    if not arrays:
      continue
    if isinstance(layer, L.BatchNormalization):
      n_affine = len(arrays) - 2
      arrays = ([rng.uniform(0.5, 1.5, a.shape) if i == 0 and layer.scale else rng.normal(0, 0.2, a.shape)
                 for i, a in enumerate(arrays[:n_affine])]
                + [rng.normal(0, 0.2, arrays[-2].shape), rng.uniform(0.5, 1.5, arrays[-1].shape)])
    else:
      arrays = [rng.normal(0, 0.25, a.shape) for a in arrays]
    layer.set_weights([np.asarray(a, np.float32) for a in arrays])
  return model


def _rel_diff(a, b):
  return float(np.abs(a - b).max() / np.abs(a).max())


def _images(space, n=4, seed=1):
  return np.random.default_rng(seed).normal(size=(n,) + space.input_shape).astype(np.float32)


FAMILIES = {
    "small_cnn": lambda: tfmp.models.small_cnn((12, 12, 1), 10, channels=(8, 16, 16, 24), divisor=1),
    "mobilenet_v1": lambda: tfmp.models.mobilenet_v1((16, 16, 3), 10, width_multiplier=0.25, divisor=1),
    "mobilenet_v2": lambda: tfmp.models.mobilenet_v2((16, 16, 3), 10, width_multiplier=0.35, divisor=1,
                                                      stage_repeats=(1, 2, 1, 1, 1, 1, 1)),
    "resnet20": lambda: tfmp.models.resnet20((16, 16, 3), 10, width_multiplier=0.5, divisor=1,
                                              prune_last_stage=True),
    "resnet56": lambda: tfmp.models.resnet56((8, 8, 3), 10, width_multiplier=0.25, divisor=1),
    "resnet50": lambda: tfmp.models.resnet50((16, 16, 3), 10, width_multiplier=0.125, divisor=1),
}


def test_every_built_in_family_is_covered():
  assert set(tfmp.models.FAMILIES) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_reordering_preserves_the_logits_of_every_family(family):
  space = FAMILIES[family]()
  model = _randomize(tfmp.rebuild(space, space.largest()))
  trained = pretrained.TrainedModel(model, space=space)
  assert any((p != np.arange(len(p))).any() for p in trained.perms.values()), "nothing was reordered"
  x = _images(space)
  assert _rel_diff(model(x, training=False).numpy(), trained.reordered_model()(x, training=False).numpy()) < 1e-5


def _concat_model():
  x = inputs = keras.Input((12, 12, 1))
  for i, (width, stride) in enumerate([(8, 1), (12, 2)]):
    a = L.Conv2D(width, 3, stride, padding="same", activation="relu", name=f"s{i}_3x3")(x)
    b = L.Conv2D(width // 2, 1, stride, activation="relu", name=f"s{i}_1x1")(x)
    x = L.BatchNormalization(name=f"s{i}_bn")(L.Concatenate(name=f"s{i}")([a, b]))
  x = L.SeparableConv2D(10, 3, padding="same", name="sep")(x)
  x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
  return keras.Model(inputs, L.Dense(5, name="logits")(L.GlobalAveragePooling2D()(x)), name="concat")


def _residual_model():
  x = inputs = keras.Input((12, 12, 3))
  x = L.ReLU()(L.BatchNormalization(name="stem_bn")(L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(x)))
  for i in range(2):
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(6, 3, padding="same", name=f"b{i}_conv1")(x)))
    h = L.BatchNormalization()(L.Conv2D(8, 3, padding="same", name=f"b{i}_conv2")(h))
    se = L.GlobalAveragePooling2D(keepdims=True)(h)                 # squeeze-and-excitation: a Multiply tie
    se = L.Conv2D(8, 1, activation="sigmoid", name=f"b{i}_se")(L.Conv2D(4, 1, activation="relu")(se))
    x = L.ReLU()(L.Add(name=f"b{i}_add")([x, L.Multiply()([h, se])]))
  x = L.Dense(12, activation="relu", name="fc")(L.GlobalAveragePooling2D()(L.MaxPooling2D()(x)))
  return keras.Model(inputs, L.Dense(5, name="logits")(x), name="residual")


@pytest.mark.parametrize("make", [_concat_model, _residual_model], ids=["concatenation", "residual"])
def test_reordering_preserves_the_logits_of_a_keras_model(make):
  model = _randomize(make())
  trained = pretrained.TrainedModel(model, divisor=1)
  x = _images(trained.space)
  reordered = trained.reordered_model()
  assert [l.name for l in reordered.layers] == [l.name for l in model.layers]
  assert _rel_diff(model(x, training=False).numpy(), reordered(x, training=False).numpy()) < 1e-5


def test_reordering_puts_the_most_important_channels_first():
  space = FAMILIES["resnet20"]()
  trained = pretrained.TrainedModel(_randomize(tfmp.rebuild(space, space.largest())), space=space)
  after = pretrained.channel_importance(space, trained.weights)
  for gene in space.genes:
    assert np.all(np.diff(after[gene.name]) <= 1e-6), gene.name          # descending after reordering
    np.testing.assert_allclose(np.sort(after[gene.name]), np.sort(trained.scores[gene.name]), rtol=1e-6)


def test_a_pruned_structure_keeps_the_highest_l1_filters():
  space = FAMILIES["small_cnn"]()
  model = _randomize(tfmp.rebuild(space, space.largest()))
  trained = pretrained.TrainedModel(model, space=space)
  s = space.uniform(0.5)
  pruned = trained.rebuild(s)
  keep = space.channels(s)["conv1"]
  kernel = model.get_layer("conv1").get_weights()[0]
  top = np.argsort(-np.abs(kernel).sum(axis=(0, 1, 2)), kind="stable")[:keep]
  np.testing.assert_array_equal(pruned.get_layer("conv1").get_weights()[0], kernel[..., top])
  assert pruned.count_params() == space.params(s)


@pytest.mark.parametrize("make", [lambda: FAMILIES["mobilenet_v2"](), _concat_model], ids=["mobilenet_v2", "concat"])
def test_pruning_net_started_from_a_model_gives_its_logits_at_full_width(make):
  made = make()
  if isinstance(made, tfmp.SearchSpace):
    space, model = made, _randomize(tfmp.rebuild(made, made.largest()))
  else:
    space, model = None, _randomize(made)
  trained = pretrained.TrainedModel(model, space=space, divisor=1)
  net = trained.pruning_net(hidden_units=4)
  x = _images(trained.space)
  logits = net.call_structure(x, trained.space.largest()).numpy()
  assert _rel_diff(model(x, training=False).numpy(), logits) < 1e-5


def test_distillation_loss_equals_the_hand_written_one():
  student = np.array([[1.0, -0.5, 2.0], [0.3, 0.1, -1.2]], np.float32)
  teacher = np.array([[0.2, 0.4, 3.0], [-1.0, 2.0, 0.5]], np.float32)
  t = 3.0

  def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)

  p, q = softmax(teacher / t), softmax(student / t)
  want = t * t * np.mean(np.sum(p * np.log(p / q), axis=1))
  assert abs(float(training.distillation_loss(student, teacher, temperature=t)) - want) < 1e-6
  assert abs(float(training.distillation_loss(teacher, teacher, temperature=t))) < 1e-6


def test_distiller_loss_mixes_label_and_distillation_terms():
  space = FAMILIES["small_cnn"]()
  teacher = _randomize(tfmp.rebuild(space, space.largest()))
  student = _randomize(tfmp.rebuild(space, space.uniform(0.5)), seed=3)
  distiller = training.Distiller(student, teacher, temperature=2.0, weight=0.25)
  distiller.compile(loss=training.SparseCrossentropyWithSmoothing())
  x, y = _images(space, 6), np.arange(6) % 10
  s_logits = student(x, training=False)
  got = float(distiller.compute_loss(x=x, y=y, y_pred=s_logits, training=True))
  label = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, s_logits))
  kd = float(training.distillation_loss(s_logits, teacher(x, training=False), 2.0))
  assert abs(got - (0.75 * label + 0.25 * kd)) < 1e-5


def test_fit_with_a_teacher_trains_the_student_and_leaves_the_teacher_untouched(tmp_path):
  space = FAMILIES["small_cnn"]()
  teacher = _randomize(tfmp.rebuild(space, space.largest()))
  before = [w.copy() for w in teacher.get_weights()]
  trained = pretrained.TrainedModel(teacher, space=space)
  student = trained.rebuild(space.uniform(0.5))
  start = [w.copy() for w in student.get_weights()]
  x = _images(space, 32)
  ds = tf.data.Dataset.from_tensor_slices((x, np.arange(32) % 10)).batch(16)
  history = training.fit(student, ds, epochs=1, teacher=teacher, verbose=0, output_dir=str(tmp_path))
  assert np.isfinite(history["loss"][0])
  assert any(not np.array_equal(a, b) for a, b in zip(start, student.get_weights()))
  assert all(np.array_equal(a, b) for a, b in zip(before, teacher.get_weights()))
  assert teacher.trainable
  student.evaluate(ds, verbose=0)   # compiled for use after a distilled fit


class _ChannelScale(L.Layer):
  """A custom layer with a per-channel weight: nothing in tf_metaprune knows how to reorder it."""

  def build(self, input_shape):
    self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

  def call(self, x):
    return x * self.scale


def test_a_layer_that_cannot_be_reordered_fails_with_one_line_naming_it():
  x = inputs = keras.Input((8, 8, 1))
  x = _ChannelScale(name="my_scale")(L.Conv2D(4, 3, name="conv")(x))
  model = keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling2D()(x)))
  with pytest.raises(ValueError) as e:
    pretrained.TrainedModel(model)
  message = str(e.value)
  assert "'my_scale'" in message and "_ChannelScale" in message and "cannot reorder" in message
  assert "\n" not in message


def test_a_model_that_is_not_the_spaces_fails_naming_the_missing_layer():
  space = FAMILIES["small_cnn"]()
  other = _concat_model()
  with pytest.raises(ValueError, match="has no layer 'conv1'"):
    pretrained.TrainedModel(other, space=space)


def test_global_magnitude_uses_one_threshold_within_the_budget():
  space = FAMILIES["resnet20"]()
  trained = pretrained.TrainedModel(_randomize(tfmp.rebuild(space, space.largest())), space=space)
  budget = tfmp.FlopsBudget.from_ratio(space, 0.3)
  threshold, s = trained.global_magnitude(budget)
  assert budget.is_feasible(space, s)
  for gene, c in zip(space.genes, s):
    normalized = trained.scores[gene.name] / trained.scores[gene.name].mean()
    kept = int(np.sum(normalized >= threshold))
    assert gene.channels[c] == max([ch for ch in gene.channels if ch <= kept] or [gene.channels[0]])
  ratio, u = trained.l1_uniform(budget)
  assert budget.is_feasible(space, u) and u == space.uniform(ratio)


def test_bn_gamma_importance_ranks_by_batch_norm_scale():
  space = FAMILIES["small_cnn"]()
  model = _randomize(tfmp.rebuild(space, space.largest()))
  trained = pretrained.TrainedModel(model, space=space, importance="bn_gamma")
  gamma = model.get_layer("conv2_bn").get_weights()[0]
  np.testing.assert_array_equal(trained.perms["conv2"], np.argsort(-np.abs(gamma), kind="stable"))
  with pytest.raises(ValueError, match="importance='l2'"):
    pretrained.TrainedModel(model, space=space, importance="l2")
