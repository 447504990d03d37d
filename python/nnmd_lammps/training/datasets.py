"""The training, validation and test sets of a configuration (random splits with the
configured seed), the repulsion residual and committee bootstrap resamples."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..data.dataset import Dataset, concatenate, random_split, stratified_split
from ..data.io import read_structures
from ..descriptors.spec import atomic_number
from ..errors import NNMDError
from ..model.potential import make_batch
from ..model.repulsion import ZBLRepulsion
from .config import Config, resolve


def load_datasets(cfg: Config, log: Callable[[str], None]) -> dict[str, Dataset]:
    """Train / validation / test sets as configured (random splits with the seed, within
    each group of ``data.stratify`` if set)."""
    d = cfg.data

    def read(paths: list[str]) -> Dataset:
        sets = []
        for p in paths:
            path = resolve(cfg, p)
            structures = read_structures(path, d.format, d.length_unit, d.energy_unit)
            sets.append(Dataset.from_structures(structures, str(path), d.stress))
        return concatenate(sets)

    pool = read(d.train)
    out: dict[str, Dataset] = {}
    fractions = []
    if not d.validation:
        fractions.append(d.validation_fraction)
    if not d.test:
        fractions.append(d.test_fraction)
    fractions.append(1.0 - sum(fractions))
    if d.stratify is None:
        parts = random_split(len(pool), fractions, cfg.training.seed)
    else:
        missing = [k for k, a in enumerate(pool.structures) if d.stratify not in a.info]
        if missing:
            raise NNMDError(
                f"config key 'data.stratify': {len(missing)} training structures (the first: "
                f"number {missing[0]}) have no info[{d.stratify!r}] to split by"
            )
        labels = [str(a.info[d.stratify]) for a in pool.structures]
        parts = stratified_split(labels, fractions, cfg.training.seed)
        log(f"split stratified by info[{d.stratify!r}]: {len(set(labels))} groups")
    k = 0
    if d.validation:
        out["validation"] = read(d.validation)
    else:
        out["validation"] = pool.subset(parts[k])
        k += 1
    if d.test:
        out["test"] = read(d.test)
    else:
        out["test"] = pool.subset(parts[k])
        k += 1
    out["train"] = pool.subset(parts[k])
    if len(out["train"]) == 0:
        raise NNMDError("the training set is empty")
    for name, ds in out.items():
        log(
            f"{name:10s}: {len(ds):5d} structures, {int(ds.n_atoms.sum()):7d} atoms, forces for "
            f"{sum(f is not None for f in ds.forces)}, stress for "
            f"{sum(s is not None for s in ds.stress)}"
        )
    return out


def subtract_repulsion(data: Dataset, repulsion: ZBLRepulsion, elements: list[str]) -> Dataset:
    """A copy of ``data`` whose reference energies, forces and stresses have the repulsion
    baseline removed: the networks are trained on this residual (docs/uncertainty.md)."""
    numbers = torch.tensor([atomic_number(e) for e in elements])
    energy = data.energy.copy()
    forces = list(data.forces)
    stress = list(data.stress)
    for k, atoms in enumerate(data.structures):
        batch = make_batch([atoms], elements, repulsion.outer)
        zero = torch.zeros(len(batch.centers), dtype=torch.long)
        r = repulsion.evaluate(
            numbers[batch.species],
            batch.centers,
            batch.neighbors,
            batch.vectors,
            len(atoms),
            virial_rows=zero,
            n_virial_rows=1,
        )
        energy[k] -= float(r.energies.sum())
        if forces[k] is not None:
            forces[k] = forces[k] - r.forces.numpy()
        if stress[k] is not None:
            w = r.virial[0].numpy()
            stress[k] = stress[k] + 0.5 * (w + w.T) / atoms.get_volume()
    return Dataset(
        list(data.structures), energy, forces, stress, data.weight.copy(), list(data.names)
    )


def bootstrap_counts(n_structures: int, members: int, seed: int) -> np.ndarray:
    """(members, n_structures): how often each structure is drawn in each member's
    resample (n draws with replacement); deterministic for a seed."""
    rng = np.random.default_rng([seed, 7919])
    draws = rng.integers(0, n_structures, size=(members, n_structures))
    return np.stack([np.bincount(d, minlength=n_structures) for d in draws])
