"""Evaluation of symmetry functions and their analytic derivatives.

Implements docs/symmetry_functions.md sections 1-3. :class:`DescriptorCalculator` (the
evaluator, as the C++ ``nnmd::DescriptorCalculator``) returns :class:`DescriptorValues`:
G (one row per atom, one column per symmetry function, in the order of the
:class:`~nnmd_lammps.descriptors.spec.DescriptorSpec`) and, if asked for, ``dG_i/dd_ij``
for every neighbour image j of i: the derivative with respect to the displacement vector.
Forces and the virial are contractions of it with dE/dG
(:func:`~nnmd_lammps.descriptors.contraction.forces_and_virial`).

Two backends compute the same numbers (the tests hold them equal):

``"ops"`` (the default)
    the C++ kernels of the LAMMPS plugin as PyTorch operators (:mod:`.ops`), parallel over
    atoms; on a CUDA device the operators' CUDA kernels (a library built with CUDA,
    docs/gpu.md), on the tensors where they are. Without ``derivatives`` no dG/dd is
    formed: the values carry a :class:`OperatorContraction`, through which forces and
    virials are contracted from dE/dG directly (prediction). With ``derivatives`` the
    dense dG/dd comes from the operator too (training).
``"torch"``
    the same formulas in torch tensor operations (every triplet materialised): the
    fallback when the operator library is missing or has no kernels for the device (one
    warning), and an independent second implementation for the tests.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import NNMDError
from .cutoffs import cutoff_function
from .neighbors import PairList, triplets_of
from .ops import (
    Descriptors,
    NeighborCSR,
    available,
    contract,
    cuda_available,
    jacobian,
    supports,
    symmetry_functions,
    unavailable_reason,
)
from .spec import DescriptorSpec

Tensor = torch.Tensor

#: Triplets processed per chunk (bounds memory to a few tens of MB per group).
TRIPLET_CHUNK = 1 << 17

#: Descriptor backends (see the module docstring); None or "auto": "ops" when the
#: operator library is available and has kernels for the device (the CPU, or CUDA with a
#: CUDA build), else "torch".
BACKENDS = ("ops", "torch")

_fallback_warned: set[str] = set()

_NO_CUDA = (
    "the operator library was built without CUDA (docs/gpu.md: build it with a CUDA "
    "toolkit against a torch with CUDA)"
)


def _warn_fallback(kind: str, reason: str) -> None:
    if kind in _fallback_warned:
        return
    _fallback_warned.add(kind)
    warnings.warn(
        f"nnmd: the C++ symmetry-function operators are unavailable ({reason}); using the "
        f"torch implementation, more than ten times slower",
        RuntimeWarning,
        stacklevel=4,
    )


def _choose_backend(backend: str | None, device: torch.device) -> str:
    if backend not in (None, "auto", *BACKENDS):
        raise NNMDError(f"unknown descriptor backend {backend!r} (ops, torch or auto)")
    if backend == "torch":
        return "torch"
    if backend == "ops":
        if not available():
            raise NNMDError(f"the descriptor operators are unavailable: {unavailable_reason()}")
        if device.type == "cuda" and not cuda_available():
            raise NNMDError(f"the descriptor operators cannot run on {device}: {_NO_CUDA}")
        if not supports(device):
            raise NNMDError(
                f"the descriptor operators run on the CPU and on CUDA devices, not on {device}"
            )
        return "ops"
    if supports(device):
        return "ops"
    if not available():
        _warn_fallback("library", str(unavailable_reason()))
    elif device.type == "cuda":
        _warn_fallback("cuda", _NO_CUDA)
    return "torch"


def _stable_argsort(x: Tensor) -> Tensor:
    """Indices that sort ``x`` stably (on the CPU numpy's, fastest for the nearly sorted
    keys of neighbour lists; elsewhere torch's, on the device)."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.argsort(x.numpy(), kind="stable"))
    return torch.argsort(x, stable=True)


def _same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """Whether ``a`` and ``b`` are one device ("cuda" is the current CUDA device)."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type != "cuda" or a.index == b.index:
        return True
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


@dataclass
class _Group:
    """Symmetry functions of one element sharing type class, neighbours and cutoff."""

    angular: bool
    type: int  # 2 for radial; 3 or 9 for angular
    neighbors: tuple[int, ...]  # element indices (sorted for angular)
    rc: float
    cutoff_type: int
    cutoff_alpha: float
    columns: list[int] = field(default_factory=list)  # output columns
    eta: list[float] = field(default_factory=list)
    rs: list[float] = field(default_factory=list)
    lambda_: list[float] = field(default_factory=list)
    zeta: list[float] = field(default_factory=list)
    offset: int = 0  # first internal column

    def params(self, dtype: torch.dtype, device: torch.device) -> dict[str, Tensor]:
        t = {
            k: torch.tensor(getattr(self, k), dtype=dtype, device=device)
            for k in ("eta", "rs", "lambda_", "zeta")
        }
        return t


@dataclass
class OperatorContraction:
    """dE/dG -> dE/dd of every pair through the contraction operator (``ops`` backend),
    without forming dG/dd: the pairs of a :class:`DescriptorValues` as one CSR batch
    (elements' pairs consecutive, in the order of ``pair_index``)."""

    descriptors: Descriptors
    csr: NeighborCSR
    vectors: Tensor  # (P, 3) float64
    cache: Tensor | None
    n_rows: list[int]  # atoms per element
    pair_bounds: list[int]  # element e's pairs: pair_bounds[e]:pair_bounds[e + 1]

    def _flat(self, dEdG: Sequence[Tensor | None], lead: tuple[int, ...]) -> Tensor:
        parts = []
        opts = {"dtype": torch.float64, "device": self.vectors.device}
        for e, g in enumerate(dEdG):
            n, S = self.n_rows[e], self.descriptors.num_functions(e)
            if n == 0:
                continue
            if g is None:
                parts.append(torch.zeros((*lead, n * S), **opts))
            else:
                parts.append(g.reshape(*lead, n * S).to(**opts))
        if not parts:
            return torch.zeros((*lead, 0), **opts)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def _split(self, v: Tensor) -> list[Tensor]:
        b = self.pair_bounds
        return [v[..., b[e] : b[e + 1], :] for e in range(len(self.n_rows))]

    def pair_gradients(self, dEdG: Sequence[Tensor | None]) -> list[Tensor]:
        """v_ij = sum_s dE/dG_is dG_is/dd_ij for each element's pairs, (P_e, 3) float64,
        from ``dEdG[e]`` (n_e, S_e) (None: zero). Differentiable in dE/dG."""
        c = self._flat(dEdG, ())
        return self._split(contract(self.descriptors, self.csr, self.vectors, c, self.cache))

    def member_pair_gradients(self, dEdG: Sequence[Tensor | None], members: int) -> list[Tensor]:
        """The same for M vectors at once: ``dEdG[e]`` (M, n_e, S_e) -> (M, P_e, 3)."""
        c = self._flat(dEdG, (members,))
        return self._split(contract(self.descriptors, self.csr, self.vectors, c, self.cache))


@dataclass
class DescriptorValues:
    """Symmetry functions of a batch of atoms.

    Per model element e (index into ``spec.elements``):
      ``atoms[e]``: global indices of the atoms of element e, (n_e,)
      ``G[e]``: symmetry functions, (n_e, S_e)
      ``pair_index[e]``: for each pair centred on an atom of element e (within the
        element's largest cutoff), its index in the input neighbour list, (P_e,)
      ``pair_row[e]``: the row of each such pair's centre in ``G[e]``, (P_e,)
      ``pair_i[e]``, ``pair_j[e]``: global atom indices of centre and neighbour, (P_e,)
      ``pair_d[e]``: displacement vectors d_ij, (P_e, 3)
      ``dGdd[e]``: dG_i/dd_ij, (P_e, S_e, 3), or None without derivatives
    ``contraction``: with the ``ops`` backend, the contraction operator for these pairs
    (forces and virials from dE/dG without dG/dd); None with the ``torch`` backend.
    """

    n_atoms: int
    atoms: list[Tensor]
    G: list[Tensor]
    pair_index: list[Tensor]
    pair_row: list[Tensor]
    pair_i: list[Tensor]
    pair_j: list[Tensor]
    pair_d: list[Tensor]
    dGdd: list[Tensor | None]
    contraction: OperatorContraction | None = None

    def to(self, device: torch.device | str) -> DescriptorValues:
        """A copy on ``device`` (the contraction operator is kept only when its tensors
        are already there)."""

        def mv(xs):
            return [None if x is None else x.to(device) for x in xs]

        con = self.contraction
        keep = con if con is not None and _same_device(con.vectors.device, device) else None
        return DescriptorValues(
            self.n_atoms,
            mv(self.atoms),
            mv(self.G),
            mv(self.pair_index),
            mv(self.pair_row),
            mv(self.pair_i),
            mv(self.pair_j),
            mv(self.pair_d),
            mv(self.dGdd),
            keep,
        )


class DescriptorCalculator:
    """Evaluates the symmetry functions of a :class:`DescriptorSpec`.

    ``backend``: "ops" (the C++ operators), "torch" (the torch implementation) or None /
    "auto": "ops" when the operator library is available and runs on ``device`` (the CPU;
    a CUDA device with a library built with CUDA), else "torch" (with one warning). The
    operators compute where the tensors are, without copies to the host. ``dtype`` is the
    dtype of the results (the operators compute in float64)."""

    def __init__(
        self,
        spec: DescriptorSpec,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
        backend: str | None = None,
    ) -> None:
        self.spec = spec
        self.dtype = dtype
        self.device = torch.device(device)
        index = spec.element_index
        self.num_elements = len(spec.elements)
        self.groups: list[list[_Group]] = []
        self.column_order: list[Tensor] = []  # internal column -> output column
        self.cutoff_max: list[float] = []
        self.angular_cutoff_max: list[float] = []
        self.angular_neighbors: list[set[int]] = []
        for e in spec.elements:
            groups: dict[tuple, _Group] = {}
            for col, sf in enumerate(spec.functions[e]):
                nb = tuple(index[x] for x in sf.neighbors)
                key = (
                    sf.is_angular,
                    sf.type if sf.is_angular else 2,
                    nb,
                    sf.rc,
                    sf.cutoff_type,
                    sf.cutoff_alpha,
                )
                g = groups.get(key)
                if g is None:
                    g = groups[key] = _Group(*key)
                g.columns.append(col)
                g.eta.append(sf.eta)
                g.rs.append(sf.rs)
                g.lambda_.append(sf.lambda_)
                g.zeta.append(sf.zeta)
            glist = list(groups.values())
            offset = 0
            order = []
            for g in glist:
                g.offset = offset
                offset += len(g.columns)
                order.extend(g.columns)
            self.groups.append(glist)
            self.column_order.append(torch.tensor(order, dtype=torch.long))
            self.cutoff_max.append(max(g.rc for g in glist))
            ang = [g for g in glist if g.angular]
            self.angular_cutoff_max.append(max((g.rc for g in ang), default=0.0))
            self.angular_neighbors.append({n for g in ang for n in g.neighbors})
        self._params = [[g.params(dtype, self.device) for g in gl] for gl in self.groups]
        self.backend = _choose_backend(backend, self.device)
        self._ops = Descriptors(spec) if self.backend == "ops" else None
        self._cutoff_of = torch.tensor(self.cutoff_max, dtype=torch.float64, device=self.device)

    @property
    def cutoff(self) -> float:
        return max(self.cutoff_max)

    @property
    def operators(self) -> Descriptors | None:
        """The operators' calculators (``ops`` backend), else None."""
        return self._ops

    def num_functions(self, element: int) -> int:
        return len(self.column_order[element])

    def compute(
        self,
        species: Tensor,
        centers: Tensor,
        neighbors: Tensor,
        vectors: Tensor,
        derivatives: bool = True,
    ) -> DescriptorValues:
        """Symmetry functions for atoms of model-element index ``species`` (N,), given
        the full neighbour list ``centers``/``neighbors`` (P,) with displacement
        vectors ``vectors`` (P, 3) in Angstrom (G is differentiable if they require grad;
        with the ``ops`` backend dG/dd is not: second derivatives are not provided).
        ``derivatives``: also the dense dG/dd of every pair."""
        if self.backend == "ops":
            return self._compute_ops(species, centers, neighbors, vectors, derivatives)
        return self._compute_torch(species, centers, neighbors, vectors, derivatives)

    def _compute_ops(
        self,
        species: Tensor,
        centers: Tensor,
        neighbors: Tensor,
        vectors: Tensor,
        derivatives: bool,
    ) -> DescriptorValues:
        dev = vectors.device
        if not supports(dev):
            raise NNMDError(
                f"the descriptor operators do not run on {dev} tensors (use backend='torch')"
            )
        if not _same_device(dev, self.device):
            raise NNMDError(f"vectors on {dev}, but the calculator was made for {self.device}")
        d = vectors if vectors.dtype == torch.float64 else vectors.to(torch.float64)
        species = species.to(device=dev, dtype=torch.long)
        centers = centers.to(device=dev, dtype=torch.long)
        neighbors = neighbors.to(device=dev, dtype=torch.long)
        n_atoms, nel = int(species.shape[0]), self.num_elements
        # rows: the atoms grouped by element (ascending index within an element); pairs
        # within their centre's element cutoff, grouped by row (CSR), all on the device.
        with torch.no_grad():
            dist = torch.linalg.vector_norm(d.detach(), dim=1)
            keep = dist < self._cutoff_of[species[centers]]
        rows = _stable_argsort(species)
        row_of = torch.empty_like(rows)
        row_of[rows] = torch.arange(n_atoms, device=dev)
        if bool(keep.all()):
            key = row_of[centers]
            pidx = _stable_argsort(key)
        else:
            pidx = torch.nonzero(keep).flatten()
            key = row_of[centers[pidx]]
            pidx = pidx[_stable_argsort(key)]
        key = row_of[centers[pidx]]
        offsets = torch.zeros(n_atoms + 1, dtype=torch.long, device=dev)
        torch.cumsum(torch.bincount(key, minlength=n_atoms), 0, out=offsets[1:])
        pi, pj = centers[pidx], neighbors[pidx]
        pd = d[pidx]
        csr = NeighborCSR(species[rows], offsets, species[pj])
        if derivatives:
            G, dG = jacobian(self._ops, csr, pd)
            cache = None
        else:
            G, cache = symmetry_functions(self._ops, csr, pd)
            dG = None
        counts = torch.bincount(species, minlength=nel).tolist()
        row_bounds = [0]
        for n in counts:
            row_bounds.append(row_bounds[-1] + n)
        pair_bounds = offsets[row_bounds].tolist()
        out = DescriptorValues(n_atoms, [], [], [], [], [], [], [], [])
        dt = self.dtype
        g0 = j0 = 0
        for e in range(nel):
            n, S = counts[e], self.num_functions(e)
            r0, p0, p1 = row_bounds[e], pair_bounds[e], pair_bounds[e + 1]
            out.atoms.append(rows[r0 : r0 + n])
            out.G.append(G[g0 : g0 + n * S].view(n, S).to(dt))
            out.pair_index.append(pidx[p0:p1])
            out.pair_row.append(key[p0:p1] - r0)
            out.pair_i.append(pi[p0:p1])
            out.pair_j.append(pj[p0:p1])
            out.pair_d.append(pd[p0:p1].to(dt))
            out.dGdd.append(
                None if dG is None else dG[j0 : j0 + (p1 - p0) * S * 3].view(-1, S, 3).to(dt)
            )
            g0 += n * S
            j0 += (p1 - p0) * S * 3
        out.contraction = OperatorContraction(self._ops, csr, pd, cache, counts, pair_bounds)
        return out

    def _compute_torch(
        self,
        species: Tensor,
        centers: Tensor,
        neighbors: Tensor,
        vectors: Tensor,
        derivatives: bool,
    ) -> DescriptorValues:
        dev, dt = vectors.device, self.dtype
        vectors = vectors.to(dt)
        n_atoms = int(species.shape[0])
        species = species.to(dev)
        centers = centers.to(dev)
        neighbors = neighbors.to(dev)
        dist = torch.linalg.vector_norm(vectors, dim=1)
        row_of = torch.zeros(n_atoms, dtype=torch.long, device=dev)
        out = DescriptorValues(n_atoms, [], [], [], [], [], [], [], [])
        for e in range(self.num_elements):
            atoms = torch.nonzero(species == e).flatten()
            row_of[atoms] = torch.arange(len(atoms), device=dev)
            keep = (species[centers] == e) & (dist < self.cutoff_max[e])
            pidx = torch.nonzero(keep).flatten()
            # sort pairs by centre (stable) so that triplets can be formed per centre
            pidx = pidx[torch.sort(centers[pidx], stable=True).indices]
            pi, pj = centers[pidx], neighbors[pidx]
            pd, pr = vectors[pidx], dist[pidx]
            prow = row_of[pi]
            nfun = self.num_functions(e)
            G = torch.zeros((len(atoms), nfun), dtype=dt, device=dev)
            dG = torch.zeros((len(pidx), nfun, 3), dtype=dt, device=dev) if derivatives else None
            self._radial(e, species[pj], pd, pr, prow, G, dG)
            self._angular(e, species[pj], pi, pd, pr, prow, G, dG)
            order = self.column_order[e].to(dev)
            Gout = torch.empty_like(G)
            Gout[:, order] = G
            if dG is not None:
                dGout = torch.empty_like(dG)
                dGout[:, order] = dG
                dG = dGout
            out.atoms.append(atoms)
            out.G.append(Gout)
            out.pair_index.append(pidx)
            out.pair_row.append(prow)
            out.pair_i.append(pi)
            out.pair_j.append(pj)
            out.pair_d.append(pd)
            out.dGdd.append(dG)
        return out

    # -- radial -----------------------------------------------------------------------
    def _radial(
        self,
        e: int,
        nspec: Tensor,
        d: Tensor,
        r: Tensor,
        prow: Tensor,
        G: Tensor,
        dG: Tensor | None,
    ) -> None:
        for g, par in zip(self.groups[e], self._params[e], strict=True):
            if g.angular:
                continue
            sel = torch.nonzero((nspec == g.neighbors[0]) & (r < g.rc)).flatten()
            if len(sel) == 0:
                continue
            rr = r[sel]
            fc, dfc = cutoff_function(rr, g.rc, g.cutoff_type, g.cutoff_alpha)
            x = rr[:, None] - par["rs"]  # (p, s)
            ex = torch.exp(-par["eta"] * x * x)
            cols = slice(g.offset, g.offset + len(g.columns))
            G[:, cols].index_add_(0, prow[sel], ex * fc[:, None])
            if dG is not None:
                coef = (dfc[:, None] - 2.0 * par["eta"] * x * fc[:, None]) * ex / rr[:, None]
                dG[:, cols].index_add_(0, sel, coef[:, :, None] * d[sel][:, None, :])

    # -- angular ----------------------------------------------------------------------
    def _angular(
        self,
        e: int,
        nspec: Tensor,
        pi: Tensor,
        d: Tensor,
        r: Tensor,
        prow: Tensor,
        G: Tensor,
        dG: Tensor | None,
    ) -> None:
        ang = [(g, p) for g, p in zip(self.groups[e], self._params[e], strict=True) if g.angular]
        if not ang:
            return
        # candidate pairs: within the largest angular cutoff, neighbour element used
        nb_ok = torch.zeros_like(r, dtype=torch.bool)
        for n in self.angular_neighbors[e]:
            nb_ok |= nspec == n
        cand = torch.nonzero(nb_ok & (r < self.angular_cutoff_max[e])).flatten()
        if len(cand) < 2:
            return
        first, second = triplets_of(pi[cand].cpu().numpy())
        if len(first) == 0:
            return
        p1 = cand[torch.from_numpy(first).to(r.device)]
        p2 = cand[torch.from_numpy(second).to(r.device)]
        s1, s2 = nspec[p1], nspec[p2]
        lo, hi = torch.minimum(s1, s2), torch.maximum(s1, s2)
        by_pair: dict[tuple, Tensor] = {}
        by_cut: dict[tuple, tuple[Tensor, Tensor]] = {}
        for g, par in ang:
            a, b = g.neighbors
            if (a, b) not in by_pair:
                by_pair[(a, b)] = torch.nonzero((lo == a) & (hi == b)).flatten()
            tsel = by_pair[(a, b)]
            tsel = tsel[(r[p1[tsel]] < g.rc) & (r[p2[tsel]] < g.rc)]
            ckey = (g.rc, g.cutoff_type, g.cutoff_alpha)
            if ckey not in by_cut:
                by_cut[ckey] = cutoff_function(r, *ckey)
            fc, dfc = by_cut[ckey]
            for start in range(0, len(tsel), TRIPLET_CHUNK):
                t = tsel[start : start + TRIPLET_CHUNK]
                self._angular_chunk(g, par, p1[t], p2[t], d, r, fc, dfc, prow, G, dG)

    @staticmethod
    def _angular_chunk(
        g: _Group,
        par: dict[str, Tensor],
        q1: Tensor,
        q2: Tensor,
        d: Tensor,
        r: Tensor,
        fc: Tensor,
        dfc: Tensor,
        prow: Tensor,
        G: Tensor,
        dG: Tensor | None,
    ) -> None:
        a, b = d[q1], d[q2]
        r1, r2 = r[q1], r[q2]
        f1, f2, df1, df2 = fc[q1], fc[q2], dfc[q1], dfc[q2]
        narrow = g.type == 3
        if narrow:
            c = b - a
            r3 = torch.linalg.vector_norm(c, dim=1)
            keep = r3 < g.rc
            if not bool(keep.all()):
                idx = torch.nonzero(keep).flatten()
                q1, q2, a, b, c, r1, r2, r3 = (x[idx] for x in (q1, q2, a, b, c, r1, r2, r3))
                f1, f2, df1, df2 = (x[idx] for x in (f1, f2, df1, df2))
            if len(q1) == 0:
                return
            f3, df3 = cutoff_function(r3, g.rc, g.cutoff_type, g.cutoff_alpha)
            F = f1 * f2 * f3
        else:
            F = f1 * f2
        eta, rs, lam, zeta = par["eta"], par["rs"], par["lambda_"], par["zeta"]
        inv12 = 1.0 / (r1 * r2)
        cos = (a * b).sum(1) * inv12
        x1 = r1[:, None] - rs
        x2 = r2[:, None] - rs
        expo = x1 * x1 + x2 * x2
        if narrow:
            x3 = r3[:, None] - rs
            expo = expo + x3 * x3
        E = torch.exp(-eta * expo)
        P = 1.0 + lam * cos[:, None]
        positive = P > 0.0
        Ppos = torch.where(positive, P, torch.ones_like(P))
        K = torch.where(
            positive,
            torch.pow(2.0, 1.0 - zeta) * torch.pow(Ppos, zeta - 1.0) * E,
            torch.zeros_like(P),
        )
        cols = slice(g.offset, g.offset + len(g.columns))
        G[:, cols].index_add_(0, prow[q1], K * P * F[:, None])
        if dG is None:
            return
        zlF = zeta * lam * F[:, None]
        beta = K * zlF * inv12[:, None]
        if narrow:
            dF1, dF2 = df1 * f2 * f3, f1 * df2 * f3  # dF/dr1, dF/dr2
            gamma = -K * P * ((f1 * f2 * df3)[:, None] - 2.0 * eta * x3 * F[:, None]) / r3[:, None]
        else:
            dF1, dF2 = df1 * f2, f1 * df2
        Fc = F[:, None]
        alpha_a = K * (
            -zlF * cos[:, None] / (r1 * r1)[:, None]
            + P * (dF1[:, None] - 2.0 * eta * x1 * Fc) / r1[:, None]
        )
        alpha_b = K * (
            -zlF * cos[:, None] / (r2 * r2)[:, None]
            + P * (dF2[:, None] - 2.0 * eta * x2 * Fc) / r2[:, None]
        )
        A, B = a[:, None, :], b[:, None, :]
        da = alpha_a[:, :, None] * A + beta[:, :, None] * B
        db = alpha_b[:, :, None] * B + beta[:, :, None] * A
        if narrow:
            C = c[:, None, :]
            da = da + gamma[:, :, None] * C
            db = db - gamma[:, :, None] * C
        view = dG[:, cols]
        view.index_add_(0, q1, da)
        view.index_add_(0, q2, db)


def pair_tensors(
    pairs: PairList, positions: Tensor, cells: Tensor, device=None
) -> tuple[Tensor, Tensor, Tensor]:
    """Centres, neighbours and displacement vectors d_ij = r_j + S·H - r_i as tensors.

    ``positions`` (N, 3) and ``cells`` (B, 3, 3) are tensors (they may require grad);
    ``pairs`` is a :class:`~nnmd_lammps.neighbors.PairList`."""
    dev = positions.device if device is None else device
    i = torch.from_numpy(pairs.centers).to(dev)
    j = torch.from_numpy(pairs.neighbors).to(dev)
    S = torch.from_numpy(pairs.shifts).to(device=dev, dtype=positions.dtype)
    owner = pairs.structure
    if len(owner) and owner[0] == owner[-1]:
        # one structure (the list is ordered by structure): one small matrix product
        shift = S @ cells[int(owner[0])]
    else:
        # S·H row by row: three (P, 3) gathers of cell vectors, not a (P, 3, 3) one
        rows = cells.reshape(-1, 3)
        base = torch.from_numpy(owner).to(dev) * 3
        shift = S[:, :1] * rows[base] + S[:, 1:2] * rows[base + 1] + S[:, 2:] * rows[base + 2]
    d = positions[j] - positions[i] + shift
    return i, j, d
