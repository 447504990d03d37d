"""Neighbour lists against brute force over periodic images."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from nnmd_lammps.descriptors import neighbor_pairs, triplets_of
from nnmd_lammps.errors import NNMDError

from reference import neighbours_ref

CASES = {
    "triclinic_small": ([[1.9, 0, 0], [0.8, 2.1, 0], [-0.5, 0.4, 2.3]], (True, True, True), 5),
    "mixed_pbc": ([[2.5, 0, 0], [0.3, 2.8, 0], [0, 0, 9.0]], (True, False, True), 4),
    "cluster": ([[0, 0, 0], [0, 0, 0], [0, 0, 0]], (False, False, False), 6),
    "one_atom": ([[2.0, 0.1, 0], [0.2, 2.2, 0], [0, 0.3, 1.8]], (True, True, True), 1),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_pairs_match_brute_force(name):
    cell, pbc, n = CASES[name]
    rng = np.random.default_rng(len(name))
    cell = np.array(cell, dtype=float)
    if np.any(pbc):
        pos = rng.random((n, 3)) @ cell + rng.normal(0, 3, (n, 3))  # also outside the cell
    else:
        pos = rng.random((n, 3)) * 4.0
    atoms = Atoms(f"H{n}", positions=pos, cell=cell, pbc=pbc)
    rc = 4.1
    pl = neighbor_pairs([atoms], rc)
    d = pos[pl.neighbors] - pos[pl.centers] + pl.shifts @ cell
    got = sorted(
        (int(i), int(j), *np.round(v, 9))
        for i, j, v in zip(pl.centers, pl.neighbors, d, strict=True)
    )
    ref = sorted(
        (i, j, *np.round(v, 9))
        for i, lst in enumerate(neighbours_ref(pos, cell, pbc, rc))
        for j, v in lst
    )
    assert len(got) == len(ref) > 0
    for a, b in zip(got, ref, strict=True):
        assert a[:2] == b[:2]
        np.testing.assert_allclose(a[2:], b[2:], atol=1e-8)


def test_batch_offsets():
    a = Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]])
    b = Atoms("H3", positions=[[0, 0, 0], [0, 1, 0], [0, 0, 1.2]])
    pl = neighbor_pairs([a, b], 2.0)
    assert set(pl.structure.tolist()) == {0, 1}
    assert set(pl.centers[pl.structure == 1].tolist()) == {2, 3, 4}
    assert len(pl.centers) == 2 + 6


def test_triplets_of():
    centers = np.array([0, 0, 0, 2, 2, 5, 7, 7, 7, 7])
    first, second = triplets_of(centers)
    got = sorted(zip(first.tolist(), second.tolist(), strict=True))
    expect = sorted(
        (p, q)
        for p in range(len(centers))
        for q in range(p + 1, len(centers))
        if centers[p] == centers[q]
    )
    assert got == expect
    assert len(triplets_of(np.array([3]))[0]) == 0


def test_non_finite_positions_rejected():
    atoms = Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]])
    with pytest.raises(NNMDError, match="non-finite"):
        neighbor_pairs([atoms], 3.0)


def test_degenerate_periodic_cell_rejected():
    atoms = Atoms("H", positions=[[0, 0, 0]], cell=[[1, 0, 0], [2, 0, 0], [0, 0, 1]], pbc=True)
    with pytest.raises(NNMDError, match="linearly dependent"):
        neighbor_pairs([atoms], 3.0)
