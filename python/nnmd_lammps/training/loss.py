"""Predictions of a batch that stay differentiable in the network weights, and the
weighted loss (docs/training.md, "Loss")."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..descriptors.contraction import forces_and_virial
from ..model.networks import HDNNP
from .tensors import TrainingBatch


@dataclass
class LossWeights:
    """Weights of the energy, force and stress terms of the loss."""

    energy: float
    force: float
    stress: float


def predict_batch(
    model: HDNNP, b: TrainingBatch, forces: bool = True, stress: bool = False
) -> list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
    """For every committee member (one for a single network): energies (B,), forces
    (Nb, 3) and stresses (B, 3, 3; ASE sign) of the batch, differentiable in the network
    weights. One force contraction per member."""
    ref = b.energy
    size = model.committee
    E = [torch.zeros(b.n_structures, dtype=ref.dtype, device=ref.device) for _ in range(size)]
    derivatives = forces or stress
    grads: list[torch.Tensor | None] = []
    for e, net in enumerate(model.networks):
        if b.G[e].shape[0] == 0:
            grads.append(None)
            continue
        if derivatives:
            en, grad = net.committee_energy_and_gradient(b.G[e])
            grads.append(grad)
        else:
            en = net.member_energies(b.G[e])
        for m in range(size):
            E[m] = E[m].index_add(0, b.row_struct[e], en[m])
    out = []
    for m in range(size):
        if not derivatives:
            out.append((E[m], None, None))
            continue
        c = forces_and_virial(
            b,
            [None if g is None else g[m] for g in grads],
            len(b.atom_struct),
            forces=forces,
            virial_rows=b.pair_struct if stress else None,
            n_virial_rows=b.n_structures,
        )
        W = c.virial
        S = None if W is None else -0.5 * (W + W.transpose(1, 2)) / b.volume[:, None, None]
        out.append((E[m], c.forces, S))
    return out


def loss_terms(model: HDNNP, b: TrainingBatch, w: LossWeights) -> torch.Tensor:
    """The weighted loss of a batch (docs/training.md). For a committee: the mean of the
    members' losses, each member with its own bootstrap weights if any (the members are
    trained independently; their mean is not fitted)."""
    want_f = w.force > 0 and bool(b.force_mask.any())
    want_s = w.stress > 0 and bool(b.stress_mask.any())
    predictions = predict_batch(model, b, want_f, want_s)
    if model.committee == 1:
        E, F, S = predictions[0]
        return _weighted_loss(E, F, S, b, w, b.weight, want_f, want_s)
    total = torch.zeros((), dtype=b.energy.dtype, device=b.energy.device)
    for m, (E, F, S) in enumerate(predictions):
        ws = b.weight if b.member_weight is None else b.weight * b.member_weight[m]
        total = total + _weighted_loss(E, F, S, b, w, ws, want_f, want_s)
    return total / model.committee


def _weighted_loss(
    E: torch.Tensor,
    F: torch.Tensor | None,
    S: torch.Tensor | None,
    b: TrainingBatch,
    w: LossWeights,
    ws: torch.Tensor,
    want_f: bool,
    want_s: bool,
) -> torch.Tensor:
    de = (E - b.energy) / b.natoms
    loss_e = (ws * de * de).sum() / ws.sum().clamp(min=1e-300)
    total = w.energy * loss_e
    if want_f:
        wa = ws[b.atom_struct] * b.force_mask
        df = (F - b.forces) ** 2
        loss_f = (wa[:, None] * df).sum() / (3.0 * wa.sum()).clamp(min=1e-300)
        total = total + w.force * loss_f
    if want_s:
        wsm = ws * b.stress_mask
        ds = ((S - b.stress) ** 2).sum((1, 2))
        loss_s = (wsm * ds).sum() / (9.0 * wsm.sum()).clamp(min=1e-300)
        total = total + w.stress * loss_s
    return total
