"""The fragment-ordered weight layout of the stream kernel, in plain torch (checkable on CPU).

A weight of ``Np x Kp`` codes (``Np`` a multiple of 16, ``Kp`` of 64) is cut into tiles of 16
rows by 64 input channels. Row ``n = 16 * tile + 8 * h + g`` and channel
``k = 64 * chunk + 16 * t + 4 * s + 2 * jhi + jlo`` go to lane ``4 * g + t`` of the tile, mma step
``s``, A-fragment register ``2 * jhi + h``, half ``jlo`` (see ``csrc/stream_gemm.cuh``). Why: each
lane then needs exactly one 16-byte load (4-bit) or two (8-bit) per tile, a warp reads 512
contiguous bytes, and the activations a lane needs are 16 consecutive channels.

Stored as int32 ``[Np / 16, Kp / 64, V, 32, 4]`` with ``V = bits / 4``:

* 4-bit: word ``s`` of a lane holds register ``i`` of step ``s`` in nibbles ``i`` (``jlo = 0``) and
  ``i + 4`` (``jlo = 1``), so one shift and one mask put two codes in the two 16-bit halves.
* 8-bit: word ``2 * s + jhi`` holds bytes ``(h, jlo)`` in the order ``2 * h + jlo``; words 0-3 form
  vector 0 and words 4-7 vector 1 (each a coalesced 512-byte warp load).
"""

from __future__ import annotations

import torch

__all__ = [
    "TILE_N",
    "CHUNK_K",
    "round_up",
    "repack_codes",
    "unpack_codes",
    "pair_rows",
    "unpair_rows",
]

TILE_N = 16
CHUNK_K = 64


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _check_codes(codes: torch.Tensor, bits: int) -> None:
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, found {bits}")
    if codes.dim() != 2 or codes.shape[0] % TILE_N or codes.shape[1] % CHUNK_K:
        raise ValueError(
            f"codes must be [N, K] with N % {TILE_N} == 0 and K % {CHUNK_K} == 0, "
            f"found {list(codes.shape)}"
        )


def _to_int32(words: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2^32) to int32 with the same bits."""
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def repack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned codes ``[Np, Kp]`` (any integer dtype) to the kernel layout (int32, 5-D)."""
    _check_codes(codes, bits)
    n16, chunks = codes.shape[0] // TILE_N, codes.shape[1] // CHUNK_K
    # dims: tile, h, g, chunk, t, s, jhi, jlo
    v = codes.to(torch.int64).view(n16, 2, 8, chunks, 4, 4, 2, 2)
    if bits == 4:
        v = v.permute(0, 3, 2, 4, 5, 7, 6, 1).reshape(n16, chunks, 32, 4, 8)
        shifts = 4 * torch.arange(8, device=codes.device, dtype=torch.int64)
        words = (v << shifts).sum(-1).view(n16, chunks, 1, 32, 4)
    else:
        v = v.permute(0, 3, 2, 4, 5, 6, 1, 7).reshape(n16, chunks, 32, 8, 4)
        shifts = 8 * torch.arange(4, device=codes.device, dtype=torch.int64)
        words = (v << shifts).sum(-1).view(n16, chunks, 32, 2, 4).permute(0, 1, 3, 2, 4)
    return _to_int32(words.contiguous())


def unpack_codes(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """The inverse of :func:`repack_codes`: ``[Np, Kp]`` uint8 codes."""
    if packed.dim() != 5 or packed.dtype != torch.int32 or packed.shape[2] != bits // 4:
        raise ValueError(
            f"packed must be int32 [N16, C, {bits // 4}, 32, 4], found {packed.dtype} "
            f"{list(packed.shape)}"
        )
    n16, chunks = packed.shape[0], packed.shape[1]
    words = packed.to(torch.int64) & 0xFFFFFFFF
    if bits == 4:
        shifts = 4 * torch.arange(8, device=packed.device, dtype=torch.int64)
        v = ((words.view(n16, chunks, 32, 4)[..., None] >> shifts) & 0xF)
        # dims: tile, chunk, g, t, s, jlo, jhi, h
        v = v.view(n16, chunks, 8, 4, 4, 2, 2, 2).permute(0, 7, 2, 1, 3, 4, 6, 5)
    else:
        shifts = 8 * torch.arange(4, device=packed.device, dtype=torch.int64)
        words = words.permute(0, 1, 3, 2, 4).reshape(n16, chunks, 32, 8)
        v = (words[..., None] >> shifts) & 0xFF
        # dims: tile, chunk, g, t, s, jhi, h, jlo
        v = v.view(n16, chunks, 8, 4, 4, 2, 2, 2).permute(0, 6, 2, 1, 3, 4, 5, 7)
    return v.reshape(n16 * TILE_N, chunks * CHUNK_K).to(torch.uint8)


def pair_rows(values: torch.Tensor) -> torch.Tensor:
    """Per-row, per-group values ``[Np, G]`` to ``[Np / 16, G, 8, 2]``: the pair (row g, row g + 8)
    of a tile is one 32-bit word, which is all a lane needs for a group."""
    n, groups = values.shape
    if n % TILE_N:
        raise ValueError(f"rows must be a multiple of {TILE_N}, found {n}")
    return values.view(n // TILE_N, 2, 8, groups).permute(0, 3, 2, 1).contiguous()


def unpair_rows(paired: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`pair_rows`."""
    n16, groups = paired.shape[0], paired.shape[1]
    return paired.permute(0, 3, 2, 1).reshape(n16 * TILE_N, groups)
