"""nnmd active-learn: a tiny loop end to end (EMT copper, 4-atom cells, committee of 2,
short LAMMPS runs), resume after a kill during labelling and during training, and the
configuration errors. Expected values come from ASE's EMT, the committee evaluated in
Python and counts derived from the configuration, not from the loop's own reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT

from nnmd_lammps.active.config import al_config_from_dict, load_al_config
from nnmd_lammps.active.loop import ActiveLearning, active_learn
from nnmd_lammps.errors import NNMDError
from nnmd_lammps.model.modelfile import read_metadata
from nnmd_lammps.plugin_path import plugin_file

pytestmark = pytest.mark.skipif(
    not plugin_file().exists(), reason="the LAMMPS plugin is not built (make setup)"
)

N_INITIAL = 5
EPOCHS = 4
STEPS, DUMP_EVERY = 40, 10
PER_ITERATION = 3


def _cells(n: int, seed: int) -> list:
    out = []
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = bulk("Cu", "fcc", a=3.61, cubic=True)
        a.set_cell(a.cell @ (np.eye(3) + 0.02 * rng.standard_normal((3, 3))), scale_atoms=True)
        a.rattle(0.05, seed=seed + i)
        out.append(a)
    return out


def _config(tmp: Path, **al_overrides) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    ase.io.write(tmp / "start.extxyz", _cells(N_INITIAL, 0))
    test = _cells(2, 100)
    for a in test:
        a.calc = EMT()
        a.get_potential_energy()
    ase.io.write(tmp / "test.extxyz", test)
    al = {
        "calculator": "ase.calculators.emt:EMT",
        "initial_structures": ["start.extxyz"],
        "trust": {"lo": 0.001, "hi": 50.0},
        "frames_per_iteration": PER_ITERATION,
        "max_iterations": 2,
        # the second (last) iteration starts from the first one's committee
        "warm_start_from_iteration": 1,
        "exploration": {
            "temperatures": [700],
            "steps": STEPS,
            "timestep": 0.002,
            "dump_every": DUMP_EVERY,
            "max_starts": 1,
        },
    }
    al.update(al_overrides)
    raw = {
        "elements": ["Cu"],
        "cutoff": 4.0,
        "data": {"test": ["test.extxyz"], "validation_fraction": 0.0},
        "descriptors": {"radial": 4, "angular": 4},
        "network": {"hidden": [6], "committee": 2},
        "training": {"epochs": EPOCHS, "batch_size": 4, "seed": 3, "threads": 1},
        "active_learning": al,
    }
    (tmp / "al.yaml").write_text(yaml.safe_dump(raw))
    return raw


def _quiet(msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("al")
    _config(tmp)
    cfg = load_al_config(tmp / "al.yaml")
    state = ActiveLearning(cfg, tmp / "run", log=_quiet).run()
    return tmp, state


def _data_set(run: Path) -> list[tuple]:
    """Every labelled frame of the run: positions, energy, forces (the data set)."""
    out = []
    for k in range(2):
        for a in ase.io.read(run / f"iter_{k}" / "labelled.extxyz", ":"):
            out.append((a.positions.copy(), a.get_potential_energy(), a.get_forces().copy()))
    return out


def _assert_same_data(run_a: Path, run_b: Path) -> None:
    a, b = _data_set(run_a), _data_set(run_b)
    assert len(a) == len(b) == N_INITIAL + PER_ITERATION
    for (pa, ea, fa), (pb, eb, fb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa, pb)
        assert ea == eb
        np.testing.assert_array_equal(fa, fb)
    sa = ase.io.read(run_a / "iter_1" / "selected.extxyz", ":")
    sb = ase.io.read(run_b / "iter_1" / "selected.extxyz", ":")
    assert [x.positions.tolist() for x in sa] == [x.positions.tolist() for x in sb]


@pytest.mark.slow
def test_loop_end_to_end(unbroken):
    from nnmd_lammps.active.selection import read_trajectory
    from nnmd_lammps.model import Potential

    tmp, state = unbroken
    run = tmp / "run"
    assert state["finished"] and "max_iterations" in state["stop_reason"]
    assert json.loads((run / "state.json").read_text())["completed"][-1] == "iter_1/summary"
    assert (run / "progress.png").stat().st_size > 0
    initial = ase.io.read(tmp / "start.extxyz", ":")
    test = ase.io.read(tmp / "test.extxyz", ":")
    n_frames_per_run = STEPS // DUMP_EVERY + 1
    for k in range(2):
        d = run / f"iter_{k}"
        summary = json.loads((d / "summary.json").read_text())
        # iteration 0 labels the initial structures, iteration 1 what iteration 0 selected
        new = initial if k == 0 else ase.io.read(run / "iter_0" / "selected.extxyz", ":")
        labelled = ase.io.read(d / "labelled.extxyz", ":")
        assert len(labelled) == len(new) == (N_INITIAL if k == 0 else PER_ITERATION)
        for a, b in zip(new, labelled, strict=True):
            a.calc = EMT()
            assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), abs=1e-7)
            np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-7)
        assert summary["structures"] == N_INITIAL + k * PER_ITERATION
        assert summary["labelled"] == len(new) and summary["label_failed"] == 0
        # one exploration run (max_starts 1, one temperature) of STEPS / DUMP_EVERY + 1 frames
        assert summary["explored_frames"] == n_frames_per_run
        # the dumped deviations are the committee's, evaluated here in Python
        pot = Potential.load(d / "train" / "model.pt")
        frames, dev = read_trajectory(
            d / "explore" / "run_000" / "md.dump", types=["Cu"], deviation_column="f_trust"
        )
        ref = [p.max_force_deviation for p in pot.evaluate(frames, uncertainty=True)]
        np.testing.assert_allclose(dev, ref, rtol=1e-6, atol=1e-9)
        lo, hi = 0.001, 50.0
        assert summary["accurate_fraction"] == pytest.approx(np.mean(dev < lo))
        assert summary["candidate_fraction"] == pytest.approx(np.mean((dev >= lo) & (dev < hi)))
        assert summary["failed_fraction"] == pytest.approx(np.mean(dev >= hi))
        selected = ase.io.read(d / "selected.extxyz", ":")
        assert summary["selected"] == len(selected) == PER_ITERATION
        # the test error of this iteration's model, against EMT
        preds = pot.evaluate(test)
        diff = np.concatenate([p.forces - t.get_forces() for p, t in zip(preds, test, strict=True)])
        rmse = np.sqrt(np.mean(diff**2))
        assert summary["test"]["force_rmse_ev_per_angstrom"] == pytest.approx(rmse, rel=1e-6)
        assert summary["wall_time_s"] > 0
        # the training set of iteration k: the labelled frames of iterations 0..k
        used = yaml.safe_load((d / "train" / "config.yaml").read_text())["data"]["train"]
        assert used == [
            str((run / f"iter_{j}" / "labelled.extxyz").resolve()) for j in range(k + 1)
        ]
        # iteration 1 starts from iteration 0's committee: same symmetry functions, the
        # previous model file named in its config and log
        initial = yaml.safe_load((d / "train" / "config.yaml").read_text())["training"][
            "initial_model"
        ]
        if k == 0:
            assert initial is None
            # with warm starts the first iteration keeps every generated function (4 radial
            # + 4 angular for Cu): the later iterations inherit the set
            assert (
                yaml.safe_load((d / "train" / "config.yaml").read_text())["descriptors"]["prune"]
                is False
            )
            assert len(read_metadata(d / "train" / "model.pt")["symmetry_functions"]["Cu"]) == 8
        else:
            previous = (run / "iter_0" / "train" / "model.pt").resolve()
            assert Path(initial) == previous
            assert f"warm start from {previous}" in (d / "train" / "train.log").read_text()
            before, after = read_metadata(previous), read_metadata(d / "train" / "model.pt")
            assert after["symmetry_functions"] == before["symmetry_functions"]


def test_default_warm_starts_begin_with_the_third_iteration(tmp_path, monkeypatch):
    """warm_start_from_iteration 2 (the default): iterations 0 and 1 train from scratch,
    iteration 1 (whose functions later iterations inherit) without pruning, and
    iteration k >= 2 starts from iteration k-1's model file."""
    import nnmd_lammps.training as training

    raw = _config(tmp_path)
    del raw["active_learning"]["warm_start_from_iteration"]
    raw["descriptors"]["select"] = 6
    cfg = al_config_from_dict(raw, tmp_path)
    assert cfg.al.warm_start and cfg.al.warm_start_from_iteration == 2
    seen = []
    monkeypatch.setattr(training, "train", lambda c, out, resume: seen.append(c))
    loop = ActiveLearning(cfg, tmp_path / "run", log=_quiet)
    for k in range(4):
        d = tmp_path / "run" / f"iter_{k}"
        d.mkdir(parents=True)
        (d / "label.json").write_text(json.dumps({"labelled": 1}))
        loop._train(k, d)
    assert [c.training.initial_model for c in seen] == [
        None,
        None,
        str((tmp_path / "run" / "iter_1" / "train" / "model.pt").resolve()),
        str((tmp_path / "run" / "iter_2" / "train" / "model.pt").resolve()),
    ]
    assert [c.descriptors.prune for c in seen] == [True, False, True, True]
    assert [c.descriptors.select for c in seen] == [6, None, 6, 6]
    assert [len(c.data.train) for c in seen] == [1, 2, 3, 4]


