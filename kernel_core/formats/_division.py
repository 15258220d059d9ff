"""Division by a constant that gives the same bits on CPU and CUDA.

PyTorch's CUDA kernels divide a tensor by a Python number as a multiplication by its reciprocal,
which differs from true division in the last bit for most divisors (448, 127, 6, ...); the CPU
divides exactly. A scale one ulp apart changes codes on rounding ties, so the codecs divide by a
tensor on the data's device instead, which is IEEE division on both.
"""

from __future__ import annotations

import torch

__all__ = ["divide"]


def divide(numerator: torch.Tensor, denominator: float) -> torch.Tensor:
    """``numerator / denominator`` with correctly rounded division on every device."""
    return numerator / torch.full((), denominator, dtype=numerator.dtype, device=numerator.device)
