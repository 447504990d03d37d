"""The main job (`make demo`): train -> export -> LAMMPS MD, on data generated here.

1. a training set for fcc Cu computed with ASE's EMT calculator (rattled, strained, MD
   snapshots, a vacancy, surfaces);
2. training (examples/demo/cu.yaml) -> demo_output/cu_run/model.pt (+ plots), copied to
   demo_output/cu.pt;
3. NVT molecular dynamics with pair_style nnmd on 2 MPI ranks (examples/lammps/in.nvt);
4. validation: lattice constant, bulk modulus, C11/C12/C44 and the vacancy formation
   energy of the network potential *in LAMMPS* against EMT;
5. trust: a committee of 4 networks (examples/demo/cu_committee.yaml) and MD heated until
   the committee's force deviation crosses a threshold (examples/lammps/in.uncertainty).
With ../shared/data present, the n2p2 water potential is also imported and checked
against n2p2's published energy and forces.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo"  # the demo's own modules: EMT data, cubic properties
sys.path.insert(0, str(DEMO))
OUT = ROOT / "demo_output"
WATER = ROOT.parent / "shared" / "data" / "n2p2" / "H2O_RPBE-D3"
BIN = Path(sys.executable).parent


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def nnmd(*args: str) -> None:
    print("$ nnmd " + " ".join(args), flush=True)
    subprocess.run([str(BIN / "nnmd"), *args], check=True)


def make_data() -> Path:
    import ase.io
    from emt_data import cu_training_set

    path = OUT / "cu_emt.extxyz"
    t0 = time.perf_counter()
    structures = cu_training_set(seed=0)
    ase.io.write(path, structures)
    print(
        f"{len(structures)} structures, {sum(len(s) for s in structures)} atoms "
        f"({time.perf_counter() - t0:.0f} s) -> {path}"
    )
    return path


def train() -> Path:
    run = OUT / "cu_run"
    if run.exists():
        shutil.rmtree(run)
    nnmd("train", str(ROOT / "examples" / "demo" / "cu.yaml"), "--out", str(run))
    model = OUT / "cu.pt"
    shutil.copy(run / "model.pt", model)
    nnmd("info", str(model))
    return run


def lammps_command(deck: Path, log: Path, **variables) -> list[str]:
    """``mpirun -np 2 lmp -in DECK -var NAME VALUE ... -log LOG -screen none``."""
    cmd = [str(BIN / "mpirun"), "-np", "2", str(BIN / "lmp"), "-in", str(deck)]
    for name, value in variables.items():
        cmd += ["-var", name, str(value)]
    return [*cmd, "-log", str(log), "-screen", "none"]


def md(model: Path) -> None:
    deck = ROOT / "examples" / "lammps" / "in.nvt"
    work = OUT / "md"
    work.mkdir(exist_ok=True)
    cmd = lammps_command(deck, work / "log.lammps", model=model, steps=1000)
    print("$ " + " ".join(cmd[:6]) + " ...", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=work)
    text = (work / "log.lammps").read_text()
    start = text.index("   Step")
    print(text[start : text.index("Loop time", start)].rstrip())
    loop = [ln for ln in text.splitlines() if ln.startswith("Loop time")][-1]
    print(loop)
    print(f"(wall time {time.perf_counter() - t0:.0f} s; trajectory {work / 'nvt.lammpstrj'})")


def properties(model: Path) -> dict:
    from ase.calculators.emt import EMT
    from cubic_properties import cubic_properties
    from emt_data import emt_lattice_constant

    a0 = emt_lattice_constant()
    emt = cubic_properties(EMT(), "Cu", "fcc", a0)
    out = OUT / "properties_nn_lammps.json"
    subprocess.run(
        [
            sys.executable,
            str(DEMO / "cubic_properties.py"),
            str(model),
            "Cu",
            "fcc",
            str(a0),
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    nn = json.loads(out.read_text())
    rows = [
        ("lattice constant (A)", "lattice_constant", "{:.4f}"),
        ("bulk modulus (GPa)", "bulk_modulus", "{:.1f}"),
        ("C11 (GPa)", "c11", "{:.1f}"),
        ("C12 (GPa)", "c12", "{:.1f}"),
        ("C44 (GPa)", "c44", "{:.1f}"),
        ("vacancy formation energy (eV)", "vacancy_formation_energy", "{:.3f}"),
    ]
    print(f"{'property':32s} {'NN (LAMMPS)':>12s} {'EMT':>10s} {'difference':>11s}")
    table = {}
    for label, key, fmt in rows:
        a, b = nn[key], getattr(emt, key)
        rel = (a - b) / b
        table[key] = {"nn_lammps": a, "emt": b, "relative_difference": rel}
        print(f"{label:32s} {fmt.format(a):>12s} {fmt.format(b):>10s} {rel:>+10.2%}")
    (OUT / "validation.json").write_text(json.dumps(table, indent=1))
    return table


def water() -> None:
    import ase.io
    from ase import units

    model, out = OUT / "h2o.pt", OUT / "h2o_predicted.extxyz"
    nnmd(
        "import-n2p2",
        str(WATER),
        "--length-unit",
        "bohr",
        "--energy-unit",
        "hartree",
        "-o",
        str(model),
    )
    nnmd(
        "predict",
        str(model),
        str(WATER / "input.data"),
        "--format",
        "n2p2",
        "--length-unit",
        "bohr",
        "--energy-unit",
        "hartree",
        "-o",
        str(out),
    )
    pred = ase.io.read(out)
    exp = json.loads((WATER / "expected.json").read_text())
    e_ref = exp["energy"] * units.Hartree
    f_ref = np.array(exp["forces"]) * units.Hartree / units.Bohr
    rel = abs(pred.get_potential_energy() - e_ref) / abs(e_ref)
    print(
        f"1080-atom water vs n2p2's expected output: relative energy difference {rel:.1e}, "
        f"max force difference {np.abs(pred.get_forces() - f_ref).max():.1e} eV/A"
    )


def trust() -> None:
    """A committee of 4 on the same data, then MD heated until the committee disagrees:
    fix halt stops the run (examples/lammps/in.uncertainty, docs/uncertainty.md)."""
    run = OUT / "cu_committee_run"
    if run.exists():
        shutil.rmtree(run)
    nnmd("train", str(ROOT / "examples" / "demo" / "cu_committee.yaml"), "--out", str(run))
    model = OUT / "cu_committee.pt"
    shutil.copy(run / "model.pt", model)
    work = OUT / "uncertainty"
    work.mkdir(exist_ok=True)
    deck = ROOT / "examples" / "lammps" / "in.uncertainty"
    cmd = lammps_command(deck, work / "log.lammps", model=model)
    print("$ " + " ".join(cmd[:6]) + " ...", flush=True)
    subprocess.run(cmd, check=True, cwd=work)
    text = (work / "log.lammps").read_text()
    start = text.index("   Step")
    table = text[start : text.index("Loop time", start)].rstrip().splitlines()
    print("\n".join([*table[:3], "   ...", *table[-3:]]))
    print(next(ln for ln in text.splitlines() if ln.startswith("uncertainty: run ended")))
    warnings = [ln for ln in text.splitlines() if "extrapolat" in ln and "WARNING" in ln]
    if warnings:
        print(f"({len(warnings)} extrapolation warning(s) in {work / 'log.lammps'})")


def main() -> None:
    t0 = time.perf_counter()
    OUT.mkdir(exist_ok=True)
    step("1. EMT training data for fcc Cu")
    make_data()
    step("2. training")
    run = train()
    model = OUT / "cu.pt"
    step("3. LAMMPS: NVT MD of 864 Cu atoms, pair_style nnmd, 2 MPI ranks")
    md(model)
    step("4. validation: the network potential in LAMMPS vs EMT")
    properties(model)
    step("5. trust: a committee of 4, MD heated until it disagrees (fix halt)")
    trust()
    if WATER.is_dir():
        step("6. n2p2 interoperability: the published water potential")
        water()
    step("done")
    print(f"model        : {model}")
    print(
        f"plots        : {run / 'learning_curve.png'}, {run / 'parity_energy.png'}, "
        f"{run / 'parity_forces.png'}"
    )
    print(f"metrics      : {run / 'metrics.json'}, {OUT / 'validation.json'}")
    print(f"total time   : {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
