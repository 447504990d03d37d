/* nnmd-lammps: torch.classes.nnmd.Descriptors, the object every operator takes (ops.cpp
   registers it and the CPU operators; ops_cuda.cpp the CUDA operators).

   It holds, per element, the CPU kernels' calculator (kernels/symmetry_functions.h; a pool
   of private copies for the worker threads) and the same functions as the flat table of
   the per-atom functions of the GPU (cuda/sf_table.h), with a copy of that table on each
   device it was asked for. Torch and kernels headers only: never LAMMPS headers. */

#ifndef NNMD_TORCH_OPS_DESCRIPTORS_H
#define NNMD_TORCH_OPS_DESCRIPTORS_H

#include "cuda/sf_table.h"
#include "kernels/symmetry_functions.h"

#include <ATen/ATen.h>
#include <torch/custom_class.h>

#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace nnmd::torch_ops {

// one worker's calculators (one per element) and its neighbour buffer
struct Worker {
  std::vector<nnmd::DescriptorCalculator> calc;
  nnmd::Neighbors nb;
  std::vector<double> c, v, cache;    // gathered vectors, their contractions, one atom's cache
};

class Descriptors : public torch::CustomClassHolder {
 public:
  // functions: (F, 11) float64 [centre, type, e1, e2, eta, rs, rc, lambda, zeta, cutoff
  // type, cutoff alpha]
  Descriptors(int64_t n_elements, const at::Tensor &functions);

  int64_t n_elements() const { return static_cast<int64_t>(prototypes_.size()); }
  int64_t num_functions(int64_t e) const { return prototype(e).size(); }
  // the per-atom cache of the CPU kernels (0 with the method "device": no cache)
  int64_t cache_size(int64_t e) const;
  double cutoff(int64_t e) const { return prototype(e).cutoff(); }

  // How the CPU operators evaluate: "auto" (default), "direct" or "moments" (the CPU
  // kernels; how type-9 groups are evaluated), or "device" (the per-atom functions of the
  // GPU, cuda/sf_device.h, run on the CPU). The CUDA operators always run the latter.
  void set_method(const std::string &method);
  std::string method() const;
  bool device_math() const;

  std::unique_ptr<Worker> acquire() const;
  void release(std::unique_ptr<Worker> w) const;

  const nnmd::device::HostTable &table() const { return table_; }
  // (the table's bytes (uint8), S_e of every element (int64)) on `device`, copied there
  // on first use
  std::pair<at::Tensor, at::Tensor> tables_on(const at::Device &device) const;

 private:
  explicit Descriptors(const std::vector<std::vector<nnmd::SymmetryFunction>> &per_element);
  const nnmd::DescriptorCalculator &prototype(int64_t e) const;

  std::vector<nnmd::DescriptorCalculator> prototypes_;
  nnmd::device::HostTable table_;
  std::string method_ = "auto";
  mutable std::mutex mutex_;
  mutable std::vector<std::unique_ptr<Worker>> pool_;
  mutable std::vector<std::pair<at::Device, std::pair<at::Tensor, at::Tensor>>> on_device_;
};

using DescriptorsPtr = c10::intrusive_ptr<Descriptors>;

// The CSR batch that every operator takes (species, offsets, neighbor_species, vectors; the
// layout in ops.cpp) with the checks of shapes and of the dtype of the vectors that the CPU
// and the device operators share (each checks the devices itself, first): int64 indices and
// float64 vectors, contiguous, on the tensors' device.
struct CsrTensors {
  at::Tensor species, offsets, nspecies, vectors;
  int64_t n_rows = 0, n_pairs = 0;    // N, P
};
CsrTensors checked_csr(const at::Tensor &species, const at::Tensor &offsets,
                       const at::Tensor &neighbor_species, const at::Tensor &vectors);

// Registers torch.classes.nnmd.Descriptors once (whichever translation unit's static
// initialisation comes first: the operator registrations infer their schemas from it).
void register_descriptors_class();

}    // namespace nnmd::torch_ops

#endif
