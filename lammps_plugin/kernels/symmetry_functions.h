/* nnmd-lammps: atom-centred symmetry functions (n2p2 types 2, 3, 9) for one central atom.

   LAMMPS-independent. The formulas are those of docs/symmetry_functions.md; the Python
   implementation (python/nnmd_lammps/descriptors/) follows the same document and the
   test suite compares both.

   Usage: build one DescriptorCalculator per central element from its symmetry functions
   (in network-input order), fill a Neighbors object with the displacement vectors
   d_ij = r_j - r_i of the central atom's neighbours (any order, r_ij > 0), then
     compute(nb, G)             G[s]                       (s = 0 .. size()-1)
     contract(nb, c, v)         v[3k+a] = sum_s c[s] dG_s/dd_k,a  (force pass, c = dE/dG)
     contract_many(nb, M, c, v) the same for M vectors c (rows m of size()) at once:
                                v[m*3n + 3k+a] (committee forces); equal to M contract()s
     jvp(nb, u, dG)             dG[s] = sum_k,a dG_s/dd_k,a u[3k+a]  (forward mode: J u,
                                the adjoint of contract's J^T c; force-loss training)
     jacobian(nb, G, dG)        dG[(s*n + k)*3 + a]        (tests)

   Functions sharing type, neighbour elements and cutoff form a group; within a group the
   cutoff values, the Gaussians of each distinct (eta, rs) and the powers of each distinct
   (lambda, zeta) are computed once per pair or triplet. Type-9 groups with integer zeta
   (up to limits::MAX_MOMENT_ORDER, limits.h) can also be evaluated in linear time from
   per-neighbour moment tensors (docs section 3); Method::Auto picks the cheaper
   evaluation for each atom from its neighbour count. contract_many() computes everything
   that does not depend on c (distances, cutoffs, Gaussians, angular powers, monomials and
   the moment path's projections P_m, docs section 6) once for all M vectors; jvp() costs
   about one contract() and stays linear in the neighbours on the moments path. No heap
   allocation happens once the workspaces have grown to the largest neighbour count (and
   number of vectors) seen. Not thread-safe (one DescriptorCalculator per thread). */

#ifndef NNMD_KERNELS_SYMMETRY_FUNCTIONS_H
#define NNMD_KERNELS_SYMMETRY_FUNCTIONS_H

#include <cstddef>
#include <string>
#include <vector>

namespace nnmd {

struct SymmetryFunction {
  int type = 2;                 // 2 radial, 3 narrow angular, 9 wide angular
  int e1 = 0, e2 = -1;          // neighbour element indices (e2 = -1 for radial)
  double eta = 0.0;             // 1/length^2
  double rs = 0.0;              // shift (length)
  double rc = 0.0;              // cutoff radius (length)
  double lambda = 0.0;          // +1 or -1 (angular)
  double zeta = 0.0;            // >= 1 (angular)
  int cutoff_type = 1;          // 0..8
  double cutoff_alpha = 0.0;    // inner cutoff rci = alpha * rc
};

// Human-readable check; returns an empty string if the parameters are valid.
std::string validate(const SymmetryFunction &p, int n_elements);

// what the cutoff-function formulas need: rc, the inner cutoff rci = alpha rc, 1/(rc - rci)
// and the prefactor of type 3
struct CutoffParams {
  double rc = 0.0, rci = 0.0, iw = 0.0, pre = 1.0;
};

class Cutoff {
 public:
  Cutoff() = default;
  Cutoff(int type, double rc, double alpha);
  // fc(r[q]) and dfc/dr for q < n, 0 <= r (0 for r >= rc); vectorised
  void evaluate(const double *r, int n, double *f, double *df) const;
  int type() const { return type_; }
  double rc() const { return p_.rc; }
  const CutoffParams &params() const { return p_; }
  bool same(const Cutoff &o) const
  {
    return type_ == o.type_ && p_.rc == o.p_.rc && alpha_ == o.alpha_;
  }

 private:
  int type_ = 0;
  double alpha_ = 0.0;
  CutoffParams p_;
};

// Neighbour environment of one central atom (structure of arrays).
struct Neighbors {
  std::vector<double> x, y, z, r;
  std::vector<int> elem;
  void clear()
  {
    x.clear();
    y.clear();
    z.clear();
    r.clear();
    elem.clear();
  }
  void push(double dx, double dy, double dz, double dist, int element)
  {
    x.push_back(dx);
    y.push_back(dy);
    z.push_back(dz);
    r.push_back(dist);
    elem.push_back(element);
  }
  std::size_t size() const { return r.size(); }
};

class DescriptorCalculator {
 public:
  enum class Method { Auto, Direct, Moments };

