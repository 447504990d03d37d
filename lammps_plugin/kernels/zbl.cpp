/* nnmd-lammps: the ZBL repulsion baseline (see zbl.h). */

#include "kernels/zbl.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace nnmd {

ZBLPair::ZBLPair(int z_i, int z_j, double inner, double outer) : inner_(inner), outer_(outer)
{
  if (z_i < 1 || z_j < 1)
    throw std::invalid_argument("ZBL needs atomic numbers >= 1, got " + std::to_string(z_i) +
                                " and " + std::to_string(z_j));
  if (!(inner > 0.0) || !(outer > inner))
    throw std::invalid_argument("ZBL needs 0 < inner < outer, got inner " + std::to_string(inner) +
                                " and outer " + std::to_string(outer));
  const double inv_a =
      (std::pow(z_i, zbl::EXPONENT) + std::pow(z_j, zbl::EXPONENT)) / zbl::SCREENING_LENGTH;
  for (int k = 0; k < 4; ++k) decay_[k] = zbl::DECAYS[k] * inv_a;
  zz_ = zbl::COULOMB * z_i * z_j;

  // E = t^3 (A/3 + B/4 t) + C and dE/dr = t^2 (A + B t) plus phi, phi' must vanish at
  // outer together with the second derivative: with phi, phi', phi'' at outer,
  // A = (-3 phi' + tc phi'') / tc^2, B = (2 phi' - tc phi'') / tc^3,
  // C = -phi + tc / 2 phi' - tc^2 / 12 phi''
  double fc, fcp, fcpp;
  screened(outer, fc, fcp, fcpp);
  const double tc = outer - inner;
  const double a = (-3.0 * fcp + tc * fcpp) / (tc * tc);
  const double b = (2.0 * fcp - tc * fcpp) / (tc * tc * tc);
  sw1_ = a;
  sw2_ = b;
  sw3_ = a / 3.0;
  sw4_ = b / 4.0;
  sw5_ = -fc + (tc / 2.0) * fcp - (tc * tc / 12.0) * fcpp;
}

void ZBLPair::screened(double r, double &phi, double &dphi, double &d2phi) const
{
  // phi = zz s / r with s = sum_k c_k exp(-d_k r): phi' = zz (s' - s / r) / r,
  // phi'' = zz (s'' - 2 s' / r + 2 s / r^2) / r
  double s = 0.0, s1 = 0.0, s2 = 0.0;
  for (int k = 0; k < 4; ++k) {
    const double term = zbl::COEFFICIENTS[k] * std::exp(-decay_[k] * r);
    s += term;
    s1 -= decay_[k] * term;
    s2 += decay_[k] * decay_[k] * term;
  }
  const double inv_r = 1.0 / r;
  phi = zz_ * s * inv_r;
  dphi = zz_ * (s1 - s * inv_r) * inv_r;
  d2phi = zz_ * (s2 - 2.0 * s1 * inv_r + 2.0 * s * inv_r * inv_r) * inv_r;
}

void ZBLPair::evaluate(double r, double &energy, double &dedr) const
{
  if (r >= outer_) {
    energy = dedr = 0.0;
    return;
  }
  double s = 0.0, s1 = 0.0;
  for (int k = 0; k < 4; ++k) {
    const double term = zbl::COEFFICIENTS[k] * std::exp(-decay_[k] * r);
    s += term;
    s1 -= decay_[k] * term;
  }
  const double inv_r = 1.0 / r;
  energy = zz_ * s * inv_r + sw5_;
  dedr = zz_ * (s1 - s * inv_r) * inv_r;
  if (r > inner_) {
    const double t = r - inner_;
    energy += t * t * t * (sw3_ + sw4_ * t);
    dedr += t * t * (sw1_ + sw2_ * t);
  }
}

ZBL::ZBL(const std::vector<int> &atomic_numbers, double inner, double outer) :
    n_(static_cast<int>(atomic_numbers.size())), outer_(outer)
{
  pairs_.reserve(static_cast<std::size_t>(n_) * n_);
  for (int i = 0; i < n_; ++i)
    for (int j = 0; j < n_; ++j)
      pairs_.emplace_back(atomic_numbers[i], atomic_numbers[j], inner, outer);
}

}    // namespace nnmd
