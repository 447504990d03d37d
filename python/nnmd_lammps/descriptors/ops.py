"""The C++ symmetry-function kernels as PyTorch operators, with autograd.

The operators (``torch.ops.nnmd.*``, lammps_plugin/torch_ops/ops.cpp) run the kernels of
the LAMMPS plugin (lammps_plugin/kernels/) on a batch of atoms of any number of
structures, in parallel over atoms. The batch is a full neighbour list in CSR layout
(:class:`NeighborCSR`): the rows are the centre atoms, the pairs of each row are
contiguous, and the displacement vectors ``vectors`` (P, 3) are passed separately (they
are what the operators differentiate with respect to).

Row i owns ``S_i = num_functions(species[i])`` consecutive entries of a flat descriptor
vector (T = sum_i S_i); with the rows grouped by element, each element's block is its
(n_e, S_e) matrix (:class:`~nnmd_lammps.descriptors.calculator.DescriptorCalculator`
orders them so).

    symmetry_functions(D, csr, vectors) -> (G (T,), cache)    G; cache: the kernels' per-atom
                                                                moment tensors for contract
    contract(D, csr, vectors, c, cache) -> v                  v = J^T c per pair: c (T,) or
                                                                (M, T) -> (P, 3) or (M, P, 3)
    jvp(D, csr, vectors, u, cache) -> g                       g = J u: u (P, 3) or (M, P, 3)
                                                                -> (T,) or (M, T)
    jacobian(D, csr, vectors) -> (G, dGdd)                    the dense per-pair Jacobian,
                                                                row i's block (n_i, S_i, 3)
    slot_contract(g, dGdd) -> v                               training's force contraction:
                                                                v[r] = g[r] dGdd[r] per row
    slot_forces(g, dGdd, centre, neighbor, n) -> F            the same scattered onto atoms

with J = dG/dd. Autograd: G with respect to the vectors is ``contract``; ``contract`` with
respect to c is ``jvp``; ``jvp`` with respect to u is ``contract``. Second derivatives
with respect to the vectors are not provided: asking for them raises
:class:`SecondDerivativeError`. To train on forces, contract dE/dG (differentiable in the
weights) with :func:`contract` from vectors that do not require grad.

The library (``nnmd_lammps/lib/libnnmd_ops.so``, built and installed by ``make setup``;
``NNMD_OPS_LIBRARY=<path>`` selects another build) is loaded on first use. Everything is
float64; float32 inputs are converted. The operators run where the tensors are: on the CPU
(the kernels of the LAMMPS plugin) and, when the library was built with CUDA
(docs/gpu.md, :func:`cuda_available`), on CUDA devices (the per-atom functions of
lammps_plugin/cuda/sf_device.h, one GPU thread per atom; no per-atom cache). The method
"device" (:meth:`Descriptors.set_method`) runs those GPU functions on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .spec import DescriptorSpec

Tensor = torch.Tensor

#: File name of the operator library (not ``*plugin.so``: LAMMPS would auto-load it).
LIBRARY_NAME = "libnnmd_ops.so"
#: Environment variable naming another build of the library.
LIBRARY_ENV = "NNMD_OPS_LIBRARY"

#: Columns of the function table of ``torch.classes.nnmd.Descriptors``.
TABLE_COLUMNS = (
    "centre",
    "type",
    "e1",
    "e2",
    "eta",
    "rs",
    "rc",
    "lambda",
    "zeta",
    "cutoff_type",
    "cutoff_alpha",
)

_state: dict[str, Any] = {"loaded": None, "reason": None}


class SecondDerivativeError(RuntimeError):
    """Second derivatives of symmetry functions with respect to displacements."""


_SECOND_DERIVATIVE = (
    "nnmd symmetry-function operators: second derivatives with respect to the displacement "
    "vectors are not provided (double backward through G or through the contraction with "
    "respect to the positions). To train on forces, contract dE/dG with "
    "nnmd_lammps.descriptors.ops.contract from vectors that do not require grad; it is "
    "differentiable in dE/dG."
)


def library_path() -> Path:
    """Where the operator library is looked for."""
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "lib" / LIBRARY_NAME


def load_library() -> bool:
    """Load the operator library once; False (see :func:`unavailable_reason`) if missing
    or not loadable."""
    if _state["loaded"] is not None:
        return bool(_state["loaded"])
    path = library_path()
    if not path.is_file():
        _state["reason"] = f"{path} does not exist (build it with `make setup`)"
        _state["loaded"] = False
        return False
    try:
        torch.ops.load_library(str(path))
    except (OSError, RuntimeError) as err:
        _state["reason"] = f"{path} could not be loaded: {err}"
        _state["loaded"] = False
        return False
    _state["loaded"] = True
    return True


def available() -> bool:
    """True if the operators can be used (on CPU tensors)."""
    return load_library()


def cuda_available() -> bool:
    """True if the library has the operators for CUDA tensors (built with CUDA)."""
    return load_library() and torch._C._dispatch_has_kernel_for_dispatch_key(
        "nnmd::symmetry_functions", "CUDA"
    )


def supports(device: torch.device | str) -> bool:
    """True if the operators run on tensors of ``device`` (the CPU, or CUDA devices
    with a CUDA build)."""
    kind = torch.device(device).type
    if kind == "cpu":
        return available()
    return kind == "cuda" and cuda_available()


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (None if it is True or was not asked yet)."""
    return _state["reason"]


