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
are registered with ``torch.library.Library`` (define + CUDA impl). Both ops' CUDA implementations
run :func:`fp8_per_tensor_gemm` / :func:`fp8_block_gemm`; eager callers (the kernels, unless
torch.compile is tracing) call those directly, which saves the dispatcher's Python round trip
(several microseconds of host time per call).

FlashInfer's public wrappers are not called per step: ``bmm_fp8``'s checks and autotuner lookup
cost a median 126 us of host time per call on the H100 machine (benchmark), so the cuBLASLt binding
it runs (``tactic=-1``) is called directly; ``fp8_blockscale_gemm_sm90``'s bf16-input mode
allocates and configures a workspace on FlashInfer's process-wide runner per call, which the
FP8-input mode does not need.

This module imports flashinfer and triton: import it only once a kernel is being used.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from kernel_core.workspace import device_workspace
from kernel_core_flashinfer.environment import flashinfer
from kernel_core_flashinfer.triton_kernels import quantize_per_tensor, quantize_per_token_group

__all__ = [
    "NAMESPACE",
    "fp8_per_tensor_mm",
    "fp8_block_mm",
    "fp8_per_tensor_gemm",
    "fp8_block_gemm",
    "per_tensor_runner",
    "block_runner",
    "CUBLAS_WORKSPACE",
    "cublas_workspace",
    "cublas_fp8_gemm",
    "blockscale_runner",
    "blockscale_run_gemm",
    "block_input_scales",
]

NAMESPACE = "kernel_core_flashinfer"
_library = torch.library.Library(NAMESPACE, "DEF")

#: The owner name of the cuBLASLt workspace in kernel_core.workspace.
CUBLAS_WORKSPACE = f"{NAMESPACE}.cublas"


def cublas_workspace(device: torch.device) -> torch.Tensor:
    """cuBLASLt's workspace: one buffer per device, shared by every layer (FlashInfer's size)."""

    def allocate(d: torch.device) -> torch.Tensor:
        from flashinfer.gemm.gemm_base import DEFAULT_WORKSPACE_SIZE

        return torch.empty(DEFAULT_WORKSPACE_SIZE, dtype=torch.uint8, device=d)

    return device_workspace(CUBLAS_WORKSPACE, device, allocate)


# -- per-tensor FP8 through FlashInfer's cuBLASLt binding ---------------------------------------


@functools.cache
def cublas_fp8_gemm() -> Any:
    """``bmm_fp8(A [B, M, K], B [B, K, N] column-major, D, A_scale, B_scale, workspace)`` of
    FlashInfer's ``gemm`` JIT module: what ``bmm_fp8(backend="cublas")`` runs at ``tactic=-1``
    (cuBLASLt's heuristic), without the runner's Python layer. Loaded (or built) once."""
    flashinfer()
    from flashinfer.jit.gemm import gen_gemm_module

    return gen_gemm_module().build_and_load().bmm_fp8


def per_tensor_runner(
    n: int,
    weight_t: torch.Tensor,
    weight_scale: torch.Tensor,
    input_scale: torch.Tensor | None,
    out_dtype: torch.dtype,
    workspace: torch.Tensor,
) -> Callable[[torch.Tensor, int, torch.Tensor | None], torch.Tensor]:
    """The per-tensor FP8 GEMM with its operands bound: ``run(x, m, bias)`` for a contiguous
    ``x [M, K]``. ``weight_t``: the ``(N, K)`` weight as ``[1, K, N]`` (``weight.t()[None]``,
    column-major as cuBLASLt reads it); ``input_scale`` None quantizes dynamically. The eager path
    makes one per layer (every lookup done once: each costs host time per call); the op makes one
    per call. A run allocates the output, the codes and (dynamic) the scale, and launches the
    quantizer (dynamic: after an amax) and the GEMM."""
    bmm = cublas_fp8_gemm()
    device = weight_t.device

    def run(x: torch.Tensor, m: int, bias: torch.Tensor | None) -> torch.Tensor:
        if not m:
            return torch.empty((m, n), dtype=out_dtype, device=device)
        q, scale = quantize_per_tensor(x, input_scale)
        out = torch.empty((1, m, n), dtype=out_dtype, device=device)
        bmm(q, weight_t, out, scale, weight_scale, workspace)
        if bias is not None:
            out.add_(bias)
        return out[0]

    return run


def fp8_per_tensor_gemm(
    x: torch.Tensor,
    m: int,
    n: int,
    weight_t: torch.Tensor,
    weight_scale: torch.Tensor,
    input_scale: torch.Tensor | None,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    workspace: torch.Tensor,
) -> torch.Tensor:
    """One call of :func:`per_tensor_runner`'s GEMM (the op's implementation)."""
    return per_tensor_runner(n, weight_t, weight_scale, input_scale, out_dtype, workspace)(
        x, m, bias
    )


def _fp8_per_tensor_mm_cuda(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    input_scale: torch.Tensor | None,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    weight_t = weight.t().unsqueeze(0)
    return fp8_per_tensor_gemm(
        x, x.shape[0], weight.shape[0], weight_t, weight_scale, input_scale, bias, out_dtype,
        cublas_workspace(x.device),
    )


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


@functools.cache
def blockscale_run_gemm() -> Any:
    """The runner's ``run_gemm(input, weight, output, input_scales, weight_scales)``."""
    return blockscale_runner().run_gemm


def block_input_scales(m: int, k: int, device: torch.device) -> torch.Tensor:
    """The activation scales as the kernel reads them: ``[round_up(M, 4), K/128]`` with strides
    ``(1, round_up(M, 4))``, i.e. ``[K/128, round_up(M, 4)]`` row-major (K-block-major, M padded
    to 4), made by one allocation; the quantizer writes rows ``0..M-1``."""
    padded = -(-m // 4) * 4
    return torch.empty_strided(
        (padded, k // 128), (1, padded), dtype=torch.float32, device=device
    )


def block_runner(
    n: int, k: int, weight: torch.Tensor, weight_scale: torch.Tensor
) -> Callable[[torch.Tensor, int, torch.Tensor | None], torch.Tensor]:
    """The block FP8 GEMM with its operands bound: ``run(x, m, bias)`` for a contiguous bf16
    ``x [M, K]``, quantized per 1x128 group into the kernel's scale layout
    (:func:`block_input_scales`), then the kernel's FP8-input mode. Made once per layer by the
    eager path, per call by the op. A run allocates the output, the codes and the scales and
    launches the quantizer and the GEMM."""
    run_gemm = blockscale_run_gemm()
    device = weight.device

    def run(x: torch.Tensor, m: int, bias: torch.Tensor | None) -> torch.Tensor:
        out = torch.empty((m, n), dtype=torch.bfloat16, device=device)
        if m:
            scales = block_input_scales(m, k, device)
            q = quantize_per_token_group(x, scales)
            run_gemm(q, weight, out, scales, weight_scale)
            if bias is not None:
                out.add_(bias)
        return out

    return run


def fp8_block_gemm(
    x: torch.Tensor,
    m: int,
    n: int,
    k: int,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """One call of :func:`block_runner`'s GEMM (the op's implementation)."""
    return block_runner(n, k, weight, weight_scale)(x, m, bias)


def _fp8_block_mm_cuda(
    x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    m, k = x.shape
    return fp8_block_gemm(x, m, weight.shape[0], k, weight, weight_scale, bias)


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
