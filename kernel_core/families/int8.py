"""``int8``: W8A8 int8 with per-tensor or per-channel weight scales and int8 activations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from kernel_core.config import LayerConfig, check_choice
from kernel_core.kernel import LinearKernel
from kernel_core.params import SCALAR_SHAPES, ParamSpec, per_channel_shapes

__all__ = ["Int8ScaledMMLinearLayerConfig", "Int8ScaledMMLinearKernel"]


@dataclass(frozen=True, kw_only=True)
class Int8ScaledMMLinearLayerConfig(LayerConfig):
    """Int8 weights and activations.

    ``weight_scale_granularity``: "tensor" or "channel" (per output channel).
    ``input_scale``: "static" (one scale, and zero point if asymmetric, from the checkpoint) or
    "dynamic" (per token, computed on every call). ``input_symmetric=False`` adds a zero point.
    """

    family: ClassVar[str] = "int8"
    activation_modes: ClassVar[tuple[str, ...]] = ("w8a8",)

    weight_scale_granularity: str = "channel"
    input_scale: str = "dynamic"
    input_symmetric: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "weight_scale_granularity", ("tensor", "channel"))
        check_choice(self, "input_scale", ("static", "dynamic"))
        check_choice(self, "input_symmetric", (True, False))

    @property
    def activation_mode(self) -> str:
        return "w8a8"


class Int8ScaledMMLinearKernel(LinearKernel):
    """ABC of W8A8 int8 kernels: ``out = s_a * s_w * (A_q @ W_q^T - zp_a * colsum(W_q)) + bias``."""

    family = "int8"
    config_class = Int8ScaledMMLinearLayerConfig

    @staticmethod
    def parameter_specs(config: Int8ScaledMMLinearLayerConfig) -> tuple[ParamSpec, ...]:
        n, k = config.weight_shape
        scale_shapes = (
            per_channel_shapes(n) if config.weight_scale_granularity == "channel" else SCALAR_SHAPES
        )
        specs = [
            ParamSpec("weight", (torch.int8,), ((n, k),), "int8 codes, (out_features, in_features)"),
            ParamSpec(
                "weight_scale", (torch.float32,), scale_shapes,
                f"decode multiplier per {config.weight_scale_granularity}",
            ),
        ]
        if config.input_scale == "static":
            specs.append(ParamSpec(
                "input_scale", (torch.float32,), SCALAR_SHAPES,
                "activation decode multiplier: x = (q - zero_point) * input_scale",
            ))
            if not config.input_symmetric:
                specs.append(ParamSpec(
                    "input_zero_point", (torch.int32,), SCALAR_SHAPES,
                    "activation zero point (an int8 code)",
                ))
        return tuple(specs)
