"""The tile kernel's host side: which variant, tile shape and split serve a GEMM, and its op.

The tile kernel (``csrc/tile_gemm.cuh``) runs the packed weights through wgmma on SM90 for M >=
:func:`layer_min_m` (17; 9 on tall 4-bit layers, 25 for 8-bit codes): a block computes ``128 * rw``
weight rows x ``bmx`` tokens, and ``split`` blocks of a thread-block cluster share K when the block
count alone would leave SMs idle. Three launch variants exist (:data:`TILE_VARIANTS`): the barrier
kernel (every warp copies, one block-wide barrier per chunk), the warp-specialized one (a producer
warpgroup of cp.async, stages handed over by mbarriers), the bulk producer (the same consumers; the
producer warpgroup moves each chunk with bulk copies from an activation image the op builds first)
and stream-K (the bulk producer's warps on an even division of all the chunks over one block per SM,
the tiles that blocks share summed through a workspace, :func:`stream_workspace`). :func:`tile_plan`
chooses among the variants and shapes that have a per-chunk time (:data:`CHUNK_US`) by a small cost
model (waves of blocks times the work of one block), so the choice is testable on the CPU.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from kernel_core.workspace import device_workspace
from kernel_core_marlin import ops
from kernel_core_marlin.prepare import Format

__all__ = [
    "TILE_VARIANTS",
    "CHUNK_US",
    "SPECIALIZED_CHUNK_US",
    "BULK_CHUNK_US",
    "TILE_MIN_M",
    "TILE_MIN_M_8BIT",
    "TILE_SMALL_MIN_M",
    "STREAM_KERNEL_M16_US",
    "stream_kernel_m16_us",
    "layer_min_m",
    "TILE_MAX_M",
    "TILE_SHAPES",
    "STREAM_K",
    "STREAM_CHUNK_US",
    "STREAM_SHAPES",
    "SMALL_STREAM_SHAPES",
    "FP4_SMALL_STREAM_FITS",
    "format_costs",
    "TileDispatch",
    "stream_workspace",
    "TilePlan",
    "tile_plan",
    "variant_shapes",
    "ideal_cluster_limits",
    "device_cluster_limits",
    "tile_supported",
    "tile_gemm",
]

#: Fewest tokens the tile kernel serves. From 17 its 32-token stream-K blocks beat the stream
#: kernel (three or four 8-column M tiles) and the 64-token blocks: int4 g128 at M=32 57.0 / 56.8 /
#: 26.0 / 23.1 us on 28672x8192 / 8192x28672 / 10240x8192 / 8192^2 against the 64-token plan's
#: 70.9 / 68.1 / 31.9 / 28.1, NVFP4 alike (H200, marlin-h200-2026-11-29-v39.json; NOTES.md v39);
#: the stream kernel took 92.3 / 85.1 / 44.7 / 28.6 us at M=32 before (-v30.json). Below 17 see
#: :func:`layer_min_m`.
TILE_MIN_M = 17
#: 8-bit codes keep the tile kernel from 25, where it was measured against their stream kernel
#: with 64-token blocks (their stream kernel at M = 17..24 is not measured against 32-token ones).
TILE_MIN_M_8BIT = 25
#: Fewest tokens the tile kernel serves on a layer of 4-bit codes whose M=16 plan (a 16-token
#: stream-K block) models faster than the stream kernel (:func:`layer_min_m`).
TILE_SMALL_MIN_M = 9
#: The stream kernel at M = 9..16 (two 8-column M tiles) by 4-bit format: a fixed time and a time
#: per 256-row x 64-channel unit of the busiest SM (us), fitted on the four benchmark layers (109
#: / 109 / 39 / 32 units an SM): int4 (pipeline 6) 53.3 / 55.1 / 23.2 / 20.5 us
#: (marlin-h200-2026-11-29-v39b.json; within 1.6%), NVFP4 (pipeline 5) 67.7 / 63.3 / 27.2 / 22.1
#: (-v39.json; within 3.5%).
STREAM_KERNEL_M16_US = {Format.INT4: (6.27, 0.4395), Format.FP4: (4.86, 0.557)}
#: From this many tokens on, decoding the weight once and multiplying with cuBLAS is faster: at
#: M=512 the two tie on 28672x8192 (561 vs 556 us), the tile kernel wins on 8192x28672 and
#: 8192x8192 by 10-13% and loses on 10240x8192 by 25%; at M=1024 decode + cuBLAS wins on all four.
TILE_MAX_M = 512
#: Launch variants of the tile kernel (the op's ``variant`` argument): 0 every warp copies and a
#: block-wide barrier per chunk; 1 warp-specialized (a producer warpgroup, mbarrier stage
#: handoff); 2 bulk producer (variant 1's consumers, a producer warpgroup moving each chunk with
#: bulk copies from the activation image of :mod:`kernel_core_marlin.x_image`, which the op
#: builds); 3 stream-K (variant 2's warps, one block per SM, each taking an equal share of all
#: the tiles' chunks; no clusters, split 1). The planner weighs the variants with entries in
#: :data:`CHUNK_US`.
TILE_VARIANTS = {0: "barrier", 1: "specialized", 2: "bulk", 3: "stream-K"}
#: The stream-K variant's number.
STREAM_K = 3
#: (bmx, rw) instances built, with the time one block of that shape takes per 64-channel chunk
#: when it has its SM to itself (us, H100, probe runs 2-3, barrier variant: the same at 32 or 132
#: blocks, so a per-SM cost, not a shared-bandwidth one).
TILE_SHAPES = {(64, 1): 0.50, (64, 2): 0.75, (128, 1): 0.70, (128, 2): 1.09, (256, 1): 1.07}
#: Per-chunk times of the warp-specialized variant (us, H100, v5 probe:
#: marlin-tile-v5-h100-2026-11-27.json ``chunk_us_fit``, fitted over int4 g128 and NVFP4 at
#: M = 64, 128, 256 on the four benchmark shapes). Against the barrier variant's refit from the
#: same run (0.461 / 0.813 / 0.722 / 1.194 / 1.112) it is 0-16% slower per chunk except 128x64
#: (2% faster); it also holds one block per SM where the barrier kernel's 64x128 holds two.
SPECIALIZED_CHUNK_US = {(64, 1): 0.51, (64, 2): 0.945, (128, 1): 0.707, (128, 2): 1.325,
                        (256, 1): 1.121}
#: Per-chunk times of the bulk-producer variant (us, H200, ``chunk_us_fit`` of the tile probe,
#: same fit, with the variant's own split overhead below): two-chunk stages (256 x 128: one) and
#: tensor-copied scale tables (marlin-tile-probe-h200-2026-11-29-v30.json, NOTES.md v30). Against
#: the barrier variant's refit from the same run (0.471 / 0.818 / 0.727 / 1.198 / 1.130) 26-39%
#: less per chunk.
BULK_CHUNK_US = {(64, 1): 0.350, (64, 2): 0.550, (128, 1): 0.442, (128, 2): 0.770,
                 (256, 1): 0.694}
#: Stream-K's own instances: 16 and 32 tokens x 256 and 384 rows (m64n16k16 / m64n32k16), for
#: M <= 32, where a 64-token block spends half or more of its tensor work on padding; 384 rows
#: spread a warp's per-chunk work (stage wait, scale words, descriptors, release) over three tiles.
SMALL_STREAM_SHAPES = [(16, 2), (32, 2), (16, 3), (32, 3)]
#: The (bmx, rw) instances of the stream-K variant: all of :data:`TILE_SHAPES` but 128 tokens x
#: 256 rows, where ptxas serializes the wgmmas for want of registers, and the small ones
#: (csrc/tile_launch.cuh, tile_instance_exists).
STREAM_SHAPES = [shape for shape in TILE_SHAPES if shape != (128, 2)] + SMALL_STREAM_SHAPES
#: Per-chunk times of the stream-K variant (us, H200, gpu/probe_stream_k.py
#: ``marlin-stream-k-probe-h200-2026-11-29-v33.json``: one and two whole tiles per block on all
#: 132 SMs run within 1% of the bulk variant; the slope between them, and for 128 x 256 (one tile
#: a block only) its time less the others' ~3.5 us intercept, over 128 chunks; NOTES.md v33). The
#: 64-token x 128-row instance is built, tested and measured on whole tiles only, not on shared
#: ones, so not planned. The 16- and 32-token blocks: the slope of the benchmark's int4 times at
#: M = 16 / 32 over the four layers' chunks a block (109 / 109 / 39 / 32;
#: marlin-h200-2026-11-29-v39.json), the image kernel and launch in the intercept; their 384-row
#: blocks alike (73 / 75 / 27 / 22 chunks a block; least squares, -v39b.json).
STREAM_CHUNK_US = {(64, 2): 0.538, (128, 1): 0.439, (256, 1): 0.690, (16, 2): 0.400,
                   (32, 2): 0.441, (16, 3): 0.547, (32, 3): 0.587}
#: Measured per-chunk times by (variant, bmx, rw): the candidates the planner weighs. A variant
#: joins when a GPU run has measured it (gpu/probe_tile.py writes these times). The barrier
#: variant keeps its run 2-3 times (the plans they give were measured); the v5 refit differs by
#: at most 10%.
CHUNK_US = {
    **{(0, bmx, rw): us for (bmx, rw), us in TILE_SHAPES.items()},
    **{(1, bmx, rw): us for (bmx, rw), us in SPECIALIZED_CHUNK_US.items()},
    **{(2, bmx, rw): us for (bmx, rw), us in BULK_CHUNK_US.items()},
    **{(STREAM_K, bmx, rw): us for (bmx, rw), us in STREAM_CHUNK_US.items()},
}
#: Most blocks of one cluster (the portable cluster size).
MAX_SPLIT = 8
#: Fixed cost of one block in chunks (ring fill, epilogue), and the extra cost of a cluster
#: reduction by variant; and how much slower a block runs when a second one shares its SM (64x128
#: blocks fit twice: 0.62 us per chunk each instead of 0.50). The bulk producer's blocks pay more
#: for a split (fitted on the run-3 probe: a mean error of the modelled times of 4.0% with 8 chunks
#: against 6.4% with the others' 2; its image pass, one per call, also weighs more on the shorter
#: blocks of a split).
_BLOCK_OVERHEAD_CHUNKS = 4
_SPLIT_OVERHEAD_CHUNKS = {0: 2, 1: 2, 2: 8}
_SHARED_SM_SLOWDOWN = 1.8
#: Fixed cost of a stream-K block in chunks by (bmx, rw): the ring fill and epilogue of any
#: block (~3.5 us, the probe's whole-tile intercept), the pieces of the (at most two) tiles it
#: shares stored and arrived on, and after its last chunk the sum of the tile its last piece
#: completed. Fitted on the same probe's benchmark layers (times / per-chunk time - chunks a
#: block): 17 / 24 chunks for 256 x 64 on 28672 / 10240 x 8192 at M=64, 22 / 25 for 128 x 128 at
#: M=128, 30 / 27 / 26 for 128 x 256 on 28672 / 10240 / 8192 x 8192 at M=256; the means here
#: (128 x 64, not measured on shared tiles, takes its row set's 256 x 64 value); 16 and 32 tokens:
#: the intercepts of their STREAM_CHUNK_US fits (8.3 / 8.8 us; 384 rows 9.2 / 11.7). Before the
#: outputs went out 16 bytes a lane (v32): 29 / 38 / 35.
_STREAM_OVERHEAD_CHUNKS = {(64, 1): 20, (64, 2): 20, (128, 1): 23, (256, 1): 28, (16, 2): 21,
                           (32, 2): 20, (16, 3): 17, (32, 3): 20}
#: The 16- and 32-token blocks on 4-bit float codes (NVFP4 measured; MXFP4 shares the decode): (us
#: a chunk, fixed cost in chunks), least squares over the same four layers and runs as int4's
#: (-v39b.json, within 2.1%). FP4's decode costs more a tile than int4's, and more so on 384-row
#: blocks (0.627 against 0.587 us a chunk at 32 tokens), so by int4's fits NVFP4 took 32 x 384 on
#: the tall layers at M=32 (58.96 / 60.95 us) where 32 x 256 ran 57.84 / 59.06 in the same rounds,
#: and the 16-token block on 8192^2 at M=16 (22.46 us) where its stream kernel ran 22.1 (-v39.json).
FP4_SMALL_STREAM_FITS = {(16, 2): (0.428, 22), (32, 2): (0.443, 23), (16, 3): (0.561, 20),
                         (32, 3): (0.627, 22)}


@dataclass(frozen=True)
class TilePlan:
    """A launch of the tile kernel and why it was chosen."""

    bmx: int
    rw: int
    split: int
    variant: int
    reason: str
    cost_us: float  # the cost model's time, the quantity the plan minimised


def tile_supported(device: torch.device) -> bool:
    """wgmma needs the sm_90a target: exactly compute capability 9.0 (H100, H200)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) == (9, 0)


