"""The fragment-ordered layout, checked on the CPU: repack, unpack, and where each code lands."""

from __future__ import annotations

import pytest
import torch

from kernel_core_marlin.layout import pair_rows, repack_codes, unpack_codes, unpair_rows
from kernel_core_marlin.prepare import act_order_plan, nibbles_of


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("shape", [(16, 64), (48, 192), (160, 320)])
def test_repack_round_trip(bits: int, shape: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(bits * 1000 + shape[0])
    codes = torch.randint(0, 2**bits, shape, generator=generator, dtype=torch.int64).to(torch.uint8)
    packed = repack_codes(codes, bits)
    assert packed.dtype == torch.int32
    assert tuple(packed.shape) == (shape[0] // 16, shape[1] // 64, bits // 4, 32, 4)
    assert torch.equal(unpack_codes(packed, bits), codes)


def _lane_word(packed: torch.Tensor, tile: int, chunk: int, lane: int, word: int) -> int:
    vector, index = divmod(word, 4)
    return int(packed[tile, chunk, vector, lane, index]) & 0xFFFFFFFF


def test_four_bit_fragment_positions() -> None:
    """Row 16 tile + 8 h + g, channel 64 c + 16 t + 4 s + 2 jhi + jlo sits in lane 4 g + t,
    word s, nibble 4 jlo + 2 jhi + h (the kernel's A-register 2 jhi + h, half jlo)."""
    generator = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 16, (32, 128), generator=generator).to(torch.uint8)
    packed = repack_codes(codes, 4)
    for tile, h, g, chunk, t, s, jhi, jlo in [(1, 1, 3, 1, 2, 1, 1, 1), (0, 0, 7, 0, 3, 3, 0, 1),
                                              (1, 0, 0, 1, 0, 2, 1, 0)]:
        n = 16 * tile + 8 * h + g
        k = 64 * chunk + 16 * t + 4 * s + 2 * jhi + jlo
        word = _lane_word(packed, tile, chunk, 4 * g + t, s)
        assert (word >> (4 * (4 * jlo + 2 * jhi + h))) & 0xF == int(codes[n, k])


def test_eight_bit_fragment_positions() -> None:
    """8-bit: word 2 s + jhi of the lane, byte 2 h + jlo."""
    generator = torch.Generator().manual_seed(4)
    codes = torch.randint(0, 256, (32, 128), generator=generator).to(torch.uint8)
    packed = repack_codes(codes, 8)
    for tile, h, g, chunk, t, s, jhi, jlo in [(1, 1, 3, 1, 2, 1, 1, 1), (0, 0, 5, 0, 1, 3, 0, 0)]:
        n = 16 * tile + 8 * h + g
        k = 64 * chunk + 16 * t + 4 * s + 2 * jhi + jlo
        word = _lane_word(packed, tile, chunk, 4 * g + t, 2 * s + jhi)
        assert (word >> (8 * (2 * h + jlo))) & 0xFF == int(codes[n, k])


def test_repack_rejects_unaligned() -> None:
    with pytest.raises(ValueError, match="K % 64 == 0"):
        repack_codes(torch.zeros(16, 96, dtype=torch.uint8), 4)
    with pytest.raises(ValueError, match="bits"):
        repack_codes(torch.zeros(16, 64, dtype=torch.uint8), 3)


def test_pair_rows_round_trip() -> None:
    values = torch.randn(48, 5)
    paired = pair_rows(values)
    assert tuple(paired.shape) == (3, 5, 8, 2)
    assert torch.equal(paired[1, 2, 3], torch.stack((values[16 + 3, 2], values[16 + 11, 2])))
    assert torch.equal(unpair_rows(paired), values)


def test_nibbles_little_endian() -> None:
    word = torch.tensor([[0x76543210, -0x10000000 + 0x0FEDCBA9]], dtype=torch.int32)
    assert nibbles_of(word)[0, :8].tolist() == list(range(8))
    assert nibbles_of(word)[0, 8:].tolist() == [9, 10, 11, 12, 13, 14, 15, 15]


@pytest.mark.parametrize("k,groups", [(256, 2), (200, 7), (64, 1)])
def test_act_order_plan(k: int, groups: int) -> None:
    g_idx = torch.randint(0, groups, (k,), generator=torch.Generator().manual_seed(k))
    perm, gtab = act_order_plan(g_idx, groups)
    assert perm.numel() % 64 == 0 and gtab.numel() == perm.numel() // 16
    real = perm[perm >= 0]
    assert sorted(real.tolist()) == list(range(k))
    block_groups = gtab.repeat_interleave(16)
    assert torch.equal(g_idx[real], block_groups[perm >= 0].to(g_idx.dtype))


def test_act_order_plan_rejects_bad_groups() -> None:
    with pytest.raises(ValueError, match="weight_g_idx"):
        act_order_plan(torch.tensor([0, 3]), 2)
