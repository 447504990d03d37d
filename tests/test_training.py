"""Training: data readers, configuration, descriptor generation, the training loop,
checkpoints and resume, determinism, export to LAMMPS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from nnmd_lammps.data import (
    Dataset,
    random_split,
    read_structures,
    stratified_split,
    write_input_data,
)
from nnmd_lammps.descriptors import GridSettings, angular_grid, generate, prune, radial_grid
from nnmd_lammps.errors import NNMDError
from nnmd_lammps.model import Potential
from nnmd_lammps.training import config_from_dict, fit_reference_energies, load_config


def emt_structures(n: int, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        a = bulk("Cu", "fcc", a=3.6 * (1 + rng.uniform(-0.03, 0.03)), cubic=True).repeat(
            (2, 1, 1) if k % 2 else (1, 2, 1)
        )
        a.rattle(0.08, seed=int(rng.integers(1 << 30)))
        a.calc = EMT()
        e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
        out.append(a)
    return out


@pytest.fixture(scope="module")
def cu_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cu")
    import ase.io

    ase.io.write(d / "train.extxyz", emt_structures(24, seed=1))
    return d / "train.extxyz"


def tiny_config(data: Path, **training) -> dict:
    return {
        "cutoff": 4.0,
        "data": {"train": str(data), "validation_fraction": 0.2},
        "descriptors": {"radial": 4, "angular": 4, "prune": False},
        "network": {"hidden": [8]},
        "training": {"epochs": 6, "batch_size": 4, "learning_rate": 0.01, "seed": 3, **training},
    }


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


NNMD = [sys.executable, "-m", "nnmd_lammps.cli"]


# -- data --------------------------------------------------------------------------------------


def test_readers_agree(tmp_path):
    """The same structures through extxyz, n2p2 input.data, mlearn JSON and an ASE
    database give the same dataset."""
    import ase.db
    import ase.io

    structures = emt_structures(3)
    ase.io.write(tmp_path / "s.extxyz", structures)
    write_input_data(tmp_path / "input.data", structures)
    entries = []
    for a in structures:
        entries.append(
            {
                "structure": {
                    "lattice": {"matrix": a.cell.array.tolist()},
                    "sites": [
                        {"species": [{"element": s, "occu": 1}], "xyz": p.tolist()}
                        for s, p in zip(a.get_chemical_symbols(), a.positions, strict=True)
                    ],
                },
                "outputs": {
                    "energy": a.get_potential_energy(),
                    "forces": a.get_forces().tolist(),
                    "virial_stress": [0, 0, 0, 0, 0, 0],
                },
                "num_atoms": len(a),
                "group": "test",
            }
        )
    (tmp_path / "s.json").write_text(json.dumps(entries))
    with ase.db.connect(tmp_path / "s.db") as db:
        for a in structures:
            db.write(a)
    sets = {}
    for name, fmt in (("s.extxyz", None), ("input.data", "n2p2"), ("s.json", None), ("s.db", None)):
        ds = Dataset.from_structures(read_structures(tmp_path / name, fmt))
        sets[name] = ds
    ref = Dataset.from_structures(structures)
    for name, ds in sets.items():
        tol = 1e-7 if name == "s.extxyz" else 1e-12  # extxyz keeps 8 decimals
        assert len(ds) == 3, name
        np.testing.assert_allclose(ds.energy, ref.energy, rtol=1e-12, atol=tol, err_msg=name)
        for f, g in zip(ds.forces, ref.forces, strict=True):
            np.testing.assert_allclose(f, g, atol=tol, err_msg=name)
        for a, b in zip(ds.structures, ref.structures, strict=True):
            np.testing.assert_allclose(a.positions, b.positions, atol=tol, err_msg=name)
    assert sets["s.extxyz"].stress[0] is not None  # extxyz keeps the EMT stress
    mlearn = read_structures(tmp_path / "s.json")
    assert all(
        np.array_equal(x, np.zeros((3, 3))) for x in Dataset.from_structures(mlearn).stress
    )  # auto: mlearn's virial
    assert all(x is None for x in Dataset.from_structures(mlearn, stress_from="none").stress)
    assert all(x is None for x in Dataset.from_structures(structures, stress_from="none").stress)
    with pytest.raises(NNMDError, match="stress_from"):
        Dataset.from_structures(structures, stress_from="nothing")


def test_units_are_converted(tmp_path):
    structures = emt_structures(1)
    write_input_data(tmp_path / "input.data", structures)  # values written as given
    from ase.units import Bohr, Hartree

    s = read_structures(tmp_path / "input.data", "n2p2", "bohr", "hartree")[0]
    np.testing.assert_allclose(s.positions, structures[0].positions * Bohr)
    assert s.get_potential_energy() == pytest.approx(structures[0].get_potential_energy() * Hartree)
    np.testing.assert_allclose(s.get_forces(), structures[0].get_forces() * Hartree / Bohr)


def test_missing_energy_is_an_error(tmp_path):
    import ase.io

    ase.io.write(tmp_path / "noe.extxyz", Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]]))
    with pytest.raises(NNMDError, match="no reference energy"):
        Dataset.from_structures(read_structures(tmp_path / "noe.extxyz"), "noe.extxyz")


def test_random_split_is_disjoint_and_seeded():
    a = random_split(50, [0.2, 0.1, 0.7], seed=4)
    b = random_split(50, [0.2, 0.1, 0.7], seed=4)
    assert [len(x) for x in a] == [10, 5, 35]
    assert sorted(np.concatenate(a).tolist()) == list(range(50))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], random_split(50, [0.2, 0.1, 0.7], seed=5)[0])


def test_stratified_split_keeps_groups_in_proportion():
    """Each group gives each set round(f n_g) structures (here 12 -> 1, 57 -> 6, 90 -> 9
    of a 10 % validation set, by hand), whatever the seed; disjoint, complete, seeded."""
    labels = ["surface"] * 12 + ["elastic"] * 57 + ["aimd"] * 90
    rng = np.random.default_rng(0)
    labels = [labels[i] for i in rng.permutation(len(labels))]
    expected = {"surface": 1, "elastic": 6, "aimd": 9}
    first = {}
    for seed in (1, 2, 3):
        val, train = stratified_split(labels, [0.1, 0.9], seed)
        counts = {g: sum(labels[i] == g for i in val) for g in expected}
        assert counts == expected
        assert sorted(np.concatenate([val, train]).tolist()) == list(range(len(labels)))
        assert np.array_equal(val, stratified_split(labels, [0.1, 0.9], seed)[0])
        first[seed] = val
    assert not np.array_equal(first[1], first[2])
    # three sets: the last takes the rest of each group
    a, b, c = stratified_split(labels, [0.2, 0.1, 0.7], 5)
    assert [len(a), len(b), len(c)] == [2 + 11 + 18, 1 + 6 + 9, 9 + 40 + 63]
    with pytest.raises(NNMDError, match="fractions"):
        stratified_split(labels, [0.6, 0.6], 1)


def test_stratify_config(tmp_path, cu_data):
    """data.stratify splits the training file by an info key; a missing key or a bad
    value is an error naming data.stratify."""
    import ase.io

    from nnmd_lammps.training.datasets import load_datasets

    structures = ase.io.read(cu_data, ":")
    for k, a in enumerate(structures):
        a.info["config_type"] = "rare" if k < 5 else "bulk"
    ase.io.write(tmp_path / "typed.extxyz", structures)
    cfg = tiny_config(tmp_path / "typed.extxyz")
    cfg["data"]["stratify"] = "config_type"
    for seed in range(1, 7):  # a random split of 24 gives 1 "rare" in 5 with p = 0.46
        cfg["training"]["seed"] = seed
        sets = load_datasets(config_from_dict(cfg, tmp_path), lambda msg: None)
        types = [a.info["config_type"] for a in sets["validation"].structures]
        assert sorted(types) == ["bulk"] * 4 + ["rare"]  # round(0.2 * 19), round(0.2 * 5)
        assert len(sets["train"]) == 24 - 5
    cfg["data"]["train"] = str(cu_data)  # no config_type there
    with pytest.raises(NNMDError, match=r"'data\.stratify': 24 training structures"):
        load_datasets(config_from_dict(cfg, tmp_path), lambda msg: None)
    cfg["data"]["stratify"] = 3
    with pytest.raises(NNMDError, match=r"'data\.stratify' must be a string"):
        config_from_dict(cfg, tmp_path)
    cfg["data"]["stratify"] = " "
    with pytest.raises(NNMDError, match=r"'data\.stratify' must name an atoms\.info key"):
        config_from_dict(cfg, tmp_path)


def test_reference_energies_least_squares():
    mu = {"Cu": -3.5, "Ag": -2.25}
    structures = []
    for n_cu, n_ag in ((3, 1), (1, 3), (2, 2), (4, 0)):
        a = Atoms(f"Cu{n_cu}Ag{n_ag}", positions=np.arange(3 * (n_cu + n_ag)).reshape(-1, 3))
        a.calc = SinglePointCalculator(a, energy=n_cu * mu["Cu"] + n_ag * mu["Ag"])
        structures.append(a)
    fitted, _ = fit_reference_energies(Dataset.from_structures(structures), ["Cu", "Ag"])
    assert fitted["Cu"] == pytest.approx(-3.5, abs=1e-12)
    assert fitted["Ag"] == pytest.approx(-2.25, abs=1e-12)


# -- descriptors -----------------------------------------------------------------------------------


def test_generated_grids():
    rad = radial_grid(1.0, 5.0, 4)
    assert [rs for _, rs in rad] == pytest.approx([1.0, 2.0, 3.0, 4.0])
    assert all(eta == pytest.approx(0.5) for eta, _ in rad)
    ang = angular_grid(1.0, 5.0, 10)
    assert len(ang) == 10 and len({(e, z, lam) for e, z, lam in ang}) == 10
    assert {lam for _, _, lam in ang} == {-1.0, 1.0}
    # m = ceil(10 / 8) = 2 widths; centred: r = 1 + 4/3, 1 + 8/3; inner: r = 1, 3 (from r_min)
    assert sorted({e for e, _, _ in ang}) == pytest.approx(
        [1 / (2 * (1 + 8 / 3) ** 2), 1 / (2 * (1 + 4 / 3) ** 2)]
    )
    inner = angular_grid(1.0, 5.0, 10, "inner")
    assert sorted({e for e, _, _ in inner}) == pytest.approx([1 / 18, 1 / 2])
    assert angular_grid(1.0, 5.0, 10, "both") == ang + inner
    with pytest.raises(NNMDError, match="angular_widths"):
        angular_grid(1.0, 5.0, 10, "wide")
    spec = generate(["O", "H"][::-1], GridSettings(5.0, 3, 2, 0.8))
    # per centre: 2 neighbour elements x 3 radial + 3 element pairs x 2 angular
    assert spec.num_functions("H") == 12 and spec.num_functions("O") == 12


def test_shifted_angular_grid():
    """The shifted grid: m = ceil(n/8) shells at r_min + k d, d = (rc - r_min)/m, width
    eta = 1/(2 d^2), each with zeta (1, 2, 4, 8) x lambda (-1, +1), the first n; ``all``
    is the centred and inner grids (rs = 0) followed by the shifted one, and generate()
    passes each function's rs on."""
    from nnmd_lammps.descriptors.generation import angular_parameters, shifted_angular_grid

    sh = shifted_angular_grid(1.0, 5.0, 10)  # m = 2 shells: rs 1 and 3, d = 2
    assert len(sh) == 10
    assert [rs for _, rs, _, _ in sh] == pytest.approx([1.0] * 8 + [3.0] * 2)
    assert [eta for eta, _, _, _ in sh] == pytest.approx([0.125] * 10)
    assert [(z, lam) for _, _, z, lam in sh[:8]] == [
        (z, lam) for z in (1.0, 2.0, 4.0, 8.0) for lam in (-1.0, 1.0)
    ]
    assert shifted_angular_grid(1.0, 5.0, 0) == []
    both = angular_grid(1.0, 5.0, 10, "both")
    assert angular_parameters(1.0, 5.0, 10, "all") == [(e, 0.0, z, lam) for e, z, lam in both] + sh
    assert angular_parameters(1.0, 5.0, 10, "shifted") == sh
    with pytest.raises(NNMDError, match="shifted_angular_grid"):
        angular_grid(1.0, 5.0, 10, "shifted")
    spec = generate(["Si"], GridSettings(5.0, 3, 10, 1.0, angular_widths="all"))
    angular = [f for f in spec.functions["Si"] if f.type == 9]
    assert len(angular) == 30
    got = [x for f in angular for x in (f.eta, f.rs, f.zeta, f.lambda_)]
    want = [x for p in angular_parameters(1.0, 5.0, 10, "all") for x in p]
    assert got == pytest.approx(want, rel=1e-15)


