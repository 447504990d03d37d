"""Active learning, parts 1 and 2: choosing trajectory frames (``nnmd select``,
nnmd_lammps.active.selection) and labelling them with a reference ASE calculator
(``nnmd label``, nnmd_lammps.active.labelling). Expected values come from the test's own
inputs (known deviations, hand-written dumps), from per-frame NumPy recomputations and
from ASE's EMT called directly."""

from __future__ import annotations

import functools
import json
from itertools import combinations

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.calculator import all_changes
from ase.calculators.emt import EMT

from nnmd_lammps.active.labelling import (
    CalculatorFactory,
    calculator_factory,
    failed_path,
    journal_path,
    label,
)
from nnmd_lammps.active.selection import (
    DEFAULT_MIN_DISTANCE,
    fingerprints,
    read_trajectory,
    select_candidates,
)
from nnmd_lammps.cli import main as nnmd_main
from nnmd_lammps.descriptors import DescriptorSpec, SymmetryFunction
from nnmd_lammps.descriptors.extrapolation import TrainingRange
from nnmd_lammps.errors import NNMDError
from nnmd_lammps.model import (
    ModelDescription,
    NetworkSpec,
    Potential,
    ScalingParams,
    build_hdnnp,
    read_metadata,
    save_model,
)

ELEMENTS = ["Cu", "Ag"]
RC = 4.2


def small_spec() -> DescriptorSpec:
    """Two radial functions per neighbour element and one angular per pair: cheap."""
    fns = {}
    for c in ELEMENTS:
        fs = [
            SymmetryFunction(2, c, (n,), eta, RC, rs)
            for n in ELEMENTS
            for eta, rs in ((0.3, 0.0), (1.0, 2.5))
        ]
        for a, b in (("Cu", "Cu"), ("Cu", "Ag"), ("Ag", "Ag")):
            fs.append(SymmetryFunction(9, c, (a, b), 0.1, RC, 0.0, -1.0, 2.0))
        fns[c] = fs
    return DescriptorSpec(ELEMENTS, fns)


def structure(seed: int = 0, scale: float = 1.0, n_ag: int = 3, rattle: float = 0.1):
    rng = np.random.default_rng(seed)
    a = bulk("Cu", "fcc", a=3.7 * scale, cubic=True).repeat((2, 1, 1))
    symbols = a.get_chemical_symbols()
    for i in rng.choice(len(a), n_ag, replace=False):
        symbols[i] = "Ag"
    a.set_chemical_symbols(symbols)
    a.rattle(rattle, seed=seed)
    return a


def make_potential(committee: int, seed: int = 3) -> Potential:
    """A random model (committee of ``committee``) with the training range of a few
    structures."""
    torch.manual_seed(seed)
    spec = small_spec()
    desc = ModelDescription(committee=committee)
    for e in ELEMENTS:
        n = spec.num_functions(e)
        desc.networks[e] = NetworkSpec([n, 6, 1], ["tanh", "identity"])
        desc.scaling[e] = ScalingParams(
            "scale", -1.0, 1.0, [0.0] * n, [2.0] * n, [1.0] * n, [1.0] * n
        )
        desc.energy_shift[e] = -2.0
    desc.energy_scale = 0.5
    module = build_hdnnp(ELEMENTS, desc)
    pot = Potential(spec, module, description=desc)
    values = pot.descriptors_of([structure(s) for s in range(4)], derivatives=False)[1]
    desc.training_range = {e: TrainingRange.of(values.G[k]) for k, e in enumerate(ELEMENTS)}
    return pot


@pytest.fixture(scope="module")
def committee(tmp_path_factory):
    pot = make_potential(2)
    path = tmp_path_factory.mktemp("active") / "committee.pt"
    save_model(path, pot.spec, pot.network, pot.description, {"kind": "test"})
    return Potential.load(path), path


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    pot = make_potential(1)
    path = tmp_path_factory.mktemp("active") / "single.pt"
    save_model(path, pot.spec, pot.network, pot.description, {"kind": "test"})
    return Potential.load(path), path


@functools.cache
def _loaded(path: str):
    return Potential.load(path), read_metadata(path)


