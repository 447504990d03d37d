/* nnmd-lammps: the metadata of a model file (extra/nnmd.json, docs/model_format.md).

   Parsed with nlohmann json as shipped with the LAMMPS headers ("json.h"). This
   translation unit must not include torch headers (LAMMPS and torch bundle different fmt
   copies); it needs no other LAMMPS header either. Symmetry-function parameters are
   checked by the kernels' validate(), the one place that does so in C++. */

#include "model/model.h"

#include "json.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace nnmd {

namespace {
using json = LAMMPS_NS::json;

// format versions this reader accepts (version 1: no training range, committee, repulsion)
constexpr int OLDEST_FORMAT_VERSION = 1;
constexpr int FORMAT_VERSION = 2;

// Accessors that name the offending key: "<path>: expected a number" etc.
[[noreturn]] void bad(const std::string &path, const std::string &what)
{
  throw std::runtime_error(path + ": " + what);
}

const json &member(const json &object, const std::string &path, const std::string &key)
{
  if (!object.is_object()) bad(path.empty() ? "top level" : path, "expected an object");
  const auto it = object.find(key);
  if (it == object.end())
    throw std::runtime_error(path.empty() ? "missing key '" + key + "'"
                                          : path + ": missing key '" + key + "'");
  return *it;
}

std::string join(const std::string &path, const std::string &key)
{
  return path.empty() ? key : path + "." + key;
}

double number(const json &value, const std::string &path)
{
  if (!value.is_number()) bad(path, "expected a number");
  return value.get<double>();
}

int integer(const json &value, const std::string &path)
{
  // an integer literal, or a number with an integral value (2.0), as before
  if (!value.is_number()) bad(path, "expected an integer");
  const double v = value.get<double>();
  if (v != std::floor(v) || std::fabs(v) > std::numeric_limits<int>::max())
    bad(path, "expected an integer");
  return static_cast<int>(v);
}

std::string format_number(double v)
{
  std::ostringstream out;
  out << v;
  return out.str();
}

const std::string &string(const json &value, const std::string &path)
{
  if (!value.is_string()) bad(path, "expected a string");
  return value.get_ref<const std::string &>();
}

const json &array(const json &value, const std::string &path)
{
  if (!value.is_array()) bad(path, "expected an array");
  return value;
}

// the value of `key` in `object`, or nullptr when absent (optional keys)
const json *optional(const json &object, const std::string &key)
{
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

// null counts as absent for the optional keys of format version 2
const json *optional_value(const json &object, const std::string &key)
{
  const json *v = optional(object, key);
  return (v && !v->is_null()) ? v : nullptr;
}

std::vector<double> numbers(const json &value, const std::string &path, std::size_t size,
                            const std::string &what)
{
  array(value, path);
  if (value.size() != size)
    bad(path,
        "expected " + std::to_string(size) + " values (" + what + "), got " +
            std::to_string(value.size()));
  std::vector<double> out;
  out.reserve(size);
  std::size_t k = 0;
  for (const json &x : value) out.push_back(number(x, path + "[" + std::to_string(k++) + "]"));
  return out;
}

void parse_atomic_numbers(const json &meta, ModelInfo &info)
{
  info.atomic_numbers.clear();
  const json *an = optional_value(meta, "atomic_numbers");
  if (!an) return;
  array(*an, "atomic_numbers");
  if (an->size() != info.elements.size())
    bad("atomic_numbers",
        "expected " + std::to_string(info.elements.size()) + " values (one per element), got " +
            std::to_string(an->size()));
  std::size_t k = 0;
  for (const json &z : *an) {
    const std::string where = "atomic_numbers[" + std::to_string(k++) + "]";
    const int value = integer(z, where);
    if (value < 1 || value > 118) bad(where, "expected an atomic number 1 to 118");
    info.atomic_numbers.push_back(value);
  }
}

void parse_training_range(const json &meta, ModelInfo &info)
{
  info.training_range.clear();
  const json *tr = optional_value(meta, "training_range");
  if (!tr) return;
  if (!tr->is_object()) bad("training_range", "expected an object");
  for (auto it = tr->begin(); it != tr->end(); ++it)
    if (std::find(info.elements.begin(), info.elements.end(), it.key()) == info.elements.end())
      bad("training_range", "'" + it.key() + "' is not a model element");
  const std::size_t nel = info.elements.size();
  info.training_range.resize(nel);
  for (std::size_t e = 0; e < nel; ++e) {
    const std::string &el = info.elements[e];
    const std::string where = join("training_range", el);
    const json &r = member(*tr, "training_range", el);
    if (!r.is_object()) bad(where, "expected an object");
    const std::size_t S = info.functions[e].size();
    const std::string what = "one per symmetry function of " + el;
    TrainingRange &out = info.training_range[e];
    out.min = numbers(member(r, where, "min"), join(where, "min"), S, what);
    out.max = numbers(member(r, where, "max"), join(where, "max"), S, what);
    if (const json *m = optional_value(r, "mean"))
      out.mean = numbers(*m, join(where, "mean"), S, what);
    if (const json *sd = optional_value(r, "std"))
      out.std = numbers(*sd, join(where, "std"), S, what);
    for (std::size_t s = 0; s < S; ++s)
      if (!(out.min[s] <= out.max[s]))
        bad(where, "min[" + std::to_string(s) + "] is larger than max[" + std::to_string(s) + "]");
  }
}

void parse_committee(const json &meta, ModelInfo &info)
{
  info.committee = 1;
  const json *c = optional_value(meta, "committee");
  if (!c) return;
  info.committee = integer(*c, "committee");
  if (info.committee < 1)
    bad("committee",
        "expected at least 1 network per element, got " + std::to_string(info.committee));
}

void parse_repulsion(const json &meta, ModelInfo &info)
{
  info.has_repulsion = false;
  info.repulsion = Repulsion();
  const json *rep = optional_value(meta, "repulsion");
  if (!rep) return;
  if (!rep->is_object()) bad("repulsion", "expected an object or null");
  Repulsion r;
  r.type = string(member(*rep, "repulsion", "type"), "repulsion.type");
  if (r.type != "zbl")
    bad("repulsion.type", "unknown repulsion type '" + r.type + "' (known: zbl)");
  r.inner = number(member(*rep, "repulsion", "inner"), "repulsion.inner");
  r.outer = number(member(*rep, "repulsion", "outer"), "repulsion.outer");
  if (!(r.inner > 0.0) || !(r.outer > r.inner))
    bad("repulsion",
        "expected 0 < inner < outer, got inner " + format_number(r.inner) + " and outer " +
            format_number(r.outer));
  if (info.atomic_numbers.empty())
    throw std::runtime_error("missing key 'atomic_numbers' (the repulsion needs them)");
  info.repulsion = r;
  info.has_repulsion = true;
}
}    // namespace

void parse_metadata(const std::string &text, ModelInfo &info)
{
  json meta;
  try {
    meta = json::parse(text);    // strict JSON: NaN and Infinity literals are syntax errors
  } catch (const json::exception &e) {
    // "[json.exception.parse_error.101] parse error at line 1, column 7: ..." without the tag
    std::string what = e.what();
    if (what.rfind("[json.exception.", 0) == 0 && what.find("] ") != std::string::npos)
      what.erase(0, what.find("] ") + 2);
    throw std::runtime_error("corrupt model metadata (" + what + ")");
  }
  try {
    const json *format = meta.is_object() ? optional(meta, "format") : nullptr;
    if (!format || !format->is_string() || *format != "nnmd-lammps-model")
      throw std::runtime_error("not an nnmd-lammps model file");
    info.format_version = integer(member(meta, "", "format_version"), "format_version");
    if (info.format_version < OLDEST_FORMAT_VERSION || info.format_version > FORMAT_VERSION)
      throw std::runtime_error("model format version " + std::to_string(info.format_version) +
                               " is not supported (this plugin reads versions " +
                               std::to_string(OLDEST_FORMAT_VERSION) + " to " +
                               std::to_string(FORMAT_VERSION) + ")");
    const json &units = member(meta, "", "units");
    if (string(member(units, "units", "length"), "units.length") != "Angstrom" ||
        string(member(units, "units", "energy"), "units.energy") != "eV")
      throw std::runtime_error("model units must be eV and Angstrom");
    info.created_by.clear();
    if (const json *c = optional(meta, "created_by")) info.created_by = string(*c, "created_by");
    info.elements.clear();
    std::size_t k = 0;
    for (const json &e : array(member(meta, "", "elements"), "elements"))
      info.elements.push_back(string(e, "elements[" + std::to_string(k++) + "]"));
    if (info.elements.empty()) throw std::runtime_error("model has no elements");
    const int nel = static_cast<int>(info.elements.size());
    auto index_of = [&](const json &value, const std::string &path) {
      const std::string &s = string(value, path);
      for (int i = 0; i < nel; ++i)
        if (info.elements[i] == s) return i;
      bad(path, "neighbour element '" + s + "' is not a model element");
    };
    info.functions.assign(nel, {});
    info.cutoff = 0.0;
    const json &sfs = member(meta, "", "symmetry_functions");
    for (int e = 0; e < nel; ++e) {
      const std::string &el = info.elements[e];
      const std::string list_path = join("symmetry_functions", el);
      const json &list = array(member(sfs, "symmetry_functions", el), list_path);
      if (list.empty()) throw std::runtime_error("element " + el + " has no symmetry functions");
      k = 0;
      for (const json &f : list) {
        const std::string where = list_path + "[" + std::to_string(k++) + "]";
        auto get = [&](const char *key) -> const json & {
          return member(f, where, key);
        };
        SymmetryFunction p;
        p.type = integer(get("type"), join(where, "type"));
        const json &nb = array(get("neighbors"), join(where, "neighbors"));
        const std::size_t want = (p.type == 2) ? 1 : 2;
        if (nb.size() != want)
          throw std::runtime_error(where + ": expected " + std::to_string(want) +
                                   " neighbour element(s)");
        p.e1 = index_of(nb[0], join(where, "neighbors[0]"));
        p.e2 = (want == 2) ? index_of(nb[1], join(where, "neighbors[1]")) : -1;
        p.eta = number(get("eta"), join(where, "eta"));
        p.rc = number(get("rc"), join(where, "rc"));
        const json *rs = optional(f, "rs");
        p.rs = rs ? number(*rs, join(where, "rs")) : 0.0;
        if (p.type != 2) {
          p.lambda = number(get("lambda"), join(where, "lambda"));
          p.zeta = number(get("zeta"), join(where, "zeta"));
        }
        const json *ct = optional(f, "cutoff_type");
        p.cutoff_type = ct ? integer(*ct, join(where, "cutoff_type")) : 1;
        const json *ca = optional(f, "cutoff_alpha");
        p.cutoff_alpha = ca ? number(*ca, join(where, "cutoff_alpha")) : 0.0;
        const std::string problem = validate(p, nel);
        if (!problem.empty()) throw std::runtime_error(where + ": " + problem);
        info.cutoff = std::max(info.cutoff, p.rc);
        info.functions[e].push_back(p);
      }
    }
    parse_atomic_numbers(meta, info);
    parse_training_range(meta, info);
    parse_committee(meta, info);
    parse_repulsion(meta, info);
  } catch (const std::runtime_error &e) {
    throw std::runtime_error(std::string("model metadata: ") + e.what());
  }
}

}    // namespace nnmd
