"""The C++ symmetry-function kernels on their own (through the build's nnmd_sf_eval
driver): against the Python implementation, against finite differences of themselves,
and the force contraction against the full Jacobian; the parameter validation and the
named limits of both languages against each other.

NNMD_SF_EVAL=path/to/nnmd_sf_eval selects another build of the driver (e.g. the
sanitizer build, cmake -DNNMD_SANITIZE=ON)."""

from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from nnmd_lammps.descriptors import DescriptorCalculator, DescriptorSpec, SymmetryFunction
from nnmd_lammps.errors import NNMDError
from nnmd_lammps.model import make_batch

from conftest import REPO, mixed_functions

DRIVER = Path(os.environ.get("NNMD_SF_EVAL", REPO / "build" / "nnmd_sf_eval")).resolve()
ELEMENTS = ["H", "C", "O"]


@pytest.fixture(scope="module", autouse=True)
def driver_built():
    assert DRIVER.exists(), f"{DRIVER} is missing: run 'make setup'"


def environment(seed: int, n: int = 14, rmax: float = 4.2):
    rng = np.random.default_rng(seed)
    vecs = []
    while len(vecs) < n:
        v = rng.uniform(-rmax, rmax, 3)
        if 0.7 < np.linalg.norm(v) < rmax and all(np.linalg.norm(v - w) > 0.6 for w in vecs):
            vecs.append(v)
    return np.array(vecs), rng.integers(0, len(ELEMENTS), n)


def run_driver(spec: DescriptorSpec, center: str, vecs, elems, mode: str, c=None):
    idx = spec.element_index
    lines = [f"{len(spec.elements)} {spec.num_functions(center)}"]
    for sf in spec.functions[center]:
        e2 = idx[sf.neighbors[1]] if sf.is_angular else -1
        lines.append(
            f"{sf.type} {idx[sf.neighbors[0]]} {e2} {sf.eta!r} {sf.rs!r} {sf.rc!r} "
            f"{sf.lambda_!r} {sf.zeta!r} {sf.cutoff_type} {sf.cutoff_alpha!r}"
        )
    lines.append(str(len(vecs)))
    lines += [
        f"{v[0]!r} {v[1]!r} {v[2]!r} {int(e)}" for v, e in zip(vecs.tolist(), elems, strict=True)
    ]
    lines.append(mode + ("" if c is None else " " + " ".join(repr(float(x)) for x in c)))
    out = subprocess.run(
        [str(DRIVER)], input="\n".join(lines), capture_output=True, text=True, check=True
    ).stdout.splitlines()
    G = np.array(out[0].split(), dtype=float)
    rest = np.array([ln.split() for ln in out[1:]], dtype=float)
    return G, rest


def python_reference(spec: DescriptorSpec, center: str, vecs, elems):
    """G and dG/dd of the central atom from the Python implementation (a cluster with the
    central atom at the origin)."""
    symbols = [center] + [ELEMENTS[e] for e in elems]
    atoms = Atoms(symbols, positions=np.vstack([np.zeros(3), vecs]))
    calc = DescriptorCalculator(spec)
    batch = make_batch([atoms], spec.elements, spec.cutoff)
    desc = calc.compute(batch.species, batch.centers, batch.neighbors, batch.vectors)
    e = spec.element_index[center]
    row = int(torch.nonzero(desc.atoms[e] == 0)[0])
    G = desc.G[e][row].numpy()
    jac = np.zeros((spec.num_functions(center), len(vecs), 3))
    mask = (desc.pair_i[e] == 0).numpy()
    for j, d in zip(desc.pair_j[e].numpy()[mask], desc.dGdd[e].numpy()[mask], strict=True):
        jac[:, j - 1, :] = d
    return G, jac


CASES = [
    (ct, alpha, center)
    for ct, alpha in (
        (0, 0.0),
        (1, 0.0),
        (1, 0.3),
        (2, 0.0),
        (3, 0.0),
        (4, 0.2),
        (5, 0.1),
        (6, 0.0),
        (7, 0.25),
        (8, 0.4),
    )
    for center in ("H", "O")
]


