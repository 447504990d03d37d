"""Training data: readers that ASE does not provide, the internal dataset type and splits.

All data is converted to eV and Angstrom when read. A :class:`Dataset` is a list of ASE
``Atoms`` with reference energy (required), forces (optional per structure) and stress
(optional), plus a per-structure weight.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress
from ase.units import GPa

from .errors import NNMDError


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


def mlearn_stress(atoms: Atoms) -> np.ndarray | None:
    """ASE stress (Voigt xx yy zz yz xz xy, eV/A^3, positive = tensile) from mlearn's
    VASP-convention ``virial_stress`` (kbar, xx yy zz xy yz zx, positive = compressive)."""
    v = atoms.info.get("virial_stress_kbar")
    if v is None:
        return None
    xx, yy, zz, xy, yz, zx = (float(x) for x in v)
    return -0.1 * GPa * np.array([xx, yy, zz, yz, zx, xy])


@dataclass
class Dataset:
    """Structures with reference data (eV, Angstrom).

    ``energy[k]`` total energy; ``forces[k]`` (N_k, 3) or None; ``stress[k]`` 3x3 (ASE
    sign) or None; ``weight[k]`` a per-structure loss weight."""

    structures: list[Atoms]
    energy: np.ndarray
    forces: list[np.ndarray | None]
    stress: list[np.ndarray | None]
    weight: np.ndarray
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.structures)

    @property
    def n_atoms(self) -> np.ndarray:
        return np.array([len(a) for a in self.structures])

    def subset(self, index: Sequence[int]) -> Dataset:
        idx = list(index)
        return Dataset([self.structures[i] for i in idx], self.energy[idx],
                       [self.forces[i] for i in idx], [self.stress[i] for i in idx],
                       self.weight[idx], [self.names[i] for i in idx] if self.names else [])

    def elements(self) -> set[str]:
        return {s for a in self.structures for s in a.get_chemical_symbols()}

    @classmethod
    def from_structures(cls, structures: Sequence[Atoms], source: str = "",
                        stress_from: str = "auto") -> Dataset:
        """Collect reference data attached to ``structures`` (a calculator's results, as
        every reader here provides). A structure without energy is an error; forces and
        stress are optional. A per-structure weight may be given in ``info['weight']``.

        ``stress_from``: ``calculator`` (the calculator's stress), ``mlearn`` (mlearn's
        ``virial_stress``, :func:`mlearn_stress`), ``none`` (stress ignored) or ``auto``
        (mlearn's if the structures have it, else the calculator's)."""
        from .io import reference_values

        if stress_from == "auto":
            stress_from = "mlearn" if any("virial_stress_kbar" in a.info
                                          for a in structures) else "calculator"
        if stress_from not in ("calculator", "mlearn", "none"):
            raise NNMDError(f"stress_from must be auto, calculator, mlearn or none, "
                            f"not {stress_from!r}")
        energy, forces, stress, weight, names = [], [], [], [], []
        for k, atoms in enumerate(structures):
            ref = reference_values(atoms)
            where = f"{source} structure {k}" if source else f"structure {k}"
            if "energy" not in ref:
                raise NNMDError(f"{where} has no reference energy")
            if not np.isfinite(ref["energy"]):
                raise NNMDError(f"{where}: non-finite reference energy")
            energy.append(ref["energy"])
            f = ref.get("forces")
            if f is not None and not np.all(np.isfinite(f)):
                raise NNMDError(f"{where}: non-finite reference forces")
            forces.append(f)
            s = None
            if stress_from == "mlearn":
                v = mlearn_stress(atoms)
                s = None if v is None else voigt_6_to_full_3x3_stress(v)
            elif stress_from == "calculator" and "stress" in ref:
                s = np.asarray(ref["stress"])
                s = voigt_6_to_full_3x3_stress(s) if s.shape == (6,) else s.reshape(3, 3)
            if s is not None and not np.all(atoms.pbc):
                s = None
            stress.append(s)
            w = float(atoms.info.get("weight", 1.0))
            if not (w >= 0 and np.isfinite(w)):
                raise NNMDError(f"{where}: weight must be a non-negative number")
            weight.append(w)
            names.append(str(atoms.info.get("group", atoms.info.get("name", ""))))
        return cls(list(structures), np.array(energy, dtype=np.float64), forces, stress,
                   np.array(weight, dtype=np.float64), names)


def concatenate(sets: Sequence[Dataset]) -> Dataset:
    return Dataset(
        [a for d in sets for a in d.structures],
        np.concatenate([d.energy for d in sets]),
        [f for d in sets for f in d.forces],
        [s for d in sets for s in d.stress],
        np.concatenate([d.weight for d in sets]),
        [n for d in sets for n in d.names],
    )


def random_split(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Disjoint random index sets with the given fractions of n (the last set takes the
    rest); deterministic for a seed."""
    if any(f < 0 for f in fractions) or sum(fractions) > 1.0 + 1e-12:
        raise NNMDError(f"split fractions {list(fractions)} must be >= 0 and sum to <= 1")
    perm = np.random.default_rng(seed).permutation(n)
    out, start = [], 0
    for k, f in enumerate(fractions):
        size = n - start if k == len(fractions) - 1 else round(f * n)
        out.append(np.sort(perm[start:start + size]))
        start += size
    return out
