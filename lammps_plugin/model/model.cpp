/* nnmd-lammps: model file reader and network evaluation through libtorch. */

#include "model/model.h"

#include "json_mini.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace nnmd {

namespace {
constexpr int FORMAT_VERSION = 1;

std::string first_line(const std::string &s)
{
  const auto p = s.find('\n');
  return p == std::string::npos ? s : s.substr(0, p);
}
}    // namespace

void parse_metadata(const std::string &text, ModelInfo &info)
{
  json::Value meta;
  try {
    meta = json::parse(text);
  } catch (const std::runtime_error &e) {
    throw std::runtime_error(std::string("corrupt model metadata (") + e.what() + ")");
  }
  try {
    if (!meta.has("format") || meta.at("format").as_string("format") != "nnmd-lammps-model")
      throw std::runtime_error("not an nnmd-lammps model file");
    info.format_version = meta.at("format_version").as_int("format_version");
    if (info.format_version != FORMAT_VERSION)
      throw std::runtime_error("model format version " + std::to_string(info.format_version) +
                               " is not supported (this plugin reads version " +
                               std::to_string(FORMAT_VERSION) + ")");
    const json::Value &units = meta.at("units");
    if (units.at("length").as_string("units.length") != "Angstrom" ||
        units.at("energy").as_string("units.energy") != "eV")
      throw std::runtime_error("model units must be eV and Angstrom");
    if (meta.has("created_by")) info.created_by = meta.at("created_by").as_string("created_by");
    info.elements.clear();
    for (const json::Value &e : meta.at("elements").as_array("elements"))
      info.elements.push_back(e.as_string("elements[]"));
    if (info.elements.empty()) throw std::runtime_error("model has no elements");
    const int nel = static_cast<int>(info.elements.size());
    auto index_of = [&](const std::string &s) {
      for (int i = 0; i < nel; ++i)
        if (info.elements[i] == s) return i;
      throw std::runtime_error("symmetry function neighbour element '" + s +
                               "' is not a model element");
    };
    info.functions.assign(nel, {});
    info.cutoff = 0.0;
    const json::Value &sfs = meta.at("symmetry_functions");
    for (int e = 0; e < nel; ++e) {
      const std::string &el = info.elements[e];
      const auto &list = sfs.at(el).as_array("symmetry_functions." + el);
      if (list.empty()) throw std::runtime_error("element " + el + " has no symmetry functions");
      int k = 0;
      for (const json::Value &f : list) {
        const std::string where = "symmetry_functions." + el + "[" + std::to_string(k++) + "]";
        SymFuncParams p;
        p.type = f.at("type").as_int(where + ".type");
        const auto &nb = f.at("neighbors").as_array(where + ".neighbors");
        const std::size_t want = (p.type == 2) ? 1 : 2;
        if (nb.size() != want)
          throw std::runtime_error(where + ": expected " + std::to_string(want) +
                                   " neighbour element(s)");
        p.e1 = index_of(nb[0].as_string(where + ".neighbors"));
        p.e2 = (want == 2) ? index_of(nb[1].as_string(where + ".neighbors")) : -1;
        p.eta = f.at("eta").as_number(where + ".eta");
        p.rc = f.at("rc").as_number(where + ".rc");
        p.rs = f.has("rs") ? f.at("rs").as_number(where + ".rs") : 0.0;
        if (p.type != 2) {
          p.lambda = f.at("lambda").as_number(where + ".lambda");
          p.zeta = f.at("zeta").as_number(where + ".zeta");
        }
        p.cutoff_type = f.has("cutoff_type") ? f.at("cutoff_type").as_int(where) : 1;
        p.cutoff_alpha = f.has("cutoff_alpha") ? f.at("cutoff_alpha").as_number(where) : 0.0;
        const std::string problem = validate(p, nel);
        if (!problem.empty()) throw std::runtime_error(where + ": " + problem);
        info.cutoff = std::max(info.cutoff, p.rc);
        info.functions[e].push_back(p);
      }
    }
  } catch (const std::runtime_error &e) {
    throw std::runtime_error(std::string("model metadata: ") + e.what());
  }
}

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
