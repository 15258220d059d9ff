"""E2M1 codes and nibble order, NVFP4 and MXFP4 block formats."""

from __future__ import annotations

import pytest
import torch

from kernel_core.formats import (
    E2M1_VALUES,
    decode_e2m1,
    dequantize_mxfp4,
    dequantize_nvfp4,
    encode_e2m1,
    pack_fp4,
    qdq_mxfp4,
    qdq_nvfp4,
    quantize_mxfp4,
    quantize_nvfp4,
    unpack_fp4,
)

MAGNITUDES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def randn(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


def test_all_sixteen_codes_decode() -> None:
    expected = MAGNITUDES + [-m for m in MAGNITUDES]
    decoded = decode_e2m1(torch.arange(16, dtype=torch.uint8))
    assert decoded.tolist() == expected
    assert torch.signbit(decoded[8]).item()  # code 8 is -0
    assert torch.equal(E2M1_VALUES, decoded)
    assert encode_e2m1(E2M1_VALUES).tolist() == list(range(16))


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (0.25, 0), (0.2501, 1), (0.75, 2), (0.7499, 1), (1.25, 2), (1.2501, 3), (1.75, 4),
        (1.7499, 3), (2.5, 4), (2.5001, 5), (3.5, 6), (3.4999, 5), (5.0, 6), (5.0001, 7),
        (100.0, 7), (float("inf"), 7), (-0.1, 8), (-0.0, 8), (-5.0001, 15), (-2.5, 12),
    ],
)
def test_encode_rounds_half_to_even_and_saturates(value: float, code: int) -> None:
    assert encode_e2m1(torch.tensor([value])).item() == code


def test_encode_is_nearest_value() -> None:
    x = (torch.rand(10_000, generator=torch.Generator().manual_seed(1)) - 0.5) * 14
    decoded = decode_e2m1(encode_e2m1(x))
    nearest = E2M1_VALUES[(x.unsqueeze(1) - E2M1_VALUES).abs().argmin(1)]
    assert torch.equal(decoded.abs(), nearest.abs())
    assert torch.all((decoded == 0) | (torch.sign(decoded) == torch.sign(x)))


def test_nibble_order_of_a_hand_built_byte() -> None:
    # Byte 0x3A: low nibble 0xA (-1.0) is element k=0, high nibble 0x3 (1.5) is element k=1.
    packed = torch.tensor([[0x3A]], dtype=torch.uint8)
    assert unpack_fp4(packed).tolist() == [[0xA, 0x3]]
    assert decode_e2m1(unpack_fp4(packed)).tolist() == [[-1.0, 1.5]]
    assert pack_fp4(torch.tensor([[0xA, 0x3]], dtype=torch.uint8)).tolist() == [[0x3A]]
    # Four bytes read as a little-endian int32 hold element i at bits 4i (the GPTQ order).
    codes = torch.arange(1, 9, dtype=torch.uint8).reshape(1, 8)
    word = pack_fp4(codes).view(torch.int32).item() & 0xFFFFFFFF
    assert word == 0x87654321


def test_pack_fp4_round_trip() -> None:
    codes = torch.randint(0, 16, (3, 5, 64), generator=torch.Generator().manual_seed(2),
                          dtype=torch.uint8)
    packed = pack_fp4(codes)
    assert packed.shape == (3, 5, 32)
    assert torch.equal(unpack_fp4(packed), codes)


# ------------------------------------------------------------------ NVFP4


def test_nvfp4_representable_values_round_trip_exactly() -> None:
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 16, (8, 64), generator=g, dtype=torch.uint8)
    codes[:, ::16] = 7  # every block holds a 6.0, so its block scale is recovered exactly
    block_scale = (torch.rand(8, 4, generator=g) * 3 + 0.1).to(torch.float8_e4m3fn)
    global_scale = torch.tensor([0.01])
    x = decode_e2m1(codes) * block_scale.float().repeat_interleave(16, 1) * global_scale
    packed, got_scale, got_global = quantize_nvfp4(x, global_scale=global_scale)
    assert torch.equal(got_global, global_scale)
    assert torch.equal(got_scale.float(), block_scale.float())
    assert torch.equal(dequantize_nvfp4(packed, got_scale, got_global), x)


