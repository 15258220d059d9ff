"""Which CUTLASS tile configuration runs a GEMM of a given M and N, and why.

The ids are the ``TileConfigId`` / ``BlockTileConfigId`` enums of ``csrc/scaled_mm_api.h``; each
names one compiled kernel. The choice is a small readable function of M (the token count, the only
dimension that changes between calls), N, K and the SM count: the number of output tiles decides
whether the SMs of an H100/H200 (132) are kept busy, in the DeepGEMM spirit. A comment per range
says why; NOTES.md has the measurements behind each choice. Compiled tiles no range picks
(``COOPERATIVE_128x128_STREAM_K`` for W8A8, ``COOPERATIVE_128x128_CLUSTER2`` for fp8_block, the
128-deep swap tiles) stay selectable through the ops' ``tile`` argument: the benchmark's sweep
measures them against the chosen ones on every run (``PINGPONG_64x64`` for fp8_block too: two
CTAs per 64x128 tile for narrow N at M ~ 256, unmeasured so far).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "TileConfig",
    "BlockTileConfig",
    "Raster",
    "TileOrder",
    "SWIZZLES",
    "scaled_mm_order",
    "block_scaled_mm_order",
    "H100_SMS",
    "wave_efficiency",
    "scaled_mm_tile",
    "block_scaled_mm_tile",
]

#: SMs of an H100 SXM / H200, the default when the caller does not say.
H100_SMS = 132
#: Below this share of busy SM-waves a tile shape leaves too much of the GPU idle in its last wave.
_FULL_WAVES = 0.9


class TileConfig(enum.IntEnum):
    """W8A8 FP8 / int8 kernels (``csrc/scaled_mm_dispatch.cuh``)."""

    SWAP_64x16 = 0  # out^T = W A^T, pingpong, 64 weight rows x 16 tokens x 128 deep
    SWAP_64x64 = 1  # out^T = W A^T, pingpong, 64 weight rows x 64 tokens x 128 deep
    PINGPONG_64x128 = 2  # pingpong, 64 tokens x 128 channels x 128 deep
    COOPERATIVE_128x128 = 3  # cooperative (2 warpgroups), 128 x 128 x 128, cluster 2x1
    COOPERATIVE_128x256 = 4  # cooperative, 128 x 256 x 128, cluster 2x1
    COOPERATIVE_256x128 = 5  # cooperative, 256 x 128 x 128, cluster 1x2
    PINGPONG_64x256 = 6  # pingpong, 64 x 256 x 128
    SWAP_64x16_K256 = 7  # out^T = W A^T, one consumer warpgroup, one tile per CTA, 64 x 16 x 256
    SWAP_64x64_K256 = 8  # out^T = W A^T, one consumer warpgroup, one tile per CTA, 64 x 64 x 256
    PINGPONG_64x128_CLUSTER2 = 9  # pingpong, 64 x 128 x 128, cluster 2x1 (weight tile multicast)
    PINGPONG_128x128_CLUSTER2 = 10  # pingpong, 128 x 128 x 128, cluster 2x1
    COOPERATIVE_128x128_STREAM_K = 11  # cooperative, 128 x 128 x 128, stream-K scheduler


class BlockTileConfig(enum.IntEnum):
    """FP8 1x128 / 128x128 block-scaled kernels (``csrc/block_scaled_mm_sm90.cuh``)."""

    PINGPONG_64x128 = 0
    COOPERATIVE_128x128 = 1
    COOPERATIVE_128x128_STREAM_K = 2  # stream-K: K-slices of the tiles spread over every SM
    COOPERATIVE_128x128_CLUSTER2 = 3  # cluster 2x1: two M tiles share the weight tile
    PINGPONG_64x64 = 4  # 64 wide in N: reads the weight scales repeated per 64 rows

    @property
    def weight_scale_rows(self) -> int:
        """Weight rows per scale value this tile reads (``kBlockWeightScaleRows``): CUTLASS's
        blockwise mainloop needs whole scale blocks per tile, so a 64-wide tile reads the
        128x128 block scales repeated per 64 rows (``weight_scale_n64`` of the layer)."""
        return 64 if self is BlockTileConfig.PINGPONG_64x64 else 128


class Raster(enum.IntEnum):
    """The order in which the persistent schedulers hand out output tiles (``RasterOrder`` of
    ``csrc/scaled_mm_api.h``): consecutive tiles share a weight tile column (along M) or an
    activation tile row (along N), which decides what the L2 keeps between them."""

    HEURISTIC = 0  # CUTLASS's choice: along M when there are more tile columns than rows
    ALONG_M = 1
    ALONG_N = 2


#: The swizzle widths CUTLASS's SM90 schedulers accept (tiles visited in groups this wide).
SWIZZLES = (1, 2, 4, 8)


@dataclass(frozen=True)
class TileOrder:
    """Runtime scheduler arguments of one compiled tile (no extra instantiation per choice)."""

    raster: Raster = Raster.HEURISTIC
    swizzle: int = 1
    #: Stream-K tiles only: 0 runs stream-K, 2..32 split-K into that many K slices.
    splits: int = 0


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def wave_efficiency(tiles: int, sm_count: int = H100_SMS) -> float:
    """Share of SM time doing work when ``tiles`` equal tiles run in waves of ``sm_count``."""
    if tiles <= 0:
        return 0.0
    return tiles / (_cdiv(tiles, sm_count) * sm_count)


def _fills(m: int, n: int, tile_m: int, tile_n: int, sm_count: int) -> bool:
    return wave_efficiency(_cdiv(m, tile_m) * _cdiv(n, tile_n), sm_count) >= _FULL_WAVES


def scaled_mm_tile(m: int, n: int, k: int, sm_count: int = H100_SMS) -> TileConfig:
    """The tile for an (m x k) @ (k x n) W8A8 GEMM."""
    if m <= 16:
        # Decode: the GEMM only streams the weight. A wgmma tile has at least 64 rows, so the
        # operands are swapped and N fills them (N/64 CTAs: 128 for N=8192); 256-deep K steps
        # move 256 contiguous bytes per weight row per stage. Measured fastest at M=1 and 16 on
        # all three shapes (H100, NOTES.md v3: 1-4% ahead of the 128-deep pingpong tile).
        return TileConfig.SWAP_64x16_K256
    if m <= 64:
        # Still weight-bound; a 64-token side covers the batch in one tile column (fastest at
        # M=64 on all three shapes).
        return TileConfig.SWAP_64x64_K256
    if m <= 128:
        # 64-token tiles waste no rows at M=128; the 2x1 cluster multicasts each weight tile to
        # both M tiles, so the weight crosses L2 once (fastest or within 1.2% at M=128).
        return TileConfig.PINGPONG_64x128_CLUSTER2
    if m <= 256:
        # Four 64-row tiles per column: here the cluster costs more than its multicast saves
        # (N=28672: 108 us without, 124 us with), and 64-row tiles fill the waves (N=8192: 256
        # tiles, N=28672: 896). Fastest on two shapes at M=256, within 1.2% on the third.
        return TileConfig.PINGPONG_64x128
    if m <= 512:
        # 128x128 tiles read the least L2 per FLOP, but only while they fill the SMs' waves
        # (N=8192, M=512: 256 tiles, 97% busy); otherwise the 64-row tiles, twice as many.
        if _fills(m, n, 128, 128, sm_count):
            return TileConfig.PINGPONG_128x128_CLUSTER2
        return TileConfig.PINGPONG_64x128
    if n < 4096:
        # Narrow layers have too few 256-wide tile columns to fill the GPU at large M.
        return TileConfig.COOPERATIVE_128x128
    if m <= 2048:
        if k <= 8192:
            # Measured at M=1024 (two H100 runs): the 64x256 pingpong tile, its epilogue
            # overlapped with the other warpgroup's MMAs, led on N=28672 by 5-15% and was within
            # 2% of the best on 8192x8192.
            return TileConfig.PINGPONG_64x256
        # Long K (28672): epilogues are rare, the L2 working set of 132 CTAs is not; the
        # 128x256 cooperative tile led at M=1024.
        return TileConfig.COOPERATIVE_128x256
    # Large prefill: 256x128 (two 128-row warpgroup halves, 1x2 cluster sharing the activation
    # tile) was the fastest tile at M=4096 in 6 of 6 cases of the v1 sweep and on 8192x28672 in
    # v3 (within 3% elsewhere).
    return TileConfig.COOPERATIVE_256x128


def block_scaled_mm_tile(m: int, n: int, sm_count: int = H100_SMS) -> BlockTileConfig:
    """The tile for a 1x128 / 128x128 block-scaled FP8 GEMM.

    The weight scale's 128-row granularity forbids both the operand swap and tiles narrower than
    128 along N, so at small M the levers are 64-token tiles and, where the tiles cannot fill
    the SMs, stream-K.
    """
    if m <= 128 or (m <= 512 and _cdiv(m, 64) * _cdiv(n, 128) <= sm_count):
        # 64-token tiles: half the wasted rows at decode, twice the CTAs along M; while they fit
        # in one wave each SM owns one tile (DeepSeek's N=2112 and 4096 at M=256: 68 and 128
        # tiles, fastest there, H100 NOTES.md v3).
        return BlockTileConfig.PINGPONG_64x128
    if _fills(m, n, 128, 128, sm_count):
        # Enough tiles for full waves (N=18432, M=1024: 1152 tiles, 97% busy): two warpgroups
        # share each 128x128 tile; the weight scale is one value per tile column.
        return BlockTileConfig.COOPERATIVE_128x128
    # Otherwise stream-K spreads the K-steps of the last, partial wave over all SMs (N=2112 at
    # M=1024: 136 tiles, 1.03 waves).
    return BlockTileConfig.COOPERATIVE_128x128_STREAM_K


def scaled_mm_order(m: int, n: int, k: int, tile: TileConfig) -> TileOrder:
    """The scheduler arguments of a W8A8 GEMM run with ``tile``.

    CUTLASS's defaults (heuristic raster, no swizzle, stream-K): every H100 measurement up to
    NOTES.md v3 ran them. The v4 sweep times raster x swizzle per tile at M >= 128 against
    ``torch._scaled_mm``; a range changes here only where it measured a winner.
    """
    del m, n, k, tile  # the same for every problem until a measurement says otherwise
    return TileOrder()


def block_scaled_mm_order(m: int, n: int, tile: BlockTileConfig) -> TileOrder:
    """The scheduler arguments of a block-scaled FP8 GEMM run with ``tile`` (see
    :func:`scaled_mm_order`; the v4 sweep adds split-K counts for the stream-K tile)."""
    del m, n, tile
    return TileOrder()
