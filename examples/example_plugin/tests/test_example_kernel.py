"""The example plugin's tests: the whole conformance suite in one line, plus its registration."""

import torch

from kernel_core import FP8ScaledMMLinearLayerConfig, choose_kernel, registry
from kernel_core.testing import conformance_tests
from kernel_core_example.kernels import ExampleTorchFp8W8A16LinearKernel

TestExampleKernel = conformance_tests(ExampleTorchFp8W8A16LinearKernel)


def test_registered_through_its_entry_point() -> None:
    kernel = registry.get("ExampleTorchFp8W8A16LinearKernel")
    assert kernel is ExampleTorchFp8W8A16LinearKernel
    assert kernel.provider == "example"
    record = next(p for p in registry.plugins() if p.name == "example")
    assert record.distribution == "kernel-core-example" and record.error is None


def test_selected_over_the_emulation_oracle_for_w8a16() -> None:
    config = FP8ScaledMMLinearLayerConfig(
        weight_shape=(256, 512), activation_mode="w8a16", act_dtype=torch.bfloat16
    )
    assert choose_kernel(config, platform="cpu") is ExampleTorchFp8W8A16LinearKernel