#: Clusters of ``split`` blocks of variant ``variant`` and shape ``(bmx, rw)`` that fit on the
#: device at once, by ``(variant, bmx, rw, split)``.
ClusterLimits = Mapping[tuple[int, int, int, int], int]
#: Per-chunk time in us of one block by ``(variant, bmx, rw)`` (see :data:`CHUNK_US`).
ChunkTimes = Mapping[tuple[int, int, int], float]
#: Fixed cost of a stream-K block in chunks by (bmx, rw).
StreamOverheads = Mapping[tuple[int, int], int]


def variant_shapes(variant: int) -> list[tuple[int, int]]:
    """The (bmx, rw) instances the extension builds of ``variant``."""
    return STREAM_SHAPES if variant == STREAM_K else list(TILE_SHAPES)


def ideal_cluster_limits(sms: int) -> dict[tuple[int, int, int, int], int]:
    """One block per SM and no GPC boundaries: what a device reports at best (the measured
    limits, :func:`device_cluster_limits`, are lower for clusters of 4 and more)."""
    return {(variant, bmx, rw, split): sms // split for variant in TILE_VARIANTS
            for (bmx, rw) in variant_shapes(variant) for split in range(1, MAX_SPLIT + 1)}


def format_costs(fmt: int) -> tuple[ChunkTimes, StreamOverheads]:
    """The per-chunk times and stream-K fixed costs the planner weighs for codes of ``fmt``:
    the measured ones, with 4-bit float codes' own fits for the small stream-K blocks."""
    if fmt != Format.FP4:
        return CHUNK_US, _STREAM_OVERHEAD_CHUNKS
    chunk_us = dict(CHUNK_US)
    overheads = dict(_STREAM_OVERHEAD_CHUNKS)
    for (bmx, rw), (us, fixed) in FP4_SMALL_STREAM_FITS.items():
        chunk_us[(STREAM_K, bmx, rw)] = us
        overheads[(bmx, rw)] = fixed
    return chunk_us, overheads


