"""Predictions of a batch that stay differentiable in the network weights, and the
weighted loss (docs/training.md, "Loss")."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..descriptors.contraction import forces_and_virial
from ..model.networks import HDNNP
from .tensors import TrainingBatch


def predict_batch(
    model: HDNNP, b: TrainingBatch, forces: bool = True, stress: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Energies (B,), forces (Nb, 3) and stresses (B, 3, 3; ASE sign) of a batch;
    differentiable in the model parameters."""
    ref = b.energy
    E = torch.zeros(b.n_structures, dtype=ref.dtype, device=ref.device)
    derivatives = forces or stress
    grads: list[torch.Tensor | None] = []
    for e, net in enumerate(model.networks):
        if b.G[e].shape[0] == 0:
            grads.append(None)
            continue
        if derivatives:
            en, grad = net.energy_and_gradient(b.G[e])
            grads.append(grad)
        else:
            en = net(b.G[e])
        E = E.index_add(0, b.row_struct[e], en)
    if not derivatives:
        return E, None, None
    c = forces_and_virial(
        b,
        grads,
        len(b.atom_struct),
        forces=forces,
        virial_rows=b.pair_struct if stress else None,
        n_virial_rows=b.n_structures,
    )
    W = c.virial
    S = None if W is None else -0.5 * (W + W.transpose(1, 2)) / b.volume[:, None, None]
    return E, c.forces, S


@dataclass
class LossWeights:
    """Weights of the energy, force and stress terms of the loss."""

    energy: float
    force: float
    stress: float


def loss_terms(model: HDNNP, b: TrainingBatch, w: LossWeights) -> torch.Tensor:
    """The weighted loss of a batch (docs/training.md)."""
    want_f = w.force > 0 and bool(b.force_mask.any())
    want_s = w.stress > 0 and bool(b.stress_mask.any())
    E, F, S = predict_batch(model, b, forces=want_f, stress=want_s)
    ws = b.weight
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
