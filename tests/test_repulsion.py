"""The ZBL repulsion baseline (python/nnmd_lammps/model/repulsion.py).

References: LAMMPS's own ``pair_style zbl`` (run in a subprocess), an independent NumPy
implementation of the ZBL formula whose switching coefficients are solved from their
defining conditions, finite differences, and a direct double loop over atoms and periodic
images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.data import atomic_numbers as ATOMIC_NUMBERS

from nnmd_lammps.descriptors.neighbors import neighbor_pairs
from nnmd_lammps.errors import NNMDError
from nnmd_lammps.interop.lammps import boundary_of, lammps_frame, run_lammps, write_lammps_data
from nnmd_lammps.model.repulsion import (
    RepulsionTerms,
    ZBLRepulsion,
    default_zbl_radii,
    zbl_pair,
)

F64 = torch.float64

# -- an independent reference of the pair energy -----------------------------------------------

# The published ZBL universal potential (Ziegler, Biersack, Littmark 1985) with LAMMPS's
# metal-unit Coulomb constant; written out here on purpose, not imported.
_K = 14.399645
_AMPS = np.array([0.02817, 0.28022, 0.50986, 0.18175])
_DECAYS = np.array([0.20162, 0.40290, 0.94229, 3.19980])


def _phi_derivs(r, z1: float, z2: float) -> list[np.ndarray]:
    """phi, phi', phi'' of the bare screened Coulomb energy, term by term."""
    r = np.asarray(r, dtype=np.float64)[..., None]
    b = _DECAYS * (z1**0.23 + z2**0.23) / 0.46850
    ex = _AMPS * np.exp(-b * r)
    zz = _K * z1 * z2
    phi = zz * (ex / r).sum(-1)
    dphi = zz * (ex * (-b / r - 1.0 / r**2)).sum(-1)
    d2phi = zz * (ex * (b**2 / r + 2.0 * b / r**2 + 2.0 / r**3)).sum(-1)
    return [phi, dphi, d2phi]


def reference_pair(r, z1: float, z2: float, inner: float, outer: float):
    """E(r) and dE/dr of ``pair_style zbl inner outer`` as its documentation defines it:
    phi(r) + S(r), S = C inside inner and C + A/3 t^3 + B/4 t^4 (t = r - inner) beyond,
    A, B, C chosen so that E, E', E'' vanish at outer (solved as a linear system here)."""
    tc = outer - inner
    f, fp, fpp = (float(x) for x in _phi_derivs(outer, z1, z2))
    # unknowns (A, B, C): S(outer) = -f, S'(outer) = -f', S''(outer) = -f''
    m = np.array(
        [[tc**3 / 3.0, tc**4 / 4.0, 1.0], [tc**2, tc**3, 0.0], [2.0 * tc, 3.0 * tc**2, 0.0]]
    )
    a, b, c = np.linalg.solve(m, -np.array([f, fp, fpp]))
    r = np.asarray(r, dtype=np.float64)
    phi, dphi, _ = _phi_derivs(r, z1, z2)
    t = np.where(r > inner, r - inner, 0.0)
    e = phi + c + a / 3.0 * t**3 + b / 4.0 * t**4
    de = dphi + a * t**2 + b * t**3
    inside = r < outer
    return np.where(inside, e, 0.0), np.where(inside, de, 0.0)


def _pair(r, z1, z2, inner, outer):
    e, de = zbl_pair(torch.as_tensor(r, dtype=F64), z1, z2, inner, outer)
    return e.numpy(), de.numpy()


def _close(mine: np.ndarray, ref: np.ndarray, rel: float, floor: np.ndarray | float) -> None:
    """|mine - ref| <= rel |ref| + floor, elementwise, with a readable failure."""
    err = np.abs(mine - ref)
    bound = rel * np.abs(ref) + floor
    worst = int(np.argmax(err / bound))
    assert np.all(err <= bound), f"entry {worst}: {mine[worst]!r} vs {ref[worst]!r}"


