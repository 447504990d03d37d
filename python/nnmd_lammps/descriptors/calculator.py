"""Evaluation of symmetry functions and their analytic derivatives in PyTorch.

Implements docs/symmetry_functions.md sections 1-3. Functions sharing a cutoff and
neighbour elements are evaluated as one group, so that distances, cutoff values and
angles are computed once per pair or triplet and broadcast over the group's parameters.

:class:`DescriptorCalculator` (the evaluator, as the C++ ``nnmd::DescriptorCalculator``)
returns :class:`DescriptorValues`: G (one row per atom, one column per symmetry function,
in the order of the :class:`~nnmd_lammps.descriptors.spec.DescriptorSpec`) and, if asked
for, ``dG_i/dd_ij`` for every neighbour image j of i: the derivative with respect to the
displacement vector. Forces and the virial are contractions of it with dE/dG
(:func:`~nnmd_lammps.descriptors.contraction.forces_and_virial`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .cutoffs import cutoff_function
from .neighbors import PairList, triplets_of
from .spec import DescriptorSpec

Tensor = torch.Tensor

#: Triplets processed per chunk (bounds memory to a few tens of MB per group).
TRIPLET_CHUNK = 1 << 17


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

    def to(self, device: torch.device | str) -> DescriptorValues:
        def mv(xs):
            return [None if x is None else x.to(device) for x in xs]

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
        )


class DescriptorCalculator:
    """Evaluates the symmetry functions of a :class:`DescriptorSpec`."""

    def __init__(
        self,
        spec: DescriptorSpec,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
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

    @property
    def cutoff(self) -> float:
        return max(self.cutoff_max)

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
        vectors ``vectors`` (P, 3) in Angstrom (differentiable if they require grad)."""
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
    owner = torch.from_numpy(pairs.structure).to(dev)
    d = positions[j] - positions[i] + torch.einsum("pk,pkl->pl", S, cells[owner])
    return i, j, d
