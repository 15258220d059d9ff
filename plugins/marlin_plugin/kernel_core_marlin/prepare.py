"""Checkpoint parameters of each family to the stream kernel's tensors (once, at load).

Every format becomes the same five tensors: fragment-ordered codes (:mod:`layout`), a per-group
multiplier in the activation dtype, optional per-group zero-point codes, an optional fp32
per-row multiplier applied to the finished dot product, and, for act-order, the channel
permutation with its group table. Floating-point codes are decoded in the kernel by moving their
bits into a 16-bit float; the exponent-bias difference that leaves is a power of two folded into
the group multiplier here, and what would overflow a 16-bit multiplier (E8M0 exponents, the NVFP4
global scale) goes to the fp32 per-row multiplier instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kernel_core_marlin.layout import CHUNK_K, TILE_N, pair_rows, repack_codes, round_up

__all__ = [
    "Format",
    "PackedWeights",
    "pack_codes",
    "nibbles_of",
    "act_order_plan",
    "fp_bias_compensation",
]

#: Codes repacked at a time: at most this many, and at most 1 / _SLAB_SHARE of the layer's. The
#: temporaries of a slab (a few int64 copies of its codes: 15-18 MB for 2^20 codes on an H100,
#: marlin-h100-2026-11-27-v13.json) then stay under ~1/4 of a 4-bit layer's packed bytes, on
#: small layers too.
_SLAB_CODES = 1 << 20
_SLAB_SHARE = 128


class Format:
    """Codes the kernel decodes (must match ``kcm::Format`` in ``csrc/gemm_params.h``)."""

    INT4 = 0
    INT8 = 1
    FP4 = 2
    FP8 = 3

    BITS = {INT4: 4, INT8: 8, FP4: 4, FP8: 8}


@dataclass
class PackedWeights:
    """What a processed layer holds (as parameters) plus the plain ints the op needs."""

    qweight: torch.Tensor
    gscale: torch.Tensor
    zeros: torch.Tensor | None
    chan: torch.Tensor | None
    perm: torch.Tensor | None
    gtab: torch.Tensor | None
    fmt: int
    group_size: int
    zconst: int


def nibbles_of(packed: torch.Tensor) -> torch.Tensor:
    """Little-endian 4-bit codes (int32 words or uint8 bytes, element i at bits 4i) to uint8
    codes."""
    as_bytes = packed.contiguous().view(torch.uint8)
    return torch.stack((as_bytes & 0xF, as_bytes >> 4), dim=-1).reshape(packed.shape[0], -1)


def pack_codes(
    codes_of_rows: Callable[[int, int], torch.Tensor], n: int, kp: int, bits: int,
    checkpoint: torch.Tensor,
) -> torch.Tensor:
    """Repack ``n`` rows of codes, a slab at a time, into the kernel layout padded to
    ``(round_up(n, 16), kp)``. ``codes_of_rows(r0, r1)`` returns uint8 ``[r1 - r0, kp]``.

    ``checkpoint``: the checkpoint's code tensor (rows = output channels, row-major), which
    ``codes_of_rows`` reads; the layout goes to its device. When it is contiguous and exactly as
    large as the layout (N a multiple of 16, ``kp`` = K: no padding), the layout is written over
    it, so processing a layer holds no second copy of its weight: the 16 rows of a layout tile
    occupy the same bytes as the same 16 rows of the checkpoint, and each slab's codes are read
    out (into temporaries) before its bytes are overwritten. Otherwise the layout gets its own
    tensor.
    """
    np_ = round_up(n, TILE_N)
    shape = (np_ // TILE_N, kp // CHUNK_K, bits // 4, 32, 4)
    out = _in_place_layout(checkpoint, shape)
    if out is None:
        out = torch.empty(shape, dtype=torch.int32, device=checkpoint.device)
    slab_codes = min(_SLAB_CODES, np_ * kp // _SLAB_SHARE)
    slab_rows = max(TILE_N, slab_codes // kp // TILE_N * TILE_N)
    for r0 in range(0, np_, slab_rows):
        r1 = min(r0 + slab_rows, np_)
        codes = codes_of_rows(r0, min(r1, n))
        if codes.shape[0] < r1 - r0:
            pad = codes.new_zeros((r1 - r0 - codes.shape[0], kp))
            codes = torch.cat((codes, pad))
        out[r0 // TILE_N : r1 // TILE_N] = repack_codes(codes, bits)
    return out


def _in_place_layout(checkpoint: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor | None:
    """``checkpoint``'s storage viewed as the int32 layout of ``shape``, or None where it cannot
    hold it (see :func:`pack_codes`): also where it does not start on a 16-byte boundary (a view
    into a larger load buffer), since the kernels read the layout in 16-byte copies."""
    if (
        not checkpoint.is_contiguous()
        or checkpoint.data_ptr() % 16
        or checkpoint.numel() * checkpoint.element_size() != 4 * math.prod(shape)
    ):
        return None
    return checkpoint.reshape(-1).view(torch.uint8).view(torch.int32).view(shape)


def pad_columns(codes: torch.Tensor, kp: int) -> torch.Tensor:
    if codes.shape[1] == kp:
        return codes
    return torch.nn.functional.pad(codes, (0, kp - codes.shape[1]))


def pad_rows(values: torch.Tensor, rows: int) -> torch.Tensor:
    if values.shape[0] == rows:
        return values
    return torch.nn.functional.pad(values, (0, 0, 0, rows - values.shape[0]))


def act_order_plan(g_idx: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort channels by group and pad every group to a multiple of 16 channels.

    Returns ``perm`` (``[Kp]`` int64: the source channel of each kernel channel, -1 for padding)
    and ``gtab`` (``[Kp / 16]`` int32: the group of each 16-channel block). Padding channels read
    activation column 0 against zero weights, so any partition of groups (row-parallel
    included) is served exactly.
    """
    g = g_idx.to(torch.int64).cpu()
    if g.numel() and (int(g.min()) < 0 or int(g.max()) >= num_groups):
        raise ValueError(
            f"weight_g_idx values must lie in [0, {num_groups}), found "
            f"[{int(g.min())}, {int(g.max())}]"
        )
    order = torch.argsort(g, stable=True)
    sorted_g = g[order]
    counts = torch.bincount(sorted_g, minlength=num_groups)
    padded = (counts + 15) // 16 * 16
    starts = torch.cumsum(padded, 0) - padded
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(g.numel()) - first[sorted_g]
    kp = round_up(max(int(padded.sum()), 1), CHUNK_K)
    perm = torch.full((kp,), -1, dtype=torch.int64)
    perm[starts[sorted_g] + rank] = order
    gtab = torch.repeat_interleave(torch.arange(num_groups), padded // 16)
    gtab = torch.cat((gtab, torch.zeros(kp // 16 - gtab.numel(), dtype=torch.int64)))
    return perm, gtab.to(torch.int32)


def fp_bias_compensation(fmt: int, act_dtype: torch.dtype) -> int:
    """log2 of the factor between an FP code moved into a 16-bit float's fields and its value."""
    half = act_dtype == torch.float16
    if fmt == Format.FP4:  # E2M1 exponent bias 1 -> fp16 15 / bf16 127
        return 14 if half else 126
    if fmt == Format.FP8:  # E4M3 exponent bias 7
        return 8 if half else 120
    raise ValueError(f"format {fmt} is not a floating-point code")


def paired(values: torch.Tensor, np_: int, dtype: torch.dtype) -> torch.Tensor:
    """``[N, G]`` per-row values to the kernel's ``[Np/16, G, 8, 2]`` table in ``dtype``."""
    return pair_rows(pad_rows(values.to(dtype), np_))
