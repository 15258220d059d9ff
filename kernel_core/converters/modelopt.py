"""NVIDIA ModelOpt checkpoints -> the layer parameter contract.

ModelOpt stores *decode* scales, so values pass through: NVFP4 ``weight`` uint8 ``[N, K/2]``
(even k in the low nibble), ``weight_scale`` E4M3 ``[N, K/16]``, ``weight_scale_2`` the global
decode multiplier (amax / (448*6)) and ``input_scale`` the activation's; FP8 ``weight`` E4M3
``[N, K]``, ``weight_scale`` and ``input_scale`` decode multipliers. A fused layer loaded with one
value per partition (``[P]``) takes the max, as vLLM does; FP8 per-tensor scales of a fused layer
become an exact per-channel scale when ``partition_sizes`` is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from kernel_core.converters._tensors import (
    FLOAT_SCALE_DTYPES,
    CheckpointTensors,
    Converted,
    finish,
    reduce_partition_scalars,
    w8a8_weight_scale,
)
from kernel_core.families import FP8ScaledMMLinearLayerConfig, NvFp4LinearLayerConfig

__all__ = ["QUANT_ALGOS", "convert", "convert_fp8", "convert_nvfp4"]

CONVENTION = "modelopt"
#: ``quant_algo`` values :func:`convert` reads.
QUANT_ALGOS = ("NVFP4", "FP8", "FP8_PER_CHANNEL_PER_TOKEN")


def _decode_scalar(reader: CheckpointTensors, name: str, meaning: str) -> torch.Tensor:
    value = reduce_partition_scalars(
        reader.take_scalars(name, FLOAT_SCALE_DTYPES, meaning), f"{CONVENTION}.{name}"
    )
    if not bool(torch.isfinite(value)) or float(value) <= 0:
        raise ValueError(
            f"{CONVENTION}.{name}: expected a finite positive decode multiplier, found "
            f"{float(value)}"
        )
    return value


def convert_nvfp4(
    tensors: Mapping[str, torch.Tensor],
    *,
    activation_mode: str = "w4a4",
    act_dtype: torch.dtype = torch.bfloat16,
) -> Converted:
    """NVFP4 (``quant_algo: NVFP4``). ``activation_mode="w4a16"`` runs the layer weight-only and
    ignores ``input_scale``."""
    reader = CheckpointTensors(tensors, CONVENTION)
    weight = reader.take_2d("weight", (torch.uint8,), "E2M1 codes, two per byte")
    n, k = weight.shape[0], weight.shape[1] * 2
    if k % 16:
        raise ValueError(
            f"{CONVENTION}.weight: expected K = 2 * columns to be a multiple of 16, found shape "
            f"{list(weight.shape)} (K={k})"
        )
    scale = reader.take(
        "weight_scale", (torch.float8_e4m3fn,), ((n, k // 16),), "E4M3 scale per 16 values"
    )
    params = {
        "weight": weight.contiguous(),
        "weight_scale": scale.contiguous(),
        "weight_global_scale": _decode_scalar(reader, "weight_scale_2", "global decode scale"),
    }
    if activation_mode == "w4a4":
        params["input_global_scale"] = _decode_scalar(
            reader, "input_scale", "activation global decode scale"
        )
    config = NvFp4LinearLayerConfig(
        weight_shape=(n, k), activation_mode=activation_mode, act_dtype=act_dtype
    )
    return finish(config, params, f"{CONVENTION} NVFP4")


def convert_fp8(
    tensors: Mapping[str, torch.Tensor],
    *,
    per_channel: bool = False,
    activation_mode: str = "w8a8",
    partition_sizes: Sequence[int] | None = None,
    act_dtype: torch.dtype = torch.bfloat16,
) -> Converted:
    """FP8: per-tensor weight scale and static per-tensor ``input_scale`` (``quant_algo: FP8``),
    or per-channel weight scale and dynamic per-token activations (``per_channel=True``,
    ``quant_algo: FP8_PER_CHANNEL_PER_TOKEN``)."""
    reader = CheckpointTensors(tensors, CONVENTION)
    weight = reader.take_2d("weight", (torch.float8_e4m3fn,), "E4M3 codes (N, K)")
    n, k = weight.shape
    granularity, scale = w8a8_weight_scale(
        reader, n, "channel" if per_channel else "tensor", partition_sizes
    )
    params = {"weight": weight.contiguous(), "weight_scale": scale}
    static = activation_mode == "w8a8" and not per_channel
    if static:
        params["input_scale"] = _decode_scalar(reader, "input_scale", "activation decode scale")
    config = FP8ScaledMMLinearLayerConfig(
        weight_shape=(n, k),
        activation_mode=activation_mode,
        weight_scale_granularity=granularity,
        input_scale="static" if static else "dynamic",
        input_scale_granularity="tensor" if static else "token",
        act_dtype=act_dtype,
    )
    return finish(config, params, f"{CONVENTION} FP8")


def convert(
    tensors: Mapping[str, torch.Tensor],
    quant_algo: str,
    *,
    partition_sizes: Sequence[int] | None = None,
    act_dtype: torch.dtype = torch.bfloat16,
) -> Converted:
    """Convert one layer given ``quant_algo`` from ``hf_quant_config.json`` / ``config.json``."""
    if quant_algo == "NVFP4":
        return convert_nvfp4(tensors, act_dtype=act_dtype)
    if quant_algo in ("FP8", "FP8_PER_CHANNEL_PER_TOKEN"):
        return convert_fp8(
            tensors, per_channel=quant_algo != "FP8", partition_sizes=partition_sizes,
            act_dtype=act_dtype,
        )
    raise ValueError(
        f"{CONVENTION}: quant_algo={quant_algo!r} is not supported; expected one of {QUANT_ALGOS}"
    )
