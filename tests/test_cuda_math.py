"""The per-atom functions of the CUDA operators (lammps_plugin/cuda/sf_device.h) on the
CPU: the operators' method "device" runs exactly what one GPU thread runs for one atom
(torch_ops/device_ops.cpp, the same preparation of the batch as on a GPU, with a host loop
in place of the kernel launch). Held against the CPU kernels (the operators' methods
"direct" and "auto"), the independent oracle tests/reference.py and finite differences of
it: G, J^T c (one and several vectors), J u, the dense Jacobian, every function type and
cutoff type, three elements, small triclinic cells; then the errors, autograd, whole
predictions, and the routing of CUDA tensors in the Python package (without a GPU: only
the choice of the backend)."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms

from nnmd_lammps.descriptors import (
    DescriptorCalculator,
    DescriptorSpec,
    SymmetryFunction,
    forces_and_virial,
    ops,
)
from nnmd_lammps.descriptors import calculator as calculator_module
from nnmd_lammps.descriptors.contraction import member_forces
from nnmd_lammps.errors import NNMDError
from nnmd_lammps.interop.ase_calculator import NNMDCalculator
from nnmd_lammps.model import Potential, make_batch

from conftest import (
    CLUSTER,
    CUTOFFS,
    assert_batch_errors,
    assert_vector_errors_and_float32,
    finite_difference_forces,
    finite_difference_functions,
    gradcheck_problem,
    mixed_functions,
    operator_inputs,
    random_potential,
    reference_G,
    results_with_threads,
    save_potential,
    small_cell,
)

ELEMENTS = ["H", "C", "O"]
F64 = torch.float64

pytestmark = pytest.mark.usefixtures("library_loaded")


def evaluate(desc, csr, d, method: str, c: torch.Tensor, u: torch.Tensor) -> dict:
    """Everything the operators compute, with ``method``."""
    desc.set_method(method)
    try:
        G, cache = ops.symmetry_functions(desc, csr, d)
        GJ, J = ops.jacobian(desc, csr, d)
        return {
            "G": G,
            "GJ": GJ,
            "J": J,
            "cache": cache,
            "v": ops.contract(desc, csr, d, c, cache),
            "v0": ops.contract(desc, csr, d, c[0], cache),
            "v_last": ops.contract(desc, csr, d, c[-1], cache),
            "v_nocache": ops.contract(desc, csr, d, c),
            "g": ops.jvp(desc, csr, d, u, cache),
            "g0": ops.jvp(desc, csr, d, u[0], cache),
        }
    finally:
        desc.set_method("auto")


def close(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-12) -> None:
    """Equal to ``tol`` relative to the largest entry (and not vacuous)."""
    scale = float(want.abs().max())
    assert scale > 1e-3
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=tol, atol=tol * scale)


# --- against the CPU kernels and the oracle --------------------------------------------------


@pytest.mark.parametrize("ctype,alpha", CUTOFFS)
def test_device_math_matches_kernels_and_reference(ctype, alpha):
    """Every cutoff type; radial and both angular types with integer and non-integer
    zeta, three elements; a periodic triclinic cell smaller than the cutoff and a
    cluster. 5 contraction vectors and 6 jvp directions (two chunks of the kernels'
    register lanes)."""
    spec = DescriptorSpec(ELEMENTS, mixed_functions(ELEMENTS, 3.0, ctype, alpha))
    structures = [small_cell(seed=ctype), CLUSTER]
    desc, csr, d, _ = operator_inputs(spec, structures)
    gen = torch.Generator().manual_seed(ctype)
    T, P = sum(desc.num_functions(int(e)) for e in csr.species), d.shape[0]
    c = torch.randn(5, T, generator=gen, dtype=F64)
    u = torch.randn(6, P, 3, generator=gen, dtype=F64)
    dev = evaluate(desc, csr, d, "device", c, u)
    assert dev["cache"].numel() == 0  # the GPU functions keep no cache
    for method in ("direct", "auto"):
        cpu = evaluate(desc, csr, d, method, c, u)
        for key in ("G", "GJ", "J", "v", "v0", "g", "g0"):
            close(dev[key], cpu[key])
    assert torch.equal(dev["G"], dev["GJ"])
    assert torch.equal(dev["v"], dev["v_nocache"])
    # one vector alone equals its row of several (the first and the second chunk)
    close(dev["v0"], dev["v"][0], 1e-14)
    close(dev["v_last"], dev["v"][-1], 1e-14)
    close(dev["g0"], dev["g"][0], 1e-14)
    # G against the oracle, atom by atom
    desc.set_method("device")
    G = ops.symmetry_functions(desc, csr, d)[0]
    desc.set_method("auto")
    ref = reference_G(structures, spec.functions)
    rows = csr_rows(desc, csr, G)
    order = torch.cat(_atoms_by_element(csr, structures, spec)).tolist()
    for row, atom in zip(rows, order, strict=True):
        np.testing.assert_allclose(row, ref[atom], rtol=1e-12, atol=1e-13)
    assert max(abs(x) for r in ref for x in r) > 0.1


def csr_rows(desc, csr, G: torch.Tensor) -> list[np.ndarray]:
    out, g0 = [], 0
    for e in csr.species.tolist():
        S = desc.num_functions(e)
        out.append(G[g0 : g0 + S].numpy())
        g0 += S
    assert g0 == G.shape[0]
    return out


def _atoms_by_element(csr, structures, spec) -> list[torch.Tensor]:
    """The atoms (global index) of the CSR rows: by element, ascending within one."""
    symbols = [s for a in structures for s in a.get_chemical_symbols()]
    species = torch.tensor([spec.element_index[s] for s in symbols])
    assert torch.equal(torch.sort(species, stable=True).values, csr.species)
    return [torch.nonzero(species == e).flatten() for e in range(len(spec.elements))]


def test_type9_high_zeta_and_moment_path():
    """Type 9 with zeta up to 24 (the CPU kernels' moment path under "moments") and a
    non-integer zeta: the direct triplet sums of the GPU functions agree with both."""
    fns = {
        e: [
            SymmetryFunction(9, e, (a, b), eta, 3.4, rs, lam, zeta, ct, al)
            for a, b in (("H", "H"), ("H", "O"), ("O", "O"))
            for eta, rs, lam, zeta, ct, al in (
                (0.1, 0.0, 1.0, 1.0, 6, 0.1),
                (0.3, 0.4, -1.0, 3.0, 1, 0.0),
                (0.05, 0.0, 1.0, 16.0, 2, 0.0),
                (0.05, 0.0, -1.0, 24.0, 6, 0.1),
                (0.02, 0.2, 1.0, 7.5, 6, 0.1),
            )
        ]
        for e in ("H", "O")
    }
    spec = DescriptorSpec(["H", "O"], fns)
    atoms = small_cell(seed=8, symbols="HOHOH")
    desc, csr, d, _ = operator_inputs(spec, [atoms])
    gen = torch.Generator().manual_seed(1)
    T, P = sum(desc.num_functions(int(e)) for e in csr.species), d.shape[0]
    c = torch.randn(3, T, generator=gen, dtype=F64)
    u = torch.randn(2, P, 3, generator=gen, dtype=F64)
    dev = evaluate(desc, csr, d, "device", c, u)
    for method in ("direct", "moments"):
        cpu = evaluate(desc, csr, d, method, c, u)
        for key in ("G", "J", "v", "g"):
            close(dev[key], cpu[key], 1e-11 if method == "moments" else 1e-12)


def test_device_forces_match_finite_differences_of_reference():
    """Forces from the GPU functions' J^T c equal central differences of the oracle's
    E = sum_i c_i . G_i (every type, two cutoff types, a small triclinic cell); and
    <J^T c, u> = <c, J u>."""
    spec = DescriptorSpec(["H", "O"], finite_difference_functions())
    atoms = small_cell(seed=5, symbols="HOHO")
    calc = DescriptorCalculator(spec, backend="ops")
    calc.operators.set_method("device")
    batch = make_batch([atoms], spec.elements, spec.cutoff)
    values = calc.compute(
        batch.species, batch.centers, batch.neighbors, batch.vectors, derivatives=False
    )
    rng = np.random.default_rng(2)
    c = [rng.normal(size=tuple(g.shape)) for g in values.G]
    forces = forces_and_virial(values, [torch.from_numpy(x) for x in c], len(atoms)).forces
    fd = finite_difference_forces(atoms, spec, c)
    scale = np.abs(fd).max()
    assert scale > 1e-2
    np.testing.assert_allclose(forces.numpy(), fd, atol=1e-7 * scale)
    # adjoint
    con = values.contraction
    gen = torch.Generator().manual_seed(4)
    cc = torch.randn(sum(int(g.numel()) for g in values.G), generator=gen, dtype=F64)
    uu = torch.randn(con.vectors.shape[0], 3, generator=gen, dtype=F64)
    v = ops.contract(con.descriptors, con.csr, con.vectors, cc)
    g = ops.jvp(con.descriptors, con.csr, con.vectors, uu)
    assert float((v * uu).sum()) == pytest.approx(float((cc * g).sum()), rel=1e-12)


# --- the batch layer: threads, empty batches, errors, autograd --------------------------------


@pytest.fixture(scope="module")
def device_batch():
    spec = DescriptorSpec(ELEMENTS, mixed_functions(ELEMENTS, 3.0, 6, 0.1))
    desc, csr, d, _ = operator_inputs(spec, [small_cell(4), CLUSTER])
    desc.set_method("device")
    return desc, csr, d


def test_thread_count_does_not_change_results(device_batch):
    desc, csr, d = device_batch
    T = sum(desc.num_functions(int(e)) for e in csr.species)
    c = torch.linspace(-1, 1, T, dtype=F64)
    one = results_with_threads(desc, csr, d, c)
    assert float(one[1].abs().max()) > 0.01


def test_rows_without_pairs_and_empty_batches(device_batch):
    desc, _, _ = device_batch
    species = torch.tensor([0, 2, 1])
    lone = ops.NeighborCSR(
        species, torch.zeros(4, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    )
    d0 = torch.zeros(0, 3, dtype=F64)
    G, cache = ops.symmetry_functions(desc, lone, d0)
    assert G.shape == (sum(desc.num_functions(e) for e in (0, 2, 1)),) and cache.numel() == 0
    assert torch.equal(G, torch.zeros_like(G))
    assert ops.contract(desc, lone, d0, torch.ones(2, G.shape[0], dtype=F64)).shape == (2, 0, 3)
    assert ops.jacobian(desc, lone, d0)[1].shape == (0,)
    empty = ops.NeighborCSR(
        torch.zeros(0, dtype=torch.long),
        torch.zeros(1, dtype=torch.long),
        torch.zeros(0, dtype=torch.long),
    )
    G, _ = ops.symmetry_functions(desc, empty, d0)
    assert G.shape == (0,)
    assert ops.jvp(desc, empty, d0, torch.zeros(0, 3, dtype=F64)).shape == (0,)


def test_input_errors(device_batch):
    desc, csr, d = device_batch
    assert_batch_errors(desc, csr, d)
    bad = ops.NeighborCSR(csr.species, csr.offsets, csr.neighbor_species.clone())
    bad.neighbor_species[3] = -1
    with pytest.raises(RuntimeError, match="neighbor_species entry is not an element index"):
        ops.contract(
            desc,
            bad,
            d,
            torch.zeros(sum(desc.num_functions(int(e)) for e in csr.species), dtype=F64),
        )
    bad = ops.NeighborCSR(csr.species, csr.offsets.clone(), csr.neighbor_species)
    bad.offsets[2] = bad.offsets[1] - 1
    for call in (ops.symmetry_functions, ops.jacobian):
        with pytest.raises(RuntimeError, match="offsets must start at 0"):
            call(desc, bad, d)
    assert_vector_errors_and_float32(desc, csr, d)


def test_autograd_through_the_device_functions():
    spec, atoms = gradcheck_problem()
    desc, csr, d, _ = operator_inputs(spec, [atoms])
    desc.set_method("device")
    x = d.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: ops.symmetry_functions(desc, csr, v)[0], (x,))
    assert torch.autograd.gradcheck(lambda v: ops.jacobian(desc, csr, v)[0], (x,))
    G, cache = ops.symmetry_functions(desc, csr, d)
    c = torch.randn(2, G.shape[0], dtype=F64, requires_grad=True)
    u = torch.randn(d.shape[0], 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y: ops.contract(desc, csr, d, y, cache), (c,))
    assert torch.autograd.gradcheck(lambda y: ops.jvp(desc, csr, d, y, cache), (u,))


# --- whole predictions -----------------------------------------------------------------------


def test_predictions_with_the_device_functions_equal_the_kernels():
    """Energies, forces, virials, per-atom virials and (a committee: several vectors per
    contraction) force deviations of a random two-element model, the CPU kernels against
    the GPU functions on the CPU; and the method survives pickling."""
    pots = {}
    for method in ("auto", "device"):
        pot = random_potential(["H", "O"], seed=3, rc=4.0, cutoff_type=1)
        pot.calculator.operators.set_method(method)
        pots[method] = pot
    again = pickle.loads(pickle.dumps(pots["device"].calculator))
    assert again.operators.method == "device"
    water = small_cell(seed=11, symbols="OHHOHH")
    cluster = Atoms("OHH", positions=[[0, 0, 0], [0.96, 0, 0], [-0.3, 0.9, 0.1]])
    a, b = (pots[m].evaluate([water, cluster], atomic_virials=True) for m in ("auto", "device"))
    for x, y in zip(a, b, strict=True):
        assert y.energy == pytest.approx(x.energy, rel=1e-13)
        close(torch.from_numpy(y.forces), torch.from_numpy(x.forces))
        close(torch.from_numpy(y.atomic_virials), torch.from_numpy(x.atomic_virials))


def test_committee_forces_several_vectors():
    spec = DescriptorSpec(["H", "O"], mixed_functions(["H", "O"], 3.5, 6, 0.1))
    atoms = small_cell(seed=2, symbols="OHHOHH")
    batch = make_batch([atoms], spec.elements, spec.cutoff)
    args = (batch.species, batch.centers, batch.neighbors, batch.vectors)
    gen = torch.Generator().manual_seed(3)
    out, grads = {}, None
    for method in ("auto", "device"):
        calc = DescriptorCalculator(spec, backend="ops")
        calc.operators.set_method(method)
        values = calc.compute(*args, derivatives=False)
        if grads is None:  # 7 members: two chunks of the kernels' register lanes
            grads = [torch.randn(7, *g.shape, generator=gen, dtype=F64) for g in values.G]
        out[method] = member_forces(values, grads, len(atoms))
    close(out["device"], out["auto"])


# --- routing of CUDA tensors (no GPU needed: the choice of the backend) -----------------------


def test_cuda_routing(monkeypatch):
    cuda = torch.device("cuda")
    choose = calculator_module._choose_backend
    if not ops.cuda_available():
        with pytest.raises(NNMDError, match="built without CUDA"):
            choose("ops", cuda)
        monkeypatch.setattr(calculator_module, "_fallback_warned", set())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert choose(None, cuda) == "torch"
            assert choose("auto", cuda) == "torch"
        assert len(caught) == 1 and "built without CUDA" in str(caught[0].message)
    # with CUDA kernels registered, CUDA tensors go to the operators
    monkeypatch.setattr(calculator_module, "cuda_available", lambda: True)
    monkeypatch.setattr(calculator_module, "supports", lambda dev: True)
    assert choose(None, cuda) == "ops" and choose("ops", cuda) == "ops"
    assert choose("torch", cuda) == "torch"
    assert choose(None, torch.device("cpu")) == "ops"


def test_cuda_kernels_registered_only_with_a_cuda_build():
    """The library's CUDA registration is there exactly when it was built with CUDA, which
    needs a torch with CUDA."""
    has = torch._C._dispatch_has_kernel_for_dispatch_key("nnmd::symmetry_functions", "CUDA")
    assert has == ops.cuda_available()
    if torch.version.cuda is None:
        assert not has
    assert ops.supports("cpu") and not ops.supports("meta")


# --- on a GPU (skipped without one) ----------------------------------------------------------

needs_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and ops.cuda_available()),
    reason="no CUDA device, or the operator library was built without CUDA (docs/gpu.md)",
)


def to_cuda(csr, d):
    return ops.NeighborCSR(
        *(x.cuda() for x in (csr.species, csr.offsets, csr.neighbor_species))
    ), d.cuda()


@needs_cuda
@pytest.mark.parametrize("ctype,alpha", CUTOFFS)
def test_cuda_operators_match_cpu(ctype, alpha):
    """The CUDA operators against the CPU kernels and against the same functions on the
    CPU (method "device"): G, J^T c (1 and 5 vectors), J u (1 and 6), the Jacobian."""
    spec = DescriptorSpec(ELEMENTS, mixed_functions(ELEMENTS, 3.0, ctype, alpha))
    desc, csr, d, _ = operator_inputs(spec, [small_cell(seed=ctype), CLUSTER])
    gen = torch.Generator().manual_seed(ctype)
    T, P = sum(desc.num_functions(int(e)) for e in csr.species), d.shape[0]
    c = torch.randn(5, T, generator=gen, dtype=F64)
    u = torch.randn(6, P, 3, generator=gen, dtype=F64)
    cpu = evaluate(desc, csr, d, "direct", c, u)
    same = evaluate(desc, csr, d, "device", c, u)
    gcsr, gd = to_cuda(csr, d)
    gpu = {k: v.cpu() for k, v in evaluate(desc, gcsr, gd, "auto", c.cuda(), u.cuda()).items()}
    assert gpu["cache"].numel() == 0
    for key in ("G", "GJ", "J", "v", "v0", "v_last", "g", "g0"):
        close(gpu[key], cpu[key])
        close(gpu[key], same[key], 1e-13)


@needs_cuda
def test_cuda_errors_empty_batches_and_autograd(device_batch):
    desc, csr, d = device_batch
    desc.set_method("auto")  # CUDA tensors take the GPU functions whatever the method
    gcsr, gd = to_cuda(csr, d)
    assert_batch_errors(desc, gcsr, gd)
    with pytest.raises(RuntimeError, match="one device"):
        ops.symmetry_functions(desc, gcsr, d)
    # the device is still usable after the errors
    G = ops.symmetry_functions(desc, gcsr, gd)[0]
    desc.set_method("device")
    close(G.cpu(), ops.symmetry_functions(desc, csr, d)[0], 1e-13)
    empty = ops.NeighborCSR(*(torch.zeros(n, dtype=torch.long, device="cuda") for n in (0, 1, 0)))
    assert ops.symmetry_functions(desc, empty, torch.zeros(0, 3, dtype=F64, device="cuda"))[
        0
    ].shape == (0,)
    small = DescriptorSpec(
        ["H"], {"H": [SymmetryFunction(9, "H", ("H", "H"), 0.1, 3.0, 0.0, 1.0, 2.0)]}
    )
    atoms = Atoms("H4", positions=[[0, 0, 0], [1.0, 0.2, 0], [0.1, 1.1, 0.3], [1.2, 1.0, 1.1]])
    sdesc, scsr, sd, _ = operator_inputs(small, [atoms])
    gcsr, gd = to_cuda(scsr, sd)
    x = gd.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: ops.symmetry_functions(sdesc, gcsr, v)[0], (x,))
    assert torch.autograd.gradcheck(lambda v: ops.jacobian(sdesc, gcsr, v)[0], (x,))


@needs_cuda
def test_cuda_predictions_and_ase_calculator(tmp_path):
    """Potential(device="cuda") and NNMDCalculator(device="cuda") through the CUDA
    operators equal the CPU: energies 1e-12 relative, forces and stress."""
    path = save_potential(random_potential(["H", "O"], seed=3, rc=4.0), tmp_path / "m.pt")
    cpu, gpu = Potential.load(path), Potential.load(path, device="cuda")
    assert cpu.calculator.backend == "ops" and gpu.calculator.backend == "ops"
    water = small_cell(seed=11, symbols="OHHOHH").repeat((2, 2, 2))
    a, b = (
        cpu.evaluate([water], atomic_virials=True)[0],
        gpu.evaluate([water], atomic_virials=True)[0],
    )
    assert b.energy == pytest.approx(a.energy, rel=1e-12)
    close(torch.from_numpy(b.forces), torch.from_numpy(a.forces))
    close(torch.from_numpy(b.stress), torch.from_numpy(a.stress))
    water.calc = NNMDCalculator(path, device="cuda")
    assert water.get_potential_energy() == pytest.approx(a.energy, rel=1e-12)
