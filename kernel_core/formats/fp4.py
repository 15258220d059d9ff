"""FP4 E2M1 codes, their packing, and the two block formats built on them: NVFP4 and MXFP4.

E2M1 code: bit 3 = sign, bits 2..0 = magnitude index into ``[0, 0.5, 1, 1.5, 2, 3, 4, 6]`` (8 is
-0). Packing: two codes per byte along the last dimension, **even k in the low nibble**, odd k in
the high nibble; four such bytes read as a little-endian int32 hold element i at bits 4i, the GPTQ
order.

* NVFP4: per 16 values along K an E4M3 block scale, plus a per-tensor fp32 *decode* global scale:
  ``x = e2m1 * fp32(block_scale) * global_scale``.
* MXFP4 (OCP MX): per 32 values an E8M0 exponent byte: ``x = e2m1 * 2^(E - 127)``.

Decoding goes through bit patterns, not lookup tables, so the per-call paths need no device
constants (nothing to copy to the GPU during CUDA-graph capture) and read no tensor values on the
host.
"""

from __future__ import annotations

import torch

from kernel_core.families.nvfp4 import NVFP4_GROUP
from kernel_core.formats._checks import (
    as_scale_tensor,
    check_divisible,
    check_dtype,
    check_float,
    check_ndim,
)
from kernel_core.formats.fp8 import FP8_E4M3_MAX
from kernel_core.formats.mx import MX_GROUP, e8m0_reciprocal, e8m0_to_float
from kernel_core.formats._division import divide

__all__ = [
    "E2M1_MAX",
    "E2M1_VALUES",
    "NVFP4_GROUP",
    "encode_e2m1",
    "decode_e2m1",
    "pack_fp4",
    "unpack_fp4",
    "nvfp4_global_scale",
    "quantize_nvfp4",
    "dequantize_nvfp4",
    "qdq_nvfp4",
    "quantize_mxfp4",
    "dequantize_mxfp4",
    "qdq_mxfp4",
]

E2M1_MAX = 6.0
#: Value of each of the 16 E2M1 codes (index = code); code 8 is -0.0.
E2M1_VALUES = torch.tensor(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
    dtype=torch.float32,
)
#: Default NVFP4 global decode scale is amax / (448 * 6): the largest block scale then hits 448.
_NVFP4_GLOBAL_DIVISOR = FP8_E4M3_MAX * E2M1_MAX


def encode_e2m1(x: torch.Tensor) -> torch.Tensor:
    """Round floats to the nearest E2M1 code (``uint8``, one code per element).

    Ties go to the even mantissa: |x| in [0, .25] -> 0, (.25, .75) -> .5, [.75, 1.25] -> 1,
    (1.25, 1.75) -> 1.5, [1.75, 2.5] -> 2, (2.5, 3.5) -> 3, [3.5, 5] -> 4, above 5 -> 6
    (saturating). The sign bit is kept, so small negatives give -0 (code 8); NaN gives +-0.
    Implemented as ``torch.round`` (half-to-even) on the three binades' step sizes.
    """
    check_float("x", x)
    values = x.to(torch.float32)
    magnitude = torch.nan_to_num(values.abs(), nan=0.0)
    below_two = torch.round(magnitude * 2.0)  # step 0.5: codes 0..4
    two_to_four = torch.round(magnitude) + 2.0  # step 1: codes 4..6
    from_four = (torch.round(magnitude * 0.5) + 4.0).clamp(max=7.0)  # step 2: codes 6..7
    code = torch.where(
        magnitude < 2.0, below_two, torch.where(magnitude < 4.0, two_to_four, from_four)
    ).to(torch.uint8)
    return code | (torch.signbit(values).to(torch.uint8) << 3)


def decode_e2m1(codes: torch.Tensor) -> torch.Tensor:
    """E2M1 codes (low nibble of each ``uint8``) -> fp32 values.

    Bit trick: sign to bit 7 and the 3 magnitude bits to bits 4..2 of a byte makes an E4M3 number
    equal to the E2M1 value times 2^-6 (exponent biases 7 vs 1), subnormals included; exact.
    """
    check_dtype("codes", codes, (torch.uint8,))
    as_e4m3 = ((codes & 0x8) << 4) | ((codes & 0x7) << 2)
    return as_e4m3.view(torch.float8_e4m3fn).to(torch.float32) * 64.0


