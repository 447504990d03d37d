/* nnmd-lammps: the ZBL short-range repulsion baseline (LAMMPS-independent).

   The universal screened Coulomb pair energy of Ziegler, Biersack and Littmark ("The
   Stopping and Range of Ions in Matter", 1985) for atomic numbers Z_i, Z_j,

     phi(r) = K Z_i Z_j / r sum_k c_k exp(-d_k r / a),   a = a0 / (Z_i^p + Z_j^p),

   switched off between `inner` and `outer` exactly as LAMMPS's `pair_style zbl inner
   outer` does: with t = r - inner and tc = outer - inner,

     E(r) = phi(r) + C + [r > inner] t^3 (A/3 + B/4 t)   (r < outer),   E(r) = 0 beyond,

   where A, B, C make E, dE/dr and d2E/dr2 vanish at `outer`. Inside `inner` the energy is
   phi shifted by the constant C. Units: eV, Angstrom (K is LAMMPS's qqr2e of units metal,
   so that the values equal pair_style zbl's). The Python twin is
   python/nnmd_lammps/model/repulsion.py; docs/uncertainty.md describes the baseline. */

#ifndef NNMD_KERNELS_ZBL_H
#define NNMD_KERNELS_ZBL_H

#include <vector>

namespace nnmd {

namespace zbl {
constexpr double COULOMB = 14.399645;           // e^2 / (4 pi eps0), eV Angstrom (LAMMPS metal)
constexpr double SCREENING_LENGTH = 0.46850;    // a0, Angstrom
constexpr double EXPONENT = 0.23;               // p
constexpr double COEFFICIENTS[4] = {0.02817, 0.28022, 0.50986, 0.18175};    // c_k
constexpr double DECAYS[4] = {0.20162, 0.40290, 0.94229, 3.19980};          // d_k (units 1/a)
}    // namespace zbl

// The switched ZBL energy of one pair of atomic numbers.
class ZBLPair {
 public:
  ZBLPair() = default;
  // Throws std::invalid_argument unless z_i, z_j >= 1 and 0 < inner < outer.
  ZBLPair(int z_i, int z_j, double inner, double outer);
  // E(r) (eV) and dE/dr (eV/Angstrom) for r > 0; both 0 for r >= outer.
  void evaluate(double r, double &energy, double &dedr) const;
  double inner() const { return inner_; }
  double outer() const { return outer_; }

 private:
  // phi, phi' and phi'' at r
  void screened(double r, double &phi, double &dphi, double &d2phi) const;
  double zz_ = 0.0;                           // K Z_i Z_j
  double decay_[4] = {0.0, 0.0, 0.0, 0.0};    // d_k / a
  double inner_ = 0.0, outer_ = 0.0;
  double sw1_ = 0.0, sw2_ = 0.0;                // dE/dr switch: t^2 (sw1 + sw2 t)
  double sw3_ = 0.0, sw4_ = 0.0, sw5_ = 0.0;    // E switch: t^3 (sw3 + sw4 t) + sw5
};

// ZBL for every pair of the elements of a model (atomic numbers in model order).
class ZBL {
 public:
  ZBL(const std::vector<int> &atomic_numbers, double inner, double outer);
  const ZBLPair &pair(int e_i, int e_j) const { return pairs_[e_i * n_ + e_j]; }
  double outer() const { return outer_; }

 private:
  int n_ = 0;
  double outer_ = 0.0;
  std::vector<ZBLPair> pairs_;
};

}    // namespace nnmd

#endif
