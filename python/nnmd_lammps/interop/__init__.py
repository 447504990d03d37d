"""Other codes: the ASE calculator (:mod:`.ase_calculator`), import of n2p2/RuNNer
potentials (:mod:`.n2p2`) and running LAMMPS from Python (:mod:`.lammps`).

Import the submodules directly (``from nnmd_lammps.interop.lammps import run_lammps``):
this package's ``__init__`` imports nothing, so that LAMMPS helpers load without torch.
"""
