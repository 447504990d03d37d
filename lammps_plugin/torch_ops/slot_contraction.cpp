/* nnmd-lammps: the force contraction of training batches as PyTorch operators (CPU).

   Training keeps dG/dd of every atom ("row") in K neighbour slots, dGdd (n, S, C) with
   C = 3K (python/nnmd_lammps/training/tensors.py, RowLayout), and contracts it with dE/dG
   of M committee members, g (n, M, S), once per loss evaluation:

     slot_contract(g, dGdd) -> v (n, M, C)          v[r,m,c] = sum_s g[r,m,s] dGdd[r,s,c]
     slot_contract_adjoint(u, dGdd) -> g (n, M, S)  g[r,m,s] = sum_c dGdd[r,s,c] u[r,m,c]

   and, fused with the scatter of dE/dd onto the atoms (the forces; docs/symmetry_functions.md
   section 6: a row's centre gets +sum over its slots, each slot's neighbour -the slot),

     slot_forces(g, dGdd, centre, neighbor, n_atoms) -> F (n_atoms, M, 3)
     slot_forces_adjoint(gF, dGdd, centre, neighbor) -> g (n, M, S)

   with centre (n,) and neighbor (n K,) atom indices (neighbor = n_atoms: an unused slot),
   so that no (n, M, C) intermediate is formed, copied or transposed
   (the adjoint is the gradient of the first with respect to g, and the other way round;
   the autograd formulas are in python/nnmd_lammps/descriptors/ops.py). torch.bmm does the
   same as n tiny products, at about half the speed of these loops on this memory-bound
   problem (benchmarks/bench_contraction.py); here each row of dGdd is read once per call for all M members,
   rows in parallel. g and u are float64; dGdd may be float64 or float32 (a stored copy of
   half the size: the products and sums are float64 either way, so the contraction is a
   smooth function of g whatever dGdd's storage). */

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

namespace nnmd::torch_ops {

namespace {

void check(const at::Tensor &x, const at::Tensor &d, const char *name)
{
  TORCH_CHECK(d.dim() == 3, name, ": dGdd must be (n, S, C)");
  TORCH_CHECK(d.scalar_type() == at::kDouble || d.scalar_type() == at::kFloat, name,
              ": dGdd must be float64 or float32");
  TORCH_CHECK(x.dim() == 3 && x.size(0) == d.size(0), name,
              ": the first operand must be (n, M, .) with dGdd's n rows");
  TORCH_CHECK(x.scalar_type() == at::kDouble, name, ": the first operand must be float64");
  TORCH_CHECK(x.device().is_cpu() && d.device().is_cpu(), name, ": CPU tensors only");
}

// One row r of each contraction (pointers at the row). dGdd is read once in its storage
// order; the M rows of v (the M x S block of g) stay in the L1 cache.
template <typename T>
inline __attribute__((always_inline)) void contract_row(const double *gr, const T *dr, double *vr,
                                                        int64_t M, int64_t S, int64_t C)
{
  for (int64_t i = 0; i < M * C; ++i) vr[i] = 0.0;
  for (int64_t s = 0; s < S; ++s) {
    const T *ds = dr + s * C;
    for (int64_t m = 0; m < M; ++m) {
      const double a = gr[m * S + s];
      double *vm = vr + m * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) vm[c] += a * static_cast<double>(ds[c]);
    }
  }
}

template <typename T>
inline __attribute__((always_inline)) void adjoint_row(const double *ur, const T *dr, double *gr,
                                                       int64_t M, int64_t S, int64_t C)
{
  for (int64_t s = 0; s < S; ++s) {
    const T *ds = dr + s * C;
    for (int64_t m = 0; m < M; ++m) {
      const double *um = ur + m * C;
      double acc = 0.0;
#pragma omp simd reduction(+ : acc)
      for (int64_t c = 0; c < C; ++c) acc += static_cast<double>(ds[c]) * um[c];
      gr[m * S + s] = acc;
    }
  }
}

// Rows [begin, end): compiled for AVX2 + FMA as well, GCC choosing at load time (on the
// Si training set of examples/mlearn, 2 threads, forward + adjoint: 105 -> 65 ms for one
// member, 252 -> 164 ms for four; torch.bmm 139 and 257 ms).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NNMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define NNMD_CLONES
#endif

#define NNMD_ROWS(NAME, ROW, T)                                                             \
  NNMD_CLONES void NAME(const double *x, const T *d, double *y, int64_t begin, int64_t end, \
                        int64_t M, int64_t S, int64_t C, int64_t x_row, int64_t y_row)      \
  {                                                                                         \
    for (int64_t r = begin; r < end; ++r)                                                   \
      ROW(x + r * x_row, d + r * S * C, y + r * y_row, M, S, C);                            \
  }
NNMD_ROWS(contract_rows, contract_row<double>, double)
NNMD_ROWS(contract_rows, contract_row<float>, float)
NNMD_ROWS(adjoint_rows, adjoint_row<double>, double)
NNMD_ROWS(adjoint_rows, adjoint_row<float>, float)
#undef NNMD_ROWS

// Forces: each row's v (M x C, in buf) becomes its centre's sum over slots and its
// neighbours' negated slots, w (n, K + 1, M, 3): slot k < K for neighbor k, slot K for the
// centre (scattered onto the atoms afterwards, in row order).
template <typename T>
inline __attribute__((always_inline)) void forces_row(const double *gr, const T *dr, double *wr,
                                                      double *buf, int64_t M, int64_t S, int64_t C)
{
  contract_row(gr, dr, buf, M, S, C);
  const int64_t K = C / 3;
  double *centre = wr + K * M * 3;
  for (int64_t i = 0; i < M * 3; ++i) centre[i] = 0.0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t a = 0; a < 3; ++a) {
        const double x = buf[m * C + 3 * k + a];
        wr[(k * M + m) * 3 + a] = -x;
        centre[m * 3 + a] += x;
      }
}

