/* nnmd-lammps: LAMMPS pair style nnmd (see pair_nnmd.h, docs/lammps.md). */

#include "lammps/pair_nnmd.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include "kernels/limits.h"
#include "kernels/zbl.h"
#include "model/model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

using namespace LAMMPS_NS;

PairNNMD::PairNNMD(LAMMPS *lmp) :
    Pair(lmp), device("cpu"), nthreads(1), single_precision(false), cutoff_user(0.0),
    cutoff_model(0.0), type9_method(nnmd::DescriptorCalculator::Method::Auto), profile(false),
    t_descriptors(0.0), t_extrapolation(0.0), t_network(0.0), t_forces(0.0), n_calls(0),
    extrapolation_mode(ExtrapolationMode::Default), extrapolation_max(10), extrapolation_every(1),
    extrapolation_on(false), no_range_reported(false), extrapolation_warned(0),
    extrapolation_suppressed(false), extrapolation_total(0), extrapolation_checks(0),
    last_checked_step(-1), extrapolation_trigger(0), uncertainty_every(0), uncertainty_trigger(0),
    committee(1), nmax_peratom(0), extrapolation_count(nullptr), extrapolation_excursion(nullptr),
    force_deviation(nullptr), energy_deviation(nullptr), globals{0.0, 0.0, 0.0, 0.0, 0.0}
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;    // the virial is tallied per neighbour pair below
  centroidstressflag = CENTROID_AVAIL;
  nextra = 5;    // compute pair nnmd
  pvector = globals;
}

PairNNMD::~PairNNMD()
{
  if (copymode) return;
  pvector = nullptr;
  memory->destroy(extrapolation_count);
  memory->destroy(extrapolation_excursion);
  memory->destroy(force_deviation);
  memory->destroy(energy_deviation);
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(map);
  }
}

void PairNNMD::allocate()
{
  allocated = 1;
  const int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  memory->create(map, n, "pair:map");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
}

/* pair_style nnmd [threads N] [cutoff R] [precision float64|float32] [device cpu|cuda]
                   [type9 auto|direct|moments] [profile yes|no]
                   [extrapolation warn|error|ignore [max N] [every N]] [uncertainty every N]
   (g5 is a deprecated alias of type9) */

void PairNNMD::settings(int narg, char **arg)
{
  nthreads = 1;
  cutoff_user = 0.0;
  single_precision = false;
  device = "cpu";
  type9_method = nnmd::DescriptorCalculator::Method::Auto;
  profile = false;
  extrapolation_mode = ExtrapolationMode::Default;
  extrapolation_max = 10;
  extrapolation_every = 1;
  uncertainty_every = 0;
  int iarg = 0;
  while (iarg < narg) {
    const std::string key = arg[iarg];
    if (iarg + 1 >= narg) error->all(FLERR, "pair_style nnmd: keyword {} needs a value", key);
    const std::string val = arg[iarg + 1];
    if (key == "threads") {
      nthreads = utils::inumeric(FLERR, val, false, lmp);
      if (nthreads < 1) error->all(FLERR, "pair_style nnmd: threads must be >= 1, got {}", val);
    } else if (key == "cutoff") {
      cutoff_user = utils::numeric(FLERR, val, false, lmp);
      if (cutoff_user <= 0.0) error->all(FLERR, "pair_style nnmd: cutoff must be > 0, got {}", val);
    } else if (key == "precision") {
      if (val == "float64" || val == "double")
        single_precision = false;
      else if (val == "float32" || val == "single")
        single_precision = true;
      else
        error->all(FLERR, "pair_style nnmd: precision must be float64 or float32, got {}", val);
    } else if (key == "device") {
      if (val != "cpu" && val != "cuda")
        error->all(FLERR, "pair_style nnmd: device must be cpu or cuda, got {}", val);
      device = val;
    } else if (key == "type9" || key == "g5") {
      if (key == "g5" && comm->me == 0)
        error->warning(FLERR, "pair_style nnmd: keyword g5 is a deprecated alias of type9");
      if (val == "auto")
        type9_method = nnmd::DescriptorCalculator::Method::Auto;
      else if (val == "direct")
        type9_method = nnmd::DescriptorCalculator::Method::Direct;
      else if (val == "moments")
        type9_method = nnmd::DescriptorCalculator::Method::Moments;
      else
        error->all(FLERR, "pair_style nnmd: {} must be auto, direct or moments, got {}", key, val);
    } else if (key == "profile") {
      profile = utils::logical(FLERR, val, false, lmp) == 1;
    } else if (key == "extrapolation") {
      if (val == "warn")
        extrapolation_mode = ExtrapolationMode::Warn;
      else if (val == "error")
        extrapolation_mode = ExtrapolationMode::Error;
      else if (val == "ignore")
        extrapolation_mode = ExtrapolationMode::Ignore;
      else
        error->all(FLERR, "pair_style nnmd: extrapolation must be warn, error or ignore, got {}",
                   val);
      // optional sub-keywords right after the mode
      while (iarg + 2 < narg &&
             (strcmp(arg[iarg + 2], "max") == 0 || strcmp(arg[iarg + 2], "every") == 0)) {
        const std::string sub = arg[iarg + 2];
        if (iarg + 3 >= narg)
          error->all(FLERR, "pair_style nnmd: extrapolation {} needs a value", sub);
        const int n = utils::inumeric(FLERR, arg[iarg + 3], false, lmp);
        if (sub == "max") {
          if (n < 0)
            error->all(FLERR, "pair_style nnmd: extrapolation max must be >= 0, got {}", n);
          extrapolation_max = n;
        } else {
          if (n < 1)
            error->all(FLERR, "pair_style nnmd: extrapolation every must be >= 1, got {}", n);
          extrapolation_every = n;
        }
        iarg += 2;
      }
    } else if (key == "uncertainty") {
      if (val != "every" || iarg + 2 >= narg)
        error->all(FLERR, "pair_style nnmd: uncertainty needs 'every N', got 'uncertainty {}'",
                   val);
      uncertainty_every = utils::inumeric(FLERR, arg[iarg + 2], false, lmp);
      if (uncertainty_every < 1)
        error->all(FLERR, "pair_style nnmd: uncertainty every must be >= 1, got {}",
                   uncertainty_every);
      iarg += 1;
    } else {
      error->all(FLERR,
                 "pair_style nnmd: unknown keyword {} (known: threads, cutoff, precision, device, "
                 "type9, profile, extrapolation, uncertainty)",
                 key);
    }
    iarg += 2;
  }
  nnmd::Model::set_threads(nthreads);
}

