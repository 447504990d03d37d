"""n2p2's structure file format, ``input.data`` (reading and writing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ..descriptors.spec import atomic_number
from ..errors import NNMDError


def read_input_data(
    path: str | Path, length_unit: float = 1.0, energy_unit: float = 1.0
) -> list[Atoms]:
    """Structures of an n2p2 input.data file, converted to eV and Angstrom. Reference
    energy and forces (if present) are attached as a SinglePointCalculator."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise NNMDError(f"cannot read {path}: {exc.strerror}") from None
    out: list[Atoms] = []
    cur: dict | None = None
    fconv = energy_unit / length_unit
    for n, raw in enumerate(text.splitlines(), 1):
        parts = raw.split()
        if not parts:
            continue
        key = parts[0].lower()
        if key == "begin":
            if cur is not None:
                raise NNMDError(f"{path}:{n}: 'begin' inside a structure")
            cur = {"lattice": [], "pos": [], "sym": [], "frc": [], "energy": None, "comment": ""}
            continue
        if cur is None:
            raise NNMDError(f"{path}:{n}: {parts[0]!r} outside begin/end")
        try:
            if key == "comment":
                cur["comment"] = raw.split(None, 1)[1] if len(parts) > 1 else ""
            elif key == "lattice":
                cur["lattice"].append([float(x) for x in parts[1:4]])
            elif key == "atom":
                if len(parts) < 10:
                    raise NNMDError(
                        f"{path}:{n}: atom line needs x y z element charge energy fx fy fz"
                    )
                cur["pos"].append([float(x) for x in parts[1:4]])
                cur["sym"].append(parts[4])
                cur["frc"].append([float(x) for x in parts[7:10]])
            elif key == "energy":
                cur["energy"] = float(parts[1])
            elif key == "charge":
                pass
            elif key == "end":
                out.append(_make_atoms(cur, path, n, length_unit, energy_unit, fconv))
                cur = None
            else:
                raise NNMDError(f"{path}:{n}: unknown line type {parts[0]!r}")
        except (ValueError, IndexError):
            raise NNMDError(f"{path}:{n}: malformed {key} line") from None
    if cur is not None:
        raise NNMDError(f"{path}: structure not closed by 'end'")
    if not out:
        raise NNMDError(f"{path}: no structures found")
    return out


def _make_atoms(cur: dict, path: Path, n: int, lu: float, eu: float, fconv: float) -> Atoms:
    if len(cur["lattice"]) not in (0, 3):
        raise NNMDError(f"{path}:{n}: a structure needs 0 or 3 lattice lines")
    for s in cur["sym"]:
        atomic_number(s)
    pos = np.array(cur["pos"], dtype=np.float64).reshape(-1, 3) * lu
    if not np.all(np.isfinite(pos)):
        raise NNMDError(f"{path}:{n}: non-finite atomic positions")
    periodic = len(cur["lattice"]) == 3
    cell = np.array(cur["lattice"]) * lu if periodic else np.zeros((3, 3))
    atoms = Atoms(symbols=cur["sym"], positions=pos, cell=cell, pbc=periodic)
    atoms.info["comment"] = cur["comment"]
    if cur["energy"] is not None:
        forces = np.array(cur["frc"], dtype=np.float64).reshape(-1, 3) * fconv
        atoms.calc = SinglePointCalculator(atoms, energy=cur["energy"] * eu, forces=forces)
    return atoms


def write_input_data(path: str | Path, structures: list[Atoms]) -> None:
    """Write structures (eV, Angstrom) in n2p2's input.data format."""
    lines = []
    for atoms in structures:
        lines.append("begin")
        lines.append(f"comment {atoms.info.get('comment', '')}".rstrip())
        if atoms.pbc.any():
            for v in np.asarray(atoms.cell):
                lines.append("lattice " + " ".join(f"{x:24.16E}" for x in v))
        try:
            energy = atoms.get_potential_energy()
            forces = atoms.get_forces()
        except Exception:  # no reference data
            energy, forces = 0.0, np.zeros((len(atoms), 3))
        for p, s, f in zip(atoms.positions, atoms.get_chemical_symbols(), forces, strict=True):
            lines.append(
                "atom "
                + " ".join(f"{x:24.16E}" for x in p)
                + f" {s:2s} "
                + f"{0.0:24.16E} {0.0:24.16E} "
                + " ".join(f"{x:24.16E}" for x in f)
            )
        lines.append(f"energy {energy:24.16E}")
        lines.append(f"charge {0.0:24.16E}")
        lines.append("end")
    Path(path).write_text("\n".join(lines) + "\n")
