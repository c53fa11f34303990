"""Picking the final structure among a search's best few by a short fine-tune.

A one-shot proxy (a PruningNet's generated weights, recalibrated) is most
over-optimistic about the extreme shapes an evolution drives towards: on the
`make demo` MobileNetV2 the 25%-FLOPs pick scored 1.6 pt above uniform on the
proxy and retrained below 7 of 8 random in-window structures (README). The
cure of NetAdapt (Yang et al. 2018) and EagleEye (Li et al. 2020): train each
of the best `top_k` candidates for a few hundred steps from their starting
weights (the generated ones, or a trained model's most important channels)
and keep the one that then scores best on the held-out search split. That is
k short trainings instead of one -- still far below one retraining.

Example:

  >>> found = search.evolutionary(net, splits, budget)                              # doctest: +SKIP
  >>> picked = search.finetune_pick(found, lambda s: tfmp.rebuild(net, s),      # doctest: +SKIP
  ...                               splits.make_train(0), splits.search, top_k=5, steps=200)
  >>> picked.best_structure, picked.extra["finetune_pick"]                      # doctest: +SKIP
"""

import dataclasses
import time

import keras

from tf_metaprune import training as training_lib
from tf_metaprune.search import _common
from tf_metaprune.search import result as result_lib


def finetune_pick(result, build_model, train_data, eval_data, top_k=5, steps=200, learning_rate=1e-3,
                  optimizer="adam", seed=0, bn_data=None, verbose=0):
  """Fine-tunes each of `result`'s best `top_k` for `steps` steps; returns a result picking the best of them.

  Args:
    result: a `SearchResult` (its `top_k`, best first, are the candidates).
    build_model: structure -> a new Keras model with the starting weights of
      that structure, e.g. `lambda s: tfmp.rebuild(net, s)` (the PruningNet's
      generated weights) or `trained.rebuild` (a trained model's most
      important channels, `tf_metaprune.pretrained.TrainedModel`).
    train_data: a batched `tf.data.Dataset` of training (images, labels); its
      first `steps` batches train every candidate, in the same order.
    eval_data: the held-out search split (never the test split): the
      candidates are ranked by their accuracy on it (loss breaks ties).
    top_k: how many of `result.top_k` to fine-tune (>= 1).
    steps: optimizer steps per candidate (>= 1), cosine-decayed from
      `learning_rate` (`tf_metaprune.training.fit`'s recipe).
    learning_rate, optimizer: of that short fine-tune.
    seed: `keras.utils.set_random_seed` before each candidate, so each starts
      the same way whatever its place in the list.
    bn_data: batches the batch-norm statistics are recalibrated on after the
      fine-tune (default: the `steps` training batches).
    verbose: 1 prints one line per candidate.

  Returns:
    A new `SearchResult`: `best` and `top_k` are the fine-tuned candidates
    ranked by their new accuracy and loss (`result.rank`); `candidates` and
    `history` are the search's; `extra["finetune_pick"]` lists every
    candidate with its search-time and fine-tuned scores and seconds,
    `extra["search_best"]` the search's own pick.

  Raises:
    ValueError: if `top_k` or `steps` is below 1, or `result` has no top-k.
  """
  top_k = _common.check_int("finetune_pick", "top_k", top_k, 1)
  steps = _common.check_int("finetune_pick", "steps", steps, 1)
  if not result.top_k:
    raise ValueError(f"finetune_pick: the {result.method!r} result holds no top-k candidates to choose among; "
                     "pass the result of a search (evolutionary, rl, ...), not of the uniform baseline")
  picks = list(result.top_k[:top_k])
  data = train_data.take(steps)
  rows, new = [], []
  for cand in picks:
    t0 = time.perf_counter()
    keras.utils.set_random_seed(seed)
    model = build_model(cand.structure)
    training_lib.fit(model, data, epochs=1, learning_rate=learning_rate, optimizer=optimizer, verbose=0,
                     bn_data=bn_data if bn_data is not None else data)
    scores = model.evaluate(eval_data, verbose=0, return_dict=True)
    acc, loss = float(scores["accuracy"]), float(scores["loss"])
    seconds = time.perf_counter() - t0
    new.append(dataclasses.replace(cand, accuracy=acc, loss=loss))
    rows.append({"choices": list(cand.choices), "mflops": cand.mflops, "search_accuracy": cand.accuracy,
                 "search_loss": cand.loss, "finetuned_accuracy": acc, "finetuned_loss": loss, "seconds": seconds})
    if verbose:
      print(f"[finetune_pick] {len(rows)}/{len(picks)}: search {cand.accuracy:.4f} -> fine-tuned {acc:.4f} "
            f"({seconds:.0f} s)", flush=True)
  ranked = result_lib.rank(new)
  extra = dict(result.extra, finetune_pick=rows, search_best=result.best.to_dict(),
               finetune_pick_settings={"top_k": top_k, "steps": steps, "learning_rate": float(learning_rate),
                                       "optimizer": optimizer, "seed": int(seed)})
  return dataclasses.replace(result, best=ranked[0], top_k=ranked, extra=extra)