def test_angular_type_list_pools_both_types(tmp_path, cu_data):
    """descriptors.angular_type [9, 3]: every angular function of the grid once as type 9,
    then once as type 3 with the same parameters (the radial functions once); a bad list
    names the key."""
    one = generate(["Si"], GridSettings(5.0, 3, 10, 1.0, angular_widths="all"))
    both = generate(["Si"], GridSettings(5.0, 3, 10, 1.0, 9, angular_widths="all"))
    assert one.functions["Si"] == both.functions["Si"]  # a single type as before
    pool = generate(["Si"], GridSettings(5.0, 3, 10, 1.0, (9, 3), angular_widths="all"))
    fs = pool.functions["Si"]
    assert [f.type for f in fs] == [2] * 3 + [9] * 30 + [3] * 30
    params = [(f.eta, f.rs, f.zeta, f.lambda_, f.rc) for f in fs]
    assert params[3:33] == params[33:]
    assert fs[:33] == one.functions["Si"]
    cfg = tiny_config(cu_data, epochs=1)
    cfg["descriptors"]["angular_type"] = [9, 3]
    assert config_from_dict(cfg, tmp_path).descriptors.angular_type == [9, 3]
    out, _ = _train(cfg, tmp_path, "pool")  # the list reaches the trained model
    from nnmd_lammps.model.modelfile import read_metadata

    types = [f["type"] for f in read_metadata(out / "model.pt")["symmetry_functions"]["Cu"]]
    assert types == [2] * 4 + [9] * 4 + [3] * 4
    for bad in ([9, 9], [9, 5], [], 5):
        cfg["descriptors"]["angular_type"] = bad
        with pytest.raises(NNMDError, match=r"'descriptors\.angular_type' must be one of"):
            config_from_dict(cfg, tmp_path)


def _stats_data(seed: int = 0, n: int = 300) -> torch.Tensor:
    """Columns: random, constant, affine copy of 0, correlated (|r| ~ 0.9995) with 0,
    anti-correlated copy of 0, independent, offset-dominated."""
    rng = np.random.default_rng(seed)
    x = rng.random(n)
    y = rng.random(n)
    cols = [x, np.full(n, 2.0), 3 * x + 1, x + 0.01 * rng.random(n), -2 * x, y, 1e3 + y]
    return torch.tensor(np.stack(cols, 1))


def test_descriptor_statistics_merged_in_chunks_equal_numpy():
    """Count, min, max, mean, sample std and correlations from chunks of any size (merged
    pairwise) equal numpy's on all rows at once."""
    from nnmd_lammps.training.statistics import DescriptorStatistics, merge_all

    G = _stats_data()
    ref = G.numpy()
    for cuts in ([300], [1, 299], [7, 50, 100, 143], [150, 0, 150]):
        parts, k = [], 0
        for c in cuts:
            parts.append([DescriptorStatistics.of(G[k : k + c], correlations=True)])
            k += c
        (st,) = merge_all(parts)
        assert st.count == 300
        np.testing.assert_array_equal(st.min.numpy(), ref.min(0))
        np.testing.assert_array_equal(st.max.numpy(), ref.max(0))
        np.testing.assert_allclose(st.mean.numpy(), ref.mean(0), rtol=1e-13)
        np.testing.assert_allclose(st.std.numpy(), ref.std(0, ddof=1), rtol=1e-10, atol=1e-13)
        cov = np.cov(ref, rowvar=False)
        np.testing.assert_allclose(st.comoment.numpy() / 299, cov, rtol=1e-10, atol=1e-13)
    sub = st.columns([5, 0])
    np.testing.assert_allclose(sub.mean.numpy(), ref.mean(0)[[5, 0]], rtol=1e-13)
    assert sub.comoment.shape == (2, 2)


