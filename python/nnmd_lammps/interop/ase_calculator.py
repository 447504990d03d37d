"""ASE calculator for nnmd-lammps model files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from ..errors import NNMDError
from ..model.potential import Potential


class NNMDCalculator(Calculator):
    """Energy, per-atom energies, forces and stress from a ``model.pt``.

    >>> atoms.calc = NNMDCalculator("model.pt")          # doctest: +SKIP
    >>> atoms.get_potential_energy()                      # doctest: +SKIP

    Units: eV and Angstrom. ``stress`` (ASE sign convention, Voigt order) is available
    for structures periodic in all three directions.

    Trust (docs/uncertainty.md): every calculation also stores, when the model has a
    training range, ``extrapolation_count`` and ``extrapolation_excursion`` per atom; with
    ``uncertainty=True`` (committee models) ``force_deviation`` and ``energy_deviation``
    per atom and ``max_force_deviation``. Read them from ``calc.results`` or with
    ``calc.get_property("force_deviation", atoms)``.

    ``backend``: the descriptor backend (default: the C++ kernels as PyTorch operators,
    forces contracted without dG/dd; "torch" for the torch implementation).
    """

    implemented_properties = (
        "energy",
        "free_energy",
        "energies",
        "forces",
        "stress",
        "extrapolation_count",
        "extrapolation_excursion",
        "force_deviation",
        "energy_deviation",
        "max_force_deviation",
    )

    def __init__(
        self,
        model: str | Path | Potential,
        device: str | torch.device = "cpu",
        uncertainty: bool = False,
        backend: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(model, Potential):
            self.potential = model
        else:
            self.potential = Potential.load(model, device, backend=backend)
        if uncertainty and self.potential.committee_size < 2:
            raise NNMDError(
                "NNMDCalculator(uncertainty=True) needs a committee model; this one has a "
                "single network per element"
            )
        self.uncertainty = uncertainty

    def calculate(
        self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        want_stress = "stress" in properties
        if want_stress and not np.all(self.atoms.pbc):
            raise PropertyNotImplementedError("stress needs a structure periodic in x, y and z")
        for name in properties:
            if name.endswith("_deviation") and not self.uncertainty:
                raise PropertyNotImplementedError(
                    f"{name} needs NNMDCalculator(..., uncertainty=True) and a committee model"
                )
            if name.startswith("extrapolation") and self.potential.training_range is None:
                raise PropertyNotImplementedError(f"{name}: the model file has no training range")
        (pred,) = self.potential.evaluate(
            [self.atoms], forces=True, stress=want_stress, uncertainty=self.uncertainty
        )
        self.results["energy"] = pred.energy
        self.results["free_energy"] = pred.energy
        self.results["energies"] = pred.atomic_energies
        self.results["forces"] = pred.forces
        if pred.stress is not None:
            self.results["stress"] = full_3x3_to_voigt_6_stress(pred.stress)
        for name in (
            "extrapolation_count",
            "extrapolation_excursion",
            "force_deviation",
            "energy_deviation",
            "max_force_deviation",
        ):
            value = getattr(pred, name)
            if value is not None:
                self.results[name] = value