  DescriptorCalculator(const std::vector<SymmetryFunction> &functions, int n_elements);
  int size() const { return n_functions_; }
  double cutoff() const { return cutoff_; }
  int n_groups() const { return static_cast<int>(radial_.size() + angular_.size()); }
  // Evaluation of type-9 groups: Auto (default) chooses per atom; Moments falls back to
  // Direct for groups that cannot use it (non-integer zeta).
  void set_method(Method m) { method_ = m; }

  // `cache` (optional, cache_size() doubles per atom) keeps the moment tensors of one
  // atom from compute() for its contract(), which then skips recomputing them.
  void compute(const Neighbors &nb, double *G, double *cache = nullptr) const;
  void contract(const Neighbors &nb, const double *c, double *v,
                const double *cache = nullptr) const;
  // n_vectors contractions sharing all work independent of c: c holds n_vectors rows of
  // size(), v receives n_vectors rows of 3 nb.size()
  void contract_many(const Neighbors &nb, int n_vectors, const double *c, double *v,
                     const double *cache = nullptr) const;
  // directional derivative dG[s] = sum_k,a dG_s/dd_k,a u[3k+a] (u: 3 nb.size() values)
  void jvp(const Neighbors &nb, const double *u, double *dG, const double *cache = nullptr) const;
  void jacobian(const Neighbors &nb, double *G, double *dG) const;
  std::size_t cache_size() const { return method_ == Method::Direct ? 0 : cache_size_; }

 private:
  // The three passes over a group: values G (compute), contractions of dG/dd with M
  // vectors c (contract, contract_many) and the derivative of G along u (jvp).
  enum class Pass { Values, Contract, Tangent };
  struct PassArgs {
    double *G = nullptr;          // Values: G; Tangent: dG along u (accumulated)
    const double *c = nullptr;    // Contract: n_vectors rows of n_functions_
    const double *u = nullptr;    // Tangent: the direction, 3 n
    double *v = nullptr;          // Contract: n_vectors rows of v_stride (accumulated)
    int n_vectors = 0;            // Contract
    std::size_t v_stride = 0;     // Contract: 3 n
  };

  struct RadialGroup {
    int e1;
    Cutoff fc;
    std::vector<double> eta, rs;
    std::vector<int> out;
  };
  struct AngularGroup {
    int type, e1, e2;
    Cutoff fc;
    std::vector<double> ueta, urs;             // distinct (eta, rs)
    std::vector<double> vlam, vzeta, vnorm;    // distinct (lambda, zeta); 2^(1-zeta)
    std::vector<int> vzi;                      // integer zeta, or 0
    std::vector<int> su, sv, out;              // per function: u, v, output index
    int kmax = 0;                              // moments: largest zeta (0: impossible)
    std::size_t cache_offset = 0;              // this group's part of the cache
  };
  struct MomentTable {    // multi-indices alpha with |alpha| <= K, grouped by degree
    int K = -1;
    std::vector<int> degree, ax, ay, az;    // |alpha| and components
    std::vector<int> lower[3];              // index of alpha - e_i, or -1
    std::vector<int> up[3];                 // index of beta + e_i (|beta| < K)
    std::vector<double> upw[3];             // beta_i + 1
    std::vector<int> pred, pred_axis;       // alpha = pred + e_axis (monomial recursion)
    std::vector<double> mult;               // m! / (ax! ay! az!)
    std::vector<int> first;                 // first index of degree m (size K + 2)
  };

  // Workspaces, grown to the largest neighbour count seen and never shrunk. Indices: q a
  // listed neighbour of the group being evaluated, t a triplet (i, j, k) of one first
  // neighbour j, u a distinct (eta, rs) of the group, v a distinct (lambda, zeta);
  // "[u * capacity + q]" is the layout of arrays with two indices.

