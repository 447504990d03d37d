"""Training configuration (YAML), validated into dataclasses.

Every key is checked: an unknown or mistyped key is an error that names it (and suggests
the closest valid key); values are type-checked. Paths are relative to the config file.
See docs/training.md for the meaning of every key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..descriptors.generation import ANGULAR_WIDTHS, angular_type_list
from ..descriptors.spec import CUTOFF_TYPES
from ..errors import NNMDError
from .kalman import KalmanSettings


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)
    validation: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    format: str | None = None
    length_unit: str = "angstrom"
    energy_unit: str = "ev"
    stress: str = "auto"  # auto | none | calculator | mlearn
    validation_fraction: float = 0.1
    test_fraction: float = 0.0
    # an atoms.info key (mlearn's group, extxyz's config_type): split each group apart
    stratify: str | None = None


@dataclass
class DescriptorConfig:
    radial: int = 8
    angular: int = 16
    angular_type: int | list[int] = 9  # 9, 3, or a list of both: a pool of the two
    # the angular Gaussians: centred (rs = 0, all broad), inner (rs = 0, the first width
    # at r_min), both (the two, 2 x angular functions), shifted (centred on the shells of
    # the radial grid) or all (centred, inner and shifted: 3 x angular functions)
    angular_widths: str = "centred"
    cutoff_type: int = 6
    cutoff_alpha: float = 0.0
    r_min: float | None = None  # Angstrom; None: 0.8 x shortest distance in the data
    prune: bool = True
    max_correlation: float = 0.999
    # keep this many functions per element, chosen greedily as those whose linear span
    # explains most of the variance of all of them on the training atoms (from their
    # correlation matrix; docs/training.md); None: keep all
    select: int | None = None
    functions: list[dict] | None = None  # explicit functions (SymmetryFunction dicts)


@dataclass
class NetworkConfig:
    hidden: list[int] = field(default_factory=lambda: [32, 32])
    activation: str = "tanh"
    scaling: str = "sigma"
    committee: int = 1  # networks per element (docs/uncertainty.md)
    bootstrap: bool = False  # each committee member trains on its own resample
    repulsion: str | dict | None = None  # "zbl" or {type: zbl, inner: A, outer: A}


#: L-BFGS iterations per refinement step (one step between validations and checkpoints)
REFINE_BLOCK = 10


@dataclass
class RefineConfig:
    optimizer: str = "lbfgs"
    iterations: int = 0
    history: int = 50
    #: L2 penalty 0.5 x weight_decay x (sum of squared weight-matrix entries) added to
    #: the L-BFGS loss (biases are not penalised; the validation loss is the data loss)
    weight_decay: float = 0.0


@dataclass
class KalmanConfig(KalmanSettings):
    """The extended-Kalman-filter phase between Adam and L-BFGS (docs/training.md, "Kalman
    filter"): ``epochs`` passes over the training structures in random order, each
    structure one energy update and one update with the aggregated force errors of its
    atoms in groups of ``force_group_atoms`` (a fraction ``force_fraction`` of the groups
    per structure); the filter settings (``p0``, ``lambda0``, ``nu``, ``q0``, ``q_min``,
    ``q_decay``) are those of :class:`~nnmd_lammps.training.kalman.KalmanSettings`."""

    epochs: int = 0
    force_group_atoms: int = 6
    force_fraction: float = 1.0


@dataclass
class TrainingConfig:
    epochs: int = 300
    batch_size: int = 8
    learning_rate: float = 2e-3
    lr_min: float = 1e-5
    lr_factor: float = 0.5
    lr_patience: int = 15
    early_stopping_patience: int = 60
    energy_weight: float = 1.0
    force_weight: float = 1.0
    stress_weight: float = 0.0
    # pseudo-Huber loss (docs/training.md, "Loss"): the width of each term's quadratic
    # core, energy in eV/atom, forces in eV/Angstrom, stress in eV/Angstrom^3; null: the
    # squared error
    huber_energy: float | None = None
    huber_force: float | None = None
    huber_stress: float | None = None
    weight_decay: float = 0.0
    seed: int = 0
    dtype: str = "float64"
    device: str = "cpu"
    threads: int = 0
    # where the descriptors and their derivatives dG/dd live (docs/training.md, "Memory"):
    # memory (computed once, kept), stream (per batch from the raw structures) or auto
    # (memory when the estimate for the training and validation sets, times the ranks on
    # a node, is below memory_budget_gb)
    data_mode: str = "auto"
    memory_budget_gb: float = 2.0  # GB (1e9 bytes)
    # background processes per rank computing descriptors (stream mode and set-up passes);
    # None: one per CPU of the rank, at most 4
    workers: int | None = None
    # warm start: a model file (relative to the config file) whose symmetry functions and
    # network function initialise this run (docs/training.md)
    initial_model: str | None = None
    # warm start: inputs whose spread in this run's data exceeds this multiple of the
    # initial model's lose their first-layer weights (docs/training.md); null: never
    warm_start_max_spread: float | None = 3.0
    kalman: KalmanConfig = field(default_factory=KalmanConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)


@dataclass
class Config:
    cutoff: float = 6.0
    elements: list[str] | None = None
    data: DataConfig = field(default_factory=DataConfig)
    descriptors: DescriptorConfig = field(default_factory=DescriptorConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    base_dir: str = "."  # directory of the config file (set by load_config)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("base_dir")
        return d


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _check_type(value, opt, where)
            except NNMDError as exc:
                errors.append(str(exc))
        raise NNMDError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and item is str:
            value = [value]
        if not isinstance(value, list):
            raise NNMDError(f"config key '{where}' must be a list, got {value!r}")
        return [_check_type(v, item, f"{where}[{k}]") for k, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise NNMDError(f"config key '{where}' must be a mapping, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise NNMDError(f"config key '{where}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise NNMDError(f"config key '{where}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise NNMDError(f"config key '{where}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise NNMDError(f"config key '{where}' must be a string, got {value!r}")
        return value
    return value


def _build(cls, raw: Any, where: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise NNMDError(f"config section '{where or 'top level'}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "base_dir"]
    kwargs = {}
    for key, value in raw.items():
        full = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise NNMDError(
                f"unknown config key '{full}'{hint}; valid keys here: {', '.join(names)}"
            )
        kwargs[key] = _check_type(value, hints[key], full)
    return cls(**kwargs)


CHOICES = {
    "data.stress": ("auto", "none", "calculator", "mlearn"),
    "network.activation": ("tanh", "softplus", "shifted_softplus", "silu", "sigmoid"),
    "network.scaling": ("none", "scale", "center", "scale_center", "sigma"),
    "training.dtype": ("float64", "float32"),
    "training.data_mode": ("auto", "memory", "stream"),
    "training.refine.optimizer": ("lbfgs",),
    "descriptors.angular_widths": ANGULAR_WIDTHS,
    "descriptors.cutoff_type": CUTOFF_TYPES,
}


def validate(cfg: Config) -> None:
    def get(path: str):
        obj = cfg
        for part in path.split("."):
            obj = getattr(obj, part)
        return obj

    angular_type_list(cfg.descriptors.angular_type)  # names the key if it is bad
    for path, allowed in CHOICES.items():
        if get(path) not in allowed:
            raise NNMDError(
                f"config key '{path}' must be one of {list(allowed)}, got {get(path)!r}"
            )
    positive = [
        "cutoff",
        "training.epochs",
        "training.batch_size",
        "training.learning_rate",
        "descriptors.max_correlation",
    ]
    for path in positive:
        if not get(path) > 0:
            raise NNMDError(f"config key '{path}' must be positive, got {get(path)!r}")
    for path in (
        "descriptors.radial",
        "descriptors.angular",
        "training.refine.iterations",
        "training.refine.weight_decay",
        "training.threads",
        "training.early_stopping_patience",
        "training.energy_weight",
        "training.force_weight",
        "training.stress_weight",
        "training.memory_budget_gb",
    ):
        if get(path) < 0:
            raise NNMDError(f"config key '{path}' must be >= 0, got {get(path)!r}")
    if cfg.descriptors.select is not None and cfg.descriptors.select < 1:
        raise NNMDError(
            f"config key 'descriptors.select' must be >= 1, got {cfg.descriptors.select!r}"
        )
    for key in ("huber_energy", "huber_force", "huber_stress"):
        delta = getattr(cfg.training, key)
        if delta is not None and not delta > 0:
            raise NNMDError(
                f"config key 'training.{key}' must be positive (or null), got {delta!r}"
            )
    if cfg.training.workers is not None and cfg.training.workers < 0:
        raise NNMDError(f"config key 'training.workers' must be >= 0, got {cfg.training.workers!r}")
    spread = cfg.training.warm_start_max_spread
    if spread is not None and not spread > 1.0:
        raise NNMDError(
            f"config key 'training.warm_start_max_spread' must be above 1 (or null), got {spread!r}"
        )
    if not cfg.data.train:
        raise NNMDError("config key 'data.train' is required (training data file(s))")
    if cfg.network.committee < 1:
        raise NNMDError(f"config key 'network.committee' must be >= 1, got {cfg.network.committee}")
    if cfg.network.bootstrap and cfg.network.committee < 2:
        raise NNMDError("config key 'network.bootstrap' needs network.committee >= 2")
    repulsion_settings(cfg)  # validates network.repulsion
    if any(h <= 0 for h in cfg.network.hidden):
        raise NNMDError("config key 'network.hidden' must list positive layer widths")
    if not 0 <= cfg.data.validation_fraction < 1 or not 0 <= cfg.data.test_fraction < 1:
        raise NNMDError(
            "config keys 'data.validation_fraction' and 'data.test_fraction' must lie in [0, 1)"
        )
    stratify = cfg.data.stratify
    if stratify is not None and not stratify.strip():  # the type is checked on reading
        raise NNMDError(
            f"config key 'data.stratify' must name an atoms.info key (e.g. group) or be null, "
            f"got {stratify!r}"
        )
    kalman = cfg.training.kalman
    if kalman.epochs < 0:
        raise NNMDError(f"config key 'training.kalman.epochs' must be >= 0, got {kalman.epochs!r}")
    if kalman.force_group_atoms < 1:
        raise NNMDError(
            "config key 'training.kalman.force_group_atoms' must be >= 1, got "
            f"{kalman.force_group_atoms!r}"
        )
    if not 0 < kalman.force_fraction <= 1:
        raise NNMDError(
            "config key 'training.kalman.force_fraction' must lie in (0, 1], got "
            f"{kalman.force_fraction!r}"
        )
    kalman_settings(cfg).validate("training.kalman")
    if cfg.descriptors.functions is None and cfg.descriptors.radial + cfg.descriptors.angular == 0:
        raise NNMDError("config: descriptors.radial and descriptors.angular are both 0")


def kalman_settings(cfg: Config) -> KalmanSettings:
    """The :class:`~nnmd_lammps.training.kalman.KalmanSettings` of ``training.kalman``."""
    k = cfg.training.kalman
    names = [f.name for f in dataclasses.fields(KalmanSettings)]
    return KalmanSettings(**{name: getattr(k, name) for name in names})


def repulsion_settings(cfg: Config) -> dict | None:
    """``network.repulsion`` as ``{"type": "zbl", "inner": float|None, "outer": float|None}``
    (None radii: derived from the training data), or None."""
    rep = cfg.network.repulsion
    if rep is None:
        return None
    if isinstance(rep, str):
        rep = {"type": rep}
    known = {"type", "inner", "outer"}
    unknown = set(rep) - known
    if unknown:
        raise NNMDError(
            f"unknown config key 'network.repulsion.{sorted(unknown)[0]}'; valid keys here: "
            "type, inner, outer"
        )
    if rep.get("type") != "zbl":
        raise NNMDError(
            f"config key 'network.repulsion.type' must be 'zbl', got {rep.get('type')!r}"
        )
    out: dict = {"type": "zbl"}
    for key in ("inner", "outer"):
        value = rep.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
        ):
            raise NNMDError(
                f"config key 'network.repulsion.{key}' must be a positive number (Angstrom), "
                f"got {value!r}"
            )
        out[key] = None if value is None else float(value)
    if (out["inner"] is None) != (out["outer"] is None):
        raise NNMDError("config keys 'network.repulsion.inner' and '.outer' go together")
    if out["inner"] is not None and not out["inner"] < out["outer"]:
        raise NNMDError("config: network.repulsion.inner must be smaller than .outer")
    return out


def config_from_dict(raw: Any, base_dir: str | Path = ".") -> Config:
    cfg = _build(Config, raw, "")
    cfg.base_dir = str(Path(base_dir).resolve())
    validate(cfg)
    return cfg


def read_yaml(path: str | Path) -> Any:
    """The YAML document of ``path``; unreadable files and YAML errors are NNMDErrors
    naming the file (and the line)."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise NNMDError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise NNMDError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None


def load_config(path: str | Path) -> Config:
    path = Path(path)
    return config_from_dict(read_yaml(path), path.parent)


def resolve(cfg: Config, p: str) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else Path(cfg.base_dir) / q


def dump_config(cfg: Config, path: str | Path, extra: dict | None = None) -> None:
    d = cfg.to_dict()
    for section in ("train", "validation", "test"):
        d["data"][section] = [str(resolve(cfg, p)) for p in d["data"][section]]
    if d["training"]["initial_model"] is not None:
        d["training"]["initial_model"] = str(resolve(cfg, d["training"]["initial_model"]))
    if extra:
        d.update(extra)
    Path(path).write_text(yaml.safe_dump(d, sort_keys=False))
