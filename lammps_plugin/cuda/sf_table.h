/* nnmd-lammps: the symmetry functions of every element as one flat block of memory for the
   per-atom functions of sf_device.h (host code; no torch, no CUDA).

   HostTable packs the groups and functions of each element (grouped as the CPU kernels
   group them: type, neighbour elements, cutoff) into one byte block with 16-byte aligned
   parts. A copy of bytes() anywhere (host memory, or device memory after a cudaMemcpy or
   a torch .to(device)) becomes a device::Table with view(copy): the Table holds only
   pointers into that copy. */

#ifndef NNMD_CUDA_SF_TABLE_H
#define NNMD_CUDA_SF_TABLE_H

#include "cuda/sf_device.h"
#include "kernels/symmetry_functions.h"

#include <cstddef>
#include <vector>

namespace nnmd::device {

class HostTable {
 public:
  // per_element[e]: element e's (validated) functions in network-input order
  explicit HostTable(const std::vector<std::vector<SymmetryFunction>> &per_element);

  const std::vector<unsigned char> &bytes() const { return bytes_; }
  // the Table of a copy of bytes() at `base` (16-byte aligned)
  Table view(const void *base) const;
  int n_elements() const { return n_elements_; }
  int num_functions(int e) const { return n_functions_[e]; }
  int n_groups() const { return static_cast<int>(groups_.size()); }

 private:
  int n_elements_ = 0;
  std::vector<int> n_functions_, group_begin_;
  std::vector<Group> groups_;
  std::vector<Function> functions_;
  std::size_t off_n_functions_ = 0, off_group_begin_ = 0, off_groups_ = 0, off_functions_ = 0;
  std::vector<unsigned char> bytes_;
};

}    // namespace nnmd::device

#endif
