/* nnmd-lammps: command-line driver of the symmetry-function kernels, used by the tests
   to compare the C++ kernels with the Python implementation and finite differences.

   Input (stdin, whitespace separated):
     n_elements n_functions
     n_functions lines: type e1 e2 eta rs rc lambda zeta cutoff_type cutoff_alpha
     n_neighbours
     n_neighbours lines: dx dy dz element
     mode: "jacobian" | "contract" followed by n_functions values of dE/dG |
           "contract-many" followed by M and M x n_functions values (M vectors) |
           "jvp" followed by 3 n_neighbours values of the direction u |
           "time" followed by a repetition count |
           "time-many" followed by a repetition count and M;
           any mode may end in "-cached" (compute() fills the per-atom cache that contract,
           contract-many and jvp then read), "-direct" or "-moments" (the evaluation of
           type-9 groups), in this order
   Numbers are read with strtod, so nan and inf are accepted (and then rejected by
   validate(), which is what the tests check); exit status 2 for invalid input.
   Output: the G values (one line), then the Jacobian dG[s][k][a] (one line per s), the
   contracted vectors v[k][a] (one line per vector) or the directional derivatives dG[s]
   (one line), with 17 significant digits; "time" prints the seconds per compute +
   contract, "time-many" those per compute + contract_many(M) and per compute + M
   contract() calls. */

#include "kernels/symmetry_functions.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

namespace {
// one whitespace-separated token as a number (the whole token; strtod accepts nan, inf)
bool read(double &x)
{
  std::string token;
  if (!(std::cin >> token)) return false;
  char *end = nullptr;
  x = std::strtod(token.c_str(), &end);
  return end != token.c_str() && *end == '\0';
}

bool read(int &x)
{
  std::string token;
  if (!(std::cin >> token)) return false;
  char *end = nullptr;
  const long v = std::strtol(token.c_str(), &end, 10);
  x = static_cast<int>(v);
  return end != token.c_str() && *end == '\0' && v == x;
}
}    // namespace

