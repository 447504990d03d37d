"""The HDNNP: one network per element, the descriptor scaling layer and the energy
output transform (docs/symmetry_functions.md sections 4-6).

Everything here is TorchScript-compatible: the exported model file is
``torch.jit.script(HDNNP)`` (see :mod:`nnmd_lammps.modelfile`). Besides ``forward``
(atomic energies, differentiable by autograd, used in training) every network has
``energy_and_gradient``, which returns atomic energies and dE/dG by explicit
backpropagation (no autograd graph), used by the prediction code and by LAMMPS.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..descriptors.extrapolation import TrainingRange
from ..errors import NNMDError
from ..limits import ACTIVATION_EXP_LIMIT

Tensor = torch.Tensor

#: Activation names and their n2p2 letters.
ACTIVATIONS = {
    "identity": "l",
    "tanh": "t",
    "sigmoid": "s",
    "softplus": "p",
    "shifted_softplus": None,
    "silu": None,
}
N2P2_ACTIVATIONS = {v: k for k, v in ACTIVATIONS.items() if v is not None}

#: Descriptor scaling variants (docs section 4).
SCALING_TYPES = ("none", "scale", "center", "scale_center", "sigma")


def activation(name: str, x: Tensor, limit: float = ACTIVATION_EXP_LIMIT) -> tuple[Tensor, Tensor]:
    """f(x) and f'(x) with n2p2's definitions (docs section 5); beyond |x| > ``limit``
    the logistic and softplus functions are saturated. (The limit is an argument with a
    default because TorchScript cannot read module globals.)"""
    if name == "identity":
        return x, torch.ones_like(x)
    if name == "tanh":
        y = torch.tanh(x)
        return y, 1.0 - y * y
    if name == "sigmoid":
        s = torch.sigmoid(x)
        y = torch.where(
            x > limit, torch.ones_like(x), torch.where(x < -limit, torch.zeros_like(x), s)
        )
        dy = torch.where(x.abs() > limit, torch.zeros_like(x), s * (1.0 - s))
        return y, dy
    if name == "softplus" or name == "shifted_softplus":
        xc = x.clamp(min=-limit, max=limit)
        sp = torch.log1p(torch.exp(xc))
        y = torch.where(x > limit, x, torch.where(x < -limit, torch.zeros_like(x), sp))
        s = torch.sigmoid(x)
        dy = torch.where(
            x > limit, torch.ones_like(x), torch.where(x < -limit, torch.zeros_like(x), s)
        )
        if name == "shifted_softplus":
            y = y - math.log(2.0)
        return y, dy
    if name == "silu":
        s = torch.sigmoid(x)
        return x * s, s * (1.0 + x * (1.0 - s))
    raise RuntimeError("unknown activation " + name)


@dataclass
class ScalingParams:
    """Affine descriptor scaling of one element: G_s = (G - shift) * factor + target."""

    type: str
    smin: float
    smax: float
    gmin: list[float]
    gmax: list[float]
    gmean: list[float]
    gsigma: list[float]

    def affine(self) -> tuple[list[float], list[float], list[float]]:
        n = len(self.gmin)
        if self.type == "none":
            return [0.0] * n, [1.0] * n, [0.0] * n
        if self.type == "center":
            return list(self.gmean), [1.0] * n, [0.0] * n
        width = self.smax - self.smin
        if self.type == "scale":
            den, shift = [a - b for a, b in zip(self.gmax, self.gmin, strict=True)], self.gmin
        elif self.type == "scale_center":
            den, shift = [a - b for a, b in zip(self.gmax, self.gmin, strict=True)], self.gmean
        elif self.type == "sigma":
            den, shift = list(self.gsigma), self.gmean
        else:
            raise NNMDError(f"unknown scaling type {self.type!r}; known: {SCALING_TYPES}")
        for k, v in enumerate(den):
            if not (v > 0.0 and math.isfinite(v)):
                raise NNMDError(
                    f"symmetry function {k + 1} cannot be scaled ({self.type}): its "
                    f"{'sigma' if self.type == 'sigma' else 'range max - min'} is {v!r}"
                )
        return list(shift), [width / v for v in den], [self.smin] * n

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def identity(cls, n: int) -> "ScalingParams":
        return cls("none", 0.0, 1.0, [0.0] * n, [1.0] * n, [0.0] * n, [1.0] * n)


@dataclass
class NetworkSpec:
    """Architecture of one element network."""

    layers: list[int]  # widths, input first, 1 last
    activations: list[str]  # one per non-input layer
    normalize_nodes: bool = False

    def validate(self, element: str) -> None:
        if len(self.layers) < 2 or self.layers[-1] != 1 or min(self.layers) < 1:
            raise NNMDError(
                f"network {element}: layer widths {self.layers} invalid (need input, hidden..., 1)"
            )
        if len(self.activations) != len(self.layers) - 1:
            raise NNMDError(
                f"network {element}: {len(self.activations)} activations for "
                f"{len(self.layers) - 1} layers"
            )
        for a in self.activations:
            if a not in ACTIVATIONS:
                raise NNMDError(
                    f"network {element}: unknown activation {a!r}; known: {', '.join(ACTIVATIONS)}"
                )


class ElementNetwork(nn.Module):
    """Scaling layer + MLP + energy transform for one element."""

    activations: list[str]
    normalize_nodes: bool
    fan_in: list[float]

    def __init__(
        self,
        spec: NetworkSpec,
        scaling: ScalingParams,
        energy_scale: float,
        energy_shift: float,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        self.linears = nn.ModuleList(
            [
                nn.Linear(a, b, dtype=dtype)
                for a, b in zip(spec.layers[:-1], spec.layers[1:], strict=True)
            ]
        )
        self.activations = list(spec.activations)
        self.normalize_nodes = bool(spec.normalize_nodes)
        self.fan_in = [float(a) for a in spec.layers[:-1]]
        shift, factor, target = scaling.affine()
        self.register_buffer("g_shift", torch.tensor(shift, dtype=dtype))
        self.register_buffer("g_factor", torch.tensor(factor, dtype=dtype))
        self.register_buffer("g_target", torch.tensor(target, dtype=dtype))
        self.register_buffer("e_scale", torch.tensor(float(energy_scale), dtype=dtype))
        self.register_buffer("e_shift", torch.tensor(float(energy_shift), dtype=dtype))

    def scaled_input(self, g: Tensor) -> Tensor:
        return (g - self.g_shift) * self.g_factor + self.g_target

    def forward(self, g: Tensor) -> Tensor:
        """Atomic energies (eV) of rows of raw symmetry functions ``g`` (n, S)."""
        y = self.scaled_input(g)
        k = 0
        for lin in self.linears:
            z = lin(y)
            if self.normalize_nodes:
                z = z / self.fan_in[k]
            y, _ = activation(self.activations[k], z)
            k += 1
        return y[:, 0] * self.e_scale + self.e_shift

    @torch.jit.export
    def energy_and_gradient(self, g: Tensor) -> tuple[Tensor, Tensor]:
        """Atomic energies (n,) and dE/dG (n, S) by explicit backpropagation."""
        y = self.scaled_input(g)
        derivs: list[Tensor] = []
        weights: list[Tensor] = []
        k = 0
        for lin in self.linears:
            z = torch.nn.functional.linear(y, lin.weight, lin.bias)
            if self.normalize_nodes:
                z = z / self.fan_in[k]
            y, dy = activation(self.activations[k], z)
            derivs.append(dy)
            weights.append(lin.weight)
            k += 1
        energy = y[:, 0] * self.e_scale + self.e_shift
        grad = derivs[-1] * self.e_scale  # dE/dz of the output layer, (n, 1)
        for k2 in range(len(derivs) - 1, -1, -1):
            if self.normalize_nodes:
                grad = grad / self.fan_in[k2]
            grad = grad.matmul(weights[k2])
            if k2 > 0:
                grad = grad * derivs[k2 - 1]
        return energy, grad * self.g_factor

    @torch.jit.export
    def committee_energy_and_gradient(self, g: Tensor) -> tuple[Tensor, Tensor]:
        """The single network as a committee of one: (1, n) and (1, n, S)."""
        energy, grad = self.energy_and_gradient(g)
        return energy.unsqueeze(0), grad.unsqueeze(0)

    @torch.jit.export
    def member_energies(self, g: Tensor) -> Tensor:
        return self.forward(g).unsqueeze(0)


class ElementCommittee(nn.Module):
    """A committee of M networks for one element, all on the same scaled descriptors
    (docs/uncertainty.md): the energy and dE/dG are the members' means."""

    def __init__(self, members: list[ElementNetwork]) -> None:
        super().__init__()
        if len(members) < 2:
            raise NNMDError("a committee needs at least 2 members")
        self.members = nn.ModuleList(members)

    def forward(self, g: Tensor) -> Tensor:
        """Mean atomic energies (eV) of rows of raw symmetry functions ``g`` (n, S)."""
        return self.member_energies(g).mean(0)

    @torch.jit.export
    def member_energies(self, g: Tensor) -> Tensor:
        """Atomic energies of every member (M, n), differentiable by autograd."""
        return torch.stack([m(g) for m in self.members])

    @torch.jit.export
    def energy_and_gradient(self, g: Tensor) -> tuple[Tensor, Tensor]:
        energy, grad = self.committee_energy_and_gradient(g)
        return energy.mean(0), grad.mean(0)

    @torch.jit.export
    def committee_energy_and_gradient(self, g: Tensor) -> tuple[Tensor, Tensor]:
        """Every member's atomic energies (M, n) and dE/dG (M, n, S)."""
        energies: list[Tensor] = []
        grads: list[Tensor] = []
        for m in self.members:
            e, dg = m.energy_and_gradient(g)
            energies.append(e)
            grads.append(dg)
        return torch.stack(energies), torch.stack(grads)


