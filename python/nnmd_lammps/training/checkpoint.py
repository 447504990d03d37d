"""The training state: one dataclass holding everything a killed run needs to continue
exactly, written atomically after every epoch (Adam) or refinement block (L-BFGS).

On disk it is a ``torch.save`` dict of the fields below plus ``format`` and ``version``,
read back with ``weights_only=True`` (tensors, numbers, strings and containers only).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ..errors import NNMDError

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "nnmd-lammps-checkpoint"
#: 2: committee members refined in lockstep (one L-BFGS state per member); a version-1
#: checkpoint resumes unless it stopped within a committee's refinement.
CHECKPOINT_VERSION = 2
#: Training phases in order: Adam epochs, Kalman-filter epochs, L-BFGS refinement, finished.
PHASES = ("adam", "kalman", "refine", "done")


def _empty_history() -> dict[str, list[float]]:
    return {"epoch": [], "train_loss": [], "val_loss": [], "lr": [], "time_s": []}


@dataclass
class TrainingState:
    """Where a training run stands.

    ``config_json``/``model_json``: the configuration and the model metadata (symmetry
    functions, scaling, energy shifts) the run was started with; ``epoch``: Adam epochs
    done; ``kalman_epochs``: Kalman-filter epochs done, ``kalman_state`` the filters (one
    per committee member) and ``kalman_generator_state`` the group sampling;
    ``refine_iterations``: L-BFGS iterations done (by every committee member: they are
    refined in lockstep), ``refine_optimizer_state`` the L-BFGS state of each member,
    ``refine_best`` their best validation losses; ``best_state``/``best_val``/
    ``best_epoch``: the weights with the lowest validation loss so far; ``history``: the
    learning curve; the optimiser, scheduler and random-generator states continue the run
    bit for bit."""

    config_json: str
    model_json: str
    phase: str = "adam"
    epoch: int = 0
    model_state: dict[str, torch.Tensor] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_val: float = math.inf
    best_epoch: int = -1
    history: dict[str, list[float]] = field(default_factory=_empty_history)
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None
    generator_state: torch.Tensor | None = None
    torch_rng_state: torch.Tensor | None = None
    kalman_epochs: int = 0
    kalman_state: list[dict[str, Any]] | None = None
    kalman_generator_state: torch.Tensor | None = None
    refine_iterations: int = 0
    refine_best: list[float] | None = None
    refine_optimizer_state: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "checkpoint") -> TrainingState:
        if d.get("format") != CHECKPOINT_FORMAT:
            raise NNMDError(f"{where} is not an nnmd-lammps checkpoint")
        if d.get("version") == 1:
            d = _from_version_1(d, where)
        if d.get("version") != CHECKPOINT_VERSION:
            raise NNMDError(
                f"{where}: checkpoint version {d.get('version')} is not supported "
                f"(this nnmd-lammps writes version {CHECKPOINT_VERSION})"
            )
        known = {f.name for f in fields(cls)}
        try:
            state = cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as exc:
            raise NNMDError(f"{where}: incomplete checkpoint ({exc})") from None
        if state.phase not in PHASES:
            raise NNMDError(f"{where}: unknown training phase {state.phase!r}")
        return state

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_json)

    @property
    def model_metadata(self) -> dict[str, Any]:
        return json.loads(self.model_json)


def _from_version_1(d: dict[str, Any], where: str) -> dict[str, Any]:
    """A version-1 checkpoint as version 2: the same except during a committee's
    refinement, which version 1 did member by member (``refine_member``)."""
    d = dict(d)
    member = d.pop("refine_member", 0)
    committee = len(d.get("refine_best") or [0]) > 1
    if committee and d.get("phase") == "refine" and (member > 0 or d.get("refine_iterations")):
        raise NNMDError(
            f"{where} stopped within a committee's L-BFGS refinement, which earlier versions "
            "ran member by member; this version refines the members together: restart the "
            "run, or finish it with the nnmd-lammps that wrote it"
        )
    if committee or d.get("refine_optimizer_state") is None:
        d["refine_optimizer_state"] = None  # a finished committee's: its last member's
    else:
        d["refine_optimizer_state"] = [d["refine_optimizer_state"]]
    d["version"] = CHECKPOINT_VERSION
    return d


def save_checkpoint(path: str | Path, state: TrainingState) -> None:
    """Write ``state`` atomically (a kill leaves the previous checkpoint intact)."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save(state.to_dict(), tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> TrainingState:
    path = Path(path)
    if not path.exists():
        raise NNMDError(f"--resume: no checkpoint in {path.parent}")
    try:
        d = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises many types for corrupt files
        raise NNMDError(f"{path}: unreadable checkpoint ({str(exc).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise NNMDError(f"{path} is not an nnmd-lammps checkpoint")
    return TrainingState.from_dict(d, str(path))


def config_differences(
    old: dict[str, Any], new: dict[str, Any], allowed: set[tuple[str, str]]
) -> list[str]:
    """Keys (``section.key``) whose values differ between two config dicts, except the
    ``allowed`` (section, key) pairs."""
    diffs = []
    for section in set(old) | set(new):
        a, b = old.get(section), new.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            for k in set(a) | set(b):
                if a.get(k) != b.get(k) and (section, k) not in allowed:
                    diffs.append(f"{section}.{k}")
        elif a != b:
            diffs.append(section)
    return sorted(diffs)
