"""Shared fixtures: a registry reloaded from entry points, and fake kernels built to order."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import torch

import kernel_core
from kernel_core import selection
from kernel_core.families import FAMILIES
from kernel_core.registry import Registry, registry


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """The global registry, rediscovered from entry points now and again after the test."""
    for var in ("KERNEL_CORE_PLUGINS", "KERNEL_CORE_STRICT_PLUGINS",
                "KERNEL_CORE_DISABLED_KERNELS", "KERNEL_CORE_FORCE_KERNELS"):
        monkeypatch.delenv(var, raising=False)
    registry.reload()
    selection.clear_cache()
    yield registry
    monkeypatch.undo()
    registry.reload()
    selection.clear_cache()


@pytest.fixture
def with_fixture_plugins(monkeypatch: pytest.MonkeyPatch, fresh_registry):
    """Turn on the fixture distributions (tests/fixtures/*_plugin) and rediscover."""
    monkeypatch.setenv("KERNEL_CORE_TEST_FIXTURES", "1")
    # The failing module decides at import time; drop a copy imported while it was inert.
    monkeypatch.delitem(sys.modules, "kernel_core_fixture_broken.import_fails", raising=False)
    fresh_registry.reload()
    return fresh_registry


def make_kernel(
    family: str = "mp",
    name: str = "FakeKernel",
    *,
    priority: int = kernel_core.Priority.PORTABLE,
    platforms: frozenset[str] = frozenset({"cpu", "cuda"}),
    supported: tuple[bool, str | None] = (True, None),
    implements: tuple[bool, str | None] = (True, None),
    raises_in: str | None = None,
) -> type:
    """A kernel class of ``family`` whose probes answer as told (or raise in ``raises_in``)."""
    abc = FAMILIES[family]

    def is_supported(cls, compute_capability=None):
        if raises_in == "is_supported":
            raise RuntimeError("probe exploded")
        return supported

    def can_implement(cls, config):
        if raises_in == "can_implement":
            raise RuntimeError("probe exploded")
        return implements

    def apply_weights(self, layer, x, bias=None):
        return torch.zeros(*x.shape[:-1], self.config.out_features, dtype=self.config.out_dtype)

    return type(abc)(
        name,
        (abc,),
        {
            "name": name,
            "priority": priority,
            "platforms": platforms,
            "is_supported": classmethod(is_supported),
            "can_implement": classmethod(can_implement),
            "process_weights_after_loading": lambda self, layer: None,
            "apply_weights": apply_weights,
        },
    )


@pytest.fixture
def kernel_factory():
    """``make_kernel`` as a fixture, so test modules need no import from conftest."""
    return make_kernel
