"""Training data as tensors: symmetry functions, their derivatives dG/dd and reference
values of every structure, laid out so that each structure's atoms, rows and pairs are
contiguous, and batches of structures cut from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.dataset import Dataset
from ..descriptors.calculator import DescriptorCalculator
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
        start = 0
        while start < B:
            stop, n = start, 0
            while stop < B and (stop == start or n + natoms[stop] <= chunk_atoms):
                n += natoms[stop]
                stop += 1
            chunk = data.structures[start:stop]
            batch = make_batch(chunk, elements, calc.cutoff, torch.float64, "cpu")
            desc = calc.compute(batch.species, batch.centers, batch.neighbors, batch.vectors)
            owner = batch.owner.numpy() + start
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
            start = stop
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
        self.natoms = torch.tensor(natoms, dtype=dtype, device=device)
        self.energy = torch.tensor(data.energy, dtype=dtype, device=device)
        self.weight = torch.tensor(data.weight, dtype=dtype, device=device)
        forces = np.zeros((int(self.atom_off[-1]), 3))
        mask = np.zeros(int(self.atom_off[-1]), dtype=bool)
        stress = np.zeros((B, 3, 3))
        smask = np.zeros(B, dtype=bool)
        volume = np.ones(B)
        for k in range(B):
            a, b = self.atom_off[k], self.atom_off[k + 1]
            if data.forces[k] is not None:
                forces[a:b] = data.forces[k]
                mask[a:b] = True
            if data.stress[k] is not None:
                stress[k] = data.stress[k]
                smask[k] = True
            if np.all(data.structures[k].pbc):
                volume[k] = data.structures[k].get_volume()
        self.forces = torch.tensor(forces, dtype=dtype, device=device)
        self.force_mask = torch.tensor(mask, device=device)
        self.stress = torch.tensor(stress, dtype=dtype, device=device)
        self.stress_mask = torch.tensor(smask, device=device)
        self.volume = torch.tensor(volume, dtype=dtype, device=device)
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