def function_table(spec: DescriptorSpec) -> Tensor:
    """The (F, 11) float64 table of every element's functions (columns
    :data:`TABLE_COLUMNS`, element indices into ``spec.elements``, e2 = -1 for radial)."""
    index = spec.element_index
    rows = []
    for e, element in enumerate(spec.elements):
        for sf in spec.functions[element]:
            e2 = index[sf.neighbors[1]] if sf.is_angular else -1
            rows.append(
                [
                    e,
                    sf.type,
                    index[sf.neighbors[0]],
                    e2,
                    sf.eta,
                    sf.rs,
                    sf.rc,
                    sf.lambda_ if sf.is_angular else 0.0,
                    sf.zeta if sf.is_angular else 0.0,
                    sf.cutoff_type,
                    sf.cutoff_alpha,
                ]
            )
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, len(TABLE_COLUMNS))


class Descriptors:
    """The kernels' calculators (one per element) for a descriptor spec: the
    ``torch.classes.nnmd.Descriptors`` object that every operator takes. Pickling (and
    deep copies) keep the spec and the method and rebuild the object."""

    def __init__(self, spec: DescriptorSpec) -> None:
        if not load_library():
            raise RuntimeError(f"nnmd operators unavailable: {unavailable_reason()}")
        self.spec = spec
        self.method = "auto"
        self.n_elements = len(spec.elements)
        self.script_object = torch.classes.nnmd.Descriptors(self.n_elements, function_table(spec))
        self.sizes = [int(self.script_object.num_functions(e)) for e in range(self.n_elements)]

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "method": self.method}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["spec"])
        if state["method"] != "auto":
            self.set_method(state["method"])

    def num_functions(self, element: int) -> int:
        return self.sizes[element]

    def cache_size(self, element: int) -> int:
        return int(self.script_object.cache_size(element))

    def set_method(self, method: str) -> None:
        """How the CPU operators evaluate: "auto" (default), "direct" or "moments" (the
        CPU kernels; how type-9 groups are evaluated), or "device" (the per-atom functions
        of the CUDA operators, run on the CPU). CUDA tensors always take the latter."""
        self.script_object.set_method(method)
        self.method = method


@dataclass
class NeighborCSR:
    """A full neighbour list by centre ("rows"): ``species`` (N,) element index of each
    row, ``offsets`` (N+1,) the pairs of row i are ``offsets[i]:offsets[i+1]``,
    ``neighbor_species`` (P,) element index of each neighbour (all int64, on the device
    of the vectors)."""

    species: Tensor
    offsets: Tensor
    neighbor_species: Tensor

    @property
    def n_rows(self) -> int:
        return int(self.species.shape[0])

    @property
    def n_pairs(self) -> int:
        return int(self.neighbor_species.shape[0])


def _empty_cache(device: torch.device | None = None) -> Tensor:
    return torch.zeros(0, dtype=torch.float64, device=device)


