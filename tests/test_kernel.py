"""The kernel contract's input checks (``kernel_core.kernel.LinearKernel``), without a GPU: a
"meta" tensor stands for one on another device than the CPU weights."""

from __future__ import annotations

import pytest
import torch

from kernel_core import MPLinearLayerConfig

CONFIG = MPLinearLayerConfig(weight_shape=(64, 128))


@pytest.fixture
def kernel(kernel_factory):
    return kernel_factory("mp", "DeviceCheckKernel")(CONFIG)


def _on(device: str, *shape: int) -> torch.Tensor:
    return torch.empty(*shape, dtype=torch.bfloat16, device=device)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_same_device_passes(kernel, device) -> None:
    weight = _on(device, 64, 128)
    assert kernel.check_apply_device(_on(device, 3, 128), weight) is None
    assert kernel.check_apply_device(_on(device, 3, 128), weight, _on(device, 64)) is None
    parameter = torch.nn.Parameter(weight, requires_grad=False)  # what a layer holds
    assert kernel.check_apply_device(_on(device, 2, 3, 128), parameter, None) is None


@pytest.mark.parametrize("x_device,weight_device", [("meta", "cpu"), ("cpu", "meta")])
def test_x_on_another_device_names_both(kernel, x_device, weight_device) -> None:
    with pytest.raises(
        ValueError,
        match=rf"^DeviceCheckKernel\.apply_weights: expected x on the layer's device "
        rf"{weight_device}, found {x_device}$",
    ):
        kernel.check_apply_device(_on(x_device, 3, 128), _on(weight_device, 64, 128))


def test_bias_on_another_device_names_both(kernel) -> None:
    with pytest.raises(
        ValueError,
        match=r"^DeviceCheckKernel\.apply_weights: expected bias on the layer's device cpu, "
        r"found meta$",
    ):
        kernel.check_apply_device(_on("cpu", 3, 128), _on("cpu", 64, 128), _on("meta", 64))


def test_x_is_named_first_when_both_are_elsewhere(kernel) -> None:
    with pytest.raises(ValueError, match="expected x on the layer's device cpu, found meta"):
        kernel.check_apply_device(_on("meta", 3, 128), _on("cpu", 64, 128), _on("meta", 64))
