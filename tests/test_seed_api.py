"""The seed (vLLM) API keeps its names and semantics."""

from __future__ import annotations

import enum

import pytest

import kernel_core
from kernel_core import (
    FP8ScaledMMLinearLayerConfig,
    MPLinearLayerConfig,
    NoKernelError,
    NvFp4LinearLayerConfig,
    choose_mp_linear_kernel,
    choose_scaled_mm_linear_kernel,
    init_nvfp4_linear_kernel,
    register_linear_kernel,
)

FP8 = FP8ScaledMMLinearLayerConfig(weight_shape=(256, 512))


class PlatformEnum(enum.Enum):
    CUDA = 1
    CPU = 2


@pytest.fixture
def isolated(fresh_registry, monkeypatch):
    monkeypatch.setenv("KERNEL_CORE_PLUGINS", "")
    fresh_registry.reload()
    with kernel_core.scoped_registry() as reg:
        yield reg


def test_register_linear_kernel_appends_at_lowest_priority(isolated, kernel_factory):
    kernel_core.register_kernel(kernel_factory(name="Existing", priority=0))
    added = kernel_factory(name="Added", platforms=frozenset({"cuda"}))
    del added.priority  # as a vLLM kernel: no priority attribute of its own
    register_linear_kernel(added, PlatformEnum.CPU, kernel_type="mp")
    assert added.platforms == {"cuda", "cpu"}
    assert added.priority < 0
    assert choose_mp_linear_kernel(MPLinearLayerConfig(weight_shape=(256, 512)), None).name == (
        "Existing"
    )


def test_register_linear_kernel_rejects_unknown_or_mismatched_type(isolated, kernel_factory):
    with pytest.raises(ValueError, match="Unrecognized kernel type: 'mxfp6'"):
        register_linear_kernel(kernel_factory(), "cuda", kernel_type="mxfp6")
    with pytest.raises(ValueError, match="is a 'mp' kernel, registered as kernel_type='fp8'"):
        register_linear_kernel(kernel_factory(), "cuda", kernel_type="fp8")


def test_choose_scaled_mm_walks_the_callers_list_in_order(isolated, kernel_factory):
    first = kernel_factory("fp8", "First", supported=(False, "needs CUDA"))
    second = kernel_factory("fp8", "Second", priority=0)
    third = kernel_factory("fp8", "Third", priority=300)
    assert choose_scaled_mm_linear_kernel(FP8, {PlatformEnum.CPU: [first, second, third]}) is second
    assert choose_scaled_mm_linear_kernel(FP8, [third, second]) is third
    assert choose_scaled_mm_linear_kernel(FP8, [second], force_kernel=third) is third
    # A forced kernel that cannot serve is passed over.
    assert choose_scaled_mm_linear_kernel(FP8, [second], force_kernel=first) is second
    with pytest.raises(NoKernelError, match="First .*needs CUDA"):
        choose_scaled_mm_linear_kernel(FP8, [first])
    with pytest.raises(NoKernelError):
        choose_scaled_mm_linear_kernel(FP8, {PlatformEnum.CUDA: [second]})


def test_choose_scaled_mm_honours_disabled_kernels(isolated, kernel_factory, monkeypatch):
    a, b = kernel_factory("fp8", "A"), kernel_factory("fp8", "B")
    monkeypatch.setenv("KERNEL_CORE_DISABLED_KERNELS", "A")
    assert choose_scaled_mm_linear_kernel(FP8, [a, b]) is b


def test_init_nvfp4_use_a16_overrides_the_activation_mode(isolated, kernel_factory):
    seen = []

    class A16Only(kernel_factory("nvfp4", "A16Only")):
        @classmethod
        def can_implement(cls, config):
            seen.append(config.activation_mode)
            if config.activation_mode != "w4a16":
                return False, "weight-only"
            return True, None

    kernel_core.register_kernel(A16Only)
    config = NvFp4LinearLayerConfig(weight_shape=(256, 512))
    assert config.activation_mode == "w4a4"
    kernel = init_nvfp4_linear_kernel(config, use_a16=True)
    assert kernel.config.activation_mode == "w4a16"
    with pytest.raises(NoKernelError, match="weight-only"):
        init_nvfp4_linear_kernel(config)
