/* nnmd-lammps: symmetry-function kernels (see symmetry_functions.h, docs/symmetry_functions.md). */

#if defined(NNMD_USE_LIBMVEC) && !defined(__FAST_MATH__)
// glibc declares the SIMD variants of exp, tanh, cos, ... (libmvec, <= 4 ulp) only under
// __FAST_MATH__; define it here, without -ffast-math's other effects, so that the
// vectorised loops below call them. (Before any system header.)
#define __FAST_MATH__ 1
#endif

#include "kernels/symmetry_functions.h"

#include "cuda/sf_device.h"
#include "kernels/limits.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace nnmd {

namespace {
template <class T> int index_of(std::vector<T> &a, std::vector<T> &b, T x, T y)
{
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i] == x && b[i] == y) return static_cast<int>(i);
  a.push_back(x);
  b.push_back(y);
  return static_cast<int>(a.size() - 1);
}

template <class T> void grow(std::vector<T> &v, std::size_t n)
{
  if (v.size() < n) v.resize(n);
}
}    // namespace

std::string validate(const SymmetryFunction &p, int n_elements)
{
  std::ostringstream msg;
  if (p.type != 2 && p.type != 3 && p.type != 9)
    msg << "unsupported symmetry function type " << p.type << " (supported: 2, 3, 9)";
  else if (p.e1 < 0 || p.e1 >= n_elements)
    msg << "neighbour element index " << p.e1 << " out of range";
  else if (p.type != 2 && (p.e2 < 0 || p.e2 >= n_elements))
    msg << "second neighbour element index " << p.e2 << " out of range";
  else if (!(p.rc > 0.0) || !std::isfinite(p.rc))
    msg << "cutoff radius must be positive and finite";
  else if (!(p.eta >= 0.0) || !std::isfinite(p.eta))
    msg << "eta must be >= 0 and finite";
  else if (!std::isfinite(p.rs))
    msg << "rs must be finite";
  else if (p.cutoff_type < 0 || p.cutoff_type > 8)
    msg << "unsupported cutoff type " << p.cutoff_type << " (supported: 0-8)";
  else if (!(p.cutoff_alpha >= 0.0 && p.cutoff_alpha < 1.0))
    msg << "cutoff alpha must satisfy 0 <= alpha < 1";
  else if (p.type != 2 && p.lambda != 1.0 && p.lambda != -1.0)
    msg << "lambda must be +1 or -1";
  else if (p.type != 2 && !(p.zeta >= 1.0 && std::isfinite(p.zeta)))
    msg << "zeta must be >= 1";
  return msg.str();
}

// ---------------------------------------------------------------------------------------
// cutoff functions (docs section 1)

Cutoff::Cutoff(int type, double rc, double alpha) : type_(type), alpha_(alpha)
{
  p_.rc = rc;
  p_.rci = alpha * rc;
  p_.iw = 1.0 / (rc - p_.rci);
  if (type == 3) p_.pre = std::pow(1.0 / std::tanh(1.0), 3);    // fc(0) = 1
}

// ---------------------------------------------------------------------------------------
// construction

DescriptorCalculator::DescriptorCalculator(const std::vector<SymmetryFunction> &functions,
                                           int n_elements) :
    n_functions_(static_cast<int>(functions.size())), n_elements_(n_elements)
{
  int kmax_all = 0;
  for (int s = 0; s < n_functions_; ++s) {
    const SymmetryFunction &p = functions[s];
    cutoff_ = std::max(cutoff_, p.rc);
    const Cutoff fc(p.cutoff_type, p.rc, p.cutoff_alpha);
    if (p.type == 2) {
      auto it = std::find_if(radial_.begin(), radial_.end(), [&](const RadialGroup &g) {
        return g.e1 == p.e1 && g.fc.same(fc);
      });
      if (it == radial_.end()) {
        radial_.push_back(RadialGroup{p.e1, fc, {}, {}, {}});
        it = radial_.end() - 1;
      }
      it->eta.push_back(p.eta);
      it->rs.push_back(p.rs);
      it->out.push_back(s);
      continue;
    }
    const int a = std::min(p.e1, p.e2), b = std::max(p.e1, p.e2);
    auto it = std::find_if(angular_.begin(), angular_.end(), [&](const AngularGroup &g) {
      return g.type == p.type && g.e1 == a && g.e2 == b && g.fc.same(fc);
    });
    if (it == angular_.end()) {
      AngularGroup g;
      g.type = p.type;
      g.e1 = a;
      g.e2 = b;
      g.fc = fc;
      angular_.push_back(g);
      it = angular_.end() - 1;
    }
    AngularGroup &g = *it;
    const int u = index_of(g.ueta, g.urs, p.eta, p.rs);
    const std::size_t nv = g.vlam.size();
    const int v = index_of(g.vlam, g.vzeta, p.lambda, p.zeta);
    if (g.vlam.size() > nv) {
      g.vnorm.push_back(std::pow(2.0, 1.0 - p.zeta));
      const double zr = std::round(p.zeta);
      const bool integer = zr == p.zeta && zr <= limits::MAX_INTEGER_ZETA;
      g.vzi.push_back(integer ? static_cast<int>(zr) : 0);
    }
    g.su.push_back(u);
    g.sv.push_back(v);
    g.out.push_back(s);
  }
  for (AngularGroup &g : angular_) {
    neighbor_work_.max_params = std::max({neighbor_work_.max_params, g.ueta.size(), g.vlam.size()});
    g.kmax = 0;
    if (g.type != 9) continue;
    int k = 0;
    bool ok = true;
    for (std::size_t v = 0; v < g.vzi.size(); ++v) {
      ok = ok && g.vzi[v] > 0 && g.vzi[v] <= limits::MAX_MOMENT_ORDER;
      k = std::max(k, g.vzi[v]);
    }
    if (ok) g.kmax = k;
    kmax_all = std::max(kmax_all, g.kmax);
  }
  // binomial coefficients up to the largest integer zeta
  int zmax = kmax_all;
  binom_.assign(zmax + 1, {});
  for (int n = 0; n <= zmax; ++n) {
    binom_[n].assign(n + 1, 1.0);
    for (int m = 1; m < n; ++m) binom_[n][m] = binom_[n - 1][m - 1] + binom_[n - 1][m];
  }
  // multi-index table for the moment evaluation
  MomentTable &t = table_;
  t.K = kmax_all;
  t.first.assign(kmax_all + 2, 0);
  for (int m = 0; m <= kmax_all; ++m) {
    t.first[m] = static_cast<int>(t.degree.size());
    for (int x = m; x >= 0; --x)
      for (int y = m - x; y >= 0; --y) {
        const int z = m - x - y;
        t.degree.push_back(m);
        t.ax.push_back(x);
        t.ay.push_back(y);
        t.az.push_back(z);
        t.mult.push_back(binom_[m][x] * binom_[m - x][y]);    // m! / (x! y! z!)
      }
  }
  t.first[kmax_all + 1] = static_cast<int>(t.degree.size());
  for (AngularGroup &g : angular_) {
    if (g.kmax <= 0) continue;
    g.cache_offset = cache_size_;
    const std::size_t na = t.first[g.kmax + 1];
    cache_size_ += 1 + g.ueta.size() * (2 * na + 1);    // flag, M_u,side, sum w^2
  }
  const int na = static_cast<int>(t.degree.size());
  auto find = [&](int x, int y, int z) {
    if (x < 0 || y < 0 || z < 0) return -1;
    const int m = x + y + z;
    for (int i = t.first[m]; i < t.first[m + 1]; ++i)
      if (t.ax[i] == x && t.ay[i] == y && t.az[i] == z) return i;
    return -1;
  };
  for (int c = 0; c < 3; ++c) {
    t.lower[c].assign(na, -1);
    t.up[c].assign(std::max(kmax_all > 0 ? t.first[kmax_all] : 0, 0), -1);
    t.upw[c].assign(t.up[c].size(), 0.0);
  }
  t.pred.assign(na, -1);
  t.pred_axis.assign(na, 0);
  for (int i = 0; i < na; ++i) {
    t.lower[0][i] = find(t.ax[i] - 1, t.ay[i], t.az[i]);
    t.lower[1][i] = find(t.ax[i], t.ay[i] - 1, t.az[i]);
    t.lower[2][i] = find(t.ax[i], t.ay[i], t.az[i] - 1);
    for (int c = 0; c < 3 && t.degree[i] > 0; ++c)
      if (t.lower[c][i] >= 0) {
        t.pred[i] = t.lower[c][i];
        t.pred_axis[i] = c;
        break;
      }
    if (i < static_cast<int>(t.up[0].size())) {
      t.up[0][i] = find(t.ax[i] + 1, t.ay[i], t.az[i]);
      t.up[1][i] = find(t.ax[i], t.ay[i] + 1, t.az[i]);
      t.up[2][i] = find(t.ax[i], t.ay[i], t.az[i] + 1);
      t.upw[0][i] = t.ax[i] + 1.0;
      t.upw[1][i] = t.ay[i] + 1.0;
      t.upw[2][i] = t.az[i] + 1.0;
    }
  }
}

