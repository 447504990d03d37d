/* nnmd-lammps: numerical limits of the kernels and of the extrapolation check.

   The Python package uses the same names and values (python/nnmd_lammps/limits.py;
   tests/test_cpp_kernels.py holds the two equal); docs/symmetry_functions.md, section 8,
   explains them. */

#ifndef NNMD_KERNELS_LIMITS_H
#define NNMD_KERNELS_LIMITS_H

namespace nnmd::limits {

// Integer zeta up to this value is evaluated with integer powers (repeated squaring)
// instead of pow(); larger or non-integer zeta uses pow().
constexpr int MAX_INTEGER_ZETA = 64;

// Largest integer zeta for which type 9 can be evaluated in linear time from moment
// tensors (the number of tensor components grows as zeta^3 / 6).
constexpr int MAX_MOMENT_ORDER = 24;

// Cutoff type 4, fc = exp(1 - 1 / (1 - x^2)): x is clamped below 1 so that 1 / (1 - x^2)
// stays finite. fc has underflowed to exactly 0 long before, so results do not change.
constexpr double EXP_CUTOFF_MAX_X = 0.999999;

// A symmetry function is outside its training range when its excursion beyond the range,
// in units of the range's width, exceeds this (so that values equal to the training
// extremes up to rounding are not flagged; docs/uncertainty.md).
constexpr double EXTRAPOLATION_TOLERANCE = 1e-8;

}    // namespace nnmd::limits

#endif
