"""Speed of the Python evaluation against the LAMMPS plugin on the same box (not a test:
it prints figures and never asserts on them).

    python benchmarks/bench_python.py [--repeats 5] [--steps 20] [--threads 1]

On the n2p2 water box (1080 atoms, ../shared/data, model imported with `nnmd import-n2p2`),
all single-threaded (OMP_NUM_THREADS=1, torch.set_num_threads(1)), in one invocation:

  python     Potential.evaluate (energy, forces, stress) per atom: the median of
             `repeats` calls after a warm-up, and where its time goes (one profiled call:
             neighbour list, descriptors, networks, contraction)
  torch      the same with the torch descriptor backend (descriptors/calculator.py), for
             the record (one call)
  lammps     pair_style nnmd: LAMMPS's main-loop time per atom and step (`steps` MD steps
             after a 3-step warm-up, median of `repeats` runs in separate lmp processes),
             and its Pair section alone
  predict    the wall time of `nnmd predict` on the box (the whole command, and the
             evaluation time the command reports)

Python and LAMMPS runs alternate, so that a busy spell of a shared machine hits both;
CPU time (process time for Python, LAMMPS's loop time x its "% CPU use") is less
sensitive to other jobs than wall time.

Measured (2-core AMD EPYC VM shared with two other engineers' jobs, load average 5.6-7.8,
torch 2.13.0 CPU, LAMMPS 22Jul2025; --repeats 7 --steps 20, 2026-12-01):

                                       wall µs/atom    CPU µs/atom
  Python Potential.evaluate (ops)          292.2         188.8
  Python Potential.evaluate (torch)       4310.3        2663.0
  LAMMPS pair_style nnmd, per step         263.4         174.3
  ratio Python / LAMMPS                     1.11          1.08
  ratio torch backend / ops backend         14.8
  nnmd predict: 4.15 s wall for the whole command, evaluation 0.351 s
  profiled evaluation (CPU s): G operator 0.066, contraction operator 0.107, neighbour
  list (vesin) 0.014, pair vectors 0.004, the rest (CSR order, networks, scatter) 0.020

(an earlier run under load 7.8: ratios 1.21 wall, 1.16 CPU; predict evaluation 0.38 s).
On an idle machine the plugin takes about 120 µs/atom/step (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import LOOP, water_deck

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WATER = SHARED / "n2p2" / "H2O_RPBE-D3"
WATER_DATA = SHARED / "lammps" / "H2O-360mol" / "data.H2O-360mol"
BIN = Path(sys.executable).parent
PAIR = re.compile(r"^Pair\s+\|\s+(\S+)\s+\|\s+(\S+)", re.M)
PREDICTED = re.compile(r"atoms in (\S+) s")
CPU_USE = re.compile(r"([\d.]+)% CPU use")


def import_model(work: Path) -> Path:
    model = work / "h2o.pt"
    subprocess.run(
        [
            *(str(BIN / "nnmd"), "import-n2p2", str(WATER)),
            *("--length-unit", "bohr", "--energy-unit", "hartree", "-o", str(model)),
        ],
        check=True,
        capture_output=True,
    )
    return model


def load_python(model: Path, threads: int):
    import torch
    from ase import units

    from nnmd_lammps.data.n2p2_data import read_input_data
    from nnmd_lammps.model.potential import Potential

    torch.set_num_threads(threads)
    structures = read_input_data(WATER / "input.data", units.Bohr, units.Hartree)
    pots = {b: Potential.load(model, backend=b) for b in ("ops", "torch")}
    for pot in pots.values():
        pot.evaluate(structures)  # warm-up
    return pots, structures


def python_once(pot, structures) -> tuple[float, float]:
    """Wall and CPU seconds of one Potential.evaluate (energy, forces, stress)."""
    t0, c0 = time.perf_counter(), time.process_time()
    pot.evaluate(structures)
    return time.perf_counter() - t0, time.process_time() - c0


def profile_python(pot, structures) -> pstats.Stats:
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    pot.evaluate(structures)
    prof.disable()
    return pstats.Stats(prof)


def lammps_deck(model: Path, work: Path, steps: int) -> Path:
    deck = work / "in.water"
    deck.write_text(water_deck(WATER_DATA, model, (3, steps)))
    return deck


def lammps_once(deck: Path) -> tuple[float, float, float]:
    """One lmp run: (main-loop wall, its CPU time (wall x LAMMPS's "% CPU use"), Pair
    section wall), each in µs per atom and step."""
    work = deck.parent
    log = work / "log.water"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [str(BIN / "lmp"), "-in", str(deck), "-log", str(log), "-screen", "none"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    text = log.read_text() if log.exists() else ""
    runs = LOOP.findall(text)
    if proc.returncode != 0 or not runs:
        raise RuntimeError(f"lmp failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    t, _, n_steps, natoms = runs[-1]
    per = int(n_steps) * int(natoms) / 1e6
    last = text[text.rindex("Loop time") :]
    cpu = float(CPU_USE.search(last).group(1)) / 100.0
    return float(t) / per, float(t) * cpu / per, float(PAIR.search(last).group(2)) / per


def time_predict(model: Path, work: Path, threads: int) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            *(str(BIN / "nnmd"), "predict", str(model), str(WATER / "input.data")),
            *("--length-unit", "bohr", "--energy-unit", "hartree", "--threads", str(threads)),
            *("-o", str(work / "predictions.xyz")),
        ],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"nnmd predict failed:\n{proc.stdout}{proc.stderr}")
    return {"wall": wall, "evaluation": float(PREDICTED.search(proc.stdout).group(1))}


def phases(stats: pstats.Stats) -> dict[str, float]:
    """Seconds of the profiled call by phase (cumulative times of named functions)."""
    wanted = {
        "neighbour list (vesin)": ("neighbors.py", "neighbor_pairs"),
        "pair tensors": ("calculator.py", "pair_tensors"),
        "descriptors (operator + CSR)": ("calculator.py", "_compute_ops"),
        "G operator": ("~", "<built-in method torch._ops.nnmd.symmetry_functions>"),
        "contraction operator": ("~", "<built-in method torch._ops.nnmd.contract>"),
        "forces and virial (with the operator)": ("contraction.py", "forces_and_virial"),
        "whole evaluation": ("potential.py", "evaluate"),
    }
    out = {}
    for (file, _line, func), row in stats.stats.items():  # type: ignore[attr-defined]
        for label, (f, fn) in wanted.items():
            if file.endswith(f) and func == fn:
                out[label] = row[3]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="MD steps of each LAMMPS run")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if not WATER.is_dir() or not WATER_DATA.is_file():
        print(f"{SHARED} is absent: nothing to measure")
        return 2
    work = Path(tempfile.mkdtemp(prefix="nnmd-bench-python-"))
    model = import_model(work)
    pots, structures = load_python(model, args.threads)
    natoms = sum(len(a) for a in structures)
    deck = lammps_deck(model, work, args.steps)
    # Python and LAMMPS alternate, so that a busy spell of a shared machine hits both
    py, lmp = [], []
    for _ in range(args.repeats):
        py.append([x / natoms * 1e6 for x in python_once(pots["ops"], structures)])
        lmp.append(lammps_once(deck))
    torch_wall, torch_cpu = (x / natoms * 1e6 for x in python_once(pots["torch"], structures))
    stats = profile_python(pots["ops"], structures)
    pred = time_predict(model, work, args.threads)

    def med(rows, k):
        return statistics.median(r[k] for r in rows)

    def listing(rows, k):
        return ", ".join(f"{r[k]:.0f}" for r in rows)

    print(f"water box, {natoms} atoms, {args.threads} thread(s), {args.repeats} repeats (median)")
    print("                                       wall µs/atom    CPU µs/atom")
    print(
        f"  Python Potential.evaluate (ops)     {med(py, 0):10.1f}    {med(py, 1):10.1f}"
        f"   (wall: {listing(py, 0)})"
    )
    print(f"  Python Potential.evaluate (torch)   {torch_wall:10.1f}    {torch_cpu:10.1f}")
    print(
        f"  LAMMPS pair_style nnmd, per step    {med(lmp, 0):10.1f}    {med(lmp, 1):10.1f}"
        f"   (wall: {listing(lmp, 0)}; Pair section {med(lmp, 2):.1f})"
    )
    print(
        f"  ratio Python / LAMMPS               {med(py, 0) / med(lmp, 0):10.2f}    "
        f"{med(py, 1) / med(lmp, 1):10.2f}"
    )
    print(f"  ratio torch backend / ops backend   {torch_wall / med(py, 0):10.1f}")
    print(
        f"  nnmd predict: {pred['wall']:.2f} s wall for the whole command, evaluation "
        f"{pred['evaluation']:.3f} s (as the command reports it)"
    )
    print("  one profiled Potential.evaluate (ops), CPU seconds by phase (cumulative):")
    for label, sec in phases(stats).items():
        print(f"    {label:40s} {sec:7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
