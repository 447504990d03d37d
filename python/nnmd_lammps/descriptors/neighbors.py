"""Neighbour lists with full periodic boundary conditions.

Built on vesin (linear-scaling cell lists, any triclinic cell, mixed periodicity, cells
smaller than the cutoff). Every pair is listed in both directions (full list); a pair is
identified by (i, j, S) with S the integer image shift, so that

    d_ij = r_j + S · cell - r_i.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import vesin
from ase import Atoms

from ..errors import NNMDError


@dataclass
class PairList:
    """Neighbour pairs of a batch of structures (numpy, global atom indices)."""

    centers: np.ndarray  # (P,) int64, atom i
    neighbors: np.ndarray  # (P,) int64, atom j
    shifts: np.ndarray  # (P, 3) float64, integer image shifts S
    structure: np.ndarray  # (P,) int64, structure index of the pair


def check_structure(atoms: Atoms, index: int | None = None) -> None:
    """Raise NNMDError for structures that no potential can evaluate."""
    where = "structure" if index is None else f"structure {index}"
    pos = atoms.get_positions()
    if not np.all(np.isfinite(pos)):
        raise NNMDError(f"{where}: non-finite atomic positions")
    cell = np.asarray(atoms.get_cell())
    if not np.all(np.isfinite(cell)):
        raise NNMDError(f"{where}: non-finite cell")
    pbc = atoms.get_pbc()
    if pbc.any():
        vecs = cell[pbc]
        if np.linalg.matrix_rank(vecs, tol=1e-8) < len(vecs):
            raise NNMDError(f"{where}: periodic cell vectors are zero or linearly dependent")


def _vesin_box(atoms: Atoms) -> np.ndarray:
    """The cell as vesin needs it: periodic vectors as given; non-periodic directions
    may be zero (vesin only uses periodic vectors for shifts)."""
    cell = np.array(atoms.get_cell(), dtype=np.float64)
    pbc = atoms.get_pbc()
    cell[~pbc] = 0.0
    return cell


def neighbor_pairs(structures: Sequence[Atoms], cutoff: float) -> PairList:
    """Full neighbour list (r_ij < cutoff, Angstrom) of every structure, with atom
    indices offset so that structure k's atoms follow structure k-1's."""
    if cutoff <= 0:
        raise NNMDError("neighbour cutoff must be positive")
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    centers, neighbors, shifts, owner = [], [], [], []
    offset = 0
    for k, atoms in enumerate(structures):
        check_structure(atoms, k)
        n = len(atoms)
        if n == 0:
            continue
        pbc = atoms.get_pbc()
        if n == 1 and not pbc.any():
            i = j = np.zeros(0, dtype=np.int64)
            s = np.zeros((0, 3))
        else:
            i, j, s = nl.compute(
                points=np.ascontiguousarray(atoms.get_positions(), dtype=np.float64),
                box=_vesin_box(atoms),
                periodic=[bool(p) for p in pbc],
                quantities="ijS",
            )
        centers.append(np.asarray(i, dtype=np.int64) + offset)
        neighbors.append(np.asarray(j, dtype=np.int64) + offset)
        shifts.append(np.asarray(s, dtype=np.float64).reshape(-1, 3))
        owner.append(np.full(len(i), k, dtype=np.int64))
        offset += n
    if not centers:
        empty = np.zeros(0, dtype=np.int64)
        return PairList(empty, empty, np.zeros((0, 3)), empty)
    return PairList(
        np.concatenate(centers),
        np.concatenate(neighbors),
        np.concatenate(shifts),
        np.concatenate(owner),
    )


def pair_counts(structures: Sequence[Atoms], cutoff: float, chunk: int = 200) -> np.ndarray:
    """Number of neighbour pairs (full list, r_ij < cutoff in Angstrom) of every
    structure, as int64."""
    out = np.zeros(len(structures), dtype=np.int64)
    for k in range(0, len(structures), chunk):
        part = structures[k : k + chunk]
        out[k : k + len(part)] = np.bincount(
            neighbor_pairs(part, cutoff).structure, minlength=len(part)
        )
    return out


def triplets_of(centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (p, q), p < q, of list entries with the same centre.

    ``centers`` must be sorted (non-decreasing). Returns two index arrays into it;
    each unordered pair of neighbours of one centre appears once."""
    n = len(centers)
    if n < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    starts = np.flatnonzero(np.r_[True, centers[1:] != centers[:-1]])
    counts = np.diff(np.r_[starts, n])
    block_end = np.repeat(starts + counts, counts)  # one past the last entry of p's block
    positions = np.arange(n, dtype=np.int64)
    partners = block_end - positions - 1  # how many q > p share p's centre
    total = int(partners.sum())
    first = np.repeat(positions, partners)
    # second = first + 1 + (rank within the run of equal `first`)
    run_starts = np.cumsum(partners) - partners
    rank = np.arange(total, dtype=np.int64) - np.repeat(run_starts, partners)
    second = first + 1 + rank
    return first, second
