/* nnmd-lammps: model file reader and network evaluation through libtorch (the only
   translation unit with torch headers; the metadata is parsed in metadata.cpp), or natively
   with AVX2 for networks of tanh and identity layers (see "Native float64 evaluation"). */

#include "model/model.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/script.h>

#if defined(__x86_64__) && defined(__GNUC__)    // GCC and clang: the native networks
#define NNMD_NATIVE_NETWORKS 1
#define NNMD_AVX2 __attribute__((target("avx2,fma")))
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace nnmd {

namespace {
std::string first_line(const std::string &s)
{
  const auto p = s.find('\n');
  return p == std::string::npos ? s : s.substr(0, p);
}

// ---------------------------------------------------------------------------------------
// Native float64 evaluation of the element networks (docs/symmetry_functions.md section 5)
// for tanh and identity activations, with AVX2 + FMA: blocks of 8 atoms whose activations
// are stored neuron-major ([neuron][atom], 8 atoms = 2 AVX2 registers), so that a block's
// whole forward and backward pass stays in L1 instead of the n x width intermediate
// tensors of the TorchScript methods (for small networks those, not the matrix products,
// take most of libtorch's time). The same operations in the same order as
// ElementNetwork.energy_and_gradient (python/nnmd_lammps/model/networks.py); Model checks
// the results against the TorchScript methods when it loads a model (native_check).

struct NativeLayer {
  int nin = 0, nout = 0;
  bool tanh = false;            // else identity
  double fan_in = 1.0;          // normalize_nodes: z / fan_in
  std::vector<double> w, wt;    // weight [nout][nin] and its transpose [nin][nout]
  std::vector<double> b;        // bias [nout]
};

struct NativeNetwork {
  std::vector<NativeLayer> layers;
  bool normalize = false;
  std::vector<double> shift, factor, target;    // scaled input (g - shift) factor + target
  double e_scale = 1.0, e_shift = 0.0;
};

struct NativeElement {
  int S = 0;
  std::vector<NativeNetwork> members;    // 1 for a single network
};

constexpr int LANES = 8;          // atoms per block
constexpr int MAX_LAYERS = 16;    // more: libtorch

#ifdef NNMD_NATIVE_NETWORKS

// tanh of 4 doubles, within 2 ulp of the correctly rounded value: for |x| < 0.625 the
// rational approximation x + x z P(z) / Q(z), z = x^2, otherwise sign(x) (1 - 2 / (exp(2|x|)
// + 1)) with exp from a rational approximation of exp(r), |r| <= ln 2 / 2, times 2^n (the
// Cephes library's coefficients); NaN stays NaN
NNMD_AVX2 inline __m256d tanh4(__m256d x)
{
  const __m256d sign = _mm256_set1_pd(-0.0), one = _mm256_set1_pd(1.0), two = _mm256_set1_pd(2.0);
  const __m256d ax = _mm256_andnot_pd(sign, x), z = _mm256_mul_pd(x, x);
  // small |x|
  __m256d p = _mm256_fmadd_pd(_mm256_set1_pd(-9.64399179425052238628e-1), z,
                              _mm256_set1_pd(-9.92877231001918586564e1));
  p = _mm256_fmadd_pd(p, z, _mm256_set1_pd(-1.61468768441708447952e3));
  __m256d q = _mm256_add_pd(z, _mm256_set1_pd(1.12811678491632931402e2));
  q = _mm256_fmadd_pd(q, z, _mm256_set1_pd(2.23548839060100448583e3));
  q = _mm256_fmadd_pd(q, z, _mm256_set1_pd(4.84406305325125486048e3));
  // exp(y), y = 2 min(|x|, 20) (min keeps a NaN: it returns its second operand then)
  const __m256d y = _mm256_mul_pd(two, _mm256_min_pd(_mm256_set1_pd(20.0), ax));
  const __m256d n = _mm256_floor_pd(
      _mm256_fmadd_pd(y, _mm256_set1_pd(1.4426950408889634073599), _mm256_set1_pd(0.5)));
  __m256d r = _mm256_fnmadd_pd(n, _mm256_set1_pd(6.93145751953125e-1), y);
  r = _mm256_fnmadd_pd(n, _mm256_set1_pd(1.42860682030941723212e-6), r);
  const __m256d rr = _mm256_mul_pd(r, r);
  __m256d px = _mm256_fmadd_pd(_mm256_set1_pd(1.26177193074810590878e-4), rr,
                               _mm256_set1_pd(3.02994407707441961300e-2));
  px = _mm256_mul_pd(r, _mm256_fmadd_pd(px, rr, _mm256_set1_pd(9.99999999999999999910e-1)));
  __m256d qx = _mm256_fmadd_pd(_mm256_set1_pd(3.00198505138664455042e-6), rr,
                               _mm256_set1_pd(2.52448340349684104192e-3));
  qx = _mm256_fmadd_pd(qx, rr, _mm256_set1_pd(2.27265548208155028766e-1));
  qx = _mm256_fmadd_pd(qx, rr, _mm256_set1_pd(2.00000000000000000009e0));
  const __m256d er =
      _mm256_fmadd_pd(two, _mm256_div_pd(px, _mm256_sub_pd(qx, px)), one);    // exp(r)
  // 2^n for 0 <= n <= 58: n lands in the low mantissa bits of n + 1.5 2^52
  const __m256d magic = _mm256_set1_pd(6755399441055744.0);
  const __m256i k =
      _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(n, magic)), _mm256_castpd_si256(magic));
  const __m256d p2 =
      _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(k, _mm256_set1_epi64x(1023)), 52));
  const __m256d e = _mm256_mul_pd(er, p2);
  // one division for both branches
  const __m256d small = _mm256_cmp_pd(ax, _mm256_set1_pd(0.625), _CMP_LT_OQ);
  const __m256d num = _mm256_blendv_pd(two, _mm256_mul_pd(_mm256_mul_pd(x, z), p), small);
  const __m256d den = _mm256_blendv_pd(_mm256_add_pd(e, one), q, small);
  const __m256d f = _mm256_div_pd(num, den);
  const __m256d large = _mm256_or_pd(_mm256_sub_pd(one, f), _mm256_and_pd(sign, x));
  return _mm256_blendv_pd(large, _mm256_add_pd(x, f), small);
}

