"""The training, validation and test sets of a configuration (random splits with the
configured seed)."""

from __future__ import annotations

from collections.abc import Callable

from ..data.dataset import Dataset, concatenate, random_split
from ..data.io import read_structures
from ..errors import NNMDError
from .config import Config, resolve


def load_datasets(cfg: Config, log: Callable[[str], None]) -> dict[str, Dataset]:
    """Train / validation / test sets as configured (random splits with the seed)."""
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
    parts = random_split(len(pool), [*fractions, 1.0 - sum(fractions)], cfg.training.seed)
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