PAIRS = [  # (z1, z2, inner, outer)
    (29, 29, 1.1, 2.3),
    (1, 8, 0.45, 1.05),
    (8, 8, 0.3, 1.6),
    (1, 79, 0.7, 2.9),
]


def _grid(inner: float, outer: float) -> np.ndarray:
    special = [inner, inner * (1 + 1e-9), inner * (1 - 1e-9), outer * (1 - 1e-9), outer]
    special += [outer * (1 - 1e-4), outer * (1 + 1e-9), outer * 1.2]
    return np.sort(np.r_[np.linspace(0.2, outer * 1.1, 301), special])


@pytest.mark.parametrize(("z1", "z2", "inner", "outer"), PAIRS)
def test_pair_equals_independent_reference(z1, z2, inner, outer):
    r = _grid(inner, outer)
    e, de = _pair(r, z1, z2, inner, outer)
    e_ref, de_ref = reference_pair(r, z1, z2, inner, outer)
    # near outer E is a difference of O(phi(outer)) terms: allow their rounding
    scale = np.abs(_phi_derivs(outer, z1, z2)).max() * outer**2
    _close(e, e_ref, 1e-12, 1e-14 * scale)
    _close(de, de_ref, 1e-12, 1e-14 * scale)
    assert np.all(e[r >= outer] == 0.0) and np.all(de[r >= outer] == 0.0)
    # int and tensor atomic numbers, broadcast per pair, agree
    rt = torch.as_tensor(r, dtype=F64)
    e2, de2 = zbl_pair(rt, torch.full_like(rt, z1), torch.tensor(z2), inner, outer)
    assert torch.equal(e2, torch.as_tensor(e)) and torch.equal(de2, torch.as_tensor(de))
    e3, _ = zbl_pair(rt, z2, z1, inner, outer)  # symmetric in the two elements
    np.testing.assert_allclose(e3.numpy(), e, rtol=1e-14, atol=1e-14 * scale)


@pytest.mark.parametrize(("z1", "z2", "inner", "outer"), PAIRS)
def test_derivative_equals_finite_differences(z1, z2, inner, outer):
    """dE/dr against a central difference of E everywhere, including inside inner and
    with stencils that straddle inner and outer (E is C2 there)."""
    r = np.sort(
        np.r_[
            np.linspace(0.2, outer * 1.1, 97),
            inner + np.array([-1, -0.3, 0, 0.3, 1]) * 1e-6,
            outer + np.array([-1, -0.3, 0, 0.3, 1]) * 1e-6,
        ]
    )
    h = 1e-6  # truncation h^2 E'''/6 where E''' jumps (at inner and outer): < 1e-9
    _, de = _pair(r, z1, z2, inner, outer)
    e_plus, _ = _pair(r + h, z1, z2, inner, outer)
    e_minus, _ = _pair(r - h, z1, z2, inner, outer)
    fd = (e_plus - e_minus) / (2 * h)
    _close(de, fd, 1e-7, 1e-8)
    assert np.abs(de).max() > 100.0  # the scan reaches the steep part


