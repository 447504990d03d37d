/* nnmd-lammps: the symmetry-function passes on a GPU (sf_kernels.h): one thread per row
   (central atom) runs nnmd::device::evaluate_row, the function that the CPU runs in the
   operators' method "device". No torch: compiled by nvcc alone (the target
   nnmd_cuda_kernels, lammps_plugin/cuda/CMakeLists.txt). */

#include "cuda/sf_kernels.h"

#include <cuda_runtime.h>

namespace nnmd::cuda {

namespace {
template <int KIND, int NV>
__global__ void __launch_bounds__(BLOCK)
    row_kernel(device::Table t, device::Batch b, device::Pass a)
{
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < b.n_rows) device::evaluate_row<KIND, NV>(t, b, a, i);
}
}    // namespace

int launch(const device::Table &t, const device::Batch &b, const device::Pass &a, void *stream)
{
  if (b.n_rows == 0) return 0;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const unsigned blocks = static_cast<unsigned>((b.n_rows + BLOCK - 1) / BLOCK);
  const bool many = a.n_vectors > 1;
  switch (a.kind) {
    case device::VALUES: row_kernel<device::VALUES, 1><<<blocks, BLOCK, 0, s>>>(t, b, a); break;
    case device::CONTRACT:
      if (many)
        row_kernel<device::CONTRACT, device::MAX_CHUNK><<<blocks, BLOCK, 0, s>>>(t, b, a);
      else
        row_kernel<device::CONTRACT, 1><<<blocks, BLOCK, 0, s>>>(t, b, a);
      break;
    case device::TANGENT:
      if (many)
        row_kernel<device::TANGENT, device::MAX_CHUNK><<<blocks, BLOCK, 0, s>>>(t, b, a);
      else
        row_kernel<device::TANGENT, 1><<<blocks, BLOCK, 0, s>>>(t, b, a);
      break;
    default: row_kernel<device::JACOBIAN, 1><<<blocks, BLOCK, 0, s>>>(t, b, a); break;
  }
  return static_cast<int>(cudaGetLastError());
}

const char *error_string(int code)
{
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}

}    // namespace nnmd::cuda
