"""kernel_core.workspace: one buffer per (owner, device), never first allocated inside a capture."""

from __future__ import annotations

import pytest
import torch

from kernel_core import workspace


def test_one_buffer_per_owner_and_device() -> None:
    calls: list[torch.device] = []

    def allocate(device: torch.device) -> torch.Tensor:
        calls.append(device)
        return torch.zeros(4, device=device)

    first = workspace.device_workspace("test.one", "cpu", allocate)
    again = workspace.device_workspace("test.one", torch.device("cpu"), allocate)
    other = workspace.device_workspace("test.other", "cpu", allocate)
    assert first is again and other is not first
    assert calls == [torch.device("cpu"), torch.device("cpu")]
    assert workspace.workspace_devices("test.one") == [torch.device("cpu")]
    assert workspace.workspace_devices("test.none") == []


def test_first_request_inside_a_capture_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with pytest.raises(RuntimeError, match="test.capture: the workspace of cpu was first "
                                           "requested inside a CUDA-graph capture"):
        workspace.device_workspace("test.capture", "cpu", lambda d: torch.zeros(1))
    assert workspace.workspace_devices("test.capture") == []


def test_a_buffer_made_before_the_capture_is_served_inside_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    made = workspace.device_workspace("test.before", "cpu", lambda d: torch.zeros(1))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert workspace.device_workspace("test.before", "cpu", lambda d: torch.ones(1)) is made
