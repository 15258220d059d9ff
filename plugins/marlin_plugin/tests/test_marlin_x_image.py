"""The activation image of tile variant 2 (x_image.py) on the CPU: the bytes its bulk copy lands
in shared memory equal those today's 4-byte cp.async copies (TileCopies::copy_chunk) place, and
the wgmma B operand's k16 steps read the channels of the packed K order from them."""

from __future__ import annotations

import pytest
import torch

from kernel_core_marlin.x_image import activation_image, image_source_channel


def copy_chunk_stage(x: torch.Tensor, chunk: int, m0: int, bmx: int) -> torch.Tensor:
    """Emulates copy_chunk's activation copies (tile_gemm.cuh, XP = false): lane ``w`` of the
    warp copying row ``r`` moves the channel pair ``64 chunk + 2 w`` (zero-filled at or past K)
    to byte ``((w & 7) ^ (r & 7)) 16 + (w >> 3) 4`` of the row; rows at or past M are not copied
    (here: left as NaN, which nothing may read). Returns the stage's ``[bmx, 64]`` elements."""
    m, k = x.shape
    stage = torch.full((bmx, 64), float("nan"), dtype=x.dtype)
    for r in range(min(bmx, m - m0)):
        for w in range(32):
            unit, word = (w & 7) ^ (r & 7), w >> 3
            for e in range(2):
                channel = 64 * chunk + 2 * w + e
                stage[r, unit * 8 + word * 2 + e] = x[m0 + r, channel] if channel < k else 0
    return stage


def image_stage(img: torch.Tensor, chunk: int, m0: int, bmx: int, m: int) -> torch.Tensor:
    """What variant 2's one bulk copy lands: min(bmx, m - m0) rows of chunk ``chunk`` from row
    ``m0`` of the image (the bytes ((chunk M8 + m0) 128 ..) of the flat array), the rest NaN."""
    rows = min(bmx, m - m0)
    flat = img.reshape(-1)
    start = (chunk * img.shape[1] + m0) * 64
    stage = torch.full((bmx, 64), float("nan"), dtype=img.dtype)
    stage[:rows] = flat[start:start + rows * 64].view(rows, 64)
    return stage


def b_operand_step(stage: torch.Tensor, row: int, s: int) -> list[float]:
    """The 16 values the wgmma B operand (K-major, 128-byte swizzle, advanced 32 bytes per k16
    step) reads for step ``s`` of token ``row``: logical units 2 s and 2 s + 1, each stored at
    unit ^ (row & 7); logical element 8 (2 s + jhi) + 2 t + jlo holds fragment column
    2 t + 8 jhi + jlo."""
    values = [0.0] * 16
    for jhi in range(2):
        unit = (2 * s + jhi) ^ (row & 7)
        for t in range(4):
            for jlo in range(2):
                values[2 * t + 8 * jhi + jlo] = float(stage[row, unit * 8 + 2 * t + jlo])
    return values


@pytest.mark.parametrize("m, k, chunks", [(64, 128, 2), (77, 200, 4), (200, 192, 3), (8, 64, 1)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_image_lands_what_copy_chunk_places(m: int, k: int, chunks: int, dtype) -> None:
    torch.manual_seed(m + k)
    x = torch.randn(m, k).to(dtype)
    img = activation_image(x, chunks)
    m8 = (m + 7) // 8 * 8
    assert img.shape == (chunks, m8, 64) and img.is_contiguous() and img.dtype == dtype
    assert bool((img[:, m:] == 0).all())  # padding rows are zero
    for bmx in (64, 128, 256):
        for m0 in range(0, m, bmx):
            rows = min(bmx, m - m0)
            for chunk in range(chunks):
                today = copy_chunk_stage(x, chunk, m0, bmx)
                bulk = image_stage(img, chunk, m0, bmx, m)
                # Byte for byte on every copied row (same bits, NaN-free there).
                assert torch.equal(bulk[:rows].view(torch.int16), today[:rows].view(torch.int16))
                for r in range(rows):
                    for s in range(4):
                        # Fragment column 2 t + 8 jhi + jlo of step s is channel
                        # 16 t + 4 s + 2 jhi + jlo (the packed K order).
                        expect = [0.0] * 16
                        for t in range(4):
                            for jhi in range(2):
                                for jlo in range(2):
                                    ch = 64 * chunk + 16 * t + 4 * s + 2 * jhi + jlo
                                    expect[2 * t + 8 * jhi + jlo] = (
                                        float(x[m0 + r, ch]) if ch < k else 0.0)
                        assert b_operand_step(bulk, r, s) == expect, (bmx, m0, chunk, r, s)


def test_image_source_channel_inverts_the_swizzle() -> None:
    for row in range(8):
        channels = sorted(image_source_channel(row, pos) for pos in range(64))
        assert channels == list(range(64))
    # Unswizzled row 0: unit u word t element e is channel 16 t + 2 u + e.
    assert image_source_channel(0, 8 * 3 + 2 * 1 + 1) == 16 + 6 + 1


def test_image_refuses_a_k_past_the_packed_k() -> None:
    with pytest.raises(ValueError, match="exceeds the packed K"):
        activation_image(torch.zeros(8, 130), 2)
