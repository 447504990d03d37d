"""Extended Kalman filter for network weights (docs/training.md, "Kalman filter").

The weights w are the state of a filter whose measurements are the model's predictions
y(w) (energies, force components) of reference values t. One update with k measurements
and their Jacobian H = dy/dw (n x k), in the fading-memory form that n2p2 uses (Singraber
et al., J. Chem. Theory Comput. 15, 3075 (2019), after Shah, Palmieri and Datum 1992):

    A = H^T P H + lambda I_k            (k x k)
    K = P H A^-1                        (n x k)
    w <- w + K (t - y)
    P <- (P - K H^T P) / lambda + q I
    lambda <- nu lambda + 1 - nu        (the forgetting factor tends to 1)

With lambda = 1 and q = 0 this is recursive least squares: for a linear model a pass over
the data ends at the least-squares solution regularised by 1 / p0 (the test of this
module). Parameters can be split into groups with one P each (the decoupled EKF of
Puskorius and Feldkamp; n2p2's element-decoupled variant): the groups share A, so each
update still sees every group's contribution to the measurement, but memory and work
are sum_g n_g^2 instead of n^2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import NNMDError

Tensor = torch.Tensor


@dataclass
class KalmanSettings:
    """``p0``: initial P = p0 I; ``lambda0``/``nu``: forgetting factor and its approach to
    1; ``q0``/``q_min``/``q_decay``: process noise q, multiplied by ``q_decay`` after every
    update down to ``q_min``."""

    p0: float = 100.0
    lambda0: float = 0.98
    nu: float = 0.9987
    q0: float = 0.0
    q_min: float = 0.0
    q_decay: float = 1.0

    def validate(self, where: str = "training.kalman") -> None:
        if not self.p0 > 0:
            raise NNMDError(f"config key '{where}.p0' must be positive, got {self.p0!r}")
        if not 0 < self.lambda0 <= 1:
            raise NNMDError(
                f"config key '{where}.lambda0' must lie in (0, 1], got {self.lambda0!r}"
            )
        if not 0 <= self.nu <= 1:
            raise NNMDError(f"config key '{where}.nu' must lie in [0, 1], got {self.nu!r}")
        if self.q0 < 0 or self.q_min < 0:
            raise NNMDError(f"config keys '{where}.q0' and '.q_min' must be >= 0")
        if not 0 < self.q_decay <= 1:
            raise NNMDError(
                f"config key '{where}.q_decay' must lie in (0, 1], got {self.q_decay!r}"
            )


class KalmanFilter:
    """A decoupled extended Kalman filter over ``groups`` of parameters (each group: a list
    of tensors updated in place). P matrices are float64 whatever the parameters' dtype."""

    def __init__(self, groups: Sequence[Sequence[Tensor]], settings: KalmanSettings) -> None:
        settings.validate()
        self.groups = [list(g) for g in groups]
        if not self.groups or any(not g for g in self.groups):
            raise NNMDError("Kalman filter: every parameter group needs parameters")
        self.settings = settings
        self.sizes = [sum(p.numel() for p in g) for g in self.groups]
        dev = self.groups[0][0].device
        self.P = [settings.p0 * torch.eye(n, dtype=torch.float64, device=dev) for n in self.sizes]
        self.lam = settings.lambda0
        self.q = settings.q0
        self.updates = 0

    # -- one update -------------------------------------------------------------------------
    def jacobian(self, outputs: Tensor, retain_graph: bool = False) -> list[Tensor]:
        """H_g (n_g x k) of the k entries of ``outputs`` with respect to each group, by one
        backward pass per output."""
        return jacobians([self], outputs.reshape(1, -1), retain_graph)[0]

    @torch.no_grad()
    def update(self, H: Sequence[Tensor], error: Tensor) -> None:
        """Apply one update: ``H[g]`` (n_g x k) the Jacobian of the k measurements,
        ``error`` (k,) = target - prediction, both in the same (scaled) units."""
        s = self.settings
        err = error.reshape(-1).to(torch.float64)
        k = err.numel()
        if len(H) != len(self.groups) or any(
            h.shape != (n, k) for h, n in zip(H, self.sizes, strict=True)
        ):
            raise NNMDError("Kalman filter: Jacobian shapes do not match the parameter groups")
        PH = [P @ h for P, h in zip(self.P, H, strict=True)]
        A = sum(h.T @ ph for h, ph in zip(H, PH, strict=True))
        A = A + self.lam * torch.eye(k, dtype=torch.float64, device=A.device)
        A_inv = torch.linalg.inv(0.5 * (A + A.T))
        for gi, (g, ph) in enumerate(zip(self.groups, PH, strict=True)):
            K = ph @ A_inv  # n_g x k
            step = K @ err
            off = 0
            for p in g:
                n = p.numel()
                p.add_(step[off : off + n].reshape(p.shape).to(p.dtype))
                off += n
            P = (self.P[gi] - K @ ph.T) / self.lam
            if self.q > 0:
                P.diagonal().add_(self.q)
            self.P[gi] = 0.5 * (P + P.T)
        self.lam = s.nu * self.lam + 1.0 - s.nu
        self.q = max(self.q * s.q_decay, s.q_min)
        self.updates += 1

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "P": [P.clone() for P in self.P],
            "lambda": self.lam,
            "q": self.q,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        if [tuple(P.shape) for P in state["P"]] != [(n, n) for n in self.sizes]:
            raise NNMDError("Kalman filter state does not match the parameter groups")
        self.P = [P.to(torch.float64).clone() for P in state["P"]]
        self.lam = float(state["lambda"])
        self.q = float(state["q"])
        self.updates = int(state["updates"])


def jacobians(
    filters: Sequence[KalmanFilter], outputs: Tensor, retain_graph: bool = False
) -> list[list[Tensor]]:
    """For every filter f its H_g (n_g x k), the derivatives of row f of ``outputs`` (F, k)
    with respect to its groups, when row f depends on no other filter's parameters (the
    members of a committee): one backward pass per column for all filters together."""
    params = [p for f in filters for g in f.groups for p in g]
    k = outputs.shape[1]
    cols: list[list[list[Tensor]]] = [[[] for _ in f.groups] for f in filters]
    for c in range(k):
        grads = iter(
            torch.autograd.grad(
                outputs[:, c].sum(),
                params,
                retain_graph=retain_graph or c + 1 < k,
                allow_unused=True,
            )
        )
        for fi, f in enumerate(filters):
            for gi, g in enumerate(f.groups):
                parts = []
                for p in g:
                    d = next(grads)
                    parts.append(
                        torch.zeros(p.numel(), dtype=torch.float64, device=p.device)
                        if d is None
                        else d.reshape(-1).to(torch.float64)
                    )
                cols[fi][gi].append(torch.cat(parts))
    return [[torch.stack(c, dim=1) for c in per_group] for per_group in cols]