def test_nvfp4_default_global_scale_and_error() -> None:
    x = randn(32, 256, seed=4) * torch.linspace(0.01, 3, 32).unsqueeze(1)
    packed, block_scale, global_scale = quantize_nvfp4(x)
    assert packed.shape == (32, 128) and packed.dtype == torch.uint8
    assert block_scale.shape == (32, 16) and block_scale.dtype == torch.float8_e4m3fn
    assert global_scale.shape == (1,) and global_scale.dtype == torch.float32
    assert global_scale.item() == pytest.approx(x.abs().max().item() / (448 * 6))
    assert block_scale.float().max().item() == 448.0
    deq = dequantize_nvfp4(packed, block_scale, global_scale)
    rel = ((deq - x).norm() / x.norm()).item()
    assert 0.02 < rel < 0.15
    # Each element within half an E2M1 step of its block (step <= 2 at the top binade).
    per_elem = (block_scale.float() * global_scale).repeat_interleave(16, 1)
    assert torch.all((deq - x).abs() <= per_elem * 1.0 * (1 + 1e-5) + 1e-12)


def test_qdq_nvfp4_equals_quantize_then_dequantize() -> None:
    x = randn(7, 64, seed=5).to(torch.bfloat16)
    global_scale = torch.tensor([x.float().abs().max().item() / 2688 * 0.7])  # some clipping
    packed, block_scale, g = quantize_nvfp4(x, global_scale=global_scale)
    expected = dequantize_nvfp4(packed, block_scale, g, dtype=torch.bfloat16)
    got = qdq_nvfp4(x, global_scale)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, expected)


def test_nvfp4_zero_block_scale_gives_zeros() -> None:
    x = randn(2, 32, seed=6)
    x[0, :16] = 1e-12  # far below the smallest block scale: the block decodes to 0
    packed, block_scale, g = quantize_nvfp4(x, global_scale=1.0)
    assert block_scale[0, 0].float().item() == 0.0
    assert torch.all(dequantize_nvfp4(packed, block_scale, g)[0, :16] == 0)


# ------------------------------------------------------------------ MXFP4


def test_mxfp4_representable_values_round_trip_exactly() -> None:
    g = torch.Generator().manual_seed(7)
    codes = torch.randint(0, 16, (4, 2, 32), generator=g, dtype=torch.uint8)
    codes[..., 0] = 7  # amax = 6 * 2^e: exponent e exactly
    exponents = torch.randint(100, 150, (4, 2), generator=g, dtype=torch.uint8)
    x = (decode_e2m1(codes) * torch.exp2(exponents.float() - 127).unsqueeze(-1)).flatten(-2)
    packed, scale = quantize_mxfp4(x)
    assert torch.equal(scale, exponents)
    assert torch.equal(dequantize_mxfp4(packed, scale), x)


@pytest.mark.parametrize(
    ("amax", "exponent"),
    [
        (6.0, 127), (1.0, 125), (6.99, 127), (7.0, 128), (7.5, 128), (0.75, 124), (3.0, 126),
        (1.75, 126),
    ],
)
def test_mxfp4_shared_exponent(amax: float, exponent: int) -> None:
    # floor(log2(amax rounded at 1.75)) - 2, biased by 127.
    x = torch.full((1, 32), 0.001)
    x[0, 5] = -amax
    _, scale = quantize_mxfp4(x)
    assert scale.item() == exponent


def test_mxfp4_round_trip_error_and_qdq() -> None:
    x = randn(16, 256, seed=8)
    packed, scale = quantize_mxfp4(x)
    assert packed.shape == (16, 128) and scale.shape == (16, 8) and scale.dtype == torch.uint8
    deq = dequantize_mxfp4(packed, scale)
    rel = ((deq - x).norm() / x.norm()).item()
    assert 0.03 < rel < 0.2
    assert torch.equal(qdq_mxfp4(x), deq)
    assert qdq_mxfp4(x.half()).dtype == torch.float16


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: pack_fp4(torch.zeros(2, 7, dtype=torch.uint8)), "multiple of 2"),
        (lambda: pack_fp4(torch.full((2, 8), 16, dtype=torch.uint8)), "4-bit"),
        (lambda: quantize_nvfp4(torch.randn(4, 40)), "multiple of 16"),
        (lambda: quantize_nvfp4(torch.randn(4, 32), global_scale=torch.ones(2)), "one element"),
        (lambda: quantize_mxfp4(torch.randn(4, 48)), "multiple of 32"),
        (lambda: dequantize_nvfp4(torch.zeros(4, 16, dtype=torch.uint8),
                                  torch.zeros(4, 3).to(torch.float8_e4m3fn), 1.0),
         r"expected shape \[4, 2\]"),
        (lambda: dequantize_mxfp4(torch.zeros(4, 16, dtype=torch.uint8),
                                  torch.zeros(4, 1, dtype=torch.int32)), "expected dtype uint8"),
        (lambda: encode_e2m1(torch.zeros(3, dtype=torch.int32)), "expected dtype"),
    ],
)
def test_fp4_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