// y[j][.] = bias[j] + sum_i A[j][i] x[i][.] for a block of LANES atoms (A: rows x cols,
// row-major; bias may be null), four rows of A at a time
NNMD_AVX2 void affine_block(const double *A, const double *bias, int rows, int cols,
                            const double *x, double *y)
{
  int j = 0;
  for (; j + 4 <= rows; j += 4) {
    __m256d c[4][2];
    for (int jj = 0; jj < 4; ++jj)
      c[jj][0] = c[jj][1] = bias ? _mm256_set1_pd(bias[j + jj]) : _mm256_setzero_pd();
    const double *a = A + static_cast<std::size_t>(j) * cols;
    for (int i = 0; i < cols; ++i) {
      const __m256d x0 = _mm256_loadu_pd(x + i * LANES), x1 = _mm256_loadu_pd(x + i * LANES + 4);
      for (int jj = 0; jj < 4; ++jj) {
        const __m256d w = _mm256_broadcast_sd(a + jj * cols + i);
        c[jj][0] = _mm256_fmadd_pd(w, x0, c[jj][0]);
        c[jj][1] = _mm256_fmadd_pd(w, x1, c[jj][1]);
      }
    }
    for (int jj = 0; jj < 4; ++jj) {
      _mm256_storeu_pd(y + (j + jj) * LANES, c[jj][0]);
      _mm256_storeu_pd(y + (j + jj) * LANES + 4, c[jj][1]);
    }
  }
  for (; j < rows; ++j) {
    __m256d c0 = bias ? _mm256_set1_pd(bias[j]) : _mm256_setzero_pd(), c1 = c0;
    const double *a = A + static_cast<std::size_t>(j) * cols;
    for (int i = 0; i < cols; ++i) {
      const __m256d w = _mm256_broadcast_sd(a + i);
      c0 = _mm256_fmadd_pd(w, _mm256_loadu_pd(x + i * LANES), c0);
      c1 = _mm256_fmadd_pd(w, _mm256_loadu_pd(x + i * LANES + 4), c1);
    }
    _mm256_storeu_pd(y + j * LANES, c0);
    _mm256_storeu_pd(y + j * LANES + 4, c1);
  }
}

