"""compressed-tensors checkpoints (llm-compressor) -> the layer parameter contract.

One function per compression format, each taking one layer's tensors (local names, e.g.
``weight_packed``) and the fields of its quantization scheme, and returning ``(config, params)``;
:func:`convert` reads the scheme as ``config.json`` writes it and picks the function.

What differs from the contract, and is converted here (see ``docs/converters.md``):

* pack-quantized stores signed values ``q`` as ``q + 2**(bits-1)``: for symmetric schemes that is
  exactly the ``uint4b8`` / ``uint8b128`` code, for asymmetric ones the code of ``uint4`` /
  ``uint8`` with the zero point stored the same way; the words are already the contract's layout.
  Zero points are packed along N and are unpacked here.
* NVFP4 global scales are *encode* divisors ``g = 448 * 6 / amax``; the contract holds the decode
  multiplier ``1 / g``. Fused partitions (one value each) take the max ``g``, as vLLM does.
* MX scales may be typed ``float8_e8m0fnu``; the contract holds the same byte as ``uint8``.
* Scales stored in the weight's dtype (bf16/fp16) become float32 where the contract says so; the
  conversion is exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from kernel_core.converters._tensors import (
    FLOAT_SCALE_DTYPES,
    act_order_or_none,
    CheckpointTensors,
    Converted,
    finish,
    reduce_partition_scalars,
    w8a8_weight_scale,
)
from kernel_core.families import (
    Fp8BlockLinearLayerConfig,
    FP8ScaledMMLinearLayerConfig,
    Int8ScaledMMLinearLayerConfig,
    MPLinearLayerConfig,
    MxFp4LinearLayerConfig,
    Mxfp8LinearLayerConfig,
    NvFp4LinearLayerConfig,
)
from kernel_core.formats.integer import unpack_ct_zero_point
from kernel_core.scalar_types import scalar_types

__all__ = [
    "FORMATS",
    "convert",
    "convert_fp8",
    "convert_fp8_block",
    "convert_int8",
    "convert_mxfp4",
    "convert_mxfp8",
    "convert_nvfp4",
    "convert_wna16",
]

CONVENTION = "compressed-tensors"
_E8M0_DTYPES = (torch.uint8,) + (
    (torch.float8_e8m0fnu,) if hasattr(torch, "float8_e8m0fnu") else ()
)
_MP_TYPES = {
    (4, True): scalar_types.uint4b8,
    (8, True): scalar_types.uint8b128,
    (4, False): scalar_types.uint4,
    (8, False): scalar_types.uint8,
}


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _default_act_dtype(scale: torch.Tensor) -> torch.dtype:
    """16-bit scales tell the model's dtype; float32 ones do not, so bf16 is assumed."""
    return scale.dtype if scale.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16


def _weight_shape(reader: CheckpointTensors) -> tuple[int, int]:
    shape = reader.take("weight_shape", (torch.int64, torch.int32), ((2,),), "(N, K) of the weight")
    n, k = (int(v) for v in shape.tolist())
    if n <= 0 or k <= 0:
        raise ValueError(
            f"{CONVENTION}.weight_shape: expected two positive sizes (N, K), found {[n, k]}"
        )
    return n, k


def _g_idx(reader: CheckpointTensors, k: int, group_size: int, groups: int) -> torch.Tensor | None:
    """The act-order group map, or None when absent or in plain order (k // group_size)."""
    if not reader.has("weight_g_idx"):
        return None
    g_idx = reader.take(
        "weight_g_idx", (torch.int32, torch.int64), ((k,),), "group of each input channel"
    ).to(torch.int32)
    if group_size == -1:
        raise ValueError(
            f"{CONVENTION}.weight_g_idx: expected no act-order map with channelwise scales "
            "(group_size None/-1), found one"
        )
    return act_order_or_none(g_idx, group_size, groups, f"{CONVENTION}.weight_g_idx")


