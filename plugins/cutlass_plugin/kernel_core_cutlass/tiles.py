"""Which CUTLASS tile configuration runs a GEMM of a given M and N, and why.

The ids are the ``TileConfigId`` / ``BlockTileConfigId`` enums of ``csrc/scaled_mm_api.h``; each
names one compiled kernel. The choice is a small readable function of M (the token count, the only
dimension that changes between calls), N, K and the SM count: the number of output tiles decides
whether the SMs of an H100/H200 (132) are kept busy, in the DeepGEMM spirit. A comment per range
says why; NOTES.md has the measurements behind each choice. Compiled tiles no range picks
(``COOPERATIVE_128x128_STREAM_K``, ``COOPERATIVE_256x128``, the cooperative and 2x4 128x128 tiles
clustered along N for W8A8, ``COOPERATIVE_128x128_CLUSTER2`` for fp8_block, the 128-deep swap
tiles, the 512-deep decode tile) stay selectable through the ops' ``tile`` argument: the benchmark's sweep measures them against the
chosen ones on every run.

The v4 choices cite ``benchmarks/results/cutlass-h100-2026-11-27-v4.json`` (H100, ``bench_cutlass.py
--paired``: every tile x raster x swizzle of a point timed against the reference in the same
interleaved CUDA-graph rounds; "ratio" = reference time / ours, median over the rounds, with the
rounds' min-max). A choice changed only where the winner's median cleared the chosen variant's by
more than the rounds' spread, or won by a consistent margin on every shape of its class. The v5
choice cites ``benchmarks/results/cutlass-h100-2026-11-27-v5.json`` (same method; there "ours /
candidate" pairs the two kernels' times of the same sweep round). The W8A8 choices at M > 512 and
the orders of the 128x128 cluster tiles were re-made on the H200 (NOTES.md v22) from every paired
run with a sweep there (``benchmarks/results/cutlass-h200-2026-11-28-v9.json`` to
``cutlass-h200-2026-11-30-v21.json``): a variant replaced the chosen one where it was faster in
the same rounds by the median over the runs and in at least 15 of them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "H100_SMS",
    "N_CLUSTERED_TILES",
    "SWIZZLES",
    "BlockTileConfig",
    "Raster",
    "TileConfig",
    "TileOrder",
    "block_scaled_mm_order",
    "block_scaled_mm_tile",
    "scaled_mm_order",
    "scaled_mm_tile",
    "scheduled_tiles",
    "wave_efficiency",
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
    # 128 x 128 x 128 with the cluster along N: the CTAs of one cluster compute neighbouring weight
    # tiles of one token band, so each activation tile is loaded once and multicast to them.
    # What cuBLAS runs where it leads us at M >= 128 (cutlass-h200-2026-11-28-v10.json, `kernels`):
    # nvjet_sm90_qqtst_128x128_128x6_{4x1,2x1,4x2}; torch calls the column-major cuBLAS with the
    # operands swapped, so nvjet's first cluster dimension is our N. The 1x4 tile is chosen at
    # 64 < M <= 128 and the 1x2 pingpong one above M=2048 on wide or long-K layers
    # (scaled_mm_tile); the others are swept.
    PINGPONG_128x128_CLUSTER_N2 = 12  # pingpong, cluster 1x2: nvjet's 2x1 (M=256 N=8192, M >= 1024)
    PINGPONG_128x128_CLUSTER_N4 = 13  # pingpong, cluster 1x4: nvjet's 4x1 (M=128, all three shapes)
    COOPERATIVE_128x128_CLUSTER_N2 = 14  # cooperative (2 warpgroups per tile), cluster 1x2
    PINGPONG_128x128_CLUSTER_2x4 = 15  # pingpong, cluster 2x4: nvjet's 4x2 (28672 x 8192, M=256)
    # SWAP_64x16_K256 with 512-deep K steps: each stage reads 512 contiguous bytes of every
    # weight row instead of 256. Swept only: over six H200 runs a tie on 8192^2, 0-3% ahead at
    # M=16 on the large shapes (NOTES.md v13, "K512 over the session's six runs").
    SWAP_64x16_K512 = 16


#: The 128x128 tiles clustered along N (1x2, 1x4, 2x4 CTAs).
N_CLUSTERED_TILES = (TileConfig.PINGPONG_128x128_CLUSTER_N2, TileConfig.PINGPONG_128x128_CLUSTER_N4,
                     TileConfig.COOPERATIVE_128x128_CLUSTER_N2,
                     TileConfig.PINGPONG_128x128_CLUSTER_2x4)

#: The weight-first decode tiles (WeightFirstMainloop): first the heuristic's two (M <= 16 and
#: M <= 64), then the swept one with 512-deep K steps.
WEIGHT_FIRST_TILES = (TileConfig.SWAP_64x16_K256, TileConfig.SWAP_64x64_K256,
                      TileConfig.SWAP_64x16_K512)


class BlockTileConfig(enum.IntEnum):
    """FP8 1x128 / 128x128 block-scaled kernels (``csrc/block_scaled_mm_sm90.cuh``)."""

    PINGPONG_64x128 = 0
    COOPERATIVE_128x128 = 1
    COOPERATIVE_128x128_STREAM_K = 2  # stream-K: K-slices of the tiles spread over every SM
    COOPERATIVE_128x128_CLUSTER2 = 3  # cluster 2x1: two M tiles share the weight tile
    PINGPONG_64x64 = 4  # 64 wide in N: reads the weight scales repeated per 64 rows
    COOPERATIVE_128x64 = 5  # cooperative, 128 x 64 x 128 (DeepGEMM's M=256 N=4096 tile), as 64x64

    @property
    def weight_scale_rows(self) -> int:
        """Weight rows per scale value this tile reads (``kBlockWeightScaleRows``): CUTLASS's
        blockwise mainloop needs whole scale blocks per tile, so a 64-wide tile reads the
        128x128 block scales repeated per 64 rows (``weight_scale_n64`` of the layer)."""
        narrow = (BlockTileConfig.PINGPONG_64x64, BlockTileConfig.COOPERATIVE_128x64)
        return 64 if self in narrow else 128


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
        # all three shapes (H100, NOTES.md v3: 1-4% ahead of the 128-deep pingpong tile). Both
        # K256 swap tiles request their first weight stage before waiting for the quantizer
        # (WeightFirstMainloop, ops.WEIGHT_LEAD_STAGES; NOTES.md v12b).
        return TileConfig.SWAP_64x16_K256
    if m <= 64:
        # Still weight-bound; a 64-token side covers the batch in one tile column (fastest at
        # M=64 on all three shapes).
        return TileConfig.SWAP_64x64_K256
    if m <= 128:
        if _cdiv(m, 128) * _cdiv(n, 128) >= sm_count:
            # At least a wave of 128x128 tiles: cuBLAS's tile and cluster at M=128 (nvjet
            # 128x128, cluster 4 along N), one activation tile multicast to four CTAs. v11 file
            # (cutlass-h200-2026-11-29-v11.json), 28672x8192 M=128: 1.007x `_scaled_mm` (1.005-
            # 1.011x over its 12 orders) against 0.909x head to head for 64x128 cluster 2x1;
            # paired round by round 64x128 / 1x4 = 1.084x [1.075-1.101].
            return TileConfig.PINGPONG_128x128_CLUSTER_N4
        # Fewer 128x128 tiles than SMs (64 at N=8192): 64-token tiles, twice as many; the 2x1
        # cluster multicasts each weight tile to both M tiles, so the weight crosses L2 once
        # (v11 file, M=128: 1.14x / 1.30x `_scaled_mm` on 8192x8192 / 8192x28672, where the 1x4
        # tile read 0.95x / 0.97x).
        return TileConfig.PINGPONG_64x128_CLUSTER2
    if m <= 512:
        # 128x128 tiles (cluster 2x1: the weight tile multicast to both M tiles) read the least
        # L2 per FLOP, but only while they fill the SMs' waves; otherwise the 64-row tiles, twice
        # as many. v4 file, M=256: N=8192 (128 tiles, 97% of a wave) 0.952x / 0.974x
        # `_scaled_mm` with 128x128 against 0.933x / 0.932x with 64x128 (K = 8192 / 28672; the
        # rounds' ranges do not overlap on 8192x8192); N=28672 (448 tiles, 85% of 4 waves)
        # 64x128 1.013x against 0.950x.
        if _fills(m, n, 128, 128, sm_count):
            return TileConfig.PINGPONG_128x128_CLUSTER2
        return TileConfig.PINGPONG_64x128
    if n < 4096:
        # Narrow layers have too few 256-wide tile columns to fill the GPU at large M.
        return TileConfig.COOPERATIVE_128x128
    if m <= 2048:
        if _fills(m, n, 128, 128, sm_count):
            # The 128x128 cluster tile, along M with swizzle 2 (scaled_mm_order). Over the 15-18
            # H200 runs with a sweep (cutlass-h200-2026-11-28-v9 ... -2026-11-30-v21; NOTES.md
            # v22), at M=1024 it was faster than the tiles chosen before in the same rounds on
            # every shape: by 0.9% (8192x8192, 17 of 18 runs) and 0.7-0.8% (28672x8192, 15-18 of
            # 18: along M and in CUTLASS's order, the same order there) against the 64x256
            # pingpong tile, by 1.2% (8192x28672, 17 of 17) against 128x256.
            return TileConfig.PINGPONG_128x128_CLUSTER2
        if k <= 8192:
            # Measured at M=1024 (two H100 runs): the 64x256 pingpong tile, its epilogue
            # overlapped with the other warpgroup's MMAs, led on N=28672 by 5-15% and was within
            # 2% of the best on 8192x8192.
            return TileConfig.PINGPONG_64x256
        # Long K (28672): epilogues are rare, the L2 working set of 132 CTAs is not; the
        # 128x256 cooperative tile led at M=1024.
        return TileConfig.COOPERATIVE_128x256
    if k <= 8192 and n < 16384:
        # Large prefill: the 128x128 pingpong tile with its 2x1 cluster, run along N with
        # swizzle 4 (see scaled_mm_order). v4 file, M=4096 against `_scaled_mm`: 8192x8192
        # 0.988x [0.958-1.025] against 0.944x [0.925-0.967] for 256x128. Over the H200 runs
        # (NOTES.md v22) no variant beat it there by more than 0.1%.
        return TileConfig.PINGPONG_128x128_CLUSTER2
    # Wide layers and long K: the same tile with its pair along N (cuBLAS's nvjet 128x128 2x1
    # shape), in CUTLASS's order with swizzle 8. H200 runs (NOTES.md v22), M=4096, same rounds:
    # 1.4% ahead of the 2x1 cluster along N on 28672x8192 (15 of 16 runs) and 2.7% ahead of the
    # 256x128 cooperative tile chosen before on 8192x28672 (15 of 15).
    return TileConfig.PINGPONG_128x128_CLUSTER_N2


def block_scaled_mm_tile(m: int, n: int, sm_count: int = H100_SMS) -> BlockTileConfig:
    """The tile for a 1x128 / 128x128 block-scaled FP8 GEMM.

    The weight scale's 128-row blocks forbid the operand swap (the activation scales are per
    token), so at small M the levers are 64-token tiles, tiles 64 wide in N (reading the block
    scales repeated per 64 rows), and, where no tile fills the SMs' waves, stream-K.
    """
    if m <= 128:
        # 64-token tiles: half the wasted rows at decode, twice the CTAs along M.
        return BlockTileConfig.PINGPONG_64x128
    if m <= 512 and _cdiv(m, 64) * _cdiv(n, 64) <= sm_count:
        # Narrow layers: 64x64 tiles (the weight scales read per 64 rows) still fit one wave
        # and give each SM a tile. v4 file, N=2112 at M=256 (132 tiles): 1.007x FlashInfer
        # against 0.705x for the 68 tiles of 64x128. (A cooperative 128x32 tile, as many tiles and
        # FlashInfer's there, lost to it in v7: 0.942x head to head, 1.008x against 1.019x in the
        # sweep; removed.)
        return BlockTileConfig.PINGPONG_64x64
    if m <= 512 and _cdiv(m, 64) * _cdiv(n, 128) <= sm_count:
        # One wave of 64-row tiles (N=4096 at M=256: 128 tiles). With one tile per CTA a pingpong
        # CTA computes with one of its two consumer warpgroups (pingpong alternates whole tiles
        # between them); the cooperative 128x64 tile, as many tiles, splits each between both.
        # v5 file, N=4096 M=256: 128x64 0.982x FlashInfer in CUTLASS's default order (0.976-0.989x
        # over all 12 orders) against 0.902x for 64x128 in the same sweep (0.916x head to head);
        # paired round by round 64x128 / 128x64 = 1.091x [1.058-1.140], faster in every round and
        # every order. Also with half the SMs idle (N=2112 M=256, 68 / 66 tiles; 64x64 is chosen
        # there): 1.109x [1.086-1.118]. The 64x128 tile stays where the 128x64 tiles would not
        # fit one wave (M just above a multiple of 128: M=150, N=5632 makes 132 / 176 tiles).
        if _cdiv(m, 128) * _cdiv(n, 64) <= sm_count:
            return BlockTileConfig.COOPERATIVE_128x64
        return BlockTileConfig.PINGPONG_64x128
    tiles = _cdiv(m, 128) * _cdiv(n, 128)
    if tiles <= sm_count or _fills(m, n, 128, 128, sm_count):
        # Data-parallel 128x128 tiles when they fit one wave or fill their waves: two warpgroups
        # share each tile; the weight scale is one value per tile column. v4 file: N=7168 at
        # M=256 (112 tiles, one wave) 1.05x FlashInfer against 0.94x with stream-K (whose K
        # slices of a single wave only add fix-ups); N=18432 M=1024 (1152 tiles, 97% busy),
        # every shape at M=4096 and N=4096 at M=1024 1.05-1.08x (along N, swizzle 4:
        # block_scaled_mm_order).
        return BlockTileConfig.COOPERATIVE_128x128
    # Otherwise stream-K spreads the K-steps of the last, partial wave over all SMs. v4 file:
    # N=18432 at M=256 (288 tiles, 73% of 3 waves) 0.976x against 0.875x data-parallel;
    # N=7168 M=1024 (448 tiles, 85%) 1.21x against 1.09x; N=2112 M=1024 / 4096 (136 / 544
    # tiles) 1.28x / 1.14x against 0.98x / 1.09x.
    return BlockTileConfig.COOPERATIVE_128x128_STREAM_K


#: (M, N) CTAs a cluster of the W8A8 tiles that scaled_mm_order may give a swizzle wider than 1.
_SWIZZLED_TILE_CLUSTERS = {TileConfig.PINGPONG_128x128_CLUSTER2: (2, 1),
                           TileConfig.PINGPONG_128x128_CLUSTER_N2: (1, 2)}
#: How many more tiles than with swizzle 1 a wider swizzle may make CUTLASS schedule.
_SWIZZLE_PADDING = 1.03


def scheduled_tiles(m: int, n: int, tile_m: int, tile_n: int, cluster: tuple[int, int],
                    swizzle: int) -> int:
    """The tiles CUTLASS's SM90 persistent scheduler runs: it rounds each side of the tile grid up
    to whole swizzle groups of clusters (the swizzle itself narrowed on small grids, as CUTLASS's
    get_log_swizzle_size does), and every padded tile runs a whole mainloop (NOTES.md v21: swizzle
    2 on 128 tiles doubled the time)."""
    tiles_m, tiles_n = _cdiv(m, tile_m), _cdiv(n, tile_n)
    shortest = min(tiles_m, tiles_n)
    if swizzle >= 8 and shortest >= 6:
        width = 8
    elif swizzle >= 4 and shortest >= 3:
        width = 4
    elif swizzle >= 2 and shortest >= 2:
        width = 2
    else:
        width = 1
    return (_cdiv(tiles_m, width * cluster[0]) * width * cluster[0]
            * _cdiv(tiles_n, width * cluster[1]) * width * cluster[1])


def _affordable(order: TileOrder, m: int, n: int, tile: TileConfig) -> TileOrder:
    """``order`` with its swizzle narrowed until the rounding adds at most 3% tiles: the measured
    orders come from M = 1024 / 4096, whose grids divide evenly; at M=1280 swizzle 2 would add 20%
    and at M=2100 swizzle 8 41%."""
    cluster = _SWIZZLED_TILE_CLUSTERS[tile]
    fewest = scheduled_tiles(m, n, 128, 128, cluster, 1)
    swizzle = order.swizzle
    while swizzle > 1 and scheduled_tiles(m, n, 128, 128, cluster, swizzle) > _SWIZZLE_PADDING * fewest:
        swizzle //= 2
    return TileOrder(order.raster, swizzle, order.splits)


def scaled_mm_order(m: int, n: int, k: int, tile: TileConfig) -> TileOrder:
    """The scheduler arguments of a W8A8 GEMM run with ``tile``.

    CUTLASS's defaults (heuristic raster, no swizzle, stream-K) except where a sweep (raster x
    swizzle per tile at M = 128, 256, 1024, 4096 against ``torch._scaled_mm``) measured a winner
    consistently: the 128x128 cluster tiles. The v4 sweep (H100) found the large-prefill order;
    the H200 runs since (NOTES.md v22: the same tile in another order, paired round by round, in
    15-18 runs) the others. A swizzle wider than 1 is narrowed where its rounding of the tile grid
    would add more than 3% tiles (:func:`scheduled_tiles`).
    """
    del k
    if tile is TileConfig.PINGPONG_128x128_CLUSTER_N2:
        # Chosen at M > 2048: at M=4096 28672x8192 / 8192x28672 in CUTLASS's order with swizzle 8
        # 1.4% / 2.7% ahead of the tiles chosen before (see scaled_mm_tile).
        return _affordable(TileOrder(Raster.HEURISTIC, 8), m, n, tile)
    if m <= 512 and tile is TileConfig.PINGPONG_128x128_CLUSTER2:
        # Measured at M=256 (one wave of tiles on N=8192; M = 257-512 not measured): along N
        # 1.2% ahead of CUTLASS's order (along M there) on 8192x8192 (15 of 18 runs) and 1.6% on
        # 8192x28672 (15 of 17).
        return TileOrder(Raster.ALONG_N, 1)
    if m <= 2048 and tile is TileConfig.PINGPONG_128x128_CLUSTER2:
        # Along M with swizzle 2: consecutive CTAs walk down the token bands of a weight tile
        # column, two columns at a time (the M=1024 figures in scaled_mm_tile).
        return _affordable(TileOrder(Raster.ALONG_M, 2), m, n, tile)
    if m > 2048 and tile is TileConfig.PINGPONG_128x128_CLUSTER2:
        # Consecutive CTAs take consecutive N tiles, so the activation band they share stays in
        # L2, in swizzle groups of 4. v4 file, M=4096: along N with swizzle 2 / 4 0.985x / 0.988x
        # (8192x8192) and 0.990x / 0.989x (28672x8192) against 0.974x / 0.901x with CUTLASS's
        # default order for the same tile (8192x28672: 0.963x against 0.718x). Swizzle 2 against
        # 4, paired round by round (swizzle-4 time / swizzle-2 time) in v4-final and v5:
        # 8192x8192 0.996x [0.985-1.011] and 1.025x [1.018-1.061], 28672x8192 1.054x
        # [0.999-1.073] and 1.007x [0.996-1.125]: swizzle 2 was faster in every round only on
        # 8192x8192 in v5 (v4-final: swizzle 4 by the median), so swizzle 4 stays. (Since v22
        # only layers with N < 16384 and K <= 8192 take this tile above M=2048, 8192x8192 among
        # the benchmark's; the other two shapes above are the v4 evidence for the order.)
        return _affordable(TileOrder(Raster.ALONG_N, 4), m, n, tile)
    return TileOrder()


def block_scaled_mm_order(m: int, n: int, tile: BlockTileConfig) -> TileOrder:
    """The scheduler arguments of a block-scaled FP8 GEMM run with ``tile`` (see
    :func:`scaled_mm_order`). Split-K never beat stream-K or the data-parallel tile in the v4
    sweep (and needs more workspace than the shared 32 MiB at M >= 1024)."""
    del m, n
    if tile is BlockTileConfig.COOPERATIVE_128x128:
        # v4 file, geometric mean over N = 7168, 18432, 4096: M=1024 1.076x
        # FlashInfer along N with swizzle 4 against 1.059x with CUTLASS's default order,
        # M=4096 1.054x against 0.971x (18432x7168: 1.053x against 0.891x); no order mattered
        # at M=256 (1.045-1.050x).
        return TileOrder(Raster.ALONG_N, 4)
    # The 128x64 tile at N=4096 M=256 (v5 file, one run): every order within 0.7% of CUTLASS's
    # default by the median of the paired rounds, so the default.
    return TileOrder()
