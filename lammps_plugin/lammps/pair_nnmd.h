/* nnmd-lammps: LAMMPS pair style nnmd (Behler-Parrinello neural-network potentials).

   pair_style nnmd [threads N] [cutoff R] [precision float64|float32] [device cpu|cuda]
                   [type9 auto|direct|moments] [profile yes|no]
                   [extrapolation warn|error|ignore [max N] [every N]] [uncertainty every N]
   pair_coeff * * model.pt El1 El2 ... (one element or NULL per atom type)

   The symmetry functions and forces are computed here (kernels/symmetry_functions.*);
   the element networks run through libtorch (model/model.*); a model's ZBL repulsion
   comes from kernels/zbl.*. Per-atom extrapolation counts and committee deviations are
   read through fix pair (extract_peratom), their frame values through compute pair
   (pvector). Requires a full neighbour list, newton pair on and units metal. g5 is
   accepted as a deprecated alias of type9. See docs/lammps.md. */

#ifndef LMP_PAIR_NNMD_H
#define LMP_PAIR_NNMD_H

#include "pair.h"

#include "kernels/symmetry_functions.h"

#include <memory>
#include <string>
#include <vector>

namespace nnmd {
class Model;
class ZBL;
}    // namespace nnmd

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
  void *extract(const char *, int &) override;
  void *extract_peratom(const char *, int &) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

 protected:
  enum class ExtrapolationMode { Default, Warn, Error, Ignore };

  std::unique_ptr<nnmd::Model> model;
  std::unique_ptr<nnmd::ZBL> zbl;    // the model's repulsion, or null
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
  double t_descriptors, t_extrapolation, t_network, t_forces;    // seconds (profile yes)
  long n_calls;

  // extrapolation settings (pair_style) and state
  ExtrapolationMode extrapolation_mode;    // as given; Default: warn when the model has a range
  int extrapolation_max;                   // warning lines per run
  int extrapolation_every;                 // check on multiples of this timestep
  bool extrapolation_on;                   // checks active (set in init_style)
  bool no_range_reported;                  // "no training range" printed for this model
  int extrapolation_warned;                // warning lines printed in this run
  bool extrapolation_suppressed;           // "further warnings suppressed" printed
  bigint extrapolation_total;              // this rank's extrapolating atom-steps in this run
  bigint extrapolation_checks;             // checked timesteps in this run
  bigint last_checked_step;                // a timestep is counted once (-1: none yet)
  int extrapolation_trigger;               // set by fix pair (extrapolation 1)
  // per element: training range and 1 / width (width 1 where min == max)
  std::vector<std::vector<double>> range_min, range_max, range_inv_width;

  // committee deviations
  int uncertainty_every;                // 0: only when fix pair triggers
  int uncertainty_trigger;              // set by fix pair (force_deviation 1, energy_deviation 1)
  int committee;                        // networks per element
  std::vector<double> member_forces;    // per atom (owned + ghost): M x 3 force deviations

  // per-atom outputs (extract_peratom), atom->nmax long
  int nmax_peratom;
  double *extrapolation_count, *extrapolation_excursion, *force_deviation, *energy_deviation;
  double globals[5];    // pvector (see extract / compute pair nnmd in docs/lammps.md)

  // per-step work arrays (grown, never shrunk)
  std::vector<std::vector<int>> local_atoms;    // per element: local indices i
  std::vector<std::vector<double>> G, dEdG, Eatom, cache;
  std::vector<std::vector<double>> member_E, member_dEdG;    // committee: M x (n | n x S)
  nnmd::Neighbors nb;
  std::vector<int> nb_index;            // LAMMPS index j of each neighbour in nb
  std::vector<double> v;                // dE/dd per neighbour (uncertainty steps: M rows)
  std::vector<double> contract_rows;    // uncertainty steps: an atom's mean dE/dG, M - 1 deviations
  // extrapolating atoms of this rank on the current step: tag, element, worst function,
  // its value, its excursion, count (6 doubles each)
  std::vector<double> extrapolating;

  void allocate();
  void gather(int i, int element);
  void grow_peratom();
  void check_extrapolation();
  void report_extrapolation();
  void committee_networks(int element, int n);
  void finish_deviations();
  void repulsion();
  std::string describe_function(int element, int s) const;
};

}    // namespace LAMMPS_NS

#endif
