"""The CUDA sources compile with nvcc for sm_90a and sm_80 (CI has nvcc but no GPU), and the
bindings compile against this torch's headers. One TU per target, built in parallel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from kernel_core_marlin.ops import CSRC

NVCC = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
#: The flags torch.utils.cpp_extension adds to every CUDA compile (they remove implicit 16-bit
#: float conversions and operators, so the sources must not rely on them).
TORCH_CUDA_FLAGS = ["-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
                    "--expt-relaxed-constexpr"]


@pytest.mark.slow
@pytest.mark.skipif(not Path(NVCC).exists(), reason="nvcc is not installed")
def test_sources_compile(tmp_path: Path) -> None:
    from torch.utils.cpp_extension import include_paths

    jobs = {
        "bf16 sm_90a": [NVCC, *TORCH_CUDA_FLAGS, "-std=c++17", "-O3",
                        "-gencode=arch=compute_90a,code=sm_90a", "-c",
                        str(CSRC / "gemm_bf16.cu"), "-o", str(tmp_path / "bf16.o")],
        "fp16 sm_80": [NVCC, *TORCH_CUDA_FLAGS, "-std=c++17", "-O3",
                       "-gencode=arch=compute_80,code=sm_80", "-c",
                       str(CSRC / "gemm_fp16.cu"), "-o", str(tmp_path / "fp16.o")],
        "bindings": ["c++", "-std=c++17", "-fsyntax-only", "-DTORCH_EXTENSION_NAME=kcm_check",
                     *(f"-I{p}" for p in include_paths()),
                     f"-I{sysconfig.get_paths()['include']}", str(CSRC / "bindings.cpp")],
    }
    running = {name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True) for name, cmd in jobs.items()}
    failures = []
    for name, proc in running.items():
        output, _ = proc.communicate(timeout=900)
        if proc.returncode != 0:
            failures.append(f"{name} failed:\n{output[-3000:]}")
        elif "warning" in output.lower():
            print(f"{name} warnings:\n{output[-2000:]}", file=sys.stderr)
    assert not failures, "\n".join(failures)
