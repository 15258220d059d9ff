"""``fp8``: FP8 E4M3 weights; W8A8 with FP8 activations, or W8A16 (weight-only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from kernel_core.config import LayerConfig, check_choice
from kernel_core.kernel import LinearKernel
from kernel_core.params import SCALAR_SHAPES, ParamSpec, per_channel_shapes

__all__ = ["FP8ScaledMMLinearLayerConfig", "FP8ScaledMMLinearKernel"]


@dataclass(frozen=True, kw_only=True)
class FP8ScaledMMLinearLayerConfig(LayerConfig):
    """FP8 E4M3 weights with per-tensor or per-channel scales.

    ``activation_mode``: "w8a8" quantizes activations to FP8, "w8a16" keeps them 16-bit.
    For W8A8, ``input_scale`` is "static" (one scale from the checkpoint) or "dynamic", and
    ``input_scale_granularity`` is "tensor" or "token" (dynamic only).
    """

    family: ClassVar[str] = "fp8"
    activation_modes: ClassVar[tuple[str, ...]] = ("w8a8", "w8a16")

    activation_mode: str = "w8a8"
    weight_scale_granularity: str = "channel"
    input_scale: str = "dynamic"
    input_scale_granularity: str = "token"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "activation_mode", self.activation_modes)
        check_choice(self, "weight_scale_granularity", ("tensor", "channel"))
        check_choice(self, "input_scale", ("static", "dynamic"))
        check_choice(self, "input_scale_granularity", ("tensor", "token"))
        if self.input_scale == "static" and self.input_scale_granularity != "tensor":
            raise ValueError(
                "FP8ScaledMMLinearLayerConfig.input_scale_granularity="
                f"{self.input_scale_granularity!r} is not allowed with input_scale='static'; "
                "expected 'tensor'"
            )


class FP8ScaledMMLinearKernel(LinearKernel):
    """ABC of FP8 kernels: ``out = (s_a * A_q) @ (s_w * W_q)^T + bias``."""

    family = "fp8"
    config_class = FP8ScaledMMLinearLayerConfig

    @staticmethod
    def parameter_specs(config: FP8ScaledMMLinearLayerConfig) -> tuple[ParamSpec, ...]:
        n, k = config.weight_shape
        scale_shapes = (
            per_channel_shapes(n) if config.weight_scale_granularity == "channel" else SCALAR_SHAPES
        )
        specs = [
            ParamSpec(
                "weight", (torch.float8_e4m3fn,), ((n, k),),
                "E4M3 codes, (out_features, in_features)",
            ),
            ParamSpec(
                "weight_scale", (torch.float32,), scale_shapes,
                f"decode multiplier per {config.weight_scale_granularity}",
            ),
        ]
        if config.activation_mode == "w8a8" and config.input_scale == "static":
            specs.append(ParamSpec(
                "input_scale", (torch.float32,), SCALAR_SHAPES,
                "activation decode multiplier: x = q * input_scale",
            ))
        return tuple(specs)
