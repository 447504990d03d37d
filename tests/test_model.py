"""Networks, activations, scaling and the model file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nnmd_lammps.errors import NNMDError
from nnmd_lammps.model import (
    ACTIVATIONS,
    HDNNP,
    ElementNetwork,
    NetworkSpec,
    Potential,
    ScalingParams,
    activation,
    load_model,
    read_metadata,
    save_model,
    script,
)

from conftest import rewrite_metadata, save_potential
from reference import act_ref, mlp_ref


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_values_and_derivatives(name):
    x = torch.cat([torch.linspace(-40, 40, 161), torch.linspace(-3, 3, 121)]).double()
    y, dy = activation(name, x)
    np.testing.assert_allclose(y.numpy(), act_ref(name, x.numpy()), rtol=1e-14, atol=1e-15)
    h = 1e-6
    fd = (act_ref(name, x.numpy() + h) - act_ref(name, x.numpy() - h)) / (2 * h)
    away = np.abs(np.abs(x.numpy()) - 35.0) > 1e-3  # n2p2's saturation points are kinks
    np.testing.assert_allclose(dy.numpy()[away], fd[away], rtol=1e-6, atol=1e-9)


def test_n2p2_saturation_limits():
    x = torch.tensor([36.0, -36.0], dtype=torch.float64)
    assert activation("softplus", x)[0].tolist() == [36.0, 0.0]
    assert activation("sigmoid", x)[0].tolist() == [1.0, 0.0]
    assert activation("sigmoid", x)[1].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("kind", ["none", "scale", "center", "scale_center", "sigma"])
def test_scaling_variants(kind):
    gmin, gmax, gmean, gsig = [0.5, 1.0], [2.5, 5.0], [1.0, 2.0], [0.25, 2.0]
    sp = ScalingParams(kind, -1.0, 1.0, gmin, gmax, gmean, gsig)
    net = ElementNetwork(NetworkSpec([2, 1], ["identity"]), sp, 1.0, 0.0)
    g = torch.tensor([[1.5, 3.0]], dtype=torch.float64)
    got = net.scaled_input(g)[0].tolist()
    G = np.array([1.5, 3.0])
    expect = {
        "none": G,
        "scale": -1 + 2 * (G - gmin) / (np.array(gmax) - gmin),
        "center": G - gmean,
        "scale_center": -1 + 2 * (G - gmean) / (np.array(gmax) - gmin),
        "sigma": -1 + 2 * (G - gmean) / np.array(gsig),
    }[kind]
    assert got == pytest.approx(expect.tolist(), rel=1e-15)


def test_constant_function_cannot_be_scaled():
    with pytest.raises(NNMDError, match="cannot be scaled"):
        ScalingParams("scale", 0, 1, [1.0], [1.0], [1.0], [0.0]).affine()


@pytest.mark.parametrize("normalize", [False, True])
def test_network_matches_reference_and_backprop_matches_autograd(normalize):
    torch.manual_seed(0)
    acts = ["tanh", "softplus", "sigmoid", "silu", "shifted_softplus", "identity"]
    spec = NetworkSpec([6, 7, 5, 4, 4, 3, 1], acts, normalize)
    rng = np.random.default_rng(0)
    sp = ScalingParams(
        "scale",
        0.0,
        1.0,
        rng.random(6).tolist(),
        (2 + rng.random(6)).tolist(),
        [0.0] * 6,
        [1.0] * 6,
    )
    net = ElementNetwork(spec, sp, 1.7, -0.3)
    scripted = script(HDNNP(["Si"], [net]))
    g = torch.tensor(rng.random((9, 6)) * 3, dtype=torch.float64, requires_grad=True)
    e_auto = net(g)
    (grad_auto,) = torch.autograd.grad(e_auto.sum(), g)
    with torch.no_grad():
        e, grad = scripted.energy_and_gradient(0, g.detach())
    layers = [(lin.weight.detach().numpy(), lin.bias.detach().numpy()) for lin in net.linears]
    x = net.scaled_input(g.detach()).numpy()
    ref = 1.7 * mlp_ref(layers, acts, x, normalize) - 0.3
    np.testing.assert_allclose(e.numpy(), ref, rtol=1e-13)
    np.testing.assert_allclose(e.numpy(), e_auto.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(grad.numpy(), grad_auto.numpy(), rtol=1e-12, atol=1e-14)


def test_model_file_round_trip(tmp_path, binary_potential):
    from ase import Atoms

    from nnmd_lammps.model import ModelDescription

    pot = binary_potential
    desc = ModelDescription()
    for i, e in enumerate(pot.elements):
        net = pot.network.networks[i]
        desc.networks[e] = NetworkSpec(
            [lin.in_features for lin in net.linears] + [1], list(net.activations)
        )
        desc.scaling[e] = ScalingParams.identity(pot.spec.num_functions(e))
    path = tmp_path / "m.pt"
    save_model(path, pot.spec, pot.network, desc, {"kind": "test"})
    meta = read_metadata(path)
    assert meta["elements"] == ["H", "O"]
    assert meta["units"] == {"length": "Angstrom", "energy": "eV"}
    assert meta["cutoff"] == pytest.approx(4.5)
    assert len(meta["symmetry_functions"]["O"]) == pot.spec.num_functions("O")
    loaded = Potential.load(path)
    atoms = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.3, 0.9, 0.1]])
    a, b = pot.evaluate([atoms])[0], loaded.evaluate([atoms])[0]
    assert a.energy == b.energy
    np.testing.assert_array_equal(a.forces, b.forces)


def test_loading_rejects_non_model_files(tmp_path):
    p = tmp_path / "pickle.pt"
    torch.save({"a": 1}, p)  # a plain torch pickle: not loaded, not executed
    with pytest.raises(NNMDError, match="not an nnmd-lammps model"):
        load_model(p)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(NNMDError, match="not an nnmd-lammps model"):
        load_model(tmp_path / "text.pt")
    with pytest.raises(NNMDError, match="not found"):
        load_model(tmp_path / "missing.pt")


def test_metadata_version_is_checked(tmp_path, binary_potential):
    path = save_potential(binary_potential, tmp_path / "m.pt")
    # rewrite the archive with a future format version
    bad = rewrite_metadata(
        path, tmp_path / "future.pt", lambda meta: meta.update(format_version=99)
    )
    with pytest.raises(NNMDError, match="format version 99"):
        load_model(bad)


def test_metadata_with_nan_is_rejected(tmp_path, binary_potential):
    """Strict JSON: a NaN written into the metadata (by another tool) is refused, and our
    own writer never produces one."""
    path = save_potential(binary_potential, tmp_path / "m.pt")
    meta = read_metadata(path)
    assert "NaN" not in json.dumps(meta)
    bad = rewrite_metadata(
        path, tmp_path / "nan.pt", lambda m: m["energy"].update(scale=float("nan"))
    )
    with pytest.raises(NNMDError, match="corrupt model metadata"):
        read_metadata(bad)
    binary_potential.description.energy_scale = float("nan")
    try:
        with pytest.raises(ValueError, match="JSON compliant"):
            save_potential(binary_potential, tmp_path / "never.pt")
    finally:
        binary_potential.description.energy_scale = 0.7
    assert not (tmp_path / "never.pt").exists()