/* pair_coeff * * model.pt El1 ... ElN */

void PairNNMD::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg != 3 + ntypes)
    error->all(FLERR,
               "pair_coeff for nnmd needs '* * model.pt' followed by one element (or NULL) per "
               "atom type: {} atom type(s) but {} element(s) given",
               ntypes, narg - 3);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for nnmd must start with '* *' (one line maps all types)");

  model_file = arg[2];
  try {
    model = std::make_unique<nnmd::Model>(model_file, device, single_precision);
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style nnmd: cannot use model file {}: {}", model_file, e.what());
  }
  const nnmd::ModelInfo &info = model->info();
  cutoff_model = info.cutoff;
  if (cutoff_user > 0.0 && cutoff_user < cutoff_model)
    error->all(FLERR,
               "pair_style nnmd: cutoff {} is smaller than the largest symmetry-function cutoff "
               "{} of {}",
               cutoff_user, cutoff_model, model_file);

  std::string known;
  for (const auto &el : info.elements) known += (known.empty() ? "" : " ") + el;
  type_to_element.assign(ntypes + 1, -1);
  for (int t = 1; t <= ntypes; ++t) {
    const std::string name = arg[2 + t];
    if (name == "NULL") continue;
    const int e = model->element_index(name);
    if (e < 0)
      error->all(FLERR,
                 "pair_coeff nnmd: element {} (atom type {}) is not in model {} (elements: {})",
                 name, t, model_file, known);
    type_to_element[t] = e;
  }
  for (int i = 1; i <= ntypes; ++i) map[i] = type_to_element[i];

  calculators.clear();
  for (std::size_t e = 0; e < info.elements.size(); ++e) {
    calculators.push_back(std::make_unique<nnmd::DescriptorCalculator>(
        info.functions[e], static_cast<int>(info.elements.size())));
  }
  const std::size_t nel = info.elements.size();
  local_atoms.assign(nel, {});
  G.assign(nel, {});
  dEdG.assign(nel, {});
  Eatom.assign(nel, {});
  cache.assign(nel, {});
  member_E.assign(nel, {});
  member_dEdG.assign(nel, {});

  // training range (width 1 where min == max, docs/uncertainty.md)
  range_min.assign(nel, {});
  range_max.assign(nel, {});
  range_inv_width.assign(nel, {});
  if (!info.training_range.empty())
    for (std::size_t e = 0; e < nel; ++e) {
      const nnmd::TrainingRange &r = info.training_range[e];
      range_min[e] = r.min;
      range_max[e] = r.max;
      for (std::size_t s = 0; s < r.min.size(); ++s)
        range_inv_width[e].push_back(r.max[s] > r.min[s] ? 1.0 / (r.max[s] - r.min[s]) : 1.0);
    }
  no_range_reported = false;

  // committee: per-member force deviations travel by reverse communication (3 per member,
  // M - 1 members)
  committee = model->committee_size();
  comm_reverse = committee > 1 ? 3 * (committee - 1) : 0;

  zbl.reset();
  if (info.has_repulsion) {
    try {
      zbl = std::make_unique<nnmd::ZBL>(info.atomic_numbers, info.repulsion.inner,
                                        info.repulsion.outer);
    } catch (const std::exception &e) {
      error->all(FLERR, "pair_style nnmd: repulsion of model file {}: {}", model_file, e.what());
    }
  }

  int count = 0;
  for (int i = 1; i <= ntypes; ++i)
    for (int j = i; j <= ntypes; ++j) {
      if (type_to_element[i] >= 0 && type_to_element[j] >= 0) {
        setflag[i][j] = 1;
        count++;
      } else {
        setflag[i][j] = 0;
      }
    }
  if (count == 0) error->all(FLERR, "pair_coeff nnmd: no atom type is mapped to a model element");

  if (comm->me == 0) {
    std::string extras;
    if (committee > 1) extras += fmt::format(", committee of {} networks per element", committee);
    if (zbl)
      extras += fmt::format(", ZBL repulsion switched off between {:.6g} and {:.6g} Angstrom",
                            info.repulsion.inner, info.repulsion.outer);
    if (!info.training_range.empty()) extras += ", training range stored";
    utils::logmesg(lmp,
                   "pair nnmd: model {} ({}), elements {}, cutoff {:.6g} Angstrom, {} "
                   "libtorch thread(s) per rank, {} networks on {} ({}){}\n",
                   model_file, info.created_by, known, cutoff_model, nthreads,
                   single_precision ? "float32" : "float64", device, model->network_evaluation(),
                   extras);
  }
}

