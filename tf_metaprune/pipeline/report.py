"""The report of a run: the dict (report.json) and its Markdown (report.md)."""

from typing import Any, Dict

from tf_metaprune import budgets
from tf_metaprune import stats
from tf_metaprune.pipeline.build import bn_check
from tf_metaprune.pipeline.build import times
from tf_metaprune.pipeline.stages import rows_for


def make_report(config, splits, space, budget, found, base, retrained, exported, state=None, structures=None,
                original=None):
  """The report dict: every retrained structure side by side, with the settings that made them.

  Args:
    structures: key -> Structure of the rows beyond "searched" and "uniform"
      (a pruned trained model's baselines).
    original: the trained model's record (its test accuracy): each row then
      gets its accuracy drop.
  """
  full = space.largest()
  rows = {}
  searched = {"searched": found, "uniform": base}
  structures = dict(structures or {})
  files = {row.key: row.structure_file for row in rows_for(config)}
  for key in retrained:
    result = searched.get(key)
    s = result.best_structure if (result is not None and key != "uniform_scratch") else structures[key]
    e = exported["files"][key]
    rows[key] = {
        "structure_file": files[key],
        "channels": space.channels(s),
        "mflops": space.mflops(s), "flops_ratio": space.mflops(s) / space.mflops(full), "params": space.params(s),
        "search_accuracy": result.best_accuracy if (result is not None and key != "uniform_scratch") else None,
        "test_accuracy": retrained[key]["test_accuracy"],
        "int8_test_accuracy": e["int8_accuracy"], "int8_top1_agreement": e["top1_agreement"],
        "int8_size_bytes": e["size_bytes"], "int8_latency_median_ms": e["latency_median_ms"],
        "int8_latency_p90_ms": e["latency_p90_ms"],
        # The batch-norm check: training images in inference mode vs the last epoch's training accuracy.
        "train_accuracy_inference": retrained[key].get("train_accuracy_inference"),
        "train_accuracy_last_epoch": retrained[key].get("train_accuracy_last_epoch"),
        # Ratios for reading at a glance: how many times smaller than the full-width network.
        "mflops_reduction": space.mflops(full) / max(space.mflops(s), 1e-12),
        "params_reduction": space.params(full) / max(space.params(s), 1),
        "int8_size_reduction_vs_float32_full": 4 * space.params(full) / max(e["size_bytes"], 1)}
    if original is not None:
      rows[key]["accuracy_drop_pt"] = 100 * (original["test_accuracy"] - retrained[key]["test_accuracy"])
    if config.latency_table:  # a latency budget: the table's prediction beside the host measurement
      predicted = budgets.LatencyTable.load(config.latency_table).predict_ms(space, s)
      rows[key]["predicted_latency_ms"] = predicted
      rows[key]["measured_over_predicted"] = e["latency_median_ms"] / predicted if predicted > 0 else None
  if base.extra.get("width_ratio") is not None:
    for key in ("uniform", "uniform_scratch"):
      if key in rows:
        rows[key]["width_ratio"] = base.extra["width_ratio"]
  stage_seconds = {} if state is None else {k: v["seconds"] for k, v in state.stages.items()}
  report = {
      "format": "tf_metaprune.PipelineReport", "version": 1,
      "space": space.name, "space_fingerprint": space.fingerprint(),
      "full_width": {"mflops": space.mflops(full), "params": space.params(full)},
      "budget": budget.get_config(), "budget_repr": repr(budget),
      "dataset": splits.get_config(), "config": config.get_config(),
      "rows": list(rows), **rows,
      "search": {"evaluations": found.num_evaluations, "seconds": found.seconds},
      "device": exported["device"], "latency_note": exported["note"], "stage_seconds": stage_seconds,
  }
  if original is not None:
    report["original"] = original
  return report


_ROW_LABELS = {"searched": "searched", "global_magnitude": "global magnitude (one L1 threshold)",
               "uniform_scratch": "uniform x{ratio:.2f} from scratch"}


def original_batch_norm_note(original):
  """The report's words on the original's batch-norm check ('' when it was not stale or not checked)."""
  bn = original.get("batch_norm")
  if not bn or not bn.get("stale"):
    return ""
  seen = (f"{100 * bn['train_accuracy_inference']:.2f}% of {bn['images']:,} training images in inference mode vs "
          f"{100 * bn['train_accuracy_batch_stats']:.2f}% with batch statistics")
  if bn.get("recalibrated"):
    return (f" after recalibrating its stale batch norms ({100 * bn['test_accuracy_as_saved']:.2f}% as saved; "
            f"{seen}); every drop is measured against the recalibrated model")
  return f" as saved, with stale batch norms ({seen}; not recalibrated: --norecalibrate_original)"


