"""GPTQ checkpoints (AutoGPTQ / GPTQModel) -> the ``mp`` layer parameter contract.

GPTQ stores the weight K-major: ``qweight`` int32 ``[K*bits/32, N]`` packed along K (LSB first),
``scales`` ``[G, N]``, ``qzeros`` int32 ``[G, N*bits/32]`` packed along N, and ``g_idx`` ``[K]``.
The words of ``qweight`` hold the same codes in the same bit order as the contract's
``[N, K*bits/32]`` weight, so the weight converts by a transpose; scales transpose too.

Zero points, and the GPTQ v1 off-by-one: the original GPTQ packer stored ``zero - 1`` in
``qzeros`` (its CUDA kernels added the 1 back); ``checkpoint_format="gptq_v2"`` checkpoints store
the zero itself. ``checkpoint_format="gptq"`` (v1, the default of ``quantize_config.json``) adds 1
back, modulo ``2**bits`` (a zero of 0 was stored as ``2**bits - 1``). Symmetric checkpoints
(``sym=True``) store codes biased by ``2**(bits-1)`` (``uint4b8`` / ``uint8b128``); their
``qzeros`` carry no information and are only shape-checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from kernel_core.converters._tensors import (
    FLOAT_SCALE_DTYPES,
    act_order_or_none,
    CheckpointTensors,
    Converted,
    finish,
)
from kernel_core.families import MPLinearLayerConfig
from kernel_core.formats.integer import unpack_gptq_qzeros
from kernel_core.scalar_types import scalar_types

__all__ = ["CHECKPOINT_FORMATS", "convert"]

CONVENTION = "gptq"
#: ``checkpoint_format`` values: "gptq" (v1, qzeros store zero - 1) and "gptq_v2" (the zero).
CHECKPOINT_FORMATS = ("gptq", "gptq_v2")
_TYPES = {
    (4, True): scalar_types.uint4b8,
    (8, True): scalar_types.uint8b128,
    (4, False): scalar_types.uint4,
    (8, False): scalar_types.uint8,
}


def _g_idx(
    reader: CheckpointTensors, k: int, group_size: int, groups: int, desc_act: bool
) -> torch.Tensor | None:
    """The act-order map, or None when absent or in plain order ``k // group_size``.

    A map that is not in plain order is honoured even if ``desc_act`` is False: the tensor, not
    the flag, says where each channel's scale is.
    """
    if not reader.has("g_idx"):
        if desc_act and group_size != -1:
            reader.take("g_idx", (torch.int32,), ((k,),), "group of each input channel (desc_act)")
        return None
    g_idx = reader.take(
        "g_idx", (torch.int32, torch.int64), ((k,),), "group of each input channel"
    ).to(torch.int32)
    if group_size == -1:
        return None  # one group: every channel maps to group 0 whatever the order
    return act_order_or_none(g_idx, group_size, groups, f"{CONVENTION}.g_idx")


def convert(
    tensors: Mapping[str, torch.Tensor],
    *,
    bits: int,
    group_size: int,
    sym: bool = True,
    desc_act: bool = False,
    checkpoint_format: str = "gptq",
    act_dtype: torch.dtype | None = None,
) -> Converted:
    """Convert one GPTQ layer (``qweight``, ``scales``, ``qzeros``, ``g_idx``).

    The keyword fields are those of ``quantize_config.json``; ``group_size=-1`` is channelwise.
    ``act_dtype`` defaults to the dtype of ``scales`` (fp16 or bf16).
    """
    reader = CheckpointTensors(tensors, CONVENTION)
    weight_type = _TYPES.get((bits, bool(sym)))
    if weight_type is None:
        raise ValueError(
            f"{CONVENTION}: bits={bits} is not supported; expected 4 or 8 (the mp family's types)"
        )
    if checkpoint_format not in CHECKPOINT_FORMATS:
        raise ValueError(
            f"{CONVENTION}: checkpoint_format={checkpoint_format!r} is not supported; expected "
            f"one of {CHECKPOINT_FORMATS}"
        )
    if group_size != -1 and group_size <= 0:
        raise ValueError(
            f"{CONVENTION}: group_size={group_size} is not allowed; expected -1 or > 0"
        )
    qweight = reader.take_2d("qweight", (torch.int32,), "codes packed along K, [K*bits/32, N]")
    k, n = qweight.shape[0] * 32 // bits, qweight.shape[1]
    groups = 1 if group_size == -1 else -(-k // group_size)
    scales = reader.take("scales", FLOAT_SCALE_DTYPES, ((groups, n),), "scale per group, [G, N]")
    zeros_shape = ((groups, n * bits // 32),)
    params = {
        "weight": qweight.t().contiguous(),
        "weight_scale": scales.t().contiguous(),
    }
    if sym:
        if reader.has("qzeros"):
            reader.take("qzeros", (torch.int32,), zeros_shape, "unused zero points (symmetric)")
    else:
        qzeros = reader.take("qzeros", (torch.int32,), zeros_shape, "zero points packed along N")
        zeros = unpack_gptq_qzeros(qzeros, bits, n)
        if checkpoint_format == "gptq":
            zeros = ((zeros.to(torch.int32) + 1) % 2**bits).to(torch.uint8)
        params["weight_zero_point"] = zeros
    g_idx = _g_idx(reader, k, group_size, groups, desc_act)
    if g_idx is not None:
        params["weight_g_idx"] = g_idx
    config = MPLinearLayerConfig(
        weight_shape=(n, k),
        weight_type=weight_type,
        group_size=group_size,
        zero_points=not sym,
        has_g_idx=g_idx is not None,
        act_dtype=act_dtype or (scales.dtype if scales.dtype != torch.float32 else torch.bfloat16),
    )
    return finish(config, params, f"{CONVENTION} layer")


def convert_from_config(
    tensors: Mapping[str, torch.Tensor],
    quant_config: Mapping[str, Any],
    *,
    act_dtype: torch.dtype | None = None,
) -> Converted:
    """:func:`convert` with the fields read from ``quantize_config.json`` (or the
    ``quantization_config`` of ``config.json``): ``bits``, ``group_size``, ``sym`` (default True),
    ``desc_act`` (default False), ``checkpoint_format`` (default "gptq", i.e. v1). Other keys
    (``damp_percent``, ``true_sequential``, ...) only matter when quantizing and are ignored."""
    for key in ("bits", "group_size"):
        if key not in quant_config:
            raise ValueError(
                f"{CONVENTION} quantization config: missing {key!r}; found keys "
                f"{sorted(quant_config)}"
            )
    return convert(
        tensors,
        bits=int(quant_config["bits"]),
        group_size=int(quant_config["group_size"]),
        sym=bool(quant_config.get("sym", True)),
        desc_act=bool(quant_config.get("desc_act", False)),
        checkpoint_format=quant_config.get("checkpoint_format") or "gptq",
        act_dtype=act_dtype,
    )
