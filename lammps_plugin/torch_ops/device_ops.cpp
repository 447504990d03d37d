/* nnmd-lammps: the operators on the per-atom functions of the GPU, on any device
   (device_ops.h). */

#include "torch_ops/device_ops.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <utility>

namespace nnmd::torch_ops {

namespace {

constexpr int64_t GRAIN = 4;    // rows per parallel chunk at least (host_launch)

// The batch on its device: int64 and float64 contiguous tensors, the descriptor offsets
// g_off of the rows, and the error word the passes set.
struct DeviceBatch : CsrTensors {
  explicit DeviceBatch(CsrTensors csr) : CsrTensors(std::move(csr)) {}
  at::Tensor g_off, flag;
  at::Tensor table;    // the symmetry-function table on this device (bytes)
  nnmd::device::Table t{};
  int64_t total = 0;

  nnmd::device::Batch view() const
  {
    nnmd::device::Batch b{};
    b.n_rows = n_rows;
    b.n_pairs = n_pairs;
    b.species = species.data_ptr<int64_t>();
    b.offsets = offsets.data_ptr<int64_t>();
    b.neighbor_species = nspecies.data_ptr<int64_t>();
    b.vectors = vectors.data_ptr<double>();
    b.g_off = g_off.data_ptr<int64_t>();
    return b;
  }
  nnmd::device::Pass pass(int kind) const
  {
    nnmd::device::Pass a{};
    a.kind = kind;
    a.n_vectors = 1;
    a.total = total;
    a.flag = flag.data_ptr<int>();
    return a;
  }
};

DeviceBatch prepare(const Descriptors &D, const at::Tensor &species, const at::Tensor &offsets,
                    const at::Tensor &neighbor_species, const at::Tensor &vectors)
{
  const at::Device dev = vectors.device();
  TORCH_CHECK(species.device() == dev && offsets.device() == dev &&
                  neighbor_species.device() == dev,
              "nnmd: species, offsets, neighbor_species and vectors must be on one device");
  DeviceBatch b(checked_csr(species, offsets, neighbor_species, vectors));
  const auto long_opts = b.species.options();
  auto [table, counts] = D.tables_on(dev);
  b.table = table;
  b.t = D.table().view(table.data_ptr<uint8_t>());
  b.g_off = at::zeros({b.n_rows + 1}, long_opts);
  if (b.n_rows > 0) {
    // S of every row (species out of range are clamped here and reported by the pass)
    const at::Tensor S = counts.index_select(0, b.species.clamp(0, D.n_elements() - 1));
    b.g_off.slice(0, 1).copy_(S.cumsum(0));
    b.total = b.g_off[b.n_rows].item<int64_t>();
  } else {
    TORCH_CHECK(b.n_pairs == 0 && b.offsets[0].item<int64_t>() == 0,
                "nnmd: offsets must start at 0 and end at the number of pairs");
  }
  b.flag = at::zeros({1}, long_opts.dtype(at::kInt));
  return b;
}

// the error word of the passes as the CPU operators' messages
void check(const DeviceBatch &b)
{
  if (b.n_rows == 0) return;
  const int bits = b.flag.item<int>();
  TORCH_CHECK(!(bits & nnmd::device::BAD_OFFSETS),
              "nnmd: offsets must start at 0, not decrease and end at the number of pairs");
  TORCH_CHECK(!(bits & nnmd::device::BAD_SPECIES), "nnmd: a species entry is not an element index");
  TORCH_CHECK(!(bits & nnmd::device::BAD_NEIGHBOR_SPECIES),
              "nnmd: a neighbor_species entry is not an element index");
  TORCH_CHECK(!(bits & nnmd::device::ZERO_LENGTH),
              "nnmd: a pair has zero length: two atoms at the same position");
}

void check_no_cache(const at::Tensor &cache)
{
  TORCH_CHECK(cache.numel() == 0,
              "nnmd: cache must be the empty tensor that symmetry_functions returned for this "
              "batch (the per-atom functions of the GPU keep no cache)");
}

// leading dimension M of c (T,) / (M, T) or u (P, 3) / (M, P, 3)
int64_t n_vectors(const at::Tensor &x, int64_t base_dim, const char *name)
{
  TORCH_CHECK(x.dim() == base_dim || x.dim() == base_dim + 1, "nnmd: ", name,
              " has the wrong number of dimensions");
  return x.dim() == base_dim ? 1 : x.size(0);
}

}    // namespace

void host_launch(const nnmd::device::Table &t, const nnmd::device::Batch &b,
                 const nnmd::device::Pass &a)
{
  at::parallel_for(0, b.n_rows, GRAIN, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) nnmd::device::evaluate_row(t, b, a, i);
  });
}

