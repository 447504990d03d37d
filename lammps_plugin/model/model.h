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

// Range of the raw symmetry functions of one element over the training set (network-input
// order); the extrapolation check compares with min and max (docs/uncertainty.md).
struct TrainingRange {
  std::vector<double> min, max, mean, std;    // mean and std: empty when not stored
};

// The repulsion baseline of a model (kernels/zbl.h): type "zbl", switched off between
// inner and outer (Angstrom).
struct Repulsion {
  std::string type;
  double inner = 0.0, outer = 0.0;
};

struct ModelInfo {
  int format_version = 0;
  std::vector<std::string> elements;                       // model element order
  std::vector<int> atomic_numbers;                         // per element; empty if not stored
  double cutoff = 0.0;                                     // Angstrom
  std::vector<std::vector<SymmetryFunction>> functions;    // per element, network-input order
  std::string created_by;
  std::vector<TrainingRange> training_range;    // per element; empty: no range stored
  int committee = 1;                            // networks per element
  bool has_repulsion = false;
  Repulsion repulsion;    // valid when has_repulsion
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
  // For a committee: the committee mean.
  void evaluate(int element, const double *G, int n, double *E, double *dEdG);

  // Networks per element (1 for a single network).
  int committee_size() const { return committee_size_; }

  // Every committee member m < M = committee_size(): energies E[m*n + r] and gradients
  // dEdG[(m*n + r)*S + s]. Works for M = 1 too (then equal to evaluate()).
  void evaluate_committee(int element, const double *G, int n, double *E, double *dEdG);

  // Number of intra-op threads libtorch uses in this process.
  static void set_threads(int n);

  // How evaluate() and evaluate_committee() run the networks: "native AVX2" (float64 on
  // the CPU, networks of tanh and identity layers, one thread, results checked against the
  // TorchScript methods at load time) or "libtorch: reason". NNMD_NETWORKS=libtorch in the
  // environment keeps libtorch.
  const std::string &network_evaluation() const;

 private:
  struct Impl;
  void run(const char *method, int members, int element, const double *G, int n, double *E,
           double *dEdG);
  void run_native(int element, bool members, const double *G, int n, double *E, double *dEdG);
  std::string native_setup();
  std::unique_ptr<Impl> impl_;
  ModelInfo info_;
  int committee_size_ = 1;
};

// Parse the metadata JSON text into `info` (exposed for tests). Throws std::runtime_error.
void parse_metadata(const std::string &text, ModelInfo &info);

}    // namespace nnmd

#endif
