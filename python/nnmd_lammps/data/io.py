"""Reading and writing structures in every supported format (n2p2 input.data, mlearn
JSON, anything ASE reads), converted to eV and Angstrom."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ..errors import NNMDError
from ..units import energy_factor, length_factor
from .mlearn import read_mlearn_json
from .n2p2_data import read_input_data


def reference_values(atoms: Atoms) -> dict[str, np.ndarray | float]:
    """Energy / forces / stress stored with a structure (empty where absent)."""
    out: dict[str, np.ndarray | float] = {}
    calc = atoms.calc
    if calc is None:
        return out
    res = getattr(calc, "results", {})
    if "energy" in res or "free_energy" in res:
        out["energy"] = float(res.get("energy", res.get("free_energy")))
    if "forces" in res:
        out["forces"] = np.asarray(res["forces"], dtype=np.float64)
    if "stress" in res:
        out["stress"] = np.asarray(res["stress"], dtype=np.float64)
    return out


def convert_units(atoms: Atoms, angstrom_per_length: float, ev_per_energy: float) -> Atoms:
    """A copy of ``atoms`` with positions, cell and reference data converted."""
    ref = reference_values(atoms)
    new = atoms.copy()
    new.calc = None
    new.set_cell(np.asarray(atoms.get_cell()) * angstrom_per_length, scale_atoms=False)
    new.set_positions(atoms.get_positions() * angstrom_per_length)
    if ref:
        kw = {}
        if "energy" in ref:
            kw["energy"] = ref["energy"] * ev_per_energy
        if "forces" in ref:
            kw["forces"] = ref["forces"] * ev_per_energy / angstrom_per_length
        if "stress" in ref:
            kw["stress"] = ref["stress"] * ev_per_energy / angstrom_per_length**3
        new.calc = SinglePointCalculator(new, **kw)
    return new


def read_structures(
    path: str | Path,
    fmt: str | None = None,
    length_unit: str = "angstrom",
    energy_unit: str = "ev",
    index: str = ":",
) -> list[Atoms]:
    """Structures from ``path``: n2p2 input.data (``fmt='n2p2'``), the mlearn JSON
    format (``fmt='mlearn'``, or a .json file that is a list), or any ASE format."""
    path = Path(path)
    if not path.exists():
        raise NNMDError(f"data file not found: {path}")
    lu, eu = length_factor(length_unit), energy_factor(energy_unit)
    if fmt == "n2p2" or (fmt is None and path.name.endswith("input.data")):
        return read_input_data(path, lu, eu)
    if fmt == "mlearn" or (fmt is None and path.suffix == ".json" and _is_json_list(path)):
        return [convert_units(a, lu, eu) for a in read_mlearn_json(path)]
    try:
        frames = ase.io.read(str(path), index=index, format=fmt)
    except Exception as exc:  # ASE raises many exception types for unreadable files
        raise NNMDError(
            f"cannot read {path}" + (f" as {fmt}" if fmt else "") + f": {exc}"
        ) from None
    if isinstance(frames, Atoms):
        frames = [frames]
    if not frames:
        raise NNMDError(f"{path}: no structures found")
    if lu == 1.0 and eu == 1.0:
        return list(frames)
    return [convert_units(a, lu, eu) for a in frames]


def _is_json_list(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(64).lstrip()
    return head.startswith(b"[")


#: Per-atom arrays of a prediction written by :func:`write_predictions` when present.
PER_ATOM_TRUST = (
    "extrapolation_count",
    "extrapolation_excursion",
    "force_deviation",
    "energy_deviation",
)


def write_predictions(path: str | Path, structures: list[Atoms], predictions) -> None:
    """Write structures with predicted energy, per-atom energies, forces and stress
    (eV, Angstrom) as extended XYZ. Reference data of the input, if any, is kept as
    ``ref_energy`` (info) and ``ref_forces`` (array). Per-atom trust figures of the
    predictions, where present, become arrays of the same names (``extrapolation_count``,
    ``extrapolation_excursion``, ``force_deviation``, ``energy_deviation``) and
    ``max_force_deviation`` an info key."""
    frames = []
    for atoms, pred in zip(structures, predictions, strict=True):
        ref = reference_values(atoms)
        a = Atoms(
            atoms.get_chemical_symbols(),
            positions=atoms.get_positions(),
            cell=atoms.get_cell(),
            pbc=atoms.get_pbc(),
        )
        if "energy" in ref:
            a.info["ref_energy"] = ref["energy"]
        if "forces" in ref:
            a.arrays["ref_forces"] = ref["forces"]
        kw = {"energy": pred.energy, "energies": pred.atomic_energies}
        if pred.forces is not None:
            kw["forces"] = pred.forces
        if pred.stress is not None:
            kw["stress"] = pred.stress
        for name in PER_ATOM_TRUST:
            value = getattr(pred, name, None)
            if value is not None:
                a.arrays[name] = np.asarray(value)
        if getattr(pred, "max_force_deviation", None) is not None:
            a.info["max_force_deviation"] = pred.max_force_deviation
        a.calc = SinglePointCalculator(a, **kw)
        frames.append(a)
    ase.io.write(str(path), frames, format="extxyz")