def test_pruning_by_statistics_equals_pruning_the_descriptors():
    """The chunked pruning keeps exactly the functions that
    descriptors.generation.prune keeps on all descriptors at once (and gives the scaling
    and training range that the descriptors give)."""
    from nnmd_lammps.descriptors.extrapolation import TrainingRange
    from nnmd_lammps.training.initialisation import scaling_from
    from nnmd_lammps.training.statistics import (
        DescriptorStatistics,
        merge_all,
        prune_by_statistics,
        scaling_from_statistics,
        training_range_from_statistics,
    )

    spec = generate(["Cu"], GridSettings(5.0, 7, 0, 1.0))
    G = _stats_data(seed=2)
    for threshold in (0.999, 0.9):
        expected, _ = prune(spec, [G], threshold)
        st = merge_all([[DescriptorStatistics.of(G[k : k + 40], True)] for k in range(0, 300, 40)])
        pruned, kept, notes = prune_by_statistics(spec, st, threshold)
        assert pruned.functions["Cu"] == expected.functions["Cu"]
        assert [spec.functions["Cu"][k] for k in kept["Cu"]] == expected.functions["Cu"]
        assert len(notes["Cu"]) == 7 - len(kept["Cu"])
    assert kept["Cu"] == [0, 5]  # at 0.9: the constant and the x-like columns go
    for kind in ("sigma", "scale", "center", "scale_center"):
        a, b = scaling_from(G, kind), scaling_from_statistics(st[0], kind)
        for key in ("gmin", "gmax", "gmean", "gsigma"):
            np.testing.assert_allclose(getattr(b, key), getattr(a, key), rtol=1e-10, atol=1e-14)
    r1, r2 = TrainingRange.of(G), training_range_from_statistics(st[0])
    for key in ("min", "max", "mean", "std"):
        np.testing.assert_allclose(getattr(r2, key), getattr(r1, key), rtol=1e-10, atol=1e-14)


def _greedy_span_reference(X: np.ndarray, n: int) -> list[int]:
    """Columns chosen one at a time, each the one whose addition maximises the
    Frobenius norm of the least-squares projection of X onto the chosen columns."""
    chosen: list[int] = []
    for _ in range(n):
        best, best_norm = -1, -1.0
        for s in range(X.shape[1]):
            if s in chosen:
                continue
            A = X[:, [*chosen, s]]
            coef = np.linalg.lstsq(A, X, rcond=None)[0]
            norm = float(np.linalg.norm(A @ coef))
            if norm > best_norm + 1e-9:
                best, best_norm = s, norm
        chosen.append(best)
    return chosen


def test_selection_is_the_greedy_span_of_the_standardised_descriptors():
    """descriptors.select from chunked statistics keeps the columns that a brute-force
    greedy least-squares selection on the standardised descriptor matrix takes, in their
    original order; a column that is a combination of taken ones is never taken while an
    independent one remains."""
    from nnmd_lammps.training.statistics import (
        DescriptorStatistics,
        merge_all,
        select_by_statistics,
    )

    rng = np.random.default_rng(5)
    base = rng.normal(size=(400, 4)) * np.array([1.0, 3.0, 0.5, 2.0]) + 7.0
    mix = base @ rng.normal(size=(4, 4)) + 0.3 * rng.normal(size=(400, 4))
    G = np.concatenate([mix[:, :2], base, mix[:, 2:]], 1)  # 8 columns
    spec = generate(["Cu"], GridSettings(5.0, 8, 0, 1.0))
    st = merge_all(
        [[DescriptorStatistics.of(torch.tensor(G[k : k + 64]), True)] for k in range(0, 400, 64)]
    )
    X = (G - G.mean(0)) / G.std(0)
    for n in (1, 3, 5, 7):
        chosen, kept, notes = select_by_statistics(spec, st, n)
        assert kept["Cu"] == sorted(_greedy_span_reference(X, n))
        assert chosen.functions["Cu"] == [spec.functions["Cu"][k] for k in kept["Cu"]]
        assert len(notes["Cu"]) == 8 - n
    _, kept, notes = select_by_statistics(spec, st, 8)
    assert kept["Cu"] == list(range(8)) and notes["Cu"] == []
    # an exact combination of columns 0 and 1 adds nothing: the independent column wins
    y = rng.normal(size=400)
    H = np.stack([G[:, 2], G[:, 3], 2 * G[:, 2] - G[:, 3], y], 1)
    st3 = [DescriptorStatistics.of(torch.tensor(H), True)]
    spec4 = generate(["Cu"], GridSettings(5.0, 4, 0, 1.0))
    for _ in range(2):
        _, kept, _ = select_by_statistics(spec4, st3, 3)
        assert 3 in kept["Cu"] and len(kept["Cu"]) == 3
        H = H[:, [2, 1, 0, 3]]  # the combination first: still never all three
        st3 = [DescriptorStatistics.of(torch.tensor(H), True)]
    with pytest.raises(NNMDError, match=r"descriptors\.select"):
        select_by_statistics(spec, st, 0)


def test_build_descriptors_selects_from_the_pruned_pool(tmp_path, cu_data):
    """angular_widths both + select: the run keeps ``select`` of the pruned pool's
    functions, and the statistics it hands on are those of the kept functions (computed
    afresh on the kept set)."""
    from nnmd_lammps.training.initialisation import build_descriptors, chunked_statistics

    raw = tiny_config(cu_data)
    raw["descriptors"] = {"radial": 6, "angular": 8, "angular_widths": "both", "select": 7}
    cfg = config_from_dict(raw, tmp_path)
    data = Dataset.from_structures(read_structures(cu_data))
    logs: list[str] = []
    kept_stats: list = []
    spec = build_descriptors(cfg, ["Cu"], data, logs.append, kept_statistics=kept_stats)
    raw["descriptors"]["select"] = None
    pool = build_descriptors(config_from_dict(raw, tmp_path), ["Cu"], data, lambda m: None)
    assert pool.num_functions("Cu") > 7 and spec.num_functions("Cu") == 7
    assert all(f in pool.functions["Cu"] for f in spec.functions["Cu"])
    assert any("selected 7 of Cu's" in m for m in logs)
    (fresh,) = chunked_statistics(data, ["Cu"])(spec, True)
    np.testing.assert_allclose(kept_stats[0].mean.numpy(), fresh.mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        kept_stats[0].comoment.numpy(), fresh.comoment.numpy(), rtol=1e-10, atol=1e-14
    )


def test_pruning_removes_constant_and_duplicate_functions():
    spec = generate(["Cu"], GridSettings(5.0, 3, 0, 1.0))
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.random(50))
    G = torch.stack([x, torch.full_like(x, 2.0), 3 * x + 1], 1)  # constant, duplicate of x
    pruned, notes = prune(spec, [G])
    assert pruned.functions["Cu"] == [spec.functions["Cu"][0]]
    assert len(notes["Cu"]) == 2


