"""n2p2 import: the published water potential against n2p2's expected output, and
synthetic potentials (types 2/3/9, softplus and sigmoid, cutoff types incl. 6 with an
inner cutoff, sigma scaling, monoclinic cells) against an independent evaluation."""

from __future__ import annotations

import itertools
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units

from nnmd_lammps.data import read_input_data, write_input_data
from nnmd_lammps.errors import NNMDError
from nnmd_lammps.interop.n2p2 import import_n2p2
from nnmd_lammps.model import Potential, model_from_weights

from conftest import SHARED_DATA, requires_shared_data
from reference import g_ref, mlp_ref

NNMD = [sys.executable, "-m", "nnmd_lammps.cli"]
WATER = SHARED_DATA / "n2p2" / "H2O_RPBE-D3"


def run_nnmd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*NNMD, *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
@requires_shared_data
def test_water_matches_n2p2_expected_output(tmp_path):
    """The issue's acceptance check, through the command line."""
    model = tmp_path / "h2o.pt"
    out = tmp_path / "out.extxyz"
    r = run_nnmd(
        "import-n2p2",
        str(WATER),
        "--length-unit",
        "bohr",
        "--energy-unit",
        "hartree",
        "-o",
        str(model),
    )
    assert r.returncode == 0, r.stderr
    r = run_nnmd(
        "predict",
        str(model),
        str(WATER / "input.data"),
        "--format",
        "n2p2",
        "--length-unit",
        "bohr",
        "--energy-unit",
        "hartree",
        "-o",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    import ase.io

    pred = ase.io.read(out)
    expected = json.loads((WATER / "expected.json").read_text())
    e_ref = expected["energy"] * units.Hartree
    f_ref = np.array(expected["forces"]) * units.Hartree / units.Bohr
    assert len(pred) == 1080
    assert abs(pred.get_potential_energy() - e_ref) / abs(e_ref) < 1e-10
    assert np.abs(pred.get_forces() - f_ref).max() < 5e-8
    assert pred.get_stress().shape == (6,)


@pytest.mark.slow
@requires_shared_data
def test_water_full_precision_in_python():
    pot_data = import_n2p2(WATER, units.Bohr, units.Hartree)
    module = model_from_weights(pot_data.spec, pot_data.description, pot_data.weights)
    pot = Potential(pot_data.spec, module)
    atoms = read_input_data(WATER / "input.data", units.Bohr, units.Hartree)
    pred = pot.evaluate(atoms)[0]
    expected = json.loads((WATER / "expected.json").read_text())
    f_ref = np.array(expected["forces"]) * units.Hartree / units.Bohr
    assert abs(pred.energy / units.Hartree - expected["energy"]) / abs(expected["energy"]) < 1e-13
    assert np.abs(pred.forces - f_ref).max() < 1e-10


# -- synthetic potentials --------------------------------------------------------------------

ELEMENTS_SORTED = ["O", "Zn"]  # by atomic number: the order n2p2 uses internally


def _synthetic_functions(rng: random.Random) -> list[tuple]:
    """(center, type, neighbours, eta, rs, rc, lambda, zeta) in Bohr units."""
    fns = []
    for c in ELEMENTS_SORTED:
        for n in ELEMENTS_SORTED:
            for eta, rs in ((0.02, 0.0), (0.08, 2.5), (0.3, 3.8)):
                fns.append((c, 2, (n,), eta, rs, 8.0, 0.0, 0.0))
        for pair in (("O", "O"), ("O", "Zn"), ("Zn", "Zn")):
            for t in (3, 9):
                for eta, lam, zeta, rs, rc in (
                    (0.01, 1.0, 1.0, 0.0, 8.0),
                    (0.02, -1.0, 2.0, 0.0, 8.0),
                    (0.015, 1.0, 1.5, 0.7, 9.5),
                    (0.005, -1.0, 4.0, 0.0, 9.5),
                ):
                    fns.append((c, t, pair, eta, rs, rc, lam, zeta))
    rng.shuffle(fns)
    return fns


def _sf_line(f) -> str:
    c, t, nb, eta, rs, rc, lam, zeta = f
    if t == 2:
        return f"symfunction_short {c} 2 {nb[0]} {eta!r} {rs!r} {rc!r}"
    nb = list(nb)
    random.Random(hash(f) & 0xFFFF).shuffle(nb)  # neighbour order must not matter
    tail = f" {rs!r}" if rs != 0.0 else ""
    return f"symfunction_short {c} {t} {nb[0]} {nb[1]} {eta!r} {lam!r} {zeta!r} {rc!r}{tail}"


def _n2p2_order(fns, center):
    """n2p2's sort key (type, cutoff type, alpha, rc, eta, rs, zeta, lambda, elements)."""
    idx = {e: i for i, e in enumerate(ELEMENTS_SORTED)}
    mine = [f for f in fns if f[0] == center]
    return sorted(
        mine,
        key=lambda f: (f[1], f[5], f[3], f[4], f[7], f[6], tuple(sorted(idx[x] for x in f[2]))),
    )


def write_synthetic_potential(
    d: Path, seed: int, ctype: str, acts: str, scaling: list[str], hidden=(6, 5), normalise=True
) -> dict:
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    fns = _synthetic_functions(rng)
    norm = {"mean_energy": -3.25, "conv_energy": 41.5, "conv_length": 1.7} if normalise else {}
    offsets = {"O": -74.9, "Zn": -1777.1}
    lines = [
        "# synthetic potential written by the test suite",
        "number_of_elements 2",
        "elements Zn O",
        f"cutoff_type {ctype}",
    ]
    lines += [f"{k} {v!r}" for k, v in norm.items()]
    lines += [f"atom_energy {e} {v!r}" for e, v in offsets.items()]
    lines += [
        f"global_hidden_layers_short {len(hidden)}",
        "global_nodes_short " + " ".join(map(str, hidden)),
        f"global_activation_short {acts}",
    ]
    lines += [
        *scaling,
        "scale_min_short -0.5",
        "scale_max_short 1.5",
        "epochs 10",
        "kalman_type 0",
        "use_short_forces",
    ]
    lines += [_sf_line(f) for f in fns]
    (d / "input.nn").write_text("\n".join(lines) + "\n")
    # scaling statistics, in n2p2's order
    stats, weights, nets = {}, {}, {}
    sc_lines = ["# e_index sf_index min max mean sigma"]
    for ei, e in enumerate(ELEMENTS_SORTED):
        order = _n2p2_order(fns, e)
        n = len(order)
        gmin = nrng.uniform(0.0, 0.2, n)
        gmax = gmin + nrng.uniform(0.5, 4.0, n)
        gmean = gmin + 0.4 * (gmax - gmin)
        gsig = nrng.uniform(0.1, 1.0, n)
        stats[e] = (gmin, gmax, gmean, gsig)
        for k in range(n):
            vals = " ".join(repr(float(x[k])) for x in (gmin, gmax, gmean, gsig))
            sc_lines.append(f"{ei + 1} {k + 1} {vals}")
        sizes = [n, *hidden, 1]
        layers, flat = [], []
        for a, b in itertools.pairwise(sizes):
            w = nrng.normal(0, 1.0 / math.sqrt(a), (b, a))
            bias = nrng.normal(0, 0.3, b)
            layers.append((w, bias))
            flat += [w[o, i] for i in range(a) for o in range(b)] + list(bias)
        nets[e] = layers
        z = {"O": 8, "Zn": 30}[e]
        wl = ["# weights"] + [f"{float(v)!r} a {k + 1}" for k, v in enumerate(flat)]
        (d / f"weights.{z:03d}.data").write_text("\n".join(wl) + "\n")
        weights[e] = order
    (d / "scaling.data").write_text("\n".join(sc_lines) + "\n")
    names = {"l": "identity", "t": "tanh", "s": "sigmoid", "p": "softplus"}
    return {
        "order": weights,
        "stats": stats,
        "nets": nets,
        "norm": norm,
        "offsets": offsets,
        "acts": [names[a] for a in acts.split()],
        "ctype": ctype,
        "scaling": scaling,
    }


def reference_energy_hartree(
    info: dict, symbols, pos_bohr, cell_bohr, pbc, constants: bool = True
) -> float:
    """Independent n2p2-style evaluation in the potential's own units (``constants``:
    include mean_energy and atom_energy, which do not change forces)."""
    ct = [float(x) for x in info["ctype"].split()]
    ctype, alpha = int(ct[0]), (ct[1] if len(ct) > 1 else 0.0)
    funcs = {
        e: [
            dict(
                type=f[1],
                neighbors=list(f[2]),
                eta=f[3],
                rs=f[4],
                rc=f[5],
                **{"lambda": f[6]},
                zeta=f[7],
                cutoff_type=ctype,
                cutoff_alpha=alpha,
            )
            for f in info["order"][e]
        ]
        for e in ELEMENTS_SORTED
    }
    G = g_ref(symbols, pos_bohr, cell_bohr, pbc, funcs)
    scaling = info["scaling"]
    smin, smax = -0.5, 1.5
    total = 0.0
    for el, g in zip(symbols, G, strict=True):
        gmin, gmax, gmean, gsig = info["stats"][el]
        g = np.array(g)
        if "scale_symmetry_functions" in scaling and "center_symmetry_functions" in scaling:
            x = smin + (smax - smin) * (g - gmean) / (gmax - gmin)
        elif "scale_symmetry_functions" in scaling:
            x = smin + (smax - smin) * (g - gmin) / (gmax - gmin)
        elif "center_symmetry_functions" in scaling:
            x = g - gmean
        elif "scale_symmetry_functions_sigma" in scaling:
            x = smin + (smax - smin) * (g - gmean) / gsig
        else:
            x = g
        y = float(mlp_ref(info["nets"][el], info["acts"], x[None, :])[0])
        if info["norm"]:
            y = y / info["norm"]["conv_energy"]
            y += info["norm"]["mean_energy"] if constants else 0.0
        total += y + (info["offsets"][el] if constants else 0.0)
    return total


def _monoclinic_structure(seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b, c, beta = 7.9, 8.6, 9.1, math.radians(104.0)
    cell = np.array([[a, 0, 0], [0, b, 0], [c * math.cos(beta), 0, c * math.sin(beta)]])
    symbols = ["Zn", "O", "O", "Zn", "O", "Zn", "O", "O"]
    while True:
        frac = rng.random((len(symbols), 3))
        atoms = Atoms(symbols, scaled_positions=frac, cell=cell, pbc=True)
        if atoms.get_all_distances(mic=True)[np.triu_indices(len(symbols), 1)].min() > 2.6:
            return symbols, atoms.positions, cell


CASES = [
    # cutoff type, activations, scaling keywords
    ("6 0.1", "p s l", ["scale_symmetry_functions_sigma"]),
    ("1", "t p l", ["scale_symmetry_functions", "center_symmetry_functions"]),
    ("2", "s t l", ["scale_symmetry_functions"]),
    ("8 0.3", "t t l", ["center_symmetry_functions"]),
    ("4 0.05", "p p l", []),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(CASES)))
def test_synthetic_potential_matches_independent_evaluation(tmp_path, case):
    ctype, acts, scaling = CASES[case]
    info = write_synthetic_potential(
        tmp_path, seed=case, ctype=ctype, acts=acts, scaling=scaling, normalise=case != 4
    )
    symbols, pos, cell = _monoclinic_structure(case)
    # through the input.data reader: a file in Bohr, read into Angstrom
    write_input_data(tmp_path / "input.data", [Atoms(symbols, positions=pos, cell=cell, pbc=True)])
    atoms = read_input_data(tmp_path / "input.data", units.Bohr, units.Hartree)
    assert np.allclose(atoms[0].positions, pos * units.Bohr)
    model = tmp_path / "m.pt"
    r = run_nnmd(
        "import-n2p2",
        str(tmp_path),
        "--length-unit",
        "bohr",
        "--energy-unit",
        "hartree",
        "-o",
        str(model),
    )
    assert r.returncode == 0, r.stderr
    pot = Potential.load(model)
    pred = pot.evaluate(atoms)[0]
    e_ref = reference_energy_hartree(info, symbols, pos, cell, [True] * 3) * units.Hartree
    assert abs(pred.energy - e_ref) <= 1e-12 * abs(e_ref)
    # forces of one atom of each element against central differences of the reference
    h = 1e-4
    for i in (0, 1):
        for k in range(3):
            p, m = pos.copy(), pos.copy()
            p[i, k] += h
            m[i, k] -= h
            fd = -(
                reference_energy_hartree(info, symbols, p, cell, [True] * 3, False)
                - reference_energy_hartree(info, symbols, m, cell, [True] * 3, False)
            ) / (2 * h)
            fd *= units.Hartree / units.Bohr
            assert abs(pred.forces[i, k] - fd) < 1e-7 * max(1.0, abs(fd))


def test_unit_conversion_is_consistent(tmp_path):
    """The same potential imported in (Bohr, Hartree) and evaluated on a structure in
    Angstrom equals the evaluation in its own units."""
    info = write_synthetic_potential(
        tmp_path, seed=7, ctype="1", acts="t t l", scaling=["scale_symmetry_functions"]
    )
    symbols, pos, cell = _monoclinic_structure(7)
    data = import_n2p2(tmp_path, units.Bohr, units.Hartree)
    pot = Potential(data.spec, model_from_weights(data.spec, data.description, data.weights))
    atoms = Atoms(symbols, positions=pos * units.Bohr, cell=cell * units.Bohr, pbc=True)
    e = pot.evaluate([atoms])[0].energy
    e_ref = reference_energy_hartree(info, symbols, pos, cell, [True] * 3) * units.Hartree
    assert abs(e - e_ref) < 1e-12 * abs(e_ref)
    # SF parameters are in Angstrom in the model
    sf = data.spec.functions["O"][0]
    assert sf.rc == pytest.approx(8.0 * units.Bohr)


# -- bad input ---------------------------------------------------------------------------------


def _good_dir(tmp_path: Path) -> Path:
    d = tmp_path / "pot"
    d.mkdir()
    write_synthetic_potential(
        d, seed=3, ctype="1", acts="t t l", scaling=["scale_symmetry_functions"]
    )
    return d


def _assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("nnmd: error:")
    for n in needles:
        assert n in lines[0], lines[0]


def test_malformed_input_nn(tmp_path):
    d = _good_dir(tmp_path)
    text = (d / "input.nn").read_text().replace("global_nodes_short 6 5", "global_nodes_short 6 x")
    (d / "input.nn").write_text(text)
    r = run_nnmd("import-n2p2", str(d), "-o", str(tmp_path / "m.pt"))
    _assert_one_line_error(r, "global_nodes_short", "'x'")


def test_unsupported_symmetry_function_type(tmp_path):
    d = _good_dir(tmp_path)
    with (d / "input.nn").open("a") as fh:
        fh.write("symfunction_short O 12 O 0.1 1.0 2.0 8.0\n")
    r = run_nnmd("import-n2p2", str(d), "-o", str(tmp_path / "m.pt"))
    _assert_one_line_error(r, "symfunction_short", "type 12")


@pytest.mark.slow
@pytest.mark.parametrize(
    "line,needle",
    [
        ("global_activation_short t g l", "'g'"),
        ("ewald_prec 1e-6", "ewald_prec"),
        ("element_nodes_short O 4 3", "element_nodes_short"),
        ("my_new_keyword 1", "my_new_keyword"),
        ("cutoff_type 9", "cutoff type 9"),
    ],
)
def test_unsupported_keywords_are_errors(tmp_path, line, needle):
    d = _good_dir(tmp_path)
    key = line.split()[0]
    text = "\n".join(
        ln for ln in (d / "input.nn").read_text().splitlines() if not ln.startswith(key + " ")
    )
    (d / "input.nn").write_text(text + "\n" + line + "\n")
    r = run_nnmd("import-n2p2", str(d), "-o", str(tmp_path / "m.pt"))
    _assert_one_line_error(r, needle)


@pytest.mark.slow
def test_missing_weights_file(tmp_path):
    d = _good_dir(tmp_path)
    (d / "weights.030.data").unlink()
    r = run_nnmd("import-n2p2", str(d), "-o", str(tmp_path / "m.pt"))
    _assert_one_line_error(r, "weights file for element Zn not found")


def test_wrong_number_of_weights(tmp_path):
    d = _good_dir(tmp_path)
    lines = (d / "weights.008.data").read_text().splitlines()
    (d / "weights.008.data").write_text("\n".join(lines[:-1]) + "\n")
    r = run_nnmd("import-n2p2", str(d), "-o", str(tmp_path / "m.pt"))
    _assert_one_line_error(r, "weights.008.data", "needs")


@pytest.mark.slow
def test_scaling_file_mismatch(tmp_path):
    d = _good_dir(tmp_path)
    lines = (d / "scaling.data").read_text().splitlines()
    (d / "scaling.data").write_text("\n".join(lines[:-1]) + "\n")
    r = run_nnmd("import-n2p2", str(d), "-o", str(tmp_path / "m.pt"))
    _assert_one_line_error(r, "scaling lines for element Zn")


@pytest.mark.slow
def test_element_mismatch_and_non_finite_positions(tmp_path):
    d = _good_dir(tmp_path)
    model = tmp_path / "m.pt"
    assert run_nnmd("import-n2p2", str(d), "-o", str(model)).returncode == 0
    for name, atoms, needle in (
        ("cu.xyz", Atoms("OCu", positions=[[0, 0, 0], [2, 0, 0]]), "Cu"),
        ("nan.xyz", Atoms("OZn", positions=[[0, 0, 0], [np.nan, 0, 0]]), "non-finite"),
    ):
        atoms.write(tmp_path / name)
        r = run_nnmd("predict", str(model), str(tmp_path / name), "-o", str(tmp_path / "o.xyz"))
        _assert_one_line_error(r, needle)


@pytest.mark.slow
def test_missing_model_and_directory(tmp_path):
    r = run_nnmd("predict", str(tmp_path / "none.pt"), str(tmp_path / "x.xyz"), "-o", "o.xyz")
    _assert_one_line_error(r, "model file not found")
    r = run_nnmd("import-n2p2", str(tmp_path / "nothing"), "-o", str(tmp_path / "m.pt"))
    _assert_one_line_error(r, "potential directory not found")


def test_input_data_reader_errors(tmp_path):
    p = tmp_path / "input.data"
    p.write_text("begin\natom 0 0 0 O 0 0 0 0\nend\n")
    with pytest.raises(NNMDError, match="atom line"):
        read_input_data(p)
    p.write_text("begin\natom 0 0 0 O 0 0 0 0 0 0\n")
    with pytest.raises(NNMDError, match="not closed"):
        read_input_data(p)


#: Test-set errors of the mlearn n2p2 potentials measured with n2p2's own nnp-predict
#: (../shared/data/README.md): energy MAE meV/atom, force MAE eV/Angstrom per component,
#: each with half a unit of its last published digit as tolerance.
MLEARN_NNP_PUBLISHED = {"Li": (0.75, 0.005, 0.0168, 0.00005), "Si": (5.63, 0.005, 0.109, 0.0005)}


@pytest.mark.slow
@requires_shared_data
@pytest.mark.parametrize("element", sorted(MLEARN_NNP_PUBLISHED))
def test_mlearn_potentials_reproduce_n2p2_test_errors(element):
    """The mlearn n2p2 potentials (cutoff type 1, atom_energy, no normalisation), imported
    and evaluated on their own test sets, give n2p2's published errors (to the digits
    given there)."""
    from nnmd_lammps.data import read_structures

    data = import_n2p2(SHARED_DATA / "mlearn" / element / "nnp", units.Bohr, units.Hartree)
    pot = Potential(data.spec, model_from_weights(data.spec, data.description, data.weights))
    atoms = read_structures(SHARED_DATA / "mlearn" / element / "test.json")
    preds = pot.evaluate(atoms)
    pairs = list(zip(preds, atoms, strict=True))
    de = [abs(p.energy - a.get_potential_energy()) / len(a) for p, a in pairs]
    df = np.concatenate([np.abs(p.forces - a.get_forces()).ravel() for p, a in pairs])
    e_pub, e_tol, f_pub, f_tol = MLEARN_NNP_PUBLISHED[element]
    assert 1000 * np.mean(de) == pytest.approx(e_pub, abs=e_tol)
    assert np.mean(df) == pytest.approx(f_pub, abs=f_tol)
