/* nnmd-lammps: the symmetry-function kernels (kernels/symmetry_functions.h) as PyTorch
   operators, for the Python package (python/nnmd_lammps/descriptors/ops.py).

   Torch headers and kernels headers only: never LAMMPS headers (both bundle fmt).

   torch.classes.nnmd.Descriptors(n_elements, functions) holds one
   nnmd::DescriptorCalculator per element, built from a (F, 11) float64 table with one row
   per symmetry function,
     [centre element, type, e1, e2, eta, rs, rc, lambda, zeta, cutoff type, cutoff alpha]
   (element indices as numbers; e2 = -1 for radial functions; each element's functions in
   network-input order).

   The operators take a batch of atoms of any number of structures as a CSR neighbour list:
     species (N,) int64           element of each centre ("row")
     offsets (N+1,) int64         the pairs of row i are offsets[i] .. offsets[i+1]-1
     neighbor_species (P,) int64  element of each neighbour
     vectors (P, 3) float64       displacement vectors d_ij = r_j - r_i (r_ij > 0; pairs
                                  beyond every cutoff are allowed and contribute nothing)
   Row i owns S_i = num_functions(species[i]) entries of a flat descriptor vector, starting
   at the sum of S over the rows before it; with the rows grouped by element, each
   element's block is its (n_e, S_e) matrix. The per-atom cache (the kernels' moment
   tensors) is laid out the same way with cache_size(e) entries per row.

     symmetry_functions(D, species, offsets, nspecies, vectors) -> (G (T,), cache (C,))
     contract(D, species, offsets, nspecies, vectors, c, cache) -> v
         c (T,) or (M, T) (dE/dG); v (P, 3) or (M, P, 3): v_p = sum_s c_s dG_s/dd_p = J^T c
     jvp(D, species, offsets, nspecies, vectors, u, cache) -> g
         u (P, 3) or (M, P, 3); g (T,) or (M, T): g_s = sum_p dG_s/dd_p . u_p = J u
     jacobian(D, species, offsets, nspecies, vectors) -> (G (T,), dGdd (3 sum_i n_i S_i,))
         row i's block is (n_i, S_i, 3) [pair, function, component]; with the rows grouped
         by element each element's block is its (P_e, S_e, 3) array.

   Kernel calls per atom: compute (symmetry_functions), contract or, for M > 1 vectors,
   one contract_many (contract), jvp per vector (jvp), compute + contract_many with the
   S unit vectors (jacobian). Atoms are evaluated in parallel (at::parallel_for); each
   worker takes a private copy of the calculators from a pool (the kernels' workspaces
   are not thread-safe). Empty `cache` tensors mean "no cache" (contract and jvp then
   recompute the moment tensors).

   Descriptors.set_method("device") makes the CPU operators run the per-atom functions of
   the GPU (cuda/sf_device.h, through device_ops.cpp) instead of the CPU kernels: what the
   CUDA operators compute, on the CPU (tests/test_cuda_math.py). Built with CUDA
   (NNMD_WITH_CUDA, docs/gpu.md), ops_cuda.cpp registers the same operators for CUDA
   tensors. */

#include "torch_ops/descriptors.h"
#include "torch_ops/device_ops.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace nnmd::torch_ops {