class Killed(Exception):
    pass


@pytest.mark.slow
def test_resume_after_kill_during_labelling(unbroken, tmp_path, monkeypatch):
    import nnmd_lammps.active.labelling as labelling

    _config(tmp_path)
    cfg = load_al_config(tmp_path / "al.yaml")
    real = labelling.calculate
    calls = []

    def dying(calc, index, atoms):
        calls.append(index)
        if len(calls) == N_INITIAL + 2:  # the second frame of iteration 1
            raise Killed
        return real(calc, index, atoms)

    monkeypatch.setattr(labelling, "calculate", dying)
    with pytest.raises(Killed):
        ActiveLearning(cfg, tmp_path / "run", log=_quiet).run()
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["current"] == "iter_1/label" and not state["finished"]
    monkeypatch.setattr(labelling, "calculate", real)
    with pytest.raises(NNMDError, match="--resume"):
        ActiveLearning(cfg, tmp_path / "run", log=_quiet).run()
    computed = []
    monkeypatch.setattr(labelling, "calculate", lambda c, i, a: computed.append(i) or real(c, i, a))
    ActiveLearning(cfg, tmp_path / "run", resume=True, log=_quiet).run()
    assert computed == [1, 2]  # frame 0 of iteration 1 came from the journal
    _assert_same_data(unbroken[0] / "run", tmp_path / "run")


