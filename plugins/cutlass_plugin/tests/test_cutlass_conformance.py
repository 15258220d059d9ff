"""The core's conformance kit on the three CUTLASS kernels (device checks skip with the kernel's
reason where no SM90 GPU is present)."""

import pytest

testing = pytest.importorskip("kernel_core.testing")

from kernel_core_cutlass.kernels import (
    CutlassFp8BlockScaledMMLinearKernel,
    CutlassFP8ScaledMMLinearKernel,
    CutlassInt8ScaledMMLinearKernel,
)

TestCutlassFP8ScaledMMLinearKernel = testing.conformance_tests(CutlassFP8ScaledMMLinearKernel)
TestCutlassInt8ScaledMMLinearKernel = testing.conformance_tests(CutlassInt8ScaledMMLinearKernel)
TestCutlassFp8BlockScaledMMLinearKernel = testing.conformance_tests(
    CutlassFp8BlockScaledMMLinearKernel
)