void PairNNMD::init_style()
{
  if (force->newton_pair == 0)
    error->all(FLERR,
               "Pair style nnmd requires newton pair on: forces on ghost atoms are summed by "
               "reverse communication");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR,
               "Pair style nnmd requires units metal (model files are in eV and Angstrom), not "
               "units {}",
               update->unit_style);
  if (!model) error->all(FLERR, "Pair style nnmd: pair_coeff * * model.pt ... is missing");
  // here rather than in coeff(): a later pair_style nnmd ... keeps the pair_coeff
  for (auto &d : calculators) d->set_method(type9_method);
  if (zbl && cutoff_user > 0.0 && cutoff_user < zbl->outer())
    error->all(FLERR,
               "pair_style nnmd: cutoff {} is smaller than the outer radius {} of the ZBL "
               "repulsion of {}",
               cutoff_user, zbl->outer(), model_file);
  if (uncertainty_every > 0 && committee < 2)
    error->all(FLERR,
               "pair_style nnmd: uncertainty needs a committee model, but {} has a single "
               "network per element",
               model_file);
  const bool has_range = !model->info().training_range.empty();
  extrapolation_on = has_range && extrapolation_mode != ExtrapolationMode::Ignore;
  if (!has_range && extrapolation_mode != ExtrapolationMode::Ignore && !no_range_reported) {
    if (comm->me == 0)
      utils::logmesg(lmp,
                     "pair nnmd: model {} stores no training range: extrapolation checks are "
                     "off\n",
                     model_file);
    no_range_reported = true;
  }
  // counters per run
  extrapolation_warned = 0;
  extrapolation_suppressed = false;
  extrapolation_total = 0;
  extrapolation_checks = 0;
  last_checked_step = -1;
  globals[0] = globals[1] = 0.0;
  neighbor->add_request(this, NeighConst::REQ_FULL);
}

double PairNNMD::init_one(int i, int j)
{
  if (setflag[i][j] == 0) error->all(FLERR, "All pair coeffs are not set");
  if (cutoff_user > 0.0) return cutoff_user;
  return zbl ? std::max(cutoff_model, zbl->outer()) : cutoff_model;
}

/* Neighbours of local atom i (of model element `element`) within the element's largest
   symmetry-function cutoff; ghost atoms included, NULL-mapped types skipped. */

void PairNNMD::gather(int i, int element)
{
  double **x = atom->x;
  const int *type = atom->type;
  const double rc = calculators[element]->cutoff();
  const double rcsq = rc * rc;
  const double xi = x[i][0], yi = x[i][1], zi = x[i][2];
  const int *jlist = list->firstneigh[i];
  const int jnum = list->numneigh[i];
  nb.clear();
  nb_index.clear();
  for (int jj = 0; jj < jnum; ++jj) {
    const int j = jlist[jj] & NEIGHMASK;
    const int ej = type_to_element[type[j]];
    if (ej < 0) continue;
    const double dx = x[j][0] - xi, dy = x[j][1] - yi, dz = x[j][2] - zi;
    const double rsq = dx * dx + dy * dy + dz * dz;
    if (rsq >= rcsq) continue;
    if (rsq == 0.0)
      error->one(FLERR, "Pair nnmd: atoms {} and {} are at the same position", atom->tag[i],
                 atom->tag[j]);
    nb.push(dx, dy, dz, std::sqrt(rsq), ej);
    nb_index.push_back(j);
  }
}

