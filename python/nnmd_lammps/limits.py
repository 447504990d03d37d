"""Named limits and clamp constants of the formulas (docs/symmetry_functions.md,
"Limits and clamps"). The C++ kernels use the same names and values
(lammps_plugin/kernels/limits.h); a test holds the two equal."""

from __future__ import annotations

#: Cutoff type 4 (exponential): x = (r - rci) / (rc - rci) is clamped to at most this value
#: so that 1 / (1 - x^2) stays finite. f has underflowed to exactly 0 long before
#: (for x > 0.9994), so the clamp does not change any result.
EXP_CUTOFF_MAX_X = 0.999999

#: Beyond |x| > 35 the logistic and softplus activations are saturated (n2p2's value).
ACTIVATION_EXP_LIMIT = 35.0

#: Integer zeta up to this value is evaluated with integer powers in the C++ kernels.
MAX_INTEGER_ZETA = 64

#: Largest integer zeta for which the C++ kernels evaluate type 9 from per-neighbour
#: moment tensors (linear in the neighbour count); larger zeta use the direct sum.
MAX_MOMENT_ORDER = 24

#: A symmetry function is out of its training range when it lies more than this fraction
#: of the range width outside [min, max] (docs/uncertainty.md): rounding differences between
#: the Python and C++ evaluations of a training structure never flag it.
EXTRAPOLATION_TOLERANCE = 1e-8