// ---------------------------------------------------------------------------------------
// radial functions (docs section 2)

// ---------------------------------------------------------------------------------------
// cutoff functions (docs section 1), inlined into SIMD loops; types 1 and 4-8 in
// x = (r - rci) / (rc - rci) by the GPU functions' cutoff_x (cuda/sf_device.h: one copy of
// the formulas, always inlined, so that this compiles as with them written out here)

namespace {
template <int CT>
inline __attribute__((always_inline)) void cutoff_inline(double r, const CutoffParams &p, double &f,
                                                         double &df)
{
  const bool inside = r < p.rc;
  if constexpr (CT == 0) {
    f = inside ? 1.0 : 0.0;
    df = 0.0;
  } else if constexpr (CT == 2 || CT == 3) {
    const double t = std::tanh(1.0 - r / p.rc);
    const double t2 = t * t;
    f = inside ? p.pre * t * t2 : 0.0;
    df = inside ? p.pre * 3.0 * t2 * (t2 - 1.0) / p.rc : 0.0;
  } else {
    double x = (r - p.rci) * p.iw;
    x = x < 0.0 ? 0.0 : (x > 1.0 ? 1.0 : x);
    double fx, dfx;
    device::cutoff_x(CT, x, fx, dfx);
    const bool inner = r < p.rci;
    f = inside ? (inner ? 1.0 : fx) : 0.0;
    df = (inside && !inner) ? dfx * p.iw : 0.0;
  }
}

template <int CT>
void cutoff_array_t(const double *r, int n, const CutoffParams p, double *f, double *df)
{
#pragma omp simd
  for (int q = 0; q < n; ++q) cutoff_inline<CT>(r[q], p, f[q], df[q]);
}

void cutoff_array(int type, const double *r, int n, const CutoffParams p, double *f, double *df)
{
  switch (type) {
    case 0: cutoff_array_t<0>(r, n, p, f, df); break;
    case 1: cutoff_array_t<1>(r, n, p, f, df); break;
    case 2: cutoff_array_t<2>(r, n, p, f, df); break;
    case 3: cutoff_array_t<3>(r, n, p, f, df); break;
    case 4: cutoff_array_t<4>(r, n, p, f, df); break;
    case 5: cutoff_array_t<5>(r, n, p, f, df); break;
    case 6: cutoff_array_t<6>(r, n, p, f, df); break;
    case 7: cutoff_array_t<7>(r, n, p, f, df); break;
    default: cutoff_array_t<8>(r, n, p, f, df); break;
  }
}
}    // namespace

void Cutoff::evaluate(const double *r, int n, double *f, double *df) const
{
  cutoff_array(type_, r, n, p_, f, df);
}

// ---------------------------------------------------------------------------------------
// neighbours of a group in list order (structure of arrays)

void DescriptorCalculator::collect(const Neighbors &nb, int e1, int e2, const Cutoff &fc,
                                   const std::vector<double> &eta,
                                   const std::vector<double> &rs) const
{
  NeighborWork &w = neighbor_work_;
  const double rc = fc.rc();
  const std::size_t n = nb.size();
  if (w.capacity < NeighborWork::padded(n) || w.source.size() < w.capacity) {
    w.reserve(std::max<std::size_t>(n, 16));
    triplet_work_.reserve(w.capacity, w.max_params);
  }
  int m = 0;
  for (int pass = 0; pass < (e2 >= 0 && e2 != e1 ? 2 : 1); ++pass) {
    const int want = pass == 0 ? e1 : e2;
    for (std::size_t k = 0; k < n; ++k) {
      if (nb.elem[k] != want || nb.r[k] >= rc) continue;
      w.source[m] = static_cast<int>(k);
      w.dx[m] = nb.x[k];
      w.dy[m] = nb.y[k];
      w.dz[m] = nb.z[k];
      w.r[m] = nb.r[k];
      ++m;
    }
    if (pass == 0) w.n_first = m;
  }
  w.n_listed = m;
  // pad to a multiple of 4 with neighbours at r = rc (fc = 0, no contribution), so that
  // vector loops need no scalar remainder
  const int mp = (m + 3) & ~3;
  for (int q = m; q < mp; ++q) {
    w.source[q] = -1;
    w.dx[q] = rc;
    w.dy[q] = w.dz[q] = 0.0;
    w.r[q] = rc;
  }
  w.n_padded = mp;
  fc.evaluate(w.r.data(), mp, w.fc.data(), w.dfc.data());
  const std::size_t cap = w.capacity;
  for (std::size_t u = 0; u < eta.size(); ++u) {
    double *gauss = &w.gauss[u * cap], *shift = &w.shift[u * cap];
    const double et = eta[u], r0 = rs[u];
    const double *r = w.r.data();
#pragma omp simd
    for (int q = 0; q < mp; ++q) {
      const double x = r[q] - r0;
      shift[q] = x;
      gauss[q] = std::exp(-et * x * x);
    }
  }
#pragma omp simd
  for (int q = 0; q < mp; ++q) w.inv_r[q] = 1.0 / w.r[q];
}

void DescriptorCalculator::NeighborWork::reserve(std::size_t n)
{
  capacity = std::max(capacity, padded(n));
  max_params = std::max<std::size_t>(max_params, 1);
  for (auto *vec : {&dx, &dy, &dz, &r, &inv_r, &fc, &dfc, &dG_dr, &dir_x, &dir_y, &dir_z, &dir_r})
    vec->resize(capacity);
  source.resize(capacity);
  for (auto *vec : {&gauss, &shift}) vec->resize(capacity * max_params);
  reserve_vectors(max_vectors);
}

