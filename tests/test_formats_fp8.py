"""FP8 E4M3 (tensor / channel / token / block / token group) and INT8 activation codecs."""

from __future__ import annotations

import math

import pytest
import torch

from kernel_core.formats import (
    FP8_E4M3_MAX,
    FP8_MIN_SCALE,
    dequantize_fp8,
    dequantize_fp8_block,
    dequantize_fp8_per_token_group,
    dequantize_int8,
    quantize_fp8,
    quantize_fp8_block,
    quantize_fp8_per_token_group,
    quantize_int8,
)

E4M3_REL_STEP = 2.0**-4  # half an ulp of a 3-bit mantissa, relative
E4M3_SUBNORMAL_STEP = 2.0**-9


def randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float32) * scale


def assert_fp8_error_bound(x: torch.Tensor, deq: torch.Tensor, scale: torch.Tensor) -> None:
    """Each element within half an E4M3 step: relative for normals, absolute for subnormals."""
    bound = x.abs() * E4M3_REL_STEP + scale * E4M3_SUBNORMAL_STEP / 2
    assert torch.all((deq - x).abs() <= bound * (1 + 1e-6))


@pytest.mark.parametrize(
    ("granularity", "scale_shape"), [("tensor", (1,)), ("channel", (64,)), ("token", (64, 1))]
)
def test_quantize_fp8_dynamic(granularity: str, scale_shape: tuple[int, ...]) -> None:
    x = randn(64, 256, seed=1) * torch.linspace(0.1, 10, 64).unsqueeze(1)
    q, scale = quantize_fp8(x, granularity)
    assert q.dtype == torch.float8_e4m3fn and q.shape == x.shape
    assert scale.dtype == torch.float32 and scale.shape == scale_shape
    if granularity == "tensor":
        amax = x.abs().amax().reshape(1)
    else:
        amax = x.abs().amax(dim=1).reshape(scale_shape)
    assert torch.equal(scale, amax / FP8_E4M3_MAX)
    deq = dequantize_fp8(q, scale)
    per_elem = scale.reshape(-1, 1) if scale.numel() > 1 else scale
    assert_fp8_error_bound(x, deq, per_elem)
    # The largest element of each granule lands on +-448 exactly.
    assert q.float().abs().max().item() == FP8_E4M3_MAX


def test_quantize_fp8_static_saturates_and_keeps_scale() -> None:
    x = torch.tensor([[0.5, -3.0, 1000.0, -1000.0]])
    q, scale = quantize_fp8(x, "tensor", scale=0.5)
    assert scale.tolist() == [0.5]
    assert q.float().tolist() == [[1.0, -6.0, 448.0, -448.0]]
    assert dequantize_fp8(q, scale).tolist() == [[0.5, -3.0, 224.0, -224.0]]


def test_quantize_fp8_token_on_3d_activations() -> None:
    x = randn(2, 3, 64, seed=2)
    q, scale = quantize_fp8(x, "token")
    assert scale.shape == (2, 3, 1)
    assert_fp8_error_bound(x, dequantize_fp8(q, scale), scale)


def test_dynamic_scale_floor() -> None:
    x = torch.full((2, 32), 1e-9)
    _, scale = quantize_fp8(x, "token")
    assert torch.all(scale == FP8_MIN_SCALE)


def test_dequantize_fp8_scale_shapes_agree() -> None:
    x = randn(16, 16, seed=3)
    q, scale = quantize_fp8(x, "channel")  # [16]: per row, even though N == K
    as_column = dequantize_fp8(q, scale.reshape(16, 1))
    assert torch.equal(dequantize_fp8(q, scale), as_column)
    expected = q.float() * scale.reshape(16, 1)
    assert torch.equal(as_column, expected)


@pytest.mark.parametrize(("n", "k"), [(256, 384), (200, 300), (128, 128)])
def test_fp8_block_scales_and_round_trip(n: int, k: int) -> None:
    w = randn(n, k, seed=4, scale=0.05)
    w[:128, :128] *= 50  # one block much larger than the rest
    q, scale = quantize_fp8_block(w)
    assert scale.shape == (math.ceil(n / 128), math.ceil(k / 128))
    for i in range(scale.shape[0]):
        for j in range(scale.shape[1]):
            block = w[i * 128 : (i + 1) * 128, j * 128 : (j + 1) * 128]
            assert scale[i, j].item() == pytest.approx(block.abs().max().item() / 448, rel=1e-6)
    deq = dequantize_fp8_block(q, scale)
    per_elem = scale.repeat_interleave(128, 0)[:n].repeat_interleave(128, 1)[:, :k]
    assert_fp8_error_bound(w, deq, per_elem)


