"""The emulation kernels: one per family, the oracle every other kernel is judged against.

Each accepts every valid config of its family (every activation mode, every dtype) on every
platform, at the lowest priority, so selection picks it only where nothing faster can serve. It
never transforms the layer: ``apply_weights`` reads the contract parameters as they are on every
call, so its result always reflects the layer's parameters.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from kernel_core.config import LayerConfig
from kernel_core.families import (
    FP8ScaledMMLinearKernel,
    Fp8BlockScaledMMLinearKernel,
    Int8ScaledMMLinearKernel,
    MPLinearKernel,
    Mxfp8LinearKernel,
    MxFp4LinearKernel,
    NvFp4LinearKernel,
)
from kernel_core.kernel import PLATFORMS, Priority
from kernel_core_emulation.ops import APPLY_OPS, intern_layout, parameter_names

__all__ = [
    "EMULATION_KERNELS",
    "EmulationMPLinearKernel",
    "EmulationInt8LinearKernel",
    "EmulationFP8LinearKernel",
    "EmulationFp8BlockLinearKernel",
    "EmulationNvFp4LinearKernel",
    "EmulationMxFp4LinearKernel",
    "EmulationMxfp8LinearKernel",
]


class EmulationKernel:
    """What every emulation kernel shares; mixed in before the family ABC."""

    priority: ClassVar[int] = Priority.REFERENCE
    platforms: ClassVar[frozenset[str]] = PLATFORMS
    config: LayerConfig
    config_class: ClassVar[type[LayerConfig]]

    @classmethod
    def is_supported(cls, compute_capability: int | None = None) -> tuple[bool, str | None]:
        return True, None

    @classmethod
    def can_implement(cls, config: Any) -> tuple[bool, str | None]:
        if not isinstance(config, cls.config_class):
            return False, f"takes {cls.config_class.__name__}, not {type(config).__name__}"
        return True, None

    def __init__(self, config: LayerConfig) -> None:
        super().__init__(config)  # type: ignore[call-arg]
        self._layout = intern_layout(config)
        self._names = parameter_names(config)
        self._apply = APPLY_OPS[config.family]

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        """Only the contract check: the oracle reads the parameters as loaded."""
        self.validate_layer(layer)  # type: ignore[attr-defined]

    def apply_weights(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.check_apply_inputs(x, bias)  # type: ignore[attr-defined]
        params = [getattr(layer, name) for name in self._names]
        return self._apply(x, params, bias, self._layout)


class EmulationMPLinearKernel(EmulationKernel, MPLinearKernel):
    """Weight-only integers (W4A16, W8A16), with or without zero points and act-order."""


class EmulationInt8LinearKernel(EmulationKernel, Int8ScaledMMLinearKernel):
    """W8A8 int8, static or dynamic, symmetric or asymmetric activations."""


class EmulationFP8LinearKernel(EmulationKernel, FP8ScaledMMLinearKernel):
    """FP8 W8A8 (per-tensor or per-token activations) and W8A16."""


class EmulationFp8BlockLinearKernel(EmulationKernel, Fp8BlockScaledMMLinearKernel):
    """FP8 with 128x128 weight blocks and 1x128 activation groups."""


class EmulationNvFp4LinearKernel(EmulationKernel, NvFp4LinearKernel):
    """NVFP4 W4A4 (activations QDQ'd with ``input_global_scale``) and W4A16."""


class EmulationMxFp4LinearKernel(EmulationKernel, MxFp4LinearKernel):
    """MXFP4 W4A4 and W4A16."""


class EmulationMxfp8LinearKernel(EmulationKernel, Mxfp8LinearKernel):
    """MXFP8 W8A8 and W8A16."""


EMULATION_KERNELS: tuple[type, ...] = (
    EmulationMPLinearKernel,
    EmulationInt8LinearKernel,
    EmulationFP8LinearKernel,
    EmulationFp8BlockLinearKernel,
    EmulationNvFp4LinearKernel,
    EmulationMxFp4LinearKernel,
    EmulationMxfp8LinearKernel,
)
