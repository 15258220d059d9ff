"""``fp8_block``: DeepSeek-style FP8 with 128x128 weight blocks and 1x128 activation groups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from kernel_core.config import LayerConfig, check_choice
from kernel_core.kernel import LinearKernel
from kernel_core.params import ParamSpec

__all__ = ["Fp8BlockLinearLayerConfig", "Fp8BlockScaledMMLinearKernel"]


@dataclass(frozen=True, kw_only=True)
class Fp8BlockLinearLayerConfig(LayerConfig):
    """FP8 E4M3 weights with one scale per ``weight_block`` (N, K) block; activations quantized
    dynamically per token and per ``input_group`` channels of K."""

    family: ClassVar[str] = "fp8_block"
    activation_modes: ClassVar[tuple[str, ...]] = ("w8a8",)

    weight_block: tuple[int, int] = (128, 128)
    input_group: int = 128
    input_scale: str = "dynamic"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "weight_block", tuple(self.weight_block))
        check_choice(self, "weight_block", ((128, 128),))
        check_choice(self, "input_group", (128,))
        check_choice(self, "input_scale", ("dynamic",))

    @property
    def activation_mode(self) -> str:
        return "w8a8"


class Fp8BlockScaledMMLinearKernel(LinearKernel):
    """ABC: ``out[m, n] = sum_j As[m, j] * Bs[n // 128, j] * (A_q[m, blk j] . W_q[n, blk j])``."""

    family = "fp8_block"
    config_class = Fp8BlockLinearLayerConfig

    @staticmethod
    def parameter_specs(config: Fp8BlockLinearLayerConfig) -> tuple[ParamSpec, ...]:
        n, k = config.weight_shape
        bn, bk = config.weight_block
        return (
            ParamSpec(
                "weight", (torch.float8_e4m3fn,), ((n, k),),
                "E4M3 codes, (out_features, in_features)",
            ),
            ParamSpec(
                "weight_scale", (torch.float32,), ((-(-n // bn), -(-k // bk)),),
                "decode multiplier per 128x128 block (vLLM's weight_scale_inv, a multiplier too)",
            ),
        )