void PairNNMD::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);

  double **f = atom->f;
  const int *type = atom->type;
  const int inum = list->inum;
  const int *ilist = list->ilist;
  const int nelements = static_cast<int>(calculators.size());
  const bigint step = update->ntimestep;
  const bool check =
      extrapolation_on && (step % extrapolation_every == 0 || extrapolation_trigger != 0);
  const bool deviations = committee > 1 &&
      ((uncertainty_every > 0 && step % uncertainty_every == 0) || uncertainty_trigger != 0);
  if (extrapolation_on || committee > 1) grow_peratom();

  for (auto &l : local_atoms) l.clear();
  for (int ii = 0; ii < inum; ++ii) {
    const int i = ilist[ii];
    const int e = type_to_element[type[i]];
    if (e >= 0) local_atoms[e].push_back(i);
  }

  // pass 1: symmetry functions of every local atom; then all atoms of an element through
  // their network in one call
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  for (int e = 0; e < nelements; ++e) {
    const int n = static_cast<int>(local_atoms[e].size());
    const int S = calculators[e]->size();
    if (n == 0) continue;
    G[e].resize(static_cast<std::size_t>(n) * S);
    dEdG[e].resize(static_cast<std::size_t>(n) * S);
    Eatom[e].resize(n);
    const std::size_t C = calculators[e]->cache_size();
    cache[e].resize(C * n);
    for (int r = 0; r < n; ++r) {
      gather(local_atoms[e][r], e);
      calculators[e]->compute(nb, &G[e][static_cast<std::size_t>(r) * S],
                              C ? &cache[e][C * r] : nullptr);
    }
  }
  const auto tc = Clock::now();
  if (check) check_extrapolation();
  const auto t1 = Clock::now();
  if (deviations)
    for (int i = 0; i < atom->nlocal; ++i) force_deviation[i] = energy_deviation[i] = 0.0;
  for (int e = 0; e < nelements; ++e) {
    const int n = static_cast<int>(local_atoms[e].size());
    if (n == 0) continue;
    try {
      if (deviations)
        committee_networks(e, n);
      else
        model->evaluate(e, G[e].data(), n, Eatom[e].data(), dEdG[e].data());
    } catch (const std::exception &err) {
      error->one(FLERR, "Pair nnmd: network evaluation failed: {}", err.what());
    }
    for (int r = 0; r < n; ++r) {
      if (eflag_global) eng_vdwl += Eatom[e][r];
      if (eflag_atom) eatom[local_atoms[e][r]] += Eatom[e][r];
    }
  }
  const auto t2 = Clock::now();

  // pass 2: forces F_j = -sum_i dE_i/dd_ij, F_i = +sum_j dE_i/dd_ij; virial W = -sum d (x) v.
  // Uncertainty steps: the same for the deviation of each member's dE/dG from the mean,
  // into member_forces (M - 1 members: the deviations of all M sum to zero), all M
  // contractions of an atom in one contract_many() (rows: mean, deviations 1 .. M - 1)
  const int K = 3 * (committee - 1);    // member_forces per atom
  const int rows = deviations ? committee : 1;
  if (deviations)
    member_forces.assign(static_cast<std::size_t>(atom->nlocal + atom->nghost) * K, 0.0);
  for (int e = 0; e < nelements; ++e) {
    const int n = static_cast<int>(local_atoms[e].size());
    const int S = calculators[e]->size();
    for (int r = 0; r < n; ++r) {
      const int i = local_atoms[e][r];
      gather(i, e);
      const std::size_t m = nb.size();
      if (v.size() < rows * 3 * m) v.resize(rows * 3 * m);
      const std::size_t C = calculators[e]->cache_size();
      const double *atom_cache = C ? &cache[e][C * r] : nullptr;
      const double *mean = &dEdG[e][static_cast<std::size_t>(r) * S];
      if (deviations) {
        contract_rows.resize(static_cast<std::size_t>(rows) * S);
        std::copy_n(mean, S, contract_rows.begin());
        for (int mem = 0; mem + 1 < committee; ++mem)
          std::copy_n(&member_dEdG[e][(static_cast<std::size_t>(mem) * n + r) * S], S,
                      contract_rows.begin() + static_cast<std::size_t>(mem + 1) * S);
        calculators[e]->contract_many(nb, rows, contract_rows.data(), v.data(), atom_cache);
      } else {
        calculators[e]->contract(nb, mean, v.data(), atom_cache);
      }
      for (std::size_t k = 0; k < m; ++k) {
        const int j = nb_index[k];
        const double vx = v[3 * k], vy = v[3 * k + 1], vz = v[3 * k + 2];
        f[j][0] -= vx;
        f[j][1] -= vy;
        f[j][2] -= vz;
        f[i][0] += vx;
        f[i][1] += vy;
        f[i][2] += vz;
        if (vflag_either) {
          const double dx = nb.x[k], dy = nb.y[k], dz = nb.z[k];
          const double w[6] = {-dx * vx, -dy * vy, -dz * vz, -dx * vy, -dx * vz, -dy * vz};
          if (vflag_global)
            for (int c = 0; c < 6; ++c) virial[c] += w[c];
          if (vflag_atom)
            for (int c = 0; c < 6; ++c) {
              vatom[i][c] += 0.5 * w[c];
              vatom[j][c] += 0.5 * w[c];
            }
          if (cvflag_atom) {
            // centroid form: the whole term belongs to the atom whose energy it derives from
            const double cw[9] = {w[0], w[1], w[2], w[3], w[4], w[5], -dy * vx, -dz * vx, -dz * vy};
            for (int c = 0; c < 9; ++c) cvatom[i][c] += cw[c];
          }
        }
      }
      if (!deviations) continue;
      for (int mem = 0; mem + 1 < committee; ++mem) {
        const double *dv = &v[(mem + 1) * 3 * m];
        double *fi = &member_forces[static_cast<std::size_t>(i) * K + 3 * mem];
        for (std::size_t k = 0; k < m; ++k) {
          double *fj = &member_forces[static_cast<std::size_t>(nb_index[k]) * K + 3 * mem];
          for (int a = 0; a < 3; ++a) {
            fj[a] -= dv[3 * k + a];
            fi[a] += dv[3 * k + a];
          }
        }
      }
    }
  }
  if (deviations) finish_deviations();
  if (zbl) repulsion();
  if (profile) {
    const auto t3 = Clock::now();
    t_descriptors += std::chrono::duration<double>(tc - t0).count();
    t_extrapolation += std::chrono::duration<double>(t1 - tc).count();
    t_network += std::chrono::duration<double>(t2 - t1).count();
    t_forces += std::chrono::duration<double>(t3 - t2).count();
    n_calls++;
  }
}

