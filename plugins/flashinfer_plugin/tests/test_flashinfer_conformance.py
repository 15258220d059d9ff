"""The core's conformance kit on both kernels (device tests skip with the kernel's reason)."""

import pytest

testing = pytest.importorskip("kernel_core.testing")

from kernel_core_flashinfer.kernels import (  # noqa: E402
    FlashInferFp8BlockScaledMMLinearKernel,
    FlashInferFp8ScaledMMLinearKernel,
)

TestFlashInferFp8ScaledMMLinearKernel = testing.conformance_tests(FlashInferFp8ScaledMMLinearKernel)
TestFlashInferFp8BlockScaledMMLinearKernel = testing.conformance_tests(
    FlashInferFp8BlockScaledMMLinearKernel
)
