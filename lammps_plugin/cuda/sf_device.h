/* nnmd-lammps: the per-atom symmetry-function math of the GPU operators, as functions that
   compile both with nvcc (__host__ __device__) and with a plain C++ compiler (inline
   functions: NNMD_HD expands to nothing), so that the CPU runs exactly what a GPU thread
   runs (tests/test_cuda_math.py, through the operators' method "device").

   No torch, no LAMMPS, no CUDA runtime, no heap: plain structs of pointers into memory
   that the caller owns (host or device). The formulas are those of
   docs/symmetry_functions.md (sections 1-3 and 6) and of the CPU kernels
   (kernels/symmetry_functions.cpp, which take the cutoff functions' formulas from here:
   cutoff_x), evaluated directly: every pair for type 2, every triplet j < k for types 3
   and 9 (no moment tensors), one row (central atom) at a time.

   A batch is the CSR layout of the operators (torch_ops/ops.cpp): row i has element
   species[i] and the pairs offsets[i] .. offsets[i+1]-1 (neighbour element
   neighbor_species[p], displacement vectors[3p .. 3p+2]); row i owns the S_i entries
   g_off[i] .. g_off[i+1]-1 of the flat descriptor vector. A pass over one row
   (evaluate_row) writes only that row's entries of G, of g = J u and of the dense
   Jacobian, and only the vectors v of that row's own pairs for v = J^T c: rows are
   independent, one GPU thread each, no atomics (except the error flag).

   Passes (Pass::kind):
     VALUES    G[g_off[i] + s]           += G_s
     CONTRACT  v[m][p][a]                += sum_s c[m][g_off[i] + s] dG_s/dd_p,a   (J^T c)
     TANGENT   g[m][g_off[i] + s]        += sum_p,a dG_s/dd_p,a u[m][p][a]          (J u)
     JACOBIAN  G as VALUES, and jac[jac_off[i] + (k S_i + s) 3 + a] += dG_s/dd_k,a
               (k = p - offsets[i]: the row's block (n_i, S_i, 3))
   Outputs are accumulated: the caller zeroes them. Several vectors (m) are handled
   MAX_CHUNK at a time with register accumulators. */

#ifndef NNMD_CUDA_SF_DEVICE_H
#define NNMD_CUDA_SF_DEVICE_H

#include "kernels/limits.h"

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define NNMD_HD __host__ __device__
#else
#define NNMD_HD
#endif

