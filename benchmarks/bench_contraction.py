"""Speed of training's force contraction (not a test: it prints figures and asserts
nothing about them).

    python benchmarks/bench_contraction.py [--threads 2] [--repeats 5]

One L-BFGS function-and-gradient evaluation contracts dE/dG of every committee member
with the stored dG/dd of every training atom, scatters the result onto the atoms (forces)
and back-propagates through both. This times that step alone, forward and backward, on
random tensors of the shapes of the Si example of examples/mlearn (13,233 atoms, S = 50
functions, K = 56 neighbour slots of which 42 used on average: 0.89 GB of dG/dd in
float64) for one network and a committee of four, three ways in the same run:

  bmm         torch.bmm, then index_add onto the atoms (the code before the operators;
              with float32 dG/dd a float32 product)
  contract    the operator slot_contract, then the same index_add
  forces      the operator slot_forces (contraction and scatter fused; what training uses
              on the CPU in float64)

and the same with dG/dd stored in float32 (summed in float64 by the operators). The
figures also go to benchmarks/results/contraction-<date>.json.

Measured (2-core AMD EPYC VM, torch 2.13.0 CPU, --threads 2 --repeats 5, 2026-12-03,
machine otherwise idle): see docs/training.md, "Memory".
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime
from pathlib import Path

import torch
from _common import machine

from nnmd_lammps.descriptors import ops

RESULTS = Path(__file__).resolve().parent / "results"

ROWS, S, K, MEAN_NEIGHBOURS = 13_233, 50, 56, 42


def problem(members: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    d = torch.randn(ROWS, S, 3 * K, dtype=torch.float64, generator=gen)
    used = torch.randint(MEAN_NEIGHBOURS - 8, K + 1, (ROWS,), generator=gen)
    neighbor = torch.randint(0, ROWS, (ROWS, K), generator=gen)
    unused = torch.arange(K)[None, :] >= used[:, None]
    neighbor[unused] = ROWS
    d.view(ROWS, S, K, 3)[unused[:, None, :, None].expand(ROWS, S, K, 3)] = 0.0
    return {
        "g": torch.randn(ROWS, members, S, dtype=torch.float64, generator=gen),
        "d": d.to(dtype),
        "centre": torch.arange(ROWS),
        "neighbor": neighbor.reshape(-1),
        "target": torch.randn(ROWS, members, 3, dtype=torch.float64, generator=gen),
    }


def forces_by_index_add(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    m = v.shape[1]
    v = v.view(ROWS, m, K, 3)
    f = torch.zeros((ROWS + 1, 3 * m), dtype=v.dtype)
    f = f.index_add(0, p["centre"], v.sum(2).reshape(ROWS, 3 * m))
    f = f.index_add(0, p["neighbor"], -v.transpose(1, 2).reshape(ROWS * K, 3 * m))
    return f[:ROWS].view(ROWS, m, 3)


def step(kind: str, p: dict[str, torch.Tensor]) -> None:
    g = p["g"].clone().requires_grad_(True)
    if kind == "bmm":  # float32 dG/dd: a float32 product
        F = forces_by_index_add(torch.bmm(g.to(p["d"].dtype), p["d"]).double(), p)
    elif kind == "contract":
        F = forces_by_index_add(ops.slot_contract(g, p["d"]), p)
    else:
        F = ops.slot_forces(g, p["d"], p["centre"], p["neighbor"], ROWS)
    ((F - p["target"]) ** 2).sum().backward()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not ops.available():
        raise SystemExit(f"operator library unavailable: {ops.unavailable_reason()}")
    print(f"{ROWS} atoms, S = {S}, K = {K}; {args.threads} threads; median of {args.repeats}")
    print(
        f"{'members':>8} {'dG/dd':>8} {'bmm ms':>9} {'contract ms':>12} {'forces ms':>10} "
        f"{'bmm/forces':>11}"
    )
    rows = []
    for members in (1, 4):
        for dtype in (torch.float64, torch.float32):
            p = problem(members, dtype)
            times = {}
            for kind in ("bmm", "contract", "forces"):
                step(kind, p)  # warm-up
                samples = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    step(kind, p)
                    samples.append(time.perf_counter() - t)
                times[kind] = 1e3 * statistics.median(samples)
            rows.append({"members": members, "dgdd_dtype": str(dtype), "ms": times})
            print(
                f"{members:>8} {str(dtype).split('.')[1]:>8} {times['bmm']:9.1f} "
                f"{times['contract']:12.1f} {times['forces']:10.1f} "
                f"{times['bmm'] / times['forces']:11.2f}"
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"contraction-{datetime.now():%Y%m%d-%H%M%S}.json"
    meta = {"atoms": ROWS, "functions": S, "slots": K, "threads": args.threads}
    out.write_text(json.dumps({"machine": machine(), **meta, "results": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
