"""Just-in-time builds of CUDA C++ extensions, cached on disk by source and device.

Plugins call :func:`load_extension` at first use (or from ``warmup``). The build directory is keyed
by a hash of the sources and the headers beside them, flags, torch version and target
architecture, so an edit or another GPU builds anew and an unchanged one loads in milliseconds.
A built library is loaded straight from its keyed directory, without asking ninja, so a cache
copied to another machine (same torch, same GPU) is used even though the copied sources carry
newer timestamps. The first build of a key is announced on stderr, since it can take minutes.

Every extension gets :data:`INCLUDE_DIR` on its include path: ``#include "kernel_core/check.h"``
gives ``KC_CHECK``, a ``TORCH_CHECK`` whose message is built without iostreams (why: check.h).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch

from kernel_core import envs

__all__ = ["INCLUDE_DIR", "load_extension", "build_dir_for"]

#: Headers kernel_core ships for plugin extensions (``kernel_core/check.h``).
INCLUDE_DIR = Path(__file__).parent / "include"

logger = logging.getLogger(__name__)
_LOADED: dict[str, ModuleType] = {}


_SOURCE_SUFFIXES = {".cu", ".cuh", ".cpp", ".cc", ".h", ".hpp", ".inl"}


def _source_files(sources: Sequence[Path]) -> list[Path]:
    """The sources, every C++/CUDA file beside them and kernel_core's shared headers: an edited
    header rebuilds too."""
    folders = {path.resolve().parent for path in sources}
    folders.add((INCLUDE_DIR / "kernel_core").resolve())
    found = {p.resolve() for folder in folders for p in folder.iterdir()
             if p.is_file() and p.suffix in _SOURCE_SUFFIXES}
    return sorted(found | {path.resolve() for path in sources})


def _fingerprint(
    sources: Sequence[Path], flags: Sequence[str], include_paths: Sequence[str], arch: str
) -> str:
    digest = hashlib.sha256()
    for path in _source_files(sources):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    python = sysconfig.get_config_var("EXT_SUFFIX") or ""  # this interpreter's extension ABI
    for item in (*flags, *include_paths, arch, torch.__version__, str(torch.version.cuda), python):
        digest.update(item.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def build_dir_for(name: str, fingerprint: str) -> Path:
    return envs.cache_dir() / "jit" / f"{name}-{fingerprint}"


def load_extension(
    name: str,
    sources: Sequence[str | Path],
    *,
    arch: str | None = "sm_90a",
    extra_cuda_cflags: Sequence[str] = (),
    extra_cflags: Sequence[str] = (),
    extra_include_paths: Sequence[str] = (),
    extra_ldflags: Sequence[str] = (),
) -> ModuleType:
    """Build (once per source and device) and import a torch C++/CUDA extension.

    ``arch`` is a real SM target such as ``sm_90a``; it becomes ``-gencode`` flags (the ``-arch``
    shorthand also runs a plain sm_90 pass that rejects wgmma). ``None`` builds host C++ only
    (``.cpp`` sources, no CUDA), e.g. a compiled piece of a Python hot path.
    """
    from torch.utils.cpp_extension import load

    paths = [Path(s) for s in sources]
    if arch is None:
        cuda_flags = list(extra_cuda_cflags)
    else:
        number = arch.removeprefix("sm_")
        cuda_flags = [f"-gencode=arch=compute_{number},code={arch}", *extra_cuda_cflags]
    target = arch or "host"
    key = _fingerprint(paths, [*cuda_flags, *extra_cflags], list(extra_include_paths), target)
    if key in _LOADED:
        return _LOADED[key]
    build_dir = build_dir_for(name, key)
    library = build_dir / f"{name}.so"
    if library.exists():
        module = _import_built(name, library)
        logger.debug("loaded extension %s from %s", name, library)
        _LOADED[key] = module
        return module
    build_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"kernel-core: building {name} for {target} (first use; cached in {build_dir})",
        file=sys.stderr,
        flush=True,
    )
    start = time.perf_counter()
    module = load(
        name=name,
        sources=[str(p) for p in paths],
        extra_cuda_cflags=cuda_flags,
        extra_cflags=list(extra_cflags),
        extra_include_paths=[str(INCLUDE_DIR), *extra_include_paths],
        extra_ldflags=list(extra_ldflags),
        build_directory=str(build_dir),
        verbose=False,
    )
    elapsed = time.perf_counter() - start
    print(f"kernel-core: built {name} in {elapsed:.0f} s", file=sys.stderr, flush=True)
    _LOADED[key] = module
    return module


def _import_built(name: str, library: Path) -> ModuleType:
    """Import an extension library that an earlier build of the same key left behind."""
    spec = importlib.util.spec_from_file_location(name, library)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the built extension {library}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
