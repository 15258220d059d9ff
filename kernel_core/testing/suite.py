"""``conformance_tests(KernelClass)``: the whole conformance suite of one kernel as a pytest class.

A plugin author's test file needs two lines::

    from kernel_core.testing import conformance_tests
    TestMyKernel = conformance_tests(MyKernel)

The name must start with ``Test`` (pytest collects classes by name). The class holds:

* ``test_metadata``: family, name, priority, platforms, ``is_supported`` answers well formed;
* ``test_matches_reference[<config>]``: one test per grid config the kernel accepts
  (:func:`kernel_core.testing.check_conformance`);
* ``test_refuses_with_reason``: every grid config it refuses carries a reason and the constructor
  refuses it too (skipped when it accepts the whole grid);
* ``test_rejects_bad_input``: a wrong K or bias shape is a ValueError;
* ``test_cuda_graph[<config>]``: on a CUDA device, ``apply_weights`` captured in a CUDA graph
  and replayed on new inputs matches the oracle (:func:`kernel_core.testing.check_cuda_graph`);
  a single skipped test elsewhere.

A kernel that cannot run on this machine is skipped with its ``is_supported`` reason; the suite of
a kernel that does not run on the CPU carries the ``gpu`` marker.
"""

from __future__ import annotations

import pytest
import torch

from kernel_core.kernel import LinearKernel
from kernel_core.testing.checks import (
    check_conformance,
    check_cuda_graph,
    check_metadata,
    check_refusals,
    check_rejects_bad_input,
    runnable_device,
)
from kernel_core.testing.grid import GridConfig, grid_size, kernel_configs, m_values

__all__ = ["conformance_tests"]


def _device_or_skip(kernel_class: type[LinearKernel]):
    device, reason = runnable_device(kernel_class)
    if device is None:
        pytest.skip(reason or "cannot run here")
    return device


def conformance_tests(
    kernel_class: type[LinearKernel],
    *,
    grid: str | None = None,
    reference: type[LinearKernel] | None = None,
    seed: int = 0,
) -> type:
    """A pytest test class running the conformance suite on ``kernel_class``.

    ``grid``: "quick" or "full" (default: ``KERNEL_CORE_GRID``, else quick). ``reference``: the
    oracle (default: the family's registered ``Priority.REFERENCE`` kernel, the emulation one).
    """
    size = grid or grid_size()
    accepted, refused = kernel_configs(kernel_class, size)
    ms = m_values(size)

    class ConformanceSuite:
        kernel = kernel_class

        def test_metadata(self) -> None:
            check_metadata(kernel_class)

        @pytest.mark.parametrize("point", accepted, ids=[p.id for p in accepted])
        def test_matches_reference(self, point: GridConfig) -> None:
            device = _device_or_skip(kernel_class)
            check_conformance(
                kernel_class, point.config, device=device, m_values=ms, seed=seed,
                reference=reference,
            )

        def test_refuses_with_reason(self) -> None:
            if not refused:
                pytest.skip(f"{kernel_class.name} accepts every config of the grid")
            check_refusals(kernel_class, refused)

        def test_rejects_bad_input(self) -> None:
            if not accepted:
                pytest.skip(f"{kernel_class.name} accepts no config of the grid")
            device = _device_or_skip(kernel_class)
            check_rejects_bad_input(kernel_class, accepted[0].config, device=device, seed=seed)

    if torch.cuda.is_available() and "cuda" in kernel_class.platforms:

        @pytest.mark.parametrize("point", accepted, ids=[p.id for p in accepted])
        def test_cuda_graph(self, point: GridConfig) -> None:
            device = _device_or_skip(kernel_class)
            if device.type != "cuda":
                pytest.skip(f"{kernel_class.name} runs on {device} here, not on CUDA")
            check_cuda_graph(
                kernel_class, point.config, device=device, seed=seed, reference=reference
            )

    else:

        def test_cuda_graph(self) -> None:
            pytest.skip("CUDA graph capture needs a CUDA device and a kernel that runs on CUDA")

    ConformanceSuite.test_cuda_graph = test_cuda_graph
    ConformanceSuite.__name__ = ConformanceSuite.__qualname__ = f"Test{kernel_class.__name__}"
    if "cpu" not in kernel_class.platforms:
        ConformanceSuite = pytest.mark.gpu(ConformanceSuite)  # noqa: N806 (still the class)
    return ConformanceSuite