class HDNNP(nn.Module):
    """All element networks of a model; element ``e`` is the index into ``elements``.
    Each element has one :class:`ElementNetwork` or, in a committee model, one
    :class:`ElementCommittee` of ``committee`` members."""

    elements: list[str]
    committee: int

    def __init__(self, elements: list[str], networks: list[nn.Module]) -> None:
        super().__init__()
        if len(elements) != len(networks):
            raise NNMDError("one network per element is required")
        sizes = {len(n.members) if isinstance(n, ElementCommittee) else 1 for n in networks}
        if len(sizes) != 1:
            raise NNMDError("every element needs the same committee size")
        self.elements = list(elements)
        self.committee = sizes.pop()
        self.networks = nn.ModuleList(networks)

    def forward(self, element: int, g: Tensor) -> Tensor:
        """Atomic energies (eV) of atoms of element index ``element`` (committee mean)."""
        out = torch.zeros(0, dtype=g.dtype, device=g.device)
        i = 0
        for net in self.networks:
            if i == element:
                out = net(g)
            i += 1
        return out

    @torch.jit.export
    def energy_and_gradient(self, element: int, g: Tensor) -> tuple[Tensor, Tensor]:
        """Atomic energies (n,) and dE/dG (n, S) of atoms of element index ``element``
        (the committee mean for a committee)."""
        out = (torch.zeros(0, dtype=g.dtype, device=g.device), torch.zeros_like(g))
        i = 0
        for net in self.networks:
            if i == element:
                out = net.energy_and_gradient(g)
            i += 1
        return out

    @torch.jit.export
    def committee_energy_and_gradient(self, element: int, g: Tensor) -> tuple[Tensor, Tensor]:
        """Every committee member's atomic energies (M, n) and dE/dG (M, n, S)."""
        out = (
            torch.zeros((0, g.shape[0]), dtype=g.dtype, device=g.device),
            torch.zeros((0, g.shape[0], g.shape[1]), dtype=g.dtype, device=g.device),
        )
        i = 0
        for net in self.networks:
            if i == element:
                out = net.committee_energy_and_gradient(g)
            i += 1
        return out

    @torch.jit.export
    def committee_size(self) -> int:
        return self.committee

    @torch.jit.export
    def num_elements(self) -> int:
        return len(self.elements)


