"""Rebuilds a searched structure as a plain Keras model and trains it.

The searched and the uniform-baseline structure are trained with the same
recipe (same epochs, learning rate, optimizer, seed, data), so their test
accuracies compare fairly:

  python examples/retrain.py --search_dir=runs/search --output_dir=runs/retrain_searched
  python examples/retrain.py --search_dir=runs/search --uniform --output_dir=runs/retrain_uniform
  python examples/retrain.py --search_dir=runs/search --init=generated --pruningnet_dir=runs/pruningnet ...
  python examples/retrain.py --search_dir=runs/search_mine --init=pretrained --distill ...
      # a PruningNet trained with --keras_model: fine-tune the kept channels, distill from your model
      # (with --uniform: the L1-uniform baseline of Li et al.)

The dataset is the one the PruningNet was trained on (recorded in the search
folder). Writes to --output_dir: model.keras, retrain.json (test accuracy,
history, MFLOPs, params), backup/ and logs/ (rerun the same command to resume
an interrupted training). Then: examples/export_tflite.py --model=<output_dir>/model.keras.
"""

import os

from absl import app
from absl import flags

import common_flags  # examples/common_flags.py

FLAGS = flags.FLAGS
flags.DEFINE_string("search_dir", "runs/search", "Output folder of examples/search.py (space.json, "
                    "structure.json, uniform_structure.json, settings.json).")
flags.DEFINE_bool("uniform", False, "Retrain the uniform baseline (uniform_structure.json) instead of the searched "
                  "structure, with the same recipe.")
flags.DEFINE_string("pruningnet_dir", None, "The PruningNet folder, for --init=generated.")
common_flags.define_retrain_flags(prefix="", time_note=" The MNIST subset's 8 (a searched small_cnn): about 3 min "
                                  "here.")
common_flags.define_distill_flags(source="the --keras_model the PruningNet was trained from")
common_flags.define_strategy_flag()
flags.DEFINE_string("output_dir", "runs/retrain", "Where the model and its checkpoints go.")


def main(argv):
  strategy = common_flags.start(argv)
  if FLAGS.init == "generated" and FLAGS.pruningnet_dir is None:
    common_flags.fail("--init=generated takes the weights from the PruningNet: pass --pruningnet_dir")
  from tf_metaprune import pipeline  # pylint: disable=g-import-not-at-top
  import tf_metaprune as tfmp  # pylint: disable=g-import-not-at-top
  try:
    searched = pipeline.read_settings(FLAGS.search_dir)
    if (FLAGS.init == "pretrained" or FLAGS.distill) and not searched.keras_model:
      raise ValueError(f"--init={FLAGS.init} --distill={FLAGS.distill}: --search_dir={FLAGS.search_dir!r} searched a "
                       f"{searched.model} family net, not a trained model; train the PruningNet with "
                       "examples/train_pruningnet.py --keras_model=PATH.keras first")
    config = searched.replace(**common_flags.retrain_kwargs(prefix=""), **common_flags.distill_kwargs())
    trained = pipeline.load_trained_model(config) if config.keras_model else None
    space_path = os.path.join(FLAGS.search_dir, "space.json")
    with open(space_path) as f:
      space = tfmp.SearchSpace.from_json(f.read())
    name = "uniform_structure.json" if FLAGS.uniform else "structure.json"
    structure = space.load_structure(os.path.join(FLAGS.search_dir, name))
    net = None
    if FLAGS.init == "generated":
      _, net = pipeline.load_training_run(FLAGS.pruningnet_dir, strategy=strategy)
      if net.space.fingerprint() != space.fingerprint():
        raise ValueError(f"--pruningnet_dir={FLAGS.pruningnet_dir!r} holds a net of another space than "
                         f"{space_path!r}; pass the PruningNet the search used")
    splits = pipeline.load_data(config)
    if trained is not None:   # the stale batch-norm check, as the PruningNet's training did
      pipeline.check_original(trained, splits, config)
    model_path = os.path.join(FLAGS.output_dir, "model.keras")
    if os.path.exists(model_path):
      raise ValueError(f"{model_path!r} exists: this retraining is finished; use another --output_dir")
    if trained is not None and trained.space.fingerprint() != space.fingerprint():
      raise ValueError(f"keras_model {config.keras_model!r} now reads as another space than {space_path!r} (the "
                       "file changed since the search?); search again")
    model, result = pipeline.retrain(config, splits, space, structure, FLAGS.output_dir, net=net, strategy=strategy,
                                     trained=trained)
  except (ValueError, PermissionError, OSError, FloatingPointError) as e:   # NaN loss: one line too
    common_flags.fail(str(e))
  if tfmp.distribute.is_chief(strategy):
    pipeline.save_model_atomic(pipeline.with_output_activation(model, space), model_path)  # the user's head
    result.update(structure=name, config=config.get_config())
    if trained is not None:
      result["original_test_accuracy"] = pipeline.original_record(trained, splits)["test_accuracy"]
      result["accuracy_drop_pt"] = 100 * (result["original_test_accuracy"] - result["test_accuracy"])
    tfmp.io.write_json_atomic(os.path.join(FLAGS.output_dir, "retrain.json"), result)
  full = space.largest()
  check = pipeline.bn_check(result)
  print(f"{name}: {result['mflops']:.3f} MFLOPs ({pipeline.times(space.mflops(full), result['mflops'])} fewer than "
        f"full width), {result['params']:,} params ({pipeline.times(space.params(full), result['params'])} fewer), "
        f"test accuracy {100 * result['test_accuracy']:.2f}% -> {model_path}")
  if "accuracy_drop_pt" in result:
    print(f"original model {config.keras_model}: test accuracy {100 * result['original_test_accuracy']:.2f}%, drop "
          f"{result['accuracy_drop_pt']:+.2f} pt")
  if check is not None:
    print(f"batch norms: {check}")


if __name__ == "__main__":
  app.run(main)
