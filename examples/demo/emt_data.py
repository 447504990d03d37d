"""A training set for fcc copper computed with ASE's EMT calculator (the demo's data):
strained and rattled bulk cells, a volume scan, pure strains, molecular-dynamics
snapshots at several temperatures, a vacancy and (100)/(111) surfaces. Every structure
carries EMT's energy, forces and stress."""

from __future__ import annotations

import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc100, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.optimize import BFGS


def emt_lattice_constant() -> float:
    """EMT's equilibrium fcc lattice constant of Cu (Angstrom), from an E(a) fit."""
    a = np.linspace(3.55, 3.63, 9)
    e = [_energy(bulk("Cu", "fcc", a=x, cubic=True)) for x in a]
    p = np.polyfit(a, e, 2)
    return float(-p[1] / (2 * p[0]))


def _energy(atoms: Atoms) -> float:
    atoms.calc = EMT()
    return atoms.get_potential_energy()


def _labelled(atoms: Atoms, group: str) -> Atoms:
    a = atoms.copy()
    a.calc = EMT()
    e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
    a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
    a.info["group"] = group
    return a


def _strain(atoms: Atoms, eps: np.ndarray) -> Atoms:
    a = atoms.copy()
    a.set_cell(atoms.cell.array @ (np.eye(3) + eps).T, scale_atoms=True)
    return a


def _md_snapshots(atoms: Atoms, temperature: float, n: int, every: int, rng) -> list[Atoms]:
    a = atoms.copy()
    a.calc = EMT()
    MaxwellBoltzmannDistribution(a, temperature_K=temperature, rng=rng)
    dyn = Langevin(a, 4 * units.fs, temperature_K=temperature, friction=0.02, rng=rng, fixcm=False)
    out = []
    dyn.run(50)  # equilibrate
    for _ in range(n):
        dyn.run(every)
        out.append(a.copy())
    return out


def cu_training_set(seed: int = 0, scale: float = 1.0) -> list[Atoms]:
    """The structures, labelled with EMT (``scale`` < 1 makes a smaller set for tests)."""
    rng = np.random.default_rng(seed)
    a0 = emt_lattice_constant()
    cell8 = bulk("Cu", "fcc", a=a0, cubic=True).repeat(2)  # 32 atoms
    cell27 = bulk("Cu", "fcc", a=a0, cubic=True).repeat(3)  # 108 atoms
    out: list[Atoms] = []

    def count(n: int) -> int:
        return max(1, round(n * scale))

    # strained and rattled bulk
    for _ in range(count(70)):
        eps = rng.uniform(-0.03, 0.03, (3, 3))
        a = _strain(cell8, 0.5 * (eps + eps.T))
        a.rattle(rng.uniform(0.01, 0.12), seed=int(rng.integers(1 << 31)))
        out.append(_labelled(a, "rattled bulk"))
    # volume scan
    for f in np.linspace(0.93, 1.08, count(12)):
        a = bulk("Cu", "fcc", a=a0 * f, cubic=True).repeat(2)
        a.rattle(0.01, seed=int(rng.integers(1 << 31)))
        out.append(_labelled(a, "volume scan"))
    # pure strains (elastic constants)
    for amp in (-0.02, -0.01, 0.01, 0.02)[: count(4)]:
        for i, j in ((0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (0, 2)):
            eps = np.zeros((3, 3))
            eps[i, j] = eps[j, i] = amp
            out.append(_labelled(_strain(cell8, eps), "strain"))
    # molecular dynamics
    for temp in (300.0, 700.0, 1200.0):
        for a in _md_snapshots(cell27, temp, count(14), 25, rng):
            out.append(_labelled(a, f"MD {temp:.0f} K"))
    # vacancy: relaxed, then MD
    vac = cell27.copy()
    del vac[0]
    vac.calc = EMT()
    BFGS(vac, logfile=None).run(fmax=0.01)
    out.append(_labelled(vac, "vacancy"))
    for temp in (300.0, 800.0):
        for a in _md_snapshots(vac, temp, count(6), 25, rng):
            out.append(_labelled(a, "vacancy MD"))
    # surfaces with 8 Angstrom of vacuum (periodic cell)
    for maker in (fcc100, fcc111):
        slab = maker("Cu", size=(3, 3, 6), a=a0, vacuum=4.0, periodic=True)
        slab.calc = EMT()
        BFGS(slab, logfile=None).run(fmax=0.02)
        out.append(_labelled(slab, "surface"))
        for a in _md_snapshots(slab, 500.0, count(5), 25, rng):
            out.append(_labelled(a, "surface MD"))
    return out
