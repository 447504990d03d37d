"""Predictions of a batch that stay differentiable in the network weights, and the
weighted loss (docs/training.md, "Loss").

Each loss term is a weighted sum over structures (energy), atoms (forces) or structures
with stress divided by the sum of the weights: a batch's own sums by default, or those of
a larger set (a :class:`LossNorm`) when the batch is one part of it (a chunk of a full
training set, one rank's share of a global batch). The losses of the parts computed with
the whole set's norm add up to the whole set's loss, and so do their gradients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..descriptors.ops import slot_contract, slot_forces, slot_operators_apply
from ..model.networks import HDNNP
from .tensors import TrainingBatch


@dataclass
class LossNorm:
    """Denominators of the loss terms of a set of structures, per committee member m
    (tensors of shape (M,); M = 1 without bootstrap weights): ``energy`` the sum of the
    structure weights w_k, ``force`` 3 x sum over structures with forces of w_k N_k (one
    per force component), ``stress`` 9 x sum over structures with stress of w_k."""

    energy: torch.Tensor
    force: torch.Tensor
    stress: torch.Tensor


def loss_norm(
    natoms: np.ndarray,
    weight: np.ndarray,
    has_forces: np.ndarray,
    has_stress: np.ndarray,
    member_weight: np.ndarray | None,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
) -> LossNorm:
    """The :class:`LossNorm` of structures with ``natoms``, loss ``weight``, flags for
    force and stress data and committee bootstrap counts ``member_weight`` (M, B) or None
    (computed from these per-structure values alone: no descriptors needed)."""
    w = np.asarray(weight, dtype=np.float64)[None, :]
    if member_weight is not None:
        w = w * np.asarray(member_weight, dtype=np.float64)
    n = np.asarray(natoms, dtype=np.float64)
    f = np.asarray(has_forces, dtype=np.float64)
    st = np.asarray(has_stress, dtype=np.float64)

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.tensor(x, dtype=dtype, device=device)

    return LossNorm(t(w.sum(1)), t(3.0 * (w * n * f).sum(1)), t(9.0 * (w * st).sum(1)))


@dataclass
class LossWeights:
    """Weights of the energy, force and stress terms of the loss and, for the
    pseudo-Huber loss, the width of each term's quadratic core: ``energy_delta`` in
    eV/atom, ``force_delta`` in eV/Angstrom, ``stress_delta`` in eV/Angstrom^3; None
    (default) for the squared error."""

    energy: float
    force: float
    stress: float
    energy_delta: float | None = None
    force_delta: float | None = None
    stress_delta: float | None = None


def penalty(r: torch.Tensor, delta: float | None) -> torch.Tensor:
    """The loss of residuals ``r`` (docs/training.md, "Loss"): r^2 for ``delta`` None,
    else the pseudo-Huber 2 delta^2 (sqrt(1 + (r/delta)^2) - 1), r^2 for |r| << delta and
    2 delta |r| for |r| >> delta: smooth (L-BFGS needs it), with the mean absolute error's
    weight on the tails."""
    if delta is None:
        return r * r
    # the same as 2 delta^2 (sqrt(1 + x^2) - 1), x = r/delta, without its cancellation
    return 2.0 * r * r / (torch.sqrt(1.0 + (r / delta) ** 2) + 1.0)


def weight_penalty(params: list[torch.Tensor], weight_decay: float) -> torch.Tensor:
    """The L2 penalty 0.5 weight_decay sum(w^2) over the weight matrices among ``params``
    (biases, the 1-d tensors, are left out), for a closure that has already
    back-propagated its data loss: adds the penalty's gradient ``weight_decay * w`` to
    each matrix's ``grad`` and returns the penalty (detached)."""
    total = torch.zeros((), dtype=params[0].dtype, device=params[0].device)
    with torch.no_grad():
        for p in params:
            if p.ndim < 2:
                continue
            total += 0.5 * weight_decay * (p * p).sum()
            if p.grad is None:
                p.grad = weight_decay * p.detach().clone()
            else:
                p.grad.add_(p, alpha=weight_decay)
    return total


