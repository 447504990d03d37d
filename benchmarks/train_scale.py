"""Training at scale: memory and speed of streamed training on about a million atoms.

    python benchmarks/train_scale.py                      # 10,000 structures, ~1.04 M atoms
    python benchmarks/train_scale.py --structures 1000    # a quick check (~0.1 M atoms)
    python benchmarks/train_scale.py --procs 1,2 --workers auto,0 --epochs 2

1. Generates (once; cached under --data-dir, default demo_output/train_scale/) an EMT
   copper data set of --structures structures of about 100 atoms: strained and rattled
   bulk cells (108 atoms), cells with one or two vacancies, (100) and (111) slabs
   (100 atoms) and Langevin molecular-dynamics snapshots at 300-1500 K; energies, forces
   and stresses from ASE's EMT, computed in --jobs processes. A smaller set is cut from
   the beginning of a larger cached one (the kinds are shuffled) instead.
2. Trains on it with ``training.data_mode: stream`` for --epochs Adam epochs, once per
   number of processes in --procs (1: ``nnmd train``; n > 1: ``torchrun --nproc-per-node
   n``) and per worker setting in --workers, and measures

   * peak memory of the whole process tree (launcher, ranks and their data-loading
     workers), sampled every 0.5 s from /proc: the peak of the summed RSS (counts pages
     shared between forked processes once per process: an upper bound) and of the summed
     PSS (shared pages divided among the processes sharing them: the memory actually used);
   * seconds per Adam epoch (from the checkpoint's history: each epoch's training steps
     and its validation pass) and training structures per second;
   * the set-up (reading, descriptor statistics) and the final evaluation times.

Prints a table and writes benchmarks/results/train_scale-<date>.json. A benchmark, not a
test: it asserts nothing about the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from _common import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

#: Structures per generation job (one job: one kind of structure, one random stream).
JOB_SIZE = 20
#: Share of each kind of structure.
KINDS = (("bulk", 0.35), ("vacancy", 0.15), ("surface", 0.2), ("md", 0.3))
#: kB per memory page (/proc/PID/statm counts pages)
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
#: EMT's fcc lattice constant of Cu (Angstrom; emt_lattice_constant in examples/demo)
A0 = 3.59


# -- data ---------------------------------------------------------------------------------------


def _label(atoms, kind: str):
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    a = atoms.copy()
    a.calc = EMT()
    e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
    a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
    a.info["group"] = kind
    return a


def _strained(atoms, rng, amplitude: float):
    eps = rng.uniform(-amplitude, amplitude, (3, 3))
    eps = 0.5 * (eps + eps.T)
    a = atoms.copy()
    a.set_cell(atoms.cell.array @ (np.eye(3) + eps).T, scale_atoms=True)
    return a


def _job(args: tuple[str, int, int]) -> list:
    """``n`` labelled structures of one kind from the random stream ``seed``."""
    from ase import units
    from ase.build import bulk, fcc100, fcc111
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    warnings.simplefilter("ignore", DeprecationWarning)  # ASE's velocity helpers
    kind, n, seed = args
    rng = np.random.default_rng(seed)
    cell = bulk("Cu", "fcc", a=A0, cubic=True).repeat(3)  # 108 atoms
    out = []
    if kind == "md":
        a = cell.copy()
        if rng.random() < 0.3:
            del a[int(rng.integers(len(a)))]
        a = _strained(a, rng, 0.02)
        temperature = float(rng.uniform(300, 1500))
        a.calc = EMT()
        MaxwellBoltzmannDistribution(a, temperature_K=temperature, rng=rng)
        dyn = Langevin(
            a, 4 * units.fs, temperature_K=temperature, friction=0.02, rng=rng, fixcm=False
        )
        dyn.run(30)
        for _ in range(n):
            dyn.run(10)
            out.append(_label(a, f"md {temperature:.0f} K"))
        return out
    for _ in range(n):
        if kind == "bulk":
            a = _strained(cell, rng, 0.03)
        elif kind == "vacancy":
            a = cell.copy()
            for _ in range(int(rng.integers(1, 3))):
                del a[int(rng.integers(len(a)))]
            a = _strained(a, rng, 0.02)
        else:
            build = fcc100 if rng.random() < 0.5 else fcc111
            a = build("Cu", (5, 5, 4), a=A0, vacuum=5.0, periodic=True)
            a.info.clear()  # the slab's adsorbate sites: not data
            a = _strained(a, rng, 0.02)
        a.rattle(float(rng.uniform(0.02, 0.15)), seed=int(rng.integers(1 << 31)))
        out.append(_label(a, kind))
    return out


def generate(path: Path, structures: int, seed: int, jobs: int) -> None:
    """Write the data set to ``path`` (extxyz; through a temporary file, so that an
    interrupted generation leaves no partial cache)."""
    import ase.io

    rng = np.random.default_rng(seed)
    plan = []
    for kind, share in KINDS:
        left = round(structures * share) if kind != "md" else None
        plan.append([kind, left])
    plan[-1][1] = structures - sum(n for _, n in plan[:-1])
    work = []
    for kind, total in plan:
        for start in range(0, total, JOB_SIZE):
            work.append((kind, min(JOB_SIZE, total - start), int(rng.integers(1 << 62))))
    order = rng.permutation(len(work))
    work = [work[k] for k in order]
    tmp = path.with_suffix(".partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done = 0
    with tmp.open("w") as fh, multiprocessing.Pool(jobs) as pool:
        for frames in pool.imap(_job, work):
            ase.io.write(fh, frames, format="extxyz")
            done += len(frames)
            if done % 1000 < JOB_SIZE:
                print(
                    f"  generated {done}/{structures} structures "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    tmp.replace(path)


# -- memory of a process tree ----------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out.setdefault(ppid, []).append(int(stat.parent.name))
    return out


def _tree(pid: int) -> list[int]:
    children = _children()
    out, todo = [pid], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _rss_kb(pid: int) -> int:
    """Resident set of a process in kB (0 once it is gone), from /proc/PID/statm: cheap,
    it takes no lock the process needs."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


