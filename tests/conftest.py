"""Shared fixtures: paths, the reference data directory, small random models."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nnmd_lammps.descriptors import DescriptorSpec, SymmetryFunction  # noqa: E402
from nnmd_lammps.model import (  # noqa: E402
    ModelDescription,
    NetworkSpec,
    Potential,
    ScalingParams,
    build_hdnnp,
)

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