void DescriptorCalculator::NeighborWork::reserve_vectors(std::size_t m)
{
  max_vectors = std::max<std::size_t>({max_vectors, m, 1});
  for (auto *vec : {&dE_dr, &grad_x, &grad_y, &grad_z}) vec->resize(capacity * max_vectors);
}

void DescriptorCalculator::TripletWork::reserve(std::size_t capacity, std::size_t max_params)
{
  for (auto *vec :
       {&cos_angle, &inv_rr, &r_jk, &jk_x, &jk_y, &jk_z, &fc_prod, &dfc_ij, &dfc_ik, &dfc_jk,
        &dE_dcos, &grad_k_x, &grad_k_y, &grad_k_z, &d_cos, &d_fc_prod, &d_r_jk})
    vec->resize(capacity);
  partner.resize(capacity);
  for (auto *vec : {&radial, &d_radial_ij, &d_radial_ik, &d_radial_jk, &dE_dradial, &pow_zeta,
                    &pow_zeta_m1, &d_radial})
    vec->resize(capacity * max_params);
}

// the direction u of each collected neighbour and dr_q along it (jvp); 0 in the padding
void DescriptorCalculator::collect_direction(const double *u) const
{
  NeighborWork &w = neighbor_work_;
  const int m = w.n_listed, mp = w.n_padded;
  for (int q = 0; q < m; ++q) {
    const int k = w.source[q];
    w.dir_x[q] = u[3 * k];
    w.dir_y[q] = u[3 * k + 1];
    w.dir_z[q] = u[3 * k + 2];
  }
  for (int q = m; q < mp; ++q) w.dir_x[q] = w.dir_y[q] = w.dir_z[q] = 0.0;
  const double *dx = w.dx.data(), *dy = w.dy.data(), *dz = w.dz.data(), *inv_r = w.inv_r.data();
  const double *ux = w.dir_x.data(), *uy = w.dir_y.data(), *uz = w.dir_z.data();
  double *dr = w.dir_r.data();
#pragma omp simd
  for (int q = 0; q < mp; ++q) dr[q] = (dx[q] * ux[q] + dy[q] * uy[q] + dz[q] * uz[q]) * inv_r[q];
}

// ---------------------------------------------------------------------------------------
// radial functions (docs section 2)

template <DescriptorCalculator::Pass PASS>
void DescriptorCalculator::radial(const RadialGroup &g, const Neighbors &nb,
                                  const PassArgs &a) const
{
  collect(nb, g.e1, -1, g.fc, {}, {});
  NeighborWork &w = neighbor_work_;
  const int m = w.n_listed, mp = w.n_padded;
  if (m == 0) return;
  if (PASS == Pass::Tangent) collect_direction(a.u);
  const std::size_t cap = w.capacity;
  const int nvec = PASS == Pass::Contract ? a.n_vectors : 0;
  const double *r = w.r.data(), *fc = w.fc.data(), *dfc = w.dfc.data(), *dr = w.dir_r.data();
  double *dG_dr = w.dG_dr.data(), *dE_dr = w.dE_dr.data();
  for (int vec = 0; vec < nvec; ++vec) std::fill(dE_dr + vec * cap, dE_dr + vec * cap + mp, 0.0);
  for (std::size_t s = 0; s < g.out.size(); ++s) {
    const double et = g.eta[s], r0 = g.rs[s];
    if constexpr (PASS == Pass::Values) {
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int q = 0; q < mp; ++q) {
        const double x = r[q] - r0;
        sum += std::exp(-et * x * x) * fc[q];
      }
      a.G[g.out[s]] += sum;
    } else if constexpr (PASS == Pass::Tangent) {
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int q = 0; q < mp; ++q) {
        const double x = r[q] - r0;
        sum += (dfc[q] - 2.0 * et * x * fc[q]) * std::exp(-et * x * x) * dr[q];
      }
      a.G[g.out[s]] += sum;
    } else {
      // dG_s/dr_q once, then one axpy per vector
#pragma omp simd
      for (int q = 0; q < mp; ++q) {
        const double x = r[q] - r0;
        dG_dr[q] = (dfc[q] - 2.0 * et * x * fc[q]) * std::exp(-et * x * x);
      }
      for (int vec = 0; vec < nvec; ++vec) {
        const double cs = a.c[static_cast<std::size_t>(vec) * n_functions_ + g.out[s]];
        if (cs == 0.0) continue;
        double *row = dE_dr + vec * cap;
#pragma omp simd
        for (int q = 0; q < mp; ++q) row[q] += cs * dG_dr[q];
      }
    }
  }
  for (int vec = 0; vec < nvec; ++vec) {
    const double *row = dE_dr + vec * cap;
    double *out = a.v + vec * a.v_stride;
    for (int q = 0; q < m; ++q) {
      const int k = w.source[q];
      const double cr = row[q] * w.inv_r[q];
      out[3 * k] += cr * w.dx[q];
      out[3 * k + 1] += cr * w.dy[q];
      out[3 * k + 2] += cr * w.dz[q];
    }
  }
}

bool DescriptorCalculator::use_moments(const AngularGroup &g) const
{
  if (g.kmax <= 0 || method_ == Method::Direct) return false;
  if (method_ == Method::Moments) return true;
  // Cost model in nanoseconds, fitted to `nnmd_sf_eval ... time-direct / time-moments` on
  // fcc environments of 12 to 176 neighbours with 8 to 24 functions (AVX2, 2026):
  //   direct  ~ triplets (29 + 0.82 n_functions) + 150 per first neighbour
  //   moments ~ neighbours x multi-indices (1.8 + 0.7 n_gaussians) + 2000
  // The cross-over lies near 20 neighbours.
  const double n1 = neighbor_work_.n_first;
  const double n2 = neighbor_work_.n_listed - neighbor_work_.n_first;
  const double triplets = (g.e1 == g.e2) ? 0.5 * n1 * (n1 - 1.0) : n1 * n2;
  const double direct = triplets * (29.0 + 0.82 * g.out.size()) + 150.0 * n1;
  const double nalpha = table_.first[g.kmax + 1];
  const double moments = (n1 + n2) * nalpha * (1.8 + 0.7 * g.ueta.size()) + 2000.0;
  return moments < direct;
}

// ---------------------------------------------------------------------------------------
// angular functions: triplet sums (docs section 3), vectorised over the second neighbour

// ---------------------------------------------------------------------------------------
// angular functions: triplet sums (docs section 3), vectorised over the second neighbour

template <DescriptorCalculator::Pass PASS, bool NARROW, int CT>
void DescriptorCalculator::angular_direct_t(const AngularGroup &g, const PassArgs &args) const
{
  constexpr bool DERIV = PASS != Pass::Values;    // derivatives of the radial parts
  constexpr bool TANGENT = PASS == Pass::Tangent;
  const NeighborWork &w = neighbor_work_;
  TripletWork &tw = triplet_work_;
  const std::size_t nu = g.ueta.size(), nv = g.vlam.size(), ns = g.out.size();
  const std::size_t cap = w.capacity;
  const int n1 = w.n_first, nl = w.n_listed;
  const int nvec = PASS == Pass::Contract ? args.n_vectors : 0;
  const bool same = (g.e1 == g.e2);
  const CutoffParams cp = g.fc.params();    // a copy: no aliasing with the outputs
  const double rc2 = cp.rc * cp.rc;
  const double *dx = w.dx.data(), *dy = w.dy.data(), *dz = w.dz.data();
  const double *inv_r = w.inv_r.data(), *fc = w.fc.data(), *dfc = w.dfc.data();
  const double *ux = w.dir_x.data(), *uy = w.dir_y.data(), *uz = w.dir_z.data();
  const double *udr = w.dir_r.data();
  double *cos_angle = tw.cos_angle.data(), *r_jk = tw.r_jk.data(), *inv_rr = tw.inv_rr.data();
  double *fc_prod = tw.fc_prod.data();
  double *dfc_ij = tw.dfc_ij.data(), *dfc_ik = tw.dfc_ik.data(), *dfc_jk = tw.dfc_jk.data();
  double *jk_x = tw.jk_x.data(), *jk_y = tw.jk_y.data(), *jk_z = tw.jk_z.data();
  double *d_cos = tw.d_cos.data(), *d_fc_prod = tw.d_fc_prod.data(), *d_r_jk = tw.d_r_jk.data();
  double *grad_x = neighbor_work_.grad_x.data(), *grad_y = neighbor_work_.grad_y.data(),
         *grad_z = neighbor_work_.grad_z.data();
  for (int vec = 0; vec < nvec; ++vec)
    for (int q = 0; q < nl; ++q)
      grad_x[vec * cap + q] = grad_y[vec * cap + q] = grad_z[vec * cap + q] = 0.0;

  for (int p = 0; p < n1; ++p) {
    const int qb = same ? p + 1 : n1, qe = same ? n1 : nl;
    const int np = qe - qb;
    if (np <= 0) continue;
    const double ax = dx[p], ay = dy[p], az = dz[p], r1i = inv_r[p], f1 = fc[p], df1 = dfc[p];
    const double ujx = TANGENT ? ux[p] : 0.0, ujy = TANGENT ? uy[p] : 0.0,
                 ujz = TANGENT ? uz[p] : 0.0, dr1 = TANGENT ? udr[p] : 0.0;
    // partners k of j = p; for type 3 only those with r_jk < rc (about half of them)
    int nt = np;
    int *partner = tw.partner.data();
    if constexpr (NARROW) {
      double *r_jk_sq = tw.r_jk.data();
#pragma omp simd
      for (int t = 0; t < np; ++t) {
        const int q = qb + t;
        const double cx = dx[q] - ax, cy = dy[q] - ay, cz = dz[q] - az;
        r_jk_sq[t] = cx * cx + cy * cy + cz * cz;
      }
      nt = 0;
      for (int t = 0; t < np; ++t) {    // branch-free compaction
        partner[nt] = qb + t;
        nt += r_jk_sq[t] < rc2;
      }
    } else {
      for (int t = 0; t < np; ++t) partner[t] = qb + t;
    }
    if (nt == 0) continue;
    const int ntv = (nt + 3) & ~3;    // padded: lanes t >= nt repeat a partner with F = 0
    for (int t = nt; t < ntv; ++t) partner[t] = partner[0];
    // geometry of the triplets (j = p, k = partner[t])
#pragma omp simd
    for (int t = 0; t < ntv; ++t) {
      const int q = partner[t];
      const double pad = t < nt ? 1.0 : 0.0;
      const double bx = dx[q], by = dy[q], bz = dz[q];
      const double inv12 = r1i * inv_r[q];
      const double cos_t = (ax * bx + ay * by + az * bz) * inv12;
      inv_rr[t] = inv12;
      cos_angle[t] = cos_t;
      double f3 = 1.0, df3 = 0.0, r3 = 0.0;
      if constexpr (NARROW) {
        const double cx = bx - ax, cy = by - ay, cz = bz - az;
        r3 = std::sqrt(cx * cx + cy * cy + cz * cz);
        cutoff_inline<CT>(r3, cp, f3, df3);
        r_jk[t] = r3;
        jk_x[t] = cx;
        jk_y[t] = cy;
        jk_z[t] = cz;
      }
      const double f2 = fc[q] * pad;
      fc_prod[t] = f1 * f2 * f3;
      if (DERIV) {
        const double d1 = df1 * f2 * f3, d2 = f1 * dfc[q] * pad * f3, d3 = f1 * f2 * df3;
        dfc_ij[t] = d1;
        dfc_ik[t] = d2;
        dfc_jk[t] = d3;
        if constexpr (TANGENT) {
          // cos, r_jk and fc_prod along u: d(a.b / (r_a r_b)), d|b - a|
          const double ukx = ux[q], uky = uy[q], ukz = uz[q], dr2 = udr[q];
          const double dot = ujx * bx + ujy * by + ujz * bz + ax * ukx + ay * uky + az * ukz;
          d_cos[t] = dot * inv12 - cos_t * (dr1 * r1i + dr2 * inv_r[q]);
          double dr3 = 0.0;
          if constexpr (NARROW)
            dr3 =
                ((bx - ax) * (ukx - ujx) + (by - ay) * (uky - ujy) + (bz - az) * (ukz - ujz)) / r3;
          d_r_jk[t] = dr3;
          d_fc_prod[t] = d1 * dr1 + d2 * dr2 + d3 * dr3;
        }
      }
    }
    // radial parts per distinct (eta, rs)
    for (std::size_t u = 0; u < nu; ++u) {
      const double et = g.ueta[u], r0 = g.urs[u], te = 2.0 * et;
      const double ej = w.gauss[u * cap + p], x1 = w.shift[u * cap + p];
      const double *gauss = &w.gauss[u * cap], *shift = &w.shift[u * cap];
      double *R = &tw.radial[u * cap], *D1 = &tw.d_radial_ij[u * cap],
             *D2 = &tw.d_radial_ik[u * cap], *D3 = &tw.d_radial_jk[u * cap],
             *DR = &tw.d_radial[u * cap];
#pragma omp simd
      for (int t = 0; t < ntv; ++t) {
        const int q = partner[t];
        double E = ej * gauss[q];
        double x3 = 0.0;
        if constexpr (NARROW) {
          x3 = r_jk[t] - r0;
          E *= std::exp(-et * x3 * x3);
        }
        const double F = fc_prod[t];
        R[t] = E * F;
        if constexpr (TANGENT) {
          const double dx_sum = x1 * dr1 + shift[q] * udr[q] + (NARROW ? x3 * d_r_jk[t] : 0.0);
          DR[t] = E * (d_fc_prod[t] - te * dx_sum * F);
        } else if (DERIV) {
          D1[t] = E * (dfc_ij[t] - te * x1 * F);
          D2[t] = E * (dfc_ik[t] - te * shift[q] * F);
          D3[t] = NARROW ? E * (dfc_jk[t] - te * x3 * F) : 0.0;
        }
      }
    }
    // angular parts per distinct (lambda, zeta)
    for (std::size_t a = 0; a < nv; ++a) {
      const double lam = g.vlam[a], zm1 = g.vzeta[a] - 1.0;
      const int zi = g.vzi[a];
      double *pz = &tw.pow_zeta[a * cap], *pz1 = &tw.pow_zeta_m1[a * cap];
      if (zi > 0) {
        // P^(zeta-1) by binary exponentiation, each step a vectorised loop over triplets
        // (pz holds the running square P^(2^b) until the last loop)
#pragma omp simd
        for (int t = 0; t < ntv; ++t) {
          const double P = 1.0 + lam * cos_angle[t];
          pz[t] = P > 0.0 ? P : 0.0;
          pz1[t] = 1.0;
        }
        for (int e = zi - 1; e > 0; e >>= 1) {
          if (e & 1) {
#pragma omp simd
            for (int t = 0; t < ntv; ++t) pz1[t] *= pz[t];
          }
          if (e > 1) {
#pragma omp simd
            for (int t = 0; t < ntv; ++t) pz[t] *= pz[t];
          }
        }
#pragma omp simd
        for (int t = 0; t < ntv; ++t) {    // P <= 0: the term and its derivatives vanish
          const double P = 1.0 + lam * cos_angle[t];
          pz1[t] = P > 0.0 ? pz1[t] : 0.0;
          pz[t] = pz1[t] * (P > 0.0 ? P : 0.0);
        }
      } else {
#pragma omp simd
        for (int t = 0; t < ntv; ++t) {
          const double P = 1.0 + lam * cos_angle[t];
          const double y = P > 0.0 ? std::pow(P > 0.0 ? P : 1.0, zm1) : 0.0;
          pz1[t] = y;
          pz[t] = y * (P > 0.0 ? P : 0.0);
        }
      }
    }
    if constexpr (PASS == Pass::Values) {
      for (std::size_t s = 0; s < ns; ++s) {
        const int a = g.sv[s], u = g.su[s];
        const double *pz = &tw.pow_zeta[a * cap], *R = &tw.radial[u * cap];
        double sum = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int t = 0; t < ntv; ++t) sum += pz[t] * R[t];
        args.G[g.out[s]] += g.vnorm[a] * sum;
      }
      continue;
    }
    if constexpr (TANGENT) {
      // dG_s = 2^(1-zeta) sum_t (zeta lambda P^(zeta-1) dcos R_u + P^zeta dR_u)
      for (std::size_t s = 0; s < ns; ++s) {
        const int a = g.sv[s], u = g.su[s];
        const double zl = g.vzeta[a] * g.vlam[a];
        const double *pz = &tw.pow_zeta[a * cap], *pz1 = &tw.pow_zeta_m1[a * cap],
                     *R = &tw.radial[u * cap], *DR = &tw.d_radial[u * cap];
        double sum = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int t = 0; t < ntv; ++t) sum += zl * pz1[t] * d_cos[t] * R[t] + pz[t] * DR[t];
        args.G[g.out[s]] += g.vnorm[a] * sum;
      }
      continue;
    }
    // force pass, per vector: per triplet dE/dcos (qc) and dE/dR_u (W_u)
    for (int vec = 0; vec < nvec; ++vec) {
      const double *c = args.c + static_cast<std::size_t>(vec) * n_functions_;
      double *qc = tw.dE_dcos.data();
      for (int t = 0; t < ntv; ++t) qc[t] = 0.0;
      for (std::size_t u = 0; u < nu; ++u) {
        double *W = &tw.dE_dradial[u * cap];
        for (int t = 0; t < ntv; ++t) W[t] = 0.0;
      }
      for (std::size_t s = 0; s < ns; ++s) {
        const int a = g.sv[s], u = g.su[s];
        const double cs = c[g.out[s]] * g.vnorm[a];
        if (cs == 0.0) continue;
        const double czl = cs * g.vzeta[a] * g.vlam[a];
        const double *pz = &tw.pow_zeta[a * cap], *pz1 = &tw.pow_zeta_m1[a * cap],
                     *R = &tw.radial[u * cap];
        double *W = &tw.dE_dradial[u * cap];
#pragma omp simd
        for (int t = 0; t < ntv; ++t) {
          qc[t] += czl * pz1[t] * R[t];
          W[t] += cs * pz[t];
        }
      }
      double vjx = 0.0, vjy = 0.0, vjz = 0.0;
      double *kx = tw.grad_k_x.data(), *ky = tw.grad_k_y.data(), *kz = tw.grad_k_z.data();
#pragma omp simd reduction(+ : vjx, vjy, vjz)
      for (int t = 0; t < ntv; ++t) {
        double q1 = 0.0, q2 = 0.0, q3 = 0.0;
        for (std::size_t u = 0; u < nu; ++u) {
          const double W = tw.dE_dradial[u * cap + t];
          q1 += W * tw.d_radial_ij[u * cap + t];
          q2 += W * tw.d_radial_ik[u * cap + t];
          if (NARROW) q3 += W * tw.d_radial_jk[u * cap + t];
        }
        const int q = partner[t];
        const double r2i = inv_r[q];
        const double ca = qc[t] * inv_rr[t], cb = qc[t] * cos_angle[t];
        const double sa = (q1 - cb * r1i) * r1i, sb = (q2 - cb * r2i) * r2i;
        const double s3 = NARROW ? q3 / r_jk[t] : 0.0;
        const double bx = dx[q], by = dy[q], bz = dz[q];
        const double cx = NARROW ? jk_x[t] : 0.0, cy = NARROW ? jk_y[t] : 0.0,
                     cz = NARROW ? jk_z[t] : 0.0;
        vjx += ca * bx + sa * ax - s3 * cx;
        vjy += ca * by + sa * ay - s3 * cy;
        vjz += ca * bz + sa * az - s3 * cz;
        kx[t] = ca * ax + sb * bx + s3 * cx;
        ky[t] = ca * ay + sb * by + s3 * cy;
        kz[t] = ca * az + sb * bz + s3 * cz;
      }
      double *gx = grad_x + vec * cap, *gy = grad_y + vec * cap, *gz = grad_z + vec * cap;
      for (int t = 0; t < nt; ++t) {    // to the second neighbours (distinct within a j)
        const int q = partner[t];
        gx[q] += kx[t];
        gy[q] += ky[t];
        gz[q] += kz[t];
      }
      gx[p] += vjx;
      gy[p] += vjy;
      gz[p] += vjz;
    }
  }
  for (int vec = 0; vec < nvec; ++vec) {
    const double *gx = grad_x + vec * cap, *gy = grad_y + vec * cap, *gz = grad_z + vec * cap;
    double *out = args.v + vec * args.v_stride;
    for (int q = 0; q < nl; ++q) {
      const int k = w.source[q];
      out[3 * k] += gx[q];
      out[3 * k + 1] += gy[q];
      out[3 * k + 2] += gz[q];
    }
  }
}

