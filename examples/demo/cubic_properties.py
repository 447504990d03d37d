"""Materials properties of a cubic crystal from any ASE calculator (the demo's validation
table): lattice constant and bulk modulus (Birch-Murnaghan fit of E(V) with ``ase.eos``),
elastic constants C11, C12, C44 (stress-strain, central differences) and the relaxed
vacancy formation energy.

The network potential is evaluated *in LAMMPS* through ASE's ``LAMMPSlib`` calculator
with ``pair_style nnmd``:

    python examples/demo/cubic_properties.py MODEL ELEMENT CRYSTAL A_GUESS [OUT.json]

prints its figures as JSON (the demo runs it in its own process, away from torch).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.eos import EquationOfState
from ase.optimize import BFGS
from ase.units import GPa


@dataclass
class CubicProperties:
    lattice_constant: float  # Angstrom
    bulk_modulus: float  # GPa
    c11: float  # GPa
    c12: float
    c44: float
    vacancy_formation_energy: float  # eV
    cohesive_energy: float  # eV/atom at the equilibrium lattice constant


def energy_stress(calc: Calculator, atoms: Atoms) -> tuple[float, np.ndarray]:
    """Energy (eV) and 3x3 stress (eV/Angstrom^3, ASE sign) of ``atoms``."""
    a = atoms.copy()
    a.calc = calc
    return a.get_potential_energy(), a.get_stress(voigt=False)


def relaxed_energy(calc: Calculator, atoms: Atoms, fmax_ev_per_angstrom: float = 1e-4) -> float:
    """Energy (eV) after relaxing the positions at fixed cell."""
    a = atoms.copy()
    a.calc = calc
    BFGS(a, logfile=None).run(fmax=fmax_ev_per_angstrom, steps=500)
    return a.get_potential_energy()


def cubic_properties(
    calc: Calculator,
    element: str,
    crystal: str,
    a_guess: float,
    strain: float = 0.005,
    vacancy_cell: int = 3,
) -> CubicProperties:
    """Properties of a cubic crystal (fcc, bcc, diamond) with calculator ``calc``."""
    scan = a_guess * np.linspace(0.97, 1.03, 9)
    vols, ens = [], []
    for a in scan:
        atoms = bulk(element, crystal, a=a, cubic=True)
        e, _ = energy_stress(calc, atoms)
        vols.append(atoms.get_volume() / len(atoms))
        ens.append(e / len(atoms))
    v0, _, b0 = EquationOfState(vols, ens, eos="birchmurnaghan").fit()
    n_cubic = len(bulk(element, crystal, a=1.0, cubic=True))
    a0 = (v0 * n_cubic) ** (1.0 / 3.0)
    ref = bulk(element, crystal, a=a0, cubic=True)

    def stress_at(deformation: np.ndarray) -> np.ndarray:
        at = ref.copy()
        at.set_cell(ref.cell.array @ deformation.T, scale_atoms=True)
        return energy_stress(calc, at)[1]

    eye = np.eye(3)
    dx = np.zeros((3, 3))
    dx[0, 0] = strain
    s_plus, s_minus = stress_at(eye + dx), stress_at(eye - dx)
    c11 = (s_plus[0, 0] - s_minus[0, 0]) / (2 * strain)
    c12 = (s_plus[1, 1] - s_minus[1, 1]) / (2 * strain)
    shear = np.zeros((3, 3))
    shear[1, 2] = shear[2, 1] = strain / 2  # engineering shear strain gamma_yz = strain
    s_plus, s_minus = stress_at(eye + shear), stress_at(eye - shear)
    c44 = (s_plus[1, 2] - s_minus[1, 2]) / (2 * strain)
    # vacancy formation energy in a relaxed supercell at the equilibrium lattice constant
    perfect = ref.repeat(vacancy_cell)
    e_perfect = energy_stress(calc, perfect)[0]
    vac = perfect.copy()
    del vac[0]
    e_vac = relaxed_energy(calc, vac)
    n = len(perfect)
    e_f = e_vac - (n - 1) / n * e_perfect
    return CubicProperties(a0, b0 / GPa, c11 / GPa, c12 / GPa, c44 / GPa, e_f, e_perfect / n)


def lammps_calculator(model: str | Path, element: str) -> Calculator:
    """ASE's LAMMPSlib running ``pair_style nnmd`` in this process."""
    from mpi4py import MPI  # noqa: F401, I001  (loads libmpi before the lammps module)
    from ase.calculators.lammpslib import LAMMPSlib

    return LAMMPSlib(
        lmpcmds=["pair_style nnmd", f"pair_coeff * * {model} {element}"],
        atom_types={element: 1},
        keep_alive=True,
        lammps_header=["units metal", "atom_style atomic", "atom_modify map array sort 0 0"],
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (4, 5):
        print(
            "usage: cubic_properties.py MODEL ELEMENT CRYSTAL A_GUESS [OUT.json]", file=sys.stderr
        )
        return 2
    model, element, crystal, a_guess = args[0], args[1], args[2], float(args[3])
    props = cubic_properties(lammps_calculator(model, element), element, crystal, a_guess)
    text = json.dumps(asdict(props), indent=1, allow_nan=False)
    if len(args) == 5:
        Path(args[4]).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
