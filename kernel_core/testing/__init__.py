"""The conformance kit: test any kernel against the emulation oracle (``kernel-core[testing]``).

In a plugin's test file::

    from kernel_core.testing import conformance_tests
    from my_plugin.kernels import MyKernel

    TestMyKernel = conformance_tests(MyKernel)

and run ``pytest -p kernel_core.testing.plugin`` (the plugin adds ``--kernel-core-grid``). Without
pytest, :func:`check_conformance` runs the same checks on one config and raises
:class:`ConformanceError`. See ``docs/plugin-authors.md``.
"""

from __future__ import annotations

from typing import Any

from kernel_core.testing.checks import (
    ConformanceError,
    ConformanceReport,
    check_conformance,
    check_cuda_graph,
    check_metadata,
    check_refusals,
    check_rejects_bad_input,
    make_test_layer,
    reference_kernel,
    relative_error,
    runnable_device,
)
from kernel_core.testing.grid import GRID_ENV, GridConfig, grid_configs, kernel_configs, m_values
from kernel_core.testing.tolerances import tolerance_for

__all__ = [
    "GRID_ENV",
    "ConformanceError",
    "ConformanceReport",
    "GridConfig",
    "check_conformance",
    "check_cuda_graph",
    "check_metadata",
    "check_refusals",
    "check_rejects_bad_input",
    "conformance_tests",
    "grid_configs",
    "kernel_configs",
    "m_values",
    "make_test_layer",
    "reference_kernel",
    "relative_error",
    "runnable_device",
    "tolerance_for",
]


def __getattr__(name: str) -> Any:
    # conformance_tests needs pytest; the checks do not (doctor uses them without it).
    if name == "conformance_tests":
        from kernel_core.testing.suite import conformance_tests

        return conformance_tests
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
