"""The oracle's arithmetic, checked against formulas that do not go through its code path."""

from __future__ import annotations

import pytest
import torch

from kernel_core import (
    FAMILIES,
    Fp8BlockLinearLayerConfig,
    Int8ScaledMMLinearLayerConfig,
    MPLinearLayerConfig,
    NvFp4LinearLayerConfig,
    Priority,
    explain,
    registry,
)
from kernel_core.formats import (
    dequantize_weight,
    make_layer,
    qdq_nvfp4,
    quantize_fp8_per_token_group,
    quantize_int8,
)
from kernel_core.testing import grid_configs, kernel_configs
from kernel_core_emulation.kernels import (
    EMULATION_KERNELS,
    EmulationFp8BlockLinearKernel,
    EmulationInt8LinearKernel,
    EmulationMPLinearKernel,
    EmulationNvFp4LinearKernel,
)
from kernel_core_emulation.ops import APPLY_OPS, intern_layout, parameter_names


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return float((out.double() - ref).norm() / ref.norm())


def _x(m: int, k: int, dtype: torch.dtype = torch.float32, seed: int = 5) -> torch.Tensor:
    return torch.randn(m, k, generator=torch.Generator().manual_seed(seed)).to(dtype)


def test_one_kernel_per_family_registered_at_reference_priority() -> None:
    emulation = [k for k in registry.kernels() if k in EMULATION_KERNELS]
    assert sorted(k.family for k in emulation) == sorted(FAMILIES)
    for kernel in emulation:
        assert kernel.priority == Priority.REFERENCE
        assert kernel.platforms == {"cuda", "rocm", "xpu", "cpu"}
        assert kernel.provider == "emulation"


def test_accepts_every_grid_config_and_serves_on_every_platform() -> None:
    for kernel in EMULATION_KERNELS:
        for point in grid_configs(kernel.family):
            assert kernel.can_implement(point.config) == (True, None), point.id
        first = next(grid_configs(kernel.family)).config
        for platform in ("cpu", "cuda", "rocm", "xpu"):
            rows = {c.name: c for c in explain(first, platform=platform).candidates}
            assert rows[kernel.name].accepted, (platform, rows[kernel.name].reason)


def test_no_tokens_give_an_empty_output() -> None:
    for kernel in EMULATION_KERNELS:
        for point in kernel_configs(kernel, "quick")[0]:  # every activation mode at least once
            config = point.config
            x = torch.randn(0, config.in_features).to(config.act_dtype)
            out = kernel(config).apply_weights(make_layer(config), x)
            assert out.shape == (0, config.out_features), point.id
            assert out.dtype == config.out_dtype, point.id


def test_int8_asymmetric_matches_the_zero_point_formula() -> None:
    """``s_a * s_w * (A_q @ W_q^T - zp * colsum(W_q))`` in exact integers (int64)."""
    config = Int8ScaledMMLinearLayerConfig(
        weight_shape=(96, 256), act_dtype=torch.float32, input_symmetric=False
    )
    layer = make_layer(config, seed=3)
    x = _x(9, 256)
    kernel = EmulationInt8LinearKernel(config)
    kernel.process_weights_after_loading(layer)
    out = kernel.apply_weights(layer, x)
    q, s_a, zp = quantize_int8(x, "token", symmetric=False)
    w_q = layer.weight.to(torch.int64)
    acc = q.to(torch.int64) @ w_q.T - zp.to(torch.int64) * w_q.sum(dim=1)
    expected = acc.double() * s_a.double() * layer.weight_scale.double()
    assert _rel(out, expected) < 1e-6


def test_fp8_block_matches_the_per_block_formula() -> None:
    """``out[m, n] = sum_j As[m, j] * Bs[n // 128, j] * (A_q[m, blk j] . W_q[n, blk j])``."""
    config = Fp8BlockLinearLayerConfig(weight_shape=(192, 384), act_dtype=torch.float32)
    layer = make_layer(config, seed=4)
    x = _x(5, 384)
    kernel = EmulationFp8BlockLinearKernel(config)
    out = kernel.apply_weights(layer, x)
    a_q, a_s = quantize_fp8_per_token_group(x, 128)
    expected = torch.zeros(5, 192, dtype=torch.float64)
    for j in range(3):
        blk = slice(128 * j, 128 * (j + 1))
        dots = a_q[:, blk].double() @ layer.weight[:, blk].double().T
        w_s = layer.weight_scale[:, j].repeat_interleave(128)[:192].double()
        expected += dots * a_s[:, j : j + 1].double() * w_s
    assert _rel(out, expected) < 1e-6


