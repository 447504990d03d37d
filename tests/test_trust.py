"""Trust in predictions (docs/uncertainty.md), Python side: the training range in the
model file and extrapolation reports, committees and their deviations, the repulsion
baseline in training and prediction, and their errors. LAMMPS agreement is tested in
test_lammps_trust.py."""

from __future__ import annotations

import json
import sys

import ase.io
import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from nnmd_lammps import NNMDCalculator
from nnmd_lammps.cli import main as nnmd_main
from nnmd_lammps.descriptors import DescriptorSpec
from nnmd_lammps.descriptors.extrapolation import TrainingRange
from nnmd_lammps.errors import NNMDError
from nnmd_lammps.model import (
    HDNNP,
    ModelDescription,
    NetworkSpec,
    Potential,
    ScalingParams,
    build_hdnnp,
    load_model,
    make_batch,
    read_metadata,
    save_model,
)
from nnmd_lammps.training import config_from_dict, train

from conftest import SHARED_DATA, mixed_functions, requires_shared_data, rewrite_metadata

ELEMENTS = ["Cu", "Ag"]


def structure(seed: int = 0, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    a = bulk("Cu", "fcc", a=3.7 * scale, cubic=True).repeat((2, 1, 1))
    symbols = a.get_chemical_symbols()
    for i in rng.choice(len(a), 3, replace=False):
        symbols[i] = "Ag"
    a.set_chemical_symbols(symbols)
    a.rattle(0.1, seed=seed)
    return a


def committee_description(spec: DescriptorSpec, size: int) -> ModelDescription:
    desc = ModelDescription(committee=size)
    for e in ELEMENTS:
        n = spec.num_functions(e)
        desc.networks[e] = NetworkSpec([n, 6, 1], ["tanh", "identity"])
        desc.scaling[e] = ScalingParams(
            "scale", -1.0, 1.0, [0.0] * n, [2.0] * n, [1.0] * n, [1.0] * n
        )
        desc.energy_shift[e] = -2.0
    desc.energy_scale = 0.5
    return desc


@pytest.fixture(scope="module")
def committee_model(tmp_path_factory):
    """A random committee of 3 with the training range of a few structures, saved."""
    torch.manual_seed(4)
    spec = DescriptorSpec(ELEMENTS, mixed_functions(ELEMENTS, rc=4.2))
    desc = committee_description(spec, 3)
    module = build_hdnnp(ELEMENTS, desc)
    train_set = [structure(s) for s in range(4)]
    pot = Potential(spec, module, description=desc)
    values = pot.descriptors_of(train_set, derivatives=False)[1]
    desc.training_range = {e: TrainingRange.of(values.G[k]) for k, e in enumerate(ELEMENTS)}
    path = tmp_path_factory.mktemp("committee") / "c.pt"
    save_model(path, spec, module, desc, {"kind": "test"})
    return path, train_set


def members(path) -> list[Potential]:
    """Each committee member as a single-network potential."""
    loaded = load_model(path)
    desc = loaded.description
    module = build_hdnnp(ELEMENTS, desc)  # the same architecture, weights copied below
    out = []
    for m in range(desc.committee):
        nets = [module.networks[k].members[m] for k in range(len(ELEMENTS))]
        state = {k: v for k, v in loaded.module.state_dict().items()}
        for k in range(len(ELEMENTS)):
            prefix = f"networks.{k}.members.{m}."
            nets[k].load_state_dict(
                {key[len(prefix) :]: v for key, v in state.items() if key.startswith(prefix)}
            )
        single = ModelDescription(desc.networks, desc.scaling, desc.energy_scale, desc.energy_shift)
        out.append(Potential(loaded.spec, HDNNP(ELEMENTS, nets), description=single))
    return out


def test_committee_mean_equals_members_one_by_one(committee_model):
    path, _train_set = committee_model
    pot = Potential.load(path)
    assert pot.committee_size == 3
    atoms = [structure(10), structure(11, scale=0.97)]
    preds = pot.evaluate(atoms, uncertainty=True)
    singles = [m.evaluate(atoms) for m in members(path)]
    for k, p in enumerate(preds):
        e = np.array([s[k].energy for s in singles])
        f = np.array([s[k].forces for s in singles])
        ea = np.array([s[k].atomic_energies for s in singles])
        assert p.energy == pytest.approx(e.mean(), abs=1e-10)
        np.testing.assert_allclose(p.forces, f.mean(0), atol=1e-10)
        # deviations by a direct NumPy computation from the members
        sigma_f = np.sqrt(((f - f.mean(0)) ** 2).sum(2).mean(0))
        np.testing.assert_allclose(p.force_deviation, sigma_f, atol=1e-10)
        np.testing.assert_allclose(p.energy_deviation, ea.std(0), atol=1e-10)
        assert p.max_force_deviation == pytest.approx(sigma_f.max(), abs=1e-10)
        assert sigma_f.max() > 1e-3  # the members differ
    # without uncertainty: the same mean, no deviations
    plain = pot.evaluate(atoms)
    assert plain[0].force_deviation is None
    np.testing.assert_allclose(plain[0].forces, preds[0].forces, atol=1e-12)


def test_extrapolation_flags_compressed_structures_only(committee_model):
    path, train_set = committee_model
    pot = Potential.load(path)
    for p in pot.evaluate(train_set):
        assert p.extrapolation_count.sum() == 0  # training structures are never flagged
        assert np.all(p.extrapolation_excursion == 0)
    squeezed = structure(0, scale=0.85)
    (p,) = pot.evaluate([squeezed])
    # independent count from the symmetry functions and the stored range (NumPy)
    meta = read_metadata(path)
    values = pot.descriptors_of([squeezed], derivatives=False)[1]
    for k, e in enumerate(ELEMENTS):
        lo = np.array(meta["training_range"][e]["min"])
        hi = np.array(meta["training_range"][e]["max"])
        G = values.G[k].numpy()
        width = np.where(hi > lo, hi - lo, 1.0)
        exc = np.maximum((lo - G) / width, (G - hi) / width)
        atoms = values.atoms[k].numpy()
        np.testing.assert_array_equal(p.extrapolation_count[atoms], (exc > 1e-8).sum(1))
        np.testing.assert_allclose(
            p.extrapolation_excursion[atoms], np.maximum(exc.max(1), 0.0), rtol=1e-12
        )
        np.testing.assert_array_equal(p.extrapolation_worst[atoms], exc.argmax(1))
    assert p.extrapolation_count.sum() > 0


def test_version_1_model_files_still_load(committee_model, tmp_path, binary_potential):
    from conftest import save_potential

    path = save_potential(binary_potential, tmp_path / "v2.pt")

    def as_version_1(meta):
        meta["format_version"] = 1
        for key in ("committee", "training_range", "repulsion"):
            meta.pop(key)

    old = rewrite_metadata(path, tmp_path / "v1.pt", as_version_1)
    pot = Potential.load(old)
    assert pot.training_range is None and pot.committee_size == 1 and pot.repulsion is None
    atoms = structure(1)
    atoms.set_chemical_symbols(["H", "O"] * 4)
    (p,) = pot.evaluate([atoms])
    assert p.extrapolation_count is None
    (q,) = Potential.load(path).evaluate([atoms])
    assert p.energy == q.energy


def test_malformed_trust_metadata_is_an_error(committee_model, tmp_path):
    path, _ = committee_model
    cases = [
        (lambda m: m.update(committee=0), "committee must be a positive integer"),
        (lambda m: m["training_range"]["Cu"]["min"].pop(), "training_range.Cu.min"),
        (lambda m: m["training_range"].pop("Ag"), "one entry per element"),
        (lambda m: m.update(repulsion={"type": "lj"}), "repulsion"),
        (lambda m: m.update(committee=2), "committee of 3"),
    ]
    for k, (edit, needle) in enumerate(cases):
        bad = rewrite_metadata(path, tmp_path / f"bad{k}.pt", edit)
        with pytest.raises(NNMDError, match=needle):
            Potential.load(bad)


def test_uncertainty_needs_a_committee(binary_potential):
    atoms = structure(0)
    atoms.set_chemical_symbols(["H", "O"] * 4)
    with pytest.raises(NNMDError, match="committee"):
        binary_potential.evaluate([atoms], uncertainty=True)
    with pytest.raises(NNMDError, match="committee"):
        NNMDCalculator(binary_potential, uncertainty=True)


def test_ase_calculator_reports_trust(committee_model):
    path, _train_set = committee_model
    atoms = structure(0, scale=0.85)
    atoms.calc = NNMDCalculator(path, uncertainty=True)
    dev = atoms.calc.get_property("force_deviation", atoms)
    count = atoms.calc.get_property("extrapolation_count", atoms)
    (p,) = Potential.load(path).evaluate([atoms], uncertainty=True)
    np.testing.assert_array_equal(count, p.extrapolation_count)
    np.testing.assert_allclose(dev, p.force_deviation, atol=1e-12)
    plain = NNMDCalculator(path)
    with pytest.raises(Exception, match="uncertainty=True"):
        plain.get_property("force_deviation", atoms)


@requires_shared_data
@pytest.mark.slow
def test_water_flags_the_atoms_n2p2_would(tmp_path):
    """n2p2's own check: an atom extrapolates when a raw symmetry function lies outside
    [Gmin, Gmax] of scaling.data. Implemented here from the file, on a rattled box."""
    from nnmd_lammps.data import read_input_data
    from nnmd_lammps.interop.n2p2 import import_n2p2
    from nnmd_lammps.model import model_from_weights

    d = SHARED_DATA / "n2p2" / "H2O_RPBE-D3"
    imported = import_n2p2(d, units.Bohr, units.Hartree)
    module = model_from_weights(imported.spec, imported.description, imported.weights)
    pot = Potential(imported.spec, module, description=imported.description)
    (box,) = read_input_data(d / "input.data", units.Bohr, units.Hartree)
    box.rattle(0.15, seed=1)  # about one atom in six leaves the range
    (p,) = pot.evaluate([box], forces=False, stress=False)
    rows = [
        ln.split()
        for ln in (d / "scaling.data").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    bounds = {}
    for r in rows:
        if len(r) >= 5:
            bounds.setdefault(int(r[0]), []).append((float(r[2]), float(r[3])))
    values = pot.descriptors_of([box], derivatives=False)[1]
    flagged = np.zeros(len(box), dtype=int)
    for k, _e in enumerate(imported.spec.elements):  # n2p2 element index k + 1
        lo, hi = np.array(bounds[k + 1]).T
        G = values.G[k].numpy()
        flagged[values.atoms[k].numpy()] = ((G < lo) | (G > hi)).sum(1)
    assert 0 < (flagged > 0).sum() < len(box)
    np.testing.assert_array_equal(p.extrapolation_count, flagged)


def emt_data(tmp_path, n: int = 16):
    rng = np.random.default_rng(2)
    out = []
    for _ in range(n):
        a = structure(int(rng.integers(1 << 20)), scale=1 + rng.uniform(-0.03, 0.03))
        a.calc = EMT()
        e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
        out.append(a)
    path = tmp_path / "train.extxyz"
    ase.io.write(path, out)
    return path


def small_config(data, **network) -> dict:
    return {
        "cutoff": 4.2,
        "data": {"train": str(data), "validation_fraction": 0.25},
        "descriptors": {"radial": 3, "angular": 4, "prune": False},
        "network": {"hidden": [6], **network},
        "training": {"epochs": 4, "batch_size": 4, "learning_rate": 0.01, "seed": 1},
    }


@pytest.fixture(scope="module")
def trained_committee(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    data = emt_data(tmp)
    cfg = small_config(
        data, committee=2, bootstrap=True, repulsion={"type": "zbl", "inner": 1.0, "outer": 2.4}
    )
    out = tmp / "run"
    train(config_from_dict(cfg, tmp), out)
    return data, out


def test_trained_committee_model_file(trained_committee):
    data, out = trained_committee
    meta = read_metadata(out / "model.pt")
    assert meta["format_version"] == 2 and meta["committee"] == 2
    assert meta["repulsion"] == {"type": "zbl", "inner": 1.0, "outer": 2.4}
    pot = Potential.load(out / "model.pt")
    structures = ase.io.read(data, ":")
    # the seeded split: validation first (25%), the rest trains
    from nnmd_lammps.data import random_split

    train_idx = random_split(len(structures), [0.25, 0.0, 0.75], seed=1)[2]
    for p in pot.evaluate([structures[k] for k in train_idx]):
        assert p.extrapolation_count.sum() == 0


def test_repulsion_is_added_to_the_trained_residual(trained_committee):
    """The model = networks (trained on the residual) + ZBL: the ZBL part of a prediction
    equals the repulsion computed on its own (outer 2.4 A reaches the nearest neighbours
    of the compressed cells, so it matters here)."""
    _data, out = trained_committee
    from nnmd_lammps.model.repulsion import ZBLRepulsion

    pot = Potential.load(out / "model.pt")
    atoms = structure(3, scale=0.9)
    (with_rep,) = pot.evaluate([atoms])
    pot.description.repulsion = None
    (without,) = pot.evaluate([atoms])
    rep = ZBLRepulsion(1.0, 2.4)
    z = torch.tensor(atoms.get_atomic_numbers())
    b = make_batch([atoms], ELEMENTS, 2.4)
    r = rep.evaluate(z, b.centers, b.neighbors, b.vectors, len(atoms))
    assert float(r.energies.sum()) > 1e-3
    assert with_rep.energy - without.energy == pytest.approx(float(r.energies.sum()), rel=1e-12)
    np.testing.assert_allclose(with_rep.forces - without.forces, r.forces.numpy(), atol=1e-10)


def test_cli_reports_trust(trained_committee, tmp_path, capsys):
    data, out = trained_committee
    assert nnmd_main(["test", str(out / "model.pt"), str(data), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["committee"] == 2
    assert -1.0 <= m["force_deviation_error_pearson"] <= 1.0
    assert 0.0 <= m["extrapolating_atom_fraction"] < 1.0
    pred = tmp_path / "p.extxyz"
    assert (
        nnmd_main(["predict", str(out / "model.pt"), str(data), "-o", str(pred), "--uncertainty"])
        == 0
    )
    frames = ase.io.read(pred, ":")
    direct = Potential.load(out / "model.pt").evaluate(ase.io.read(data, ":"), uncertainty=True)
    for fr, p in zip(frames, direct, strict=True):
        np.testing.assert_array_equal(fr.arrays["extrapolation_count"], p.extrapolation_count)
        # extended XYZ keeps 8 decimals
        np.testing.assert_allclose(fr.arrays["force_deviation"], p.force_deviation, atol=1e-8)


@pytest.mark.parametrize(
    "network,needle",
    [
        ({"committee": 0}, "network.committee' must be >= 1"),
        ({"bootstrap": True}, "network.bootstrap' needs network.committee"),
        ({"repulsion": "lj"}, "network.repulsion.type' must be 'zbl'"),
        ({"repulsion": {"type": "zbl", "innr": 1.0}}, "network.repulsion.innr"),
        ({"repulsion": {"type": "zbl", "inner": 2.0, "outer": 1.0}}, "inner must be smaller"),
        ({"repulsion": {"type": "zbl", "inner": 1.0}}, "go together"),
    ],
)
def test_trust_config_errors(tmp_path, network, needle):
    with pytest.raises(NNMDError, match=needle):
        config_from_dict(small_config(tmp_path / "x.extxyz", **network), tmp_path)


def test_committee_of_one_trains_bit_identically_to_a_single_network(tmp_path):
    """committee: 1 is the single network of before: the same weights, bit for bit."""
    data = emt_data(tmp_path, n=8)
    a = train(config_from_dict(small_config(data), tmp_path), tmp_path / "a")
    b = train(config_from_dict(small_config(data, committee=1), tmp_path), tmp_path / "b")
    sa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model_state"]
    sb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model_state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["validation"] == b["validation"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