int main()
{
  int nel = 0, nsf = 0;
  if (!read(nel) || !read(nsf) || nel < 1 || nsf < 0) {
    std::cerr << "sf_eval: expected n_elements n_functions\n";
    return 2;
  }
  std::vector<nnmd::SymmetryFunction> sfs(nsf);
  for (auto &p : sfs) {
    if (!(read(p.type) && read(p.e1) && read(p.e2) && read(p.eta) && read(p.rs) && read(p.rc) &&
          read(p.lambda) && read(p.zeta) && read(p.cutoff_type) && read(p.cutoff_alpha))) {
      std::cerr << "sf_eval: malformed symmetry-function line\n";
      return 2;
    }
    const std::string problem = nnmd::validate(p, nel);
    if (!problem.empty()) {
      std::cerr << "sf_eval: " << problem << "\n";
      return 2;
    }
  }
  int n = 0;
  if (!read(n) || n < 0) {
    std::cerr << "sf_eval: expected n_neighbours\n";
    return 2;
  }
  nnmd::Neighbors nb;
  for (int k = 0; k < n; ++k) {
    double x, y, z;
    int e;
    if (!(read(x) && read(y) && read(z) && read(e)) || e < 0 || e >= nel) {
      std::cerr << "sf_eval: malformed neighbour line\n";
      return 2;
    }
    nb.push(x, y, z, std::sqrt(x * x + y * y + z * z), e);
  }
  std::string mode;
  std::cin >> mode;
  if (!std::cin) {
    std::cerr << "sf_eval: malformed input\n";
    return 2;
  }
  nnmd::DescriptorCalculator d(sfs, nel);
  auto suffix = [&](const std::string &tail) {
    if (mode.size() > tail.size() &&
        mode.compare(mode.size() - tail.size(), tail.size(), tail) == 0) {
      mode.erase(mode.size() - tail.size());
      return true;
    }
    return false;
  };
  if (suffix("-direct")) d.set_method(nnmd::DescriptorCalculator::Method::Direct);
  if (suffix("-moments")) d.set_method(nnmd::DescriptorCalculator::Method::Moments);
  const bool cached = suffix("-cached");
  std::vector<double> G(nsf), cache(d.cache_size());
  double *cache_out = cached && !cache.empty() ? cache.data() : nullptr;
  const double *cache_in = cache_out;
  const std::size_t n3 = 3 * static_cast<std::size_t>(n);
  auto print = [](const double *x, std::size_t count) {
    for (std::size_t i = 0; i < count; ++i) std::printf("%.17g ", x[i]);
    std::printf("\n");
  };
  if (mode == "time") {
    int reps = 1;
    if (!read(reps) || reps < 1) {
      std::cerr << "sf_eval: time needs a repetition count >= 1\n";
      return 2;
    }
    std::vector<double> c(nsf, 0.1), v(3 * static_cast<std::size_t>(n));
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) {
      d.compute(nb, G.data());
      d.contract(nb, c.data(), v.data());
    }
    const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    std::printf("%.6e\n", dt.count() / reps);
    return 0;
  }
  if (mode == "time-many") {
    int reps = 1, M = 1;
    if (!read(reps) || reps < 1 || !read(M) || M < 1) {
      std::cerr << "sf_eval: time-many needs a repetition count >= 1 and M >= 1\n";
      return 2;
    }
    std::vector<double> c(static_cast<std::size_t>(M) * nsf), v(M * n3);
    for (std::size_t i = 0; i < c.size(); ++i) c[i] = 0.1 + 0.01 * static_cast<double>(i % 7);
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) {
      d.compute(nb, G.data(), cache_out);
      d.contract_many(nb, M, c.data(), v.data(), cache_in);
    }
    const auto t1 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) {
      d.compute(nb, G.data(), cache_out);
      for (int m = 0; m < M; ++m)
        d.contract(nb, &c[static_cast<std::size_t>(m) * nsf], &v[m * n3], cache_in);
    }
    const std::chrono::duration<double> many = t1 - t0,
                                        loop = std::chrono::steady_clock::now() - t1;
    std::printf("%.6e %.6e\n", many.count() / reps, loop.count() / reps);
    return 0;
  }
  if (mode == "jacobian") {
    std::vector<double> dG(static_cast<std::size_t>(nsf) * n * 3);
    d.jacobian(nb, G.data(), dG.data());
    for (double g : G) std::printf("%.17g ", g);
    std::printf("\n");
    for (int s = 0; s < nsf; ++s) {
      for (int q = 0; q < 3 * n; ++q)
        std::printf("%.17g ", dG[static_cast<std::size_t>(s) * 3 * n + q]);
      std::printf("\n");
    }
  } else if (mode == "contract" || mode == "contract-many") {
    int M = 1;
    if (mode == "contract-many" && (!read(M) || M < 1)) {
      std::cerr << "sf_eval: contract-many needs a number of vectors >= 1\n";
      return 2;
    }
    std::vector<double> c(static_cast<std::size_t>(M) * nsf), v(M * n3);
    for (double &x : c)
      if (!read(x)) {
        std::cerr << "sf_eval: " << mode << " needs " << c.size() << " values of dE/dG\n";
        return 2;
      }
    d.compute(nb, G.data(), cache_out);
    if (mode == "contract")
      d.contract(nb, c.data(), v.data(), cache_in);
    else
      d.contract_many(nb, M, c.data(), v.data(), cache_in);
    print(G.data(), G.size());
    for (int m = 0; m < M; ++m) print(&v[m * n3], n3);
  } else if (mode == "jvp") {
    std::vector<double> u(n3), dG(nsf);
    for (double &x : u)
      if (!read(x)) {
        std::cerr << "sf_eval: jvp needs 3 n_neighbours values of the direction\n";
        return 2;
      }
    d.compute(nb, G.data(), cache_out);
    d.jvp(nb, u.data(), dG.data(), cache_in);
    print(G.data(), G.size());
    print(dG.data(), dG.size());
  } else {
    std::cerr << "sf_eval: unknown mode " << mode << "\n";
    return 2;
  }
  return 0;
}
