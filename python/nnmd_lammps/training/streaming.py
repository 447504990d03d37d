"""Where training batches come from: precomputed descriptors held in memory, or descriptors
computed per batch from the raw structures in background worker processes
(docs/training.md, "Memory: in memory or streamed").

A :class:`TaskRunner` computes :class:`Task` s (a training batch, descriptor statistics
of a chunk of structures) in ``workers`` processes of a torch
``DataLoader`` (inline with 0 workers), in order, so that the results are the same for
any number of workers. A set source (:class:`MemorySource`, :class:`StreamSource`) gives
the batches of a list of per-step structure lists, and a set (or one rank's share of it) in
parts; :class:`SetInfo` gives the loss normalisation of any structures without
descriptors.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from ..data.dataset import Dataset
from ..descriptors.calculator import DescriptorCalculator
from ..descriptors.spec import DescriptorSpec
from ..model.potential import make_batch
from .loss import LossNorm, loss_norm
from .statistics import DescriptorStatistics
from .tensors import TrainingBatch, TrainingData, chunk_ranges, structure_batch

#: Atoms per part when a whole set is streamed (validation loss, L-BFGS, statistics):
#: bounds the memory of a part's descriptors, derivatives and autograd graph.
STREAM_CHUNK_ATOMS = 1024
#: Upper limit of the automatic number of worker processes.
MAX_AUTO_WORKERS = 4
#: Structures sampled to estimate the memory of precomputed descriptors.
ESTIMATE_SAMPLE = 64


@dataclass(frozen=True)
class Task:
    """Work for a worker: ``kind`` "batch" (a :class:`TrainingBatch` of structures
    ``sids`` of set ``set_name``) or "statistics" (per-element
    :class:`~.statistics.DescriptorStatistics` of structures ``sids``, with co-moments
    if ``correlations``)."""

    kind: str
    set_name: str
    sids: tuple[int, ...]
    correlations: bool = False


class StructureTasks(TorchDataset):
    """The raw structures of the data sets and how to compute a :class:`Task` from them
    (a map-style dataset whose keys are tasks; worker processes get a copy)."""

    def __init__(
        self,
        sets: dict[str, Dataset],
        spec: DescriptorSpec,
        elements: list[str],
        dtype: torch.dtype,
        member_weight: np.ndarray | None = None,
    ) -> None:
        self.sets = sets
        self.elements = elements
        self.dtype = dtype
        self.member_weight = member_weight  # (M, n_train): bootstrap counts of the train set
        self.calc = DescriptorCalculator(spec)

    def __len__(self) -> int:  # not used for sampling: tasks are the keys
        return sum(len(ds) for ds in self.sets.values())

    def __getitem__(self, task: Task) -> Any:  # type: ignore[override]
        data = self.sets[task.set_name]
        sids = np.asarray(task.sids, dtype=np.int64)
        if task.kind == "batch":
            mw = self.member_weight if task.set_name == "train" else None
            return structure_batch(data, sids, self.calc, self.elements, self.dtype, mw)
        if task.kind == "statistics":
            structures = [data.structures[k] for k in sids]
            b = make_batch(structures, self.elements, self.calc.cutoff)
            desc = self.calc.compute(
                b.species, b.centers, b.neighbors, b.vectors, derivatives=False
            )
            return [DescriptorStatistics.of(g, task.correlations) for g in desc.G]
        raise ValueError(f"unknown task kind {task.kind!r}")


class PredictionTasks(TorchDataset):
    """Predictions of a model (a :class:`~nnmd_lammps.model.Potential`) for structures of
    the data sets: a task ("predict", set, sids) gives, per structure, (index, energy,
    forces, stress)."""

    def __init__(self, sets: dict[str, Dataset], potential: Any) -> None:
        self.sets = sets
        self.potential = potential

    def __len__(self) -> int:
        return sum(len(ds) for ds in self.sets.values())

    def __getitem__(self, task: Task) -> Any:  # type: ignore[override]
        data = self.sets[task.set_name]
        preds = self.potential.evaluate([data.structures[k] for k in task.sids], stress=True)
        return [(k, p.energy, p.forces, p.stress) for k, p in zip(task.sids, preds, strict=True)]


def _as_is(x: Any) -> Any:
    return x


class TaskRunner:
    """Computes tasks in order, in ``workers`` background processes (a DataLoader with
    two tasks in flight per worker) or here (0 workers). Workers are started per call of
    :meth:`run` and end with it; they see the tasks object as it is at that moment."""

    def __init__(self, tasks: StructureTasks | PredictionTasks, workers: int) -> None:
        self.tasks = tasks
        self.workers = max(0, int(workers))

    def run(self, tasks: Sequence[Task]) -> Iterator[Any]:
        n = min(self.workers, len(tasks))
        if n == 0:
            yield from (self.tasks[t] for t in tasks)
            return
        methods = multiprocessing.get_all_start_methods()
        loader = DataLoader(
            self.tasks,
            batch_size=None,
            sampler=list(tasks),
            num_workers=n,
            collate_fn=_as_is,
            prefetch_factor=2,
            multiprocessing_context="fork" if "fork" in methods else None,
            # the loader draws worker seeds from this generator: the global torch RNG (the
            # initial weights, the checkpointed RNG state) stays untouched
            generator=torch.Generator().manual_seed(0),
        )
        yield from loader


def resolve_workers(configured: int | None, cpus_per_rank: int) -> int:
    """``training.workers``, or automatically one per CPU of this rank (at most
    MAX_AUTO_WORKERS; the main process mostly waits for the descriptors), and none when
    the rank has a single CPU: a worker would then only take turns with its own rank,
    and every rank waits for the slowest at each step (1 M atoms of Cu, 2 ranks on 2
    CPUs: 183 structures/s with one worker each, 243 without)."""
    if configured is not None:
        return configured
    if cpus_per_rank <= 1:
        return 0
    return min(MAX_AUTO_WORKERS, cpus_per_rank)


@dataclass
class SetInfo:
    """Per structure of a set what the loss normalisation needs: ``natoms``, ``weight``,
    whether there are forces and stress, and the committee bootstrap counts (M, B)."""

    natoms: np.ndarray
    weight: np.ndarray
    has_forces: np.ndarray
    has_stress: np.ndarray
    member_weight: np.ndarray | None

    @classmethod
    def of(cls, data: Dataset, member_weight: np.ndarray | None = None) -> SetInfo:
        return cls(
            data.n_atoms,
            np.asarray(data.weight, dtype=np.float64),
            np.array([f is not None for f in data.forces], dtype=bool),
            np.array([s is not None for s in data.stress], dtype=bool),
            member_weight,
        )

    def norm(self, sids: np.ndarray | None, dtype: torch.dtype, device: torch.device) -> LossNorm:
        """The loss normalisation of structures ``sids`` (all when None)."""
        idx = np.arange(len(self.natoms)) if sids is None else np.asarray(sids, dtype=np.int64)
        mw = None if self.member_weight is None else self.member_weight[:, idx]
        return loss_norm(
            self.natoms[idx],
            self.weight[idx],
            self.has_forces[idx],
            self.has_stress[idx],
            mw,
            dtype,
            device,
        )


class MemorySource:
    """Batches cut from precomputed descriptors (:class:`TrainingData`)."""

    def __init__(self, data: TrainingData) -> None:
        self.data = data
        self.n = data.n
        self._share: tuple[bytes, TrainingBatch] | None = None

    def batches(self, sids: Sequence[np.ndarray]) -> Iterator[TrainingBatch]:
        for s in sids:
            yield self.data.batch(s)

    def parts(self, share: np.ndarray | None) -> Iterator[TrainingBatch]:
        """The whole set (``share`` None) as one batch without copies, or the structures
        ``share`` as one batch (kept for the next call with the same share)."""
        if share is None:
            yield self.data.batch()
            return
        key = np.asarray(share, dtype=np.int64).tobytes()
        if self._share is None or self._share[0] != key:
            self._share = (key, self.data.batch(share))
        yield self._share[1]


class StreamSource:
    """Batches computed from the raw structures of set ``name`` by a :class:`TaskRunner`
    (per step; nothing is kept)."""

    def __init__(
        self,
        runner: TaskRunner,
        name: str,
        natoms: np.ndarray,
        device: torch.device,
        chunk_atoms: int = STREAM_CHUNK_ATOMS,
    ) -> None:
        self.runner = runner
        self.name = name
        self.natoms = natoms
        self.n = len(natoms)
        self.device = device
        self.chunk_atoms = chunk_atoms

    def _tasks(self, sids: Sequence[np.ndarray]) -> list[Task]:
        return [Task("batch", self.name, tuple(int(k) for k in s)) for s in sids]

    def batches(self, sids: Sequence[np.ndarray]) -> Iterator[TrainingBatch]:
        for b in self.runner.run(self._tasks(sids)):
            yield b.to(self.device)

    def parts(self, share: np.ndarray | None) -> Iterator[TrainingBatch]:
        """The structures ``share`` (all when None) in parts of at most ``chunk_atoms``
        atoms (one structure at least)."""
        idx = np.arange(self.n) if share is None else np.asarray(share, dtype=np.int64)
        chunks = [idx[a:b] for a, b in chunk_ranges(self.natoms[idx], self.chunk_atoms)]
        yield from self.batches(chunks)


def chunk_tasks(
    kind: str, natoms: np.ndarray, name: str, sids: np.ndarray, chunk_atoms: int
) -> list[Task]:
    """Tasks of ``kind`` for the structures ``sids`` of set ``name`` in chunks of at most
    ``chunk_atoms`` atoms."""
    natoms = np.asarray(natoms)[sids]
    return [
        Task(kind, name, tuple(int(k) for k in sids[a:b]))
        for a, b in chunk_ranges(natoms, chunk_atoms)
    ]


def statistics_tasks(
    data: Dataset, name: str, correlations: bool, chunk_atoms: int = STREAM_CHUNK_ATOMS
) -> list[Task]:
    """Tasks for the descriptor statistics of every structure of ``data``, in chunks."""
    return [
        Task("statistics", name, tuple(range(a, b)), correlations)
        for a, b in chunk_ranges(data.n_atoms, chunk_atoms)
    ]


def estimated_memory_bytes(
    sets: Sequence[Dataset],
    spec: DescriptorSpec,
    elements: list[str],
    itemsize: int,
    sample: int = ESTIMATE_SAMPLE,
) -> float:
    """Estimated bytes of :class:`TrainingData` for ``sets`` (descriptors, dG/dd in K
    neighbour slots per atom, reference forces), extrapolated per atom from the neighbour
    lists of up to ``sample`` structures of each set spread evenly over it (K: the most
    neighbours of an atom in the sample)."""
    index = {e: k for k, e in enumerate(elements)}
    rc = [max((f.rc for f in spec.functions[e]), default=0.0) for e in elements]
    nfun = [spec.num_functions(e) for e in elements]
    cutoff = max(rc)
    total = 0.0
    for ds in sets:
        if len(ds) == 0:
            continue
        pick = np.unique(np.linspace(0, len(ds) - 1, min(sample, len(ds))).astype(np.int64))
        structures = [ds.structures[k] for k in pick]
        b = make_batch(structures, elements, cutoff)
        dist = torch.linalg.vector_norm(b.vectors, dim=1)
        n_bytes = 0.0
        for e in elements:
            k = index[e]
            inside = (b.species[b.centers] == k) & (dist < rc[k])
            per_atom = torch.bincount(b.centers[inside], minlength=len(b.species))
            K = int(per_atom.max()) if len(per_atom) else 0
            atoms = int((b.species == k).sum())
            n_bytes += atoms * (nfun[k] * 3 * K * itemsize + K * (3 * itemsize + 8) + 8)
            n_bytes += atoms * (nfun[k] * itemsize + 8)
        sample_atoms = int(sum(len(a) for a in structures))
        n_bytes += sample_atoms * (3 * itemsize + 1 + 8)
        total += n_bytes / max(sample_atoms, 1) * float(ds.n_atoms.sum())
    return total
