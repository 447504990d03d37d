"""Evaluating a model on structures: energies, forces, stress (eV, Angstrom).

Structures -> :func:`make_batch` (neighbour list, displacement vectors) ->
:class:`~nnmd_lammps.descriptors.DescriptorCalculator` -> element networks (energies and
dE/dG) -> :func:`~nnmd_lammps.descriptors.forces_and_virial`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from ..descriptors.calculator import DescriptorCalculator, DescriptorValues, pair_tensors
from ..descriptors.contraction import forces_and_virial
from ..descriptors.neighbors import neighbor_pairs
from ..descriptors.spec import DescriptorSpec
from ..errors import NNMDError
from .modelfile import load_model


@dataclass
class Prediction:
    """Result for one structure. ``virial``: 3x3, eV, LAMMPS convention
    W = -sum_pairs d ⊗ dE/dd; ``stress``: 3x3, eV/Angstrom^3, ASE convention (-W/V), None
    unless the structure is periodic in all three directions; ``atomic_virials``
    (N, 3, 3) only when asked for."""

    energy: float
    atomic_energies: np.ndarray
    forces: np.ndarray | None
    virial: np.ndarray | None
    stress: np.ndarray | None
    atomic_virials: np.ndarray | None = None


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


class Potential:
    """A model ready for prediction: descriptor calculator + element networks.

    ``network`` is anything with ``energy_and_gradient(element, G)`` (the scripted
    module of a model file, or an :class:`~nnmd_lammps.model.networks.HDNNP` during
    training)."""

    def __init__(
        self,
        spec: DescriptorSpec,
        network,
        metadata: dict | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.spec = spec
        self.network = network
        self.metadata = metadata or {}
        self.device = torch.device(device)
        self.dtype = dtype
        self.calculator = DescriptorCalculator(spec, dtype=dtype, device=self.device)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Potential:
        m = load_model(path, device)
        return cls(m.spec, m.module, m.metadata, device=device)

    @property
    def elements(self) -> list[str]:
        return self.spec.elements

    @property
    def cutoff(self) -> float:
        return self.spec.cutoff

    def descriptors_of(
        self, structures: Sequence[Atoms], derivatives: bool = True
    ) -> tuple[StructureBatch, DescriptorValues]:
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
    ) -> list[Prediction]:
        """Predict every structure (batched, at most ``max_batch_atoms`` atoms per batch
        unless a single structure is larger)."""
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
                    structures[start:stop], forces or stress, stress, atomic_virials
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
    ) -> list[Prediction]:
        batch, values = self.descriptors_of(structures, derivatives)
        n = values.n_atoms
        e_atom = torch.zeros(n, dtype=self.dtype, device=self.device)
        grads = []
        for e in range(len(self.elements)):
            energy, grad = self.network.energy_and_gradient(e, values.G[e])
            e_atom[values.atoms[e]] = energy
            grads.append(grad)
        f = w_atom = w_lmp = None
        if derivatives:
            c = forces_and_virial(
                values,
                grads,
                n,
                virial_rows=values.pair_i,
                n_virial_rows=n,
                atom_virial=atomic_virials,
            )
            f, w_atom, w_lmp = c.forces, c.virial, c.atom_virial
        nstruct = len(structures)
        energies = torch.zeros(nstruct, dtype=self.dtype, device=self.device)
        energies.index_add_(0, batch.owner, e_atom)
        virials = None
        if w_atom is not None:
            virials = torch.zeros((nstruct, 3, 3), dtype=self.dtype, device=self.device)
            virials.index_add_(0, batch.owner, w_atom)
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
            out.append(
                Prediction(
                    energy=float(energies[k]),
                    atomic_energies=e_atom[sl].cpu().numpy(),
                    forces=None if f is None else f[sl].cpu().numpy(),
                    virial=vir_out,
                    stress=str_out,
                    atomic_virials=None if w_lmp is None else w_lmp[sl].cpu().numpy(),
                )
            )
        return out