// One network on one block: x0 the scaled input [S][LANES]; energies E[LANES] and dE/dG
// (before the input factor) into grad [S][LANES]. work: per layer the activations and their
// derivatives ([nout][LANES] each), then two gradient buffers of the widest layer.
// One network on one block: x0 the scaled input [S][LANES]; energies E[LANES] and dE/dG
// before the input factor into grad [S][LANES]. work: per layer its activations and their
// derivatives ([nout][LANES] each), then two gradient buffers of the widest layer (wmax).
NNMD_AVX2 void network_block(const NativeNetwork &net, const double *x0, double *work,
                             std::size_t wmax, double *E, double *grad)
{
  const int L = static_cast<int>(net.layers.size());
  const __m256d one = _mm256_set1_pd(1.0);
  double *act[MAX_LAYERS], *der[MAX_LAYERS];
  const double *in = x0;
  double *slot = work;
  for (int l = 0; l < L; ++l) {
    const NativeLayer &ly = net.layers[l];
    act[l] = slot;
    der[l] = slot + static_cast<std::size_t>(ly.nout) * LANES;
    slot += 2 * static_cast<std::size_t>(ly.nout) * LANES;
    affine_block(ly.w.data(), ly.b.data(), ly.nout, ly.nin, in, act[l]);
    const __m256d fan = _mm256_set1_pd(ly.fan_in);
    for (int k = 0; k < ly.nout * LANES; k += 4) {
      __m256d v = _mm256_loadu_pd(act[l] + k);
      if (net.normalize) v = _mm256_div_pd(v, fan);
      __m256d dv = one;
      if (ly.tanh) {
        v = tanh4(v);
        dv = _mm256_fnmadd_pd(v, v, one);    // 1 - y^2
      }
      _mm256_storeu_pd(act[l] + k, v);
      _mm256_storeu_pd(der[l] + k, dv);
    }
    in = act[l];
  }
  // E = y e_scale + e_shift; dE/dz of the output layer = f'(z) e_scale (width 1)
  const __m256d es = _mm256_set1_pd(net.e_scale), eo = _mm256_set1_pd(net.e_shift);
  double *g = slot, *gp = slot + wmax * LANES;
  for (int k = 0; k < LANES; k += 4) {
    _mm256_storeu_pd(E + k, _mm256_fmadd_pd(_mm256_loadu_pd(act[L - 1] + k), es, eo));
    _mm256_storeu_pd(g + k, _mm256_mul_pd(_mm256_loadu_pd(der[L - 1] + k), es));
  }
  for (int l = L - 1; l >= 0; --l) {
    const NativeLayer &ly = net.layers[l];
    if (net.normalize) {
      const __m256d fan = _mm256_set1_pd(ly.fan_in);
      for (int k = 0; k < ly.nout * LANES; k += 4)
        _mm256_storeu_pd(g + k, _mm256_div_pd(_mm256_loadu_pd(g + k), fan));
    }
    double *out = l == 0 ? grad : gp;
    affine_block(ly.wt.data(), nullptr, ly.nin, ly.nout, g, out);    // W^T g
    if (l == 0) break;
    for (int k = 0; k < ly.nin * LANES; k += 4)
      _mm256_storeu_pd(out + k,
                       _mm256_mul_pd(_mm256_loadu_pd(out + k), _mm256_loadu_pd(der[l - 1] + k)));
    std::swap(g, gp);
  }
}

#endif    // NNMD_NATIVE_NETWORKS

std::vector<double> tensor_values(const torch::Tensor &t)
{
  const torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// one ElementNetwork module (weights, activations, scaling) as a NativeNetwork; throws
// std::runtime_error where the module is not one the native evaluation reproduces
NativeNetwork native_network(const torch::jit::Module &mod, int S)
{
  NativeNetwork net;
  const auto acts = mod.attr("activations").toListRef();
  const auto fan_in = mod.attr("fan_in").toListRef();
  net.normalize = mod.attr("normalize_nodes").toBool();
  const torch::jit::Module linears = mod.attr("linears").toModule();
  const int L = static_cast<int>(acts.size());
  if (L < 1 || L > MAX_LAYERS || static_cast<int>(fan_in.size()) != L)
    throw std::runtime_error("unexpected number of layers");
  int nin = S;
  for (int l = 0; l < L; ++l) {
    NativeLayer ly;
    const std::string act = acts[l].toStringRef();
    if (act != "tanh" && act != "identity") throw std::runtime_error("activation " + act);
    ly.tanh = act == "tanh";
    ly.fan_in = fan_in[l].toDouble();
    const torch::jit::Module lin = linears.attr(std::to_string(l)).toModule();
    const torch::Tensor w = lin.attr("weight").toTensor();
    if (w.dim() != 2 || w.size(1) != nin) throw std::runtime_error("layer widths do not chain");
    ly.nin = nin;
    ly.nout = static_cast<int>(w.size(0));
    ly.w = tensor_values(w);
    ly.wt = tensor_values(w.t());
    ly.b = tensor_values(lin.attr("bias").toTensor());
    if (static_cast<int>(ly.b.size()) != ly.nout) throw std::runtime_error("bias size");
    nin = ly.nout;
    net.layers.push_back(std::move(ly));
  }
  if (nin != 1) throw std::runtime_error("output layer of width " + std::to_string(nin));
  net.shift = tensor_values(mod.attr("g_shift").toTensor());
  net.factor = tensor_values(mod.attr("g_factor").toTensor());
  net.target = tensor_values(mod.attr("g_target").toTensor());
  if (static_cast<int>(net.shift.size()) != S || static_cast<int>(net.factor.size()) != S ||
      static_cast<int>(net.target.size()) != S)
    throw std::runtime_error("scaling size");
  net.e_scale = mod.attr("e_scale").toTensor().item<double>();
  net.e_shift = mod.attr("e_shift").toTensor().item<double>();
  return net;
}
}    // namespace

struct Model::Impl {
  torch::jit::script::Module module;
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat64;
  bool has_committee_methods = false;    // committee_size(), committee_energy_and_gradient()
  // native evaluation (native_setup): per element its networks; work arrays of one block
  std::vector<NativeElement> native;
  bool use_native = false;
  std::string evaluation = "libtorch";
  std::size_t wmax = 0;                            // widest layer or input
  std::vector<double> work, x0, eblock, gblock;    // network_block's buffers
};

Model::Model(const std::string &path, const std::string &device, bool float32) :
    impl_(std::make_unique<Impl>())
{
  {
    std::ifstream probe(path, std::ios::binary);
    if (!probe) throw std::runtime_error("cannot open model file '" + path + "'");
  }
  torch::jit::ExtraFilesMap extra{{"nnmd.json", ""}};
  try {
    impl_->module = torch::jit::load(path, torch::kCPU, extra);
  } catch (const c10::Error &e) {
    throw std::runtime_error("'" + path + "' is not a readable model file (" +
                             first_line(e.what_without_backtrace()) + ")");
  } catch (const std::exception &e) {
    throw std::runtime_error("'" + path + "' is not a readable model file (" +
                             first_line(e.what()) + ")");
  }
  if (extra["nnmd.json"].empty())
    throw std::runtime_error("'" + path + "' is not an nnmd-lammps model file (no metadata)");
  parse_metadata(extra["nnmd.json"], info_);

  if (device == "cuda") {
    if (!torch::cuda::is_available())
      throw std::runtime_error("device cuda requested but libtorch sees no CUDA device");
    impl_->device = torch::Device(torch::kCUDA);
  } else if (device != "cpu") {
    throw std::runtime_error("unknown device '" + device + "' (use cpu or cuda)");
  }
  impl_->dtype = float32 ? torch::kFloat32 : torch::kFloat64;
  impl_->module.to(impl_->device, impl_->dtype);
  impl_->module.eval();

  // committee size: from the module (model files of format version 1 have no committee
  // methods and are single networks), checked against the metadata
  impl_->has_committee_methods = impl_->module.find_method("committee_size").has_value() &&
      impl_->module.find_method("committee_energy_and_gradient").has_value();
  if (impl_->has_committee_methods) {
    try {
      committee_size_ = static_cast<int>(impl_->module.run_method("committee_size").toInt());
    } catch (const c10::Error &err) {
      throw std::runtime_error("'" + path + "': committee_size() failed (" +
                               first_line(err.what_without_backtrace()) + ")");
    }
  }
  if (committee_size_ < 1 || committee_size_ != info_.committee)
    throw std::runtime_error("'" + path + "': the metadata says committee " +
                             std::to_string(info_.committee) + " but the networks have " +
                             std::to_string(committee_size_) + " member(s) per element");

  // consistency of networks and metadata: evaluate one zero row per element (libtorch)
  const int nel = static_cast<int>(info_.elements.size());
  for (int e = 0; e < nel; ++e) {
    const int S = static_cast<int>(info_.functions[e].size());
    const int M = committee_size_;
    std::vector<double> G(S, 0.0), dEdG(static_cast<std::size_t>(M) * S), E(M);
    try {
      evaluate(e, G.data(), 1, E.data(), dEdG.data());
      if (M > 1) evaluate_committee(e, G.data(), 1, E.data(), dEdG.data());
    } catch (const std::runtime_error &err) {
      throw std::runtime_error("network of element " + info_.elements[e] + " does not accept " +
                               std::to_string(S) + " symmetry functions (" + err.what() + ")");
    }
  }

  const std::string why = native_setup();
  impl_->use_native = why.empty();
  impl_->evaluation = why.empty() ? "native AVX2" : "libtorch: " + why;
}

// The native evaluation when this model, device, precision and CPU allow it and it agrees
// with the TorchScript methods on test rows; otherwise the reason why not.
std::string Model::native_setup()
{
  Impl &im = *impl_;
  const char *env = std::getenv("NNMD_NETWORKS");
  if (env && std::string(env) == "libtorch") return "NNMD_NETWORKS=libtorch";
  if (im.device.type() != torch::kCPU) return "device cuda";
  if (im.dtype != torch::kFloat64) return "precision float32";
#ifdef NNMD_NATIVE_NETWORKS
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return "no AVX2 and FMA";
#else
  return "not an x86-64 build";
#endif
  const int nel = static_cast<int>(info_.elements.size());
  im.native.assign(nel, {});
  std::size_t work = 0;
  try {
    const torch::jit::Module nets = im.module.attr("networks").toModule();
    for (int e = 0; e < nel; ++e) {
      NativeElement &ne = im.native[e];
      ne.S = static_cast<int>(info_.functions[e].size());
      const torch::jit::Module net = nets.attr(std::to_string(e)).toModule();
      if (net.hasattr("members")) {
        const torch::jit::Module members = net.attr("members").toModule();
        for (int m = 0; m < committee_size_; ++m)
          ne.members.push_back(native_network(members.attr(std::to_string(m)).toModule(), ne.S));
      } else {
        ne.members.push_back(native_network(net, ne.S));
      }
      if (static_cast<int>(ne.members.size()) != committee_size_)
        return "committee size of element " + info_.elements[e];
      im.wmax = std::max<std::size_t>(im.wmax, ne.S);
      for (const NativeNetwork &mem : ne.members) {
        std::size_t w = 0;
        for (const NativeLayer &ly : mem.layers) {
          w += 2 * static_cast<std::size_t>(ly.nout);
          im.wmax = std::max<std::size_t>(im.wmax, ly.nout);
        }
        work = std::max(work, w);
      }
    }
  } catch (const c10::Error &err) {
    return "networks not recognised: " + first_line(err.what_without_backtrace());
  } catch (const std::exception &err) {
    return std::string("networks not recognised: ") + first_line(err.what());
  }
  im.work.assign((work + 2 * im.wmax) * LANES, 0.0);
  im.x0.assign(im.wmax * LANES, 0.0);
  im.gblock.assign(im.wmax * LANES, 0.0);
  im.eblock.assign(LANES, 0.0);

  // agreement with the TorchScript methods: zeros, the training range's corners and
  // middle, and pseudo-random rows from half a width below to half a width above it
  constexpr int R = 19;    // not a multiple of the block: a partial block too
  for (int e = 0; e < nel; ++e) {
    const int S = im.native[e].S, M = committee_size_;
    std::vector<double> G(static_cast<std::size_t>(R) * S, 0.0);
    const bool range = !info_.training_range.empty();
    std::uint64_t state = 0x9E3779B97F4A7C15ULL + e;
    for (int r = 1; r < R; ++r)
      for (int s = 0; s < S; ++s) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        const double u = static_cast<double>(state >> 11) * 0x1.0p-53;    // [0, 1)
        const double lo = range ? info_.training_range[e].min[s] : 0.0;
        const double hi = range ? info_.training_range[e].max[s] : 4.0;
        const double t = r == 1 ? 0.0 : r == 2 ? 1.0 : r == 3 ? 0.5 : 2.0 * u - 0.5;
        G[static_cast<std::size_t>(r) * S + s] = lo + t * (hi - lo);
      }
    std::vector<double> E1(static_cast<std::size_t>(M) * R), D1(E1.size() * S), E2(E1.size()),
        D2(D1.size());
    // largest difference relative to 1 + the largest reference value; a NaN or inf: HUGE_VAL
    auto worst = [](const std::vector<double> &a, const std::vector<double> &b, std::size_t n) {
      double diff = 0.0, scale = 0.0;
      for (std::size_t k = 0; k < n; ++k) {
        const double d = std::abs(a[k] - b[k]);
        if (!std::isfinite(d)) return HUGE_VAL;
        diff = std::max(diff, d);
        scale = std::max(scale, std::abs(b[k]));
      }
      return diff / (1.0 + scale);
    };
    for (const bool members : {false, true}) {
      if (members && (M == 1 || !im.has_committee_methods)) continue;
      const int rows = members ? M * R : R;
      try {
        run(members ? "committee_energy_and_gradient" : "energy_and_gradient", members ? M : 1, e,
            G.data(), R, E1.data(), D1.data());
      } catch (const std::exception &err) {
        return std::string("TorchScript check failed: ") + err.what();
      }
      run_native(e, members, G.data(), R, E2.data(), D2.data());
      const double de = worst(E2, E1, rows), dd = worst(D2, D1, static_cast<std::size_t>(rows) * S);
      if (!(de <= 1e-10 && dd <= 1e-10)) {
        char buf[96];
        std::snprintf(buf, sizeof buf, " (relative differences %.3g in E, %.3g in dE/dG)", de, dd);
        return "differs from TorchScript for element " + info_.elements[e] + buf;
      }
    }
  }
  return "";
}

const std::string &Model::network_evaluation() const
{
  return impl_->evaluation;
}

