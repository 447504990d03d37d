"""Accuracy on the mlearn benchmark: train the examples and print the comparison table.

    python benchmarks/accuracy.py                       # li.yaml and si.yaml
    python benchmarks/accuracy.py li li_committee       # any configs in examples/mlearn/
    python benchmarks/accuracy.py --config my.yaml      # any config with a test set

Each config is trained with ``nnmd train CONFIG --out RUNS/<name>`` (a run directory that
already holds a finished model is reused; an interrupted one is resumed) and its model is
tested with ``nnmd test MODEL TEST --json`` on the config's ``data.test`` files. Prints
the test-set mean absolute errors (energy meV/atom, force components eV/Angstrom) next to
the published GAP, MTP and n2p2 figures of Zuo et al., J. Phys. Chem. A 124, 731 (2020)
(the n2p2 row: that paper's n2p2 potential as measured with our tools), the targets of the
accuracy issue and the training wall time, and writes benchmarks/results/
accuracy-<date>.json. A benchmark, not a test: it asserts nothing about the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml
from _common import machine

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "mlearn"
RESULTS = ROOT / "benchmarks" / "results"

#: Test-set MAE (energy meV/atom, force eV/Angstrom) of other potentials on the same data.
PUBLISHED = {
    "Li": {"GAP": (0.49, 0.01), "MTP": (0.49, 0.01), "n2p2": (0.75, 0.0168)},
    "Si": {"GAP": (2.91, 0.07), "MTP": (2.21, 0.06), "n2p2": (5.63, 0.109)},
}
#: The accuracy issue's targets (energy meV/atom, force eV/Angstrom, minutes of training).
TARGETS = {"Li": (0.45, 0.0095, 20.0), "Si": (2.2, 0.06, 20.0)}


def nnmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "nnmd_lammps.cli", *args]


def train(config: Path, out: Path) -> float:
    """Train (or resume, or reuse) the run in ``out``; returns the wall time in seconds
    spent in this call (0 for a reused run)."""
    if (out / "model.pt").exists() and (out / "metrics.json").exists():
        print(f"{config.name}: reusing the finished run in {out}", flush=True)
        return 0.0
    cmd = nnmd("train", str(config), "--out", str(out))
    if (out / "checkpoint.pt").exists():
        cmd.append("--resume")
    print("$ " + " ".join(cmd[2:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def test(model: Path, config: Path) -> dict:
    """``nnmd test --json`` of ``model`` on the config's test files (one file expected)."""
    cfg = yaml.safe_load(config.read_text())
    tests = cfg.get("data", {}).get("test")
    if isinstance(tests, str):
        tests = [tests]
    if not tests or len(tests) != 1:
        raise SystemExit(f"{config}: data.test must name one test file")
    data = (config.parent / tests[0]).resolve()
    cmd = nnmd("test", str(model), str(data), "--json")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def element_of(config: Path) -> str:
    elements = yaml.safe_load(config.read_text()).get("elements") or ["?"]
    return "-".join(elements)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("examples", nargs="*", default=["li", "si"], help="names in examples/mlearn")
    ap.add_argument("--config", action="append", default=[], type=Path, help="more configs")
    ap.add_argument("--runs", type=Path, default=ROOT / "demo_output" / "accuracy")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default: results/)")
    args = ap.parse_args()
    configs = [EXAMPLES / f"{name}.yaml" for name in args.examples] + args.config
    for c in configs:
        if not c.exists():
            raise SystemExit(f"no config {c}")
    rows = []
    for config in configs:
        run = args.runs / config.stem
        seconds = train(config, run)
        metrics = json.loads((run / "metrics.json").read_text())
        seconds = seconds or float(metrics.get("training_seconds", 0.0))
        m = test(run / "model.pt", config)
        rows.append(
            {
                "config": str(config.relative_to(ROOT) if config.is_relative_to(ROOT) else config),
                "element": element_of(config),
                "energy_mae_mev_per_atom": m["energy_mae_mev_per_atom"],
                "force_mae_ev_per_angstrom": m.get("force_mae_ev_per_angstrom"),
                "energy_rmse_mev_per_atom": m.get("energy_rmse_mev_per_atom"),
                "force_rmse_ev_per_angstrom": m.get("force_rmse_ev_per_angstrom"),
                "training_wall_s": round(seconds, 1),
            }
        )
    print()
    print(f"{'element':8s} {'model':28s} {'energy MAE':>11s} {'force MAE':>10s} {'time':>8s}")
    print(f"{'':8s} {'':28s} {'meV/atom':>11s} {'eV/A':>10s} {'min':>8s}")
    for el in dict.fromkeys(r["element"] for r in rows):
        for name, (e, f) in PUBLISHED.get(el, {}).items():
            print(f"{el:8s} {name + ' (published)':28s} {e:11.3f} {f:10.4f} {'':>8s}")
        for r in (r for r in rows if r["element"] == el):
            f = r["force_mae_ev_per_angstrom"]
            print(
                f"{el:8s} {Path(r['config']).name:28s} {r['energy_mae_mev_per_atom']:11.3f} "
                f"{f if f is not None else float('nan'):10.4f} {r['training_wall_s'] / 60:8.1f}"
            )
        if el in TARGETS:
            e, f, minutes = TARGETS[el]
            print(f"{el:8s} {'target':28s} {e:11.3f} {f:10.4f} {minutes:8.1f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"accuracy-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(
        json.dumps(
            {
                "machine": machine(),
                "published": PUBLISHED,
                "targets": TARGETS,
                "results": rows,
            },
            indent=1,
        )
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
