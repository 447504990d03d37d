"""Forces and virial from dE/dG: the contraction J^T (dE/dG) (docs/symmetry_functions.md,
section 6). One function for prediction and training (where it stays differentiable in
the network weights). The per-pair vectors v come either from the dense dG/dd
(``dGdd``, the torch backend and training batches) or, when the descriptors carry no
dG/dd, from the C++ contraction operator (``contraction``, the ops backend of
:class:`~nnmd_lammps.descriptors.calculator.DescriptorCalculator`: the kernels'
``DescriptorCalculator::contract``, as in LAMMPS), without forming dG/dd.

For a pair (i, j) with displacement d_ij = r_j - r_i, v = sum_s (dE/dG_i,s) dG_i,s/dd_ij
is the derivative of the energy with respect to d_ij; it pushes atom j by -v and atom i
by +v, and adds W = -d_ij ⊗ v to the virial (LAMMPS convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

Tensor = torch.Tensor


class PairTerms(Protocol):
    """Per model element e, the pairs centred on atoms of e (what
    :class:`~nnmd_lammps.descriptors.calculator.DescriptorValues` and a training batch
    hold): ``pair_row[e]`` the centre's row in G[e], ``pair_i[e]``/``pair_j[e]`` atom
    indices, ``pair_d[e]`` (P_e, 3) displacements, ``dGdd[e]`` (P_e, S_e, 3)."""

    pair_row: list[Tensor]
    pair_i: list[Tensor]
    pair_j: list[Tensor]
    pair_d: list[Tensor]
    dGdd: list[Tensor | None]


class PairContraction(Protocol):
    """What contracts dE/dG without dG/dd (the ``contraction`` of
    :class:`~nnmd_lammps.descriptors.calculator.DescriptorValues`, ops backend)."""

    def pair_gradients(self, dEdG: Sequence[Tensor | None]) -> list[Tensor]: ...

    def member_pair_gradients(
        self, dEdG: Sequence[Tensor | None], members: int
    ) -> list[Tensor]: ...


def _needed(pairs: PairTerms, dEdG: Sequence[Tensor | None]) -> list[int]:
    """Elements whose pairs contribute: dE/dG given and at least one pair."""
    return [e for e, g in enumerate(dEdG) if g is not None and pairs.pair_row[e].shape[0] > 0]


def _contraction(pairs: PairTerms, needed: list[int]) -> PairContraction | None:
    """None when dense dG/dd is there for every needed element, else the operator."""
    if all(pairs.dGdd[e] is not None for e in needed):
        return None
    op = getattr(pairs, "contraction", None)
    if op is None:
        raise ValueError("descriptors were computed without derivatives")
    return op


def pair_gradients(pairs: PairTerms, dEdG: Sequence[Tensor | None]) -> list[Tensor | None]:
    """v = dE/dd (P_e, 3) of every pair of each element (None where dE/dG is None or
    there are no pairs), in the dtype of ``pair_d``."""
    needed = _needed(pairs, dEdG)
    op = _contraction(pairs, needed)
    out: list[Tensor | None] = [None] * len(dEdG)
    if op is not None:
        vs = op.pair_gradients(dEdG)
        for e in needed:
            out[e] = vs[e].to(pairs.pair_d[e].dtype)
        return out
    for e in needed:
        grad = dEdG[e]
        out[e] = torch.einsum("ps,psk->pk", grad[pairs.pair_row[e]], pairs.dGdd[e])
    return out


def member_forces(pairs: PairTerms, dEdG: Sequence[Tensor | None], n_atoms: int) -> Tensor:
    """The forces (M, N, 3) of M sets of dE/dG at once (a committee's members):
    ``dEdG[e]`` (M, n_e, S_e) or None. With the contraction operator all members are
    contracted in one call."""
    needed = _needed(pairs, dEdG)
    ref = pairs.pair_d[0]
    members = next((int(g.shape[0]) for g in dEdG if g is not None), 0)
    f = torch.zeros((members, n_atoms, 3), dtype=ref.dtype, device=ref.device)
    op = _contraction(pairs, needed)
    vs = op.member_pair_gradients(dEdG, members) if op is not None else None
    for e in needed:
        if vs is not None:
            v = vs[e].to(ref.dtype)
        else:
            v = torch.einsum("mps,psk->mpk", dEdG[e][:, pairs.pair_row[e]], pairs.dGdd[e])
        f = f.index_add(1, pairs.pair_j[e], -v).index_add(1, pairs.pair_i[e], v)
    return f


@dataclass
class Contraction:
    """``forces`` (N, 3) eV/Angstrom; ``virial`` (R, 3, 3) eV, each pair's W added to the
    row ``virial_rows`` gave it; ``atom_virial`` (N, 3, 3) eV, LAMMPS's per-atom virial
    (half of each pair's W to i and half to j). Each is None unless asked for."""

    forces: Tensor | None
    virial: Tensor | None
    atom_virial: Tensor | None


def forces_and_virial(
    pairs: PairTerms,
    dEdG: Sequence[Tensor | None],
    n_atoms: int,
    *,
    forces: bool = True,
    virial_rows: Sequence[Tensor] | None = None,
    n_virial_rows: int = 0,
    atom_virial: bool = False,
) -> Contraction:
    """Contract ``dEdG[e]`` (n_e, S_e) with dG/dd of every pair (dense ``dGdd`` if
    present, else the contraction operator).

    ``virial_rows[e]`` (P_e,) says where each pair's virial goes (the centre atom for
    per-atom sums, the structure for per-structure virials) among ``n_virial_rows`` rows;
    without it no virial is formed. An element whose ``dEdG`` is None (no atoms) or that
    has no pairs is skipped. Out-of-place index additions keep the result differentiable.
    """
    ref = pairs.pair_d[0]
    opts = {"dtype": ref.dtype, "device": ref.device}
    f = torch.zeros((n_atoms, 3), **opts) if forces else None
    w = torch.zeros((n_virial_rows, 3, 3), **opts) if virial_rows is not None else None
    w_atom = torch.zeros((n_atoms, 3, 3), **opts) if atom_virial else None
    for e, v in enumerate(pair_gradients(pairs, dEdG)):
        if v is None:
            continue
        if f is not None:
            f = f.index_add(0, pairs.pair_j[e], -v).index_add(0, pairs.pair_i[e], v)
        if w is None and w_atom is None:
            continue
        if w is not None and w_atom is None and n_virial_rows == 1:
            # one row (a single structure): W = -sum_p d_p (x) v_p as one matrix product
            w = w - (pairs.pair_d[e].T @ v)[None]
            continue
        pair_w = -pairs.pair_d[e][:, :, None] * v[:, None, :]
        if w is not None:
            w = w.index_add(0, virial_rows[e], pair_w)
        if w_atom is not None:
            w_atom = w_atom.index_add(0, pairs.pair_i[e], 0.5 * pair_w)
            w_atom = w_atom.index_add(0, pairs.pair_j[e], 0.5 * pair_w)
    return Contraction(f, w, w_atom)
