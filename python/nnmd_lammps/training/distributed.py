"""Data-parallel training over processes with torch.distributed (docs/training.md,
"Several processes and nodes").

A run started by ``torchrun`` (or anything that sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``) has one
process per rank: every rank reads the data, takes its share of every global batch
(structures ``rank::world`` of it), and the gradients and loss sums are added over the
ranks, so that each rank takes the step one process would take with the whole global
batch. Backend: gloo on CPUs, NCCL on GPUs (one GPU per rank, ``cuda:LOCAL_RANK``).

Without those variables (a plain ``nnmd train``) :class:`Distributed` is the single
process: every collective is a no-op and no process group is created.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist

from ..errors import NNMDError

#: How long a collective may wait for the other ranks before the run fails.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise NNMDError(f"environment variable {name} must be an integer, got {value!r}") from None


@dataclass
class Distributed:
    """This process's place in a data-parallel run: ``rank`` of ``world`` processes,
    ``local_rank`` of ``local_world`` on this node; ``device`` the torch device of this
    rank; ``owns_group``: the process group was created here (and is destroyed by
    :meth:`close`)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @classmethod
    def from_environment(cls, device: str) -> Distributed:
        """The single process, or the rank of a torchrun launch (joining its process
        group: gloo for ``device`` cpu, NCCL for cuda)."""
        world = _env_int("WORLD_SIZE", 1)
        if world <= 1:
            return cls(device=torch.device(device))
        rank = _env_int("RANK", 0)
        local_rank = _env_int("LOCAL_RANK", 0)
        local_world = _env_int("LOCAL_WORLD_SIZE", world)
        cuda = device.startswith("cuda")
        if cuda:
            if not torch.cuda.is_available():
                raise NNMDError("training.device is cuda but torch sees no CUDA device")
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
            torch.cuda.set_device(dev)
        else:
            dev = torch.device(device)
        owns = False
        if not tdist.is_initialized():
            tdist.init_process_group(
                backend="nccl" if cuda else "gloo",
                rank=rank,
                world_size=world,
                timeout=COLLECTIVE_TIMEOUT,
            )
            owns = True
        if tdist.get_world_size() != world or tdist.get_rank() != rank:
            raise NNMDError("the torch.distributed process group does not match RANK/WORLD_SIZE")
        return cls(rank, world, local_rank, local_world, dev, owns)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs and writes files."""
        return self.rank == 0

    def close(self) -> None:
        if self.owns_group and tdist.is_initialized():
            # every rank done with its collectives before the group goes: a rank that tears
            # gloo down while its peer still talks to it aborts ("terminate called ...")
            tdist.barrier()
            tdist.destroy_process_group()
            self.owns_group = False

    # collectives (no-ops for one process) -------------------------------------------------
    def share(self, items: np.ndarray) -> np.ndarray:
        """This rank's share of ``items``: every world-th from position rank."""
        return items[self.rank :: self.world] if self.world > 1 else items

    def balanced_share(self, items: np.ndarray, cost: np.ndarray) -> np.ndarray:
        """This rank's part of ``items`` (structure indices) when they are dealt out so that
        the parts' summed ``cost`` (indexed by structure) is about equal: the costliest
        first, each to the rank with the least cost so far (the lower rank on ties). The
        items keep their order within a part; every rank computes the same partition. A
        step waits for its slowest rank, so the parts of one global batch should cost the
        same: structures of 50 and 200 atoms dealt round-robin do not."""
        if self.world == 1:
            return items
        items = np.asarray(items)
        load = np.zeros(self.world)
        owner = np.empty(len(items), dtype=np.int64)
        for k in np.argsort(-np.asarray(cost, dtype=np.float64)[items], kind="stable"):
            r = int(np.argmin(load))
            owner[k] = r
            load[r] += cost[items[k]]
        return items[owner == self.rank]

    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place (every rank gets the same bits)."""
        if self.world > 1:
            moved = tensor.to(self.device)
            tdist.all_reduce(moved, op=tdist.ReduceOp.SUM)
            if moved is not tensor:
                tensor.copy_(moved)
        return tensor

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        if self.world == 1:
            return obj
        box = [obj if self.is_main else None]
        tdist.broadcast_object_list(box, src=0, device=self._object_device)
        return box[0]

    def all_gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def gather_objects(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` in rank order on rank 0 (None elsewhere)."""
        if self.world == 1:
            return [obj]
        if self.device.type == "cuda":  # NCCL has no gather of objects: gather everywhere
            everything = self.all_gather_objects(obj)
            return everything if self.is_main else None
        out: list[Any] | None = [None] * self.world if self.is_main else None
        tdist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            tdist.barrier()

    @property
    def _object_device(self) -> torch.device | None:
        return self.device if self.device.type == "cuda" else None


def reduce_gradients(
    params: list[torch.nn.Parameter], loss: torch.Tensor, dist: Distributed
) -> torch.Tensor:
    """Sum the gradients of ``params`` and the (detached) ``loss`` (a scalar, or one loss
    per committee member) over the ranks in one all-reduce and return the summed loss. A
    parameter without gradient on a rank contributes zeros; one without gradient on every
    rank keeps ``grad = None`` (so that the optimiser treats it as one process with the
    whole global batch would)."""
    shape = loss.shape
    loss = loss.detach().reshape(-1)
    if dist.world == 1:
        return loss.reshape(shape)
    dtype, device = params[0].dtype, params[0].device
    parts, used = [], []
    for p in params:
        used.append(p.grad is not None)
        parts.append(torch.zeros_like(p).reshape(-1) if p.grad is None else p.grad.reshape(-1))
    flags = torch.tensor(used, dtype=dtype, device=device)
    flat = torch.cat([*parts, flags, loss.to(dtype=dtype, device=device)])
    dist.all_reduce_sum_(flat)
    offset = 0
    for p in params:
        n = p.numel()
        chunk = flat[offset : offset + n].view_as(p)
        offset += n
        p.grad = chunk.clone()
    flags = flat[offset : offset + len(params)]
    for p, f in zip(params, flags.tolist(), strict=True):
        if f == 0:
            p.grad = None
    return flat[offset + len(params) :].reshape(shape)


def threads_per_rank(dist: Distributed) -> int:
    """CPU threads for one rank: the CPUs this process may use shared among the ranks of
    this node (at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, dist.local_world))
