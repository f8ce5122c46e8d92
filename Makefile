# Two commands matter: `make demo` (the main job on the embedded synthetic data) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= runs/demo
JOBS ?= 2

.PHONY: install demo test test-fast clean

$(BIN)/microexp: setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(BIN)/microexp

demo: install
	$(BIN)/microexp synth $(DEMO_DIR)/data --clips 300 --subjects 30 --workers $(JOBS) --seed 0 --overwrite
	$(BIN)/microexp inspect $(DEMO_DIR)/data/annotations.csv --sample 3 --strategy onset_apex --frames 8
	rm -rf $(DEMO_DIR)/run $(DEMO_DIR)/cache
	$(BIN)/microexp train --config recipes/flow-tiny_flow-8f_synth_5fold.yaml --out $(DEMO_DIR)/run \
		--set data.annotations=$(DEMO_DIR)/data/annotations.csv --set data.cache_dir=$(DEMO_DIR)/cache

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) *.egg-info runs
