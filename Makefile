# Two commands for a fresh machine:
#   make demo   -- bootstraps .venv, then runs the main job on the embedded MNIST subset
#   make test   -- bootstraps .venv (with test extras), then runs the whole suite offline
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= runs/demo

.PHONY: venv demo test clean

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
DEMO_FLAGS = --model=mobilenet_v2 --width_multiplier=0.5 --nosmall_input --stage_repeats=1,2,2,2,1,1,1 \
	--min_width_ratio=0.3 --batch_size=32 --epochs=15 --flops_ratio=0.25 --num_generations=12 --retrain_epochs=8

demo: venv
	$(VENV)/bin/python examples/metaprune.py $(DEMO_FLAGS) --output_dir=$(DEMO_DIR)

test: venv
	$(VENV)/bin/python -m pytest tests

clean:
	rm -rf $(VENV) runs .pytest_cache
