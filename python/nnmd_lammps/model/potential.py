"""Evaluating a model on structures: energies, forces, stress (eV, Angstrom).

Structures -> :func:`make_batch` (neighbour list, displacement vectors) ->
:class:`~nnmd_lammps.descriptors.DescriptorCalculator` -> element networks (energies and
dE/dG) -> :func:`~nnmd_lammps.descriptors.forces_and_virial`. With the default (C++
operator) backend no dG/dd is formed: forces and virials are contracted from dE/dG by the
kernels, as in LAMMPS; a committee's members are contracted in one call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from ..descriptors.calculator import DescriptorCalculator, DescriptorValues, pair_tensors
from ..descriptors.contraction import forces_and_virial, member_forces
from ..descriptors.extrapolation import Extrapolation, TrainingRange, extrapolation
from ..descriptors.neighbors import neighbor_pairs
from ..descriptors.spec import DescriptorSpec, atomic_number
from ..errors import NNMDError
from .modelfile import description_from_metadata, load_model
from .networks import ModelDescription


@dataclass
class Prediction:
    """Result for one structure. ``virial``: 3x3, eV, LAMMPS convention
    W = -sum_pairs d ⊗ dE/dd; ``stress``: 3x3, eV/Angstrom^3, ASE convention (-W/V), None
    unless the structure is periodic in all three directions; ``atomic_virials``
    (N, 3, 3) only when asked for.

    Trust (docs/uncertainty.md): ``extrapolation_count`` (N,) number of symmetry functions
    outside the training range, ``extrapolation_excursion`` (N,) the largest excursion in
    units of the range width, ``extrapolation_worst`` (N,) the index of that function (all
    None when the model has no training range); ``force_deviation`` (N,) eV/Angstrom and
    ``energy_deviation`` (N,) eV: the committee's per-atom standard deviations, with
    ``max_force_deviation`` the frame's largest (None unless asked for with a committee)."""

    energy: float
    atomic_energies: np.ndarray
    forces: np.ndarray | None
    virial: np.ndarray | None
    stress: np.ndarray | None
    atomic_virials: np.ndarray | None = None
    extrapolation_count: np.ndarray | None = None
    extrapolation_excursion: np.ndarray | None = None
    extrapolation_worst: np.ndarray | None = None
    force_deviation: np.ndarray | None = None
    energy_deviation: np.ndarray | None = None
    max_force_deviation: float | None = None


def species_indices(structures: Sequence[Atoms], elements: list[str]) -> np.ndarray:
    index = {e: i for i, e in enumerate(elements)}
    out = []
    for k, atoms in enumerate(structures):
        syms = atoms.get_chemical_symbols()
        missing = sorted(set(syms) - set(index))
        if missing:
            raise NNMDError(
                f"structure {k} contains element(s) {', '.join(missing)} that the "
                f"model does not describe (model elements: {', '.join(elements)})"
            )
        out.append(np.array([index[s] for s in syms], dtype=np.int64))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


@dataclass
class StructureBatch:
    """Structures packed for descriptor evaluation: atoms of all structures in one list,
    their full neighbour list and displacement vectors."""

    n_atoms: list[int]
    species: torch.Tensor
    positions: torch.Tensor
    cells: torch.Tensor
    centers: torch.Tensor
    neighbors: torch.Tensor
    vectors: torch.Tensor
    owner: torch.Tensor  # structure index of each atom


