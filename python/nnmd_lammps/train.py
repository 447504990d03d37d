"""Training: from reference data to a model file (docs/training.md).

The symmetry functions and their derivatives dG/dd are computed once per structure;
a training step evaluates the networks with explicit input gradients (differentiable in
the weights) and contracts dE/dG with dG/dd for the forces, so a step costs little more
than the networks themselves. Every epoch ends with an atomic checkpoint from which
``--resume`` continues exactly.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .config import REFINE_BLOCK, Config, dump_config, resolve
from .data import Dataset, concatenate, random_split
from .descriptors import DescriptorCalculator
from .errors import NNMDError
from .io import read_structures
from .metrics import error_metrics
from .model import HDNNP, ModelDescription, NetworkSpec, ScalingParams, build_hdnnp
from .modelfile import description_from_metadata, metadata_dict, save_model
from .potential import make_batch
from .sfgen import GridSettings, generate, min_distances, prune
from .symmetry import DescriptorSpec, sort_elements

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "nnmd-lammps-checkpoint"
DTYPES = {"float64": torch.float64, "float32": torch.float32}


# -- data -----------------------------------------------------------------------------------------

def load_datasets(cfg: Config, log) -> dict[str, Dataset]:
    """Train / validation / test sets as configured (random splits with the seed)."""
    d = cfg.data

    def read(paths: list[str]) -> Dataset:
        sets = []
        for p in paths:
            path = resolve(cfg, p)
            structures = read_structures(path, d.format, d.length_unit, d.energy_unit)
            sets.append(Dataset.from_structures(structures, str(path), d.stress))
        return concatenate(sets)

    pool = read(d.train)
    out: dict[str, Dataset] = {}
    fractions = []
    if not d.validation:
        fractions.append(d.validation_fraction)
    if not d.test:
        fractions.append(d.test_fraction)
    parts = random_split(len(pool), [*fractions, 1.0 - sum(fractions)], cfg.training.seed)
    k = 0
    if d.validation:
        out["validation"] = read(d.validation)
    else:
        out["validation"] = pool.subset(parts[k])
        k += 1
    if d.test:
        out["test"] = read(d.test)
    else:
        out["test"] = pool.subset(parts[k])
        k += 1
    out["train"] = pool.subset(parts[k])
    if len(out["train"]) == 0:
        raise NNMDError("the training set is empty")
    for name, ds in out.items():
        log(f"{name:10s}: {len(ds):5d} structures, {int(ds.n_atoms.sum()):7d} atoms, forces for "
            f"{sum(f is not None for f in ds.forces)}, stress for "
            f"{sum(s is not None for s in ds.stress)}")
    return out


@dataclass
class Batch:
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


class TrainingData:
    """Descriptors, their derivatives and reference values of a dataset, laid out so that
    each structure's atoms, rows and pairs are contiguous."""

    def __init__(self, data: Dataset, calc: DescriptorCalculator, elements: list[str],
                 dtype: torch.dtype, device: torch.device, chunk_atoms: int = 3000) -> None:
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
                row_counts[e, start:stop] = np.bincount(owner[desc.atoms[e].numpy()],
                                                        minlength=stop)[start:stop]
                pair_counts[e, start:stop] = np.bincount(owner[desc.pair_i[e].numpy()],
                                                         minlength=stop)[start:stop]
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
        self.row_struct = [torch.repeat_interleave(torch.arange(B), torch.from_numpy(
            row_counts[e])).to(device) for e in range(nel)]
        self.pair_struct = [torch.repeat_interleave(torch.arange(B), torch.from_numpy(
            pair_counts[e])).to(device) for e in range(nel)]
        self.atom_struct = torch.repeat_interleave(torch.arange(B), torch.from_numpy(natoms)
                                                   ).to(device)
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
        self._full: Batch | None = None

    def batch(self, sids: np.ndarray | None = None) -> Batch:
        """The structures ``sids`` (all of them, without copies, when None)."""
        if sids is None:
            if self._full is None:
                self._full = Batch(self.n, self.natoms, self.energy, self.weight, self.forces,
                                   self.force_mask, self.atom_struct, self.stress,
                                   self.stress_mask, self.volume, self.G, self.row_struct,
                                   self.pair_row, self.pair_i, self.pair_j, self.pair_d,
                                   self.pair_struct, self.dGdd)
            return self._full
        dev = self.device
        sids = np.asarray(sids, dtype=np.int64)
        local_struct = np.arange(len(sids))

        def ranges(off: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """Global indices of the selected structures' items, their local structure, and
            per local structure the shift from a global to a batch-local item index."""
            starts, stops = off[sids], off[sids + 1]
            counts = stops - starts
            idx = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops, strict=True)]) \
                if len(sids) else np.zeros(0, dtype=np.int64)
            owner = np.repeat(local_struct, counts)
            shift = np.concatenate([[0], np.cumsum(counts)[:-1]]) - starts if len(sids) \
                else np.zeros(0, dtype=np.int64)
            return (torch.from_numpy(idx).to(dev), torch.from_numpy(owner).to(dev),
                    torch.from_numpy(shift).to(dev))

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
        return Batch(len(sids), self.natoms[s], self.energy[s], self.weight[s], self.forces[atoms],
                     self.force_mask[atoms], atom_owner, self.stress[s], self.stress_mask[s],
                     self.volume[s], G, rs, prow, pi, pj, pd, ps, dg)