  // The group's neighbours in list order (structure of arrays), filled by collect() and
  // read by all evaluation paths, and the per-neighbour force accumulators ("[m *
  // capacity + q]": one row per contracted vector m).
  struct NeighborWork {
    std::size_t capacity = 0;       // entries per neighbour or triplet array: padded(n)
    std::size_t max_params = 1;     // most distinct (eta, rs) or (lambda, zeta) in a group
    std::size_t max_vectors = 1;    // most vectors of one contract_many() so far
    int n_first = 0;                // listed neighbours of the first element (listed first)
    int n_listed = 0;               // listed neighbours of both elements (r < rc)
    int n_padded = 0;               // n_listed rounded up to a multiple of 4 (padding: r = rc)

    std::vector<int> source;           // index k in Neighbors of neighbour q (-1: padding)
    std::vector<double> dx, dy, dz;    // displacement d_q = r_k - r_i
    std::vector<double> r, inv_r;      // distance r_q and 1 / r_q
    std::vector<double> fc, dfc;       // cutoff function fc(r_q) and dfc/dr
    std::vector<double> gauss;         // exp(-eta_u (r_q - rs_u)^2)   [u * capacity + q]
    std::vector<double> shift;         // r_q - rs_u                   [u * capacity + q]
    std::vector<double> dG_dr;         // radial force pass: dG_s/dr_q of one function s
    std::vector<double> dE_dr;         // radial force pass: sum_s c_s dG_s/dr_q  [m * cap + q]
    std::vector<double> grad_x;        // angular force passes: dE/dd_q, x     [m * cap + q]
    std::vector<double> grad_y;        // ... y component
    std::vector<double> grad_z;        // ... z component
    std::vector<double> dir_x;         // jvp: direction u of neighbour q, x component
    std::vector<double> dir_y;         // ... y component
    std::vector<double> dir_z;         // ... z component
    std::vector<double> dir_r;         // jvp: dr_q along u = n_q . u_q (0 in padding)

    void reserve(std::size_t n);
    void reserve_vectors(std::size_t m);    // force accumulators for m vectors
    // capacity for n neighbours: blocks of 8 starting anywhere below n may read up to 7
    // entries past the end
    static std::size_t padded(std::size_t n) { return (n + 7) / 8 * 8 + 8; }
  };

  // The triplets (i, j, k) of one first neighbour j in the direct angular evaluation
  // (angular_direct_t), vectorised over the second neighbours k.
  struct TripletWork {
    std::vector<int> partner;           // listed index q of the second neighbour k
    std::vector<double> cos_angle;      // cos theta_jik = d_j . d_k / (r_ij r_ik)
    std::vector<double> inv_rr;         // 1 / (r_ij r_ik)
    std::vector<double> r_jk;           // type 3: |d_k - d_j| (its square while compacting)
    std::vector<double> jk_x;           // type 3: d_k - d_j, x component
    std::vector<double> jk_y;           // ... y component
    std::vector<double> jk_z;           // ... z component
    std::vector<double> fc_prod;        // fc(r_ij) fc(r_ik) [fc(r_jk)]; 0 in padding lanes
    std::vector<double> dfc_ij;         // fc_prod with dfc/dr(r_ij) in place of fc(r_ij)
    std::vector<double> dfc_ik;         // fc_prod with dfc/dr(r_ik) in place of fc(r_ik)
    std::vector<double> dfc_jk;         // type 3: fc_prod with dfc/dr(r_jk) for fc(r_jk)
    std::vector<double> radial;         // R_u = Gaussians x fc_prod       [u * capacity + t]
    std::vector<double> d_radial_ij;    // dR_u/dr_ij                      [u * capacity + t]
    std::vector<double> d_radial_ik;    // dR_u/dr_ik                      [u * capacity + t]
    std::vector<double> d_radial_jk;    // type 3: dR_u/dr_jk              [u * capacity + t]
    std::vector<double> dE_dradial;     // sum_s c_s 2^(1-zeta) P^zeta     [u * capacity + t]
    std::vector<double> pow_zeta;       // P^zeta, P = max(1 + lambda cos, 0)  [v * cap + t]
    std::vector<double> pow_zeta_m1;    // P^(zeta - 1)                        [v * cap + t]
    std::vector<double> dE_dcos;        // sum_s c_s 2^(1-zeta) zeta lambda P^(zeta-1) R_u
    std::vector<double> grad_k_x;       // dE/dd_k of the second neighbour, x component
    std::vector<double> grad_k_y;       // ... y component
    std::vector<double> grad_k_z;       // ... z component
    std::vector<double> d_cos;          // jvp: cos theta_jik along u
    std::vector<double> d_fc_prod;      // jvp: fc_prod along u
    std::vector<double> d_r_jk;         // jvp, type 3: r_jk along u
    std::vector<double> d_radial;       // jvp: R_u along u                 [u * capacity + t]

