"""Choosing the frames of an MD trajectory worth a reference calculation (``nnmd select``).

Each frame gets a **deviation**: the largest per-atom committee force deviation
(docs/uncertainty.md; DeePMD-kit's "model deviation"), evaluated with the committee or
taken from a per-atom column of the trajectory (``pair_style nnmd uncertainty`` + ``fix
pair`` in a LAMMPS dump). With a trust window [lo, hi) (eV/Angstrom) a frame is

* **accurate**: deviation < lo, the model already knows it;
* **candidate**: lo <= deviation < hi, worth labelling;
* **failed**: deviation >= hi (or not a number), unphysical, reported but never selected.

Up to n candidates are then chosen diverse in descriptor space, so that a stretch of
similar neighbouring frames costs one reference calculation, not n. Each frame has a
**fingerprint**: per model element, the mean and the standard deviation over the frame's
atoms of that element of each raw symmetry function, divided by the function's training
range width (max - min over the training atoms, from the model file; the scaling range
``gmax - gmin`` for models without one; 1 where neither is positive). Elements absent from a
frame contribute zeros. The distance of two frames is the root mean square of the
difference of their fingerprints (so a distance of 0.01 means the frame averages differ by
about 1 % of the training range). Greedy farthest-point sampling starts from the candidate
with the highest deviation and adds, one by one, the candidate farthest from all frames
chosen so far (ties: the higher deviation, then the earlier frame); it stops at n frames
or when the farthest remaining candidate is closer than ``min_distance`` to a chosen one.
No two selected frames are therefore closer than ``min_distance``. Everything is
deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from ..errors import NNMDError

#: Default ``min_distance``: the smallest fingerprint distance (RMS, in training range
#: widths) between two selected frames; it only drops near-duplicates. For scale: in a
#: 108-atom copper cell (EMT MD, committee of the demo) frames 40 fs apart at 300 K are
#: about 0.0025 apart (0.001 at the least), any two frames at 300 K at most 0.009, frames at
#: 300 K and 900 K 0.026. Averages over more atoms fluctuate less (as 1/sqrt(atoms)).
DEFAULT_MIN_DISTANCE = 0.001

#: Frames per committee / descriptor evaluation (bounds memory on long trajectories).
_CHUNK_FRAMES = 64


@dataclass
class Selection:
    """The outcome of :func:`select_candidates`.

    ``indices``: the selected frames (indices into the input frames, ascending);
    ``order``: the same frames in the order farthest-point sampling picked them (the first
    has the highest deviation); ``max_force_deviation``: per input frame (eV/Angstrom);
    ``n_accurate`` (deviation < lo), ``n_candidate`` (lo <= deviation < hi), ``n_failed``
    (deviation >= hi or NaN) count the input frames."""

    indices: list[int]
    order: list[int]
    max_force_deviation: np.ndarray
    n_accurate: int
    n_candidate: int
    n_failed: int
    lo: float
    hi: float

    @property
    def n_frames(self) -> int:
        return len(self.max_force_deviation)

    def fractions(self) -> tuple[float, float, float]:
        """Fractions of accurate, candidate and failed frames (0 for no frames)."""
        n = max(self.n_frames, 1)
        return self.n_accurate / n, self.n_candidate / n, self.n_failed / n

    def summary(self) -> str:
        fa, fc, ff = self.fractions()
        return (
            f"{self.n_frames} frames: accurate {self.n_accurate} ({100 * fa:.1f}%), "
            f"candidate {self.n_candidate} ({100 * fc:.1f}%), failed {self.n_failed} "
            f"({100 * ff:.1f}%) for the trust window [{self.lo:g}, {self.hi:g}) eV/A; "
            f"selected {len(self.indices)}"
        )


def check_trust_window(lo: float, hi: float) -> None:
    """Raise NNMDError unless 0 <= lo < hi are finite numbers."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise NNMDError(f"trust levels must be finite numbers (got lo={lo}, hi={hi})")
    if lo < 0:
        raise NNMDError(f"trust level lo={lo:g} is negative (force deviations are >= 0)")
    if lo >= hi:
        raise NNMDError(
            f"trust levels need lo < hi (got lo={lo:g}, hi={hi:g} eV/A): frames with a "
            "deviation in [lo, hi) are the candidates"
        )


