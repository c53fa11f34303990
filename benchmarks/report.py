"""Gathers benchmarks/results/*.json into the tables of benchmarks/README.md.

Prints the speed section (every table with its title, date, machine, load
average and command, then which of the issue's goals are met); with
`--write_readme` it replaces the text between the `<!-- benchmarks:start -->`
and `<!-- benchmarks:end -->` markers of benchmarks/README.md. `make bench*`
ends with it. It also renders there the Fashion-MNIST quality tables
(`fashion_quality*.json`, `fashion_quality` markers), the PruningNet ablation
(`fashion_ablation` markers) and the pruning-a-trained-model tables
(`pretrained*.json`, `pretrained` markers), and writes the one summary table of
the top-level README.md's "Prune your trained model" (`pretrained_summary`
markers) from the same files.

  python benchmarks/report.py [--write_readme]
"""

import glob
import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_bool("write_readme", False, "Rewrite the generated tables of benchmarks/README.md and the summary "
                  "table of README.md.")
flags.DEFINE_string("results_dir", _common.RESULTS_DIR, "Where the JSON results are.")

ORDER = ["profile_step_before", "profile_step", "train_step_speed", "train_step_speed_h8",
         "train_step_speed_stride32_h8", "train_step_speed_sandwich_h8", "scaling", "search_speed", "ablation", "quality", "ranking", "tflite_quality"]
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
# The Fashion-MNIST quality tables (benchmarks/fashion_quality.py, `make bench-quality`) lead the Results.
FASHION_START, FASHION_END = "<!-- fashion_quality:start -->", "<!-- fashion_quality:end -->"
FASHION_DEEP = "fashion_quality_mobilenet_v2_demo"   # the same benchmark on the `make demo` MobileNetV2
# The pruning-a-trained-model tables (benchmarks/pretrained.py, one file per --model) in "Prune your trained model".
PRETRAINED_START, PRETRAINED_END = "<!-- pretrained:start -->", "<!-- pretrained:end -->"
# (result name, title in benchmarks/README.md, label in README.md's summary table)
PRETRAINED = [("pretrained", "Small CNN", "small CNN"), ("pretrained_mobilenet_v2_demo", "The `make demo` MobileNetV2", "MobileNetV2 (`make demo`)"),
              ("pretrained_mobilenet_v2_demo_minw10_div4", "The `make demo` MobileNetV2 on a finer grid (width ratios "
               "from 0.1, divisor 4: reaches 3.8% of the FLOPs, so 10% exists)", "MobileNetV2, finer grid"),
              ("pretrained_mobilenet_v2_demo_minw10_div4_pn8", "The same finer grid, MetaPruning's PruningNet trained "
               "8 epochs at 3e-3 (the baselines' runs are the rows above, reused and paired by seed)",
               "MobileNetV2, finer grid, PruningNet 8 epochs at 3e-3")]
SUMMARY_START, SUMMARY_END = "<!-- pretrained_summary:start -->", "<!-- pretrained_summary:end -->"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The PruningNet ablation on the small CNN's ranking (benchmarks/fashion_ablation.py, `make bench-ablation`).
ABLATION_START, ABLATION_END = "<!-- fashion_ablation:start -->", "<!-- fashion_ablation:end -->"
# The step-speed tables measured before the step was optimized (issue 17): the same scripts, run with
# PYTHONPATH at a checkout of this commit's library; results/<name>_before.json.
BEFORE_COMMIT = "c682a4d"
# (result name, setting, goal for the ratio or None)
STEP_SPEED = [("train_step_speed_h8", "hidden 8 (pipeline default), batch 128", 0.7),
              ("train_step_speed_stride32_h8", "hidden 8, stride 32, batch 32", 1.5),
              ("train_step_speed", "hidden 32 (paper), batch 128", None),
              ("train_step_speed_sandwich_h8", "hidden 8, sandwich (AutoSlim), batch 128", None)]


