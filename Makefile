# Two commands for a fresh machine:
#   make demo   -- bootstraps .venv, then runs the main job on the embedded MNIST subset
#   make test   -- bootstraps .venv (with test extras), then runs the whole suite offline
# and the measurements behind benchmarks/README.md:
#   make bench  -- the speed and MNIST-quality benchmarks (bench-quality, bench-ablation, bench-lut and
#                  benchmarks/pretrained.py run separately), then refreshes the generated tables
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= runs/demo

.PHONY: venv demo test bench bench-speed bench-quality bench-ablation bench-tight bench-lut bench-latency clean

venv: $(STAMP)

# Re-install when the package list may have changed (an editable install maps the packages it saw).
$(STAMP): setup.py tf_metaprune/__init__.py tflite_export/__init__.py
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	$(VENV)/bin/python -m pip check
	@touch $(STAMP)

# MetaPruning of a 10-block MobileNetV2-style net (width 0.5, stride 32) to 25% of its FLOPs on the MNIST
# subset: PruningNet, evolutionary search + uniform baseline, retraining of both, int8 TFLite, report.md.
# These are examples/metaprune.py's defaults; add flags here, e.g. `make demo DEMO_FLAGS=--seed=1`.
DEMO_FLAGS ?=

demo: venv
	$(VENV)/bin/python examples/metaprune.py $(DEMO_FLAGS) --output_dir=$(DEMO_DIR)

test: venv
	$(VENV)/bin/python -m pytest tests

# Benchmarks (not tests): each prints its table and writes benchmarks/results/<name>.json + .png.
# ~39 min on 2 idle cores (34 min 45 s measured 2026-11-29 before the 3.6-min hidden_units 8 run was added), plus
# the step profile, the stride-32 and sandwich speed tables and 5 instead of 3 speed rounds added 2026-12-01 (not yet
# timed on an idle machine); `make bench BENCH_FLAGS=--quick` is a few-minute smoke run.
BENCH_FLAGS ?=
BENCH_PY = PYTHONPATH=$(CURDIR) $(VENV)/bin/python
SCALING_FLAGS = --name=scaling --models=resnet20,resnet56,mobilenet_v2:0.5,mobilenet_v2:1.0 --small_input=no \
	--batch_size=32 --steps=4

STRIDE32_FLAGS = --name=train_step_speed_stride32_h8 --hidden_units=8 --models=mobilenet_v2:0.5,mobilenet_v2:1.0 \
	--small_input=no --batch_size=32
SANDWICH_FLAGS = --name=train_step_speed_sandwich_h8 --hidden_units=8 --sampling=sandwich --steps=4 --rounds=3

bench: bench-speed
	$(BENCH_PY) benchmarks/train_step_speed.py $(SCALING_FLAGS) $(BENCH_FLAGS)
	$(BENCH_PY) benchmarks/search_speed.py $(BENCH_FLAGS)
	$(BENCH_PY) benchmarks/quality.py $(BENCH_FLAGS)
	$(BENCH_PY) benchmarks/report.py --write_readme

# The PruningNet step cost alone (the step profile and the four ratio tables of benchmarks/README.md),
# then the generated tables; the first part of `make bench`.
bench-speed: venv
	$(BENCH_PY) benchmarks/profile_step.py $(BENCH_FLAGS)
	$(BENCH_PY) benchmarks/train_step_speed.py $(BENCH_FLAGS)
	$(BENCH_PY) benchmarks/train_step_speed.py --hidden_units=8 --name=train_step_speed_h8 $(BENCH_FLAGS)
	$(BENCH_PY) benchmarks/train_step_speed.py $(STRIDE32_FLAGS) $(BENCH_FLAGS)
	$(BENCH_PY) benchmarks/train_step_speed.py $(SANDWICH_FLAGS) $(BENCH_FLAGS)
	$(BENCH_PY) benchmarks/report.py --write_readme

# Searched vs uniform on Fashion-MNIST (benchmarks/fashion_quality.py): paired seeds with 95% CIs, in-window
# ranking vs its noise ceiling, fitness test-retest, search vs proxy. Four workers share the work (resumable:
# rerun to continue a cut-off run); then the Results tables of benchmarks/README.md are rebuilt. Needs
# `apt-get install -y dataset-fashion-mnist`. Measured: 74 min wall on the shared 2-core machine at load 6-16
# (2026-12-01, benchmarks/README.md Results); the run is cut-off safe, so a rerun after a cut resumes.
# `make bench-quality FQ_MODEL=mobilenet_v2_demo` runs the same on the `make demo` MobileNetV2 (results in
# fashion_quality_mobilenet_v2_demo.json; its time is in benchmarks/README.md Results).
FQ_MODEL ?= small_cnn
FQ = $(BENCH_PY) benchmarks/fashion_quality.py --model=$(FQ_MODEL) $(BENCH_FLAGS)
bench-quality: venv
	@test -d /usr/share/datasets/fashion-mnist || { echo "Fashion-MNIST is missing: run apt-get install -y dataset-fashion-mnist (as root)"; exit 1; }
	$(FQ) --worker=main & $(FQ) --worker=quality & $(FQ) --worker=ranking & $(FQ) --worker=fitness; wait
	$(FQ) --worker=summary
	$(BENCH_PY) benchmarks/report.py --write_readme

# The PruningNet ablation on bench-quality's in-window ranking (benchmarks/fashion_ablation.py: hidden 0 / 8 / 32,
# non-affine and switchable BN, 4x the steps, each against the plain model trained the same steps; the
# classifier input at full width and the coarse grid as space facts + one 25% search), then the generated tables.
# Needs results/fashion_quality.json's ranking. Resumable (rerun to continue). Not yet timed end to end (2026-12-01, 2 threads,
# load 2-3): the plain model (1,560 steps) 265 s, a 1,560-step PruningNet 129 s + 35 s scoring; the whole plan about 50 min.
bench-ablation: venv
	@test -d /usr/share/datasets/fashion-mnist || { echo "Fashion-MNIST is missing: run apt-get install -y dataset-fashion-mnist (as root)"; exit 1; }
	$(BENCH_PY) benchmarks/fashion_ablation.py $(BENCH_FLAGS)
	$(BENCH_PY) benchmarks/report.py --write_readme

# Issue 24's tight budgets (benchmarks/tight_budgets.py): an estimated 20-30 h on 2 idle cores, resumable from the
# committed per-run files in benchmarks/results/tight_budgets/; not in `make bench`.
bench-tight: venv
	@test -d /usr/share/datasets/fashion-mnist || { echo "Fashion-MNIST is missing: run apt-get install -y dataset-fashion-mnist (as root)"; exit 1; }
	nice -n 19 env $(BENCH_PY) benchmarks/tight_budgets.py $(BENCH_FLAGS)
	$(BENCH_PY) benchmarks/tight_budgets.py --summarize_only --write_readme

# The per-layer latency table of a MobileNetV2 space against whole models (about 17 min): not in `make bench`.
bench-lut: venv
	$(BENCH_PY) benchmarks/tflite_lut.py

# The host latency table of two Keras MobileNetV2 spaces (with and without squeeze-excite) against 20 whole int8
# models each (about 16 min; a time: run it alone).
bench-latency: venv
	flock /tmp/heavy.lock $(BENCH_PY) benchmarks/latency_round_trip.py

clean:
	rm -rf $(VENV) runs .pytest_cache
