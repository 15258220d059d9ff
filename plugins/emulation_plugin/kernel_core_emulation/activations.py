"""What each family's activation mode does to the activations before the GEMM.

The oracle quantizes and immediately dequantizes (QDQ) the activations exactly as the format
prescribes, so its result carries the same activation rounding a native W8A8 / W4A4 kernel has;
weight-only modes (W4A16, W8A16) leave them untouched. Everything here runs in fp32.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from kernel_core.config import LayerConfig
from kernel_core.formats import fp4, fp8, int8, mx

__all__ = ["quantize_dequantize_activations"]


def _int8(config: LayerConfig, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    if config.input_scale == "static":
        q, scale, zero_point = int8.quantize_int8(
            x,
            "tensor",
            symmetric=config.input_symmetric,
            scale=params["input_scale"],
            zero_point=params.get("input_zero_point"),
        )
    else:
        q, scale, zero_point = int8.quantize_int8(x, "token", symmetric=config.input_symmetric)
    return int8.dequantize_int8(q, scale, zero_point)


def _fp8(config: LayerConfig, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    if config.activation_mode == "w8a16":
        return x
    if config.input_scale == "static":
        q, scale = fp8.quantize_fp8(x, "tensor", scale=params["input_scale"])
    else:
        q, scale = fp8.quantize_fp8(x, config.input_scale_granularity)
    return fp8.dequantize_fp8(q, scale)


def _fp8_block(
    config: LayerConfig, x: torch.Tensor, params: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    q, scale = fp8.quantize_fp8_per_token_group(x, config.input_group)
    return fp8.dequantize_fp8_per_token_group(q, scale)


def _nvfp4(
    config: LayerConfig, x: torch.Tensor, params: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    if config.activation_mode == "w4a16":
        return x
    return fp4.qdq_nvfp4(x, params["input_global_scale"])


def _mxfp4(
    config: LayerConfig, x: torch.Tensor, params: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    return x if config.activation_mode == "w4a16" else fp4.qdq_mxfp4(x)


def _mxfp8(
    config: LayerConfig, x: torch.Tensor, params: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    return x if config.activation_mode == "w8a16" else mx.qdq_mxfp8(x)


def _weight_only(
    config: LayerConfig, x: torch.Tensor, params: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    return x


_BY_FAMILY = {
    "mp": _weight_only,
    "int8": _int8,
    "fp8": _fp8,
    "fp8_block": _fp8_block,
    "nvfp4": _nvfp4,
    "mxfp4": _mxfp4,
    "mxfp8": _mxfp8,
}


def quantize_dequantize_activations(
    config: LayerConfig, x: torch.Tensor, params: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """``x`` (fp32, ``[M, K]``) as the kernel's activation mode sees it, in fp32."""
    return _BY_FAMILY[config.family](config, x, params).to(torch.float32)
