"""The training loop: from a configuration to a model file (docs/training.md).

The symmetry functions and their derivatives dG/dd are either computed once per structure
and kept (``training.data_mode: memory``, :class:`.tensors.TrainingData`; a step then
costs little more than the networks) or computed per batch from the raw structures in
background worker processes (``stream``, :mod:`.streaming`; memory independent of the
size of the data set); ``auto`` chooses by an estimate of the memory. A training step
evaluates the networks with explicit input gradients (differentiable in the weights) and
contracts dE/dG with dG/dd for the forces (:mod:`.loss`). Adam epochs are followed by an
optional L-BFGS refinement on the full training set (accumulated over parts). Under
torchrun the work is data-parallel over ranks (:mod:`.distributed`): each rank computes its
share of every global batch, gradients and loss sums are added over the ranks, rank 0
logs and writes. Every epoch ends with an atomic checkpoint (:mod:`.checkpoint`) from
which ``--resume`` continues exactly.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..data.dataset import Dataset
from ..descriptors.calculator import DescriptorCalculator
from ..descriptors.extrapolation import TrainingRange
from ..descriptors.generation import min_distances
from ..descriptors.neighbors import pair_counts
from ..descriptors.spec import DescriptorSpec, sort_elements
from ..errors import NNMDError
from ..model.modelfile import (
    LoadedModel,
    description_from_metadata,
    load_model,
    metadata_dict,
    save_model,
)
from ..model.networks import (
    HDNNP,
    ElementNetwork,
    ModelDescription,
    NetworkSpec,
    ScalingParams,
    build_hdnnp,
)
from ..model.repulsion import ZBLRepulsion, default_zbl_radii
from .checkpoint import (
    CHECKPOINT,
    TrainingState,
    config_differences,
    load_checkpoint,
    save_checkpoint,
)
from .config import (
    REFINE_BLOCK,
    Config,
    dump_config,
    kalman_settings,
    repulsion_settings,
    resolve,
)
from .datasets import bootstrap_counts, load_datasets, subtract_repulsion
from .distributed import Distributed, reduce_gradients, threads_per_rank
from .initialisation import StatisticsOf, build_descriptors, fit_reference_energies, scaling_from
from .kalman import KalmanFilter, jacobians
from .lockstep import lockstep_steps
from .loss import LossWeights, loss_terms, member_losses, predict_batch, weight_penalty
from .metrics import error_metrics
from .statistics import (
    DescriptorStatistics,
    merge_all,
    scaling_from_statistics,
    training_range_from_statistics,
)
from .streaming import (
    MemorySource,
    PredictionTasks,
    SetInfo,
    StreamSource,
    StructureTasks,
    TaskRunner,
    chunk_tasks,
    estimated_memory_bytes,
    resolve_workers,
    statistics_tasks,
)
from .tensors import TrainingData

#: A set's batches: precomputed (memory mode) or computed per batch (stream mode)
Source = MemorySource | StreamSource
#: Atoms per chunk of the final predictions (one task of a worker)
PREDICT_CHUNK_ATOMS = 2000

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def training_range_of(G: torch.Tensor) -> TrainingRange:
    """The training range of one element's descriptors; an element without training atoms
    gets the empty range [0, 0], so that every atom of it is reported as extrapolating."""
    if G.shape[0] == 0:
        zeros = [0.0] * G.shape[1]
        return TrainingRange(zeros, zeros, zeros, zeros)
    return TrainingRange.of(G)


@dataclass
class _Predicted:
    """What the metrics and parity plots need of a prediction."""

    energy: float
    forces: np.ndarray | None
    stress: np.ndarray | None


@torch.no_grad()
def rescale_layers(
    model: HDNNP,
    state: dict[str, torch.Tensor],
    max_spread: float | None = None,
    means: list[torch.Tensor] | None = None,
) -> list[int]:
    """Load the weights ``state`` of a model with another descriptor scaling into
    ``model`` (whose scaling buffers hold the new scaling) so that every network computes
    the same function of the raw descriptors: with x = (G - a) f + t the old and x' the
    new scaled input, x = r x' + c (r = f / f', c = (a' - a) f + t - t' r), so the first
    layer becomes W' = W diag(r), b' = b + W c; likewise the output layer for the new
    energy transform E = out s' + m' (W' = W s/s', b' = b s/s' + (m - m')/s', times the
    fan-in with normalised nodes).

    ``max_spread``: an input whose scale grew by more than this factor (r > max_spread:
    the new data spread that function far wider than the old training data did) has its
    first-layer column reset to zero, its contribution at the new data's mean
    (``means[e]``, raw G of element index e) moved into the bias: the slope learned
    from an almost constant input is dropped instead of being applied far outside the
    range it was fitted on, where it saturates the network. Returns the number of reset
    inputs per element (the largest over its committee members)."""
    if max_spread is not None and means is None:
        raise ValueError("rescale_layers: max_spread needs the new data's means")
    new_buffers = {
        k: v.clone()
        for k, v in model.state_dict().items()
        if k.rsplit(".", 1)[-1] in SCALING + ENERGY
    }
    model.load_state_dict(state)
    reset = [0] * len(model.networks)
    for e_idx, element_nets in enumerate(model.networks):
        for name, module in element_nets.named_modules():
            if not isinstance(module, ElementNetwork):
                continue
            full = f"networks.{e_idx}.{name}" if name else f"networks.{e_idx}"
            a, f, t = module.g_shift.clone(), module.g_factor.clone(), module.g_target.clone()
            a2, f2, t2 = (new_buffers[f"{full}.{b}"] for b in SCALING)
            r = f / f2
            c = (a2 - a) * f + t - t2 * r
            first = module.linears[0]
            first.bias.add_(first.weight @ c)
            first.weight.mul_(r)
            if max_spread is not None:
                wide = r.abs() > max_spread
                if bool(wide.any()):
                    x_mean = (means[e_idx] - a2) * f2 + t2
                    first.bias.add_(first.weight[:, wide] @ x_mean[wide])
                    first.weight[:, wide] = 0.0
                    reset[e_idx] = max(reset[e_idx], int(wide.sum()))
            module.g_shift.copy_(a2)
            module.g_factor.copy_(f2)
            module.g_target.copy_(t2)
            # E = out s + m: the output layer maps onto the new s', m' exactly
            s, m = module.e_scale.clone(), module.e_shift.clone()
            s2, m2 = (new_buffers[f"{full}.{b}"] for b in ENERGY)
            last = module.linears[-1]
            norm = module.fan_in[-1] if module.normalize_nodes else 1.0
            last.weight.mul_(s / s2)
            last.bias.mul_(s / s2).add_(norm * (m - m2) / s2)
            module.e_scale.copy_(s2)
            module.e_shift.copy_(m2)
    return reset


#: the scaling buffers of an ElementNetwork: shift a, factor f, target t
SCALING = ("g_shift", "g_factor", "g_target")
#: its energy transform: E = output x e_scale + e_shift
ENERGY = ("e_scale", "e_shift")


class Trainer:
    """One training run in the directory ``out`` (model.pt, checkpoint.pt, train.log,
    metrics.json, plots). Under torchrun, one Trainer per rank; rank 0 logs and writes."""

    def __init__(
        self, cfg: Config, out: str | Path, resume: bool = False, progress: bool = True
    ) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.resume = resume
        self._progress_wanted = progress
        self.progress = False
        self.dist = Distributed()
        self._logfile = None
        self._dtype = torch.float64  # the training dtype (set by run)
        self._workers = 0  # worker processes per rank (set by run)
        self._infos: dict[str, SetInfo] = {}  # loss normalisation data of the loss sets

    def log(self, msg: str) -> None:
        if not self.dist.is_main:
            return
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        if self._logfile is not None:
            self._logfile.write(line + "\n")
            self._logfile.flush()
        if not self.progress:
            print(line, flush=True)
        else:
            from tqdm import tqdm

            tqdm.write(line)

    def _log_quietly(self, msg: str) -> None:
        if self._logfile is not None:
            self._logfile.write(msg + "\n")
            self._logfile.flush()

    # checkpoints ------------------------------------------------------------------------------
    def _save(self, state: TrainingState) -> None:
        if self.dist.is_main:
            save_checkpoint(self.out / CHECKPOINT, state)

    def _check_same_config(self, ck: TrainingState) -> None:
        allowed = {
            ("training", "epochs"),
            ("training", "kalman"),
            ("training", "refine"),
            ("training", "workers"),
            ("training", "data_mode"),
            ("training", "memory_budget_gb"),
        }
        diffs = config_differences(ck.config, self.cfg.to_dict(), allowed)
        if diffs:
            raise NNMDError(
                f"--resume: the config differs from the run in {self.out} in "
                f"{', '.join(diffs)} (only training.epochs, training.kalman, training.refine, "
                "training.workers, training.data_mode and training.memory_budget_gb may "
                "change)"
            )

    def _initial_state(self) -> TrainingState | None:
        """The checkpoint to resume from (None for a new run), read by rank 0 and sent to
        every rank (no shared file system needed); errors are raised on every rank."""
        result: tuple[str, Any] = ("ok", None)
        if self.dist.is_main:
            try:
                if not self.resume and (self.out / CHECKPOINT).exists():
                    raise NNMDError(
                        f"{self.out} already holds a training run; use --resume to continue "
                        "it or choose another --out"
                    )
                if self.resume:
                    result = ("ok", load_checkpoint(self.out / CHECKPOINT))
            except NNMDError as exc:
                result = ("error", str(exc))
        kind, value = self.dist.broadcast_object(result)
        if kind == "error":
            raise NNMDError(value)
        return value

    # main -----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.dist = Distributed.from_environment(self.cfg.training.device)
        try:
            if self.dist.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                self._logfile = (self.out / "train.log").open("a")
            self.progress = self._progress_wanted and sys.stderr.isatty() and self.dist.is_main
            return self._run()
        finally:
            if self._logfile is not None:
                self._logfile.close()
                self._logfile = None
            self.dist.close()

    def _run(self) -> dict[str, Any]:
        cfg, tc, dist = self.cfg, self.cfg.training, self.dist
        ck = self._initial_state()
        if ck is not None:
            self._check_same_config(ck)
        if tc.threads:
            torch.set_num_threads(tc.threads)
        elif dist.world > 1:
            torch.set_num_threads(threads_per_rank(dist))
        if tc.device.startswith("cuda") and not torch.cuda.is_available():
            raise NNMDError("training.device is cuda but torch sees no CUDA device")
        device = dist.device
        dtype = DTYPES[tc.dtype]
        t_start = time.perf_counter()
        self.log(
            f"nnmd-lammps {__version__}: training in {self.out} "
            f"({'resumed' if ck else 'new run'}), device {device}, {tc.dtype}"
            + (f", {dist.world} ranks ({dist.local_world} per node)" if dist.world > 1 else "")
        )
        sets = load_datasets(cfg, self.log)
        elements = cfg.elements or sort_elements(
            set().union(*(s.elements() for s in sets.values()))
        )
        elements = sort_elements(elements)
        for name, ds in sets.items():
            extra = ds.elements() - set(elements)
            if extra:
                raise NNMDError(
                    f"the {name} set contains element(s) {sorted(extra)} not listed "
                    f"in 'elements' {elements}"
                )
        torch.manual_seed(tc.seed)
        initial = self._initial_model(elements) if ck is None and tc.initial_model else None
        if ck is not None:
            resumed_description = description_from_metadata(ck.model_metadata)
        elif initial is not None:
            resumed_description = initial.description
        else:
            resumed_description = None

        @functools.cache
        def shortest_distance() -> float:
            """Shortest interatomic distance in the training set (computed at most once,
            each rank on its share of the structures)."""
            train = sets["train"].structures
            mine = [train[k] for k in dist.share(np.arange(len(train)))]
            local = math.inf
            if mine:
                try:
                    local = min_distances(mine, elements, cfg.cutoff)
                except NNMDError:  # no pair within the cutoff in this share
                    pass
            best = min(dist.all_gather_objects(local))
            if not math.isfinite(best):
                return min_distances(train, elements, cfg.cutoff)  # raises the error
            return best

        repulsion = self._repulsion(shortest_distance, resumed_description)
        # the networks learn the residual of the reference data after the repulsion
        fit_sets = (
            sets
            if repulsion is None
            else {name: subtract_repulsion(ds, repulsion, elements) for name, ds in sets.items()}
        )
        # the sets the loss is evaluated on (the test set only enters the final metrics)
        loss_sets = {
            name: ds for name, ds in fit_sets.items() if name in ("train", "validation") and len(ds)
        }
        workers = resolve_workers(tc.workers, threads_per_rank(dist))
        statistics = self._statistics(loss_sets["train"], elements, workers)
        kept_statistics: list[DescriptorStatistics] = []
        if initial is not None:
            spec = initial.spec
        elif ck is None:
            spec = build_descriptors(
                cfg,
                elements,
                fit_sets["train"],
                self.log,
                shortest_distance,
                statistics,
                kept_statistics,
            )
        else:
            meta = ck.model_metadata
            spec = DescriptorSpec.from_dict(
                {"elements": meta["elements"], "functions": meta["symmetry_functions"]}
            )
        calc = DescriptorCalculator(spec)
        mode = self._data_mode(list(loss_sets.values()), spec, elements, dtype)
        counts = (
            bootstrap_counts(len(loss_sets["train"]), cfg.network.committee, tc.seed)
            if cfg.network.bootstrap
            else None
        )
        runner = TaskRunner(StructureTasks(loss_sets, spec, elements, dtype, counts), workers)
        infos = {
            name: SetInfo.of(ds, counts if name == "train" else None)
            for name, ds in loss_sets.items()
        }
        t0 = time.perf_counter()
        sources: dict[str, Source] = {}
        train_G: list[torch.Tensor] | None = None
        if mode == "memory":
            # computed here, not by the workers: tensors that arrive from the workers (in
            # shared memory) leave this process's heap small, and the full-batch L-BFGS
            # temporaries (tens of MB) then cost fresh pages (page faults) at every step
            for name, ds in loss_sets.items():
                td = TrainingData(ds, calc, elements, dtype, device)
                if name == "train" and counts is not None:
                    td.member_weight = torch.tensor(counts, dtype=dtype, device=device)
                sources[name] = MemorySource(td)
            train_G = sources["train"].data.G
            self.log(
                f"descriptors and derivatives of all structures: {time.perf_counter() - t0:.1f} s"
            )
        else:
            if not tc.threads and workers > 0:
                # the workers use the CPUs; more threads here only compete with them (on a
                # busy 2-CPU machine 2 threads made the training steps 4x slower than 1)
                torch.set_num_threads(max(1, threads_per_rank(dist) - workers))
            for name, ds in loss_sets.items():
                sources[name] = StreamSource(runner, name, ds.n_atoms, device)
            self.log(
                f"descriptors and derivatives: computed per batch by {workers} worker "
                f"process{'es' if workers != 1 else ''} per rank"
            )

        @functools.cache
        def train_statistics() -> list[DescriptorStatistics]:
            """Statistics of the final functions on the training atoms (from the pruning
            pass when there was one)."""
            if kept_statistics:
                return kept_statistics
            return statistics(spec, False)

        def train_ranges() -> dict[str, TrainingRange]:
            if train_G is not None:
                return {e: training_range_of(train_G[k]) for k, e in enumerate(elements)}
            st = train_statistics()
            return {e: training_range_from_statistics(st[k]) for k, e in enumerate(elements)}

        def energy_transform() -> tuple[dict[str, float], float]:
            mu, scale = fit_reference_energies(fit_sets["train"], elements)
            self.log(
                "reference energies (least squares): "
                + ", ".join(f"{e} {m:.6f} eV" for e, m in mu.items())
                + f"; per-atom residual RMS "
                f"{scale * 1000:.2f} meV (network output scale)"
            )
            return mu, scale

        def descriptor_scaling() -> dict[str, ScalingParams]:
            if train_G is not None:
                return {
                    e: scaling_from(train_G[k], cfg.network.scaling) for k, e in enumerate(elements)
                }
            st = train_statistics()
            return {
                e: scaling_from_statistics(st[k], cfg.network.scaling)
                for k, e in enumerate(elements)
            }

        if initial is not None:
            # warm start: symmetry functions, networks, committee and repulsion of the initial
            # model; the descriptor scaling, the energy transform and the training range
            # follow this run's training data (a model trained on a few near-identical
            # structures has a residual scale far below that of broader data), and
            # rescale_layers keeps the networks' function unchanged under both
            description = copy.deepcopy(initial.description)
            description.training_range = train_ranges()
            description.energy_shift, description.energy_scale = energy_transform()
            description.scaling = descriptor_scaling()
        elif ck is None:
            description = ModelDescription()
            description.energy_shift, description.energy_scale = energy_transform()
            hidden = cfg.network.hidden
            for e in elements:
                description.networks[e] = NetworkSpec(
                    [spec.num_functions(e), *hidden, 1],
                    [cfg.network.activation] * len(hidden) + ["identity"],
                )
            description.scaling = descriptor_scaling()
            description.committee = cfg.network.committee
            description.training_range = train_ranges()
            description.repulsion = None if repulsion is None else repulsion.to_dict()
            if description.committee > 1:
                self.log(
                    f"committee: {description.committee} networks per element"
                    + (", each on its own bootstrap resample" if cfg.network.bootstrap else "")
                )
        else:
            description = resumed_description
        model = build_hdnnp(elements, description, dtype=dtype).to(device)
        if initial is not None:
            means = [
                torch.tensor(description.scaling[e].gmean, dtype=dtype, device=device)
                for e in elements
            ]
            reset = rescale_layers(
                model, initial.module.state_dict(), tc.warm_start_max_spread, means
            )
            if any(reset):
                self.log(
                    "warm start: first-layer weights reset for inputs whose spread grew more "
                    f"than {tc.warm_start_max_spread:g}x over the initial model's data: "
                    + ", ".join(f"{e} {n}" for e, n in zip(elements, reset, strict=True))
                )
        meta_json = json.dumps(metadata_dict(spec, description, dtype=tc.dtype), allow_nan=False)
        weights = LossWeights(
            tc.energy_weight,
            tc.force_weight,
            tc.stress_weight,
            tc.huber_energy,
            tc.huber_force,
            tc.huber_stress,
        )
        n_params = sum(p.numel() for p in model.parameters())
        widths = "-".join(map(str, cfg.network.hidden))
        shapes = " ".join(f"{e}:{spec.num_functions(e)}-{widths}-1" for e in elements)
        self.log(f"networks: {shapes}, {n_params} parameters")
        huber = [
            f"{name} {delta:g} {unit}"
            for name, delta, unit in (
                ("energy", tc.huber_energy, "eV/atom"),
                ("forces", tc.huber_force, "eV/Angstrom"),
                ("stress", tc.huber_stress, "eV/Angstrom^3"),
            )
            if delta is not None
        ]
        if huber:
            self.log(
                "loss: pseudo-Huber where a width is set (" + ", ".join(huber) + "), squared "
                "error elsewhere"
                + ("; the Kalman filter fits squared errors" if tc.kalman.epochs else "")
            )

        if ck is None:
            ck = TrainingState(json.dumps(cfg.to_dict()), meta_json)
        self._dtype, self._infos, self._workers = dtype, infos, workers
        self._train_cost = self._structure_costs(loss_sets["train"], calc.cutoff)
        if tc.kalman.epochs and dist.world > 1:
            raise NNMDError(
                "config key 'training.kalman.epochs': the Kalman filter runs on one process "
                "(not under torchrun); set it to 0 or train without torchrun"
            )
        state = self._train_adam(model, sources, weights, ck)
        state = self._train_kalman(model, sources, weights, state, description.energy_scale)
        state = self._refine(model, sources, weights, state)
        model.load_state_dict(state.best_state)
        del sources, runner
        return self._finish(model, spec, description, sets, state, time.perf_counter() - t_start)

    def _statistics(self, train: Dataset, elements: list[str], workers: int) -> StatisticsOf:
        """Descriptor statistics of the training set for a spec: chunks computed by the
        workers, each rank its share of the chunks, merged in a fixed order."""
        dist = self.dist

        def statistics(spec: DescriptorSpec, correlations: bool) -> list[DescriptorStatistics]:
            t0 = time.perf_counter()
            runner = TaskRunner(
                StructureTasks({"train": train}, spec, elements, torch.float64), workers
            )
            tasks = statistics_tasks(train, "train", correlations)[dist.rank :: dist.world]
            local = [
                DescriptorStatistics.empty(spec.num_functions(e), correlations) for e in elements
            ]
            for part in runner.run(tasks):
                local = [a.merge(b) for a, b in zip(local, part, strict=True)]
            merged = merge_all(dist.all_gather_objects(local))
            self.log(
                f"descriptor statistics of the training set"
                f"{' with correlations' if correlations else ''}: "
                f"{time.perf_counter() - t0:.1f} s"
            )
            return merged

        return statistics

    def _structure_costs(self, train: Dataset, cutoff: float) -> np.ndarray:
        """The work of a training step per structure, for dealing each global batch to
        the ranks (:meth:`Distributed.balanced_share`): its atoms plus its neighbour pairs
        within the descriptor cutoff (each rank counts its share, gathered); ones for a
        single process, which needs none."""
        dist = self.dist
        if dist.world == 1:
            return np.ones(len(train))
        mine = dist.share(np.arange(len(train)))
        pairs = pair_counts([train.structures[k] for k in mine], cutoff)
        cost = np.zeros(len(train))
        for r, part in enumerate(dist.all_gather_objects(pairs)):
            cost[r :: dist.world] = part  # rank r's share (Distributed.share)
        return cost + train.n_atoms

    def _data_mode(
        self, loss_sets: list[Dataset], spec: DescriptorSpec, elements: list[str], dtype
    ) -> str:
        """``training.data_mode``, with auto resolved by the estimated memory of the
        precomputed descriptors (times the ranks on this node) against the budget."""
        tc = self.cfg.training
        if tc.data_mode != "auto":
            self.log(f"descriptors: {tc.data_mode} mode (training.data_mode)")
            return tc.data_mode
        itemsize = torch.finfo(dtype).bits // 8
        estimate = estimated_memory_bytes(loss_sets, spec, elements, itemsize)
        total = estimate * self.dist.local_world
        mode = "memory" if total <= tc.memory_budget_gb * 1e9 else "stream"
        per_node = f" x {self.dist.local_world} ranks" if self.dist.local_world > 1 else ""
        self.log(
            f"descriptors: {mode} mode (estimated {estimate / 1e9:.2f} GB{per_node} for the "
            f"descriptors and derivatives of the training and validation sets; "
            f"training.memory_budget_gb {tc.memory_budget_gb:g})"
        )
        return mode

    def _initial_model(self, elements: list[str]) -> LoadedModel:
        """The model of ``training.initial_model``, checked against this configuration (same
        elements, committee, hidden layers and activation)."""
        cfg = self.cfg
        path = resolve(cfg, cfg.training.initial_model)
        loaded = load_model(path)
        where = f"training.initial_model ({path})"
        if loaded.spec.elements != elements:
            raise NNMDError(
                f"{where} is for elements {loaded.spec.elements}, this run for {elements}"
            )
        desc = loaded.description
        if desc.committee != cfg.network.committee:
            raise NNMDError(
                f"{where} has a committee of {desc.committee}, but network.committee is "
                f"{cfg.network.committee}"
            )
        for e in elements:
            net = desc.networks[e]
            if net.layers[1:-1] != list(cfg.network.hidden):
                raise NNMDError(
                    f"{where}: the {e} network has hidden layers {net.layers[1:-1]}, but "
                    f"network.hidden is {list(cfg.network.hidden)}"
                )
            if any(a != cfg.network.activation for a in net.activations[:-1]):
                raise NNMDError(
                    f"{where}: the {e} network uses activation {net.activations[0]!r}, but "
                    f"network.activation is {cfg.network.activation!r}"
                )
        wanted = repulsion_settings(cfg) is not None
        if wanted != (desc.repulsion is not None):
            raise NNMDError(
                f"{where} {'has no' if wanted else 'has a'} repulsion baseline, but "
                f"network.repulsion is {cfg.network.repulsion!r}"
            )
        self.log(
            f"warm start from {path}: its symmetry functions"
            + (", repulsion" if wanted else "")
            + " and network function (descriptor scaling and energy transform follow the "
            "new data, the first and last layers adapted exactly)"
        )
        return loaded

    def _repulsion(
        self, shortest_distance: Callable[[], float], resumed: ModelDescription | None
    ) -> ZBLRepulsion | None:
        """The repulsion baseline: the resumed run's, or as configured (radii from the
        shortest distance in the training data unless given)."""
        if resumed is not None:
            return None if resumed.repulsion is None else ZBLRepulsion.from_dict(resumed.repulsion)
        settings = repulsion_settings(self.cfg)
        if settings is None:
            return None
        inner, outer = settings["inner"], settings["outer"]
        if inner is None:
            dmin = shortest_distance()
            inner, outer = default_zbl_radii(dmin)
            how = f"from the shortest training distance {dmin:.3f} A"
        else:
            how = "as configured"
        rep = ZBLRepulsion(inner, outer)
        self.log(f"repulsion: ZBL, switched off between {inner:.3f} and {outer:.3f} A ({how})")
        return rep

    def _whole(self, source: Source) -> bool:
        """Whether the whole set is one part here (then its own loss normalisation is the
        set's, computed as a single batch's)."""
        return self.dist.world == 1 and isinstance(source, MemorySource)

    def _set_share(self, source: Source) -> np.ndarray | None:
        """This rank's structures of a whole set (None: all, one process)."""
        return None if self.dist.world == 1 else self.dist.share(np.arange(source.n))

    def _evaluate(self, model: HDNNP, name: str, source: Source, weights: LossWeights) -> float:
        """The loss of a whole set: the committee's, the mean of its members' losses."""
        return float(np.mean(self._member_evaluations(model, name, source, weights)))

    def _member_evaluations(
        self, model: HDNNP, name: str, source: Source, weights: LossWeights
    ) -> list[float]:
        """Every committee member's loss of a whole set (one value for a single network),
        in one pass (each rank its share, in parts, summed over ranks)."""
        norm = (
            None
            if self._whole(source)
            else self._infos[name].norm(None, self._dtype, self.dist.device)
        )
        total = torch.zeros(model.committee, dtype=self._dtype, device=self.dist.device)
        with torch.no_grad():
            for part in source.parts(self._set_share(source)):
                total = total + member_losses(model, part, weights, norm)
        self.dist.all_reduce_sum_(total)
        return total.tolist()

    def _train_adam(
        self,
        model: HDNNP,
        sources: dict[str, Source],
        weights: LossWeights,
        state: TrainingState,
    ) -> TrainingState:
        """Adam epochs from ``state`` (a new run's empty state or a checkpoint); returns
        the state at the start of the refinement phase. A step is one global batch of
        ``batch_size`` structures; with several ranks each computes its share and the
        gradients are summed (normalised by the whole global batch)."""
        tc = self.cfg.training
        dist = self.dist
        train = sources["train"]
        val = sources.get("validation")
        params = list(model.parameters())
        opt = torch.optim.Adam(
            model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay
        )
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=tc.lr_factor, patience=tc.lr_patience, min_lr=tc.lr_min
        )
        gen = torch.Generator().manual_seed(tc.seed)
        resumed = state.model_state is not None
        if not resumed:
            state.best_state = copy.deepcopy(model.state_dict())
        else:
            model.load_state_dict(state.model_state)
            state.history = {k: list(v) for k, v in state.history.items()}
            if state.optimizer_state is not None and state.phase == "adam":
                opt.load_state_dict(state.optimizer_state)
                sched.load_state_dict(state.scheduler_state)
            gen.set_state(state.generator_state)
            torch.set_rng_state(state.torch_rng_state)
            self.log(
                f"resuming after epoch {state.epoch} (phase {state.phase}, best validation "
                f"loss {state.best_val:.4g} at epoch {state.best_epoch})"
            )
        if state.phase != "adam":
            return state
        history = state.history
        start = state.epoch
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(
                total=tc.epochs, initial=start, desc="training", unit="epoch", dynamic_ncols=True
            )
        t0 = time.perf_counter() - (history["time_s"][-1] if history["time_s"] else 0.0)
        stopped = False
        try:
            for epoch in range(start, tc.epochs):
                model.train()
                perm = torch.randperm(train.n, generator=gen).numpy()
                steps = [perm[k : k + tc.batch_size] for k in range(0, train.n, tc.batch_size)]
                total, count = 0.0, 0
                shares = [dist.balanced_share(s, self._train_cost) for s in steps]
                for sids, b in zip(steps, train.batches(shares), strict=True):
                    opt.zero_grad(set_to_none=True)
                    norm = (
                        None
                        if dist.world == 1
                        else self._infos["train"].norm(sids, self._dtype, dist.device)
                    )
                    loss = loss_terms(model, b, weights, norm)
                    if loss.requires_grad:
                        loss.backward()
                    loss_value = reduce_gradients(params, loss, dist)
                    opt.step()
                    total += float(loss_value) * len(sids)
                    count += len(sids)
                train_loss = total / max(count, 1)
                val_loss = (
                    self._evaluate(model, "validation", val, weights)
                    if val is not None
                    else train_loss
                )
                sched.step(val_loss)
                lr = opt.param_groups[0]["lr"]
                for key, v in (
                    ("epoch", epoch + 1),
                    ("train_loss", train_loss),
                    ("val_loss", val_loss),
                    ("lr", lr),
                    ("time_s", time.perf_counter() - t0),
                ):
                    history[key].append(v)
                if val_loss < state.best_val:
                    state.best_val, state.best_epoch = val_loss, epoch + 1
                    state.best_state = copy.deepcopy(model.state_dict())
                stop = (
                    epoch + 1 - state.best_epoch > tc.early_stopping_patience
                    and tc.early_stopping_patience > 0
                )
                state.phase = self._after_adam() if (stop or epoch + 1 == tc.epochs) else "adam"
                state.epoch = epoch + 1
                state.model_state = model.state_dict()
                state.optimizer_state = opt.state_dict()
                state.scheduler_state = sched.state_dict()
                state.generator_state = gen.get_state()
                state.torch_rng_state = torch.get_rng_state()
                self._save(state)
                msg = (
                    f"epoch {epoch + 1:5d}  train loss {train_loss:.4e}  val loss "
                    f"{val_loss:.4e}  lr {lr:.2e}"
                )
                self._log_quietly(msg)
                if bar is not None:
                    bar.set_postfix_str(f"train {train_loss:.3e} val {val_loss:.3e} lr {lr:.1e}")
                    bar.update(1)
                elif dist.is_main and ((epoch + 1) % 10 == 0 or epoch == start):
                    print(msg, flush=True)
                if stop:
                    self.log(
                        f"early stopping after epoch {epoch + 1}: no validation "
                        f"improvement for {tc.early_stopping_patience} epochs"
                    )
                    stopped = True
                    break
        except KeyboardInterrupt:
            self.log(
                "interrupted: the last completed epoch is in the checkpoint; continue with --resume"
            )
            raise
        finally:
            if bar is not None:
                bar.close()
        if not stopped:
            self.log(
                f"finished {tc.epochs} epochs; best validation loss {state.best_val:.4e} "
                f"at epoch {state.best_epoch}"
            )
        state.phase = self._after_adam()
        return state

    def _after_adam(self) -> str:
        return "kalman" if self.cfg.training.kalman.epochs > 0 else "refine"

    def _train_kalman(
        self,
        model: HDNNP,
        sources: dict[str, Source],
        weights: LossWeights,
        state: TrainingState,
        energy_scale: float,
    ) -> TrainingState:
        """Extended-Kalman-filter epochs (docs/training.md, "Kalman filter"), starting from
        the best Adam weights: one filter per committee member, its parameters in one group
        per element (element-decoupled). Measurements are in units of the network output
        scale ``energy_scale`` (eV), weighted by the square roots of the loss weights."""
        kc = self.cfg.training.kalman
        if state.phase == "refine" and state.refine_iterations == 0:
            # a resume that asks for more Kalman epochs before the refinement has begun
            state.phase = "kalman"
        if state.phase != "kalman":
            return state
        if state.kalman_epochs >= kc.epochs:  # a resume asked for no more epochs
            state.phase = "refine"
            return state
        train = sources["train"]
        val = sources.get("validation")
        members = model.committee
        filters = [
            KalmanFilter(self._member_groups(model, m), kalman_settings(self.cfg))
            for m in range(members)
        ]
        gen = torch.Generator().manual_seed(self.cfg.training.seed + 1)
        if state.kalman_state is None:
            model.load_state_dict(state.best_state)
        else:
            model.load_state_dict(state.model_state)
            for f, fs in zip(filters, state.kalman_state, strict=True):
                f.load_state_dict(fs)
            gen.set_state(state.kalman_generator_state)
        history = state.history
        self.log(
            f"Kalman filter: {kc.epochs} epochs (done {state.kalman_epochs}), "
            f"{members} filter{'s' if members > 1 else ''} of "
            f"{filters[0].sizes} parameters, force groups of {kc.force_group_atoms} atoms"
        )
        t0 = time.perf_counter()
        for epoch in range(state.kalman_epochs, kc.epochs):
            perm = torch.randperm(train.n, generator=gen).numpy()
            for b in train.batches([perm[k : k + 1] for k in range(train.n)]):
                self._kalman_update(model, filters, b, weights, energy_scale, gen)
            train_loss = self._evaluate(model, "train", train, weights)
            val_loss = (
                self._evaluate(model, "validation", val, weights) if val is not None else train_loss
            )
            improved = val_loss < state.best_val
            if improved:
                state.best_val = val_loss
                state.best_state = copy.deepcopy(model.state_dict())
            history.setdefault("kalman_epoch", []).append(epoch + 1)
            history.setdefault("kalman_train_loss", []).append(train_loss)
            history.setdefault("kalman_val_loss", []).append(val_loss)
            state.kalman_epochs = epoch + 1
            state.phase = "kalman" if epoch + 1 < kc.epochs else "refine"
            state.model_state = model.state_dict()
            state.kalman_state = [f.state_dict() for f in filters]
            state.kalman_generator_state = gen.get_state()
            self._save(state)
            self.log(
                f"Kalman epoch {epoch + 1:4d}  train loss {train_loss:.4e}  val loss "
                f"{val_loss:.4e}{'  *' if improved else ''}"
            )
        self.log(
            f"Kalman filter done in {time.perf_counter() - t0:.0f} s; best validation loss "
            f"{state.best_val:.4e}"
        )
        state.phase = "refine"
        return state

    @staticmethod
    def _member_groups(model: HDNNP, member: int | None) -> list[list[torch.Tensor]]:
        """Parameters of committee member ``member`` (of the single network for None or
        a model without committee), one group per element."""
        single = member is None or model.committee == 1
        return [
            list((net if single else net.members[member]).parameters()) for net in model.networks
        ]

    def _kalman_update(
        self,
        model: HDNNP,
        filters: list[KalmanFilter],
        b,
        weights: LossWeights,
        energy_scale: float,
        gen: torch.Generator,
    ) -> None:
        """The updates of one structure ``b`` (a batch of one): energy per atom, then the
        force groups. A force group's measurement is sum_(atom, component) s F with s the
        sign of its error, divided by the number of components: its error is the group's
        mean absolute force error (the aggregated measurement of RLEKF, Hu et al.,
        arXiv:2212.06989), one Jacobian column per group instead of one per component."""
        kc = self.cfg.training.kalman
        natoms = float(b.natoms[0])

        def update(y: torch.Tensor, target: torch.Tensor) -> None:
            """y (M, k) predictions, target (M, k); one update per filter."""
            err = (target - y).detach()
            for f, H, e in zip(filters, jacobians(filters, y), err, strict=True):
                f.update(H, e)

        scale = 1.0 / energy_scale
        if weights.energy > 0:
            preds = predict_batch(model, b, forces=False)
            w = math.sqrt(weights.energy) * scale / natoms
            y = torch.stack([E for E, _, _ in preds]) * w  # (M, 1)
            update(y, (b.energy * w).expand_as(y))
        if weights.force > 0 and bool(b.force_mask.any()):
            preds = predict_batch(model, b, forces=True)
            F = torch.stack([f for _, f, _ in preds])  # (M, N, 3)
            n = F.shape[1]
            order = torch.randperm(n, generator=gen)
            size = kc.force_group_atoms
            groups = [order[k : k + size] for k in range(0, n, size)]
            keep = max(1, round(kc.force_fraction * len(groups)))
            if keep < len(groups):
                pick = torch.randperm(len(groups), generator=gen)[:keep]
                groups = [groups[int(k)] for k in pick]
            w = math.sqrt(weights.force) * scale
            ys, ts = [], []
            for atoms in groups:
                sign = torch.sign((b.forces[atoms] - F[:, atoms]).detach())  # (M, g, 3)
                count = 3.0 * len(atoms)
                ys.append((sign * F[:, atoms]).sum((1, 2)) * (w / count))
                ts.append((sign * b.forces[atoms]).sum((1, 2)) * (w / count))
            update(torch.stack(ys, dim=1), torch.stack(ts, dim=1))

    def _refine(
        self,
        model: HDNNP,
        sources: dict[str, Source],
        weights: LossWeights,
        state: TrainingState,
    ) -> TrainingState:
        """L-BFGS on the full training set in blocks of REFINE_BLOCK iterations, keeping
        the weights with the best validation loss. A committee's members are independent
        problems, each with its own L-BFGS (its own line searches and curvature history;
        measured on the Li example, one L-BFGS over all members' weights at once converged
        more slowly per iteration), run in lockstep (:mod:`.lockstep`): one evaluation of
        the training set serves every member, so each member follows the path it would
        follow alone at a fraction of the cost. The loss and gradient of the full set are
        accumulated over parts (stream mode) and summed over ranks."""
        rc = self.cfg.training.refine
        M = model.committee
        if rc.iterations == 0 or rc.iterations <= state.refine_iterations:
            return state  # done (a resume may ask for more iterations than were done)
        dist = self.dist
        train = sources["train"]
        val = sources.get("validation")
        share = self._set_share(train)
        norm = (
            None
            if self._whole(train)
            else self._infos["train"].norm(None, self._dtype, dist.device)
        )
        model.load_state_dict(state.best_state)
        if state.refine_iterations and state.model_state is not None:
            model.load_state_dict(state.model_state)
        if state.refine_best is None:
            state.refine_best = [state.best_val] * M
        history = state.history
        # the Adam optimiser and scheduler states are not needed any more
        state.optimizer_state = state.scheduler_state = None
        members: list[int | None] = [None] if M == 1 else list(range(M))
        groups = [[p for g in self._member_groups(model, m) for p in g] for m in members]
        every = [p for g in groups for p in g]
        keys = [self._member_keys(model, m) for m in members]
        done = state.refine_iterations
        self.log(
            f"refinement: L-BFGS on the full training set, {rc.iterations} iterations"
            + (f" per committee member ({M}, in lockstep)" if M > 1 else "")
            + f" (done {done})"
        )
        optimizers = []
        for m, params in enumerate(groups):
            opt = torch.optim.LBFGS(
                params,
                lr=1.0,
                max_iter=REFINE_BLOCK,
                history_size=rc.history,
                line_search_fn="strong_wolfe",
                tolerance_grad=1e-12,
                tolerance_change=1e-15,
            )
            if done and state.refine_optimizer_state is not None:
                opt.load_state_dict(state.refine_optimizer_state[m])
            optimizers.append(opt)

        def evaluate() -> torch.Tensor:
            """Every member's training loss, gradients in .grad (summed over ranks)."""
            for p in every:
                p.grad = None
            total = torch.zeros(M, dtype=self._dtype, device=dist.device)
            for part in train.parts(share):
                losses = member_losses(model, part, weights, norm)
                if losses.requires_grad:
                    losses.sum().backward()
                total = total + losses.detach()
            total = reduce_gradients(every, total, dist)
            if rc.weight_decay > 0.0:  # the same on every rank: after the reduction
                penalties = [weight_penalty(params, rc.weight_decay) for params in groups]
                total = total + torch.stack(penalties).to(total)
            return total

        t0 = time.perf_counter()
        while done < rc.iterations:
            losses = [float(x) for x in lockstep_steps(optimizers, evaluate)]
            done += REFINE_BLOCK
            val_losses = (
                self._member_evaluations(model, "validation", val, weights)
                if val is not None
                else losses
            )
            current = model.state_dict()
            improved = []
            for k in range(M):
                improved.append(val_losses[k] < state.refine_best[k])
                if improved[k]:
                    state.refine_best[k] = val_losses[k]
                    for key in keys[k]:
                        state.best_state[key] = current[key].clone()
            history.setdefault("refine_iteration", []).append(done)
            history.setdefault("refine_train_loss", []).append(float(np.mean(losses)))
            history.setdefault("refine_val_loss", []).append(float(np.mean(val_losses)))
            state.refine_iterations = done
            state.phase = "done" if done >= rc.iterations else "refine"
            state.model_state = model.state_dict()
            state.refine_optimizer_state = [opt.state_dict() for opt in optimizers]
            self._save(state)
            for k, member in enumerate(members):
                label = "" if member is None else f"member {member}  "
                msg = (
                    f"L-BFGS {label}iteration {done:5d}  train loss {losses[k]:.4e}  val loss "
                    f"{val_losses[k]:.4e}{'  *' if improved[k] else ''}"
                )
                self._log_quietly(msg)
                if (done // REFINE_BLOCK) % 5 == 0:
                    self.log(msg)
        model.load_state_dict(state.best_state)
        if M == 1:
            state.best_val = state.refine_best[0]
        else:  # the committee's loss (the members' mean) with every member at its best
            state.best_val = (
                self._evaluate(model, "validation", val, weights)
                if val is not None
                else float(np.mean(state.refine_best))
            )
            self._save(state)
        self.log(
            f"refinement done in {time.perf_counter() - t0:.0f} s; best validation loss "
            f"{state.best_val:.4e}"
        )
        return state

    @staticmethod
    def _member_keys(model: HDNNP, member: int | None) -> list[str]:
        """The state-dict keys of all parameters (``member`` None) or one member's."""
        keys = list(model.state_dict())
        if member is None:
            return keys
        prefixes = tuple(f"networks.{e}.members.{member}." for e in range(len(model.networks)))
        return [k for k in keys if k.startswith(prefixes)]

    def _finish(
        self,
        model: HDNNP,
        spec: DescriptorSpec,
        description: ModelDescription,
        sets: dict,
        state: TrainingState,
        seconds: float,
    ) -> dict[str, Any]:
        """Export the best model (rank 0), errors on every set (each rank predicts its
        share of the structures), metrics.json and plots; returns the metrics on every
        rank."""
        from ..model.potential import Potential
        from .plots import learning_curve, parity_plots

        cfg, dist = self.cfg, self.dist
        model = model.cpu().double() if cfg.training.dtype != "float64" else model.cpu()
        epochs = state.history["epoch"]
        source = {
            "kind": "nnmd train",
            "nnmd_version": __version__,
            "epochs": epochs[-1] if epochs else 0,
            "best_epoch": state.best_epoch,
            "best_validation_loss": state.best_val,
            "training_seconds": round(seconds, 1),
        }
        with tempfile.TemporaryDirectory() as tmp:
            # every rank evaluates the exported model file (rank 0's is the run's)
            path = self.out / "model.pt" if dist.is_main else Path(tmp) / "model.pt"
            save_model(path, spec, model, description, source)
            if dist.is_main:
                dump_config(cfg, self.out / "config.yaml")
            pot = Potential.load(path)
            runner = TaskRunner(PredictionTasks(sets, pot), self._workers)
            predicted = {
                name: self._predict(runner, name, ds) for name, ds in sets.items() if len(ds)
            }
        metrics: dict[str, Any] = {"training_seconds": seconds}
        if dist.is_main:
            for name, preds in predicted.items():
                ds = sets[name]
                metrics[name] = error_metrics(
                    ds,
                    [x.energy for x in preds],
                    [x.forces for x in preds],
                    [x.stress for x in preds],
                )
                m = metrics[name]
                self.log(
                    f"{name:10s}: energy MAE {m['energy_mae_mev_per_atom']:.3f} meV/atom, RMSE "
                    f"{m['energy_rmse_mev_per_atom']:.3f}; force MAE "
                    f"{m.get('force_mae_ev_per_angstrom', math.nan):.4f} eV/A, RMSE "
                    f"{m.get('force_rmse_ev_per_angstrom', math.nan):.4f}"
                )
            (self.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
            learning_curve(state.history, self.out / "learning_curve.png")
            shown = next(name for name in ("test", "validation", "train") if name in predicted)
            parity_plots(sets[shown], predicted[shown], self.out, shown)
            self.log(
                f"wrote {self.out / 'model.pt'}, metrics.json, learning_curve.png, "
                f"parity_energy.png, parity_forces.png ({seconds:.0f} s in all)"
            )
        return dist.broadcast_object(metrics)

    def _predict(self, runner: TaskRunner, name: str, ds: Dataset) -> list[_Predicted]:
        """Energies, forces and stresses of every structure of ``ds`` (each rank predicts
        its share, in chunks, by its workers; rank 0 receives them all, in order; other
        ranks get an empty list)."""
        dist = self.dist
        mine = dist.share(np.arange(len(ds)))
        tasks = chunk_tasks("predict", ds.n_atoms, name, mine, PREDICT_CHUNK_ATOMS)
        local = [(int(k), _Predicted(e, f, s)) for part in runner.run(tasks) for k, e, f, s in part]
        gathered = dist.gather_objects(local)
        if gathered is None:
            return []
        out: list[_Predicted | None] = [None] * len(ds)
        for part in gathered:
            for k, p in part:
                out[k] = p
        return [p for p in out if p is not None]


def train(cfg: Config, out: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train as configured into the run directory ``out`` (see :class:`Trainer`)."""
    return Trainer(cfg, out, resume).run()