namespace {
constexpr int64_t N_COLUMNS = 11;

// element e's functions of a (F, 11) table, validated
std::vector<std::vector<nnmd::SymmetryFunction>> parse_functions(int64_t n_elements,
                                                                 const at::Tensor &functions)
{
  TORCH_CHECK(n_elements > 0, "nnmd.Descriptors: n_elements must be positive");
  TORCH_CHECK(functions.dim() == 2 && functions.size(1) == N_COLUMNS,
              "nnmd.Descriptors: functions must be an (F, ", N_COLUMNS, ") table");
  const at::Tensor t = functions.to(at::kCPU).to(at::kDouble).contiguous();
  const double *p = t.data_ptr<double>();
  std::vector<std::vector<nnmd::SymmetryFunction>> per_element(n_elements);
  for (int64_t f = 0; f < t.size(0); ++f) {
    const double *row = p + f * N_COLUMNS;
    const double centre = row[0];
    TORCH_CHECK(centre >= 0 && centre < n_elements && centre == std::floor(centre),
                "nnmd.Descriptors: function ", f, ": centre element ", centre, " out of range");
    nnmd::SymmetryFunction sf;
    sf.type = static_cast<int>(row[1]);
    sf.e1 = static_cast<int>(row[2]);
    sf.e2 = static_cast<int>(row[3]);
    sf.eta = row[4];
    sf.rs = row[5];
    sf.rc = row[6];
    sf.lambda = row[7];
    sf.zeta = row[8];
    sf.cutoff_type = static_cast<int>(row[9]);
    sf.cutoff_alpha = row[10];
    const std::string problem = nnmd::validate(sf, static_cast<int>(n_elements));
    TORCH_CHECK(problem.empty(), "nnmd.Descriptors: function ", f, ": ", problem);
    per_element[static_cast<std::size_t>(centre)].push_back(sf);
  }
  return per_element;
}

std::vector<nnmd::DescriptorCalculator>
calculators(const std::vector<std::vector<nnmd::SymmetryFunction>> &per_element)
{
  std::vector<nnmd::DescriptorCalculator> out;
  for (const auto &fs : per_element) out.emplace_back(fs, static_cast<int>(per_element.size()));
  return out;
}
}    // namespace

Descriptors::Descriptors(int64_t n_elements, const at::Tensor &functions) :
    Descriptors(parse_functions(n_elements, functions))
{
}

Descriptors::Descriptors(const std::vector<std::vector<nnmd::SymmetryFunction>> &per_element) :
    prototypes_(calculators(per_element)), table_(per_element)
{
}

int64_t Descriptors::cache_size(int64_t e) const
{
  const int64_t size = static_cast<int64_t>(prototype(e).cache_size());
  return device_math() ? 0 : size;
}

void Descriptors::set_method(const std::string &method)
{
  nnmd::DescriptorCalculator::Method m = nnmd::DescriptorCalculator::Method::Auto;
  if (method == "auto" || method == "device")
    m = nnmd::DescriptorCalculator::Method::Auto;
  else if (method == "direct")
    m = nnmd::DescriptorCalculator::Method::Direct;
  else if (method == "moments")
    m = nnmd::DescriptorCalculator::Method::Moments;
  else
    TORCH_CHECK(false, "nnmd.Descriptors: unknown method '", method,
                "' (auto, direct, moments or device)");
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto &c : prototypes_) c.set_method(m);
  pool_.clear();
  method_ = method;
}

std::string Descriptors::method() const
{
  std::lock_guard<std::mutex> lock(mutex_);
  return method_;
}

bool Descriptors::device_math() const
{
  return method() == "device";
}

std::unique_ptr<Worker> Descriptors::acquire() const
{
  std::lock_guard<std::mutex> lock(mutex_);
  if (!pool_.empty()) {
    std::unique_ptr<Worker> w = std::move(pool_.back());
    pool_.pop_back();
    return w;
  }
  auto w = std::make_unique<Worker>();
  w->calc = prototypes_;
  return w;
}

void Descriptors::release(std::unique_ptr<Worker> w) const
{
  std::lock_guard<std::mutex> lock(mutex_);
  pool_.push_back(std::move(w));
}

std::pair<at::Tensor, at::Tensor> Descriptors::tables_on(const at::Device &device) const
{
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto &entry : on_device_)
    if (entry.first == device) return entry.second;
  const auto &bytes = table_.bytes();
  at::Tensor t = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
  std::copy(bytes.begin(), bytes.end(), t.data_ptr<uint8_t>());
  std::vector<int64_t> S;
  for (int e = 0; e < table_.n_elements(); ++e) S.push_back(table_.num_functions(e));
  at::Tensor counts = at::tensor(S, at::kLong);
  auto on = std::make_pair(t.to(device), counts.to(device));
  on_device_.emplace_back(device, on);
  return on;
}

