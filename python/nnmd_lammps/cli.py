"""The ``nnmd`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

from . import __version__
from .errors import NNMDError


def _cmd_import_n2p2(args: argparse.Namespace) -> None:
    from .interop.n2p2 import import_n2p2
    from .model.modelfile import model_from_weights, save_model
    from .units import energy_factor, length_factor

    repulsion = None
    if args.zbl is not None:
        repulsion = {"type": "zbl", "inner": args.zbl[0], "outer": args.zbl[1]}
    pot = import_n2p2(
        args.directory,
        length_factor(args.length_unit),
        energy_factor(args.energy_unit),
        repulsion=repulsion,
    )
    module = model_from_weights(pot.spec, pot.description, pot.weights)
    save_model(args.output, pot.spec, module, pot.description, pot.source)
    counts = ", ".join(f"{e}: {pot.spec.num_functions(e)}" for e in pot.spec.elements)
    print(
        f"wrote {args.output}: elements {' '.join(pot.spec.elements)}, symmetry functions "
        f"{counts}, cutoff {pot.spec.cutoff:.6g} Angstrom"
        + ("" if repulsion is None else f", ZBL repulsion {args.zbl[0]:g}-{args.zbl[1]:g} A")
    )


def _cmd_predict(args: argparse.Namespace) -> None:
    import torch

    from .data.io import read_structures, write_predictions
    from .model.potential import Potential

    if args.threads:
        torch.set_num_threads(args.threads)
    pot = Potential.load(args.model, device=args.device)
    structures = read_structures(args.data, args.format, args.length_unit, args.energy_unit)
    t0 = time.perf_counter()
    preds = pot.evaluate(structures, uncertainty=args.uncertainty)
    elapsed = time.perf_counter() - t0
    write_predictions(args.output, structures, preds)
    natoms = sum(len(s) for s in structures)
    print(
        f"predicted {len(structures)} structure(s), {natoms} atoms in {elapsed:.3f} s; "
        f"wrote {args.output}"
    )
    if pot.training_range is None:
        print("the model file has no training range: no extrapolation report")
    else:
        flagged = sum(int((p.extrapolation_count > 0).sum()) for p in preds)
        print(f"extrapolation: {flagged} of {natoms} atoms outside the training range")
    if args.uncertainty:
        worst = max(p.max_force_deviation for p in preds)
        print(f"committee: largest per-atom force deviation {worst:.4f} eV/A")


def _cmd_info(args: argparse.Namespace) -> None:
    from .model.modelfile import read_metadata

    meta = read_metadata(args.model)
    print(f"model file      : {args.model}")
    print(
        f"format          : {meta['format']} v{meta['format_version']} "
        f"({meta.get('created_by', '?')})"
    )
    print(
        f"units           : {meta['units']['energy']}, {meta['units']['length']}; "
        f"dtype {meta.get('dtype', 'float64')}"
    )
    print(f"elements        : {' '.join(meta['elements'])}")
    print(f"cutoff          : {meta['cutoff']:.6g} Angstrom")
    total = 0
    for e in meta["elements"]:
        sfs = meta["symmetry_functions"][e]
        by_type = Counter(sf["type"] for sf in sfs)
        net = meta["networks"][e]
        layers = net["layers"]
        nparam = sum(a * b + b for a, b in pairwise(layers))
        total += nparam
        types = ", ".join(f"type {t}: {n}" for t, n in sorted(by_type.items()))
        print(
            f"  {e:<3s} {len(sfs):4d} symmetry functions ({types}); network "
            f"{'-'.join(map(str, layers))} [{', '.join(net['activations'])}], "
            f"{nparam} parameters; scaling {meta['scaling'][e]['type']}"
        )
    committee = meta.get("committee", 1)
    print(f"parameters      : {total}" + (f" (committee of {committee})" if committee > 1 else ""))
    print(
        "training range  : "
        + ("recorded (extrapolation checks on)" if meta.get("training_range") else "none")
    )
    rep = meta.get("repulsion")
    if rep:
        print(f"repulsion       : {rep['type']}, switched off {rep['inner']:g}-{rep['outer']:g} A")
    src = meta.get("source") or {}
    if src:
        print(f"source          : {src.get('kind', '?')} {src.get('directory', '')}".rstrip())


def _cmd_train(args: argparse.Namespace) -> None:
    from .training.config import load_config
    from .training.trainer import Trainer

    cfg = load_config(args.config)
    out = args.out or str(Path(args.config).with_suffix("").name + "_run")
    try:
        Trainer(cfg, out, resume=args.resume).run()
    except KeyboardInterrupt:
        raise NNMDError(
            f"training interrupted; continue with: nnmd train {args.config} --out {out} --resume"
        ) from None


def _cmd_test(args: argparse.Namespace) -> None:
    import json

    from .data.dataset import Dataset
    from .data.io import read_structures
    from .model.potential import Potential
    from .training.metrics import error_metrics, trust_metrics

    pot = Potential.load(args.model, device=args.device)
    structures = read_structures(args.data, args.format, args.length_unit, args.energy_unit)
    data = Dataset.from_structures(structures, str(args.data))
    committee = pot.committee_size > 1
    preds = pot.evaluate(structures, stress=True, uncertainty=committee)
    m = error_metrics(
        data, [p.energy for p in preds], [p.forces for p in preds], [p.stress for p in preds]
    )
    m["committee"] = pot.committee_size
    m.update(trust_metrics(data, preds))
    if args.json:
        print(json.dumps(m, indent=1))
        return
    print(f"{m['n_structures']} structures, {m['n_atoms']} atoms")
    print(
        f"energy MAE  {m['energy_mae_mev_per_atom']:10.4f} meV/atom   RMSE "
        f"{m['energy_rmse_mev_per_atom']:10.4f} meV/atom"
    )
    if "force_mae_ev_per_angstrom" in m:
        print(
            f"force  MAE  {m['force_mae_ev_per_angstrom']:10.5f} eV/A       RMSE "
            f"{m['force_rmse_ev_per_angstrom']:10.5f} eV/A (per component)"
        )
    if "stress_mae_gpa" in m:
        print(
            f"stress MAE  {m['stress_mae_gpa']:10.4f} GPa        RMSE "
            f"{m['stress_rmse_gpa']:10.4f} GPa"
        )
    if "extrapolating_atom_fraction" in m:
        print(f"atoms outside the training range: {100 * m['extrapolating_atom_fraction']:.2f}%")
    if "force_deviation_error_pearson" in m:
        print(
            f"committee of {pot.committee_size}: mean force deviation "
            f"{m['mean_force_deviation_ev_per_angstrom']:.4f} eV/A vs mean atom force error "
            f"{m['mean_atom_force_error_ev_per_angstrom']:.4f} eV/A; correlation Pearson "
            f"{m['force_deviation_error_pearson']:.3f}, Spearman "
            f"{m['force_deviation_error_spearman']:.3f}"
        )


def _cmd_select(args: argparse.Namespace) -> None:
    import ase.io
    import numpy as np

    from .active.selection import (
        DEFAULT_MIN_DISTANCE,
        check_committee,
        check_trust_window,
        parse_types,
        read_trajectory,
        select_candidates,
        selected_frames,
    )
    from .model.potential import Potential

    check_trust_window(args.lo, args.hi)
    if args.n < 1:
        raise NNMDError(f"-n must be at least 1 (got {args.n})")
    types = parse_types(args.types)
    pot = Potential.load(args.model, device=args.device)
    if args.deviation_column is None:
        check_committee(pot)
    frames, sources, deviations = [], [], []
    for path in args.trajectories:
        fr, dev = read_trajectory(path, types, args.format, args.deviation_column)
        frames.extend(fr)
        sources.extend(f"{path}:{k}" for k in range(len(fr)))
        if dev is not None:
            deviations.append(dev)
    min_distance = DEFAULT_MIN_DISTANCE if args.min_distance is None else args.min_distance
    sel = select_candidates(
        pot,
        frames,
        args.lo,
        args.hi,
        args.n,
        np.concatenate(deviations) if deviations else None,
        min_distance,
    )
    ase.io.write(args.output, selected_frames(frames, sel, sources), format="extxyz")
    fa, fc, ff = sel.fractions()
    print(
        f"read {sel.n_frames} frames from {len(args.trajectories)} file(s): accurate "
        f"{sel.n_accurate} ({100 * fa:.1f}%), candidate {sel.n_candidate} ({100 * fc:.1f}%), "
        f"failed {sel.n_failed} ({100 * ff:.1f}%) for [{args.lo:g}, {args.hi:g}) eV/A; "
        f"selected {len(sel.indices)} -> {args.output}"
    )


def _cmd_label(args: argparse.Namespace) -> None:
    from .active.labelling import calculator_factory, label, read_frames

    factory = calculator_factory(args.calculator, args.kwargs)
    frames = read_frames(args.input, args.format)
    finished = 0

    def progress(index: int, rec: dict, done: int, total: int) -> None:
        nonlocal finished
        finished += 1
        what = f"failed: {rec['error']}" if "error" in rec else f"energy {rec['energy']:.6f} eV"
        print(f"[{done}/{total}] frame {index}: {what}", flush=True)

    try:
        report = label(
            frames,
            factory,
            args.output,
            workers=args.workers,
            resume=not args.restart,
            retry_failed=args.retry_failed,
            progress=progress,
            log=print,
        )
    except KeyboardInterrupt:
        raise NNMDError(
            f"labelling interrupted after {finished} frame(s) of this run; run the same "
            "command again to resume (finished frames are kept in the journal)"
        ) from None
    print(report.summary())
    if not report.labelled:
        raise NNMDError(f"all {report.n_frames} frames failed (see {report.failed_path})")


def _cmd_active_learn(args: argparse.Namespace) -> None:
    from .active.config import load_al_config
    from .active.loop import active_learn

    cfg = load_al_config(args.config)
    try:
        state = active_learn(cfg, args.out, resume=args.resume)
    except KeyboardInterrupt:
        raise NNMDError(
            f"active learning interrupted; continue with: nnmd active-learn {args.config} "
            f"--out {args.out} --resume"
        ) from None
    print(f"finished: {state['stop_reason']}; see {Path(args.out) / 'progress.png'}")


def _cmd_lammps_plugin_dir(args: argparse.Namespace) -> None:
    from .plugin_path import plugin_dir, plugin_file

    path = plugin_file()
    if not path.exists():
        raise NNMDError(
            f"the LAMMPS plugin is not built ({path} missing); run 'make setup' "
            "or see docs/lammps.md"
        )
    print(plugin_dir())


def _add_model_data_arguments(s: argparse.ArgumentParser, data_help: str) -> None:
    """A model, the structure file and how to read it, the torch device (shared by predict
    and test)."""
    s.add_argument("model")
    s.add_argument("data", help=data_help)
    s.add_argument("--format", default=None, help="n2p2, mlearn or an ASE format name")
    s.add_argument("--length-unit", default="angstrom", help="length unit of DATA")
    s.add_argument("--energy-unit", default="ev", help="energy unit of the reference data in DATA")
    s.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nnmd",
        description="Behler-Parrinello neural-network "
        "potentials: import, train, predict, and run in LAMMPS.",
    )
    p.add_argument("--version", action="version", version=f"nnmd-lammps {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("import-n2p2", help="convert an n2p2/RuNNer potential to model.pt")
    s.add_argument("directory", help="directory with input.nn, scaling.data, weights.NNN.data")
    s.add_argument("-o", "--output", required=True, help="model file to write")
    s.add_argument(
        "--length-unit",
        default="angstrom",
        help="length unit of the potential: angstrom (default) or bohr",
    )
    s.add_argument(
        "--energy-unit", default="ev", help="energy unit of the potential: ev (default) or hartree"
    )
    s.add_argument(
        "--zbl",
        nargs=2,
        type=float,
        metavar=("INNER", "OUTER"),
        help="add a ZBL repulsion switched off between INNER and OUTER (Angstrom)",
    )
    s.set_defaults(func=_cmd_import_n2p2)

    s = sub.add_parser("predict", help="energies, forces and stress of structures")
    _add_model_data_arguments(s, "structures: n2p2 input.data, mlearn JSON or any ASE format")
    s.add_argument("-o", "--output", required=True, help="extended XYZ file to write")
    s.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    s.add_argument(
        "--uncertainty",
        action="store_true",
        help="committee models: per-atom force and energy deviations",
    )
    s.set_defaults(func=_cmd_predict)

    s = sub.add_parser("info", help="describe a model file")
    s.add_argument("model")
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("train", help="train a potential from a YAML config")
    s.add_argument("config", help="YAML configuration (docs/training.md)")
    s.add_argument("--out", default=None, help="run directory (default: <config name>_run)")
    s.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("test", help="errors of a model on reference data")
    _add_model_data_arguments(s, "structures with reference energies (and forces)")
    s.add_argument("--json", action="store_true", help="print the metrics as JSON")
    s.set_defaults(func=_cmd_test)

    s = sub.add_parser(
        "select",
        help="choose trajectory frames for reference calculations (committee deviation)",
    )
    s.add_argument("model", help="model file (a committee unless --deviation-column)")
    s.add_argument(
        "trajectories",
        nargs="+",
        metavar="TRAJ",
        help="LAMMPS text dumps (with --types), extended XYZ or any ASE format",
    )
    s.add_argument(
        "--lo", type=float, required=True, help="max force deviation (eV/A) below: accurate"
    )
    s.add_argument(
        "--hi", type=float, required=True, help="max force deviation (eV/A) from: failed"
    )
    s.add_argument("-n", type=int, default=50, help="at most N frames (default 50)")
    s.add_argument(
        "--types", default=None, help="elements of LAMMPS atom types 1, 2, ...: e.g. Cu,Ag"
    )
    s.add_argument(
        "--deviation-column",
        default=None,
        metavar="NAME",
        help="take per-atom deviations from this dump column (f_trust[1]) or array "
        "instead of evaluating the committee",
    )
    s.add_argument(
        "--min-distance",
        type=float,
        default=None,
        metavar="D",
        help="smallest fingerprint distance between selected frames (RMS, in training "
        "range widths; default 0.001)",
    )
    s.add_argument("--format", default=None, help="ASE format of the trajectories")
    s.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    s.add_argument("-o", "--output", required=True, help="extended XYZ file to write")
    s.set_defaults(func=_cmd_select)

    s = sub.add_parser("label", help="label structures with a reference ASE calculator")
    s.add_argument("input", help="structures (extended XYZ from nnmd select, any ASE format)")
    s.add_argument(
        "--calculator",
        required=True,
        metavar="MODULE:CLASS",
        help="ASE calculator class, e.g. ase.calculators.emt:EMT",
    )
    s.add_argument(
        "--kwargs", default=None, metavar="JSON", help="keyword arguments of the calculator"
    )
    s.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    s.add_argument("--restart", action="store_true", help="ignore the journal of an earlier run")
    s.add_argument("--retry-failed", action="store_true", help="on resume, recompute failed frames")
    s.add_argument("--format", default=None, help="ASE format of INPUT")
    s.add_argument("-o", "--output", required=True, help="extended XYZ file to write")
    s.set_defaults(func=_cmd_label)

    s = sub.add_parser(
        "active-learn",
        help="active learning: train, explore with LAMMPS, select, label, repeat",
    )
    s.add_argument("config", help="training config with an active_learning section")
    s.add_argument("--out", required=True, help="run directory (iter_0/, iter_1/, ...)")
    s.add_argument("--resume", action="store_true", help="continue an interrupted loop")
    s.set_defaults(func=_cmd_active_learn)

    s = sub.add_parser("lammps-plugin-dir", help="print the directory of the LAMMPS plugin")
    s.set_defaults(func=_cmd_lammps_plugin_dir)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except NNMDError as exc:
        print(f"nnmd: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nnmd: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