@pytest.mark.parametrize(("z1", "z2", "inner", "outer"), PAIRS)
def test_smooth_at_inner_and_zero_at_outer(z1, z2, inner, outer):
    """E, dE/dr and d2E/dr2 (autograd) are continuous at inner and vanish at outer as
    delta^3, delta^2 and delta (delta = outer - r)."""

    def values(r):
        rt = torch.tensor(r, dtype=F64, requires_grad=True)
        e, de = zbl_pair(rt, z1, z2, inner, outer)
        (d2e,) = torch.autograd.grad(de.sum(), rt)
        return e.detach().numpy(), de.detach().numpy(), d2e.numpy()

    # rows E, E', E''; columns just below and just above inner
    sides = np.stack(values([inner * (1 - 1e-12), inner * (1 + 1e-12)]))
    scale = np.abs(np.stack(values([inner]))).max()
    np.testing.assert_allclose(sides[:, 0], sides[:, 1], rtol=0, atol=1e-9 * scale)

    # d2E/dr2 from autograd equals a central difference of dE/dr on either side of inner
    for r0 in (inner * 0.9, inner * 1.1, 0.5 * (inner + outer)):
        _, _, d2 = values([r0])
        _, de_p, _ = values([r0 + 1e-6])
        _, de_m, _ = values([r0 - 1e-6])
        assert d2[0] == pytest.approx((de_p[0] - de_m[0]) / 2e-6, rel=1e-6, abs=1e-6)

    deltas = np.array([1e-2, 1e-3, 1e-4]) * (outer - inner)
    e, de, d2e = values(list(outer - deltas))
    for val, power in ((e, 3), (de, 2), (d2e, 1)):
        ratio = val / deltas**power  # tends to a constant: the order of the zero
        assert np.all(np.abs(val[1:]) < np.abs(val[:-1]))
        assert ratio[2] == pytest.approx(ratio[1], rel=2e-2)
    assert np.all(np.stack(values([outer, outer * 1.5, 10.0])) == 0.0)


@pytest.mark.parametrize(("z1", "z2", "inner", "outer"), PAIRS)
def test_dimer_strictly_repulsive_up_to_inner(z1, z2, inner, outer):
    r = np.linspace(0.2, inner, 5001)
    e, de = _pair(r, z1, z2, inner, outer)
    assert np.all(np.diff(e) < 0) and np.all(de < 0)


@pytest.mark.parametrize(("s1", "s2", "shortest"), [("Cu", "Cu", 2.2), ("H", "O", 0.9)])
def test_default_radii_repulsive_below_training_range(s1, s2, shortest):
    """With the default radii the dimer energy is positive and strictly decreasing from
    0.2 Angstrom to the shortest training distance, and exactly 0 from there on."""
    inner, outer = default_zbl_radii(shortest)
    assert (inner, outer) == (0.5 * shortest, shortest)
    z1, z2 = ATOMIC_NUMBERS[s1], ATOMIC_NUMBERS[s2]
    r = np.linspace(0.2, outer, 4001)[:-1]
    e, de = _pair(r, z1, z2, inner, outer)
    assert np.all(e > 0) and np.all(np.diff(e) < 0) and np.all(de < 0)
    e_out, de_out = _pair(np.array([outer, outer + 0.5]), z1, z2, inner, outer)
    assert np.all(e_out == 0) and np.all(de_out == 0)


# -- ZBLRepulsion.evaluate on periodic structures -------------------------------------------------


def _random_structure(symbols: str, cell, pbc, seed: int, min_dist: float) -> Atoms:
    rng = np.random.default_rng(seed)
    n = len(Atoms(symbols))
    for _ in range(5000):
        atoms = Atoms(symbols, scaled_positions=rng.random((n, 3)), cell=cell, pbc=pbc)
        d = atoms.get_all_distances(mic=True)
        if n == 1 or d[np.triu_indices(n, 1)].min() > min_dist:
            return atoms
    raise RuntimeError("could not place atoms")


STRUCTURES = [  # (symbols, cell, smallest distance); the second cell is so small that
    # atoms meet their own periodic images within outer
    ("HOCuCu2O2H", [[4.1, 0.0, 0.0], [1.1, 3.8, 0.0], [-0.7, 0.9, 4.3]], 0.8),
    ("CuOH", [[2.15, 0.0, 0.0], [0.5, 2.6, 0.0], [0.3, -0.4, 3.0]], 0.8),
]
SEEDS = (11, 2)  # placements with pairs inside inner, between inner and outer, and beyond
RADII = (0.9, 2.4)


