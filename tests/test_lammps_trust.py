"""Trust in production MD, LAMMPS side (issue 11, docs/lammps.md): the ZBL repulsion of
pair_style nnmd against LAMMPS's own pair_style zbl, extrapolation checks against NumPy
from the Python descriptors, committee deviations against the Python committee, and the
errors of the new keywords. Each run is a separate lmp process (mpirun for several ranks);
per-atom values are read from dump files written through fix pair."""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from nnmd_lammps.interop.lammps import (
    boundary_of,
    lammps_frame,
    run_lammps,
    single_point_deck,
    venv_bin,
    write_lammps_data,
)
from nnmd_lammps.limits import EXTRAPOLATION_TOLERANCE
from nnmd_lammps.plugin_path import plugin_file

from conftest import random_potential, rewrite_metadata, save_potential

pytestmark = pytest.mark.lammps


@pytest.fixture(scope="module", autouse=True)
def plugin_built():
    assert plugin_file().exists(), f"{plugin_file()} is missing: run 'make setup'"


# -- running lmp directly (warnings and errors are only on screen and in the log) -------------


def _lmp(lines: list[str], workdir: Path, nprocs: int = 1) -> tuple[int, str]:
    """Run a deck with the lmp executable; returns the exit status and the log text
    (LAMMPS's log file, or the screen output when it failed before writing one)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "in.deck").write_text("\n".join(lines) + "\n")
    cmd = [venv_bin("lmp"), "-in", "in.deck", "-log", "log.lammps", "-nocite"]
    if nprocs > 1:
        cmd = [venv_bin("mpirun"), "-np", str(nprocs), *cmd]
    proc = subprocess.run(
        cmd,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    out = proc.stdout + proc.stderr
    assert "Segmentation" not in out and "terminate called" not in out, out[-3000:]
    return proc.returncode, out


def _last_dump(path: Path) -> dict[str, np.ndarray]:
    """The last frame of a `dump custom` file as columns by name, sorted by atom ID."""
    lines = path.read_text().splitlines()
    start = max(k for k, ln in enumerate(lines) if ln.startswith("ITEM: ATOMS"))
    names = lines[start].split()[2:]
    rows = np.array([[float(x) for x in ln.split()] for ln in lines[start + 1 :]])
    rows = rows[np.argsort(rows[:, names.index("id")])]
    return {n: rows[:, k] for k, n in enumerate(names)}


def _thermo(log: str) -> np.ndarray:
    """The thermo rows of a log (one run), other lines inside the table skipped."""
    rows, inside = [], False
    for line in log.splitlines():
        if line.split()[:1] == ["Step"]:
            inside = True
        elif line.startswith("Loop time"):
            inside = False
        elif inside and re.fullmatch(r"\s*-?\d+(\s+\S+)*\s*", line):
            try:
                rows.append([float(x) for x in line.split()])
            except ValueError:
                pass
    return np.array(rows)


def _head(data: Path, boundary: str = "p p p") -> list[str]:
    return [
        "units metal",
        "atom_style atomic",
        "atom_modify map array",
        f"boundary {boundary}",
        f"read_data {data}",
    ]


def _random(symbols: str, cell, pbc, seed: int, min_dist: float) -> Atoms:
    rng = np.random.default_rng(seed)
    n = len(Atoms(symbols))
    for _ in range(5000):
        atoms = Atoms(symbols, scaled_positions=rng.random((n, 3)), cell=cell, pbc=pbc)
        d = atoms.get_all_distances(mic=bool(np.all(pbc)))
        if d[np.triu_indices(n, 1)].min() > min_dist:
            return atoms
    raise RuntimeError("could not place atoms")


# -- ZBL repulsion: pair_style nnmd with a zero network equals pair_style zbl -----------------


def _zero_network_model(tmp_path: Path, inner: float, outer: float, rc: float) -> Path:
    """C and Cu with networks that return exactly 0 (weights, biases and energy shifts 0)
    plus a ZBL repulsion: what pair_style nnmd computes is the repulsion alone."""
    pot = random_potential(["C", "Cu"], seed=4, rc=rc)
    with torch.no_grad():
        for p in pot.network.parameters():
            p.zero_()
        for name, b in pot.network.named_buffers():
            if name.endswith("e_shift"):
                b.zero_()
    path = save_potential(pot, tmp_path / "zero.pt")

    def add_zbl(meta: dict) -> None:
        meta["format_version"] = 2
        meta["repulsion"] = {"type": "zbl", "inner": inner, "outer": outer}

    return rewrite_metadata(path, tmp_path / "zbl.pt", add_zbl)


@pytest.mark.parametrize(
    ("inner", "outer", "rc", "nprocs"),
    [
        (1.0, 2.2, 3.0, 1),
        pytest.param(1.0, 2.2, 3.0, 3, marks=pytest.mark.slow),
        (0.8, 3.2, 2.5, 1),  # outer > rc
    ],
)
def test_zbl_equals_lammps_pair_zbl(tmp_path, inner, outer, rc, nprocs):
    model = _zero_network_model(tmp_path, inner, outer, rc)
    atoms = _random("CuC3Cu2C2Cu3C", np.diag([5.0, 5.4, 5.8]), True, seed=3, min_dist=0.55)
    frame = lammps_frame(atoms)
    d = frame.get_all_distances(mic=True)[np.triu_indices(len(frame), 1)]
    assert (d < inner).sum() >= 2 and ((d > inner) & (d < outer)).sum() >= 5  # both regions
    data = tmp_path / "s.data"
    write_lammps_data(data, frame, ["C", "Cu"])
    ours = run_lammps(single_point_deck(data, model, ["C", "Cu"]), tmp_path / "nnmd", nprocs)
    deck = single_point_deck(data, model, ["C", "Cu"])
    k = next(i for i, c in enumerate(deck) if c.startswith("pair_style"))
    deck[k : k + 2] = [
        f"pair_style zbl {inner} {outer}",
        "pair_coeff 1 1 6 6",
        "pair_coeff 1 2 6 29",
        "pair_coeff 2 2 29 29",
    ]
    ref = run_lammps(deck, tmp_path / "zbl", nprocs)
    assert abs(ref.pe) > 1.0
    assert abs(ours.pe - ref.pe) < 1e-10 * abs(ref.pe)
    fscale = np.abs(ref.forces).max()
    assert np.abs(ours.forces - ref.forces).max() < 1e-10 * fscale
    escale = np.abs(ref.atomic_energies).max()
    assert np.abs(ours.atomic_energies - ref.atomic_energies).max() < 1e-10 * escale
    wscale = np.abs(ref.virial).max()
    assert np.abs(ours.virial - ref.virial).max() < 1e-10 * wscale
    assert np.abs(ours.atomic_virials - ref.atomic_virials).max() < 1e-10 * wscale


# -- extrapolation --------------------------------------------------------------------------


def _crystal(a: float, seed: int, rattle: float = 0.05) -> Atoms:
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((3, 3, 3))
    atoms.rattle(rattle, seed=seed)
    return lammps_frame(atoms)


@pytest.fixture(scope="module")
def ranged_model(tmp_path_factory):
    """A Cu model whose training range is that of the symmetry functions of three rattled
    fcc crystals (a = 3.61): the Python descriptors give G, NumPy the range."""
    d = tmp_path_factory.mktemp("range")
    pot = random_potential(["Cu"], seed=7, rc=4.2)
    base = save_potential(pot, d / "base.pt")
    training = [_crystal(3.61, seed) for seed in (1, 2, 3)]
    _, values = pot.descriptors_of(training, derivatives=False)
    G = values.G[0].numpy()
    lo, hi = G.min(0), G.max(0)

    def add_range(meta: dict) -> None:
        meta["format_version"] = 2
        meta["training_range"] = {
            "Cu": {
                "min": lo.tolist(),
                "max": hi.tolist(),
                "mean": G.mean(0).tolist(),
                "std": G.std(0).tolist(),
            }
        }

    model = rewrite_metadata(base, d / "ranged.pt", add_range)
    return pot, model, lo, hi, training


def _numpy_extrapolation(pot, atoms: Atoms, lo, hi):
    """Per-atom count, excursion and worst function (0-based) of docs/uncertainty.md, in
    NumPy from the Python descriptors of ``atoms``."""
    _, values = pot.descriptors_of([atoms], derivatives=False)
    G = np.empty((len(atoms), len(lo)))
    G[values.atoms[0].numpy()] = values.G[0].numpy()
    width = np.where(hi > lo, hi - lo, 1.0)
    exc = np.maximum((lo - G) / width, (G - hi) / width)
    count = (exc > EXTRAPOLATION_TOLERANCE).sum(1)
    return count, np.maximum(exc.max(1), 0.0), exc.argmax(1)


def _extrapolation_deck(data: Path, model: Path, style_args: str, steps: int = 0) -> list[str]:
    return [
        *_head(data),
        f"pair_style nnmd {style_args}".rstrip(),
        f"pair_coeff * * {model} Cu",
        "neighbor 1.0 bin",
        "fix fp all pair 1 nnmd extrapolation 0 extrapolation_excursion 0",
        "compute cp all pair nnmd",
        "thermo_style custom step pe c_cp[1] c_cp[2]",
        "thermo 1",
        "dump d all custom 1 dump.atoms id f_fp[1] f_fp[2]",
        "dump_modify d sort id format float %.17g",
        f"run {steps}",
    ]


def _displaced(training: Atoms) -> Atoms:
    """A training crystal with one atom pushed towards a neighbour: a few atoms leave the
    range, most do not."""
    atoms = training.copy()
    d = atoms.get_distances(10, range(len(atoms)), mic=True, vector=True)
    r = np.linalg.norm(d, axis=1)
    r[10] = np.inf
    j = int(np.argmin(r))
    atoms.positions[10] += 0.3 * d[j]
    return atoms


@pytest.mark.parametrize("case", ["compressed", "displaced", "training"])
def test_extrapolation_counts_equal_numpy(ranged_model, tmp_path, case):
    pot, model, lo, hi, training = ranged_model
    atoms = {
        "compressed": _crystal(3.35, seed=4),
        "displaced": _displaced(training[1]),
        "training": training[2],
    }[case]
    data = tmp_path / "s.data"
    write_lammps_data(data, atoms, ["Cu"])
    rc, log = _lmp(_extrapolation_deck(data, model, "extrapolation warn max 3"), tmp_path)
    assert rc == 0, log[-3000:]
    out = _last_dump(tmp_path / "dump.atoms")
    count, excursion, _ = _numpy_extrapolation(pot, atoms, lo, hi)
    np.testing.assert_array_equal(out["f_fp[1]"], count)
    np.testing.assert_allclose(out["f_fp[2]"], excursion, rtol=1e-9, atol=1e-12)
    th = _thermo(log)
    flagged = int((count > 0).sum())
    assert th[0, 2] == flagged and th[0, 3] == flagged  # compute pair nnmd [1], [2]
    warnings = [ln for ln in log.splitlines() if ln.startswith("WARNING") and "nnmd" in ln]
    if case == "training":
        assert flagged == 0 and not warnings
    elif case == "compressed":
        assert flagged == len(atoms)
    else:
        assert 0 < flagged < 10
    if flagged:
        assert len(warnings) == min(flagged, 3) + (flagged > 3)


@pytest.mark.slow
def test_extrapolation_warnings_identical_on_1_and_3_ranks(ranged_model, tmp_path):
    pot, model, lo, hi, training = ranged_model
    atoms = _displaced(training[0])
    data = tmp_path / "s.data"
    write_lammps_data(data, atoms, ["Cu"])
    count, excursion, worst = _numpy_extrapolation(pot, atoms, lo, hi)
    flagged = np.flatnonzero(count > 0)
    assert len(flagged) >= 3
    logs = {}
    for n in (1, 3):
        rc, log = _lmp(
            _extrapolation_deck(data, model, "extrapolation warn max 2 every 2", steps=5),
            tmp_path / f"np{n}",
            n,
        )
        assert rc == 0, log[-3000:]
        logs[n] = [ln for ln in log.splitlines() if ln.startswith("WARNING: pair nnmd")]
        # no integrator: every step has the same atoms; every 2 checks steps 0, 2, 4
        summary = f"pair nnmd: {3 * len(flagged)} extrapolating atom-step(s) on 3 checked step(s)"
        assert summary in log
    assert logs[1] == logs[3]
    lines = logs[1]
    # step 0: the two smallest atom IDs, then the suppression line; no warnings after that
    assert len(lines) == 3, lines
    for line, i in zip(lines[:2], flagged[:2], strict=True):
        assert line.startswith("WARNING: pair nnmd: step 0: extrapolation: ")
        assert f"atom {i + 1} (Cu) has {count[i]} of {len(lo)} symmetry functions" in line
        assert f"worst: function {worst[i] + 1} (" in line
        assert f"{excursion[i]:.4g} range widths outside" in line
    assert "further extrapolation warnings suppressed" in lines[2]


def test_extrapolation_error_stops_the_run(ranged_model, tmp_path):
    pot, model, lo, hi, training = ranged_model
    atoms = _displaced(training[0])
    data = tmp_path / "s.data"
    write_lammps_data(data, atoms, ["Cu"])
    count, _, worst = _numpy_extrapolation(pot, atoms, lo, hi)
    first = int(np.flatnonzero(count > 0)[0])
    for n in (1, 3):
        rc, out = _lmp(
            _extrapolation_deck(data, model, "extrapolation error"), tmp_path / f"{n}", n
        )
        assert rc != 0
        errors = [ln for ln in out.splitlines() if ln.startswith("ERROR")]
        assert len(errors) == 1, out[-3000:]
        assert "pair nnmd: extrapolation at step 0" in errors[0]
        assert f"atom {first + 1} (Cu)" in errors[0]
        assert f"worst: function {worst[first] + 1} (" in errors[0]
        assert f"{(count > 0).sum()} atom(s) outside the training range" in errors[0]


def test_extrapolation_ignore_and_no_range(ranged_model, tmp_path):
    """`extrapolation ignore` checks nothing (fix pair cannot read the counts); a model
    without a range says so once and runs."""
    pot, model, *_ = ranged_model
    data = tmp_path / "s.data"
    write_lammps_data(data, _crystal(3.35, seed=4), ["Cu"])
    deck = _extrapolation_deck(data, model, "extrapolation ignore")
    rc, out = _lmp(deck, tmp_path / "ignore")
    assert rc != 0 and "cannot extract property extrapolation from pair style" in out
    plain = save_potential(pot, tmp_path / "plain.pt")
    rc, out = _lmp(
        [*_head(data), "pair_style nnmd", f"pair_coeff * * {plain} Cu", "run 3"], tmp_path / "plain"
    )
    assert rc == 0, out[-3000:]
    assert out.count("stores no training range: extrapolation checks are off") == 1


# -- committees -------------------------------------------------------------------------------

COMMITTEE = 4


@pytest.fixture(scope="module")
def committee(tmp_path_factory):
    """A random committee of 4 for C, N, Cu (members differ by their initial weights), the
    same with a ZBL repulsion, and each member alone as a single-network model file."""
    from nnmd_lammps.model import HDNNP, Potential, build_hdnnp, save_model

    d = tmp_path_factory.mktemp("committee")
    elements = ["C", "N", "Cu"]
    base = random_potential(elements, seed=31, rc=4.0, cutoff_type=6, alpha=0.15)
    desc = base.description
    desc.committee = COMMITTEE
    torch.manual_seed(32)
    module = build_hdnnp(elements, desc)
    path = d / "committee.pt"
    save_model(path, base.spec, module, desc, {"kind": "test"})
    desc.repulsion = {"type": "zbl", "inner": 0.9, "outer": 1.7}
    path_zbl = d / "committee_zbl.pt"
    save_model(path_zbl, base.spec, module, desc, {"kind": "test"})
    desc.repulsion = None
    single = copy.deepcopy(desc)
    single.committee = 1
    members = []
    for m in range(COMMITTEE):
        nets = [module.networks[k].members[m] for k in range(len(elements))]
        members.append(d / f"member{m}.pt")
        save_model(members[-1], base.spec, HDNNP(elements, nets), single, {"kind": "test"})
    return {"plain": path, "zbl": path_zbl}, members, Potential


def _committee_structure(seed: int = 2) -> Atoms:
    return lammps_frame(
        _random("CuC2NCu3N2C2Cu2", [[6.2, 0, 0], [0.8, 5.9, 0], [-0.5, 0.6, 6.3]], True, seed, 1.0)
    )


def _committee_run(
    model: Path, atoms: Atoms, workdir: Path, nprocs: int, style_args: str, trigger: int = 0
):
    """Single point with fix pair dumping the per-atom deviations (``trigger`` 1: fix pair
    asks for them); returns run_lammps's result and the dump columns."""
    data = workdir / "s.data"
    workdir.mkdir(parents=True, exist_ok=True)
    write_lammps_data(data, atoms, ["C", "N", "Cu"])
    extra = [
        f"fix fp all pair 1 nnmd force_deviation {trigger} energy_deviation {trigger}",
        "compute cp all pair nnmd",
        "thermo_style custom step pe c_cp[3] c_cp[4] c_cp[5]",
        "thermo_modify format float %.17g",
        "dump d all custom 1 dump.atoms id f_fp[1] f_fp[2]",
        "dump_modify d sort id format float %.17g",
    ]
    deck = single_point_deck(data, model, ["C", "N", "Cu"], boundary_of(atoms), style_args, extra)
    res = run_lammps(deck, workdir, nprocs)
    return res, _last_dump(workdir / "dump.atoms")


