"""The plugin's GEMMs as ``torch.library`` custom ops in the ``kernel_core_flashinfer`` namespace.

* ``fp8_per_tensor_mm(x, weight, weight_scale, input_scale, bias, out_dtype)``: quantize ``x`` to
  E4M3 per tensor (static ``input_scale``, or dynamic when it is None), then FlashInfer's
  ``bmm_fp8`` (cuBLASLt) with both scalar scales, then ``+ bias``.
* ``fp8_block_mm(x, weight, weight_scale, bias)``: bf16 ``x``, 128x128-block E4M3 weight. Rows
  below :data:`FLASHINFER_BLOCK_MAX_ROWS` go to FlashInfer's ``fp8_blockscale_gemm_sm90`` (which
  quantizes ``x`` per 1x128 itself); at or above it, to :func:`block_scaled_fp8_gemm` after our own
  1x128 quantization, because FlashInfer's result is measured less accurate there (README). The
  branch depends on the shape only, so each captured CUDA graph holds one path.

Each op has a fake implementation, so models compile with ``torch.compile(fullgraph=True)``. The
ops are registered with ``torch.library.Library`` (define + CUDA impl) rather than the
``custom_op`` decorator, whose Python wrapper costs several microseconds per eager call.

This module imports flashinfer and triton: import it only once a kernel is being used.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from kernel_core_flashinfer.environment import flashinfer
from kernel_core_flashinfer.triton_kernels import (
    block_scaled_fp8_gemm,
    quantize_per_tensor,
    quantize_per_token_group,
)

__all__ = [
    "NAMESPACE",
    "FLASHINFER_BLOCK_MAX_ROWS",
    "fp8_per_tensor_mm",
    "fp8_block_mm",
    "blockscale_runner",
    "fp8_block_mm_flashinfer",
    "fp8_block_mm_fallback",
]

NAMESPACE = "kernel_core_flashinfer"

#: Row counts ``M >= FLASHINFER_BLOCK_MAX_ROWS`` leave ``fp8_blockscale_gemm_sm90`` for the
#: fallback; None sends every M to FlashInfer. Set from the accuracy-vs-M measurement (README).
FLASHINFER_BLOCK_MAX_ROWS: int | None = None

_library = torch.library.Library(NAMESPACE, "DEF")


# -- per-tensor FP8 through bmm_fp8 -------------------------------------------------------------


def _fp8_per_tensor_mm_cuda(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    input_scale: torch.Tensor | None,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    m, n = x.shape[0], weight.shape[0]
    out = torch.empty((1, m, n), dtype=out_dtype, device=x.device)
    if m == 0:
        return out[0]
    q, scale = quantize_per_tensor(x, input_scale)
    # bmm_fp8 wants B as (1, K, N) column-major: the (N, K) row-major weight, transposed.
    flashinfer().bmm_fp8(
        q.unsqueeze(0), weight.t().unsqueeze(0), scale, weight_scale, out_dtype, out=out,
        backend="cublas",
    )
    result = out[0]
    if bias is not None:
        result.add_(bias)
    return result


def _fp8_per_tensor_mm_fake(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    input_scale: torch.Tensor | None,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    return x.new_empty((x.shape[0], weight.shape[0]), dtype=out_dtype)


# -- 128x128 block FP8 through fp8_blockscale_gemm_sm90 ----------------------------------------


@functools.cache
def blockscale_runner() -> Any:
    """FlashInfer's SM90 block-scale runner, loaded once.

    The public ``fp8_blockscale_gemm_sm90`` reloads its JIT module on every call (it runs ninja
    and reopens the ``.so``), which costs milliseconds; the runner it builds is the same object.
    """
    flashinfer()
    from flashinfer.gemm.gemm_base import get_fp8_blockscale_gemm_runner_sm90

    return get_fp8_blockscale_gemm_runner_sm90()


_workspaces: dict[torch.device, torch.Tensor] = {}
_retired_workspaces: list[torch.Tensor] = []


def _workspace(device: torch.device, nbytes: int) -> torch.Tensor:
    """One workspace per device, shared by every layer; grows, never shrinks.

    A grown-out buffer is kept alive: a CUDA graph captured earlier still points at it.
    """
    buffer = _workspaces.get(device)
    if buffer is None or buffer.numel() < nbytes:
        if torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                f"{NAMESPACE}: fp8_blockscale_gemm_sm90 needs a {nbytes}-byte workspace, larger "
                "than any used before capture; run the largest batch once eagerly (or call the "
                "kernel's warmup) before capturing CUDA graphs"
            )
        if buffer is not None:
            _retired_workspaces.append(buffer)
        buffer = torch.empty(nbytes, dtype=torch.uint8, device=device)
        _workspaces[device] = buffer
    return buffer


def fp8_block_mm_flashinfer(
    x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor
) -> torch.Tensor:
    """FlashInfer's kernel on bf16 ``x`` (it quantizes per 1x128 itself); bf16 out."""
    m, k = x.shape
    n = weight.shape[0]
    runner = blockscale_runner()
    out = torch.empty((m, n), dtype=torch.bfloat16, device=x.device)
    nbytes = runner.get_workspace_size(m, n, k)
    if nbytes > 0:
        runner.configure_workspace(_workspace(x.device, nbytes))
    runner.run_gemm(x, weight, out, None, weight_scale)
    return out


def fp8_block_mm_fallback(
    x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor
) -> torch.Tensor:
    """Our 1x128 quantization and Triton block-scaled GEMM; bf16 out."""
    m, k = x.shape
    scales = torch.empty((m, k // 128), dtype=torch.float32, device=x.device)
    q = quantize_per_token_group(x, scales)
    out = torch.empty((m, weight.shape[0]), dtype=torch.bfloat16, device=x.device)
    return block_scaled_fp8_gemm(q, scales, weight, weight_scale, out)


def _fp8_block_mm_cuda(
    x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    m = x.shape[0]
    if m == 0:
        return torch.empty((0, weight.shape[0]), dtype=torch.bfloat16, device=x.device)
    if FLASHINFER_BLOCK_MAX_ROWS is None or m < FLASHINFER_BLOCK_MAX_ROWS:
        out = fp8_block_mm_flashinfer(x, weight, weight_scale)
    else:
        out = fp8_block_mm_fallback(x, weight, weight_scale)
    if bias is not None:
        out.add_(bias)
    return out


def _fp8_block_mm_fake(
    x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    return x.new_empty((x.shape[0], weight.shape[0]), dtype=torch.bfloat16)


# -- registration -------------------------------------------------------------------------------

_library.define(
    "fp8_per_tensor_mm(Tensor x, Tensor weight, Tensor weight_scale, Tensor? input_scale, "
    "Tensor? bias, ScalarType out_dtype) -> Tensor"
)
_library.impl("fp8_per_tensor_mm", _fp8_per_tensor_mm_cuda, "CUDA")
torch.library.register_fake(f"{NAMESPACE}::fp8_per_tensor_mm", _fp8_per_tensor_mm_fake)

_library.define(
    "fp8_block_mm(Tensor x, Tensor weight, Tensor weight_scale, Tensor? bias) -> Tensor"
)
_library.impl("fp8_block_mm", _fp8_block_mm_cuda, "CUDA")
torch.library.register_fake(f"{NAMESPACE}::fp8_block_mm", _fp8_block_mm_fake)

fp8_per_tensor_mm = getattr(torch.ops, NAMESPACE).fp8_per_tensor_mm.default
fp8_block_mm = getattr(torch.ops, NAMESPACE).fp8_block_mm.default
