"""Error of float32 networks (`pair_style nnmd precision float32`) against float64.

    python benchmarks/float32_error.py

A single point (`run 0`) of the n2p2 water box (1080 atoms, from ../shared/data) and of
864 rattled Cu atoms with the demo model (demo_output/cu.pt, from `make demo`), once with
each precision; prints the energy difference per atom, the largest force-component
difference and the relative virial difference. A measurement, not a test (the bounded
version is tests/test_lammps.py::test_float32_networks_error_bound).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from nnmd_lammps.interop.lammps import run_lammps

sys.path.insert(0, str(Path(__file__).parent))
from bench_lammps import SHARED, prepare_models


def structures(water: Path | None, cu: Path | None) -> dict[str, tuple[list[str], Path, str]]:
    """name -> (commands creating the atoms, model file, pair_coeff elements)."""
    head = ["units metal", "atom_style atomic", "atom_modify map array", "boundary p p p"]
    out = {}
    if water is not None:
        data = SHARED / "lammps" / "H2O-360mol" / "data.H2O-360mol"
        out["water, 1080 atoms"] = ([*head, f"read_data {data}"], water, "H O")
    if cu is not None:
        out["demo Cu, 864 rattled atoms"] = (
            [
                *head,
                "lattice fcc 3.61",
                "region box block 0 6 0 6 0 6",
                "create_box 1 box",
                "create_atoms 1 box",
                "mass 1 63.546",
                "displace_atoms all random 0.1 0.1 0.1 1234",
            ],
            cu,
            "Cu",
        )
    return out


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="nnmd-float32-"))
    water, cu = prepare_models(work)
    cases = structures(water, cu)
    if not cases:
        print("nothing to measure: needs ../shared/data or demo_output/cu.pt (`make demo`)")
        return 1
    for name, (setup, model, elements) in cases.items():
        res = {}
        for prec in ("float64", "float32"):
            deck = [
                *setup,
                f"pair_style nnmd precision {prec}",
                f"pair_coeff * * {model} {elements}",
                "neighbor 1.0 bin",
                "compute nnmd_press all pressure NULL virial",
                "run 0",
            ]
            res[prec] = run_lammps(deck, work / f"{name.split(',')[0]}-{prec}".replace(" ", "_"))
        a, b = res["float64"], res["float32"]
        n = len(a.ids)
        print(
            f"{name}: |dE| {abs(a.pe - b.pe) / n:.2e} eV/atom, "
            f"max |dF| {np.abs(a.forces - b.forces).max():.2e} eV/A "
            f"(max |F| {np.abs(a.forces).max():.2f} eV/A), relative virial difference "
            f"{np.abs(a.virial - b.virial).max() / np.abs(a.virial).max():.2e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