# -- model evaluation on a batch -----------------------------------------------------------------

def predict(model: HDNNP, b: Batch, forces: bool = True, stress: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Energies (B,), forces (Nb, 3) and stresses (B, 3, 3; ASE sign) of a batch;
    differentiable in the model parameters."""
    ref = b.energy
    E = torch.zeros(b.n_structures, dtype=ref.dtype, device=ref.device)
    F = torch.zeros((len(b.atom_struct), 3), dtype=ref.dtype, device=ref.device) if forces else None
    W = torch.zeros((b.n_structures, 3, 3), dtype=ref.dtype, device=ref.device) if stress else None
    for e, net in enumerate(model.networks):
        if b.G[e].shape[0] == 0:
            continue
        if forces or stress:
            en, grad = net.energy_and_gradient(b.G[e])
        else:
            en = net(b.G[e])
        E = E.index_add(0, b.row_struct[e], en)
        if (forces or stress) and b.dGdd[e].shape[0] > 0:
            v = torch.einsum("ps,psk->pk", grad[b.pair_row[e]], b.dGdd[e])
            if F is not None:
                F = F.index_add(0, b.pair_j[e], -v).index_add(0, b.pair_i[e], v)
            if W is not None:
                W = W.index_add(0, b.pair_struct[e], -b.pair_d[e][:, :, None] * v[:, None, :])
    S = None if W is None else -0.5 * (W + W.transpose(1, 2)) / b.volume[:, None, None]
    return E, F, S


@dataclass
class LossWeights:
    energy: float
    force: float
    stress: float


def loss_terms(model: HDNNP, b: Batch, w: LossWeights) -> torch.Tensor:
    """The weighted loss of a batch (docs/training.md)."""
    want_f = w.force > 0 and bool(b.force_mask.any())
    want_s = w.stress > 0 and bool(b.stress_mask.any())
    E, F, S = predict(model, b, forces=want_f, stress=want_s)
    ws = b.weight
    de = (E - b.energy) / b.natoms
    loss_e = (ws * de * de).sum() / ws.sum().clamp(min=1e-300)
    total = w.energy * loss_e
    if want_f:
        wa = ws[b.atom_struct] * b.force_mask
        df = (F - b.forces) ** 2
        loss_f = (wa[:, None] * df).sum() / (3.0 * wa.sum()).clamp(min=1e-300)
        total = total + w.force * loss_f
    if want_s:
        wsm = ws * b.stress_mask
        ds = ((S - b.stress) ** 2).sum((1, 2))
        loss_s = (wsm * ds).sum() / (9.0 * wsm.sum()).clamp(min=1e-300)
        total = total + w.stress * loss_s
    return total


# -- setup of descriptors, scaling and energy offsets ---------------------------------------------

def fit_reference_energies(data: Dataset, elements: list[str]) -> tuple[dict[str, float], float]:
    """Per-element energies by least squares (E ~ sum_e n_e mu_e) and the RMS of the
    per-atom residual (the network output scale), from the training set."""
    counts = np.array([[a.get_chemical_symbols().count(e) for e in elements]
                       for a in data.structures], dtype=float)
    present = counts.sum(0) > 0
    mu = np.zeros(len(elements))
    sol, *_ = np.linalg.lstsq(counts[:, present], data.energy, rcond=None)
    mu[present] = sol
    resid = (data.energy - counts @ mu) / data.n_atoms
    scale = float(np.sqrt(np.mean(resid**2)))
    return {e: float(m) for e, m in zip(elements, mu, strict=True)}, max(scale, 1e-2)


def scaling_from(G: torch.Tensor, kind: str) -> ScalingParams:
    g = G.detach().double()
    if g.shape[0] == 0:
        return ScalingParams.identity(g.shape[1])
    gmin, gmax = g.min(0).values, g.max(0).values
    mean = g.mean(0)
    std = g.std(0) if g.shape[0] > 1 else torch.ones_like(mean)
    # guard functions that happen to be constant on this set (kept by the user's choice)
    std = torch.where(std > 0, std, torch.ones_like(std))
    span = torch.where(gmax > gmin, gmax - gmin, torch.ones_like(gmax))
    smin, smax = (-1.0, 1.0) if kind in ("scale", "scale_center") else (0.0, 1.0)
    return ScalingParams(kind, smin, smax, gmin.tolist(), (gmin + span).tolist(), mean.tolist(),
                         std.tolist())


def build_descriptors(cfg: Config, elements: list[str], train: Dataset, log) -> DescriptorSpec:
    dc = cfg.descriptors
    if dc.functions is not None:
        spec = DescriptorSpec.from_dict({"elements": elements, "functions": _group(dc.functions)})
        log(f"descriptors: {sum(len(v) for v in spec.functions.values())} functions given in "
            "the config")
        return spec
    r_min = dc.r_min
    if r_min is None:
        dmin = min_distances(train.structures, elements, cfg.cutoff)
        r_min = round(0.8 * dmin, 3)
        log(f"descriptors: shortest distance in the training data {dmin:.3f} A -> r_min "
            f"{r_min:.3f} A")
    spec = generate(elements, GridSettings(cfg.cutoff, dc.radial, dc.angular, r_min,
                                           dc.angular_type, dc.cutoff_type, dc.cutoff_alpha))
    log("descriptors: generated " + ", ".join(f"{e}: {spec.num_functions(e)}" for e in elements))
    if dc.prune:
        calc = DescriptorCalculator(spec)
        Gs = [[] for _ in elements]
        for k in range(0, len(train), 64):
            chunk = train.structures[k:k + 64]
            b = make_batch(chunk, elements, calc.cutoff)
            desc = calc.compute(b.species, b.centers, b.neighbors, b.vectors, derivatives=False)
            for e in range(len(elements)):
                Gs[e].append(desc.G[e])
        spec, removed = prune(spec, [torch.cat(g) for g in Gs], dc.max_correlation)
        for e, notes in removed.items():
            log(f"descriptors: pruned {len(notes)} of {e}'s functions (constant or |corr| > "
                f"{dc.max_correlation})")
        log("descriptors: kept " + ", ".join(f"{e}: {spec.num_functions(e)}" for e in elements))
    return spec


def _group(functions: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in functions:
        if not isinstance(f, dict) or "center" not in f:
            raise NNMDError("config key 'descriptors.functions': every entry needs 'center'")
        out.setdefault(f["center"], []).append(f)
    return out


# -- the trainer -----------------------------------------------------------------------------------

class Trainer:
    def __init__(self, cfg: Config, out: str | Path, resume: bool = False,
                 progress: bool = True) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.resume = resume
        self.progress = progress and sys.stderr.isatty()
        self.out.mkdir(parents=True, exist_ok=True)
        self._logfile = (self.out / "train.log").open("a")

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        self._logfile.write(line + "\n")
        self._logfile.flush()
        if not self.progress:
            print(line, flush=True)
        else:
            from tqdm import tqdm

            tqdm.write(line)

    # checkpoints ------------------------------------------------------------------------------
    def _save_checkpoint(self, state: dict[str, Any]) -> None:
        path = self.out / CHECKPOINT
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)

    def _load_checkpoint(self) -> dict[str, Any]:
        path = self.out / CHECKPOINT
        if not path.exists():
            raise NNMDError(f"--resume: no checkpoint in {self.out}")
        try:
            ck = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as exc:
            raise NNMDError(f"{path}: unreadable checkpoint ({str(exc).splitlines()[0]})"
                            ) from None
        if ck.get("format") != CHECKPOINT_FORMAT:
            raise NNMDError(f"{path} is not an nnmd-lammps checkpoint")
        return ck

    def _check_same_config(self, ck: dict[str, Any]) -> None:
        old = json.loads(ck["config_json"])
        new = self.cfg.to_dict()
        allowed = {("training", "epochs"), ("training", "refine")}
        diffs = []
        for section in set(old) | set(new):
            a, b = old.get(section), new.get(section)
            if isinstance(a, dict) and isinstance(b, dict):
                for k in set(a) | set(b):
                    if a.get(k) != b.get(k) and (section, k) not in allowed:
                        diffs.append(f"{section}.{k}")
            elif a != b:
                diffs.append(section)
        if diffs:
            raise NNMDError(f"--resume: the config differs from the run in {self.out} in "
                            f"{', '.join(sorted(diffs))} (only training.epochs and "
                            "training.refine may change)")

    # main -----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg, tc = self.cfg, self.cfg.training
        if not self.resume and (self.out / CHECKPOINT).exists():
            raise NNMDError(f"{self.out} already holds a training run; use --resume to continue "
                            "it or choose another --out")
        ck = self._load_checkpoint() if self.resume else None
        if ck is not None:
            self._check_same_config(ck)
        if tc.threads:
            torch.set_num_threads(tc.threads)
        if tc.device.startswith("cuda") and not torch.cuda.is_available():
            raise NNMDError("training.device is cuda but torch sees no CUDA device")
        device = torch.device(tc.device)
        dtype = DTYPES[tc.dtype]
        t_start = time.perf_counter()
        self.log(f"nnmd-lammps {__version__}: training in {self.out} "
                 f"({'resumed' if ck else 'new run'}), device {device}, {tc.dtype}")
        sets = load_datasets(cfg, self.log)
        elements = cfg.elements or sort_elements(set().union(*(s.elements()
                                                               for s in sets.values())))
        elements = sort_elements(elements)
        for name, ds in sets.items():
            extra = ds.elements() - set(elements)
            if extra:
                raise NNMDError(f"the {name} set contains element(s) {sorted(extra)} not listed "
                                f"in 'elements' {elements}")
        torch.manual_seed(tc.seed)
        if ck is None:
            spec = build_descriptors(cfg, elements, sets["train"], self.log)
        else:
            meta = json.loads(ck["model_json"])
            spec = DescriptorSpec.from_dict({"elements": meta["elements"],
                                             "functions": meta["symmetry_functions"]})
        calc = DescriptorCalculator(spec)
        t0 = time.perf_counter()
        tdata = {name: TrainingData(ds, calc, elements, dtype, device)
                 for name, ds in sets.items() if len(ds)}
        self.log(f"descriptors and derivatives of all structures: "
                 f"{time.perf_counter() - t0:.1f} s")
        if ck is None:
            desc = ModelDescription()
            mu, scale = fit_reference_energies(sets["train"], elements)
            self.log("reference energies (least squares): " + ", ".join(
                f"{e} {m:.6f} eV" for e, m in mu.items()) + f"; per-atom residual RMS "
                f"{scale * 1000:.2f} meV (network output scale)")
            for e_idx, e in enumerate(elements):
                desc.networks[e] = NetworkSpec([spec.num_functions(e), *cfg.network.hidden, 1],
                                               [cfg.network.activation] * len(cfg.network.hidden)
                                               + ["identity"])
                desc.scaling[e] = scaling_from(tdata["train"].G[e_idx], cfg.network.scaling)
            desc.energy_scale = scale
            desc.energy_shift = mu
        else:
            desc = description_from_metadata(json.loads(ck["model_json"]))
        model = build_hdnnp(elements, desc, dtype=dtype).to(device)
        meta_json = json.dumps(metadata_dict(spec, desc, dtype=tc.dtype))
        weights = LossWeights(tc.energy_weight, tc.force_weight, tc.stress_weight)
        n_params = sum(p.numel() for p in model.parameters())
        self.log(f"networks: {' '.join(f'{e}:{spec.num_functions(e)}-' + '-'.join(map(str, cfg.network.hidden)) + '-1' for e in elements)}, "  # noqa: E501
                 f"{n_params} parameters")

        state = self._train_adam(model, tdata, weights, ck, meta_json)
        state = self._refine(model, tdata, weights, state, meta_json)
        model.load_state_dict(state["best_state"])
        result = self._finish(model, spec, desc, sets, state, time.perf_counter() - t_start)
        return result

    def _base_state(self, meta_json: str) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "version": 1, "config_json": json.dumps(
            self.cfg.to_dict()), "model_json": meta_json}

    def _evaluate(self, model: HDNNP, td: TrainingData, weights: LossWeights) -> float:
        with torch.no_grad():
            loss = loss_terms(model, td.batch(), weights)
        return float(loss)

    def _train_adam(self, model, tdata, weights, ck, meta_json) -> dict[str, Any]:
        tc = self.cfg.training
        train = tdata["train"]
        val = tdata.get("validation")
        opt = torch.optim.Adam(model.parameters(), lr=tc.learning_rate,
                               weight_decay=tc.weight_decay)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=tc.lr_factor,
                                                           patience=tc.lr_patience,
                                                           min_lr=tc.lr_min)
        gen = torch.Generator().manual_seed(tc.seed)
        history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "val_loss": [],
                                           "lr": [], "time_s": []}
        start, best_val, best_epoch = 0, math.inf, -1
        best_state = copy.deepcopy(model.state_dict())
        phase = "adam"
        if ck is not None:
            model.load_state_dict(ck["model_state"])
            best_state = ck["best_state"]
            history = {k: list(v) for k, v in ck["history"].items()}
            best_val, best_epoch = float(ck["best_val"]), int(ck["best_epoch"])
            start = int(ck["epoch"])
            phase = ck["phase"]
            if "optimizer_state" in ck and phase == "adam":
                opt.load_state_dict(ck["optimizer_state"])
                sched.load_state_dict(ck["scheduler_state"])
            gen.set_state(ck["generator_state"])
            torch.set_rng_state(ck["torch_rng_state"])
            self.log(f"resuming after epoch {start} (phase {phase}, best validation loss "
                     f"{best_val:.4g} at epoch {best_epoch})")
        state = {"best_state": best_state, "best_val": best_val, "best_epoch": best_epoch,
                 "history": history, "phase": phase, "epoch": start}
        if phase != "adam":
            return dict(ck)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=tc.epochs, initial=start, desc="training", unit="epoch",
                       dynamic_ncols=True)
        t0 = time.perf_counter() - (history["time_s"][-1] if history["time_s"] else 0.0)
        stopped = False
        try:
            for epoch in range(start, tc.epochs):
                model.train()
                perm = torch.randperm(train.n, generator=gen).numpy()
                total, count = 0.0, 0
                for k in range(0, train.n, tc.batch_size):
                    b = train.batch(perm[k:k + tc.batch_size])
                    opt.zero_grad(set_to_none=True)
                    loss = loss_terms(model, b, weights)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * b.n_structures
                    count += b.n_structures
                train_loss = total / max(count, 1)
                val_loss = self._evaluate(model, val, weights) if val is not None else train_loss
                sched.step(val_loss)
                lr = opt.param_groups[0]["lr"]
                for key, v in (("epoch", epoch + 1), ("train_loss", train_loss),
                               ("val_loss", val_loss), ("lr", lr),
                               ("time_s", time.perf_counter() - t0)):
                    history[key].append(v)
                if val_loss < best_val:
                    best_val, best_epoch = val_loss, epoch + 1
                    best_state = copy.deepcopy(model.state_dict())
                stop = (epoch + 1 - best_epoch > tc.early_stopping_patience
                        and tc.early_stopping_patience > 0)
                state = {**self._base_state(meta_json), "phase": "refine" if
                         (stop or epoch + 1 == tc.epochs) else "adam",
                         "epoch": epoch + 1, "model_state": model.state_dict(),
                         "optimizer_state": opt.state_dict(), "scheduler_state":
                         sched.state_dict(), "best_state": best_state, "best_val": best_val,
                         "best_epoch": best_epoch, "history": history,
                         "generator_state": gen.get_state(),
                         "torch_rng_state": torch.get_rng_state()}
                self._save_checkpoint(state)
                msg = (f"epoch {epoch + 1:5d}  train loss {train_loss:.4e}  val loss "
                       f"{val_loss:.4e}  lr {lr:.2e}")
                self._logfile.write(msg + "\n")
                self._logfile.flush()
                if bar is not None:
                    bar.set_postfix_str(f"train {train_loss:.3e} val {val_loss:.3e} "
                                        f"lr {lr:.1e}")
                    bar.update(1)
                elif (epoch + 1) % 10 == 0 or epoch == start:
                    print(msg, flush=True)
                if stop:
                    self.log(f"early stopping after epoch {epoch + 1}: no validation "
                             f"improvement for {tc.early_stopping_patience} epochs")
                    stopped = True
                    break
        except KeyboardInterrupt:
            self.log("interrupted: the last completed epoch is in the checkpoint; continue with "
                     "--resume")
            raise
        finally:
            if bar is not None:
                bar.close()
        if not stopped:
            self.log(f"finished {tc.epochs} epochs; best validation loss {best_val:.4e} at "
                     f"epoch {best_epoch}")
        return {**state, "phase": "refine"}

    def _refine(self, model, tdata, weights, state, meta_json) -> dict[str, Any]:
        rc = self.cfg.training.refine
        done = int(state.get("refine_iterations", 0))
        if rc.iterations <= done:  # a resume may ask for more iterations than were done
            return state
        train = tdata["train"]
        val = tdata.get("validation")
        model.load_state_dict(state["best_state"])
        opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=REFINE_BLOCK,
                                history_size=rc.history, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-12, tolerance_change=1e-15)
        if done and "refine_optimizer_state" in state:
            model.load_state_dict(state["model_state"])
            opt.load_state_dict(state["refine_optimizer_state"])
        full = train.batch()
        best_val = state["best_val"]
        best_state = state["best_state"]
        self.log(f"refinement: L-BFGS on the full training set, {rc.iterations} iterations "
                 f"(done {done})")

        def closure():
            opt.zero_grad(set_to_none=True)
            loss = loss_terms(model, full, weights)
            loss.backward()
            return loss

        history = state["history"]
        t0 = time.perf_counter()
        while done < rc.iterations:
            loss = float(opt.step(closure).detach())
            done += REFINE_BLOCK
            val_loss = self._evaluate(model, val, weights) if val is not None else loss
            improved = val_loss < best_val
            if improved:
                best_val = val_loss
                best_state = copy.deepcopy(model.state_dict())
            history.setdefault("refine_iteration", []).append(done)
            history.setdefault("refine_train_loss", []).append(loss)
            history.setdefault("refine_val_loss", []).append(val_loss)
            state = {**self._base_state(meta_json), **{k: v for k, v in state.items()
                                                        if k not in ("optimizer_state",
                                                                     "scheduler_state")},
                     "phase": "refine" if done < rc.iterations else "done",
                     "refine_iterations": done, "model_state": model.state_dict(),
                     "refine_optimizer_state": opt.state_dict(), "best_state": best_state,
                     "best_val": best_val, "history": history}
            self._save_checkpoint(state)
            msg = (f"L-BFGS iteration {done:5d}  train loss {loss:.4e}  val loss "
                   f"{val_loss:.4e}{'  *' if improved else ''}")
            self._logfile.write(msg + "\n")
            self._logfile.flush()
            if (done // REFINE_BLOCK) % 5 == 0:
                self.log(msg)
        self.log(f"refinement done in {time.perf_counter() - t0:.0f} s; best validation loss "
                 f"{best_val:.4e}")
        return state

    def _finish(self, model, spec, desc, sets, state, seconds) -> dict[str, Any]:
        from .potential import Potential

        cfg = self.cfg
        model = model.cpu().double() if cfg.training.dtype != "float64" else model.cpu()
        source = {"kind": "nnmd train", "nnmd_version": __version__,
                  "epochs": state["history"]["epoch"][-1] if state["history"]["epoch"] else 0,
                  "best_epoch": state.get("best_epoch"), "best_validation_loss": state["best_val"],
                  "training_seconds": round(seconds, 1)}
        save_model(self.out / "model.pt", spec, model, desc, source)
        dump_config(cfg, self.out / "config.yaml")
        pot = Potential.load(self.out / "model.pt")
        metrics: dict[str, Any] = {"training_seconds": seconds}
        preds = {}
        for name, ds in sets.items():
            if not len(ds):
                continue
            p = pot.evaluate(ds.structures, stress=True)
            preds[name] = p
            metrics[name] = error_metrics(ds, [x.energy for x in p], [x.forces for x in p],
                                          [x.stress for x in p])
            m = metrics[name]
            self.log(f"{name:10s}: energy MAE {m['energy_mae_mev_per_atom']:.3f} meV/atom, RMSE "
                     f"{m['energy_rmse_mev_per_atom']:.3f}; force MAE "
                     f"{m.get('force_mae_ev_per_angstrom', float('nan')):.4f} eV/A, RMSE "
                     f"{m.get('force_rmse_ev_per_angstrom', float('nan')):.4f}")
        (self.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        from .plots import learning_curve, parity_plots

        learning_curve(state["history"], self.out / "learning_curve.png")
        shown = next(name for name in ("test", "validation", "train") if name in preds)
        parity_plots(sets[shown], preds[shown], self.out, shown)
        self.log(f"wrote {self.out / 'model.pt'}, metrics.json, learning_curve.png, "
                 f"parity_energy.png, parity_forces.png ({seconds:.0f} s in all)")
        return metrics


def train(cfg: Config, out: str | Path, resume: bool = False) -> dict[str, Any]:
    return Trainer(cfg, out, resume).run()
