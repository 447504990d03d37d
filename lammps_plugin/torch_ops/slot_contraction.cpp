/* nnmd-lammps: the force contraction of training batches as PyTorch operators (CPU).

   Training keeps dG/dd of every atom ("row") in K neighbour slots, dGdd (n, S, C) with
   C = 3K (python/nnmd_lammps/training/tensors.py, RowLayout), and contracts it with dE/dG
   of M committee members, g (n, M, S), once per loss evaluation:

     slot_contract(g, dGdd) -> v (n, M, C)          v[r,m,c] = sum_s g[r,m,s] dGdd[r,s,c]
     slot_contract_adjoint(u, dGdd) -> g (n, M, S)  g[r,m,s] = sum_c dGdd[r,s,c] u[r,m,c]

   (the adjoint is the gradient of the first with respect to g, and the other way round;
   the autograd formulas are in python/nnmd_lammps/descriptors/ops.py). torch.bmm does the
   same as n tiny products and reaches about a third of the memory bandwidth on this
   memory-bound problem; here each row of dGdd is read once per call for all M members,
   rows in parallel. g and u are float64; dGdd may be float64 or float32 (a stored copy of
   half the size: the products and sums are float64 either way, so the contraction is a
   smooth function of g whatever dGdd's storage). */

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>

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
NNMD_ROWS(contract_rows_f64, contract_row<double>, double)
NNMD_ROWS(contract_rows_f32, contract_row<float>, float)
NNMD_ROWS(adjoint_rows_f64, adjoint_row<double>, double)
NNMD_ROWS(adjoint_rows_f32, adjoint_row<float>, float)
#undef NNMD_ROWS

at::Tensor slot_contract(const at::Tensor &g, const at::Tensor &dGdd)
{
  check(g, dGdd, "nnmd.slot_contract");
  TORCH_CHECK(g.size(2) == dGdd.size(1), "nnmd.slot_contract: g is (n, M, S) with dGdd's S");
  const at::Tensor gc = g.contiguous(), dc = dGdd.contiguous();
  const int64_t n = dc.size(0), S = dc.size(1), C = dc.size(2), M = gc.size(1);
  at::Tensor v = at::empty({n, M, C}, gc.options());
  const double *x = gc.data_ptr<double>();
  double *y = v.data_ptr<double>();
  const bool f64 = dc.scalar_type() == at::kDouble;
  const void *d = f64 ? static_cast<const void *>(dc.data_ptr<double>())
                      : static_cast<const void *>(dc.data_ptr<float>());
  at::parallel_for(0, n, 16, [=](int64_t begin, int64_t end) {
    if (f64)
      contract_rows_f64(x, static_cast<const double *>(d), y, begin, end, M, S, C, M * S, M * C);
    else
      contract_rows_f32(x, static_cast<const float *>(d), y, begin, end, M, S, C, M * S, M * C);
  });
  return v;
}

at::Tensor slot_contract_adjoint(const at::Tensor &u, const at::Tensor &dGdd)
{
  check(u, dGdd, "nnmd.slot_contract_adjoint");
  TORCH_CHECK(u.size(2) == dGdd.size(2),
              "nnmd.slot_contract_adjoint: u is (n, M, C) with dGdd's C");
  const at::Tensor uc = u.contiguous(), dc = dGdd.contiguous();
  const int64_t n = dc.size(0), S = dc.size(1), C = dc.size(2), M = uc.size(1);
  at::Tensor g = at::empty({n, M, S}, uc.options());
  const double *x = uc.data_ptr<double>();
  double *y = g.data_ptr<double>();
  const bool f64 = dc.scalar_type() == at::kDouble;
  const void *d = f64 ? static_cast<const void *>(dc.data_ptr<double>())
                      : static_cast<const void *>(dc.data_ptr<float>());
  at::parallel_for(0, n, 16, [=](int64_t begin, int64_t end) {
    if (f64)
      adjoint_rows_f64(x, static_cast<const double *>(d), y, begin, end, M, S, C, M * C, M * S);
    else
      adjoint_rows_f32(x, static_cast<const float *>(d), y, begin, end, M, S, C, M * C, M * S);
  });
  return g;
}

}    // namespace

}    // namespace nnmd::torch_ops

TORCH_LIBRARY_FRAGMENT(nnmd, m)
{
  m.def("slot_contract(Tensor g, Tensor dGdd) -> Tensor v");
  m.def("slot_contract_adjoint(Tensor u, Tensor dGdd) -> Tensor g");
}

TORCH_LIBRARY_IMPL(nnmd, CPU, m)
{
  m.impl("slot_contract", &nnmd::torch_ops::slot_contract);
  m.impl("slot_contract_adjoint", &nnmd::torch_ops::slot_contract_adjoint);
}