class _SymmetryFunctions(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vectors, obj, species, offsets, nspecies):
        G, cache = torch.ops.nnmd.symmetry_functions(obj, species, offsets, nspecies, vectors)
        ctx.mark_non_differentiable(cache)
        ctx.save_for_backward(vectors, cache, species, offsets, nspecies)
        ctx.obj = obj
        return G, cache

    @staticmethod
    def backward(ctx, gG, _gcache):
        vectors, cache, species, offsets, nspecies = ctx.saved_tensors
        if gG is None:
            return None, None, None, None, None
        v = _Contract.apply(gG, vectors, cache, ctx.obj, species, offsets, nspecies)
        return v, None, None, None, None


class _Contract(torch.autograd.Function):
    @staticmethod
    def forward(ctx, c, vectors, cache, obj, species, offsets, nspecies):
        ctx.save_for_backward(vectors, cache, species, offsets, nspecies)
        ctx.obj = obj
        return torch.ops.nnmd.contract(obj, species, offsets, nspecies, vectors, c, cache)

    @staticmethod
    def backward(ctx, gv):
        if ctx.needs_input_grad[1]:
            raise SecondDerivativeError(_SECOND_DERIVATIVE)
        vectors, cache, species, offsets, nspecies = ctx.saved_tensors
        gc = None
        if ctx.needs_input_grad[0]:
            gc = _Jvp.apply(gv, vectors, cache, ctx.obj, species, offsets, nspecies)
        return gc, None, None, None, None, None, None


class _Jvp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, vectors, cache, obj, species, offsets, nspecies):
        ctx.save_for_backward(vectors, cache, species, offsets, nspecies)
        ctx.obj = obj
        return torch.ops.nnmd.jvp(obj, species, offsets, nspecies, vectors, u, cache)

    @staticmethod
    def backward(ctx, gg):
        if ctx.needs_input_grad[1]:
            raise SecondDerivativeError(_SECOND_DERIVATIVE)
        vectors, cache, species, offsets, nspecies = ctx.saved_tensors
        gu = None
        if ctx.needs_input_grad[0]:
            gu = _Contract.apply(gg, vectors, cache, ctx.obj, species, offsets, nspecies)
        return gu, None, None, None, None, None, None


class _Jacobian(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vectors, obj, species, offsets, nspecies):
        ctx.set_materialize_grads(False)
        G, dG = torch.ops.nnmd.jacobian(obj, species, offsets, nspecies, vectors)
        ctx.save_for_backward(vectors, species, offsets, nspecies)
        ctx.obj = obj
        return G, dG

    @staticmethod
    def backward(ctx, gG, gdG):
        if gdG is not None:
            raise SecondDerivativeError(_SECOND_DERIVATIVE)
        vectors, species, offsets, nspecies = ctx.saved_tensors
        if gG is None:
            return None, None, None, None, None
        cache = _empty_cache(vectors.device)
        v = _Contract.apply(gG, vectors, cache, ctx.obj, species, offsets, nspecies)
        return v, None, None, None, None


class _LinearOperator(torch.autograd.Function):
    """y = A x for a linear map A given as a function ``apply(x, *args)`` with its
    adjoint ``adjoint(g, *args)`` (``args``: tensors that are not differentiated, and
    numbers): the gradient of A x is A^T g, that of A^T g is A g, so to any order."""

    @staticmethod
    def forward(ctx, x, apply, adjoint, *args):
        ctx.maps, ctx.args = (apply, adjoint), args
        return apply(x, *args)

    @staticmethod
    def backward(ctx, g):
        apply, adjoint = ctx.maps
        return (_LinearOperator.apply(g, adjoint, apply, *ctx.args), None, None) + (None,) * len(
            ctx.args
        )


def _slot_contract(g: Tensor, dGdd: Tensor) -> Tensor:
    return torch.ops.nnmd.slot_contract(g, dGdd)


def _slot_contract_adjoint(u: Tensor, dGdd: Tensor) -> Tensor:
    return torch.ops.nnmd.slot_contract_adjoint(u, dGdd)


def _slot_forces(g: Tensor, dGdd: Tensor, centre: Tensor, neighbor: Tensor, n: int) -> Tensor:
    return torch.ops.nnmd.slot_forces(g, dGdd, centre, neighbor, n)


def _slot_forces_adjoint(
    gF: Tensor, dGdd: Tensor, centre: Tensor, neighbor: Tensor, n: int
) -> Tensor:
    return torch.ops.nnmd.slot_forces_adjoint(gF, dGdd, centre, neighbor)


