"""Data-parallel training under torchrun (gloo on the loopback interface): two ranks take
the steps of one process with the same global batches, log once, write one checkpoint,
and a run killed with SIGKILL resumes to the weights of an unbroken run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from test_training import assert_same_run, emt_structures, tiny_config

NNMD = [sys.executable, "-m", "nnmd_lammps.cli"]


@pytest.fixture(scope="module")
def cu_data(tmp_path_factory):
    import ase.io

    d = tmp_path_factory.mktemp("cu_dist")
    ase.io.write(d / "train.extxyz", emt_structures(24, seed=1))
    return d / "train.extxyz"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, config: Path, out: Path, *extra: str) -> list[str]:
    """The command line of ``nnmd train`` on ``nproc`` ranks of this machine."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "nnmd_lammps.cli",
        "train",
        str(config),
        "--out",
        str(out),
        *extra,
    ]


ENV = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def _state(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=True)


def descendants(pid: int) -> list[int]:
    """Process ids of every descendant of ``pid`` (from the parent ids in /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL to a launcher and every process below it (torchrun starts the ranks in
    sessions of their own, so a signal to its process group does not reach them)."""
    for pid in [*descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stream", "memory"])
def test_two_ranks_take_the_steps_of_one_process(tmp_path, cu_data, mode):
    """torchrun with 2 ranks (each its half of every global batch of 5 structures, odd
    on purpose) ends Adam and L-BFGS with the weights of one process to 1e-10; rank 0
    alone logs and writes."""
    cfg = tiny_config(
        cu_data, epochs=3, batch_size=5, refine={"iterations": 10}, data_mode=mode, workers=1
    )
    cfg["network"].update(committee=2, bootstrap=True)
    path = write_config(tmp_path / "cfg.yaml", cfg)
    run([*NNMD, "train", str(path), "--out", str(tmp_path / "one")])
    r = run(torchrun(2, path, tmp_path / "two"))
    one, two = _state(tmp_path / "one"), _state(tmp_path / "two")
    assert_same_run(one, two, rtol=1e-10)
    log = (tmp_path / "two" / "train.log").read_text()
    assert log.count("training in") == 1 and "2 ranks" in log
    assert r.stdout.count("epoch     1 ") == 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )


@pytest.mark.slow
def test_distributed_run_killed_resumes_to_the_unbroken_weights(tmp_path, cu_data):
    """SIGKILL to every process of a 2-rank run (torchrun and ranks) during the Adam
    epochs; torchrun ... --resume continues from rank 0's checkpoint and ends with exactly
    the weights of an unbroken 2-rank run."""
    cfg = tiny_config(cu_data, epochs=150, early_stopping_patience=0, data_mode="memory", workers=0)
    path = write_config(tmp_path / "cfg.yaml", cfg)
    run(torchrun(2, path, tmp_path / "unbroken"))
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        torchrun(2, path, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        deadline = time.time() + 300
        epoch = 0
        while time.time() < deadline and proc.poll() is None:
            try:
                epoch = _state(out)["epoch"]
            except Exception:  # not there yet, or being replaced at this moment
                epoch = 0
            if epoch >= 5:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "training finished before it could be killed"
        ranks = descendants(proc.pid)
        assert len(ranks) >= 2
        kill_tree(proc)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    time.sleep(1.0)
    assert not any(alive(pid) for pid in ranks)
    killed_at = _state(out)["epoch"]
    assert 5 <= killed_at < 150
    run(torchrun(2, path, out, "--resume"))
    assert f"resuming after epoch {killed_at}" in (out / "train.log").read_text()
    a, b = _state(tmp_path / "unbroken"), _state(out)
    assert b["epoch"] == 150
    assert_same_run(a, b, rtol=0, exact=True)
    # a new run into an existing run directory is refused on every rank
    r = subprocess.run(torchrun(2, path, out), capture_output=True, text=True, env=ENV)
    assert r.returncode != 0 and "--resume" in r.stderr


def test_balanced_share_deals_equal_costs_to_the_ranks():
    """Every rank computes the same partition of a global batch: disjoint parts covering
    it, each in the batch's order, loads within one item's cost of each other (the
    largest-first greedy bound), and a batch of one large and many small structures is
    not dealt round-robin."""
    import numpy as np

    from nnmd_lammps.training.distributed import Distributed

    rng = np.random.default_rng(5)
    cost = rng.uniform(50, 400, 100)
    batch = rng.permutation(100)[:16]
    for world in (2, 3):
        parts = [Distributed(rank=r, world=world).balanced_share(batch, cost) for r in range(world)]
        assert sorted(np.concatenate(parts).tolist()) == sorted(batch.tolist())
        for p in parts:
            assert list(p) == [k for k in batch if k in set(p.tolist())]
        loads = [cost[p].sum() for p in parts]
        assert max(loads) - min(loads) <= cost[batch].max()
    cost = np.array([700.0] + [100.0] * 7)
    batch = np.arange(8)
    ranks = [Distributed(rank=r, world=2).balanced_share(batch, cost) for r in range(2)]
    assert ranks[0].tolist() == [0] and ranks[1].tolist() == list(range(1, 8))
    assert Distributed().balanced_share(batch, cost) is batch


def test_pair_counts_match_ase():
    from ase.build import bulk, fcc111
    from ase.neighborlist import neighbor_list

    from nnmd_lammps.descriptors.neighbors import pair_counts

    structures = [
        bulk("Cu", "fcc", a=3.6).repeat(2),
        fcc111("Cu", (2, 2, 3), vacuum=6.0),
        bulk("Cu", "fcc", a=3.6, cubic=True),
    ]
    structures[0].rattle(0.05, seed=1)
    expected = [len(neighbor_list("i", a, 4.5)) for a in structures]
    assert pair_counts(structures, 4.5, chunk=2).tolist() == expected
    assert min(expected) > 0
