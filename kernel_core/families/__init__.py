"""The kernel families: one config dataclass, one ABC and one parameter contract each.

A kernel's family is the family ABC it subclasses. ``FAMILIES`` maps each family key to its ABC;
``family_of`` answers for any kernel class.
"""

from __future__ import annotations

from kernel_core.families.fp8 import FP8ScaledMMLinearKernel, FP8ScaledMMLinearLayerConfig
from kernel_core.families.fp8_block import (
    Fp8BlockLinearLayerConfig,
    Fp8BlockScaledMMLinearKernel,
)
from kernel_core.families.int8 import Int8ScaledMMLinearKernel, Int8ScaledMMLinearLayerConfig
from kernel_core.families.mp import MPLinearKernel, MPLinearLayerConfig
from kernel_core.families.mxfp4 import MxFp4LinearKernel, MxFp4LinearLayerConfig
from kernel_core.families.mxfp8 import Mxfp8LinearKernel, Mxfp8LinearLayerConfig
from kernel_core.families.nvfp4 import NvFp4LinearKernel, NvFp4LinearLayerConfig
from kernel_core.kernel import LinearKernel

__all__ = [
    "FAMILIES",
    "family_of",
    "MPLinearKernel",
    "MPLinearLayerConfig",
    "Int8ScaledMMLinearKernel",
    "Int8ScaledMMLinearLayerConfig",
    "FP8ScaledMMLinearKernel",
    "FP8ScaledMMLinearLayerConfig",
    "Fp8BlockScaledMMLinearKernel",
    "Fp8BlockLinearLayerConfig",
    "NvFp4LinearKernel",
    "NvFp4LinearLayerConfig",
    "MxFp4LinearKernel",
    "MxFp4LinearLayerConfig",
    "Mxfp8LinearKernel",
    "Mxfp8LinearLayerConfig",
]

FAMILIES: dict[str, type[LinearKernel]] = {
    abc.family: abc
    for abc in (
        MPLinearKernel,
        Int8ScaledMMLinearKernel,
        FP8ScaledMMLinearKernel,
        Fp8BlockScaledMMLinearKernel,
        NvFp4LinearKernel,
        MxFp4LinearKernel,
        Mxfp8LinearKernel,
    )
}


def family_of(kernel_class: type) -> str:
    """The family key of a kernel class; a TypeError if it subclasses no family ABC."""
    for key, abc in FAMILIES.items():
        if isinstance(kernel_class, type) and issubclass(kernel_class, abc):
            return key
    names = ", ".join(abc.__name__ for abc in FAMILIES.values())
    raise TypeError(
        f"{getattr(kernel_class, '__name__', kernel_class)!r} is not a kernel of any family; "
        f"expected a subclass of one of: {names}"
    )