@dataclass
class ModelDescription:
    """Everything needed to rebuild the networks, also stored in the model file:
    per element the network architecture, the descriptor scaling and (optionally) the
    training range of the descriptors; the energy transform; the committee size; the
    repulsion baseline (the metadata dict of :mod:`.repulsion`, or None)."""

    networks: dict[str, NetworkSpec] = field(default_factory=dict)
    scaling: dict[str, ScalingParams] = field(default_factory=dict)
    energy_scale: float = 1.0
    energy_shift: dict[str, float] = field(default_factory=dict)
    committee: int = 1
    training_range: dict[str, TrainingRange] | None = None
    repulsion: dict[str, Any] | None = None


def build_hdnnp(
    elements: list[str], desc: ModelDescription, dtype: torch.dtype = torch.float64
) -> HDNNP:
    """The networks of ``desc`` with fresh weights (torch's initialisation, drawn element
    by element and member by member from torch's global generator)."""
    if desc.committee < 1:
        raise NNMDError(f"network.committee must be >= 1, got {desc.committee}")
    nets: list[nn.Module] = []
    for e in elements:
        spec = desc.networks[e]
        spec.validate(e)
        members = [
            ElementNetwork(
                spec, desc.scaling[e], desc.energy_scale, desc.energy_shift.get(e, 0.0), dtype=dtype
            )
            for _ in range(desc.committee)
        ]
        nets.append(members[0] if desc.committee == 1 else ElementCommittee(members))
    return HDNNP(elements, nets)


def element_members(module: nn.Module, element: int) -> list[nn.Module]:
    """The member networks (ElementNetwork) of one element of an HDNNP or scripted model."""
    net = module.networks[element]
    return list(net.members) if hasattr(net, "members") else [net]
