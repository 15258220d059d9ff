"""Integer weight formats: hand-decoded words, pack round trips, quantization error bounds."""

from __future__ import annotations

import pytest
import torch

from kernel_core.formats import (
    AWQ_PACK_ORDER,
    dequantize_int,
    pack_along_k,
    pack_awq,
    pack_ct_zero_point,
    pack_gptq_qweight,
    pack_gptq_qzeros,
    quantize_int,
    unpack_along_k,
    unpack_awq,
    unpack_ct_zero_point,
    unpack_gptq_qweight,
    unpack_gptq_qzeros,
)
from kernel_core.scalar_types import scalar_types


def as_int32(word: int) -> int:
    """An unsigned 32-bit word as the int32 that stores it."""
    return word - 2**32 if word >= 2**31 else word


def random_codes(shape: tuple[int, ...], bits: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2**bits, shape, generator=g, dtype=torch.uint8)


# ------------------------------------------------------------------ known words, decoded by hand


def test_compressed_tensors_4bit_word_is_lsb_first() -> None:
    codes = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]], dtype=torch.uint8)
    packed = pack_along_k(codes, 4)
    assert packed.dtype == torch.int32
    assert packed.tolist() == [[as_int32(0x87654321)]]  # top nibble 8 sets the sign bit
    assert unpack_along_k(packed, 4, 8).tolist() == codes.tolist()


def test_compressed_tensors_8bit_word_is_lsb_first() -> None:
    codes = torch.tensor([[0x11, 0x22, 0x33, 0xF4]], dtype=torch.uint8)
    packed = pack_along_k(codes, 8)
    assert packed.tolist() == [[as_int32(0xF4332211)]]
    assert unpack_along_k(packed, 8, 4).tolist() == codes.tolist()


def test_three_bit_codes_straddle_words() -> None:
    # 11 codes x 3 bits = 33 bits: element 10 occupies bits 30..32, across the word boundary.
    codes = torch.zeros(1, 11, dtype=torch.uint8)
    codes[0, 10] = 7
    codes[0, 0] = 5
    packed = pack_along_k(codes, 3)
    assert packed.tolist() == [[as_int32(0xC0000005), 1]]
    assert unpack_along_k(packed, 3, 11).tolist() == codes.tolist()


def test_gptq_qweight_word_decoded_by_hand() -> None:
    # Column n = 1 holds k = 0..7; GPTQ packs along K into qweight[0, 1].
    codes = torch.zeros(2, 8, dtype=torch.uint8)
    codes[1] = torch.tensor([1, 2, 3, 4, 5, 6, 7, 15], dtype=torch.uint8)
    qweight = pack_gptq_qweight(codes, 4)
    assert qweight.shape == (1, 2)
    word = qweight[0, 1].item() & 0xFFFFFFFF
    assert word == 0xF7654321
    assert qweight[0, 1].item() < 0
    decoded = [(word >> (4 * k)) & 0xF for k in range(8)]
    assert decoded == [1, 2, 3, 4, 5, 6, 7, 15]
    assert qweight[0, 0].item() == 0
    assert unpack_gptq_qweight(qweight, 4).tolist() == codes.tolist()


def test_gptq_qzeros_pack_along_n() -> None:
    zeros = torch.arange(1, 9, dtype=torch.uint8).reshape(8, 1)  # N = 8, G = 1
    qzeros = pack_gptq_qzeros(zeros, 4)
    assert qzeros.shape == (1, 1)
    assert qzeros.tolist() == [[as_int32(0x87654321)]]
    assert unpack_gptq_qzeros(qzeros, 4, 8).tolist() == zeros.tolist()


def test_compressed_tensors_zero_point_packs_along_n() -> None:
    zeros = torch.zeros(16, 2, dtype=torch.uint8)
    zeros[:8, 1] = torch.arange(1, 9, dtype=torch.uint8)
    packed = pack_ct_zero_point(zeros, 4)
    assert packed.shape == (2, 2)
    assert packed.tolist() == [[0, as_int32(0x87654321)], [0, 0]]
    assert unpack_ct_zero_point(packed, 4, 16).tolist() == zeros.tolist()


def test_awq_word_decoded_by_hand() -> None:
    # Column i of the row holds 8 + i; AWQ slot j holds column AWQ_PACK_ORDER[j].
    codes = (torch.arange(8, dtype=torch.uint8) + 8).reshape(1, 8)
    qweight = pack_awq(codes)
    word = qweight.item() & 0xFFFFFFFF
    slots = [(word >> (4 * j)) & 0xF for j in range(8)]
    assert slots == [8 + c for c in (0, 2, 4, 6, 1, 3, 5, 7)]
    assert AWQ_PACK_ORDER == (0, 2, 4, 6, 1, 3, 5, 7)
    assert word == 0xFDB9ECA8
    assert unpack_awq(qweight).tolist() == codes.tolist()