namespace nnmd::device {

constexpr double PI = 3.14159265358979323846;

// vectors per pass of contract and jvp (register accumulators)
constexpr int MAX_CHUNK = 4;

// error bits of a batch (Pass::flag): the rows that have one are not evaluated
enum Flag : int { BAD_SPECIES = 1, BAD_NEIGHBOR_SPECIES = 2, ZERO_LENGTH = 4, BAD_OFFSETS = 8 };

enum Kind : int { VALUES = 0, CONTRACT = 1, TANGENT = 2, JACOBIAN = 3 };

// Functions of one central element sharing type, neighbour elements and cutoff (as the
// groups of the CPU kernels): the cutoff values of a pair or triplet are computed once
// for all of them.
struct Group {
  int type;              // 2, 3 or 9
  int e1, e2;            // neighbour elements (radial: e2 = -1; angular: e1 <= e2)
  int cutoff_type;       // 0 .. 8 (docs section 1)
  double rc, rci, iw;    // cutoff radius, inner cutoff alpha rc, 1 / (rc - rci)
  double pre;            // cutoff type 3: coth^3(1), else 1
  int first, count;      // the group's functions: functions[first .. first + count)
};

struct Function {
  double eta, rs;
  double lambda, zeta;    // angular
  double norm;            // 2^(1 - zeta)
  int zeta_int;           // zeta if it is an integer <= limits::MAX_INTEGER_ZETA, else 0
  int out;                // index in the element's descriptor vector
};

// the symmetry functions of every element (sf_table.h builds it)
struct Table {
  int n_elements;
  const int *n_functions;    // (n_elements) S_e
  const int *group_begin;    // (n_elements + 1) element e's groups: group_begin[e] .. [e+1]
  const Group *groups;
  const Function *functions;
};

struct Batch {
  int64_t n_rows, n_pairs;
  const int64_t *species;             // (N)
  const int64_t *offsets;             // (N + 1)
  const int64_t *neighbor_species;    // (P)
  const double *vectors;              // (P, 3)
  const int64_t *g_off;               // (N + 1) descriptor entries before row i
};

struct Pass {
  int kind;                  // Kind
  int n_vectors;             // CONTRACT, TANGENT: M
  int64_t total;             // T = g_off[N]
  const double *in;          // CONTRACT: c (M, T); TANGENT: u (M, P, 3)
  double *out;               // VALUES, JACOBIAN: G (T); CONTRACT: v (M, P, 3); TANGENT: g (M, T)
  double *jac;               // JACOBIAN: the rows' blocks
  const int64_t *jac_off;    // JACOBIAN: (N + 1) entries before row i's block
  int *flag;                 // Flag bits, or-ed
};

NNMD_HD inline void set_flag(int *flag, int bits)
{
#if defined(__CUDA_ARCH__)
  atomicOr(flag, bits);
#else
  __atomic_fetch_or(flag, bits, __ATOMIC_RELAXED);
#endif
}

// x^n for n >= 0 (binary exponentiation)
NNMD_HD inline double ipow(double x, int n)
{
  double r = 1.0;
  while (n > 0) {
    if (n & 1) r *= x;
    x *= x;
    n >>= 1;
  }
  return r;
}

// The cutoff types 1 and 4-8 (any other type: type 8) as functions of
// x = (r - rci) / (rc - rci), 0 <= x <= 1: fx = fc and dfx = dfc/dx (docs section 1).
// The CPU kernels' too (kernels/symmetry_functions.cpp, cutoff_inline, with a constant
// type in their SIMD loops): always inlined, so that they compile to the same code as
// with these formulas written out there.
NNMD_HD inline __attribute__((always_inline)) void cutoff_x(int type, double x, double &fx,
                                                            double &dfx)
{
  if (type == 1) {
    fx = 0.5 * (cos(PI * x) + 1.0);
    dfx = -0.5 * PI * sin(PI * x);
  } else if (type == 4) {
    const double xs = x < limits::EXP_CUTOFF_MAX_X ? x : limits::EXP_CUTOFF_MAX_X;
    const double den = 1.0 - xs * xs;
    fx = exp(1.0 - 1.0 / den);
    dfx = -2.0 * xs / (den * den) * fx;
  } else if (type == 5) {
    fx = (2.0 * x - 3.0) * x * x + 1.0;
    dfx = 6.0 * x * (x - 1.0);
  } else if (type == 6) {
    fx = ((15.0 - 6.0 * x) * x - 10.0) * x * x * x + 1.0;
    const double u = x * (x - 1.0);
    dfx = -30.0 * u * u;
  } else if (type == 7) {
    const double x2 = x * x;
    fx = (x * (x * (20.0 * x - 70.0) + 84.0) - 35.0) * x2 * x2 + 1.0;
    const double u = x * (x - 1.0);
    dfx = 140.0 * u * u * u;
  } else {
    const double x2 = x * x;
    fx = (x * (x * ((315.0 - 70.0 * x) * x - 540.0) + 420.0) - 126.0) * x2 * x2 * x + 1.0;
    const double u = x * (x - 1.0);
    const double u2 = u * u;
    dfx = -630.0 * u2 * u2;
  }
}

// fc(r) and dfc/dr of the group's cutoff (docs section 1; 0 for r >= rc)
NNMD_HD inline void cutoff(const Group &g, double r, double &f, double &df)
{
  f = 0.0;
  df = 0.0;
  if (!(r < g.rc)) return;
  const int type = g.cutoff_type;
  if (type == 0) {
    f = 1.0;
    return;
  }
  if (type == 2 || type == 3) {
    const double t = tanh(1.0 - r / g.rc);
    const double t2 = t * t;
    f = g.pre * t * t2;
    df = g.pre * 3.0 * t2 * (t2 - 1.0) / g.rc;
    return;
  }
  if (r < g.rci) {
    f = 1.0;
    return;
  }
  double x = (r - g.rci) * g.iw;
  x = x > 1.0 ? 1.0 : x;
  double fx, dfx;
  cutoff_x(type, x, fx, dfx);
  f = fx;
  df = dfx * g.iw;
}

// The error bits of row i (0: the row can be evaluated). Checks what the CPU operators
// check (element indices, r > 0 for every pair, offsets) and keeps every later read in
// bounds.
NNMD_HD inline int check_row(const Table &t, const Batch &b, int64_t i)
{
  int bad = 0;
  const int64_t e = b.species[i];
  if (e < 0 || e >= t.n_elements) bad |= BAD_SPECIES;
  const int64_t p0 = b.offsets[i], p1 = b.offsets[i + 1];
  if (p0 < 0 || p1 < p0 || p1 > b.n_pairs || (i == 0 && p0 != 0) ||
      (i == b.n_rows - 1 && p1 != b.n_pairs))
    return bad | BAD_OFFSETS;
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t ne = b.neighbor_species[p];
    if (ne < 0 || ne >= t.n_elements) bad |= BAD_NEIGHBOR_SPECIES;
    const double *d = b.vectors + 3 * p;
    const double r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
    if (!(r2 > 0.0)) bad |= ZERO_LENGTH;    // also NaN, as the CPU operators
  }
  return bad;
}

