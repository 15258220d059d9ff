"""Activation quantization on the GPU (Triton), each a ``kernel_core_cutlass::`` custom op.

The formulas are those of ``kernel_core.formats`` (the reference): scales are decode multipliers,
codes are ``x / scale`` (FP8: clamped to +-448 then cast with round-to-nearest-even; int8:
rounded half-to-even, plus the zero point, saturated). Buffers are allocated per call by the
caching allocator and dropped when the GEMM has read them: nothing is kept between calls.

A row of up to :data:`ONE_PASS_MAX_K` values is read once and kept in registers (one launch, one
read of ``x``); at few rows it is split over several programs (:func:`_row_parts`). Each kernel
the GEMM follows starts with ``gdc_launch_dependents``: the GEMM, launched as a programmatic
dependent (``ops.LAUNCH_WITH_PDL``), is then scheduled while the
quantizer runs and waits inside for its results (no effect when the GEMM is launched plainly).

The per-token quantizers also take the weight the GEMM will read: up to :data:`PREFETCH_MAX_M`
tokens (decode: the GEMM only streams the weight) extra programs of the same launch prefetch
the first bytes of every weight row into L2 (``prefetch.global.L2``, no register or memory
result), so HBM streams the weight while the quantizer runs and the GEMM waits for it.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice
from triton.language.extra.cuda import gdc_launch_dependents as _gdc_launch_dependents

from kernel_core.formats.fp8 import FP8_GROUP_AMAX_FLOOR, FP8_MIN_SCALE
from kernel_core.formats.int8 import INT8_AMAX_FLOOR
from kernel_core_cutlass.ops import custom_op

__all__ = [
    "GROUP_SCALE_ROW_ALIGN",
    "ONE_PASS_MAX_K",
    "PREFETCH_BYTES",
    "PREFETCH_DECODE_BYTES",
    "PREFETCH_DECODE_MAX_M",
    "PREFETCH_MAX_M",
    "prefetch_bytes",
    "quantize_fp8_per_group",
    "quantize_fp8_per_tensor",
    "quantize_fp8_per_token",
    "quantize_fp8_static",
    "quantize_int8_per_token",
    "quantize_int8_static",
]

#: The per-group scales are stored ``[K/128, m_pad]`` with ``m_pad`` a multiple of this, so each
#: row of scales is 16-byte aligned for the GEMM's scale TMA.
GROUP_SCALE_ROW_ALIGN = 4
#: Rows up to this many values are quantized from registers after a single read; longer rows
#: are read twice in chunks of :data:`_CHUNK` (range, then codes; the second read hits L2).
ONE_PASS_MAX_K = 32768
_CHUNK = 4096
#: Weight prefetch by the per-token quantizers: up to this M, this many bytes in total, spread
#: evenly over the weight's rows from their start (the K-steps every GEMM CTA loads first), in
#: 128-byte lines, _PREFETCH_LINES per extra program. 8 MiB is about what HBM delivers in the
#: 2-3 us between the quantizer's start and the GEMM's first load at M <= 64 (H100, NOTES.md v3).
PREFETCH_MAX_M = 64
PREFETCH_BYTES = 8 << 20
#: ... and this many up to PREFETCH_DECODE_MAX_M tokens. 16 MiB against 8 MiB on 8192 x 8192
#: (bf16 in, H100, NOTES.md v4-final and v6; ratios to the same bf16 matmul): fp8 +1.1% / +1.6% at
#: M=1, +0.1% / +1.5% at M=16; int8 +0.5% / +0.7% at M=1, +3.2% at M=16 (v6); at M=64 int8 -1.8%
#: in both runs, so M=64 keeps 8 MiB.
PREFETCH_DECODE_MAX_M = 16
PREFETCH_DECODE_BYTES = 16 << 20
#: Devices whose name contains one of these do not prefetch. On an H200 (copy bandwidth 4.2 TB/s
#: against the H100's 2.9) the prefetch cost the whole fp8 apply 2.5-3% on 8192 x 8192 and moved
#: nothing beyond the rounds' spread on the large shapes (cutlass-h200-2026-11-28-v9.json, paired
#: rounds, ratio to bf16 matmul without / with: 1.683x / 1.638x at M=1, 1.642x / 1.600x at M=16,
#: 1.689x / 1.654x at M=64); on the H100 it gained 1-3% there (NOTES.md v4-final, v6).
PREFETCH_OFF_DEVICES: tuple[str, ...] = ("H200",)
_LINE = 128
_PREFETCH_LINES = 512
#: At few tokens a one-pass row is split over several programs, up to this many in the launch
#: per row kernel (0 or 1: one program a row): each reads the whole row for its range (a load, a
#: conversion and a max a value) and converts one part of it (a division, a clamp, a rounding and
#: a narrowing a value: the issue-bound share; one 16-warp program spends ~2.5 us of SM issue on
#: a 28672-value row). The parts, a power of two, split the row's power-of-two block into shares of
#: at least ROW_PART_MIN values; a share wholly past the row's end is no program. int8 splits: its
#: apply on 8192 x 28672 ran 1.2 / 0.7 us faster at M = 1 / 16 (its quantizer 5.5 -> 3.0 us); fp8
#: does not: -0.44..+0.18 us in one run, 0.1-0.5 us slower in the other (its quantizer hides
#: behind the GEMM's weight lead, and more programs hold more SMs as the GEMM's CTAs arrive).
#: NOTES.md v20, v20c.
ROW_SPLIT_PROGRAMS: dict[str, int] = {"fp8": 1, "int8": 32}
ROW_PART_MIN = 2048


if os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes"):
    # The interpreter (the CPU tests) has no grid dependencies to release.
    @triton.jit
    def gdc_launch_dependents():
        pass
else:
    gdc_launch_dependents = _gdc_launch_dependents


@functools.cache
def _device_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


def prefetch_bytes(m: int, device: torch.device | None = None) -> int:
    """Bytes of the weight the quantizer of ``m`` tokens prefetches (0 above PREFETCH_MAX_M, and
    on a CUDA ``device`` named in PREFETCH_OFF_DEVICES)."""
    if m > PREFETCH_MAX_M:
        return 0
    if device is not None and device.type == "cuda":
        name = _device_name(device.index if device.index is not None else torch.cuda.current_device())
        if any(tag in name for tag in PREFETCH_OFF_DEVICES):
            return 0
    return PREFETCH_DECODE_BYTES if m <= PREFETCH_DECODE_MAX_M else PREFETCH_BYTES


def _prefetch_plan(m: int, weight: torch.Tensor | None) -> tuple[int, int, int, int]:
    """(programs, lines, lines per row, row bytes) of the weight prefetch; no programs when M is
    above PREFETCH_MAX_M, there is no weight or the weight's device does not prefetch."""
    if weight is None or prefetch_bytes(m, weight.device) == 0:
        return 0, 1, 1, 0
    rows, row_bytes = weight.shape[0], weight.shape[1] * weight.element_size()
    if not weight.is_contiguous() or row_bytes % _LINE:
        raise ValueError(
            f"prefetch weight must be contiguous with rows of a multiple of {_LINE} bytes, "
            f"found strides {weight.stride()} and {row_bytes} bytes per row")
    per_row = max(1, min(row_bytes // _LINE, prefetch_bytes(m, weight.device) // (rows * _LINE)))
    lines = rows * per_row
    return -(-lines // _PREFETCH_LINES), lines, per_row, row_bytes


def _row_parts(m: int, k: int, family: str) -> int:
    """Shares of a row's block for ``m`` rows of ``k`` values in ``family``'s row kernel ("fp8"
    or "int8"): a power of two; 1 for two-pass rows, from ROW_SPLIT_PROGRAMS[family] / 2 rows on
    and for rows of up to 2 * ROW_PART_MIN values."""
    programs = ROW_SPLIT_PROGRAMS[family]
    if k > ONE_PASS_MAX_K or m <= 0 or m >= programs:
        return 1
    parts = min(programs // m, triton.next_power_of_2(k) // ROW_PART_MIN)
    return 1 << (parts.bit_length() - 1) if parts > 1 else 1


def _row_programs(k: int, parts: int) -> int:
    """Programs a row gets: its ``parts`` shares of the block less those wholly past ``k``."""
    share = triton.next_power_of_2(k) // parts
    return -(-k // share) if parts > 1 else 1


def _row_launch(m: int, k: int, family: str) -> dict:
    """Block width, one-pass flag, shares per row and warps of ``family``'s row kernel for ``m``
    rows of ``k`` values."""
    one_pass = k <= ONE_PASS_MAX_K
    block = triton.next_power_of_2(k) if one_pass else _CHUNK
    return {"BLOCK": block, "ONE_PASS": one_pass, "PARTS": _row_parts(m, k, family),
            "num_warps": min(16, max(4, block // 1024))}


@triton.jit
def _row_range(base, K, BLOCK: tl.constexpr, WANT_MIN: tl.constexpr):
    """(min, max) of a row when WANT_MIN, else (0, max |x|)."""
    hi = tl.zeros((BLOCK,), tl.float32) - float("inf")
    lo = tl.zeros((BLOCK,), tl.float32) + float("inf")
    for start in range(0, K, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < K
        v = tl.load(base + cols, mask=mask, other=0.0).to(tl.float32)
        if WANT_MIN:
            hi = tl.maximum(hi, tl.where(mask, v, -float("inf")))
            lo = tl.minimum(lo, tl.where(mask, v, float("inf")))
        else:
            hi = tl.maximum(hi, tl.where(mask, tl.abs(v), 0.0))
    if WANT_MIN:
        low = tl.min(lo, axis=0)
    else:
        low = 0.0
    return low, tl.max(hi, axis=0)


@triton.jit
def _loaded_range(v, mask, WANT_MIN: tl.constexpr):
    """(min, max) of the valid lanes of a loaded row when WANT_MIN, else (0, max |v|)."""
    if WANT_MIN:
        low = tl.min(tl.where(mask, v, float("inf")), axis=0)
        high = tl.max(tl.where(mask, v, -float("inf")), axis=0)
    else:
        low = 0.0
        high = tl.max(tl.where(mask, tl.abs(v), 0.0), axis=0)
    return low, high


@triton.jit
def _fp8_codes(v, scale):
    return tl.clamp(v / scale, -448.0, 448.0).to(tl.float8e4nv)


@triton.jit
def _int8_codes(v, scale, zp):
    # rint: round half to even in one instruction, as kernel_core.formats rounds.
    return tl.clamp(libdevice.rint(v / scale) + zp, -128.0, 127.0).to(tl.int8)


@triton.jit
def _prefetch_weight_lines(w_ptr, part, lines, lines_per_row, row_bytes, LINES: tl.constexpr):
    """Prefetch into L2 the ``part``-th run of LINES 128-byte lines of the first lines_per_row
    lines of every weight row (the last line repeats past the end)."""
    j = tl.minimum(part * LINES + tl.arange(0, LINES), lines - 1)
    ptrs = w_ptr + (j // lines_per_row).to(tl.int64) * row_bytes + (j % lines_per_row) * 128
    tl.inline_asm_elementwise("prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [ptrs],
                              dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _row_programs_of(K, BLOCK: tl.constexpr, PARTS: tl.constexpr):
    """Programs a row gets (as _row_programs): its PARTS shares of BLOCK less those past K."""
    if PARTS > 1:
        programs = tl.cdiv(K, BLOCK // PARTS)
    else:
        programs = 1
    return programs


@triton.jit
def _row_amax_kernel(x_ptr, amax_ptr, K, BLOCK: tl.constexpr):
    """Per row max |x| (the first pass of per-tensor dynamic scaling)."""
    row = tl.program_id(0)
    _, hi = _row_range(x_ptr + row.to(tl.int64) * K, K, BLOCK, False)
    tl.store(amax_ptr + row, hi)


@triton.jit
def _fp8_rows_kernel(
    x_ptr, q_ptr, scale_ptr, amax_ptr, K, min_scale, M, w_ptr, w_lines, w_lines_per_row,
    w_row_bytes, BLOCK: tl.constexpr, MODE: tl.constexpr, ONE_PASS: tl.constexpr,
    PREFETCH_LINES: tl.constexpr, PARTS: tl.constexpr,
):
    """PARTS programs per row, one launch. MODE 0: static, the scale is scale_ptr[0]; 1: dynamic
    per token, from the row's amax; 2: dynamic per tensor, amax_ptr[0] from _row_amax_kernel +
    a reduction. ONE_PASS: BLOCK covers the row, which stays in registers; with PARTS > 1 each
    program converts the part-th share of it (the amax still over the whole row). PREFETCH_LINES
    > 0: programs from M * (programs a row) on prefetch weight lines instead (see _prefetch_plan)."""
    gdc_launch_dependents()
    program = tl.program_id(0)
    row_programs = _row_programs_of(K, BLOCK, PARTS)
    if PREFETCH_LINES > 0:  # noqa: SIM102 - a compile-time test around a runtime one
        if program >= M * row_programs:
            _prefetch_weight_lines(w_ptr, program - M * row_programs, w_lines, w_lines_per_row,
                                   w_row_bytes, PREFETCH_LINES)
            return
    row = program // row_programs
    part = program % row_programs
    base = row.to(tl.int64) * K
    cols = tl.arange(0, BLOCK)
    if ONE_PASS:
        mask = cols < K
        if MODE == 1 or PARTS == 1:
            v = tl.load(x_ptr + base + cols, mask=mask, other=0.0).to(tl.float32)
        if MODE == 1:
            _, amax = _loaded_range(v, mask, False)
    elif MODE == 1:
        _, amax = _row_range(x_ptr + base, K, BLOCK, False)
    if MODE == 0:
        scale = tl.load(scale_ptr)
    elif MODE == 1:
        scale = tl.maximum(amax / 448.0, min_scale)
        tl.store(scale_ptr + row, scale, mask=part == 0)
    else:
        scale = tl.maximum(tl.load(amax_ptr) / 448.0, min_scale)
        tl.store(scale_ptr, scale, mask=program == 0)
    if ONE_PASS:
        if PARTS == 1:
            tl.store(q_ptr + base + cols, _fp8_codes(v, scale), mask=mask)
        else:
            share = part * (BLOCK // PARTS) + tl.arange(0, BLOCK // PARTS)
            in_row = share < K
            v = tl.load(x_ptr + base + share, mask=in_row, other=0.0).to(tl.float32)
            tl.store(q_ptr + base + share, _fp8_codes(v, scale), mask=in_row)
    else:
        for start in range(0, K, BLOCK):
            chunk = start + cols
            in_row = chunk < K
            v = tl.load(x_ptr + base + chunk, mask=in_row, other=0.0).to(tl.float32)
            tl.store(q_ptr + base + chunk, _fp8_codes(v, scale), mask=in_row)


@triton.jit
def _int8_rows_kernel(
    x_ptr, q_ptr, scale_ptr, zp_ptr, zp_neg_ptr, K, floor, M, w_ptr, w_lines, w_lines_per_row,
    w_row_bytes, BLOCK: tl.constexpr, DYNAMIC: tl.constexpr, SYMMETRIC: tl.constexpr,
    ONE_PASS: tl.constexpr, PREFETCH_LINES: tl.constexpr, PARTS: tl.constexpr,
):
    """PARTS programs per row, one launch (as _fp8_rows_kernel). Dynamic: the scale (and zero
    point) come from the row's range and are stored, the negated zero point also as float for
    the GEMM epilogue. PREFETCH_LINES > 0: programs from M * (programs a row) on prefetch weight lines
    instead (see _prefetch_plan)."""
    gdc_launch_dependents()
    program = tl.program_id(0)
    row_programs = _row_programs_of(K, BLOCK, PARTS)
    if PREFETCH_LINES > 0:  # noqa: SIM102 - a compile-time test around a runtime one
        if program >= M * row_programs:
            _prefetch_weight_lines(w_ptr, program - M * row_programs, w_lines, w_lines_per_row,
                                   w_row_bytes, PREFETCH_LINES)
            return
    row = program // row_programs
    part = program % row_programs
    base = row.to(tl.int64) * K
    cols = tl.arange(0, BLOCK)
    if ONE_PASS:
        mask = cols < K
        if DYNAMIC or PARTS == 1:
            v = tl.load(x_ptr + base + cols, mask=mask, other=0.0).to(tl.float32)
        if DYNAMIC:
            lo, hi = _loaded_range(v, mask, not SYMMETRIC)
    elif DYNAMIC:
        lo, hi = _row_range(x_ptr + base, K, BLOCK, not SYMMETRIC)
    if DYNAMIC:
        if SYMMETRIC:
            scale = tl.maximum(hi, floor) / 127.0
            zp = 0.0
        else:
            scale = tl.maximum(hi - lo, floor) / 255.0
            zp = libdevice.rint(-128.0 - lo / scale)
            tl.store(zp_ptr + row, zp.to(tl.int32), mask=part == 0)
            tl.store(zp_neg_ptr + row, -zp, mask=part == 0)
        tl.store(scale_ptr + row, scale, mask=part == 0)
    else:
        scale = tl.load(scale_ptr)
        if SYMMETRIC:
            zp = 0.0
        else:
            zp = tl.load(zp_ptr).to(tl.float32)
    if ONE_PASS:
        if PARTS == 1:
            tl.store(q_ptr + base + cols, _int8_codes(v, scale, zp), mask=mask)
        else:
            share = part * (BLOCK // PARTS) + tl.arange(0, BLOCK // PARTS)
            in_row = share < K
            v = tl.load(x_ptr + base + share, mask=in_row, other=0.0).to(tl.float32)
            tl.store(q_ptr + base + share, _int8_codes(v, scale, zp), mask=in_row)
    else:
        for start in range(0, K, BLOCK):
            chunk = start + cols
            in_row = chunk < K
            v = tl.load(x_ptr + base + chunk, mask=in_row, other=0.0).to(tl.float32)
            tl.store(q_ptr + base + chunk, _int8_codes(v, scale, zp), mask=in_row)


@triton.jit
def _fp8_groups_kernel(
    x_ptr, q_ptr, scale_ptr, M, K, M_PAD, floor,
    GROUP: tl.constexpr, GROUPS_PER_PROGRAM: tl.constexpr,
):
    """Program (row, chunk) over M_PAD rows: GROUPS_PER_PROGRAM groups of GROUP columns; scales go
    to scale[group, row] (M-major, leading dimension M_PAD). Rows M..M_PAD-1 get zero codes and
    zero scales."""
    gdc_launch_dependents()
    row = tl.program_id(0)
    g0 = tl.program_id(1) * GROUPS_PER_PROGRAM
    groups = g0 + tl.arange(0, GROUPS_PER_PROGRAM)
    cols = groups[:, None] * GROUP + tl.arange(0, GROUP)[None, :]
    mask = cols < K
    base = row.to(tl.int64) * K
    in_rows = (row + tl.zeros_like(groups)) < M  # a padding row reads nothing
    v = tl.load(x_ptr + base + cols, mask=mask & in_rows[:, None], other=0.0).to(tl.float32)
    scale = tl.maximum(tl.max(tl.abs(v), axis=1), floor) / 448.0
    tl.store(q_ptr + base + cols, _fp8_codes(v, scale[:, None]), mask=mask)
    tl.store(scale_ptr + groups.to(tl.int64) * M_PAD + row, tl.where(in_rows, scale, 0.0),
             mask=groups * GROUP < K)


def _check_2d(x: torch.Tensor) -> tuple[int, int]:
    if x.dim() != 2:
        raise ValueError(f"x: expected a 2-D (tokens, K) tensor, found shape {list(x.shape)}")
    return x.shape[0], x.shape[1]


# --- FP8 -------------------------------------------------------------------------------------


def _rows_launch(m: int, k: int, weight: torch.Tensor | None, x: torch.Tensor,
                 family: str) -> tuple:
    """Grid, trailing arguments and meta-parameters of a row kernel (with the weight prefetch
    of _prefetch_plan when it applies)."""
    programs, lines, per_row, row_bytes = _prefetch_plan(m, weight)
    w = weight if programs else x
    meta = _row_launch(m, k, family)
    return ((m * _row_programs(k, meta["PARTS"]) + programs,), (m, w, lines, per_row, row_bytes),
            {**meta, "PREFETCH_LINES": _PREFETCH_LINES if programs else 0})


def _quantize_fp8_per_token(
    x: torch.Tensor, prefetch_weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per-token FP8: ``(q [M, K] e4m3, scale [M] fp32)``; ``prefetch_weight``: the
    GEMM's (N, K) weight, whose first bytes per row are prefetched into L2 at small M."""
    m, k = _check_2d(x)
    x = x.contiguous()
    q = torch.empty((m, k), dtype=torch.float8_e4m3fn, device=x.device)
    scale = torch.empty((m,), dtype=torch.float32, device=x.device)
    if m:
        grid, tail, meta = _rows_launch(m, k, prefetch_weight, x, "fp8")
        _fp8_rows_kernel[grid](x, q, scale, scale, k, FP8_MIN_SCALE, *tail, MODE=1, **meta)
    return q, scale


def _quantize_fp8_per_tensor(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per-tensor FP8: ``(q [M, K] e4m3, scale [1] fp32)``."""
    m, k = _check_2d(x)
    x = x.contiguous()
    q = torch.empty((m, k), dtype=torch.float8_e4m3fn, device=x.device)
    scale = torch.full((1,), FP8_MIN_SCALE, dtype=torch.float32, device=x.device)
    if m:
        row_amax = torch.empty((m,), dtype=torch.float32, device=x.device)
        _row_amax_kernel[(m,)](x, row_amax, k, BLOCK=_CHUNK, num_warps=8)
        amax = row_amax.amax().reshape(1)
        grid, tail, meta = _rows_launch(m, k, None, x, "fp8")
        _fp8_rows_kernel[grid](x, q, scale, amax, k, FP8_MIN_SCALE, *tail, MODE=2, **meta)
    return q, scale


def _quantize_fp8_static(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Static per-tensor FP8 with the checkpoint's decode ``scale`` (one element)."""
    m, k = _check_2d(x)
    x = x.contiguous()
    q = torch.empty((m, k), dtype=torch.float8_e4m3fn, device=x.device)
    if m:
        grid, tail, meta = _rows_launch(m, k, None, x, "fp8")
        _fp8_rows_kernel[grid](x, q, scale, scale, k, FP8_MIN_SCALE, *tail, MODE=0, **meta)
    return q


def _quantize_fp8_per_group(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic FP8 per token and ``group`` columns: ``(q [m_pad, K], scale [K/group, m_pad])``.

    The scale is M-major (the layout the block-scaled GEMM reads). ``m_pad`` rounds M up to a
    multiple of 4 (at least 4): CUTLASS's scale TMA needs the scales' M extent to be 16-byte
    aligned, so the GEMM runs on m_pad rows; the same launch writes zero codes and zero scales
    into the rows past M, and the caller drops those output rows.
    """
    m, k = _check_2d(x)
    if k % group:
        raise ValueError(f"x: expected K divisible by the group size {group}, found K={k}")
    x = x.contiguous()
    m_pad = -(-max(m, 1) // GROUP_SCALE_ROW_ALIGN) * GROUP_SCALE_ROW_ALIGN
    q = torch.empty((m_pad, k), dtype=torch.float8_e4m3fn, device=x.device)
    scale = torch.empty((k // group, m_pad), dtype=torch.float32, device=x.device)
    per_program = 8
    grid = (m_pad, triton.cdiv(k // group, per_program))
    _fp8_groups_kernel[grid](
        x, q, scale, m, k, m_pad, FP8_GROUP_AMAX_FLOOR, GROUP=group,
        GROUPS_PER_PROGRAM=per_program, num_warps=4,
    )
    return q, scale


quantize_fp8_per_token = custom_op(
    "kernel_core_cutlass::quantize_fp8_per_token", _quantize_fp8_per_token)
quantize_fp8_per_tensor = custom_op(
    "kernel_core_cutlass::quantize_fp8_per_tensor", _quantize_fp8_per_tensor)
quantize_fp8_static = custom_op("kernel_core_cutlass::quantize_fp8_static", _quantize_fp8_static)
quantize_fp8_per_group = custom_op(
    "kernel_core_cutlass::quantize_fp8_per_group", _quantize_fp8_per_group)


# --- INT8 ------------------------------------------------------------------------------------


def _quantize_int8_per_token(
    x: torch.Tensor, symmetric: bool, prefetch_weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dynamic per-token int8: ``(q, scale [M], zero_point [M] int32, -zero_point [M] fp32)``;
    symmetric: the zero-point tensors are empty (``[0]``). ``prefetch_weight`` as for
    :func:`_quantize_fp8_per_token`."""
    m, k = _check_2d(x)
    x = x.contiguous()
    q = torch.empty((m, k), dtype=torch.int8, device=x.device)
    scale = torch.empty((m,), dtype=torch.float32, device=x.device)
    zp_rows = 0 if symmetric else m
    zp = torch.empty((zp_rows,), dtype=torch.int32, device=x.device)
    zp_neg = torch.empty((zp_rows,), dtype=torch.float32, device=x.device)
    if m:
        grid, tail, meta = _rows_launch(m, k, prefetch_weight, x, "int8")
        _int8_rows_kernel[grid](
            x, q, scale, zp, zp_neg, k, INT8_AMAX_FLOOR, *tail, DYNAMIC=True, SYMMETRIC=symmetric,
            **meta,
        )
    return q, scale, zp, zp_neg


def _quantize_int8_static(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None
) -> torch.Tensor:
    """Static per-tensor int8 with the checkpoint's ``scale`` (and ``zero_point``, int32)."""
    m, k = _check_2d(x)
    x = x.contiguous()
    q = torch.empty((m, k), dtype=torch.int8, device=x.device)
    if m:
        symmetric = zero_point is None
        zp = scale if symmetric else zero_point
        grid, tail, meta = _rows_launch(m, k, None, x, "int8")
        _int8_rows_kernel[grid](
            x, q, scale, zp, scale, k, INT8_AMAX_FLOOR, *tail, DYNAMIC=False, SYMMETRIC=symmetric,
            **meta,
        )
    return q


quantize_int8_per_token = custom_op(
    "kernel_core_cutlass::quantize_int8_per_token", _quantize_int8_per_token)
quantize_int8_static = custom_op("kernel_core_cutlass::quantize_int8_static", _quantize_int8_static)


# --- fake (meta) implementations: shapes only, for torch.compile ------------------------------


@quantize_fp8_per_token.register_fake
def _(x, prefetch_weight=None):
    return x.new_empty(x.shape, dtype=torch.float8_e4m3fn), x.new_empty(
        (x.shape[0],), dtype=torch.float32
    )


@quantize_fp8_per_tensor.register_fake
def _(x):
    return x.new_empty(x.shape, dtype=torch.float8_e4m3fn), x.new_empty((1,), dtype=torch.float32)


@quantize_fp8_static.register_fake
def _(x, scale):
    return x.new_empty(x.shape, dtype=torch.float8_e4m3fn)


@quantize_fp8_per_group.register_fake
def _(x, group):
    m, k = x.shape
    m_pad = (m + GROUP_SCALE_ROW_ALIGN - 1) // GROUP_SCALE_ROW_ALIGN * GROUP_SCALE_ROW_ALIGN
    m_pad = torch.sym_max(m_pad, GROUP_SCALE_ROW_ALIGN)
    return x.new_empty((m_pad, k), dtype=torch.float8_e4m3fn), x.new_empty(
        (k // group, m_pad), dtype=torch.float32
    )


@quantize_int8_per_token.register_fake
def _(x, symmetric, prefetch_weight=None):
    m = x.shape[0]
    zp_rows = 0 if symmetric else m
    return (
        x.new_empty(x.shape, dtype=torch.int8),
        x.new_empty((m,), dtype=torch.float32),
        x.new_empty((zp_rows,), dtype=torch.int32),
        x.new_empty((zp_rows,), dtype=torch.float32),
    )


@quantize_int8_static.register_fake
def _(x, scale, zero_point):
    return x.new_empty(x.shape, dtype=torch.int8)
