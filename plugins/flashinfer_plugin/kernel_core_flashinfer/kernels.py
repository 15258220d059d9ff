"""The plugin's two kernels: per-tensor FP8 (``bmm_fp8``) and 128x128-block FP8
(``fp8_blockscale_gemm_sm90``). Checks never import flashinfer; the ops module is imported on
first use, so registering and selecting stay cheap on machines without a GPU."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from types import ModuleType

import torch

from kernel_core.families.fp8 import FP8ScaledMMLinearKernel, FP8ScaledMMLinearLayerConfig
from kernel_core.families.fp8_block import Fp8BlockLinearLayerConfig, Fp8BlockScaledMMLinearKernel
from kernel_core.kernel import Priority
from kernel_core.params import processed_tensors, replace_parameter
from kernel_core_flashinfer.eager import checked_path_only, eager_call
from kernel_core_flashinfer.environment import platform_problem

__all__ = ["FlashInferFp8ScaledMMLinearKernel", "FlashInferFp8BlockScaledMMLinearKernel"]


def _ops() -> ModuleType:
    return importlib.import_module("kernel_core_flashinfer.ops")


def _triton_problem() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (the activation quantizers are Triton kernels)"
    return None


def _as_scalar_scale(scale: torch.Tensor) -> torch.Tensor:
    """``[]`` or ``[1]`` -> a contiguous fp32 ``[1]``: what ``bmm_fp8`` reads through a pointer."""
    return scale.detach().reshape(1).to(torch.float32).contiguous()


#: torch.compile's tracing tests, bound once (the functions themselves, so torch.compile still folds
#: them; the attribute lookups cost host time on every eager call). The hot path asks the cheaper
#: is_dynamo_compiling (one Python call, not two) and takes only plain tensors (the compiled
#: check), so the other tracers (make_fx, non-strict torch.export), which run Python on tensor
#: subclasses, reach _apply and its full is_compiling.
_is_compiling = torch.compiler.is_compiling
_is_dynamo_compiling = torch.compiler.is_dynamo_compiling

#: Where the eager path keeps, per layer, its plan: ``(K, act_dtype, N, weight_ptr,
#: weight_scale_ptr, input_scale_ptr or 0, runner)``, the layout ``csrc/eager_call.cpp`` reads.
#: The pointers are those of the layer's Parameters the runner was made from; the runner is the
#: GEMM with its operands bound (``ops.per_tensor_runner`` / ``ops.block_runner``): plain-tensor
#: aliases of the Parameters (no copy; on the H100 machine, Triton 3.6 and tvm-ffi took the static
#: path's Parameter scales 2.6 us slower per call than plain tensors), for fp8 the weight's
#: ``[1, K, N]`` view and the device's shared workspace. A call compares the pointers, so a
#: replaced Parameter or one whose ``.data`` was swapped is seen at the next call (the plan keeps
#: the old storage alive, so a new tensor cannot reuse its address).
_PLAN = "_kernel_core_flashinfer_plan"


class _PlannedEagerApply:
    """``apply_weights`` of both kernels. The serving case (eager, a plain contiguous ``[M, K]``
    x of the config's dtype, a ``[N]`` bias or none, the layer's plan current) is recognised by
    one compiled function (:func:`kernel_core_flashinfer.eager.eager_call`) that calls the layer's
    runner: with the same checks in Python the plugin measured 2.4-2.9 us above calling FlashInfer
    by hand on the H100, where it may add at most 3 us (README). Anything else takes
    :meth:`_apply`, which checks again and names what is wrong. A kernel provides ``_n``, ``_k``,
    ``_act_dtype``, ``_static`` (an input_scale Parameter to follow), ``_traced_op`` (the
    registered op, for torch.compile) and ``_runner`` (the GEMM with the layer's operands bound,
    for the plan), and calls :meth:`_ready_eager_path` when it processes a layer."""

    _n: int
    _k: int
    _act_dtype: torch.dtype
    _static: bool
    _eager_call: Callable = staticmethod(checked_path_only)

    def apply_weights(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        if not _is_dynamo_compiling():
            out = self._eager_call(layer, x, bias, _PLAN)
            if out is not None:
                return out
        return self._apply(layer, x, bias)

    def _apply(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """Every other call: checks the inputs (naming what is wrong), flattens ``(..., K)``,
        calls the op while torch.compile traces, else checks that x and bias are on the layer's
        device, (re)makes the plan and runs eagerly."""
        self.check_apply_inputs(x, bias)  # type: ignore[attr-defined]
        shape = x.shape
        rows = x if len(shape) == 2 and x.is_contiguous() else x.reshape(-1, self._k).contiguous()
        if _is_compiling():
            out = self._traced_op(layer, rows, bias)
        else:
            params = processed_tensors(layer)
            weight = params["weight"]
            self.check_apply_device(x, weight, bias)  # type: ignore[attr-defined]
            key = (
                weight.data_ptr(), params["weight_scale"].data_ptr(),
                params["input_scale"].data_ptr() if self._static else 0,
            )
            plan = layer.__dict__.get(_PLAN)
            if plan is None or plan[3:6] != key:
                plan = (self._k, self._act_dtype, self._n, *key, self._runner(params))
                layer.__dict__[_PLAN] = plan
            out = plan[6](rows, rows.shape[0], bias)
        return out if rows is x else out.reshape(*shape[:-1], self._n)

    def _ready_eager_path(self, layer: torch.nn.Module) -> None:
        """After processing a layer: drop its old plan (the next call makes one from the new
        Parameters) and load the GEMM bindings and the compiled check."""
        layer.__dict__.pop(_PLAN, None)
        self._ops = _ops()
        self._eager_call = eager_call()

    def _traced_op(
        self, layer: torch.nn.Module, rows: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def _runner(self, params: dict[str, torch.Tensor]) -> Callable:
        raise NotImplementedError


class FlashInferFp8ScaledMMLinearKernel(_PlannedEagerApply, FP8ScaledMMLinearKernel):
    """W8A8 FP8 with one weight scale and one activation scale (static or dynamic), through
    FlashInfer's ``bmm_fp8`` (cuBLASLt). SM89 and up."""

    name = "FlashInferFp8ScaledMMLinearKernel"
    priority = Priority.LIBRARY
    platforms = frozenset({"cuda"})

    @classmethod
    def is_supported(cls, compute_capability: int | None = None) -> tuple[bool, str | None]:
        problem = platform_problem(compute_capability, minimum=89) or _triton_problem()
        return problem is None, problem

    @classmethod
    def can_implement(cls, config: FP8ScaledMMLinearLayerConfig) -> tuple[bool, str | None]:
        if config.activation_mode != "w8a8":
            return False, (
                f"activation_mode={config.activation_mode!r}: bmm_fp8 multiplies two FP8 "
                "operands; W8A16 (16-bit activations) is not supported"
            )
        if config.weight_scale_granularity != "tensor":
            return False, (
                f"weight_scale_granularity={config.weight_scale_granularity!r}: bmm_fp8 takes one "
                "scalar scale per operand (cuBLASLt scale pointers); per-channel is not supported"
            )
        if config.input_scale_granularity != "tensor":
            return False, (
                f"input_scale_granularity={config.input_scale_granularity!r}: bmm_fp8 takes one "
                "scalar activation scale; per-token is not supported"
            )
        if config.out_dtype not in (torch.bfloat16, torch.float16):
            return False, f"out_dtype={config.out_dtype}: bmm_fp8 writes bfloat16 or float16 only"
        n, k = config.weight_shape
        if n % 16 or k % 16:
            return False, f"N={n} and K={k} must be multiples of 16 (cuBLASLt FP8 alignment)"
        return True, None

    @classmethod
    def warmup(cls, compute_capability: int | None = None) -> None:
        """Build (or load) FlashInfer's ``gemm`` JIT module, which holds ``bmm_fp8``, and the
        plugin's compiled eager check."""
        _ops().cublas_fp8_gemm()
        eager_call()

    def __init__(self, config: FP8ScaledMMLinearLayerConfig) -> None:
        super().__init__(config)
        self._n, self._k = config.weight_shape
        self._act_dtype = config.act_dtype
        self._out_dtype = config.out_dtype
        self._static = config.input_scale == "static"

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        params = self.validate_layer(layer)
        replace_parameter(layer, "weight", params["weight"].detach().contiguous())
        replace_parameter(layer, "weight_scale", _as_scalar_scale(params["weight_scale"]))
        if "input_scale" in params:
            replace_parameter(layer, "input_scale", _as_scalar_scale(params["input_scale"]))
        self._ready_eager_path(layer)

    def _traced_op(
        self, layer: torch.nn.Module, rows: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        input_scale = layer.input_scale if self._static else None
        return self._ops.fp8_per_tensor_mm(
            rows, layer.weight, layer.weight_scale, input_scale, bias, self._out_dtype
        )

    def _runner(self, params: dict[str, torch.Tensor]) -> Callable:
        weight = params["weight"]
        return self._ops.per_tensor_runner(
            self._n, weight.detach().t().unsqueeze(0), params["weight_scale"].detach(),
            params["input_scale"].detach() if self._static else None, self._out_dtype,
            self._ops.cublas_workspace(weight.device),
        )


class FlashInferFp8BlockScaledMMLinearKernel(_PlannedEagerApply, Fp8BlockScaledMMLinearKernel):
    """DeepSeek-style FP8 (128x128 weight blocks, 1x128 dynamic activation groups) through
    FlashInfer's ``fp8_blockscale_gemm_sm90``; SM90 only; bf16 in and out. The activations are
    quantized by this plugin as the emulation oracle does, then the kernel's FP8-input mode runs
    (accurate at every M measured, 1..8192; README)."""

    name = "FlashInferFp8BlockScaledMMLinearKernel"
    priority = Priority.LIBRARY
    platforms = frozenset({"cuda"})

    def __init__(self, config: Fp8BlockLinearLayerConfig) -> None:
        super().__init__(config)
        self._n, self._k = config.weight_shape
        self._act_dtype = config.act_dtype
        self._static = False  # activation scales are computed per call

    @classmethod
    def is_supported(cls, compute_capability: int | None = None) -> tuple[bool, str | None]:
        problem = platform_problem(compute_capability, exactly=90) or _triton_problem()
        return problem is None, problem

    @classmethod
    def can_implement(cls, config: Fp8BlockLinearLayerConfig) -> tuple[bool, str | None]:
        n, k = config.weight_shape
        if config.out_dtype != torch.bfloat16:
            return False, (
                f"out_dtype={config.out_dtype}: fp8_blockscale_gemm_sm90 always writes bfloat16 "
                "bits (a float16 output would be accepted and silently hold bf16 bit patterns)"
            )
        if config.act_dtype != torch.bfloat16:
            return False, (
                f"act_dtype={config.act_dtype}: fp8_blockscale_gemm_sm90 quantizes bfloat16 "
                "activations only"
            )
        if k % 128:
            return False, f"K={k} must be a multiple of 128 (fp8_blockscale_gemm_sm90)"
        if n % 64:
            return False, f"N={n} must be a multiple of 64 (fp8_blockscale_gemm_sm90)"
        return True, None

    @classmethod
    def warmup(cls, compute_capability: int | None = None) -> None:
        """Build (or load) FlashInfer's ``fp8_blockscale_gemm_90`` JIT module. The DeepGEMM
        kernels it compiles per (N, K, tile config) are built on the first call of each shape,
        so run each batch size once eagerly before capturing CUDA graphs. Also builds (or loads)
        the plugin's compiled eager check."""
        _ops().blockscale_runner()
        eager_call()

    def _check_not_per_row(self, layer: torch.nn.Module) -> None:
        """The trap: FlashInfer accepts ``[N, K/128]`` (1x128, per-row) weight scales, but its
        kernels read one scale per 128 rows, so such a tensor is misread, not an error."""
        n, k = self.config.weight_shape
        scale = getattr(layer, "weight_scale", None)
        if (
            isinstance(scale, torch.Tensor)
            and tuple(scale.shape) == (n, k // 128)
            and n != -(-n // 128)
        ):
            raise ValueError(
                f"{type(layer).__name__}.weight_scale: expected one scale per 128x128 block, "
                f"shape [{-(-n // 128)}, {k // 128}], found per-row (1x128) scales "
                f"{list(scale.shape)}; fp8_blockscale_gemm_sm90 would read them as block "
                "scales (row n // 128), giving wrong results. Requantize with 128x128 blocks"
            )

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        self._check_not_per_row(layer)
        params = self.validate_layer(layer)
        replace_parameter(layer, "weight", params["weight"].detach().contiguous())
        replace_parameter(layer, "weight_scale", params["weight_scale"].detach().contiguous())
        self._ready_eager_path(layer)

    def _traced_op(
        self, layer: torch.nn.Module, rows: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return self._ops.fp8_block_mm(rows, layer.weight, layer.weight_scale, bias)

    def _runner(self, params: dict[str, torch.Tensor]) -> Callable:
        return self._ops.block_runner(
            self._n, self._k, params["weight"].detach(), params["weight_scale"].detach()
        )
