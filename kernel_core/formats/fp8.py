"""FP8 E4M3 (``torch.float8_e4m3fn``) quantization: per tensor, channel, token, 128x128 block and
1x128 token group.

Scales are decode multipliers: ``x ~= fp32(q) * scale``. Encoding divides by the scale (not a
multiply by its reciprocal), clamps to +-448 (the cast alone is not guaranteed to saturate on every
torch version) and casts with round-to-nearest-even. Per-row scale shapes:

* ``"tensor"``: ``[1]``.
* ``"channel"`` (rows of a weight ``[N, K]``): ``[N]``, one of the two shapes the layer contract
  accepts for a per-channel scale.
* ``"token"`` (rows of an activation ``[..., K]``): ``[..., 1]``, the shape row-wise GEMMs
  (``torch._scaled_mm``) take for the A operand.

:func:`dequantize_fp8` accepts all of them (see ``broadcast_row_scale``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernel_core.formats._checks import (
    as_scale_tensor,
    broadcast_row_scale,
    check_divisible,
    check_dtype,
    check_float,
    check_ndim,
)
from kernel_core.formats._division import divide

__all__ = [
    "FP8_E4M3_MAX",
    "FP8_MIN_SCALE",
    "FP8_GROUP_AMAX_FLOOR",
    "quantize_fp8",
    "dequantize_fp8",
    "quantize_fp8_block",
    "dequantize_fp8_block",
    "quantize_fp8_per_token_group",
    "dequantize_fp8_per_token_group",
]

FP8_E4M3_MAX = 448.0
#: Floor of a dynamic per-tensor / per-channel / per-token scale, as the W8A8 GPU quantizers use,
#: so an all-zero row never divides by zero.
FP8_MIN_SCALE = 1.0 / (FP8_E4M3_MAX * 512.0)
#: Floor of a block's / token group's amax before dividing by 448 (DeepSeek-style quantizers).
FP8_GROUP_AMAX_FLOOR = 1e-10

_GRANULARITIES = ("tensor", "channel", "token")


def _encode(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (x / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)


def quantize_fp8(
    x: torch.Tensor, granularity: str, *, scale: torch.Tensor | float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize to E4M3 with one scale per tensor, weight row (``"channel"``) or token.

    Dynamic (``scale=None``): ``scale = max(amax / 448, FP8_MIN_SCALE)`` over the granule.
    Static: the given decode scale is used as is (a float becomes ``[1]``) and returned as fp32.
    Returns ``(q float8_e4m3fn, scale float32)``; shapes in the module docstring.
    """
    check_float("x", x)
    if granularity not in _GRANULARITIES:
        raise ValueError(
            f"granularity: expected one of {', '.join(_GRANULARITIES)}, found {granularity!r}"
        )
    check_ndim("x", x, ndim=2 if granularity == "channel" else None)
    values = x.to(torch.float32)
    if scale is not None:
        scale = as_scale_tensor("scale", scale, x.device)
        return _encode(values, broadcast_row_scale(scale, values)), scale
    if granularity == "tensor":
        amax = values.abs().amax().reshape(1)
    else:
        amax = values.abs().amax(dim=-1, keepdim=True)
    scale = divide(amax, FP8_E4M3_MAX).clamp(min=FP8_MIN_SCALE)
    q = _encode(values, scale.reshape(()) if granularity == "tensor" else scale)
    return q, scale.squeeze(-1) if granularity == "channel" else scale