def _evaluate(structures: list[Atoms], rep: ZBLRepulsion, **kwargs) -> RepulsionTerms:
    pairs = neighbor_pairs(structures, rep.outer)
    pos = np.concatenate([a.get_positions() for a in structures])
    cells = np.stack([np.asarray(a.get_cell()) for a in structures])
    d = (
        pos[pairs.neighbors]
        + np.einsum("pk,pkl->pl", pairs.shifts, cells[pairs.structure])
        - pos[pairs.centers]
    )
    z = np.concatenate([a.get_atomic_numbers() for a in structures])
    return rep.evaluate(
        torch.from_numpy(z),
        torch.from_numpy(pairs.centers),
        torch.from_numpy(pairs.neighbors),
        torch.from_numpy(d),
        len(pos),
        virial_rows=torch.from_numpy(pairs.structure),
        n_virial_rows=len(structures),
        **kwargs,
    )


def _direct_energy(atoms: Atoms, inner: float, outer: float) -> float:
    """1/2 sum over atoms i, j and lattice images S ((i, S) != (j, 0)) of E(r), with the
    NumPy reference pair energy."""
    cell = np.asarray(atoms.get_cell())
    pos = atoms.get_positions()
    z = atoms.get_atomic_numbers()
    # image range: enough translations along each vector to cover outer
    heights = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)
    n = np.ceil(outer / heights).astype(int) + 1
    grid = np.stack(
        np.meshgrid(*[np.arange(-k, k + 1) for k in n], indexing="ij"), axis=-1
    ).reshape(-1, 3)
    images = grid @ cell
    total = 0.0
    for i in range(len(atoms)):
        for j in range(len(atoms)):
            r = np.linalg.norm(pos[j] + images - pos[i], axis=1)
            if i == j:
                r = r[np.any(grid != 0, axis=1)]
            e, _ = reference_pair(r, float(z[i]), float(z[j]), inner, outer)
            total += 0.5 * e.sum()
    return total


def _strained(atoms: Atoms, eps: np.ndarray) -> Atoms:
    new = atoms.copy()
    m = np.eye(3) + eps
    new.set_cell(np.asarray(atoms.get_cell()) @ m.T, scale_atoms=False)
    new.positions = atoms.positions @ m.T
    return new


@pytest.mark.parametrize("k", range(len(STRUCTURES)))
def test_evaluate_periodic_triclinic(k):
    symbols, cell, min_dist = STRUCTURES[k]
    atoms = _random_structure(symbols, cell, True, seed=SEEDS[k], min_dist=min_dist)
    rep = ZBLRepulsion(*RADII)
    res = _evaluate([atoms], rep, atom_virial=True)
    energy = float(res.energies.sum())

    # pairs inside inner and in the switching region; in the small cell self-images
    inner, outer = RADII
    r = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)]
    assert r.min() < inner and np.any((r > inner) & (r < outer))
    assert k == 0 or np.linalg.norm(atoms.get_cell(), axis=1).min() < outer

    # the energy: a direct double loop over atoms and images
    e_ref = _direct_energy(atoms, *RADII)
    assert energy == pytest.approx(e_ref, rel=1e-12)

    # forces: -dE/dr_k by central differences (neighbour list rebuilt every time)
    h = 1e-5
    fd = np.zeros((len(atoms), 3))
    for a in range(len(atoms)):
        for c in range(3):
            e_pm = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[a, c] += sign * h
                e_pm.append(float(_evaluate([moved], rep).energies.sum()))
            fd[a, c] = -(e_pm[0] - e_pm[1]) / (2 * h)
    forces = res.forces.numpy()
    assert np.abs(forces).max() > 1.0
    np.testing.assert_allclose(forces, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())
    np.testing.assert_allclose(forces.sum(0), 0.0, atol=1e-10 * np.abs(forces).max())

    # virial: W = -(dE/d eps)^T by central differences of a homogeneous strain
    dw = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = h
            e_p = float(_evaluate([_strained(atoms, eps)], rep).energies.sum())
            e_m = float(_evaluate([_strained(atoms, -eps)], rep).energies.sum())
            dw[a, b] = (e_p - e_m) / (2 * h)
    w = res.virial.numpy()[0]
    np.testing.assert_allclose(w, -dw.T, rtol=1e-6, atol=1e-6 * np.abs(dw).max())
    np.testing.assert_allclose(w, w.T, atol=1e-12 * np.abs(w).max())
    np.testing.assert_allclose(res.atom_virial.numpy().sum(0), w, atol=1e-12 * np.abs(w).max())