@pytest.mark.parametrize("ctype,alpha,center", CASES)
def test_kernels_match_python(ctype, alpha, center):
    spec = DescriptorSpec(ELEMENTS, mixed_functions(ELEMENTS, 4.0, ctype, alpha))
    vecs, elems = environment(ctype * 10 + int(alpha * 10))
    G_cpp, jac_cpp = run_driver(spec, center, vecs, elems, "jacobian")
    G_py, jac_py = python_reference(spec, center, vecs, elems)
    np.testing.assert_allclose(G_cpp, G_py, rtol=1e-12, atol=1e-14)
    jac_cpp = jac_cpp.reshape(len(G_cpp), len(vecs), 3)
    np.testing.assert_allclose(jac_cpp, jac_py, rtol=1e-10, atol=1e-13)
    assert np.abs(G_py).max() > 0.1 and np.abs(jac_py).max() > 0.01


def test_contraction_equals_jacobian_product():
    spec = DescriptorSpec(ELEMENTS, mixed_functions(ELEMENTS, 4.0, 6, 0.1))
    vecs, elems = environment(7)
    c = np.random.default_rng(1).normal(size=spec.num_functions("C"))
    G1, jac = run_driver(spec, "C", vecs, elems, "jacobian")
    G2, v = run_driver(spec, "C", vecs, elems, "contract", c)
    np.testing.assert_array_equal(G1, G2)
    expect = np.einsum("s,skx->kx", c, jac.reshape(len(c), len(vecs), 3)).ravel()
    np.testing.assert_allclose(v.ravel(), expect, rtol=1e-12, atol=1e-13)


def test_kernel_derivatives_match_finite_differences():
    spec = DescriptorSpec(ELEMENTS, mixed_functions(ELEMENTS, 4.0, 1, 0.0))
    vecs, elems = environment(11, n=8)
    _, jac = run_driver(spec, "O", vecs, elems, "jacobian")
    jac = jac.reshape(-1, len(vecs), 3)
    h = 1e-6
    for k in (0, 3, 7):
        for a in range(3):
            p, m = vecs.copy(), vecs.copy()
            p[k, a] += h
            m[k, a] -= h
            fd = (
                run_driver(spec, "O", p, elems, "jacobian")[0]
                - run_driver(spec, "O", m, elems, "jacobian")[0]
            ) / (2 * h)
            np.testing.assert_allclose(jac[:, k, a], fd, rtol=1e-6, atol=1e-8)


# One symmetry function as the driver reads it (elements H C O as indices 0 1 2) and as
# Python's SymmetryFunction; the cases change one parameter of a valid function.
RADIAL = dict(
    type=2,
    e1=0,
    e2=-1,
    eta=0.1,
    rs=0.5,
    rc=4.0,
    lambda_=0.0,
    zeta=0.0,
    cutoff_type=1,
    cutoff_alpha=0.0,
)
ANGULAR = dict(
    type=3,
    e1=0,
    e2=1,
    eta=0.1,
    rs=0.0,
    rc=4.0,
    lambda_=1.0,
    zeta=2.0,
    cutoff_type=1,
    cutoff_alpha=0.0,
)
INVALID = {
    "type 4": dict(ANGULAR, type=4),
    # Python names neighbours by element; an angular function with one of them is the
    # counterpart of a second neighbour index out of range
    "neighbour index out of range": dict(ANGULAR, e2=-1),
    "rc = 0": dict(RADIAL, rc=0.0),
    "rc inf": dict(RADIAL, rc=math.inf),
    "eta < 0": dict(RADIAL, eta=-0.1),
    "eta nan": dict(ANGULAR, eta=math.nan),
    "rs nan": dict(RADIAL, rs=math.nan),
    "cutoff type 9": dict(RADIAL, cutoff_type=9),
    "alpha = 1": dict(RADIAL, cutoff_type=6, cutoff_alpha=1.0),
    "alpha < 0": dict(ANGULAR, cutoff_alpha=-0.1),
    "lambda 0.5": dict(ANGULAR, lambda_=0.5),
    "zeta 0.5": dict(ANGULAR, type=9, zeta=0.5),
}
VALID = {
    "radial": RADIAL,
    "wide angular": dict(
        ANGULAR, type=9, e1=2, e2=2, lambda_=-1.0, zeta=3.5, cutoff_type=4, cutoff_alpha=0.2
    ),
}