def dequantize_fp8(
    q: torch.Tensor, scale: torch.Tensor, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``fp32(q) * scale`` in ``dtype``. ``scale``: one element, one per row (``q.shape[:-1]``),
    or any shape that broadcasts (``[N, 1]``, ``[M, 1]``)."""
    check_dtype("q", q, (torch.float8_e4m3fn,))
    check_dtype("scale", scale, (torch.float32,))
    values = q.to(torch.float32)
    return (values * broadcast_row_scale(scale, values)).to(dtype)


def _num_blocks(size: int, block: int) -> int:
    return -(-size // block)


def _check_block(block: tuple[int, int]) -> tuple[int, int]:
    if (
        not isinstance(block, tuple | list)
        or len(block) != 2
        or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)
    ):
        raise ValueError(f"block: expected two positive ints (rows, cols), found {block!r}")
    return int(block[0]), int(block[1])


def _expand_block_scale(
    scale: torch.Tensor, block: tuple[int, int], n: int, k: int
) -> torch.Tensor:
    """``[ceil(N/bn), ceil(K/bk)]`` -> ``[N, K]`` (a view when no edge block is partial)."""
    bn, bk = block
    nb, kb = scale.shape
    expanded = scale[:, None, :, None].expand(nb, bn, kb, bk).reshape(nb * bn, kb * bk)
    return expanded[:n, :k]


def quantize_fp8_block(
    w: torch.Tensor, block: tuple[int, int] = (128, 128)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``[N, K]`` with one scale per ``block`` (DeepSeek style).

    ``scale[i, j] = max(amax(block i, j), FP8_GROUP_AMAX_FLOOR) / 448``, shape
    ``[ceil(N/bn), ceil(K/bk)]``; edge blocks may be partial (their amax covers the real elements).
    """
    check_float("w", w)
    check_ndim("w", w, ndim=2)
    bn, bk = _check_block(block)
    n, k = w.shape
    nb, kb = _num_blocks(n, bn), _num_blocks(k, bk)
    values = w.to(torch.float32)
    padded = F.pad(values.abs(), (0, kb * bk - k, 0, nb * bn - n))
    amax = padded.view(nb, bn, kb, bk).amax(dim=(1, 3))
    scale = divide(amax.clamp(min=FP8_GROUP_AMAX_FLOOR), FP8_E4M3_MAX)
    return _encode(values, _expand_block_scale(scale, (bn, bk), n, k)), scale


def dequantize_fp8_block(
    q: torch.Tensor,
    scale: torch.Tensor,
    block: tuple[int, int] = (128, 128),
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Inverse of :func:`quantize_fp8_block`: ``fp32(q[n, k]) * scale[n // bn, k // bk]``."""
    check_dtype("q", q, (torch.float8_e4m3fn,))
    check_ndim("q", q, ndim=2)
    check_dtype("scale", scale, (torch.float32,))
    bn, bk = _check_block(block)
    n, k = q.shape
    expected = (_num_blocks(n, bn), _num_blocks(k, bk))
    if tuple(scale.shape) != expected:
        raise ValueError(
            f"scale: expected shape {list(expected)} for q of shape [{n}, {k}] and block "
            f"{(bn, bk)}, found {list(scale.shape)}"
        )
    return (q.to(torch.float32) * _expand_block_scale(scale, (bn, bk), n, k)).to(dtype)


def quantize_fp8_per_token_group(
    x: torch.Tensor, group: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic activation quantization per token and per ``group`` channels of K.

    ``s[..., j] = max(amax(x[..., group*j : group*(j+1)]), 1e-10) / 448``; returns
    ``(q float8_e4m3fn [..., K], s float32 [..., K / group])`` (scales row-major).
    """
    check_float("x", x)
    check_ndim("x", x, min_ndim=1)
    k = x.shape[-1]
    check_divisible("x", k, group, f"the last dimension (K) with group={group}")
    grouped = x.to(torch.float32).unflatten(-1, (k // group, group))
    amax = grouped.abs().amax(dim=-1, keepdim=True)
    scale = divide(amax.clamp(min=FP8_GROUP_AMAX_FLOOR), FP8_E4M3_MAX)
    return _encode(grouped, scale).flatten(-2), scale.squeeze(-1)


def dequantize_fp8_per_token_group(
    q: torch.Tensor, scale: torch.Tensor, group: int = 128, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Inverse of :func:`quantize_fp8_per_token_group`."""
    check_dtype("q", q, (torch.float8_e4m3fn,))
    check_dtype("scale", scale, (torch.float32,))
    check_ndim("q", q, min_ndim=1)
    k = q.shape[-1]
    check_divisible("q", k, group, f"the last dimension (K) with group={group}")
    expected = (*q.shape[:-1], k // group)
    if tuple(scale.shape) != expected:
        raise ValueError(f"scale: expected shape {list(expected)}, found {list(scale.shape)}")
    grouped = q.to(torch.float32).unflatten(-1, (k // group, group))
    return (grouped * scale.unsqueeze(-1)).flatten(-2).to(dtype)