def test_evaluate_batches_structures_into_virial_rows():
    """Two structures in one call: per-structure virials go to their rows; energies,
    forces and virials equal the structures evaluated one by one."""
    rep = ZBLRepulsion(*RADII)
    structs = [
        _random_structure(s, c, True, seed=3 + k, min_dist=m)
        for k, (s, c, m) in enumerate(STRUCTURES)
    ]
    both = _evaluate(structs, rep)
    n0 = len(structs[0])
    for k, atoms in enumerate(structs):
        one = _evaluate([atoms], rep)
        part = slice(0, n0) if k == 0 else slice(n0, None)
        assert torch.allclose(both.energies[part], one.energies, rtol=1e-14, atol=0)
        assert torch.allclose(both.forces[part], one.forces, rtol=1e-13, atol=1e-13)
        assert torch.allclose(both.virial[k], one.virial[0], rtol=1e-13, atol=1e-13)
    assert both.atom_virial is None


def test_evaluate_is_differentiable_and_leaves_inputs_alone():
    symbols, cell, min_dist = STRUCTURES[0]
    atoms = _random_structure(symbols, cell, True, seed=5, min_dist=min_dist)
    rep = ZBLRepulsion(*RADII)
    pairs = neighbor_pairs([atoms], rep.outer)
    pos = torch.tensor(atoms.get_positions(), dtype=F64, requires_grad=True)
    shift = torch.from_numpy(pairs.shifts @ np.asarray(atoms.get_cell()))
    i, j = torch.from_numpy(pairs.centers), torch.from_numpy(pairs.neighbors)
    d = pos[j] + shift - pos[i]
    d_copy = d.detach().clone()
    z = torch.from_numpy(atoms.get_atomic_numbers())
    res = rep.evaluate(z, i, j, d, len(atoms), virial_rows=i, n_virial_rows=len(atoms))
    assert torch.equal(d.detach(), d_copy)
    (grad,) = torch.autograd.grad(res.energies.sum(), pos, create_graph=True)
    torch.testing.assert_close(-grad, res.forces, rtol=1e-12, atol=1e-12)
    # forces are differentiable too (force training, Hessians)
    (hess_row,) = torch.autograd.grad(res.forces[0, 0], pos)
    assert torch.isfinite(hess_row).all() and hess_row.abs().max() > 0
    # per-atom virial rows sum to the structure's virial
    total = _evaluate([atoms], rep).virial[0]
    torch.testing.assert_close(res.virial.sum(0), total, rtol=1e-12, atol=1e-12)


def test_evaluate_without_close_pairs_is_zero():
    rep = ZBLRepulsion(0.5, 1.0)
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 1.5]], cell=np.eye(3) * 10, pbc=True)
    res = _evaluate([atoms], rep, atom_virial=True)
    assert not res.energies.any() and not res.forces.any() and not res.virial.any()
    assert not res.atom_virial.any()
    empty = torch.zeros(0, dtype=torch.int64)
    res = rep.evaluate(
        torch.tensor([29]), empty, empty, torch.zeros((0, 3), dtype=F64), 1, empty, 1
    )
    assert res.energies.shape == (1,) and res.virial.shape == (1, 3, 3)
    assert not res.energies.any()


# -- parameters and metadata -----------------------------------------------------------------


def test_metadata_round_trip():
    rep = ZBLRepulsion(1.1, 2)
    meta = rep.to_dict()
    assert meta == {"type": "zbl", "inner": 1.1, "outer": 2.0}
    assert ZBLRepulsion.from_dict(json.loads(json.dumps(meta))) == rep


