"""``mp``: weight-only mixed precision (W4A16, W8A16) from GPTQ, AWQ and compressed-tensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from kernel_core.config import LayerConfig, check_choice
from kernel_core.kernel import LinearKernel
from kernel_core.params import ParamSpec
from kernel_core.scalar_types import ScalarType, scalar_types

__all__ = ["MPLinearLayerConfig", "MPLinearKernel", "MP_WEIGHT_TYPES"]

#: Weight types of the family: biased types are symmetric, plain unsigned ones take zero points.
MP_WEIGHT_TYPES = (
    scalar_types.uint4b8,
    scalar_types.uint8b128,
    scalar_types.uint4,
    scalar_types.uint8,
)
SCALE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True, kw_only=True)
class MPLinearLayerConfig(LayerConfig):
    """Integer weights with floating-point group scales; activations stay 16-bit.

    ``group_size`` is the number of input channels (K) sharing a scale; -1 means one group over the
    whole K (channelwise). ``zero_points`` must match the weight type: ``uint4``/``uint8`` carry
    zero points, the biased ``uint4b8``/``uint8b128`` do not. ``has_g_idx``: act-order, input
    channel k belongs to group ``weight_g_idx[k]``.
    """

    family: ClassVar[str] = "mp"
    activation_modes: ClassVar[tuple[str, ...]] = ("w4a16", "w8a16")

    weight_type: ScalarType = scalar_types.uint4b8
    group_size: int = 128
    zero_points: bool = False
    has_g_idx: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "weight_type", MP_WEIGHT_TYPES)
        if not isinstance(self.group_size, int) or (self.group_size != -1 and self.group_size <= 0):
            raise ValueError(
                f"MPLinearLayerConfig.group_size={self.group_size!r} is not allowed; expected -1 "
                "(channelwise) or a positive int"
            )
        k = self.in_features
        if self.group_size != -1 and not self.has_g_idx and k % self.group_size:
            raise ValueError(
                f"MPLinearLayerConfig.group_size={self.group_size} does not divide in_features={k}"
            )
        per_word = 32 // self.weight_type.size_bits
        if k % per_word:
            raise ValueError(
                f"MPLinearLayerConfig.weight_shape={self.weight_shape}: in_features={k} must be a "
                f"multiple of {per_word} to pack {self.weight_type} into int32 words"
            )
        wants_zp = not self.weight_type.has_bias
        if self.zero_points != wants_zp:
            raise ValueError(
                f"MPLinearLayerConfig.zero_points={self.zero_points} does not match "
                f"weight_type={self.weight_type}; expected zero_points={wants_zp}"
            )

    @property
    def activation_mode(self) -> str:
        return f"w{self.weight_type.size_bits}a16"

    @property
    def num_groups(self) -> int:
        """Scale columns: groups of this partition, or of the whole layer with act-order."""
        if self.group_size == -1:
            return 1
        assert self.full_weight_shape is not None
        k = self.full_weight_shape[1] if self.has_g_idx else self.in_features
        return -(-k // self.group_size)


class MPLinearKernel(LinearKernel):
    """ABC of weight-only mixed-precision kernels."""

    family = "mp"
    config_class = MPLinearLayerConfig

    @staticmethod
    def parameter_specs(config: MPLinearLayerConfig) -> tuple[ParamSpec, ...]:
        n, k = config.weight_shape
        bits = config.weight_type.size_bits
        groups = config.num_groups
        specs = [
            ParamSpec(
                "weight", (torch.int32,), ((n, k * bits // 32),),
                f"codes of {config.weight_type} packed along K into int32, LSB first "
                "(compressed-tensors pack-quantized order)",
            ),
            ParamSpec(
                "weight_scale", SCALE_DTYPES, ((n, groups),),
                "decode multiplier per (output channel, group): w = (code - zero) * scale",
            ),
        ]
        if config.zero_points:
            specs.append(ParamSpec(
                "weight_zero_point", (torch.uint8,), ((n, groups),),
                "zero point code per (output channel, group), unpacked",
            ))
        if config.has_g_idx:
            specs.append(ParamSpec(
                "weight_g_idx", (torch.int32,), ((k,),),
                "group index of each input channel (act-order)",
            ))
        return tuple(specs)
