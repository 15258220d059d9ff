"""Input checks and small tensor helpers shared by the format codecs.

Every check raises a ``ValueError`` naming the argument, what was expected and what was found. The
checks read only shapes and dtypes (never tensor values), so the per-call paths (dequantize,
quantize-dequantize of activations) stay free of host synchronisation and CUDA-graph capturable.
"""

from __future__ import annotations

import torch

from kernel_core.params import dtype_name

__all__ = [
    "check_dtype",
    "check_ndim",
    "check_divisible",
    "check_shape",
    "check_float",
    "to_int32_wrapping",
    "broadcast_row_scale",
    "as_scale_tensor",
    "dtype_name",
]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_dtype(name: str, tensor: torch.Tensor, dtypes: tuple[torch.dtype, ...]) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name}: expected a tensor, found {type(tensor).__name__}")
    if tensor.dtype not in dtypes:
        expected = " or ".join(dtype_name(d) for d in dtypes)
        raise ValueError(f"{name}: expected dtype {expected}, found {dtype_name(tensor.dtype)}")


def check_float(name: str, tensor: torch.Tensor) -> None:
    """A floating-point input to quantize (fp16, bf16, fp32 or fp64)."""
    check_dtype(name, tensor, FLOAT_DTYPES)


def check_ndim(name: str, tensor: torch.Tensor, ndim: int | None = None, min_ndim: int = 1) -> None:
    if ndim is not None and tensor.dim() != ndim:
        raise ValueError(
            f"{name}: expected a {ndim}-D tensor, found shape {list(tensor.shape)}"
        )
    if tensor.dim() < min_ndim:
        raise ValueError(
            f"{name}: expected at least {min_ndim} dimension(s), found shape {list(tensor.shape)}"
        )


def check_divisible(name: str, size: int, divisor: int, what: str) -> None:
    if divisor <= 0 or size % divisor:
        raise ValueError(f"{name}: {what} must be a multiple of {divisor}, found {size}")


def check_shape(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {list(shape)}, found {list(tensor.shape)}")


def to_int32_wrapping(words: torch.Tensor) -> torch.Tensor:
    """Unsigned 32-bit words held in int64 -> int32 with two's-complement wraparound.

    Written out instead of relying on the int64 -> int32 cast, whose overflow behaviour torch does
    not document: a word with its top bit set becomes a negative int32.
    """
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def broadcast_row_scale(
    scale: torch.Tensor, data: torch.Tensor, name: str = "scale"
) -> torch.Tensor:
    """Shape a per-tensor or per-row scale so it broadcasts against ``data`` of shape ``[..., K]``.

    Rules, in order: one element -> a scalar for the whole tensor; shape ``data.shape[:-1]`` (one
    per row, e.g. a per-channel ``[N]``) -> a trailing unit dimension is added; anything else is
    used with ordinary torch broadcasting (e.g. ``[N, 1]`` or ``[M, 1]``).
    """
    if scale.numel() == 1:
        return scale.reshape(())
    if tuple(scale.shape) == tuple(data.shape[:-1]):
        return scale.unsqueeze(-1)
    trailing = data.shape[data.dim() - scale.dim():] if scale.dim() <= data.dim() else None
    if trailing is None or any(s not in (1, d) for s, d in zip(scale.shape, trailing)):
        raise ValueError(
            f"{name}: shape {list(scale.shape)} does not broadcast against data of shape "
            f"{list(data.shape)}; expected one element, one per row {list(data.shape[:-1])}, "
            "or a broadcastable shape"
        )
    return scale


def as_scale_tensor(name: str, value: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    """A scale given as a float or tensor -> a float32 tensor on ``device`` (shape kept, a float
    becomes ``[1]``)."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise ValueError(
                f"{name}: expected a floating-point scale, found {dtype_name(value.dtype)}"
            )
        return value.to(device=device, dtype=torch.float32)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: expected a float or a tensor, found {type(value).__name__}")
    return torch.tensor([float(value)], dtype=torch.float32, device=device)