# -- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"trainig": {}}, "unknown config key 'trainig' (did you mean 'training'?)"),
        (
            {"training": {"epocs": 3}},
            "unknown config key 'training.epocs' (did you mean 'epochs'?)",
        ),
        ({"training": {"epochs": "many"}}, "'training.epochs' must be an integer"),
        ({"network": {"activation": "relu"}}, "'network.activation' must be one of"),
        ({"cutoff": -1.0}, "'cutoff' must be positive"),
        ({"data": {"validation_fraction": 0.2}}, "'data.train' is required"),
        ({"training": {"data_mode": "disk"}}, "'training.data_mode' must be one of"),
        (
            {"descriptors": {"angular_widths": "wide"}},
            "'descriptors.angular_widths' must be one of ['centred', 'inner', 'both', 'shifted', "
            "'all']",
        ),
        ({"descriptors": {"select": 0}}, "'descriptors.select' must be >= 1"),
        ({"training": {"workers": -1}}, "'training.workers' must be >= 0"),
        (
            {"training": {"warm_start_max_spread": 1.0}},
            "'training.warm_start_max_spread' must be above 1",
        ),
        ({"training": {"workers": 1.5}}, "'training.workers' must be an integer"),
        ({"training": {"memory_budget_gb": -1}}, "'training.memory_budget_gb' must be >= 0"),
        ({"training": {"huber_force": 0.0}}, "'training.huber_force' must be positive (or null)"),
        ({"training": {"huber_energy": -1e-3}}, "'training.huber_energy' must be positive"),
    ],
)
def test_config_errors(tmp_path, cu_data, change, needle):
    cfg = tiny_config(cu_data)
    for k, v in change.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict) and v:
            if k == "data":
                cfg[k] = v
            else:
                cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    with pytest.raises(NNMDError) as info:
        config_from_dict(cfg, tmp_path)
    assert needle in str(info.value)


@pytest.mark.slow
def test_config_error_through_cli(tmp_path, cu_data):
    cfg = tiny_config(cu_data)
    cfg["descriptors"]["radail"] = 3
    path = write_config(tmp_path / "bad.yaml", cfg)
    r = subprocess.run(
        [*NNMD, "train", str(path), "--out", str(tmp_path / "run")], capture_output=True, text=True
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "nnmd: error: unknown config key 'descriptors.radail' (did you mean 'radial'?); valid "
        "keys here: radial, angular, angular_type, angular_widths, cutoff_type, cutoff_alpha, "
        "r_min, prune, max_correlation, select, functions"
    ]
    (tmp_path / "broken.yaml").write_text("cutoff: [1, 2\n")
    r = subprocess.run(
        [*NNMD, "train", str(tmp_path / "broken.yaml")], capture_output=True, text=True
    )
    assert r.returncode == 1 and "invalid YAML" in r.stderr


def test_example_configs_differ_only_in_data_and_element():
    root = Path(__file__).resolve().parents[1] / "examples" / "mlearn"
    li = load_config(root / "li.yaml").to_dict()
    si = load_config(root / "si.yaml").to_dict()
    for cfg in (li, si):
        cfg["data"]["train"] = cfg["data"]["test"] = None
        cfg["elements"] = None
    assert li == si


# -- training --------------------------------------------------------------------------------------


def _train(cfg: dict, tmp_path: Path, name: str) -> tuple[Path, dict]:
    from nnmd_lammps.training import train

    out = tmp_path / name
    metrics = train(config_from_dict(cfg, tmp_path), out)
    return out, metrics


def test_huber_widths_reach_the_trained_loss(tmp_path, cu_data):
    """training.huber_* reach the loss the trainer minimises and reports: with widths far
    below the residuals of the first epochs the validation loss is the pseudo-Huber
    one (about 2 delta |r|, far below r^2), the log says so, and the run still learns."""
    runs = {}
    for name, extra in (("mse", {}), ("huber", {"huber_energy": 1e-4, "huber_force": 1e-3})):
        out, _ = _train(tiny_config(cu_data, epochs=4, **extra), tmp_path, name)
        hist = torch.load(out / "checkpoint.pt", weights_only=True)["history"]
        runs[name] = (hist["val_loss"], (out / "train.log").read_text())
    (mse, mse_log), (hub, hub_log) = runs["mse"], runs["huber"]
    assert "pseudo-Huber" not in mse_log
    assert (
        "loss: pseudo-Huber where a width is set (energy 0.0001 eV/atom, forces 0.001 "
        "eV/Angstrom), squared error elsewhere" in hub_log
    )
    assert hub[0] < 0.2 * mse[0]
    assert hub[-1] < hub[0]


def test_training_lowers_the_loss_and_exports(tmp_path, cu_data):
    out, _ = _train(tiny_config(cu_data, epochs=15, refine={"iterations": 20}), tmp_path, "run")
    for f in (
        "model.pt",
        "config.yaml",
        "train.log",
        "metrics.json",
        "learning_curve.png",
        "parity_energy.png",
        "parity_forces.png",
        "checkpoint.pt",
    ):
        assert (out / f).exists(), f
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    hist = ck["history"]
    assert hist["val_loss"][-1] < 0.5 * hist["val_loss"][0]
    assert min(hist["refine_val_loss"]) <= min(hist["val_loss"])
    # metrics.json holds the validation errors of the exported model, recomputed here from
    # its predictions and the EMT references of the validation structures (the split is the
    # seeded one of the configuration: validation first, then the empty test set)
    saved = json.loads((out / "metrics.json").read_text())
    structures = read_structures(cu_data)
    val_idx = random_split(len(structures), [0.2, 0.0, 0.8], seed=3)[0]
    val = [structures[k] for k in val_idx]
    preds = Potential.load(out / "model.pt").evaluate(val)
    pairs = list(zip(preds, val, strict=True))
    de = [abs(p.energy - a.get_potential_energy()) / len(a) for p, a in pairs]
    df = np.concatenate([np.abs(p.forces - a.get_forces()).ravel() for p, a in pairs])
    assert saved["validation"]["n_structures"] == len(val)
    assert saved["validation"]["energy_mae_mev_per_atom"] == pytest.approx(1000 * np.mean(de))
    assert saved["validation"]["force_mae_ev_per_angstrom"] == pytest.approx(np.mean(df))
    cfg_used = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg_used["data"]["train"] == [str(cu_data)]


def test_training_is_deterministic(tmp_path, cu_data):
    cfg = tiny_config(cu_data, epochs=4)
    a, _ = _train(cfg, tmp_path, "a")
    b, _ = _train(cfg, tmp_path, "b")
    sa = torch.load(a / "checkpoint.pt", weights_only=True)["model_state"]
    sb = torch.load(b / "checkpoint.pt", weights_only=True)["model_state"]
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_without_validation_and_test_sets_and_longer_refinement_on_resume(tmp_path, cu_data):
    """validation_fraction 0 and no test set: the run selects on the training loss and
    plots the training set; a resume with more refine iterations continues the L-BFGS."""
    from nnmd_lammps.training import train

    cfg = tiny_config(cu_data, epochs=3, refine={"iterations": 10})
    cfg["data"]["validation_fraction"] = 0.0
    out, metrics = _train(cfg, tmp_path, "noval")
    assert "validation" not in metrics and "test" not in metrics and "train" in metrics
    assert (out / "parity_energy.png").exists()
    cfg["training"]["refine"]["iterations"] = 30
    train(config_from_dict(cfg, tmp_path), out, resume=True)
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["refine_iterations"] == 30
    assert ck["history"]["refine_iteration"] == [10, 20, 30]


