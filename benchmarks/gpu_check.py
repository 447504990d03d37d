"""Exactness and speed of the CUDA operators, for benchmarks/gpu.sh (it prints figures and
exits 1 when an exactness check fails).

    python benchmarks/gpu_check.py [--device cuda|cpu] [--data DIR] [--models DIR]
                                   [--sizes 1,2,4] [--repeats 3] [--lammps] [--ranks 16]
                                   [--json PATH]

Exactness (float64): the n2p2 water box (1080 atoms, the potential imported from
DATA/n2p2/H2O_RPBE-D3) and the demo copper (MODELS/cu.pt on a rattled 256-atom fcc cell,
and MODELS/cu_committee.pt with the committee's force deviations, i.e. several vectors per
contraction) are evaluated (Potential.evaluate: energy, forces, stress) by the CPU
operators (the C++ kernels) and by the other side:

  --device cuda   the same model on the GPU (Potential(device="cuda"): the CUDA operators);
                  it must have taken them (not the torch fallback)
  --device cpu    the GPU's per-atom functions run on the CPU (the operators' method
                  "device"), and the torch backend: the check of this script without a GPU

and must agree: energy to 1e-10 relative, forces to 1e-9 eV/Angstrom, stress to 1e-10
relative to its largest entry.

Speed: Potential.evaluate (energy, forces, stress) in µs per atom for the water box
replicated k x k x k (--sizes: 1, 2, 4 give 1080, 8640 and 69,120 atoms) on the CPU (all
cores) and on the other side, the median of --repeats calls after a warm-up; and the two
descriptor operators alone (symmetry_functions + contract on a prepared batch). Every size
is also checked for exactness. --lammps: pair_style nnmd (descriptors on the CPU; device
cpu and device cuda for the networks) on the replicated boxes with --ranks MPI ranks, where
lmp and mpirun are found next to this Python.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import LOOP, water_deck
from ase import units
from ase.build import bulk

from nnmd_lammps.cli import main as nnmd_main
from nnmd_lammps.data.n2p2_data import read_input_data
from nnmd_lammps.descriptors import ops
from nnmd_lammps.model import Potential

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / ".gpu"
ENERGY_RTOL, FORCE_ATOL, STRESS_RTOL = 1e-10, 1e-9, 1e-10


def default_data() -> Path:
    shared = ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else BUNDLE / "data"


def default_models() -> Path:
    return BUNDLE / "models" if (BUNDLE / "models").is_dir() else ROOT / "demo_output"


def water_model(data: Path, work: Path) -> Path:
    model = work / "h2o.pt"
    args = ["import-n2p2", str(data / "n2p2" / "H2O_RPBE-D3"), "-o", str(model)]
    if nnmd_main([*args, "--length-unit", "bohr", "--energy-unit", "hartree"]) != 0:
        raise SystemExit("importing the n2p2 water potential failed")
    return model


def water_box(data: Path, k: int = 1):
    (atoms,) = read_input_data(
        data / "n2p2" / "H2O_RPBE-D3" / "input.data", units.Bohr, units.Hartree
    )
    atoms.calc = None
    return atoms.repeat((k, k, k)) if k > 1 else atoms


def copper_cell():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((4, 4, 4))
    atoms.rattle(0.05, seed=7)
    return atoms


class Sides:
    """The reference (CPU operators, C++ kernels) and the other sides of a model."""

    def __init__(self, model: Path, device: str) -> None:
        self.reference = Potential.load(model)
        assert self.reference.calculator.backend == "ops", "the CPU operators are missing"
        self.others: dict[str, Potential] = {}
        if device == "cuda":
            pot = Potential.load(model, device="cuda")
            if pot.calculator.backend != "ops":
                raise SystemExit(
                    "the CUDA operators are not there (torch backend on cuda): the library "
                    f"was built without CUDA (ops.cuda_available() = {ops.cuda_available()})"
                )
            self.others["cuda"] = pot
        else:
            pot = Potential.load(model)
            pot.calculator.operators.set_method("device")
            self.others["device functions on cpu"] = pot
            self.others["torch backend"] = Potential.load(model, backend="torch")


def compare(label: str, ref, other, failures: list[str], uncertainty: bool = False) -> dict:
    """Differences of one evaluation (ref, other: Prediction lists of one structure)."""
    a, b = ref[0], other[0]
    de = abs(b.energy - a.energy) / abs(a.energy)
    df = float(np.abs(b.forces - a.forces).max())
    row = {"case": label, "energy_rel": de, "forces_abs": df}
    ok = de <= ENERGY_RTOL and df <= FORCE_ATOL
    if a.stress is not None:
        ds = float(np.abs(b.stress - a.stress).max() / np.abs(a.stress).max())
        row["stress_rel"] = ds
        ok = ok and ds <= STRESS_RTOL
    if uncertainty:
        dd = float(np.abs(b.force_deviation - a.force_deviation).max())
        row["force_deviation_abs"] = dd
        ok = ok and dd <= FORCE_ATOL
    row["ok"] = ok
    text = ", ".join(f"{k} {v:.2e}" for k, v in row.items() if isinstance(v, float))
    print(f"  {'ok  ' if ok else 'FAIL'} {label}: {text}")
    if not ok:
        failures.append(label)
    return row


def timed(fn, repeats: int, sync: bool) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    out = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def operator_time(pot: Potential, atoms, repeats: int) -> float:
    """Seconds of symmetry_functions + contract on the prepared batch of ``atoms``."""
    _, values = pot.descriptors_of([atoms], derivatives=False)
    con = values.contraction
    desc, csr, d = con.descriptors, con.csr, con.vectors
    T = sum(int(g.numel()) for g in values.G)
    c = torch.linspace(-1.0, 1.0, T, dtype=torch.float64, device=d.device)

    def run():
        ops.symmetry_functions(desc, csr, d)
        ops.contract(desc, csr, d, c)

    return timed(run, repeats, d.device.type == "cuda")


def lammps_runs(model: Path, data: Path, sizes: list[int], ranks: int, work: Path) -> list:
    bin_dir = Path(sys.executable).parent
    lmp = shutil.which("lmp", path=f"{bin_dir}:{os.environ.get('PATH', '')}")
    mpirun = shutil.which("mpirun", path=f"{bin_dir}:{os.environ.get('PATH', '')}")
    box = data / "lammps" / "H2O-360mol" / "data.H2O-360mol"
    if lmp is None or mpirun is None or not box.is_file():
        print(f"  LAMMPS: not measured (lmp {lmp}, mpirun {mpirun}, {box} exists: {box.is_file()})")
        return []
    rows = []
    for k in sizes:
        for device in ("cpu", "cuda"):
            deck = work / f"in.water{k}.{device}"
            deck.write_text(water_deck(box, model, (2, 10), replicate=k, device=device))
            log = work / f"log.water{k}.{device}"
            cmd = [mpirun, "-np", str(ranks), lmp, "-in", str(deck), "-log", str(log)]
            env = dict(os.environ, OMP_NUM_THREADS="1")
            proc = subprocess.run(
                [*cmd, "-screen", "none"], cwd=work, env=env, capture_output=True, text=True
            )
            runs = LOOP.findall(log.read_text()) if log.is_file() else []
            if proc.returncode != 0 or not runs:
                print(f"  LAMMPS {k}^3 device {device}: failed\n{proc.stderr[-1500:]}")
                continue
            t, _, steps, natoms = runs[-1]
            us = float(t) / (int(steps) * int(natoms)) * 1e6
            rows.append(
                {"atoms": int(natoms), "device": device, "ranks": ranks, "us_per_atom_step": us}
            )
            print(
                f"  LAMMPS pair_style nnmd device {device}, {natoms} atoms, {ranks} ranks: "
                f"{us:.2f} µs/atom/step"
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--data", type=Path, default=None, help="directory with n2p2/ and lammps/")
    ap.add_argument(
        "--models", type=Path, default=None, help="directory with cu.pt, cu_committee.pt"
    )
    ap.add_argument("--sizes", default="1,2,4", help="replications of the water box to time")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lammps", action="store_true", help="also time pair_style nnmd")
    ap.add_argument("--ranks", type=int, default=16, help="MPI ranks of the LAMMPS runs")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)
    data = args.data or default_data()
    models = args.models or default_models()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu")
        return 2
    work = Path(tempfile.mkdtemp(prefix="nnmd-gpu-check-"))
    print(
        f"torch {torch.__version__} (CUDA {torch.version.cuda}), {torch.get_num_threads()} CPU "
        f"threads; operators on CUDA: {ops.cuda_available()}; data {data}; models {models}"
    )
    if args.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}")
    failures: list[str] = []
    result: dict = {"device": args.device, "exactness": [], "speed": [], "lammps": []}

    print("exactness (CPU operators against each other side):")
    h2o = water_model(data, work)
    water = Sides(h2o, args.device)
    box = water_box(data)
    ref = water.reference.evaluate([box])
    for name, pot in water.others.items():
        result["exactness"].append(
            compare(f"water 1080, {name}", ref, pot.evaluate([box]), failures)
        )
    for file, committee in (("cu.pt", False), ("cu_committee.pt", True)):
        path = models / file
        if not path.is_file():
            print(f"  FAIL copper: {path} is missing (make demo writes it to demo_output/)")
            failures.append(file)
            continue
        cu = Sides(path, args.device)
        cell = copper_cell()
        ref = cu.reference.evaluate([cell], uncertainty=committee)
        for name, pot in cu.others.items():
            got = pot.evaluate([cell], uncertainty=committee)
            label = f"copper {len(cell)} ({file}), {name}"
            result["exactness"].append(compare(label, ref, got, failures, committee))

    print("speed: Potential.evaluate (energy, forces, stress), µs per atom (median)")
    fast = [n for n in water.others if n != "torch backend"]
    for k in sizes:
        atoms = water_box(data, k)
        n = len(atoms)
        sides = {"cpu": water.reference, **{name: water.others[name] for name in fast}}
        row: dict = {"atoms": n}
        preds: dict = {}
        for name, pot in sides.items():
            sync = pot.device.type == "cuda"
            reps = args.repeats if n < 50_000 or sync else 1

            def run(p=pot, key=name, structure=atoms, out=preds):
                out[key] = p.evaluate([structure])

            t = timed(run, reps, sync)
            row[f"{name} evaluate"] = t / n * 1e6
            row[f"{name} operators"] = operator_time(pot, atoms, reps) / n * 1e6
        for name in fast:
            result["exactness"].append(
                compare(f"water {n}, {name}", preds["cpu"], preds[name], failures)
            )
        result["speed"].append(row)
        print(
            "  "
            + ", ".join(
                f"{k_}: {v:.2f}" if isinstance(v, float) else f"{k_}: {v}" for k_, v in row.items()
            )
        )

    if args.lammps:
        print("LAMMPS (descriptors on the CPU in every case; device: where the networks run):")
        result["lammps"] = lammps_runs(h2o, data, sizes[1:] or sizes, args.ranks, work)

    print("\nsummary: Potential.evaluate µs/atom (operators alone in brackets)")
    header = ["atoms", "cpu", *fast]
    print("  " + "".join(f"{h:>28s}" for h in header))
    for row in result["speed"]:
        cells = [f"{row['atoms']:>28d}"]
        for name in header[1:]:
            cells.append(f"{row[f'{name} evaluate']:>18.2f} ({row[f'{name} operators']:7.2f})")
        print("  " + "".join(cells))
    for row in result["lammps"]:
        us = row["us_per_atom_step"]
        print(f"  LAMMPS {row['atoms']} atoms, device {row['device']}: {us:.2f} µs/atom/step")
    result["failures"] = failures
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print("exactness: " + ("all checks passed" if not failures else f"FAILED: {failures}"))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
