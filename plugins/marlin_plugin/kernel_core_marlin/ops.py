"""The plugin's GPU ops: ``torch.library`` custom ops over the JIT-built CUDA extension.

``kernel_core_marlin::gemm`` runs the stream kernel (small and medium M); ``kernel_core_marlin::
dequantize`` decodes the packed weight into a 16-bit matrix for the large-M path, where cuBLAS on
the decoded weight beats re-streaming the codes once per 64 rows. Both allocate only their output
(through the caching allocator), never sync and never read device data on the host, so they
capture in CUDA graphs and trace under ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch

from kernel_core_marlin.prepare import Format

__all__ = [
    "extension",
    "gemm",
    "dequantize",
    "launch_config",
    "bulk_pipeline_available",
    "launch_with_pdl",
    "BULK_MAX_M",
    "LAUNCH_WITH_PDL",
    "PDL_PIPELINES",
    "CSRC",
    "SOURCES",
]

CSRC = Path(__file__).parent / "csrc"
SOURCES = ("bindings.cpp", "gemm_fp16.cu", "gemm_bf16.cu", "tile_fp16.cu", "tile_bf16.cu")
_EXTENSIONS: dict[str, ModuleType] = {}


def _arch_of(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}" + ("a" if (major, minor) == (9, 0) else "")


def extension(device: torch.device | None = None) -> ModuleType:
    """Build (first use, announced on stderr) or load the CUDA extension for this device."""
    device = device or torch.device("cuda", torch.cuda.current_device())
    arch = _arch_of(device)
    if arch not in _EXTENSIONS:
        from kernel_core.jit import load_extension

        _EXTENSIONS[arch] = load_extension(
            "kernel_core_marlin_ext",
            [CSRC / name for name in SOURCES],
            arch=arch,
            extra_cuda_cflags=["-O3", "-std=c++17"],
            extra_cflags=["-O2"],
        )
    return _EXTENSIONS[arch]


#: 16-row tiles per warp of the register pipeline for (integer codes?, 8-column M tiles): the
#: fastest variant measured on an H100 (benchmarks/results/marlin-h100-2026-11-22.json), 4-bit
#: formats; FP codes at four M tiles (M = 17..32) take 2, which beat 1 on all four benchmark
#: shapes for NVFP4 at M = 32 by 14-22% (marlin-h100-2026-11-27-v6.json: 99.4 / 91.1 / 47.2 /
#: 30.7 us against 128.2 / 116.8 / 54.9 / 38.1). 8-bit formats (two 16-byte loads per lane and
#: tile already) use one tile per warp (not measured).
_ROWS_PER_WARP = {
    (True, 2): 1, (True, 4): 2, (True, 8): 2,
    (False, 2): 2, (False, 4): 2, (False, 8): 1,
}
#: Consumer warps of the bulk pipeline (each decodes one 64-channel chunk of every row tile of a
#: stage; a power of two up to 8; 16 only with the flat consumer at M <= 8, which lost to 8 on
#: 28672 x 8192 for int4 and on 8192 x 8192 for NVFP4, so no default takes it).
_BULK_CONSUMERS = 8
#: Pipeline 6 at M <= 8 takes 16 consumer warps (its 96-register instance: passes of one 4-tile
#: group) where the widest block holds exactly one whole tile group (4 row tiles, as measured)
#: and K is at least this long: twice the warps per SM sub-partition cover the consumers'
#: fixed-latency waits. H200, bulk probe, M=1: 8192 x 28672 39.3 us against 43.3 with 8 warps,
#: but 8192 x 8192 17.8 against 17.5 (a quarter of the fills, each twice the size: the first one
#: waited for is what the short K pays; plugins/marlin_plugin/NOTES.md v28).
_WIDE_BULK_MIN_K = 16384
#: Code formats whose bulk launches take the flat consumer (no per-chunk branches for zero points
#: or activations) with an exact last tile group (its branch runs only where a pass of the widest
#: block ends in a partial group) on a plan that may take a 2-stage ring with 2 chunks per warp
#: and stage: pipeline 5 at every bulk M. Each step won on the H100 where it changes anything:
#: the flat consumer 9-23% over the default one (int4 M = 1, 4), the exact last group up to 22%
#: where passes end in a partial group, the 2-stage plan 20-28% at M = 9..16 on the shapes whose
#: plan it changes. At M = 1 pipeline 5 lost to 4 (the same without the 2-stage plan) by 0.0-1.2
#: us on the int4 shapes with plain launches (marlin-h100-2026-11-27-v10.json), and beat it in
#: 22 of 24 comparisons once the bulk launches went out with PDL (int4 by 0.2-1.1 us on every
#: shape in three runs, NVFP4 28672 x 8192 by 5-8 us; -v13-run1..3.json). Numbers and files:
#: NOTES.md v5-v13. 8-bit codes keep the default consumer (pipeline 2): not measured, and ptxas
#: reports more spills for their flat instances. Act-order layers run the default consumer inside
#: the same launch either way.
_FLAT_FORMATS = frozenset({Format.INT4, Format.FP4})
#: Largest M the launch configuration sends to the bulk pipeline, per code format. The kernel
#: serves up to 32 (four 8-column M tiles), but from 17 on its passes shrink to 4 row tiles and
#: re-read the activations per pass: on an H100 it lost to the register pipeline at M = 32 on
#: every benchmark shape (benchmarks/results/marlin-stream-h100-2026-11-27.json). NVFP4 at
#: M = 9..16 joined with pipeline 5: 82.8 / 73.6 / 30.4 / 27.6 us against the register
#: pipeline's 89.4 / 79.2 / 42.1 / 26.7 (the four benchmark shapes; two runs agree within 1 us,
#: marlin-h100-2026-11-27-final.json and marlin-h100-2026-11-27-v8.json; as the default in
#: -v9.json: 83.2 / 73.2 / 31.1 / 27.2 us): 7-28% faster on three shapes, 3% slower on
#: 8192 x 8192. FP8 codes are not measured past 8; INT8 follows INT4.
BULK_MAX_M = {Format.INT4: 16, Format.INT8: 16, Format.FP4: 16, Format.FP8: 8}


#: The pipelines whose kernels can be launched as programmatic dependents (``gemm(pdl=True)``):
#: the bulk ones, whose producer warp requests the first ring fill's codes and scales before it
#: waits for the kernel before it, and the activations after (csrc/stream_gemm.cuh,
#: ``bulk_produce``).
PDL_PIPELINES = frozenset({2, 3, 4, 5, 6})
#: Whether :meth:`apply_weights` launches the bulk pipelines as programmatic dependents.
LAUNCH_WITH_PDL = True


def launch_with_pdl(pipeline: int) -> bool:
    """Whether a launch of ``pipeline`` goes out as a programmatic dependent: the bulk pipelines
    when :data:`LAUNCH_WITH_PDL` is on. Such a launch overlaps the start of the GEMM (its block
    scheduling and its first weight requests) with the end of the kernel before it; it still
    reads the activations and writes the output only after that kernel has completed."""
    return LAUNCH_WITH_PDL and pipeline in PDL_PIPELINES


def bulk_pipeline_available(device: torch.device) -> bool:
    """Whether ``device`` runs the bulk pipeline (pipeline 2): bulk copies and mbarrier waits with
    transaction counts need compute capability 9.0 or newer."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