def _waves_and_cost(m: int, n: int, chunks: int, shape: tuple[int, int, int], split: int,
                    limits: ClusterLimits, sms: int, chunk_us: ChunkTimes,
                    stream_overheads: StreamOverheads) -> tuple[int, float]:
    """Waves of clusters and the modelled time in us of ``shape = (variant, bmx, rw)``."""
    variant, bmx, rw = shape
    if variant == STREAM_K:
        units = math.ceil(n / (128 * rw)) * math.ceil(m / bmx) * chunks
        blocks = min(sms, units)
        waves = math.ceil(blocks / max(1, limits[(variant, bmx, rw, 1)]))
        per_block = math.ceil(units / blocks) + stream_overheads[(bmx, rw)]
        return waves, waves * per_block * chunk_us[shape]
    clusters = math.ceil(n / (128 * rw)) * math.ceil(m / bmx)
    fit = max(1, limits[(variant, bmx, rw, split)])
    waves = math.ceil(clusters / fit)
    per_block = math.ceil(chunks / split) + _BLOCK_OVERHEAD_CHUNKS
    if split > 1:
        per_block += _SPLIT_OVERHEAD_CHUNKS[variant]
    us = chunk_us[shape]
    if min(clusters, fit) * split > sms:  # some SMs hold two blocks
        us *= _SHARED_SM_SLOWDOWN
    return waves, waves * per_block * us