/* per-atom outputs: as long as atom->nmax, zero where new */

void PairNNMD::grow_peratom()
{
  if (atom->nmax <= nmax_peratom) return;
  const int old = nmax_peratom;
  nmax_peratom = atom->nmax;
  memory->grow(extrapolation_count, nmax_peratom, "pair:extrapolation");
  memory->grow(extrapolation_excursion, nmax_peratom, "pair:extrapolation_excursion");
  memory->grow(force_deviation, nmax_peratom, "pair:force_deviation");
  memory->grow(energy_deviation, nmax_peratom, "pair:energy_deviation");
  for (int i = old; i < nmax_peratom; ++i)
    extrapolation_count[i] = extrapolation_excursion[i] = force_deviation[i] = energy_deviation[i] =
        0.0;
}

/* Extrapolation check of every local atom (after pass 1): function s of atom i is outside
   the training range when its excursion max(min_s - G_s, G_s - max_s) / width_s exceeds
   EXTRAPOLATION_TOLERANCE (docs/uncertainty.md). One comparison per function and atom. */

void PairNNMD::check_extrapolation()
{
  const int nlocal = atom->nlocal;
  for (int i = 0; i < nlocal; ++i) extrapolation_count[i] = extrapolation_excursion[i] = 0.0;
  extrapolating.clear();
  const tagint *tag = atom->tag;
  for (std::size_t e = 0; e < local_atoms.size(); ++e) {
    const int n = static_cast<int>(local_atoms[e].size());
    const int S = calculators[e]->size();
    const double *lo = range_min[e].data(), *hi = range_max[e].data();
    const double *iw = range_inv_width[e].data();
    for (int r = 0; r < n; ++r) {
      const double *g = &G[e][static_cast<std::size_t>(r) * S];
      int count = 0, worst_s = 0;
      double worst = -std::numeric_limits<double>::infinity();
      for (int s = 0; s < S; ++s) {
        const double excursion = std::max((lo[s] - g[s]) * iw[s], (g[s] - hi[s]) * iw[s]);
        count += excursion > nnmd::limits::EXTRAPOLATION_TOLERANCE;
        if (excursion > worst) {
          worst = excursion;
          worst_s = s;
        }
      }
      const int i = local_atoms[e][r];
      extrapolation_count[i] = count;
      extrapolation_excursion[i] = std::max(0.0, worst);
      if (count > 0)
        extrapolating.insert(extrapolating.end(),
                             {static_cast<double>(tag[i]), static_cast<double>(e),
                              static_cast<double>(worst_s), g[worst_s], worst,
                              static_cast<double>(count)});
    }
  }
  report_extrapolation();
}

/* Counters, warnings (gathered to rank 0 and printed sorted by atom ID, so that the output
   does not depend on the number of ranks) and the error of `extrapolation error`. */

