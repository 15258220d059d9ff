"""Which CUTLASS tile configuration runs a GEMM of a given M (and N), and why.

The ids are the ``TileConfigId`` / ``BlockTileConfigId`` enums of ``csrc/scaled_mm_api.h``; each
names one compiled kernel. The choice is a small readable function of M (the token count, the only
dimension that changes between calls) and N (the number of output tiles decides whether the 132
SMs of an H100/H200 are kept busy), in the DeepGEMM spirit: a comment per range says why.
"""

from __future__ import annotations

import enum

__all__ = ["TileConfig", "BlockTileConfig", "scaled_mm_tile", "block_scaled_mm_tile"]


class TileConfig(enum.IntEnum):
    """W8A8 FP8 / int8 kernels (``csrc/scaled_mm_dispatch.cuh``)."""

    SWAP_64x16 = 0  # out^T = W A^T, pingpong, 64 weight rows x 16 tokens x 128 deep
    SWAP_64x64 = 1  # out^T = W A^T, pingpong, 64 weight rows x 64 tokens x 128 deep
    PINGPONG_64x128 = 2  # pingpong, 64 tokens x 128 channels x 128 deep
    COOPERATIVE_128x128 = 3  # cooperative (2 warpgroups), 128 x 128 x 128, cluster 2x1
    COOPERATIVE_128x256 = 4  # cooperative, 128 x 256 x 128, cluster 2x1
    COOPERATIVE_256x128 = 5  # cooperative, 256 x 128 x 128, cluster 1x2
    PINGPONG_64x256 = 6  # pingpong, 64 x 256 x 128


class BlockTileConfig(enum.IntEnum):
    """FP8 1x128 / 128x128 block-scaled kernels (``csrc/fp8_block_scaled_mm.cu``)."""

    PINGPONG_64x128 = 0
    COOPERATIVE_128x128 = 1


def scaled_mm_tile(m: int, n: int) -> TileConfig:
    """The tile for an (m x k) @ (k x n) W8A8 GEMM."""
    if m <= 16:
        # Decode: the GEMM only streams the weight. A wgmma tile has at least 64 rows, so we swap
        # the operands and let N fill them; 16 tokens is the narrowest useful side. 64-row weight
        # tiles give N/64 CTAs (128 for N=8192), enough to keep every SM's loads in flight.
        return TileConfig.SWAP_64x16
    if m <= 64:
        # Still weight-bound; a 64-token side covers the batch in one tile column.
        return TileConfig.SWAP_64x64
    if m <= 256:
        # In between: 64-row tiles waste no rows at M=128/192/256 and double the CTA count over
        # 128-row tiles; pingpong overlaps one warpgroup's epilogue with the other's MMAs.
        return TileConfig.PINGPONG_64x128
    if m <= 512 or n < 4096:
        # Compute-bound but few tiles: 128x128 keeps enough CTAs for a full wave (M=512,
        # N=8192: 256 tiles); the 2x1 cluster multicasts the weight tile to both CTAs.
        return TileConfig.COOPERATIVE_128x128
    if m <= 2048:
        # Measured (H100, NOTES.md v1 sweep): at M=1024 the 128x256 tile beat 128x128 on 5 of
        # 6 fp8/int8 cases; its higher MMA-to-load ratio pays once there are ~2 waves of tiles.
        return TileConfig.COOPERATIVE_128x256
    # Large prefill: 256x128 (two 128-row warpgroup halves, 1x2 cluster sharing the activation
    # tile) was the fastest tile at M=4096 in all 6 fp8/int8 cases of the same sweep.
    return TileConfig.COOPERATIVE_256x128


def block_scaled_mm_tile(m: int, n: int) -> BlockTileConfig:
    """The tile for a 1x128 / 128x128 block-scaled FP8 GEMM.

    The weight scale's 128-row granularity forbids both the operand swap and tiles narrower than
    128 along N, so the only lever at small M is a 64-token tile.
    """
    if m <= 128:
        # 64-token tiles: half the wasted rows at decode, twice the CTAs along M.
        return BlockTileConfig.PINGPONG_64x128
    # Two warpgroups share the 128x128 tile; the weight scale is one value per tile column.
    return BlockTileConfig.COOPERATIVE_128x128