def tile_plan(m: int, n: int, chunks: int, limits: ClusterLimits, sms: int,
              chunk_us: ChunkTimes = CHUNK_US,
              stream_overheads: StreamOverheads = _STREAM_OVERHEAD_CHUNKS) -> TilePlan:
    """The cheapest (variant, bmx, rw, split) for ``m`` tokens, ``n`` weight rows and ``chunks``
    64-channel chunks of K, given how many clusters of each fit on the device at once, its SM
    count and the per-chunk times of the candidates (only measured ones by default; a format's
    own: :func:`format_costs`)."""
    if m < 1 or n < 1 or chunks < 1:
        raise ValueError(f"m, n and chunks must be positive, found {m}, {n}, {chunks}")
    unknown = sorted({shape[0] for shape in chunk_us} - set(TILE_VARIANTS))
    if unknown:
        raise ValueError(f"tile variants must be among {sorted(TILE_VARIANTS)}, found {unknown}")
    best: tuple[float, tuple[int, int, int], int, int] | None = None
    for shape in chunk_us:
        _, bmx, rw = shape
        if bmx > 64 and bmx // 2 >= m:  # a block twice as wide as M wastes half its wgmma
            continue
        splits = 1 if shape[0] == STREAM_K else min(MAX_SPLIT, chunks)  # stream-K: no clusters
        for split in range(1, splits + 1):
            waves, cost = _waves_and_cost(m, n, chunks, shape, split, limits, sms, chunk_us,
                                          stream_overheads)
            if best is None or cost < best[0]:
                best = (cost, shape, split, waves)
    if best is None:
        raise ValueError(f"no tile shape among {sorted(chunk_us)} serves m={m}")
    cost, (variant, bmx, rw), split, waves = best
    tiles = math.ceil(n / (128 * rw)) * math.ceil(m / bmx)
    if variant == STREAM_K:
        blocks = min(sms, tiles * chunks)
        reason = (f"{blocks} blocks sharing {tiles} tiles of {128 * rw} rows x {bmx} tokens x "
                  f"{chunks} chunks evenly ({math.ceil(tiles * chunks / blocks)} chunks each), "
                  f"stream-K kernel, {waves} wave(s): lowest modelled time ({cost:.0f} us)")
        return TilePlan(bmx, rw, split, variant, reason, cost)
    blocks = tiles * split
    reason = (f"{blocks} blocks of {128 * rw} rows x {bmx} tokens x {math.ceil(chunks / split)} "
              f"chunks in clusters of {split}, {TILE_VARIANTS[variant]} kernel, {waves} wave(s): "
              f"lowest modelled time ({cost:.0f} us)")
    return TilePlan(bmx, rw, split, variant, reason, cost)