// Row i's pairs p0 .. p1 - 1, its first descriptor entry go and its S (the groups' passes)
struct Row {
  int64_t p0, p1, go;
  int S;
};

NNMD_HD inline Row row_of(const Table &t, const Batch &b, int64_t i)
{
  return {b.offsets[i], b.offsets[i + 1], b.g_off[i], t.n_functions[b.species[i]]};
}

// Radial group (docs section 2): G_s = sum_p exp(-eta (r_p - rs)^2) fc(r_p) over the
// pairs p of neighbour element e1 with r_p < rc; dG_s/dd_p = dG_s/dr_p d_p / r_p.
// NV: register lanes for the vectors m0 .. m0 + mc - 1 (mc <= NV).
template <int KIND, int NV>
NNMD_HD void radial_group(const Table &t, const Batch &b, const Pass &a, int64_t i, const Group &g,
                          int m0, int mc)
{
  const auto [p0, p1, go, S] = row_of(t, b, i);
  for (int64_t p = p0; p < p1; ++p) {
    if (b.neighbor_species[p] != g.e1) continue;
    const double *d = b.vectors + 3 * p;
    const double r = sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
    if (!(r < g.rc)) continue;
    double f, df;
    cutoff(g, r, f, df);
    const double ir = 1.0 / r;
    double acc[NV];    // CONTRACT: sum_s c_s dG_s/dr of each vector
    double dr[NV];     // TANGENT: dr_p along u of each vector
    for (int m = 0; m < NV; ++m) {
      acc[m] = 0.0;
      dr[m] = 0.0;
      if (KIND == TANGENT && m < mc) {
        const double *u = a.in + (m0 + m) * 3 * b.n_pairs + 3 * p;
        dr[m] = (d[0] * u[0] + d[1] * u[1] + d[2] * u[2]) * ir;
      }
    }
    for (int s = g.first; s < g.first + g.count; ++s) {
      const Function &fn = t.functions[s];
      const double x = r - fn.rs;
      const double E = exp(-fn.eta * x * x);
      if (KIND == VALUES || KIND == JACOBIAN) a.out[go + fn.out] += E * f;
      if (KIND == VALUES) continue;
      const double dT = (df - 2.0 * fn.eta * x * f) * E;    // dG_s/dr
      if (KIND == JACOBIAN) {
        double *J = a.jac + a.jac_off[i] + ((p - p0) * S + fn.out) * 3;
        for (int k = 0; k < 3; ++k) J[k] += dT * ir * d[k];
      }
      for (int m = 0; m < NV; ++m) {
        if (m >= mc) break;
        if (KIND == CONTRACT) acc[m] += a.in[(m0 + m) * a.total + go + fn.out] * dT;
        if (KIND == TANGENT) a.out[(m0 + m) * a.total + go + fn.out] += dT * dr[m];
      }
    }
    if (KIND == CONTRACT)
      for (int m = 0; m < NV; ++m) {
        if (m >= mc) break;
        double *v = a.out + (m0 + m) * 3 * b.n_pairs + 3 * p;
        for (int k = 0; k < 3; ++k) v[k] += acc[m] * ir * d[k];
      }
  }
}

