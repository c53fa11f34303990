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

demo: venv
	$(VENV)/bin/python examples/train_pruningnet.py --model=small_cnn --epochs=12 --hidden_units=32 --output_dir=$(DEMO_DIR)

test: venv
	$(VENV)/bin/python -m pytest tests

clean:
	rm -rf $(VENV) runs .pytest_cache