def test_warm_start_from_a_model_file(tmp_path, cu_data):
    """training.initial_model: the new run keeps the model's symmetry functions, takes
    scaling, energy transform and training range from the new data, and starts from the
    same function (first layers rescaled exactly: with a vanishing learning rate it ends where
    it started); a model that does not fit the configuration is refused with the key
    named."""
    import ase.io

    from nnmd_lammps.model.modelfile import read_metadata

    cfg = tiny_config(cu_data, epochs=3)
    cfg["network"]["committee"] = 2
    first, _ = _train(cfg, tmp_path, "first")
    # new data: compressed cells, outside the first run's range
    more = emt_structures(6, seed=9)
    for a in more:
        a.set_cell(a.cell * 0.96, scale_atoms=True)
        a.calc = EMT()
        e, f = a.get_potential_energy(), a.get_forces()
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
    ase.io.write(tmp_path / "more.extxyz", more)
    warm = tiny_config(cu_data, epochs=1, learning_rate=1e-14, initial_model="first/model.pt")
    warm["network"]["committee"] = 2
    warm["data"]["train"] = [str(cu_data), str(tmp_path / "more.extxyz")]
    second, _ = _train(warm, tmp_path, "second")
    a, b = read_metadata(first / "model.pt"), read_metadata(second / "model.pt")
    assert b["symmetry_functions"] == a["symmetry_functions"]
    # the scaling and the energy transform follow the new data (the first and last layers
    # absorb the change, see below)
    assert b["scaling"] != a["scaling"] and b["energy"] != a["energy"]
    lo_a, lo_b = (np.array(m["training_range"]["Cu"]["min"]) for m in (a, b))
    hi_a, hi_b = (np.array(m["training_range"]["Cu"]["max"]) for m in (a, b))
    assert np.all(lo_b <= lo_a) and np.all(hi_b >= hi_a) and np.any(hi_b > hi_a)
    assert f"warm start from {tmp_path / 'first' / 'model.pt'}" in (
        (second / "train.log").read_text()
    )
    probe = emt_structures(2, seed=11)
    for p, q in zip(
        Potential.load(first / "model.pt").evaluate(probe),
        Potential.load(second / "model.pt").evaluate(probe),
        strict=True,
    ):
        assert q.energy == pytest.approx(p.energy, abs=1e-9)
        np.testing.assert_allclose(q.forces, p.forces, atol=1e-9)
    # a configuration the model does not fit
    for key, value, message in (
        ("committee", 3, "network.committee"),
        ("hidden", [9], "network.hidden"),
        ("repulsion", "zbl", "network.repulsion"),
    ):
        bad = tiny_config(cu_data, initial_model="first/model.pt")
        bad["network"]["committee"] = 2
        bad["network"][key] = value
        with pytest.raises(NNMDError, match=message):
            _train(bad, tmp_path, f"bad_{key}")


def _scaled_hdnnp(gmean: list[float], gsigma: list[float], scale: float = 1.0, shift: float = 0.0):
    from nnmd_lammps.model.networks import (
        ModelDescription,
        NetworkSpec,
        ScalingParams,
        build_hdnnp,
    )

    n = len(gmean)
    desc = ModelDescription(
        networks={"Cu": NetworkSpec([n, 5, 1], ["tanh", "identity"])},
        scaling={"Cu": ScalingParams("sigma", 0.0, 1.0, [0.0] * n, [1.0] * n, gmean, gsigma)},
        energy_scale=scale,
        energy_shift={"Cu": shift},
        committee=2,
    )
    return build_hdnnp(["Cu"], desc)


def _element_energies(model, g: torch.Tensor) -> torch.Tensor:
    """Per-member atomic energies of the Cu networks for raw descriptors g (atoms, 3)."""
    return torch.stack([m(g).reshape(-1) for m in model.networks[0].members])


def test_warm_start_rescaling_keeps_the_function_and_resets_widened_inputs():
    """rescale_layers: without max_spread the networks compute the same function of
    the raw descriptors under the new scaling and energy transform; with max_spread 3 the
    input whose spread grew 10x loses its weights and the function equals the old one
    with that input held at the new data's mean, while the input that grew 1.5x keeps its
    weights."""
    from nnmd_lammps.training.trainer import rescale_layers

    torch.manual_seed(0)
    old = _scaled_hdnnp([1.0, 2.0, 3.0], [0.1, 0.5, 1.0], scale=0.02, shift=0.01)
    new_mean = torch.tensor([1.3, 2.2, 2.9], dtype=torch.float64)
    g = torch.rand(7, 3, dtype=torch.float64) * 4.0
    with torch.no_grad():
        before = _element_energies(old, g)
        fixed = g.clone()
        fixed[:, 0] = new_mean[0]
        before_fixed = _element_energies(old, fixed)

    def fresh():
        return _scaled_hdnnp(new_mean.tolist(), [1.0, 0.75, 1.0], scale=0.3, shift=-0.7)

    same = fresh()
    assert rescale_layers(same, old.state_dict()) == [0]
    with torch.no_grad():
        torch.testing.assert_close(_element_energies(same, g), before, rtol=1e-12, atol=1e-12)
    reset = fresh()
    assert rescale_layers(reset, old.state_dict(), 3.0, [new_mean]) == [1]
    for member in reset.networks[0].members:
        w = member.linears[0].weight
        assert torch.all(w[:, 0] == 0) and torch.all(w[:, 1:] != 0)
    with torch.no_grad():
        torch.testing.assert_close(
            _element_energies(reset, g), before_fixed, rtol=1e-12, atol=1e-12
        )


def _state(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=True)


def assert_same_run(a: dict, b: dict, rtol: float, exact: bool = False) -> None:
    """Two checkpoints: the same learning curve (losses, learning rates) and weights."""
    for key in ("train_loss", "val_loss", "lr", "refine_train_loss", "refine_val_loss"):
        x, y = a["history"].get(key, []), b["history"].get(key, [])
        assert len(x) == len(y), key
        if exact:
            assert x == y, key
        else:
            np.testing.assert_allclose(y, x, rtol=rtol, atol=0, err_msg=key)
    for k in a["model_state"]:
        if exact:
            assert torch.equal(a["model_state"][k], b["model_state"][k]), k
        else:
            torch.testing.assert_close(
                b["model_state"][k], a["model_state"][k], rtol=rtol, atol=rtol, msg=k
            )


@pytest.mark.parametrize(
    "variant", ["plain", pytest.param("committee_stress_pruned", marks=pytest.mark.slow)]
)
def test_stream_mode_gives_the_memory_mode_loss_curve(tmp_path, cu_data, variant):
    """Descriptors computed per batch from the raw structures (stream) train exactly as
    precomputed ones (memory), Adam and L-BFGS, to rounding; also with a bootstrap
    committee, stress in the loss and pruning by chunked statistics."""
    cfg = tiny_config(cu_data, epochs=4, refine={"iterations": 10}, workers=0)
    if variant != "plain":
        cfg["network"].update(committee=2, bootstrap=True)
        cfg["training"]["stress_weight"] = 0.5
        cfg["descriptors"]["prune"] = True
    runs = {}
    for mode in ("memory", "stream"):
        cfg["training"]["data_mode"] = mode
        out, _ = _train(cfg, tmp_path, mode)
        runs[mode] = _state(out)
        assert f"descriptors: {mode} mode" in (out / "train.log").read_text()
    # one L-BFGS block of 10 iterations (a committee's members in lockstep)
    assert len(runs["memory"]["history"]["refine_train_loss"]) == 1
    assert_same_run(runs["memory"], runs["stream"], rtol=1e-9)


@pytest.mark.slow
def test_workers_give_the_results_of_no_workers(tmp_path, cu_data):
    """Batches computed in 2 background processes give the run of batches computed in
    the training process (stream mode, Adam and L-BFGS; memory mode set-up)."""
    runs = {}
    for mode, workers in (("stream", 0), ("stream", 2), ("memory", 0), ("memory", 2)):
        cfg = tiny_config(
            cu_data, epochs=3, refine={"iterations": 10}, workers=workers, data_mode=mode
        )
        cfg["descriptors"]["prune"] = True
        out, _ = _train(cfg, tmp_path, f"{mode}{workers}")
        runs[mode, workers] = _state(out)
        log = (out / "train.log").read_text()
        if mode == "stream":
            assert f"computed per batch by {workers} worker" in log
    assert_same_run(runs["stream", 0], runs["stream", 2], rtol=1e-12)
    assert_same_run(runs["memory", 0], runs["memory", 2], rtol=1e-12)


