"""The seed API: vLLM's selection functions, names and semantics kept, on top of the registry.

Engines that were written against ``vllm.model_executor.kernels.linear`` keep working: kernels
registered with :func:`register_linear_kernel` go last in their family (as vLLM appends to the end
of its list), and ``choose_scaled_mm_linear_kernel`` walks the caller's own list in order.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Mapping, Sequence

from kernel_core import envs
from kernel_core.families import (
    FAMILIES,
    MPLinearLayerConfig,
    Mxfp8LinearLayerConfig,
    MxFp4LinearLayerConfig,
    NvFp4LinearLayerConfig,
    family_of,
)
from kernel_core.config import LayerConfig
from kernel_core.kernel import LinearKernel
from kernel_core.platform import current_compute_capability, current_platform
from kernel_core.registry import registry
from kernel_core.selection import (
    Candidate,
    Explanation,
    NoKernelError,
    choose_kernel,
    init_kernel,
    probe_kernel,
)

__all__ = [
    "register_linear_kernel",
    "choose_mp_linear_kernel",
    "choose_scaled_mm_linear_kernel",
    "init_nvfp4_linear_kernel",
    "init_mxfp4_linear_kernel",
    "init_mxfp8_linear_kernel",
]

logger = logging.getLogger(__name__)
SEED_PROVIDER = "register_linear_kernel"


def _platform_name(platform: object) -> str:
    """Accept "cuda", or an enum member such as vLLM's ``PlatformEnum.CUDA``."""
    if isinstance(platform, enum.Enum):
        platform = platform.name
    name = str(platform).lower()
    return {"oot": "cuda", "unspecified": "cuda"}.get(name, name)


def register_linear_kernel(
    kernel_class: type[LinearKernel], platform: object, kernel_type: str = "mp"
) -> None:
    """Add ``kernel_class`` for ``platform`` at the lowest priority of the ``kernel_type`` family."""
    if kernel_type not in FAMILIES:
        raise ValueError(
            f"Unrecognized kernel type: {kernel_type!r}; expected one of {', '.join(FAMILIES)}"
        )
    family = family_of(kernel_class)
    if family != kernel_type:
        raise ValueError(
            f"{kernel_class.__name__} is a {family!r} kernel, registered as kernel_type="
            f"{kernel_type!r}"
        )
    kernel_class.platforms = frozenset({*kernel_class.platforms, _platform_name(platform)})
    if "priority" not in kernel_class.__dict__:
        lowest = min((int(k.priority) for k in registry.kernels(family)), default=0)
        kernel_class.priority = min(lowest, 0) - 1
    registry.register_kernel(kernel_class, provider=SEED_PROVIDER)


def choose_mp_linear_kernel(
    config: MPLinearLayerConfig, compute_capability: int | None = None
) -> type[LinearKernel]:
    """The best ``mp`` kernel class for the layer (the caller constructs it)."""
    return choose_kernel(config, compute_capability)


def choose_scaled_mm_linear_kernel(
    config: LayerConfig,
    possible_kernels: Mapping[object, Sequence[type[LinearKernel]]] | Sequence[type[LinearKernel]],
    compute_capability: int | None = None,
    force_kernel: type[LinearKernel] | None = None,
) -> type[LinearKernel]:
    """The first of the caller's kernels, in the caller's order, that can serve the layer.

    ``possible_kernels`` maps a platform to its ordered list (vLLM's dictionaries), or is one list.
    ``force_kernel`` is tried first; if it cannot serve, the reason is logged and the list follows.
    """
    platform = current_platform()
    if compute_capability is None:
        compute_capability = current_compute_capability()
    if isinstance(possible_kernels, Mapping):
        kernels = next(
            (v for k, v in possible_kernels.items() if _platform_name(k) == platform), []
        )
    else:
        kernels = possible_kernels
    ordered = [*([force_kernel] if force_kernel else []), *kernels]
    disabled = envs.disabled_kernels()
    candidates: list[Candidate] = []
    chosen = None
    for kernel in dict.fromkeys(ordered):
        ok, reason = probe_kernel(kernel, config, compute_capability, platform, disabled)
        if kernel is force_kernel and not ok:
            logger.info("Tried to force %s, but it cannot serve: %s", kernel.name, reason)
        candidates.append(
            Candidate(kernel.name, kernel.provider, int(kernel.priority), ok, reason,
                      forced=kernel is force_kernel)
        )
        if ok:
            chosen = kernel
            break
    explanation = Explanation(config, platform, compute_capability, tuple(candidates), chosen)
    if chosen is None:
        raise NoKernelError(explanation)
    return chosen


def init_nvfp4_linear_kernel(
    config: NvFp4LinearLayerConfig, use_a16: bool | None = None
) -> LinearKernel:
    """Choose and construct an NVFP4 kernel; ``use_a16`` overrides the config's activation mode."""
    if use_a16 is not None:
        config = dataclasses.replace(config, activation_mode="w4a16" if use_a16 else "w4a4")
    return init_kernel(config)


def init_mxfp4_linear_kernel(config: MxFp4LinearLayerConfig) -> LinearKernel:
    """Choose and construct an MXFP4 kernel for the layer."""
    return init_kernel(config)


def init_mxfp8_linear_kernel(config: Mxfp8LinearLayerConfig) -> LinearKernel:
    """Choose and construct an MXFP8 kernel for the layer."""
    return init_kernel(config)