@pytest.mark.slow
def test_resume_after_kill_during_training(unbroken, tmp_path, monkeypatch):
    from nnmd_lammps.training.trainer import Trainer

    _config(tmp_path)
    cfg = load_al_config(tmp_path / "al.yaml")
    real = Trainer._save
    calls = []

    def dying(self, state):
        real(self, state)
        calls.append(state.epoch)
        if len(calls) == EPOCHS + 2:  # after epoch 2 of iteration 1's training
            raise Killed

    monkeypatch.setattr(Trainer, "_save", dying)
    with pytest.raises(Killed):
        active_learn(cfg, tmp_path / "run")
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["current"] == "iter_1/train"
    monkeypatch.setattr(Trainer, "_save", real)
    ActiveLearning(cfg, tmp_path / "run", resume=True, log=_quiet).run()
    log = (tmp_path / "run" / "iter_1" / "train" / "train.log").read_text()
    assert "resuming after epoch 2" in log
    _assert_same_data(unbroken[0] / "run", tmp_path / "run")
    # the resumed model is the unbroken one
    a = (unbroken[0] / "run" / "iter_1" / "summary.json").read_text()
    b = (tmp_path / "run" / "iter_1" / "summary.json").read_text()
    assert json.loads(a)["test"] == json.loads(b)["test"]