def test_loss_of_parts_with_the_whole_norm_adds_up(cu_data):
    """The losses and gradients of parts of a set computed with the whole set's
    normalisation (LossNorm from per-structure data alone) add up to the loss and
    gradient of the whole set as one batch (committee with bootstrap weights, forces on
    some structures only, stress)."""
    from nnmd_lammps.data import Dataset
    from nnmd_lammps.descriptors import DescriptorCalculator
    from nnmd_lammps.training.loss import LossWeights, loss_terms
    from nnmd_lammps.training.streaming import SetInfo
    from nnmd_lammps.training.tensors import TrainingData, structure_batch

    ds = Dataset.from_structures(read_structures(cu_data))
    ds.forces[3] = ds.forces[7] = None
    ds.stress[1] = None
    ds.weight[2] = 3.0
    spec = generate(["Cu"], GridSettings(4.0, 3, 2, 1.8))
    calc = DescriptorCalculator(spec)
    torch.manual_seed(0)
    model = random_model(spec)
    counts = np.random.default_rng(1).integers(0, 3, size=(2, len(ds)))
    td = TrainingData(ds, calc, ["Cu"], torch.float64, torch.device("cpu"))
    td.member_weight = torch.tensor(counts, dtype=torch.float64)
    w = LossWeights(2.0, 1.0, 0.5)
    whole = loss_terms(model, td.batch(), w)
    whole.backward()
    g_whole = [p.grad.clone() for p in model.parameters()]
    norm = SetInfo.of(ds, counts).norm(None, torch.float64, "cpu")
    model.zero_grad()
    total = 0.0
    for part in (np.arange(0, 5), np.arange(5, 17), np.arange(17, 24)[::-1], np.zeros(0, int)):
        b = structure_batch(ds, part, calc, ["Cu"], torch.float64, counts)
        loss = loss_terms(model, b, w, norm)
        if loss.requires_grad:
            loss.backward()
        total += float(loss.detach())
    assert total == pytest.approx(float(whole.detach()), rel=1e-12)
    for p, g in zip(model.parameters(), g_whole, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-14)


def test_pseudo_huber_penalty_limits():
    """The pseudo-Huber penalty against its closed form at a few residuals, its two
    limits (r^2 inside the core, 2 delta |r| - 2 delta^2 far outside) and None = r^2."""
    from decimal import Decimal, localcontext

    from nnmd_lammps.training.loss import penalty

    r = torch.tensor([-3.0, -0.5, 0.0, 1e-4, 1e-9, 0.2, 7.0], dtype=torch.float64)
    delta = 0.5
    with localcontext() as ctx:  # the closed form in 60 digits: no cancellation
        ctx.prec = 60
        d = Decimal(delta)
        expected = [float(2 * d * d * ((1 + (Decimal(x) / d) ** 2).sqrt() - 1)) for x in r.tolist()]
    assert penalty(r, delta).tolist() == pytest.approx(expected, rel=1e-14, abs=1e-300)
    torch.testing.assert_close(penalty(r, None), r * r, rtol=0, atol=0)
    small = torch.tensor([1e-5, -2e-5], dtype=torch.float64)
    torch.testing.assert_close(penalty(small, 1.0), small**2, rtol=1e-9, atol=0)
    # the loss goes to zero with the residual, smoothly: gradient 2 r near zero
    x = torch.tensor([1e-8, -1e-3], dtype=torch.float64, requires_grad=True)
    penalty(x, 0.5).sum().backward()
    torch.testing.assert_close(x.grad, 2 * x.detach(), rtol=1e-5, atol=0)
    big = torch.tensor([1e6, -3e6], dtype=torch.float64)
    torch.testing.assert_close(
        penalty(big, 0.1), 2 * 0.1 * big.abs() - 2 * 0.1**2, rtol=1e-10, atol=1e-6
    )


def test_huber_loss_of_a_batch(cu_data):
    """The loss with pseudo-Huber widths equals the weighted mean of the penalties
    computed here in numpy from the batch's predictions (per-atom energies, force
    components, stress components; structure weights; forces and stress on some
    structures only), and each width only changes its own term."""
    from nnmd_lammps.data import Dataset
    from nnmd_lammps.descriptors import DescriptorCalculator
    from nnmd_lammps.training.loss import LossWeights, loss_terms, predict_batch
    from nnmd_lammps.training.tensors import TrainingData

    ds = Dataset.from_structures(read_structures(cu_data))
    ds.forces[3] = None
    ds.stress[1] = None
    ds.weight[2] = 3.0
    spec = generate(["Cu"], GridSettings(4.0, 3, 2, 1.8))
    torch.manual_seed(0)
    model = random_model(spec)
    b = TrainingData(ds, DescriptorCalculator(spec), ["Cu"], torch.float64, "cpu").batch()
    with torch.no_grad():
        members = predict_batch(model, b, forces=True, stress=True)  # a committee of two
    w = b.weight.numpy()
    wa = (b.weight[b.atom_struct] * b.force_mask).numpy()
    wst = (b.weight * b.stress_mask).numpy()

    def rho(x, delta):
        return x * x if delta is None else 2 * delta**2 * (np.sqrt(1 + (x / delta) ** 2) - 1)

    def expected(de_, df_, ds_):
        total = 0.0
        for E, F, S in members:  # the mean of the members' losses
            de = ((E - b.energy) / b.natoms).numpy()
            df = (F - b.forces).numpy()
            dst = (S - b.stress).numpy().reshape(-1, 9)
            e = (w * rho(de, de_)).sum() / w.sum()
            f = (wa[:, None] * rho(df, df_)).sum() / (3 * wa.sum())
            s = (wst[:, None] * rho(dst, ds_)).sum() / (9 * wst.sum())
            total += 2.0 * e + 1.0 * f + 0.5 * s
        return total / len(members)

    for deltas in ((None, None, None), (1e-3, 0.05, 1e-4), (None, 0.02, None)):
        with torch.no_grad():
            got = float(loss_terms(model, b, LossWeights(2.0, 1.0, 0.5, *deltas)))
        assert got == pytest.approx(expected(*deltas), rel=1e-12)
    plain = expected(None, None, None)
    assert expected(None, 0.02, None) != pytest.approx(plain, rel=1e-3)


def test_batch_predictions_equal_the_potential(cu_data):
    """Energies, forces, stresses and committee force deviations of training batches (dG/dd
    in neighbour slots, all members in one contraction) equal those of Potential.evaluate
    (the C++ contraction operator, an independent code path), for the whole set and for a
    batch cut from it and for a batch computed from the raw structures."""
    from nnmd_lammps.data import Dataset
    from nnmd_lammps.descriptors import DescriptorCalculator
    from nnmd_lammps.model import ModelDescription, Potential
    from nnmd_lammps.training.loss import predict_batch
    from nnmd_lammps.training.tensors import TrainingData, structure_batch

    ds = Dataset.from_structures(read_structures(cu_data))
    spec = generate(["Cu"], GridSettings(4.0, 3, 2, 1.8))
    calc = DescriptorCalculator(spec)
    torch.manual_seed(0)
    model = random_model(spec)
    td = TrainingData(ds, calc, ["Cu"], torch.float64, torch.device("cpu"))
    committee = ModelDescription()
    committee.committee = 2
    pot = Potential(spec, model, description=committee)
    sids = np.array([5, 2, 17, 11])
    for b, idx in (
        (td.batch(), np.arange(len(ds))),
        (td.batch(sids), sids),
        (structure_batch(ds, sids, calc, ["Cu"], torch.float64), sids),
    ):
        with torch.no_grad():
            members = predict_batch(model, b, forces=True, stress=True)
        ref = pot.evaluate([ds.structures[k] for k in idx], uncertainty=True)
        E = torch.stack([m[0] for m in members]).mean(0)
        F = torch.stack([m[1] for m in members])
        S = torch.stack([m[2] for m in members]).mean(0)
        np.testing.assert_allclose(E, [r.energy for r in ref], rtol=1e-12)
        np.testing.assert_allclose(F.mean(0), np.concatenate([r.forces for r in ref]), atol=1e-11)
        sigma = (F - F.mean(0)).square().sum(-1).mean(0).sqrt()
        np.testing.assert_allclose(
            sigma, np.concatenate([r.force_deviation for r in ref]), atol=1e-11
        )
        np.testing.assert_allclose(S, np.stack([r.stress for r in ref]), atol=1e-12)
        assert float(F.abs().max()) > 1e-3 and float(sigma.max()) > 1e-4


