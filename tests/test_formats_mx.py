"""E8M0 scale bytes and MXFP8."""

from __future__ import annotations

import math

import pytest
import torch

from kernel_core.formats import (
    dequantize_mxfp8,
    e8m0_reciprocal,
    e8m0_to_float,
    float_to_e8m0,
    qdq_mxfp8,
    quantize_mxfp8,
)


def test_e8m0_extremes() -> None:
    values = e8m0_to_float(torch.tensor([0, 1, 126, 127, 128, 254, 255], dtype=torch.uint8))
    assert values[0].item() == 2.0**-127  # an fp32 subnormal
    assert values[1].item() == 2.0**-126
    assert values[2].item() == 0.5
    assert values[3].item() == 1.0
    assert values[4].item() == 2.0
    assert values[5].item() == 2.0**127
    assert math.isnan(values[6].item())


def test_e8m0_every_byte_is_a_power_of_two() -> None:
    e = torch.arange(255, dtype=torch.uint8)
    assert torch.equal(e8m0_to_float(e).double(), torch.exp2(e.double() - 127))
    assert torch.equal(e8m0_to_float(e) * e8m0_reciprocal(e), torch.ones(255))


@pytest.mark.parametrize(
    ("value", "byte"),
    [
        (1.0, 127), (1.5, 128), (0.75, 127), (2.0, 128), (2.0000002, 129), (0.5, 126),
        (2.0**-127, 0), (2.0**-127 * 1.5, 1), (2.0**-126, 1), (1e-45, 0), (0.0, 0), (-3.0, 0),
        (2.0**127, 254), (3e38, 254), (float("inf"), 255), (float("nan"), 255),
    ],
)
def test_float_to_e8m0_rounds_up(value: float, byte: int) -> None:
    assert float_to_e8m0(torch.tensor([value], dtype=torch.float32)).item() == byte


def test_float_to_e8m0_is_smallest_power_of_two_above() -> None:
    x = torch.exp2((torch.rand(5000, generator=torch.Generator().manual_seed(1)) - 0.5) * 200)
    e = float_to_e8m0(x)
    assert torch.all(e8m0_to_float(e) >= x)
    below = e8m0_to_float((e.int() - 1).clamp(min=0).to(torch.uint8))
    assert torch.all((below < x) | (e == 0))


def test_mxfp8_scale_formula_and_error() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 128, generator=g) * torch.logspace(-6, 6, 8).unsqueeze(1)
    q, scale = quantize_mxfp8(x)
    assert q.dtype == torch.float8_e4m3fn and q.shape == x.shape
    assert scale.dtype == torch.uint8 and scale.shape == (8, 4)
    # The fp32 quotient amax / 448, then its exact base-2 ceiling in double precision.
    ratio = (x.view(8, 4, 32).abs().amax(-1) / 448).double()
    expected = [
        [min(max(math.ceil(math.log2(r)) + 127, 0), 254) for r in row] for row in ratio.tolist()
    ]
    assert scale.tolist() == expected
    deq = dequantize_mxfp8(q, scale)
    per_elem = e8m0_to_float(scale).repeat_interleave(32, 1)
    bound = x.abs() * 2.0**-4 + per_elem * 2.0**-10
    assert torch.all((deq - x).abs() <= bound * (1 + 1e-6))


def test_mxfp8_representable_values_round_trip_exactly() -> None:
    g = torch.Generator().manual_seed(3)
    codes = (torch.rand(4, 64, generator=g) * 200 - 100).to(torch.float8_e4m3fn)
    codes[:, ::32] = 448.0  # amax of each block is 448 * 2^e
    exponents = torch.randint(60, 190, (4, 2), generator=g, dtype=torch.uint8)
    x = (codes.float().view(4, 2, 32) * e8m0_to_float(exponents).unsqueeze(-1)).flatten(-2)
    q, scale = quantize_mxfp8(x)
    assert torch.equal(scale, exponents)
    assert torch.equal(dequantize_mxfp8(q, scale), x)
    assert torch.equal(qdq_mxfp8(x), x)


def test_qdq_mxfp8_keeps_dtype() -> None:
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    q, scale = quantize_mxfp8(x)
    assert torch.equal(qdq_mxfp8(x), dequantize_mxfp8(q, scale, dtype=torch.bfloat16))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: quantize_mxfp8(torch.randn(4, 40)), "multiple of 32"),
        (lambda: dequantize_mxfp8(torch.zeros(4, 64).to(torch.float8_e4m3fn),
                                  torch.zeros(4, 3, dtype=torch.uint8)),
         r"expected shape \[4, 2\]"),
        (lambda: e8m0_to_float(torch.zeros(3, dtype=torch.int32)), "expected dtype uint8"),
        (lambda: float_to_e8m0(torch.zeros(3, dtype=torch.uint8)), "expected dtype"),
    ],
)
def test_mx_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
