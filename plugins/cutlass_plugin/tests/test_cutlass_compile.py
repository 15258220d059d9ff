"""The CUDA sources compile with nvcc for sm_90a on a machine without a GPU (CI).

Each translation unit of ``ops.CI_SOURCES`` is compiled (``nvcc -c``, no link) into a temporary
directory with the flags the JIT build uses; the units run in parallel, one per core. That is the
binding, every tile template once (fp8 -> bf16, four units), the int8 mainloop and the block-scaled
one: 26 of the 76 kernels, within CI's time on 2 cores; then the decode timeline probe (two more).
The other units instantiate the same templates with another output or operand type and are
compiled by the JIT build on the GPU machine. The binding includes only ``torch/extension.h`` (no
ATen/cuda headers), so it compiles against the CPU torch wheel too.
"""

from __future__ import annotations

import os
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kernel_core.jit import INCLUDE_DIR
from kernel_core_cutlass import ops

pytestmark = pytest.mark.slow


def _compile(source: Path, out_dir: Path) -> tuple[Path, int, str]:
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS, include_paths

    include, util = ops.cutlass_include_dirs()
    flags = [
        "-std=c++20", "-gencode=arch=compute_90a,code=sm_90a", *ops.NVCC_FLAGS,
        f"-I{ops.CSRC}", f"-I{include}", f"-I{util}",
    ]
    if source.suffix == ".cpp":
        flags += [f"-I{p}" for p in include_paths()]
        flags += [f"-I{INCLUDE_DIR}", f"-I{sysconfig.get_paths()['include']}", "-DTORCH_EXTENSION_NAME=compile_test",
                  "-DTORCH_API_INCLUDE_EXTENSION_H", "-Xcompiler", "-fPIC"]
    else:
        flags += list(COMMON_NVCC_FLAGS)
    target = out_dir / (source.stem + ".o")
    proc = subprocess.run(
        [ops._nvcc(), *flags, "-c", str(source), "-o", str(target)],
        capture_output=True, text=True, check=False,
    )
    return target, proc.returncode, proc.stderr[-4000:]


def test_every_translation_unit_compiles_for_sm90a(tmp_path):
    if ops.toolchain_problem():
        pytest.skip(ops.toolchain_problem())
    workers = max(1, min(len(ops.CI_SOURCES), os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda s: _compile(s, tmp_path), ops.CI_SOURCES))
    failures = [f"{t.name}: exit {code}\n{err}" for t, code, err in results if code != 0]
    assert not failures, "\n\n".join(failures)
    for target, _, _ in results:
        assert target.stat().st_size > 0


@pytest.mark.parametrize("probe", [
    # the decode tiles with decode_trace.h's stamps compiled in (NOTES.md v17)
    "decode_timeline_probe.cu",
    # the decode GEMM quantizing its own activations (NOTES.md v23)
    "fused_decode_probe.cu",
])
def test_the_gpu_probes_compile(probe, tmp_path):
    """The GPU probes under gpu/ compile with the units' flags, so they do not rot between device
    runs (they are built on the GPU machine only when run)."""
    if ops.toolchain_problem():
        pytest.skip(ops.toolchain_problem())
    target, code, err = _compile(Path(__file__).parents[1] / "gpu" / probe, tmp_path)
    assert code == 0, err
    assert target.stat().st_size > 0
