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

Cutoff::Cutoff(int type, double rc, double alpha) : type_(type), rc_(rc), alpha_(alpha)
{
  rci_ = alpha * rc;
  iw_ = 1.0 / (rc - rci_);
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
    // coth(1)^3 normalises type 3 to fc(0) = 1
    static const double tanh_pre = std::pow(1.0 / std::tanh(1.0), 3);
    const double pre = (type_ == 2) ? 1.0 : tanh_pre;
    const double t = std::tanh(1.0 - r / rc_);
    const double t2 = t * t;
    f = pre * t * t2;
    df = pre * 3.0 * t2 * (t2 - 1.0) / rc_;
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

Descriptor::Descriptor(const std::vector<SymFuncParams> &functions, int n_elements) :
    n_functions_(static_cast<int>(functions.size())), n_elements_(n_elements)
{
  std::size_t widest = 1;
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
      widest = std::max(widest, it->out.size());
    } else {
      const int a = std::min(p.e1, p.e2), b = std::max(p.e1, p.e2);
      auto it = std::find_if(angular_.begin(), angular_.end(), [&](const AngularGroup &g) {
        return g.type == p.type && g.e1 == a && g.e2 == b && g.fc.same(fc);
      });
      if (it == angular_.end()) {
        angular_.push_back(AngularGroup{p.type, a, b, fc, {}, {}, {}, {}, {}, {}, {}});
        it = angular_.end() - 1;
      }
      it->eta.push_back(p.eta);
      it->rs.push_back(p.rs);
      it->lambda.push_back(p.lambda);
      it->zeta.push_back(p.zeta);
      it->pnorm.push_back(std::pow(2.0, 1.0 - p.zeta));
      const double zr = std::round(p.zeta);
      it->zeta_int.push_back((zr == p.zeta && zr < 1000.0) ? static_cast<int>(zr) : 0);
      it->out.push_back(s);
      widest = std::max(widest, it->out.size());
    }
  }
  t_.resize(widest);
  da_.resize(4 * widest);
  db_.resize(widest);
  g_.resize(widest);
}

template <class Sink>
void Descriptor::radial_group(const RadialGroup &g, const Neighbors &nb, Sink &&sink) const
{
  const std::size_t n = nb.size();
  const double rc = g.fc.rc();
  const std::size_t ns = g.out.size();
  for (std::size_t k = 0; k < n; ++k) {
    const double r = nb.r[k];
    if (nb.elem[k] != g.e1 || r >= rc) continue;
    double f, df;
    g.fc.eval(r, f, df);
    const double rinv = 1.0 / r;
    for (std::size_t s = 0; s < ns; ++s) {
      const double x = r - g.rs[s];
      const double e = std::exp(-g.eta[s] * x * x);
      t_[s] = e * f;
      da_[s] = (df - 2.0 * g.eta[s] * x * f) * e * rinv;    // coefficient of d_k
    }
    sink(k, t_.data(), da_.data());
  }
}