std::tuple<at::Tensor, at::Tensor>
device_symmetry_functions(const Descriptors &D, const at::Tensor &species,
                          const at::Tensor &offsets, const at::Tensor &neighbor_species,
                          const at::Tensor &vectors, Launch launch)
{
  const DeviceBatch b = prepare(D, species, offsets, neighbor_species, vectors);
  const auto opts = b.vectors.options();
  at::Tensor G = at::zeros({b.total}, opts);
  nnmd::device::Pass a = b.pass(nnmd::device::VALUES);
  a.out = G.data_ptr<double>();
  launch(b.t, b.view(), a);
  check(b);
  return {G, at::zeros({0}, opts)};
}

at::Tensor device_contract(const Descriptors &D, const at::Tensor &species,
                           const at::Tensor &offsets, const at::Tensor &neighbor_species,
                           const at::Tensor &vectors, const at::Tensor &c, const at::Tensor &cache,
                           Launch launch)
{
  const DeviceBatch b = prepare(D, species, offsets, neighbor_species, vectors);
  const int64_t M = n_vectors(c, 1, "c");
  TORCH_CHECK(c.size(-1) == b.total, "nnmd: c must have ", b.total,
              " entries per vector (the descriptors of the batch), got ", c.size(-1));
  TORCH_CHECK(c.device() == vectors.device(), "nnmd: c must be on the device of the vectors");
  check_no_cache(cache);
  const at::Tensor cc = c.to(at::kDouble).contiguous();
  at::Tensor v = c.dim() == 1 ? at::zeros({b.n_pairs, 3}, cc.options())
                              : at::zeros({M, b.n_pairs, 3}, cc.options());
  if (M == 0) return v;
  nnmd::device::Pass a = b.pass(nnmd::device::CONTRACT);
  a.n_vectors = static_cast<int>(M);
  a.in = cc.data_ptr<double>();
  a.out = v.data_ptr<double>();
  launch(b.t, b.view(), a);
  check(b);
  return v;
}

at::Tensor device_jvp(const Descriptors &D, const at::Tensor &species, const at::Tensor &offsets,
                      const at::Tensor &neighbor_species, const at::Tensor &vectors,
                      const at::Tensor &u, const at::Tensor &cache, Launch launch)
{
  const DeviceBatch b = prepare(D, species, offsets, neighbor_species, vectors);
  const int64_t M = n_vectors(u, 2, "u");
  TORCH_CHECK(u.size(-1) == 3 && u.size(-2) == b.n_pairs, "nnmd: u must be (", b.n_pairs,
              ", 3) per vector");
  TORCH_CHECK(u.device() == vectors.device(), "nnmd: u must be on the device of the vectors");
  check_no_cache(cache);
  const at::Tensor uu = u.to(at::kDouble).contiguous();
  at::Tensor g = u.dim() == 2 ? at::zeros({b.total}, uu.options())
                              : at::zeros({M, b.total}, uu.options());
  if (M == 0) return g;
  nnmd::device::Pass a = b.pass(nnmd::device::TANGENT);
  a.n_vectors = static_cast<int>(M);
  a.in = uu.data_ptr<double>();
  a.out = g.data_ptr<double>();
  launch(b.t, b.view(), a);
  check(b);
  return g;
}

std::tuple<at::Tensor, at::Tensor> device_jacobian(const Descriptors &D, const at::Tensor &species,
                                                   const at::Tensor &offsets,
                                                   const at::Tensor &neighbor_species,
                                                   const at::Tensor &vectors, Launch launch)
{
  const DeviceBatch b = prepare(D, species, offsets, neighbor_species, vectors);
  const auto opts = b.vectors.options();
  // row i's block: 3 n_i S_i entries
  at::Tensor j_off = at::zeros({b.n_rows + 1}, b.g_off.options());
  int64_t j_total = 0;
  if (b.n_rows > 0) {
    // the block sizes need valid offsets before anything is allocated
    const at::Tensor n = b.offsets.slice(0, 1) - b.offsets.slice(0, 0, b.n_rows);
    const bool valid =
        (n.min().ge(0) & b.offsets[0].eq(0) & b.offsets[b.n_rows].eq(b.n_pairs)).item<bool>();
    TORCH_CHECK(valid,
                "nnmd: offsets must start at 0, not decrease and end at the number of pairs");
    const at::Tensor S = b.g_off.slice(0, 1) - b.g_off.slice(0, 0, b.n_rows);
    j_off.slice(0, 1).copy_((3 * n * S).cumsum(0));
    j_total = j_off[b.n_rows].item<int64_t>();
  }
  at::Tensor G = at::zeros({b.total}, opts);
  at::Tensor dG = at::zeros({j_total}, opts);
  nnmd::device::Pass a = b.pass(nnmd::device::JACOBIAN);
  a.out = G.data_ptr<double>();
  a.jac = dG.data_ptr<double>();
  a.jac_off = j_off.data_ptr<int64_t>();
  launch(b.t, b.view(), a);
  check(b);
  return {G, dG};
}

}    // namespace nnmd::torch_ops
