"""ASE calculator for nnmd-lammps model files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from ..model.potential import Potential


class NNMDCalculator(Calculator):
    """Energy, per-atom energies, forces and stress from a ``model.pt``.

    >>> atoms.calc = NNMDCalculator("model.pt")          # doctest: +SKIP
    >>> atoms.get_potential_energy()                      # doctest: +SKIP

    Units: eV and Angstrom. ``stress`` (ASE sign convention, Voigt order) is available
    for structures periodic in all three directions.
    """

    implemented_properties = ("energy", "free_energy", "energies", "forces", "stress")

    def __init__(
        self, model: str | Path | Potential, device: str | torch.device = "cpu", **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.potential = model if isinstance(model, Potential) else Potential.load(model, device)

    def calculate(
        self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        want_stress = "stress" in properties
        if want_stress and not np.all(self.atoms.pbc):
            raise PropertyNotImplementedError("stress needs a structure periodic in x, y and z")
        (pred,) = self.potential.evaluate([self.atoms], forces=True, stress=want_stress)
        self.results["energy"] = pred.energy
        self.results["free_energy"] = pred.energy
        self.results["energies"] = pred.atomic_energies
        self.results["forces"] = pred.forces
        if pred.stress is not None:
            self.results["stress"] = full_3x3_to_voigt_6_stress(pred.stress)
