/* nnmd-lammps: the symmetry-function operators for CUDA tensors (TORCH_LIBRARY_IMPL(nnmd,
   CUDA, m)): the same operator names, schemas and layouts as the CPU operators (ops.cpp),
   computed by the per-atom functions of cuda/sf_device.h, one GPU thread per atom
   (cuda/sf_kernels.cu), on the current CUDA stream of the tensors' device. No per-atom
   cache: symmetry_functions returns an empty one, and contract and jvp take only that.

   Compiled only when CMake finds a CUDA toolkit and the torch it builds against has CUDA
   (NNMD_CUDA, docs/gpu.md); the kernels themselves are torch-free (nnmd_cuda_kernels). */

#include "cuda/sf_kernels.h"
#include "torch_ops/descriptors.h"
#include "torch_ops/device_ops.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

namespace {

using nnmd::torch_ops::DescriptorsPtr;

void cuda_launch(const nnmd::device::Table &t, const nnmd::device::Batch &b,
                 const nnmd::device::Pass &a)
{
  const int err = nnmd::cuda::launch(t, b, a, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == 0, "nnmd: CUDA kernel launch failed: ", nnmd::cuda::error_string(err));
}

// the batch on one CUDA device (before the device guard, which needs a CUDA device)
void require_cuda(const at::Tensor &species, const at::Tensor &offsets,
                  const at::Tensor &neighbor_species, const at::Tensor &vectors)
{
  const at::Device dev = vectors.device();
  TORCH_CHECK(species.device() == dev && offsets.device() == dev &&
                  neighbor_species.device() == dev,
              "nnmd: species, offsets, neighbor_species and vectors must be on one device");
  TORCH_CHECK(vectors.is_cuda(), "nnmd: the CUDA operators take CUDA tensors");
}

std::tuple<at::Tensor, at::Tensor> symmetry_functions_cuda(const DescriptorsPtr &D,
                                                           const at::Tensor &species,
                                                           const at::Tensor &offsets,
                                                           const at::Tensor &neighbor_species,
                                                           const at::Tensor &vectors)
{
  require_cuda(species, offsets, neighbor_species, vectors);
  const c10::cuda::CUDAGuard guard(vectors.device());
  return nnmd::torch_ops::device_symmetry_functions(*D, species, offsets, neighbor_species, vectors,
                                                    cuda_launch);
}

at::Tensor contract_cuda(const DescriptorsPtr &D, const at::Tensor &species,
                         const at::Tensor &offsets, const at::Tensor &neighbor_species,
                         const at::Tensor &vectors, const at::Tensor &c, const at::Tensor &cache)
{
  require_cuda(species, offsets, neighbor_species, vectors);
  const c10::cuda::CUDAGuard guard(vectors.device());
  return nnmd::torch_ops::device_contract(*D, species, offsets, neighbor_species, vectors, c, cache,
                                          cuda_launch);
}

at::Tensor jvp_cuda(const DescriptorsPtr &D, const at::Tensor &species, const at::Tensor &offsets,
                    const at::Tensor &neighbor_species, const at::Tensor &vectors,
                    const at::Tensor &u, const at::Tensor &cache)
{
  require_cuda(species, offsets, neighbor_species, vectors);
  const c10::cuda::CUDAGuard guard(vectors.device());
  return nnmd::torch_ops::device_jvp(*D, species, offsets, neighbor_species, vectors, u, cache,
                                     cuda_launch);
}

std::tuple<at::Tensor, at::Tensor> jacobian_cuda(const DescriptorsPtr &D, const at::Tensor &species,
                                                 const at::Tensor &offsets,
                                                 const at::Tensor &neighbor_species,
                                                 const at::Tensor &vectors)
{
  require_cuda(species, offsets, neighbor_species, vectors);
  const c10::cuda::CUDAGuard guard(vectors.device());
  return nnmd::torch_ops::device_jacobian(*D, species, offsets, neighbor_species, vectors,
                                          cuda_launch);
}

}    // namespace

TORCH_LIBRARY_IMPL(nnmd, CUDA, m)
{
  // the schemas below name the class: register it first, whichever of this and ops.cpp
  // is initialised first
  nnmd::torch_ops::register_descriptors_class();
  m.impl("symmetry_functions", &symmetry_functions_cuda);
  m.impl("contract", &contract_cuda);
  m.impl("jvp", &jvp_cuda);
  m.impl("jacobian", &jacobian_cuda);
}
