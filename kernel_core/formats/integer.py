"""Integer weight formats: GPTQ, compressed-tensors pack-quantized and AWQ.

Codes are *stored* codes, ``uint8`` ``[N, K]`` (row = output channel): for the biased symmetric
types (``uint4b8``, ``uint8b128``) the stored code is ``value + bias``; the plain unsigned types
(``uint4``, ``uint8``) carry a zero point per (row, group). Decoding is

* symmetric:  ``w[n, k] = (code[n, k] - bias) * scale[n, g(k)]``
* asymmetric: ``w[n, k] = (code[n, k] - zero_point[n, g(k)]) * scale[n, g(k)]``

with ``g(k) = k // group_size`` (one group when ``group_size == -1``) or ``g_idx[k]`` (act-order).

Bit order of every packed layout: element ``i`` of a packed line sits at bit ``i * bits`` of the
little-endian bit stream of 32-bit words (LSB first). The layouts differ only in which dimension is
packed: compressed-tensors packs the weight along K (``[N, K*bits/32]``) and its zero points along
N (``[N*bits/32, G]``); GPTQ packs ``qweight`` along K but stores it K-major (``[K*bits/32, N]``)
and ``qzeros`` along N (``[G, N*bits/32]``); AWQ packs along N with its own nibble interleave.
Words are ``int32``: a word whose top bit is set is negative, and unpacking accepts that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernel_core.formats._checks import (
    check_divisible,
    check_dtype,
    check_float,
    check_ndim,
    dtype_name,
    to_int32_wrapping,
)
from kernel_core.scalar_types import ScalarType
from kernel_core.formats._division import divide

__all__ = [
    "IntQuantized",
    "quantize_int",
    "dequantize_int",
    "pack_along_k",
    "unpack_along_k",
    "pack_gptq_qweight",
    "unpack_gptq_qweight",
    "pack_gptq_qzeros",
    "unpack_gptq_qzeros",
    "pack_ct_zero_point",
    "unpack_ct_zero_point",
    "pack_awq",
    "unpack_awq",
    "AWQ_PACK_ORDER",
]

#: AWQ nibble interleave: slot ``j`` of each int32 word holds column ``8c + AWQ_PACK_ORDER[j]``.
AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
#: Its inverse: column ``8c + i`` lives in slot ``_AWQ_SLOT_OF_COLUMN[i]``.
_AWQ_SLOT_OF_COLUMN = (0, 4, 1, 5, 2, 6, 3, 7)


@dataclass
class IntQuantized:
    """Result of :func:`quantize_int`.

    ``codes``: ``uint8 [N, K]`` stored codes. ``scale``: ``[N, G]`` decode multipliers.
    ``zero_point``: ``uint8 [N, G]`` (asymmetric types) or ``None``. ``g_idx``: ``int32 [K]`` group
    of each input channel, or ``None`` when groups are contiguous.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    g_idx: torch.Tensor | None


def _int_type_info(weight_type: ScalarType) -> tuple[int, bool]:
    """(bits, symmetric) of a weight type, or a ValueError for types this codec cannot store."""
    if not isinstance(weight_type, ScalarType):
        raise ValueError(
            f"weight_type: expected a ScalarType (e.g. scalar_types.uint4b8), found "
            f"{type(weight_type).__name__}"
        )
    bits = weight_type.size_bits
    ok = weight_type.is_integer and not weight_type.signed and 1 <= bits <= 8
    if not ok or weight_type.bias not in (0, 2 ** (bits - 1)):
        raise ValueError(
            f"weight_type: expected an unsigned integer type of 1..8 bits, either biased by "
            f"2**(bits-1) (symmetric, e.g. uint4b8, uint8b128) or unbiased with zero points "
            f"(uint4, uint8), found {weight_type}"
        )
    return bits, weight_type.has_bias


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"bits: expected an int in 1..8, found {bits!r}")


def _contiguous_groups(k: int, group_size: int) -> int:
    """Number of groups when input channels are grouped contiguously; K must divide."""
    if group_size == -1:
        return 1
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(
            f"group_size: expected -1 (channelwise) or a positive int, found {group_size!r}"
        )
    check_divisible("weight", k, group_size, f"in_features (K) with group_size={group_size}")
    return k // group_size


# ---------------------------------------------------------------------------------------------
# Quantize / dequantize
# ---------------------------------------------------------------------------------------------