// The adjoint: u[m, 3k + a] = gF[centre, m, a] - gF[neighbor k, m, a] (in buf), then g = dGdd u.
template <typename T>
inline __attribute__((always_inline)) void
forces_adjoint_row(const double *gF, int64_t centre, const int64_t *nb, int64_t n_atoms,
                   const T *dr, double *gr, double *buf, int64_t M, int64_t S, int64_t C)
{
  const int64_t K = C / 3;
  const double *gc = gF + centre * M * 3;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t j = nb[k];
    const double *gj = j < n_atoms ? gF + j * M * 3 : nullptr;
    for (int64_t m = 0; m < M; ++m)
      for (int64_t a = 0; a < 3; ++a)
        buf[m * C + 3 * k + a] = gc[m * 3 + a] - (gj ? gj[m * 3 + a] : 0.0);
  }
  adjoint_row(buf, dr, gr, M, S, C);
}

#define NNMD_FORCES(NAME, T)                                                                      \
  NNMD_CLONES void NAME(const double *g, const T *d, double *w, int64_t begin, int64_t end,       \
                        int64_t M, int64_t S, int64_t C)                                          \
  {                                                                                               \
    std::vector<double> buf(static_cast<std::size_t>(M * C));                                     \
    for (int64_t r = begin; r < end; ++r)                                                         \
      forces_row(g + r * M * S, d + r * S * C, w + r * (C / 3 + 1) * M * 3, buf.data(), M, S, C); \
  }
NNMD_FORCES(forces_rows, double)
NNMD_FORCES(forces_rows, float)
#undef NNMD_FORCES

#define NNMD_FORCES_ADJOINT(NAME, T)                                                             \
  NNMD_CLONES void NAME(const double *gF, const int64_t *centre, const int64_t *nb,              \
                        int64_t n_atoms, const T *d, double *g, int64_t begin, int64_t end,      \
                        int64_t M, int64_t S, int64_t C)                                         \
  {                                                                                              \
    std::vector<double> buf(static_cast<std::size_t>(M * C));                                    \
    for (int64_t r = begin; r < end; ++r)                                                        \
      forces_adjoint_row(gF, centre[r], nb + r * (C / 3), n_atoms, d + r * S * C, g + r * M * S, \
                         buf.data(), M, S, C);                                                   \
  }
NNMD_FORCES_ADJOINT(forces_adjoint_rows, double)
NNMD_FORCES_ADJOINT(forces_adjoint_rows, float)
#undef NNMD_FORCES_ADJOINT

