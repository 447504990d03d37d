"""Independent reference implementations for the tests.

Written from docs/symmetry_functions.md with plain Python/NumPy loops, sharing no code
with the package: brute-force periodic images, explicit triple loops, scalar cutoff
functions, an MLP in NumPy. Slow, simple, and easy to check by eye.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

TANH_PRE = (math.cosh(1.0) / math.sinh(1.0)) ** 3


def fc_ref(r: float, rc: float, ctype: int, alpha: float = 0.0) -> float:
    if r >= rc:
        return 0.0
    if ctype == 0:
        return 1.0
    if ctype == 2:
        return math.tanh(1.0 - r / rc) ** 3
    if ctype == 3:
        return TANH_PRE * math.tanh(1.0 - r / rc) ** 3
    rci = alpha * rc
    if r < rci:
        return 1.0
    x = (r - rci) / (rc - rci)
    if ctype == 1:
        return 0.5 * (math.cos(math.pi * x) + 1.0)
    if ctype == 4:
        return math.exp(1.0 - 1.0 / (1.0 - x * x))
    if 5 <= ctype <= 8:
        # POLYn is 1 - S_n(x) = S_n(1 - x) with the smoothstep polynomial
        # S_n(y) = y^(n+1) sum_k C(n+k, k) C(2n+1, n-k) (-y)^k; evaluate S_n at the
        # argument below 1/2 so that no cancellation occurs.
        n = ctype - 4
        if x <= 0.5:
            return 1.0 - smoothstep(n, x)
        return smoothstep(n, 1.0 - x)
    raise ValueError(ctype)


def smoothstep(n: int, y: float) -> float:
    return y ** (n + 1) * sum(
        math.comb(n + k, k) * math.comb(2 * n + 1, n - k) * (-y) ** k for k in range(n + 1)
    )


def images(cell: np.ndarray, pbc, rc: float, spread=(0.0, 0.0, 0.0)) -> list[np.ndarray]:
    """Integer shifts covering every image within rc of points whose fractional
    coordinates differ by at most ``spread`` per direction."""
    cell = np.asarray(cell, dtype=float)
    ranges = []
    for k in range(3):
        if not pbc[k]:
            ranges.append([0])
            continue
        # distance between the planes spanned by the other two vectors
        a, b = cell[(k + 1) % 3], cell[(k + 2) % 3]
        normal = np.cross(a, b)
        h = abs(np.dot(cell[k], normal)) / np.linalg.norm(normal)
        n = math.ceil(rc / h) + math.ceil(spread[k]) + 1
        ranges.append(range(-n, n + 1))
    return [np.array(s, dtype=float) for s in itertools.product(*ranges)]


def neighbours_ref(positions, cell, pbc, rc):
    """For each atom: list of (j, d_ij) with 0 < |d_ij| < rc, by brute force."""
    pos = np.asarray(positions, dtype=float)
    spread = [0.0, 0.0, 0.0]
    if any(pbc):
        full = np.array(cell, dtype=float)
        for k in range(3):
            if not pbc[k]:  # any vector independent of the periodic ones
                full[k] = np.cross(full[(k + 1) % 3], full[(k + 2) % 3]) + 1e-3
        frac = pos @ np.linalg.inv(full)
        spread = (frac.max(0) - frac.min(0)).tolist()
    shifts = images(cell, pbc, rc, spread)
    out = []
    for i in range(len(pos)):
        lst = []
        for j in range(len(pos)):
            for s in shifts:
                d = pos[j] + s @ np.asarray(cell, dtype=float) - pos[i]
                r = math.sqrt(float(d @ d))
                if 0.0 < r < rc:
                    lst.append((j, d))
        out.append(lst)
    return out


def g_ref(symbols, positions, cell, pbc, functions):
    """G[i][s] for every atom i and every symmetry function s of its element.

    ``functions``: {element: [dict(type, neighbors, eta, rs, rc, lambda, zeta,
    cutoff_type, cutoff_alpha)]}."""
    rcmax = max(f["rc"] for fs in functions.values() for f in fs)
    nbl = neighbours_ref(positions, cell, pbc, rcmax)
    result = []
    for i, el in enumerate(symbols):
        row = []
        for f in functions[el]:
            rc, eta, rs = f["rc"], f["eta"], f.get("rs", 0.0)
            ct, al = f.get("cutoff_type", 1), f.get("cutoff_alpha", 0.0)
            total = 0.0
            if f["type"] == 2:
                for j, d in nbl[i]:
                    if symbols[j] != f["neighbors"][0]:
                        continue
                    r = np.linalg.norm(d)
                    total += math.exp(-eta * (r - rs) ** 2) * fc_ref(r, rc, ct, al)
            else:
                # all pairs a < b of neighbours, vectorised with NumPy
                lam, zeta = f["lambda"], f["zeta"]
                want = sorted(f["neighbors"])
                nb = nbl[i]
                if len(nb) < 2:
                    row.append(0.0)
                    continue
                el_nb = [symbols[j] for j, _ in nb]
                vec = np.array([d for _, d in nb])
                a_idx, b_idx = np.triu_indices(len(nb), 1)
                ok = np.array(
                    [
                        sorted([el_nb[a], el_nb[b]]) == want
                        for a, b in zip(a_idx, b_idx, strict=True)
                    ],
                    dtype=bool,
                )
                a_idx, b_idx = a_idx[ok], b_idx[ok]
                dj, dk = vec[a_idx], vec[b_idx]
                rij = np.sqrt((dj * dj).sum(1))
                rik = np.sqrt((dk * dk).sum(1))
                rjk = np.sqrt(((dk - dj) ** 2).sum(1))
                keep = (rij < rc) & (rik < rc)
                if f["type"] == 3:
                    keep &= rjk < rc
                rij, rik, rjk, dj, dk = rij[keep], rik[keep], rjk[keep], dj[keep], dk[keep]
                cos = (dj * dk).sum(1) / (rij * rik)
                base = 1.0 + lam * cos
                ang = np.where(base > 0, np.abs(base) ** zeta, 0.0)
                rad = (rij - rs) ** 2 + (rik - rs) ** 2
                cut = np.array([fc_ref(x, rc, ct, al) for x in rij]) * np.array(
                    [fc_ref(x, rc, ct, al) for x in rik]
                )
                if f["type"] == 3:
                    rad = rad + (rjk - rs) ** 2
                    cut = cut * np.array([fc_ref(x, rc, ct, al) for x in rjk])
                total = float(np.sum(2.0 ** (1.0 - zeta) * ang * np.exp(-eta * rad) * cut))
            row.append(total)
        result.append(row)
    return result


def act_ref(name: str, x: np.ndarray) -> np.ndarray:
    if name == "identity":
        return x
    if name == "tanh":
        return np.tanh(x)
    if name == "sigmoid":
        return np.where(x > 35, 1.0, np.where(x < -35, 0.0, 1.0 / (1.0 + np.exp(-x))))
    if name == "softplus":
        sp = np.log(1.0 + np.exp(np.clip(x, -35, 35)))
        return np.where(x > 35, x, np.where(x < -35, 0.0, sp))
    if name == "shifted_softplus":
        return act_ref("softplus", x) - math.log(2.0)
    if name == "silu":
        return x / (1.0 + np.exp(-x))
    raise ValueError(name)


def mlp_ref(
    layers: list[tuple[np.ndarray, np.ndarray]],
    activations: list[str],
    x: np.ndarray,
    normalize_nodes: bool = False,
) -> np.ndarray:
    """layers: [(W (out, in), b (out,))]; x: (n, in) -> (n,)."""
    y = x
    for (w, b), a in zip(layers, activations, strict=True):
        z = y @ w.T + b
        if normalize_nodes:
            z = z / w.shape[1]
        y = act_ref(a, z)
    return y[:, 0]