@pytest.mark.parametrize("nprocs", [1, pytest.param(3, marks=pytest.mark.slow)])
@pytest.mark.parametrize("variant", ["plain", pytest.param("zbl", marks=pytest.mark.slow)])
def test_committee_python_equals_lammps(committee, tmp_path, nprocs, variant):
    """Mean energy and forces on steps with and without deviations, per-atom force and
    energy deviations (every step, or when fix pair triggers them): LAMMPS = Python to
    1e-10."""
    models, _, Potential = committee
    atoms = _committee_structure()
    res, dump = _committee_run(
        models[variant], atoms, tmp_path / "u", nprocs, "uncertainty every 1"
    )
    plain, _ = _committee_run(models[variant], atoms, tmp_path / "p", nprocs, "")
    # no uncertainty keyword, but fix pair's trigger asks for the deviations
    _, triggered = _committee_run(models[variant], atoms, tmp_path / "t", nprocs, "", trigger=1)
    mine = atoms.copy()
    mine.positions = res.positions
    ref = Potential.load(models[variant]).evaluate([mine], atomic_virials=True, uncertainty=True)[0]
    for r in (res, plain):
        assert abs(r.pe - ref.energy) < 1e-10 * abs(ref.energy)
        assert np.abs(r.forces - ref.forces).max() < 1e-10 * np.abs(ref.forces).max()
        assert np.abs(r.atomic_energies - ref.atomic_energies).max() < 1e-10
    for d in (dump, triggered):
        np.testing.assert_allclose(d["f_fp[1]"], ref.force_deviation, rtol=0, atol=1e-10)
        np.testing.assert_allclose(d["f_fp[2]"], ref.energy_deviation, rtol=0, atol=1e-10)
    assert ref.force_deviation.min() > 1e-3  # the members really differ


