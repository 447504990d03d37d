"""Shared fixtures: paths, the reference data directory, small random models, and the
inputs and checks that the operators' tests (test_ops.py, test_cuda_math.py) share."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nnmd_lammps.descriptors import (  # noqa: E402
    DescriptorCalculator,
    DescriptorSpec,
    SymmetryFunction,
    ops,
)
from nnmd_lammps.model import (  # noqa: E402
    ModelDescription,
    NetworkSpec,
    Potential,
    ScalingParams,
    build_hdnnp,
    make_batch,
)

from reference import g_ref  # noqa: E402

requires_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"reference data directory {SHARED_DATA} is absent (it sits beside the checkout)",
)


def mixed_functions(
    elements: list[str], rc: float = 4.5, cutoff_type: int = 1, alpha: float = 0.0
) -> dict[str, list[SymmetryFunction]]:
    """Radial and both angular types for every element and neighbour combination,
    with several eta, rs, lambda and (integer and non-integer) zeta."""
    out: dict[str, list[SymmetryFunction]] = {}
    for c in elements:
        fs = []
        for n in elements:
            for eta, rs in ((0.3, 0.0), (1.1, 1.6), (0.05, 2.5)):
                fs.append(
                    SymmetryFunction(
                        2, c, (n,), eta, rc, rs, cutoff_type=cutoff_type, cutoff_alpha=alpha
                    )
                )
        for a_i, a in enumerate(elements):
            for b in elements[a_i:]:
                for t in (3, 9):
                    for eta, lam, zeta, rs in (
                        (0.05, 1.0, 1.0, 0.0),
                        (0.2, -1.0, 2.0, 0.5),
                        (0.1, 1.0, 4.0, 0.0),
                        (0.02, -1.0, 2.5, 0.0),
                    ):
                        fs.append(
                            SymmetryFunction(
                                t,
                                c,
                                (a, b),
                                eta,
                                rc * (0.9 if t == 3 else 1),
                                rs,
                                lam,
                                zeta,
                                cutoff_type,
                                alpha,
                            )
                        )
        out[c] = fs
    return out


def random_potential(
    elements: list[str],
    seed: int = 0,
    rc: float = 4.5,
    cutoff_type: int = 1,
    alpha: float = 0.0,
    activations=("tanh", "softplus", "identity"),
    hidden=(8, 6),
) -> Potential:
    """A potential with random weights and random (valid) scaling."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    spec = DescriptorSpec(elements, mixed_functions(elements, rc, cutoff_type, alpha))
    desc = ModelDescription()
    for e in elements:
        n = spec.num_functions(e)
        desc.networks[e] = NetworkSpec([n, *hidden, 1], list(activations))
        gmin = rng.uniform(0.0, 0.1, n)
        gmax = gmin + rng.uniform(0.5, 3.0, n)
        desc.scaling[e] = ScalingParams(
            "scale_center",
            -1.0,
            1.0,
            gmin.tolist(),
            gmax.tolist(),
            (0.5 * (gmin + gmax)).tolist(),
            rng.uniform(0.2, 1, n).tolist(),
        )
        desc.energy_shift[e] = float(rng.uniform(-3, -1))
    desc.energy_scale = 0.7
    module = build_hdnnp(elements, desc)
    pot = Potential(spec, module)
    pot.description = desc
    return pot


def save_potential(pot: Potential, path) -> Path:
    """Write a potential built by this module as a model file."""
    from nnmd_lammps.model import save_model

    save_model(path, pot.spec, pot.network, pot.description, {"kind": "test"})
    return Path(path)


def rewrite_metadata(src, dst, edit) -> Path:
    """Copy the model file ``src`` to ``dst`` with ``edit(meta)`` applied to its metadata."""
    import json
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("extra/nnmd.json"):
                meta = json.loads(data)
                edit(meta)
                data = json.dumps(meta).encode()
            zout.writestr(item, data)
    return Path(dst)


