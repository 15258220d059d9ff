"""``mxfp8``: OCP MX FP8, E4M3 weights with E8M0 scales per 32 values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from kernel_core.config import LayerConfig, check_choice
from kernel_core.families.mxfp4 import MX_GROUP
from kernel_core.kernel import LinearKernel
from kernel_core.params import ParamSpec

__all__ = ["Mxfp8LinearLayerConfig", "Mxfp8LinearKernel"]


@dataclass(frozen=True, kw_only=True)
class Mxfp8LinearLayerConfig(LayerConfig):
    """``activation_mode``: "w8a8" (activations quantized to MXFP8 per call) or "w8a16"."""

    family: ClassVar[str] = "mxfp8"
    activation_modes: ClassVar[tuple[str, ...]] = ("w8a8", "w8a16")

    activation_mode: str = "w8a8"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "activation_mode", self.activation_modes)
        if self.in_features % MX_GROUP:
            raise ValueError(
                f"Mxfp8LinearLayerConfig.weight_shape={self.weight_shape}: in_features must be a "
                f"multiple of {MX_GROUP}"
            )


class Mxfp8LinearKernel(LinearKernel):
    """ABC: ``W[n, k] = e4m3(q) * 2 ** (weight_scale[n, k // 32] - 127)``."""

    family = "mxfp8"
    config_class = Mxfp8LinearLayerConfig

    @staticmethod
    def parameter_specs(config: Mxfp8LinearLayerConfig) -> tuple[ParamSpec, ...]:
        n, k = config.weight_shape
        return (
            ParamSpec(
                "weight", (torch.float8_e4m3fn,), ((n, k),),
                "E4M3 codes, (out_features, in_features)",
            ),
            ParamSpec(
                "weight_scale", (torch.uint8,), ((n, k // MX_GROUP),),
                "E8M0 exponent byte per 32 values along K: scale = 2 ** (E - 127)",
            ),
        )