def reference_fingerprint(path, atoms) -> np.ndarray:
    """The selection fingerprint recomputed for one frame: per element the mean and the
    (population) standard deviation of each raw symmetry function over the frame's atoms
    of that element, divided by the training range width stored in the model file."""
    pot, meta = _loaded(str(path))
    values = pot.descriptors_of([atoms], derivatives=False)[1]
    parts = []
    for k, e in enumerate(ELEMENTS):
        r = meta["training_range"][e]
        w = np.array(r["max"]) - np.array(r["min"])
        w[w <= 0] = 1.0
        g = values.G[k].numpy() / w
        if len(g):
            parts += [g.mean(0), g.std(0)]
        else:
            parts += [np.zeros(len(w)), np.zeros(len(w))]
    return np.concatenate(parts)


def rms(a, b) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


# ---------------------------------------------------------------------------------------
# Selection


def test_selection_picks_the_trust_window_and_counts_exactly(committee):
    pot, _ = committee
    frames = [structure(s) for s in range(24)]
    lo, hi = 0.1, 0.3
    dev = np.linspace(0.0, 0.46, 24)
    dev[5], dev[11], dev[20] = lo, hi, np.nan  # boundaries: lo is a candidate, hi is not
    window = [i for i in range(24) if lo <= dev[i] < hi]
    n_acc = sum(1 for d in dev if d < lo)
    n_fail = 24 - n_acc - len(window)
    assert (n_acc, len(window), n_fail) == (5, 9, 10)  # the premise, counted by hand

    sel = select_candidates(pot, frames, lo, hi, n=100, deviations=dev, min_distance=0.0)
    assert sel.indices == window  # distinct frames: every candidate, nothing else
    assert (sel.n_accurate, sel.n_candidate, sel.n_failed) == (5, 9, 10)
    assert sel.fractions() == pytest.approx((5 / 24, 9 / 24, 10 / 24))
    np.testing.assert_array_equal(sel.max_force_deviation, dev)

    sel = select_candidates(pot, frames, lo, hi, n=3, deviations=dev, min_distance=0.0)
    assert len(sel.indices) == 3 and set(sel.indices) <= set(window)
    # the first pick is the candidate with the highest deviation
    assert sel.order[0] == max(window, key=lambda i: dev[i])
    assert sel.indices == sorted(sel.order)
    # deterministic
    again = select_candidates(pot, frames, lo, hi, n=3, deviations=dev, min_distance=0.0)
    assert again.order == sel.order


def test_fingerprints_are_per_frame_means_and_spreads(committee):
    pot, path = committee
    frames = [structure(0), structure(1, n_ag=0), structure(2, scale=1.05, n_ag=6)]
    frames.append(frames[1][:1])  # a single atom: zero spread
    got = fingerprints(pot, frames)
    for k, a in enumerate(frames):
        np.testing.assert_allclose(got[k], reference_fingerprint(path, a), atol=1e-12)


def test_selection_is_diverse_in_descriptor_space(committee):
    pot, path = committee
    frames = [structure(s % 7, rattle=0.05 + 0.002 * s) for s in range(21)]
    dev = np.full(21, 0.2)
    fps = [reference_fingerprint(path, a) for a in frames]
    dist = {(i, j): rms(fps[i], fps[j]) for i, j in combinations(range(21), 2)}
    threshold = float(np.median(list(dist.values())))
    sel = select_candidates(pot, frames, 0.1, 0.3, n=21, deviations=dev, min_distance=threshold)
    assert 1 < len(sel.indices) < 21
    for i, j in combinations(sel.indices, 2):
        assert dist[(i, j)] >= threshold
    # it stopped because every other candidate is closer than the threshold to a chosen one
    for k in set(range(21)) - set(sel.indices):
        assert min(dist[tuple(sorted((k, i)))] for i in sel.indices) < threshold