def test_fp8_per_token_group() -> None:
    x = randn(5, 512, seed=5)
    x[:, 128:256] *= 30
    q, scale = quantize_fp8_per_token_group(x, 128)
    assert q.shape == x.shape and scale.shape == (5, 4)
    expected = x.view(5, 4, 128).abs().amax(-1) / 448
    assert torch.equal(scale, expected)
    deq = dequantize_fp8_per_token_group(q, scale, 128)
    assert_fp8_error_bound(x, deq, scale.repeat_interleave(128, 1))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: quantize_fp8(torch.randn(4, 8), "block"), "granularity"),
        (lambda: quantize_fp8(torch.randn(2, 4, 8), "channel"), "2-D"),
        (lambda: quantize_fp8_per_token_group(torch.randn(4, 200), 128), "multiple of 128"),
        (lambda: dequantize_fp8_block(torch.zeros(4, 8).to(torch.float8_e4m3fn),
                                      torch.ones(2, 1)), r"expected shape \[1, 1\]"),
        (lambda: dequantize_fp8(torch.zeros(4, 8).to(torch.float8_e4m3fn), torch.ones(3)),
         "does not broadcast"),
        (lambda: quantize_fp8_block(torch.randn(4, 8), block=(128,)), "block"),
    ],
)
def test_fp8_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------ int8


def test_int8_symmetric_known_values() -> None:
    x = torch.tensor([[-1.0, 0.0, 0.5, 1.0]])
    q, scale, zp = quantize_int8(x, "tensor")
    assert zp is None
    assert scale.tolist() == pytest.approx([1 / 127])
    assert q.tolist() == [[-127, 0, 64, 127]]  # 63.5 rounds half to even


def test_int8_symmetric_token_round_trip() -> None:
    x = randn(32, 256, seed=6) * torch.linspace(0.1, 5, 32).unsqueeze(1)
    q, scale, _ = quantize_int8(x, "token")
    assert q.dtype == torch.int8 and scale.shape == (32, 1)
    deq = dequantize_int8(q, scale)
    assert torch.all((deq - x).abs() <= scale * 0.5 * (1 + 1e-5))


def test_int8_asymmetric_dynamic_uses_full_range() -> None:
    x = randn(16, 128, seed=7) + 2.0  # skewed rows
    q, scale, zp = quantize_int8(x, "token", symmetric=False)
    assert zp.dtype == torch.int32 and zp.shape == (16, 1)
    low, high = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
    assert torch.allclose(scale, (high - low) / 255)
    assert torch.equal(zp, torch.round(-128 - low / scale).int())
    assert torch.all((q.int().amin(1) - (-128)).abs() <= 1)
    assert torch.all((q.int().amax(1) - 127).abs() <= 1)
    deq = dequantize_int8(q, scale, zp)
    assert torch.all((deq - x).abs() <= scale * (0.5 + 1e-4) + 1e-6)


def test_int8_static_asymmetric_saturates() -> None:
    x = torch.tensor([[-10.0, 0.0, 0.2, 10.0]])
    q, scale, zp = quantize_int8(
        x, "tensor", symmetric=False, scale=0.1, zero_point=torch.tensor([-20], dtype=torch.int32)
    )
    assert q.tolist() == [[-120, -20, -18, 80]]
    assert dequantize_int8(q, scale, zp)[0].tolist() == pytest.approx([-10.0, 0.0, 0.2, 10.0])
    q, _, _ = quantize_int8(x * 5, "tensor", symmetric=False, scale=0.1, zero_point=-20)
    assert q.tolist() == [[-128, -20, -10, 127]]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: quantize_int8(torch.randn(4, 8), "channel"), "granularity"),
        (lambda: quantize_int8(torch.randn(4, 8), "tensor", symmetric=False, scale=0.1),
         "needs one"),
        (lambda: quantize_int8(torch.randn(4, 8), "tensor", zero_point=3), "symmetric"),
        (lambda: dequantize_int8(torch.zeros(4, 8), torch.ones(1)), "expected dtype int8"),
    ],
)
def test_int8_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
