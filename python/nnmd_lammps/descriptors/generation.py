"""Automatic symmetry-function parameters (docs/training.md, "Descriptors").

From the elements, the cutoff and a size, generate radial functions on a shifted grid
and angular functions on a centred grid (after Imbalzano et al., J. Chem. Phys. 148,
241730 (2018)), then optionally prune functions that are constant or almost perfectly
correlated with another one on the training data.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import NNMDError
from .neighbors import neighbor_pairs
from .spec import ANGULAR_TYPES, DescriptorSpec, SymmetryFunction

#: zeta values used for angular functions, in order of preference
ZETAS = (1.0, 2.0, 4.0, 8.0)
#: the (zeta, lambda) of every Gaussian of an angular grid, in this order
ZETA_LAMBDAS = tuple((zeta, lam) for zeta in ZETAS for lam in (-1.0, 1.0))


@dataclass
class GridSettings:
    cutoff: float  # Angstrom
    n_radial: int  # per (central element, neighbour element)
    n_angular: int  # per (central element, unordered neighbour pair)
    r_min: float  # Angstrom: innermost radial shift
    angular_type: int | Sequence[int] = 9  # several: each angular grid once per type
    cutoff_type: int = 6
    cutoff_alpha: float = 0.0
    angular_widths: str = "centred"  # one of ANGULAR_WIDTHS (angular_grid)


#: the angular grids of :func:`angular_parameters`
ANGULAR_WIDTHS = ("centred", "inner", "both", "shifted", "all")


def radial_grid(r_min: float, rc: float, n: int) -> list[tuple[float, float]]:
    """n (eta, rs) pairs: shifts r_min + k d (k = 0..n-1, d = (rc - r_min)/n) and width
    d, i.e. eta = 1 / (2 d^2); overlapping Gaussians covering [r_min, rc)."""
    if n <= 0:
        return []
    d = (rc - r_min) / n
    eta = 1.0 / (2.0 * d * d)
    return [(eta, r_min + k * d) for k in range(n)]


def angular_grid(
    r_min: float, rc: float, n: int, widths: str = "centred"
) -> list[tuple[float, float, float]]:
    """n (eta, zeta, lambda) triples: centred Gaussians exp(-eta r^2), eta_k = 1/(2 r_k^2),
    for m = ceil(n / 8) widths r_k; for each width zeta in (1, 2, 4, 8) and lambda in
    (-1, +1); the first n.

    ``widths``: ``centred`` places them inside the interval, r_k = r_min + (k + 1)
    (rc - r_min)/(m + 1) (k = 0..m-1), all broad; ``inner`` spaces them from r_min,
    r_k = r_min + k (rc - r_min)/m (k = 0..m-1), so that the first width resolves the
    bond angles of the nearest-neighbour shell (docs/training.md: better for Si, worse
    for Li); ``both``: the n of the centred grid followed by the n of the inner grid
    (2n; a candidate pool for ``descriptors.select``)."""
    if widths not in ANGULAR_WIDTHS:
        raise NNMDError(f"descriptors: angular_widths must be one of {ANGULAR_WIDTHS}")
    if n <= 0:
        return []
    if widths == "both":
        return angular_grid(r_min, rc, n, "centred") + angular_grid(r_min, rc, n, "inner")
    if widths in ("shifted", "all"):
        raise NNMDError("descriptors: the shifted grid has shifts: use shifted_angular_grid")
    m = math.ceil(n / len(ZETA_LAMBDAS))
    out = []
    for k in range(m):
        if widths == "inner":
            r = r_min + k * (rc - r_min) / m
        else:
            r = r_min + (k + 1) * (rc - r_min) / (m + 1)
        eta = 1.0 / (2.0 * r * r)
        out += [(eta, zeta, lam) for zeta, lam in ZETA_LAMBDAS]
    return out[:n]


def shifted_angular_grid(
    r_min: float, rc: float, n: int
) -> list[tuple[float, float, float, float]]:
    """n (eta, rs, zeta, lambda): Gaussians exp(-eta [(r_ij - rs)^2 + (r_ik - rs)^2])
    on the shells of the radial grid, rs_k = r_min + k d (k = 0..m-1, d = (rc - r_min)/m,
    m = ceil(n / 8)), width d (eta = 1 / (2 d^2)): the bond angles of each shell apart;
    for each shell zeta in (1, 2, 4, 8) and lambda in (-1, +1); the first n."""
    if n <= 0:
        return []
    m = math.ceil(n / len(ZETA_LAMBDAS))
    out = [
        (eta, rs, zeta, lam) for eta, rs in radial_grid(r_min, rc, m) for zeta, lam in ZETA_LAMBDAS
    ]
    return out[:n]


def angular_parameters(
    r_min: float, rc: float, n: int, widths: str
) -> list[tuple[float, float, float, float]]:
    """The (eta, rs, zeta, lambda) of the angular functions of ``widths`` (one of
    ANGULAR_WIDTHS): the centred or inner grid (rs = 0), both, the shifted grid, or
    all three (3n)."""
    if widths == "shifted":
        return shifted_angular_grid(r_min, rc, n)
    centred = "both" if widths == "all" else widths
    out = [(eta, 0.0, zeta, lam) for eta, zeta, lam in angular_grid(r_min, rc, n, centred)]
    if widths == "all":
        out += shifted_angular_grid(r_min, rc, n)
    return out


def angular_type_list(angular_type: int | Sequence[int]) -> tuple[int, ...]:
    """The angular function types of ``descriptors.angular_type``: one type (9 or 3) or
    several, each at most once (e.g. (9, 3): a candidate pool of both for
    ``descriptors.select``)."""
    types = (angular_type,) if isinstance(angular_type, int) else tuple(angular_type)
    if not types or any(t not in ANGULAR_TYPES for t in types) or len(set(types)) < len(types):
        raise NNMDError(
            f"config key 'descriptors.angular_type' must be one of {list(ANGULAR_TYPES)} or a "
            f"list of distinct ones, got {angular_type!r}"
        )
    return types


def generate(elements: list[str], g: GridSettings) -> DescriptorSpec:
    if not 0.0 < g.r_min < g.cutoff:
        raise NNMDError(
            f"descriptors: r_min {g.r_min} must lie between 0 and the cutoff {g.cutoff}"
        )
    angular_types = angular_type_list(g.angular_type)
    funcs: dict[str, list[SymmetryFunction]] = {}
    for c in elements:
        fs = []
        for n in elements:
            for eta, rs in radial_grid(g.r_min, g.cutoff, g.n_radial):
                fs.append(
                    SymmetryFunction(
                        2,
                        c,
                        (n,),
                        eta,
                        g.cutoff,
                        rs,
                        cutoff_type=g.cutoff_type,
                        cutoff_alpha=g.cutoff_alpha,
                    )
                )
        for i, a in enumerate(elements):
            for b in elements[i:]:
                for sf_type, (eta, rs, zeta, lam) in itertools.product(
                    angular_types,
                    angular_parameters(g.r_min, g.cutoff, g.n_angular, g.angular_widths),
                ):
                    fs.append(
                        SymmetryFunction(
                            sf_type,
                            c,
                            (a, b),
                            eta,
                            g.cutoff,
                            rs,
                            lam,
                            zeta,
                            g.cutoff_type,
                            g.cutoff_alpha,
                        )
                    )
        funcs[c] = fs
    return DescriptorSpec(elements, funcs)


def prune(
    spec: DescriptorSpec,
    G: list[torch.Tensor],
    max_correlation: float = 0.999,
    min_relative_std: float = 1e-6,
) -> tuple[DescriptorSpec, dict[str, list[str]]]:
    """Drop, per element, functions that are constant on the data (std below
    ``min_relative_std`` times their mean absolute value, or exactly zero) and functions
    whose |Pearson correlation| with an earlier kept function exceeds ``max_correlation``.
    ``G[e]``: values on the training atoms of element e. Returns the pruned spec and,
    per element, a description of what was removed."""
    funcs, removed = {}, {}
    for e_idx, e in enumerate(spec.elements):
        g = G[e_idx].detach().double()
        fs = spec.functions[e]
        if g.shape[0] < 2:
            funcs[e], removed[e] = fs, []
            continue
        mean = g.mean(0)
        std = g.std(0)
        keep: list[int] = []
        notes = []
        for s in range(g.shape[1]):
            if not float(std[s]) > min_relative_std * max(float(mean[s].abs()), 1e-300):
                notes.append(f"{fs[s].describe()}: constant")
                continue
            x = (g[:, s] - mean[s]) / std[s]
            dup = None
            for k in keep:
                y = (g[:, k] - mean[k]) / std[k]
                r = float((x * y).mean()) * g.shape[0] / (g.shape[0] - 1)
                if abs(r) > max_correlation:
                    dup = k
                    break
            if dup is not None:
                notes.append(f"{fs[s].describe()}: correlated with {fs[dup].describe()}")
                continue
            keep.append(s)
        if not keep:
            raise NNMDError(
                f"descriptors: every symmetry function of {e} is constant on the training data"
            )
        funcs[e] = [fs[s] for s in keep]
        removed[e] = notes
    return DescriptorSpec(spec.elements, funcs), removed


def min_distances(structures, elements: list[str], cutoff: float) -> float:
    """Shortest interatomic distance in the structures (Angstrom)."""
    best = math.inf
    for k in range(0, len(structures), 200):
        chunk = structures[k : k + 200]
        pl = neighbor_pairs(chunk, cutoff)
        if len(pl.centers) == 0:
            continue
        pos = np.concatenate([a.get_positions() for a in chunk])
        cells = np.stack([np.asarray(a.get_cell()) for a in chunk])
        d = (
            pos[pl.neighbors]
            - pos[pl.centers]
            + np.einsum("pk,pkl->pl", pl.shifts, cells[pl.structure])
        )
        best = min(best, float(np.sqrt((d * d).sum(1)).min()))
    if not math.isfinite(best):
        raise NNMDError(f"no two atoms of the training data are closer than the cutoff {cutoff}")
    return best
