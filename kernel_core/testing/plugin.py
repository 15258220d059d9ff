"""The conformance kit's pytest plugin (enable it: ``pytest -p kernel_core.testing.plugin``, or
``pytest_plugins = ["kernel_core.testing.plugin"]`` in a top-level conftest.py).

It adds ``--kernel-core-grid=quick|full`` (sets ``KERNEL_CORE_GRID`` before collection, so the
suites that :func:`kernel_core.testing.conformance_tests` builds use it), registers the ``gpu``
marker, and prints the grid, device and M values in the session header.
"""

from __future__ import annotations

import os

import pytest

from kernel_core.platform import current_platform, device_name
from kernel_core.testing.grid import GRID_ENV, GRIDS, grid_size, m_values


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kernel-core", "kernel-core conformance kit")
    group.addoption(
        "--kernel-core-grid",
        choices=GRIDS,
        default=None,
        help=f"configs per kernel: quick (every option at least once) or full (every "
        f"combination); default: ${GRID_ENV} or quick",
    )


_previous_grid = pytest.StashKey[str | None]()


def pytest_configure(config: pytest.Config) -> None:
    chosen = config.getoption("--kernel-core-grid")
    if chosen:
        config.stash[_previous_grid] = os.environ.get(GRID_ENV)
        os.environ[GRID_ENV] = chosen
    config.addinivalue_line(
        "markers", "gpu: needs a CUDA device (skipped with a reason when none is present)"
    )


def pytest_report_header(config: pytest.Config) -> str:
    size = grid_size()
    return (
        f"kernel-core conformance: grid={size}, M={m_values(size)}, "
        f"platform={current_platform()} ({device_name()})"
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    """Give ``KERNEL_CORE_GRID`` back its value from before the session (in-process runs)."""
    if _previous_grid in config.stash:
        previous = config.stash[_previous_grid]
        if previous is None:
            os.environ.pop(GRID_ENV, None)
        else:
            os.environ[GRID_ENV] = previous
