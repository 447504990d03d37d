"""The JSON data format of materialsvirtuallab/mlearn (Zuo et al., J. Phys. Chem. A 124,
731 (2020))."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import GPa

from ..errors import NNMDError


def read_mlearn_json(path: str | Path) -> list[Atoms]:
    """The JSON format of materialsvirtuallab/mlearn: a list of entries with a pymatgen
    ``structure`` dict (Angstrom), ``outputs.energy`` (eV), ``outputs.forces`` (eV/A).

    ``outputs.virial_stress`` (6 values, VASP order xx yy zz xy yz zx, kbar, positive =
    compressive) is kept unconverted in ``atoms.info['virial_stress_kbar']``; use
    :func:`mlearn_stress` for the ASE stress. ``group`` and ``description`` go to
    ``atoms.info`` too."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise NNMDError(f"cannot read {path} as mlearn JSON: {exc}") from None
    if not isinstance(entries, list):
        raise NNMDError(f"{path}: mlearn JSON must be a list of entries")
    out = []
    for k, entry in enumerate(entries):
        try:
            st = entry["structure"]
            cell = np.array(st["lattice"]["matrix"], dtype=np.float64)
            sites = st["sites"]
            symbols = [s["species"][0]["element"] for s in sites]
            pos = np.array([s["xyz"] for s in sites], dtype=np.float64).reshape(-1, 3)
            outputs = entry.get("outputs", {})
        except (KeyError, TypeError, IndexError) as exc:
            raise NNMDError(f"{path}: entry {k} is malformed (missing {exc})") from None
        atoms = Atoms(symbols, positions=pos, cell=cell, pbc=True)
        for key in ("group", "description", "tag"):
            if key in entry:
                atoms.info[key] = entry[key]
        kw = {}
        if outputs.get("energy") is not None:
            kw["energy"] = float(outputs["energy"])
        if outputs.get("forces") is not None:
            forces = np.array(outputs["forces"], dtype=np.float64)
            if forces.shape != (len(atoms), 3):
                raise NNMDError(
                    f"{path}: entry {k}: forces shape {forces.shape} does not match "
                    f"{len(atoms)} atoms"
                )
            kw["forces"] = forces
        if outputs.get("virial_stress") is not None:
            atoms.info["virial_stress_kbar"] = np.array(outputs["virial_stress"], dtype=float)
        if kw:
            atoms.calc = SinglePointCalculator(atoms, **kw)
        out.append(atoms)
    if not out:
        raise NNMDError(f"{path}: no structures")
    return out


def mlearn_stress(atoms: Atoms) -> np.ndarray | None:
    """ASE stress (Voigt xx yy zz yz xz xy, eV/A^3, positive = tensile) from mlearn's
    VASP-convention ``virial_stress`` (kbar, xx yy zz xy yz zx, positive = compressive)."""
    v = atoms.info.get("virial_stress_kbar")
    if v is None:
        return None
    xx, yy, zz, xy, yz, zx = (float(x) for x in v)
    return -0.1 * GPa * np.array([xx, yy, zz, yz, zx, xy])
