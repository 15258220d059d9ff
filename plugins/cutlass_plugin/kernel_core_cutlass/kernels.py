"""The three CUTLASS SM90 kernels: W8A8 FP8, W8A8 int8 and FP8 1x128 / 128x128 block-scaled.

Each keeps the weight as the checkpoint gives it, ``(N, K)`` K-major, which is exactly the
column-major B operand of the TN CUTLASS GEMM: processing only normalizes the scales (flat fp32
vectors, the block scales transposed to the MN-major layout the SM90 collective reads) and, for
asymmetric int8, precomputes the weight's per-channel code sums for the zero-point correction.

``apply_weights`` is one quantizer launch and one GEMM launch. Both are custom ops; outside
torch.compile their implementations are called directly (:func:`kernel_core_cutlass.ops.call`).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from kernel_core.families.fp8 import FP8ScaledMMLinearKernel, FP8ScaledMMLinearLayerConfig
from kernel_core.families.fp8_block import Fp8BlockLinearLayerConfig, Fp8BlockScaledMMLinearKernel
from kernel_core.families.int8 import Int8ScaledMMLinearKernel, Int8ScaledMMLinearLayerConfig
from kernel_core.kernel import Priority
from kernel_core.params import replace_parameter
from kernel_core.platform import current_compute_capability
from kernel_core_cutlass import ops, quant

__all__ = [
    "CutlassFP8ScaledMMLinearKernel",
    "CutlassFp8BlockScaledMMLinearKernel",
    "CutlassInt8ScaledMMLinearKernel",
]

_OUT_DTYPES = (torch.bfloat16, torch.float16)
#: TMA needs 16-byte aligned rows: K of the 1-byte operands, N of the 2-byte output.
_ALIGN_K = 16
_ALIGN_N = 8


class _CutlassSm90:
    """What the three kernels share: the platform probe, the build, the shape checks."""

    priority: ClassVar[int] = Priority.SPECIALIZED
    platforms: ClassVar[frozenset[str]] = frozenset({"cuda"})

    @classmethod
    def is_supported(cls, compute_capability: int | None = None) -> tuple[bool, str | None]:
        if compute_capability is None:
            compute_capability = current_compute_capability()
        if compute_capability is None:
            return False, "needs an NVIDIA GPU (SM90); no CUDA device is visible"
        if compute_capability != 90:
            return False, (
                f"needs SM90 (Hopper: wgmma and TMA, built for sm_90a); found "
                f"compute capability {compute_capability // 10}.{compute_capability % 10}"
            )
        problem = ops.toolchain_problem()
        if problem:
            return False, problem
        return True, None

    @classmethod
    def warmup(cls, compute_capability: int | None = None) -> None:
        """Build the extension now (the first build takes minutes; later ones load from disk)."""
        ops.build()

    @staticmethod
    def _shape_problem(config, k_multiple: int) -> str | None:
        n, k = config.weight_shape
        if config.out_dtype not in _OUT_DTYPES:
            return f"output dtype must be bfloat16 or float16, found {config.out_dtype}"
        if k % k_multiple:
            return f"K (in_features) must be a multiple of {k_multiple}, found {k}"
        if n % _ALIGN_N:
            return f"N (out_features) must be a multiple of {_ALIGN_N}, found {n}"
        return None

    @staticmethod
    def _flat_scale(layer: torch.nn.Module, name: str) -> None:
        """A per-tensor ([] / [1]) or per-channel ([N] / [N, 1]) scale as a flat fp32 vector."""
        scale = getattr(layer, name)
        replace_parameter(layer, name, scale.reshape(-1).contiguous())

    @staticmethod
    def _contiguous_weight(layer: torch.nn.Module) -> None:
        if not layer.weight.is_contiguous():
            replace_parameter(layer, "weight", layer.weight.contiguous())

    def _rows(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``x`` as (tokens, K), after the contract's input checks (a wrong K, dtype or bias, or an
        x or bias on another device than the layer's, is a ValueError naming what was expected and
        found, not a failure deep inside the GEMM). The shared workspace lives on the layer's
        device (``process_weights_after_loading``)."""
        self.check_apply_inputs(x, bias)
        self.check_apply_device(x, self.workspace, bias)
        return x.reshape(-1, self.config.weight_shape[1])

    @staticmethod
    def _bias(bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        if bias is None:
            return None
        return bias.to(dtype).contiguous()


class CutlassFP8ScaledMMLinearKernel(_CutlassSm90, FP8ScaledMMLinearKernel):
    """W8A8 E4M3 GEMM with the scales and bias in the epilogue (per-tensor or per-channel weight
    scales; static per-tensor, dynamic per-tensor or dynamic per-token activation scales)."""

    @classmethod
    def can_implement(cls, config: FP8ScaledMMLinearLayerConfig) -> tuple[bool, str | None]:
        if config.activation_mode != "w8a8":
            return False, (
                "W8A16 (FP8 weights, 16-bit activations) is a weight-only GEMM: Marlin serves it; "
                "this kernel quantizes activations to FP8"
            )
        problem = cls._shape_problem(config, _ALIGN_K)
        return (problem is None), problem

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        self.validate_layer(layer)
        self._contiguous_weight(layer)
        self._flat_scale(layer, "weight_scale")
        if self.config.input_scale == "static":
            self._flat_scale(layer, "input_scale")
        self.workspace = ops.workspace_for(layer.weight.device)

    def apply_weights(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        n = self.config.weight_shape[0]
        x2 = self._rows(x, bias)
        if self.config.input_scale == "static":
            scale = layer.input_scale
            q = ops.call(quant.quantize_fp8_static, x2, scale)
        elif self.config.input_scale_granularity == "token":
            q, scale = ops.call(quant.quantize_fp8_per_token, x2, layer.weight)
        else:
            q, scale = ops.call(quant.quantize_fp8_per_tensor, x2)
        out = ops.call(
            ops.scaled_mm,
            q, layer.weight, scale, layer.weight_scale, None, None,
            self._bias(bias, self.config.out_dtype), self.workspace, self.config.out_dtype,
        )
        return out.reshape(*x.shape[:-1], n)


class CutlassInt8ScaledMMLinearKernel(_CutlassSm90, Int8ScaledMMLinearKernel):
    """W8A8 int8 GEMM (int32 accumulation); asymmetric activations subtract
    ``zero_point * colsum(W_q)`` in the epilogue, with colsum precomputed at load."""

    @classmethod
    def can_implement(cls, config: Int8ScaledMMLinearLayerConfig) -> tuple[bool, str | None]:
        problem = cls._shape_problem(config, _ALIGN_K)
        return (problem is None), problem

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        self.validate_layer(layer)
        self._contiguous_weight(layer)
        self._flat_scale(layer, "weight_scale")
        if not self.config.input_symmetric:
            # sum_k W_q[n, k] is exact in fp32 (|sum| <= 128 * K < 2^24 for K < 131072).
            colsum = layer.weight.sum(dim=1, dtype=torch.int32).to(torch.float32)
            replace_parameter(layer, "weight_colsum", colsum)
        if self.config.input_scale == "static":
            self._flat_scale(layer, "input_scale")
            if not self.config.input_symmetric:
                self._flat_scale(layer, "input_zero_point")
                zp_neg = -layer.input_zero_point.to(torch.float32)
                replace_parameter(layer, "input_zero_point_neg", zp_neg)
        self.workspace = ops.workspace_for(layer.weight.device)

    def apply_weights(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        n = self.config.weight_shape[0]
        x2 = self._rows(x, bias)
        symmetric = self.config.input_symmetric
        if self.config.input_scale == "static":
            zp = None if symmetric else layer.input_zero_point
            q = ops.call(quant.quantize_int8_static, x2, layer.input_scale, zp)
            scale = layer.input_scale
            zp_neg = None if symmetric else layer.input_zero_point_neg
        else:
            q, scale, _, zp_neg = ops.call(
                quant.quantize_int8_per_token, x2, symmetric, layer.weight)
            if symmetric:
                zp_neg = None
        colsum = None if symmetric else layer.weight_colsum
        out = ops.call(
            ops.scaled_mm,
            q, layer.weight, scale, layer.weight_scale, zp_neg, colsum,
            self._bias(bias, self.config.out_dtype), self.workspace, self.config.out_dtype,
        )
        return out.reshape(*x.shape[:-1], n)


class CutlassFp8BlockScaledMMLinearKernel(_CutlassSm90, Fp8BlockScaledMMLinearKernel):
    """DeepSeek-style FP8 GEMM on CUTLASS's SM90 blockwise-scaling mainloop: activations
    quantized per token and 128 channels on the GPU, weights with 128x128 block scales."""

    @classmethod
    def can_implement(cls, config: Fp8BlockLinearLayerConfig) -> tuple[bool, str | None]:
        problem = cls._shape_problem(config, config.input_group)
        return (problem is None), problem

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        self.validate_layer(layer)
        self._contiguous_weight(layer)
        # [N/128, K/128] -> [K/128, N/128]: the SM90 collective reads the scales N-major.
        replace_parameter(layer, "weight_scale", layer.weight_scale.t().contiguous())
        # The same per 64 rows, [K/128, ceil(N/64)], for the tiles 64 wide in N (a few KiB).
        n64 = -(-self.config.weight_shape[0] // 64)
        replace_parameter(layer, "weight_scale_n64",
                          layer.weight_scale.repeat_interleave(2, dim=1)[:, :n64].contiguous())
        self.workspace = ops.workspace_for(layer.weight.device)

    def apply_weights(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        n = self.config.weight_shape[0]
        x2 = self._rows(x, bias)
        # The quantizer pads the token count to a multiple of 4 (see quantize_fp8_per_group);
        # the padded rows' outputs are dropped here (a view: no copy).
        q, x_scale = ops.call(quant.quantize_fp8_per_group, x2, self.config.input_group)
        out = ops.call(
            ops.block_scaled_mm,
            q, layer.weight, x_scale, layer.weight_scale,
            self._bias(bias, self.config.out_dtype), self.workspace, self.config.out_dtype,
            -1, -1, -1, -1, layer.weight_scale_n64,
        )
        return out[: x2.shape[0]].reshape(*x.shape[:-1], n)