def check_committee(potential) -> None:
    """Raise NNMDError unless ``potential`` is a committee (it can give deviations)."""
    if potential.committee_size < 2:
        raise NNMDError(
            "the model has a single network per element: per-frame force deviations need a "
            "committee model (network.committee >= 2), or give them "
            "(--deviation-column, or deviations= in Python)"
        )


def frame_deviations(potential, frames: Sequence[Atoms]) -> np.ndarray:
    """Per frame the largest per-atom committee force deviation (eV/Angstrom)."""
    check_committee(potential)
    out = np.empty(len(frames))
    for start in range(0, len(frames), _CHUNK_FRAMES):
        chunk = frames[start : start + _CHUNK_FRAMES]
        preds = potential.evaluate(chunk, stress=False, uncertainty=True)
        out[start : start + len(chunk)] = [p.max_force_deviation for p in preds]
    return out


def _range_widths(potential) -> list[np.ndarray]:
    """Per model element the width used to normalise each symmetry function."""
    desc = potential.description
    ranges = potential.training_range
    widths = []
    for element in potential.elements:
        n = potential.spec.num_functions(element)
        w = np.ones(n)
        if ranges is not None and element in ranges:
            w = np.asarray(ranges[element].max, float) - np.asarray(ranges[element].min, float)
        elif desc is not None and element in desc.scaling:
            s = desc.scaling[element]
            w = np.asarray(s.gmax, float) - np.asarray(s.gmin, float)
        w = np.where(np.isfinite(w) & (w > 0), w, 1.0)
        widths.append(w)
    return widths


def fingerprints(potential, frames: Sequence[Atoms]) -> np.ndarray:
    """Per frame (rows) the concatenation over model elements of the mean and standard
    deviation over the frame's atoms of each raw symmetry function, in training range
    widths (module docstring). Shape (len(frames), 2 * sum of functions per element)."""
    widths = _range_widths(potential)
    dim = 2 * sum(len(w) for w in widths)
    out = np.zeros((len(frames), dim))
    for start in range(0, len(frames), _CHUNK_FRAMES):
        chunk = frames[start : start + _CHUNK_FRAMES]
        batch, values = potential.descriptors_of(chunk, derivatives=False)
        owner = batch.owner.cpu().numpy()
        column = 0
        for e, w in enumerate(widths):
            g = values.G[e].detach().cpu().numpy() / w
            frame_of = owner[values.atoms[e].cpu().numpy()]
            count = np.bincount(frame_of, minlength=len(chunk)).astype(float)
            total = np.zeros((len(chunk), len(w)))
            np.add.at(total, frame_of, g)
            mean = total / np.maximum(count, 1.0)[:, None]
            sq = np.zeros_like(total)
            np.add.at(sq, frame_of, (g - mean[frame_of]) ** 2)
            std = np.sqrt(sq / np.maximum(count, 1.0)[:, None])
            rows = slice(start, start + len(chunk))
            out[rows, column : column + len(w)] = mean
            out[rows, column + len(w) : column + 2 * len(w)] = std
            column += 2 * len(w)
    return out