def convert_wna16(
    tensors: Mapping[str, torch.Tensor],
    *,
    num_bits: int,
    group_size: int | None,
    symmetric: bool = True,
    act_dtype: torch.dtype | None = None,
) -> Converted:
    """pack-quantized integer weights (W4A16, W8A16, with or without zero points, act-order).

    Reads ``weight_packed`` int32 ``[N, ceil(K*bits/32)]``, ``weight_shape`` ``[2]``,
    ``weight_scale`` ``[N, G]``, ``weight_zero_point`` int32 ``[ceil(N*bits/32), G]`` (asymmetric
    only) and optionally ``weight_g_idx`` ``[K]``. ``group_size`` None or -1 means channelwise.
    An act-order map equal to plain order is dropped (the layer then needs no act-order support).
    """
    reader = CheckpointTensors(tensors, CONVENTION)
    weight_type = _MP_TYPES.get((num_bits, bool(symmetric)))
    if weight_type is None:
        raise ValueError(
            f"{CONVENTION} pack-quantized: num_bits={num_bits} is not supported; expected 4 or 8 "
            "(the mp family's weight types)"
        )
    gs = -1 if group_size in (None, -1) else int(group_size)
    n, k = _weight_shape(reader)
    packed = reader.take(
        "weight_packed", (torch.int32,), ((n, _ceil_div(k * num_bits, 32)),),
        f"{num_bits}-bit codes packed along K",
    )
    groups = 1 if gs == -1 else _ceil_div(k, gs)
    scale = reader.take("weight_scale", FLOAT_SCALE_DTYPES, ((n, groups),), "scale per group")
    params = {"weight": packed.contiguous(), "weight_scale": scale.contiguous()}
    if symmetric:
        reader.forbid("weight_zero_point", "a symmetric scheme stores no zero point")
    else:
        zp = reader.take(
            "weight_zero_point", (torch.int32,), ((_ceil_div(n * num_bits, 32), groups),),
            "zero points packed along N",
        )
        params["weight_zero_point"] = unpack_ct_zero_point(zp, num_bits, n)
    g_idx = _g_idx(reader, k, gs, groups)
    if g_idx is not None:
        params["weight_g_idx"] = g_idx
    config = MPLinearLayerConfig(
        weight_shape=(n, k),
        weight_type=weight_type,
        group_size=gs,
        zero_points=not symmetric,
        has_g_idx=g_idx is not None,
        act_dtype=act_dtype or _default_act_dtype(scale),
    )
    return finish(config, params, f"{CONVENTION} pack-quantized")


def convert_int8(
    tensors: Mapping[str, torch.Tensor],
    *,
    weight_strategy: str = "channel",
    input_dynamic: bool = True,
    input_symmetric: bool = True,
    act_dtype: torch.dtype = torch.bfloat16,
) -> Converted:
    """int-quantized W8A8: ``weight`` int8 ``[N, K]``, ``weight_scale`` ``[N, 1]`` or ``[1]``, and
    for static activations ``input_scale`` ``[1]`` (plus ``input_zero_point`` if asymmetric)."""
    reader = CheckpointTensors(tensors, CONVENTION)
    weight = reader.take_2d("weight", (torch.int8,), "int8 codes (N, K)")
    n, k = weight.shape
    reader.forbid("weight_zero_point", "int8 W8A8 weights are symmetric")
    granularity, scale = w8a8_weight_scale(reader, n, weight_strategy, None)
    params = {"weight": weight.contiguous(), "weight_scale": scale}
    if not input_dynamic:
        params["input_scale"] = reduce_partition_scalars(
            reader.take_scalars("input_scale", FLOAT_SCALE_DTYPES, "activation scale"),
            f"{CONVENTION}.input_scale",
        )
        if not input_symmetric:
            zp = reader.take_scalars(
                "input_zero_point", (torch.int8, torch.int32), "activation zero point"
            )
            if zp.numel() != 1:
                raise ValueError(
                    f"{CONVENTION}.input_zero_point: expected one value, found {zp.numel()}"
                )
            params["input_zero_point"] = zp.to(torch.int32).reshape(())
    config = Int8ScaledMMLinearLayerConfig(
        weight_shape=(n, k),
        weight_scale_granularity=granularity,
        input_scale="dynamic" if input_dynamic else "static",
        input_symmetric=input_symmetric,
        act_dtype=act_dtype,
    )
    return finish(config, params, f"{CONVENTION} int-quantized")