def _pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """``uint8 [..., K]`` codes (< 16) -> ``uint8 [..., K/2]``, even k in the low nibble."""
    check_dtype("codes", codes, (torch.uint8,))
    check_ndim("codes", codes, min_ndim=1)
    check_divisible("codes", codes.shape[-1], 2, "the last dimension (K)")
    if codes.numel() and int(codes.max()) > 15:
        raise ValueError(f"codes: expected 4-bit codes (< 16), found {int(codes.max())}")
    return _pack_nibbles(codes)


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    """``uint8 [..., K/2]`` -> codes ``uint8 [..., K]`` (low nibble first)."""
    check_dtype("packed", packed, (torch.uint8,))
    check_ndim("packed", packed, min_ndim=1)
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).flatten(-2)


def _blocks(name: str, x: torch.Tensor, group: int) -> torch.Tensor:
    """``[..., K]`` -> ``[..., K/group, group]`` fp32, or a ValueError when K does not divide."""
    check_ndim(name, x, min_ndim=1)
    k = x.shape[-1]
    check_divisible(name, k, group, "the last dimension (K)")
    return x.to(torch.float32).unflatten(-1, (k // group, group))


def _code_blocks(packed: torch.Tensor, group: int) -> torch.Tensor:
    """Packed ``uint8 [..., K/2]`` -> codes ``[..., K/group, group]``."""
    codes = unpack_fp4(packed)
    check_divisible("packed", codes.shape[-1], group, "the unpacked last dimension (K)")
    return codes.unflatten(-1, (codes.shape[-1] // group, group))


# ---------------------------------------------------------------------------------------------
# NVFP4
# ---------------------------------------------------------------------------------------------


def nvfp4_global_scale(amax: torch.Tensor) -> torch.Tensor:
    """The NVFP4 global *decode* scale for a tensor whose largest magnitude is ``amax``:
    ``amax / (448 * 6)`` (so the largest block scale is 448), or 1 where ``amax`` is 0."""
    check_float("amax", amax)
    amax = amax.to(torch.float32)
    return torch.where(amax > 0, divide(amax, _NVFP4_GLOBAL_DIVISOR), 1.0)


def _nvfp4_global_scale(
    blocks: torch.Tensor, global_scale: torch.Tensor | float | None
) -> torch.Tensor:
    """The given decode global scale as fp32 ``[1]`` on ``blocks``' device, or the default from
    ``blocks``' amax."""
    if global_scale is None:
        return nvfp4_global_scale(blocks.abs().amax().reshape(1))
    scale = as_scale_tensor("global_scale", global_scale, blocks.device)
    if scale.numel() != 1:
        raise ValueError(
            f"global_scale: expected one element (a per-tensor decode scale), found shape "
            f"{list(scale.shape)}"
        )
    return scale.reshape(1)


def _nvfp4_codes(
    blocks: torch.Tensor, global_scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``[..., K/16, 16]`` and E4M3 block scales ``[..., K/16, 1]`` of fp32 blocks."""
    block_amax = blocks.abs().amax(dim=-1, keepdim=True)
    block_scale = (divide(block_amax, E2M1_MAX) / global_scale).clamp(max=FP8_E4M3_MAX)
    block_scale = block_scale.to(torch.float8_e4m3fn)
    effective = block_scale.to(torch.float32) * global_scale
    scaled = torch.where(effective > 0, blocks / effective, 0.0)
    return encode_e2m1(scaled), block_scale


def _nvfp4_decode(
    codes: torch.Tensor, block_scale: torch.Tensor, global_scale: torch.Tensor
) -> torch.Tensor:
    # e2m1 * e4m3 is exact (6 significant bits), so the only rounding is the global multiply.
    return decode_e2m1(codes) * block_scale.to(torch.float32) * global_scale


def quantize_nvfp4(
    x: torch.Tensor, *, global_scale: torch.Tensor | float | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x [..., K]`` -> ``(packed uint8 [..., K/2], block_scale float8_e4m3fn [..., K/16],
    global_scale float32 [1])``.

    ``global_scale`` is the *decode* multiplier (default ``amax / (448 * 6)``, or 1 for an all-zero
    tensor). Per 16-block: ``s = e4m3(min(amax_block / 6 / global_scale, 448))`` and
    ``q = e2m1(x / (fp32(s) * global_scale))`` (saturating at 6; 0 where ``s`` is 0).
    """
    check_float("x", x)
    blocks = _blocks("x", x, NVFP4_GROUP)
    scale = _nvfp4_global_scale(blocks, global_scale)
    codes, block_scale = _nvfp4_codes(blocks, scale)
    return _pack_nibbles(codes.flatten(-2)), block_scale.squeeze(-1), scale


def dequantize_nvfp4(
    packed: torch.Tensor,
    block_scale: torch.Tensor,
    global_scale: torch.Tensor | float,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``e2m1(q) * fp32(block_scale[..., k // 16]) * global_scale``, computed in fp32, returned
    in ``dtype``."""
    check_dtype("packed", packed, (torch.uint8,))
    check_dtype("block_scale", block_scale, (torch.float8_e4m3fn,))
    blocks = _code_blocks(packed, NVFP4_GROUP)
    if tuple(block_scale.shape) != tuple(blocks.shape[:-1]):
        raise ValueError(
            f"block_scale: expected shape {list(blocks.shape[:-1])} (one per 16 along K), found "
            f"{list(block_scale.shape)}"
        )
    scale = _nvfp4_global_scale(block_scale, global_scale)
    return _nvfp4_decode(blocks, block_scale.unsqueeze(-1), scale).flatten(-2).to(dtype)


def qdq_nvfp4(x: torch.Tensor, global_scale: torch.Tensor | float) -> torch.Tensor:
    """NVFP4 quantize then decode, in ``x``'s dtype (W4A4 activation emulation); no packing, no
    host reads."""
    check_float("x", x)
    blocks = _blocks("x", x, NVFP4_GROUP)
    scale = _nvfp4_global_scale(blocks, global_scale)
    codes, block_scale = _nvfp4_codes(blocks, scale)
    return _nvfp4_decode(codes, block_scale, scale).flatten(-2).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# MXFP4
# ---------------------------------------------------------------------------------------------


def _mxfp4_codes(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``[..., K/32, 32]`` and E8M0 bytes ``[..., K/32, 1]`` of fp32 blocks.

    Shared exponent: the OCP rule ``floor(log2(amax)) - 2`` (2 = E2M1's largest exponent), applied
    to the amax rounded at its fp32 bits (add 2^21 to the bit pattern, keep the exponent): an amax
    of 1.75 * 2^p or more counts as 2^(p+1). Without that rounding such a block's largest elements
    would scale into [7, 8) and saturate to 6 (up to 25% error); with it they land on 4 at most
    1/7 away. Clamped to E in [0, 254].
    """
    amax = blocks.abs().amax(dim=-1, keepdim=True)
    rounded_exponent = ((amax.view(torch.int32) + 0x200000) >> 23) & 0xFF
    e = (rounded_exponent - 2).clamp(0, 254).to(torch.uint8)
    return encode_e2m1(blocks * e8m0_reciprocal(e)), e


def quantize_mxfp4(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [..., K]`` -> ``(packed uint8 [..., K/2], scale uint8 E8M0 [..., K/32])``.

    Elements are scaled by ``2^-e`` (exact) and rounded to E2M1 half-to-even, saturating at 6.
    The shared exponent is described in ``_mxfp4_codes``.
    """
    check_float("x", x)
    codes, e = _mxfp4_codes(_blocks("x", x, MX_GROUP))
    return _pack_nibbles(codes.flatten(-2)), e.squeeze(-1)


def dequantize_mxfp4(
    packed: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``e2m1(q) * 2^(scale[..., k // 32] - 127)`` (exact in fp32), returned in ``dtype``."""
    check_dtype("packed", packed, (torch.uint8,))
    check_dtype("scale", scale, (torch.uint8,))
    blocks = _code_blocks(packed, MX_GROUP)
    if tuple(scale.shape) != tuple(blocks.shape[:-1]):
        raise ValueError(
            f"scale: expected shape {list(blocks.shape[:-1])} (one per 32 along K), found "
            f"{list(scale.shape)}"
        )
    values = decode_e2m1(blocks) * e8m0_to_float(scale).unsqueeze(-1)
    return values.flatten(-2).to(dtype)


def qdq_mxfp4(x: torch.Tensor) -> torch.Tensor:
    """MXFP4 quantize then decode, in ``x``'s dtype (W4A4 activation emulation)."""
    check_float("x", x)
    codes, e = _mxfp4_codes(_blocks("x", x, MX_GROUP))
    return (decode_e2m1(codes) * e8m0_to_float(e)).flatten(-2).to(x.dtype)
