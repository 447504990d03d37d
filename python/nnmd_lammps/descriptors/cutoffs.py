"""Cutoff functions fc(r) of n2p2 types 0-8 with inner cutoff (docs/symmetry_functions.md,
section 1), vectorised in PyTorch."""

from __future__ import annotations

import math

import torch

from ..limits import EXP_CUTOFF_MAX_X

Tensor = torch.Tensor

#: coth(1)^3, the normalisation of cutoff type 3 (TANH).
TANH_PRE = (1.0 / math.tanh(1.0)) ** 3


def cutoff_function(
    r: Tensor, rc: float, cutoff_type: int, alpha: float = 0.0
) -> tuple[Tensor, Tensor]:
    """fc(r) and dfc/dr (docs section 1). ``r`` may hold values beyond rc (-> 0)."""
    inside = r < rc
    if cutoff_type == 0:
        f = inside.to(r.dtype)
        return f, torch.zeros_like(r)
    if cutoff_type in (2, 3):
        t = torch.tanh(1.0 - r / rc)
        pre = 1.0 if cutoff_type == 2 else TANH_PRE
        f = pre * t**3
        df = pre * 3.0 * t * t * (t * t - 1.0) / rc
    else:
        rci = alpha * rc
        iw = 1.0 / (rc - rci)
        x = ((r - rci) * iw).clamp(min=0.0, max=1.0)
        if cutoff_type == 1:
            f = 0.5 * (torch.cos(math.pi * x) + 1.0)
            dfx = -0.5 * math.pi * torch.sin(math.pi * x)
        elif cutoff_type == 4:
            xs = x.clamp(max=EXP_CUTOFF_MAX_X)
            den = 1.0 - xs * xs
            f = torch.exp(1.0 - 1.0 / den)
            dfx = -2.0 * xs / (den * den) * f
        elif cutoff_type == 5:
            f = (2.0 * x - 3.0) * x * x + 1.0
            dfx = 6.0 * x * (x - 1.0)
        elif cutoff_type == 6:
            f = ((15.0 - 6.0 * x) * x - 10.0) * x**3 + 1.0
            dfx = -30.0 * (x * (x - 1.0)) ** 2
        elif cutoff_type == 7:
            f = (x * (x * (20.0 * x - 70.0) + 84.0) - 35.0) * x**4 + 1.0
            dfx = 140.0 * (x * (x - 1.0)) ** 3
        elif cutoff_type == 8:
            f = (x * (x * ((315.0 - 70.0 * x) * x - 540.0) + 420.0) - 126.0) * x**5 + 1.0
            dfx = -630.0 * (x * (x - 1.0)) ** 4
        else:
            raise ValueError(f"unknown cutoff type {cutoff_type}")
        inner = r < rci
        f = torch.where(inner, torch.ones_like(f), f)
        df = torch.where(inner, torch.zeros_like(dfx), dfx * iw)
    zero = torch.zeros_like(f)
    return torch.where(inside, f, zero), torch.where(inside, df, zero)
