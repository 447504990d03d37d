"""Labelling structures with a reference ASE calculator (``nnmd label``): energy, forces and
stress of each frame, resumable, optionally in parallel processes.

Files, for an output ``OUT`` (e.g. ``labelled.extxyz``):

* ``OUT.journal``: JSON lines, written as the frames finish. The first line identifies the
  input (a SHA-256 of the frames' elements, positions, cells and periodicity, and their
  number); each further line is one finished frame, ``{"index": i, "energy": ...,
  "forces": [...], "stress": [...]}`` or ``{"index": i, "error": "..."}``. Every line is
  flushed and synced to disk before the next frame is handed out, so a killed run loses at
  most the frames in flight; a line cut short by the kill is dropped on resume. Floats are
  written exactly (JSON round-trips float64), so a resumed labelling ends with the same
  output as an unbroken one.
* ``OUT``: extended XYZ in input order, every labelled frame as a SinglePointCalculator
  (energy, forces, and stress when the frame is periodic in three directions and the
  calculator implements stress; ``free_energy`` too where the calculator reports it),
  with the input frame's info keys (``source``, ``max_force_deviation`` from ``nnmd
  select``). Written (atomically) once every frame is finished; failed frames are left out.
* ``OUT.failed.json``: the frames whose calculation raised, with the first line of the
  exception (only when there are any; a stale one is removed).

Resuming is automatic (``resume=True``) when ``OUT.journal`` exists and records the same
input; a journal of different input is an error (start over with ``resume=False``,
``--restart``). Failed frames are not retried on resume unless ``retry_failed``.
The journal is kept after the run: running the same labelling again computes nothing and
rewrites ``OUT``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ..errors import NNMDError

JOURNAL_FORMAT = "nnmd-label-journal"
JOURNAL_VERSION = 1

#: Info keys of input frames dropped from the output (they belong to a calculator).
_RESULT_KEYS = ("energy", "free_energy", "forces", "stress", "virial")


def journal_path(out_path: str | Path) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".journal")


def failed_path(out_path: str | Path) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".failed.json")


@dataclass
class LabelReport:
    """The outcome of :func:`label`. ``labelled``: input indices with results, ascending;
    ``failed``: (input index, first line of the exception); ``computed``: calculations
    run by this call; ``reused``: frames taken from the journal of an earlier run."""

    n_frames: int
    labelled: list[int]
    failed: list[tuple[int, str]]
    computed: int
    reused: int
    out_path: Path
    journal_path: Path
    failed_path: Path | None = None
    elapsed: float = 0.0
    errors_retried: int = field(default=0)

    def summary(self) -> str:
        text = f"labelled {len(self.labelled)} of {self.n_frames} frames"
        if self.failed:
            text += f", {len(self.failed)} failed (see {self.failed_path})"
        text += f"; {self.computed} computed in {self.elapsed:.1f} s"
        if self.reused:
            text += f", {self.reused} from the journal"
        return text + f"; wrote {self.out_path}"


# ---------------------------------------------------------------------------------------
# The calculator


class CalculatorFactory:
    """A picklable ``MODULE:CLASS`` with keyword arguments; calling it makes a calculator.
    The module and class are checked when the factory is made."""

    def __init__(self, spec: str, kwargs: dict[str, Any] | None = None) -> None:
        module, sep, name = spec.partition(":")
        if not sep or not module or not name:
            raise NNMDError(
                f"--calculator {spec!r}: expected MODULE:CLASS, e.g. ase.calculators.emt:EMT"
            )
        if kwargs is not None and not isinstance(kwargs, dict):
            raise NNMDError(f"calculator arguments must be a JSON object, not {kwargs!r}")
        self.spec = spec
        self.module = module
        self.name = name
        self.kwargs = dict(kwargs or {})
        self._class()  # fail early on unknown module or class

    def _class(self):
        try:
            mod = importlib.import_module(self.module)
        except ImportError as exc:
            raise NNMDError(
                f"--calculator {self.spec}: cannot import module {self.module!r} ({exc})"
            ) from None
        cls = getattr(mod, self.name, None)
        if cls is None:
            raise NNMDError(
                f"--calculator {self.spec}: module {self.module!r} has no {self.name!r}"
            )
        if not callable(cls):
            raise NNMDError(f"--calculator {self.spec}: {self.name!r} is not a class")
        return cls

    def __call__(self):
        return self._class()(**self.kwargs)

    def __repr__(self) -> str:
        return f"{self.spec}(**{self.kwargs!r})"


def calculator_factory(spec: str, kwargs_json: str | None = None) -> CalculatorFactory:
    """The factory of ``nnmd label --calculator MODULE:CLASS --kwargs JSON``."""
    kwargs = None
    if kwargs_json is not None:
        try:
            kwargs = json.loads(kwargs_json)
        except json.JSONDecodeError as exc:
            raise NNMDError(f"--kwargs is not valid JSON: {exc}") from None
        if not isinstance(kwargs, dict):
            raise NNMDError(
                f"--kwargs must be a JSON object of keyword arguments, e.g. "
                f'\'{{"xc": "PBE"}}\', not {kwargs_json!r}'
            )
    return CalculatorFactory(spec, kwargs)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def calculate(calc, index: int, atoms: Atoms) -> dict[str, Any]:
    """One frame's journal record: energy, forces, stress (3D-periodic frames whose
    calculator implements it), free energy where reported; or the error."""
    a = atoms.copy()
    a.calc = calc
    try:
        energy = float(a.get_potential_energy())
        forces = np.asarray(a.get_forces(), dtype=float)
        rec: dict[str, Any] = {"index": index, "energy": energy}
        free = getattr(calc, "results", {}).get("free_energy")
        if free is not None:
            rec["free_energy"] = float(free)
        if forces.shape != (len(a), 3):
            raise ValueError(f"the calculator returned forces of shape {forces.shape}")
        if not (math.isfinite(energy) and np.all(np.isfinite(forces))):
            raise FloatingPointError("the calculator returned a non-finite energy or force")
        rec["forces"] = forces.tolist()
        if bool(np.all(a.get_pbc())) and "stress" in getattr(calc, "implemented_properties", ()):
            stress = np.asarray(a.get_stress(voigt=True), dtype=float)
            if not np.all(np.isfinite(stress)):
                raise FloatingPointError("the calculator returned a non-finite stress")
            rec["stress"] = stress.tolist()
    except Exception as exc:  # any failure of the reference calculation skips the frame
        return {"index": index, "error": _first_line(exc)}
    return rec


_WORKER_CALC = None


def _init_worker(factory: Callable[[], Any]) -> None:
    global _WORKER_CALC
    _WORKER_CALC = factory()


def _worker_calculate(index: int, atoms: Atoms) -> dict[str, Any]:
    return calculate(_WORKER_CALC, index, atoms)


# ---------------------------------------------------------------------------------------
# The journal


def frames_digest(frames: Sequence[Atoms]) -> str:
    """SHA-256 of the frames' atomic numbers, positions, cells and periodicity."""
    h = hashlib.sha256()
    h.update(str(len(frames)).encode())
    for a in frames:
        h.update(np.int64(len(a)).tobytes())
        h.update(np.ascontiguousarray(a.get_atomic_numbers(), dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(a.get_positions(), dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(a.get_cell().array, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(a.get_pbc(), dtype=np.bool_).tobytes())
    return h.hexdigest()


def _header(digest: str, n_frames: int) -> dict[str, Any]:
    return {
        "format": JOURNAL_FORMAT,
        "version": JOURNAL_VERSION,
        "input_sha256": digest,
        "n_frames": n_frames,
    }


def read_journal(path: Path, digest: str, n_frames: int) -> dict[int, dict[str, Any]]:
    """The finished records of a journal of this input (index -> record). A line cut
    short by a kill (the last one) is removed from the file."""
    data = path.read_bytes()
    records: dict[int, dict[str, Any]] = {}
    good = 0  # bytes of complete, valid lines
    header = None
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            obj = json.loads(line)
        except ValueError:
            break
        if header is None:
            header = obj
            if not isinstance(obj, dict) or obj.get("format") != JOURNAL_FORMAT:
                raise NNMDError(f"{path} is not a labelling journal; remove it or use --restart")
            if obj.get("input_sha256") != digest or obj.get("n_frames") != n_frames:
                raise NNMDError(
                    f"{path} records the labelling of different input frames "
                    f"({obj.get('n_frames')} frames); start over with --restart "
                    "(resume=False) or choose another output"
                )
        else:
            idx = obj.get("index") if isinstance(obj, dict) else None
            if not isinstance(idx, int) or not 0 <= idx < n_frames:
                break
            records[idx] = obj
        good += len(line)
    if header is None:
        path.unlink()  # killed before the header was complete: nothing to resume
        return {}
    if good < len(data):
        with path.open("r+b") as fh:
            fh.truncate(good)
    return records


class _Journal:
    def __init__(self, path: Path, digest: str, n_frames: int, fresh: bool) -> None:
        self.fh = path.open("a", encoding="utf-8")
        if fresh:
            self.append(_header(digest, n_frames))

    def append(self, record: dict[str, Any]) -> None:
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


# ---------------------------------------------------------------------------------------
# Labelling


def _labelled_frame(atoms: Atoms, rec: dict[str, Any]) -> Atoms:
    from ase.calculators.singlepoint import SinglePointCalculator

    a = Atoms(
        atoms.get_chemical_symbols(),
        positions=atoms.get_positions(),
        cell=atoms.get_cell(),
        pbc=atoms.get_pbc(),
    )
    a.info.update({k: v for k, v in atoms.info.items() if k not in _RESULT_KEYS})
    kw: dict[str, Any] = {"energy": rec["energy"], "forces": np.asarray(rec["forces"])}
    if "free_energy" in rec:
        kw["free_energy"] = rec["free_energy"]
    if "stress" in rec:
        kw["stress"] = np.asarray(rec["stress"])
    a.calc = SinglePointCalculator(a, **kw)
    return a


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def label(
    frames: Sequence[Atoms],
    calculator_factory: Callable[[], Any],
    out_path: str | Path,
    workers: int = 1,
    resume: bool = True,
    retry_failed: bool = False,
    progress: Callable[[int, dict[str, Any], int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> LabelReport:
    """Run a reference calculator on every frame and write the labelled frames to
    ``out_path`` (extended XYZ, input order), resumably (module docstring).

    ``calculator_factory()`` makes an ASE calculator: once in this process (which also
    checks it), and once per worker process when ``workers > 1``
    (``concurrent.futures.ProcessPoolExecutor``; the factory must then be picklable,
    e.g. a :class:`CalculatorFactory`). Frames whose calculation raises are skipped and
    reported. ``progress(index, record, done, total)`` is called after each frame,
    ``log(message)`` says whether the labelling resumes."""
    import ase.io

    frames = list(frames)
    if not frames:
        raise NNMDError("no frames to label")
    if int(workers) != workers or workers < 1:
        raise NNMDError(f"workers must be at least 1 (got {workers})")
    out_path = Path(out_path)
    jpath, fpath = journal_path(out_path), failed_path(out_path)
    n = len(frames)
    digest = frames_digest(frames)
    done: dict[int, dict[str, Any]] = {}
    if jpath.exists() and resume:
        done = read_journal(jpath, digest, n)
    elif jpath.exists():
        jpath.unlink()
    retried = 0
    if retry_failed:
        retried = sum("error" in r for r in done.values())
        done = {i: r for i, r in done.items() if "error" not in r}
    reused = len(done)
    pending = [i for i in range(n) if i not in done]
    if log is not None and jpath.exists():
        nfail = sum("error" in r for r in done.values())
        log(
            f"resuming from {jpath}: {reused} of {n} frames finished earlier"
            + (f" ({nfail} failed)" if nfail else "")
            + (f", {retried} failed frame(s) to retry" if retried else "")
            + f"; {len(pending)} to compute"
        )
    t0 = time.perf_counter()
    computed = 0
    if pending:
        try:
            calc = calculator_factory()
        except NNMDError:
            raise
        except Exception as exc:
            raise NNMDError(
                f"cannot create the calculator {calculator_factory!r}: {_first_line(exc)}"
            ) from None
        journal = _Journal(jpath, digest, n, fresh=not jpath.exists())
        try:

            def finish(rec: dict[str, Any]) -> None:
                nonlocal computed
                journal.append(rec)
                done[rec["index"]] = rec
                computed += 1
                if progress is not None:
                    progress(rec["index"], rec, len(done), n)

            if workers == 1 or len(pending) == 1:
                for i in pending:
                    finish(calculate(calc, i, frames[i]))
            else:
                _label_parallel(frames, pending, calculator_factory, workers, finish)
        finally:
            journal.close()
    labelled = sorted(i for i, r in done.items() if "error" not in r)
    failed = sorted((i, r["error"]) for i, r in done.items() if "error" in r)
    out_frames = [_labelled_frame(frames[i], done[i]) for i in labelled]
    _write_atomically(out_path, lambda p: ase.io.write(str(p), out_frames, format="extxyz"))
    if failed:
        doc = {
            "input_frames": n,
            "failed": [
                {"index": i, "error": msg}
                | ({"source": str(frames[i].info["source"])} if "source" in frames[i].info else {})
                for i, msg in failed
            ],
        }
        _write_atomically(fpath, lambda p: p.write_text(json.dumps(doc, indent=1) + "\n"))
    elif fpath.exists():
        fpath.unlink()
    return LabelReport(
        n_frames=n,
        labelled=labelled,
        failed=failed,
        computed=computed,
        reused=reused,
        out_path=out_path,
        journal_path=jpath,
        failed_path=fpath if failed else None,
        elapsed=time.perf_counter() - t0,
        errors_retried=retried,
    )


def _label_parallel(
    frames: list[Atoms],
    pending: list[int],
    factory: Callable[[], Any],
    workers: int,
    finish: Callable[[dict[str, Any]], None],
) -> None:
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(pending)), initializer=_init_worker, initargs=(factory,)
    )
    try:
        # at most 2 frames per worker in flight, so that frames handed out are few
        queue = list(pending)
        running = set()
        while queue or running:
            while queue and len(running) < 2 * workers:
                i = queue.pop(0)
                running.add(pool.submit(_worker_calculate, i, frames[i]))
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                finish(fut.result())
    except BrokenProcessPool as exc:
        raise NNMDError(f"a labelling worker process died: {exc}") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def read_frames(path: str | Path, fmt: str | None = None) -> list[Atoms]:
    """Frames of any ASE-readable file (without importing torch)."""
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise NNMDError(f"input file not found: {path}")
    if path.stat().st_size == 0:
        raise NNMDError(f"{path} is empty: no frames to label")
    try:
        frames = ase.io.read(str(path), index=":", format=fmt)
    except Exception as exc:  # ASE raises many exception types for unreadable files
        raise NNMDError(f"cannot read {path}: {exc}") from None
    if isinstance(frames, Atoms):
        frames = [frames]
    if not frames:
        raise NNMDError(f"{path}: no frames found")
    return list(frames)