def _driver_accepts(p: dict) -> bool:
    line = " ".join(
        repr(p[k])
        for k in (
            "type",
            "e1",
            "e2",
            "eta",
            "rs",
            "rc",
            "lambda_",
            "zeta",
            "cutoff_type",
            "cutoff_alpha",
        )
    )
    proc = subprocess.run(
        [str(DRIVER)],
        input=f"{len(ELEMENTS)} 1\n{line}\n0\njacobian\n",
        capture_output=True,
        text=True,
    )
    assert proc.returncode in (0, 2), proc.stderr  # not a crash
    return proc.returncode == 0


def _python_accepts(p: dict) -> bool:
    neighbors = tuple(ELEMENTS[e] for e in (p["e1"], p["e2"]) if e >= 0)
    sf = SymmetryFunction(
        p["type"],
        "H",
        neighbors,
        p["eta"],
        p["rc"],
        p["rs"],
        p["lambda_"],
        p["zeta"],
        p["cutoff_type"],
        p["cutoff_alpha"],
    )
    try:
        sf.validate()
    except NNMDError:
        return False
    return True


@pytest.mark.parametrize("case", sorted(INVALID) + sorted(VALID))
def test_parameter_validation_agrees(case):
    """C++ validate() (through the driver) and Python SymmetryFunction.validate() accept
    and reject the same parameters."""
    p = INVALID.get(case) or VALID[case]
    expect = case in VALID
    assert _driver_accepts(p) is expect
    assert _python_accepts(p) is expect


def test_limits_agree_with_python():
    """kernels/limits.h and the Python limits module define the same names and values."""
    from nnmd_lammps.descriptors import limits

    header = (REPO / "lammps_plugin" / "kernels" / "limits.h").read_text()
    cpp = {
        name: float(value)
        for name, value in re.findall(
            r"constexpr\s+(?:int|double)\s+(\w+)\s*=\s*([-+0-9.eE]+)\s*;", header
        )
    }
    assert set(cpp) >= {"MAX_INTEGER_ZETA", "MAX_MOMENT_ORDER", "EXP_CUTOFF_MAX_X"}
    for name, value in cpp.items():
        assert getattr(limits, name) == value, name


