"""FlashInfer's environment, set up before its first import, and the lazy import itself.

``import flashinfer`` is slow (seconds), queries every GPU unless ``FLASHINFER_CUDA_ARCH_LIST`` is
set, writes a JIT log under ``$HOME`` and, offline, would retry downloads for minutes. So the
plugin never imports it at registration: :func:`flashinfer` imports it on first use, after
:func:`configure_environment` has filled in the variables the user left unset.

=================================== ===========================================================
variable (set only when unset)      value
=================================== ===========================================================
FLASHINFER_WORKSPACE_BASE           ``<kernel-core cache dir>/flashinfer`` (JIT builds and log)
TRTLLM_DG_CACHE_DIR                 ``<kernel-core cache dir>/flashinfer/deep_gemm`` (the
                                    cubins ``fp8_blockscale_gemm_sm90`` compiles at run time)
FLASHINFER_NO_DOWNLOAD              ``1``: fail at once instead of retrying downloads offline
CUDA_HOME                           the toolkit of ``nvcc`` on PATH, else ``/usr/local/cuda``
FLASHINFER_CUDA_ARCH_LIST           the current device's capability, e.g. ``9.0``
=================================== ===========================================================
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
import os
import shutil
from collections.abc import MutableMapping
from pathlib import Path
from types import ModuleType

import torch

from kernel_core import envs

__all__ = [
    "TESTED_FLASHINFER",
    "configure_environment",
    "find_cuda_home",
    "flashinfer",
    "flashinfer_problem",
    "platform_problem",
]

logger = logging.getLogger(__name__)

#: The flashinfer-python releases this plugin was tested with (pyproject pins the same range).
TESTED_FLASHINFER = (">=", "0.7.2.post1", "<", "0.7.3")


def find_cuda_home() -> str | None:
    """The CUDA toolkit root: where ``nvcc`` on PATH really lives, else ``/usr/local/cuda``.

    ``nvcc`` may be a wrapper script (``/usr/local/bin/nvcc``), whose grandparent is no toolkit;
    a candidate counts only if it has ``bin/nvcc`` and ``include/cuda_runtime.h``.
    """
    candidates: list[Path] = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(nvcc).resolve().parent.parent)
    candidates.append(Path("/usr/local/cuda"))
    for root in candidates:
        if (root / "bin" / "nvcc").exists() and (root / "include" / "cuda_runtime.h").exists():
            return str(root)
    return None


def _current_arch() -> str | None:
    """``"9.0"`` for the current CUDA device only (FlashInfer would query every GPU)."""
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def configure_environment(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Fill in FlashInfer's variables the user left unset; return those that were set here."""
    environ = os.environ if environ is None else environ
    base = envs.cache_dir() / "flashinfer"
    wanted: dict[str, str | None] = {
        "FLASHINFER_WORKSPACE_BASE": str(base),
        "TRTLLM_DG_CACHE_DIR": str(base / "deep_gemm"),
        "FLASHINFER_NO_DOWNLOAD": "1",
    }
    if "CUDA_HOME" not in environ and "CUDA_PATH" not in environ:
        wanted["CUDA_HOME"] = find_cuda_home()
    if "FLASHINFER_CUDA_ARCH_LIST" not in environ:
        wanted["FLASHINFER_CUDA_ARCH_LIST"] = _current_arch()
    applied: dict[str, str] = {}
    for name, value in wanted.items():
        if value is not None and name not in environ:
            environ[name] = value
            applied[name] = value
    if applied:
        logger.debug("flashinfer environment: %s", applied)
    return applied


def flashinfer_problem() -> str | None:
    """Why FlashInfer cannot be used here (not installed, untested release), or None.

    Reads the installed metadata only: answering must not import flashinfer.
    """
    if importlib.util.find_spec("flashinfer") is None:
        return "flashinfer-python is not installed (pip install kernel-core-flashinfer)"
    try:
        version = importlib.metadata.version("flashinfer-python")
    except importlib.metadata.PackageNotFoundError:
        return None  # a source checkout on the path: trust it
    try:
        from packaging.version import Version
    except ImportError:
        return None
    low, high = Version(TESTED_FLASHINFER[1]), Version(TESTED_FLASHINFER[3])
    if not low <= Version(version) < high:
        return (
            f"flashinfer-python {version} is installed; this plugin is tested with "
            f"{TESTED_FLASHINFER[0]}{low},{TESTED_FLASHINFER[2]}{high}"
        )
    return None


def platform_problem(
    compute_capability: int | None, *, minimum: int | None = None, exactly: int | None = None
) -> str | None:
    """Why a kernel cannot run on this GPU / installation, or None; never imports flashinfer."""
    if compute_capability is None:
        return "no CUDA device (FlashInfer's GEMMs run on NVIDIA GPUs only)"
    if exactly is not None and compute_capability != exactly:
        return f"needs compute capability {exactly} exactly, found {compute_capability}"
    if minimum is not None and compute_capability < minimum:
        return f"needs compute capability >= {minimum}, found {compute_capability}"
    if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or find_cuda_home()):
        return "no CUDA toolkit found (FlashInfer builds its GEMMs with nvcc on first use)"
    return flashinfer_problem()


@functools.cache
def flashinfer() -> ModuleType:
    """Import flashinfer once, after :func:`configure_environment`."""
    problem = flashinfer_problem()
    if problem is not None:
        raise RuntimeError(problem)
    configure_environment()
    import flashinfer as module

    return module
