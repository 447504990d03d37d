"""Training data as tensors: symmetry functions, their derivatives dG/dd and reference
values of structures, laid out so that each structure's atoms, rows and pairs are
contiguous.

Two ways to the same :class:`TrainingBatch`: :class:`TrainingData` computes the
descriptors of a whole data set once and cuts batches from them (fast steps, memory
growing with the data set: the "memory" mode), :func:`structure_batch` computes one batch
from the raw structures (the "stream" mode, :mod:`.streaming`)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from ..data.dataset import Dataset
from ..descriptors.calculator import DescriptorCalculator, DescriptorValues
from ..model.potential import make_batch


@dataclass
class TrainingBatch:
    """Structures of a training batch: reference values and per-element descriptor tensors
    (the pair fields are those of :class:`~nnmd_lammps.descriptors.DescriptorValues`)."""

    n_structures: int
    natoms: torch.Tensor  # (B,)
    energy: torch.Tensor  # (B,)
    weight: torch.Tensor  # (B,)
    forces: torch.Tensor  # (Nb, 3); rows of structures without forces are ignored
    force_mask: torch.Tensor  # (Nb,) bool
    atom_struct: torch.Tensor  # (Nb,)
    stress: torch.Tensor  # (B, 3, 3)
    stress_mask: torch.Tensor  # (B,) bool
    volume: torch.Tensor  # (B,)
    G: list[torch.Tensor]
    row_struct: list[torch.Tensor]
    pair_row: list[torch.Tensor]
    pair_i: list[torch.Tensor]
    pair_j: list[torch.Tensor]
    pair_d: list[torch.Tensor]
    pair_struct: list[torch.Tensor]
    dGdd: list[torch.Tensor]
    member_weight: torch.Tensor | None = None  # (M, B) committee bootstrap counts, or None

    def to(self, device: torch.device | str) -> TrainingBatch:
        """The batch on ``device`` (itself when it is there already)."""
        device = torch.device(device)
        if self.natoms.device == device:
            return self

        def mv(x):
            if isinstance(x, list):
                return [t.to(device) for t in x]
            return x.to(device) if isinstance(x, torch.Tensor) else x

        return TrainingBatch(*(mv(getattr(self, f.name)) for f in fields(self)))


@dataclass
class ReferenceArrays:
    """Reference values of structures ``sids`` of a data set, as numpy arrays: per
    structure ``natoms``, ``energy`` (eV), ``weight``, ``stress`` (B, 3, 3; eV/A^3, zero
    where absent) with ``stress_mask``, ``volume`` (A^3; 1 unless periodic in three
    directions); per atom ``forces`` (Nb, 3; eV/A, zero where absent) with
    ``force_mask``."""

    natoms: np.ndarray
    energy: np.ndarray
    weight: np.ndarray
    forces: np.ndarray
    force_mask: np.ndarray
    stress: np.ndarray
    stress_mask: np.ndarray
    volume: np.ndarray

    @classmethod
    def of(cls, data: Dataset, sids: np.ndarray | None = None) -> ReferenceArrays:
        idx = np.arange(len(data)) if sids is None else np.asarray(sids, dtype=np.int64)
        natoms = np.array([len(data.structures[k]) for k in idx], dtype=np.int64)
        off = np.concatenate([[0], np.cumsum(natoms)]).astype(np.int64)
        B = len(idx)
        forces = np.zeros((int(off[-1]), 3))
        mask = np.zeros(int(off[-1]), dtype=bool)
        stress = np.zeros((B, 3, 3))
        smask = np.zeros(B, dtype=bool)
        volume = np.ones(B)
        for n, k in enumerate(idx):
            a, b = off[n], off[n + 1]
            if data.forces[k] is not None:
                forces[a:b] = data.forces[k]
                mask[a:b] = True
            if data.stress[k] is not None:
                stress[n] = data.stress[k]
                smask[n] = True
            if np.all(data.structures[k].pbc):
                volume[n] = data.structures[k].get_volume()
        return cls(natoms, data.energy[idx], data.weight[idx], forces, mask, stress, smask, volume)


def chunk_ranges(natoms: np.ndarray, max_atoms: int) -> list[tuple[int, int]]:
    """Consecutive index ranges [start, stop) of at most ``max_atoms`` atoms in all (at
    least one structure each)."""
    out = []
    B = len(natoms)
    start = 0
    while start < B:
        stop, n = start, 0
        while stop < B and (stop == start or n + natoms[stop] <= max_atoms):
            n += natoms[stop]
            stop += 1
        out.append((start, stop))
        start = stop
    return out


@dataclass
class ChunkValues:
    """The fields of :class:`~nnmd_lammps.descriptors.DescriptorValues` that training
    keeps (per element: atoms, G, pair_row, pair_i, pair_j, pair_d, dGdd), plain tensors
    that can be sent between processes."""

    atoms: list[torch.Tensor]
    G: list[torch.Tensor]
    pair_row: list[torch.Tensor]
    pair_i: list[torch.Tensor]
    pair_j: list[torch.Tensor]
    pair_d: list[torch.Tensor]
    dGdd: list[torch.Tensor]

    @classmethod
    def of(cls, desc: DescriptorValues) -> ChunkValues:
        if any(d is None for d in desc.dGdd):
            raise ValueError("training needs descriptors computed with derivatives")
        return cls(
            list(desc.atoms),
            list(desc.G),
            list(desc.pair_row),
            list(desc.pair_i),
            list(desc.pair_j),
            list(desc.pair_d),
            [d for d in desc.dGdd if d is not None],
        )


def chunk_values(
    data: Dataset, calc: DescriptorCalculator, elements: list[str], start: int, stop: int
) -> ChunkValues:
    """Descriptors and derivatives (float64, CPU) of structures start..stop-1 of ``data``
    (as one neighbour-list batch)."""
    batch = make_batch(data.structures[start:stop], elements, calc.cutoff, torch.float64, "cpu")
    return ChunkValues.of(
        calc.compute(batch.species, batch.centers, batch.neighbors, batch.vectors)
    )


def structure_batch(
    data: Dataset,
    sids: np.ndarray,
    calc: DescriptorCalculator,
    elements: list[str],
    dtype: torch.dtype,
    member_weight: np.ndarray | None = None,
) -> TrainingBatch:
    """The batch of structures ``sids`` of ``data`` computed from the raw structures
    (neighbour list and :meth:`DescriptorCalculator.compute` in float64, then ``dtype``;
    CPU tensors). ``member_weight``: (M, len(data)) bootstrap counts or None."""
    sids = np.asarray(sids, dtype=np.int64)
    nel = len(elements)
    ref = ReferenceArrays.of(data, sids)
    owner = torch.repeat_interleave(torch.arange(len(sids)), torch.from_numpy(ref.natoms))
    if len(sids):
        structures = [data.structures[k] for k in sids]
        sb = make_batch(structures, elements, calc.cutoff, torch.float64, "cpu")
        desc = ChunkValues.of(calc.compute(sb.species, sb.centers, sb.neighbors, sb.vectors))
        G = [g.to(dtype) for g in desc.G]
        row_struct = [owner[a] for a in desc.atoms]
        pair_row, pair_i, pair_j = desc.pair_row, desc.pair_i, desc.pair_j
        pair_d = [d.to(dtype) for d in desc.pair_d]
        dGdd = [d.to(dtype) for d in desc.dGdd]
    else:
        zi = torch.zeros(0, dtype=torch.long)
        G = [torch.zeros((0, calc.num_functions(e)), dtype=dtype) for e in range(nel)]
        row_struct = pair_row = pair_i = pair_j = [zi] * nel
        pair_d = [torch.zeros((0, 3), dtype=dtype)] * nel
        dGdd = [torch.zeros((0, calc.num_functions(e), 3), dtype=dtype) for e in range(nel)]

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.tensor(x, dtype=dtype)

    return TrainingBatch(
        len(sids),
        t(ref.natoms),
        t(ref.energy),
        t(ref.weight),
        t(ref.forces),
        torch.tensor(ref.force_mask),
        owner,
        t(ref.stress),
        torch.tensor(ref.stress_mask),
        t(ref.volume),
        G,
        row_struct,
        pair_row,
        pair_i,
        pair_j,
        pair_d,
        [owner[i] for i in pair_i],
        dGdd,
        None if member_weight is None else t(member_weight[:, sids]),
    )


class TrainingData:
    """Descriptors, their derivatives and reference values of a dataset, laid out so that
    each structure's atoms, rows and pairs are contiguous."""

    def __init__(
        self,
        data: Dataset,
        calc: DescriptorCalculator,
        elements: list[str],
        dtype: torch.dtype,
        device: torch.device,
        chunk_atoms: int = 3000,
    ) -> None:
        self.data = data
        nel = len(elements)
        B = len(data)
        self.n = B
        natoms = data.n_atoms
        self.atom_off = np.concatenate([[0], np.cumsum(natoms)])
        Gs, pr, pi, pj, pd, dg = ([[] for _ in range(nel)] for _ in range(6))
        row_counts = np.zeros((nel, B), dtype=np.int64)
        pair_counts = np.zeros((nel, B), dtype=np.int64)
        row_base = [0] * nel
        for start, stop in chunk_ranges(natoms, chunk_atoms):
            desc = chunk_values(data, calc, elements, start, stop)
            owner = np.repeat(np.arange(start, stop), natoms[start:stop])
            a0 = int(self.atom_off[start])
            for e in range(nel):
                Gs[e].append(desc.G[e])
                row_counts[e, start:stop] = np.bincount(
                    owner[desc.atoms[e].numpy()], minlength=stop
                )[start:stop]
                pair_counts[e, start:stop] = np.bincount(
                    owner[desc.pair_i[e].numpy()], minlength=stop
                )[start:stop]
                pr[e].append(desc.pair_row[e] + row_base[e])
                pi[e].append(desc.pair_i[e] + a0)
                pj[e].append(desc.pair_j[e] + a0)
                pd[e].append(desc.pair_d[e])
                dg[e].append(desc.dGdd[e])
                row_base[e] += len(desc.atoms[e])
            del desc
        self.row_off = [np.concatenate([[0], np.cumsum(row_counts[e])]) for e in range(nel)]
        self.pair_off = [np.concatenate([[0], np.cumsum(pair_counts[e])]) for e in range(nel)]

        def cat(xs, **kw):
            return torch.cat(xs).to(device=device, **kw)

        self.G = [cat(Gs[e], dtype=dtype) for e in range(nel)]
        self.pair_row = [cat(pr[e]) for e in range(nel)]
        self.pair_i = [cat(pi[e]) for e in range(nel)]
        self.pair_j = [cat(pj[e]) for e in range(nel)]
        self.pair_d = [cat(pd[e], dtype=dtype) for e in range(nel)]
        self.dGdd = [cat(dg[e], dtype=dtype) for e in range(nel)]
        self.row_struct = [
            torch.repeat_interleave(torch.arange(B), torch.from_numpy(row_counts[e])).to(device)
            for e in range(nel)
        ]
        self.pair_struct = [
            torch.repeat_interleave(torch.arange(B), torch.from_numpy(pair_counts[e])).to(device)
            for e in range(nel)
        ]
        self.atom_struct = torch.repeat_interleave(torch.arange(B), torch.from_numpy(natoms)).to(
            device
        )
        ref = ReferenceArrays.of(data)
        self.natoms = torch.tensor(natoms, dtype=dtype, device=device)
        self.energy = torch.tensor(ref.energy, dtype=dtype, device=device)
        self.weight = torch.tensor(ref.weight, dtype=dtype, device=device)
        self.forces = torch.tensor(ref.forces, dtype=dtype, device=device)
        self.force_mask = torch.tensor(ref.force_mask, device=device)
        self.stress = torch.tensor(ref.stress, dtype=dtype, device=device)
        self.stress_mask = torch.tensor(ref.stress_mask, device=device)
        self.volume = torch.tensor(ref.volume, dtype=dtype, device=device)
        self.device = device
        #: committee bootstrap: (M, B) how often each structure is in member m's resample
        self.member_weight: torch.Tensor | None = None
        self._full: TrainingBatch | None = None

    def batch(self, sids: np.ndarray | None = None) -> TrainingBatch:
        """The structures ``sids`` (all of them, without copies, when None)."""
        if sids is None:
            if self._full is None:
                self._full = TrainingBatch(
                    self.n,
                    self.natoms,
                    self.energy,
                    self.weight,
                    self.forces,
                    self.force_mask,
                    self.atom_struct,
                    self.stress,
                    self.stress_mask,
                    self.volume,
                    self.G,
                    self.row_struct,
                    self.pair_row,
                    self.pair_i,
                    self.pair_j,
                    self.pair_d,
                    self.pair_struct,
                    self.dGdd,
                    self.member_weight,
                )
            return self._full
        dev = self.device
        sids = np.asarray(sids, dtype=np.int64)
        local_struct = np.arange(len(sids))

        def ranges(off: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """Global indices of the selected structures' items, their local structure, and
            per local structure the shift from a global to a batch-local item index."""
            starts, stops = off[sids], off[sids + 1]
            counts = stops - starts
            idx = (
                np.concatenate([np.arange(a, b) for a, b in zip(starts, stops, strict=True)])
                if len(sids)
                else np.zeros(0, dtype=np.int64)
            )
            owner = np.repeat(local_struct, counts)
            shift = (
                np.concatenate([[0], np.cumsum(counts)[:-1]]) - starts
                if len(sids)
                else np.zeros(0, dtype=np.int64)
            )
            return (
                torch.from_numpy(idx).to(dev),
                torch.from_numpy(owner).to(dev),
                torch.from_numpy(shift).to(dev),
            )

        atoms, atom_owner, atom_shift = ranges(self.atom_off)
        G, rs, prow, pi, pj, pd, ps, dg = [], [], [], [], [], [], [], []
        for e in range(len(self.G)):
            rows, row_owner, row_shift = ranges(self.row_off[e])
            pairs, pair_owner, _ = ranges(self.pair_off[e])
            G.append(self.G[e][rows])
            rs.append(row_owner)
            prow.append(self.pair_row[e][pairs] + row_shift[pair_owner])
            pi.append(self.pair_i[e][pairs] + atom_shift[pair_owner])
            pj.append(self.pair_j[e][pairs] + atom_shift[pair_owner])
            pd.append(self.pair_d[e][pairs])
            ps.append(pair_owner)
            dg.append(self.dGdd[e][pairs])
        s = torch.from_numpy(sids).to(dev)
        return TrainingBatch(
            len(sids),
            self.natoms[s],
            self.energy[s],
            self.weight[s],
            self.forces[atoms],
            self.force_mask[atoms],
            atom_owner,
            self.stress[s],
            self.stress_mask[s],
            self.volume[s],
            G,
            rs,
            prow,
            pi,
            pj,
            pd,
            ps,
            dg,
            None if self.member_weight is None else self.member_weight[:, s],
        )