def quantize_int(
    weight: torch.Tensor,
    weight_type: ScalarType,
    group_size: int,
    *,
    g_idx: torch.Tensor | None = None,
    scale_dtype: torch.dtype = torch.float32,
    num_groups: int | None = None,
) -> IntQuantized:
    """Quantize a float ``[N, K]`` weight to integer codes with one scale per (row, group).

    Symmetric types (``uintNb2^(N-1)``): ``scale = amax / (2^(bits-1) - 1)`` (7 for 4 bits, 127 for
    8 bits), so every value maps inside the range without saturation and the round-trip error is at
    most half a step; the most negative code (``-2^(bits-1)``) is never produced.
    Asymmetric types (``uintN``): the range ``[min(w_min, 0), max(w_max, 0)]`` (zero included, so
    zero is exact) is split in ``2^bits - 1`` steps, ``zero_point = round(-min / scale)``.
    Scales are rounded to ``scale_dtype`` first (floored at its smallest normal number) and the
    codes computed against the rounded scale, so that decoding with the stored scale is faithful.

    ``g_idx`` (act-order): input channel ``k`` belongs to group ``g_idx[k]``; ``num_groups``
    (default ``ceil(K / group_size)``) is the number of scale columns, larger than the groups used
    when this is a row-parallel slice of a bigger layer. Rounding is half-to-even (``torch.round``).
    """
    check_float("weight", weight)
    check_ndim("weight", weight, ndim=2)
    bits, symmetric = _int_type_info(weight_type)
    if scale_dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(
            f"scale_dtype: expected float16, bfloat16 or float32, found {dtype_name(scale_dtype)}"
        )
    n, k = weight.shape
    device = weight.device
    if g_idx is None:
        groups = _contiguous_groups(k, group_size)
        if num_groups is not None and num_groups != groups:
            raise ValueError(
                f"num_groups: without g_idx the groups are contiguous, expected {groups}, "
                f"found {num_groups}"
            )
        group_of_k = torch.arange(k, device=device) // (k if group_size == -1 else group_size)
    else:
        check_dtype("g_idx", g_idx, (torch.int32, torch.int64))
        if tuple(g_idx.shape) != (k,):
            raise ValueError(f"g_idx: expected shape [{k}], found {list(g_idx.shape)}")
        default = 1 if group_size == -1 else -(-k // group_size)
        groups = default if num_groups is None else num_groups
        lo, hi = int(g_idx.min()), int(g_idx.max())
        if lo < 0 or hi >= groups:
            raise ValueError(
                f"g_idx: expected group indices in [0, {groups}), found values in [{lo}, {hi}]"
            )
        group_of_k = g_idx.to(device=device, dtype=torch.int64)

    w = weight.to(torch.float32)
    index = group_of_k.unsqueeze(0).expand(n, k)

    def group_reduce(values: torch.Tensor, op: str) -> torch.Tensor:
        # Groups without members (possible with g_idx) keep 0.
        init = torch.zeros(n, groups, dtype=torch.float32, device=device)
        return init.scatter_reduce(1, index, values, op, include_self=False)

    tiny = torch.finfo(scale_dtype).tiny
    top_code = 2**bits - 1
    if symmetric:
        amax = group_reduce(w.abs(), "amax")
        scale = divide(amax, 2 ** (bits - 1) - 1).clamp(min=tiny).to(scale_dtype)
        offset = float(weight_type.bias)
        zero_point = None
    else:
        low = group_reduce(w, "amin").clamp(max=0.0)
        high = group_reduce(w, "amax").clamp(min=0.0)
        scale = divide(high - low, top_code).clamp(min=tiny).to(scale_dtype)
        zp = torch.round(-low / scale.float()).clamp(0, top_code)
        zero_point = zp.to(torch.uint8)
        offset = zp.index_select(1, group_of_k)
    per_k_scale = scale.float().index_select(1, group_of_k)
    codes = (torch.round(w / per_k_scale) + offset).clamp(0, top_code).to(torch.uint8)
    out_g_idx = None if g_idx is None else g_idx.to(device=device, dtype=torch.int32)
    return IntQuantized(codes=codes, scale=scale, zero_point=zero_point, g_idx=out_g_idx)


def dequantize_int(
    codes: torch.Tensor,
    scale: torch.Tensor,
    weight_type: ScalarType,
    group_size: int,
    *,
    zero_point: torch.Tensor | None = None,
    g_idx: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Decode stored codes ``uint8 [N, K]`` to ``[N, K]`` in ``dtype`` (computed in fp32).

    ``(code - offset)`` is exact in fp32, so each element is the exact product rounded once.
    Vectorized: contiguous groups broadcast the ``[N, G]`` scale over a ``[N, G, group]`` view;
    act-order gathers one scale column per input channel.
    """
    check_dtype("codes", codes, (torch.uint8,))
    check_ndim("codes", codes, ndim=2)
    check_dtype("scale", scale, (torch.float16, torch.bfloat16, torch.float32))
    check_ndim("scale", scale, ndim=2)
    bits, symmetric = _int_type_info(weight_type)
    n, k = codes.shape
    if scale.shape[0] != n:
        raise ValueError(f"scale: expected {n} rows like codes, found shape {list(scale.shape)}")
    if symmetric and zero_point is not None:
        raise ValueError(f"zero_point: {weight_type} is symmetric (biased), expected None")
    if not symmetric:
        if zero_point is None:
            raise ValueError(f"zero_point: {weight_type} needs zero points, found None")
        check_dtype("zero_point", zero_point, (torch.uint8, torch.int32))
        if zero_point.shape != scale.shape:
            raise ValueError(
                f"zero_point: expected shape {list(scale.shape)} like scale, found "
                f"{list(zero_point.shape)}"
            )
    values = codes.to(torch.float32, memory_format=torch.contiguous_format)
    if g_idx is None:
        groups = _contiguous_groups(k, group_size)
        if scale.shape[1] != groups:
            raise ValueError(
                f"scale: expected shape [{n}, {groups}] for K={k}, group_size={group_size}, found "
                f"{list(scale.shape)}"
            )
        grouped = values.view(n, groups, k // groups)
        offset = weight_type.bias if symmetric else zero_point.to(torch.float32).unsqueeze(-1)
        grouped.sub_(offset).mul_(scale.to(torch.float32).unsqueeze(-1))
    else:
        check_dtype("g_idx", g_idx, (torch.int32, torch.int64))
        if tuple(g_idx.shape) != (k,):
            raise ValueError(f"g_idx: expected shape [{k}], found {list(g_idx.shape)}")
        index = g_idx.to(torch.int64)
        offset = (
            weight_type.bias
            if symmetric
            else zero_point.to(torch.float32).index_select(1, index)
        )
        values.sub_(offset).mul_(scale.to(torch.float32).index_select(1, index))
    return values.to(dtype)


# ---------------------------------------------------------------------------------------------
# Packing along the last dimension (the one primitive every layout is built from)
# ---------------------------------------------------------------------------------------------


def _words_per_line(length: int, bits: int) -> int:
    return -(-length * bits // 32)


def pack_along_k(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack ``uint8 [..., K]`` codes of ``bits`` bits into ``int32 [..., ceil(K*bits/32)]``.

    Element ``i`` occupies bits ``i*bits .. i*bits+bits-1`` of the row's little-endian bit stream
    (compressed-tensors pack-quantized order): for 4 bits, nibble ``i % 8`` of word ``i // 8``.
    Widths that do not divide 32 (3, 5, 6, 7) straddle word boundaries; a partial last word is
    zero-filled. Codes must fit in ``bits`` bits.
    """
    _check_bits(bits)
    check_dtype("codes", codes, (torch.uint8,))
    check_ndim("codes", codes, min_ndim=1)
    length = codes.shape[-1]
    if codes.numel() and int(codes.max()) >= 2**bits:
        raise ValueError(
            f"codes: expected values below 2**{bits} = {2**bits}, found {int(codes.max())}"
        )
    words = _words_per_line(length, bits)
    position = torch.arange(length, device=codes.device, dtype=torch.int64) * bits
    word_index, offset = position // 32, position % 32
    values = codes.to(torch.int64)
    # Bit fields are disjoint, so adding them is OR-ing them. The spill-over into the next word is
    # zero unless the field straddles the boundary (a shift by >= bits clears the value).
    low = (values << offset) & 0xFFFFFFFF
    spill = values >> (32 - offset)
    out = torch.zeros(*codes.shape[:-1], words + 1, dtype=torch.int64, device=codes.device)
    out.index_add_(-1, word_index, low)
    out.index_add_(-1, word_index + 1, spill)
    return to_int32_wrapping(out[..., :words])


def unpack_along_k(packed: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_along_k`: ``int32 [..., ceil(k*bits/32)]`` -> ``uint8 [..., k]``."""
    _check_bits(bits)
    check_dtype("packed", packed, (torch.int32,))
    check_ndim("packed", packed, min_ndim=1)
    words = _words_per_line(k, bits)
    if packed.shape[-1] != words:
        raise ValueError(
            f"packed: expected last dimension ceil({k}*{bits}/32) = {words} for k={k}, found "
            f"shape {list(packed.shape)}"
        )
    mask = 2**bits - 1
    if 32 % bits == 0:
        # Fast path: fields never straddle words. Arithmetic right shifts of negative words
        # sign-extend, which the mask removes.
        shifts = torch.arange(0, 32, bits, device=packed.device, dtype=torch.int32)
        fields = (packed.unsqueeze(-1) >> shifts) & mask
        return fields.flatten(-2)[..., :k].to(torch.uint8)
    unsigned = packed.to(torch.int64) & 0xFFFFFFFF
    padded = torch.cat([unsigned, torch.zeros_like(unsigned[..., :1])], dim=-1)
    position = torch.arange(k, device=packed.device, dtype=torch.int64) * bits
    word_index, offset = position // 32, position % 32
    pair = padded.index_select(-1, word_index) | (padded.index_select(-1, word_index + 1) << 32)
    return ((pair >> offset) & mask).to(torch.uint8)


# ---------------------------------------------------------------------------------------------
# GPTQ and compressed-tensors layouts
# ---------------------------------------------------------------------------------------------


def _check_whole_words(name: str, length: int, bits: int, what: str) -> None:
    if length * bits % 32:
        raise ValueError(
            f"{name}: {what} times bits={bits} must be a multiple of 32 to fill int32 words, "
            f"found {what}={length}"
        )


def pack_gptq_qweight(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """GPTQ ``qweight``: codes ``uint8 [N, K]`` -> ``int32 [K*bits/32, N]``, packed along K.

    Element ``k`` of output column ``n`` is ``(qweight[k*bits // 32, n] >> (k*bits % 32)) & mask``.
    """
    check_ndim("codes", codes, ndim=2)
    _check_whole_words("codes", codes.shape[1], bits, "K")
    return pack_along_k(codes, bits).t().contiguous()


def unpack_gptq_qweight(qweight: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_gptq_qweight`: ``int32 [K*bits/32, N]`` -> ``uint8 [N, K]``."""
    check_ndim("qweight", qweight, ndim=2)
    _check_bits(bits)
    k = qweight.shape[0] * 32 // bits
    return unpack_along_k(qweight.t(), bits, k)


def pack_gptq_qzeros(zero_point: torch.Tensor, bits: int) -> torch.Tensor:
    """GPTQ ``qzeros``: ``uint8 [N, G]`` -> ``int32 [G, N*bits/32]``, packed along N.

    The zero points are stored as given (GPTQ v2 convention); GPTQ v1 checkpoints store
    ``zero - 1``, which a loader must undo itself.
    """
    check_ndim("zero_point", zero_point, ndim=2)
    _check_whole_words("zero_point", zero_point.shape[0], bits, "N")
    return pack_along_k(zero_point.t(), bits)


def unpack_gptq_qzeros(qzeros: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_gptq_qzeros`: ``int32 [G, N*bits/32]`` -> ``uint8 [N, G]``."""
    check_ndim("qzeros", qzeros, ndim=2)
    return unpack_along_k(qzeros, bits, n).t().contiguous()


def pack_ct_zero_point(zero_point: torch.Tensor, bits: int) -> torch.Tensor:
    """compressed-tensors ``weight_zero_point``: ``uint8 [N, G]`` -> ``int32 [ceil(N*bits/32), G]``,
    packed along N (dim 0)."""
    check_ndim("zero_point", zero_point, ndim=2)
    return pack_along_k(zero_point.t(), bits).t().contiguous()


def unpack_ct_zero_point(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_ct_zero_point`: ``int32 [ceil(N*bits/32), G]`` -> ``uint8 [N, G]``."""
    check_ndim("packed", packed, ndim=2)
    return unpack_along_k(packed.t(), bits, n).t().contiguous()


# ---------------------------------------------------------------------------------------------
# AWQ
# ---------------------------------------------------------------------------------------------


def pack_awq(codes: torch.Tensor) -> torch.Tensor:
    """AWQ ``qweight`` (or ``qzeros``): 4-bit codes ``uint8 [K, N]`` -> ``int32 [K, N/8]``.

    Packed along N (AWQ stores the weight K-major) with AWQ's interleave: slot ``j`` (bits
    ``4j .. 4j+3``) of word ``c`` holds column ``8c + AWQ_PACK_ORDER[j]``, i.e.
    ``8c + [0,2,4,6,1,3,5,7][j]``.
    """
    check_dtype("codes", codes, (torch.uint8,))
    check_ndim("codes", codes, ndim=2)
    rows, cols = codes.shape
    check_divisible("codes", cols, 8, "the packed dimension N (AWQ packs 8 nibbles per int32)")
    order = torch.tensor(AWQ_PACK_ORDER, device=codes.device)
    interleaved = codes.view(rows, cols // 8, 8).index_select(-1, order).reshape(rows, cols)
    return pack_along_k(interleaved, 4)


def unpack_awq(qweight: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_awq`: ``int32 [K, N/8]`` -> ``uint8 [K, N]``."""
    check_ndim("qweight", qweight, ndim=2)
    rows, words = qweight.shape
    slots = unpack_along_k(qweight, 4, words * 8).view(rows, words, 8)
    slot_of_column = torch.tensor(_AWQ_SLOT_OF_COLUMN, device=qweight.device)
    return slots.index_select(-1, slot_of_column).reshape(rows, words * 8)
