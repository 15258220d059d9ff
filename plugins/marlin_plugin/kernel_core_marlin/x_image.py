"""The activation image of the tile kernel's launch variant 2 (``csrc/tile_gemm.cuh``,
``TileBulkCopies``): the activations laid out so that one 1-D bulk copy moves a block's rows of a
64-channel chunk straight into the byte order the wgmma B operand reads in shared memory.

Within a chunk, word ``w = 8 t + 2 s + jhi`` of a row (the channel pair ``16 t + 4 s + 2 jhi``,
``+1``) belongs at 16-byte unit ``w & 7`` = ``2 s + jhi``, word ``w >> 3`` = ``t`` (the packed K
order), and unit ``u`` of row ``r`` is stored at ``u ^ (r & 7)`` (the 128-byte swizzle). The
image is ``[C, M8, 64]`` in x's dtype (``M8`` = M rounded up to 8): chunk ``c``'s rows are one
contiguous run of ``M8 * 128`` bytes, row ``m`` of it already permuted and swizzled by ``m & 7``
(a block's rows start at multiples of 8, so the global row decides the swizzle). Channels at or
past K and rows at or past M are zero.

The tile op builds the image with the extension's kernel (``csrc/x_image.cuh``: one pass, one
thread per 16-byte unit); :func:`activation_image` here is the reference it is tested against
(byte for byte, GPU tests) and what the CPU tests check the layout with.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["activation_image", "image_source_channel"]


def image_source_channel(row: int, pos: int) -> int:
    """The channel (within a 64-channel chunk) whose value sits at element ``pos`` of row ``row``
    of the image: position ``pos`` lies in 16-byte unit ``pos // 8``, word ``(pos % 8) // 2``,
    element ``pos % 2``; the unit holds the words of unit ``(pos // 8) ^ (row & 7)`` before the
    swizzle, i.e. the channel pair ``16 t + 2 u`` with ``t`` the word."""
    unit, word, elem = pos // 8, (pos % 8) // 2, pos % 2
    return 16 * word + 2 * (unit ^ (row & 7)) + elem


@functools.cache
def _flat_index(kp: int, device: torch.device) -> torch.Tensor:
    """Index into an ``[8 * kp]`` block of 8 rows: element ``pos`` of chunk ``c`` of row ``r``
    (``r`` < 8) of the image comes from ``r * kp + 64 c + image_source_channel(r, pos)``."""
    src = torch.tensor([[image_source_channel(r, pos) for pos in range(64)] for r in range(8)])
    rows = torch.arange(8)[:, None]
    chunks = torch.arange(kp // 64)[None, :, None] * 64  # [1, C, 1]
    flat = rows[:, :, None] * kp + chunks + src[:, None, :]  # [8, C, 64]
    return flat.reshape(-1).to(device)


def activation_image(x: torch.Tensor, chunks: int) -> torch.Tensor:
    """``x [M, K]`` (K <= 64 * chunks) as the ``[chunks, M8, 64]`` activation image (contiguous,
    x's dtype and device), in torch: one gather with a cached index over the ``[M8 / 8, 8 * Kp]``
    view of the zero-padded activations (``Kp = 64 * chunks``), then one transpose-copy. The
    reference of the extension's image kernel (several times slower on a GPU)."""
    if x.dim() != 2:
        raise ValueError(f"activation_image: x must be 2-D, found {tuple(x.shape)}")
    m, k = x.shape
    kp = 64 * chunks
    if k > kp:
        raise ValueError(f"activation_image: K={k} exceeds the packed K {kp}")
    m8 = (m + 7) // 8 * 8
    if m8 != m or kp != k:
        padded = x.new_zeros((m8, kp))
        padded[:m, :k] = x
    else:
        padded = x.contiguous()
    gathered = padded.view(m8 // 8, 8 * kp).index_select(1, _flat_index(kp, x.device))
    # [M8 / 8, 8 rows, C, 64] -> [C, M8, 64]
    return gathered.view(m8 // 8, 8, chunks, 64).permute(2, 0, 1, 3).contiguous().view(
        chunks, m8, 64)
