"""The C++ symmetry-function kernels as PyTorch operators (python/nnmd_lammps/descriptors/
ops.py, lammps_plugin/torch_ops/ops.cpp): G against the independent oracle
tests/reference.py for every cutoff type and function type, the contraction (forces,
virial) against finite differences of the oracle, the autograd formulas by gradcheck,
the operators' own identities (Jacobian, adjoint, several vectors, cache, threads), the
torch fallback equal to the operators, and the fallback (with one warning) when the
library is missing."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from nnmd_lammps.descriptors import (
    DescriptorCalculator,
    DescriptorSpec,
    SymmetryFunction,
    forces_and_virial,
    ops,
)
from nnmd_lammps.descriptors.contraction import member_forces
from nnmd_lammps.errors import NNMDError
from nnmd_lammps.model import (
    ModelDescription,
    NetworkSpec,
    Potential,
    ScalingParams,
    build_hdnnp,
    make_batch,
)

from conftest import (
    CLUSTER,
    CUTOFFS,
    REPO,
    assert_batch_errors,
    assert_vector_errors_and_float32,
    finite_difference_forces,
    finite_difference_functions,
    gradcheck_problem,
    mixed_functions,
    ops_values,
    reference_energy,
    reference_G,
    results_with_threads,
    small_cell,
)

ELEMENTS = ["H", "C", "O"]
F64 = torch.float64


pytestmark = pytest.mark.usefixtures("library_loaded")


def rows_of(values, n_atoms) -> list[list[float]]:
    rows: list = [None] * n_atoms
    for e in range(len(values.G)):
        for k, a in enumerate(values.atoms[e].tolist()):
            rows[a] = values.G[e][k].tolist()
    return rows


# --- G against the oracle -------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["ops", "torch"])
@pytest.mark.parametrize("ctype,alpha", CUTOFFS)
def test_symmetry_functions_match_reference(ctype, alpha, backend):
    """Every cutoff type, radial and both angular types (integer and non-integer zeta),
    three elements, a periodic triclinic cell smaller than the cutoff and a cluster; the
    operators and the torch fallback."""
    spec = DescriptorSpec(ELEMENTS, mixed_functions(ELEMENTS, 3.0, ctype, alpha))
    cell_atoms = small_cell(seed=ctype)
    structures = [cell_atoms, CLUSTER]
    _, _, values = ops_values(structures, spec, backend=backend)
    got = rows_of(values, len(cell_atoms) + len(CLUSTER))
    ref = reference_G(structures, spec.functions)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-11, atol=1e-13)
    assert max(abs(x) for row in ref for x in row) > 0.1  # not vacuous


@pytest.mark.parametrize("method", ["direct", "moments", "auto"])
def test_type9_evaluations_match_reference(method):
    """Type 9 through the triplet sum and through the moment tensors (integer zeta)."""
    fns = {
        e: [
            SymmetryFunction(9, e, (a, b), eta, 3.4, rs, lam, zeta, 6, 0.1)
            for a, b in (("H", "H"), ("H", "O"), ("O", "O"))
            for eta, rs, lam, zeta in ((0.1, 0.0, 1.0, 1.0), (0.3, 0.4, -1.0, 3.0), (0.05, 0, 1, 6))
        ]
        for e in ("H", "O")
    }
    spec = DescriptorSpec(["H", "O"], fns)
    atoms = small_cell(seed=8, symbols="HOHO")
    _, _, values = ops_values([atoms], spec, method=method)
    ref = reference_G([atoms], fns)
    for g, r in zip(rows_of(values, len(atoms)), ref, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-11, atol=1e-13)


# --- forces and virial against finite differences of the oracle ------------------------------


def strained(atoms: Atoms, eps: np.ndarray) -> Atoms:
    a = atoms.copy()
    a.set_cell(a.cell[:] @ (np.eye(3) + eps).T, scale_atoms=False)
    a.positions = atoms.positions @ (np.eye(3) + eps).T
    return a


@pytest.mark.parametrize("case", ["small_cell", "cluster"])
def test_contraction_matches_finite_differences_of_reference(case):
    """Forces F = -dE/dr and virial W = -sum d (x) v from the contraction operator equal
    central differences of E = sum_i c_i . G_i(reference) in positions and strain."""
    spec = DescriptorSpec(["H", "O"], finite_difference_functions())
    if case == "small_cell":
        atoms = small_cell(seed=5, symbols="HOHO")
    else:
        atoms = Atoms("OHHOH", positions=CLUSTER.positions[:5])
    _, _, values = ops_values([atoms], spec)
    assert values.dGdd == [None, None] and values.contraction is not None
    rng = np.random.default_rng(2)
    c = [rng.normal(size=tuple(g.shape)) for g in values.G]
    n = len(atoms)
    res = forces_and_virial(
        values,
        [torch.from_numpy(x) for x in c],
        n,
        virial_rows=[torch.zeros(len(p), dtype=torch.long) for p in values.pair_i],
        n_virial_rows=1,
    )
    h = 1e-5
    fd = finite_difference_forces(atoms, spec, c, h)
    scale = np.abs(fd).max()
    assert scale > 1e-2
    np.testing.assert_allclose(res.forces.numpy(), fd, atol=1e-7 * scale)
    if case != "small_cell":
        return
    dE = np.zeros((3, 3))
    for a_ in range(3):
        for b_ in range(3):
            eps = np.zeros((3, 3))
            eps[a_, b_] = h
            dE[a_, b_] = (
                reference_energy(strained(atoms, eps), spec, c)
                - reference_energy(strained(atoms, -eps), spec, c)
            ) / (2 * h)
    # d_a -> d_a + eps_ab d_b: dE/deps_ab = sum v_a d_b, and W = -sum d (x) v
    np.testing.assert_allclose(res.virial[0].numpy(), -dE.T, atol=1e-7 * np.abs(dE).max())


# --- the operators' own identities ---------------------------------------------------------


@pytest.fixture(scope="module")
def batch3():
    """Three elements, two structures (small cell and cluster), the operator inputs."""
    spec = DescriptorSpec(ELEMENTS, mixed_functions(ELEMENTS, 3.0, 6, 0.1))
    calc, _, values = ops_values([small_cell(4), CLUSTER], spec)
    contraction = values.contraction
    return calc, values, contraction


def test_jacobian_equals_unit_contractions_and_jvp(batch3):
    con = batch3[2]
    desc, csr, d = con.descriptors, con.csr, con.vectors
    G, dG = ops.jacobian(desc, csr, d)
    G2, cache = ops.symmetry_functions(desc, csr, d)
    assert torch.equal(G, G2)
    T, P = G.shape[0], d.shape[0]
    # row blocks (n_i, S_i, 3) -> a dense (T, P, 3) Jacobian
    J = torch.zeros(T, P, 3, dtype=F64)
    S_of = [desc.num_functions(e) for e in range(3)]
    off, g0, j0 = csr.offsets.tolist(), 0, 0
    for i, e in enumerate(csr.species.tolist()):
        n, S = off[i + 1] - off[i], S_of[e]
        block = dG[j0 : j0 + n * S * 3].view(n, S, 3)
        J[g0 : g0 + S, off[i] : off[i + 1]] = block.transpose(0, 1)
        g0, j0 = g0 + S, j0 + n * S * 3
    assert g0 == T and j0 == dG.shape[0]
    rng = torch.Generator().manual_seed(0)
    c = torch.randn(4, T, generator=rng, dtype=F64)
    u = torch.randn(4, P, 3, generator=rng, dtype=F64)
    v = ops.contract(desc, csr, d, c, cache)
    np.testing.assert_allclose(v, torch.einsum("mt,tpk->mpk", c, J), rtol=1e-12, atol=1e-12)
    g = ops.jvp(desc, csr, d, u, cache)
    np.testing.assert_allclose(g, torch.einsum("tpk,mpk->mt", J, u), rtol=1e-12, atol=1e-12)
    # several vectors equal one by one, with and without the cache
    for m in range(4):
        assert torch.equal(ops.contract(desc, csr, d, c[m], cache), v[m])
        np.testing.assert_allclose(ops.contract(desc, csr, d, c[m]), v[m], rtol=1e-12, atol=1e-13)
        assert torch.equal(ops.jvp(desc, csr, d, u[m], cache), g[m])
    # adjoint: <J^T c, u> = <c, J u>
    assert float((v * u).sum()) == pytest.approx(float((c * g).sum()), rel=1e-12)
    assert float(J.abs().max()) > 0.1


def test_thread_count_does_not_change_results(batch3):
    _, _, con = batch3
    desc, csr, d = con.descriptors, con.csr, con.vectors
    c = torch.linspace(-1, 1, sum(int(x.numel()) for x in batch3[1].G), dtype=F64)
    results_with_threads(desc, csr, d, c)


def test_input_errors(batch3):
    _, _, con = batch3
    desc, csr, d = con.descriptors, con.csr, con.vectors
    assert_batch_errors(desc, csr, d)
    assert_vector_errors_and_float32(desc, csr, d)
    table = ops.function_table(
        DescriptorSpec(["H"], {"H": [SymmetryFunction(2, "H", ("H",), 1, 2)]})
    )
    table[0, 6] = -1.0  # rc
    with pytest.raises(RuntimeError, match="cutoff radius must be positive"):
        torch.classes.nnmd.Descriptors(1, table)


# --- autograd -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_batch():
    """A small problem for gradcheck (conftest.gradcheck_problem)."""
    spec, atoms = gradcheck_problem()
    _, _, values = ops_values([atoms], spec)
    con = values.contraction
    return con.descriptors, con.csr, con.vectors.detach().clone()


def test_gradcheck_symmetry_functions(small_batch):
    desc, csr, d = small_batch
    x = d.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: ops.symmetry_functions(desc, csr, v)[0], (x,))
    assert torch.autograd.gradcheck(lambda v: ops.jacobian(desc, csr, v)[0], (x,))


def test_gradcheck_contract_and_jvp(small_batch):
    desc, csr, d = small_batch
    G, cache = ops.symmetry_functions(desc, csr, d)
    gen = torch.Generator().manual_seed(1)
    c = torch.randn(2, G.shape[0], generator=gen, dtype=F64, requires_grad=True)
    u = torch.randn(d.shape[0], 3, generator=gen, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: ops.contract(desc, csr, d, x, cache), (c,))
    assert torch.autograd.gradcheck(lambda x: ops.jvp(desc, csr, d, x, cache), (u,))
    # the backward formulas are themselves differentiable (jvp <-> contract)
    assert torch.autograd.gradgradcheck(lambda x: ops.contract(desc, csr, d, x, cache), (c,))
    assert torch.autograd.gradgradcheck(lambda x: ops.jvp(desc, csr, d, x), (u,))


def test_first_derivative_by_autograd_is_the_contraction(small_batch):
    desc, csr, d = small_batch
    x = d.clone().requires_grad_(True)
    G, cache = ops.symmetry_functions(desc, csr, x)
    c = torch.linspace(-1.0, 2.0, G.shape[0], dtype=F64)
    (grad,) = torch.autograd.grad((G * c).sum(), x)
    assert torch.equal(grad, ops.contract(desc, csr, d, c, cache))


def test_second_derivatives_in_the_vectors_raise(small_batch):
    desc, csr, d = small_batch
    x = d.clone().requires_grad_(True)
    G, _ = ops.symmetry_functions(desc, csr, x)
    (grad,) = torch.autograd.grad(G.sum(), x, create_graph=True)
    with pytest.raises(ops.SecondDerivativeError, match="second derivatives"):
        grad.pow(2).sum().backward()
    _, dG = ops.jacobian(desc, csr, x)
    with pytest.raises(ops.SecondDerivativeError):
        dG.sum().backward()
    c = torch.ones(G.shape[0], dtype=F64)
    with pytest.raises(ops.SecondDerivativeError):
        ops.contract(desc, csr, x, c).sum().backward()


def test_force_loss_trains_through_contract(small_batch):
    """Forces from dE/dG (differentiable in the weights) through ``contract`` from
    vectors without grad: the weight gradient equals the one through the dense Jacobian."""
    desc, csr, d = small_batch
    G, dG = ops.jacobian(desc, csr, d)
    w = torch.linspace(0.5, 1.5, G.shape[0], dtype=F64, requires_grad=True)
    c = torch.tanh(G * w)  # stands for dE/dG of a network with weights w
    loss_op = ops.contract(desc, csr, d, c).pow(2).sum()
    (g_op,) = torch.autograd.grad(loss_op, w, retain_graph=True)
    # dense: v_p = sum_s c_s J[s, p]
    S = [desc.num_functions(e) for e in range(2)]
    off, g0, j0, parts = csr.offsets.tolist(), 0, 0, []
    for i, e in enumerate(csr.species.tolist()):
        n = off[i + 1] - off[i]
        block = dG[j0 : j0 + n * S[e] * 3].view(n, S[e], 3)
        parts.append(torch.einsum("s,psk->pk", c[g0 : g0 + S[e]], block))
        g0, j0 = g0 + S[e], j0 + n * S[e] * 3
    (g_dense,) = torch.autograd.grad(torch.cat(parts).pow(2).sum(), w)
    np.testing.assert_allclose(g_op, g_dense, rtol=1e-12, atol=1e-14)
    assert float(g_op.abs().max()) > 1e-3


# --- the torch fallback equals the operators -------------------------------------------------


def test_fallback_descriptors_equal_operators(ternary_potential):
    pot = ternary_potential
    rng = np.random.default_rng(5)
    cell = np.array([[4.0, 0.3, 0.0], [0.0, 3.8, 0.2], [0.5, 0.0, 4.2]])
    structures = [
        Atoms("CNCuCNCu", scaled_positions=rng.random((6, 3)), cell=cell, pbc=True),
        Atoms("CuCN", positions=[[0, 0, 0], [1.9, 0.1, 0], [0.2, 1.7, 0.6]]),
    ]
    batch = make_batch(structures, pot.elements, pot.cutoff)
    args = (batch.species, batch.centers, batch.neighbors, batch.vectors)
    a = DescriptorCalculator(pot.spec, backend="ops").compute(*args)
    b = DescriptorCalculator(pot.spec, backend="torch").compute(*args)
    assert a.contraction is not None and b.contraction is None
    for e in range(3):
        for name in ("atoms", "pair_index", "pair_row", "pair_i", "pair_j"):
            assert torch.equal(getattr(a, name)[e], getattr(b, name)[e]), name
        assert torch.equal(a.pair_d[e], b.pair_d[e])
        np.testing.assert_allclose(a.G[e], b.G[e], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(a.dGdd[e], b.dGdd[e], rtol=1e-10, atol=1e-13)
        assert a.G[e].shape[0] > 0 and float(a.dGdd[e].abs().max()) > 0.01


def committee_potential(backend: str) -> Potential:
    elements = ["H", "O"]
    torch.manual_seed(7)
    spec = DescriptorSpec(elements, mixed_functions(elements, 4.0, 1))
    desc = ModelDescription(committee=3)
    for e in elements:
        n = spec.num_functions(e)
        desc.networks[e] = NetworkSpec([n, 6, 1], ["tanh", "identity"])
        desc.scaling[e] = ScalingParams(
            "scale", -1.0, 1.0, [0.0] * n, [2.0] * n, [1.0] * n, [1.0] * n
        )
        desc.energy_shift[e] = -2.0
    desc.energy_scale = 0.5
    module = build_hdnnp(elements, desc)
    return Potential(spec, module, description=desc, backend=backend)


def test_fallback_predictions_equal_operators():
    """Energies, forces, virials, per-atom virials, stress and committee deviations."""
    pots = {b: committee_potential(b) for b in ("ops", "torch")}
    assert pots["ops"].calculator.backend == "ops"
    assert pots["torch"].calculator.backend == "torch"
    water = bulk("Cu", "fcc", a=3.0, cubic=True).repeat((2, 1, 1))
    water.set_chemical_symbols(["O", "H", "H", "O", "H", "H", "O", "H"])
    water.rattle(0.15, seed=3)
    cluster = Atoms("OHH", positions=[[0, 0, 0], [0.96, 0, 0], [-0.3, 0.9, 0.1]])
    preds = {
        b: p.evaluate([water, cluster], atomic_virials=True, uncertainty=True)
        for b, p in pots.items()
    }
    for a, b in zip(preds["ops"], preds["torch"], strict=True):
        assert a.energy == pytest.approx(b.energy, rel=1e-13)
        for name in ("forces", "atomic_virials", "force_deviation", "energy_deviation"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(a.virial, b.virial, rtol=1e-10, atol=1e-12)
    assert preds["ops"][0].stress is not None and preds["ops"][1].stress is None
    np.testing.assert_allclose(preds["ops"][0].stress, preds["torch"][0].stress, atol=1e-12)
    assert np.abs(preds["ops"][0].forces).max() > 0.01
    assert preds["ops"][0].max_force_deviation > 1e-4
    # atoms without neighbours, a batch without any atom of one element, no pairs at all
    lone = Atoms("HOH", positions=[[0, 0, 0], [0.96, 0, 0], [30, 0, 0]])
    for batch in ([Atoms("H")], [Atoms("O2", positions=[[0, 0, 0], [1.2, 0, 0]])], [lone]):
        a, b = (pots[k].evaluate(batch, atomic_virials=True)[0] for k in ("ops", "torch"))
        assert a.energy == pytest.approx(b.energy, rel=1e-13)
        np.testing.assert_allclose(a.forces, b.forces, atol=1e-12)
        np.testing.assert_allclose(a.atomic_virials, b.atomic_virials, atol=1e-12)
    assert np.abs(a.forces[2]).max() == 0.0 and np.abs(a.forces[0]).max() > 1e-3
    assert pots["ops"].evaluate([]) == []


def test_member_forces_equal_one_contraction_per_member():
    pot = committee_potential("ops")
    atoms = small_cell(seed=2, symbols="OHHOHH")
    _, values = pot.descriptors_of([atoms], derivatives=False)
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(3, g.shape[0], g.shape[1], generator=gen, dtype=F64) for g in values.G]
    together = member_forces(values, grads, len(atoms))
    for m in range(3):
        alone = forces_and_virial(values, [g[m] for g in grads], len(atoms)).forces
        np.testing.assert_allclose(together[m], alone, rtol=1e-13, atol=1e-13)
    # and through the dense Jacobian of the torch backend
    _, dense = Potential(pot.spec, pot.network, backend="torch").descriptors_of([atoms])
    np.testing.assert_allclose(member_forces(dense, grads, len(atoms)), together, atol=1e-11)


def test_stress_matches_finite_differences():
    """The stress of a prediction through the operator against strain differences of the
    energy (a triclinic cell smaller than the cutoff)."""
    pot = committee_potential("ops")
    atoms = small_cell(seed=6, symbols="OHHOHH")
    pred = pot.evaluate([atoms])[0]
    h = 1e-6
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = 0.5 * h
            ep = pot.evaluate([strained(atoms, eps)], forces=False, stress=False)[0].energy
            em = pot.evaluate([strained(atoms, -eps)], forces=False, stress=False)[0].energy
            # the symmetric strain moves eps_ab and eps_ba: twice the derivative off the
            # diagonal
            fd[a, b] = (ep - em) / h / (1.0 if a == b else 2.0)
    stress = fd / atoms.get_volume()  # ASE: sigma = (1/V) dE/deps
    np.testing.assert_allclose(pred.stress, stress, atol=1e-7 * np.abs(stress).max())
    assert np.abs(stress).max() > 1e-3


# --- backends and the missing library ---------------------------------------------------------


def test_calculator_pickles_and_copies():
    """Worker processes (spawn) and deep copies rebuild the operators' object."""
    import copy
    import pickle

    spec = DescriptorSpec(["H", "O"], mixed_functions(["H", "O"], 3.0, 1))
    calc = DescriptorCalculator(spec)
    calc.operators.set_method("direct")
    batch = make_batch([small_cell(1, "HOHO")], spec.elements, spec.cutoff)
    args = (batch.species, batch.centers, batch.neighbors, batch.vectors)
    ref = calc.compute(*args, derivatives=False)
    for other in (pickle.loads(pickle.dumps(calc)), copy.deepcopy(calc)):
        assert other.backend == "ops" and other.operators.method == "direct"
        assert other.operators.cache_size(0) == 0  # direct: no moment cache
        got = other.compute(*args, derivatives=False)
        for e in range(2):
            assert torch.equal(got.G[e], ref.G[e])


