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

#include "model/model.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <stdexcept>

using namespace LAMMPS_NS;

PairNNMD::PairNNMD(LAMMPS *lmp) :
    Pair(lmp), device("cpu"), nthreads(1), single_precision(false), cutoff_user(0.0),
    cutoff_model(0.0), type9_method(nnmd::DescriptorCalculator::Method::Auto), profile(false),
    t_descriptors(0.0), t_network(0.0), t_forces(0.0), n_calls(0)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;    // the virial is tallied per neighbour pair below
  centroidstressflag = CENTROID_AVAIL;
}

PairNNMD::~PairNNMD()
{
  if (copymode) return;
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
   (g5 is a deprecated alias of type9) */

void PairNNMD::settings(int narg, char **arg)
{
  nthreads = 1;
  cutoff_user = 0.0;
  single_precision = false;
  device = "cpu";
  type9_method = nnmd::DescriptorCalculator::Method::Auto;
  profile = false;
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
    } else {
      error->all(FLERR,
                 "pair_style nnmd: unknown keyword {} (known: threads, cutoff, precision, device, "
                 "type9, profile)",
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
  local_atoms.assign(info.elements.size(), {});
  G.assign(info.elements.size(), {});
  dEdG.assign(info.elements.size(), {});
  Eatom.assign(info.elements.size(), {});
  cache.assign(info.elements.size(), {});

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

  if (comm->me == 0)
    utils::logmesg(lmp,
                   "pair nnmd: model {} ({}), elements {}, cutoff {:.6g} Angstrom, {} "
                   "libtorch thread(s) per rank, {} networks on {}\n",
                   model_file, info.created_by, known, cutoff_model, nthreads,
                   single_precision ? "float32" : "float64", device);
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
  // here rather than in coeff(): a later pair_style nnmd ... type9 X keeps the pair_coeff
  for (auto &d : calculators) d->set_method(type9_method);
  neighbor->add_request(this, NeighConst::REQ_FULL);
}

double PairNNMD::init_one(int i, int j)
{
  if (setflag[i][j] == 0) error->all(FLERR, "All pair coeffs are not set");
  return cutoff_user > 0.0 ? cutoff_user : cutoff_model;
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
  const auto t1 = Clock::now();
  for (int e = 0; e < nelements; ++e) {
    const int n = static_cast<int>(local_atoms[e].size());
    if (n == 0) continue;
    try {
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

  // pass 2: forces F_j = -sum_i dE_i/dd_ij, F_i = +sum_j dE_i/dd_ij; virial W = -sum d (x) v
  for (int e = 0; e < nelements; ++e) {
    const int n = static_cast<int>(local_atoms[e].size());
    const int S = calculators[e]->size();
    for (int r = 0; r < n; ++r) {
      const int i = local_atoms[e][r];
      gather(i, e);
      const std::size_t m = nb.size();
      if (v.size() < 3 * m) v.resize(3 * m);
      const std::size_t C = calculators[e]->cache_size();
      calculators[e]->contract(nb, &dEdG[e][static_cast<std::size_t>(r) * S], v.data(),
                               C ? &cache[e][C * r] : nullptr);
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
    }
  }
  if (profile) {
    const auto t3 = Clock::now();
    t_descriptors += std::chrono::duration<double>(t1 - t0).count();
    t_network += std::chrono::duration<double>(t2 - t1).count();
    t_forces += std::chrono::duration<double>(t3 - t2).count();
    n_calls++;
  }
}

/* profile yes: time per phase, averaged over ranks (printed after each run) */

void PairNNMD::finish()
{
  if (!profile || n_calls == 0) return;
  double mine[3] = {t_descriptors, t_network, t_forces}, sum[3], mx[3];
  MPI_Allreduce(mine, sum, 3, MPI_DOUBLE, MPI_SUM, world);
  MPI_Allreduce(mine, mx, 3, MPI_DOUBLE, MPI_MAX, world);
  if (comm->me == 0) {
    const double total = sum[0] + sum[1] + sum[2];
    const char *names[3] = {"descriptors (pass 1)", "networks (libtorch)", "forces (pass 2)"};
    std::string msg = fmt::format("pair nnmd profile over {} force calls (seconds per rank: "
                                  "average, max; share of pair time):\n",
                                  n_calls);
    for (int k = 0; k < 3; ++k)
      msg += fmt::format("  {:22s} {:10.4f} {:10.4f}  {:5.1f}%\n", names[k], sum[k] / comm->nprocs,
                         mx[k], total > 0 ? 100.0 * sum[k] / total : 0.0);
    utils::logmesg(lmp, msg);
  }
  t_descriptors = t_network = t_forces = 0.0;
  n_calls = 0;
}

double PairNNMD::memory_usage()
{
  double bytes = Pair::memory_usage();
  for (std::size_t e = 0; e < G.size(); ++e)
    bytes += sizeof(double) *
            (G[e].capacity() + dEdG[e].capacity() + Eatom[e].capacity() + cache[e].capacity()) +
        sizeof(int) * local_atoms[e].capacity();
  bytes += sizeof(double) * (nb.x.capacity() * 4 + v.capacity()) +
      sizeof(int) * (nb.elem.capacity() + nb_index.capacity());
  return bytes;
}