@pytest.mark.parametrize(
    ("inner", "outer", "key"),
    [
        (0.0, 2.0, "repulsion.inner"),
        (-1.0, 2.0, "repulsion.inner"),
        (float("nan"), 2.0, "repulsion.inner"),
        ("1.0", 2.0, "repulsion.inner"),
        (True, 2.0, "repulsion.inner"),
        (1.0, float("inf"), "repulsion.outer"),
        (1.0, None, "repulsion.outer"),
        (1.0, -2.0, "repulsion.outer"),
        (2.0, 2.0, "repulsion.outer"),
        (2.5, 2.0, "repulsion.inner"),
    ],
)
def test_bad_radii_name_the_key(inner, outer, key):
    with pytest.raises(NNMDError, match=key.replace(".", r"\.")):
        ZBLRepulsion(inner, outer)
    with pytest.raises(NNMDError, match=key.replace(".", r"\.")):
        ZBLRepulsion.from_dict({"type": "zbl", "inner": inner, "outer": outer})


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ({"type": "lj", "inner": 1.0, "outer": 2.0}, r"repulsion\.type"),
        ({"inner": 1.0, "outer": 2.0}, r"repulsion\.type"),
        ({"type": "zbl", "inner": 1.0, "outer": 2.0, "cut": 3}, "unknown key.*cut"),
        ({"type": "zbl", "outer": 2.0}, r"repulsion\.inner"),
        ({"type": "zbl", "inner": 1.0}, r"repulsion\.outer"),
        ("zbl", "repulsion"),
    ],
)
def test_bad_metadata(meta, match):
    with pytest.raises(NNMDError, match=match):
        ZBLRepulsion.from_dict(meta)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "2"])
def test_default_radii_need_a_positive_distance(bad):
    with pytest.raises(NNMDError, match="shortest"):
        default_zbl_radii(bad)


def test_pair_rejects_bad_radii():
    r = torch.tensor([1.0], dtype=F64)
    for inner, outer in ((1.0, 1.0), (0.0, 1.0), (2.0, 1.0)):
        with pytest.raises(NNMDError, match="inner"):
            zbl_pair(r, 1, 1, inner, outer)


# -- LAMMPS's own pair_style zbl -------------------------------------------------------------


def _zbl_deck(data: Path, types: list[str], inner: float, outer: float, boundary: str):
    coeffs = []
    for a, sa in enumerate(types):
        for b in range(a, len(types)):
            za, zb = ATOMIC_NUMBERS[sa], ATOMIC_NUMBERS[types[b]]
            coeffs.append(f"pair_coeff {a + 1} {b + 1} {za} {zb}")
    return [
        "units metal",
        "atom_style atomic",
        "atom_modify map array",
        f"boundary {boundary}",
        f"read_data {data}",
        f"pair_style zbl {inner!r} {outer!r}",
        *coeffs,
        "neighbor 1.0 bin",
        "compute nnmd_pe all pe/atom",
        "compute nnmd_stress all stress/atom NULL virial",
        "compute nnmd_press all pressure NULL virial",
        "thermo_style custom step pe c_nnmd_press[*]",
        "thermo_modify format float %.15g",
        "run 0",
    ]