const nnmd::DescriptorCalculator &Descriptors::prototype(int64_t e) const
{
  TORCH_CHECK(e >= 0 && e < n_elements(), "nnmd.Descriptors: element index ", e, " out of range");
  return prototypes_[e];
}

void register_descriptors_class()
{
  static std::once_flag once;
  std::call_once(once, [] {
    torch::class_<Descriptors>("nnmd", "Descriptors")
        .def(torch::init<int64_t, at::Tensor>())
        .def("n_elements", &Descriptors::n_elements)
        .def("num_functions", &Descriptors::num_functions)
        .def("cache_size", &Descriptors::cache_size)
        .def("cutoff", &Descriptors::cutoff)
        .def("set_method", &Descriptors::set_method)
        .def("method", &Descriptors::method);
  });
}

CsrTensors checked_csr(const at::Tensor &species, const at::Tensor &offsets,
                       const at::Tensor &neighbor_species, const at::Tensor &vectors)
{
  TORCH_CHECK(species.dim() == 1, "nnmd: species must be one-dimensional (N,)");
  TORCH_CHECK(offsets.dim() == 1 && offsets.size(0) == species.size(0) + 1,
              "nnmd: offsets must have N + 1 entries");
  TORCH_CHECK(vectors.dim() == 2 && vectors.size(1) == 3, "nnmd: vectors must be (P, 3)");
  TORCH_CHECK(neighbor_species.dim() == 1 && neighbor_species.size(0) == vectors.size(0),
              "nnmd: neighbor_species must have one entry per pair (P,)");
  TORCH_CHECK(vectors.scalar_type() == at::kDouble, "nnmd: vectors must be float64 (got ",
              vectors.scalar_type(), ")");
  CsrTensors t;
  t.species = species.to(at::kLong).contiguous();
  t.offsets = offsets.to(at::kLong).contiguous();
  t.nspecies = neighbor_species.to(at::kLong).contiguous();
  t.vectors = vectors.contiguous();
  t.n_rows = species.size(0);
  t.n_pairs = vectors.size(0);
  return t;
}

}    // namespace nnmd::torch_ops

