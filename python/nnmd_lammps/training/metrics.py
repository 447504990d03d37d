"""Error metrics of predictions against reference data (the numbers `nnmd test` prints)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase.units import GPa

from ..data.dataset import Dataset


def error_metrics(
    data: Dataset,
    energies: Sequence[float],
    forces: Sequence[np.ndarray | None],
    stresses: Sequence[np.ndarray | None] | None = None,
) -> dict[str, float]:
    """Energy errors per atom (meV/atom), force errors per Cartesian component (eV/A) and,
    where both reference and prediction exist, stress errors per component (GPa)."""
    n = data.n_atoms.astype(float)
    de = (np.asarray(energies) - data.energy) / n * 1000.0
    out: dict[str, float] = {
        "n_structures": len(data),
        "n_atoms": int(n.sum()),
        "energy_mae_mev_per_atom": float(np.abs(de).mean()),
        "energy_rmse_mev_per_atom": float(np.sqrt((de**2).mean())),
        "energy_max_error_mev_per_atom": float(np.abs(de).max()),
    }
    diffs = [
        f - ref
        for f, ref in zip(forces, data.forces, strict=True)
        if f is not None and ref is not None
    ]
    if diffs:
        df = np.concatenate([d.ravel() for d in diffs])
        out["force_mae_ev_per_angstrom"] = float(np.abs(df).mean())
        out["force_rmse_ev_per_angstrom"] = float(np.sqrt((df**2).mean()))
        out["force_max_error_ev_per_angstrom"] = float(np.abs(df).max())
        out["n_force_components"] = int(df.size)
    if stresses is not None:
        ds = [
            s - ref
            for s, ref in zip(stresses, data.stress, strict=True)
            if s is not None and ref is not None
        ]
        if ds:
            d = np.concatenate([x.ravel() for x in ds]) / GPa
            out["stress_mae_gpa"] = float(np.abs(d).mean())
            out["stress_rmse_gpa"] = float(np.sqrt((d**2).mean()))
    return out


def trust_metrics(data: Dataset, predictions: Sequence) -> dict[str, float]:
    """How well the model's own trust figures describe its errors on reference data:
    the fraction of atoms outside the training range and, for committee predictions with
    deviations, the per-atom force deviation against the actual per-atom force error
    |F_pred - F_ref| (eV/Angstrom): means and their Pearson and Spearman correlations."""
    out: dict[str, float] = {}
    counts = [p.extrapolation_count for p in predictions if p.extrapolation_count is not None]
    if counts:
        c = np.concatenate(counts)
        out["extrapolating_atom_fraction"] = float((c > 0).mean())
    dev, err = [], []
    for p, ref in zip(predictions, data.forces, strict=True):
        if p.force_deviation is None or ref is None or p.forces is None:
            continue
        dev.append(p.force_deviation)
        err.append(np.linalg.norm(p.forces - ref, axis=1))
    if dev:
        d, e = np.concatenate(dev), np.concatenate(err)
        out["mean_force_deviation_ev_per_angstrom"] = float(d.mean())
        out["mean_atom_force_error_ev_per_angstrom"] = float(e.mean())
        if len(d) > 2 and d.std() > 0 and e.std() > 0:
            out["force_deviation_error_pearson"] = float(np.corrcoef(d, e)[0, 1])
            rank = lambda x: np.argsort(np.argsort(x)).astype(float)  # noqa: E731
            out["force_deviation_error_spearman"] = float(np.corrcoef(rank(d), rank(e))[0, 1])
    return out
