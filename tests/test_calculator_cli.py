"""The ASE calculator and the small CLI commands."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.stress import full_3x3_to_voigt_6_stress

from nnmd_lammps import NNMDCalculator
from nnmd_lammps.cli import main

from conftest import save_potential


@pytest.fixture()
def model_file(tmp_path, binary_potential):
    return save_potential(binary_potential, tmp_path / "model.pt")


def test_calculator(model_file, binary_potential):
    atoms = Atoms(
        "H2O2",
        positions=[[0, 0, 0], [0.9, 0.1, 0], [0.1, 1.1, 0.2], [2, 1, 1]],
        cell=np.eye(3) * 4.2,
        pbc=True,
    )
    atoms.calc = NNMDCalculator(model_file)
    ref = binary_potential.evaluate([atoms])[0]
    assert atoms.get_potential_energy() == pytest.approx(ref.energy, rel=1e-14)
    np.testing.assert_allclose(atoms.get_forces(), ref.forces, atol=1e-13)
    np.testing.assert_allclose(
        atoms.get_stress(), full_3x3_to_voigt_6_stress(ref.stress), atol=1e-14
    )
    np.testing.assert_allclose(atoms.get_potential_energies(), ref.atomic_energies, atol=1e-13)
    atoms.pbc = False
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_info(model_file, capsys):
    assert main(["info", str(model_file)]) == 0
    out = capsys.readouterr().out
    assert "elements        : H O" in out
    assert "cutoff          : 4.5 Angstrom" in out
    assert "type 3:" in out and "type 9:" in out


def test_predict_roundtrip(model_file, tmp_path, binary_potential, capsys):
    import ase.io

    frames = [
        Atoms("H2O", positions=[[0, 0, 0], [0.9, 0.1, 0], [0.1, 1.1, 0.2]]),
        Atoms("OH", positions=[[0, 0, 0], [0.97, 0, 0]], cell=np.eye(3) * 3, pbc=True),
    ]
    ase.io.write(tmp_path / "in.extxyz", frames)
    assert (
        main(
            [
                "predict",
                str(model_file),
                str(tmp_path / "in.extxyz"),
                "-o",
                str(tmp_path / "out.extxyz"),
            ]
        )
        == 0
    )
    out = ase.io.read(tmp_path / "out.extxyz", ":")
    for a, b in zip(frames, out, strict=True):
        ref = binary_potential.evaluate([a])[0]
        assert b.get_potential_energy() == pytest.approx(ref.energy, abs=1e-7)
        np.testing.assert_allclose(b.get_forces(), ref.forces, atol=1e-7)
    assert "stress" not in out[0].calc.results
    assert "stress" in out[1].calc.results


def test_bad_units_are_errors(model_file, tmp_path, capsys):
    assert (
        main(
            [
                "predict",
                str(model_file),
                str(model_file),
                "--length-unit",
                "furlong",
                "-o",
                str(tmp_path / "o.xyz"),
            ]
        )
        == 1
    )
    assert "unknown length unit 'furlong'" in capsys.readouterr().err