// Angular group, type 3 (narrow) or 9 (wide) (docs section 3): every triplet (j, k) of
// pairs j < k of the row with {element j, element k} = {e1, e2}, r_j, r_k (and for type 3
// r_jk) < rc. With a = d_j, b = d_k, c = b - a, per function
//   T = 2^(1-zeta) P^zeta E F,  P = 1 + lambda cos (T = 0 for P <= 0),
//   dT/da = alpha_a a + beta b - gamma c,   dT/db = alpha_b b + beta a + gamma c,
// with, for qc = dT/dcos and W = 2^(1-zeta) P^zeta,
//   beta = qc / (r1 r2),  alpha_a = (W dR/dr1 - qc cos / r1) / r1,
//   alpha_b = (W dR/dr2 - qc cos / r2) / r2,  gamma = W dR/dr3 / r3 (type 3, else 0).
template <int KIND, int NV>
NNMD_HD void angular_group(const Table &t, const Batch &b, const Pass &a, int64_t i, const Group &g,
                           int m0, int mc)
{
  const auto [p0, p1, go, S] = row_of(t, b, i);
  const bool narrow = g.type == 3;
  const int64_t P3 = 3 * b.n_pairs;
  for (int64_t pj = p0; pj < p1; ++pj) {
    const int64_t ej = b.neighbor_species[pj];
    if (ej != g.e1 && ej != g.e2) continue;
    const int64_t want = ej == g.e1 ? g.e2 : g.e1;    // the second neighbour's element
    const double *A = b.vectors + 3 * pj;
    const double ax = A[0], ay = A[1], az = A[2];
    const double r1 = sqrt(ax * ax + ay * ay + az * az);
    if (!(r1 < g.rc)) continue;
    double f1, df1;
    cutoff(g, r1, f1, df1);
    double vj[NV][3];    // CONTRACT: dE/dd_j of each vector
    double uj[NV][3];    // TANGENT: u_j of each vector
    for (int m = 0; m < NV; ++m)
      for (int k = 0; k < 3; ++k) {
        vj[m][k] = 0.0;
        uj[m][k] = (KIND == TANGENT && m < mc) ? a.in[(m0 + m) * P3 + 3 * pj + k] : 0.0;
      }
    for (int64_t pk = pj + 1; pk < p1; ++pk) {
      if (b.neighbor_species[pk] != want) continue;
      const double *B = b.vectors + 3 * pk;
      const double bx = B[0], by = B[1], bz = B[2];
      const double r2 = sqrt(bx * bx + by * by + bz * bz);
      if (!(r2 < g.rc)) continue;
      const double cx = bx - ax, cy = by - ay, cz = bz - az;
      double r3 = 0.0, f3 = 1.0, df3 = 0.0;
      if (narrow) {
        r3 = sqrt(cx * cx + cy * cy + cz * cz);
        if (!(r3 < g.rc)) continue;
        cutoff(g, r3, f3, df3);
      }
      double f2, df2;
      cutoff(g, r2, f2, df2);
      const double inv12 = 1.0 / (r1 * r2);
      const double cos_t = (ax * bx + ay * by + az * bz) * inv12;
      const double F = f1 * f2 * f3;
      const double dF1 = df1 * f2 * f3, dF2 = f1 * df2 * f3, dF3 = f1 * f2 * df3;
      // TANGENT: the projections of u_j and u_k on a, b and c
      double au[NV][4];                          // a.u_j, b.u_j + a.u_k, c.(u_j - u_k), b.u_k
      double sa[NV], sb[NV], sab[NV], sc[NV];    // CONTRACT: sum_s c_s alpha_a, ...
      for (int m = 0; m < NV; ++m) {
        sa[m] = sb[m] = sab[m] = sc[m] = 0.0;
        for (int k = 0; k < 4; ++k) au[m][k] = 0.0;
        if (KIND == TANGENT && m < mc) {
          const double *uk = a.in + (m0 + m) * P3 + 3 * pk;
          au[m][0] = ax * uj[m][0] + ay * uj[m][1] + az * uj[m][2];
          au[m][1] =
              bx * uj[m][0] + by * uj[m][1] + bz * uj[m][2] + ax * uk[0] + ay * uk[1] + az * uk[2];
          au[m][2] = cx * (uj[m][0] - uk[0]) + cy * (uj[m][1] - uk[1]) + cz * (uj[m][2] - uk[2]);
          au[m][3] = bx * uk[0] + by * uk[1] + bz * uk[2];
        }
      }
      for (int s = g.first; s < g.first + g.count; ++s) {
        const Function &fn = t.functions[s];
        const double P = 1.0 + fn.lambda * cos_t;
        if (!(P > 0.0)) continue;
        const double pz1 = fn.zeta_int > 0 ? ipow(P, fn.zeta_int - 1) : pow(P, fn.zeta - 1.0);
        const double pz = pz1 * P;
        const double x1 = r1 - fn.rs, x2 = r2 - fn.rs, x3 = r3 - fn.rs;
        const double E = exp(-fn.eta * (x1 * x1 + x2 * x2 + (narrow ? x3 * x3 : 0.0)));
        const double R = E * F;
        const double W = fn.norm * pz;
        if (KIND == VALUES || KIND == JACOBIAN) a.out[go + fn.out] += W * R;
        if (KIND == VALUES) continue;
        const double te = 2.0 * fn.eta;
        const double qc = fn.norm * fn.zeta * fn.lambda * pz1 * R;
        const double D1 = E * (dF1 - te * x1 * F), D2 = E * (dF2 - te * x2 * F);
        const double beta = qc * inv12;
        const double alpha_a = (W * D1 - qc * cos_t / r1) / r1;
        const double alpha_b = (W * D2 - qc * cos_t / r2) / r2;
        const double gamma = narrow ? W * E * (dF3 - te * x3 * F) / r3 : 0.0;
        if (KIND == JACOBIAN) {
          const int64_t base = a.jac_off[i];
          double *Jj = a.jac + base + ((pj - p0) * S + fn.out) * 3;
          double *Jk = a.jac + base + ((pk - p0) * S + fn.out) * 3;
          Jj[0] += alpha_a * ax + beta * bx - gamma * cx;
          Jj[1] += alpha_a * ay + beta * by - gamma * cy;
          Jj[2] += alpha_a * az + beta * bz - gamma * cz;
          Jk[0] += alpha_b * bx + beta * ax + gamma * cx;
          Jk[1] += alpha_b * by + beta * ay + gamma * cy;
          Jk[2] += alpha_b * bz + beta * az + gamma * cz;
        }
        for (int m = 0; m < NV; ++m) {
          if (m >= mc) break;
          if (KIND == CONTRACT) {
            const double cs = a.in[(m0 + m) * a.total + go + fn.out];
            sa[m] += cs * alpha_a;
            sb[m] += cs * alpha_b;
            sab[m] += cs * beta;
            sc[m] += cs * gamma;
          }
          if (KIND == TANGENT)
            a.out[(m0 + m) * a.total + go + fn.out] +=
                alpha_a * au[m][0] + beta * au[m][1] - gamma * au[m][2] + alpha_b * au[m][3];
        }
      }
      if (KIND == CONTRACT)
        for (int m = 0; m < NV; ++m) {
          if (m >= mc) break;
          vj[m][0] += sa[m] * ax + sab[m] * bx - sc[m] * cx;
          vj[m][1] += sa[m] * ay + sab[m] * by - sc[m] * cy;
          vj[m][2] += sa[m] * az + sab[m] * bz - sc[m] * cz;
          double *vk = a.out + (m0 + m) * P3 + 3 * pk;
          vk[0] += sb[m] * bx + sab[m] * ax + sc[m] * cx;
          vk[1] += sb[m] * by + sab[m] * ay + sc[m] * cy;
          vk[2] += sb[m] * bz + sab[m] * az + sc[m] * cz;
        }
    }
    if (KIND == CONTRACT)
      for (int m = 0; m < NV; ++m) {
        if (m >= mc) break;
        double *v = a.out + (m0 + m) * P3 + 3 * pj;
        for (int k = 0; k < 3; ++k) v[k] += vj[m][k];
      }
  }
}

