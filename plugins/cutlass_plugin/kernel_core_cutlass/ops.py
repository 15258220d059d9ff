"""The CUTLASS GEMMs as ``kernel_core_cutlass::`` custom ops, and the JIT build behind them.

The extension is built on first use through :func:`kernel_core.jit.load_extension` (cached on
disk by source and device, announced on stderr); :func:`build` triggers it ahead of time. The
tile configuration is chosen per call from M by :mod:`kernel_core_cutlass.tiles`.

Every op is registered with :func:`custom_op` from a plain function; :func:`call` runs that
function directly in eager mode (the torch.library dispatcher costs several microseconds of host
time per call) and the op itself while torch.compile traces.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from kernel_core.jit import load_extension
from kernel_core.workspace import device_workspace
from kernel_core_cutlass.tiles import (
    BlockTileConfig,
    TileConfig,
    TileOrder,
    block_scaled_mm_order,
    block_scaled_mm_tile,
    scaled_mm_order,
    scaled_mm_tile,
)

__all__ = [
    "CI_SOURCES",
    "CSRC",
    "SOURCES",
    "block_scaled_mm",
    "build",
    "call",
    "custom_op",
    "cutlass_include_dirs",
    "scaled_mm",
    "toolchain_problem",
    "workspace_for",
]

CSRC = Path(__file__).parent / "csrc"
#: The W8A8 translation units: (operands, output, tile group), see csrc/scaled_mm_api.h.
_SCALED_UNITS = tuple(
    CSRC / f"scaled_mm_{operands}_{out}_{group}.cu"
    for operands in ("fp8", "int8")
    for out in ("bf16", "f16")
    for group in ("small_m", "mid_m", "large_m", "cluster_n")
)
#: The block-scaled units: (output, block tile group), see csrc/scaled_mm_api.h.
_BLOCK_UNITS = tuple(
    CSRC / f"fp8_block_scaled_mm_{out}_{group}.cu" for out in ("bf16", "f16") for group in ("wide", "narrow")
)
#: The binding first, then 20 CUTLASS units of two to four kernels each, so ninja builds them in
#: parallel (MAX_JOBS) on a machine with as many cores.
SOURCES = (CSRC / "bindings.cpp", *_SCALED_UNITS, *_BLOCK_UNITS)
#: What CI compiles (2 cores, a time budget): the binding, every tile template once (fp8 -> bf16)
#: and the int8 and block-scaled mainloops once each. The other units instantiate the same
#: templates with another output or operand type; they are compiled by the JIT build on the GPU.
CI_SOURCES = (
    CSRC / "bindings.cpp",
    *(unit for unit in _SCALED_UNITS if unit.name.startswith("scaled_mm_fp8_bf16_")),
    CSRC / "scaled_mm_int8_bf16_large_m.cu",
    *(unit for unit in _BLOCK_UNITS if unit.name.startswith("fp8_block_scaled_mm_bf16_")),
)
#: Flags of every CUTLASS translation unit besides torch's own (which pick the C++ standard).
NVCC_FLAGS = ("-O3", "--expt-relaxed-constexpr", "-DNDEBUG")
#: Bytes of the per-device workspace shared by every layer: the stream-K tiles keep partial
#: accumulator tiles (64 KiB each) and their flags there; the data-parallel tiles need none. The
#: C++ side refuses a GEMM that would need more than this.
WORKSPACE_BYTES = 32 << 20
#: Launch the W8A8 GEMMs as programmatic dependents of the quantizer before them: the kernels of
#: the mid-M and cluster-N units are compiled with CUTLASS's waits, the decode tiles of the
#: small-M unit (M <= 64) wait themselves, after requesting WEIGHT_LEAD_STAGES weight tiles (the
#: kernel before must therefore not write the weight); the others (large M: stream-K; the swept
#: 128-deep swap tiles) launch plainly whatever is asked (csrc/scaled_mm_sm90.cuh,
#: WeightFirstMainloop and launch()).
LAUNCH_WITH_PDL = True
#: Weight stages the decode tiles request before waiting for the quantizer (0 none, -1 the whole
#: ring), read when a GEMM is launched. H200, NOTES.md v12 / v12b: one stage ahead 0.07-0.9 us
#: under waiting first at every M <= 64 point of the benchmark, two within +-0.3 us of one, the
#: whole ring 0.4-0.7 us slower than one on 8192 x 8192 (its requests hold back the quantizer's).
WEIGHT_LEAD_STAGES = 1
#: ... and only up to this M. Measured on an H100 (NOTES.md v3): up to M=128 (the swap-AB tiles and
#: the 64x128 cluster-2x1 tile) the overlap took 1.0-1.4 us off each apply; at M=256 and 1024 the
#: persistent pingpong tiles without a cluster (64x128, 64x256) ran 20-70% slower when launched
#: this way (cause not found), so larger M launches plainly.
PDL_MAX_M = 128
_EXTENSION_NAME = "kernel_core_cutlass_sm90"


def cutlass_include_dirs() -> tuple[Path, Path] | None:
    """The CUTLASS headers shipped inside the ``nvidia-cutlass`` wheel, or None if absent."""
    spec = importlib.util.find_spec("cutlass_library")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "source"
    dirs = (root / "include", root / "tools" / "util" / "include")
    if not (dirs[0] / "cutlass" / "cutlass.h").is_file():
        return None
    return dirs


def _nvcc() -> str | None:
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME and (Path(CUDA_HOME) / "bin" / "nvcc").is_file():
        return str(Path(CUDA_HOME) / "bin" / "nvcc")
    return shutil.which("nvcc")


def toolchain_problem() -> str | None:
    """Why the extension cannot be built here (None: it can)."""
    if _nvcc() is None:
        return "nvcc not found (set CUDA_HOME or put nvcc on PATH); the CUTLASS kernels are built just in time"
    if cutlass_include_dirs() is None:
        return "CUTLASS headers not found: install the nvidia-cutlass wheel (pip install nvidia-cutlass)"
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (the activation quantizers are Triton kernels)"
    return None


@functools.cache
def build() -> ModuleType:
    """Build (first use on this source and device) and import the extension."""
    problem = toolchain_problem()
    if problem:
        raise RuntimeError(problem)
    include, util = cutlass_include_dirs()  # type: ignore[misc]
    return load_extension(
        _EXTENSION_NAME,
        SOURCES,
        arch="sm_90a",
        extra_cuda_cflags=NVCC_FLAGS,
        extra_cflags=("-O3",),
        extra_include_paths=(str(CSRC), str(include), str(util)),
    )


def workspace_for(device: torch.device) -> torch.Tensor:
    """The one workspace of ``device``, shared by all layers (allocated on first request, which
    the kernels make when processing a layer)."""
    return device_workspace(
        "kernel_core_cutlass", device,
        lambda d: torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=d))


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


_EAGER: dict[Any, Callable[..., Any]] = {}


def custom_op(name: str, impl: Callable[..., Any]) -> Any:
    """``impl`` as the torch.library custom op ``name`` (no mutated arguments), remembered so that
    :func:`call` can skip the dispatcher in eager mode."""
    op = torch.library.custom_op(name, impl, mutates_args=())
    _EAGER[op] = impl
    return op


def call(op: Any, *args: Any) -> Any:
    """``op(*args)``: traced as the op under torch.compile, its Python implementation otherwise."""
    if torch.compiler.is_compiling():
        return op(*args)
    return _EAGER[op](*args)


def _stream(device_index: int) -> int:
    """The current CUDA stream of the device, as the integer the binding takes."""
    return torch._C._cuda_getCurrentRawStream(device_index)


def _order_args(chosen: TileOrder, raster: int, swizzle: int, splits: int) -> tuple[int, int, int]:
    """The binding's (raster, swizzle, splits): each argument below 0 takes the heuristic's value."""
    return (int(chosen.raster) if raster < 0 else raster,
            chosen.swizzle if swizzle < 0 else swizzle,
            chosen.splits if splits < 0 else splits)


def _check_activations(x: torch.Tensor) -> None:
    """Refuse what no GEMM here runs, before any launch: x must be (tokens, K) with K > 0 (the
    decode tiles order their token-scale reads after the quantizer through their first k-tile)."""
    if x.dim() != 2 or x.shape[1] == 0:
        raise ValueError(f"x: expected a 2-D (tokens, K) tensor with K > 0, found shape {list(x.shape)}")


def _scaled_mm(
    x: torch.Tensor,
    w: torch.Tensor,
    token_scale: torch.Tensor,
    channel_scale: torch.Tensor,
    token_zp_neg: torch.Tensor | None,
    channel_colsum: torch.Tensor | None,
    bias: torch.Tensor | None,
    workspace: torch.Tensor,
    out_dtype: torch.dtype,
    tile: int = -1,
    pdl: bool = LAUNCH_WITH_PDL,
    raster: int = -1,
    swizzle: int = -1,
    splits: int = -1,
) -> torch.Tensor:
    """``token_scale[m] * channel_scale[n] * (x_q @ w_q^T - zp[m] * colsum[n]) + bias[n]``.

    ``x`` (M, K) and ``w`` (N, K), both float8_e4m3fn or both int8; scales fp32 with 1 or M/N
    elements; ``token_zp_neg`` (-zero point, fp32, 1 or M elements) only for asymmetric int8.
    ``tile=-1`` lets :func:`~kernel_core_cutlass.tiles.scaled_mm_tile` choose; ``pdl`` launches
    the GEMM as a programmatic dependent of the kernel before it when M <= ``PDL_MAX_M`` (that
    kernel may write ``x`` and the scales, not ``w``: see ``LAUNCH_WITH_PDL``).
    ``raster`` / ``swizzle`` / ``splits``: the tile scheduler's arguments (``tiles.TileOrder``);
    -1 takes :func:`~kernel_core_cutlass.tiles.scaled_mm_order`'s value.
    """
    _check_activations(x)
    m, n = x.shape[0], w.shape[0]
    out = torch.empty((m, n), dtype=out_dtype, device=x.device)
    if m == 0:
        return out
    index = x.get_device()
    sm_count = _sm_count(index)
    if tile < 0:
        tile = int(scaled_mm_tile(m, n, x.shape[1], sm_count))
    order = _order_args(scaled_mm_order(m, n, x.shape[1], TileConfig(tile)), raster, swizzle, splits)
    build().scaled_mm(
        out, x, w, token_scale, channel_scale, token_zp_neg, channel_colsum, bias, workspace,
        tile, sm_count, _stream(index), pdl and m <= PDL_MAX_M, WEIGHT_LEAD_STAGES, *order,
    )
    return out


scaled_mm = custom_op("kernel_core_cutlass::scaled_mm", _scaled_mm)


@scaled_mm.register_fake
def _(x, w, token_scale, channel_scale, token_zp_neg, channel_colsum, bias, workspace, out_dtype,
      tile=-1, pdl=LAUNCH_WITH_PDL, raster=-1, swizzle=-1, splits=-1):
    return x.new_empty((x.shape[0], w.shape[0]), dtype=out_dtype)


def _block_scaled_mm(
    x: torch.Tensor,
    w: torch.Tensor,
    x_scale: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    workspace: torch.Tensor,
    out_dtype: torch.dtype,
    tile: int = -1,
    raster: int = -1,
    swizzle: int = -1,
    splits: int = -1,
    w_scale_n64: torch.Tensor | None = None,
) -> torch.Tensor:
    """``out[m, n] = sum_j x_scale[j, m] * w_scale[j, n // 128] * (x[m, blk j] . w[n, blk j])``
    (+ bias). ``x_scale`` is [K/128, m_pad] and ``w_scale`` [K/128, ceil(N/128)], both MN-major.
    ``raster`` / ``swizzle`` / ``splits`` as for :func:`_scaled_mm`
    (:func:`~kernel_core_cutlass.tiles.block_scaled_mm_order`'s value for -1). ``w_scale_n64``:
    the same scales per 64 rows, [K/128, ceil(N/64)], read by the tiles 64 wide in N."""
    _check_activations(x)
    m, n = x.shape[0], w.shape[0]
    out = torch.empty((m, n), dtype=out_dtype, device=x.device)
    if m == 0:
        return out
    index = x.get_device()
    sm_count = _sm_count(index)
    if tile < 0:
        tile = int(block_scaled_mm_tile(m, n, sm_count))
    config = BlockTileConfig(tile)
    order = _order_args(block_scaled_mm_order(m, n, config), raster, swizzle, splits)
    if config.weight_scale_rows == 64:
        if w_scale_n64 is None:
            raise ValueError(f"block tile {config.name} reads the weight scales per 64 rows: "
                             "expected w_scale_n64 [K/128, ceil(N/64)], found None")
        w_scale = w_scale_n64
    build().block_scaled_mm(
        out, x, w, x_scale, w_scale, bias, workspace, tile, sm_count, _stream(index), *order,
    )
    return out


block_scaled_mm = custom_op("kernel_core_cutlass::block_scaled_mm", _block_scaled_mm)


@block_scaled_mm.register_fake
def _(x, w, x_scale, w_scale, bias, workspace, out_dtype, tile=-1, raster=-1, swizzle=-1, splits=-1,
      w_scale_n64=None):
    return x.new_empty((x.shape[0], w.shape[0]), dtype=out_dtype)
