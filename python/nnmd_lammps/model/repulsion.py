"""Short-range repulsion baseline: the ZBL universal screened Coulomb pair energy, switched
off between two radii exactly as LAMMPS's ``pair_style zbl inner outer`` does.

Units: eV, Angstrom, elementary charges. For atoms with atomic numbers Z_i, Z_j at
distance r (Ziegler, Biersack and Littmark, *The Stopping and Range of Ions in Matter*,
1985):

    phi(r)  = K Z_i Z_j / r * sum_k c_k exp(-d_k r / a),   a = a0 / (Z_i^p + Z_j^p)

with K = e^2 / (4 pi eps0) in LAMMPS's metal units. LAMMPS adds a switching polynomial in
t = r - inner that makes the energy and its first two derivatives vanish at ``outer``:

    E(r) = phi(r) + C + [r > inner] t^3 (A/3 + B/4 t)         (r < outer)
    E(r) = 0                                                   (r >= outer)

with, for tc = outer - inner and phi, phi', phi'' taken at ``outer``,

    A = (-3 phi' + tc phi'') / tc^2,  B = (2 phi' - tc phi'') / tc^3,
    C = -phi + tc/2 phi' - tc^2/12 phi''.

Inside ``inner`` the energy is the bare ZBL energy shifted by the constant C. The pair
energy is shared half and half between the two atoms. The C++ twin is
``lammps_plugin/kernels/zbl.{h,cpp}``; both equal LAMMPS's ``pair_style zbl``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import NNMDError

Tensor = torch.Tensor

#: e^2 / (4 pi eps0) in eV Angstrom: LAMMPS's ``force->qqr2e`` for ``units metal`` (the
#: elementary charge ``qelectron`` is 1 there). Not the CODATA value 14.3996454...: we use
#: LAMMPS's constant so that our energies equal ``pair_style zbl``.
COULOMB_CONSTANT = 14.399645

#: Screening-length constant a0 (Angstrom) of the ZBL universal screening length
#: a = a0 / (Z_i^p + Z_j^p) (LAMMPS ``PairZBLConstants::a0``; 0.8854 times the Bohr radius).
ZBL_SCREENING_LENGTH = 0.46850

#: Exponent p of the atomic numbers in the screening length (LAMMPS ``pzbl``).
ZBL_EXPONENT = 0.23

#: Amplitudes c_1..c_4 of the universal screening function (LAMMPS ``c1``..``c4``).
ZBL_COEFFICIENTS = (0.02817, 0.28022, 0.50986, 0.18175)

#: Decay constants d_1..d_4 of the universal screening function, in units of 1/a
#: (LAMMPS ``d1``..``d4``).
ZBL_DECAYS = (0.20162, 0.40290, 0.94229, 3.19980)

#: The only repulsion type that model files and configurations know.
REPULSION_TYPES = ("zbl",)


def _as_charge(z: Tensor | int, like: Tensor) -> Tensor:
    """An atomic number (int or per-pair tensor) as a float tensor beside ``like``."""
    return torch.as_tensor(z, dtype=like.dtype, device=like.device)


def _screened_coulomb(
    r: Tensor, zz: Tensor, inv_a: Tensor, order: int
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The bare ZBL energy phi(r) (eV), phi' (eV/Angstrom) and, if ``order`` is 2, phi''
    (eV/Angstrom^2). ``zz`` = K Z_i Z_j (eV Angstrom), ``inv_a`` = 1/a (1/Angstrom)."""
    s = torch.zeros_like(r + inv_a)  # screening sum and its r-derivatives (broadcast shape)
    s1 = torch.zeros_like(s)
    s2 = torch.zeros_like(s) if order == 2 else None
    for c, d in zip(ZBL_COEFFICIENTS, ZBL_DECAYS, strict=True):
        k = d * inv_a
        term = c * torch.exp(-k * r)
        s = s + term
        s1 = s1 - k * term
        if s2 is not None:
            s2 = s2 + k * k * term
    rinv = 1.0 / r
    phi = zz * s * rinv
    dphi = zz * (s1 - s * rinv) * rinv
    d2phi = None
    if s2 is not None:
        d2phi = zz * (s2 - 2.0 * s1 * rinv + 2.0 * s * rinv * rinv) * rinv
    return phi, dphi, d2phi


