/* nnmd-lammps: model file reader and network evaluation through libtorch (the only
   translation unit with torch headers; the metadata is parsed in metadata.cpp). */

#include "model/model.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/script.h>

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
}    // namespace

struct Model::Impl {
  torch::jit::script::Module module;
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat64;
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

  // consistency of networks and metadata: evaluate one zero row per element
  const int nel = static_cast<int>(info_.elements.size());
  for (int e = 0; e < nel; ++e) {
    const int S = static_cast<int>(info_.functions[e].size());
    std::vector<double> G(S, 0.0), dEdG(S);
    double E;
    try {
      evaluate(e, G.data(), 1, &E, dEdG.data());
    } catch (const std::runtime_error &err) {
      throw std::runtime_error("network of element " + info_.elements[e] + " does not accept " +
                               std::to_string(S) + " symmetry functions (" + err.what() + ")");
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

void Model::evaluate(int element, const double *G, int n, double *E, double *dEdG)
{
  if (n <= 0) return;
  const int S = static_cast<int>(info_.functions.at(element).size());
  try {
    c10::InferenceMode guard;
    auto opts = torch::TensorOptions().dtype(torch::kFloat64);
    torch::Tensor g = torch::from_blob(const_cast<double *>(G), {n, S}, opts);
    g = g.to(impl_->device, impl_->dtype);
    auto out = impl_->module.run_method("energy_and_gradient", element, g).toTuple();
    torch::Tensor e = out->elements()[0].toTensor().to(torch::kCPU, torch::kFloat64).contiguous();
    torch::Tensor d = out->elements()[1].toTensor().to(torch::kCPU, torch::kFloat64).contiguous();
    if (e.numel() != n || d.numel() != static_cast<int64_t>(n) * S)
      throw std::runtime_error("network returned " + std::to_string(e.numel()) + " energies and " +
                               std::to_string(d.numel()) + " gradient values for " +
                               std::to_string(n) + " atoms");
    std::memcpy(E, e.data_ptr<double>(), sizeof(double) * n);
    std::memcpy(dEdG, d.data_ptr<double>(), sizeof(double) * n * S);
  } catch (const c10::Error &err) {
    throw std::runtime_error(first_line(err.what_without_backtrace()));
  }
}

}    // namespace nnmd
