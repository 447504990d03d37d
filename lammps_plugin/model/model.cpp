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
  bool has_committee_methods = false;    // committee_size(), committee_energy_and_gradient()
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

  // consistency of networks and metadata: evaluate one zero row per element
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
  run("energy_and_gradient", 1, element, G, n, E, dEdG);
}

void Model::evaluate_committee(int element, const double *G, int n, double *E, double *dEdG)
{
  if (!impl_->has_committee_methods)
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
