"""Symmetry-function parameters and their validation (docs/symmetry_functions.md).

A :class:`SymmetryFunction` is one atom-centred function; a :class:`DescriptorSpec`
is the ordered list of them for every element of a model. The order is the order of
the network inputs and of the model file's metadata.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ase.data import atomic_numbers

from ..errors import NNMDError

RADIAL_TYPES = (2,)
ANGULAR_TYPES = (3, 9)
SUPPORTED_TYPES = RADIAL_TYPES + ANGULAR_TYPES
CUTOFF_TYPES = tuple(range(9))
#: Cutoff types for which the inner-cutoff parameter alpha has an effect.
CUTOFF_TYPES_WITH_ALPHA = (1, 4, 5, 6, 7, 8)


def cutoff_problem(cutoff_type: int, alpha: float) -> str:
    """What is wrong with a cutoff type and inner-cutoff parameter ('' if nothing)."""
    if cutoff_type not in CUTOFF_TYPES:
        return f"unsupported cutoff type {cutoff_type} (supported: 0-8)"
    if not 0.0 <= alpha < 1.0:
        return "cutoff alpha must satisfy 0 <= alpha < 1"
    return ""


def atomic_number(symbol: str) -> int:
    try:
        return atomic_numbers[symbol]
    except KeyError:
        raise NNMDError(f"unknown chemical element {symbol!r}") from None


def sort_elements(symbols: Iterable[str]) -> list[str]:
    """Unique element symbols sorted by atomic number (n2p2's element order)."""
    unique = set(symbols)
    for s in unique:
        atomic_number(s)
    return sorted(unique, key=atomic_number)


@dataclass(frozen=True)
class SymmetryFunction:
    """One symmetry function; lengths in Angstrom, ``eta`` in 1/Angstrom^2.

    ``neighbors`` holds one element for radial (type 2) and an unordered pair for
    angular functions (types 3, 9), stored in model element order.
    """

    type: int
    center: str
    neighbors: tuple[str, ...]
    eta: float
    rc: float
    rs: float = 0.0
    lambda_: float = 0.0
    zeta: float = 0.0
    cutoff_type: int = 1
    cutoff_alpha: float = 0.0

    @property
    def is_angular(self) -> bool:
        return self.type in ANGULAR_TYPES

    def validate(self) -> None:
        """The parameter rules (the one Python routine; the C++ one is ``nnmd::validate``
        in lammps_plugin/kernels/, and a test holds both to the same table)."""
        where = f"symmetry function {self.describe()}"
        if self.type not in SUPPORTED_TYPES:
            raise NNMDError(f"{where}: unsupported type {self.type} (supported: 2, 3, 9)")
        want = 2 if self.is_angular else 1
        if len(self.neighbors) != want:
            raise NNMDError(f"{where}: type {self.type} needs {want} neighbour element(s)")
        for v, name in ((self.eta, "eta"), (self.rc, "rc"), (self.rs, "rs")):
            if not math.isfinite(v):
                raise NNMDError(f"{where}: {name} is not finite")
        if self.eta < 0:
            raise NNMDError(f"{where}: eta must be >= 0")
        if self.rc <= 0:
            raise NNMDError(f"{where}: rc must be > 0")
        problem = cutoff_problem(self.cutoff_type, self.cutoff_alpha)
        if problem:
            raise NNMDError(f"{where}: {problem}")
        if self.is_angular:
            if self.lambda_ not in (-1.0, 1.0):
                raise NNMDError(f"{where}: lambda must be +1 or -1")
            if not (math.isfinite(self.zeta) and self.zeta >= 1.0):
                raise NNMDError(f"{where}: zeta must be >= 1")

    def describe(self) -> str:
        nb = " ".join(self.neighbors)
        if self.is_angular:
            return (
                f"{self.center} {self.type} {nb} eta={self.eta:g} lambda={self.lambda_:g} "
                f"zeta={self.zeta:g} rs={self.rs:g} rc={self.rc:g}"
            )
        return f"{self.center} {self.type} {nb} eta={self.eta:g} rs={self.rs:g} rc={self.rc:g}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["neighbors"] = list(self.neighbors)
        d["lambda"] = d.pop("lambda_")
        if not self.is_angular:
            del d["lambda"], d["zeta"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SymmetryFunction:
        known = {
            "type",
            "center",
            "neighbors",
            "eta",
            "rc",
            "rs",
            "lambda",
            "zeta",
            "cutoff_type",
            "cutoff_alpha",
        }
        unknown = set(d) - known
        if unknown:
            raise NNMDError(f"symmetry function: unknown key(s) {sorted(unknown)}")
        try:
            sf = cls(
                type=int(d["type"]),
                center=str(d["center"]),
                neighbors=tuple(str(e) for e in d["neighbors"]),
                eta=float(d["eta"]),
                rc=float(d["rc"]),
                rs=float(d.get("rs", 0.0)),
                lambda_=float(d.get("lambda", 0.0)),
                zeta=float(d.get("zeta", 0.0)),
                cutoff_type=int(d.get("cutoff_type", 1)),
                cutoff_alpha=float(d.get("cutoff_alpha", 0.0)),
            )
        except KeyError as exc:
            raise NNMDError(f"symmetry function: missing key {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise NNMDError(f"symmetry function: bad value ({exc})") from None
        sf.validate()
        return sf


def n2p2_sort_key(sf: SymmetryFunction, element_index: dict[str, int]) -> tuple:
    """n2p2's symmetry-function order within one element:
    (type, cutoff type, alpha, rc, eta, rs, zeta, lambda, neighbour elements).

    Lengths enter in any consistent unit (the order is unit independent)."""
    nb = tuple(element_index[e] for e in sf.neighbors)
    return (sf.type, sf.cutoff_type, sf.cutoff_alpha, sf.rc, sf.eta, sf.rs, sf.zeta, sf.lambda_, nb)


@dataclass
class DescriptorSpec:
    """Elements (sorted by atomic number) and, per element, its symmetry functions
    in network-input order."""

    elements: list[str]
    functions: dict[str, list[SymmetryFunction]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.elements = list(self.elements)
        if not self.elements:
            raise NNMDError("a model needs at least one element")
        if self.elements != sort_elements(self.elements) or len(set(self.elements)) != len(
            self.elements
        ):
            raise NNMDError(
                f"elements must be unique and sorted by atomic number, got {self.elements}"
            )
        for e in self.elements:
            self.functions.setdefault(e, [])
        extra = set(self.functions) - set(self.elements)
        if extra:
            raise NNMDError(f"symmetry functions given for elements not in the model: {extra}")
        index = self.element_index
        canon: dict[str, list[SymmetryFunction]] = {}
        for e in self.elements:
            out = []
            for sf in self.functions[e]:
                sf.validate()
                if sf.center != e:
                    raise NNMDError(f"symmetry function {sf.describe()} listed under {e}")
                for nb in sf.neighbors:
                    if nb not in index:
                        raise NNMDError(
                            f"symmetry function {sf.describe()}: neighbour element {nb!r} "
                            f"is not one of the model elements {self.elements}"
                        )
                if sf.is_angular:
                    nbs = tuple(sorted(sf.neighbors, key=index.__getitem__))
                    sf = SymmetryFunction(**{**asdict(sf), "neighbors": nbs})
                out.append(sf)
            if not out:
                raise NNMDError(f"element {e} has no symmetry functions")
            keys = [_identity_key(sf) for sf in out]
            if len(set(keys)) != len(keys):
                raise NNMDError(f"element {e} has duplicate symmetry functions")
            canon[e] = out
        self.functions = canon

    @property
    def element_index(self) -> dict[str, int]:
        return {e: i for i, e in enumerate(self.elements)}

    @property
    def cutoff(self) -> float:
        """Largest cutoff radius of any symmetry function (Angstrom)."""
        return max(sf.rc for fs in self.functions.values() for sf in fs)

    def num_functions(self, element: str) -> int:
        return len(self.functions[element])

    def sorted_n2p2(self) -> DescriptorSpec:
        idx = self.element_index
        return DescriptorSpec(
            self.elements,
            {
                e: sorted(fs, key=lambda s: n2p2_sort_key(s, idx))
                for e, fs in self.functions.items()
            },
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "elements": list(self.elements),
            "functions": {e: [sf.to_dict() for sf in self.functions[e]] for e in self.elements},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DescriptorSpec:
        try:
            elements = list(d["elements"])
            funcs = {
                e: [SymmetryFunction.from_dict(x) for x in fs] for e, fs in d["functions"].items()
            }
        except KeyError as exc:
            raise NNMDError(f"descriptor specification: missing key {exc.args[0]!r}") from None
        return cls(elements, funcs)


def _identity_key(sf: SymmetryFunction) -> tuple:
    return (
        sf.type,
        sf.neighbors,
        sf.eta,
        sf.rc,
        sf.rs,
        sf.lambda_,
        sf.zeta,
        sf.cutoff_type,
        sf.cutoff_alpha,
    )


def scale_lengths(sf: SymmetryFunction, angstrom_per_unit: float) -> SymmetryFunction:
    """Convert a symmetry function given in some length unit to Angstrom."""
    u = angstrom_per_unit
    return SymmetryFunction(
        type=sf.type,
        center=sf.center,
        neighbors=sf.neighbors,
        eta=sf.eta / (u * u),
        rc=sf.rc * u,
        rs=sf.rs * u,
        lambda_=sf.lambda_,
        zeta=sf.zeta,
        cutoff_type=sf.cutoff_type,
        cutoff_alpha=sf.cutoff_alpha,
    )
