# `make demo` and `make test` create the virtual environment themselves on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pinned first: a torch requirement left open pulls the CUDA build (GBs) on CPU machines.
TORCH := torch==2.13.0

.PHONY: demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.core-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[transformers,serve,dev]' $(TORCH)
	touch $@ $(VENV)/.core-installed

demo: $(VENV)/.core-installed
	$(BIN)/tsqr rewrite --backend file:tsqr_plugins/data/sample/rewrites.json \
		--input tsqr_plugins/data/sample/queries.jsonl --output runs/demo/rewrites.jsonl
	$(BIN)/python -m tsqr_plugins.cli.show runs/demo/rewrites.jsonl --limit 2

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs
