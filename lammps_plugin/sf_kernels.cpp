/* nnmd-lammps: symmetry-function kernels (see sf_kernels.h, docs/symmetry_functions.md). */

#include "sf_kernels.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace nnmd {

namespace {
constexpr double PI = 3.14159265358979323846;

// x^n for integer n >= 0 by binary exponentiation
inline double pow_int(double x, int n)
{
  double result = 1.0;
  while (n > 0) {
    if (n & 1) result *= x;
    x *= x;
    n >>= 1;
  }
  return result;
}

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

std::string validate(const SymFuncParams &p, int n_elements)
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

Cutoff::Cutoff(int type, double rc, double alpha) : type_(type), rc_(rc), alpha_(alpha)
{
  rci_ = alpha * rc;
  iw_ = 1.0 / (rc - rci_);
  if (type == 3) pre_ = std::pow(1.0 / std::tanh(1.0), 3);    // fc(0) = 1
}

void Cutoff::eval(double r, double &f, double &df) const
{
  if (r >= rc_) {
    f = df = 0.0;
    return;
  }
  if (type_ == 0) {
    f = 1.0;
    df = 0.0;
    return;
  }
  if (type_ == 2 || type_ == 3) {
    const double t = std::tanh(1.0 - r / rc_);
    const double t2 = t * t;
    f = pre_ * t * t2;
    df = pre_ * 3.0 * t2 * (t2 - 1.0) / rc_;
    return;
  }
  if (r < rci_) {
    f = 1.0;
    df = 0.0;
    return;
  }
  const double x = (r - rci_) * iw_;
  double dfx = 0.0;
  switch (type_) {
    case 1: {
      f = 0.5 * (std::cos(PI * x) + 1.0);
      dfx = -0.5 * PI * std::sin(PI * x);
      break;
    }
    case 4: {
      const double den = 1.0 - x * x;
      f = std::exp(1.0 - 1.0 / den);
      dfx = -2.0 * x / (den * den) * f;
      break;
    }
    case 5: {
      f = (2.0 * x - 3.0) * x * x + 1.0;
      dfx = 6.0 * x * (x - 1.0);
      break;
    }
    case 6: {
      f = ((15.0 - 6.0 * x) * x - 10.0) * x * x * x + 1.0;
      const double u = x * (x - 1.0);
      dfx = -30.0 * u * u;
      break;
    }
    case 7: {
      const double x2 = x * x;
      f = (x * (x * (20.0 * x - 70.0) + 84.0) - 35.0) * x2 * x2 + 1.0;
      const double u = x * (x - 1.0);
      dfx = 140.0 * u * u * u;
      break;
    }
    case 8: {
      const double x2 = x * x;
      f = (x * (x * ((315.0 - 70.0 * x) * x - 540.0) + 420.0) - 126.0) * x2 * x2 * x + 1.0;
      const double u = x * (x - 1.0);
      const double u2 = u * u;
      dfx = -630.0 * u2 * u2;
      break;
    }
    default:
      f = 0.0;
  }
  df = dfx * iw_;
}

// ---------------------------------------------------------------------------------------
// construction

Descriptor::Descriptor(const std::vector<SymFuncParams> &functions, int n_elements) :
    n_functions_(static_cast<int>(functions.size())), n_elements_(n_elements)
{
  int kmax_all = 0;
  for (int s = 0; s < n_functions_; ++s) {
    const SymFuncParams &p = functions[s];
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
      g.vzi.push_back((zr == p.zeta && zr <= 64.0) ? static_cast<int>(zr) : 0);
    }
    g.su.push_back(u);
    g.sv.push_back(v);
    g.out.push_back(s);
  }
  for (AngularGroup &g : angular_) {
    g.kmax = 0;
    if (g.type != 9) continue;
    int k = 0;
    bool ok = true;
    for (std::size_t v = 0; v < g.vzi.size(); ++v) {
      ok = ok && g.vzi[v] > 0 && g.vzi[v] <= 24;
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
        double mult = std::tgamma(m + 1.0) / (std::tgamma(x + 1.0) * std::tgamma(y + 1.0) *
                                              std::tgamma(z + 1.0));
        t.mult.push_back(std::round(mult));
      }
  }
  t.first[kmax_all + 1] = static_cast<int>(t.degree.size());
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

template <bool DERIV>
void Descriptor::radial(const RadialGroup &g, const Neighbors &nb, double *G, const double *c,
                        double *v) const
{
  const std::size_t n = nb.size();
  const double rc = g.fc.rc();
  const std::size_t ns = g.out.size();
  for (std::size_t k = 0; k < n; ++k) {
    const double r = nb.r[k];
    if (nb.elem[k] != g.e1 || r >= rc) continue;
    double f, df;
    g.fc.eval(r, f, df);
    double coef = 0.0;
    for (std::size_t s = 0; s < ns; ++s) {
      const double x = r - g.rs[s];
      const double e = std::exp(-g.eta[s] * x * x);
      if (DERIV)
        coef += c[g.out[s]] * (df - 2.0 * g.eta[s] * x * f) * e;
      else
        G[g.out[s]] += e * f;
    }
    if (DERIV) {
      coef /= r;
      v[3 * k] += coef * nb.x[k];
      v[3 * k + 1] += coef * nb.y[k];
      v[3 * k + 2] += coef * nb.z[k];
    }
  }
}

// ---------------------------------------------------------------------------------------
// angular functions: neighbours of a group, their cutoff values and Gaussians

void Descriptor::gather(const AngularGroup &g, const Neighbors &nb) const
{
  const std::size_t n = nb.size();
  const std::size_t nu = g.ueta.size();
  const double rc = g.fc.rc();
  grow(fc_, n);
  grow(dfc_, n);
  grow(eu_, n * nu);
  grow(xu_, n * nu);
  list1_.clear();
  list2_.clear();
  for (std::size_t k = 0; k < n; ++k) {
    const double r = nb.r[k];
    if (r >= rc) continue;
    const int e = nb.elem[k];
    if (e == g.e1)
      list1_.push_back(static_cast<int>(k));
    else if (e == g.e2)
      list2_.push_back(static_cast<int>(k));
    else
      continue;
    g.fc.eval(r, fc_[k], dfc_[k]);
    for (std::size_t u = 0; u < nu; ++u) {
      const double x = r - g.urs[u];
      xu_[k * nu + u] = x;
      eu_[k * nu + u] = std::exp(-g.ueta[u] * x * x);
    }
  }
}

bool Descriptor::use_moments(const AngularGroup &g) const
{
  if (g.kmax <= 0 || method_ == Method::Direct) return false;
  if (method_ == Method::Moments) return true;
  // cost model (calibrated with benchmarks/kernel_timing): direct ~ triplets x
  // (geometry + work per function); moments ~ neighbours x multi-indices x (1 + 2 nu)
  const double n1 = static_cast<double>(list1_.size()), n2 = static_cast<double>(list2_.size());
  const double triplets = (g.e1 == g.e2) ? 0.5 * n1 * (n1 - 1.0) : n1 * n2;
  const double direct = triplets * (12.0 + 1.5 * g.out.size() + 3.0 * g.ueta.size());
  const double nalpha = table_.first[g.kmax + 1];
  const double moments = (n1 + n2) * nalpha * (1.0 + 2.0 * g.ueta.size());
  return moments < direct;
}

// ---------------------------------------------------------------------------------------
// angular functions: triplet sums (docs section 3)

template <bool DERIV>
void Descriptor::angular_direct(const AngularGroup &g, const Neighbors &nb, double *G,
                                const double *c, double *v) const
{
  const std::size_t nu = g.ueta.size(), nv = g.vlam.size(), ns = g.out.size();
  const double rc = g.fc.rc();
  const bool narrow = (g.type == 3);
  grow(pz_, nv);
  grow(pz1_, nv);
  grow(R_, nu);
  grow(D1_, nu);
  grow(D2_, nu);
  grow(D3_, nu);
  grow(W_, nu);

  auto triplet = [&](int j, int k) {
    const double ax = nb.x[j], ay = nb.y[j], az = nb.z[j], r1 = nb.r[j];
    const double bx = nb.x[k], by = nb.y[k], bz = nb.z[k], r2 = nb.r[k];
    const double cx = bx - ax, cy = by - ay, cz = bz - az;
    double r3 = 1.0, f3 = 1.0, df3 = 0.0;
    if (narrow) {
      const double r3sq = cx * cx + cy * cy + cz * cz;
      if (r3sq >= rc * rc) return;
      r3 = std::sqrt(r3sq);
      g.fc.eval(r3, f3, df3);
    }
    const double f1 = fc_[j], f2 = fc_[k];
    const double F = f1 * f2 * f3;
    const double inv12 = 1.0 / (r1 * r2);
    const double cos = (ax * bx + ay * by + az * bz) * inv12;
    const double pp = 1.0 + cos, pm = 1.0 - cos;
    for (std::size_t w = 0; w < nv; ++w) {
      const double P = g.vlam[w] > 0.0 ? pp : pm;
      if (P <= 0.0) {
        pz_[w] = pz1_[w] = 0.0;
        continue;
      }
      const int zi = g.vzi[w];
      pz1_[w] = zi > 0 ? pow_int(P, zi - 1) : std::pow(P, g.vzeta[w] - 1.0);
      pz_[w] = pz1_[w] * P;
    }
    const double *ej = &eu_[j * nu], *ek = &eu_[k * nu];
    double dF1 = 0.0, dF2 = 0.0, dF3 = 0.0;
    if (DERIV) {
      dF1 = dfc_[j] * f2 * f3;
      dF2 = f1 * dfc_[k] * f3;
      dF3 = f1 * f2 * df3;
    }
    for (std::size_t u = 0; u < nu; ++u) {
      double E = ej[u] * ek[u];
      double x3 = 0.0;
      if (narrow) {
        x3 = r3 - g.urs[u];
        E *= std::exp(-g.ueta[u] * x3 * x3);
      }
      R_[u] = E * F;
      if (DERIV) {
        const double te = 2.0 * g.ueta[u];
        D1_[u] = E * (dF1 - te * xu_[j * nu + u] * F);
        D2_[u] = E * (dF2 - te * xu_[k * nu + u] * F);
        D3_[u] = narrow ? E * (dF3 - te * x3 * F) : 0.0;
        W_[u] = 0.0;
      }
    }
    if (!DERIV) {
      for (std::size_t s = 0; s < ns; ++s) {
        const int w = g.sv[s];
        G[g.out[s]] += g.vnorm[w] * pz_[w] * R_[g.su[s]];
      }
      return;
    }
    double qc = 0.0;
    for (std::size_t s = 0; s < ns; ++s) {
      const int w = g.sv[s], u = g.su[s];
      const double cs = c[g.out[s]] * g.vnorm[w];
      qc += cs * g.vzeta[w] * g.vlam[w] * pz1_[w] * R_[u];
      W_[u] += cs * pz_[w];
    }
    double q1 = 0.0, q2 = 0.0, q3 = 0.0;
    for (std::size_t u = 0; u < nu; ++u) {
      q1 += W_[u] * D1_[u];
      q2 += W_[u] * D2_[u];
      q3 += W_[u] * D3_[u];
    }
    // dT/da = qc dcos/da + q1 a/r1 - q3 c/r3;  dT/db = qc dcos/db + q2 b/r2 + q3 c/r3
    const double ca = qc * inv12, cb = qc * cos;
    const double sa = q1 / r1 - cb / (r1 * r1), sb = q2 / r2 - cb / (r2 * r2);
    const double s3 = narrow ? q3 / r3 : 0.0;
    v[3 * j] += ca * bx + sa * ax - s3 * cx;
    v[3 * j + 1] += ca * by + sa * ay - s3 * cy;
    v[3 * j + 2] += ca * bz + sa * az - s3 * cz;
    v[3 * k] += ca * ax + sb * bx + s3 * cx;
    v[3 * k + 1] += ca * ay + sb * by + s3 * cy;
    v[3 * k + 2] += ca * az + sb * bz + s3 * cz;
  };

  if (g.e1 == g.e2) {
    const std::size_t m = list1_.size();
    for (std::size_t p = 0; p + 1 < m; ++p)
      for (std::size_t q = p + 1; q < m; ++q) triplet(list1_[p], list1_[q]);
  } else {
    for (int j : list1_)
      for (int k : list2_) triplet(j, k);
  }
}

// ---------------------------------------------------------------------------------------
// type 9 in linear time from moment tensors (docs section 3, "Linear-scaling evaluation")
//
//   M_u,e[alpha] = sum_{j of element e} w_u(r_j) n_j^alpha,   w_u = exp(-eta (r - rs)^2) fc
//   T_u,m = sum_{|alpha| = m} m!/alpha! M_u,e1[alpha] M_u,e2[alpha]      (ordered pairs)
//   e1 = e2: pairs j < k are (T_u,m - sum_j w_j^2) / 2
//   G_s = 2^(1-zeta) sum_m C(zeta, m) lambda^m T_u,m

template <bool DERIV>
void Descriptor::angular_moments(const AngularGroup &g, const Neighbors &nb, double *G,
                                 const double *c, double *v) const
{
  const MomentTable &t = table_;
  const std::size_t nu = g.ueta.size(), ns = g.out.size();
  const int K = g.kmax;
  const int na = t.first[K + 1];
  const bool same = (g.e1 == g.e2);
  const int sides = same ? 1 : 2;
  grow(mono_, na);
  grow(mom_, nu * 2 * na);
  grow(tsum_, nu * (K + 1));
  grow(dsq_, nu);
  std::fill(mom_.begin(), mom_.begin() + nu * 2 * na, 0.0);
  std::fill(dsq_.begin(), dsq_.begin() + nu, 0.0);

  auto monomials = [&](int k) {
    const double rinv = 1.0 / nb.r[k];
    const double n[3] = {nb.x[k] * rinv, nb.y[k] * rinv, nb.z[k] * rinv};
    mono_[0] = 1.0;
    for (int i = 1; i < na; ++i) mono_[i] = mono_[t.pred[i]] * n[t.pred_axis[i]];
  };
  // moments
  for (int side = 0; side < sides; ++side) {
    const std::vector<int> &list = side == 0 ? list1_ : list2_;
    for (int k : list) {
      monomials(k);
      for (std::size_t u = 0; u < nu; ++u) {
        const double w = eu_[k * nu + u] * fc_[k];
        double *M = &mom_[(u * 2 + side) * na];
        const double *mono = mono_.data();
#pragma omp simd
        for (int i = 0; i < na; ++i) M[i] += w * mono[i];
        if (same) dsq_[u] += w * w;
      }
    }
  }
  // pair sums T_u,m
  for (std::size_t u = 0; u < nu; ++u) {
    const double *M1 = &mom_[(u * 2) * na];
    const double *M2 = same ? M1 : &mom_[(u * 2 + 1) * na];
    for (int m = 0; m <= K; ++m) {
      double s = 0.0;
      for (int i = t.first[m]; i < t.first[m + 1]; ++i) s += t.mult[i] * M1[i] * M2[i];
      tsum_[u * (K + 1) + m] = same ? 0.5 * (s - dsq_[u]) : s;
    }
  }
  if (!DERIV) {
    for (std::size_t s = 0; s < ns; ++s) {
      const int w = g.sv[s], u = g.su[s], z = g.vzi[w];
      const double lam = g.vlam[w];
      double sum = 0.0, lm = 1.0;
      for (int m = 0; m <= z; ++m, lm *= lam) sum += binom_[z][m] * lm * tsum_[u * (K + 1) + m];
      G[g.out[s]] += g.vnorm[w] * sum;
    }
    return;
  }
  // adjoints: g_u,m = sum_s c_s 2^(1-zeta) C(zeta, m) lambda^m
  grow(gsum_, nu * (K + 1));
  std::fill(gsum_.begin(), gsum_.begin() + nu * (K + 1), 0.0);
  for (std::size_t s = 0; s < ns; ++s) {
    const int w = g.sv[s], u = g.su[s], z = g.vzi[w];
    const double lam = g.vlam[w], cs = c[g.out[s]] * g.vnorm[w];
    double lm = 1.0;
    for (int m = 0; m <= z; ++m, lm *= lam) gsum_[u * (K + 1) + m] += cs * binom_[z][m] * lm;
  }
  // B_u,side[alpha] = dE/dM_u,side[alpha] = g_u,|alpha| mult[alpha] M_u,other[alpha]
  // (for e1 = e2 the factor 2 of d(M^2) cancels the 1/2 of the j < k sum), stored with
  // B1[alpha] = |alpha| B[alpha] and Bi[beta] = (beta_i + 1) B[beta + e_i] (|beta| < K),
  // so that each neighbour needs five dot products with its monomials:
  //   d(w n^alpha)/dd = dw n^alpha n + (w/r) (sum_i alpha_i n^(alpha - e_i) e_i - |alpha| n^alpha n)
  const int nbeta = t.first[K];
  const std::size_t stride = 2 * static_cast<std::size_t>(na) + 3 * nbeta;
  grow(adj_, nu * 2 * stride);
  for (std::size_t u = 0; u < nu; ++u)
    for (int side = 0; side < sides; ++side) {
      const double *Mo = &mom_[(u * 2 + (same ? 0 : 1 - side)) * na];
      double *B = &adj_[(u * 2 + side) * stride];
      double *B1 = B + na;
      for (int m = 0; m <= K; ++m) {
        const double gm = gsum_[u * (K + 1) + m];
        for (int i = t.first[m]; i < t.first[m + 1]; ++i) {
          B[i] = gm * t.mult[i] * Mo[i];
          B1[i] = m * B[i];
        }
      }
      for (int c = 0; c < 3; ++c) {
        double *Bc = B + 2 * na + c * nbeta;
        const int *up = t.up[c].data();
        const double *w = t.upw[c].data();
        for (int i = 0; i < nbeta; ++i) Bc[i] = w[i] * B[up[i]];
      }
    }
  // per neighbour: v_k = sum_u sum_alpha B[alpha] d(w n^alpha)/dd  (+ diagonal term)
  for (int side = 0; side < sides; ++side) {
    const std::vector<int> &list = side == 0 ? list1_ : list2_;
    for (int k : list) {
      monomials(k);
      const double r = nb.r[k], rinv = 1.0 / r;
      const double n[3] = {nb.x[k] * rinv, nb.y[k] * rinv, nb.z[k] * rinv};
      const double *mono = mono_.data();
      double vx = 0.0, vy = 0.0, vz = 0.0;
      for (std::size_t u = 0; u < nu; ++u) {
        const double *B = &adj_[(u * 2 + side) * stride];
        const double *B1 = B + na, *Bx = B + 2 * na, *By = Bx + nbeta, *Bz = By + nbeta;
        double s0 = 0.0, s1 = 0.0, s2x = 0.0, s2y = 0.0, s2z = 0.0;
#pragma omp simd reduction(+ : s0, s1, s2x, s2y, s2z)
        for (int i = 0; i < nbeta; ++i) {
          const double mi = mono[i];
          s0 += B[i] * mi;
          s1 += B1[i] * mi;
          s2x += Bx[i] * mi;
          s2y += By[i] * mi;
          s2z += Bz[i] * mi;
        }
#pragma omp simd reduction(+ : s0, s1)
        for (int i = nbeta; i < na; ++i) {
          s0 += B[i] * mono[i];
          s1 += B1[i] * mono[i];
        }
        const double e = eu_[k * nu + u];
        const double w = e * fc_[k];
        const double dw = e * (dfc_[k] - 2.0 * g.ueta[u] * xu_[k * nu + u] * fc_[k]);
        double radial = dw * s0 - w * rinv * s1;
        if (same) {
          double gdiag = 0.0;
          for (int m = 0; m <= K; ++m) gdiag += gsum_[u * (K + 1) + m];
          radial -= gdiag * w * dw;    // d/dd of -(1/2) g sum_j w_j^2
        }
        const double tang = w * rinv;
        vx += radial * n[0] + tang * s2x;
        vy += radial * n[1] + tang * s2y;
        vz += radial * n[2] + tang * s2z;
      }
      v[3 * k] += vx;
      v[3 * k + 1] += vy;
      v[3 * k + 2] += vz;
    }
  }
}

// ---------------------------------------------------------------------------------------
// public entry points

void Descriptor::compute(const Neighbors &nb, double *G) const
{
  std::fill(G, G + n_functions_, 0.0);
  for (const RadialGroup &g : radial_) radial<false>(g, nb, G, nullptr, nullptr);
  for (const AngularGroup &g : angular_) {
    gather(g, nb);
    if (use_moments(g))
      angular_moments<false>(g, nb, G, nullptr, nullptr);
    else
      angular_direct<false>(g, nb, G, nullptr, nullptr);
  }
}

void Descriptor::contract(const Neighbors &nb, const double *c, double *v) const
{
  std::fill(v, v + 3 * nb.size(), 0.0);
  for (const RadialGroup &g : radial_) radial<true>(g, nb, nullptr, c, v);
  for (const AngularGroup &g : angular_) {
    gather(g, nb);
    if (use_moments(g))
      angular_moments<true>(g, nb, nullptr, c, v);
    else
      angular_direct<true>(g, nb, nullptr, c, v);
  }
}

void Descriptor::jacobian(const Neighbors &nb, double *G, double *dG) const
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