def test_backend_choice():
    spec = DescriptorSpec(["H"], {"H": [SymmetryFunction(2, "H", ("H",), 1.0, 2.0)]})
    assert DescriptorCalculator(spec).backend == "ops"
    assert DescriptorCalculator(spec, backend="torch").operators is None
    with pytest.raises(NNMDError, match="unknown descriptor backend"):
        DescriptorCalculator(spec, backend="fortran")
    with pytest.raises(NNMDError, match="CPU"):
        DescriptorCalculator(spec, device="meta", backend="ops")


MISSING = """
import warnings
import numpy as np
from ase.build import bulk
from nnmd_lammps.descriptors import DescriptorCalculator, DescriptorSpec, SymmetryFunction
from nnmd_lammps.errors import NNMDError
from nnmd_lammps.model import make_batch
fns = [
    SymmetryFunction(2, "Cu", ("Cu",), 0.5, 4.0),
    SymmetryFunction(9, "Cu", ("Cu", "Cu"), 0.1, 4.0, 0.0, 1.0, 2.0),
]
spec = DescriptorSpec(["Cu"], {"Cu": fns})
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    a = DescriptorCalculator(spec)
    b = DescriptorCalculator(spec)
print("backends", a.backend, b.backend)
print("warnings", len(caught), caught[0].category.__name__ if caught else "")
print("message", caught[0].message if caught else "")
try:
    DescriptorCalculator(spec, backend="ops")
except NNMDError as err:
    print("explicit", err)
atoms = bulk("Cu", "fcc", a=3.6)
batch = make_batch([atoms], ["Cu"], 4.0)
G = a.compute(batch.species, batch.centers, batch.neighbors, batch.vectors).G[0]
print("G", " ".join(repr(float(x)) for x in G.flatten()))
"""


