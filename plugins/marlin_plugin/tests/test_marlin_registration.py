"""Registration, probes and refusal reasons (no GPU needed)."""

from __future__ import annotations

import pytest
import torch

from kernel_core.families import (
    FP8ScaledMMLinearLayerConfig,
    MPLinearLayerConfig,
    Mxfp8LinearLayerConfig,
    MxFp4LinearLayerConfig,
    NvFp4LinearLayerConfig,
)
from kernel_core.kernel import KernelConfigError, Priority
from kernel_core.registry import registry
from kernel_core.scalar_types import scalar_types
from kernel_core.testing import check_metadata
from kernel_core_marlin import plugin
from kernel_core_marlin.kernels import (
    KERNELS,
    MarlinFp8LinearKernel,
    MarlinMPLinearKernel,
    MarlinMxfp8LinearKernel,
    MarlinMxFp4LinearKernel,
    MarlinNvFp4LinearKernel,
    cuda_support,
)


def test_hook_registers_one_kernel_per_family() -> None:
    seen: list[type] = []
    plugin.register_kernels(seen.append)
    assert seen == list(KERNELS)
    assert {k.family for k in seen} == {"mp", "nvfp4", "mxfp4", "fp8", "mxfp8"}
    for kernel in seen:
        assert kernel.priority == Priority.SPECIALIZED
        assert kernel.platforms == frozenset({"cuda"})
        check_metadata(kernel)


def test_entry_point_registration() -> None:
    """The installed distribution's entry point reaches the core registry."""
    registry.reload()
    assert {k.name for k in KERNELS} <= {k.name for k in registry.kernels()}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer without a GPU")
def test_unsupported_without_cuda_says_why() -> None:
    for kernel in KERNELS:
        ok, reason = kernel.is_supported()
        assert not ok and reason


def test_capability_below_80_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ok, reason = cuda_support(75)
    assert not ok and "8.0" in reason and "7.5" in reason


REFUSED = [
    (MarlinMPLinearKernel, MPLinearLayerConfig(weight_shape=(64, 200), group_size=-1),
     "multiple of 16"),
    (MarlinMPLinearKernel, MPLinearLayerConfig(weight_shape=(64, 128), act_dtype=torch.float32),
     "float16 or bfloat16"),
    (MarlinMPLinearKernel, MPLinearLayerConfig(weight_shape=(64, 144), group_size=24),
     "group_size"),
    (MarlinNvFp4LinearKernel, NvFp4LinearLayerConfig(weight_shape=(64, 128)), "w4a4"),
    (MarlinMxFp4LinearKernel,
     MxFp4LinearLayerConfig(weight_shape=(64, 128), activation_mode="w4a4"),
     "w4a4"),
    (MarlinFp8LinearKernel, FP8ScaledMMLinearLayerConfig(weight_shape=(64, 128)), "w8a8"),
    (MarlinMxfp8LinearKernel, Mxfp8LinearLayerConfig(weight_shape=(64, 128)), "w8a8"),
]


@pytest.mark.parametrize("kernel,config,needle", REFUSED, ids=[c.short() for _, c, _ in REFUSED])
def test_refusals_carry_reasons(kernel, config, needle) -> None:
    ok, reason = kernel.can_implement(config)
    assert not ok and needle in reason
    with pytest.raises(KernelConfigError, match="cannot implement"):
        kernel(config)


ACCEPTED = [
    MPLinearLayerConfig(weight_shape=(100, 96), weight_type=scalar_types.uint4, zero_points=True,
                        group_size=32, act_dtype=torch.float16),
    MPLinearLayerConfig(weight_shape=(64, 120), group_size=24, has_g_idx=True),
    MPLinearLayerConfig(weight_shape=(64, 128), weight_type=scalar_types.uint8b128, group_size=-1),
]


@pytest.mark.parametrize("config", ACCEPTED, ids=[c.short() for c in ACCEPTED])
def test_accepts(config) -> None:
    assert MarlinMPLinearKernel.can_implement(config) == (True, None)
