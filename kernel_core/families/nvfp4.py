"""``nvfp4``: E2M1 weights, E4M3 scales per 16 values and an FP32 global scale."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from kernel_core.config import LayerConfig, check_choice
from kernel_core.kernel import LinearKernel
from kernel_core.params import SCALAR_SHAPES, ParamSpec

__all__ = ["NvFp4LinearLayerConfig", "NvFp4LinearKernel", "NVFP4_GROUP"]

NVFP4_GROUP = 16


@dataclass(frozen=True, kw_only=True)
class NvFp4LinearLayerConfig(LayerConfig):
    """``activation_mode``: "w4a4" (activations quantized to NVFP4 too) or "w4a16"."""

    family: ClassVar[str] = "nvfp4"
    activation_modes: ClassVar[tuple[str, ...]] = ("w4a4", "w4a16")

    activation_mode: str = "w4a4"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "activation_mode", self.activation_modes)
        if self.in_features % NVFP4_GROUP:
            raise ValueError(
                f"NvFp4LinearLayerConfig.weight_shape={self.weight_shape}: in_features must be a "
                f"multiple of {NVFP4_GROUP}"
            )


class NvFp4LinearKernel(LinearKernel):
    """ABC: ``W[n, k] = e2m1(q) * e4m3(weight_scale[n, k // 16]) * weight_global_scale``."""

    family = "nvfp4"
    config_class = NvFp4LinearLayerConfig

    @staticmethod
    def parameter_specs(config: NvFp4LinearLayerConfig) -> tuple[ParamSpec, ...]:
        n, k = config.weight_shape
        specs = [
            ParamSpec(
                "weight", (torch.uint8,), ((n, k // 2),),
                "E2M1 codes, two per byte, even k in the low nibble",
            ),
            ParamSpec(
                "weight_scale", (torch.float8_e4m3fn,), ((n, k // NVFP4_GROUP),),
                "block scale per 16 values along K, linear (not swizzled) layout",
            ),
            ParamSpec(
                "weight_global_scale", (torch.float32,), SCALAR_SHAPES,
                "decode multiplier (amax / (448 * 6)), not compressed-tensors' encode divisor",
            ),
        ]
        if config.activation_mode == "w4a4":
            specs.append(ParamSpec(
                "input_global_scale", (torch.float32,), SCALAR_SHAPES,
                "activation decode multiplier (amax / (448 * 6))",
            ))
        return tuple(specs)
