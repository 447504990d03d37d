"""Run a command and report its peak resident memory (benchmarks only).

Used as ``mpirun -np N python rss_wrapper.py OUT_PREFIX lmp -in deck``: each MPI rank's
wrapper starts the command (which inherits the MPI environment), waits for it and writes
the peak RSS of its process tree (getrusage of children, in kB) to OUT_PREFIX.<pid>."""

import os
import resource
import subprocess
import sys

if __name__ == "__main__":
    prefix, cmd = sys.argv[1], sys.argv[2:]
    rc = subprocess.call(cmd, close_fds=False)  # keep the PMI socket of mpirun
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(f"{prefix}.{os.getpid()}", "w") as fh:
        fh.write(f"{peak_kb}\n")
    sys.exit(rc)
