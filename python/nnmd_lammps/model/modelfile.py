"""The model file ``model.pt`` (format described in docs/model_format.md).

A TorchScript archive of :class:`~nnmd_lammps.model.networks.HDNNP` with the metadata as the
extra file ``nnmd.json``. Loading uses ``torch.jit.load``, which deserialises only
TorchScript code and tensors and never executes arbitrary pickled Python objects.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..descriptors.extrapolation import TrainingRange
from ..descriptors.spec import DescriptorSpec, atomic_number
from ..errors import NNMDError
from .networks import (
    HDNNP,
    ModelDescription,
    NetworkSpec,
    ScalingParams,
    build_hdnnp,
    element_members,
)
from .repulsion import ZBLRepulsion

FORMAT_NAME = "nnmd-lammps-model"
FORMAT_VERSION = 2
#: Versions this reader accepts (1: no training range, no committee, no repulsion).
READABLE_VERSIONS = (1, 2)
METADATA_FILE = "nnmd.json"


@contextmanager
def _quiet_torchscript():
    """torch >= 2.10 marks TorchScript deprecated; it remains the format LAMMPS reads
    through libtorch, so the warning is noise for our users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*TorchScript")
        yield


def script(module: HDNNP) -> torch.jit.ScriptModule:
    with _quiet_torchscript():
        return torch.jit.script(module)


def metadata_dict(
    spec: DescriptorSpec, desc: ModelDescription, source: dict | None = None, dtype: str = "float64"
) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created_by": f"nnmd-lammps {__version__}",
        "units": {"length": "Angstrom", "energy": "eV"},
        "dtype": dtype,
        "elements": list(spec.elements),
        "atomic_numbers": [atomic_number(e) for e in spec.elements],
        "cutoff": spec.cutoff,
        "symmetry_functions": spec.to_dict()["functions"],
        "scaling": {e: desc.scaling[e].to_dict() for e in spec.elements},
        "networks": {
            e: {
                "layers": list(desc.networks[e].layers),
                "activations": list(desc.networks[e].activations),
                "normalize_nodes": bool(desc.networks[e].normalize_nodes),
            }
            for e in spec.elements
        },
        "energy": {
            "scale": desc.energy_scale,
            "shift": {e: desc.energy_shift.get(e, 0.0) for e in spec.elements},
        },
        "committee": int(desc.committee),
        "training_range": None
        if desc.training_range is None
        else {e: desc.training_range[e].to_dict() for e in spec.elements},
        "repulsion": desc.repulsion,
        "source": source or {},
    }


def description_from_metadata(meta: dict[str, Any]) -> ModelDescription:
    try:
        desc = ModelDescription(
            networks={
                e: NetworkSpec(
                    list(v["layers"]), list(v["activations"]), bool(v.get("normalize_nodes", False))
                )
                for e, v in meta["networks"].items()
            },
            scaling={e: ScalingParams(**v) for e, v in meta["scaling"].items()},
            energy_scale=float(meta["energy"]["scale"]),
            energy_shift={e: float(v) for e, v in meta["energy"]["shift"].items()},
        )
    except (KeyError, TypeError) as exc:
        raise NNMDError(f"model metadata is incomplete or malformed ({exc})") from None
    committee = meta.get("committee", 1)
    if isinstance(committee, bool) or not isinstance(committee, int) or committee < 1:
        raise NNMDError(f"model metadata: committee must be a positive integer, got {committee!r}")
    desc.committee = committee
    ranges = meta.get("training_range")
    if ranges is not None:
        if not isinstance(ranges, dict) or set(ranges) != set(desc.networks):
            raise NNMDError("model metadata: training_range needs one entry per element")
        desc.training_range = {}
        for e, r in ranges.items():
            tr = TrainingRange.from_dict(r, f"model metadata: training_range.{e}")
            tr.validate(desc.networks[e].layers[0], f"model metadata: training_range.{e}")
            desc.training_range[e] = tr
    rep = meta.get("repulsion")
    if rep is not None:
        if not isinstance(rep, dict):
            raise NNMDError("model metadata: repulsion must be a mapping or null")
        ZBLRepulsion.from_dict(rep)  # validates type, keys and radii
    desc.repulsion = rep
    return desc