template <DescriptorCalculator::Pass PASS>
void DescriptorCalculator::angular_direct(const AngularGroup &g, const PassArgs &a) const
{
  const bool narrow = (g.type == 3);
  switch (narrow ? g.fc.type() : 0) {
#define NNMD_CASE(CT)                         \
  case CT:                                    \
    if (narrow)                               \
      angular_direct_t<PASS, true, CT>(g, a); \
    else                                      \
      angular_direct_t<PASS, false, 0>(g, a); \
    break;
    NNMD_CASE(0)
    NNMD_CASE(1)
    NNMD_CASE(2)
    NNMD_CASE(3)
    NNMD_CASE(4)
    NNMD_CASE(5)
    NNMD_CASE(6)
    NNMD_CASE(7)
    NNMD_CASE(8)
#undef NNMD_CASE
  }
}

// ---------------------------------------------------------------------------------------
// type 9 in linear time from moment tensors (docs section 3, "Linear-scaling evaluation")
//
//   M_u,e[alpha] = sum_{j of element e} w_u(r_j) n_j^alpha,   w_u = exp(-eta (r - rs)^2) fc
//   T_u,m = sum_{|alpha| = m} m!/alpha! M_u,e1[alpha] M_u,e2[alpha]      (ordered pairs)
//   e1 = e2: pairs j < k are (T_u,m - sum_j w_j^2) / 2
//   G_s = 2^(1-zeta) sum_m C(zeta, m) lambda^m T_u,m
//
// Derivatives (docs section 6): with P_m(q) = sum_{|alpha| = m} m!/alpha! M_other[alpha]
// n_q^alpha (= sum_k w_k (n_q . n_k)^m) and Q_m(q) = dP_m/dn_q, the derivative of T_u,m
// by the displacement d_q of neighbour q (for e1 = e2 the factor 2 of d(M^2) cancels the
// 1/2 of the j < k sum) is
//   dT_u,m/dd_q = (dw_q P_m - m w_q P_m / r_q) n_q + (w_q / r_q) Q_m   [- w_q dw_q n_q]
// P and Q do not depend on c: contract_many computes them once per block of neighbours for
// all its vectors, which then only combine them with their adjoints g_u,m = dE/dT_u,m; jvp
// contracts them with the direction instead.

