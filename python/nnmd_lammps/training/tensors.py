"""Training data as tensors: symmetry functions, their derivatives dG/dd and reference
values of structures, laid out so that each structure's atoms, rows and pairs are
contiguous. dG/dd is held per atom ("row") in K neighbour slots (:class:`RowLayout`), so
that the force contraction of a batch is one batched matrix product over atoms (all
committee members at once) instead of one tiny product per pair.

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
class RowLayout:
    """dG/dd of one element's atoms (the rows of its G) in K neighbour slots per row, K the
    largest number of neighbours of a row; unused slots are zero and point at a dummy atom.

    ``dGdd`` (n, S, 3K): column 3k + a is d G_s / d d_a of the row's k-th neighbour pair
    (d = r_j - r_i); ``d`` (n, K, 3) the displacements (Angstrom); ``neighbor`` (n K,) the
    atom index j of each slot (``n_atoms``, one past the last atom, in unused slots);
    ``centre`` (n,) the atom index i of each row."""

    dGdd: torch.Tensor
    d: torch.Tensor
    neighbor: torch.Tensor
    centre: torch.Tensor

    @property
    def slots(self) -> int:
        return int(self.d.shape[1])

    def to(self, device: torch.device | str) -> RowLayout:
        return RowLayout(*(getattr(self, f.name).to(device) for f in fields(self)))

    def nbytes(self) -> int:
        return sum(getattr(self, f.name).nbytes for f in fields(self))


def row_layout(
    centre: torch.Tensor,
    pair_row: torch.Tensor,
    pair_j: torch.Tensor,
    pair_d: torch.Tensor,
    dGdd: torch.Tensor,
    n_atoms: int,
    slots: int | None = None,
) -> RowLayout:
    """The :class:`RowLayout` of pairs given per pair (``pair_row`` the row, ``pair_j`` the
    neighbour atom, ``pair_d`` (P, 3), ``dGdd`` (P, S, 3)) for rows centred on atoms
    ``centre``; ``slots``: K if larger than the largest number of pairs of a row."""
    n = int(centre.shape[0])
    P, S = int(dGdd.shape[0]), int(dGdd.shape[1])
    counts = torch.bincount(pair_row, minlength=n)
    K = max(int(counts.max()) if P else 0, slots or 0)
    order = torch.argsort(pair_row, stable=True)
    start = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(pair_row)
    slot[order] = torch.arange(P, device=pair_row.device) - start[pair_row[order]]
    flat = pair_row * K + slot
    D = torch.zeros((n * K, S, 3), dtype=dGdd.dtype, device=dGdd.device)
    D[flat] = dGdd
    D = D.view(n, K, S, 3).permute(0, 2, 1, 3).reshape(n, S, 3 * K)
    d = torch.zeros((n * K, 3), dtype=pair_d.dtype, device=pair_d.device)
    d[flat] = pair_d
    neighbor = torch.full((n * K,), n_atoms, dtype=torch.long, device=pair_j.device)
    neighbor[flat] = pair_j
    return RowLayout(D, d.view(n, K, 3), neighbor, centre)


def _pad_slots(layout: RowLayout, K: int, n_atoms: int) -> RowLayout:
    """``layout`` with K >= its slots (the added slots unused)."""
    k0 = layout.slots
    if k0 == K:
        return layout
    n = int(layout.centre.shape[0])
    pad = torch.nn.functional.pad
    nb = pad(layout.neighbor.view(n, k0), (0, K - k0), value=n_atoms).reshape(-1)
    return RowLayout(
        pad(layout.dGdd, (0, 3 * (K - k0))), pad(layout.d, (0, 0, 0, K - k0)), nb, layout.centre
    )


@dataclass
class TrainingBatch:
    """Structures of a training batch: reference values and per-element descriptors (rows:
    the batch's atoms of that element) with their derivatives."""

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
    G: list[torch.Tensor]  # per element (n_e, S_e)
    row_struct: list[torch.Tensor]  # per element (n_e,): the structure of each row
    rows: list[RowLayout]  # per element: dG/dd
    member_weight: torch.Tensor | None = None  # (M, B) committee bootstrap counts, or None

    def to(self, device: torch.device | str) -> TrainingBatch:
        """The batch on ``device`` (itself when it is there already)."""
        device = torch.device(device)
        if self.natoms.device == device:
            return self

        def mv(x):
            if isinstance(x, list):  # tensors or RowLayouts
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
    n_atoms = int(ref.natoms.sum())
    if len(sids):
        structures = [data.structures[k] for k in sids]
        sb = make_batch(structures, elements, calc.cutoff, torch.float64, "cpu")
        desc = ChunkValues.of(calc.compute(sb.species, sb.centers, sb.neighbors, sb.vectors))
        G = [g.to(dtype) for g in desc.G]
        row_struct = [owner[a] for a in desc.atoms]
        rows = [
            row_layout(
                desc.atoms[e],
                desc.pair_row[e],
                desc.pair_j[e],
                desc.pair_d[e].to(dtype),
                desc.dGdd[e].to(dtype),
                n_atoms,
            )
            for e in range(nel)
        ]
    else:
        zi = torch.zeros(0, dtype=torch.long)
        G = [torch.zeros((0, calc.num_functions(e)), dtype=dtype) for e in range(nel)]
        row_struct = [zi] * nel
        rows = [
            RowLayout(
                torch.zeros((0, calc.num_functions(e), 0), dtype=dtype),
                torch.zeros((0, 0, 3), dtype=dtype),
                zi,
                zi,
            )
            for e in range(nel)
        ]

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
        rows,
        None if member_weight is None else t(member_weight[:, sids]),
    )


