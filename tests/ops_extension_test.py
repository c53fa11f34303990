"""A user's own layer, read through the extension point: an `Op` registered from outside tf_metaprune.

InceptionResNetV2's `CustomScaleLayer` (`inputs[0] + inputs[1] * scale`, a
scaled residual join) is the case: before registration it is refused in one
line naming the layer and `@tf_metaprune.ops.register`; after it, a tiny model
using it goes through read, reorder, PruningNet and rebuild. The op class
below is all a user writes (it subclasses the built-in `Add`, which ties the
inputs' channel groups).
"""

import keras
import numpy as np
import pytest
from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

import tf_metaprune as tfmp
from tf_metaprune import flops
from tf_metaprune import ops
from tf_metaprune import pretrained

L = keras.layers


class ScaledResidual(ops.Add):
  """`CustomScaleLayer`: x + r * scale, a residual join (the inputs share one gene)."""
  name = "test_scaled_residual"
  keras_types = (CustomScaleLayer,)
  keras_doc = "CustomScaleLayer"

  def pruning_call(self, net, node, inputs, call):
    return inputs[0] + inputs[1] * node.layer["config"]["scale"]

  def masked_call(self, net, node, inputs, training, mask):
    return self.pruning_call(net, node, inputs, None)


def _model():
  inp = keras.Input((8, 8, 3), name="image")
  x = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
  r = L.Conv2D(6, 1, activation="relu", name="branch_a")(x)
  r = L.Conv2D(8, 3, padding="same", name="branch_b")(r)
  x = CustomScaleLayer(0.17, name="scale")([x, r])
  model = keras.Model(inp, L.Dense(3, name="logits")(L.GlobalAveragePooling2D(name="gap")(x)), name="irv2_like")
  rng = np.random.default_rng(0)
  for v in model.weights:
    v.assign(rng.normal(0, 0.3, tuple(v.shape)).astype(np.float32))
  return model


@pytest.fixture(scope="module")
def registered():
  model = _model()
  with pytest.raises(ValueError, match=r"layer 'scale' of type CustomScaleLayer cannot be read.*"
                                       r"@tf_metaprune.ops.register") as info:
    tfmp.SearchSpace.from_keras_model(model)
  assert "\n" not in str(info.value)
  ops.register(ScaledResidual)   # from user code, after tf_metaprune was imported
  return model


def test_a_user_registered_op_is_found_by_every_module(registered):
  model = registered
  assert ops.for_keras_layer(model.get_layer("scale")) is ops.get("test_scaled_residual")
  tfmp.space.Node("s", "test_scaled_residual", ("a", "b"))   # the space checks ops when it runs
  space = tfmp.SearchSpace.from_keras_model(model, width_ratios=(0.5, 1.0), divisor=1)
  assert space.layout["scale"] == space.layout["stem"] == space.layout["branch_b"]   # one gene for the join
  assert space.params(space.largest()) == model.count_params()
  x = np.random.default_rng(1).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
  ref = model(x).numpy()
  trained = pretrained.TrainedModel(model, space=space)
  np.testing.assert_allclose(trained.reordered_model()(x).numpy(), ref, rtol=1e-4, atol=1e-5)
  net = trained.pruning_net(hidden_units=4)
  np.testing.assert_allclose(net.call_structure(x, space.largest()).numpy(), ref, rtol=1e-4, atol=1e-5)
  half = tfmp.rebuild(net, space.uniform(0.5))
  assert isinstance(half.get_layer("scale"), CustomScaleLayer)
  assert half.count_params() == space.params(space.uniform(0.5))
  assert flops.count_flops(half) / 1e6 == pytest.approx(space.mflops(space.uniform(0.5)))
  np.testing.assert_allclose(half(x).numpy(), net.call_structure(x, space.uniform(0.5)).numpy(), rtol=1e-4,
                             atol=1e-5)