// Coefficients of the projections against the moments Mo of the other side:
// A = m!/alpha! Mo and, for Q_m,i = sum_beta (beta_i + 1) A[beta + e_i] n^beta, |beta| = m - 1,
// (beta_i + 1) A[beta + e_i]
void DescriptorCalculator::moment_coefficients(const AngularGroup &g, const double *Mo) const
{
  const MomentTable &t = table_;
  const int na = t.first[g.kmax + 1], nbeta = t.first[g.kmax];
  double *A = moment_work_.coefs.data(), *Ax = A + na, *Ay = Ax + nbeta, *Az = Ay + nbeta;
  for (int i = 0; i < na; ++i) A[i] = t.mult[i] * Mo[i];
  for (int i = 0; i < nbeta; ++i) {
    Ax[i] = t.upw[0][i] * A[t.up[0][i]];
    Ay[i] = t.upw[1][i] * A[t.up[1][i]];
    Az[i] = t.upw[2][i] * A[t.up[2][i]];
  }
}

// P_m(q) and Q_m(q) of the block of neighbours q0 <= q < q0 + MOMENT_BLOCK (register-blocked
// products of the monomials with the coefficients, one degree m at a time) into
// proj[m * MOMENT_BLOCK + l] and proj_d*[(m - 1) * MOMENT_BLOCK + l]; lanes past the
// group's neighbours hold values of stale monomials that the callers do not use
void DescriptorCalculator::moment_projections(const AngularGroup &g, int q0) const
{
  constexpr int BW = MOMENT_BLOCK;
  const MomentTable &t = table_;
  MomentWork &mw = moment_work_;
  const std::size_t cap = neighbor_work_.capacity;
  const int K = g.kmax, na = t.first[K + 1], nbeta = t.first[K];
  const double *A = mw.coefs.data(), *Ax = A + na, *Ay = Ax + nbeta, *Az = Ay + nbeta;
  const double *mono = mw.monomials.data() + q0;    // q0 + BW <= cap
  double *proj = mw.proj.data(), *qx = mw.proj_dx.data(), *qy = mw.proj_dy.data(),
         *qz = mw.proj_dz.data();
  for (int m = 0; m < K; ++m) {    // the degree-m monomials give P_m and Q_(m+1)
    double p[BW] = {}, gx[BW] = {}, gy[BW] = {}, gz[BW] = {};
    for (int i = t.first[m]; i < t.first[m + 1]; ++i) {
      const double *mi = mono + static_cast<std::size_t>(i) * cap;
      const double b = A[i], bx = Ax[i], by = Ay[i], bz = Az[i];
#pragma omp simd
      for (int l = 0; l < BW; ++l) {
        p[l] += b * mi[l];
        gx[l] += bx * mi[l];
        gy[l] += by * mi[l];
        gz[l] += bz * mi[l];
      }
    }
#pragma omp simd
    for (int l = 0; l < BW; ++l) {
      proj[m * BW + l] = p[l];
      qx[m * BW + l] = gx[l];
      qy[m * BW + l] = gy[l];
      qz[m * BW + l] = gz[l];
    }
  }
  // degree K: P_K only, two partial sums so that the additions pipeline
  double p[BW] = {}, p2[BW] = {};
  int i = t.first[K];
  for (; i + 1 < t.first[K + 1]; i += 2) {
    const double *mi = mono + static_cast<std::size_t>(i) * cap;
    const double b = A[i], b2 = A[i + 1];
#pragma omp simd
    for (int l = 0; l < BW; ++l) {
      p[l] += b * mi[l];
      p2[l] += b2 * mi[l + cap];
    }
  }
  if (i < t.first[K + 1]) {
    const double *mi = mono + static_cast<std::size_t>(i) * cap;
    const double b = A[i];
#pragma omp simd
    for (int l = 0; l < BW; ++l) p[l] += b * mi[l];
  }
#pragma omp simd
  for (int l = 0; l < BW; ++l) proj[K * BW + l] = p[l] + p2[l];
}

// unit vectors, monomials n_q^alpha, weights w_u(r_q), moments M_u,side and sum_q w_q^2 of
// a group (moments and sums from the cache when it holds them); all passes need them
void DescriptorCalculator::moment_tensors(const AngularGroup &g, double *cache_out,
                                          const double *cache_in) const
{
  const MomentTable &t = table_;
  const NeighborWork &wk = neighbor_work_;
  MomentWork &mw = moment_work_;
  const std::size_t nu = g.ueta.size(), cap = wk.capacity;
  const int na = t.first[g.kmax + 1];
  const bool same = (g.e1 == g.e2);
  const int sides = same ? 1 : 2;
  const int nq = wk.n_listed;
  for (auto *vec : {&mw.unit_x, &mw.unit_y, &mw.unit_z}) grow(*vec, cap);
  grow(mw.monomials, static_cast<std::size_t>(na) * cap);
  grow(mw.weights, nu * cap);
  grow(mw.moments, nu * 2 * na);
  grow(mw.weight_sq_sum, nu);
  // monomials n_q^alpha of every neighbour's unit vector, alpha-major
  double *mono = mw.monomials.data();
  double *nx = mw.unit_x.data(), *ny = mw.unit_y.data(), *nz = mw.unit_z.data();
  {
#pragma omp simd
    for (int q = 0; q < nq; ++q) {
      nx[q] = wk.dx[q] * wk.inv_r[q];
      ny[q] = wk.dy[q] * wk.inv_r[q];
      nz[q] = wk.dz[q] * wk.inv_r[q];
      mono[q] = 1.0;
    }
    const double *axis[3] = {nx, ny, nz};
    for (int i = 1; i < na; ++i) {
      const double *src = mono + static_cast<std::size_t>(t.pred[i]) * cap;
      const double *n = axis[t.pred_axis[i]];
      double *dst = mono + static_cast<std::size_t>(i) * cap;
#pragma omp simd
      for (int q = 0; q < nq; ++q) dst[q] = src[q] * n[q];
    }
  }
  // weights w_u(r_q) and moments M_u,side[alpha] = sum_q w_q n_q^alpha (or from the cache)
  double *mom = mw.moments.data(), *dsq = mw.weight_sq_sum.data();
  const double *cin = cache_in ? cache_in + g.cache_offset : nullptr;
  const bool cached = cin && cin[0] == 1.0;
  for (std::size_t u = 0; u < nu; ++u) {
    if (cached) {
      std::copy(cin + 1 + u * 2 * na, cin + 1 + (u + 1) * 2 * na, &mom[u * 2 * na]);
      dsq[u] = cin[1 + nu * 2 * na + u];
      continue;
    }
    double *wq = &mw.weights[u * cap];
    const double *gauss = &wk.gauss[u * cap];
    double d2 = 0.0;
#pragma omp simd reduction(+ : d2)
    for (int q = 0; q < nq; ++q) {
      wq[q] = gauss[q] * wk.fc[q];
      d2 += wq[q] * wq[q];
    }
    dsq[u] = d2;
    for (int side = 0; side < sides; ++side) {
      const int qb = side == 0 ? 0 : wk.n_first, qe = (side == 0 && !same) ? wk.n_first : nq;
      double *M = &mom[(u * 2 + side) * na];
      for (int i = 0; i < na; ++i) {
        const double *mi = mono + static_cast<std::size_t>(i) * cap;
        double sum = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int q = qb; q < qe; ++q) sum += wq[q] * mi[q];
        M[i] = sum;
      }
    }
  }
  if (cache_out) {
    double *co = cache_out + g.cache_offset;
    co[0] = 1.0;
    for (std::size_t u = 0; u < nu; ++u) {
      std::copy(&mom[u * 2 * na], &mom[(u + 1) * 2 * na], co + 1 + u * 2 * na);
      co[1 + nu * 2 * na + u] = dsq[u];
    }
  }
}