@pytest.mark.slow
def test_finished_loop_resumes_as_a_no_op(unbroken):
    tmp, _ = unbroken
    before = (tmp / "run" / "state.json").read_text()
    cfg = load_al_config(tmp / "al.yaml")
    ActiveLearning(cfg, tmp / "run", resume=True, log=_quiet).run()
    assert (tmp / "run" / "state.json").read_text() == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"calculator": "ase.calculators.emt:NoSuchCalc"}, "has no 'NoSuchCalc'"),
        ({"calculator": "no_such_module_xyz:EMT"}, "cannot import module"),
        ({"trust": {"lo": 0.3, "hi": 0.3}}, "lo < hi"),
        ({"trust": {"lo": 0.5, "hi": 0.1}}, "lo < hi"),
        ({"initial_structures": []}, "no starting structures"),
        ({"initial_structures": ["missing.extxyz"]}, "not found"),
        ({"frames_per_iteraton": 3}, "unknown config key 'active_learning.frames_per_iteraton'"),
        ({"exploration": {"temperatures": [300], "stepz": 5}}, "did you mean 'steps'"),
        ({"exploration": {"steps": 5}}, "temperatures' is required"),
        ({"trust": {"lo": "low", "hi": 1}}, "must be a number"),
        ({"warm_start_epochs": 0}, "warm_start_epochs' must be >= 1"),
        ({"warm_start": "yes"}, "warm_start"),
        ({"warm_start_from_iteration": 0}, "warm_start_from_iteration' must be >= 1"),
    ],
)
def test_bad_configs_give_one_line_errors(tmp_path, change, message):
    raw = _config(tmp_path, **change)
    with pytest.raises(NNMDError, match=message) as err:
        al_config_from_dict(raw, tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path):
    raw = _config(tmp_path, trust={"lo": 1.0, "hi": 0.5})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    bad_template = tmp_path / "in.template"
    bad_template.write_text("read_data {data}\npair_coeff * * {model} {elements}\n{dumpfile}\n")
    raw2 = _config(tmp_path)
    raw2["active_learning"]["exploration"]["template"] = "in.template"
    (tmp_path / "bad2.yaml").write_text(yaml.safe_dump(raw2))
    raw3 = _config(tmp_path)
    del raw3["active_learning"]
    (tmp_path / "bad3.yaml").write_text(yaml.safe_dump(raw3))
    for name, message in (
        ("bad.yaml", "lo < hi"),
        ("bad2.yaml", "unknown placeholder {dumpfile}"),
        ("bad3.yaml", "'active_learning' section is missing"),
    ):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "nnmd_lammps.cli",
                "active-learn",
                str(tmp_path / name),
                "--out",
                str(tmp_path / "run"),
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr


@pytest.mark.slow
def test_cli_killed_during_training_resumes(unbroken, tmp_path):
    """kill -9 of `nnmd active-learn` once iteration 1's training has a checkpoint, then
    `--resume`: the same data set as the unbroken loop."""
    import os
    import signal
    import time

    _config(tmp_path)
    cmd = [sys.executable, "-m", "nnmd_lammps.cli", "active-learn", str(tmp_path / "al.yaml")]
    cmd += ["--out", str(tmp_path / "run")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "run" / "iter_1" / "train" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert killed, "the loop finished before its training wrote a checkpoint"
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["current"] == "iter_1/train" and not state["finished"]
    proc = subprocess.run([*cmd, "--resume"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_same_data(unbroken[0] / "run", tmp_path / "run")


def test_extra_training_files_and_template_deck(tmp_path):
    """data.train files join every iteration's data set; a template deck is filled in."""
    from ase import Atoms

    raw = _config(tmp_path)
    raw["data"]["train"] = ["test.extxyz"]
    (tmp_path / "in.template").write_text(
        "read_data {data}\npair_coeff * * {model} {elements}\nvelocity all create "
        "{temperature} {seed}\nfix 1 all npt temp {temperature} {temperature} 0.1 iso "
        "{pressure} {pressure} 1.0\ndump d all custom {dump_every} {dump} id type x y z\n"
        "run {steps}\n"
    )
    raw["active_learning"]["exploration"]["template"] = "in.template"
    raw["active_learning"]["exploration"]["pressures"] = [1.0, 1000.0]
    cfg = al_config_from_dict(raw, tmp_path)
    assert cfg.training.data.train == []
    tc = cfg.training_config([tmp_path / "x.extxyz"])
    assert tc.data.train == [str(tmp_path / "test.extxyz"), str(tmp_path / "x.extxyz")]
    loop = ActiveLearning(cfg, tmp_path / "run", log=_quiet)
    runs = loop._runs(0)
    assert [(r["temperature"], r["pressure"]) for r in runs] == [(700, 1.0), (700, 1000.0)]
    deck = loop._deck(Path("a.data"), Path("m.pt"), ["Cu"], runs[1], Atoms("Cu", pbc=True))
    assert deck == (
        "read_data a.data\npair_coeff * * m.pt Cu\nvelocity all create 700.0 "
        f"{runs[1]['seed']}\nfix 1 all npt temp 700.0 700.0 0.1 iso 1000.0 1000.0 1.0\n"
        f"dump d all custom {DUMP_EVERY} md.dump id type x y z\nrun {STEPS}\n"
    )