def zbl_pair(
    r: Tensor, z1: Tensor | int, z2: Tensor | int, inner: float, outer: float
) -> tuple[Tensor, Tensor]:
    """ZBL pair energy E(r) (eV) and dE/dr (eV/Angstrom) of LAMMPS's
    ``pair_style zbl inner outer`` (see the module docstring for the formula).

    ``r`` (Angstrom, > 0) is a float64 tensor of any shape; ``z1``, ``z2`` are atomic
    numbers, ints or tensors broadcastable against ``r``. ``inner`` < ``outer``
    (Angstrom) are the switching radii; E and dE/dr are 0 for r >= ``outer``.
    Differentiable in ``r`` (twice: d2E/dr2 is continuous, 0 at ``outer``)."""
    if not 0.0 < inner < outer:
        raise NNMDError(f"ZBL radii need 0 < inner < outer, got inner={inner}, outer={outer}")
    z1 = _as_charge(z1, r)
    z2 = _as_charge(z2, r)
    inv_a = (z1**ZBL_EXPONENT + z2**ZBL_EXPONENT) / ZBL_SCREENING_LENGTH
    zz = z1 * z2 * COULOMB_CONSTANT

    # switching coefficients from phi and its derivatives at the outer radius
    tc = outer - inner
    r_out = torch.full_like(inv_a, outer)
    fc, fcp, fcpp = _screened_coulomb(r_out, zz, inv_a, order=2)
    assert fcpp is not None
    sw_a = (-3.0 * fcp + tc * fcpp) / (tc * tc)
    sw_b = (2.0 * fcp - tc * fcpp) / (tc * tc * tc)
    sw_c = -fc + (tc / 2.0) * fcp - (tc * tc / 12.0) * fcpp

    phi, dphi, _ = _screened_coulomb(r, zz, inv_a, order=1)
    t = torch.clamp(r - inner, min=0.0)  # the polynomial acts only beyond inner
    energy = phi + sw_c + t * t * t * (sw_a / 3.0 + (sw_b / 4.0) * t)
    dedr = dphi + t * t * (sw_a + sw_b * t)
    inside = r < outer
    zero = torch.zeros((), dtype=energy.dtype, device=energy.device)
    return torch.where(inside, energy, zero), torch.where(inside, dedr, zero)


@dataclass
class RepulsionTerms:
    """Repulsion contributions (float64): ``energies`` (N,) eV per atom (half of each pair
    to each of its atoms); ``forces`` (N, 3) eV/Angstrom; ``virial`` (R, 3, 3) eV, LAMMPS
    convention W = -sum_pairs d ⊗ dE/dd, summed into the rows the caller chose (None
    without ``virial_rows``); ``atom_virial`` (N, 3, 3) eV, LAMMPS's per-atom virial (half
    of each pair's W to each atom; None unless asked for)."""

    energies: Tensor
    forces: Tensor
    virial: Tensor | None
    atom_virial: Tensor | None