def _pss_kb(pid: int) -> int:
    """Proportional set of a process in kB (0 once it is gone), from
    /proc/PID/smaps_rollup, which walks the process's page tables under its memory-map
    lock (see TreeSampler)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


@dataclass
class MemoryPeak:
    rss_kb: int = 0
    pss_kb: int = 0
    processes: int = 0


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process and its descendants every ``every_s`` seconds
    and their summed PSS every ``pss_every_s``. Reading smaps_rollup stalls the sampled
    process's memory mapping while it walks the page tables: sampled every 0.5 s it cost
    the two-rank run a third of its speed (2,000 structures: 1.43x one process instead of
    2.1x), so PSS is sampled rarely (RSS, sampled often, bounds it from above)."""

    def __init__(self, pid: int, every_s: float = 0.5, pss_every_s: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.every_s = every_s
        self.pss_every = max(1, round(pss_every_s / every_s))
        self.peak = MemoryPeak()
        self._halt = threading.Event()

    def run(self) -> None:
        k = 0
        while not self._halt.is_set():
            pids = _tree(self.pid)
            self.peak.rss_kb = max(self.peak.rss_kb, sum(_rss_kb(p) for p in pids))
            if k % self.pss_every == 0:
                self.peak.pss_kb = max(self.peak.pss_kb, sum(_pss_kb(p) for p in pids))
            self.peak.processes = max(self.peak.processes, len(pids))
            k += 1
            self._halt.wait(self.every_s)

    def stop(self) -> MemoryPeak:
        self._halt.set()
        self.join()
        return self.peak


# -- training runs ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(data: Path, args: argparse.Namespace, workers: int | None) -> dict:
    return {
        "elements": ["Cu"],
        "cutoff": args.cutoff,
        "data": {"train": str(data), "validation_fraction": args.validation_fraction},
        "descriptors": {"radial": args.radial, "angular": args.angular},
        "network": {"hidden": [args.hidden, args.hidden]},
        "training": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": 2e-3,
            "early_stopping_patience": 0,
            "data_mode": "stream",
            "workers": workers,
            "threads": args.threads,
            "seed": 1,
        },
    }


