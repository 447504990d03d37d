"""The configuration of ``nnmd active-learn``: a training configuration (docs/training.md)
plus an ``active_learning:`` section, validated in the strict style of the training
configuration (unknown keys named with the closest valid key, types checked).

```yaml
active_learning:
  calculator: ase.calculators.emt:EMT      # MODULE:CLASS of an ASE calculator
  calculator_kwargs: {}                    # its keyword arguments
  initial_structures: [start.extxyz]       # unlabelled; labelled in iteration 0
  trust: {lo: 0.05, hi: 0.5}               # eV/Angstrom: accurate < lo <= candidate < hi <= failed
  frames_per_iteration: 20
  max_iterations: 5
  stop_when_accurate_fraction_above: 0.99
  workers: 1                               # labelling processes
  warm_start: true                         # train from the previous iteration's committee
  warm_start_from_iteration: 2             # the first warm-started iteration (earlier: retrain)
  warm_start_epochs: null                  # Adam epochs of warm-started iterations
  exploration:
    temperatures: [300, 800]               # K, one MD run per temperature (x pressure x start)
    pressures: [1.0]                       # bar; NPT when given, NVT when absent
    steps: 1000
    timestep: 0.002                        # ps
    dump_every: 10
    ranks: 1                               # MPI ranks per LAMMPS run
    structures: []                         # start structures; default: initial_structures
    max_starts: 4                          # at most this many start structures per file set
    template: null                         # a LAMMPS deck with {placeholders}
    seed: 4928
```

``data.train`` of the training part is optional here: files given there are labelled data
added to every iteration's data set (the loop adds its own labelled frames).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NNMDError
from ..training.config import Config, _build, config_from_dict, read_yaml, resolve
from .selection import check_trust_window

#: The placeholders a user's LAMMPS deck template may use (``{name}``).
TEMPLATE_PLACEHOLDERS = (
    "data",
    "model",
    "elements",
    "temperature",
    "pressure",
    "steps",
    "timestep",
    "seed",
    "dump",
    "dump_every",
    "hi",
)


@dataclass
class TrustSettings:
    lo: float = 0.05
    hi: float = 0.5


@dataclass
class ExplorationSettings:
    temperatures: list[float] = field(default_factory=list)
    pressures: list[float] | None = None
    steps: int = 1000
    timestep: float = 0.002
    dump_every: int = 10
    ranks: int = 1
    structures: list[str] = field(default_factory=list)
    max_starts: int = 0  # 0: every start structure
    template: str | None = None
    seed: int = 4928


@dataclass
class ActiveLearningSettings:
    calculator: str = ""
    calculator_kwargs: dict = field(default_factory=dict)
    initial_structures: list[str] = field(default_factory=list)
    exploration: ExplorationSettings = field(default_factory=ExplorationSettings)
    trust: TrustSettings = field(default_factory=TrustSettings)
    frames_per_iteration: int = 20
    max_iterations: int = 5
    stop_when_accurate_fraction_above: float | None = None
    workers: int = 1
    warm_start: bool = True  # iterations from warm_start_from_iteration on start from the
    # previous committee; earlier ones retrain from scratch (a committee trained on the few
    # starting structures is a poor start: examples/active_learning/README.md)
    warm_start_from_iteration: int = 2
    warm_start_epochs: int | None = None  # their Adam epochs (None: training.epochs)


@dataclass
class ActiveLearningConfig:
    """``training``: the training configuration (its ``data.train`` holds only the
    user's extra labelled files, possibly none); ``al``: the active_learning section;
    ``raw``: the parsed YAML (for the copy in the run directory and resume checks)."""

    training: Config
    al: ActiveLearningSettings
    base_dir: str
    raw: dict[str, Any]
    extra_train: list[str] = field(default_factory=list)

    def path(self, p: str) -> Path:
        return resolve(self.training, p)

    def training_config(self, train_files: list[str | Path]) -> Config:
        """The training configuration of one iteration: ``data.train`` = the user's files
        + ``train_files`` (absolute paths)."""
        cfg = copy.deepcopy(self.training)
        cfg.data.train = [str(self.path(p)) for p in self.extra_train] + [
            str(Path(p).resolve()) for p in train_files
        ]
        return cfg


def _validate(al: ActiveLearningSettings, base_dir: str) -> None:
    from .labelling import CalculatorFactory

    if not al.calculator:
        raise NNMDError(
            "config key 'active_learning.calculator' is required (MODULE:CLASS of an ASE "
            "calculator, e.g. ase.calculators.emt:EMT)"
        )
    CalculatorFactory(al.calculator, al.calculator_kwargs)  # unknown module / class
    check_trust_window(al.trust.lo, al.trust.hi)
    if not al.initial_structures:
        raise NNMDError(
            "config key 'active_learning.initial_structures' is required: no starting "
            "structures (files of structures to label in the first iteration)"
        )
    for p in al.initial_structures + al.exploration.structures:
        q = Path(p).expanduser()
        q = q if q.is_absolute() else Path(base_dir) / q
        if not q.is_file():
            raise NNMDError(f"active_learning: structure file not found: {q}")
    ex = al.exploration
    for key in ("frames_per_iteration", "max_iterations", "workers", "warm_start_from_iteration"):
        if getattr(al, key) < 1:
            raise NNMDError(f"config key 'active_learning.{key}' must be >= 1")
    for key in ("steps", "dump_every", "ranks"):
        if getattr(ex, key) < 1:
            raise NNMDError(f"config key 'active_learning.exploration.{key}' must be >= 1")
    if al.warm_start_epochs is not None and al.warm_start_epochs < 1:
        raise NNMDError("config key 'active_learning.warm_start_epochs' must be >= 1")
    if ex.max_starts < 0:
        raise NNMDError("config key 'active_learning.exploration.max_starts' must be >= 0")
    if not ex.timestep > 0:
        raise NNMDError("config key 'active_learning.exploration.timestep' must be positive (ps)")
    if not ex.temperatures:
        raise NNMDError(
            "config key 'active_learning.exploration.temperatures' is required (a list of "
            "temperatures in K)"
        )
    if any(not t > 0 for t in ex.temperatures):
        raise NNMDError("config key 'active_learning.exploration.temperatures' must be positive")
    if ex.pressures is not None and not ex.pressures:
        raise NNMDError(
            "config key 'active_learning.exploration.pressures' is empty (omit it for NVT)"
        )
    if ex.seed < 1:
        raise NNMDError("config key 'active_learning.exploration.seed' must be >= 1")
    if ex.template is not None:
        q = Path(ex.template).expanduser()
        q = q if q.is_absolute() else Path(base_dir) / q
        if not q.is_file():
            raise NNMDError(f"active_learning.exploration.template: file not found: {q}")
        check_template(q.read_text(), str(q))
    f = al.stop_when_accurate_fraction_above
    if f is not None and not 0 <= f <= 1:
        raise NNMDError(
            "config key 'active_learning.stop_when_accurate_fraction_above' must lie in [0, 1]"
        )


def check_template(text: str, where: str) -> None:
    """Raise NNMDError for a template with unknown placeholders or without ``{dump}``."""
    import string

    names = set()
    try:
        for _, name, _, _ in string.Formatter().parse(text):
            if name is not None:
                names.add(name)
    except ValueError as exc:
        raise NNMDError(
            f"{where}: bad template ({exc}; write literal braces as {{{{ }}}})"
        ) from None
    unknown = sorted(names - set(TEMPLATE_PLACEHOLDERS))
    if unknown:
        raise NNMDError(
            f"{where}: unknown placeholder {{{unknown[0]}}}; known: "
            + ", ".join("{" + n + "}" for n in TEMPLATE_PLACEHOLDERS)
        )
    for needed in ("dump", "model"):
        if needed not in names:
            raise NNMDError(f"{where}: the template must use {{{needed}}}")


def al_config_from_dict(raw: Any, base_dir: str | Path = ".") -> ActiveLearningConfig:
    if not isinstance(raw, dict):
        raise NNMDError(f"the config must be a mapping, got {raw!r}")
    raw = copy.deepcopy(raw)
    section = raw.pop("active_learning", None)
    if section is None:
        raise NNMDError("config: the 'active_learning' section is missing")
    base_dir = str(Path(base_dir).resolve())
    al = _build(ActiveLearningSettings, section, "active_learning")
    _validate(al, base_dir)
    training_raw = copy.deepcopy(raw)
    data = training_raw.setdefault("data", {})
    if not isinstance(data, dict):
        raise NNMDError(f"config section 'data' must be a mapping, got {data!r}")
    extra = data.get("train") or []
    if isinstance(extra, str):
        extra = [extra]
    # the training config needs data.train: a stand-in, replaced in every iteration
    data["train"] = list(al.initial_structures)
    cfg = config_from_dict(training_raw, base_dir)
    cfg.data.train = []
    return ActiveLearningConfig(cfg, al, base_dir, raw | {"active_learning": section}, list(extra))


def load_al_config(path: str | Path) -> ActiveLearningConfig:
    path = Path(path)
    return al_config_from_dict(read_yaml(path), path.parent)
