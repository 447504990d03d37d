/* nnmd-lammps: the operators on the per-atom functions of the GPU (cuda/sf_device.h), on
   any device: the batch is prepared with torch operations on the device of the vectors
   (no copy to the host but the sizes and an error word), and a Launch runs one pass over
   its rows: host_launch on the CPU (the operators' method "device", what
   tests/test_cuda_math.py checks), the CUDA launch of ops_cuda.cpp on a GPU.

   Same signatures, layouts and errors as the CPU operators (ops.cpp), except that there
   is no per-atom cache: symmetry_functions returns an empty cache and contract and jvp
   accept only an empty one. */

#ifndef NNMD_TORCH_OPS_DEVICE_OPS_H
#define NNMD_TORCH_OPS_DEVICE_OPS_H

#include "cuda/sf_device.h"
#include "torch_ops/descriptors.h"

#include <ATen/ATen.h>

#include <tuple>

namespace nnmd::torch_ops {

// runs pass a over every row of b (all pointers in the memory of the batch's device)
using Launch = void (*)(const nnmd::device::Table &t, const nnmd::device::Batch &b,
                        const nnmd::device::Pass &a);

// the rows one after another on this thread's CPU (in parallel over chunks of rows)
void host_launch(const nnmd::device::Table &t, const nnmd::device::Batch &b,
                 const nnmd::device::Pass &a);

std::tuple<at::Tensor, at::Tensor>
device_symmetry_functions(const Descriptors &D, const at::Tensor &species,
                          const at::Tensor &offsets, const at::Tensor &neighbor_species,
                          const at::Tensor &vectors, Launch launch);
at::Tensor device_contract(const Descriptors &D, const at::Tensor &species,
                           const at::Tensor &offsets, const at::Tensor &neighbor_species,
                           const at::Tensor &vectors, const at::Tensor &c, const at::Tensor &cache,
                           Launch launch);
at::Tensor device_jvp(const Descriptors &D, const at::Tensor &species, const at::Tensor &offsets,
                      const at::Tensor &neighbor_species, const at::Tensor &vectors,
                      const at::Tensor &u, const at::Tensor &cache, Launch launch);
std::tuple<at::Tensor, at::Tensor> device_jacobian(const Descriptors &D, const at::Tensor &species,
                                                   const at::Tensor &offsets,
                                                   const at::Tensor &neighbor_species,
                                                   const at::Tensor &vectors, Launch launch);

}    // namespace nnmd::torch_ops

#endif
