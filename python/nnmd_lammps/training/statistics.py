"""Descriptor statistics accumulated chunk by chunk: what the scaling, the training range
and the pruning of generated symmetry functions need, without holding the descriptors of
all training atoms at once.

Per element, over its training atoms: count, minimum, maximum, mean, the sum of squared
deviations from the mean and, optionally, the matrix of co-moments (sums of products of
deviations, for correlations). Chunks are combined with the pairwise formulas of Chan,
Golub and LeVeque (1979), which are exact up to rounding, so the result does not depend on
how the atoms are split (n2p2's nnp-scaling also uses every structure; nothing here is
sampled). Combining in a fixed order gives the same bits on every rank.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..descriptors.extrapolation import TrainingRange
from ..descriptors.spec import DescriptorSpec
from ..errors import NNMDError
from ..model.networks import ScalingParams

Tensor = torch.Tensor

#: A function is constant on the data when its standard deviation is below this times its
#: mean absolute value (the rule of :func:`nnmd_lammps.descriptors.generation.prune`).
MIN_RELATIVE_STD = 1e-6


@dataclass
class DescriptorStatistics:
    """Statistics of one element's symmetry functions (S columns) over ``count`` atoms, in
    float64: ``min``/``max``/``mean`` (S,), ``m2`` (S,) the sum of squared deviations
    from the mean, ``comoment`` (S, S) the sums of products of deviations or None."""

    count: int
    min: Tensor
    max: Tensor
    mean: Tensor
    m2: Tensor
    comoment: Tensor | None = None

    @classmethod
    def empty(cls, n_functions: int, correlations: bool = False) -> DescriptorStatistics:
        z = torch.zeros(n_functions, dtype=torch.float64)
        return cls(
            0,
            torch.full_like(z, torch.inf),
            torch.full_like(z, -torch.inf),
            z.clone(),
            z.clone(),
            torch.zeros((n_functions, n_functions), dtype=torch.float64) if correlations else None,
        )

    @classmethod
    def of(cls, G: Tensor, correlations: bool = False) -> DescriptorStatistics:
        """The statistics of the rows of ``G`` (n_atoms, S)."""
        g = G.detach().double().cpu()
        if g.shape[0] == 0:
            return cls.empty(g.shape[1], correlations)
        mean = g.mean(0)
        dev = g - mean
        return cls(
            g.shape[0],
            g.min(0).values,
            g.max(0).values,
            mean,
            (dev * dev).sum(0),
            dev.T @ dev if correlations else None,
        )

    def merge(self, other: DescriptorStatistics) -> DescriptorStatistics:
        """The statistics of both sets of atoms (Chan et al.'s pairwise update)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n_a, n_b = self.count, other.count
        n = n_a + n_b
        delta = other.mean - self.mean
        mean = self.mean + delta * (n_b / n)
        f = n_a * n_b / n
        m2 = self.m2 + other.m2 + delta * delta * f
        como = None
        if self.comoment is not None and other.comoment is not None:
            como = self.comoment + other.comoment + torch.outer(delta, delta) * f
        return DescriptorStatistics(
            n,
            torch.minimum(self.min, other.min),
            torch.maximum(self.max, other.max),
            mean,
            m2,
            como,
        )

    @property
    def std(self) -> Tensor:
        """Sample standard deviation (n - 1 in the denominator; 0 for fewer than 2 atoms)."""
        if self.count < 2:
            return torch.zeros_like(self.mean)
        return torch.sqrt(self.m2 / (self.count - 1))

    def columns(self, keep: list[int]) -> DescriptorStatistics:
        """The statistics of the functions ``keep`` (in that order)."""
        idx = torch.tensor(keep, dtype=torch.long)
        como = None if self.comoment is None else self.comoment[idx][:, idx]
        return DescriptorStatistics(
            self.count, self.min[idx], self.max[idx], self.mean[idx], self.m2[idx], como
        )


def merge_all(parts: Iterable[list[DescriptorStatistics]]) -> list[DescriptorStatistics]:
    """Per element, the merge of every part's statistics in the given order."""
    out: list[DescriptorStatistics] | None = None
    for part in parts:
        out = list(part) if out is None else [a.merge(b) for a, b in zip(out, part, strict=True)]
    if out is None:
        raise ValueError("merge_all needs at least one part")
    return out


def scaling_params(
    gmin: torch.Tensor, gmax: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, kind: str
) -> ScalingParams:
    """The scaling of ``kind`` from per-function minimum, maximum, mean and standard
    deviation over the training atoms of an element."""
    # guard functions that happen to be constant on this set (kept by the user's choice)
    std = torch.where(std > 0, std, torch.ones_like(std))
    span = torch.where(gmax > gmin, gmax - gmin, torch.ones_like(gmax))
    smin, smax = (-1.0, 1.0) if kind in ("scale", "scale_center") else (0.0, 1.0)
    return ScalingParams(
        kind, smin, smax, gmin.tolist(), (gmin + span).tolist(), mean.tolist(), std.tolist()
    )


def scaling_from_statistics(stats: DescriptorStatistics, kind: str) -> ScalingParams:
    """The descriptor scaling of ``network.scaling`` from an element's statistics (as
    :func:`nnmd_lammps.training.initialisation.scaling_from` from its descriptors)."""
    if stats.count == 0:
        return ScalingParams.identity(len(stats.mean))
    std = stats.std if stats.count > 1 else torch.ones_like(stats.mean)
    return scaling_params(stats.min, stats.max, stats.mean, std, kind)


def training_range_from_statistics(stats: DescriptorStatistics) -> TrainingRange:
    """The training range of an element; without training atoms the empty range [0, 0]
    (every atom of the element is then reported as extrapolating)."""
    if stats.count == 0:
        zeros = [0.0] * len(stats.mean)
        return TrainingRange(zeros, zeros, zeros, zeros)
    return TrainingRange(
        stats.min.tolist(), stats.max.tolist(), stats.mean.tolist(), stats.std.tolist()
    )


#: a function whose unexplained fraction of variance is below this counts as spanned
SELECT_TOLERANCE = 1e-10


def prune_by_statistics(
    spec: DescriptorSpec,
    stats: list[DescriptorStatistics],
    max_correlation: float = 0.999,
    min_relative_std: float = MIN_RELATIVE_STD,
) -> tuple[DescriptorSpec, dict[str, list[int]], dict[str, list[str]]]:
    """The rule of :func:`nnmd_lammps.descriptors.generation.prune` from statistics with
    co-moments: per element, drop functions that are constant (std below
    ``min_relative_std`` x |mean|, or zero) and functions whose |Pearson correlation| with
    an earlier kept function exceeds ``max_correlation``. Returns the pruned spec, the
    kept column indices per element and notes on what was removed."""
    funcs, kept, removed = {}, {}, {}
    for e_idx, e in enumerate(spec.elements):
        st = stats[e_idx]
        fs = spec.functions[e]
        if st.count < 2:
            funcs[e], kept[e], removed[e] = list(fs), list(range(len(fs))), []
            continue
        if st.comoment is None:
            raise ValueError("pruning needs statistics with co-moments (correlations=True)")
        std, mean, c = st.std, st.mean, st.comoment
        keep: list[int] = []
        notes = []
        for s in range(len(fs)):
            if not float(std[s]) > min_relative_std * max(float(mean[s].abs()), 1e-300):
                notes.append(f"{fs[s].describe()}: constant")
                continue
            dup = None
            for k in keep:
                r = float(c[s, k]) / (float(c[s, s]) * float(c[k, k])) ** 0.5
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
        kept[e] = keep
        removed[e] = notes
    return DescriptorSpec(spec.elements, funcs), kept, removed


def select_by_statistics(
    spec: DescriptorSpec, stats: list[DescriptorStatistics], n: int
) -> tuple[DescriptorSpec, dict[str, list[int]], dict[str, list[str]]]:
    """Per element, ``n`` functions (all if fewer) that best span all of them on the
    training atoms: greedy column-subset selection on the standardised descriptor
    matrix X, from its correlation matrix alone. Each step takes the function whose
    addition explains the largest part of the total variance of all functions by a
    linear fit on the functions taken (the projection of X onto their span, in the
    Frobenius norm; ties: the earlier one), then removes what it explains (a Schur
    complement). The kept functions stay in their original order. Returns the spec, the
    kept column indices per element and notes naming each dropped function with the
    fraction of its variance left unexplained by the kept ones."""
    if n < 1:
        raise NNMDError(f"config key 'descriptors.select' must be >= 1, got {n}")
    funcs, kept, removed = {}, {}, {}
    for e_idx, e in enumerate(spec.elements):
        st = stats[e_idx]
        fs = spec.functions[e]
        if len(fs) <= n or st.count < 2:
            funcs[e], kept[e], removed[e] = list(fs), list(range(len(fs))), []
            continue
        if st.comoment is None:
            raise ValueError("selection needs statistics with co-moments (correlations=True)")
        c = st.comoment.double()
        scale = torch.sqrt(torch.clamp(torch.diagonal(c), min=1e-300))
        a = c / scale[:, None] / scale[None, :]  # what is left unexplained (correlations)
        order: list[int] = []
        for _ in range(n):
            diag = torch.diagonal(a)
            usable = diag > SELECT_TOLERANCE
            usable[order] = False
            if not bool(usable.any()):
                break
            gain = torch.where(
                usable, (a * a).sum(0) / torch.clamp(diag, min=SELECT_TOLERANCE), -1.0
            )
            s = int(torch.argmax(gain))
            a = a - torch.outer(a[:, s], a[s, :]) / a[s, s]
            order.append(s)
        keep = sorted(order)
        funcs[e] = [fs[s] for s in keep]
        kept[e] = keep
        left = torch.diagonal(a)
        removed[e] = [
            f"{fs[s].describe()}: {float(left[s]):.2e} of its variance not spanned"
            for s in range(len(fs))
            if s not in order
        ]
    return DescriptorSpec(spec.elements, funcs), kept, removed
