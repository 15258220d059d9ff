"""Which platform this process runs on, and the GPU's compute capability (major * 10 + minor)."""

from __future__ import annotations

import functools

import torch

__all__ = ["current_platform", "current_compute_capability", "device_name"]


@functools.cache
def current_platform() -> str:
    """One of "cuda", "rocm", "xpu", "cpu" (cached: the answer does not change in a process)."""
    if torch.cuda.is_available():
        return "rocm" if torch.version.hip else "cuda"
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return "xpu"
    return "cpu"


@functools.cache
def current_compute_capability() -> int | None:
    """``major * 10 + minor`` of the current CUDA/ROCm device (90 for H100), else None."""
    if current_platform() in ("cuda", "rocm"):
        major, minor = torch.cuda.get_device_capability()
        return major * 10 + minor
    return None


@functools.cache
def device_name() -> str:
    if current_platform() in ("cuda", "rocm"):
        return torch.cuda.get_device_name()
    return "cpu"
