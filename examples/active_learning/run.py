"""The active-learning example: copper with ASE's EMT as the reference (README.md).

    python examples/active_learning/run.py [--out DIR] [--resume]

1. writes ``demo_output/active_learning/start.extxyz`` (10 strained and rattled 32-atom
   fcc cells, unlabelled) and ``md_1200K.extxyz`` (an independent EMT molecular-dynamics
   trajectory at 1200 K from ASE's Langevin integrator, 108 atoms, 20 frames 200 fs
   apart; the loop only evaluates it as ``data.test``);
2. runs ``nnmd active-learn cu_emt.yaml --out DIR``;
3. prints per iteration the structures in the data set, the fractions of accurate /
   candidate / failed explored frames, the force and energy errors on the 1200 K
   trajectory, and the wall time (also written to ``DIR/table.md``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "demo_output" / "active_learning"
A_EMT = 3.59  # Angstrom, about EMT's fcc lattice constant of Cu


def starting_structures(n: int = 10, seed: int = 7) -> list:
    """n 2x2x2 fcc cells (32 atoms), isotropic strain -3..+4 %, random shear up to 2 %,
    rattled by 0.01..0.04 Angstrom: no forces, no energies (the loop labels them)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        a = bulk("Cu", "fcc", a=A_EMT, cubic=True).repeat(2)
        eps = np.eye(3) * (1 + rng.uniform(-0.03, 0.04))
        shear = rng.uniform(-0.02, 0.02, (3, 3))
        eps += (shear + shear.T) / 2 * (k % 2)
        a.set_cell(a.cell @ eps, scale_atoms=True)
        a.rattle(rng.uniform(0.01, 0.04), seed=seed + k)
        out.append(a)
    return out


def md_1200k(frames: int = 20, every: int = 100, equilibrate: int = 1000, seed: int = 12):
    """EMT Langevin MD at 1200 K (2 fs steps, friction 0.02/fs), 3x3x3 cells (108 atoms):
    ``frames`` snapshots ``every`` steps apart after ``equilibrate`` steps."""
    atoms = bulk("Cu", "fcc", a=A_EMT * 1.012, cubic=True).repeat(3)  # thermal expansion
    atoms.calc = EMT()
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=1200, rng=rng)
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=1200, friction=0.02 / units.fs, rng=rng)
    dyn.run(equilibrate)
    out = []
    for _ in range(frames):
        dyn.run(every)
        a = atoms.copy()
        a.calc = SinglePointCalculator(
            a,
            energy=atoms.get_potential_energy(),
            forces=atoms.get_forces(),
            stress=atoms.get_stress(),
        )
        out.append(a)
    return out


def table(run: Path) -> str:
    rows = [
        "| iteration | structures | accurate | candidate | failed | force RMSE 1200 K (eV/A) "
        "| energy RMSE 1200 K (meV/atom) | wall time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    k = 0
    while (run / f"iter_{k}" / "summary.json").exists():
        s = json.loads((run / f"iter_{k}" / "summary.json").read_text())
        t = s["test"] or {}
        rows.append(
            f"| {k} | {s['structures']} | {s['accurate_fraction']:.3f} | "
            f"{s['candidate_fraction']:.3f} | {s['failed_fraction']:.3f} | "
            f"{t.get('force_rmse_ev_per_angstrom', float('nan')):.4f} | "
            f"{t.get('energy_rmse_mev_per_atom', float('nan')):.2f} | {s['wall_time_s']:.0f} |"
        )
        k += 1
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(DATA / "run"), help="run directory")
    p.add_argument("--resume", action="store_true", help="continue an interrupted loop")
    args = p.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not (DATA / "start.extxyz").exists():
        ase.io.write(DATA / "start.extxyz", starting_structures())
    if not (DATA / "md_1200K.extxyz").exists():
        print("EMT MD at 1200 K (ASE Langevin) for the independent test trajectory ...")
        ase.io.write(DATA / "md_1200K.extxyz", md_1200k())
    nnmd = Path(sys.executable).with_name("nnmd")
    cmd = [str(nnmd), "active-learn", str(HERE / "cu_emt.yaml"), "--out", args.out]
    if args.resume:
        cmd.append("--resume")
    rc = subprocess.call(cmd)
    text = table(Path(args.out))
    Path(args.out, "table.md").write_text(text + "\n")
    print(text)
    print(f"wall time in all: {time.perf_counter() - t0:.0f} s; see {args.out}/progress.png")
    return rc


if __name__ == "__main__":
    sys.exit(main())