def test_missing_library_falls_back_with_one_warning(tmp_path):
    env = dict(os.environ, NNMD_OPS_LIBRARY=str(tmp_path / "absent" / ops.LIBRARY_NAME))
    out = subprocess.run(
        [sys.executable, "-c", MISSING], env=env, capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert lines["backends"] == "torch torch"
    assert lines["warnings"] == "1 RuntimeWarning"
    assert "operators are unavailable" in lines["message"] and "does not exist" in lines["message"]
    assert "unavailable" in lines["explicit"]
    # the fallback computes what the operators compute
    fns = [
        SymmetryFunction(2, "Cu", ("Cu",), 0.5, 4.0),
        SymmetryFunction(9, "Cu", ("Cu", "Cu"), 0.1, 4.0, 0.0, 1.0, 2.0),
    ]
    spec = DescriptorSpec(["Cu"], {"Cu": fns})
    _, _, values = ops_values([bulk("Cu", "fcc", a=3.6)], spec)
    got = np.array(lines["G"].split(), dtype=float)
    np.testing.assert_allclose(got, values.G[0].flatten().numpy(), rtol=1e-12)
    assert got.min() > 0.1


# --- the force contraction of training batches (slot_contract) --------------------------------


def _slot_problem(M: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """g (n, M, S), dGdd (n, S, C) and u (n, M, C) with C = 3 x 7 (not a multiple of any
    vector width) and some exact zeros in g (as members' unused inputs give)."""
    gen = torch.Generator().manual_seed(seed)
    n, S, C = 37, 11, 21
    g = torch.randn(n, M, S, dtype=F64, generator=gen)
    g[:, :, 3] = 0.0
    d = torch.randn(n, S, C, dtype=F64, generator=gen)
    u = torch.randn(n, M, C, dtype=F64, generator=gen)
    return g, d, u


def _loops(g: np.ndarray, d: np.ndarray) -> np.ndarray:
    """v[r, m, c] = sum_s g[r, m, s] d[r, s, c] by explicit loops (the reference)."""
    n, M, S = g.shape
    v = np.zeros((n, M, d.shape[2]))
    for r in range(n):
        for m in range(M):
            for s in range(S):
                v[r, m] += g[r, m, s] * d[r, s]
    return v


@pytest.mark.parametrize("M", [1, 3])
def test_slot_contract_matches_loops_and_its_adjoint(M):
    g, d, u = _slot_problem(M)
    v = torch.ops.nnmd.slot_contract(g, d)
    np.testing.assert_allclose(v.numpy(), _loops(g.numpy(), d.numpy()), rtol=1e-13, atol=1e-13)
    a = torch.ops.nnmd.slot_contract_adjoint(u, d)
    ref = np.einsum("rsc,rmc->rms", d.numpy(), u.numpy())
    np.testing.assert_allclose(a.numpy(), ref, rtol=1e-13, atol=1e-13)
    # the adjoint identity <v(g), u> = <g, adjoint(u)>
    assert float((v * u).sum()) == pytest.approx(float((g * a).sum()), rel=1e-12)
    # float32 storage: the float64 products of the rounded values
    d32 = d.float()
    np.testing.assert_allclose(
        torch.ops.nnmd.slot_contract(g, d32).numpy(),
        _loops(g.numpy(), d32.double().numpy()),
        rtol=1e-13,
        atol=1e-13,
    )
    np.testing.assert_allclose(
        torch.ops.nnmd.slot_contract_adjoint(u, d32).numpy(),
        np.einsum("rsc,rmc->rms", d32.double().numpy(), u.numpy()),
        rtol=1e-13,
        atol=1e-13,
    )


def test_slot_contract_threads_and_fallback():
    g, d, u = _slot_problem(2)
    before = torch.get_num_threads()
    try:
        out = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out.append((ops.slot_contract(g, d), torch.ops.nnmd.slot_contract_adjoint(u, d)))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
    # float32 g (training.dtype float32) takes torch.bmm in float32
    v32 = ops.slot_contract(g.float(), d)
    assert v32.dtype == torch.float32
    np.testing.assert_allclose(v32.numpy(), out[0][0].numpy(), rtol=1e-4, atol=1e-4)


def test_slot_contract_gradients():
    g, d, _ = _slot_problem(2)
    g = g[:5].clone().requires_grad_(True)
    d = d[:5]
    assert torch.autograd.gradcheck(lambda x: ops.slot_contract(x, d), (g,))
    assert torch.autograd.gradgradcheck(lambda x: ops.slot_contract(x, d), (g,))
    v = ops.slot_contract(g, d)
    (grad,) = torch.autograd.grad((v * v).sum(), g)
    np.testing.assert_allclose(
        grad.numpy(), 2.0 * torch.bmm(v, d.transpose(1, 2)).detach().numpy(), rtol=1e-12
    )


def test_slot_contract_input_errors():
    g, d, u = _slot_problem(1)
    with pytest.raises(RuntimeError, match="g is \\(n, M, S\\) with dGdd's S"):
        torch.ops.nnmd.slot_contract(g[:, :, :5], d)
    with pytest.raises(RuntimeError, match="with dGdd's n rows"):
        torch.ops.nnmd.slot_contract(g[:5], d)
    with pytest.raises(RuntimeError, match="must be float64"):
        torch.ops.nnmd.slot_contract(g.float(), d)
    with pytest.raises(RuntimeError, match="dGdd must be float64 or float32"):
        torch.ops.nnmd.slot_contract(g, d.half())
    with pytest.raises(RuntimeError, match="u is \\(n, M, C\\) with dGdd's C"):
        torch.ops.nnmd.slot_contract_adjoint(u[:, :, :4], d)


def _slot_layout(n_rows: int, K: int, n_atoms: int, seed: int = 1):
    """centre (n,) and neighbor (n K,) atom indices, some slots unused (= n_atoms)."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.randint(0, n_atoms, (n_rows,), generator=gen)
    neighbor = torch.randint(0, n_atoms, (n_rows * K,), generator=gen)
    neighbor[::5] = n_atoms
    return centre, neighbor


@pytest.mark.parametrize("M", [1, 3])
def test_slot_forces_match_loops_and_their_adjoint(M):
    g, d, _ = _slot_problem(M)
    n, K, n_atoms = g.shape[0], d.shape[2] // 3, 23
    centre, neighbor = _slot_layout(n, K, n_atoms)
    v = _loops(g.numpy(), d.numpy()).reshape(n, M, K, 3)
    ref = np.zeros((n_atoms + 1, M, 3))
    for r in range(n):
        for k in range(K):
            ref[centre[r]] += v[r, :, k]
            ref[neighbor[r * K + k]] -= v[r, :, k]
    F = torch.ops.nnmd.slot_forces(g, d, centre, neighbor, n_atoms)
    assert F.shape == (n_atoms, M, 3)
    np.testing.assert_allclose(F.numpy(), ref[:n_atoms], rtol=1e-12, atol=1e-12)
    gF = torch.randn(n_atoms, M, 3, dtype=F64, generator=torch.Generator().manual_seed(5))
    a = torch.ops.nnmd.slot_forces_adjoint(gF, d, centre, neighbor)
    assert float((F * gF).sum()) == pytest.approx(float((g * a).sum()), rel=1e-12)
    F32 = torch.ops.nnmd.slot_forces(g, d.float(), centre, neighbor, n_atoms)
    ref32 = torch.ops.nnmd.slot_forces(g, d.float().double(), centre, neighbor, n_atoms)
    np.testing.assert_allclose(F32.numpy(), ref32.numpy(), rtol=1e-13, atol=1e-13)


def test_slot_forces_threads_gradients_and_errors():
    g, d, _ = _slot_problem(2)
    n, K, n_atoms = g.shape[0], d.shape[2] // 3, 23
    centre, neighbor = _slot_layout(n, K, n_atoms)
    before = torch.get_num_threads()
    try:
        out = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out.append(ops.slot_forces(g, d, centre, neighbor, n_atoms))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(out[0], out[1])
    small = g[:6].clone().requires_grad_(True)
    args = (d[:6], centre[:6], neighbor[: 6 * K], n_atoms)
    assert torch.autograd.gradcheck(lambda x: ops.slot_forces(x, *args), (small,))
    assert torch.autograd.gradgradcheck(lambda x: ops.slot_forces(x, *args), (small,))
    with pytest.raises(RuntimeError, match="a neighbor is not an atom index"):
        torch.ops.nnmd.slot_forces(g, d, centre, neighbor + n_atoms, n_atoms)
    with pytest.raises(RuntimeError, match="a centre is not an atom index"):
        torch.ops.nnmd.slot_forces(g, d, centre - 1, neighbor, n_atoms)
    with pytest.raises(RuntimeError, match="last dimension must be 3 K"):
        torch.ops.nnmd.slot_forces(g, d[:, :, :20], centre, neighbor, n_atoms)
    with pytest.raises(RuntimeError, match="neighbor must be \\(n K,\\) int64"):
        torch.ops.nnmd.slot_forces(g, d, centre, neighbor[:-1], n_atoms)
    with pytest.raises(RuntimeError, match="float64 CPU tensors"):
        ops.slot_forces(g.float(), d, centre, neighbor, n_atoms)