def test_driver_rejects_bad_parameters():
    proc = subprocess.run(
        [str(DRIVER)],
        input="1 1\n3 0 0 0.1 0 4.0 0.5 1 1 0\n0\njacobian\n",
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "lambda must be +1 or -1" in proc.stderr


@pytest.mark.parametrize("ctype", [1, 2, 6])
def test_linear_scaling_type9_equals_direct_sum(ctype):
    """The moment-tensor evaluation of type-9 functions (integer zeta) against the direct
    triplet sum, G and all derivatives, in a crowded three-element environment."""
    from ase.build import bulk
    from ase.neighborlist import neighbor_list

    fns = {e: [] for e in ELEMENTS}
    for c in ELEMENTS:
        for i, a in enumerate(ELEMENTS):
            for b in ELEMENTS[i:]:
                for eta in (0.01, 0.07):
                    for zeta in (1.0, 2.0, 4.0, 8.0, 16.0):
                        for lam in (-1.0, 1.0):
                            fns[c].append(
                                SymmetryFunction(9, c, (a, b), eta, 5.5, 0.0, lam, zeta, ctype)
                            )
    spec = DescriptorSpec(ELEMENTS, fns)
    atoms = bulk("Cu", "fcc", a=2.9).repeat(5)
    atoms.rattle(0.1, seed=3)
    i, _, D = neighbor_list("ijD", atoms, 5.5)
    vecs = D[i == 0]
    elems = np.random.default_rng(0).integers(0, 3, len(vecs))
    assert len(vecs) > 60
    G_dir, J_dir = run_driver(spec, "C", vecs, elems, "jacobian-direct")
    G_mom, J_mom = run_driver(spec, "C", vecs, elems, "jacobian-moments")
    # relative to each function's scale sum_{j<k} w_j w_k (>= |G|): the terms of the
    # binomial expansion partly cancel for lambda = -1
    np.testing.assert_allclose(G_mom, G_dir, rtol=1e-12, atol=1e-13 * np.abs(G_dir).max())
    np.testing.assert_allclose(J_mom, J_dir, rtol=1e-10, atol=1e-12 * np.abs(J_dir).max())
    assert np.abs(J_dir).max() > 1e-3


# ---------------------------------------------------------------------------------------
# contract_many (M contractions sharing the c-independent work) and jvp (J u, the
# forward-mode derivative): against looping contract(), the full Jacobian, central finite
# differences of G and the adjoint identity <c, J u> = <J^T c, u>

METHODS = ("", "-direct", "-moments")  # type 9: auto, triplet sums, moment tensors


def all_path_functions(ctype: int, alpha: float, rc: float = 4.0):
    """mixed_functions (radial; types 3 and 9 in groups with a non-integer zeta, which
    only the triplet sums evaluate) plus type-9 groups with integer zeta only (their own
    cutoff radius makes them groups of their own: the ones the moment path evaluates),
    for every centre and neighbour pair, with rs != 0 among them."""
    fns = mixed_functions(ELEMENTS, rc, ctype, alpha)
    for c in ELEMENTS:
        for i, a in enumerate(ELEMENTS):
            for b in ELEMENTS[i:]:
                for eta, lam, zeta, rs in (
                    (0.03, 1.0, 1.0, 0.0),
                    (0.15, -1.0, 2.0, 0.4),
                    (0.03, -1.0, 5.0, 0.0),
                    (0.08, 1.0, 3.0, 0.0),
                ):
                    fns[c].append(
                        SymmetryFunction(9, c, (a, b), eta, rc * 0.95, rs, lam, zeta, ctype, alpha)
                    )
    return fns


def all_path_setup(ctype, alpha, center, n=16):
    spec = DescriptorSpec(ELEMENTS, all_path_functions(ctype, alpha))
    vecs, elems = environment(100 + ctype * 10 + int(alpha * 10), n=n)
    return spec, vecs, elems


def fmt_values(values) -> str:
    return " ".join(repr(float(x)) for x in np.ravel(values))


@pytest.mark.parametrize("cached", [False, True], ids=["nocache", "cache"])
@pytest.mark.parametrize("method", METHODS, ids=["auto", "direct", "moments"])
@pytest.mark.parametrize("ctype,alpha,center", CASES)
def test_contract_many_equals_contract_loop(ctype, alpha, center, method, cached):
    spec, vecs, elems = all_path_setup(ctype, alpha, center)
    S = spec.num_functions(center)
    rng = np.random.default_rng(ctype * 7 + int(alpha * 10))
    c = rng.normal(size=(3, S))
    c[1, rng.choice(S, S // 3, replace=False)] = 0.0  # zero entries are skipped
    tail = "-cached" if cached else ""
    G_many, v_many = run_driver(
        spec, center, vecs, elems, f"contract-many{tail}{method} 3 {fmt_values(c)}"
    )
    assert v_many.shape == (3, 3 * len(vecs))
    for m in range(3):
        G_one, v_one = run_driver(spec, center, vecs, elems, f"contract{tail}{method}", c[m])
        np.testing.assert_array_equal(G_many, G_one)
        scale = np.abs(v_one).max()
        assert scale > 1e-2
        np.testing.assert_allclose(v_many[m], v_one[0], rtol=1e-12, atol=1e-13 * scale)
    # and against J^T c from the Jacobian of the triplet sums (another algorithm)
    _, jac = run_driver(spec, center, vecs, elems, "jacobian-direct")
    expect = np.einsum("ms,sq->mq", c, jac)
    np.testing.assert_allclose(v_many, expect, rtol=1e-10, atol=1e-12 * np.abs(expect).max())


@pytest.mark.parametrize("cached", [False, True], ids=["nocache", "cache"])
@pytest.mark.parametrize("method", METHODS, ids=["auto", "direct", "moments"])
@pytest.mark.parametrize("ctype,alpha,center", CASES)
def test_jvp_equals_jacobian_product_and_adjoint(ctype, alpha, center, method, cached):
    spec, vecs, elems = all_path_setup(ctype, alpha, center)
    S = spec.num_functions(center)
    rng = np.random.default_rng(1000 + ctype * 7 + int(alpha * 10))
    u = rng.normal(size=3 * len(vecs))
    c = rng.normal(size=S)
    tail = "-cached" if cached else ""
    G, dG = run_driver(spec, center, vecs, elems, f"jvp{tail}{method} {fmt_values(u)}")
    dG = dG[0]
    assert dG.shape == (S,)
    # the full Jacobian of the triplet sums (one contract() per function) times u
    G_ref, jac = run_driver(spec, center, vecs, elems, "jacobian-direct")
    np.testing.assert_allclose(G, G_ref, rtol=1e-12, atol=1e-13 * np.abs(G_ref).max())
    expect = jac @ u
    scale = np.abs(jac).sum(axis=1) * np.abs(u).max()  # per function: sum |J_sk u_k| bound
    assert np.abs(expect).max() > 1e-2
    np.testing.assert_array_less(np.abs(dG - expect), 1e-11 * scale + 1e-14)
    # adjoint: <c, J u> = <J^T c, u> with J^T c from contract() of the same method
    _, v = run_driver(spec, center, vecs, elems, f"contract{tail}{method}", c)
    lhs, rhs = float(c @ dG), float(v[0] @ u)
    bound = float(np.abs(c) @ scale)
    assert abs(lhs - rhs) <= 1e-11 * bound, (lhs, rhs, bound)


@pytest.mark.parametrize("method", METHODS, ids=["auto", "direct", "moments"])
@pytest.mark.parametrize("ctype,alpha", [(1, 0.0), (2, 0.0), (4, 0.2), (6, 0.0), (8, 0.4)])
def test_jvp_equals_finite_differences(ctype, alpha, method):
    """dG along u against (G(d + h u) - G(d - h u)) / 2h."""
    spec, vecs, elems = all_path_setup(ctype, alpha, "C", n=12)
    u = np.random.default_rng(5).normal(size=vecs.shape)
    u /= np.linalg.norm(u)
    _, dG = run_driver(spec, "C", vecs, elems, f"jvp{method} {fmt_values(u)}")
    h = 1e-5
    Gp, _ = run_driver(spec, "C", vecs + h * u, elems, f"jvp{method} {fmt_values(u)}")
    Gm, _ = run_driver(spec, "C", vecs - h * u, elems, f"jvp{method} {fmt_values(u)}")
    fd = (Gp - Gm) / (2 * h)
    assert np.abs(fd).max() > 1e-2
    np.testing.assert_allclose(dG[0], fd, rtol=1e-6, atol=1e-8)


def test_all_path_functions_reach_every_evaluation():
    """The spec of the tests above has type-9 groups that only the triplet sums evaluate
    and some that the moments evaluate: forcing moments changes how those are summed
    (bitwise different G) but not the values."""
    spec, vecs, elems = all_path_setup(1, 0.0, "O", n=16)
    G_dir, _ = run_driver(spec, "O", vecs, elems, "jvp-direct " + fmt_values(np.zeros(48)))
    G_mom, _ = run_driver(spec, "O", vecs, elems, "jvp-moments " + fmt_values(np.zeros(48)))
    assert not np.array_equal(G_dir, G_mom)
    np.testing.assert_allclose(G_mom, G_dir, rtol=1e-12, atol=1e-13 * np.abs(G_dir).max())
    types = {sf.type for sf in spec.functions["O"]}
    assert types == {2, 3, 9}
    zetas = {sf.zeta for sf in spec.functions["O"] if sf.type == 9}
    assert any(z != round(z) for z in zetas) and any(z == round(z) for z in zetas)
