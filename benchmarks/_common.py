"""What the benchmark scripts share (imported as ``_common``: the scripts run as
``python benchmarks/NAME.py``, with this folder first on sys.path)."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

# LAMMPS's summary of a run: (seconds, ranks, steps, atoms)
LOOP = re.compile(r"Loop time of (\S+) on (\d+) procs for (\d+) steps with (\d+) atoms")


def water_deck(
    data: Path, model: Path, runs: tuple[int, ...], replicate: int = 1, device: str | None = None
) -> str:
    """A LAMMPS input: NVE molecular dynamics of the water box ``data`` (elements H O) with
    pair_style nnmd and ``model``, replicated ``replicate`` times along each axis, 300 K
    initial velocities, 0.5 fs steps; one ``run`` command per entry of ``runs`` (a warm-up,
    then the timed one). ``device``: the pair style's device option (none: its default)."""
    lines = ["units metal", "atom_style atomic", "boundary p p p", f"read_data {data}"]
    if replicate > 1:
        lines.append(f"replicate {replicate} {replicate} {replicate}")
    lines += [
        "pair_style nnmd" + (f" device {device}" if device else ""),
        f"pair_coeff * * {model} H O",
        "neighbor 1.0 bin",
        "velocity all create 300 4928 loop geom",
        "timestep 0.0005",
        "fix 1 all nve",
        "thermo 1000",
        *(f"run {n}" for n in runs),
    ]
    return "\n".join(lines) + "\n"


def machine() -> dict:
    """The description of this machine that every results JSON carries."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_end": list(os.getloadavg()),
    }
