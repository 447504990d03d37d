"""The active-learning loop (``nnmd active-learn CONFIG.yaml --out DIR [--resume]``).

Iteration k (directory ``DIR/iter_k/``) runs five stages:

1. **label**: the reference calculator labels the new frames: the initial structures in
   iteration 0, the frames selected in iteration k-1 otherwise (``labelled.extxyz``,
   with the resumable journal of :mod:`.labelling`; ``label.json``: counts). The data set of
   iteration k is the user's ``data.train`` files (if any) plus ``labelled.extxyz`` of
   iterations 0..k.
2. **train**: ``train/`` is a complete ``nnmd train`` run on that data set (committee as
   configured). With ``warm_start`` (the default), iterations from
   ``warm_start_from_iteration`` (default 2) on start from the previous iteration's
   committee (``training.initial_model``): its symmetry functions and network function are
   kept (descriptor scaling, reference energies, output scale and training range follow
   the new data, the first and last layers adapted exactly), and ``warm_start_epochs`` (if
   given) replaces ``training.epochs``; the last iteration before them keeps every generated
   symmetry function (no pruning on one early data set, whose set all later iterations
   inherit). Earlier iterations, and all of them with ``warm_start: false``, are
   trained from scratch with the same seed (descriptors and scaling then follow the
   growing data). Either way every model is reproducible from its ``train/config.yaml``.
3. **explore**: ``explore/run_NNN/`` holds one LAMMPS MD run per temperature x pressure x
   start structure (``in.lammps``, ``log.lammps``, ``md.dump``, ``result.json``), run with
   ``lmp`` (under ``mpirun -np ranks`` when ranks > 1) and ``pair_style nnmd uncertainty``:
   the dump carries the per-atom force deviation (``fix pair ... force_deviation``), and
   ``fix halt`` ends a run once its largest deviation exceeds ``trust.hi`` (everything
   after would be "failed"). A run that stops with a LAMMPS error keeps the frames it
   dumped and is reported in ``result.json``. A user template replaces the built-in deck
   (placeholders in :data:`.config.TEMPLATE_PLACEHOLDERS`); if its dump lacks the
   deviation column, the committee is evaluated in Python.
4. **select**: :func:`.selection.select_candidates` over all dumped frames
   (``selected.extxyz``, ``selection.json``: counts and fractions).
5. **summary**: ``summary.json`` (data set size, labelled / failed labels, explored
   frames, accurate / candidate / failed fractions, errors on ``data.test`` if
   configured, wall time of the iteration) and ``DIR/progress.png``.

The loop stops after iteration k when k + 1 = ``max_iterations``, when the accurate
fraction exceeds ``stop_when_accurate_fraction_above``, or when no candidate was
selected; the last iteration's ``selected.extxyz`` is then left unlabelled (label it with
``nnmd label`` if wanted).

``DIR/state.json`` (written atomically) lists the completed stages; ``--resume`` skips
them and continues the interrupted one: training from its checkpoint, labelling from its
journal, exploration from the runs that have a ``result.json``. Every stage is
deterministic, so a resumed loop ends with the same data set as an unbroken one.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from itertools import product
from pathlib import Path
from typing import Any

import yaml
from ase import Atoms

from ..errors import NNMDError
from .config import ActiveLearningConfig

STATE_FORMAT = "nnmd-active-learning-state"
STATE_VERSION = 1
STAGES = ("label", "train", "explore", "select", "summary")

#: The dump column of the per-atom force deviation in the built-in exploration deck.
DEVIATION_COLUMN = "f_trust"


def _write_json_atomically(path: Path, doc: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as fh:
        fh.write(json.dumps(doc, indent=1) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def iteration_dir(out: Path, k: int) -> Path:
    return out / f"iter_{k}"


class ActiveLearning:
    """One loop in ``out`` (module docstring)."""

    def __init__(
        self,
        cfg: ActiveLearningConfig,
        out: str | Path,
        resume: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.al = cfg.al
        self.out = Path(out)
        self.resume = resume
        self._print = log or (lambda msg: print(msg, flush=True))
        self.state_path = self.out / "state.json"

    # bookkeeping ------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        with (self.out / "active_learning.log").open("a") as fh:
            fh.write(line + "\n")
        self._print(line)

    def _save_state(self) -> None:
        _write_json_atomically(self.state_path, self.state)

    def _open(self) -> None:
        config_copy = self.out / "config.yaml"
        if self.state_path.exists() and not self.resume:
            raise NNMDError(
                f"{self.out} already holds an active-learning run; use --resume to continue "
                "it or choose another --out"
            )
        if self.resume and self.state_path.exists():
            try:
                self.state = json.loads(self.state_path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise NNMDError(f"cannot read {self.state_path}: {exc}") from None
            if self.state.get("format") != STATE_FORMAT:
                raise NNMDError(f"{self.state_path} is not an active-learning state file")
            old = self.state.get("config")
            if old != self.cfg.raw:
                keys = sorted(
                    k
                    for k in set(old or {}) | set(self.cfg.raw)
                    if (old or {}).get(k) != self.cfg.raw.get(k)
                )
                raise NNMDError(
                    f"--resume: the config differs from the run in {self.out} "
                    f"(section(s) {', '.join(keys)})"
                )
            return
        self.out.mkdir(parents=True, exist_ok=True)
        self.state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "config": self.cfg.raw,
            "completed": [],
            "current": None,
            "seconds": {},
            "finished": False,
            "stop_reason": None,
        }
        config_copy.write_text(yaml.safe_dump(self.cfg.raw, sort_keys=False))
        self._save_state()

    def _stage(self, k: int, name: str, fn: Callable[[Path], None]) -> None:
        key = f"iter_{k}/{name}"
        if key in self.state["completed"]:
            return
        d = iteration_dir(self.out, k)
        d.mkdir(parents=True, exist_ok=True)
        again = self.state.get("current") == key
        self.state["current"] = key
        self._save_state()
        self.log(f"iteration {k}: {name}" + (" (resumed)" if again else ""))
        t0 = time.perf_counter()
        fn(d)
        self.state["seconds"][key] = self.state["seconds"].get(key, 0.0) + (
            time.perf_counter() - t0
        )
        self.state["completed"].append(key)
        self.state["current"] = None
        self._save_state()

    # the loop ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self._open()
        if self.state["finished"]:
            self.log(f"the loop in {self.out} is finished ({self.state['stop_reason']})")
            self._plot()
            return self.state
        from .labelling import CalculatorFactory

        self.factory = CalculatorFactory(self.al.calculator, self.al.calculator_kwargs)
        k = 0
        while True:
            self._stage(k, "label", lambda d, k=k: self._label(k, d))
            self._stage(k, "train", lambda d, k=k: self._train(k, d))
            self._stage(k, "explore", lambda d, k=k: self._explore(k, d))
            self._stage(k, "select", lambda d, k=k: self._select(k, d))
            self._stage(k, "summary", lambda d, k=k: self._summary(k, d))
            summary = json.loads((iteration_dir(self.out, k) / "summary.json").read_text())
            reason = self._stop_reason(k, summary)
            if reason:
                self.state["finished"] = True
                self.state["stop_reason"] = reason
                self._save_state()
                self.log(f"stopped after iteration {k}: {reason}")
                return self.state
            k += 1

    def _stop_reason(self, k: int, summary: dict[str, Any]) -> str | None:
        threshold = self.al.stop_when_accurate_fraction_above
        if threshold is not None and summary["accurate_fraction"] > threshold:
            return f"accurate fraction {summary['accurate_fraction']:.3f} above {threshold:g}"
        if summary["selected"] == 0:
            return "no candidate frames to label"
        if k + 1 >= self.al.max_iterations:
            return f"max_iterations ({self.al.max_iterations}) reached"
        return None

    # stages -----------------------------------------------------------------------------------
    def _initial_frames(self) -> list[Atoms]:
        from .labelling import read_frames

        frames = []
        for p in self.al.initial_structures:
            path = self.cfg.path(p)
            for i, a in enumerate(read_frames(path)):
                b = Atoms(
                    a.get_chemical_symbols(),
                    positions=a.get_positions(),
                    cell=a.get_cell(),
                    pbc=a.get_pbc(),
                )
                b.info["source"] = f"{path.name}:{i}"
                frames.append(b)
        return frames

    def _label(self, k: int, d: Path) -> None:
        from .labelling import label, read_frames

        if k == 0:
            frames = self._initial_frames()
        else:
            frames = read_frames(iteration_dir(self.out, k - 1) / "selected.extxyz")
        report = label(
            frames, self.factory, d / "labelled.extxyz", workers=self.al.workers, log=self.log
        )
        self.log(report.summary())
        if not report.labelled and k == 0:
            raise NNMDError(
                f"the reference calculator failed on every initial structure (see "
                f"{report.failed_path})"
            )
        _write_json_atomically(
            d / "label.json",
            {
                "frames": report.n_frames,
                "labelled": len(report.labelled),
                "failed": len(report.failed),
            },
        )

    def _data_files(self, k: int) -> list[Path]:
        files = []
        for j in range(k + 1):
            dj = iteration_dir(self.out, j)
            if json.loads((dj / "label.json").read_text())["labelled"]:
                files.append(dj / "labelled.extxyz")
        return files

    def _train(self, k: int, d: Path) -> None:
        from ..training import train
        from ..training.checkpoint import CHECKPOINT

        cfg = self.cfg.training_config(self._data_files(k))
        al = self.cfg.al
        first_warm = al.warm_start_from_iteration
        if (
            al.warm_start
            and k == first_warm - 1
            and (cfg.descriptors.prune or cfg.descriptors.select is not None)
            and not cfg.descriptors.functions
        ):
            # the functions chosen now serve every later iteration, and the data of one
            # early iteration cannot tell which of them are redundant (measured on the copper
            # example: 10 of 20 pruned on the 10 starting cells, and the warm-started
            # iterations stayed at twice the force error of a retrained model)
            cfg.descriptors.prune = False
            cfg.descriptors.select = None
            self.log(
                f"iteration {k}: descriptors.prune and select ignored: with warm_start the "
                "generated functions are kept for all later iterations"
            )
        if al.warm_start and k >= first_warm:
            # the previous committee's functions and networks (docs/uncertainty.md)
            previous = iteration_dir(self.out, k - 1) / "train" / "model.pt"
            cfg.training.initial_model = str(previous.resolve())
            if al.warm_start_epochs is not None:
                cfg.training.epochs = al.warm_start_epochs
        out = d / "train"
        train(cfg, out, resume=(out / CHECKPOINT).exists())

    def _starts(self, k: int) -> list[tuple[str, Atoms]]:
        from .labelling import read_frames

        ex = self.al.exploration
        starts = []
        for p in ex.structures or self.al.initial_structures:
            path = self.cfg.path(p)
            starts += [(f"{path.name}:{i}", a) for i, a in enumerate(read_frames(path))]
        m = ex.max_starts
        if m and m < len(starts):  # rotate through the start structures, iteration by iteration
            starts = [starts[(k * m + i) % len(starts)] for i in range(m)]
        return starts

    def _deck(self, data: Path, model: Path, elements: list[str], run: dict, atoms: Atoms) -> str:
        from ..interop.lammps import boundary_of

        ex = self.al.exploration
        values = {
            "data": str(data),
            "model": str(model),
            "elements": " ".join(elements),
            "temperature": repr(float(run["temperature"])),
            "pressure": "" if run["pressure"] is None else repr(float(run["pressure"])),
            "steps": str(ex.steps),
            "timestep": repr(float(ex.timestep)),
            "seed": str(run["seed"]),
            "dump": "md.dump",
            "dump_every": str(ex.dump_every),
            "hi": repr(float(self.al.trust.hi)),
        }
        if ex.template is not None:
            return self.cfg.path(ex.template).read_text().format(**values)
        t, n = values["temperature"], ex.dump_every
        if run["pressure"] is None:
            ensemble = f"fix md all nvt temp {t} {t} $(100.0*dt)"
        else:
            p = values["pressure"]
            ensemble = f"fix md all npt temp {t} {t} $(100.0*dt) iso {p} {p} $(1000.0*dt)"
        lines = [
            "units metal",
            "atom_style atomic",
            "atom_modify map array",
            f"boundary {boundary_of(atoms)}",
            f"read_data {data}",
            f"pair_style nnmd uncertainty every {n}",
            f"pair_coeff * * {model} {values['elements']}",
            "neighbor 1.0 bin",
            f"timestep {values['timestep']}",
            f"velocity all create {t} {run['seed']} mom yes rot no dist gaussian loop geom",
            f"fix trust all pair {n} nnmd force_deviation 0",
            "compute cp all pair nnmd",
            "variable maxdev equal c_cp[3]",
            ensemble,
            f"fix halt all halt {n} v_maxdev > {values['hi']} error soft",
            f"dump d all custom {n} md.dump id type x y z {DEVIATION_COLUMN}",
            "dump_modify d format float %.12g",
            f"thermo {n}",
            "thermo_style custom step temp pe press c_cp[3]",
            f"run {ex.steps}",
        ]
        return "\n".join(lines) + "\n"

    def _runs(self, k: int) -> list[dict]:
        ex = self.al.exploration
        pressures = ex.pressures if ex.pressures is not None else [None]
        runs = []
        starts = self._starts(k)
        for j, ((name, atoms), t, p) in enumerate(product(starts, ex.temperatures, pressures)):
            runs.append(
                {
                    "index": j,
                    "start": name,
                    "atoms": atoms,
                    "temperature": t,
                    "pressure": p,
                    "seed": ex.seed + 1000 * k + j,
                }
            )
        return runs

    def _explore(self, k: int, d: Path) -> None:
        from ..interop.lammps import lammps_frame, venv_bin, write_lammps_data
        from ..model.potential import Potential

        ex = self.al.exploration
        model = (d / "train" / "model.pt").resolve()
        elements = Potential.load(model).elements
        runs = self._runs(k)
        failed = 0
        for run in runs:
            rd = d / "explore" / f"run_{run['index']:03d}"
            if (rd / "result.json").exists():
                continue
            rd.mkdir(parents=True, exist_ok=True)
            atoms = lammps_frame(run["atoms"])
            missing = set(atoms.get_chemical_symbols()) - set(elements)
            if missing:
                raise NNMDError(
                    f"start structure {run['start']} has element(s) {sorted(missing)} the "
                    f"model does not know ({' '.join(elements)})"
                )
            write_lammps_data(rd / "start.data", atoms, elements)
            (rd / "in.lammps").write_text(
                self._deck((rd / "start.data").resolve(), model, elements, run, atoms)
            )
            dump = rd / "md.dump"
            if dump.exists():
                dump.unlink()
            cmd = [venv_bin("lmp"), "-in", "in.lammps", "-log", "log.lammps", "-nocite"]
            if ex.ranks > 1:
                cmd = [venv_bin("mpirun"), "-np", str(ex.ranks), *cmd]
            t0 = time.perf_counter()
            proc = subprocess.run(
                cmd,
                cwd=rd,
                capture_output=True,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            (rd / "screen.txt").write_text(proc.stdout + proc.stderr)
            error = None
            if proc.returncode != 0:
                lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "ERROR" in ln]
                error = lines[0] if lines else f"lmp exited with status {proc.returncode}"
                failed += 1
                self.log(f"exploration run {run['index']} failed: {error}")
            halted = "Fix halt condition" in proc.stdout
            result = {
                "start": run["start"],
                "temperature": run["temperature"],
                "pressure": run["pressure"],
                "seed": run["seed"],
                "returncode": proc.returncode,
                "error": error,
                "halted": halted,
                "seconds": round(time.perf_counter() - t0, 2),
            }
            _write_json_atomically(rd / "result.json", result)
            self.log(
                f"exploration run {run['index']}: {run['start']}, T {run['temperature']:g} K"
                + ("" if run["pressure"] is None else f", P {run['pressure']:g} bar")
                + (", halted (deviation above trust.hi)" if halted else "")
                + f" ({result['seconds']:.1f} s)"
            )

    def _select(self, k: int, d: Path) -> None:
        import ase.io
        import numpy as np

        from ..model.potential import Potential
        from .selection import _dump_columns, read_trajectory, select_candidates, selected_frames

        pot = Potential.load(d / "train" / "model.pt")
        frames: list[Atoms] = []
        sources: list[str] = []
        devs: list = []
        have_column = True
        lammps_errors = 0
        for rd in sorted((d / "explore").glob("run_*")):
            result = json.loads((rd / "result.json").read_text())
            lammps_errors += result["error"] is not None
            dump = rd / "md.dump"
            if not dump.exists() or not _dump_columns(dump):
                continue
            column = DEVIATION_COLUMN if DEVIATION_COLUMN in _dump_columns(dump) else None
            have_column &= column is not None
            fr, dev = read_trajectory(dump, types=pot.elements, deviation_column=column)
            frames += fr
            sources += [f"iter_{k}/explore/{rd.name}:{i}" for i in range(len(fr))]
            devs.append(dev if dev is not None else np.full(len(fr), np.nan))
        if not frames:
            raise NNMDError(f"iteration {k}: the exploration runs dumped no frames")
        deviations = np.concatenate(devs) if have_column else None
        sel = select_candidates(
            pot,
            frames,
            self.al.trust.lo,
            self.al.trust.hi,
            self.al.frames_per_iteration,
            deviations=deviations,
        )
        self.log(sel.summary())
        picked = selected_frames(frames, sel, sources)
        ase.io.write(str(d / "selected.extxyz"), picked, format="extxyz")
        fa, fc, ff = sel.fractions()
        _write_json_atomically(
            d / "selection.json",
            {
                "frames": sel.n_frames,
                "accurate": sel.n_accurate,
                "candidate": sel.n_candidate,
                "failed": sel.n_failed,
                "accurate_fraction": fa,
                "candidate_fraction": fc,
                "failed_fraction": ff,
                "selected": len(sel.indices),
                "lammps_errors": int(lammps_errors),
                "lo": sel.lo,
                "hi": sel.hi,
            },
        )

    def _summary(self, k: int, d: Path) -> None:
        from ..data.io import read_structures
        from .labelling import read_frames

        files = self._data_files(k)
        n_structures = sum(len(read_frames(f)) for f in files)
        data = self.cfg.training.data
        for p in self.cfg.extra_train:
            n_structures += len(
                read_structures(self.cfg.path(p), data.format, data.length_unit, data.energy_unit)
            )
        label_doc = json.loads((d / "label.json").read_text())
        sel = json.loads((d / "selection.json").read_text())
        metrics = json.loads((d / "train" / "metrics.json").read_text())
        test = None
        if "test" in metrics:
            m = metrics["test"]
            test = {
                "energy_rmse_mev_per_atom": m.get("energy_rmse_mev_per_atom"),
                "force_rmse_ev_per_angstrom": m.get("force_rmse_ev_per_angstrom"),
                "force_mae_ev_per_angstrom": m.get("force_mae_ev_per_angstrom"),
            }
        seconds = sum(self.state["seconds"].get(f"iter_{k}/{s}", 0.0) for s in STAGES[:-1])
        summary = {
            "iteration": k,
            "structures": n_structures,
            "labelled": label_doc["labelled"],
            "label_failed": label_doc["failed"],
            "explored_frames": sel["frames"],
            "accurate_fraction": sel["accurate_fraction"],
            "candidate_fraction": sel["candidate_fraction"],
            "failed_fraction": sel["failed_fraction"],
            "selected": sel["selected"],
            "lammps_errors": sel["lammps_errors"],
            "test": test,
            "wall_time_s": round(seconds, 1),
        }
        _write_json_atomically(d / "summary.json", summary)
        line = (
            f"iteration {k}: {n_structures} structures, explored {sel['frames']} frames: "
            f"accurate {sel['accurate_fraction']:.3f}, candidate {sel['candidate_fraction']:.3f}, "
            f"failed {sel['failed_fraction']:.3f}; selected {sel['selected']}"
        )
        if test and test["force_rmse_ev_per_angstrom"] is not None:
            line += f"; test force RMSE {test['force_rmse_ev_per_angstrom']:.4f} eV/A"
        self.log(line + f"; {seconds:.0f} s")
        self._plot()

    def summaries(self) -> list[dict[str, Any]]:
        out = []
        k = 0
        while (iteration_dir(self.out, k) / "summary.json").exists():
            out.append(json.loads((iteration_dir(self.out, k) / "summary.json").read_text()))
            k += 1
        return out

    def _plot(self) -> None:
        plot_progress(self.summaries(), self.out / "progress.png")


def plot_progress(summaries: list[dict[str, Any]], path: Path) -> None:
    """Accurate / candidate / failed fractions and test errors per iteration."""
    if not summaries:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [s["iteration"] for s in summaries]
    has_test = any(s["test"] and s["test"].get("force_rmse_ev_per_angstrom") for s in summaries)
    fig, axes = plt.subplots(1, 2 if has_test else 1, figsize=(10 if has_test else 5.5, 4))
    ax = axes[0] if has_test else axes
    for key, colour in (
        ("accurate", "tab:green"),
        ("candidate", "tab:orange"),
        ("failed", "tab:red"),
    ):
        ax.plot(it, [s[f"{key}_fraction"] for s in summaries], "o-", color=colour, label=key)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration")
    ax.set_ylabel("fraction of explored frames")
    ax.set_ylim(-0.02, 1.02)
    ax.legend()
    if has_test:
        ax2 = axes[1]
        f = [s["test"]["force_rmse_ev_per_angstrom"] if s["test"] else None for s in summaries]
        e = [s["test"]["energy_rmse_mev_per_atom"] if s["test"] else None for s in summaries]
        ax2.semilogy(it, f, "o-", label="force RMSE (eV/A)")
        ax2.semilogy(
            it,
            [x / 1000 if x is not None else None for x in e],
            "s-",
            label="energy RMSE (eV/atom)",
        )
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_xlabel("iteration")
        ax2.set_ylabel("test error")
        ax2.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def active_learn(
    cfg: ActiveLearningConfig, out: str | Path, resume: bool = False
) -> dict[str, Any]:
    """Run (or with ``resume`` continue) the loop in ``out``; returns the state."""
    return ActiveLearning(cfg, out, resume).run()