def predict_batch(
    model: HDNNP,
    b: TrainingBatch,
    forces: bool = True,
    stress: bool = False,
    member: int | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
    """For every committee member (one for a single network; only ``member`` if given):
    energies (B,), forces (Nb, 3) and stresses (B, 3, 3; ASE sign) of the batch,
    differentiable in the network weights."""
    ref = b.energy
    size = model.committee if member is None else 1
    E = [torch.zeros(b.n_structures, dtype=ref.dtype, device=ref.device) for _ in range(size)]
    derivatives = forces or stress
    grads: list[torch.Tensor | None] = []
    for e, net in enumerate(model.networks):
        if b.G[e].shape[0] == 0:
            grads.append(None)
            continue
        if member is not None and model.committee > 1:
            net = net.members[member]
        if derivatives:
            en, grad = net.committee_energy_and_gradient(b.G[e])
            grads.append(grad)
        else:
            en = net.member_energies(b.G[e])
        for m in range(size):
            E[m] = E[m].index_add(0, b.row_struct[e], en[m])
    if not derivatives:
        return [(E[m], None, None) for m in range(size)]
    F, W = contract_rows(b, grads, size, forces, stress)
    out = []
    for m in range(size):
        S = None
        if W is not None:
            S = -0.5 * (W[m] + W[m].transpose(1, 2)) / b.volume[:, None, None]
        out.append((E[m], None if F is None else F[m], S))
    return out


def contract_rows(
    b: TrainingBatch,
    dEdG: list[torch.Tensor | None],
    members: int,
    forces: bool = True,
    virial: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Forces (M, Nb, 3) and per-structure virials (M, B, 3, 3; LAMMPS sign, W = -sum d (x)
    dE/dd) of M sets of dE/dG (``dEdG[e]`` (M, n_e, S_e) or None), the contraction of
    docs/symmetry_functions.md section 6 on the batch's :class:`RowLayout`: per element
    one batched product (n_e, M, S) x (n_e, S, 3K) (:func:`slot_contract`) gives dE/dd of
    every slot of every member; a row's centre atom gets +sum over its slots, each
    neighbour -its slot (forces alone on the CPU in float64: both in the operator
    :func:`slot_forces`). Differentiable in ``dEdG``."""
    ref = b.energy
    n = len(b.atom_struct)
    m = members
    opts = {"dtype": ref.dtype, "device": ref.device}
    f = torch.zeros((n + 1, 3 * m), **opts) if forces else None  # row n: unused slots
    w = torch.zeros((b.n_structures, 9 * m), **opts) if virial else None
    for e, g in enumerate(dEdG):
        layout = b.rows[e]
        K = layout.slots
        rows = int(layout.centre.shape[0])
        if g is None or rows == 0 or K == 0:
            continue
        gm = g.permute(1, 0, 2)  # (rows, M, S)
        if f is not None and w is None and slot_operators_apply(gm, layout.dGdd):
            # contraction and scatter in one operator (no (rows, M, 3K) intermediate)
            fe = slot_forces(gm, layout.dGdd, layout.centre, layout.neighbor, n)
            f = f + torch.nn.functional.pad(fe.reshape(n, 3 * m), (0, 0, 0, 1))
            continue
        # (rows, M, S) x (rows, S, 3K): dE/dd of every slot and member, (rows, M, K, 3)
        v = slot_contract(gm, layout.dGdd).view(rows, m, K, 3)
        if f is not None:
            f = f.index_add(0, layout.centre, v.sum(2).reshape(rows, 3 * m))
            f = f.index_add(0, layout.neighbor, -v.transpose(1, 2).reshape(rows * K, 3 * m))
        if w is not None:
            row_w = -torch.einsum("rka,rmkb->rmab", layout.d, v)
            w = w.index_add(0, b.row_struct[e], row_w.reshape(rows, 9 * m))
    return (
        None if f is None else f[:n].view(n, m, 3).transpose(0, 1),
        None if w is None else w.view(b.n_structures, m, 3, 3).transpose(0, 1),
    )


def loss_terms(
    model: HDNNP,
    b: TrainingBatch,
    w: LossWeights,
    norm: LossNorm | None = None,
    member: int | None = None,
) -> torch.Tensor:
    """The weighted loss of a batch (docs/training.md), normalised by the batch's own
    weight sums or, given ``norm``, by those of the set the batch is a part of. For a
    committee: the mean of the members' losses, each member with its own bootstrap
    weights if any (the members are trained independently; their mean is not fitted);
    given ``member``, that member's loss alone.
    A batch without structures has loss 0 (a tensor without gradient)."""
    if member is not None and model.committee > 1:  # that member's own loss
        want_f = w.force > 0 and bool(b.force_mask.any())
        want_s = w.stress > 0 and bool(b.stress_mask.any())
        E, F, S = predict_batch(model, b, want_f, want_s, member)[0]
        return _weighted_loss(E, F, S, b, w, want_f, want_s, norm, member)
    return member_losses(model, b, w, norm).mean()


def member_losses(
    model: HDNNP,
    b: TrainingBatch,
    w: LossWeights,
    norm: LossNorm | None = None,
) -> torch.Tensor:
    """The (M,) losses of every committee member on a batch ((1,) for a single network),
    each as :func:`loss_terms` with ``member`` computes it, from one prediction of all
    members (the descriptors' derivatives read once). Zeros without gradient for a batch
    without structures."""
    want_f = w.force > 0 and bool(b.force_mask.any())
    want_s = w.stress > 0 and bool(b.stress_mask.any())
    if b.n_structures == 0:
        return torch.zeros(model.committee, dtype=b.energy.dtype, device=b.energy.device)
    predictions = predict_batch(model, b, want_f, want_s)
    return torch.stack(
        [
            _weighted_loss(E, F, S, b, w, want_f, want_s, norm, m)
            for m, (E, F, S) in enumerate(predictions)
        ]
    )


def _weighted_loss(
    E: torch.Tensor,
    F: torch.Tensor | None,
    S: torch.Tensor | None,
    b: TrainingBatch,
    w: LossWeights,
    want_f: bool,
    want_s: bool,
    norm: LossNorm | None,
    member: int,
) -> torch.Tensor:
    """Committee member ``member``'s loss from its predictions, with its bootstrap
    weights and its normalisation, if any."""
    ws = b.weight if b.member_weight is None else b.weight * b.member_weight[member]
    k = 0 if norm is None or len(norm.energy) == 1 else member
    de = (E - b.energy) / b.natoms
    den = ws.sum() if norm is None else norm.energy[k]
    loss_e = (ws * penalty(de, w.energy_delta)).sum() / den.clamp(min=1e-300)
    total = w.energy * loss_e
    if want_f:
        wa = ws[b.atom_struct] * b.force_mask
        df = penalty(F - b.forces, w.force_delta)
        den = 3.0 * wa.sum() if norm is None else norm.force[k]
        loss_f = (wa[:, None] * df).sum() / den.clamp(min=1e-300)
        total = total + w.force * loss_f
    if want_s:
        wsm = ws * b.stress_mask
        ds = penalty(S - b.stress, w.stress_delta).sum((1, 2))
        den = 9.0 * wsm.sum() if norm is None else norm.stress[k]
        loss_s = (wsm * ds).sum() / den.clamp(min=1e-300)
        total = total + w.stress * loss_s
    return total
