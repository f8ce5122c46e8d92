# Two commands matter: `make demo` (the main job on the embedded synthetic data) and `make test`.
# `make install` installs microexp into .venv with the exact versions of constraints.txt.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= runs/demo
JOBS ?= 2

.PHONY: install demo test test-fast clean

$(BIN)/microexp: setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

install: $(BIN)/microexp

demo: install
	$(BIN)/microexp synth $(DEMO_DIR)/data --clips 300 --subjects 30 --workers $(JOBS) --seed 0 --overwrite
	$(BIN)/microexp inspect $(DEMO_DIR)/data/annotations.csv --sample 3 --strategy onset_apex --frames 8
	rm -rf $(DEMO_DIR)/run $(DEMO_DIR)/cache
	$(BIN)/microexp train --config recipes/flow-tiny_flow-8f_synth_5fold.yaml --out $(DEMO_DIR)/run --final \
		--set data.annotations=$(DEMO_DIR)/data/annotations.csv --set data.cache_dir=$(DEMO_DIR)/cache
	@echo
	@echo "Demo done: results in $(DEMO_DIR)/run (metrics.json, predictions.csv, *.png plots), the deployable model in $(DEMO_DIR)/run/final/model.pt."
	@echo "To run microexp yourself, activate the environment first:   . $(VENV)/bin/activate   (then: microexp --help)"
	@echo "or call it by its path without activating:                  $(BIN)/microexp --help"
	@echo "e.g.  $(BIN)/microexp predict $(DEMO_DIR)/data/annotations.csv --checkpoint $(DEMO_DIR)/run/final/model.pt --no-face-crop"
	@echo "The clip cache $(DEMO_DIR)/cache can be inspected or freed:  $(BIN)/microexp cache info $(DEMO_DIR)/cache"

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) *.egg-info runs
