"""The plugin's GEMMs as ``torch.library`` custom ops in the ``kernel_core_flashinfer`` namespace.

* ``fp8_per_tensor_mm(x, weight, weight_scale, input_scale, bias, out_dtype)``: quantize ``x`` to
  E4M3 per tensor (static ``input_scale``, or dynamic when it is None), then FlashInfer's cuBLASLt
  FP8 GEMM (the runner behind ``bmm_fp8``) with both scalar scales, then ``+ bias``.
* ``fp8_block_mm(x, weight, weight_scale, bias)``: quantize bf16 ``x`` per 1x128 group ourselves,
  writing the scales in the layout the kernel reads (K-block-major, M padded to a multiple of 4),
  then ``fp8_blockscale_gemm_sm90``'s FP8-input mode. Measured on the H100 for M = 1..8192: the
  kernel then agrees with the emulation oracle to bf16 output rounding at every M, needs no
  workspace, and runs as fast as FlashInfer's bf16-input mode, whose internal quantizer rounds
  about 0.1% of codes differently from the oracle's (equally accurate; README).

Each op has a fake implementation, so models compile with ``torch.compile(fullgraph=True)``. They
are registered with ``torch.library.Library`` (define + CUDA impl). Eager callers may call
:data:`EAGER` implementations directly (same code, no dispatcher hop); compiled code goes through
the ops.

FlashInfer's public wrappers are not called per step: ``bmm_fp8``'s checks and autotuner lookup
cost a median 126 us of host time per call on the H100 machine (benchmark), so the cuBLASLt
runner it wraps is called directly; ``fp8_blockscale_gemm_sm90``'s bf16-input mode allocates and
configures a workspace on FlashInfer's process-wide runner per call, which the FP8-input mode
does not need.

This module imports flashinfer and triton: import it only once a kernel is being used.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from kernel_core_flashinfer.environment import flashinfer
from kernel_core_flashinfer.triton_kernels import quantize_per_tensor, quantize_per_token_group

__all__ = [
    "NAMESPACE",
    "EAGER",
    "fp8_per_tensor_mm",
    "fp8_block_mm",
    "cublas_fp8_runner",
    "blockscale_runner",
    "block_input_scales",
]

NAMESPACE = "kernel_core_flashinfer"
_library = torch.library.Library(NAMESPACE, "DEF")

_workspaces: dict[torch.device, torch.Tensor] = {}


def _workspace(device: torch.device) -> torch.Tensor:
    """cuBLASLt's workspace: one buffer per device, shared by every layer (FlashInfer's size)."""
    buffer = _workspaces.get(device)
    if buffer is None:
        from flashinfer.gemm.gemm_base import DEFAULT_WORKSPACE_SIZE

        if torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                f"{NAMESPACE}: the first FP8 GEMM on {device} ran inside CUDA-graph capture; run "
                "one eager call (or the kernel's warmup) before capturing"
            )
        buffer = torch.empty(DEFAULT_WORKSPACE_SIZE, dtype=torch.uint8, device=device)
        _workspaces[device] = buffer
    return buffer


# -- per-tensor FP8 through FlashInfer's cuBLASLt runner --------------------------------------


@functools.cache
def cublas_fp8_runner() -> Any:
    """The runner ``bmm_fp8(backend="cublas")`` uses, with its JIT module loaded once."""
    flashinfer()
    from flashinfer.gemm.gemm_base import get_gemm_module

    return get_gemm_module().cublas_fp8_gemm_runner()


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
    # A is (1, M, K); B is (1, K, N) column-major: the (N, K) row-major weight, transposed.
    workspace = _workspace(x.device)
    inputs = [q.unsqueeze(0), weight.t().unsqueeze(0), scale, weight_scale, out, workspace]
    cublas_fp8_runner().forward(inputs, tactic=-1)
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

    Its FP8-input mode needs no workspace, but the binding refuses to run until one is
    configured; a placeholder is set once (the runner is process-wide).
    """
    flashinfer()
    from flashinfer.gemm.gemm_base import get_fp8_blockscale_gemm_runner_sm90

    runner = get_fp8_blockscale_gemm_runner_sm90()
    _placeholder_workspace.append(torch.empty(16, dtype=torch.uint8, device="cuda"))
    runner.configure_workspace(_placeholder_workspace[-1])
    return runner


_placeholder_workspace: list[torch.Tensor] = []


def block_input_scales(m: int, k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(buffer [K/128, round_up(M, 4)], view [M, K/128])``: the activation scales as the kernel
    reads them (K-block-major, M padded to 4); the quantizer writes through the view."""
    buffer = torch.empty((k // 128, -(-m // 4) * 4), dtype=torch.float32, device=device)
    return buffer, buffer[:, :m].t()


def _fp8_block_mm_cuda(
    x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    m, k = x.shape
    out = torch.empty((m, weight.shape[0]), dtype=torch.bfloat16, device=x.device)
    if m == 0:
        return out
    buffer, scales = block_input_scales(m, k, x.device)
    q = quantize_per_token_group(x, scales)
    blockscale_runner().run_gemm(q, weight, out, buffer, weight_scale)
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

#: The CUDA implementations by op, for eager callers (kernels call these unless compiling).
EAGER = {fp8_per_tensor_mm: _fp8_per_tensor_mm_cuda, fp8_block_mm: _fp8_block_mm_cuda}