void PairNNMD::report_extrapolation()
{
  constexpr int W = 6;    // doubles per record
  const bigint step = update->ntimestep;
  const bool new_step = step != last_checked_step;    // a timestep is counted once
  const bigint mine = static_cast<bigint>(extrapolating.size() / W);
  if (new_step) {
    extrapolation_total += mine;
    extrapolation_checks++;
    last_checked_step = step;
  }
  // compute pair nnmd sums these over ranks
  globals[0] = static_cast<double>(extrapolation_total);
  globals[1] = static_cast<double>(mine);

  const bool error_mode = extrapolation_mode == ExtrapolationMode::Error;
  if (!error_mode && (extrapolation_suppressed || !new_step)) return;
  bigint total = 0;
  MPI_Allreduce(&mine, &total, 1, MPI_LMP_BIGINT, MPI_SUM, world);
  if (total == 0) return;

  // this rank's records by atom ID
  std::vector<int> order(mine);
  for (int k = 0; k < mine; ++k) order[k] = k;
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    return extrapolating[W * a] < extrapolating[W * b];
  });
  auto line = [&](const double *rec) {
    const int e = static_cast<int>(rec[1]), s = static_cast<int>(rec[2]);
    return fmt::format("atom {} ({}) has {} of {} symmetry functions outside the training range; "
                       "worst: function {} ({}) = {:.8g}, training range [{:.8g}, {:.8g}], "
                       "{:.4g} range widths outside",
                       static_cast<tagint>(rec[0]), model->info().elements[e],
                       static_cast<int>(rec[5]), calculators[e]->size(), s + 1,
                       describe_function(e, s), rec[3], range_min[e][s], range_max[e][s], rec[4]);
  };

  if (error_mode) {
    // every rank learns the record of the smallest atom ID and stops with the same message
    std::vector<double> first(W, -1.0), all(static_cast<std::size_t>(W) * comm->nprocs);
    if (mine > 0) std::copy_n(&extrapolating[W * order[0]], W, first.begin());
    MPI_Allgather(first.data(), W, MPI_DOUBLE, all.data(), W, MPI_DOUBLE, world);
    int best = -1;
    for (int p = 0; p < comm->nprocs; ++p)
      if (all[W * p] >= 0 && (best < 0 || all[W * p] < all[W * best])) best = p;
    error->all(FLERR,
               "pair nnmd: extrapolation at step {}: {}; {} atom(s) outside the training range "
               "(pair_style nnmd ... extrapolation error)",
               step, line(&all[W * best]), total);
  }

  // warn: at most the remaining number of lines, the smallest atom IDs first
  const bigint remaining = extrapolation_max - extrapolation_warned;
  const int send = static_cast<int>(std::min(mine, remaining));
  std::vector<double> buf(static_cast<std::size_t>(W) * send);
  for (int k = 0; k < send; ++k) std::copy_n(&extrapolating[W * order[k]], W, &buf[W * k]);
  const int nsend = W * send;
  std::vector<int> counts(comm->nprocs), displs(comm->nprocs);
  MPI_Gather(&nsend, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, world);
  std::vector<double> got;
  if (comm->me == 0) {
    int sum = 0;
    for (int p = 0; p < comm->nprocs; ++p) {
      displs[p] = sum;
      sum += counts[p];
    }
    got.resize(sum);
  }
  MPI_Gatherv(buf.data(), nsend, MPI_DOUBLE, got.data(), counts.data(), displs.data(), MPI_DOUBLE,
              0, world);
  const bigint printed = std::min(total, remaining);
  if (comm->me == 0) {
    std::vector<int> idx(got.size() / W);
    for (std::size_t k = 0; k < idx.size(); ++k) idx[k] = static_cast<int>(k);
    std::sort(idx.begin(), idx.end(), [&](int a, int b) {
      return got[W * a] < got[W * b];
    });
    for (bigint k = 0; k < printed; ++k)
      error->warning(FLERR, "pair nnmd: step {}: extrapolation: {}", step, line(&got[W * idx[k]]));
    if (total > printed)
      error->warning(FLERR,
                     "pair nnmd: step {}: {} atom(s) outside the training range; further "
                     "extrapolation warnings suppressed (pair_style nnmd ... extrapolation warn "
                     "max {})",
                     step, total, extrapolation_max);
  }
  extrapolation_warned += static_cast<int>(printed);
  if (total > printed) extrapolation_suppressed = true;
}

std::string PairNNMD::describe_function(int element, int s) const
{
  const nnmd::ModelInfo &info = model->info();
  const nnmd::SymmetryFunction &p = info.functions[element][s];
  if (p.type == 2)
    return fmt::format("type 2, neighbour {}, eta {:g}, rs {:g}, rc {:g}", info.elements[p.e1],
                       p.eta, p.rs, p.rc);
  return fmt::format(
      "type {}, neighbours {} {}, eta {:g}, rs {:g}, lambda {:g}, zeta {:g}, rc {:g}", p.type,
      info.elements[p.e1], info.elements[p.e2], p.eta, p.rs, p.lambda, p.zeta, p.rc);
}

/* Uncertainty step, element `element`: every member's energies and dE/dG; the mean goes
   to Eatom/dEdG (the forces), the members' deviations from it stay in member_dEdG, and the
   per-atom energy deviations are computed. */