def random_model(spec):
    """A committee of two small networks on ``spec`` with sigma scaling of unit width."""
    from nnmd_lammps.model import ModelDescription, NetworkSpec, ScalingParams, build_hdnnp

    desc = ModelDescription()
    n = spec.num_functions("Cu")
    desc.networks["Cu"] = NetworkSpec([n, 6, 1], ["tanh", "identity"])
    desc.scaling["Cu"] = ScalingParams(
        "sigma", 0.0, 1.0, [0.0] * n, [1.0] * n, [0.0] * n, [1.0] * n
    )
    desc.energy_shift = {"Cu": -3.5}
    desc.energy_scale = 0.05
    desc.committee = 2
    return build_hdnnp(["Cu"], desc, dtype=torch.float64)


def test_automatic_number_of_workers():
    """training.workers unset: one per CPU of the rank (at most 4), none for one CPU."""
    from nnmd_lammps.training.streaming import resolve_workers

    assert [resolve_workers(None, n) for n in (1, 2, 3, 16)] == [0, 2, 3, 4]
    assert resolve_workers(3, 1) == 3 and resolve_workers(0, 8) == 0


def test_memory_estimate_matches_the_precomputed_tensors(cu_data):
    """The estimate that chooses the mode equals the bytes TrainingData holds (all
    structures sampled; up to the per-structure fields)."""
    from nnmd_lammps.data import Dataset
    from nnmd_lammps.descriptors import DescriptorCalculator
    from nnmd_lammps.training.streaming import estimated_memory_bytes
    from nnmd_lammps.training.tensors import TrainingData

    ds = Dataset.from_structures(read_structures(cu_data))
    spec = generate(["Cu"], GridSettings(4.0, 3, 4, 1.8))
    td = TrainingData(ds, DescriptorCalculator(spec), ["Cu"], torch.float64, torch.device("cpu"))
    held = td.nbytes()
    layouts = [t for x in td.rows for t in (x.dGdd, x.d, x.neighbor, x.centre)]
    fixed = (td.atom_struct, td.forces, td.force_mask)
    assert held == sum(t.nbytes for t in (*layouts, *td.G, *td.row_struct, *fixed))
    estimate = estimated_memory_bytes([ds], spec, ["Cu"], 8, sample=len(ds))
    assert estimate == pytest.approx(held, rel=1e-9)
    assert estimated_memory_bytes([ds], spec, ["Cu"], 8, sample=5) == pytest.approx(held, rel=0.2)


