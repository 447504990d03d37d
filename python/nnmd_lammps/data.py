"""Training-data readers that ASE does not provide."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from .errors import NNMDError


def read_mlearn_json(path: str | Path) -> list[Atoms]:
    """The JSON format of materialsvirtuallab/mlearn: a list of entries with a pymatgen
    ``structure`` dict (Angstrom), ``outputs.energy`` (eV), ``outputs.forces`` (eV/A).

    ``outputs.virial_stress`` (6 values, VASP order xx yy zz xy yz zx, kbar) is kept
    unconverted in ``atoms.info['virial_stress_kbar']``; ``group`` and
    ``description`` go to ``atoms.info`` too."""
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
                raise NNMDError(f"{path}: entry {k}: forces shape {forces.shape} does not match "
                                f"{len(atoms)} atoms")
            kw["forces"] = forces
        if outputs.get("virial_stress") is not None:
            atoms.info["virial_stress_kbar"] = np.array(outputs["virial_stress"], dtype=float)
        if kw:
            atoms.calc = SinglePointCalculator(atoms, **kw)
        out.append(atoms)
    if not out:
        raise NNMDError(f"{path}: no structures")
    return out
