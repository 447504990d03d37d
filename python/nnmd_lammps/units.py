"""Length and energy units accepted on the command line and in configs.

Internally everything is eV and Angstrom. Conversions use ASE's constants.
"""

from __future__ import annotations

from ase import units as ase_units

from .errors import NNMDError

#: Angstrom per unit of length.
LENGTH_UNITS: dict[str, float] = {
    "angstrom": 1.0,
    "bohr": ase_units.Bohr,
    "nm": 10.0,
}

#: eV per unit of energy.
ENERGY_UNITS: dict[str, float] = {
    "ev": 1.0,
    "hartree": ase_units.Hartree,
    "rydberg": ase_units.Rydberg,
    "kcal/mol": ase_units.kcal / ase_units.mol,
    "kj/mol": ase_units.kJ / ase_units.mol,
}


def length_factor(name: str) -> float:
    """Angstrom per unit ``name`` (case-insensitive)."""
    try:
        return LENGTH_UNITS[name.lower()]
    except KeyError:
        raise NNMDError(f"unknown length unit {name!r}; known: {', '.join(LENGTH_UNITS)}") from None


def energy_factor(name: str) -> float:
    """eV per unit ``name`` (case-insensitive)."""
    try:
        return ENERGY_UNITS[name.lower()]
    except KeyError:
        raise NNMDError(f"unknown energy unit {name!r}; known: {', '.join(ENERGY_UNITS)}") from None
