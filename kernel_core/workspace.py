"""Per-device workspaces: buffers a plugin allocates once per device and shares among all layers.

Kernels that need scratch memory (cuBLASLt's workspace, split-K or stream-K partial sums) take it
from here rather than allocating per call: one allocation per (owner, device), made outside any
CUDA-graph capture, so graphs replay against memory that outlives them. A first request inside a
capture is refused with what to do instead, because memory allocated there belongs to the graph's
private pool and must not be cached for later calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = ["device_workspace", "workspace_devices"]

T = TypeVar("T")

_WORKSPACES: dict[tuple[str, torch.device], object] = {}


def _normalized(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def device_workspace(owner: str, device: torch.device | str,
                     allocate: Callable[[torch.device], T]) -> T:
    """The workspace ``owner`` (a plugin's name for it) on ``device``: ``allocate(device)`` on the
    first request, the same object on every later one."""
    device = _normalized(device)
    key = (owner, device)
    if key not in _WORKSPACES:
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                f"{owner}: the workspace of {device} was first requested inside a CUDA-graph "
                "capture; process a layer or run one call on that device before capturing")
        _WORKSPACES[key] = allocate(device)
    return _WORKSPACES[key]  # type: ignore[return-value]


def workspace_devices(owner: str) -> list[torch.device]:
    """The devices that hold a workspace of ``owner`` (for tests and diagnostics)."""
    return [device for name, device in _WORKSPACES if name == owner]
