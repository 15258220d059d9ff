"""An FP8 weight-only (W8A16) kernel in plain torch: ``out = x @ (fp32(W_q) * s_w)^T + bias``.

It reads the ``fp8`` family's parameter contract (``weight`` float8_e4m3fn ``[N, K]``,
``weight_scale`` float32 per tensor or per channel) and runs as a ``torch.library`` custom op with a
fake implementation, so engines can compile it with ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

from typing import Any

import torch

from kernel_core import FP8ScaledMMLinearKernel, Priority

__all__ = ["ExampleTorchFp8W8A16LinearKernel"]


@torch.library.custom_op("kernel_core_example::fp8_w8a16_linear", mutates_args=())
def fp8_w8a16_linear(
    x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """Dequantize in fp32, round the weight to the activation dtype, multiply in that dtype."""
    scale = weight_scale.reshape(-1, 1) if weight_scale.numel() > 1 else weight_scale.reshape(())
    dense = (weight.to(torch.float32) * scale).to(x.dtype)
    out = torch.matmul(x, dense.t())
    return out if bias is None else out + bias.to(x.dtype)


@fp8_w8a16_linear.register_fake
def _(x, weight, weight_scale, bias):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


class ExampleTorchFp8W8A16LinearKernel(FP8ScaledMMLinearKernel):
    """FP8 W8A16 with 16-bit activations, output in the activation dtype."""

    priority = Priority.PORTABLE
    platforms = frozenset({"cpu", "cuda"})

    @classmethod
    def is_supported(cls, compute_capability: int | None = None) -> tuple[bool, str | None]:
        return True, None  # plain torch: runs wherever torch does

    @classmethod
    def can_implement(cls, config: Any) -> tuple[bool, str | None]:
        if config.activation_mode != "w8a16":
            return False, (
                f"weight-only: activation_mode must be 'w8a16', not {config.activation_mode!r}"
            )
        if config.act_dtype not in (torch.float16, torch.bfloat16):
            return False, f"act_dtype must be float16 or bfloat16, not {config.act_dtype}"
        if config.out_dtype != config.act_dtype:
            return False, (
                f"out_dtype must equal act_dtype ({config.act_dtype}), not {config.out_dtype}"
            )
        return True, None

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        # Check the parameter contract once; this kernel uses the parameters as they are (a real
        # kernel would repack here, in place, with kernel_core.replace_parameter).
        self.validate_layer(layer)

    def apply_weights(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        # x must be (..., K) in the config's act_dtype and bias [N]: a ValueError naming expected
        # and found otherwise (the conformance kit checks that bad input is refused this way).
        self.check_apply_inputs(x, bias)
        return fp8_w8a16_linear(x, layer.weight, layer.weight_scale, bias)