def stream_kernel_m16_us(fmt: int, n: int, chunks: int, sms: int) -> float:
    """The stream kernel's modelled time at M = 9..16 on a layer of 4-bit format ``fmt``."""
    fixed, per_unit = STREAM_KERNEL_M16_US[fmt]
    return fixed + per_unit * math.ceil(math.ceil(n / 256) * chunks / sms)


def layer_min_m(fmt: int, n: int, chunks: int, limits: ClusterLimits, sms: int) -> int:
    """Fewest tokens the tile kernel serves on a layer: for 4-bit codes
    :data:`TILE_SMALL_MIN_M` where the plan at M=16 is one of stream-K's 16-token blocks and
    models faster than the format's stream kernel (:func:`stream_kernel_m16_us`; on the benchmark
    layers the tall ones, whose 384-row blocks beat it by 8-9%, v39b), else :data:`TILE_MIN_M`;
    :data:`TILE_MIN_M_8BIT` for 8-bit codes."""
    if fmt not in STREAM_KERNEL_M16_US:
        return TILE_MIN_M_8BIT
    plan = tile_plan(16, n, chunks, limits, sms, *format_costs(fmt))
    small = plan.variant == STREAM_K and (plan.bmx, plan.rw) in SMALL_STREAM_SHAPES
    if small and plan.cost_us < stream_kernel_m16_us(fmt, n, chunks, sms):
        return TILE_SMALL_MIN_M
    return TILE_MIN_M


#: fp32 partial sums in one stream-K workspace slot: the largest block output, 128 rw x bmx.
_STREAM_SLOT_FLOATS = max(128 * rw * bmx for (bmx, rw) in STREAM_SHAPES)