def _dimers(pair: tuple[str, str], distances: np.ndarray, spacing: float, seed: int) -> Atoms:
    """Isolated dimers on a grid (further apart than the cutoff), random orientations."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(len(distances) ** (1 / 3)))
    centres = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = []
    for r, c in zip(distances, centres * spacing, strict=False):
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        pos += [c - 0.5 * r * u, c + 0.5 * r * u]
    return Atoms(pair * len(distances), positions=pos)


@pytest.mark.lammps
@pytest.mark.parametrize(
    ("pair", "types", "inner", "outer"),
    [(("Cu", "Cu"), ["Cu"], 1.1, 2.3), (("H", "O"), ["O", "H"], 0.45, 1.05)],
)
def test_dimers_equal_lammps_pair_zbl(tmp_path, pair, types, inner, outer):
    """Dimers from 0.2 Angstrom to beyond outer, through the switching region; LAMMPS's
    per-atom energies and forces against zbl_pair at LAMMPS's own coordinates."""
    distances = np.r_[
        np.linspace(0.2, 1.15 * outer, 53),
        [inner, inner + 1e-7, inner - 1e-7, outer - 1e-3, outer - 1e-7, outer + 1e-7],
    ]
    atoms = _dimers(pair, distances, spacing=outer + 3.0, seed=len(types))
    data = tmp_path / "dimers.data"
    write_lammps_data(data, lammps_frame(atoms), types)
    res = run_lammps(_zbl_deck(data, types, inner, outer, "s s s"), tmp_path)
    x = res.positions.reshape(-1, 2, 3)
    f = res.forces.reshape(-1, 2, 3)
    d = x[:, 1] - x[:, 0]
    r = np.linalg.norm(d, axis=1)
    u = d / r[:, None]
    z1, z2 = ATOMIC_NUMBERS[pair[0]], ATOMIC_NUMBERS[pair[1]]
    e, de = _pair(r, z1, z2, inner, outer)
    e_lmp = res.atomic_energies.reshape(-1, 2).sum(1)
    de_lmp = -np.einsum("pk,pk->p", f[:, 1], u)
    # rounding of the O(phi(outer)) terms that cancel near outer
    floor = 1e-14 * np.abs(_phi_derivs(outer, z1, z2)).max() * outer**2
    _close(e, e_lmp, 1e-10, floor)
    _close(de, de_lmp, 1e-10, floor)
    np.testing.assert_allclose(f[:, 0], -f[:, 1], rtol=0, atol=1e-12 * np.abs(f).max())
    np.testing.assert_allclose(f[:, 1], -de[:, None] * u, rtol=1e-10, atol=floor)
    assert res.pe == pytest.approx(e.sum(), rel=1e-12)
    assert np.all(e_lmp[r >= outer] == 0) and np.all(e_lmp[r < outer - 1e-4] > 0)
    assert np.count_nonzero(r < inner) > 10 and np.count_nonzero((r > inner) & (r < outer)) > 10


def _voigt(m: np.ndarray) -> np.ndarray:
    return np.stack(
        [m[..., 0, 0], m[..., 1, 1], m[..., 2, 2], m[..., 0, 1], m[..., 0, 2], m[..., 1, 2]],
        axis=-1,
    )


@pytest.mark.lammps
@pytest.mark.parametrize("k", range(len(STRUCTURES)))
def test_evaluate_equals_lammps_on_periodic_structure(tmp_path, k):
    """Energies, forces, global and per-atom virials of periodic triclinic three-element
    structures: ZBLRepulsion.evaluate against pair_style zbl."""
    symbols, cell, min_dist = STRUCTURES[k]
    atoms = _random_structure(symbols, cell, True, seed=SEEDS[k], min_dist=min_dist)
    frame = lammps_frame(atoms)
    types = ["Cu", "H", "O"]
    data = tmp_path / "s.data"
    write_lammps_data(data, frame, types)
    res = run_lammps(_zbl_deck(data, types, *RADII, boundary_of(frame)), tmp_path)
    mine = frame.copy()
    mine.positions = res.positions
    out = _evaluate([mine], ZBLRepulsion(*RADII), atom_virial=True)
    e = out.energies.numpy()
    assert res.pe == pytest.approx(e.sum(), rel=1e-12)
    np.testing.assert_allclose(res.atomic_energies, e, rtol=1e-11, atol=1e-12)
    fmax = np.abs(res.forces).max()
    np.testing.assert_allclose(out.forces.numpy(), res.forces, rtol=0, atol=1e-11 * fmax)
    w = _voigt(out.virial.numpy()[0])
    scale = np.abs(w).max()
    np.testing.assert_allclose(w, res.virial, rtol=0, atol=1e-8 * scale)
    np.testing.assert_allclose(
        _voigt(out.atom_virial.numpy()), res.atomic_virials, rtol=0, atol=1e-8 * scale
    )
    assert fmax > 1.0 and scale > 1.0
