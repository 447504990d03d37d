#!/bin/bash
# The CUDA operators on a GPU machine without internet (docs/gpu.md): install, build with
# CUDA, run the CUDA tests, check exactness (CUDA against the CPU operators: the n2p2 water
# box and the demo copper, energy 1e-10 relative, forces 1e-9 eV/Angstrom, float64) and print
# a speed table (Python prediction µs/atom on CUDA and CPU at 1080 / 8640 / 69,120 water
# atoms; LAMMPS pair_style nnmd). Under 8 minutes; every step has its own time limit.
#
#   bash benchmarks/gpu.sh --prepare   here, with the package index in reach: the bundle
#                                      .gpu/ (git-ignored): wheels (../shared/gpu/
#                                      prepare_wheels.sh), its install.sh, the reference
#                                      data, the demo copper models
#   bash benchmarks/gpu.sh             on the GPU machine, from the project root, with .gpu/
#                                      beside it (Python 3.12 with a CUDA torch, nvcc, CMake)
#   bash benchmarks/gpu.sh --cpu       anywhere, with the project's venv: what can be checked
#                                      without a GPU (the GPU math on the CPU, the nvcc
#                                      compile check, the exactness script with the GPU
#                                      functions on the CPU and the torch backend)
#   bash benchmarks/gpu.sh --dry-run   print the GPU steps without running them
#
# Results: the output, and gpu_check.json in $OUT (if set) or in .gpu/.
set -uo pipefail
cd "$(dirname "$0")/.."
BUNDLE=.gpu
mode=${1:-gpu}
case "$mode" in
  gpu | --gpu) mode=gpu ;;
  --cpu) mode=cpu ;;
  --dry-run) mode=dry ;;
  --prepare) mode=prepare ;;
  *) echo "usage: bash benchmarks/gpu.sh [--prepare | --cpu | --dry-run]" >&2; exit 2 ;;
esac

START=$SECONDS
FAILED=()
# step NAME LIMIT_S COMMAND...: run with a time limit, report its time and status
step() {
  local name=$1 limit=$2
  shift 2
  echo
  echo "=== $name (limit ${limit} s) ==="
  if [ "$mode" = dry ]; then
    echo "would run: timeout $limit $*"
    return 0
  fi
  local t0=$SECONDS rc=0
  timeout --kill-after=10 "$limit" "$@" || rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    echo "=== $name: TIMED OUT after $limit s"
    FAILED+=("$name (timeout)")
  elif [ $rc -ne 0 ]; then
    echo "=== $name: FAILED (exit $rc, $((SECONDS - t0)) s)"
    FAILED+=("$name")
  else
    echo "=== $name: ok ($((SECONDS - t0)) s)"
  fi
  return $rc
}

finish() {
  echo
  echo "total $((SECONDS - START)) s"
  if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${FAILED[@]}"
    exit 1
  fi
  echo "all steps passed"
  exit 0
}

if [ "$mode" = prepare ]; then
  SHARED=../shared
  for f in "$SHARED/gpu/prepare_wheels.sh" "$SHARED/gpu/install.sh" \
    "$SHARED/data/n2p2/H2O_RPBE-D3/input.nn" "$SHARED/data/lammps/H2O-360mol/data.H2O-360mol" \
    demo_output/cu.pt demo_output/cu_committee.pt; do
    [ -f "$f" ] || { echo "missing $f (the copper models: make demo)" >&2; exit 1; }
  done
  rm -rf "$BUNDLE"
  mkdir -p "$BUNDLE/data/n2p2" "$BUNDLE/data/lammps" "$BUNDLE/models"
  step "wheels" 600 bash "$SHARED/gpu/prepare_wheels.sh" "$BUNDLE/wheels"
  cp "$SHARED/gpu/install.sh" "$BUNDLE/install.sh"
  cp -r "$SHARED/data/n2p2/H2O_RPBE-D3" "$BUNDLE/data/n2p2/"
  cp -r "$SHARED/data/lammps/H2O-360mol" "$BUNDLE/data/lammps/"
  chmod -R u+w "$BUNDLE/data"
  cp demo_output/cu.pt demo_output/cu_committee.pt "$BUNDLE/models/"
  du -sh "$BUNDLE"
  echo "carry $BUNDLE to the GPU machine (run's carry: [\"$BUNDLE\"]), then: bash benchmarks/gpu.sh"
  finish
