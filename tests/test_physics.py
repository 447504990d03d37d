"""Forces, stress and symmetries of the full model (random weights)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from scipy.spatial.transform import Rotation


def _random_structure(symbols: str, cell, seed: int, pbc=True, min_dist: float = 0.9) -> Atoms:
    rng = np.random.default_rng(seed)
    n = len(Atoms(symbols))
    cell = np.asarray(cell, dtype=float)
    for _ in range(1000):
        atoms = Atoms(symbols, scaled_positions=rng.random((n, 3)), cell=cell, pbc=pbc)
        d = atoms.get_all_distances(mic=bool(np.all(pbc)))
        if n == 1 or d[np.triu_indices(n, 1)].min() > min_dist:
            return atoms
    raise RuntimeError("could not place atoms")


def _energy(pot, atoms) -> float:
    return pot.evaluate([atoms], forces=False, stress=False)[0].energy


STRUCTURES = {
    "triclinic": ("H2O4H3O", [[4.4, 0.3, -0.2], [0.6, 4.1, 0.1], [-0.3, 0.4, 4.6]], True),
    "cluster": ("OH2OH2O", [[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]], False),
    "slab": ("H3O3", [[3.6, 0, 0], [1.0, 3.9, 0], [0, 0, 6.0]], (True, True, False)),
}


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_forces_match_finite_differences(binary_potential, name):
    symbols, cell, pbc = STRUCTURES[name]
    atoms = _random_structure(symbols, cell, seed=11, pbc=pbc)
    pred = binary_potential.evaluate([atoms])[0]
    h = 1e-5
    fd = np.zeros_like(atoms.positions)
    for i in range(len(atoms)):
        for k in range(3):
            a = atoms.copy()
            a.positions[i, k] += h
            ep = _energy(binary_potential, a)
            a.positions[i, k] -= 2 * h
            em = _energy(binary_potential, a)
            fd[i, k] = -(ep - em) / (2 * h)
    scale = np.abs(fd).max()
    assert scale > 1e-2
    assert np.abs(pred.forces - fd).max() / scale < 1e-7
    # the sum of forces vanishes (translation invariance)
    assert np.abs(pred.forces.sum(0)).max() < 1e-10 * scale * len(atoms)


@pytest.mark.parametrize("seed", [0, 1])
def test_stress_matches_strain_derivative(ternary_potential, seed):
    pot = ternary_potential
    atoms = _random_structure(
        "CNCuCuNC", [[3.9, 0.2, 0.1], [0.5, 4.2, -0.3], [0.2, 0.1, 3.7]], seed=seed, min_dist=1.1
    )
    pred = pot.evaluate([atoms])[0]
    h = 1e-6
    fd = np.zeros((3, 3))
    for a_ in range(3):
        for b_ in range(3):
            eps = np.zeros((3, 3))
            eps[a_, b_] = h
            ep, em = atoms.copy(), atoms.copy()
            ep.set_cell(atoms.cell @ (np.eye(3) + eps), scale_atoms=True)
            em.set_cell(atoms.cell @ (np.eye(3) - eps), scale_atoms=True)
            fd[a_, b_] = (_energy(pot, ep) - _energy(pot, em)) / (2 * h)
    fd = 0.5 * (fd + fd.T) / atoms.get_volume()
    scale = np.abs(fd).max()
    assert scale > 1e-3
    assert np.abs(pred.stress - fd).max() / scale < 1e-7


def test_virial_of_cluster_equals_sum_of_position_times_force(binary_potential):
    atoms = _random_structure("OH2OH2O", np.eye(3) * 5.0, seed=4, pbc=False)
    pred = binary_potential.evaluate([atoms])[0]
    w = np.einsum("ia,ib->ab", atoms.positions, pred.forces)
    np.testing.assert_allclose(pred.virial, 0.5 * (w + w.T), atol=1e-11)
    assert pred.stress is None


def test_invariances(ternary_potential):
    pot = ternary_potential
    cell = np.array([[4.3, 0.1, 0.0], [0.4, 4.0, 0.2], [-0.1, 0.3, 4.4]])
    atoms = _random_structure("CuCNCuCNNC", cell, seed=7, min_dist=1.0)
    ref = pot.evaluate([atoms])[0]
    scale = abs(ref.energy)
    # rotation of positions and cell together
    rot = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell @ rot.T, scale_atoms=False)
    rotated.positions = atoms.positions @ rot.T
    r = pot.evaluate([rotated])[0]
    assert abs(r.energy - ref.energy) < 1e-12 * scale
    np.testing.assert_allclose(r.forces, ref.forces @ rot.T, atol=1e-11)
    np.testing.assert_allclose(r.stress, rot @ ref.stress @ rot.T, atol=1e-12)
    # translation, and a different periodic image of every atom
    moved = atoms.copy()
    moved.positions += np.array([0.37, -1.9, 12.4])
    shifts = np.random.default_rng(1).integers(-2, 3, size=(len(atoms), 3))
    moved.positions += shifts @ atoms.cell.array
    m = pot.evaluate([moved])[0]
    assert abs(m.energy - ref.energy) < 1e-12 * scale
    np.testing.assert_allclose(m.forces, ref.forces, atol=1e-11)
    np.testing.assert_allclose(m.atomic_energies, ref.atomic_energies, atol=1e-12)
    # permutation of atoms (same-element atoms exchange labels)
    perm = np.random.default_rng(2).permutation(len(atoms))
    p = pot.evaluate([atoms[perm]])[0]
    assert abs(p.energy - ref.energy) < 1e-12 * scale
    np.testing.assert_allclose(p.forces, ref.forces[perm], atol=1e-11)


@pytest.mark.parametrize("reps", [(2, 1, 1), (2, 3, 1), (2, 2, 2)])
def test_supercell_energy_is_extensive(ternary_potential, reps):
    pot = ternary_potential
    atoms = _random_structure(
        "CuCNCuN", [[3.6, 0.2, 0], [0.5, 3.4, 0.1], [0, 0.3, 3.9]], seed=9, min_dist=1.0
    )
    ref = pot.evaluate([atoms])[0]
    sup = pot.evaluate([atoms.repeat(reps)])[0]
    n = int(np.prod(reps))
    assert abs(sup.energy - n * ref.energy) < 1e-11 * abs(n * ref.energy)
    np.testing.assert_allclose(sup.forces, np.tile(ref.forces, (n, 1)), atol=1e-11)
    np.testing.assert_allclose(sup.stress, ref.stress, atol=1e-12)


def test_cell_smaller_than_cutoff():
    """One-atom fcc cell (a = 2.5 Angstrom, 4.5 Angstrom cutoff: images of the atom
    itself are neighbours) equals the same crystal described by a large supercell."""
    from conftest import random_potential

    pot = random_potential(["Cu"], seed=3, rc=4.5)
    prim = bulk("Cu", "fcc", a=2.5)
    prim.positions += 0.1
    big = prim.repeat((4, 4, 4))
    e1 = pot.evaluate([prim])[0]
    e64 = pot.evaluate([big])[0]
    assert abs(e64.energy - 64 * e1.energy) < 1e-11 * abs(e64.energy)
    np.testing.assert_allclose(e64.stress, e1.stress, atol=1e-12)
    # a rattled primitive cell still has forces summing to zero and matching the supercell
    rattled = bulk("Cu", "fcc", a=2.5, cubic=True)
    rattled.rattle(0.2, seed=2)
    f_small = pot.evaluate([rattled])[0].forces
    f_big = pot.evaluate([rattled.repeat((3, 3, 3))])[0].forces
    np.testing.assert_allclose(f_big[: len(rattled)], f_small, atol=1e-11)
    assert np.abs(f_small).max() > 1e-4


def test_batched_equals_individual(binary_potential, ternary_potential):
    s1 = _random_structure("H2O4H3O", STRUCTURES["triclinic"][1], seed=1)
    s2 = _random_structure("OH2OH2O", np.eye(3) * 5, seed=2, pbc=False)
    s3 = _random_structure("H3O3", STRUCTURES["slab"][1], seed=3, pbc=(True, True, False))
    together = binary_potential.evaluate([s1, s2, s3])
    for s, t in zip([s1, s2, s3], together, strict=True):
        alone = binary_potential.evaluate([s])[0]
        assert t.energy == pytest.approx(alone.energy, rel=1e-14)
        np.testing.assert_allclose(t.forces, alone.forces, atol=1e-13)
    # batches split by max_batch_atoms give identical results
    split = binary_potential.evaluate([s1, s2, s3], max_batch_atoms=5)
    for a, b in zip(together, split, strict=True):
        assert a.energy == pytest.approx(b.energy, rel=1e-14)


def test_per_atom_virials_sum_to_virial(ternary_potential):
    atoms = _random_structure(
        "CuCNCuN", [[3.6, 0.2, 0], [0.5, 3.4, 0.1], [0, 0.3, 3.9]], seed=12, min_dist=1.0
    )
    pred = ternary_potential.evaluate([atoms], atomic_virials=True)[0]
    total = pred.atomic_virials.sum(0)
    np.testing.assert_allclose(0.5 * (total + total.T), pred.virial, atol=1e-12)
    assert pred.atomic_energies.sum() == pytest.approx(pred.energy, rel=1e-14)
