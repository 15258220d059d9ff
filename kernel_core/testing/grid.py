"""The configs the conformance kit tries: a grid per family, and the quick subset of it.

The full grid is the cartesian product of every axis of a family (shapes, dtypes, activation modes,
weight types, group sizes, zero points, ...). A kernel is tested on the configs of its family's grid
that its ``can_implement`` accepts. The quick grid (the default) keeps a small subset of those that
still covers every value of every axis at least once, picked greedily; ``KERNEL_CORE_GRID=full``
(or ``--kernel-core-grid=full`` with the pytest plugin) runs them all.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from kernel_core.config import LayerConfig
from kernel_core.families import FAMILIES
from kernel_core.scalar_types import scalar_types

__all__ = [
    "GRID_ENV",
    "GRIDS",
    "SHAPES",
    "M_VALUES",
    "GridConfig",
    "grid_configs",
    "grid_size",
    "kernel_configs",
    "m_values",
]

GRID_ENV = "KERNEL_CORE_GRID"
GRIDS = ("quick", "full")

#: (N, K): small but aligned, one larger, and one that is not a power of two (partial 128-blocks).
SHAPES = ((64, 128), (256, 512), (192, 384))
#: Token counts: a single token (decode), an odd count across tile edges, a few hundred.
M_VALUES = {"quick": (1, 33, 257), "full": (1, 7, 16, 33, 128, 257)}

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_COMMON: dict[str, list[dict[str, Any]]] = {
    "shape": [{"weight_shape": s} for s in SHAPES],
    "act_dtype": [{"act_dtype": d} for d in _DTYPES],
    "out_dtype": [{}, {"out_dtype": torch.float32}],
}

#: Per family, the axes beyond the common ones. Each axis is a list of field settings, so coupled
#: fields (a weight type and its zero points) vary together.
_FAMILY_AXES: dict[str, dict[str, list[dict[str, Any]]]] = {
    "mp": {
        "weight_type": [
            {"weight_type": scalar_types.uint4b8, "zero_points": False},
            {"weight_type": scalar_types.uint8b128, "zero_points": False},
            {"weight_type": scalar_types.uint4, "zero_points": True},
            {"weight_type": scalar_types.uint8, "zero_points": True},
        ],
        "group_size": [{"group_size": g} for g in (128, 64, 32, -1)],
        "act_order": [{"has_g_idx": False}, {"has_g_idx": True}],
    },
    "int8": {
        "weight_scale": [{"weight_scale_granularity": g} for g in ("channel", "tensor")],
        "input_scale": [{"input_scale": s} for s in ("dynamic", "static")],
        "input_symmetric": [{"input_symmetric": s} for s in (True, False)],
    },
    "fp8": {
        "activations": [
            {"activation_mode": "w8a8", "input_scale": scale, "input_scale_granularity": per}
            for scale, per in (("dynamic", "token"), ("dynamic", "tensor"), ("static", "tensor"))
        ]
        + [{"activation_mode": "w8a16"}],
        "weight_scale": [{"weight_scale_granularity": g} for g in ("channel", "tensor")],
    },
    "fp8_block": {},
    "nvfp4": {"activation_mode": [{"activation_mode": m} for m in ("w4a4", "w4a16")]},
    "mxfp4": {"activation_mode": [{"activation_mode": m} for m in ("w4a16", "w4a4")]},
    "mxfp8": {"activation_mode": [{"activation_mode": m} for m in ("w8a8", "w8a16")]},
}


@dataclass(frozen=True)
class GridConfig:
    """One point of a family's grid: the config and which value of each axis it uses."""

    config: LayerConfig
    choices: tuple[tuple[str, int], ...]

    @property
    def id(self) -> str:
        """A short, stable pytest id."""
        return self.config.short().replace(" ", "")


def grid_size() -> str:
    """``quick`` (default) or ``full``, from ``KERNEL_CORE_GRID``."""
    value = os.environ.get(GRID_ENV, "quick").strip().lower() or "quick"
    if value not in GRIDS:
        raise ValueError(
            f"{GRID_ENV}={value!r} is not allowed; expected one of: {', '.join(GRIDS)}"
        )
    return value


def m_values(size: str | None = None) -> tuple[int, ...]:
    return M_VALUES[size or grid_size()]


def grid_configs(family: str) -> Iterator[GridConfig]:
    """Every valid config of the family's full grid (combinations a config rejects are skipped)."""
    config_class = FAMILIES[family].config_class
    axes: Mapping[str, list[dict[str, Any]]] = {**_COMMON, **_FAMILY_AXES[family]}
    seen: set[LayerConfig] = set()
    names = list(axes)
    for indices in itertools.product(*(range(len(axes[a])) for a in names)):
        fields: dict[str, Any] = {}
        for axis, index in zip(names, indices, strict=True):
            fields.update(axes[axis][index])
        if fields.get("has_g_idx") and fields.get("group_size") == -1:
            continue  # act-order needs groups
        try:
            config = config_class(**fields)
        except ValueError:
            continue
        if config in seen:
            continue
        seen.add(config)
        yield GridConfig(config, tuple(zip(names, indices, strict=True)))


def _cover(points: list[GridConfig]) -> list[GridConfig]:
    """Greedy subset covering every (axis, value) that appears in ``points``."""
    uncovered = {choice for p in points for choice in p.choices}
    chosen: list[GridConfig] = []
    while uncovered:
        best = max(points, key=lambda p: len(uncovered.intersection(p.choices)))
        chosen.append(best)
        uncovered.difference_update(best.choices)
    return chosen


def kernel_configs(
    kernel_class: type, size: str | None = None
) -> tuple[list[GridConfig], list[tuple[LayerConfig, str | None]]]:
    """(accepted grid points, refused configs with the kernel's reason) for a kernel class.

    ``size``: "quick" or "full" (default: ``KERNEL_CORE_GRID``). Refusals come from the full grid,
    so a kernel is always asked about what it cannot do.
    """
    accepted: list[GridConfig] = []
    refused: list[tuple[LayerConfig, str | None]] = []
    for point in grid_configs(kernel_class.family):
        ok, reason = kernel_class.can_implement(point.config)
        if ok:
            accepted.append(point)
        else:
            refused.append((point.config, reason))
    if (size or grid_size()) == "quick":
        accepted = _cover(accepted)
    return accepted, refused
