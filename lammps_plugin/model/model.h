/* nnmd-lammps: reader and evaluator of model files (docs/model_format.md).

   This header is free of torch and LAMMPS includes so that both sides can use it. Two
   translation units implement it: model.cpp (the networks; the only one that includes
   libtorch) and metadata.cpp (the JSON metadata, with the nlohmann json that ships with
   the LAMMPS headers; no torch). All errors are reported as std::runtime_error with a
   one-line message. */

#ifndef NNMD_MODEL_MODEL_H
#define NNMD_MODEL_MODEL_H

#include "kernels/symmetry_functions.h"

#include <memory>
#include <string>
#include <vector>

namespace nnmd {

struct ModelInfo {
  int format_version = 0;
  std::vector<std::string> elements;                       // model element order
  double cutoff = 0.0;                                     // Angstrom
  std::vector<std::vector<SymmetryFunction>> functions;    // per element, network-input order
  std::string created_by;
};

class Model {
 public:
  // Load `path`; `device` is "cpu" or "cuda"; `float32` runs the networks in single
  // precision. Throws std::runtime_error.
  Model(const std::string &path, const std::string &device = "cpu", bool float32 = false);
  ~Model();
  Model(const Model &) = delete;
  Model &operator=(const Model &) = delete;

  const ModelInfo &info() const { return info_; }
  int element_index(const std::string &symbol) const;    // -1 if absent

  // Atomic energies E[n] (eV) and gradients dEdG[n*S] of n atoms of `element` whose raw
  // symmetry functions are G[n*S] (row-major, S = number of functions of the element).
  void evaluate(int element, const double *G, int n, double *E, double *dEdG);

  // Number of intra-op threads libtorch uses in this process.
  static void set_threads(int n);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  ModelInfo info_;
};

// Parse the metadata JSON text into `info` (exposed for tests). Throws std::runtime_error.
void parse_metadata(const std::string &text, ModelInfo &info);

}    // namespace nnmd

#endif