void PairNNMD::committee_networks(int element, int n)
{
  const int M = committee;
  const std::size_t S = calculators[element]->size();
  const std::size_t nS = n * S;
  std::vector<double> &E = member_E[element], &D = member_dEdG[element];
  E.resize(static_cast<std::size_t>(M) * n);
  D.resize(M * nS);
  model->evaluate_committee(element, G[element].data(), n, E.data(), D.data());
  double *mean_E = Eatom[element].data(), *mean_D = dEdG[element].data();
  for (int r = 0; r < n; ++r) {
    double sum = 0.0;
    for (int m = 0; m < M; ++m) sum += E[static_cast<std::size_t>(m) * n + r];
    mean_E[r] = sum / M;
    double var = 0.0;
    for (int m = 0; m < M; ++m) {
      const double d = E[static_cast<std::size_t>(m) * n + r] - mean_E[r];
      var += d * d;
    }
    energy_deviation[local_atoms[element][r]] = std::sqrt(var / M);
  }
  for (std::size_t k = 0; k < nS; ++k) {
    double sum = 0.0;
    for (int m = 0; m < M; ++m) sum += D[m * nS + k];
    mean_D[k] = sum / M;
  }
  for (int m = 0; m < M; ++m)
    for (std::size_t k = 0; k < nS; ++k) D[m * nS + k] -= mean_D[k];
}

/* Uncertainty step, after pass 2: the ghost atoms' member forces back to their owners, then
   sigma_i = sqrt(mean_m |F_i^m - F_i|^2) (the last member's deviation is minus the sum of
   the others') and the frame values of compute pair nnmd. */

void PairNNMD::finish_deviations()
{
  comm->reverse_comm(this);
  const int M = committee, K = 3 * (M - 1);
  double fmax = 0.0, fsum = 0.0, emax = 0.0, count = 0.0;
  for (const auto &atoms : local_atoms)
    for (const int i : atoms) {
      const double *fi = &member_forces[static_cast<std::size_t>(i) * K];
      double last[3] = {0.0, 0.0, 0.0}, sq = 0.0;
      for (int m = 0; m + 1 < M; ++m)
        for (int a = 0; a < 3; ++a) {
          sq += fi[3 * m + a] * fi[3 * m + a];
          last[a] -= fi[3 * m + a];
        }
      sq += last[0] * last[0] + last[1] * last[1] + last[2] * last[2];
      force_deviation[i] = std::sqrt(sq / M);
      fmax = std::max(fmax, force_deviation[i]);
      fsum += force_deviation[i];
      emax = std::max(emax, energy_deviation[i]);
      count += 1.0;
    }
  double mx[2] = {fmax, emax}, gmx[2], sm[2] = {fsum, count}, gsm[2];
  MPI_Allreduce(mx, gmx, 2, MPI_DOUBLE, MPI_MAX, world);
  MPI_Allreduce(sm, gsm, 2, MPI_DOUBLE, MPI_SUM, world);
  // compute pair nnmd sums over ranks: the frame values live on rank 0
  const bool root = comm->me == 0;
  globals[2] = root ? gmx[0] : 0.0;
  globals[3] = root && gsm[1] > 0 ? gsm[0] / gsm[1] : 0.0;
  globals[4] = root ? gmx[1] : 0.0;
}

int PairNNMD::pack_reverse_comm(int n, int first, double *buf)
{
  const int K = 3 * (committee - 1);
  int k = 0;
  for (int i = first; i < first + n; ++i)
    for (int c = 0; c < K; ++c) buf[k++] = member_forces[static_cast<std::size_t>(i) * K + c];
  return k;
}

void PairNNMD::unpack_reverse_comm(int n, int *list, double *buf)
{
  const int K = 3 * (committee - 1);
  int k = 0;
  for (int q = 0; q < n; ++q) {
    const std::size_t j = list[q];
    for (int c = 0; c < K; ++c) member_forces[j * K + c] += buf[k++];
  }
}

/* The model's ZBL repulsion over the full neighbour list: each ordered pair (i, j) gives i
   its half of the pair energy and virial and the whole pair force (the pair (j, i) gives
   j its share, on the rank that owns j). */