@dataclass
class Result:
    structures: int
    atoms: int
    procs: int
    workers: str
    train_structures: int = 0
    peak_rss_gb: float = 0.0
    peak_pss_gb: float = 0.0
    processes: int = 0
    setup_s: float = 0.0
    epoch_s: list[float] = field(default_factory=list)
    s_per_epoch: float = 0.0
    structures_per_s: float = 0.0
    final_s: float = 0.0
    wall_s: float = 0.0
    returncode: int = 0
    repeat: int = 0
    load_average_1min: float = 0.0  # at the start of the run (other jobs on the machine)


def _log_times(log: str) -> dict[str, float]:
    """Seconds since the first line of the log at its landmarks (HH:MM:SS stamps)."""
    stamps = []
    for line in log.splitlines():
        m = re.match(r"\[(\d\d):(\d\d):(\d\d)\] (.*)", line)
        if m:
            h, mi, s, text = m.groups()
            stamps.append((int(h) * 3600 + int(mi) * 60 + int(s), text))
    if not stamps:
        return {}
    t0 = stamps[0][0]

    def since(t: int) -> float:
        return float((t - t0) % 86400)

    out = {}
    for t, text in stamps:
        if text.startswith("networks:"):
            out["setup"] = since(t)
        if text.startswith("finished") or text.startswith("early stopping"):
            out["trained"] = since(t)
        if text.startswith("wrote"):
            out["end"] = since(t)
    return out