def test_near_duplicate_frames_give_one_selection_per_cluster(committee):
    pot, path = committee
    bases = [structure(1), structure(2, scale=1.03, n_ag=1), structure(3, scale=0.97, n_ag=5)]
    frames, cluster = [], []
    for k in range(15):  # interleaved as along a trajectory that revisits three states
        a = bases[k % 3].copy()
        a.rattle(1e-4, seed=100 + k)
        frames.append(a)
        cluster.append(k % 3)
    fps = [reference_fingerprint(path, a) for a in frames]
    threshold = 0.01
    for i, j in combinations(range(15), 2):  # the premise: tight clusters far apart
        assert (rms(fps[i], fps[j]) < threshold) == (cluster[i] == cluster[j])
    dev = 0.1 + 0.01 * np.arange(15)
    sel = select_candidates(pot, frames, 0.05, 1.0, n=10, deviations=dev, min_distance=threshold)
    assert sorted(cluster[i] for i in sel.indices) == [0, 1, 2]
    assert sel.order[0] == 14  # the highest deviation first
    sel = select_candidates(pot, frames, 0.05, 1.0, n=2, deviations=dev, min_distance=threshold)
    assert len({cluster[i] for i in sel.indices}) == 2
    # the default threshold still merges exact copies
    copies = [bases[0].copy() for _ in range(4)]
    sel = select_candidates(pot, copies, 0.05, 1.0, n=4, deviations=[0.2] * 4)
    assert sel.indices == [0]


def test_evaluation_path_uses_the_committee_deviation(committee):
    pot, _ = committee
    frames = [structure(s, scale=0.93 + 0.02 * s) for s in range(6)]
    expected = []
    for a in frames:  # one by one, the per-atom deviations, max in NumPy
        (p,) = pot.evaluate([a], uncertainty=True)
        expected.append(np.max(p.force_deviation))
    expected = np.array(expected)
    assert np.ptp(expected) > 0
    # thresholds halfway between sorted values: batched and one-by-one evaluations may
    # differ in the last bits, which must not move a frame across a threshold
    srt = np.sort(expected)
    lo, hi = 0.5 * (srt[0] + srt[1]), 0.5 * (srt[3] + srt[4])
    sel = select_candidates(pot, frames, lo, hi, n=6, min_distance=0.0)
    np.testing.assert_allclose(sel.max_force_deviation, expected, rtol=1e-12, atol=1e-14)
    assert sel.indices == sorted(i for i in range(6) if lo <= expected[i] < hi)
    assert (sel.n_accurate, sel.n_candidate, sel.n_failed) == (1, 3, 2)


def test_selection_errors(committee, single):
    pot, _ = committee
    frames = [structure(0), structure(1)]
    with pytest.raises(NNMDError, match="lo < hi"):
        select_candidates(pot, frames, 0.3, 0.3, 2, deviations=[0.1, 0.2])
    with pytest.raises(NNMDError, match="at least 1"):
        select_candidates(pot, frames, 0.1, 0.3, 0, deviations=[0.1, 0.2])
    with pytest.raises(NNMDError, match="2 frames"):
        select_candidates(pot, frames, 0.1, 0.3, 2, deviations=[0.1])
    spot, _ = single
    with pytest.raises(NNMDError, match="committee"):
        select_candidates(spot, frames, 0.1, 0.3, 2)
    # a single network is fine when the deviations are given
    sel = select_candidates(spot, frames, 0.1, 0.3, 2, deviations=[0.1, 0.2], min_distance=0)
    assert sel.indices == [0, 1]


DUMP_FRAME = """ITEM: TIMESTEP
{step}
ITEM: NUMBER OF ATOMS
{n}
ITEM: BOX BOUNDS pp pp pp
0.0 {lx}
0.0 {ly}
0.0 {lz}
ITEM: ATOMS id type x y z {column} vx
"""


def write_dump(path, frames, deviations, column="f_trust[1]"):
    """A LAMMPS text dump by hand: atom lines in reverse id order, type 1 = Cu, 2 = Ag."""
    with open(path, "w") as fh:
        for k, (a, dev) in enumerate(zip(frames, deviations, strict=True)):
            lx, ly, lz = (float(v) for v in np.diag(a.get_cell()))
            fh.write(DUMP_FRAME.format(step=100 * k, n=len(a), lx=lx, ly=ly, lz=lz, column=column))
            for i in reversed(range(len(a))):
                x, y, z = (float(v) for v in a.positions[i])
                t = ELEMENTS.index(a.get_chemical_symbols()[i]) + 1
                fh.write(f"{i + 1} {t} {x!r} {y!r} {z!r} {float(dev[i])!r} 0.0\n")