@pytest.mark.parametrize("nprocs", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_committee_deviations_equal_numpy_from_members(committee, tmp_path, nprocs):
    """Each member run alone in LAMMPS gives F^m and E^m; NumPy then gives
    sigma_F = sqrt(mean_m |F^m - F|^2), sigma_E = std_m E^m, their max and mean, which the
    committee run reports through fix pair and compute pair nnmd."""
    models, members, _ = committee
    atoms = _committee_structure(seed=5)
    data = tmp_path / "s.data"
    write_lammps_data(data, atoms, ["C", "N", "Cu"])
    runs = [
        run_lammps(single_point_deck(data, m, ["C", "N", "Cu"]), tmp_path / f"m{k}", nprocs)
        for k, m in enumerate(members)
    ]
    f = np.array([r.forces for r in runs])
    e = np.array([r.atomic_energies for r in runs])
    sigma_f = np.sqrt(((f - f.mean(0)) ** 2).sum(2).mean(0))
    sigma_e = e.std(0)
    rc, log = _lmp(
        [
            *_head(data),
            "pair_style nnmd uncertainty every 1",
            f"pair_coeff * * {models['plain']} C N Cu",
            "fix fp all pair 1 nnmd force_deviation 0 energy_deviation 0",
            "compute cp all pair nnmd",
            "thermo_style custom step pe c_cp[3] c_cp[4] c_cp[5]",
            "thermo_modify format float %.17g",
            "dump d all custom 1 dump.atoms id fx fy fz f_fp[1] f_fp[2]",
            "dump_modify d sort id format float %.17g",
            "run 0",
        ],
        tmp_path / "c",
        nprocs,
    )
    assert rc == 0, log[-3000:]
    dump = _last_dump(tmp_path / "c" / "dump.atoms")
    forces = np.stack([dump["fx"], dump["fy"], dump["fz"]], axis=1)
    np.testing.assert_allclose(forces, f.mean(0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dump["f_fp[1]"], sigma_f, rtol=0, atol=1e-10)
    np.testing.assert_allclose(dump["f_fp[2]"], sigma_e, rtol=0, atol=1e-10)
    th = _thermo(log)
    assert th.shape == (1, 5)
    np.testing.assert_allclose(
        th[0, 2:], [sigma_f.max(), sigma_f.mean(), sigma_e.max()], rtol=1e-12, atol=1e-13
    )


# -- native network evaluation: equal to the TorchScript methods ---------------------------


def _cpu_has_avx2_fma() -> bool:
    flags = next(
        (ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")),
        "",
    ).split()
    return "avx2" in flags and "fma" in flags


@pytest.fixture(scope="module")
def tanh_models(tmp_path_factory):
    """C, N, Cu networks of tanh layers and a linear output (what pair_style nnmd evaluates
    natively), N with normalize_nodes: a single network and a committee of 3."""
    from nnmd_lammps.model import Potential, build_hdnnp, save_model

    d = tmp_path_factory.mktemp("tanh")
    elements = ["C", "N", "Cu"]
    base = random_potential(
        elements, seed=51, rc=4.0, activations=("tanh", "tanh", "identity"), hidden=(9, 6)
    )
    desc = base.description
    desc.networks["N"].normalize_nodes = True
    models = {}
    for size in (1, 3):
        desc.committee = size
        torch.manual_seed(52 + size)
        models[size] = d / f"tanh{size}.pt"
        save_model(models[size], base.spec, build_hdnnp(elements, desc), desc, {"kind": "test"})
    return models, Potential


def _native_run(model: Path, atoms: Atoms, workdir: Path, committee: bool) -> tuple[str, dict]:
    """Single point (uncertainty every step for a committee); the log and the dump of
    forces, per-atom energies and deviations."""
    data = workdir / "s.data"
    workdir.mkdir(parents=True, exist_ok=True)
    write_lammps_data(data, atoms, ["C", "N", "Cu"])
    dev = ["fix fp all pair 1 nnmd force_deviation 0 energy_deviation 0"] if committee else []
    rc, log = _lmp(
        [
            *_head(data),
            "pair_style nnmd" + (" uncertainty every 1" if committee else ""),
            f"pair_coeff * * {model} C N Cu",
            "compute pe all pe/atom",
            *dev,
            "thermo_style custom step pe",
            "thermo_modify format float %.17g",
            "dump d all custom 1 dump.atoms id fx fy fz c_pe"
            + (" f_fp[1] f_fp[2]" if committee else ""),
            "dump_modify d sort id format float %.17g",
            "run 0",
        ],
        workdir,
    )
    assert rc == 0, log[-3000:]
    return log, _last_dump(workdir / "dump.atoms")


@pytest.mark.parametrize("size", [1, 3])
def test_native_networks_equal_libtorch(tanh_models, tmp_path, monkeypatch, size):
    """Networks of tanh layers run natively (AVX2) where the CPU allows: energies, forces,
    per-atom energies and committee deviations equal those of the TorchScript methods
    (NNMD_NETWORKS=libtorch) to rounding, and the Python prediction to 1e-10."""
    models, Potential = tanh_models
    atoms = _committee_structure(seed=7)
    committee = size > 1
    monkeypatch.delenv("NNMD_NETWORKS", raising=False)
    log_n, nat = _native_run(models[size], atoms, tmp_path / "native", committee)
    monkeypatch.setenv("NNMD_NETWORKS", "libtorch")
    log_t, ref = _native_run(models[size], atoms, tmp_path / "libtorch", committee)
    expect = "(native AVX2)" if _cpu_has_avx2_fma() else "(libtorch: no AVX2 and FMA)"
    assert expect in log_n
    assert "(libtorch: NNMD_NETWORKS=libtorch)" in log_t
    pe_n, pe_t = _thermo(log_n)[-1, 1], _thermo(log_t)[-1, 1]
    assert abs(pe_n - pe_t) <= 1e-12 * abs(pe_t)
    cols = ["fx", "fy", "fz", "c_pe"] + (["f_fp[1]", "f_fp[2]"] if committee else [])
    for c in cols:
        scale = np.abs(ref[c]).max()
        assert scale > 1e-3, c
        np.testing.assert_allclose(nat[c], ref[c], rtol=0, atol=1e-12 * scale, err_msg=c)
    # and the Python prediction
    pred = Potential.load(models[size]).evaluate([atoms], uncertainty=committee)[0]
    forces = np.stack([nat["fx"], nat["fy"], nat["fz"]], axis=1)
    assert abs(pe_n - pred.energy) < 1e-10 * abs(pred.energy)
    assert np.abs(forces - pred.forces).max() < 1e-10 * np.abs(pred.forces).max()
    if committee:
        np.testing.assert_allclose(nat["f_fp[1]"], pred.force_deviation, rtol=0, atol=1e-10)
        np.testing.assert_allclose(nat["f_fp[2]"], pred.energy_deviation, rtol=0, atol=1e-10)


def test_other_activations_use_libtorch(committee, tmp_path):
    """A model with softplus layers (not evaluated natively) runs through libtorch and says
    so."""
    models, _, _ = committee
    log, _ = _native_run(models["plain"], _committee_structure(), tmp_path, True)
    assert "(libtorch: networks not recognised: activation softplus)" in log


def _md_deck(data: Path, model: Path, threshold: float, steps: int) -> list[str]:
    return [
        *_head(data),
        "pair_style nnmd uncertainty every 5",
        f"pair_coeff * * {model} Cu",
        "neighbor 1.0 bin",
        "velocity all create 300 4928 loop geom",
        "fix 1 all nve",
        "timestep 0.001",
        "compute cp all pair nnmd",
        "variable dev equal c_cp[3]",
        f"fix halt all halt 5 v_dev > {threshold!r} error soft",
        "thermo 10",
        "thermo_style custom step pe c_cp[3] c_cp[4] c_cp[5]",
        "thermo_modify format float %.17g",
        f"run {steps}",
    ]


@pytest.fixture(scope="module")
def cu_committee(tmp_path_factory):
    """A random committee of 3 Cu networks; the training range of two rattled crystals."""
    from nnmd_lammps.descriptors.extrapolation import TrainingRange
    from nnmd_lammps.model import build_hdnnp, save_model

    base = random_potential(["Cu"], seed=41, rc=4.0)
    desc = base.description
    desc.committee = 3
    _, values = base.descriptors_of([_crystal(3.6, 11, 0.1), _crystal(3.5, 12, 0.1)], False)
    desc.training_range = {"Cu": TrainingRange.of(values.G[0])}
    torch.manual_seed(42)
    module = build_hdnnp(["Cu"], desc)
    model = tmp_path_factory.mktemp("cu_committee") / "cu_committee.pt"
    save_model(model, base.spec, module, desc, {"kind": "test"})
    return model


def test_fix_halt_on_force_deviation(cu_committee, tmp_path):
    """fix halt on c_ID[3] (the frame's largest force deviation, a variable) stops an MD
    run at the first check above the threshold; below it the run goes on."""
    from nnmd_lammps.model import Potential

    model = cu_committee
    atoms = _crystal(3.6, seed=1)
    data = tmp_path / "cu.data"
    write_lammps_data(data, atoms, ["Cu"])
    ref = Potential.load(model).evaluate([atoms], uncertainty=True)[0]
    start = ref.max_force_deviation
    rc, log = _lmp(_md_deck(data, model, 1e6, 20), tmp_path / "go")
    assert rc == 0, log[-3000:]
    th = _thermo(log)
    assert th[:, 0].tolist() == [0, 10, 20]
    assert th[0, 2] == pytest.approx(start, rel=1e-10)
    rc, log = _lmp(_md_deck(data, model, 0.5 * start, 20), tmp_path / "halt")
    assert rc == 0, log[-3000:]
    assert re.search(r"Fix halt condition for fix-id halt met on step 5 with value", log), log
    assert "Loop time of" in log and " for 5 steps with 108 atoms" in log


@pytest.mark.slow
def test_example_uncertainty_deck(cu_committee, tmp_path):
    """examples/lammps/in.uncertainty (a test committee in place of the demo's) on 2 ranks:
    halted at the first check above a tiny threshold, with the step reported; with a large
    threshold it runs to the end. Its dump has the per-atom deviations."""
    deck = Path(__file__).resolve().parents[1] / "examples" / "lammps" / "in.uncertainty"
    for threshold, steps, last in (("1e-6", 40, 10), ("1e6", 40, 40)):
        work = tmp_path / threshold
        work.mkdir()
        proc = subprocess.run(
            [
                venv_bin("mpirun"),
                "-np",
                "2",
                venv_bin("lmp"),
                "-in",
                str(deck),
                *("-var", "model", str(cu_committee), "-var", "steps", str(steps)),
                *("-var", "threshold", threshold, "-log", "log.unc"),
            ],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        log = (work / "log.unc").read_text()
        assert f"uncertainty: run ended at step {last}, T = " in log
        assert ("Fix halt condition for fix-id stop met on step 10" in log) == (last == 10)
        dump = _last_dump(work / "uncertainty.lammpstrj")
        assert dump["f_trust[1]"].max() > 0.0 and dump["f_trust[2]"].max() > 0.0


# -- bad input ----------------------------------------------------------------------------------


def _error_line(tmp_path: Path, lines: list[str]) -> str:
    rc, out = _lmp(lines, tmp_path)
    assert rc == 1, out[-3000:]
    errors = [ln for ln in out.splitlines() if ln.startswith("ERROR")]
    assert len(errors) == 1, out[-3000:]
    return errors[0]


BAD_KEYWORDS = {
    "uncertainty_single_network": (
        "uncertainty every 5",
        "uncertainty needs a committee model, but {model} has a single network per element",
    ),
    "unknown_keyword": ("extrapolate warn", "unknown keyword extrapolate"),
    "uncertainty_every_0": ("uncertainty every 0", "uncertainty every must be >= 1, got 0"),
    "uncertainty_without_every": ("uncertainty 5", "uncertainty needs 'every N'"),
    "extrapolation_every_0": (
        "extrapolation warn every 0",
        "extrapolation every must be >= 1, got 0",
    ),
    "extrapolation_max_negative": ("extrapolation warn max -1", "max must be >= 0, got -1"),
    "extrapolation_mode": (
        "extrapolation stop",
        "extrapolation must be warn, error or ignore, got stop",
    ),
    "extrapolation_missing_value": ("extrapolation error every", "every needs a value"),
}


@pytest.mark.parametrize("case", sorted(BAD_KEYWORDS))
def test_bad_keywords(ranged_model, tmp_path, case):
    _, model, _, _, training = ranged_model
    data = tmp_path / "s.data"
    write_lammps_data(data, training[0], ["Cu"])
    args, needle = BAD_KEYWORDS[case]
    err = _error_line(
        tmp_path, [*_head(data), f"pair_style nnmd {args}", f"pair_coeff * * {model} Cu", "run 0"]
    )
    assert needle.format(model=model) in err, err


BAD_METADATA = {  # edit of the metadata, expected message
    "range_length": (
        lambda m: m["training_range"]["Cu"]["min"].pop(),
        "training_range.Cu.min: expected 11 values (one per symmetry function of Cu), got 10",
    ),
    "range_order": (
        lambda m: m["training_range"]["Cu"]["max"].__setitem__(2, -1e9),
        "training_range.Cu: min[2] is larger than max[2]",
    ),
    "range_element": (
        lambda m: m["training_range"].__setitem__("Zr", m["training_range"]["Cu"]),
        "training_range: 'Zr' is not a model element",
    ),
    "committee_0": (lambda m: m.__setitem__("committee", 0), "committee: expected at least 1"),
    "committee_mismatch": (
        lambda m: m.__setitem__("committee", 3),
        "the metadata says committee 3 but the networks have 1 member(s) per element",
    ),
    "repulsion_type": (
        lambda m: m.__setitem__("repulsion", {"type": "lj", "inner": 1.0, "outer": 2.0}),
        "repulsion.type: unknown repulsion type 'lj' (known: zbl)",
    ),
    "repulsion_radii": (
        lambda m: m.__setitem__("repulsion", {"type": "zbl", "inner": 2.0, "outer": 1.5}),
        "repulsion: expected 0 < inner < outer, got inner 2 and outer 1.5",
    ),
    "version_3": (
        lambda m: m.__setitem__("format_version", 3),
        "model format version 3 is not supported (this plugin reads versions 1 to 2)",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_METADATA))
def test_bad_metadata(ranged_model, tmp_path, case):
    _, model, _, _, training = ranged_model
    edit, needle = BAD_METADATA[case]
    bad = rewrite_metadata(model, tmp_path / "bad.pt", edit)
    data = tmp_path / "s.data"
    write_lammps_data(data, training[0], ["Cu"])
    err = _error_line(
        tmp_path, [*_head(data), "pair_style nnmd", f"pair_coeff * * {bad} Cu", "run 0"]
    )
    assert needle in err, err
