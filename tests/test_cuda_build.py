"""The CUDA part compiles (docs/gpu.md), where a CUDA compiler is found, without a GPU and
without a torch with CUDA:

* the torch-free kernels (lammps_plugin/cuda/sf_kernels.cu, the per-atom functions of
  sf_device.h) through their CMake target nnmd_cuda_kernels, configured on their own
  (lammps_plugin/cuda/CMakeLists.txt) for sm_90, without a single compiler warning;
* the torch glue (lammps_plugin/torch_ops/ops_cuda.cpp, the CUDA registration of the
  operators) checked for syntax and types against the installed torch's headers (the CPU
  wheels ship the c10/cuda headers; only a torch with CUDA can link it).

The compiler: $NNMD_NVCC, else /tmp/cuda13/nvidia/cu13/bin/nvcc (pip install --target
/tmp/cuda13 nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-cccl nvidia-cuda-crt), else
nvcc on PATH. Without one, the tests are skipped, with that reason."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import REPO

PIP_NVCC = Path("/tmp/cuda13/nvidia/cu13/bin/nvcc")


def find_nvcc() -> Path | None:
    env = os.environ.get("NNMD_NVCC")
    if env:
        return Path(env)
    if PIP_NVCC.is_file():
        return PIP_NVCC
    found = shutil.which("nvcc")
    return Path(found) if found else None


NVCC = find_nvcc()

pytestmark = pytest.mark.skipif(
    NVCC is None,
    reason="no CUDA compiler: set NNMD_NVCC, install one under /tmp/cuda13 (pip install "
    "--target /tmp/cuda13 nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-cccl "
    "nvidia-cuda-crt) or put nvcc on PATH",
)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout}\n{out.stderr}"
    return out


def cuda_include(nvcc: Path) -> Path:
    """The toolkit's include directory, as nvcc itself reports it (INCLUDES="-I...")."""
    out = run([str(nvcc), "--dryrun", "-x", "cu", "-c", "/dev/null", "-o", "/dev/null"])
    match = re.search(r'INCLUDES="-I([^"]+)"', out.stdout + out.stderr)
    assert match, f"nvcc --dryrun names no include directory:\n{out.stderr}"
    include = Path(match.group(1).strip())
    assert (include / "cuda_runtime_api.h").is_file(), f"no cuda_runtime_api.h in {include}"
    return include


@pytest.mark.slow
def test_kernels_compile_for_sm90(tmp_path):
    build = tmp_path / "build"
    cfg = run(
        [
            "cmake",
            "-S",
            str(REPO / "lammps_plugin" / "cuda"),
            "-B",
            str(build),
            f"-DCMAKE_CUDA_COMPILER={NVCC}",
            "-DNNMD_CUDA_ARCHITECTURES=90",
        ]
    )
    assert "The CUDA compiler identification is NVIDIA" in cfg.stdout
    out = run(["cmake", "--build", str(build), "--verbose"])
    log = out.stdout + out.stderr
    assert "sf_kernels.cu" in log and "sm_90" in log, log
    assert "warning" not in log.lower(), log
    lib = build / "libnnmd_cuda_kernels.a"
    assert lib.is_file() and lib.stat().st_size > 10_000
    # the archive holds device code (a fatbin) of the six kernels
    data = lib.read_bytes()
    assert b".nv_fatbin" in data
    assert data.count(b"row_kernel") >= 6


def test_cuda_glue_passes_the_compiler(tmp_path):
    """ops_cuda.cpp against the installed torch's headers and the toolkit's: syntax and
    types (-fsyntax-only); linking it needs a torch with CUDA."""
    torch_dir = Path(torch.__file__).parent / "include"
    if not (torch_dir / "c10" / "cuda" / "CUDAStream.h").is_file():
        pytest.skip(f"the installed torch has no c10/cuda headers ({torch_dir})")
    cmd = [
        os.environ.get("CXX", "g++"),
        "-std=c++17",
        "-fsyntax-only",
        "-Wall",
        "-Wextra",
        f"-I{REPO / 'lammps_plugin'}",
        # system headers, as CMake includes them: their own warnings are not ours
        *("-isystem", str(torch_dir)),
        *("-isystem", str(torch_dir / "torch" / "csrc" / "api" / "include")),
        *("-isystem", str(cuda_include(NVCC))),
        "-D_GLIBCXX_USE_CXX11_ABI=1",
        # a CPU wheel lacks the generated c10/cuda/impl/cuda_cmake_macros.h (it only says
        # that c10_cuda is a shared library)
        "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE",
        str(REPO / "lammps_plugin" / "torch_ops" / "ops_cuda.cpp"),
    ]
    out = run(cmd)
    assert "warning" not in out.stderr.lower(), out.stderr
