"""``mxfp4``: OCP MX FP4, E2M1 weights with E8M0 scales per 32 values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from kernel_core.config import LayerConfig, check_choice
from kernel_core.kernel import LinearKernel
from kernel_core.params import ParamSpec

__all__ = ["MxFp4LinearLayerConfig", "MxFp4LinearKernel", "MX_GROUP"]

MX_GROUP = 32


@dataclass(frozen=True, kw_only=True)
class MxFp4LinearLayerConfig(LayerConfig):
    """``activation_mode``: "w4a4" (activations quantized to MXFP4 per call) or "w4a16"."""

    family: ClassVar[str] = "mxfp4"
    activation_modes: ClassVar[tuple[str, ...]] = ("w4a16", "w4a4")

    activation_mode: str = "w4a16"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "activation_mode", self.activation_modes)
        if self.in_features % MX_GROUP:
            raise ValueError(
                f"MxFp4LinearLayerConfig.weight_shape={self.weight_shape}: in_features must be a "
                f"multiple of {MX_GROUP}"
            )


class MxFp4LinearKernel(LinearKernel):
    """ABC: ``W[n, k] = e2m1(q) * 2 ** (weight_scale[n, k // 32] - 127)``."""

    family = "mxfp4"
    config_class = MxFp4LinearLayerConfig

    @staticmethod
    def parameter_specs(config: MxFp4LinearLayerConfig) -> tuple[ParamSpec, ...]:
        n, k = config.weight_shape
        return (
            ParamSpec(
                "weight", (torch.uint8,), ((n, k // 2),),
                "E2M1 codes, two per byte, even k in the low nibble",
            ),
            ParamSpec(
                "weight_scale", (torch.uint8,), ((n, k // MX_GROUP),),
                "E8M0 exponent byte per 32 values along K: scale = 2 ** (E - 127)",
            ),
        )