def format_report(report: Dict[str, Any]) -> str:
  """The report as Markdown: every retrained structure (and a trained model's baselines), sizes as ratios,
  the seed and batch-norm notes."""
  full = report["full_width"]
  float32_full_kb = 4 * full["params"] / 1024
  original = report.get("original")
  pretrained = report["config"].get("keras_model") is not None
  lines = [f"MetaPruning of {report['space']} on {report['dataset'].get('dataset', report['dataset'])}, budget "
           f"{report['budget_repr']} (full width {full['mflops']:.3f} MFLOPs, {full['params']:,} params)"]
  if original is not None:
    lines.append(f"Original model {report['config']['keras_model']}: test accuracy "
                 f"{100 * original['test_accuracy']:.2f}%{original_batch_norm_note(original)}; channels ranked by "
                 f"{original['importance']}, structures retrained from {report['config']['init']}"
                 f"{' with distillation' if report['config'].get('distill') else ''}.")
  drop = original is not None
  metric = report["config"].get("search_metric")
  by_accuracy = metric in (None, "accuracy", "acc", "sparse_categorical_accuracy")
  score_header = "search acc. (PruningNet)" if by_accuracy else f"search score: {metric} (PruningNet; losses negated)"
  lines += ["", f"| structure | MFLOPs | FLOPs ratio | params | {score_header} | test acc. (retrained) "
            + ("| drop vs original (pt) " if drop else "") + "| int8 test acc. | int8 size KB | int8 latency ms (median) |",
            "|---|---:|---:|---:|---:|---:|" + ("---:|" if drop else "") + "---:|---:|---:|"]
  for key in report.get("rows", ["searched", "uniform"]):
    r = report[key]
    if key == "uniform":
      label = (f"L1 uniform x{r.get('width_ratio', float('nan')):.2f} (Li et al.)" if pretrained
               and report["config"].get("init") == "pretrained" else f"uniform x{r.get('width_ratio', float('nan')):.2f}")
    else:
      label = _ROW_LABELS.get(key, key).format(ratio=r.get("width_ratio", float("nan")))
    search = ("-" if r.get("search_accuracy") is None else f"{100 * r['search_accuracy']:.2f}%" if by_accuracy
              else f"{r['search_accuracy']:.4f}")
    lines.append(f"| {label} | {r['mflops']:.3f} | {100 * r['flops_ratio']:.1f}% | {r['params']:,} | "
                 f"{search} | {100 * r['test_accuracy']:.2f}% | "
                 + (f"{r['accuracy_drop_pt']:+.2f} | " if drop else "")
                 + f"{100 * r['int8_test_accuracy']:.2f}% | {r['int8_size_bytes'] / 1024:.1f} | "
                 f"{r['int8_latency_median_ms']:.3f} |")
  lines.append("")
  for key in report.get("rows", ["searched", "uniform"]):
    r = report[key]
    lines.append(f"- {key}: {times(full['mflops'], r['mflops'])} fewer MFLOPs, {times(full['params'], r['params'])} "
                 f"fewer params than full width; int8 {r['int8_size_bytes'] / 1024:.1f} KB = "
                 f"{times(4 * full['params'], r['int8_size_bytes'])} smaller than float32 full width "
                 f"({float32_full_kb:.1f} KB = 4 bytes x {full['params']:,} params)")
  s, u = report["searched"], report["uniform"]
  lines.append(f"- {stats.seed_verdict(100 * (s['test_accuracy'] - u['test_accuracy']))}")
  for key in report.get("rows", ["searched", "uniform"]):
    check = bn_check(report[key])
    if check is not None:
      lines.append(f"- batch norms, {key}: {check}")
  for key in report["rows"]:
    r = report[key]
    if r.get("predicted_latency_ms") is not None:
      lines.append(f"- latency, {key}: predicted {r['predicted_latency_ms']:.3f} ms by the table, measured (int8, "
                   f"this host) {r['int8_latency_median_ms']:.3f} ms: {r['measured_over_predicted']:.2f}x; on a "
                   "phone: sh run_on_device.sh, then examples/latency_table.py --run_dir=<this folder>")
  lines += ["", f"Search: {report['search']['evaluations']} structures evaluated in "
                f"{report['search']['seconds']:.1f} s. Latency: {report['device']}; {report['latency_note']}."]
  if report.get("stage_seconds"):
    lines.append("Stage time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in report["stage_seconds"].items()))
  return "\n".join(lines)
