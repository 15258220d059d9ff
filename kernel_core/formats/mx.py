"""OCP MX scales (E8M0) and MXFP8: E4M3 elements sharing one power-of-two scale per 32 along K.

E8M0 (``float8_e8m0fnu``) is stored as a ``uint8`` exponent byte ``E``: value ``2^(E - 127)``,
``E = 255`` is NaN, there is no zero and no sign. Conversions work on the fp32 bit pattern, never
through ``log2``/``exp2``, so they are exact and identical on every device (``torch.log2`` can
round an argument just above a power of two down to the integer, which would change a ceiling).
"""

from __future__ import annotations

import torch

from kernel_core.families.mxfp4 import MX_GROUP
from kernel_core.formats._checks import check_divisible, check_dtype, check_float, check_ndim
from kernel_core.formats.fp8 import FP8_E4M3_MAX
from kernel_core.formats._division import divide

__all__ = [
    "MX_GROUP",
    "E8M0_NAN",
    "e8m0_to_float",
    "float_to_e8m0",
    "e8m0_reciprocal",
    "quantize_mxfp8",
    "dequantize_mxfp8",
    "qdq_mxfp8",
]

E8M0_NAN = 255
_FP32_NAN_BITS = 0x7FC00000
_FP32_2_POW_M127_BITS = 0x00400000  # 2^-127 is a subnormal in fp32: only mantissa bit 22 set


def e8m0_to_float(e: torch.Tensor) -> torch.Tensor:
    """E8M0 bytes -> fp32 ``2^(E - 127)`` (E = 0 gives the fp32 subnormal 2^-127; 255 gives NaN)."""
    check_dtype("e", e, (torch.uint8,))
    exponent = e.to(torch.int32)
    bits = torch.where(exponent == 0, _FP32_2_POW_M127_BITS, exponent << 23)
    bits = torch.where(exponent == E8M0_NAN, _FP32_NAN_BITS, bits)
    return bits.view(torch.float32)


def float_to_e8m0(x: torch.Tensor) -> torch.Tensor:
    """fp32 values -> E8M0 bytes, rounding UP to the next power of two (``E = ceil(log2 x) + 127``).

    Rounding up makes ``x / 2^(E-127) <= 1``, which is what a shared scale needs (no element
    overflows). Saturates to ``[0, 254]``: ``x <= 2^-127`` (zero and negatives included) gives 0,
    ``x > 2^127`` gives 254; NaN and infinities give 255 (NaN).
    """
    check_float("x", x)
    values = x.to(torch.float32)
    bits = values.view(torch.int32)
    exponent = (bits >> 23) & 0xFF
    has_mantissa = (bits & 0x7FFFFF) != 0
    normal = exponent + has_mantissa.to(torch.int32)
    # fp32 subnormals lie in (0, 2^-126): up to 2^-127 rounds up to E = 0, above it to E = 1.
    subnormal = (bits > _FP32_2_POW_M127_BITS).to(torch.int32)
    e = torch.where(exponent == 0, subnormal, normal).clamp(max=254)
    e = torch.where(values <= 0, 0, e)
    e = torch.where(exponent == 0xFF, E8M0_NAN, e)
    return e.to(torch.uint8)


def e8m0_reciprocal(e: torch.Tensor) -> torch.Tensor:
    """``2^(127 - E)`` = 1 / e8m0_to_float(E), exactly, for E in [0, 254]: the encode multiplier
    of a shared scale (a multiply by a power of two is exact, unlike a division by ``2^(E-127)``
    computed some other way)."""
    return e8m0_to_float((254 - e.to(torch.int32)).to(torch.uint8))


def _grouped(name: str, x: torch.Tensor) -> torch.Tensor:
    check_ndim(name, x, min_ndim=1)
    k = x.shape[-1]
    check_divisible(name, k, MX_GROUP, "the last dimension (K)")
    return x.unflatten(-1, (k // MX_GROUP, MX_GROUP))


def quantize_mxfp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [..., K]`` -> ``(q float8_e4m3fn [..., K], scale uint8 E8M0 [..., K/32])``.

    Per 32-block: ``E = clamp(ceil(log2(max(amax, fp32 tiny) / 448)) + 127, 0, 254)``, ``q =
    e4m3(x * 2^(127 - E))`` (the multiply by a power of two is exact; the cast rounds to nearest
    even; values are clamped to +-448 first).
    """
    check_float("x", x)
    grouped = _grouped("x", x.to(torch.float32))
    amax = grouped.abs().amax(dim=-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
    e = float_to_e8m0(divide(amax, FP8_E4M3_MAX))
    scaled = (grouped * e8m0_reciprocal(e)).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX)
    return scaled.to(torch.float8_e4m3fn).flatten(-2), e.squeeze(-1)


def dequantize_mxfp8(
    q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``fp32(q) * 2^(scale - 127)`` per 32-block, computed in fp32, returned in ``dtype``."""
    check_dtype("q", q, (torch.float8_e4m3fn,))
    check_dtype("scale", scale, (torch.uint8,))
    grouped = _grouped("q", q.to(torch.float32))
    if tuple(scale.shape) != tuple(grouped.shape[:-1]):
        raise ValueError(
            f"scale: expected shape {list(grouped.shape[:-1])} (one per 32 along K), found "
            f"{list(scale.shape)}"
        )
    return (grouped * e8m0_to_float(scale).unsqueeze(-1)).flatten(-2).to(dtype)


def qdq_mxfp8(x: torch.Tensor) -> torch.Tensor:
    """Quantize to MXFP8 and decode again, in ``x``'s dtype (activation emulation of W8A8)."""
    q, scale = quantize_mxfp8(x)
    return dequantize_mxfp8(q, scale, dtype=x.dtype)