def train_once(data: Path, work: Path, args, procs: int, workers: str, natoms: int) -> Result:
    import torch
    import yaml

    w = None if workers == "auto" else int(workers)
    out = work / f"p{procs}_w{workers}"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    cfg_path = work / f"p{procs}_w{workers}.yaml"
    cfg_path.write_text(yaml.safe_dump(config(data, args, w), sort_keys=False))
    nnmd = [sys.executable, "-m", "nnmd_lammps.cli", "train", str(cfg_path), "--out", str(out)]
    if procs == 1:
        cmd = nnmd
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(procs),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(_free_port()),
            *nnmd[1:],
        ]
    env = dict(os.environ)
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    with (work / f"p{procs}_w{workers}.out").open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        rc = proc.wait()
        peak = sampler.stop()
    wall = time.perf_counter() - t0
    res = Result(args.structures, natoms, procs, workers, returncode=rc, wall_s=round(wall, 1))
    res.load_average_1min = load
    res.peak_rss_gb = round(peak.rss_kb / 1e6, 3)
    res.peak_pss_gb = round(peak.pss_kb / 1e6, 3)
    res.processes = peak.processes
    if rc != 0:
        print(f"  run failed (exit {rc}); see {work / f'p{procs}_w{workers}.out'}")
        return res
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    times = ck["history"]["time_s"]
    res.epoch_s = [round(b - a, 1) for a, b in zip([0.0, *times[:-1]], times, strict=True)]
    metrics = json.loads((out / "metrics.json").read_text())
    res.train_structures = int(metrics["train"]["n_structures"])
    # the first epoch includes starting the workers; the mean of the others if any
    steady = res.epoch_s[1:] or res.epoch_s
    res.s_per_epoch = round(float(np.mean(steady)), 1)
    res.structures_per_s = round(res.train_structures / res.s_per_epoch, 2)
    marks = _log_times((out / "train.log").read_text())
    res.setup_s = marks.get("setup", 0.0)
    if "trained" in marks and "end" in marks:
        res.final_s = marks["end"] - marks["trained"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--structures", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", type=Path, default=ROOT / "demo_output" / "train_scale")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="generation processes")
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--procs", default="1,2", help="training processes per run (torchrun)")
    ap.add_argument("--workers", default="auto", help="training.workers per run: integers or auto")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run every configuration this many times, alternating (a busy spell of a "
        "shared machine then hits all alike); the table gives medians",
    )
    ap.add_argument(
        "--threads", type=int, default=0, help="training.threads (0: torch's default, per rank)"
    )
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--cutoff", type=float, default=4.5)
    ap.add_argument("--radial", type=int, default=8)
    ap.add_argument("--angular", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--validation-fraction", type=float, default=0.02)
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default: results/)")
    args = ap.parse_args()

    data = args.data_dir / f"cu_emt_{args.structures}_seed{args.seed}.extxyz"
    larger = sorted(
        (int(m.group(1)), q)
        for q in args.data_dir.glob(f"cu_emt_*_seed{args.seed}.extxyz")
        if (m := re.match(r"cu_emt_(\d+)_seed", q.name)) and int(m.group(1)) > args.structures
    )
    if data.exists():
        print(f"using the cached data set {data}")
    elif larger:
        import ase.io

        source = larger[0][1]
        print(f"taking the first {args.structures} structures of {source} -> {data}")
        frames = ase.io.read(source, index=f":{args.structures}", format="extxyz")
        tmp = data.with_suffix(".partial")
        ase.io.write(tmp, frames, format="extxyz")
        tmp.replace(data)
    else:
        print(f"generating {args.structures} EMT structures -> {data} ({args.jobs} processes)")
        generate(data, args.structures, args.seed, args.jobs)
    natoms = 0
    with data.open() as fh:
        for line in fh:
            if line.strip().isdigit():
                natoms += int(line)
                for _ in range(int(line) + 1):
                    next(fh)
    print(f"  {args.structures} structures, {natoms} atoms")
    if args.generate_only:
        return
    work = args.data_dir / f"runs_{args.structures}"
    work.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / f"train_scale-{stamp}.json"
    runs = [
        (repeat, workers, int(procs))
        for repeat in range(args.repeats)
        for workers in args.workers.split(",")
        for procs in args.procs.split(",")
    ]
    for repeat, workers, procs in runs:
        print(
            f"training: {procs} process(es), workers {workers} (repeat {repeat + 1})",
            flush=True,
        )
        r = train_once(data, work, args, procs, workers, natoms)
        r.repeat = repeat
        results.append(r)
        print(
            f"  peak memory {r.peak_rss_gb:.2f} GB RSS / {r.peak_pss_gb:.2f} GB PSS "
            f"({r.processes} processes); {r.s_per_epoch:.1f} s/epoch "
            f"(epochs {r.epoch_s}); {r.structures_per_s:.2f} structures/s; set-up "
            f"{r.setup_s:.0f} s, final evaluation {r.final_s:.0f} s, wall {r.wall_s:.0f} s",
            flush=True,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "arguments": {k: str(v) for k, v in vars(args).items()},
                    "results": [asdict(x) for x in results],
                },
                indent=1,
            )
        )
    print()
    print(
        "| procs | workers | structures/s (median) | s/epoch | peak RSS (GB) | peak PSS (GB) "
        "| ratio to 1 process |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    table = {}
    for r in results:
        if r.returncode == 0:
            table.setdefault((r.procs, r.workers), []).append(r)
    median = {k: float(np.median([x.structures_per_s for x in v])) for k, v in table.items()}
    for (procs, workers), rs in table.items():
        base = median.get((1, workers))
        ratio = f"{median[procs, workers] / base:.2f}" if base else ""
        print(
            f"| {procs} | {workers} | {median[procs, workers]:.2f} | "
            f"{np.median([x.s_per_epoch for x in rs]):.1f} | "
            f"{max(x.peak_rss_gb for x in rs):.2f} | {max(x.peak_pss_gb for x in rs):.2f} | "
            f"{ratio} |"
        )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
