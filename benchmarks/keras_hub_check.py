"""Does a keras-hub segmentation / detection model go through tf_metaprune? (built from arguments, no download)

keras-hub is NOT a dependency of tf_metaprune. Run this in a separate venv that has it beside the pinned
TensorFlow / Keras, with this repository on the path:

  python3 -m venv /tmp/hub && /tmp/hub/bin/pip install tensorflow==2.21.0 keras==3.15.1 keras-hub \\
      tf-keras==2.21.0 tensorflow-model-optimization==0.8.1 tensorflow-datasets==4.9.10 importlib_resources \\
      ai-edge-litert==2.3.0 absl-py==1.4.0 numpy==2.4.6 mlxtend==0.25.0 matplotlib==3.11.2 tensorboard==2.21.0
  PYTHONPATH=. /tmp/hub/bin/python benchmarks/keras_hub_check.py

Per model it prints one JSON line: {"name", "status": "ok" | "refused", "stage" (where it stopped),
"error" (the one line), "seconds"} and, when read, the genes, full and half-width params / MFLOPs. The
stages are those of benchmarks/keras_applications.py: read, reorder, PruningNet at full width, rebuild at
50% and at random, int8 parity.
"""

import json
import sys
import time

import numpy as np


def _models(keras_hub):
  """(name, constructor) of small keras-hub dense-prediction models built from arguments (no weights)."""
  def deeplab():
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 64, 64],
        stackwise_num_blocks=[1, 1, 1], stackwise_num_strides=[1, 2, 2], block_type="basic_block",
        image_shape=(32, 32, 3))
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder, spatial_pyramid_pooling_key="P4", low_level_feature_key="P2", upsampling_size=4,
        dilation_rates=[2, 4], projection_filters=16, image_shape=(32, 32, 3))
    return keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=3)

  def retinanet():
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 64, 64, 64],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        image_shape=(64, 64, 3))
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder, min_level=3, max_level=4, use_p5=False, image_shape=(64, 64, 3))
    anchors = keras_hub.layers.AnchorGenerator(bounding_box_format="yxyx", min_level=3, max_level=4, num_scales=1,
                                               aspect_ratios=[1.0], anchor_size=4)
    return keras_hub.models.RetinaNetObjectDetector(backbone=backbone, anchor_generator=anchors, num_classes=3)

  def basnet():
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 64, 64, 64],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        image_shape=(None, None, 3))
    backbone = keras_hub.models.BASNetBackbone(image_encoder=encoder, num_classes=1, image_shape=(64, 64, 3),
                                               projection_filters=64)
    return keras_hub.models.BASNetImageSegmenter(backbone=backbone)

  return [("keras_hub.BASNetImageSegmenter(ResNet basic, 64x64)", basnet),
          ("keras_hub.DeepLabV3ImageSegmenter(ResNet basic, 32x32)", deeplab),
          ("keras_hub.RetinaNetObjectDetector(ResNet basic, 64x64)", retinanet)]


def check(name, build):
  import keras  # pylint: disable=g-import-not-at-top
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  row = {"name": name, "status": "refused"}
  t0 = time.perf_counter()
  stage = "build"
  try:
    model = build()
    stage = "read"
    space = tfmp.SearchSpace.from_keras_model(model)
    full, half = space.largest(), space.uniform(0.5)
    row.update(genes=len(space.genes), params_full=space.params(full), params_half=space.params(half),
               mflops_full=space.mflops(full), mflops_half=space.mflops(half), outputs=list(space.outputs))
    stage = "reorder"
    trained = tfmp.pretrained.TrainedModel(model, space=space)
    x = np.random.default_rng(0).random((2,) + space.input_shape).astype(np.float32)
    want = model(x, training=False)
    want = [np.asarray(w) for w in (want if isinstance(want, (list, tuple)) else [want])]
    got = trained.pruning_net(hidden_units=0).call_structure(x, full)
    got = [np.asarray(g) for g in (got if isinstance(got, (list, tuple)) else [got])]
    if space.output_activation is not None:   # the net computes the logits of a head read as logits + activation
      got = [np.asarray(keras.activations.get(space.output_activation)(g)) for g in got]
    row["logit_max_abs_diff"] = float(max(np.abs(a - b).max() for a, b in zip(want, got)))
    assert row["logit_max_abs_diff"] < 1e-3, f"full-width PruningNet differs from the model by {row['logit_max_abs_diff']}"
    stage = "rebuild"
    for s in (half, space.random(0)):
      pruned = tfmp.rebuild(space, s)
      pruned(x)
      assert pruned.count_params() == space.params(s), (pruned.count_params(), space.params(s))
      assert tfmp.count_flops(pruned) == round(space.mflops(s) * 1e6), (tfmp.count_flops(pruned), space.mflops(s))
    row["status"] = "ok"
    stage = None
  except Exception as e:  # pylint: disable=broad-except  (the table records where each model stops)
    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:400]
  row["stage"] = stage
  row["seconds"] = round(time.perf_counter() - t0, 1)
  return row


def main():
  try:
    import keras_hub  # pylint: disable=g-import-not-at-top  (optional: only this script uses it)
  except ImportError:
    print(json.dumps({"status": "skipped", "error": "keras-hub is not installed in this Python; see the "
                      "module docstring for the separate venv"}))
    return 1
  for name, build in _models(keras_hub):
    print(json.dumps(check(name, build)), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