template <DescriptorCalculator::Pass PASS>
void DescriptorCalculator::angular_moments(const AngularGroup &g, const PassArgs &args,
                                           double *cache_out, const double *cache_in) const
{
  const MomentTable &t = table_;
  const NeighborWork &wk = neighbor_work_;
  MomentWork &mw = moment_work_;
  const std::size_t nu = g.ueta.size(), ns = g.out.size(), cap = wk.capacity;
  const int K = g.kmax;
  const std::size_t K1 = K + 1;
  const int na = t.first[K + 1];
  const int nbeta = t.first[K];
  const bool same = (g.e1 == g.e2);
  const int sides = same ? 1 : 2;
  const int nq = wk.n_listed;
  const int nvec = PASS == Pass::Contract ? args.n_vectors : 0;
  for (auto *vec : {&mw.tan_r, &mw.tan_m, &mw.tan_x, &mw.tan_y, &mw.tan_z}) grow(*vec, cap);
  grow(mw.pair_sums, nu * K1);
  moment_tensors(g, cache_out, cache_in);
  const double *mom = mw.moments.data(), *dsq = mw.weight_sq_sum.data();
  const double *nx = mw.unit_x.data(), *ny = mw.unit_y.data(), *nz = mw.unit_z.data();
  double *tsum = mw.pair_sums.data();
  if constexpr (PASS == Pass::Values) {
    // pair sums T_u,m
    for (std::size_t u = 0; u < nu; ++u) {
      const double *M1 = &mom[(u * 2) * na];
      const double *M2 = same ? M1 : &mom[(u * 2 + 1) * na];
      for (int m = 0; m <= K; ++m) {
        double sum = 0.0;
        for (int i = t.first[m]; i < t.first[m + 1]; ++i) sum += t.mult[i] * M1[i] * M2[i];
        tsum[u * K1 + m] = same ? 0.5 * (sum - dsq[u]) : sum;
      }
    }
    for (std::size_t s = 0; s < ns; ++s) {
      const int a = g.sv[s], u = g.su[s], z = g.vzi[a];
      const double lam = g.vlam[a];
      double sum = 0.0, lm = 1.0;
      for (int m = 0; m <= z; ++m, lm *= lam) sum += binom_[z][m] * lm * tsum[u * K1 + m];
      args.G[g.out[s]] += g.vnorm[a] * sum;
    }
    return;
  }
  grow(mw.coefs, static_cast<std::size_t>(na) + 3 * static_cast<std::size_t>(nbeta));
  grow(mw.proj, K1 * MOMENT_BLOCK);
  for (auto *vec : {&mw.proj_dx, &mw.proj_dy, &mw.proj_dz}) grow(*vec, K * MOMENT_BLOCK);
  // contract: adjoints g_u,m = sum_s c_s 2^(1-zeta) C(zeta, m) lambda^m of every vector
  grow(mw.adjoints, static_cast<std::size_t>(nvec) * nu * K1);
  double *gsum = mw.adjoints.data();
  std::fill(gsum, gsum + static_cast<std::size_t>(nvec) * nu * K1, 0.0);
  for (int vec = 0; vec < nvec; ++vec) {
    const double *c = args.c + static_cast<std::size_t>(vec) * n_functions_;
    double *gv = gsum + static_cast<std::size_t>(vec) * nu * K1;
    for (std::size_t s = 0; s < ns; ++s) {
      const int a = g.sv[s], u = g.su[s], z = g.vzi[a];
      const double lam = g.vlam[a], cs = c[g.out[s]] * g.vnorm[a];
      double lm = 1.0;
      for (int m = 0; m <= z; ++m, lm *= lam) gv[u * K1 + m] += cs * binom_[z][m] * lm;
    }
  }
  // jvp: dT_u,m along u, accumulated in tsum
  if (PASS == Pass::Tangent) std::fill(tsum, tsum + nu * K1, 0.0);
  constexpr int BW = MOMENT_BLOCK;
  double *vx = neighbor_work_.grad_x.data(), *vy = neighbor_work_.grad_y.data(),
         *vz = neighbor_work_.grad_z.data();
  for (int vec = 0; vec < nvec; ++vec)
    for (int q = 0; q < nq; ++q) vx[vec * cap + q] = vy[vec * cap + q] = vz[vec * cap + q] = 0.0;
  const double *proj = mw.proj.data(), *qx = mw.proj_dx.data(), *qy = mw.proj_dy.data(),
               *qz = mw.proj_dz.data();
  for (std::size_t u = 0; u < nu; ++u) {
    const double te = 2.0 * g.ueta[u];
    const double *gauss = &wk.gauss[u * cap], *shift = &wk.shift[u * cap];
    for (int side = 0; side < sides; ++side) {
      const int qb = side == 0 ? 0 : wk.n_first, qe = (side == 0 && !same) ? wk.n_first : nq;
      moment_coefficients(g, &mom[(u * 2 + (same ? 0 : 1 - side)) * na]);
      double *tr = mw.tan_r.data(), *tm = mw.tan_m.data(), *tx = mw.tan_x.data(),
             *ty = mw.tan_y.data(), *tz = mw.tan_z.data();
      double *dT = tsum + u * K1;
      if constexpr (PASS == Pass::Tangent) {
        // per neighbour: dT_m = sum_q (tr - m tm) P_m + (tx, ty, tz) . Q_m  (- sum_q w dw dr)
        const double *dr = wk.dir_r.data();
        double diag = 0.0;
#pragma omp simd reduction(+ : diag)
        for (int q = qb; q < qe; ++q) {
          const double e = gauss[q], f = wk.fc[q], rinv = wk.inv_r[q];
          const double w = e * f;
          const double dw = e * (wk.dfc[q] - te * shift[q] * f);
          tr[q] = dw * dr[q];
          tm[q] = w * rinv * dr[q];
          tx[q] = w * rinv * wk.dir_x[q];
          ty[q] = w * rinv * wk.dir_y[q];
          tz[q] = w * rinv * wk.dir_z[q];
          diag += w * tr[q];
        }
        if (same)
          for (int m = 0; m <= K; ++m) dT[m] -= diag;
      }
      for (int q0 = qb; q0 < qe; q0 += BW) {
        const int nw = std::min(BW, qe - q0);
        moment_projections(g, q0);
        if constexpr (PASS == Pass::Tangent) {
          double sum0 = 0.0;
          for (int l = 0; l < nw; ++l) sum0 += tr[q0 + l] * proj[l];
          dT[0] += sum0;
          for (int m = 1; m <= K; ++m) {
            const double fm = m;
            const double *pm = proj + m * BW, *dx = qx + (m - 1) * BW, *dy = qy + (m - 1) * BW,
                         *dz = qz + (m - 1) * BW;
            double sum = 0.0;
#pragma omp simd reduction(+ : sum)
            for (int l = 0; l < nw; ++l) {
              const int q = q0 + l;
              sum += (tr[q] - fm * tm[q]) * pm[l] + tx[q] * dx[l] + ty[q] * dy[l] + tz[q] * dz[l];
            }
            dT[m] += sum;
          }
          continue;
        }
        // contract, per vector: S0 = sum_m g_m P_m, S1 = sum_m m g_m P_m, S2 = sum_m g_m Q_m,
        //   dE/dd_q = (dw S0 - w S1 / r) n + (w / r) S2   (- g_diag w dw n for e1 = e2)
        double w[BW], dw[BW], wr[BW];    // whole blocks: q0 + BW <= cap
#pragma omp simd
        for (int l = 0; l < BW; ++l) {
          const int q = q0 + l;
          const double e = gauss[q], f = wk.fc[q];
          w[l] = e * f;
          dw[l] = e * (wk.dfc[q] - te * shift[q] * f);
          wr[l] = w[l] * wk.inv_r[q];
        }
        for (int vec = 0; vec < nvec; ++vec) {
          const double *gv = gsum + (vec * nu + u) * K1;
          double a0[BW] = {}, a1[BW] = {}, ax[BW] = {}, ay[BW] = {}, az[BW] = {};
          double gdiag = gv[0];
#pragma omp simd
          for (int l = 0; l < BW; ++l) a0[l] = gv[0] * proj[l];
          for (int m = 1; m <= K; ++m) {
            const double b = gv[m], b1 = m * gv[m];
            gdiag += b;
            const double *pm = proj + m * BW, *dx = qx + (m - 1) * BW, *dy = qy + (m - 1) * BW,
                         *dz = qz + (m - 1) * BW;
#pragma omp simd
            for (int l = 0; l < BW; ++l) {
              a0[l] += b * pm[l];
              a1[l] += b1 * pm[l];
              ax[l] += b * dx[l];
              ay[l] += b * dy[l];
              az[l] += b * dz[l];
            }
          }
          double fx[BW], fy[BW], fz[BW];
#pragma omp simd
          for (int l = 0; l < BW; ++l) {
            const int q = q0 + l;
            double radial = dw[l] * a0[l] - wr[l] * a1[l];
            if (same) radial -= gdiag * w[l] * dw[l];    // d/dd of -(1/2) g sum_q w_q^2
            fx[l] = radial * nx[q] + wr[l] * ax[l];
            fy[l] = radial * ny[q] + wr[l] * ay[l];
            fz[l] = radial * nz[q] + wr[l] * az[l];
          }
          double *gx = vx + vec * cap + q0, *gy = vy + vec * cap + q0, *gz = vz + vec * cap + q0;
          for (int l = 0; l < nw; ++l) {
            gx[l] += fx[l];
            gy[l] += fy[l];
            gz[l] += fz[l];
          }
        }
      }
    }
  }
  if constexpr (PASS == Pass::Tangent) {
    for (std::size_t s = 0; s < ns; ++s) {
      const int a = g.sv[s], u = g.su[s], z = g.vzi[a];
      const double lam = g.vlam[a];
      double sum = 0.0, lm = 1.0;
      for (int m = 0; m <= z; ++m, lm *= lam) sum += binom_[z][m] * lm * tsum[u * K1 + m];
      args.G[g.out[s]] += g.vnorm[a] * sum;
    }
    return;
  }
  for (int vec = 0; vec < nvec; ++vec) {
    double *out = args.v + vec * args.v_stride;
    for (int q = 0; q < nq; ++q) {
      const int k = wk.source[q];
      out[3 * k] += vx[vec * cap + q];
      out[3 * k + 1] += vy[vec * cap + q];
      out[3 * k + 2] += vz[vec * cap + q];
    }
  }
}

