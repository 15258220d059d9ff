"""AWQ checkpoints (AutoAWQ, GEMM version) -> the ``mp`` layer parameter contract.

AWQ stores the weight K-major and packs it along N with an interleave: ``qweight`` int32
``[K, N/8]`` where nibble slot ``j`` of word ``c`` holds column ``8c + [0,2,4,6,1,3,5,7][j]``;
``qzeros`` int32 ``[G, N/8]`` use the same interleave; ``scales`` are ``[G, N]``. The type is
``uint4`` with zero points: ``w[k, n] = (q[k, n] - z[g, n]) * s[g, n]``. The converter unpacks with
the formats' AWQ codec and repacks the codes along K (the contract's layout).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from kernel_core.converters._tensors import (
    FLOAT_SCALE_DTYPES,
    CheckpointTensors,
    Converted,
    finish,
)
from kernel_core.families import MPLinearLayerConfig
from kernel_core.formats.integer import pack_along_k, unpack_awq
from kernel_core.scalar_types import scalar_types

__all__ = ["convert", "convert_from_config"]

CONVENTION = "awq"


def convert(
    tensors: Mapping[str, torch.Tensor],
    *,
    group_size: int,
    bits: int = 4,
    zero_point: bool = True,
    version: str = "gemm",
    act_dtype: torch.dtype | None = None,
) -> Converted:
    """Convert one AWQ layer (``qweight``, ``qzeros``, ``scales``).

    The keyword fields are those of the checkpoint's ``quantization_config`` (``w_bit`` is
    ``bits``, ``q_group_size`` is ``group_size``); ``group_size=-1`` is channelwise.
    """
    reader = CheckpointTensors(tensors, CONVENTION)
    if bits != 4:
        raise ValueError(f"{CONVENTION}: bits={bits} is not supported; expected 4")
    if str(version).lower() != "gemm":
        raise ValueError(
            f"{CONVENTION}: version={version!r} is not supported; expected 'gemm' (the GEMV "
            "layout packs differently)"
        )
    if not zero_point:
        raise ValueError(
            f"{CONVENTION}: zero_point=False is not supported; expected zero_point=True (AWQ "
            "checkpoints are uint4 with zero points)"
        )
    if group_size != -1 and group_size <= 0:
        raise ValueError(
            f"{CONVENTION}: group_size={group_size} is not allowed; expected -1 or > 0"
        )
    qweight = reader.take_2d("qweight", (torch.int32,), "interleaved nibbles along N, [K, N/8]")
    k, n = qweight.shape[0], qweight.shape[1] * 8
    groups = 1 if group_size == -1 else -(-k // group_size)
    scales = reader.take("scales", FLOAT_SCALE_DTYPES, ((groups, n),), "scale per group, [G, N]")
    qzeros = reader.take(
        "qzeros", (torch.int32,), ((groups, n // 8),), "interleaved zero points, [G, N/8]"
    )
    codes = unpack_awq(qweight).t().contiguous()
    params = {
        "weight": pack_along_k(codes, 4),
        "weight_scale": scales.t().contiguous(),
        "weight_zero_point": unpack_awq(qzeros).t().contiguous(),
    }
    config = MPLinearLayerConfig(
        weight_shape=(n, k),
        weight_type=scalar_types.uint4,
        group_size=group_size,
        zero_points=True,
        act_dtype=act_dtype or (scales.dtype if scales.dtype != torch.float32 else torch.bfloat16),
    )
    return finish(config, params, f"{CONVENTION} layer")


def convert_from_config(
    tensors: Mapping[str, torch.Tensor],
    quant_config: Mapping[str, Any],
    *,
    act_dtype: torch.dtype | None = None,
) -> Converted:
    """:func:`convert` with the fields read from the checkpoint's config: transformers'
    ``quantization_config`` (``bits``, ``group_size``) or AutoAWQ's ``quant_config.json``
    (``w_bit``, ``q_group_size``), plus ``zero_point`` (default True) and ``version`` (default
    "gemm")."""
    group_size = quant_config.get("group_size", quant_config.get("q_group_size"))
    if group_size is None:
        raise ValueError(
            f"{CONVENTION} quantization config: missing 'group_size' (or 'q_group_size'); found "
            f"keys {sorted(quant_config)}"
        )
    return convert(
        tensors,
        group_size=int(group_size),
        bits=int(quant_config.get("bits", quant_config.get("w_bit", 4))),
        zero_point=bool(quant_config.get("zero_point", True)),
        version=str(quant_config.get("version", "gemm")),
        act_dtype=act_dtype,
    )
