/* nnmd-lammps: LAMMPS pair style nnmd (Behler-Parrinello neural-network potentials).

   pair_style nnmd [threads N] [cutoff R] [precision float64|float32] [device cpu|cuda]
                   [type9 auto|direct|moments] [profile yes|no]
   pair_coeff * * model.pt El1 El2 ... (one element or NULL per atom type)

   The symmetry functions and forces are computed here (kernels/symmetry_functions.*);
   the element networks run through libtorch (model/model.*). Requires a full neighbour
   list, newton pair on and units metal. g5 is accepted as a deprecated alias of type9.
   See docs/lammps.md. */

#ifndef LMP_PAIR_NNMD_H
#define LMP_PAIR_NNMD_H

#include "pair.h"

#include "kernels/symmetry_functions.h"

#include <memory>
#include <string>
#include <vector>

namespace nnmd {
class Model;
}

namespace LAMMPS_NS {

class PairNNMD : public Pair {
 public:
  PairNNMD(class LAMMPS *);
  ~PairNNMD() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  double memory_usage() override;
  void finish() override;

 protected:
  std::unique_ptr<nnmd::Model> model;
  std::vector<std::unique_ptr<nnmd::DescriptorCalculator>> calculators;    // per model element
  std::vector<int> type_to_element;    // per type (1-based), -1: NULL
  std::string model_file;
  std::string device;
  int nthreads;
  bool single_precision;
  double cutoff_user;    // 0: the model's cutoff
  double cutoff_model;
  nnmd::DescriptorCalculator::Method type9_method;    // evaluation of type-9 groups
  bool profile;
  double t_descriptors, t_network, t_forces;    // accumulated seconds (profile yes)
  long n_calls;

  // per-step work arrays (grown, never shrunk)
  std::vector<std::vector<int>> local_atoms;    // per element: local indices i
  std::vector<std::vector<double>> G, dEdG, Eatom, cache;
  nnmd::Neighbors nb;
  std::vector<int> nb_index;    // LAMMPS index j of each neighbour in nb
  std::vector<double> v;        // dE/dd per neighbour

  void allocate();
  void gather(int i, int element);
};

}    // namespace LAMMPS_NS

#endif
