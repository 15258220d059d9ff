"""FP8 activation quantization for FlashInfer's GEMMs: per tensor (for ``bmm_fp8``'s cuBLASLt
runner) and per 1x128 token group with any scale layout (for ``fp8_blockscale_gemm_sm90``'s
FP8-input mode, whose scales must be K-block-major with M padded to 4).

Both read scales through pointers (no host reads of device data) and allocate only through
PyTorch's caching allocator, so they can be captured in CUDA graphs after one eager warm-up call
(Triton compiles on the first launch). They follow ``kernel_core.formats.fp8``'s conventions:
decode-multiplier scales, ``x / scale`` clamped to +-448, round to nearest even.

Division is Triton's default ``/``. On the H100 these quantizers agreed with ``kernel_core.formats``
run by PyTorch on the same GPU (per-tensor dynamic: 0 of 1.8M codes differed; 1x128: the GEMM
matched the oracle to bf16 output rounding at every M). IEEE division (``tl.math.div_rn``) was
tried and disagreed on about 0.1% of codes: PyTorch divides a tensor by a Python scalar through
its reciprocal, and bf16 inputs land on fp8 rounding ties often enough for one ulp of scale to
flip them. Either rounding is as accurate; agreeing with the oracle keeps conformance checks tight.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernel_core.formats.fp8 import FP8_E4M3_MAX, FP8_GROUP_AMAX_FLOOR, FP8_MIN_SCALE

__all__ = ["quantize_per_tensor", "quantize_per_token_group"]

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
    """E4M3 codes of a contiguous ``x [M, K]`` as ``[1, M, K]`` (the batched operand ``bmm_fp8``
    takes, so no view is made per call) and its decode scale: ``scale`` itself when given (static),
    else ``max(amax / 448, FP8_MIN_SCALE)`` computed on the GPU into a new ``[1]`` tensor."""
    q = torch.empty((1, *x.shape), dtype=torch.float8_e4m3fn, device=x.device)
    numel = x.numel()
    if scale is None:
        # The 0-d amax goes to the kernel as is: a pointer either way, no reshape launched.
        source = torch.linalg.vector_norm(x, float("inf"), dtype=torch.float32)
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
    """E4M3 codes of a row-major ``x [M, K]``; decode scales per 1x128 group written into rows
    ``0..M-1`` of ``scales``, an ``[M', K/128]`` tensor (``M' >= M``) of any strides, so a kernel's
    scale layout is written directly (``ops.block_input_scales``: K-block-major, M padded to 4).
    ``s = max(amax, 1e-10) / 448`` like ``quantize_fp8_per_token_group``."""
    m, k = x.shape
    q = torch.empty((m, k), dtype=torch.float8_e4m3fn, device=x.device)
    stride_sm, stride_sk = scales.stride()
    rows = 16
    _quantize_group_kernel[(triton.cdiv(m, rows), k // GROUP)](
        x, q, scales, m, k, x.stride(0), stride_sm, stride_sk,
        FP8_MAX=FP8_E4M3_MAX, AMAX_FLOOR=FP8_GROUP_AMAX_FLOOR, GROUP_SIZE=GROUP, ROWS=rows,
    )
    return q