def _f64(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float64 else x.to(torch.float64)


def _args(desc: Descriptors, csr: NeighborCSR) -> tuple:
    return desc.script_object, csr.species, csr.offsets, csr.neighbor_species


def symmetry_functions(
    desc: Descriptors, csr: NeighborCSR, vectors: Tensor
) -> tuple[Tensor, Tensor]:
    """G (T,) of every row and the per-atom cache for :func:`contract` (differentiable
    in ``vectors``)."""
    return _SymmetryFunctions.apply(_f64(vectors), *_args(desc, csr))


def contract(
    desc: Descriptors,
    csr: NeighborCSR,
    vectors: Tensor,
    c: Tensor,
    cache: Tensor | None = None,
) -> Tensor:
    """v_p = sum_s c_s dG_s/dd_p for every pair: ``c`` (T,) or (M, T) -> (P, 3) or
    (M, P, 3). ``cache``: what :func:`symmetry_functions` returned for the same batch
    (optional; saves recomputing the moment tensors). Differentiable in ``c``."""
    cache = _empty_cache(vectors.device) if cache is None else cache
    return _Contract.apply(_f64(c), _f64(vectors), cache, *_args(desc, csr))


def jvp(
    desc: Descriptors,
    csr: NeighborCSR,
    vectors: Tensor,
    u: Tensor,
    cache: Tensor | None = None,
) -> Tensor:
    """g_s = sum_p dG_s/dd_p . u_p: ``u`` (P, 3) or (M, P, 3) -> (T,) or (M, T).
    Differentiable in ``u``."""
    cache = _empty_cache(vectors.device) if cache is None else cache
    return _Jvp.apply(_f64(u), _f64(vectors), cache, *_args(desc, csr))


def jacobian(desc: Descriptors, csr: NeighborCSR, vectors: Tensor) -> tuple[Tensor, Tensor]:
    """G (T,) and the dense Jacobian: row i's block (n_i, S_i, 3) [pair, function,
    component], consecutive in row order. G is differentiable in ``vectors``; dG/dd is
    not (its derivative would be a second derivative)."""
    return _Jacobian.apply(_f64(vectors), *_args(desc, csr))


def slot_operators_apply(g: Tensor, dGdd: Tensor) -> bool:
    """True if :func:`slot_contract` and :func:`slot_forces` take the operators for these
    tensors: float64 ``g`` on the CPU, the operator library loaded."""
    cpu = g.device.type == "cpu" and dGdd.device.type == "cpu"
    return cpu and g.dtype == torch.float64 and available()


def slot_contract(g: Tensor, dGdd: Tensor) -> Tensor:
    """v[r, m, c] = sum_s g[r, m, s] dGdd[r, s, c]: ``g`` (n, M, S), ``dGdd`` (n, S, C) ->
    (n, M, C), the force contraction of training batches (training/loss.py), the batched
    product ``torch.bmm(g, dGdd)``. Float64 ``g`` on the CPU takes the operator
    (lammps_plugin/torch_ops/slot_contraction.cpp: each row of dGdd read once for all M,
    rows in parallel; ``dGdd`` float64 or float32, summed in float64); anything else, or
    without the operator library, ``torch.bmm`` (in ``g``'s dtype). Differentiable in
    ``g`` (to any order), not in ``dGdd``."""
    if slot_operators_apply(g, dGdd):
        return _LinearOperator.apply(g, _slot_contract, _slot_contract_adjoint, dGdd)
    return torch.bmm(g, dGdd.to(g.dtype))


def slot_forces(g: Tensor, dGdd: Tensor, centre: Tensor, neighbor: Tensor, n_atoms: int) -> Tensor:
    """Forces (n_atoms, M, 3) of the rows' contraction v = :func:`slot_contract` (g, dGdd)
    with K = C/3 neighbour slots per row: atom ``centre[r]`` gets +sum_k v[r, :, k], atom
    ``neighbor[r K + k]`` gets -v[r, :, k] (``n_atoms``: an unused slot). One operator
    call without the (n, M, C) intermediate; only where :func:`slot_operators_apply`.
    Differentiable in ``g`` (to any order)."""
    if not slot_operators_apply(g, dGdd):
        raise RuntimeError("slot_forces: float64 CPU tensors and the operator library only")
    return _LinearOperator.apply(
        g, _slot_forces, _slot_forces_adjoint, dGdd, centre, neighbor, n_atoms
    )