def convert_fp8(
    tensors: Mapping[str, torch.Tensor],
    *,
    weight_strategy: str = "channel",
    activation_mode: str = "w8a8",
    input_dynamic: bool = True,
    input_strategy: str = "token",
    partition_sizes: Sequence[int] | None = None,
    act_dtype: torch.dtype = torch.bfloat16,
) -> Converted:
    """float-quantized FP8: ``weight`` E4M3 ``[N, K]``, ``weight_scale`` ``[N, 1]`` (channel) or
    ``[1]`` (tensor; ``[P]`` for a fused layer, with ``partition_sizes``), ``input_scale`` ``[1]``
    (or ``[P]``: the max is taken, as vLLM does) for static activations."""
    reader = CheckpointTensors(tensors, CONVENTION)
    weight = reader.take_2d("weight", (torch.float8_e4m3fn,), "E4M3 codes (N, K)")
    n, k = weight.shape
    granularity, scale = w8a8_weight_scale(reader, n, weight_strategy, partition_sizes)
    params = {"weight": weight.contiguous(), "weight_scale": scale}
    static = activation_mode == "w8a8" and not input_dynamic
    if static:
        params["input_scale"] = reduce_partition_scalars(
            reader.take_scalars("input_scale", FLOAT_SCALE_DTYPES, "activation scale"),
            f"{CONVENTION}.input_scale",
        )
    config = FP8ScaledMMLinearLayerConfig(
        weight_shape=(n, k),
        activation_mode=activation_mode,
        weight_scale_granularity=granularity,
        input_scale="static" if static else "dynamic",
        input_scale_granularity="tensor" if static else input_strategy,
        act_dtype=act_dtype,
    )
    return finish(config, params, f"{CONVENTION} float-quantized")


def convert_fp8_block(
    tensors: Mapping[str, torch.Tensor],
    *,
    block_structure: Sequence[int] = (128, 128),
    act_dtype: torch.dtype = torch.bfloat16,
) -> Converted:
    """float-quantized FP8 with ``strategy: block``: ``weight`` E4M3 ``[N, K]`` and
    ``weight_scale`` ``[ceil(N/bn), ceil(K/bk)]``."""
    reader = CheckpointTensors(tensors, CONVENTION)
    block = tuple(int(b) for b in block_structure)
    if block != (128, 128):
        raise ValueError(
            f"{CONVENTION}: block_structure={list(block_structure)} is not supported; expected "
            "[128, 128]"
        )
    weight = reader.take_2d("weight", (torch.float8_e4m3fn,), "E4M3 codes (N, K)")
    n, k = weight.shape
    scale = reader.take(
        "weight_scale", FLOAT_SCALE_DTYPES, ((_ceil_div(n, 128), _ceil_div(k, 128)),),
        "scale per 128x128 block",
    )
    config = Fp8BlockLinearLayerConfig(weight_shape=(n, k), act_dtype=act_dtype)
    params = {"weight": weight.contiguous(), "weight_scale": scale.to(torch.float32)}
    return finish(config, params, f"{CONVENTION} float-quantized block")


def _fp4_weight(reader: CheckpointTensors, group: int) -> tuple[torch.Tensor, int, int]:
    packed = reader.take_2d("weight_packed", (torch.uint8,), "E2M1 codes, two per byte")
    n, k = packed.shape[0], packed.shape[1] * 2
    if k % group:
        raise ValueError(
            f"{CONVENTION}.weight_packed: expected K = 2 * columns to be a multiple of {group}, "
            f"found shape {list(packed.shape)} (K={k})"
        )
    return packed.contiguous(), n, k


def _encode_to_decode(reader: CheckpointTensors, name: str) -> torch.Tensor:
    """compressed-tensors' encode divisor ``g`` (``[1]`` or one per fused partition) -> the
    decode multiplier ``1 / max(g)`` as a float32 scalar."""
    g = reduce_partition_scalars(
        reader.take_scalars(name, FLOAT_SCALE_DTYPES, "encode divisor 448*6/amax"),
        f"{CONVENTION}.{name}",
    )
    if not bool(torch.isfinite(g)) or float(g) <= 0:
        raise ValueError(
            f"{CONVENTION}.{name}: expected a finite positive encode divisor, found {float(g)}"
        )
    return (1.0 / g).to(torch.float32)