def test_nvfp4_w4a4_quantizes_activations_and_w4a16_does_not() -> None:
    shape = (64, 128)
    x = _x(7, 128)
    outs = {}
    for mode in ("w4a4", "w4a16"):
        config = NvFp4LinearLayerConfig(weight_shape=shape, act_dtype=torch.float32,
                                        activation_mode=mode)
        layer = make_layer(config, seed=6)
        weight = dequantize_weight(config, layer, dtype=torch.float64)
        source = qdq_nvfp4(x, layer.input_global_scale) if mode == "w4a4" else x
        outs[mode] = EmulationNvFp4LinearKernel(config).apply_weights(layer, x)
        assert _rel(outs[mode], source.double() @ weight.T) < 1e-6
    assert _rel(outs["w4a4"], outs["w4a16"]) > 1e-2  # the activation rounding is really there


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_mp_accumulates_in_fp32_adds_bias_and_casts(dtype: torch.dtype) -> None:
    config = MPLinearLayerConfig(weight_shape=(128, 256), group_size=64, act_dtype=dtype,
                                 out_dtype=torch.float32)
    layer = make_layer(config, seed=8)
    x = _x(1, 256, dtype)
    bias = torch.randn(128).to(dtype)
    out = EmulationMPLinearKernel(config).apply_weights(layer, x, bias)
    assert out.dtype == torch.float32 and out.shape == (1, 128)
    weight = dequantize_weight(config, layer, dtype=torch.float64)
    assert _rel(out, x.double() @ weight.T + bias.double()) < 1e-6


def test_follows_the_layer_parameters_on_every_call() -> None:
    config = MPLinearLayerConfig(weight_shape=(64, 128), act_dtype=torch.float32)
    layer = make_layer(config, seed=9)
    kernel = EmulationMPLinearKernel(config)
    kernel.process_weights_after_loading(layer)
    x = _x(3, 128)
    first = kernel.apply_weights(layer, x)
    layer.weight_scale.data.mul_(2)
    assert torch.allclose(kernel.apply_weights(layer, x), 2 * first)


def test_bad_inputs_are_value_errors_naming_expected_and_found() -> None:
    config = MPLinearLayerConfig(weight_shape=(64, 128), act_dtype=torch.bfloat16)
    layer = make_layer(config)
    kernel = EmulationMPLinearKernel(config)
    x = _x(2, 128, torch.bfloat16)
    with pytest.raises(ValueError, match=r"expected x of shape \(\.\.\., 128\) and dtype bfloat16.*found \[2, 64\] bfloat16"):
        kernel.apply_weights(layer, x[:, :64])
    with pytest.raises(ValueError, match=r"dtype bfloat16 \(the config's act_dtype\), found \[2, 128\] float16"):
        kernel.apply_weights(layer, x.half())
    with pytest.raises(ValueError, match=r"floating-point bias of shape \[64\], found bfloat16 of shape \[63\]"):
        kernel.apply_weights(layer, x, torch.zeros(63, dtype=torch.bfloat16))
    del layer.weight_scale
    with pytest.raises(ValueError, match="weight_scale: missing"):
        kernel.process_weights_after_loading(layer)


def test_apply_op_passes_opcheck() -> None:
    """Schema, fake implementation and dispatch of the custom op agree (torch.library.opcheck).

    On ``mp``: opcheck's schema test compares tensors with ops that float8 lacks on the CPU."""
    config = MPLinearLayerConfig(weight_shape=(64, 128), act_dtype=torch.bfloat16)
    layer = make_layer(config, seed=2)
    params = [getattr(layer, name) for name in parameter_names(config)]
    args = (_x(3, 128, torch.bfloat16), params, torch.randn(64).bfloat16(), intern_layout(config))
    torch.library.opcheck(APPLY_OPS["mp"], args)


@pytest.mark.gpu
def test_runs_on_cuda_like_on_cpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    config = MPLinearLayerConfig(weight_shape=(256, 512), group_size=128, act_dtype=torch.float32)
    x = _x(33, 512)
    outs = []
    for device in ("cpu", "cuda"):
        layer = make_layer(config, seed=1, device=device)
        outs.append(EmulationMPLinearKernel(config).apply_weights(layer, x.to(device)).cpu())
    assert _rel(outs[1], outs[0]) < 1e-5
