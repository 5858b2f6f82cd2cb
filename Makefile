# One command each for the two things a new user does (see README "Quick start").
#   make demo   set up, run the offline demo study, write its tables and PDF report
#   make test   set up, run the test suite
#   make results  run (resuming) and publish every replication twin to results/, then check it
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch is installed first and pinned, so that resolving the other
# dependencies never pulls the multi-GB CUDA build. GPU users: make TORCH='torch' (or your build).
TORCH  ?= torch==2.13.0
EXTRAS ?= test,ray,slurm,parquet,mlflow

.PHONY: setup demo example test lint results clean-demo gpu-bundle

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: setup
	$(BIN)/study validate protocols/demo.yaml
	$(BIN)/study run protocols/demo.yaml
	$(BIN)/study analyze protocols/demo.yaml
	$(BIN)/study report protocols/demo.yaml
	@echo "Next: activate the environment, then use study yourself (README \"Quick start\"):"
	@echo "  source $(VENV)/bin/activate && study status protocols/demo.yaml"

# Your own masker (examples/span_masking.py) on your own CSV data, offline (README "Masker plugins").
example: setup
	$(BIN)/python examples/make_csv.py
	$(BIN)/study run examples/span-masking.yaml
	$(BIN)/study analyze examples/span-masking.yaml
	$(BIN)/study report examples/span-masking.yaml

# The published replications (README "Results"): each offline twin is run to completion (a
# finished run is never redone, so this resumes an interrupted study and trains nothing once
# all are done), published to results/<name>/ and checked against its runs table.
# One study: make results RESULTS_PROTOCOLS=protocols/tlm-offline.yaml
RESULTS_PROTOCOLS ?= $(wildcard protocols/*-offline.yaml)
results: setup
	@set -e; for p in $(RESULTS_PROTOCOLS); do \
	  $(BIN)/study validate $$p; \
	  $(BIN)/study run $$p; \
	  $(BIN)/study publish $$p; \
	done
	$(BIN)/python -m pytest -q tests/test_published_results.py::test_published_comparisons_match_their_runs_table

test: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check study analysis tests bench

# What bench/gpu_check.sh needs on a GPU machine without registry or hub (README "On a GPU").
gpu-bundle: setup
	$(BIN)/python bench/gpu_bundle.py

clean-demo:
	rm -rf runs/demo.sqlite* reports/demo
