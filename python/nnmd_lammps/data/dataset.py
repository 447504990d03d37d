"""The dataset type of training and testing, and random (optionally stratified) splits.

A :class:`Dataset` is a list of ASE ``Atoms`` with reference energy (required), forces
(optional per structure) and stress (optional), plus a per-structure weight; all in eV
and Angstrom (the readers of :mod:`.io` convert when reading).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from ..errors import NNMDError
from .io import reference_values
from .mlearn import mlearn_stress


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
        return Dataset(
            [self.structures[i] for i in idx],
            self.energy[idx],
            [self.forces[i] for i in idx],
            [self.stress[i] for i in idx],
            self.weight[idx],
            [self.names[i] for i in idx] if self.names else [],
        )

    def elements(self) -> set[str]:
        return {s for a in self.structures for s in a.get_chemical_symbols()}

    @classmethod
    def from_structures(
        cls, structures: Sequence[Atoms], source: str = "", stress_from: str = "auto"
    ) -> Dataset:
        """Collect reference data attached to ``structures`` (a calculator's results, as
        every reader here provides). A structure without energy is an error; forces and
        stress are optional. A per-structure weight may be given in ``info['weight']``.

        ``stress_from``: ``calculator`` (the calculator's stress), ``mlearn`` (mlearn's
        ``virial_stress``, :func:`mlearn_stress`), ``none`` (stress ignored) or ``auto``
        (mlearn's if the structures have it, else the calculator's)."""
        if stress_from == "auto":
            stress_from = (
                "mlearn"
                if any("virial_stress_kbar" in a.info for a in structures)
                else "calculator"
            )
        if stress_from not in ("calculator", "mlearn", "none"):
            raise NNMDError(
                f"stress_from must be auto, calculator, mlearn or none, not {stress_from!r}"
            )
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
        return cls(
            list(structures),
            np.array(energy, dtype=np.float64),
            forces,
            stress,
            np.array(weight, dtype=np.float64),
            names,
        )


def concatenate(sets: Sequence[Dataset]) -> Dataset:
    return Dataset(
        [a for d in sets for a in d.structures],
        np.concatenate([d.energy for d in sets]),
        [f for d in sets for f in d.forces],
        [s for d in sets for s in d.stress],
        np.concatenate([d.weight for d in sets]),
        [n for d in sets for n in d.names],
    )


def _check_fractions(fractions: Sequence[float]) -> None:
    if any(f < 0 for f in fractions) or sum(fractions) > 1.0 + 1e-12:
        raise NNMDError(f"split fractions {list(fractions)} must be >= 0 and sum to <= 1")


def random_split(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Disjoint random index sets with the given fractions of n (the last set takes the
    rest); deterministic for a seed."""
    _check_fractions(fractions)
    perm = np.random.default_rng(seed).permutation(n)
    out, start = [], 0
    for k, f in enumerate(fractions):
        size = n - start if k == len(fractions) - 1 else round(f * n)
        out.append(np.sort(perm[start : start + size]))
        start += size
    return out


def stratified_split(
    labels: Sequence[str], fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
    """:func:`random_split` within each label's structures: of the n_g structures with
    label g, each set but the last takes round(f n_g), the last the rest, so that every
    set holds the labels in proportion (a group of 12 gives a 10 % validation set one
    structure, whatever the seed). Deterministic for a seed; labels in sorted order."""
    _check_fractions(fractions)
    names = np.array([str(x) for x in labels])
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for label in sorted(set(names)):
        members = np.flatnonzero(names == label)
        perm = members[rng.permutation(len(members))]
        start = 0
        for k, f in enumerate(fractions):
            size = len(perm) - start if k == len(fractions) - 1 else round(f * len(perm))
            size = min(size, len(perm) - start)
            parts[k].extend(int(i) for i in perm[start : start + size])
            start += size
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
