"""Dispatch by M: one layer served by several kernels, each for the M (tokens per call) it wins.

The tune table often says that the fastest kernel changes with M (a weight-streaming kernel at
decode, a tensor-core GEMM at prefill). :func:`plan_by_m` reads, for each measured M, the fastest
kernel that selection accepts for the layer (or the one the table pins for that M) and merges
neighbouring points into routes: kernel A serves every M up to the last measured point where it
was fastest, the next kernel from there on, and the last route every larger M.

:class:`DispatchingLinearKernel` holds one instance per kernel and picks per call with a Python
branch on ``x.shape``. Shapes are static within a captured CUDA graph and a ``torch.compile``
graph (a symbolic M becomes a guard on the bound), so the branch is resolved at capture/trace
time and the hot path is exactly the chosen kernel's.

Weights: each kernel repacks ``layer``'s contract parameters its own way in
``process_weights_after_loading``, so the first kernel processes the layer itself and every other
kernel gets its own copy of the checkpoint parameters, a submodule of the layer
(``layer.dispatch_1`` ...). Kernels that declare the same non-None ``weight_layout`` class attribute
transform the layer identically and share one processed copy (such a kernel must keep no per-layer
state from ``process_weights_after_loading`` besides the layer's parameters; only the first of
them processes). :meth:`DispatchingLinearKernel.describe` states the memory the copies cost.

This is opt-in: ``init_kernel(config, dispatch_by_m=True)`` returns a dispatching kernel when the
table's best kernel differs with M, else the usual single kernel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kernel_core.config import LayerConfig
from kernel_core.kernel import PLATFORMS, LinearKernel
from kernel_core.registry import registry
from kernel_core.selection import explain
from kernel_core.tune import layer_key, per_m_times, pinned_kernel, table_hook

__all__ = [
    "Route",
    "plan_by_m",
    "weight_bytes",
    "weight_holders",
    "describe_plan",
    "DispatchingLinearKernel",
    "init_dispatching_kernel",
]


@dataclass(frozen=True)
class Route:
    """``kernel`` serves each M up to ``m_max`` (None: any larger M) left by earlier routes."""

    m_max: int | None
    kernel: type[LinearKernel]

    def as_dict(self) -> dict[str, Any]:
        return {"m_max": self.m_max, "kernel": self.kernel.name}


def plan_by_m(
    config: LayerConfig,
    compute_capability: int | None = None,
    *,
    platform: str | None = None,
) -> tuple[Route, ...]:
    """Routes by M from the tune table, among the kernels selection accepts; () without data."""
    layer = table_hook.layers().get(layer_key(config))
    if layer is None:
        return ()
    result = explain(config, compute_capability, platform=platform)
    accepted = {c.name: registry.get(c.name) for c in result.candidates if c.accepted}
    by_m = per_m_times(layer, accepted)
    points: list[tuple[int, str]] = []
    for m in sorted(by_m):
        pin = pinned_kernel(layer, (m, m))
        if pin in accepted:
            best = pin
        elif by_m[m]:
            best = min(by_m[m], key=by_m[m].__getitem__)
        else:
            continue
        if points and points[-1][1] == best:
            points[-1] = (m, best)
        else:
            points.append((m, best))
    return tuple(
        Route(None if i == len(points) - 1 else m, accepted[name])
        for i, (m, name) in enumerate(points)
    )


def weight_bytes(config: LayerConfig, kernel: type[LinearKernel]) -> int:
    """Bytes of the checkpoint parameters of the layer contract (one copy, before repacking)."""
    total = 0
    for spec in kernel.parameter_specs(config):
        if spec.required:
            shape = spec.shapes[0]
            total += math.prod(shape) * torch.empty((), dtype=spec.dtypes[0]).element_size()
    return total


def weight_holders(routes: Sequence[Route]) -> dict[str, str | None]:
    """Where each routed kernel's weights live: None for the layer itself, else the name of a
    submodule holding its own copy; kernels with the same non-None ``weight_layout`` share one."""
    holders: dict[str, str | None] = {}
    owner_of_layout: dict[object, str | None] = {}
    for route in routes:
        name = route.kernel.name
        if name in holders:
            continue
        layout = getattr(route.kernel, "weight_layout", None) or ("own", name)
        if layout not in owner_of_layout:
            count = len(owner_of_layout)
            owner_of_layout[layout] = f"dispatch_{count}" if count else None
        holders[name] = owner_of_layout[layout]
    return holders


def describe_plan(config: LayerConfig, routes: Sequence[Route]) -> dict[str, Any]:
    """The routes in words and what dispatching would cost in memory (before any repacking)."""
    copies = len(set(weight_holders(routes).values()))
    extra = (copies - 1) * weight_bytes(config, routes[0].kernel) if routes else 0
    parts = []
    low = 1
    for route in routes:
        span = f"M>={low}" if route.m_max is None else f"M {low}..{route.m_max}"
        parts.append(f"{span}: {route.kernel.name}")
        low = (route.m_max or 0) + 1
    memory = (
        "one copy of the weights" if copies == 1
        else f"holds {copies} copies of the weights: +{extra / 1e6:.1f} MB"
    )
    return {
        "routes": [r.as_dict() for r in routes],
        "weight_copies": copies,
        "extra_bytes": extra,
        "text": f"{'; '.join(parts)} ({memory})",
    }


class DispatchingLinearKernel(LinearKernel):
    """Several kernels for one layer, chosen per call by M (see the module docstring)."""

    name = "DispatchByM"
    provider = "kernel-core"
    platforms = PLATFORMS

    @classmethod
    def is_supported(cls, compute_capability: int | None = None) -> tuple[bool, str | None]:
        return True, None

    @classmethod
    def can_implement(cls, config: Any) -> tuple[bool, str | None]:
        return True, None  # each routed kernel was checked by selection

    def __init__(self, config: LayerConfig, routes: Sequence[Route]) -> None:
        super().__init__(config)
        if len(routes) < 2 or routes[-1].m_max is not None:
            raise ValueError(
                f"DispatchingLinearKernel: expected two or more routes, the last with m_max=None, "
                f"found {[r.as_dict() for r in routes]}"
            )
        self.routes = tuple(routes)
        self.holders = weight_holders(self.routes)
        self.kernels: dict[str, LinearKernel] = {
            route.kernel.name: route.kernel(config) for route in self.routes
        }
        self.copies = len(set(self.holders.values()))
        self.extra_bytes = (self.copies - 1) * weight_bytes(config, routes[0].kernel)
        self._table = tuple(
            (route.m_max, self.kernels[route.kernel.name], self.holders[route.kernel.name])
            for route in self.routes
        )

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        """Copy the checkpoint parameters for each extra layout, then let each owner repack."""
        specs = next(iter(self.kernels.values())).parameter_specs(self.config)
        copies = sorted({h for h in self.holders.values() if h is not None})
        for holder in copies:
            sub = torch.nn.Module()
            for spec in specs:
                tensor = getattr(layer, spec.name, None)
                if tensor is not None:
                    clone = torch.nn.Parameter(tensor.detach().clone(), requires_grad=False)
                    sub.register_parameter(spec.name, clone)
            layer.add_module(holder, sub)
        processed: set[str | None] = set()
        for name, kernel in self.kernels.items():
            holder = self.holders[name]
            if holder in processed:
                continue
            processed.add(holder)
            target = layer if holder is None else getattr(layer, holder)
            kernel.process_weights_after_loading(target)
        self.extra_bytes = sum(
            t.numel() * t.element_size()
            for holder in copies
            for t in (*getattr(layer, holder).parameters(), *getattr(layer, holder).buffers())
        )

    def apply_weights(
        self, layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        m = math.prod(x.shape[:-1])
        for m_max, kernel, holder in self._table:
            if m_max is None or m <= m_max:
                target = layer if holder is None else getattr(layer, holder)
                return kernel.apply_weights(target, x, bias)
        raise AssertionError("the last route has no bound")  # __init__ guarantees it

    def memory_note(self) -> str:
        if self.copies == 1:
            return "all kernels share one copy of the weights"
        return f"holds {self.copies} copies of the weights: +{self.extra_bytes / 1e6:.1f} MB"

    def describe(self) -> dict[str, Any]:  # type: ignore[override]
        """Instance metadata: the routes, and what holding several weight layouts costs."""
        return {
            **super().describe(),
            "family": self.config.family,
            "routes": [r.as_dict() for r in self.routes],
            "weight_copies": self.copies,
            "extra_bytes": self.extra_bytes,
            "memory": self.memory_note(),
        }


def init_dispatching_kernel(
    config: LayerConfig,
    compute_capability: int | None = None,
    *,
    platform: str | None = None,
) -> DispatchingLinearKernel | None:
    """A dispatching kernel when the tune table's best kernel differs with M, else None."""
    routes = plan_by_m(config, compute_capability, platform=platform)
    if len(routes) < 2:
        return None
    return DispatchingLinearKernel(config, routes)
