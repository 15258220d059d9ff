"""The plugin API stays documented and tested (as datasette does for its hooks)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from kernel_core import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = [
    name
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(fn, f"{hookspecs.PROJECT}_spec")
]


def test_there_is_at_least_one_hook():
    assert "register_kernels" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook))
    assert doc and len(doc) > 40, f"hook {hook} needs a docstring saying what it is for"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_in_the_plugin_docs(hook):
    docs = (ROOT / "docs" / "plugin-api.md").read_text()
    assert f"`{hook}" in docs, f"hook {hook} is not documented in docs/plugin-api.md"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_exercised_by_a_test(hook):
    tests = [p for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_hookspecs.py"]
    assert any(f"def {hook}(" in p.read_text() for p in tests), (
        f"no test implements the hook {hook}"
    )