# ------------------------------------------------------------------ pack round trips


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("k", [64, 70])
def test_pack_along_k_round_trip(bits: int, k: int) -> None:
    codes = random_codes((5, k), bits, seed=bits * 100 + k)
    packed = pack_along_k(codes, bits)
    assert packed.shape == (5, -(-k * bits // 32))
    assert torch.equal(unpack_along_k(packed, bits, k), codes)


def test_pack_along_k_matches_python_bitstream() -> None:
    bits, k = 5, 45
    codes = random_codes((3, k), bits, seed=7)
    packed = pack_along_k(codes, bits)
    for row in range(3):
        stream = sum(int(c) << (i * bits) for i, c in enumerate(codes[row].tolist()))
        words = [(stream >> (32 * w)) & 0xFFFFFFFF for w in range(packed.shape[1])]
        assert packed[row].tolist() == [as_int32(w) for w in words]


@pytest.mark.parametrize("bits", [4, 8])
def test_gptq_and_zero_point_round_trips(bits: int) -> None:
    n, k, g = 64, 256, 4
    codes = random_codes((n, k), bits, seed=1)
    zeros = random_codes((n, g), bits, seed=2)
    qweight = pack_gptq_qweight(codes, bits)
    assert qweight.shape == (k * bits // 32, n)
    assert torch.equal(unpack_gptq_qweight(qweight, bits), codes)
    qzeros = pack_gptq_qzeros(zeros, bits)
    assert qzeros.shape == (g, n * bits // 32)
    assert torch.equal(unpack_gptq_qzeros(qzeros, bits, n), zeros)
    ct = pack_ct_zero_point(zeros, bits)
    assert ct.shape == (n * bits // 32, g)
    assert torch.equal(unpack_ct_zero_point(ct, bits, n), zeros)
    # GPTQ qweight is the compressed-tensors weight, transposed.
    assert torch.equal(qweight, pack_along_k(codes, bits).t())


def test_awq_round_trip() -> None:
    codes = random_codes((128, 96), 4, seed=3)
    qweight = pack_awq(codes)
    assert qweight.shape == (128, 12)
    assert torch.equal(unpack_awq(qweight), codes)


# ------------------------------------------------------------------ quantize / dequantize


def test_dequantize_symmetric_known_codes() -> None:
    codes = torch.tensor([[0, 8, 15, 9]], dtype=torch.uint8)
    scale = torch.tensor([[0.5, 2.0]])
    w = dequantize_int(codes, scale, scalar_types.uint4b8, 2)
    assert w.tolist() == [[-4.0, 0.0, 14.0, 2.0]]


def test_dequantize_asymmetric_known_codes() -> None:
    codes = torch.tensor([[0, 3, 255, 130]], dtype=torch.uint8)
    scale = torch.tensor([[0.25]])
    zeros = torch.tensor([[128]], dtype=torch.uint8)
    w = dequantize_int(codes, scale, scalar_types.uint8, -1, zero_point=zeros)
    assert w.tolist() == [[-32.0, -31.25, 31.75, 0.5]]


@pytest.mark.parametrize(
    "weight_type",
    [scalar_types.uint4b8, scalar_types.uint8b128, scalar_types.uint4, scalar_types.uint8],
)
@pytest.mark.parametrize("group_size", [32, 128, -1])
def test_quantize_round_trip_within_half_step(weight_type, group_size: int) -> None:
    g = torch.Generator().manual_seed(11)
    w = torch.randn(48, 256, generator=g) * 0.05 + 0.01
    q = quantize_int(w, weight_type, group_size)
    groups = 1 if group_size == -1 else 256 // group_size
    assert q.codes.dtype == torch.uint8 and q.codes.shape == (48, 256)
    assert q.scale.shape == (48, groups) and q.scale.dtype == torch.float32
    assert (q.zero_point is None) == weight_type.has_bias
    assert int(q.codes.max()) < 2**weight_type.size_bits
    deq = dequantize_int(
        q.codes, q.scale, weight_type, group_size, zero_point=q.zero_point
    )
    per_k_scale = q.scale.repeat_interleave(256 // groups, dim=1)
    assert torch.all((deq - w).abs() <= per_k_scale * 0.5 * (1 + 1e-5))
    rel = ((deq - w).norm() / w.norm()).item()
    assert rel < (0.2 if weight_type.size_bits == 4 else 0.012)


def test_symmetric_scale_is_amax_over_max_value() -> None:
    w = torch.tensor([[0.7, -0.35, 0.1, 0.0]])
    q = quantize_int(w, scalar_types.uint4b8, -1)
    assert q.scale.item() == pytest.approx(0.1)
    assert q.codes.tolist() == [[15, 8 - 4, 9, 8]]


def test_asymmetric_range_includes_zero() -> None:
    w = torch.tensor([[1.0, 2.0, 3.0, 1.5]])  # all positive: the range starts at 0
    q = quantize_int(w, scalar_types.uint4, -1)
    assert q.zero_point.item() == 0
    assert q.scale.item() == pytest.approx(3.0 / 15)


def test_scale_dtype_is_applied_and_codes_use_the_rounded_scale() -> None:
    g = torch.Generator().manual_seed(5)
    w = torch.randn(16, 128, generator=g) * 0.05
    q = quantize_int(w, scalar_types.uint4b8, 64, scale_dtype=torch.bfloat16)
    assert q.scale.dtype == torch.bfloat16
    deq = dequantize_int(q.codes, q.scale, scalar_types.uint4b8, 64)
    per_k = q.scale.float().repeat_interleave(64, dim=1)
    assert torch.all((deq - w).abs() <= per_k * 0.5 * (1 + 1e-5))


def test_g_idx_of_contiguous_groups_matches_plain_groups() -> None:
    g = torch.Generator().manual_seed(6)
    w = torch.randn(8, 256, generator=g)
    plain = quantize_int(w, scalar_types.uint4, 64)
    g_idx = (torch.arange(256) // 64).to(torch.int32)
    with_idx = quantize_int(w, scalar_types.uint4, 64, g_idx=g_idx)
    assert torch.equal(plain.codes, with_idx.codes)
    assert torch.equal(plain.scale, with_idx.scale)
    assert torch.equal(plain.zero_point, with_idx.zero_point)
    a = dequantize_int(
        plain.codes, plain.scale, scalar_types.uint4, 64, zero_point=plain.zero_point
    )
    b = dequantize_int(
        with_idx.codes, with_idx.scale, scalar_types.uint4, 64,
        zero_point=with_idx.zero_point, g_idx=with_idx.g_idx,
    )
    assert torch.equal(a, b)


def test_act_order_groups_follow_g_idx() -> None:
    g = torch.Generator().manual_seed(8)
    k, gs = 256, 64
    w = torch.randn(4, k, generator=g)
    g_idx = (torch.randperm(k, generator=g) // gs).to(torch.int32)
    # Make one group's members large so its scale must be large and the others small.
    w[:, g_idx == 2] *= 100
    q = quantize_int(w, scalar_types.uint8b128, gs, g_idx=g_idx, num_groups=6)
    assert q.scale.shape == (4, 6)
    assert torch.all(q.scale[:, 2] > 20 * q.scale[:, 0])
    deq = dequantize_int(q.codes, q.scale, scalar_types.uint8b128, gs, g_idx=q.g_idx)
    per_k = q.scale[:, g_idx.long()]
    assert torch.all((deq - w).abs() <= per_k * 0.5 * (1 + 1e-5))


def test_dequantize_dtype() -> None:
    codes = random_codes((4, 64), 4, seed=9)
    scale = torch.rand(4, 2) + 0.5
    out = dequantize_int(codes, scale, scalar_types.uint4b8, 32, dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16
    ref = (codes.double() - 8) * scale.double().repeat_interleave(32, dim=1)
    assert torch.allclose(out.double(), ref, rtol=1e-2)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: quantize_int(torch.randn(4, 100), scalar_types.uint4b8, 64), "multiple of 64"),
        (lambda: quantize_int(torch.randn(4, 64), scalar_types.int8, 64), "unsigned integer"),
        (lambda: quantize_int(torch.zeros(4, 64, dtype=torch.int32), scalar_types.uint4, 64),
         "expected dtype"),
        (lambda: quantize_int(torch.randn(4, 64), scalar_types.uint4, 32,
                              g_idx=torch.full((64,), 5, dtype=torch.int32)), "group indices"),
        (lambda: dequantize_int(torch.zeros(4, 64, dtype=torch.uint8), torch.ones(4, 3),
                                scalar_types.uint4b8, 32), r"expected shape \[4, 2\]"),
        (lambda: dequantize_int(torch.zeros(4, 64, dtype=torch.uint8), torch.ones(4, 2),
                                scalar_types.uint4, 32), "needs zero points"),
        (lambda: pack_along_k(torch.full((2, 8), 16, dtype=torch.uint8), 4), "below 2\\*\\*4"),
        (lambda: pack_along_k(torch.zeros(2, 8, dtype=torch.uint8), 9), "bits"),
        (lambda: unpack_along_k(torch.zeros(2, 3, dtype=torch.int32), 4, 32), "last dimension"),
        (lambda: pack_gptq_qweight(torch.zeros(4, 12, dtype=torch.uint8), 4), "multiple of 32"),
        (lambda: pack_awq(torch.zeros(4, 12, dtype=torch.uint8)), "multiple of 8"),
    ],
)
def test_bad_input_is_a_clear_value_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