// every member (members) or their mean through the native networks, outputs as run()'s
void Model::run_native(int element, bool members, const double *G, int n, double *E, double *dEdG)
{
  Impl &im = *impl_;
  const NativeElement &ne = im.native[element];
  const int S = ne.S, M = static_cast<int>(ne.members.size());
  double *x0 = im.x0.data(), *eb = im.eblock.data(), *gb = im.gblock.data();
  for (int r0 = 0; r0 < n; r0 += LANES) {
    const int nr = std::min(LANES, n - r0);
    if (!members) {
      std::fill(E + r0, E + r0 + nr, 0.0);
      std::fill(dEdG + static_cast<std::size_t>(r0) * S,
                dEdG + static_cast<std::size_t>(r0 + nr) * S, 0.0);
    }
    for (int m = 0; m < M; ++m) {
      const NativeNetwork &net = ne.members[m];
      for (int s = 0; s < S; ++s)    // scaled input, [s][atom]; a partial block repeats a row
        for (int r = 0; r < LANES; ++r) {
          const double g = G[static_cast<std::size_t>(r0 + std::min(r, nr - 1)) * S + s];
          x0[s * LANES + r] = (g - net.shift[s]) * net.factor[s] + net.target[s];
        }
#ifdef NNMD_NATIVE_NETWORKS
      network_block(net, x0, im.work.data(), im.wmax, eb, gb);
#endif
      for (int r = 0; r < nr; ++r) {
        const std::size_t row = members ? static_cast<std::size_t>(m) * n + r0 + r : r0 + r;
        double *d = dEdG + row * S;
        if (members) {
          E[row] = eb[r];
          for (int s = 0; s < S; ++s) d[s] = gb[s * LANES + r] * net.factor[s];
        } else {
          E[row] += eb[r];
          for (int s = 0; s < S; ++s) d[s] += gb[s * LANES + r] * net.factor[s];
        }
      }
    }
    if (!members && M > 1)    // the committee mean
      for (int r = r0; r < r0 + nr; ++r) {
        E[r] /= M;
        for (int s = 0; s < S; ++s) dEdG[static_cast<std::size_t>(r) * S + s] /= M;
      }
  }
}

Model::~Model() = default;

int Model::element_index(const std::string &symbol) const
{
  for (std::size_t i = 0; i < info_.elements.size(); ++i)
    if (info_.elements[i] == symbol) return static_cast<int>(i);
  return -1;
}

void Model::set_threads(int n)
{
  if (n > 0) at::set_num_threads(n);
}

// the native networks run on one thread: with more libtorch threads, libtorch
void Model::evaluate(int element, const double *G, int n, double *E, double *dEdG)
{
  if (impl_->use_native && at::get_num_threads() == 1)
    run_native(element, false, G, n, E, dEdG);
  else
    run("energy_and_gradient", 1, element, G, n, E, dEdG);
}

void Model::evaluate_committee(int element, const double *G, int n, double *E, double *dEdG)
{
  if (impl_->use_native && at::get_num_threads() == 1)
    run_native(element, true, G, n, E, dEdG);
  else if (!impl_->has_committee_methods)
    run("energy_and_gradient", 1, element, G, n, E, dEdG);
  else
    run("committee_energy_and_gradient", committee_size_, element, G, n, E, dEdG);
}

// `method`(element, g) -> (E[members * n], dEdG[members * n * S]), copied out as float64
void Model::run(const char *method, int members, int element, const double *G, int n, double *E,
                double *dEdG)
{
  if (n <= 0) return;
  const int S = static_cast<int>(info_.functions.at(element).size());
  const int64_t want_e = static_cast<int64_t>(members) * n;
  const int64_t want_d = want_e * S;
  try {
    c10::InferenceMode guard;
    auto opts = torch::TensorOptions().dtype(torch::kFloat64);
    torch::Tensor g = torch::from_blob(const_cast<double *>(G), {n, S}, opts);
    g = g.to(impl_->device, impl_->dtype);
    auto out = impl_->module.run_method(method, element, g).toTuple();
    torch::Tensor e = out->elements()[0].toTensor().to(torch::kCPU, torch::kFloat64).contiguous();
    torch::Tensor d = out->elements()[1].toTensor().to(torch::kCPU, torch::kFloat64).contiguous();
    if (e.numel() != want_e || d.numel() != want_d)
      throw std::runtime_error(std::string(method) + " returned " + std::to_string(e.numel()) +
                               " energies and " + std::to_string(d.numel()) +
                               " gradient values for " + std::to_string(n) + " atoms and " +
                               std::to_string(members) + " member(s)");
    std::memcpy(E, e.data_ptr<double>(), sizeof(double) * want_e);
    std::memcpy(dEdG, d.data_ptr<double>(), sizeof(double) * want_d);
  } catch (const c10::Error &err) {
    throw std::runtime_error(first_line(err.what_without_backtrace()));
  }
}

}    // namespace nnmd