// one pass over row i (vectors m0 .. m0 + mc - 1 for CONTRACT and TANGENT)
template <int KIND, int NV>
NNMD_HD void row_pass(const Table &t, const Batch &b, const Pass &a, int64_t i, int m0, int mc)
{
  const int64_t e = b.species[i];
  for (int gi = t.group_begin[e]; gi < t.group_begin[e + 1]; ++gi) {
    const Group &g = t.groups[gi];
    if (g.type == 2)
      radial_group<KIND, NV>(t, b, a, i, g, m0, mc);
    else
      angular_group<KIND, NV>(t, b, a, i, g, m0, mc);
  }
}

// Row i of pass KIND: checks the row (error bits into a.flag, and then nothing is
// evaluated), then runs the pass, several vectors NV at a time (NV = 1: one register lane).
template <int KIND, int NV>
NNMD_HD void evaluate_row(const Table &t, const Batch &b, const Pass &a, int64_t i)
{
  const int bad = check_row(t, b, i);
  if (bad) {
    set_flag(a.flag, bad);
    return;
  }
  if constexpr (KIND == VALUES || KIND == JACOBIAN) {
    row_pass<KIND, 1>(t, b, a, i, 0, 1);
  } else {
    for (int m0 = 0; m0 < a.n_vectors; m0 += NV) {
      const int mc = a.n_vectors - m0 < NV ? a.n_vectors - m0 : NV;
      row_pass<KIND, NV>(t, b, a, i, m0, mc);
    }
  }
}

// pass KIND (CONTRACT or TANGENT) with one register lane for one vector, else MAX_CHUNK
template <int KIND>
NNMD_HD void evaluate_row_vectors(const Table &t, const Batch &b, const Pass &a, int64_t i)
{
  if (a.n_vectors == 1)
    evaluate_row<KIND, 1>(t, b, a, i);
  else
    evaluate_row<KIND, MAX_CHUNK>(t, b, a, i);
}

// the same with the pass chosen at run time (the host loop)
NNMD_HD inline void evaluate_row(const Table &t, const Batch &b, const Pass &a, int64_t i)
{
  switch (a.kind) {
    case VALUES: evaluate_row<VALUES, 1>(t, b, a, i); break;
    case CONTRACT: evaluate_row_vectors<CONTRACT>(t, b, a, i); break;
    case TANGENT: evaluate_row_vectors<TANGENT>(t, b, a, i); break;
    default: evaluate_row<JACOBIAN, 1>(t, b, a, i); break;
  }
}

}    // namespace nnmd::device

#endif