def test_lammps_dump_with_types_and_deviation_column(committee, tmp_path, capsys):
    _, model = committee
    frames = [structure(s) for s in range(6)]
    rng = np.random.default_rng(0)
    per_atom = [rng.uniform(0.0, 0.5, len(a)) for a in frames]
    dump = tmp_path / "md.dump"
    write_dump(dump, frames, per_atom)
    per_frame = [float(d.max()) for d in per_atom]

    got, dev = read_trajectory(dump, ["Cu", "Ag"], deviation_column="f_trust[1]")
    np.testing.assert_array_equal(dev, per_frame)
    for a, b in zip(got, frames, strict=True):
        assert a.get_chemical_symbols() == b.get_chemical_symbols()
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-12)
    # a column that ASE does not keep as an array (no f_/c_/v_ prefix) is read as well
    plain = tmp_path / "plain.dump"
    write_dump(plain, frames, per_atom, column="maxdev")
    np.testing.assert_array_equal(read_trajectory(plain, ["Cu", "Ag"], None, "maxdev")[1], dev)

    lo, hi = 0.3, 0.45
    out = tmp_path / "sel.extxyz"
    args = [str(model), str(dump), "--lo", str(lo), "--hi", str(hi), "--types", "Cu,Ag"]
    args += ["--deviation-column", "f_trust[1]", "--min-distance", "0", "-o", str(out)]
    assert nnmd_main(["select", *args]) == 0
    window = [k for k, d in enumerate(per_frame) if lo <= d < hi]
    assert window  # the premise
    selected = ase.io.read(out, index=":")
    assert [a.info["source"] for a in selected] == [f"{dump}:{k}" for k in window]
    for a, k in zip(selected, window, strict=True):
        assert a.info["max_force_deviation"] == pytest.approx(per_frame[k], abs=1e-12)
        assert a.get_chemical_symbols() == frames[k].get_chemical_symbols()
        np.testing.assert_allclose(a.positions, frames[k].positions, atol=1e-8)
        assert a.calc is None or "forces" not in a.calc.results
    line = capsys.readouterr().out.strip()
    n_acc = sum(d < lo for d in per_frame)
    assert f"read 6 frames from 1 file(s): accurate {n_acc} " in line
    assert f"selected {len(window)}" in line and "\n" not in line

    # numeric types without --types, and a type beyond --types: one-line errors
    assert (
        nnmd_main(["select", str(model), str(dump), "--lo", "0.1", "--hi", "0.2", "-o", str(out)])
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("nnmd: error:") and "--types" in err and "\n" not in err
    with pytest.raises(NNMDError, match="atom type 2"):
        read_trajectory(dump, ["Cu"])


def test_select_cli_evaluates_the_committee_and_reports_errors(committee, single, tmp_path, capsys):
    pot, model = committee
    frames = [structure(s, scale=0.93 + 0.02 * s) for s in range(6)]
    traj = tmp_path / "traj.extxyz"
    ase.io.write(traj, frames)
    frames = ase.io.read(traj, index=":")  # positions as written (8 decimals)
    dev = np.array([p.max_force_deviation for p in pot.evaluate(frames, uncertainty=True)])
    lo, hi = float(np.sort(dev)[2]), float(np.sort(dev)[5])
    out = tmp_path / "sel.extxyz"
    window = ["--lo", repr(lo), "--hi", repr(hi)]
    assert nnmd_main(["select", str(model), str(traj), *window, "-n", "2", "-o", str(out)]) == 0
    selected = ase.io.read(out, index=":")
    assert len(selected) == 2
    for a in selected:
        k = int(a.info["source"].rsplit(":", 1)[1])
        assert lo <= dev[k] < hi
        assert a.info["max_force_deviation"] == pytest.approx(dev[k], rel=1e-10)
    assert "candidate 3 (50.0%)" in capsys.readouterr().out

    def one_line_error(argv, *needles):
        assert nnmd_main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("nnmd: error:")
        for needle in needles:
            assert needle in err

    with pytest.raises(SystemExit):  # the help states the library's default
        nnmd_main(["select", "--help"])
    assert f"default {DEFAULT_MIN_DISTANCE:g})" in " ".join(capsys.readouterr().out.split())

    base = ["select", str(model), str(traj), "-o", str(out)]
    one_line_error([*base, "--lo", "0.2", "--hi", "0.1"], "lo < hi")
    one_line_error([*base, "--lo", "0.1", "--hi", "0.2", "-n", "0"], "at least 1")
    one_line_error([*base, "--lo", "0.1", "--hi", "0.2", "--types", "Cu,Xx"], "Xx")
    _, single_model = single
    one_line_error(
        ["select", str(single_model), str(traj), "--lo", "0.1", "--hi", "0.2", "-o", str(out)],
        "committee",
    )


# ---------------------------------------------------------------------------------------
# Labelling

CALLS = {"n": 0}


class CountingEMT(EMT):
    """EMT that counts its calculations (in this process)."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        CALLS["n"] += 1
        super().calculate(atoms, properties, system_changes)


class FailOnMarked(EMT):
    """EMT that raises for frames with info['fail']."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        if atoms is not None and atoms.info.get("fail"):
            raise RuntimeError("SCF did not converge\nsecond line of the message")
        super().calculate(atoms, properties, system_changes)


class InterruptAfter(EMT):
    """EMT that is interrupted (as by Ctrl-C) at its (limit + 1)-th calculation."""

    limit = 3

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.count = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        if self.count >= self.limit:
            raise KeyboardInterrupt
        self.count += 1
        CALLS["n"] += 1
        super().calculate(atoms, properties, system_changes)


def label_frames():
    """Periodic cells (with stress), a molecule (no stress), a slab (2D: no stress)."""
    frames = [structure(s, rattle=0.08) for s in range(5)]
    frames.insert(2, molecule("H2O"))
    slab = bulk("Cu", "fcc", a=3.6, cubic=True)
    slab.center(vacuum=4.0, axis=2)
    slab.pbc = (True, True, False)
    slab.rattle(0.05, seed=7)
    frames.append(slab)
    for k, a in enumerate(frames):
        a.info["source"] = f"md.dump:{k}"
    return frames


def test_label_with_emt_reproduces_emt(tmp_path):
    frames = label_frames()
    out = tmp_path / "labelled.extxyz"
    report = label(frames, EMT, out)
    assert report.labelled == list(range(len(frames))) and report.failed == []
    got = ase.io.read(out, index=":")
    assert len(got) == len(frames)
    for a, ref in zip(got, frames, strict=True):
        b = ref.copy()
        b.calc = EMT()
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-10)
        # extended XYZ writes per-atom columns with 8 decimals
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-8)
        np.testing.assert_allclose(a.positions, ref.positions, atol=1e-8)
        assert a.info["source"] == ref.info["source"]
        if ref.pbc.all():
            np.testing.assert_allclose(a.get_stress(), b.get_stress(), atol=1e-10)
        else:
            assert "stress" not in a.calc.results
    assert not failed_path(out).exists()