fi

if [ "$mode" = cpu ]; then
  PY=${PYTHON:-.venv/bin/python}
  RESULTS=${OUT:-$BUNDLE}
  mkdir -p "$RESULTS"
  step "script syntax" 10 bash -n benchmarks/gpu.sh
  step "the GPU steps, dry run" 10 bash benchmarks/gpu.sh --dry-run
  step "tests: the GPU math on the CPU, nvcc compile check" 420 \
    "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_cuda_math.py tests/test_cuda_build.py
  step "exactness script, GPU functions on the CPU and torch backend" 300 \
    "$PY" benchmarks/gpu_check.py --device cpu --sizes 1 --repeats 1 \
    --json "$RESULTS/gpu_check_cpu.json"
  finish
fi

# --- the GPU machine (or --dry-run) ----------------------------------------------------------
for f in "$BUNDLE/install.sh" "$BUNDLE/data/n2p2/H2O_RPBE-D3/input.nn" "$BUNDLE/models/cu.pt"; do
  if [ ! -f "$f" ]; then
    echo "missing $f: make the bundle with 'bash benchmarks/gpu.sh --prepare' and carry $BUNDLE" >&2
    [ "$mode" = dry ] || exit 1
  fi
done
ls "$BUNDLE"/wheels/*.whl > /dev/null 2>&1 || { echo "no wheels in $BUNDLE/wheels" >&2; [ "$mode" = dry ] || exit 1; }
PY=${PYTHON:-$(command -v python3)}
VENV=$(dirname "$(dirname "$PY")")
RESULTS=${OUT:-$BUNDLE}
NPROC=$(getconf _NPROCESSORS_ONLN)
# (no OMP_NUM_THREADS: the CPU side of the comparisons uses every core; the LAMMPS runs set
# one thread per rank themselves)
export PATH="$VENV/bin:$PATH" PYTHONUNBUFFERED=1
if [ "$mode" = gpu ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  "$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.is_available())'
  command -v nvcc && nvcc --version | tail -1
fi

# install.sh: the wheels into this Python, the package (editable), the plugin and the
# operators built with the default NNMD_CUDA=AUTO (output hidden)
if ! step "install (wheels, package, build)" 240 bash "$BUNDLE/install.sh" "$BUNDLE/wheels"; then
  # install.sh hides the build's output: show its errors
  [ -f build/CMakeCache.txt ] && cmake --build build -j"$NPROC" 2>&1 | grep -E -A6 "error|Error" | head -80
  finish
fi
# the same build directory with NNMD_CUDA=ON: fails loudly if the CUDA part was not built
step "configure with NNMD_CUDA=ON" 120 bash -c "set -o pipefail; cmake -S . -B build -DNNMD_CUDA=ON \
  -DPython3_EXECUTABLE=$PY -DMPI_CXX_COMPILER=$VENV/bin/mpicxx | grep -E 'CUDA part|CUDA detected' \
  && cmake --build build -j$NPROC > /dev/null && cmake --install build > /dev/null" || finish
step "tests: CUDA operators against the CPU, GPU math on the CPU, nvcc" 200 \
  "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_cuda_math.py tests/test_cuda_build.py
step "exactness and speed" 300 \
  "$PY" benchmarks/gpu_check.py --device cuda --data "$BUNDLE/data" --models "$BUNDLE/models" \
  --sizes 1,2,4 --repeats 3 --lammps --ranks 16 --json "$RESULTS/gpu_check.json"
finish