    void reserve(std::size_t capacity, std::size_t max_params);
  };

  // Type 9 from moment tensors (angular_moments); grown per group.
  struct MomentWork {
    std::vector<double> unit_x;           // unit vector n_q = d_q / r_q, x component
    std::vector<double> unit_y;           // ... y component
    std::vector<double> unit_z;           // ... z component
    std::vector<double> monomials;        // n_q^alpha                   [alpha * capacity + q]
    std::vector<double> weights;          // w_u(r_q) = gauss fc            [u * capacity + q]
    std::vector<double> moments;          // M_u,side[alpha]  [(2 u + side) * n_alpha + alpha]
    std::vector<double> weight_sq_sum;    // sum_q w_u(r_q)^2                               [u]
    std::vector<double> pair_sums;        // T_u,m (jvp: dT_u,m along u)     [u * (K + 1) + m]
    std::vector<double> adjoints;         // g_u,m = dE/dT_u,m    [(vector * nu + u) * (K+1) + m]
    std::vector<double> coefs;            // A = m!/alpha! M_other; (beta_i + 1) A[beta + e_i]
    // projections of neighbour q on the other side's moments (c-independent, shared by
    // all vectors of contract_many and by jvp), for one block of MOMENT_BLOCK neighbours:
    //   P_m(q) = sum_{|alpha| = m} m!/alpha! M_other[alpha] n_q^alpha = sum_k w_k (n_q.n_k)^m
    //   Q_m,i(q) = dP_m / dn_q,i
    std::vector<double> proj;       // P_m(q)                         [m * MOMENT_BLOCK + l]
    std::vector<double> proj_dx;    // Q_m,x(q), m = 1 .. K     [(m - 1) * MOMENT_BLOCK + l]
    std::vector<double> proj_dy;    // ... Q_m,y
    std::vector<double> proj_dz;    // ... Q_m,z
    // jvp: dT_m = sum_q (tan_r - m tan_m) P_m + tan . Q_m (tan_x, tan_y, tan_z)
    std::vector<double> tan_r;    // dw_q dr_q  (dw = dw/dr, dr_q = n_q . u_q)
    std::vector<double> tan_m;    // w_q dr_q / r_q
    std::vector<double> tan_x;    // w_q u_q,x / r_q
    std::vector<double> tan_y;    // ... y
    std::vector<double> tan_z;    // ... z
  };

  void collect(const Neighbors &nb, int e1, int e2, const Cutoff &fc,
               const std::vector<double> &eta, const std::vector<double> &rs) const;
  void collect_direction(const double *u) const;    // dir_* of the collected neighbours
  template <Pass PASS>
  void radial(const RadialGroup &g, const Neighbors &nb, const PassArgs &a) const;
  template <Pass PASS> void angular_direct(const AngularGroup &g, const PassArgs &a) const;
  template <Pass PASS, bool NARROW, int CT>
  void angular_direct_t(const AngularGroup &g, const PassArgs &a) const;
  template <Pass PASS>
  void angular_moments(const AngularGroup &g, const PassArgs &a, double *cache_out,
                       const double *cache_in) const;
  void moment_tensors(const AngularGroup &g, double *cache_out, const double *cache_in) const;
  static constexpr int MOMENT_BLOCK = 8;    // neighbours per register block (divides capacity)
  void moment_coefficients(const AngularGroup &g, const double *Mo) const;
  void moment_projections(const AngularGroup &g, int q0) const;
  template <Pass PASS>
  void evaluate(const Neighbors &nb, const PassArgs &a, double *cache_out,
                const double *cache_in) const;
  bool use_moments(const AngularGroup &g) const;

  int n_functions_ = 0;
  int n_elements_ = 0;
  std::size_t cache_size_ = 0;
  double cutoff_ = 0.0;
  Method method_ = Method::Auto;
  std::vector<RadialGroup> radial_;
  std::vector<AngularGroup> angular_;
  MomentTable table_;
  std::vector<std::vector<double>> binom_;    // binomial coefficients C(n, m)
  // workspaces (see above)
  mutable NeighborWork neighbor_work_;
  mutable TripletWork triplet_work_;
  mutable MomentWork moment_work_;
};

}    // namespace nnmd

#endif
