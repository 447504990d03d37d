/* nnmd-lammps: packing of the symmetry-function table (sf_table.h). */

#include "cuda/sf_table.h"

#include "kernels/limits.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace nnmd::device {

namespace {
std::size_t aligned(std::size_t n)
{
  return (n + 15) / 16 * 16;
}

template <class T>
void put(std::vector<unsigned char> &bytes, std::size_t offset, const std::vector<T> &v)
{
  if (!v.empty()) std::memcpy(bytes.data() + offset, v.data(), v.size() * sizeof(T));
}

bool same_cutoff(const Group &g, const SymmetryFunction &p)
{
  return g.cutoff_type == p.cutoff_type && g.rc == p.rc && g.rci == p.cutoff_alpha * p.rc;
}
}    // namespace

HostTable::HostTable(const std::vector<std::vector<SymmetryFunction>> &per_element) :
    n_elements_(static_cast<int>(per_element.size()))
{
  group_begin_.push_back(0);
  for (const auto &fs : per_element) {
    n_functions_.push_back(static_cast<int>(fs.size()));
    // groups of this element, each with the indices of its functions
    std::vector<Group> groups;
    std::vector<std::vector<int>> members;
    for (std::size_t s = 0; s < fs.size(); ++s) {
      const SymmetryFunction &p = fs[s];
      const int e1 = p.type == 2 ? p.e1 : std::min(p.e1, p.e2);
      const int e2 = p.type == 2 ? -1 : std::max(p.e1, p.e2);
      std::size_t k = 0;
      while (k < groups.size() &&
             !(groups[k].type == p.type && groups[k].e1 == e1 && groups[k].e2 == e2 &&
               same_cutoff(groups[k], p)))
        ++k;
      if (k == groups.size()) {
        Group g{};
        g.type = p.type;
        g.e1 = e1;
        g.e2 = e2;
        g.cutoff_type = p.cutoff_type;
        g.rc = p.rc;
        g.rci = p.cutoff_alpha * p.rc;
        g.iw = 1.0 / (p.rc - g.rci);
        g.pre = p.cutoff_type == 3 ? std::pow(1.0 / std::tanh(1.0), 3) : 1.0;
        groups.push_back(g);
        members.emplace_back();
      }
      members[k].push_back(static_cast<int>(s));
    }
    for (std::size_t k = 0; k < groups.size(); ++k) {
      Group g = groups[k];
      g.first = static_cast<int>(functions_.size());
      g.count = static_cast<int>(members[k].size());
      for (int s : members[k]) {
        const SymmetryFunction &p = fs[s];
        Function f{};
        f.eta = p.eta;
        f.rs = p.rs;
        f.out = s;
        if (p.type != 2) {
          f.lambda = p.lambda;
          f.zeta = p.zeta;
          f.norm = std::pow(2.0, 1.0 - p.zeta);
          const double zr = std::round(p.zeta);
          f.zeta_int = (zr == p.zeta && zr <= limits::MAX_INTEGER_ZETA) ? static_cast<int>(zr) : 0;
        }
        functions_.push_back(f);
      }
      groups_.push_back(g);
    }
    group_begin_.push_back(static_cast<int>(groups_.size()));
  }
  off_n_functions_ = 0;
  off_group_begin_ = aligned(off_n_functions_ + n_functions_.size() * sizeof(int));
  off_groups_ = aligned(off_group_begin_ + group_begin_.size() * sizeof(int));
  off_functions_ = aligned(off_groups_ + groups_.size() * sizeof(Group));
  bytes_.assign(aligned(off_functions_ + functions_.size() * sizeof(Function)) + 16, 0);
  put(bytes_, off_n_functions_, n_functions_);
  put(bytes_, off_group_begin_, group_begin_);
  put(bytes_, off_groups_, groups_);
  put(bytes_, off_functions_, functions_);
}

Table HostTable::view(const void *base) const
{
  const auto *b = static_cast<const unsigned char *>(base);
  Table t{};
  t.n_elements = n_elements_;
  t.n_functions = reinterpret_cast<const int *>(b + off_n_functions_);
  t.group_begin = reinterpret_cast<const int *>(b + off_group_begin_);
  t.groups = reinterpret_cast<const Group *>(b + off_groups_);
  t.functions = reinterpret_cast<const Function *>(b + off_functions_);
  return t;
}

}    // namespace nnmd::device
