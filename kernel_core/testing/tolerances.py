"""How far a kernel's output may be from the emulation oracle's, by relative error.

``rel = ||out - ref|| / ||ref||`` over the whole output, both computed in float64 from the outputs.
The kernel and the oracle see the same quantized weight, so what remains is accumulation order,
the rounding of the output and, where the kernel quantizes activations itself, an occasional code
that rounds the other way:

================================  ==========  ==========================================
case                              tolerance   why
================================  ==========  ==========================================
fp32 activations and output       1e-3        accumulation order, fp32 rounding
fp16 / bf16 activations or output 1e-2        16-bit rounding (bf16: 2^-9): of the output,
                                              or of the decoded weight, which tensor cores
                                              take in the activations' 16-bit type
+ 8-bit activations (W8A8)        + 1e-2      int8, fp8, fp8_block, mxfp8 activation codes
+ 4-bit activations (W4A4)        + 3e-2      nvfp4, mxfp4 activation codes (coarse grid)
================================  ==========  ==========================================

A real bug (a wrong scale, a swapped nibble, a dropped bias, a missed group) gives an error of
order 1, far above every bound.
"""

from __future__ import annotations

import torch

from kernel_core.config import LayerConfig

__all__ = ["OUTPUT_TOLERANCE", "ACTIVATION_TOLERANCE", "tolerance_for", "quantizes_activations"]

OUTPUT_TOLERANCE = {torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 1e-2}
ACTIVATION_TOLERANCE = {"w8a8": 1e-2, "w4a4": 3e-2}


def _activation_mode(config: LayerConfig) -> str:
    return getattr(config, "activation_mode", None) or config.activation_modes[0]


def quantizes_activations(config: LayerConfig) -> bool:
    """True when the config's mode quantizes activations (W8A8, W4A4)."""
    return _activation_mode(config) in ACTIVATION_TOLERANCE


def tolerance_for(config: LayerConfig) -> float:
    """The relative-error bound for ``config`` (see the table in this module).

    The lower of the activation and output precisions sets the base: a kernel fed bf16
    activations multiplies bf16 operands even when it writes fp32.
    """
    bound = max(OUTPUT_TOLERANCE[config.out_dtype], OUTPUT_TOLERANCE[config.act_dtype])
    return bound + ACTIVATION_TOLERANCE.get(_activation_mode(config), 0.0)