def pair_like_potential(
    element: str = "Cu",
    rc: float = 5.0,
    r0: float = 2.55,
    repulsion: float = 20.0,
    depth: float = 0.3,
    angular: float = 0.02,
) -> Potential:
    """A physically sensible model for MD tests: an identity network on two radial
    functions gives a Morse-like pair potential
    phi(r) = [A exp(-r^2) - B exp(-2 (r - r0)^2)] fc(r) (A = repulsion, B = depth), and a
    weak angular term adds three-body forces. Bound fcc crystal near a = sqrt(2) r0."""
    fns = [
        SymmetryFunction(2, element, (element,), 1.0, rc, 0.0, cutoff_type=1),
        SymmetryFunction(2, element, (element,), 2.0, rc, r0, cutoff_type=1),
        SymmetryFunction(9, element, (element, element), 0.5, rc, 0.0, -1.0, 2.0, 1),
    ]
    spec = DescriptorSpec([element], {element: fns})
    desc = ModelDescription(
        {element: NetworkSpec([3, 1], ["identity"])},
        {element: ScalingParams.identity(3)},
        1.0,
        {element: -3.0},
    )
    module = build_hdnnp([element], desc)
    with torch.no_grad():
        lin = module.networks[0].linears[0]
        lin.weight.copy_(
            torch.tensor([[0.5 * repulsion, -0.5 * depth, angular]], dtype=torch.float64)
        )
        lin.bias.zero_()
    pot = Potential(spec, module)
    pot.description = desc
    return pot


@pytest.fixture(scope="session")
def binary_potential() -> Potential:
    return random_potential(["H", "O"], seed=1)


@pytest.fixture(scope="session")
def ternary_potential() -> Potential:
    return random_potential(
        ["C", "N", "Cu"],
        seed=2,
        rc=4.0,
        cutoff_type=6,
        alpha=0.2,
        activations=("sigmoid", "silu", "identity"),
    )


# --- the operators' tests (test_ops.py: the CPU kernels, test_cuda_math.py: the per-atom
# functions of the GPU) --------------------------------------------------------------------

# every cutoff type, with and without an inner cutoff (alpha)
CUTOFFS = [(0, 0.0), (1, 0.0), (1, 0.3), (2, 0.0), (3, 0.0), (4, 0.2), (5, 0.1), (6, 0.0)]
CUTOFFS += [(7, 0.25), (8, 0.4)]

CLUSTER = Atoms(
    "OHCHOC",
    positions=[
        [0.0, 0.0, 0.0],
        [0.96, 0.0, 0.1],
        [-0.3, 0.9, -0.2],
        [1.2, 1.9, 1.1],
        [-1.1, -0.6, 0.8],
        [0.5, -1.2, -0.9],
    ],
)


@pytest.fixture(scope="module")
def library_loaded():
    """For ``pytestmark = pytest.mark.usefixtures("library_loaded")``: the operator library
    must be there (no silent torch fallback)."""
    assert ops.available(), f"operator library missing: {ops.unavailable_reason()}"


def small_cell(seed: int = 3, symbols: str = "HCOH") -> Atoms:
    """A triclinic cell much smaller than the cutoff: many images of every atom,
    including images of the centre itself."""
    cell = np.array([[2.1, 0.0, 0.0], [0.7, 2.3, 0.0], [-0.4, 0.5, 2.2]])
    rng = np.random.default_rng(seed)
    for _ in range(100):
        atoms = Atoms(symbols, scaled_positions=rng.random((len(symbols), 3)), cell=cell, pbc=True)
        if atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)].min() > 0.8:
            return atoms
    raise RuntimeError("could not place atoms")


def finite_difference_functions() -> dict[str, list[SymmetryFunction]]:
    """H and O: every function type, five cutoff types, rc 2.8 to 3.0 (the forces against
    finite differences of the oracle)."""
    return {
        e: [
            SymmetryFunction(2, e, ("H",), 0.4, 3.0, 0.5, cutoff_type=1),
            SymmetryFunction(2, e, ("O",), 0.2, 3.0, 0.0, cutoff_type=7, cutoff_alpha=0.2),
            SymmetryFunction(3, e, ("H", "O"), 0.1, 2.9, 0.0, -1.0, 2.0, 2),
            SymmetryFunction(3, e, ("H", "H"), 0.05, 3.0, 0.3, 1.0, 1.5, 4, 0.1),
            SymmetryFunction(9, e, ("O", "O"), 0.1, 3.0, 0.0, 1.0, 3.0, 6),
            SymmetryFunction(9, e, ("H", "O"), 0.2, 2.8, 0.2, -1.0, 2.5, 5, 0.3),
        ]
        for e in ("H", "O")
    }


def gradcheck_problem() -> tuple[DescriptorSpec, Atoms]:
    """A small problem for gradcheck: five atoms of two elements, every function type."""
    fns = {
        e: [
            SymmetryFunction(2, e, ("H",), 0.4, 3.0, 0.5, cutoff_type=1),
            SymmetryFunction(3, e, ("H", "O"), 0.1, 3.0, 0.0, -1.0, 2.0, 6),
            SymmetryFunction(9, e, ("H", "H"), 0.1, 3.0, 0.0, 1.0, 3.0, 5, 0.2),
            SymmetryFunction(9, e, ("O", "O"), 0.1, 3.0, 0.0, -1.0, 1.5, 4),
        ]
        for e in ("H", "O")
    }
    atoms = Atoms(
        "HOHOH",
        positions=[[0, 0, 0], [1.0, 0.2, 0], [0.1, 1.1, 0.3], [1.2, 1.0, 1.1], [-0.9, 0.4, -0.7]],
    )
    return DescriptorSpec(["H", "O"], fns), atoms