namespace {

using nnmd::torch_ops::Descriptors;
using nnmd::torch_ops::DescriptorsPtr;
using nnmd::torch_ops::Worker;

constexpr int64_t GRAIN = 4;    // atoms per parallel chunk at least

// The validated CSR batch and the per-row offsets into the flat outputs.
struct Batch : nnmd::torch_ops::CsrTensors {
  explicit Batch(nnmd::torch_ops::CsrTensors csr) : CsrTensors(std::move(csr)) {}
  const int64_t *sp = nullptr, *off = nullptr, *nsp = nullptr;
  const double *d = nullptr;
  std::vector<int64_t> g_off, c_off;    // (N+1): descriptor and cache entries before row i
  int64_t total() const { return g_off.back(); }
  int64_t cache_total() const { return c_off.back(); }
};

Batch make_batch(const Descriptors &D, const at::Tensor &species, const at::Tensor &offsets,
                 const at::Tensor &neighbor_species, const at::Tensor &vectors)
{
  TORCH_CHECK(species.device().is_cpu() && offsets.device().is_cpu() &&
                  neighbor_species.device().is_cpu() && vectors.device().is_cpu(),
              "nnmd: the symmetry-function operators run on CPU tensors");
  Batch b(nnmd::torch_ops::checked_csr(species, offsets, neighbor_species, vectors));
  b.sp = b.species.data_ptr<int64_t>();
  b.off = b.offsets.data_ptr<int64_t>();
  b.nsp = b.nspecies.data_ptr<int64_t>();
  b.d = b.vectors.data_ptr<double>();
  TORCH_CHECK(b.off[0] == 0 && b.off[b.n_rows] == b.n_pairs,
              "nnmd: offsets must start at 0 and end at the number of pairs");
  const int64_t nel = D.n_elements();
  std::vector<int64_t> S(nel), C(nel);
  for (int64_t e = 0; e < nel; ++e) {
    S[e] = D.num_functions(e);
    C[e] = D.cache_size(e);
  }
  b.g_off.assign(b.n_rows + 1, 0);
  b.c_off.assign(b.n_rows + 1, 0);
  for (int64_t i = 0; i < b.n_rows; ++i) {
    const int64_t e = b.sp[i];
    TORCH_CHECK(e >= 0 && e < nel, "nnmd: species[", i, "] = ", e, " is not an element index");
    TORCH_CHECK(b.off[i + 1] >= b.off[i], "nnmd: offsets must not decrease");
    b.g_off[i + 1] = b.g_off[i] + S[e];
    b.c_off[i + 1] = b.c_off[i] + C[e];
  }
  return b;
}

// the neighbours of row i into nb (checks element indices and r > 0)
void gather(const Batch &b, int64_t i, int64_t nel, nnmd::Neighbors &nb)
{
  nb.clear();
  for (int64_t p = b.off[i]; p < b.off[i + 1]; ++p) {
    const double x = b.d[3 * p], y = b.d[3 * p + 1], z = b.d[3 * p + 2];
    const double r = std::sqrt(x * x + y * y + z * z);
    const int64_t e = b.nsp[p];
    TORCH_CHECK(e >= 0 && e < nel, "nnmd: neighbor_species[", p, "] = ", e,
                " is not an element index");
    TORCH_CHECK(r > 0.0, "nnmd: pair ", p, " (row ", i,
                ") has zero length: two atoms at the "
                "same position");
    nb.push(x, y, z, r, static_cast<int>(e));
  }
}

// f(worker, row) for every row, in parallel; each chunk holds one worker
template <class F> void for_each_row(const Descriptors &D, const Batch &b, F f)
{
  at::parallel_for(0, b.n_rows, GRAIN, [&](int64_t begin, int64_t end) {
    std::unique_ptr<Worker> w = D.acquire();
    for (int64_t i = begin; i < end; ++i) {
      gather(b, i, D.n_elements(), w->nb);
      f(*w, i);
    }
    D.release(std::move(w));
  });
}

const double *cache_ptr(const at::Tensor &cache, const Batch &b, int64_t i)
{
  if (cache.numel() == 0 || b.c_off[i + 1] == b.c_off[i]) return nullptr;
  return cache.data_ptr<double>() + b.c_off[i];
}

at::Tensor checked_cache(const at::Tensor &cache, const Batch &b)
{
  if (cache.numel() == 0) return cache;
  TORCH_CHECK(cache.scalar_type() == at::kDouble && cache.dim() == 1 &&
                  cache.numel() == b.cache_total(),
              "nnmd: cache must be the float64 (", b.cache_total(),
              ",) tensor that symmetry_functions returned for this batch");
  return cache.contiguous();
}

std::tuple<at::Tensor, at::Tensor>
symmetry_functions(const DescriptorsPtr &D, const at::Tensor &species, const at::Tensor &offsets,
                   const at::Tensor &neighbor_species, const at::Tensor &vectors)
{
  if (D->device_math())
    return nnmd::torch_ops::device_symmetry_functions(*D, species, offsets, neighbor_species,
                                                      vectors, nnmd::torch_ops::host_launch);
  const Batch b = make_batch(*D, species, offsets, neighbor_species, vectors);
  const auto opts = vectors.options().dtype(at::kDouble);
  at::Tensor G = at::empty({b.total()}, opts);
  at::Tensor cache = at::zeros({b.cache_total()}, opts);
  double *g = G.data_ptr<double>();
  double *c = cache.data_ptr<double>();
  for_each_row(*D, b, [&](Worker &w, int64_t i) {
    const bool cached = b.c_off[i + 1] > b.c_off[i];
    w.calc[b.sp[i]].compute(w.nb, g + b.g_off[i], cached ? c + b.c_off[i] : nullptr);
  });
  return {G, cache};
}

// leading dimension M of c (T,) / (M, T) or u (P, 3) / (M, P, 3)
int64_t n_vectors(const at::Tensor &x, int64_t base_dim, const char *name)
{
  TORCH_CHECK(x.dim() == base_dim || x.dim() == base_dim + 1, "nnmd: ", name,
              " has the wrong number of dimensions");
  return x.dim() == base_dim ? 1 : x.size(0);
}

at::Tensor contract(const DescriptorsPtr &D, const at::Tensor &species, const at::Tensor &offsets,
                    const at::Tensor &neighbor_species, const at::Tensor &vectors,
                    const at::Tensor &c, const at::Tensor &cache)
{
  if (D->device_math())
    return nnmd::torch_ops::device_contract(*D, species, offsets, neighbor_species, vectors, c,
                                            cache, nnmd::torch_ops::host_launch);
  const Batch b = make_batch(*D, species, offsets, neighbor_species, vectors);
  const int64_t M = n_vectors(c, 1, "c");
  TORCH_CHECK(c.size(-1) == b.total(), "nnmd: c must have ", b.total(),
              " entries per vector (the descriptors of the batch), got ", c.size(-1));
  const at::Tensor cc = c.to(at::kDouble).contiguous();
  const at::Tensor ch = checked_cache(cache, b);
  at::Tensor v = c.dim() == 1 ? at::empty({b.n_pairs, 3}, cc.options())
                              : at::empty({M, b.n_pairs, 3}, cc.options());
  const double *cp = cc.data_ptr<double>();
  double *vp = v.data_ptr<double>();
  const int64_t T = b.total(), P3 = 3 * b.n_pairs;
  for_each_row(*D, b, [&](Worker &w, int64_t i) {
    const nnmd::DescriptorCalculator &calc = w.calc[b.sp[i]];
    const double *atom_cache = cache_ptr(ch, b, i);
    if (M == 1) {
      calc.contract(w.nb, cp + b.g_off[i], vp + 3 * b.off[i], atom_cache);
      return;
    }
    // all M vectors in one kernel call: gather this atom's rows of c, scatter its rows of v
    const int64_t S = calc.size(), n3 = 3 * static_cast<int64_t>(w.nb.size());
    w.c.resize(static_cast<std::size_t>(M * S));
    w.v.resize(static_cast<std::size_t>(M * n3));
    for (int64_t m = 0; m < M; ++m) std::copy_n(cp + m * T + b.g_off[i], S, w.c.data() + m * S);
    calc.contract_many(w.nb, static_cast<int>(M), w.c.data(), w.v.data(), atom_cache);
    for (int64_t m = 0; m < M; ++m)
      std::copy_n(w.v.data() + m * n3, n3, vp + m * P3 + 3 * b.off[i]);
  });
  return v;
}

at::Tensor jvp(const DescriptorsPtr &D, const at::Tensor &species, const at::Tensor &offsets,
               const at::Tensor &neighbor_species, const at::Tensor &vectors, const at::Tensor &u,
               const at::Tensor &cache)
{
  if (D->device_math())
    return nnmd::torch_ops::device_jvp(*D, species, offsets, neighbor_species, vectors, u, cache,
                                       nnmd::torch_ops::host_launch);
  const Batch b = make_batch(*D, species, offsets, neighbor_species, vectors);
  const int64_t M = n_vectors(u, 2, "u");
  TORCH_CHECK(u.size(-1) == 3 && u.size(-2) == b.n_pairs, "nnmd: u must be (", b.n_pairs,
              ", 3) per vector");
  const at::Tensor ch = checked_cache(cache, b);
  const at::Tensor uu = u.to(at::kDouble).contiguous();
  at::Tensor g = u.dim() == 2 ? at::empty({b.total()}, uu.options())
                              : at::empty({M, b.total()}, uu.options());
  const double *up = uu.data_ptr<double>();
  double *gp = g.data_ptr<double>();
  const int64_t T = b.total(), P3 = 3 * b.n_pairs;
  for_each_row(*D, b, [&](Worker &w, int64_t i) {
    const double *atom_cache = cache_ptr(ch, b, i);
    for (int64_t m = 0; m < M; ++m)
      w.calc[b.sp[i]].jvp(w.nb, up + m * P3 + 3 * b.off[i], gp + m * T + b.g_off[i], atom_cache);
  });
  return g;
}

// G and the dense Jacobian: one contract_many per atom with the S unit vectors
std::tuple<at::Tensor, at::Tensor> jacobian(const DescriptorsPtr &D, const at::Tensor &species,
                                            const at::Tensor &offsets,
                                            const at::Tensor &neighbor_species,
                                            const at::Tensor &vectors)
{
  if (D->device_math())
    return nnmd::torch_ops::device_jacobian(*D, species, offsets, neighbor_species, vectors,
                                            nnmd::torch_ops::host_launch);
  const Batch b = make_batch(*D, species, offsets, neighbor_species, vectors);
  std::vector<int64_t> j_off(b.n_rows + 1, 0);
  for (int64_t i = 0; i < b.n_rows; ++i)
    j_off[i + 1] = j_off[i] + 3 * (b.off[i + 1] - b.off[i]) * (b.g_off[i + 1] - b.g_off[i]);
  const auto opts = vectors.options().dtype(at::kDouble);
  at::Tensor G = at::empty({b.total()}, opts);
  at::Tensor dG = at::empty({j_off.back()}, opts);
  double *g = G.data_ptr<double>();
  double *dg = dG.data_ptr<double>();
  for_each_row(*D, b, [&](Worker &w, int64_t i) {
    const nnmd::DescriptorCalculator &calc = w.calc[b.sp[i]];
    const int64_t S = calc.size(), n = static_cast<int64_t>(w.nb.size());
    w.cache.resize(calc.cache_size());
    double *atom_cache = w.cache.empty() ? nullptr : w.cache.data();
    calc.compute(w.nb, g + b.g_off[i], atom_cache);
    if (S == 0 || n == 0) return;
    w.c.assign(static_cast<std::size_t>(S * S), 0.0);
    for (int64_t s = 0; s < S; ++s) w.c[s * S + s] = 1.0;
    w.v.resize(static_cast<std::size_t>(S * n * 3));
    calc.contract_many(w.nb, static_cast<int>(S), w.c.data(), w.v.data(), atom_cache);
    // kernel layout [s][k][a] -> [k][s][a]
    double *out = dg + j_off[i];
    for (int64_t s = 0; s < S; ++s)
      for (int64_t k = 0; k < n; ++k)
        for (int a = 0; a < 3; ++a) out[(k * S + s) * 3 + a] = w.v[(s * n + k) * 3 + a];
  });
  return {G, dG};
}

}    // namespace

