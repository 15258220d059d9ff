"""Build a probe under gpu/ (CUDA C++ with a C entry point, CUTLASS headers) into a shared library.

The probes are called through ctypes, so they never include torch. The library is cached like the
plugin's JIT build (kernel_core.jit's key over the sources, headers, flags and toolchain, in its
folder), built with the plugin's nvcc flags for sm_90a, and announced on stderr when it is built.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kernel_core.jit import _fingerprint, build_dir_for
from kernel_core_cutlass import ops


def build_probe_library(source: Path, name: str, keyed_with: Sequence[Path] = ()) -> ctypes.CDLL:
    """``source`` built into ``<cache>/jit/kernel_core_cutlass_<name>-<key>/<name>.so`` (once per
    key) and loaded. ``keyed_with``: further files whose folders count in the key (a csrc unit
    stands for the csrc headers a probe includes)."""
    include, util = ops.cutlass_include_dirs() or (None, None)
    if include is None:
        raise RuntimeError("CUTLASS headers not found: install the nvidia-cutlass wheel")
    flags = ["-std=c++17", "-gencode=arch=compute_90a,code=sm_90a", *ops.NVCC_FLAGS, "-shared",
             "-Xcompiler", "-fPIC"]
    include_paths = [str(ops.CSRC), str(include), str(util)]
    key = _fingerprint([source, *keyed_with], flags, include_paths, "sm_90a")
    library = build_dir_for(f"kernel_core_cutlass_{name}", key) / f"{name}.so"
    if not library.exists():
        library.parent.mkdir(parents=True, exist_ok=True)
        command = [ops._nvcc() or "nvcc", *flags, *(f"-I{path}" for path in include_paths),
                   str(source), "-o", str(library)]
        print(f"probe: building {library}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        subprocess.run(command, check=True)
        print(f"probe: built in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return ctypes.CDLL(str(library))