@pytest.mark.slow
def test_resume_after_kill_continues_from_checkpoint(tmp_path, cu_data):
    """kill -9 during training, then --resume: the run ends with exactly the weights of an
    uninterrupted run (nothing but the unfinished epoch is lost)."""
    cfg = tiny_config(cu_data, epochs=300, early_stopping_patience=0)
    path = write_config(tmp_path / "cfg.yaml", cfg)
    ref, _ = _train(cfg, tmp_path, "reference")
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [*NNMD, "train", str(path), "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        epoch = 0
        while time.time() < deadline:
            if (run / "checkpoint.pt").exists():
                try:
                    epoch = torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
                except Exception:  # being replaced at this moment
                    epoch = 0
                if epoch >= 5:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "training finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
    assert 5 <= killed_at < 300
    r = subprocess.run(
        [*NNMD, "train", str(path), "--out", str(run), "--resume"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert f"resuming after epoch {killed_at}" in (run / "train.log").read_text()
    a = torch.load(ref / "checkpoint.pt", weights_only=True)
    b = torch.load(run / "checkpoint.pt", weights_only=True)
    assert b["epoch"] == 300
    for k in a["model_state"]:
        assert torch.equal(a["model_state"][k], b["model_state"][k]), k
    # a new run into an existing run directory is refused
    r = subprocess.run(
        [*NNMD, "train", str(path), "--out", str(run)], capture_output=True, text=True
    )
    assert r.returncode == 1 and "--resume" in r.stderr


def test_exported_model_in_python_and_lammps(tmp_path, cu_data):
    from nnmd_lammps.interop.lammps import (
        lammps_frame,
        run_lammps,
        single_point_deck,
        write_lammps_data,
    )
    from nnmd_lammps.model import Potential

    out, _ = _train(tiny_config(cu_data, epochs=3), tmp_path, "run")
    atoms = lammps_frame(emt_structures(1, seed=9)[0])
    write_lammps_data(tmp_path / "s.data", atoms, ["Cu"])
    res = run_lammps(
        single_point_deck(tmp_path / "s.data", out / "model.pt", ["Cu"]), tmp_path / "lmp"
    )
    atoms.positions = res.positions
    ref = Potential.load(out / "model.pt").evaluate([atoms])[0]
    assert abs(res.pe - ref.energy) < 1e-10 * abs(ref.energy)
    assert np.abs(res.forces - ref.forces).max() < 1e-9


@pytest.mark.slow
def test_nnmd_test_command(tmp_path, cu_data):
    out, _ = _train(tiny_config(cu_data, epochs=3), tmp_path, "run")
    r = subprocess.run(
        [*NNMD, "test", str(out / "model.pt"), str(cu_data), "--json"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    for key in (
        "energy_mae_mev_per_atom",
        "energy_rmse_mev_per_atom",
        "force_mae_ev_per_angstrom",
        "force_rmse_ev_per_angstrom",
        "stress_mae_gpa",
    ):
        assert key in m
    assert m["n_structures"] == 24
    # independent recomputation of the force MAE
    from nnmd_lammps.model import Potential

    structures = read_structures(cu_data)
    preds = Potential.load(out / "model.pt").evaluate(structures)
    mae = np.mean(
        np.concatenate(
            [
                np.abs(p.forces - s.get_forces()).ravel()
                for p, s in zip(preds, structures, strict=True)
            ]
        )
    )
    assert m["force_mae_ev_per_angstrom"] == pytest.approx(mae, rel=1e-10)


def test_committee_refinement_in_lockstep_resumes(tmp_path, cu_data, monkeypatch):
    """A committee's members are refined together (each its own L-BFGS, in lockstep): each
    member ends where torch.optim.LBFGS on that member's own loss (loss_terms with
    ``member``) from Adam's best weights ends; a run interrupted after the first block
    resumes to exactly the weights of an unbroken run."""
    from nnmd_lammps.training import train
    from nnmd_lammps.training import trainer as trainer_module
    from nnmd_lammps.training.loss import loss_terms

    cfg = tiny_config(cu_data, epochs=3, refine={"iterations": 20})
    cfg["network"]["committee"] = 2
    cfg["data"]["validation_fraction"] = 0.0
    whole, _ = _train(cfg, tmp_path, "whole")
    ref = torch.load(whole / "checkpoint.pt", weights_only=True)
    assert ref["history"]["refine_iteration"] == [10, 20]
    assert (
        "20 iterations per committee member (2, in lockstep)" in (whole / "train.log").read_text()
    )

    # the reference: Adam alone, then each member's own L-BFGS on its own loss
    adam_cfg = tiny_config(cu_data, epochs=3, refine={"iterations": 0})
    adam_cfg["network"]["committee"] = 2
    adam_cfg["data"]["validation_fraction"] = 0.0
    captured = {}
    original_refine = trainer_module.Trainer._refine

    def capture(self, model, sources, weights, state):
        captured.update(model=model, sources=sources, weights=weights)
        return original_refine(self, model, sources, weights, state)

    monkeypatch.setattr(trainer_module.Trainer, "_refine", capture)
    _train(adam_cfg, tmp_path, "adam")
    monkeypatch.undo()
    model, weights = captured["model"], captured["weights"]
    batch = next(iter(captured["sources"]["train"].parts(None)))
    best = torch.load(tmp_path / "adam" / "checkpoint.pt", weights_only=True)["best_state"]
    model.load_state_dict(best)
    for m in range(2):
        params = [p for net in model.networks for p in net.members[m].parameters()]
        opt = torch.optim.LBFGS(
            params,
            lr=1.0,
            max_iter=10,
            history_size=50,  # the default of training.refine.history
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-12,
            tolerance_change=1e-15,
        )

        def closure(opt=opt, m=m):
            opt.zero_grad()
            loss = loss_terms(model, batch, weights, None, m)
            loss.backward()
            return loss

        for _ in range(2):
            opt.step(closure)
    lockstep = ref["model_state"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(lockstep[key], value, rtol=1e-9, atol=1e-12, msg=key)

    saves = []
    original = trainer_module.Trainer._save

    def interrupting_save(self, state):
        original(self, state)
        if state.history.get("refine_iteration"):
            saves.append(state.refine_iterations)
            if len(saves) == 1:  # after the first block
                raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Trainer, "_save", interrupting_save)
    with pytest.raises(KeyboardInterrupt):
        _train(cfg, tmp_path, "parts")
    monkeypatch.undo()
    assert saves == [10]
    train(config_from_dict(cfg, tmp_path), tmp_path / "parts", resume=True)
    got = torch.load(tmp_path / "parts" / "checkpoint.pt", weights_only=True)
    for key in ("model_state", "best_state"):
        for k, v in ref[key].items():
            assert torch.equal(got[key][k], v), (key, k)
    assert got["history"]["refine_val_loss"] == ref["history"]["refine_val_loss"]
    assert got["phase"] == "done" and got["best_val"] == ref["best_val"]


def test_version_1_checkpoints():
    """A checkpoint of the version that refined committee members one after the other
    resumes where nothing of that differs (its L-BFGS state becomes the one member's);
    one that stopped within a committee's refinement is refused with a clear error, as is
    an unknown version."""
    from nnmd_lammps.errors import NNMDError
    from nnmd_lammps.training.checkpoint import TrainingState

    base = {"format": "nnmd-lammps-checkpoint", "version": 1, "config_json": "{}"}
    base["model_json"] = "{}"
    lbfgs = {"state": {}, "param_groups": []}
    single = {**base, "phase": "refine", "refine_iterations": 30, "refine_member": 0}
    state = TrainingState.from_dict({**single, "refine_optimizer_state": lbfgs})
    assert state.refine_optimizer_state == [lbfgs] and state.refine_iterations == 30
    adam = TrainingState.from_dict({**base, "phase": "adam", "refine_best": None})
    assert adam.phase == "adam" and adam.refine_optimizer_state is None
    within = {**single, "refine_best": [0.1, 0.2], "refine_optimizer_state": lbfgs}
    for d in (within, {**within, "refine_member": 1, "refine_iterations": 0}):
        with pytest.raises(NNMDError, match="within a committee's L-BFGS refinement"):
            TrainingState.from_dict(d)
    done = {**within, "phase": "done", "refine_member": 1, "refine_iterations": 30}
    finished = TrainingState.from_dict(done)  # a resume may ask for more iterations
    assert finished.phase == "done" and finished.refine_optimizer_state is None
    with pytest.raises(NNMDError, match="checkpoint version 7 is not supported"):
        TrainingState.from_dict({**base, "version": 7})


def test_lockstep_steps_follow_each_optimiser_alone():
    """Three least-squares problems of different conditioning (so that their line searches
    take different numbers of evaluations) stepped in lockstep with one shared evaluation
    reach bit for bit the iterates of each torch.optim.LBFGS run alone, and the
    least-squares solutions; an error in the evaluation reaches the caller."""
    from nnmd_lammps.training.lockstep import lockstep_steps

    rng = np.random.default_rng(4)
    problems = []
    for scale in (1.0, 10.0, 30.0):
        A = torch.tensor(rng.normal(size=(30, 6)) * np.geomspace(1, scale, 6))
        y = torch.tensor(rng.normal(size=30))
        problems.append((A, y))

    def loss_of(k, w):
        A, y = problems[k]
        return ((A @ w - y) ** 2).mean()

    def make(k):
        w = torch.zeros(6, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS(
            [w],
            max_iter=5,
            history_size=10,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-12,
            tolerance_change=1e-15,
        )
        return w, opt

    alone = []
    for k in range(3):
        w, opt = make(k)
        evaluations = []

        def closure(k=k, w=w, opt=opt, evaluations=evaluations):
            opt.zero_grad()
            loss = loss_of(k, w)
            loss.backward()
            evaluations.append(1)
            return loss

        for _ in range(6):
            opt.step(closure)
        alone.append((w.detach().clone(), len(evaluations)))
    assert len({n for _, n in alone}) > 1  # the line searches differ

    pairs = [make(k) for k in range(3)]
    calls = []

    def evaluate():
        for w, _ in pairs:
            w.grad = None
        losses = torch.stack([loss_of(k, w) for k, (w, _) in enumerate(pairs)])
        losses.sum().backward()
        calls.append(1)
        return losses

    for _ in range(6):
        lockstep_steps([opt for _, opt in pairs], evaluate)
    for (w, _), (w_alone, _) in zip(pairs, alone, strict=True):
        assert torch.equal(w.detach(), w_alone)
    assert max(n for _, n in alone) <= len(calls) < sum(n for _, n in alone)
    for (w, _), (A, y) in zip(pairs, problems, strict=True):
        solution = torch.linalg.lstsq(A, y).solution
        torch.testing.assert_close(w.detach(), solution, rtol=1e-6, atol=1e-8)

    def failing():
        raise ValueError("evaluation failed")

    with pytest.raises(ValueError, match="evaluation failed"):
        lockstep_steps([opt for _, opt in pairs], failing)


# -- L2 penalty of the L-BFGS refinement ---------------------------------------------------


def test_weight_penalty_with_lbfgs_reaches_the_ridge_solution():
    """A linear model y = X w + b fitted by L-BFGS to the mean squared error plus
    weight_penalty (0.5 lambda |w|^2, the bias not penalised) reaches the closed-form
    ridge solution (2/n A^T A + lambda D) theta = 2/n A^T y, A = [X 1], D = diag(1.., 0)."""
    from nnmd_lammps.training.loss import weight_penalty

    rng = np.random.default_rng(0)
    n, d, lam = 40, 5, 0.7
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.3 + 0.1 * rng.normal(size=n)
    A = np.hstack([X, np.ones((n, 1))])
    D = np.diag([1.0] * d + [0.0])
    expected = np.linalg.solve(2.0 / n * A.T @ A + lam * D, 2.0 / n * A.T @ y)

    lin = torch.nn.Linear(d, 1, dtype=torch.float64)
    params = list(lin.parameters())
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    opt = torch.optim.LBFGS(
        params,
        max_iter=200,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
    )

    def closure():
        opt.zero_grad()
        loss = ((lin(Xt)[:, 0] - yt) ** 2).mean()
        loss.backward()
        return loss.detach() + weight_penalty(params, lam)

    opt.step(closure)
    got = np.concatenate([lin.weight.detach().numpy()[0], lin.bias.detach().numpy()])
    np.testing.assert_allclose(got, expected, atol=1e-9)
    # the returned penalty is 0.5 lambda |w|^2 of the weights alone
    w = lin.weight.detach()
    np.testing.assert_allclose(
        float(weight_penalty(params, lam)), 0.5 * lam * float((w * w).sum()), rtol=1e-14
    )


def test_refine_weight_decay_shrinks_the_weights(tmp_path, cu_data):
    """training.refine.weight_decay reaches the L-BFGS loss: a strong penalty leaves
    weight matrices far smaller than the same run without it, and its logged training
    loss is the data loss plus the penalty (above the unpenalised run's); a negative
    value is an error naming the key."""

    def weights_sq(out: Path) -> float:
        m = torch.jit.load(str(out / "model.pt"))
        return sum(float((p * p).sum().detach()) for p in m.parameters() if p.ndim >= 2)

    sq, last = {}, {}
    for name, wd in (("plain", 0.0), ("decay", 0.05)):
        cfg = tiny_config(cu_data, epochs=3, refine={"iterations": 30, "weight_decay": wd})
        out, _ = _train(cfg, tmp_path, name)
        sq[name] = weights_sq(out)
        last[name] = torch.load(out / "checkpoint.pt", weights_only=True)["history"][
            "refine_train_loss"
        ][-1]
    assert sq["decay"] < 0.5 * sq["plain"]
    assert last["decay"] > last["plain"]
    cfg = tiny_config(cu_data, refine={"iterations": 10, "weight_decay": -1.0})
    with pytest.raises(NNMDError, match=r"training\.refine\.weight_decay"):
        config_from_dict(cfg, tmp_path)