TORCH_LIBRARY(nnmd, m)
{
  nnmd::torch_ops::register_descriptors_class();
  m.def("symmetry_functions(__torch__.torch.classes.nnmd.Descriptors descriptors, "
        "Tensor species, Tensor offsets, Tensor neighbor_species, Tensor vectors) "
        "-> (Tensor G, Tensor cache)");
  m.def("contract(__torch__.torch.classes.nnmd.Descriptors descriptors, Tensor species, "
        "Tensor offsets, Tensor neighbor_species, Tensor vectors, Tensor c, Tensor cache) "
        "-> Tensor v");
  m.def("jvp(__torch__.torch.classes.nnmd.Descriptors descriptors, Tensor species, "
        "Tensor offsets, Tensor neighbor_species, Tensor vectors, Tensor u, Tensor cache) "
        "-> Tensor g");
  m.def("jacobian(__torch__.torch.classes.nnmd.Descriptors descriptors, Tensor species, "
        "Tensor offsets, Tensor neighbor_species, Tensor vectors) -> (Tensor G, Tensor dGdd)");
}

// CPU kernels (the autograd formulas are in python/nnmd_lammps/descriptors/ops.py)
TORCH_LIBRARY_IMPL(nnmd, CPU, m)
{
  nnmd::torch_ops::register_descriptors_class();
  m.impl("symmetry_functions", &symmetry_functions);
  m.impl("contract", &contract);
  m.impl("jvp", &jvp);
  m.impl("jacobian", &jacobian);
}
