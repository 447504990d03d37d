"""Extrapolation: symmetry-function values outside the range seen in training
(docs/uncertainty.md). The one Python implementation; the C++ one is in the pair style.

Per atom with raw symmetry functions G_s and training range [min_s, max_s] of width
w_s = max_s - min_s (1 where the function was constant in training):

    excursion_s = max((min_s - G_s) / w_s, (G_s - max_s) / w_s)

function s is out of range when excursion_s > EXTRAPOLATION_TOLERANCE; an atom reports the
number of such functions, its largest excursion (0 inside the range) and the function
with the largest excursion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import NNMDError
from ..limits import EXTRAPOLATION_TOLERANCE

Tensor = torch.Tensor


@dataclass
class TrainingRange:
    """Per symmetry function of one element (network-input order): the minimum, maximum,
    mean and standard deviation over the training atoms of that element."""

    min: list[float]
    max: list[float]
    mean: list[float]
    std: list[float]

    def validate(self, n_functions: int, where: str) -> None:
        for key in ("min", "max", "mean", "std"):
            values = getattr(self, key)
            if len(values) != n_functions:
                raise NNMDError(
                    f"{where}.{key}: {len(values)} values for {n_functions} symmetry functions"
                )
            if not all(isinstance(v, (int, float)) and v == v for v in values):
                raise NNMDError(f"{where}.{key}: values must be numbers")
        if any(hi < lo for lo, hi in zip(self.min, self.max, strict=True)):
            raise NNMDError(f"{where}: max < min")

    def to_dict(self) -> dict[str, list[float]]:
        return {
            "min": list(self.min),
            "max": list(self.max),
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> TrainingRange:
        if not isinstance(d, dict) or set(d) != {"min", "max", "mean", "std"}:
            raise NNMDError(f"{where}: needs exactly the keys min, max, mean, std")
        try:
            return cls(*([float(v) for v in d[k]] for k in ("min", "max", "mean", "std")))
        except (TypeError, ValueError):
            raise NNMDError(f"{where}: values must be lists of numbers") from None

    @classmethod
    def of(cls, G: Tensor) -> TrainingRange:
        """The range of the rows of ``G`` (n_atoms, S); n_atoms >= 1."""
        g = G.detach().double().cpu()
        std = g.std(0) if g.shape[0] > 1 else torch.zeros(g.shape[1], dtype=g.dtype)
        return cls(
            g.min(0).values.tolist(), g.max(0).values.tolist(), g.mean(0).tolist(), std.tolist()
        )


@dataclass
class Extrapolation:
    """Per atom: ``count`` of functions out of range, the largest ``excursion`` (in
    units of the range width, >= 0) and the function index ``worst`` (network order)."""

    count: Tensor
    excursion: Tensor
    worst: Tensor


def extrapolation(G: Tensor, training_range: TrainingRange) -> Extrapolation:
    """Extrapolation of the atoms whose raw symmetry functions are the rows of ``G``."""
    lo = torch.tensor(training_range.min, dtype=G.dtype, device=G.device)
    hi = torch.tensor(training_range.max, dtype=G.dtype, device=G.device)
    width = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    exc = torch.maximum((lo - G) / width, (G - hi) / width)
    count = (exc > EXTRAPOLATION_TOLERANCE).sum(1)
    if G.shape[1] == 0 or G.shape[0] == 0:
        zeros = torch.zeros(G.shape[0], dtype=G.dtype, device=G.device)
        return Extrapolation(count, zeros, torch.zeros_like(count))
    worst_exc, worst = exc.max(1)
    return Extrapolation(count, worst_exc.clamp(min=0.0), worst)
