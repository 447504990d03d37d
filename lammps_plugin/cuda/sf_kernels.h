/* nnmd-lammps: launches of the per-atom symmetry-function passes (sf_device.h) on a GPU,
   one thread per row of the batch (sf_kernels.cu). Plain C++ declarations: no CUDA, no
   torch headers needed to call them. */

#ifndef NNMD_CUDA_SF_KERNELS_H
#define NNMD_CUDA_SF_KERNELS_H

#include "cuda/sf_device.h"

namespace nnmd::cuda {

// Threads per block of the kernels.
constexpr int BLOCK = 128;

// Runs pass a.kind over every row of b on `stream` (a cudaStream_t; nullptr: the default
// stream), asynchronously. Every pointer in t, b and a is device memory. Returns the
// cudaError_t of the launch (0: launched).
int launch(const device::Table &t, const device::Batch &b, const device::Pass &a, void *stream);

// the message of an error code that launch() returned
const char *error_string(int code);

}    // namespace nnmd::cuda

#endif