// Rows [0, n) in parallel: f(d, begin, end) with dGdd's data as double or float.
template <typename F> void parallel_rows(const at::Tensor &dGdd, F f)
{
  const bool f64 = dGdd.scalar_type() == at::kDouble;
  const double *d64 = f64 ? dGdd.data_ptr<double>() : nullptr;
  const float *d32 = f64 ? nullptr : dGdd.data_ptr<float>();
  at::parallel_for(0, dGdd.size(0), 16, [=](int64_t begin, int64_t end) {
    if (f64)
      f(d64, begin, end);
    else
      f(d32, begin, end);
  });
}

// y (n, M, width) from x (n, M, .), row by row: rows(x, d, y, begin, end) with dGdd's
// data as double or float
template <typename Rows>
at::Tensor per_row(const at::Tensor &x, const at::Tensor &dGdd, int64_t width, Rows rows)
{
  at::Tensor y = at::empty({dGdd.size(0), x.size(1), width}, x.options());
  const double *xp = x.data_ptr<double>();
  double *yp = y.data_ptr<double>();
  parallel_rows(dGdd, [=](auto d, int64_t begin, int64_t end) {
    rows(xp, d, yp, begin, end);
  });
  return y;
}

at::Tensor slot_contract(const at::Tensor &g, const at::Tensor &dGdd)
{
  check(g, dGdd, "nnmd.slot_contract");
  TORCH_CHECK(g.size(2) == dGdd.size(1), "nnmd.slot_contract: g is (n, M, S) with dGdd's S");
  const at::Tensor gc = g.contiguous(), dc = dGdd.contiguous();
  const int64_t S = dc.size(1), C = dc.size(2), M = gc.size(1);
  return per_row(gc, dc, C, [=](const double *x, auto d, double *y, int64_t b, int64_t e) {
    contract_rows(x, d, y, b, e, M, S, C, M * S, M * C);
  });
}

at::Tensor slot_contract_adjoint(const at::Tensor &u, const at::Tensor &dGdd)
{
  check(u, dGdd, "nnmd.slot_contract_adjoint");
  TORCH_CHECK(u.size(2) == dGdd.size(2),
              "nnmd.slot_contract_adjoint: u is (n, M, C) with dGdd's C");
  const at::Tensor uc = u.contiguous(), dc = dGdd.contiguous();
  const int64_t S = dc.size(1), C = dc.size(2), M = uc.size(1);
  return per_row(uc, dc, S, [=](const double *x, auto d, double *y, int64_t b, int64_t e) {
    adjoint_rows(x, d, y, b, e, M, S, C, M * C, M * S);
  });
}

void check_slots(const at::Tensor &dGdd, const at::Tensor &centre, const at::Tensor &neighbor,
                 int64_t n_atoms, const char *name)
{
  const int64_t n = dGdd.size(0), C = dGdd.size(2);
  TORCH_CHECK(C % 3 == 0, name, ": dGdd's last dimension must be 3 K");
  TORCH_CHECK(centre.dim() == 1 && centre.size(0) == n && centre.scalar_type() == at::kLong, name,
              ": centre must be (n,) int64");
  TORCH_CHECK(neighbor.dim() == 1 && neighbor.size(0) == n * (C / 3) &&
                  neighbor.scalar_type() == at::kLong,
              name, ": neighbor must be (n K,) int64");
  TORCH_CHECK(centre.device().is_cpu() && neighbor.device().is_cpu(), name, ": CPU tensors only");
  if (n == 0) return;
  TORCH_CHECK(centre.min().item<int64_t>() >= 0 && centre.max().item<int64_t>() < n_atoms, name,
              ": a centre is not an atom index (0 .. n_atoms - 1)");
  if (neighbor.numel() > 0)
    TORCH_CHECK(neighbor.min().item<int64_t>() >= 0 && neighbor.max().item<int64_t>() <= n_atoms,
                name, ": a neighbor is not an atom index or n_atoms (unused slot)");
}