def _load(results_dir, name):
  path = os.path.join(results_dir, name + ".json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    data = json.load(f)
  return data if "table_md" in data else None   # older result files of another format


def goals(results):
  """One line per issue goal: the figure and whether it is met."""
  lines = []
  speeds = []
  for name, goal in (("train_step_speed", 0.7), ("train_step_speed_h8", 0.7), ("train_step_speed_stride32_h8", 1.5)):
    r = results.get(name)
    if r:
      parts = [f"{row['model']} {row['ratio']:.2f}x (goal <= {goal}: " + ("met)" if row["ratio"] <= goal else "not met)")
               for row in r["rows"]]
      speeds.append(f"hidden_units {r['hidden_units']}: " + ", ".join(parts))
  if speeds:
    lines.append("1. PruningNet step vs plain full-width step: " + "; ".join(speeds) + ".")
  r = results.get("search_speed")
  if r:
    ratio = r["median_ratio_evaluator_to_plain"]
    lines.append(f"2. Candidate evaluation vs the rebuilt plain model over the same batches, goal <= 1.2x: median "
                 f"{ratio:.2f}x ({'met' if ratio <= 1.2 else 'not met'}).")
    t = r["throughput"]
    lines.append(f"3. Search throughput: in-graph {t['in_graph_evaluations_per_second']:.2f} evaluations/s vs eager "
                 f"loop {t['eager_evaluations_per_second']:.2f} ({t['speedup_in_graph_over_eager']:.2f}x).")
  r = results.get("scaling")
  if r:
    lines.append("4. Growth: " + ", ".join(
        f"{row['model']} {row['pruning_net_ms_per_step']:.0f} ms/step (plain {row['plain_ms_per_step']:.0f}), "
        f"generators {row['generator_multiple']:.1f}x network" for row in r["rows"]) + " (reference: about 32x).")
  r = results.get("ablation")
  if r:
    rows = {row["hidden_units"]: row for row in r["rows"]}
    if 32 in rows:
      ref = rows[32]
      ok = [h for h, row in rows.items() if row["generator_multiple"] <= 8 and
            row["test_accuracy_mean"] >= ref["test_accuracy_mean"] - (ref["test_accuracy_std"] + row["test_accuracy_std"])]
      lines.append("5. Ablation, goal: a setting with <= 8x generator params that searches as well as hidden 32 "
                   "(retrained mean within the two settings' summed std or better): " + (
                       f"met by hidden_units {', '.join(str(h) for h in ok)}" if ok else "not met") + "; " + ", ".join(
                           f"hidden {h}: {row['generator_multiple']:.1f}x, {100 * row['test_accuracy_mean']:.2f}%"
                           for h, row in rows.items()) + ".")
  r = results.get("quality")
  if r:
    lines.append("6. Searched minus uniform, retrained test accuracy: " + ", ".join(
        f"{100 * row['flops_ratio']:.0f}% FLOPs {100 * row['difference_mean']:+.2f} pt" for row in r["rows"]) +
                 f" (mean of {r['seeds']} seeds each).")
  r = results.get("ranking")
  if r:
    lines.append(f"7. Ranking: Kendall's tau {r['kendall_tau']:.2f} (p={r['p_value']:.2g}) between the PruningNet's "
                 f"accuracy and the retrained accuracy of {len(r['rows'])} structures (FLOPs alone: "
                 f"{r['kendall_tau_mflops']:.2f}).")
  r = results.get("tflite_quality")
  if r:
    parts = [f"{row['name']} {row['int8_size_bytes'] / 1024:.1f} KB {row['int8_latency_ms']:.3f} ms" +
             (f" (LUT error {100 * row['lut_relative_error']:+.1f}%)" if "lut_relative_error" in row else "")
             for row in r["rows"]]
    lines.append("8. TFLite int8: " + ", ".join(parts) + ".")
  return lines


def step_speed_summary(results_dir):
  """Markdown table: PruningNet step / plain full-width step, before and after issue 17, per model."""
  rows, stale = [], []
  for name, setting, goal in STEP_SPEED:
    after, before = _load(results_dir, name), _load(results_dir, name + "_before")
    if not after:
      continue
    if not all("sampled_mflops_fraction" in r for r in after["rows"]):   # written by the script before issue 17
      stale.append(f"{setting} (`results/{name}.json`, {after['machine']['date_utc']})")
      continue
    old = {r["model"]: r for r in before["rows"]} if before else {}
    for r in after["rows"]:
      b = old.get(r["model"])
      met = "" if goal is None else (" (met)" if r["ratio"] <= goal else " (not met)")
      rows.append([r["model"], setting, f"{b['ratio']:.2f}" if b else "-", f"{r['ratio']:.2f}" + met,
                   f"{r['ratio_of_fastest_rounds']:.2f}" if "ratio_of_fastest_rounds" in r else "-",
                   f"{r['sampled_mflops_fraction']:.2f}" if "sampled_mflops_fraction" in r else "-",
                   f"{r['pruning_net_ms_per_step']:.0f} / {r['plain_ms_per_step']:.0f}",
                   "-" if goal is None else f"<= {goal}",
                   f"{before['machine']['load_average'][0]:.1f} -> {before['load_average_after'][0]:.1f}" if before
                   else "-",
                   f"{after['machine']['load_average'][0]:.1f} -> {after['load_average_after'][0]:.1f}"])
  if not rows:
    return []
  table = _common.markdown_table(
      ["model", "setting", f"ratio before ({BEFORE_COMMIT})", "ratio now (median)", "now, fastest rounds",
       "sampled / full MFLOPs", "now ms/step PruningNet / plain", "goal", "load before", "load now"], rows)
  note = ([f"Not re-measured since the optimization (their tables below are older): {'; '.join(stale)}.", ""]
          if stale else [])
  return ["### PruningNet step / plain full-width step: before and after the step optimization", "",
          "Ratios of medians over alternating rounds in one process (`train_step_speed.py`, commands below); "
          f"\"before\" is the same command with `PYTHONPATH` at a checkout of {BEFORE_COMMIT} (the library before "
          "the optimization; `results/<name>_before.json`). \"sampled / full MFLOPs\" is what the sampled "
          "structures compute: the ratio a step made of nothing but convolutions would have.", "", table, ""] + note


def section(results_dir):
  results = {name: _load(results_dir, name) for name in ORDER}
  results = {k: v for k, v in results.items() if v}
  out = ["The tables of this section come from `make bench` (one command, every script below in turn; `make bench "
         "BENCH_FLAGS=--quick` is a smoke run). Each script prints its table and writes "
         "`benchmarks/results/<name>.json` (every figure, seed and timing round) and `<name>.png`. Speed ratios "
         "are measured side by side in one process (alternating rounds, medians); the machine is shared, so "
         "each table gives the load average before -> after. `python benchmarks/report.py --write_readme` "
         "rebuilds this section from the JSON files.", ""]
  quick = [name for name, r in results.items() if r.get("quick") or " --quick" in r.get("command", "")]
  if quick:
    out += [f"**Smoke-run figures (--quick) in: {', '.join(quick)}** -- tiny settings, not the real measurement.",
            ""]
  out += step_speed_summary(results_dir)
  for name, r in results.items():
    m = r["machine"]
    title = r["title"] if not name.endswith("_before") else f"Before the step optimization ({BEFORE_COMMIT}): {r['title']}"
    out += [f"### {title}", "",
            f"Measured {m['date_utc']} UTC on {m['device']} (os.cpu_count() {m['cpus']}), TF {m['tensorflow']} / Keras "
            f"{m['keras']}; load average {m['load_average'][0]:.1f} -> {r['load_average_after'][0]:.1f}; "
            f"{r['seconds'] / 60:.1f} min. Command: `{r['command']}`", "", r["table_md"], ""]
  out += ["### Goals of the benchmark issue", ""] + goals(results)
  return "\n".join(out)


def fashion_section(results_dir, name="fashion_quality"):
  """The Fashion-MNIST tables of `<name>.json` with when, where, the scale and the wall time."""
  r = _load(results_dir, name)
  if r is None:
    return None
  m, rec = r["machine"], r.get("recipe") or {}
  walls = ", ".join(f"{k} {v / 60:.0f} min" for k, v in (r.get("wall_seconds") or {}).items())
  started = f"started {r['started_utc']} UTC, summarized " if r.get("started_utc") else ""
  lines = [f"Measured ({started}{m['date_utc']} UTC) on {m['device']} (os.cpu_count() {m['cpus']}, shared with other jobs: "
           f"load average {m['load_average'][0]:.1f} at the summary), TF {m['tensorflow']}. Command: "
           f"`make bench-quality{'' if r.get('model', 'small_cnn') == 'small_cnn' else ' FQ_MODEL=' + r['model']}` "
           "(four workers of `benchmarks/fashion_quality.py`, see its docstring)"
           + (f"; wall time of the main worker: {walls}" if walls else "") + ".", ""]
  if rec:
    images = rec.get("images") or {}
    lines += [f"Scale: {', '.join(f'{v:,} {k}' for k, v in images.items())} images; PruningNet {rec.get('pruningnet')}; search: {rec.get('search')}; "
              f"window {rec.get('window')}; retraining {rec.get('retrain')}.", ""]
  done = r.get("complete", {})
  lines += [f"Finished runs: {done.get('quality_pairs', 0)} searched/uniform pairs, {done.get('ranked_structures', 0)} "
            "ranked structures (a cut-off run reports what it has).", "", r["table_md"]]
  return "\n".join(lines)


def _steps_line(steps, lead="PruningNet steps (search quality = mean recalibrated search-split accuracy of the probe "
                            "structures): "):
  """The PruningNet step comparison of a pretrained.py result in one sentence, after `lead`."""
  if not steps:
    return "PruningNet steps: not measured in this run (the from-scratch net is trained after the first seed)."
  reached = steps.get("pretrained_steps_to_scratch_quality")
  head = (f"{lead}from scratch {steps['scratch_steps']} steps reach {steps['scratch_final_quality']:.3f}; started from the "
          f"trained model the net scores {steps['pretrained_quality_at_step0']:.3f} at step 0 and ")
  if reached is None:
    return head + (f"{steps['pretrained_final_quality']:.3f} after its {steps['pretrained_steps_trained']} steps: it "
                   "does not reach the from-scratch quality (goal <= 25% of the steps: not met).")
  frac = steps["fraction_of_scratch_steps"]
  return head + (f"reaches it after {reached} steps ({100 * frac:.0f}% of the scratch net's; goal <= 25%: "
                 f"{'met' if frac <= 0.25 else 'not met'}); final {steps['pretrained_final_quality']:.3f} after "
                 f"{steps['pretrained_steps_trained']} steps.")


def pretrained_section(results_dir):
  """The tables of benchmarks/pretrained.py for each model it was run on (None if none was)."""
  lines = []
  for name, title, _ in PRETRAINED:
    path = os.path.join(results_dir, name + ".json")
    if not os.path.exists(path):
      continue
    with open(path) as f:
      r = json.load(f)
    if "table_md" not in r:
      continue
    m, rec, orig = r["machine"], r.get("recipe") or {}, r["runs"].get("original") or {}
    data = r.get("data") or {}
    minutes = f"; {r['seconds_this_run'] / 60:.0f} min" if r.get("seconds_this_run") else ""
    if len(r.get("seconds_per_invocation") or []) > 1:
      minutes = (f"; {sum(r['seconds_per_invocation']) / 60:.0f} min in {len(r['seconds_per_invocation'])} "
                 "invocations (a rerun with more seeds resumes)")
    lines += [f"**{title}** (`benchmarks/results/{name}.json`, `.png`). Measured from {m['date_utc']} UTC on "
              f"{m['device']} (os.cpu_count() {m['cpus']}); load average {m['load_average'][0]:.1f} at the start, "
              f"{r.get('load_average_after', [float('nan')])[0]:.1f} at the end{minutes}. Command: "
              f"`{r['command']}`.", "",
              f"Original model: {rec.get('original')}, {orig.get('mflops', float('nan')):.3f} MFLOPs, "
              f"{orig.get('params', 0):,} params, trained on {data.get('train_examples', '?'):,} images: test "
              f"accuracy {100 * orig.get('test_accuracy', float('nan')):.2f}% on {data.get('test_examples', '?'):,}. "
              f"Fine-tuning: {rec.get('finetune')}. MetaPruning: PruningNet {rec.get('pruningnet_pretrained')}; "
              f"{rec.get('search')}. Seeds {rec.get('seeds')}.", "", r["table_md"], ""]
    if r.get("paired_table_md"):
      lines += ["Paired differences between methods (the same seeds fine-tune both):", "",
                r["paired_table_md"], ""]
    lines += [_steps_line(r.get("steps")), ""]
    # Longer step comparisons (--steps_only --name=<name>_steps[_variant]).
    for steps_path in sorted(glob.glob(os.path.join(results_dir, name + "_steps*.json"))):
      with open(steps_path) as f:
        s = json.load(f)
      if s.get("steps"):
        pre = s["runs"].get("pruningnet_pretrained", {})
        s["steps"].setdefault("pretrained_quality_at_step0", (pre.get("probe") or [{}])[0].get("quality", float("nan")))
        lines += [f"Step comparison with other PruningNet settings (`{s['command']}`, "
                  f"`benchmarks/results/{os.path.basename(steps_path)}`, load average "
                  f"{s['machine']['load_average'][0]:.1f} -> {s.get('load_average_after', [float('nan')])[0]:.1f}; "
                  f"PruningNet from the trained model {s['recipe']['pruningnet_pretrained']}), same probe: "
                  + _steps_line(s["steps"], lead=""), ""]
  return "\n".join(lines).strip() if lines else None


def _paired(r, ratio, comparison, fine_tuning):
  for p in r.get("paired") or []:
    if p["ratio"] == ratio and p["comparison"] == comparison and p["fine_tuning"] == fine_tuning:
      return p
  return None


def _interval(p):
  if p is None:
    return "-"
  lo, hi = p["difference_pt_ci95"]
  return f"{p['difference_pt_mean']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def pretrained_summary(results_dir):
  """README's one table: MetaPruning from a trained model against L1 uniform pruning, per model and budget."""
  rows = []
  for name, _, label in PRETRAINED:
    path = os.path.join(results_dir, name + ".json")
    if not os.path.exists(path):
      continue
    with open(path) as f:
      r = json.load(f)
    if "summary" not in r or "paired" not in r:
      continue
    orig = 100 * (r["runs"].get("original") or {}).get("test_accuracy", float("nan"))
    for ratio in r["recipe"]["ratios"]:
      meta, l1 = r["summary"].get(f"{ratio}/metaprune"), r["summary"].get(f"{ratio}/l1_uniform")
      if not meta or not l1:
        continue
      rows.append([label, f"{100 * ratio:.0f}%", f"{orig:.2f}", f"{meta['test_accuracy_mean']:.2f}",
                   f"{l1['test_accuracy_mean']:.2f}",
                   _interval(_paired(r, ratio, "metaprune - l1_uniform", "plain")),
                   _interval(_paired(r, ratio, "metaprune - l1_uniform", "KD")),
                   _interval(_paired(r, ratio, "metaprune - uniform_scratch", "plain")), str(meta["n"])])
  if not rows:
    return None
  return _common.markdown_table(
      ["model", "FLOPs budget", "original test %", "MetaPruning test %", "L1 uniform test %",
       "MetaPruning - L1 uniform, pt [95% CI]", "the same, both distilled", "MetaPruning - uniform from scratch",
       "seeds"], rows)


def ablation_section(results_dir):
  """The PruningNet ablation tables of `fashion_ablation.json` with when, where, the load and the wall time."""
  r = _load(results_dir, "fashion_ablation")
  if r is None:
    return None
  m = r["machine"]
  started = f"started {r['started_utc']} UTC, summarized " if r.get("started_utc") else ""
  walls = ", ".join(f"{v / 60:.0f} min" for v in (r.get("wall_seconds") or {}).values())
  lines = [f"Measured ({started}{m['date_utc']} UTC) on {m['device']} (os.cpu_count() {m['cpus']}; load average "
           f"{m['load_average'][0]:.1f} at the summary), TF {m['tensorflow']}. Command: `make bench-ablation` "
           f"(`{r['command']}`, under `flock /work/heavy.lock`)" + (f"; wall time {walls}" if walls else "") +
           f". {r.get('num_structures', '?')} structures of `fashion_quality.json`'s ranking; every figure, "
           "score and timing is in `benchmarks/results/fashion_ablation.json` (plot: `fashion_ablation.png`).", "",
           r["table_md"]]
  return "\n".join(lines)


def _replace_between(readme, start, end, text, path):
  if start not in readme or end not in readme:
    raise ValueError(f"{path} has no {start} ... {end} markers; add them where the section goes")
  head, rest = readme.split(start, 1)
  _, tail = rest.split(end, 1)
  return head + start + "\n" + text + "\n" + end + tail


def main(argv):
  del argv
  text = section(FLAGS.results_dir)
  fashion = fashion_section(FLAGS.results_dir)
  deep = fashion_section(FLAGS.results_dir, FASHION_DEEP)
  trained = pretrained_section(FLAGS.results_dir)
  ablation = ablation_section(FLAGS.results_dir)
  print(text)
  for part in (fashion, deep, ablation, trained):
    if part:
      print("\n" + part)
  summary = pretrained_summary(FLAGS.results_dir)
  if summary:
    print("\n" + summary)
  if FLAGS.write_readme:
    path = os.path.join(ROOT, "benchmarks", "README.md")
    with open(path) as f:
      readme = f.read()
    readme = _replace_between(readme, START, END, text, path)
    if fashion and FASHION_START in readme:
      readme = _replace_between(readme, FASHION_START, FASHION_END, fashion, path)
    start, end = f"<!-- {FASHION_DEEP}:start -->", f"<!-- {FASHION_DEEP}:end -->"
    if deep and start in readme:
      readme = _replace_between(readme, start, end, deep, path)
    if trained and PRETRAINED_START in readme:
      readme = _replace_between(readme, PRETRAINED_START, PRETRAINED_END, trained, path)
    if ablation and ABLATION_START in readme:
      readme = _replace_between(readme, ABLATION_START, ABLATION_END, ablation, path)
    with open(path, "w") as f:
      f.write(readme)
    print(f"\nupdated {path}")
    if summary:
      path = os.path.join(ROOT, "README.md")
      with open(path) as f:
        readme = f.read()
      with open(path, "w") as f:
        f.write(_replace_between(readme, SUMMARY_START, SUMMARY_END, summary, path))
      print(f"updated {path}")


if __name__ == "__main__":
  app.run(main)
