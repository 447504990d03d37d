"""Symmetry functions and cutoff functions against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms

from nnmd_lammps.descriptors import (
    DescriptorCalculator,
    DescriptorSpec,
    SymmetryFunction,
    cutoff_function,
)
from nnmd_lammps.model import make_batch

from conftest import mixed_functions
from reference import fc_ref, g_ref

CUTOFF_TYPES = range(9)


@pytest.mark.parametrize("ctype", CUTOFF_TYPES)
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_cutoff_values_and_derivatives(ctype, alpha):
    rc = 5.0
    r = torch.linspace(0.05, 6.0, 400, dtype=torch.float64)
    f, df = cutoff_function(r, rc, ctype, alpha)
    ref = torch.tensor([fc_ref(float(x), rc, ctype, alpha) for x in r], dtype=torch.float64)
    # atol: Horner evaluation of POLY4 near x = 1 cancels terms of size ~500 (n2p2 does the same)
    assert torch.allclose(f, ref, rtol=1e-13, atol=1e-13)
    # derivative against central differences of the reference
    h = 1e-6
    fd = torch.tensor(
        [
            (fc_ref(float(x) + h, rc, ctype, alpha) - fc_ref(float(x) - h, rc, ctype, alpha))
            / (2 * h)
            for x in r
        ],
        dtype=torch.float64,
    )
    rci = alpha * rc if ctype not in (2, 3) else -1.0
    smooth = ((r - rc).abs() > 1e-3) & ((r - rci).abs() > 1e-3)
    assert torch.allclose(df[smooth], fd[smooth], rtol=1e-6, atol=1e-8)
    assert float(f[r >= rc].abs().max()) == 0.0


def test_cutoff_hand_values():
    """A few values worked out by hand."""
    rc = 4.0
    r = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    cos = cutoff_function(r, rc, 1)[0]
    assert cos.tolist() == pytest.approx(
        [0.5 * (math.cos(math.pi / 4) + 1), 0.5, 0.5 * (math.cos(3 * math.pi / 4) + 1)], rel=1e-15
    )
    # poly2 at x = 1/2: ((15 - 3) / 2 - 10) / 8 + 1 = 1/2
    assert float(cutoff_function(torch.tensor([2.0], dtype=torch.float64), rc, 6)[0]) == 0.5
    # poly1 with alpha = 0.5: inner region is 1, x = (3 - 2) / 2 = 1/2 -> 1/2
    p = cutoff_function(torch.tensor([1.0, 3.0], dtype=torch.float64), rc, 5, 0.5)[0]
    assert p.tolist() == [1.0, 0.5]
    # tanh (normalised) equals 1 at r = 0
    assert float(
        cutoff_function(torch.tensor([0.0], dtype=torch.float64), rc, 3)[0]
    ) == pytest.approx(1.0, rel=1e-15)


def _descriptors(atoms_list, spec):
    calc = DescriptorCalculator(spec)
    batch = make_batch(atoms_list, spec.elements, spec.cutoff)
    desc = calc.compute(batch.species, batch.centers, batch.neighbors, batch.vectors)
    return batch, desc


def _as_rows(desc, n):
    rows = [None] * n
    for e in range(len(desc.G)):
        for k, a in enumerate(desc.atoms[e].tolist()):
            rows[a] = desc.G[e][k].tolist()
    return rows


def _functions_as_dicts(spec):
    return {e: [sf.to_dict() for sf in fs] for e, fs in spec.functions.items()}


CLUSTERS = {
    "triangle": Atoms("HHO", positions=[[0, 0, 0], [1.1, 0.2, 0], [0.3, 1.3, 0.4]]),
    "tetra": Atoms(
        "OHHO", positions=[[0, 0, 0], [0.96, 0, 0.1], [-0.3, 0.9, -0.2], [1.2, 1.9, 1.1]]
    ),
}


@pytest.mark.parametrize("name", sorted(CLUSTERS))
@pytest.mark.parametrize("ctype", CUTOFF_TYPES)
def test_clusters_against_reference(name, ctype):
    atoms = CLUSTERS[name]
    alpha = 0.25 if ctype in (1, 4, 5, 6, 7, 8) else 0.0
    spec = DescriptorSpec(["H", "O"], mixed_functions(["H", "O"], 2.8, ctype, alpha))
    _, desc = _descriptors([atoms], spec)
    got = _as_rows(desc, len(atoms))
    ref = g_ref(
        atoms.get_chemical_symbols(),
        atoms.positions,
        np.zeros((3, 3)),
        [False] * 3,
        _functions_as_dicts(spec),
    )
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-14)
    assert max(abs(x) for row in ref for x in row) > 0.1  # the check is not vacuous


def test_equilateral_triangle_closed_form():
    """Three identical atoms at distance d: every angle is 60 degrees, so
    G3 = 2^(1-z) (1 + l/2)^z exp(-3 eta d^2) fc(d)^3 (one triplet per atom) and
    G9 = 2^(1-z) (1 + l/2)^z exp(-2 eta d^2) fc(d)^2."""
    d, rc, eta = 1.5, 4.0, 0.3
    atoms = Atoms("Ar3", positions=[[0, 0, 0], [d, 0, 0], [d / 2, d * math.sqrt(3) / 2, 0]])
    fns = []
    for t in (3, 9):
        for lam, zeta in ((1.0, 1.0), (-1.0, 2.0), (1.0, 3.5)):
            fns.append(SymmetryFunction(t, "Ar", ("Ar", "Ar"), eta, rc, 0.0, lam, zeta, 1))
    fns.append(SymmetryFunction(2, "Ar", ("Ar",), eta, rc, 0.0, cutoff_type=1))
    spec = DescriptorSpec(["Ar"], {"Ar": fns})
    _, desc = _descriptors([atoms], spec)
    fc = 0.5 * (math.cos(math.pi * d / rc) + 1)
    expect = []
    for t in (3, 9):
        for lam, zeta in ((1.0, 1.0), (-1.0, 2.0), (1.0, 3.5)):
            n = 3 if t == 3 else 2
            expect.append(
                2 ** (1 - zeta) * (1 + lam / 2) ** zeta * math.exp(-n * eta * d * d) * fc**n
            )
    expect.append(2 * math.exp(-eta * d * d) * fc)
    for row in desc.G[0].tolist():
        assert row == pytest.approx(expect, rel=1e-14)


def test_narrow_angular_needs_rjk_within_cutoff():
    """Type 3 drops a triplet when r_jk >= rc, type 9 keeps it."""
    rc = 2.0
    atoms = Atoms("Ne3", positions=[[0, 0, 0], [1.5, 0, 0], [-1.5, 0, 0]])  # r_jk = 3 > rc
    fns = [
        SymmetryFunction(3, "Ne", ("Ne", "Ne"), 0.0, rc, 0.0, -1.0, 1.0, 1),
        SymmetryFunction(9, "Ne", ("Ne", "Ne"), 0.0, rc, 0.0, -1.0, 1.0, 1),
    ]
    _, desc = _descriptors([atoms], DescriptorSpec(["Ne"], {"Ne": fns}))
    g_center = desc.G[0][0].tolist()
    fc = 0.5 * (math.cos(math.pi * 1.5 / rc) + 1)
    assert g_center[0] == 0.0
    assert g_center[1] == pytest.approx(2.0 * fc * fc, rel=1e-14)  # cos = -1, lambda = -1


@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True)])
def test_small_triclinic_cell_against_brute_force(pbc):
    """A 3-atom triclinic cell much smaller than the cutoff (many images of each atom,
    including images of the centre itself)."""
    cell = np.array([[2.1, 0.0, 0.0], [0.7, 2.3, 0.0], [-0.4, 0.5, 2.2]])
    rng = np.random.default_rng(3)
    atoms = Atoms("HOH", scaled_positions=rng.random((3, 3)), cell=cell, pbc=pbc)
    spec = DescriptorSpec(["H", "O"], mixed_functions(["H", "O"], 3.2, 2))
    _, desc = _descriptors([atoms], spec)
    got = _as_rows(desc, 3)
    ref = g_ref(atoms.get_chemical_symbols(), atoms.positions, cell, pbc, _functions_as_dicts(spec))
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-11, atol=1e-13)


def test_analytic_derivatives_match_autograd(ternary_potential):
    """dG/dd from the analytic formulas equals autograd through the G evaluation."""
    rng = np.random.default_rng(5)
    cell = np.array([[4.0, 0.3, 0.0], [0.0, 3.8, 0.2], [0.5, 0.0, 4.2]])
    atoms = Atoms("CNCuCNCu", scaled_positions=rng.random((6, 3)), cell=cell, pbc=True)
    pot = ternary_potential
    batch = make_batch([atoms], pot.elements, pot.cutoff)
    vec = batch.vectors.clone().requires_grad_(True)
    desc = pot.calculator.compute(batch.species, batch.centers, batch.neighbors, vec)
    checked = 0
    for e in range(len(pot.elements)):
        G, dG, idx = desc.G[e], desc.dGdd[e], desc.pair_index[e]
        for s in range(G.shape[1]):
            (grad,) = torch.autograd.grad(G[:, s].sum(), vec, retain_graph=True)
            np.testing.assert_allclose(
                dG[:, s].detach().numpy(), grad[idx].numpy(), rtol=1e-10, atol=1e-12
            )
            outside = torch.ones(len(vec), dtype=torch.bool)
            outside[idx] = False
            outside &= batch.species[batch.centers] == e
            assert float(grad[outside].abs().sum()) == 0.0
            checked += int((grad[idx].abs() > 1e-8).sum())
    assert checked > 1000