template <class Sink>
void Descriptor::angular_group(const AngularGroup &g, const Neighbors &nb, Sink &&sink) const
{
  const std::size_t n = nb.size();
  const double rc = g.fc.rc();
  const bool narrow = (g.type == 3);
  const std::size_t ns = g.out.size();
  if (fc_.size() < n) {
    fc_.resize(n);
    dfc_.resize(n);
  }
  list1_.clear();
  list2_.clear();
  for (std::size_t k = 0; k < n; ++k) {
    if (nb.r[k] >= rc) continue;
    const int e = nb.elem[k];
    if (e == g.e1)
      list1_.push_back(static_cast<int>(k));
    else if (e == g.e2)
      list2_.push_back(static_cast<int>(k));
    else
      continue;
    g.fc.eval(nb.r[k], fc_[k], dfc_[k]);
  }
  double *Aa = da_.data();
  double *Ab = da_.data() + ns;
  double *B = da_.data() + 2 * ns;
  double *Gm = da_.data() + 3 * ns;

  auto triplet = [&](int j, int k) {
    const double ax = nb.x[j], ay = nb.y[j], az = nb.z[j], r1 = nb.r[j];
    const double bx = nb.x[k], by = nb.y[k], bz = nb.z[k], r2 = nb.r[k];
    const double cx = bx - ax, cy = by - ay, cz = bz - az;
    double r3 = 0.0, f3 = 1.0, df3 = 0.0;
    if (narrow) {
      r3 = std::sqrt(cx * cx + cy * cy + cz * cz);
      if (r3 >= rc) return;
      g.fc.eval(r3, f3, df3);
    }
    const double f1 = fc_[j], f2 = fc_[k], df1 = dfc_[j], df2 = dfc_[k];
    const double F = f1 * f2 * f3;
    const double dF1 = df1 * f2 * f3, dF2 = f1 * df2 * f3, dF3 = f1 * f2 * df3;
    const double inv12 = 1.0 / (r1 * r2);
    const double cos = (ax * bx + ay * by + az * bz) * inv12;
    for (std::size_t s = 0; s < ns; ++s) {
      const double P = 1.0 + g.lambda[s] * cos;
      if (P <= 0.0) {
        t_[s] = Aa[s] = Ab[s] = B[s] = Gm[s] = 0.0;
        continue;
      }
      const double rs = g.rs[s], eta = g.eta[s];
      const double x1 = r1 - rs, x2 = r2 - rs;
      double expo = x1 * x1 + x2 * x2;
      const double x3 = r3 - rs;
      if (narrow) expo += x3 * x3;
      const double E = std::exp(-eta * expo);
      const int zi = g.zeta_int[s];
      const double Pz1 = zi > 0 ? pow_int(P, zi - 1) : std::pow(P, g.zeta[s] - 1.0);
      const double K = g.pnorm[s] * Pz1 * E;
      t_[s] = K * P * F;
      const double zlF = g.zeta[s] * g.lambda[s] * F;
      Aa[s] = K * (-zlF * cos / (r1 * r1) + P * (dF1 - 2.0 * eta * x1 * F) / r1);
      Ab[s] = K * (-zlF * cos / (r2 * r2) + P * (dF2 - 2.0 * eta * x2 * F) / r2);
      B[s] = K * zlF * inv12;
      Gm[s] = narrow ? -K * P * (dF3 - 2.0 * eta * x3 * F) / r3 : 0.0;
    }
    sink(j, k, ax, ay, az, bx, by, bz, cx, cy, cz, t_.data(), Aa, Ab, B, Gm);
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

void Descriptor::compute(const Neighbors &nb, double *G) const
{
  std::fill(G, G + n_functions_, 0.0);
  for (const RadialGroup &g : radial_) {
    radial_group(g, nb, [&](std::size_t, const double *t, const double *) {
      for (std::size_t s = 0; s < g.out.size(); ++s) G[g.out[s]] += t[s];
    });
  }
  for (const AngularGroup &g : angular_) {
    angular_group(g, nb,
                  [&](int, int, double, double, double, double, double, double, double, double,
                      double, const double *t, const double *, const double *, const double *,
                      const double *) {
                    for (std::size_t s = 0; s < g.out.size(); ++s) G[g.out[s]] += t[s];
                  });
  }
}

void Descriptor::contract(const Neighbors &nb, const double *c, double *v) const
{
  const std::size_t n = nb.size();
  std::fill(v, v + 3 * n, 0.0);
  for (const RadialGroup &g : radial_) {
    radial_group(g, nb, [&](std::size_t k, const double *, const double *d) {
      double sum = 0.0;
      for (std::size_t s = 0; s < g.out.size(); ++s) sum += c[g.out[s]] * d[s];
      v[3 * k] += sum * nb.x[k];
      v[3 * k + 1] += sum * nb.y[k];
      v[3 * k + 2] += sum * nb.z[k];
    });
  }
  for (const AngularGroup &g : angular_) {
    const std::size_t ns = g.out.size();
    angular_group(g, nb,
                  [&](int j, int k, double ax, double ay, double az, double bx, double by,
                      double bz, double cx, double cy, double cz, const double *,
                      const double *Aa, const double *Ab, const double *B, const double *Gm) {
                    double sa = 0.0, sb = 0.0, sB = 0.0, sG = 0.0;
                    for (std::size_t s = 0; s < ns; ++s) {
                      const double w = c[g.out[s]];
                      sa += w * Aa[s];
                      sb += w * Ab[s];
                      sB += w * B[s];
                      sG += w * Gm[s];
                    }
                    v[3 * j] += sa * ax + sB * bx + sG * cx;
                    v[3 * j + 1] += sa * ay + sB * by + sG * cy;
                    v[3 * j + 2] += sa * az + sB * bz + sG * cz;
                    v[3 * k] += sb * bx + sB * ax - sG * cx;
                    v[3 * k + 1] += sb * by + sB * ay - sG * cy;
                    v[3 * k + 2] += sb * bz + sB * az - sG * cz;
                  });
  }
}

void Descriptor::jacobian(const Neighbors &nb, double *G, double *dG) const
{
  const std::size_t n = nb.size();
  std::fill(G, G + n_functions_, 0.0);
  std::fill(dG, dG + 3 * n * static_cast<std::size_t>(n_functions_), 0.0);
  auto at = [&](int s, std::size_t k) { return dG + (static_cast<std::size_t>(s) * n + k) * 3; };
  for (const RadialGroup &g : radial_) {
    radial_group(g, nb, [&](std::size_t k, const double *t, const double *d) {
      for (std::size_t s = 0; s < g.out.size(); ++s) {
        G[g.out[s]] += t[s];
        double *p = at(g.out[s], k);
        p[0] += d[s] * nb.x[k];
        p[1] += d[s] * nb.y[k];
        p[2] += d[s] * nb.z[k];
      }
    });
  }
  for (const AngularGroup &g : angular_) {
    angular_group(g, nb,
                  [&](int j, int k, double ax, double ay, double az, double bx, double by,
                      double bz, double cx, double cy, double cz, const double *t,
                      const double *Aa, const double *Ab, const double *B, const double *Gm) {
                    for (std::size_t s = 0; s < g.out.size(); ++s) {
                      G[g.out[s]] += t[s];
                      double *pj = at(g.out[s], j);
                      double *pk = at(g.out[s], k);
                      pj[0] += Aa[s] * ax + B[s] * bx + Gm[s] * cx;
                      pj[1] += Aa[s] * ay + B[s] * by + Gm[s] * cy;
                      pj[2] += Aa[s] * az + B[s] * bz + Gm[s] * cz;
                      pk[0] += Ab[s] * bx + B[s] * ax - Gm[s] * cx;
                      pk[1] += Ab[s] * by + B[s] * ay - Gm[s] * cy;
                      pk[2] += Ab[s] * bz + B[s] * az - Gm[s] * cz;
                    }
                  });
  }
}

}    // namespace nnmd
