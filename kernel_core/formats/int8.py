"""INT8 quantization of activations (and of W8A8 weights, per row), symmetric or with a zero point.

Decode: ``x ~= (q - zero_point) * scale``. Encode: ``q = saturate_int8(round(x / scale) +
zero_point)`` with half-to-even rounding, as the W8A8 GPU quantizers do. Scale shapes: ``"tensor"``
-> ``[1]``; ``"token"`` (one per row of ``[..., K]``) -> ``[..., 1]``; the zero point, when there is
one, is ``int32`` of the same shape (it may lie outside the int8 range when every value of a row
has the same sign).
"""

from __future__ import annotations

import torch

from kernel_core.formats._checks import (
    as_scale_tensor,
    broadcast_row_scale,
    check_dtype,
    check_float,
    check_ndim,
)
from kernel_core.formats._division import divide

__all__ = ["INT8_AMAX_FLOOR", "quantize_int8", "dequantize_int8"]

#: Floor of a dynamic range (amax, or max - min) so a constant row never divides by zero.
INT8_AMAX_FLOOR = 1e-10

_GRANULARITIES = ("tensor", "token")


def quantize_int8(
    x: torch.Tensor,
    granularity: str,
    *,
    symmetric: bool = True,
    scale: torch.Tensor | float | None = None,
    zero_point: torch.Tensor | int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Quantize ``x [..., K]`` to int8; returns ``(q int8, scale fp32, zero_point int32 | None)``.

    Dynamic symmetric: ``scale = max(amax, floor) / 127``. Dynamic asymmetric: ``scale =
    max(max - min, floor) / 255``, ``zero_point = round(-128 - min / scale)``. Static: the given
    ``scale`` (and, asymmetric, ``zero_point``) are used and returned (``granularity`` then only
    documents the caller's intent; the shapes decide the broadcasting).
    """
    check_float("x", x)
    check_ndim("x", x, min_ndim=1)
    if granularity not in _GRANULARITIES:
        raise ValueError(
            f"granularity: expected one of {', '.join(_GRANULARITIES)}, found {granularity!r}"
        )
    if symmetric and zero_point is not None:
        raise ValueError("zero_point: symmetric quantization takes none, found one")
    values = x.to(torch.float32)
    if scale is not None:
        scale = as_scale_tensor("scale", scale, x.device)
        if not symmetric:
            if zero_point is None:
                raise ValueError("zero_point: static asymmetric quantization needs one, found None")
            if isinstance(zero_point, torch.Tensor):
                check_dtype("zero_point", zero_point, (torch.int32, torch.int64))
                zero_point = zero_point.to(device=x.device, dtype=torch.int32)
            else:
                zero_point = torch.tensor([int(zero_point)], dtype=torch.int32, device=x.device)
    else:
        if zero_point is not None:
            raise ValueError("zero_point: given without a scale; static quantization needs both")
        dims = None if granularity == "tensor" else -1

        def reduce(t: torch.Tensor, op: str) -> torch.Tensor:
            if dims is None:
                return getattr(t, op)().reshape(1)
            return getattr(t, op)(dim=dims, keepdim=True)

        if symmetric:
            scale = divide(reduce(values.abs(), "amax").clamp(min=INT8_AMAX_FLOOR), 127.0)
        else:
            low, high = reduce(values, "amin"), reduce(values, "amax")
            scale = divide((high - low).clamp(min=INT8_AMAX_FLOOR), 255.0)
            zero_point = torch.round(-128.0 - low / scale).to(torch.int32)
    codes = torch.round(values / broadcast_row_scale(scale, values))
    if zero_point is not None:
        codes = codes + broadcast_row_scale(zero_point, values, "zero_point").to(torch.float32)
    return codes.clamp(-128, 127).to(torch.int8), scale, zero_point


def dequantize_int8(
    q: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(q - zero_point) * scale`` in ``dtype``; scale / zero point broadcast per row or tensor."""
    check_dtype("q", q, (torch.int8,))
    check_dtype("scale", scale, (torch.float32,))
    values = q.to(torch.float32)
    if zero_point is not None:
        check_dtype("zero_point", zero_point, (torch.int32,))
        values = values - broadcast_row_scale(zero_point, values, "zero_point").to(torch.float32)
    return (values * broadcast_row_scale(scale, values)).to(dtype)
