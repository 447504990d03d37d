"""Atom-centred symmetry functions: what they are (:mod:`.spec`), their cutoff functions
(:mod:`.cutoffs`), neighbour lists (:mod:`.neighbors`), their evaluation with analytic
derivatives (:mod:`.calculator`; by default through the C++ kernels as PyTorch
operators, :mod:`.ops`), the force/virial contraction (:mod:`.contraction`) and
automatic parameter generation and pruning (:mod:`.generation`), and the training
range with extrapolation reports (:mod:`.extrapolation`).

Positions -> :func:`neighbor_pairs` -> :class:`DescriptorCalculator` ->
:class:`DescriptorValues` (G; dG/dd or the contraction operator) -> networks (dE/dG) ->
:func:`forces_and_virial`.
"""

from .. import limits
from . import ops
from .calculator import (
    BACKENDS,
    DescriptorCalculator,
    DescriptorValues,
    OperatorContraction,
    pair_tensors,
)
from .contraction import Contraction, forces_and_virial, member_forces, pair_gradients
from .cutoffs import cutoff_function
from .extrapolation import Extrapolation, TrainingRange, extrapolation
from .generation import GridSettings, angular_grid, generate, min_distances, prune, radial_grid
from .neighbors import PairList, check_structure, neighbor_pairs, triplets_of
from .spec import (
    ANGULAR_TYPES,
    CUTOFF_TYPES,
    RADIAL_TYPES,
    SUPPORTED_TYPES,
    DescriptorSpec,
    SymmetryFunction,
    atomic_number,
    cutoff_problem,
    n2p2_sort_key,
    scale_lengths,
    sort_elements,
)

__all__ = [
    "ANGULAR_TYPES",
    "BACKENDS",
    "CUTOFF_TYPES",
    "RADIAL_TYPES",
    "SUPPORTED_TYPES",
    "Contraction",
    "DescriptorCalculator",
    "DescriptorSpec",
    "DescriptorValues",
    "Extrapolation",
    "GridSettings",
    "OperatorContraction",
    "PairList",
    "SymmetryFunction",
    "TrainingRange",
    "angular_grid",
    "atomic_number",
    "check_structure",
    "cutoff_function",
    "cutoff_problem",
    "extrapolation",
    "forces_and_virial",
    "generate",
    "limits",
    "member_forces",
    "min_distances",
    "n2p2_sort_key",
    "neighbor_pairs",
    "ops",
    "pair_gradients",
    "pair_tensors",
    "prune",
    "radial_grid",
    "scale_lengths",
    "sort_elements",
    "triplets_of",
]
