"""The base layer config: what every family's config says about a linear layer.

Configs are frozen and hashable (selection caches on them) and validate themselves on
construction: a bad field is a ``ValueError`` naming the field, the value and what is allowed.
Shapes follow ``torch.nn.Linear.weight``: ``(out_features, in_features)`` = ``(N, K)``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch

__all__ = ["LayerConfig", "ACTIVATION_DTYPES", "OUTPUT_DTYPES", "check_choice"]

ACTIVATION_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
OUTPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_choice(config: Any, name: str, allowed: Collection[Any]) -> None:
    """Raise a ValueError naming ``config.<name>``, its value and the allowed values."""
    value = getattr(config, name)
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise ValueError(
            f"{type(config).__name__}.{name}={value!r} is not allowed; expected one of: {shown}"
        )


def _check_shape(config: Any, name: str) -> tuple[int, int]:
    value = getattr(config, name)
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value)
    ):
        raise ValueError(
            f"{type(config).__name__}.{name}={value!r} is not allowed; expected "
            "(out_features, in_features) as two positive ints"
        )
    return int(value[0]), int(value[1])


@dataclass(frozen=True, kw_only=True)
class LayerConfig:
    """Fields shared by every family.

    ``weight_shape`` is this partition's ``(N, K)``; ``full_weight_shape`` the whole layer's
    (defaults to ``weight_shape``: no tensor parallelism). ``out_dtype`` defaults to ``act_dtype``.
    """

    family: ClassVar[str] = ""
    #: Activation modes the family has (e.g. ``("w4a4", "w4a16")``); the first is the default.
    activation_modes: ClassVar[tuple[str, ...]] = ()

    weight_shape: tuple[int, int]
    full_weight_shape: tuple[int, int] | None = None
    act_dtype: torch.dtype = torch.bfloat16
    out_dtype: torch.dtype | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight_shape", _check_shape(self, "weight_shape"))
        if self.full_weight_shape is None:
            object.__setattr__(self, "full_weight_shape", self.weight_shape)
        full = _check_shape(self, "full_weight_shape")
        object.__setattr__(self, "full_weight_shape", full)
        if full[0] < self.weight_shape[0] or full[1] < self.weight_shape[1]:
            raise ValueError(
                f"{type(self).__name__}.full_weight_shape={full} is smaller than "
                f"weight_shape={self.weight_shape}; expected the whole layer's (N, K)"
            )
        check_choice(self, "act_dtype", ACTIVATION_DTYPES)
        if self.out_dtype is None:
            object.__setattr__(self, "out_dtype", self.act_dtype)
        check_choice(self, "out_dtype", OUTPUT_DTYPES)

    @property
    def out_features(self) -> int:
        return self.weight_shape[0]

    @property
    def in_features(self) -> int:
        return self.weight_shape[1]

    @property
    def is_row_parallel(self) -> bool:
        """This partition holds a slice of K (the reduction dimension) of a larger layer."""
        assert self.full_weight_shape is not None
        return self.full_weight_shape[1] != self.weight_shape[1]

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON-friendly) for explain output and tune tables."""
        out: dict[str, Any] = {"family": self.family}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.dtype):
                value = str(value).removeprefix("torch.")
            elif isinstance(value, tuple):
                value = list(value)
            elif hasattr(value, "name") and not isinstance(value, str | int | bool):
                value = value.name
            out[f.name] = value
        return out

    def short(self) -> str:
        """One line for messages: family, shape and the fields that differ from defaults."""
        parts = [f"N={self.out_features}", f"K={self.in_features}"]
        for key, value in self.as_dict().items():
            if key in ("family", "weight_shape", "full_weight_shape"):
                continue
            parts.append(f"{key}={value}")
        return f"{self.family}({', '.join(parts)})"