def functions_as_dicts(functions: dict[str, list[SymmetryFunction]]) -> dict:
    """Per-element functions (``spec.functions``) as the oracle (tests/reference.py) takes them."""
    return {e: [sf.to_dict() for sf in fs] for e, fs in functions.items()}


def reference_G(structures, functions: dict[str, list[SymmetryFunction]]) -> list:
    """The oracle's G (tests/reference.py) of every atom of ``structures``, in order."""
    fns = functions_as_dicts(functions)
    out: list = []
    for a in structures:
        out += g_ref(a.get_chemical_symbols(), a.positions, a.cell[:], a.pbc, fns)
    return out


def ops_values(structures, spec, derivatives=False, method=None, backend="ops"):
    """(calculator, batch, values) of ``structures`` through the operators (``method``: the
    operators' evaluation method, default theirs) or the torch ``backend``."""
    calc = DescriptorCalculator(spec, backend=backend)
    if method is not None:
        calc.operators.set_method(method)
    batch = make_batch(structures, spec.elements, spec.cutoff)
    values = calc.compute(
        batch.species, batch.centers, batch.neighbors, batch.vectors, derivatives=derivatives
    )
    return calc, batch, values


def operator_inputs(spec: DescriptorSpec, structures):
    """The operators' object and the CSR batch of ``structures`` (rows by element)."""
    _, _, values = ops_values(structures, spec)
    con = values.contraction
    return con.descriptors, con.csr, con.vectors, values


def reference_energy(atoms: Atoms, spec: DescriptorSpec, c: list[np.ndarray]) -> float:
    """E = sum_i c_i . G_i with the oracle's G (c: per element, (n_e, S_e))."""
    G = reference_G([atoms], spec.functions)
    rows = [0] * len(spec.elements)
    total = 0.0
    for sym, g in zip(atoms.get_chemical_symbols(), G, strict=True):
        e = spec.element_index[sym]
        total += float(np.dot(c[e][rows[e]], g))
        rows[e] += 1
    return total


def finite_difference_forces(
    atoms: Atoms, spec: DescriptorSpec, c: list[np.ndarray], h: float = 1e-5
) -> np.ndarray:
    """-dE/dr of ``reference_energy`` by central differences (n, 3)."""
    fd = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for k in range(3):
            a = atoms.copy()
            a.positions[i, k] += h
            ep = reference_energy(a, spec, c)
            a.positions[i, k] -= 2 * h
            em = reference_energy(a, spec, c)
            fd[i, k] = -(ep - em) / (2 * h)
    return fd


def results_with_threads(desc, csr, d, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(G, J^T c) with one thread, asserted bitwise equal to those with two."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = (ops.symmetry_functions(desc, csr, d)[0], ops.contract(desc, csr, d, c))
        torch.set_num_threads(2)
        two = (ops.symmetry_functions(desc, csr, d)[0], ops.contract(desc, csr, d, c))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    return one


def assert_batch_errors(desc, csr, d) -> None:
    """A pair of zero length and a species that is not an element index raise (on the
    device of the batch)."""
    zero = d.clone()
    zero[5] = 0.0
    with pytest.raises(RuntimeError, match="zero length"):
        ops.symmetry_functions(desc, csr, zero)
    bad = ops.NeighborCSR(csr.species.clone(), csr.offsets, csr.neighbor_species)
    bad.species[0] = 7
    with pytest.raises(RuntimeError, match="not an element index"):
        ops.symmetry_functions(desc, bad, d)


def assert_vector_errors_and_float32(desc, csr, d) -> None:
    """Contraction vectors of the wrong length and a foreign cache raise; float32 pair
    vectors are converted (float64 G)."""
    with pytest.raises(RuntimeError, match="entries per vector"):
        ops.contract(desc, csr, d, torch.zeros(3, dtype=torch.float64))
    T = sum(desc.num_functions(int(e)) for e in csr.species)
    with pytest.raises(RuntimeError, match="cache"):
        ops.contract(
            desc, csr, d, torch.zeros(T, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
        )
    G32 = ops.symmetry_functions(desc, csr, d.float())[0]
    assert G32.dtype == torch.float64
    np.testing.assert_allclose(G32, ops.symmetry_functions(desc, csr, d)[0], rtol=1e-5, atol=1e-6)
