"""The run's time estimate from step times measured before any training."""

import time

from tf_metaprune import pruning_net
from tf_metaprune import search as search_lib
from tf_metaprune import training
from tf_metaprune.pipeline.config import PipelineConfig
from tf_metaprune.pipeline.searching import _evaluator
from tf_metaprune.pipeline.stages import rows_for
from tf_metaprune.pipeline.stages import stage_names
from tf_metaprune.rebuild import rebuild as rebuild_model


EXPORT_SECONDS_PER_TEST_IMAGE = 0.0028
#: A forward pass (evaluation) costs about this share of a training step per image; a retraining ends with
#: evaluations of the test and the training images (measured on issue 23's MobileNetV2 0.35, batch 128: 0.23 ms
#: an image evaluated against 0.7 ms trained).
FORWARD_SHARE_OF_STEP = 1 / 3


def _time_steps(model, data, steps=5):
  """(seconds per training step, warm; seconds of the first step's tracing beyond a step) of a compiled `model`.

  Every training traces its step once (a fresh model: each retraining), which costs 10-40 s on a
  keras.applications model: as much as a few hundred steps.
  """
  model.make_train_function()
  batches = iter(data.repeat())
  t0 = time.perf_counter()
  model.train_function(batches)
  first = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps):
    model.train_function(batches)
  step = (time.perf_counter() - t0) / steps
  return step, max(0.0, first - step)


def measure_step_times(config: PipelineConfig, splits, space, budget, trained=None):
  """{"pruningnet_step_s", "candidate_s", "retrain_step_s"} measured now, warm, and the two trainings' tracing
  seconds ("pruningnet_trace_s", "retrain_trace_s"; measuring takes about that long).

  One PruningNet training step (from `trained` when given), one search
  candidate at the budget's uniform structure, one retraining step of that
  structure (with the teacher when `config.distill`).
  """
  net_kwargs = dict(hidden_units=config.hidden_units, bn_mode=config.bn_mode, bn_affine=bool(config.bn_affine),
                    seed=config.seed, sampling=config.sampling)
  net = pruning_net.PruningNet(space, **net_kwargs) if trained is None else trained.pruning_net(**net_kwargs)
  training.compile_model(net, learning_rate=config.pruningnet_learning_rate, optimizer=config.pruningnet_optimizer)
  net_step, net_trace = _time_steps(net, splits.train)
  uniform = search_lib.largest_uniform(space, budget)[1]
  evaluator = _evaluator(net, splits, config)
  evaluator.accuracy(space.largest())   # traces
  t0 = time.perf_counter()
  evaluator.accuracy(uniform)
  candidate = time.perf_counter() - t0
  model = rebuild_model(space, uniform)
  if config.distill and trained is not None:
    model = training.Distiller(model, trained.logits_model(), config.distill_temperature, config.distill_weight)
  training.compile_model(model, learning_rate=config.retrain_learning_rate, optimizer=config.retrain_optimizer)
  retrain_step, retrain_trace = _time_steps(model, splits.train)
  return {"pruningnet_step_s": net_step, "candidate_s": candidate, "retrain_step_s": retrain_step,
          "pruningnet_trace_s": net_trace, "retrain_trace_s": retrain_trace}


def estimate_run(config: PipelineConfig, num_examples, steps_per_epoch, times, pending=None):
  """Lines estimating the whole run, stage by stage, from measured step times, and how to shorten it.

  Args:
    config: a sized config (`sized_for`).
    num_examples: the splits' {"train", "search", "test"} image counts.
    steps_per_epoch: training batches per epoch.
    times: `measure_step_times`'s figures (the tracing ones may be left out:
      0). The evolution's count is an upper bound; a retraining adds its
      final evaluation of the test and training images
      (`FORWARD_SHARE_OF_STEP`); the export is rough
      (`EXPORT_SECONDS_PER_TEST_IMAGE`).
    pending: the stages still to run (default: all of the run's).

  Returns:
    (two lines, {stage: seconds}).
  """
  stages = stage_names(config)
  pending = list(stages if pending is None else pending)
  steps = int(steps_per_epoch)
  searcher = config.searcher_config()
  candidates = None if searcher is None else searcher.max_candidates()
  rows = [row.key for row in rows_for(config)]
  scored = min(config.search_images or num_examples["search"], num_examples["search"])
  rescored = (config.rescore_top_k or 0) * num_examples["search"] / max(1, scored)   # in candidates' worth
  seconds = {"pruningnet": (config.pruningnet_epochs * steps * times["pruningnet_step_s"] +
                            times.get("pruningnet_trace_s", 0.0)),
             "search": ((candidates or 0) + rescored) * times["candidate_s"]}
  evaluated_batches = (num_examples["train"] + num_examples["test"]) / max(1, num_examples["train"]) * steps
  for key in rows:
    seconds[f"retrain_{key}"] = (config.retrain_epochs * steps * times["retrain_step_s"] +
                                 times.get("retrain_trace_s", 0.0) +
                                 evaluated_batches * FORWARD_SHARE_OF_STEP * times["retrain_step_s"])
  seconds["export"] = len(rows) * num_examples["test"] * EXPORT_SECONDS_PER_TEST_IMAGE
  seconds = {k: v for k, v in seconds.items() if k in pending}
  rescore = f" + re-scoring the best {config.rescore_top_k}" if config.rescore_top_k else ""
  traced = " (+ tracing)" if times.get("pruningnet_trace_s") else ""
  words = {"pruningnet": (f"pruningnet {config.pruningnet_epochs} x {steps:,} steps x "
                          f"{times['pruningnet_step_s']:.3f} s{traced}"),
           "search": (f"search at most {candidates:,} candidates x {times['candidate_s']:.2f} s{rescore}" if candidates
                      else f"search ({config.searcher}: not estimated)"),
           "export": f"export {len(rows)} models (rough)"}
  parts = []
  retrains = [k for k in seconds if k.startswith("retrain_")]
  for stage in seconds:
    if not stage.startswith("retrain_"):
      parts.append(f"{words[stage]} = {training.describe_seconds(seconds[stage])}")
    elif stage == retrains[0]:
      parts.append(f"{len(retrains)} retraining{'s' if len(retrains) > 1 else ''} x {config.retrain_epochs} x "
                   f"{steps:,} steps x {times['retrain_step_s']:.3f} s (+ tracing, evaluation) = "
                   f"{training.describe_seconds(sum(seconds[k] for k in retrains))}")
  lines = [f"[metaprune] estimate (step times measured now, on this machine): {'; '.join(parts)}; total "
           f"{training.describe_seconds(sum(seconds.values()))}",
           f"[metaprune]   shorter: --epochs (PruningNet, now {config.pruningnet_epochs}), --retrain_epochs (now "
           f"{config.retrain_epochs}), --num_generations (now {config.num_generations}) or --search_images (now "
           f"{config.search_images or 'all'}), --max_examples (now {config.max_examples or 'all'}; the training "
           f"set has {num_examples['train']:,} images)"]
  return lines, seconds