def test_failing_frame_is_skipped_and_reported(tmp_path):
    frames = label_frames()
    frames[3].info["fail"] = True
    out = tmp_path / "labelled.extxyz"
    report = label(frames, FailOnMarked, out)
    assert report.failed == [(3, "RuntimeError: SCF did not converge")]
    assert report.labelled == [k for k in range(len(frames)) if k != 3]
    doc = json.loads(failed_path(out).read_text())
    assert doc["failed"] == [
        {"index": 3, "error": "RuntimeError: SCF did not converge", "source": "md.dump:3"}
    ]
    got = ase.io.read(out, index=":")
    assert [a.info["source"] for a in got] == [f"md.dump:{k}" for k in report.labelled]
    for a, k in zip(got, report.labelled, strict=True):
        b = frames[k].copy()
        b.calc = EMT()
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-10)
    # resuming does not retry the failure unless asked to
    CALLS["n"] = 0
    again = label(frames, CountingEMT, out)
    assert CALLS["n"] == 0 and again.failed == report.failed
    again = label(frames, CountingEMT, out, retry_failed=True)
    assert CALLS["n"] == 1 and again.failed == [] and not failed_path(out).exists()


def test_interrupted_labelling_resumes_without_recomputing(tmp_path):
    frames = label_frames()
    n = len(frames)
    unbroken = tmp_path / "unbroken.extxyz"
    label(frames, EMT, unbroken)

    out = tmp_path / "resumed.extxyz"
    CALLS["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        label(frames, InterruptAfter, out)
    assert CALLS["n"] == InterruptAfter.limit
    assert not out.exists()
    # a record cut short by a kill in the middle of a write is dropped
    with journal_path(out).open("a") as fh:
        fh.write('{"index": 5, "energy": 1.0, "forc')
    CALLS["n"] = 0
    report = label(frames, CountingEMT, out)
    assert CALLS["n"] == n - InterruptAfter.limit
    assert (report.reused, report.computed) == (InterruptAfter.limit, n - InterruptAfter.limit)
    assert out.read_bytes() == unbroken.read_bytes()
    # a finished labelling computes nothing when run again; restart recomputes all
    CALLS["n"] = 0
    label(frames, CountingEMT, out)
    assert CALLS["n"] == 0
    label(frames, CountingEMT, out, resume=False)
    assert CALLS["n"] == n and out.read_bytes() == unbroken.read_bytes()
    # the journal of other frames is not used
    with pytest.raises(NNMDError, match="different input"):
        label(frames[:-1], CountingEMT, out)


def test_parallel_workers_give_the_serial_result(tmp_path):
    frames = label_frames()
    frames[1].info["fail"] = True
    serial, parallel = tmp_path / "serial.extxyz", tmp_path / "parallel.extxyz"
    a = label(frames, FailOnMarked, serial)
    b = label(frames, CalculatorFactory(f"{__name__}:FailOnMarked"), parallel, workers=2)
    assert b.failed == a.failed == [(1, "RuntimeError: SCF did not converge")]
    assert serial.read_bytes() == parallel.read_bytes()


def test_label_cli_resume_and_errors(tmp_path, capsys):
    frames = label_frames()
    src = tmp_path / "in.extxyz"
    ase.io.write(src, frames)
    out = tmp_path / "out.extxyz"
    me = __name__
    CALLS["n"] = 0
    rc = nnmd_main(["label", str(src), "--calculator", f"{me}:InterruptAfter", "-o", str(out)])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted after 3 frame(s)" in err
    rc = nnmd_main(["label", str(src), "--calculator", f"{me}:CountingEMT", "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert f"resuming from {journal_path(out)}: 3 of {len(frames)} frames" in text
    assert CALLS["n"] == len(frames)  # 3 before the interruption, the rest now
    got = ase.io.read(out, index=":")
    for a, ref in zip(got, ase.io.read(src, index=":"), strict=True):
        b = ref.copy()
        b.calc = EMT()
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-10)

    def one_line_error(extra, *needles):
        assert nnmd_main(["label", str(src), "-o", str(tmp_path / "x.extxyz"), *extra]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("nnmd: error:")
        for needle in needles:
            assert needle in err

    one_line_error(["--calculator", "ase.calculators.emt:NoSuchCalc"], "NoSuchCalc")
    one_line_error(["--calculator", "no_such_module.x:EMT"], "no_such_module")
    one_line_error(["--calculator", "EMT"], "MODULE:CLASS")
    one_line_error(["--calculator", "ase.calculators.emt:EMT", "--kwargs", "{asap: 1"], "JSON")
    one_line_error(["--calculator", "ase.calculators.emt:EMT", "--kwargs", "[1]"], "object")
    # a class that cannot be made from the arguments (SinglePointCalculator needs atoms)
    one_line_error(
        ["--calculator", "ase.calculators.singlepoint:SinglePointCalculator"],
        "cannot create the calculator",
    )


def test_calculator_factory_is_picklable():
    import pickle

    f = calculator_factory("ase.calculators.emt:EMT", '{"asap_cutoff": true}')
    g = pickle.loads(pickle.dumps(f))
    assert type(g()) is EMT and g().parameters["asap_cutoff"] is True