class TrainingData:
    """Descriptors, their derivatives and reference values of a dataset, laid out so that
    each structure's atoms and rows are contiguous."""

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
        n_total = int(self.atom_off[-1])
        Gs: list[list[torch.Tensor]] = [[] for _ in range(nel)]
        layouts: list[list[RowLayout]] = [[] for _ in range(nel)]
        row_counts = np.zeros((nel, B), dtype=np.int64)
        for start, stop in chunk_ranges(natoms, chunk_atoms):
            desc = chunk_values(data, calc, elements, start, stop)
            owner = np.repeat(np.arange(start, stop), natoms[start:stop])
            a0 = int(self.atom_off[start])
            for e in range(nel):
                Gs[e].append(desc.G[e].to(dtype))
                row_counts[e, start:stop] = np.bincount(
                    owner[desc.atoms[e].numpy()], minlength=stop
                )[start:stop]
                layouts[e].append(
                    row_layout(
                        desc.atoms[e] + a0,
                        desc.pair_row[e],
                        desc.pair_j[e] + a0,
                        desc.pair_d[e].to(dtype),
                        desc.dGdd[e].to(dtype),
                        n_total,
                    )
                )
            del desc
        self.row_off = [np.concatenate([[0], np.cumsum(row_counts[e])]) for e in range(nel)]
        self.G = [torch.cat(Gs[e]).to(device) for e in range(nel)]
        #: per element: rows with global atom indices (``n_atoms`` of the whole set in
        #: unused slots), all with the largest K of the set
        self.rows: list[RowLayout] = []
        for e in range(nel):
            K = max(x.slots for x in layouts[e])
            parts = [_pad_slots(x, K, n_total) for x in layouts[e]]
            layouts[e] = []
            self.rows.append(
                RowLayout(
                    *(
                        torch.cat([getattr(x, f.name) for x in parts]).to(device)
                        for f in fields(RowLayout)
                    )
                )
            )
            del parts
        self.row_struct = [
            torch.repeat_interleave(torch.arange(B), torch.from_numpy(row_counts[e])).to(device)
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

    def nbytes(self) -> int:
        """Bytes of the per-atom and per-row tensors (what grows with the data set)."""
        return (
            sum(x.nbytes() for x in self.rows)
            + sum(t.nbytes for t in (*self.G, *self.row_struct))
            + sum(t.nbytes for t in (self.atom_struct, self.forces, self.force_mask))
        )

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
                    self.rows,
                    self.member_weight,
                )
            return self._full
        dev = self.device
        sids = np.asarray(sids, dtype=np.int64)
        local_struct = np.arange(len(sids))
        n_total = int(self.atom_off[-1])

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
        n_batch = int(atoms.shape[0])
        G, rs, layouts = [], [], []
        for e in range(len(self.G)):
            rows, row_owner, _ = ranges(self.row_off[e])
            G.append(self.G[e][rows])
            rs.append(row_owner)
            full = self.rows[e]
            shift = atom_shift[row_owner]
            K = full.slots
            nb = full.neighbor.view(full.centre.shape[0], K)[rows]
            nb = torch.where(nb == n_total, n_batch, nb + shift[:, None])
            layouts.append(
                RowLayout(full.dGdd[rows], full.d[rows], nb.reshape(-1), full.centre[rows] + shift)
            )
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
            layouts,
            None if self.member_weight is None else self.member_weight[:, s],
        )
