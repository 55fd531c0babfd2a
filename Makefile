# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo test lint format clean bench

# Install torch 2.13.0 (a CPU wheel is on disk here) before anything else when no torch is present,
# so that no dependency pulls a multi-GB CUDA build of a newer torch.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -c constraints.txt -e '.[test,pgstac,dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m flows.demo

# Azurite (Microsoft's Blob Storage emulator, an npm package) for the az:// store tests; where npm is
# missing those tests are skipped and say so.
AZURITE_VERSION := 3.37.0
AZURITE := $(VENV)/azurite/node_modules/.bin/azurite-blob

$(AZURITE):
	if command -v npm >/dev/null; then \
	  npm install -s --prefix $(VENV)/azurite --no-audit --no-fund azurite@$(AZURITE_VERSION) || true; \
	else echo "npm not found: tests/test_object_store_azure.py will be skipped"; fi

test: $(STAMP) $(AZURITE)
	AZURITE_BLOB=$$(test -x $(AZURITE) && realpath $(AZURITE)) $(PY) -m pytest $(PYTEST_ARGS)

# ruff (lint and format check) and mypy, configured in pyproject.toml
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	for b in $(filter-out benchmarks/gpu_check.py,$(wildcard benchmarks/*.py)); do $(PY) $$b || exit 1; done
	$(PY) benchmarks/gpu_check.py || [ $$? -eq 2 ]  # exit 2: no CUDA here, nothing to check

clean:
	rm -rf $(VENV) demo-out .demo .pytest_cache