def fingerprint_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root-mean-square difference of fingerprints (broadcasting over leading axes)."""
    return np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2, axis=-1))


def farthest_point_sampling(
    points: np.ndarray, priority: np.ndarray, n: int, min_distance: float
) -> list[int]:
    """Greedy farthest-point sampling of up to ``n`` rows of ``points`` starting from the
    highest ``priority``; never adds a row closer than ``min_distance`` to a chosen one,
    nor one identical to a chosen one. Ties go to the higher priority, then the lower row.
    Returns rows in pick order."""
    m = len(points)
    if m == 0 or n < 1:
        return []
    priority = np.asarray(priority, float)
    first = int(np.argmax(priority))  # the first of equal maxima
    chosen = [first]
    nearest = fingerprint_distance(points, points[first])
    nearest[first] = -np.inf
    while len(chosen) < n:
        best = float(nearest.max())
        if not (best >= min_distance and best > 0.0):
            break
        tied = np.flatnonzero(nearest == best)
        pick = int(tied[np.argmax(priority[tied])])
        chosen.append(pick)
        nearest = np.minimum(nearest, fingerprint_distance(points, points[pick]))
        nearest[chosen] = -np.inf
    return chosen


def select_candidates(
    potential,
    frames: Sequence[Atoms],
    lo: float,
    hi: float,
    n: int,
    deviations: Sequence[float] | np.ndarray | None = None,
    min_distance: float = DEFAULT_MIN_DISTANCE,
) -> Selection:
    """Choose up to ``n`` frames with max force deviation in [lo, hi) eV/Angstrom, diverse
    in descriptor space (module docstring).

    ``potential``: a :class:`~nnmd_lammps.model.Potential` (its symmetry functions give the
    fingerprints; a committee model also the deviations). ``deviations``: per-frame max
    force deviations, e.g. from a LAMMPS dump; when None the committee is evaluated.
    ``min_distance``: the smallest fingerprint distance between two selected frames
    (RMS difference in training range widths, :data:`DEFAULT_MIN_DISTANCE`); frames with
    identical fingerprints are never both selected, even with ``min_distance=0``."""
    check_trust_window(float(lo), float(hi))
    if int(n) != n or n < 1:
        raise NNMDError(f"the number of frames to select must be at least 1 (got {n})")
    if not (min_distance >= 0 and math.isfinite(min_distance)):
        raise NNMDError(f"min_distance must be a finite number >= 0 (got {min_distance})")
    frames = list(frames)
    if deviations is None:
        dev = frame_deviations(potential, frames)
    else:
        dev = np.asarray(deviations, dtype=float).reshape(-1)
        if len(dev) != len(frames):
            raise NNMDError(f"{len(dev)} deviations given for {len(frames)} frames")
    with np.errstate(invalid="ignore"):
        accurate = dev < lo
        candidate = (dev >= lo) & (dev < hi)
    failed = ~(accurate | candidate)
    cand = np.flatnonzero(candidate)
    order: list[int] = []
    if len(cand):
        points = fingerprints(potential, [frames[i] for i in cand])
        picked = farthest_point_sampling(points, dev[cand], int(n), float(min_distance))
        order = [int(cand[k]) for k in picked]
    return Selection(
        indices=sorted(order),
        order=order,
        max_force_deviation=dev,
        n_accurate=int(accurate.sum()),
        n_candidate=int(candidate.sum()),
        n_failed=int(failed.sum()),
        lo=float(lo),
        hi=float(hi),
    )


# ---------------------------------------------------------------------------------------
# Reading trajectories


def parse_types(text: str | None) -> list[str] | None:
    """``"Cu,Ag"`` -> ``["Cu", "Ag"]`` (LAMMPS type 1, 2, ...), checking the symbols."""
    if text is None:
        return None
    from ase.data import atomic_numbers

    types = [t.strip() for t in text.split(",")]
    bad = [t for t in types if t not in atomic_numbers or t == "X"]
    if not types or bad:
        raise NNMDError(
            f"--types {text!r}: {', '.join(repr(b) for b in bad) or 'nothing'} is not a "
            "chemical element (give the elements of LAMMPS types 1, 2, ... as Cu,Ag)"
        )
    return types


def _dump_columns(path: Path) -> list[str] | None:
    """The column names of the first ``ITEM: ATOMS`` line of a LAMMPS text dump."""
    with path.open() as fh:
        for line in fh:
            if line.startswith("ITEM: ATOMS"):
                return line.split()[2:]
    return None


def _dump_column_max(path: Path, name: str) -> np.ndarray:
    """Per frame of a LAMMPS text dump the largest value of per-atom column ``name``."""
    out = []
    with path.open() as fh:
        n_atoms = None
        for line in fh:
            if line.startswith("ITEM: NUMBER OF ATOMS"):
                n_atoms = int(fh.readline().split()[0])
            elif line.startswith("ITEM: ATOMS"):
                cols = line.split()[2:]
                if name not in cols:
                    raise NNMDError(
                        f"{path}, frame {len(out)}: no column {name!r} in the dump "
                        f"(columns: {' '.join(cols)})"
                    )
                k = cols.index(name)
                values = [float(fh.readline().split()[k]) for _ in range(n_atoms or 0)]
                out.append(max(values, default=float("nan")))
    return np.asarray(out, dtype=float)


def read_trajectory(
    path: str | Path,
    types: Sequence[str] | None = None,
    fmt: str | None = None,
    deviation_column: str | None = None,
) -> tuple[list[Atoms], np.ndarray | None]:
    """Frames of a trajectory and, with ``deviation_column``, per frame the largest value
    of that per-atom quantity.

    LAMMPS text dumps (detected from the content, or ``fmt='lammps-dump-text'``): atom
    types are mapped to elements with ``types`` (type 1 -> ``types[0]``, ...); an
    ``element`` column takes precedence, and without ``types`` a ``mass`` column (ASE's
    guess from the mass) is accepted; ``deviation_column`` names any dump column
    (``f_trust[1]``, ``c_dev``, ...). Any other ASE format: ``deviation_column`` names a
    per-atom array (largest value per frame) or a per-frame info key."""
    import ase.io
    from ase.io.formats import UnknownFileTypeError, filetype

    path = Path(path)
    if not path.is_file():
        raise NNMDError(f"trajectory not found: {path}")
    if fmt is None:
        try:
            fmt = filetype(str(path))
        except UnknownFileTypeError as exc:
            raise NNMDError(f"cannot tell the format of {path}: {exc}") from None
    is_dump = fmt == "lammps-dump-text"
    if is_dump:
        cols = _dump_columns(path) or []
        if "type" in cols and types is None and not {"element", "mass"} & set(cols):
            raise NNMDError(
                f"{path} is a LAMMPS dump with numeric atom types: give the elements of "
                "types 1, 2, ... with --types (e.g. --types Cu,Ag)"
            )
    try:
        frames = ase.io.read(str(path), index=":", format=fmt)
    except Exception as exc:  # ASE raises many exception types for unreadable files
        raise NNMDError(f"cannot read {path} as {fmt}: {exc}") from None
    if isinstance(frames, Atoms):
        frames = [frames]
    if not frames:
        raise NNMDError(f"{path}: no frames found")
    if is_dump and types is not None and "type" in cols and "element" not in cols:
        for k, atoms in enumerate(frames):
            t = atoms.arrays["type"]
            bad = t[(t < 1) | (t > len(types))]
            if len(bad):
                raise NNMDError(
                    f"{path}, frame {k}: atom type {int(bad[0])} but --types names "
                    f"{len(types)} type(s): {','.join(types)}"
                )
            atoms.set_chemical_symbols([types[i - 1] for i in t])
    if deviation_column is None:
        return frames, None
    if is_dump:
        dev = _dump_column_max(path, deviation_column)
        if len(dev) != len(frames):
            raise NNMDError(
                f"{path}: {len(frames)} frames but {len(dev)} blocks of column {deviation_column!r}"
            )
        return frames, dev
    dev = np.empty(len(frames))
    for k, atoms in enumerate(frames):
        if deviation_column in atoms.arrays:
            values = np.asarray(atoms.arrays[deviation_column], float)
            dev[k] = values.max() if values.size else np.nan
        elif deviation_column in atoms.info:
            dev[k] = float(atoms.info[deviation_column])
        else:
            known = sorted(set(atoms.arrays) | set(atoms.info))
            raise NNMDError(
                f"{path}, frame {k}: no per-atom array or info key {deviation_column!r} "
                f"(present: {', '.join(known)})"
            )
    return frames, dev


def selected_frames(
    frames: Sequence[Atoms], selection: Selection, sources: Sequence[str] | None = None
) -> list[Atoms]:
    """The selected frames as bare structures (symbols, positions, cell, pbc: no forces),
    with info ``source`` (``sources[i]``, e.g. "file:frame") and ``max_force_deviation``,
    and ``timestep`` where the input frame had one (LAMMPS dumps)."""
    out = []
    for i in selection.indices:
        src = frames[i]
        a = Atoms(
            src.get_chemical_symbols(),
            positions=src.get_positions(),
            cell=src.get_cell(),
            pbc=src.get_pbc(),
        )
        a.info["source"] = sources[i] if sources is not None else str(i)
        a.info["max_force_deviation"] = float(selection.max_force_deviation[i])
        if "timestep" in src.info:
            a.info["timestep"] = int(src.info["timestep"])
        out.append(a)
    return out
