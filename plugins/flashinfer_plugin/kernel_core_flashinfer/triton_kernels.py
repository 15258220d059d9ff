"""The GPU work around FlashInfer's GEMMs that FlashInfer does not do: FP8 activation quantization
(per tensor, and per 1x128 token group with any scale layout) and a block-scaled FP8 GEMM used
where ``fp8_blockscale_gemm_sm90`` is not accurate (see the README's accuracy-vs-M section).

All of them read scales through pointers (no host reads of device data) and allocate only through
PyTorch's caching allocator, so they can be captured in CUDA graphs after one eager warm-up call
(Triton compiles on the first launch). They follow ``kernel_core.formats.fp8``'s conventions:
decode-multiplier scales, ``x / scale`` clamped to +-448, round to nearest even.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernel_core.formats.fp8 import FP8_E4M3_MAX, FP8_GROUP_AMAX_FLOOR, FP8_MIN_SCALE

__all__ = ["quantize_per_tensor", "quantize_per_token_group", "block_scaled_fp8_gemm"]

GROUP = 128


@triton.jit
def _quantize_per_tensor_kernel(
    x_ptr, scale_in_ptr, q_ptr, scale_out_ptr, numel,
    DYNAMIC: tl.constexpr, FP8_MAX: tl.constexpr, MIN_SCALE: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    scale = tl.load(scale_in_ptr)
    if DYNAMIC:  # scale_in holds amax(|x|): turn it into the decode scale, as the formats do
        scale = tl.maximum(scale / FP8_MAX, MIN_SCALE)
        if pid == 0:
            tl.store(scale_out_ptr, scale)
    offsets = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < numel
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    q = tl.clamp(x / scale, -FP8_MAX, FP8_MAX)
    tl.store(q_ptr + offsets, q.to(q_ptr.dtype.element_ty), mask=mask)


def quantize_per_tensor(
    x: torch.Tensor, scale: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """E4M3 codes of a contiguous ``x`` and its ``[1]`` decode scale (``scale`` None: dynamic,
    ``max(amax / 448, FP8_MIN_SCALE)`` computed on the GPU)."""
    q = torch.empty(x.shape, dtype=torch.float8_e4m3fn, device=x.device)
    numel = x.numel()
    if scale is None:
        source = torch.linalg.vector_norm(x, float("inf"), dtype=torch.float32).reshape(1)
        scale_out = torch.empty(1, dtype=torch.float32, device=x.device)
    else:
        source = scale_out = scale
    block = 4096
    _quantize_per_tensor_kernel[(triton.cdiv(max(numel, 1), block),)](
        x, source, q, scale_out, numel,
        DYNAMIC=scale is None, FP8_MAX=FP8_E4M3_MAX, MIN_SCALE=FP8_MIN_SCALE, BLOCK=block,
    )
    return q, scale_out


@triton.jit
def _quantize_group_kernel(
    x_ptr, q_ptr, s_ptr, M, K, stride_xm, stride_sm, stride_sk,
    FP8_MAX: tl.constexpr, AMAX_FLOOR: tl.constexpr, GROUP_SIZE: tl.constexpr,
    ROWS: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    group = tl.program_id(1)
    cols = group * GROUP_SIZE + tl.arange(0, GROUP_SIZE)
    mask = (rows < M)[:, None]
    offsets = rows.to(tl.int64)[:, None] * stride_xm + cols[None, :]
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    amax = tl.max(tl.abs(x), axis=1)
    scale = tl.maximum(amax, AMAX_FLOOR) / FP8_MAX
    q = tl.clamp(x / scale[:, None], -FP8_MAX, FP8_MAX)
    tl.store(q_ptr + rows.to(tl.int64)[:, None] * K + cols[None, :],
             q.to(q_ptr.dtype.element_ty), mask=mask)
    tl.store(s_ptr + rows * stride_sm + group * stride_sk, scale, mask=rows < M)


def quantize_per_token_group(x: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """E4M3 codes of a row-major ``x [M, K]``; decode scales per 1x128 group written into
    ``scales`` (an ``[M, K/128]`` view of any strides, so a kernel's scale layout is written
    directly). ``s = max(amax, 1e-10) / 448`` like ``quantize_fp8_per_token_group``."""
    m, k = x.shape
    q = torch.empty((m, k), dtype=torch.float8_e4m3fn, device=x.device)
    rows = 16
    _quantize_group_kernel[(triton.cdiv(m, rows), k // GROUP)](
        x, q, scales, m, k, x.stride(0), scales.stride(0), scales.stride(1),
        FP8_MAX=FP8_E4M3_MAX, AMAX_FLOOR=FP8_GROUP_AMAX_FLOOR, GROUP_SIZE=GROUP, ROWS=rows,
    )
    return q


@triton.jit
def _block_scaled_gemm_kernel(
    a_ptr, a_scale_ptr, b_ptr, b_scale_ptr, c_ptr, M, N, K,
    stride_am, stride_asm, stride_ask, stride_bn, stride_bsn, stride_bsk, stride_cm,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # Grouped tile order: GROUP_M row tiles share each column tile while it is in L2.
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = min(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    a_ptrs = a_ptr + offs_m.to(tl.int64)[:, None] * stride_am + offs_k[None, :]
    b_ptrs = b_ptr + offs_n.to(tl.int64)[None, :] * stride_bn + offs_k[:, None]
    a_scale_ptrs = a_scale_ptr + offs_m * stride_asm
    b_scale_ptrs = b_scale_ptr + (offs_n // BLOCK_K) * stride_bsn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_K)):
        a = tl.load(a_ptrs, mask=mask_m[:, None], other=0.0)
        b = tl.load(b_ptrs, mask=mask_n[None, :], other=0.0)
        a_scale = tl.load(a_scale_ptrs + kb * stride_ask, mask=mask_m, other=0.0)
        b_scale = tl.load(b_scale_ptrs + kb * stride_bsk, mask=mask_n, other=0.0)
        # One K block per dot: its exact partial sum is scaled before joining the fp32 total.
        acc += tl.dot(a, b) * a_scale[:, None] * b_scale[None, :]
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def block_scaled_fp8_gemm(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """``out[m, n] = sum_j a_scale[m, j] * weight_scale[n // 128, j] * (a[m, blk j] . w[n, blk j])``.

    ``a [M, K]`` and ``weight [N, K]`` row-major E4M3, K % 128 == 0; scales fp32 of any strides.
    """
    m, k = a.shape
    n = weight.shape[0]
    if m <= 64:
        block_m, warps, stages = 64, 4, 4
    else:
        block_m, warps, stages = 128, 8, 3
    block_n = 128
    grid = (triton.cdiv(m, block_m) * triton.cdiv(n, block_n),)
    _block_scaled_gemm_kernel[grid](
        a, a_scale, weight, weight_scale, out, m, n, k,
        a.stride(0), a_scale.stride(0), a_scale.stride(1),
        weight.stride(0), weight_scale.stride(0), weight_scale.stride(1), out.stride(0),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=GROUP, GROUP_M=8,
        num_warps=warps, num_stages=stages,
    )
    return out