def make_batch(
    structures: Sequence[Atoms],
    elements: list[str],
    cutoff: float,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> StructureBatch:
    species = torch.from_numpy(species_indices(structures, elements)).to(device)
    pairs = neighbor_pairs(structures, cutoff)
    pos = torch.from_numpy(
        np.concatenate([a.get_positions() for a in structures]).reshape(-1, 3)
    ).to(device=device, dtype=dtype)
    cells = torch.from_numpy(
        np.stack([np.asarray(a.get_cell()) for a in structures]).reshape(-1, 3, 3)
    ).to(device=device, dtype=dtype)
    i, j, d = pair_tensors(pairs, pos, cells)
    counts = [len(a) for a in structures]
    owner = torch.repeat_interleave(
        torch.arange(len(structures), device=device), torch.tensor(counts, device=device)
    )
    return StructureBatch(counts, species, pos, cells, i, j, d, owner)


def _plain_execution():
    """TorchScript without the profiling executor's optimisation passes: they cost about
    0.2 s on the first call of each network and gain nothing on these small MLPs (the
    networks are a few per cent of an evaluation)."""
    return torch.jit.optimized_execution(False)


def values_need_jacobian(calculator: DescriptorCalculator) -> bool:
    """Whether forces from ``calculator``'s descriptors need the dense dG/dd (the torch
    backend) or are contracted by the operator (the ops backend)."""
    return calculator.backend == "torch"


class Potential:
    """A model ready for prediction: descriptor calculator, element networks (a committee's
    mean), the optional repulsion baseline and the training range.

    ``network`` is anything with ``energy_and_gradient(element, G)`` (the scripted
    module of a model file, or an :class:`~nnmd_lammps.model.networks.HDNNP` during
    training); for uncertainties also ``committee_energy_and_gradient``. ``backend``: the
    descriptor backend (:class:`~nnmd_lammps.descriptors.DescriptorCalculator`; default:
    the C++ operators when available)."""

    def __init__(
        self,
        spec: DescriptorSpec,
        network,
        metadata: dict | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        description: ModelDescription | None = None,
        backend: str | None = None,
    ) -> None:
        self.spec = spec
        self.network = network
        self.metadata = metadata or {}
        if description is None and metadata:
            description = description_from_metadata(metadata)
        self.description = description
        self.device = torch.device(device)
        self.dtype = dtype
        self.calculator = DescriptorCalculator(
            spec, dtype=dtype, device=self.device, backend=backend
        )

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "cpu", backend: str | None = None
    ) -> Potential:
        m = load_model(path, device)
        return cls(m.spec, m.module, m.metadata, device=device, backend=backend)

    @property
    def elements(self) -> list[str]:
        return self.spec.elements

    @property
    def cutoff(self) -> float:
        """The neighbour-list cutoff (Angstrom): symmetry functions and repulsion."""
        rep = self.repulsion
        return max(self.spec.cutoff, rep.outer) if rep is not None else self.spec.cutoff

    @property
    def committee_size(self) -> int:
        return self.description.committee if self.description is not None else 1

    @property
    def training_range(self) -> dict[str, TrainingRange] | None:
        return self.description.training_range if self.description is not None else None

    @property
    def repulsion(self):
        """The repulsion baseline (:class:`~nnmd_lammps.model.repulsion.ZBLRepulsion`) or
        None."""
        if self.description is None or self.description.repulsion is None:
            return None
        from .repulsion import ZBLRepulsion

        return ZBLRepulsion.from_dict(self.description.repulsion)

    def descriptors_of(
        self, structures: Sequence[Atoms], derivatives: bool = True
    ) -> tuple[StructureBatch, DescriptorValues]:
        """The batch of ``structures`` and its descriptors (``derivatives``: with the
        dense dG/dd)."""
        batch = make_batch(structures, self.elements, self.cutoff, self.dtype, self.device)
        values = self.calculator.compute(
            batch.species, batch.centers, batch.neighbors, batch.vectors, derivatives=derivatives
        )
        return batch, values

    def evaluate(
        self,
        structures: Sequence[Atoms],
        forces: bool = True,
        stress: bool = True,
        atomic_virials: bool = False,
        max_batch_atoms: int = 4000,
        uncertainty: bool = False,
    ) -> list[Prediction]:
        """Predict every structure (batched, at most ``max_batch_atoms`` atoms per batch
        unless a single structure is larger). ``uncertainty``: also the committee's
        per-atom force and energy deviations (one extra force pass per member)."""
        if uncertainty and self.committee_size < 2:
            raise NNMDError(
                "uncertainty needs a committee model (network.committee >= 2); this model "
                "has a single network per element"
            )
        results: list[Prediction] = []
        start = 0
        while start < len(structures):
            stop, natoms = start, 0
            while stop < len(structures) and (
                stop == start or natoms + len(structures[stop]) <= max_batch_atoms
            ):
                natoms += len(structures[stop])
                stop += 1
            results.extend(
                self._evaluate_batch(
                    structures[start:stop],
                    forces or stress or uncertainty,
                    stress,
                    atomic_virials,
                    uncertainty,
                )
            )
            start = stop
        return results

    @torch.no_grad()
    def _evaluate_batch(
        self,
        structures: Sequence[Atoms],
        derivatives: bool,
        want_stress: bool,
        atomic_virials: bool,
        uncertainty: bool,
    ) -> list[Prediction]:
        # the operator backend contracts dE/dG without dG/dd; the torch one needs it
        dense = derivatives and values_need_jacobian(self.calculator)
        batch, values = self.descriptors_of(structures, dense)
        n = values.n_atoms
        opts = {"dtype": self.dtype, "device": self.device}
        e_atom = torch.zeros(n, **opts)
        grads = []
        member_e = torch.zeros((self.committee_size, n), **opts) if uncertainty else None
        member_grads = []
        for e in range(len(self.elements)):
            with _plain_execution():
                energy, grad, energies_m, grads_m = self._networks(e, values.G[e], uncertainty)
            if uncertainty:
                member_e[:, values.atoms[e]] = energies_m
                member_grads.append(grads_m)
            e_atom[values.atoms[e]] = energy
            grads.append(grad)
        nstruct = len(structures)
        f = w_struct = w_lmp = None
        if derivatives:
            # each pair's virial goes straight to its structure
            c = forces_and_virial(
                values,
                grads,
                n,
                virial_rows=[batch.owner[i] for i in values.pair_i],
                n_virial_rows=nstruct,
                atom_virial=atomic_virials,
            )
            f, w_struct, w_lmp = c.forces, c.virial, c.atom_virial
        f_dev = e_dev = None
        if uncertainty:
            member_f = member_forces(values, member_grads, n)
            f_dev = ((member_f - member_f.mean(0)) ** 2).sum(2).mean(0).sqrt()
            e_dev = ((member_e - member_e.mean(0)) ** 2).mean(0).sqrt()
        rep = self.repulsion
        if rep is not None:
            numbers = torch.tensor([atomic_number(x) for x in self.elements], device=self.device)[
                batch.species
            ]
            r = rep.evaluate(
                numbers,
                batch.centers,
                batch.neighbors,
                batch.vectors,
                n,
                virial_rows=batch.owner[batch.centers],
                n_virial_rows=nstruct,
                atom_virial=atomic_virials,
            )
            e_atom = e_atom + r.energies
            if derivatives:
                f = f + r.forces
                w_struct = w_struct + r.virial
                if w_lmp is not None:
                    w_lmp = w_lmp + r.atom_virial
        extrap = self._extrapolation(values, n)
        energies = torch.zeros(nstruct, **opts)
        energies.index_add_(0, batch.owner, e_atom)
        virials = w_struct

        def part(x: torch.Tensor | None, sl: slice) -> np.ndarray | None:
            return None if x is None else x[sl].cpu().numpy()

        out = []
        offset = 0
        for k, atoms in enumerate(structures):
            sl = slice(offset, offset + len(atoms))
            offset += len(atoms)
            periodic = bool(np.all(atoms.get_pbc()))
            vir = virials[k].cpu().numpy() if virials is not None else None
            vir_out = str_out = None
            if vir is not None:
                vir_out = 0.5 * (vir + vir.T)
                if want_stress and periodic:
                    str_out = -vir_out / atoms.get_volume()
            fd = part(f_dev, sl)
            out.append(
                Prediction(
                    energy=float(energies[k]),
                    atomic_energies=e_atom[sl].cpu().numpy(),
                    forces=part(f, sl),
                    virial=vir_out,
                    stress=str_out,
                    atomic_virials=part(w_lmp, sl),
                    extrapolation_count=None if extrap is None else part(extrap.count, sl),
                    extrapolation_excursion=None if extrap is None else part(extrap.excursion, sl),
                    extrapolation_worst=None if extrap is None else part(extrap.worst, sl),
                    force_deviation=fd,
                    energy_deviation=part(e_dev, sl),
                    max_force_deviation=None if fd is None else float(fd.max(initial=0.0)),
                )
            )
        return out

    def _networks(self, e: int, G: torch.Tensor, committee: bool) -> tuple:
        """Energies and dE/dG of element e's atoms (the committee mean), and with
        ``committee`` each member's (else None, None)."""
        if committee:
            energies_m, grads_m = self.network.committee_energy_and_gradient(e, G)
            return energies_m.mean(0), grads_m.mean(0), energies_m, grads_m
        energy, grad = self.network.energy_and_gradient(e, G)
        return energy, grad, None, None

    def _extrapolation(self, values: DescriptorValues, n: int) -> Extrapolation | None:
        ranges = self.training_range
        if ranges is None:
            return None
        count = torch.zeros(n, dtype=torch.long, device=self.device)
        excursion = torch.zeros(n, dtype=self.dtype, device=self.device)
        worst = torch.zeros(n, dtype=torch.long, device=self.device)
        for e, element in enumerate(self.elements):
            x = extrapolation(values.G[e], ranges[element])
            count[values.atoms[e]] = x.count
            excursion[values.atoms[e]] = x.excursion
            worst[values.atoms[e]] = x.worst
        return Extrapolation(count, excursion, worst)