// ---------------------------------------------------------------------------------------
// public entry points

template <DescriptorCalculator::Pass PASS>
void DescriptorCalculator::evaluate(const Neighbors &nb, const PassArgs &a, double *cache_out,
                                    const double *cache_in) const
{
  for (const RadialGroup &g : radial_) radial<PASS>(g, nb, a);
  for (const AngularGroup &g : angular_) {
    if (cache_out && g.kmax > 0) cache_out[g.cache_offset] = 0.0;
    collect(nb, g.e1, g.e2, g.fc, g.ueta, g.urs);
    if (neighbor_work_.n_listed < 2) continue;
    if (PASS == Pass::Tangent) collect_direction(a.u);
    if (use_moments(g))
      angular_moments<PASS>(g, a, cache_out, cache_in);
    else
      angular_direct<PASS>(g, a);
  }
}

void DescriptorCalculator::compute(const Neighbors &nb, double *G, double *cache) const
{
  std::fill(G, G + n_functions_, 0.0);
  PassArgs a;
  a.G = G;
  evaluate<Pass::Values>(nb, a, cache, nullptr);
}

void DescriptorCalculator::contract(const Neighbors &nb, const double *c, double *v,
                                    const double *cache) const
{
  contract_many(nb, 1, c, v, cache);
}

void DescriptorCalculator::contract_many(const Neighbors &nb, int n_vectors, const double *c,
                                         double *v, const double *cache) const
{
  if (n_vectors <= 0) return;
  const std::size_t stride = 3 * nb.size();
  std::fill(v, v + n_vectors * stride, 0.0);
  neighbor_work_.reserve_vectors(n_vectors);
  PassArgs a;
  a.c = c;
  a.v = v;
  a.n_vectors = n_vectors;
  a.v_stride = stride;
  evaluate<Pass::Contract>(nb, a, nullptr, cache);
}

void DescriptorCalculator::jvp(const Neighbors &nb, const double *u, double *dG,
                               const double *cache) const
{
  std::fill(dG, dG + n_functions_, 0.0);
  PassArgs a;
  a.G = dG;
  a.u = u;
  evaluate<Pass::Tangent>(nb, a, nullptr, cache);
}

void DescriptorCalculator::jacobian(const Neighbors &nb, double *G, double *dG) const
{
  // one contraction per function with a unit vector c = e_s
  const std::size_t n = nb.size();
  compute(nb, G);
  std::vector<double> c(n_functions_, 0.0);
  for (int s = 0; s < n_functions_; ++s) {
    c[s] = 1.0;
    contract(nb, c.data(), dG + static_cast<std::size_t>(s) * n * 3);
    c[s] = 0.0;
  }
}

}    // namespace nnmd