def save_model(
    path: str | Path,
    spec: DescriptorSpec,
    module: HDNNP,
    desc: ModelDescription,
    source: dict | None = None,
) -> dict[str, Any]:
    """Script ``module`` and write it with its metadata. Returns the metadata."""
    dtype = next(module.parameters()).dtype
    meta = metadata_dict(spec, desc, source, "float64" if dtype == torch.float64 else "float32")
    for i, e in enumerate(spec.elements):
        nin = element_members(module, i)[0].linears[0].in_features
        if nin != spec.num_functions(e):
            raise NNMDError(
                f"network of {e} has {nin} inputs but {spec.num_functions(e)} symmetry functions"
            )
    scripted = script(module.cpu().eval())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with _quiet_torchscript():
        torch.jit.save(
            scripted,
            str(tmp),
            _extra_files={METADATA_FILE: json.dumps(meta, indent=1, allow_nan=False)},
        )
    tmp.replace(path)
    return meta


def model_from_weights(
    spec: DescriptorSpec,
    desc: ModelDescription,
    weights: dict[str, list[tuple[np.ndarray, np.ndarray]]],
) -> HDNNP:
    """Build an HDNNP with given weights [(W (out, in), b)] per element."""
    module = build_hdnnp(spec.elements, desc)
    with torch.no_grad():
        for i, e in enumerate(spec.elements):
            for lin, (w, b) in zip(module.networks[i].linears, weights[e], strict=True):
                if tuple(lin.weight.shape) != w.shape:
                    raise NNMDError(
                        f"weights of {e}: shape {w.shape}, expected {tuple(lin.weight.shape)}"
                    )
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
    return module


@dataclass
class LoadedModel:
    spec: DescriptorSpec
    module: torch.jit.ScriptModule
    metadata: dict[str, Any]

    @property
    def description(self) -> ModelDescription:
        return description_from_metadata(self.metadata)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Only the metadata (cheap: reads one member of the archive, no torch)."""
    path = Path(path)
    if not path.is_file():
        raise NNMDError(f"model file not found: {path}")
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("/extra/" + METADATA_FILE)]
            if not names:
                raise NNMDError(f"{path} is not an nnmd-lammps model file (no {METADATA_FILE})")
            meta = json.loads(z.read(names[0]), parse_constant=_reject_constant)
    except zipfile.BadZipFile:
        raise NNMDError(
            f"{path} is not an nnmd-lammps model file (not a TorchScript archive)"
        ) from None
    except json.JSONDecodeError as exc:
        raise NNMDError(f"{path}: corrupt model metadata ({exc})") from None
    _check_metadata(meta, path)
    return meta


def _reject_constant(name: str) -> Any:
    """Strict JSON: NaN and infinities are not numbers of a model file."""
    raise json.JSONDecodeError(f"{name} is not allowed", name, 0)


def _check_metadata(meta: Any, path: Path) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise NNMDError(f"{path} is not an nnmd-lammps model file")
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise NNMDError(
            f"{path}: model format version {version} is not supported by this "
            f"nnmd-lammps (supports {', '.join(map(str, READABLE_VERSIONS))})"
        )
    units = meta.get("units", {})
    if units.get("length") != "Angstrom" or units.get("energy") != "eV":
        raise NNMDError(f"{path}: model units must be eV and Angstrom, got {units}")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    meta = read_metadata(path)
    try:
        with _quiet_torchscript():
            module = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # torch raises RuntimeError with long messages
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NNMDError(f"{path}: cannot load the TorchScript model ({first})") from None
    try:
        spec = DescriptorSpec.from_dict(
            {"elements": meta["elements"], "functions": meta["symmetry_functions"]}
        )
    except KeyError as exc:
        raise NNMDError(f"{path}: model metadata lacks {exc.args[0]!r}") from None
    if list(module.elements) != spec.elements:
        raise NNMDError(
            f"{path}: networks are for {list(module.elements)} but the metadata "
            f"lists {spec.elements}"
        )
    desc = description_from_metadata(meta)  # validates range, committee, repulsion
    size = int(module.committee_size()) if hasattr(module, "committee_size") else 1
    if size != desc.committee:
        raise NNMDError(
            f"{path}: the networks form a committee of {size} but the metadata says "
            f"{desc.committee}"
        )
    module.eval()
    return LoadedModel(spec, module, meta)