at::Tensor slot_forces(const at::Tensor &g, const at::Tensor &dGdd, const at::Tensor &centre,
                       const at::Tensor &neighbor, int64_t n_atoms)
{
  check(g, dGdd, "nnmd.slot_forces");
  TORCH_CHECK(g.size(2) == dGdd.size(1), "nnmd.slot_forces: g is (n, M, S) with dGdd's S");
  TORCH_CHECK(n_atoms >= 0, "nnmd.slot_forces: n_atoms must be >= 0");
  check_slots(dGdd, centre, neighbor, n_atoms, "nnmd.slot_forces");
  const at::Tensor gc = g.contiguous(), dc = dGdd.contiguous();
  const at::Tensor cc = centre.contiguous(), nc = neighbor.contiguous();
  const int64_t n = dc.size(0), S = dc.size(1), C = dc.size(2), M = gc.size(1), K = C / 3;
  at::Tensor w = at::empty({n, K + 1, M, 3}, gc.options());
  const double *x = gc.data_ptr<double>();
  double *y = w.data_ptr<double>();
  parallel_rows(dc, [=](auto d, int64_t begin, int64_t end) {
    forces_rows(x, d, y, begin, end, M, S, C);
  });
  // the scatter in row order: the same sums whatever the number of threads
  at::Tensor F = at::zeros({n_atoms, M, 3}, gc.options());
  double *f = F.data_ptr<double>();
  const int64_t *ce = cc.data_ptr<int64_t>(), *nb = nc.data_ptr<int64_t>();
  const int64_t B = M * 3;
  for (int64_t r = 0; r < n; ++r) {
    const double *wr = y + r * (K + 1) * B;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t j = nb[r * K + k];
      if (j >= n_atoms) continue;
      double *fj = f + j * B;
      for (int64_t i = 0; i < B; ++i) fj[i] += wr[k * B + i];
    }
    double *fc = f + ce[r] * B;
    for (int64_t i = 0; i < B; ++i) fc[i] += wr[K * B + i];
  }
  return F;
}

at::Tensor slot_forces_adjoint(const at::Tensor &gF, const at::Tensor &dGdd,
                               const at::Tensor &centre, const at::Tensor &neighbor)
{
  TORCH_CHECK(gF.dim() == 3 && gF.size(2) == 3,
              "nnmd.slot_forces_adjoint: gF must be (n_atoms, M, 3)");
  TORCH_CHECK(gF.scalar_type() == at::kDouble && gF.device().is_cpu(),
              "nnmd.slot_forces_adjoint: gF must be a float64 CPU tensor");
  TORCH_CHECK(dGdd.dim() == 3, "nnmd.slot_forces_adjoint: dGdd must be (n, S, C)");
  TORCH_CHECK(dGdd.scalar_type() == at::kDouble || dGdd.scalar_type() == at::kFloat,
              "nnmd.slot_forces_adjoint: dGdd must be float64 or float32");
  const int64_t n_atoms = gF.size(0);
  check_slots(dGdd, centre, neighbor, n_atoms, "nnmd.slot_forces_adjoint");
  const at::Tensor gc = gF.contiguous(), dc = dGdd.contiguous();
  const at::Tensor cc = centre.contiguous(), nc = neighbor.contiguous();
  const int64_t S = dc.size(1), C = dc.size(2), M = gc.size(1);
  const int64_t *ce = cc.data_ptr<int64_t>(), *nb = nc.data_ptr<int64_t>();
  return per_row(gc, dc, S, [=](const double *x, auto d, double *y, int64_t b, int64_t e) {
    forces_adjoint_rows(x, ce, nb, n_atoms, d, y, b, e, M, S, C);
  });
}

}    // namespace

}    // namespace nnmd::torch_ops

TORCH_LIBRARY_FRAGMENT(nnmd, m)
{
  m.def("slot_contract(Tensor g, Tensor dGdd) -> Tensor v");
  m.def("slot_contract_adjoint(Tensor u, Tensor dGdd) -> Tensor g");
  m.def("slot_forces(Tensor g, Tensor dGdd, Tensor centre, Tensor neighbor, int n_atoms) "
        "-> Tensor F");
  m.def("slot_forces_adjoint(Tensor gF, Tensor dGdd, Tensor centre, Tensor neighbor) -> Tensor g");
}

TORCH_LIBRARY_IMPL(nnmd, CPU, m)
{
  m.impl("slot_contract", &nnmd::torch_ops::slot_contract);
  m.impl("slot_contract_adjoint", &nnmd::torch_ops::slot_contract_adjoint);
  m.impl("slot_forces", &nnmd::torch_ops::slot_forces);
  m.impl("slot_forces_adjoint", &nnmd::torch_ops::slot_forces_adjoint);
}
