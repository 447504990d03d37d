"""Importing n2p2 / RuNNer potentials (input.nn, scaling.data, weights.NNN.data).
(n2p2's structure files, input.data, are read in :mod:`nnmd_lammps.data.n2p2_data`.)

The importer reproduces n2p2's conventions exactly: elements sorted by atomic number,
symmetry functions sorted by n2p2's key within each element (the order of
scaling.data and of the network inputs), weights listed per layer input-major then
biases. Anything that would change the result and is not supported is an error
naming the keyword.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

from ..descriptors.extrapolation import TrainingRange
from ..descriptors.spec import (
    DescriptorSpec,
    SymmetryFunction,
    atomic_number,
    cutoff_problem,
    n2p2_sort_key,
    scale_lengths,
    sort_elements,
)
from ..errors import NNMDError
from ..model.networks import N2P2_ACTIVATIONS, ModelDescription, NetworkSpec, ScalingParams
from ..model.repulsion import ZBLRepulsion

#: Keywords that define the potential and are implemented.
SUPPORTED_KEYWORDS = {
    "number_of_elements",
    "elements",
    "atom_energy",
    "cutoff_type",
    "scale_symmetry_functions",
    "scale_symmetry_functions_sigma",
    "center_symmetry_functions",
    "scale_min_short",
    "scale_max_short",
    "global_hidden_layers_short",
    "global_nodes_short",
    "global_activation_short",
    "normalize_nodes",
    "symfunction_short",
    "symfunction",
    "mean_energy",
    "conv_energy",
    "conv_length",
    "nnp_type",
    "nnp_generation",
    "nnp_gen",
    "nnp_type_gen",
}
#: Keywords that only steer n2p2's training; they do not change predictions.
TRAINING_KEYWORDS = {
    "epochs",
    "updater_type",
    "parallel_mode",
    "jacobian_mode",
    "update_strategy",
    "selection_mode",
    "selection_mode_energy",
    "selection_mode_force",
    "selection_mode_charge",
    "task_batch_size_energy",
    "task_batch_size_force",
    "task_batch_size_charge",
    "random_seed",
    "test_fraction",
    "force_weight",
    "short_energy_fraction",
    "short_force_fraction",
    "short_energy_error_threshold",
    "short_force_error_threshold",
    "rmse_threshold",
    "rmse_threshold_energy",
    "rmse_threshold_force",
    "rmse_threshold_charge",
    "rmse_threshold_trials",
    "rmse_threshold_trials_energy",
    "rmse_threshold_trials_force",
    "rmse_threshold_trials_charge",
    "weights_min",
    "weights_max",
    "write_trainpoints",
    "write_trainforces",
    "write_traincharges",
    "write_weights_epoch",
    "write_neuronstats",
    "write_trainlog",
    "kalman_type",
    "kalman_epsilon",
    "kalman_eta",
    "kalman_etamax",
    "kalman_etatau",
    "kalman_lambda_short",
    "kalman_nue_short",
    "kalman_q0",
    "kalman_qmin",
    "kalman_qtau",
    "use_short_forces",
    "gradient_type",
    "gradient_eta",
    "gradient_adam_eta",
    "gradient_adam_beta1",
    "gradient_adam_beta2",
    "gradient_adam_epsilon",
    "main_error_metric",
    "memorize_symfunc_results",
    "nguyen_widrow_weights_short",
    "nguyen_widrow_weights_charge",
    "precondition_weights",
    "repeated_energy_update",
    "use_old_weights_short",
    "use_old_weights_charge",
    "normalize_data_set",
    "energy_fraction",
    "force_fraction",
    "force_energy_ratio",
    "charge_fraction",
}
#: Per-element network topologies: n2p2 applies these only partially (the last hidden
#: layer / the output activation keep the global values), so they are refused rather
#: than guessed.
UNSUPPORTED_TOPOLOGY_KEYWORDS = {
    "element_hidden_layers_short",
    "element_nodes_short",
    "element_activation_short",
}
#: Keywords of n2p2 features this package does not implement (4G electrostatics).
UNSUPPORTED_KEYWORDS = {
    "conv_charge",
    "ewald_prec",
    "ewald_truncation_error_method",
    "fixed_gausswidth",
    "four_pi_epsilon",
    "initial_hardness",
    "screen_electrostatics",
    "global_hidden_layers_electrostatic",
    "global_nodes_electrostatic",
    "global_activation_electrostatic",
    "element_hidden_layers_electrostatic",
    "element_nodes_electrostatic",
    "element_activation_electrostatic",
}
SF_TYPE_NAMES = {2: "radial", 3: "narrow angular", 9: "wide angular"}


@dataclass
class InputNN:
    """The parsed keywords of an input.nn file: keyword -> list of (line number, args)."""

    path: Path
    entries: dict[str, list[tuple[int, list[str]]]] = field(default_factory=dict)

    def has(self, key: str) -> bool:
        return key in self.entries

    def one(self, key: str) -> list[str]:
        vals = self.entries.get(key)
        if not vals:
            raise NNMDError(f"{self.path}: required keyword {key!r} is missing")
        if len(vals) > 1:
            raise NNMDError(f"{self.path}:{vals[1][0]}: keyword {key!r} given more than once")
        return vals[0][1]

    def error(self, key: str, lineno: int, msg: str) -> NNMDError:
        return NNMDError(f"{self.path}:{lineno}: keyword {key!r}: {msg}")


def read_input_nn(path: str | Path) -> InputNN:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise NNMDError(f"cannot read {path}: {exc.strerror}") from None
    nn = InputNN(path)
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, *args = line.split()
        key = key.lower()
        if key in UNSUPPORTED_KEYWORDS:
            raise NNMDError(
                f"{path}:{lineno}: keyword {key!r} (n2p2 electrostatics / 4G-HDNNP)"
                " is not supported"
            )
        if key in UNSUPPORTED_TOPOLOGY_KEYWORDS:
            raise NNMDError(
                f"{path}:{lineno}: keyword {key!r} (per-element network topology) "
                "is not supported; use the global_*_short keywords"
            )
        if key not in SUPPORTED_KEYWORDS and key not in TRAINING_KEYWORDS:
            raise NNMDError(f"{path}:{lineno}: unknown or unsupported keyword {key!r}")
        nn.entries.setdefault(key, []).append((lineno, args))
    return nn


def _float(nn: InputNN, key: str, lineno: int, s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise nn.error(key, lineno, f"{s!r} is not a number") from None
    if not math.isfinite(v):
        raise nn.error(key, lineno, f"{s!r} is not finite")
    return v


def _int(nn: InputNN, key: str, lineno: int, s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise nn.error(key, lineno, f"{s!r} is not an integer") from None


def _parse_symfunction(
    nn: InputNN,
    lineno: int,
    args: list[str],
    key: str,
    elements: list[str],
    cutoff_type: int,
    alpha: float,
) -> SymmetryFunction:
    if len(args) < 2:
        raise nn.error(key, lineno, "too few values")
    center = args[0]
    sftype = _int(nn, key, lineno, args[1])
    if sftype not in SF_TYPE_NAMES:
        raise nn.error(
            key,
            lineno,
            f"symmetry function type {sftype} is not supported "
            "(supported: 2 radial, 3 narrow angular, 9 wide angular)",
        )
    if sftype == 2:
        if len(args) != 6:
            raise nn.error(key, lineno, "type 2 needs: <ec> 2 <e1> <eta> <rs> <rc>")
        nbs = (args[2],)
        eta, rs, rc = (_float(nn, key, lineno, x) for x in args[3:6])
        lam = zeta = 0.0
    else:
        if len(args) not in (8, 9):
            raise nn.error(
                key,
                lineno,
                f"type {sftype} needs: <ec> {sftype} <e1> <e2> <eta> <lambda> <zeta> <rc> [<rs>]",
            )
        nbs = (args[2], args[3])
        eta, lam, zeta, rc = (_float(nn, key, lineno, x) for x in args[4:8])
        rs = _float(nn, key, lineno, args[8]) if len(args) == 9 else 0.0
    for e in (center, *nbs):
        if e not in elements:
            raise nn.error(key, lineno, f"element {e!r} is not in 'elements' {elements}")
    sf = SymmetryFunction(
        type=sftype,
        center=center,
        neighbors=nbs,
        eta=eta,
        rc=rc,
        rs=rs,
        lambda_=lam,
        zeta=zeta,
        cutoff_type=cutoff_type,
        cutoff_alpha=alpha,
    )
    try:
        sf.validate()
    except NNMDError as exc:
        raise nn.error(key, lineno, str(exc)) from None
    return sf


def _networks(nn: InputNN, elements: list[str], nsf: dict[str, int]) -> dict[str, NetworkSpec]:
    key = "global_hidden_layers_short"
    nh = _int(nn, key, nn.entries.get(key, [(0, [])])[0][0], nn.one(key)[0])
    key = "global_nodes_short"
    vals = nn.one(key)
    ln = nn.entries[key][0][0]
    if len(vals) != nh:
        raise nn.error(key, ln, f"{len(vals)} values for {nh} hidden layers")
    nodes = [_int(nn, key, ln, v) for v in vals]
    if min(nodes, default=1) < 1:
        raise nn.error(key, ln, "layer widths must be positive")
    key = "global_activation_short"
    acts = nn.one(key)
    ln = nn.entries[key][0][0]
    if len(acts) != nh + 1:
        raise nn.error(
            key, ln, f"{len(acts)} activations for {nh} hidden layers + output (need {nh + 1})"
        )
    names = []
    for a in acts:
        if a not in N2P2_ACTIVATIONS:
            raise nn.error(
                key,
                ln,
                f"activation function {a!r} is not supported (supported: "
                f"{', '.join(N2P2_ACTIVATIONS)})",
            )
        names.append(N2P2_ACTIVATIONS[a])
    return {
        e: NetworkSpec([nsf[e], *nodes, 1], list(names), nn.has("normalize_nodes"))
        for e in elements
    }


def _scaling_type(nn: InputNN) -> str:
    scale = nn.has("scale_symmetry_functions")
    center = nn.has("center_symmetry_functions")
    sigma = nn.has("scale_symmetry_functions_sigma")
    if scale and center:
        return "scale_center"
    if scale:
        return "scale"
    if center:
        return "center"
    if sigma:
        return "sigma"
    return "none"


def read_scaling_data(
    path: Path, elements: list[str], nsf: dict[str, int], kind: str, smin: float, smax: float
) -> dict[str, ScalingParams]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise NNMDError(
            f"cannot read symmetry-function scaling file {path}: {exc.strerror}"
        ) from None
    stats: dict[int, list[list[float]]] = {i: [] for i in range(len(elements))}
    content = [
        (n, ln.split())
        for n, ln in enumerate(lines, 1)
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    for k, (n, cols) in enumerate(content):
        if len(cols) == 3 and k == len(content) - 1:
            continue  # RuNNer's closing line of energy statistics
        if len(cols) not in (5, 6):
            raise NNMDError(
                f"{path}:{n}: expected 'element sf min max mean [sigma]', got {len(cols)} columns"
            )
        try:
            ei, si = int(cols[0]), int(cols[1])
            vals = [float(x) for x in cols[2:]]
        except ValueError:
            raise NNMDError(f"{path}:{n}: malformed numbers") from None
        if not 1 <= ei <= len(elements):
            raise NNMDError(f"{path}:{n}: element index {ei} out of range 1..{len(elements)}")
        if si != len(stats[ei - 1]) + 1:
            raise NNMDError(
                f"{path}:{n}: symmetry function index {si} out of order "
                f"(expected {len(stats[ei - 1]) + 1})"
            )
        # RuNNer's 5-column files have no sigma: 0 (sigma scaling then fails validation)
        stats[ei - 1].append(vals + [0.0] * (4 - len(vals)))
    out = {}
    for i, e in enumerate(elements):
        rows = stats[i]
        if len(rows) != nsf[e]:
            raise NNMDError(
                f"{path}: {len(rows)} scaling lines for element {e}, but input.nn "
                f"defines {nsf[e]} symmetry functions for it"
            )
        arr = np.array(rows, dtype=np.float64).reshape(-1, 4)
        sp = ScalingParams(kind, smin, smax, *(arr[:, c].tolist() for c in range(4)))
        sp.affine()  # validates ranges
        out[e] = sp
    return out


def read_weights(path: Path, count: int, element: str) -> list[float]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise NNMDError(f"weights file for element {element} not found: {path}") from None
    except OSError as exc:
        raise NNMDError(f"cannot read weights file {path}: {exc.strerror}") from None
    vals = []
    for n, ln in enumerate(lines, 1):
        s = ln.strip()
        if not s or s.startswith("#"):
            continue
        try:
            v = float(s.split()[0])
        except ValueError:
            raise NNMDError(f"{path}:{n}: malformed weight value {s.split()[0]!r}") from None
        if not math.isfinite(v):
            raise NNMDError(f"{path}:{n}: non-finite weight")
        vals.append(v)
    if len(vals) != count:
        raise NNMDError(
            f"{path}: {len(vals)} weights, but the network of element {element} "
            f"defined in input.nn needs {count}"
        )
    return vals


def unpack_weights(values: list[float], layers: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """n2p2 order -> [(W (out, in), b (out,)), ...] per layer."""
    out, k = [], 0
    for nin, nout in pairwise(layers):
        w = np.array(values[k : k + nin * nout]).reshape(nin, nout).T.copy()
        k += nin * nout
        b = np.array(values[k : k + nout])
        k += nout
        out.append((w, b))
    return out


def weight_count(layers: list[int]) -> int:
    return sum(a * b + b for a, b in pairwise(layers))


@dataclass
class N2P2Potential:
    """An imported potential in eV/Angstrom, ready to be turned into a model file."""

    spec: DescriptorSpec
    description: ModelDescription
    weights: dict[str, list[tuple[np.ndarray, np.ndarray]]]
    source: dict


def import_n2p2(
    directory: str | Path,
    length_unit: float = 1.0,
    energy_unit: float = 1.0,
    repulsion: dict | None = None,
) -> N2P2Potential:
    """Read an n2p2/RuNNer potential directory. ``length_unit``: Angstrom per length
    unit of the potential; ``energy_unit``: eV per energy unit. The symmetry-function
    statistics of ``scaling.data`` (n2p2's training range) become the model's training
    range. ``repulsion``: an optional ZBL baseline added to the potential (the metadata
    dict of :class:`~nnmd_lammps.model.repulsion.ZBLRepulsion`; opt-in, since the
    network was not trained with it)."""
    d = Path(directory)
    if not d.is_dir():
        raise NNMDError(f"potential directory not found: {d}")
    nn = read_input_nn(d / "input.nn")
    # elements
    key = "elements"
    elements_given = nn.one(key)
    if len(set(elements_given)) != len(elements_given):
        raise nn.error(key, nn.entries[key][0][0], "duplicate element")
    for e in elements_given:
        try:
            atomic_number(e)
        except NNMDError:
            raise nn.error(key, nn.entries[key][0][0], f"unknown element {e!r}") from None
    elements = sort_elements(elements_given)
    nel = _int(
        nn,
        "number_of_elements",
        nn.entries.get("number_of_elements", [(0, [])])[0][0],
        nn.one("number_of_elements")[0],
    )
    if nel != len(elements):
        raise nn.error(
            "number_of_elements",
            nn.entries["number_of_elements"][0][0],
            f"{nel} does not match the {len(elements)} elements {elements_given}",
        )
    for key in ("nnp_type", "nnp_generation", "nnp_gen", "nnp_type_gen"):
        if nn.has(key):
            val = nn.one(key)[0]
            if val != "2":
                raise nn.error(
                    key,
                    nn.entries[key][0][0],
                    f"only 2nd-generation HDNNPs (value 2) are supported, got {val}",
                )
    # cutoff
    key = "cutoff_type"
    args = nn.one(key)
    ln = nn.entries[key][0][0]
    ctype = _int(nn, key, ln, args[0])
    alpha = _float(nn, key, ln, args[1]) if len(args) > 1 else 0.0
    problem = cutoff_problem(ctype, alpha)
    if problem:
        raise nn.error(key, ln, problem)
    # symmetry functions
    funcs: dict[str, list[SymmetryFunction]] = {e: [] for e in elements}
    for key in ("symfunction_short", "symfunction"):
        for ln, args in nn.entries.get(key, []):
            sf = _parse_symfunction(nn, ln, args, key, elements, ctype, alpha)
            funcs[sf.center].append(sf)
    for e in elements:
        if not funcs[e]:
            raise NNMDError(f"{nn.path}: no symmetry functions for element {e}")
    # n2p2 order (in the potential's own units; the order is unit independent)
    raw = DescriptorSpec(elements, funcs).sorted_n2p2()
    spec = DescriptorSpec(
        elements,
        {e: [scale_lengths(sf, length_unit) for sf in fs] for e, fs in raw.functions.items()},
    )
    # order check: conversion must not reorder
    idx = spec.element_index
    for e in elements:
        keys = [n2p2_sort_key(sf, idx) for sf in spec.functions[e]]
        if keys != sorted(keys):
            raise NNMDError("internal error: unit conversion changed the symmetry-function order")
    nsf = {e: len(spec.functions[e]) for e in elements}
    # scaling
    kind = _scaling_type(nn)
    smin = (
        _float(
            nn, "scale_min_short", nn.entries["scale_min_short"][0][0], nn.one("scale_min_short")[0]
        )
        if nn.has("scale_min_short")
        else 0.0
    )
    smax = (
        _float(
            nn, "scale_max_short", nn.entries["scale_max_short"][0][0], nn.one("scale_max_short")[0]
        )
        if nn.has("scale_max_short")
        else 1.0
    )
    scaling_path = d / "scaling.data"
    if kind == "none" and not scaling_path.exists():
        scaling = {e: ScalingParams.identity(nsf[e]) for e in elements}
    else:
        if not scaling_path.exists():
            raise NNMDError(
                f"symmetry-function scaling file not found: {scaling_path} "
                f"(input.nn asks for scaling '{kind}')"
            )
        scaling = read_scaling_data(scaling_path, elements, nsf, kind, smin, smax)
    # energies
    norm_keys = [k for k in ("mean_energy", "conv_energy", "conv_length") if nn.has(k)]
    if norm_keys and len(norm_keys) != 3:
        raise NNMDError(
            f"{nn.path}: normalisation needs all of mean_energy, conv_energy, "
            f"conv_length (found only {', '.join(norm_keys)})"
        )
    if norm_keys:
        norm = {k: _float(nn, k, nn.entries[k][0][0], nn.one(k)[0]) for k in norm_keys}
        mean_energy, conv_energy = norm["mean_energy"], norm["conv_energy"]
        if conv_energy == 0.0 or norm["conv_length"] <= 0.0:
            raise NNMDError(f"{nn.path}: conv_energy and conv_length must be non-zero")
    else:
        norm = {"mean_energy": 0.0, "conv_energy": 1.0, "conv_length": 1.0}
        mean_energy, conv_energy = 0.0, 1.0
    offsets = dict.fromkeys(elements, 0.0)
    for ln, args in nn.entries.get("atom_energy", []):
        if len(args) != 2 or args[0] not in elements:
            raise nn.error("atom_energy", ln, f"expected: <element of {elements}> <energy>")
        offsets[args[0]] = _float(nn, "atom_energy", ln, args[1])
    # networks and weights
    nets = _networks(nn, elements, nsf)
    weights = {}
    for e in elements:
        path = d / f"weights.{atomic_number(e):03d}.data"
        vals = read_weights(path, weight_count(nets[e].layers), e)
        weights[e] = unpack_weights(vals, nets[e].layers)
    desc = ModelDescription(
        networks=nets,
        scaling=scaling,
        energy_scale=energy_unit / conv_energy,
        energy_shift={e: energy_unit * (mean_energy + offsets[e]) for e in elements},
    )
    if scaling_path.exists():  # the statistics n2p2's own extrapolation warnings use
        desc.training_range = {
            e: TrainingRange(sc.gmin, sc.gmax, sc.gmean, sc.gsigma) for e, sc in scaling.items()
        }
    if repulsion is not None:
        desc.repulsion = ZBLRepulsion.from_dict(repulsion).to_dict()
    source = {
        "kind": "n2p2",
        "directory": str(d.resolve()),
        "length_unit_angstrom": length_unit,
        "energy_unit_ev": energy_unit,
        "normalisation": norm,
        "atom_energy": offsets,
    }
    return N2P2Potential(spec, desc, weights, source)
