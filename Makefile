# One command each for the two things a new user does (see README "Quick start").
#   make demo   set up, run the offline demo study, write its tables and PDF report
#   make test   set up, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch is installed first and pinned, so that resolving the other
# dependencies never pulls the multi-GB CUDA build. GPU users: make TORCH='torch' (or your build).
TORCH  ?= torch==2.13.0
EXTRAS ?= test,ray,slurm,parquet,mlflow

.PHONY: setup demo example test lint clean-demo

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

test: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check study analysis tests bench

clean-demo:
	rm -rf runs/demo.sqlite* reports/demo