def convert_nvfp4(
    tensors: Mapping[str, torch.Tensor],
    *,
    activation_mode: str = "w4a4",
    act_dtype: torch.dtype = torch.bfloat16,
) -> Converted:
    """nvfp4-pack-quantized: ``weight_packed`` uint8 ``[N, K/2]``, ``weight_scale`` E4M3
    ``[N, K/16]``, ``weight_global_scale`` and (W4A4) ``input_global_scale``, both encode divisors
    that become decode multipliers here."""
    reader = CheckpointTensors(tensors, CONVENTION)
    packed, n, k = _fp4_weight(reader, 16)
    scale = reader.take(
        "weight_scale", (torch.float8_e4m3fn,), ((n, k // 16),), "E4M3 scale per 16 values"
    )
    params = {
        "weight": packed,
        "weight_scale": scale.contiguous(),
        "weight_global_scale": _encode_to_decode(reader, "weight_global_scale"),
    }
    if activation_mode == "w4a4":
        params["input_global_scale"] = _encode_to_decode(reader, "input_global_scale")
    config = NvFp4LinearLayerConfig(
        weight_shape=(n, k), activation_mode=activation_mode, act_dtype=act_dtype
    )
    return finish(config, params, f"{CONVENTION} nvfp4-pack-quantized")


def _e8m0_scale(reader: CheckpointTensors, n: int, k: int) -> torch.Tensor:
    scale = reader.take(
        "weight_scale", _E8M0_DTYPES, ((n, k // 32),), "E8M0 exponent byte per 32 values"
    )
    return scale.contiguous().view(torch.uint8)


def convert_mxfp4(
    tensors: Mapping[str, torch.Tensor],
    *,
    activation_mode: str = "w4a16",
    act_dtype: torch.dtype = torch.bfloat16,
) -> Converted:
    """mxfp4-pack-quantized: ``weight_packed`` uint8 ``[N, K/2]``, ``weight_scale`` E8M0
    ``[N, K/32]`` (uint8 or float8_e8m0fnu)."""
    reader = CheckpointTensors(tensors, CONVENTION)
    packed, n, k = _fp4_weight(reader, 32)
    params = {"weight": packed, "weight_scale": _e8m0_scale(reader, n, k)}
    config = MxFp4LinearLayerConfig(
        weight_shape=(n, k), activation_mode=activation_mode, act_dtype=act_dtype
    )
    return finish(config, params, f"{CONVENTION} mxfp4-pack-quantized")


def convert_mxfp8(
    tensors: Mapping[str, torch.Tensor],
    *,
    activation_mode: str = "w8a8",
    act_dtype: torch.dtype = torch.bfloat16,
) -> Converted:
    """mxfp8-quantized: ``weight`` E4M3 ``[N, K]``, ``weight_scale`` E8M0 ``[N, K/32]``."""
    reader = CheckpointTensors(tensors, CONVENTION)
    weight = reader.take_2d("weight", (torch.float8_e4m3fn,), "E4M3 codes (N, K)")
    n, k = weight.shape
    if k % 32:
        raise ValueError(
            f"{CONVENTION}.weight: expected K to be a multiple of 32, found shape "
            f"{list(weight.shape)}"
        )
    params = {"weight": weight.contiguous(), "weight_scale": _e8m0_scale(reader, n, k)}
    config = Mxfp8LinearLayerConfig(
        weight_shape=(n, k), activation_mode=activation_mode, act_dtype=act_dtype
    )
    return finish(config, params, f"{CONVENTION} mxfp8-quantized")


# ---------------------------------------------------------------------------------------------
# The scheme as config.json writes it
# ---------------------------------------------------------------------------------------------

#: The compression formats :func:`convert` reads.
FORMATS = (
    "pack-quantized",
    "int-quantized",
    "float-quantized",
    "naive-quantized",
    "nvfp4-pack-quantized",
    "mxfp4-pack-quantized",
    "mxfp8-quantized",
)


def _field(args: Mapping[str, Any], name: str, default: Any = None) -> Any:
    value = args.get(name, default)
    return value.value if hasattr(value, "value") else value  # enums from the library itself


def _check_activations(fmt: str, acts: Mapping[str, Any], act_type: str, bits: int) -> None:
    """Activations of another type or width than the family quantizes to have no family here
    (e.g. MXFP4 weights with FP8 activations)."""
    if _field(acts, "type", "int") != act_type or _field(acts, "num_bits") != bits:
        raise ValueError(
            f"{CONVENTION} {fmt}: expected no input_activations or {act_type}{bits} ones, found "
            f"type={_field(acts, 'type')!r} num_bits={_field(acts, 'num_bits')!r}"
        )


def _float_activation_mode(fmt: str, acts: Mapping[str, Any] | None, bits: int) -> str:
    """"w{bits}a16" without input_activations, "w{bits}a{bits}" with float activations of the
    weight's width."""
    if acts is None:
        return f"w{bits}a16"
    _check_activations(fmt, acts, "float", bits)
    return f"w{bits}a{bits}"


def convert(
    tensors: Mapping[str, torch.Tensor],
    scheme: Mapping[str, Any],
    *,
    format: str | None = None,
    act_dtype: torch.dtype | None = None,
    partition_sizes: Sequence[int] | None = None,
) -> Converted:
    """Convert one layer given its scheme from ``config.json`` (a ``config_groups`` entry:
    ``{"weights": {...}, "input_activations": {...} or None, "format": ...}``).

    ``format`` overrides the scheme's own (compressed-tensors also allows one global format).
    """
    fmt = format or scheme.get("format")
    weights = scheme.get("weights")
    if not isinstance(weights, Mapping):
        raise ValueError(
            f"{CONVENTION} scheme: expected a 'weights' mapping of quantization args, found "
            f"{weights!r}"
        )
    acts = scheme.get("input_activations")
    bits = _field(weights, "num_bits", 8)
    wtype = _field(weights, "type", "int")
    strategy = _field(weights, "strategy")
    extra = {} if act_dtype is None else {"act_dtype": act_dtype}
    if fmt == "pack-quantized":
        if acts is not None:
            raise ValueError(
                f"{CONVENTION} pack-quantized: expected weight-only (input_activations null), "
                f"found input_activations={dict(acts)!r}"
            )
        group = _field(weights, "group_size") if strategy == "group" else None
        return convert_wna16(
            tensors, num_bits=bits, group_size=group,
            symmetric=_field(weights, "symmetric", True), act_dtype=act_dtype,
        )
    if fmt in ("int-quantized", "float-quantized", "naive-quantized") and bits == 8:
        if wtype == "int":
            if acts is None:
                raise ValueError(
                    f"{CONVENTION} {fmt}: int8 weights without input_activations (W8A16 int8) "
                    "is not a family; expected int8 input_activations"
                )
            _check_activations(fmt, acts, "int", 8)
            return convert_int8(
                tensors, weight_strategy=strategy,
                input_dynamic=bool(_field(acts, "dynamic", False)),
                input_symmetric=_field(acts, "symmetric", True), **extra,
            )
        if strategy == "block":
            if acts is None:
                raise ValueError(
                    f"{CONVENTION} {fmt}: block-scaled FP8 weights without input_activations "
                    "(weight-only) is not a family; expected dynamic float8 input_activations"
                )
            _check_activations(fmt, acts, "float", 8)
            return convert_fp8_block(
                tensors, block_structure=_field(weights, "block_structure"), **extra
            )
        if acts is None:
            return convert_fp8(
                tensors, weight_strategy=strategy, activation_mode="w8a16",
                partition_sizes=partition_sizes, **extra,
            )
        _check_activations(fmt, acts, "float", 8)
        dynamic = bool(_field(acts, "dynamic", False))
        return convert_fp8(
            tensors, weight_strategy=strategy, activation_mode="w8a8", input_dynamic=dynamic,
            input_strategy=_field(acts, "strategy", "token") if dynamic else "tensor",
            partition_sizes=partition_sizes, **extra,
        )
    if fmt == "nvfp4-pack-quantized":
        mode = _float_activation_mode(fmt, acts, 4)
        return convert_nvfp4(tensors, activation_mode=mode, **extra)
    if fmt == "mxfp4-pack-quantized":
        mode = _float_activation_mode(fmt, acts, 4)
        return convert_mxfp4(tensors, activation_mode=mode, **extra)
    if fmt == "mxfp8-quantized":
        mode = _float_activation_mode(fmt, acts, 8)
        return convert_mxfp8(tensors, activation_mode=mode, **extra)
    raise ValueError(
        f"{CONVENTION} scheme: format={fmt!r} with weights num_bits={bits}, type={wtype!r} is "
        f"not supported; expected one of {', '.join(FORMATS)} (8-bit for the naive formats)"
    )