def scales_per_chunk(fmt: int, group_size: int, act_order: bool) -> bool:
    """Whether every 64-channel chunk of a layer lies in one scale group of each row, so that
    pipeline 6 may multiply the scale into the chunk's mma sums: 4-bit integer codes without
    act-order, one group per row or groups a multiple of 64 channels."""
    return fmt == Format.INT4 and not act_order and group_size > 0 and group_size % 64 == 0


def launch_config(
    m: int, fmt: int, bulk: bool = False, chunk_scales: bool = False, *, n: int = 0, k: int = 0,
    sms: int = 0,
) -> tuple[int, int, int, int, int]:
    """(8-column M tiles, 16-row tiles per warp, warps along N, warps along K, pipeline) for M
    rows; ``bulk``: the device runs the bulk pipeline (:func:`bulk_pipeline_available`);
    ``chunk_scales``: the layer's scale groups hold whole chunks (:func:`scales_per_chunk`);
    ``n``, ``k``, ``sms``: the layer's shape and the device's SM count, where known (pipeline 6
    then takes 16 consumer warps on layers of 4 row tiles per SM and long K,
    :data:`_WIDE_BULK_MIN_K`).

    M <= BULK_MAX_M[fmt] with ``bulk``: the bulk pipeline (persistent blocks, one producer warp
    streaming contiguous weight segments into a shared-memory ring, eight consumer warps); the
    4-bit formats (:data:`_FLAT_FORMATS`) with the flat consumer and an exact last tile group on
    a plan that may take a 2-stage ring (pipeline 5), and where ``chunk_scales`` holds the same
    with the scales applied after each chunk's mma (pipeline 6: 16 fewer ALU instructions per
    tile and chunk for the consumers, which set the pace at M <= 16). Why, and the history of
    the choice: :data:`_FLAT_FORMATS` and plugins/marlin_plugin/NOTES.md (v4-v15).
    Otherwise M <= 8: the cp.async ring (pipeline 1) with 4 warps per block, measured 1.2x faster
    than the register pipeline for int4 and NVFP4 on an H100
    (marlin-h100-2026-11-22-pipelines.json). Larger M: the register pipeline with all eight warps
    splitting K (the ring lost there 2-5x while its activation copies bypassed L1). M up to 64 per
    block, larger M in more blocks.
    """
    mt = 1 if m <= 8 else 2 if m <= 16 else 4 if m <= 32 else 8
    if bulk and m <= BULK_MAX_M[fmt]:
        if fmt not in _FLAT_FORMATS:
            return mt, 1, 1, _BULK_CONSUMERS, 2
        if not (chunk_scales and fmt == Format.INT4):
            return mt, 1, 1, _BULK_CONSUMERS, 5
        tiles = -(-n // 16)
        widest = -(-tiles // min(tiles, sms)) if tiles and sms else 0
        wide = mt == 1 and widest == 4 and k >= _WIDE_BULK_MIN_K
        return mt, 1, 1, 16 if wide else _BULK_CONSUMERS, 6
    eight_bit = Format.BITS[fmt] == 8
    if mt == 1:
        return 1, 1 if eight_bit else 2, 1, 4, 1
    integer = fmt in (Format.INT4, Format.INT8)
    rows = 1 if eight_bit else _ROWS_PER_WARP[(integer, mt)]
    return mt, rows, 1, 8, 0


def _or_empty(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return t if t is not None else like.new_empty(0)


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


@torch.library.custom_op("kernel_core_marlin::gemm", mutates_args=())
def gemm(
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
    mt: int,
    rows: int,
    wn: int,
    wk: int,
    pipeline: int,
    pdl: bool = False,
) -> torch.Tensor:
    """``x [M, K]`` (16-bit, contiguous) times the packed weight: ``[M, n]`` in x's dtype.

    ``pdl``: launch as a programmatic dependent of the kernel before it on the stream (bulk
    pipelines only, see :func:`launch_with_pdl`); the launch is refused with any other pipeline.
    """
    if x.data_ptr() % 16:  # a view at an odd offset: the kernel loads 16 bytes at a time
        x = x.clone()
    out = torch.empty((x.shape[0], n), dtype=x.dtype, device=x.device)
    with torch.cuda.device(x.device):
        extension(x.device).gemm(
            x, qweight, gscale, _or_empty(zeros, x), _or_empty(gtab, x), _or_empty(chan, x),
            _or_empty(bias, x), out, fmt, group_size, zconst, mt, rows, wn, wk, pipeline, pdl,
            _stream(x.device),
        )
    return out


@gemm.register_fake
def _gemm_fake(x, qweight, gscale, zeros, gtab, chan, bias, fmt, n, group_size, zconst, mt,
               rows, wn, wk, pipeline, pdl=False):
    return x.new_empty((x.shape[0], n))


@torch.library.custom_op("kernel_core_marlin::dequantize", mutates_args=())
def dequantize(
    qweight: torch.Tensor,
    gscale: torch.Tensor,
    zeros: torch.Tensor | None,
    gtab: torch.Tensor | None,
    chan: torch.Tensor | None,
    fmt: int,
    n: int,
    group_size: int,
    zconst: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The packed weight decoded to ``[n, C * 64]`` in ``dtype`` (times the per-row multiplier)."""
    out = torch.empty((n, qweight.shape[1] * 64), dtype=dtype, device=qweight.device)
    with torch.cuda.device(qweight.device):
        extension(qweight.device).dequantize(
            qweight, gscale, _or_empty(zeros, qweight), _or_empty(gtab, qweight),
            _or_empty(chan, qweight), out, fmt, group_size, zconst, _stream(qweight.device),
        )
    return out


@dequantize.register_fake
def _dequantize_fake(qweight, gscale, zeros, gtab, chan, fmt, n, group_size, zconst, dtype):
    return qweight.new_empty((n, qweight.shape[1] * 64), dtype=dtype)