def _check_radius(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NNMDError(f"'{key}' must be a number (Angstrom), got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise NNMDError(f"'{key}' must be a positive finite distance (Angstrom), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ZBLRepulsion:
    """The ZBL baseline with switching radii ``inner`` < ``outer`` (Angstrom); the model
    metadata entry ``{"type": "zbl", "inner": .., "outer": ..}``. The atomic numbers come
    from the model's elements. Invalid radii raise :class:`NNMDError` on construction."""

    inner: float
    outer: float

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise NNMDError naming ``repulsion.inner`` / ``repulsion.outer`` unless both are
        finite and 0 < inner < outer."""
        inner = _check_radius("repulsion.inner", self.inner)
        outer = _check_radius("repulsion.outer", self.outer)
        if not inner < outer:
            raise NNMDError(
                f"'repulsion.inner' ({inner}) must be smaller than 'repulsion.outer' ({outer})"
            )

    def to_dict(self) -> dict[str, Any]:
        """The model-metadata form."""
        return {"type": "zbl", "inner": float(self.inner), "outer": float(self.outer)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ZBLRepulsion:
        """Read the model-metadata form; unknown types, unknown or missing keys and bad
        radii raise NNMDError."""
        if not isinstance(data, Mapping):
            raise NNMDError(f"'repulsion' must be a mapping, got {data!r}")
        unknown = sorted(str(k) for k in set(data) - {"type", "inner", "outer"})
        if unknown:
            raise NNMDError(
                f"'repulsion' has unknown key(s) {', '.join(unknown)} (known: type, inner, outer)"
            )
        kind = data.get("type")
        if kind not in REPULSION_TYPES:
            raise NNMDError(
                f"'repulsion.type' must be one of {', '.join(REPULSION_TYPES)}, got {kind!r}"
            )
        for key in ("inner", "outer"):
            if key not in data:
                raise NNMDError(f"'repulsion.{key}' is missing")
        return cls(data["inner"], data["outer"])

    def pair(self, r: Tensor, z1: Tensor | int, z2: Tensor | int) -> tuple[Tensor, Tensor]:
        """:func:`zbl_pair` with these radii."""
        return zbl_pair(r, z1, z2, float(self.inner), float(self.outer))

    def evaluate(
        self,
        atomic_numbers: Tensor,
        pair_i: Tensor,
        pair_j: Tensor,
        pair_d: Tensor,
        n_atoms: int,
        virial_rows: Tensor | None = None,
        n_virial_rows: int = 0,
        *,
        atom_virial: bool = False,
    ) -> RepulsionTerms:
        """Repulsion energies, forces and virials from a FULL neighbour list.

        ``atomic_numbers`` (N,) int: Z of every atom; ``pair_i``, ``pair_j`` (P,) int: every
        ordered pair i -> j (both directions listed, periodic images allowed);
        ``pair_d`` (P, 3) Angstrom: d_ij = r_j - r_i. Each ordered pair carries half of its
        pair energy (to atom i), so each unordered pair's E(r) is counted once. Pairs at
        r >= ``outer`` contribute nothing. ``virial_rows`` (P,) says which of the
        ``n_virial_rows`` rows (atom, structure, ...) receives each pair's virial.
        Out-of-place operations only: differentiable in ``pair_d``."""
        dtype = torch.float64
        d_all = pair_d.to(dtype)
        opts = {"dtype": dtype, "device": d_all.device}
        rsq = (d_all * d_all).sum(dim=1)
        keep = torch.nonzero(rsq < self.outer * self.outer).squeeze(1)
        d = d_all.index_select(0, keep)
        i = pair_i.index_select(0, keep)
        j = pair_j.index_select(0, keep)
        r = torch.sqrt(rsq.index_select(0, keep))
        z = atomic_numbers.to(**opts)
        energy, dedr = self.pair(r, z.index_select(0, i), z.index_select(0, j))
        # the ordered pair's share: half the energy, v = d(E/2)/dd_ij
        v = (0.5 * dedr / r)[:, None] * d
        energies = torch.zeros(n_atoms, **opts).index_add(0, i, 0.5 * energy)
        forces = torch.zeros((n_atoms, 3), **opts).index_add(0, j, -v).index_add(0, i, v)
        w = w_atom = None
        if virial_rows is not None or atom_virial:
            pair_w = -d[:, :, None] * v[:, None, :]
            if virial_rows is not None:
                rows = virial_rows.index_select(0, keep)
                w = torch.zeros((n_virial_rows, 3, 3), **opts).index_add(0, rows, pair_w)
            if atom_virial:
                half = 0.5 * pair_w
                w_atom = torch.zeros((n_atoms, 3, 3), **opts).index_add(0, i, half)
                w_atom = w_atom.index_add(0, j, half)
        return RepulsionTerms(energies, forces, w, w_atom)


def default_zbl_radii(shortest_distance_angstrom: float) -> tuple[float, float]:
    """Default ``(inner, outer)`` (Angstrom) from the shortest interatomic distance in the
    training data.

    ``outer`` = the shortest training distance: the switched ZBL energy is exactly 0 for
    r >= outer (and its force and curvature go to 0 there), so the baseline vanishes on
    every training structure; the network is trained on the unchanged reference data and
    the repulsion acts only where atoms come closer than anything the network has seen.
    ``inner`` = outer / 2 leaves the switching polynomial a wide interval, so that it
    stays gentle, while below ``inner`` the pair energy is the pure (shifted) ZBL
    repulsion, which rises steeply as r falls."""
    value = shortest_distance_angstrom
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NNMDError(f"shortest training distance must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise NNMDError(f"shortest training distance must be positive and finite, got {value!r}")
    outer = float(value)
    return 0.5 * outer, outer