void PairNNMD::repulsion()
{
  double **x = atom->x;
  double **f = atom->f;
  const int *type = atom->type;
  const int inum = list->inum;
  const int *ilist = list->ilist;
  const double outer_sq = zbl->outer() * zbl->outer();
  for (int ii = 0; ii < inum; ++ii) {
    const int i = ilist[ii];
    const int ei = type_to_element[type[i]];
    if (ei < 0) continue;
    const double xi = x[i][0], yi = x[i][1], zi = x[i][2];
    const int *jlist = list->firstneigh[i];
    const int jnum = list->numneigh[i];
    for (int jj = 0; jj < jnum; ++jj) {
      const int j = jlist[jj] & NEIGHMASK;
      const int ej = type_to_element[type[j]];
      if (ej < 0) continue;
      const double dx = x[j][0] - xi, dy = x[j][1] - yi, dz = x[j][2] - zi;
      const double rsq = dx * dx + dy * dy + dz * dz;
      if (rsq >= outer_sq) continue;
      if (rsq == 0.0)
        error->one(FLERR, "Pair nnmd: atoms {} and {} are at the same position", atom->tag[i],
                   atom->tag[j]);
      const double r = std::sqrt(rsq);
      double energy, dedr;
      zbl->pair(ei, ej).evaluate(r, energy, dedr);
      const double fr = dedr / r;    // dE/dd = fr d, F_i = +dE/dd
      const double vx = fr * dx, vy = fr * dy, vz = fr * dz;
      f[i][0] += vx;
      f[i][1] += vy;
      f[i][2] += vz;
      if (eflag_global) eng_vdwl += 0.5 * energy;
      if (eflag_atom) eatom[i] += 0.5 * energy;
      if (vflag_either) {
        const double w[6] = {-0.5 * dx * vx, -0.5 * dy * vy, -0.5 * dz * vz,
                             -0.5 * dx * vy, -0.5 * dx * vz, -0.5 * dy * vz};
        if (vflag_global)
          for (int c = 0; c < 6; ++c) virial[c] += w[c];
        if (vflag_atom)
          for (int c = 0; c < 6; ++c) vatom[i][c] += w[c];
        if (cvflag_atom) {
          const double cw[9] = {w[0], w[1], w[2], w[3], w[4], w[5], w[3], w[4], w[5]};
          for (int c = 0; c < 9; ++c) cvatom[i][c] += cw[c];
        }
      }
    }
  }
}

/* fix pair: trigger flags (extract) and per-atom values (extract_peratom) */

void *PairNNMD::extract(const char *name, int &dim)
{
  dim = 0;
  const std::string key = name;
  if (key == "extrapolation_flag" || key == "extrapolation_excursion_flag")
    return &extrapolation_trigger;
  if (key == "force_deviation_flag" || key == "energy_deviation_flag") return &uncertainty_trigger;
  return nullptr;
}

void *PairNNMD::extract_peratom(const char *name, int &ncol)
{
  ncol = 0;
  const std::string key = name;
  if (key == "extrapolation") return extrapolation_on ? extrapolation_count : nullptr;
  if (key == "extrapolation_excursion") return extrapolation_on ? extrapolation_excursion : nullptr;
  if (key == "force_deviation") return committee > 1 ? force_deviation : nullptr;
  if (key == "energy_deviation") return committee > 1 ? energy_deviation : nullptr;
  return nullptr;
}

/* after each run: profile yes timings; the extrapolation summary */

void PairNNMD::finish()
{
  if (extrapolation_on && extrapolation_checks > 0) {
    bigint total = 0;
    MPI_Allreduce(&extrapolation_total, &total, 1, MPI_LMP_BIGINT, MPI_SUM, world);
    if (comm->me == 0)
      utils::logmesg(lmp,
                     "pair nnmd: {} extrapolating atom-step(s) on {} checked step(s) of this "
                     "run\n",
                     total, extrapolation_checks);
  }
  if (!profile || n_calls == 0) return;
  constexpr int NP = 4;
  double mine[NP] = {t_descriptors, t_extrapolation, t_network, t_forces}, sum[NP], mx[NP];
  MPI_Allreduce(mine, sum, NP, MPI_DOUBLE, MPI_SUM, world);
  MPI_Allreduce(mine, mx, NP, MPI_DOUBLE, MPI_MAX, world);
  if (comm->me == 0) {
    const double total = sum[0] + sum[1] + sum[2] + sum[3];
    const char *names[NP] = {"descriptors (pass 1)", "extrapolation checks", "networks",
                             "forces (pass 2)"};
    std::string msg = fmt::format("pair nnmd profile over {} force calls (seconds per rank: "
                                  "average, max; share of pair time):\n",
                                  n_calls);
    for (int k = 0; k < NP; ++k)
      msg += fmt::format("  {:22s} {:10.4f} {:10.4f}  {:5.1f}%\n", names[k], sum[k] / comm->nprocs,
                         mx[k], total > 0 ? 100.0 * sum[k] / total : 0.0);
    utils::logmesg(lmp, msg);
  }
  t_descriptors = t_extrapolation = t_network = t_forces = 0.0;
  n_calls = 0;
}

double PairNNMD::memory_usage()
{
  double bytes = Pair::memory_usage();
  for (std::size_t e = 0; e < G.size(); ++e)
    bytes += sizeof(double) *
            (G[e].capacity() + dEdG[e].capacity() + Eatom[e].capacity() + cache[e].capacity()) +
        sizeof(int) * local_atoms[e].capacity();
  for (std::size_t e = 0; e < member_E.size(); ++e)
    bytes += sizeof(double) * (member_E[e].capacity() + member_dEdG[e].capacity());
  bytes += sizeof(double) *
          (nb.x.capacity() * 4 + v.capacity() + contract_rows.capacity() +
           member_forces.capacity() + extrapolating.capacity() + 4.0 * nmax_peratom) +
      sizeof(int) * (nb.elem.capacity() + nb_index.capacity());
  return bytes;
}
