"""What a new training run sets up before the first step: the symmetry functions
(given, or generated and pruned on the training data), the descriptor scaling and the
per-element reference energies."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..data.dataset import Dataset
from ..descriptors.calculator import DescriptorCalculator
from ..descriptors.generation import GridSettings, generate, min_distances
from ..descriptors.spec import DescriptorSpec
from ..errors import NNMDError
from ..model.networks import ScalingParams
from ..model.potential import make_batch
from .config import Config
from .statistics import (
    DescriptorStatistics,
    prune_by_statistics,
    scaling_params,
    select_by_statistics,
)


def fit_reference_energies(data: Dataset, elements: list[str]) -> tuple[dict[str, float], float]:
    """Per-element energies by least squares (E ~ sum_e n_e mu_e) and the RMS of the
    per-atom residual (the network output scale), from the training set."""
    counts = np.array(
        [[a.get_chemical_symbols().count(e) for e in elements] for a in data.structures],
        dtype=float,
    )
    present = counts.sum(0) > 0
    mu = np.zeros(len(elements))
    sol, *_ = np.linalg.lstsq(counts[:, present], data.energy, rcond=None)
    mu[present] = sol
    resid = (data.energy - counts @ mu) / data.n_atoms
    scale = float(np.sqrt(np.mean(resid**2)))
    return {e: float(m) for e, m in zip(elements, mu, strict=True)}, max(scale, 1e-2)


def scaling_from(G: torch.Tensor, kind: str) -> ScalingParams:
    """The descriptor scaling of ``kind`` from one element's descriptors (n_atoms, S)."""
    g = G.detach().double()
    if g.shape[0] == 0:
        return ScalingParams.identity(g.shape[1])
    gmin, gmax = g.min(0).values, g.max(0).values
    mean = g.mean(0)
    std = g.std(0) if g.shape[0] > 1 else torch.ones_like(mean)
    return scaling_params(gmin, gmax, mean, std, kind)


#: Statistics of a training set's descriptors for a spec: (spec, with correlations) ->
#: per element statistics (computed in chunks; see :mod:`.statistics`)
StatisticsOf = Callable[[DescriptorSpec, bool], list[DescriptorStatistics]]


def chunked_statistics(
    data: Dataset, elements: list[str], chunk_structures: int = 64
) -> StatisticsOf:
    """Descriptor statistics of ``data`` computed here, ``chunk_structures`` at a time."""

    def statistics(spec: DescriptorSpec, correlations: bool) -> list[DescriptorStatistics]:
        calc = DescriptorCalculator(spec)
        out = [DescriptorStatistics.empty(spec.num_functions(e), correlations) for e in elements]
        for k in range(0, len(data), chunk_structures):
            chunk = data.structures[k : k + chunk_structures]
            b = make_batch(chunk, elements, calc.cutoff)
            desc = calc.compute(b.species, b.centers, b.neighbors, b.vectors, derivatives=False)
            out = [
                s.merge(DescriptorStatistics.of(g, correlations))
                for s, g in zip(out, desc.G, strict=True)
            ]
        return out

    return statistics


def build_descriptors(
    cfg: Config,
    elements: list[str],
    train: Dataset,
    log: Callable[[str], None],
    shortest_distance: Callable[[], float] | None = None,
    statistics: StatisticsOf | None = None,
    kept_statistics: list[DescriptorStatistics] | None = None,
) -> DescriptorSpec:
    """The symmetry functions of a new run. ``shortest_distance`` (Angstrom, the shortest
    interatomic distance in ``train``) may be given by a caller that needs it too.

    Pruning uses the statistics (with correlations) of the generated functions on the
    training atoms, from ``statistics`` (default: :func:`chunked_statistics` of
    ``train``); nothing holds all descriptors at once. A ``kept_statistics`` list receives
    the statistics of the kept functions (per element; left empty without pruning or
    selection)."""
    dc = cfg.descriptors
    if dc.functions is not None:
        spec = DescriptorSpec.from_dict({"elements": elements, "functions": _group(dc.functions)})
        log(
            f"descriptors: {sum(len(v) for v in spec.functions.values())} functions given in "
            "the config"
        )
        return spec
    r_min = dc.r_min
    if r_min is None:
        if shortest_distance is None:
            dmin = min_distances(train.structures, elements, cfg.cutoff)
        else:
            dmin = shortest_distance()
        r_min = round(0.8 * dmin, 3)
        log(
            f"descriptors: shortest distance in the training data {dmin:.3f} A -> r_min "
            f"{r_min:.3f} A"
        )
    spec = generate(
        elements,
        GridSettings(
            cfg.cutoff,
            dc.radial,
            dc.angular,
            r_min,
            dc.angular_type,
            dc.cutoff_type,
            dc.cutoff_alpha,
            dc.angular_widths,
        ),
    )
    log("descriptors: generated " + ", ".join(f"{e}: {spec.num_functions(e)}" for e in elements))
    if dc.prune or dc.select is not None:
        stats = (statistics or chunked_statistics(train, elements))(spec, True)
        kept = {e: list(range(spec.num_functions(e))) for e in elements}
        if dc.prune:
            spec, kept, removed = prune_by_statistics(spec, stats, dc.max_correlation)
            for e, notes in removed.items():
                log(
                    f"descriptors: pruned {len(notes)} of {e}'s functions (constant or "
                    f"|corr| > {dc.max_correlation})"
                )
        if dc.select is not None:
            pruned = [st.columns(kept[e]) for st, e in zip(stats, elements, strict=True)]
            spec, chosen, removed = select_by_statistics(spec, pruned, dc.select)
            kept = {e: [kept[e][k] for k in chosen[e]] for e in elements}
            for e, notes in removed.items():
                n = spec.num_functions(e)
                log(
                    f"descriptors: selected {n} of {e}'s {n + len(notes)} functions (greedy "
                    "span of their correlations)"
                    if notes
                    else f"descriptors: {e} has {n} functions, no more than select: "
                    f"{dc.select}; all kept"
                )
        log("descriptors: kept " + ", ".join(f"{e}: {spec.num_functions(e)}" for e in elements))
        if kept_statistics is not None:
            kept_statistics.extend(
                st.columns(kept[e]) for st, e in zip(stats, elements, strict=True)
            )
    return spec


def _group(functions: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in functions:
        if not isinstance(f, dict) or "center" not in f:
            raise NNMDError("config key 'descriptors.functions': every entry needs 'center'")
        out.setdefault(f["center"], []).append(f)
    return out
