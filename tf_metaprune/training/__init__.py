"""Training recipes shared by the PruningNet and the rebuilt (retrained) models.

One recipe for both, so searched and uniform models are compared fairly:
SGD with momentum 0.9 and a cosine learning-rate decay (MetaPruning's
optimizer; scaled down from ImageNet's tens of epochs to what small data
needs), cross-entropy on logits with optional label smoothing (the reference
uses 0.1), and checkpoints that make long runs safe to interrupt:

* After every finished epoch, `fit(..., output_dir=...)` writes the weights
  and the optimizer state (step counter included) atomically, then a small
  JSON state naming them; a process killed at any moment -- even mid-write --
  leaves the previous complete checkpoint. Rerunning the same call resumes at
  the last finished epoch and ends exactly where an uninterrupted run would:
  same learning-rate schedule, same PruningNet structure sequence (a function
  of the step counter), same data order (a reshuffling dataset is advanced by
  the epochs already done). A run that already finished is not redone: its
  weights are loaded and its history returned.
* A NaN/Inf loss stops training at once with the step number; the checkpoint
  of the last good epoch is kept (never overwritten by NaN weights) and loaded
  back into the model.
* A state file of another run (other model, epochs, learning rate, ...) or a
  damaged one is a ValueError naming the file, which is left untouched.

Knowledge distillation (Hinton et al. 2015) for a pruned model:
`fit(pruned, data, epochs, teacher=original)` trains on
(1 - w) * label loss + w * T^2 * KL(teacher || student) at temperature T
(`distillation_loss`, `Distiller`; `distill_temperature`, `distill_weight`).

Distributed training: build the model under `strategy.scope()` (see
`tf_metaprune.distribute`) and call `fit` the same way on every worker, with
`train_data` batched by the *global* batch size; Keras splits each batch across
the replicas. Under a multi-worker strategy only the chief writes
checkpoints and logs; every worker restores from the chief's checkpoint, so
`output_dir` must be on a filesystem all workers share. When a worker dies
the others stop with a `tf_metaprune.distribute.WorkerLostError` naming the
cause; rerunning all workers resumes at the last finished epoch.

The package, by job: `losses` (label smoothing, distillation), `optimizers`
(the fused optimizers, `compile_model`), `checkpoint` (the resumable state of
a run), `loop` (`fit`, its input checks, batch-norm recalibration).

Example:

  >>> net = tfmp.PruningNet(space)
  >>> history = tfmp.training.fit(net, splits.train, epochs=5, learning_rate=0.05,
  ...                              output_dir="runs/pruningnet")    # doctest: +SKIP
"""


from tf_metaprune.training import checkpoint
from tf_metaprune.training import loop
from tf_metaprune.training import losses
from tf_metaprune.training import optimizers
from tf_metaprune.training.checkpoint import describe_seconds
from tf_metaprune.training.checkpoint import run_identity
from tf_metaprune.training.loop import batch_norm_layers
from tf_metaprune.training.loop import check_training_data
from tf_metaprune.training.loop import evaluate
from tf_metaprune.training.loop import expected_input_shape
from tf_metaprune.training.loop import fit
from tf_metaprune.training.loop import num_classes_of
from tf_metaprune.training.loop import recalibrate_batch_norm
from tf_metaprune.training.loop import steps_per_epoch
from tf_metaprune.training.losses import Distiller
from tf_metaprune.training.losses import SparseCrossentropyWithSmoothing
from tf_metaprune.training.losses import distillation_loss
from tf_metaprune.training.losses import user_losses
from tf_metaprune.training.optimizers import FusedAdam
from tf_metaprune.training.optimizers import FusedAdamW
from tf_metaprune.training.optimizers import FusedSGD
from tf_metaprune.training.optimizers import compile_model

__all__ = ["Distiller", "FusedAdam", "FusedAdamW", "FusedSGD", "SparseCrossentropyWithSmoothing", "batch_norm_layers",
           "check_training_data", "compile_model", "describe_seconds", "distillation_loss", "evaluate",
           "expected_input_shape",
           "fit", "num_classes_of", "recalibrate_batch_norm", "run_identity", "steps_per_epoch", "user_losses"]


def __getattr__(name):
  """Names of the former single-module tf_metaprune.training, resolved in the submodule that holds them now."""
  for module in (losses, optimizers, checkpoint, loop):
    if name in vars(module):
      return getattr(module, name)
  raise AttributeError(f"module 'tf_metaprune.training' has no attribute {name!r}")
