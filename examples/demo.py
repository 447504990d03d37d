"""The main job, as far as it exists: import n2p2's water potential (from ../shared/data
when present) into a model file and predict energy and forces of the 1080-atom box;
without the reference data, build a small model and predict a generated structure."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "demo_output"
WATER = ROOT.parent / "shared" / "data" / "n2p2" / "H2O_RPBE-D3"


def nnmd(*args: str) -> None:
    cmd = [sys.executable, "-m", "nnmd_lammps.cli", *args]
    print("$ nnmd " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def water() -> None:
    import ase.io
    from ase import units

    model, out = OUT / "h2o.pt", OUT / "h2o_predicted.extxyz"
    nnmd("import-n2p2", str(WATER), "--length-unit", "bohr", "--energy-unit", "hartree",
         "-o", str(model))
    nnmd("info", str(model))
    t0 = time.perf_counter()
    nnmd("predict", str(model), str(WATER / "input.data"), "--format", "n2p2",
         "--length-unit", "bohr", "--energy-unit", "hartree", "-o", str(out))
    wall = time.perf_counter() - t0
    pred = ase.io.read(out)
    exp = json.loads((WATER / "expected.json").read_text())
    e_ref = exp["energy"] * units.Hartree
    f_ref = np.array(exp["forces"]) * units.Hartree / units.Bohr
    print()
    print("1080-atom water, n2p2 H2O_RPBE-D3 potential        ours            n2p2")
    print(f"  energy (eV)                     {pred.get_potential_energy():18.8f} {e_ref:18.8f}")
    rel = abs(pred.get_potential_energy() - e_ref) / abs(e_ref)
    print(f"  relative energy difference      {rel:.2e}")
    print(f"  max force difference (eV/A)     {np.abs(pred.get_forces() - f_ref).max():.2e}")
    print(f"  wall time of 'nnmd predict'     {wall:.2f} s")
    lammps_md(model)


def lammps_md(model: Path) -> None:
    """A short NVE run of the water box with pair_style nnmd on 2 MPI ranks."""
    from nnmd_lammps.lammps_run import run_lammps

    data = WATER.parents[1] / "lammps" / "H2O-360mol" / "data.H2O-360mol"
    log = OUT / "log.water_md"
    deck = [f"log {log}", "units metal", "atom_style atomic", "boundary p p p",
            f"read_data {data}", "pair_style nnmd", f"pair_coeff * * {model} H O",
            "neighbor 1.0 bin", "velocity all create 300 4928 loop geom", "fix 1 all nve",
            "timestep 0.0005", "thermo 5", "thermo_style custom step temp pe etotal press",
            "run 10"]
    print("\nLAMMPS: 10 NVE steps of the water box with pair_style nnmd on 2 MPI ranks")
    run_lammps(deck, OUT / "lammps", nprocs=2)
    text = log.read_text()
    start = text.index("   Step")
    print(text[start:text.index("Loop time", start)].rstrip())


def generated() -> None:
    from ase.build import bulk

    from nnmd_lammps.model import ModelDescription, NetworkSpec, ScalingParams, build_hdnnp
    from nnmd_lammps.modelfile import save_model
    from nnmd_lammps.potential import Potential
    from nnmd_lammps.symmetry import DescriptorSpec, SymmetryFunction

    fns = [SymmetryFunction(2, "Cu", ("Cu",), eta, 5.0, 0.0) for eta in (0.1, 0.5, 1.0)]
    fns += [SymmetryFunction(9, "Cu", ("Cu", "Cu"), 0.05, 5.0, 0.0, lam, 1.0) for lam in (1, -1)]
    spec = DescriptorSpec(["Cu"], {"Cu": fns})
    desc = ModelDescription({"Cu": NetworkSpec([5, 8, 1], ["tanh", "identity"])},
                            {"Cu": ScalingParams.identity(5)}, 1.0, {"Cu": -3.5})
    save_model(OUT / "generated.pt", spec, build_hdnnp(["Cu"], desc), desc, {"kind": "demo"})
    pot = Potential.load(OUT / "generated.pt")
    atoms = bulk("Cu", "fcc", a=3.6).repeat(3)
    atoms.rattle(0.05, seed=1)
    p = pot.evaluate([atoms])[0]
    print(f"generated Cu model: E = {p.energy:.6f} eV, max |F| = {np.abs(p.forces).max():.4f} eV/A")


def main() -> None:
    OUT.mkdir(exist_ok=True)
    if WATER.is_dir():
        water()
    else:
        print(f"{WATER} not found: using a generated model")
        generated()


if __name__ == "__main__":
    main()