def stream_workspace(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The stream-K variant's workspace on ``device``: fp32 partial sums, one slot per SM (a
    block stores at most one piece of a tile, its first segment's), and one int32 arrival counter
    per SM, zero between launches (the block summing a tile resets it).

    Allocated once per device, at the first layer's processing (kernel_core.workspace), and shared
    by every layer (SMs x 32768 floats: 17.3 MB on an H100). Stream-K launches on one device must
    not run concurrently on two streams, nor beside other kernels: the block summing a tile waits
    for the others' pieces, so every block of the grid (one per SM) must be running at once."""

    def allocate(d: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        sms = torch.cuda.get_device_properties(d).multi_processor_count
        return (torch.empty(sms * _STREAM_SLOT_FLOATS, dtype=torch.float32, device=d),
                torch.zeros(sms, dtype=torch.int32, device=d))

    return device_workspace("kernel_core_marlin.stream_k", device, allocate)


@functools.cache
def device_cluster_limits(device: torch.device, fmt: int) -> ClusterLimits:
    """The device's answer (cudaOccupancyMaxActiveClusters) for every variant, shape and split.

    Asked once per device and format (a query per variant, shape and split), not once per layer:
    the answer depends only on the compiled kernels, and a model has hundreds of layers of one
    format."""
    module = ops.extension(device)
    limits = {}
    with torch.cuda.device(device):
        for variant in TILE_VARIANTS:
            for (bmx, rw) in variant_shapes(variant):
                for split in range(1, MAX_SPLIT + 1):
                    found = module.tile_clusters(fmt, bmx, rw, split, variant)
                    limits[(variant, bmx, rw, split)] = max(0, found)
    return limits


class TileDispatch:
    """The tile kernel for one processed layer: the device's cluster limits, read once at load
    (outside any graph capture), and the plan of every M seen (planning runs in Python)."""

    def __init__(self, limits: ClusterLimits, sms: int, n: int, chunks: int,
                 chunk_us: ChunkTimes = CHUNK_US, min_m: int = TILE_MIN_M,
                 stream_overheads: StreamOverheads = _STREAM_OVERHEAD_CHUNKS) -> None:
        self.limits, self.sms, self.n, self.chunks = dict(limits), sms, n, chunks
        self.chunk_us = dict(chunk_us)
        self.stream_overheads = dict(stream_overheads)
        self.min_m = min_m
        self._plans: dict[int, TilePlan] = {}

    @classmethod
    def for_device(cls, device: torch.device, fmt: int, n: int, chunks: int) -> TileDispatch | None:
        """None where the tile kernel cannot run (not an SM90 device)."""
        if not tile_supported(device):
            return None
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        stream_workspace(device)  # at load: never inside a graph capture
        limits = device_cluster_limits(device, fmt)
        chunk_us, overheads = format_costs(fmt)
        return cls(limits, sms, n, chunks, chunk_us, layer_min_m(fmt, n, chunks, limits, sms),
                   overheads)

    def serves(self, m: int) -> bool:
        return self.min_m <= m < TILE_MAX_M

    def plan(self, m: int) -> TilePlan:
        found = self._plans.get(m)
        if found is None:
            found = self._plans[m] = tile_plan(m, self.n, self.chunks, self.limits, self.sms,
                                               self.chunk_us, self.stream_overheads)
        return found


@torch.library.custom_op("kernel_core_marlin::tile_gemm", mutates_args=())
def tile_gemm(
    x: torch.Tensor,
    qweight: torch.Tensor,
    gscale: torch.Tensor,
    zeros: torch.Tensor | None,
    gtab: torch.Tensor | None,
    chan: torch.Tensor | None,
    bias: torch.Tensor | None,
    fmt: int,
    n: int,
    group_size: int,
    zconst: int,
    bmx: int,
    rw: int,
    split: int,
    variant: int,
) -> torch.Tensor:
    """``x [M, K]`` (16-bit, contiguous, SM90) times the packed weight: ``[M, n]`` in x's dtype.
    Variants 2 and 3 read the activation image (layout: :mod:`kernel_core_marlin.x_image`), built
    here from x by the extension's image kernel, and are launched as its programmatic dependents
    when :data:`ops.LAUNCH_WITH_PDL` is on (their setup and first weight copies overlap the
    image's last blocks); variant 3 also reads the device's :func:`stream_workspace` (left as it
    found it, so not a mutated argument)."""
    if x.data_ptr() % 4:  # the kernel copies activations a 4-byte channel pair at a time
        x = x.clone()
    out = torch.empty((x.shape[0], n), dtype=x.dtype, device=x.device)
    empty = x.new_empty(0)
    x_img = empty
    partials, arrivals = stream_workspace(x.device) if variant == STREAM_K else (empty, empty)
    with torch.cuda.device(x.device):
        stream = torch.cuda.current_stream(x.device).cuda_stream
        if variant >= 2:
            x_img = torch.empty((qweight.shape[1], (x.shape[0] + 7) // 8 * 8, 64), dtype=x.dtype,
                                device=x.device)
            ops.extension(x.device).activation_image(x, x_img, stream)
        ops.extension(x.device).tile_gemm(
            x, x_img, qweight, gscale, zeros if zeros is not None else empty,
            gtab if gtab is not None else empty, chan if chan is not None else empty,
            bias if bias is not None else empty, out, partials, arrivals, fmt, group_size, zconst,
            bmx, rw, split, variant, ops.LAUNCH_WITH_PDL and variant >= 2, stream,
        )
    return out


@tile_gemm.register_fake
def _tile_gemm_fake(x, qweight, gscale, zeros, gtab, chan, bias, fmt, n, group_size, zconst,
                    bmx, rw, split, variant):
    return x.new_empty((x.shape[0], n))
