"""The conformance kit run against every emulation kernel (the oracle against itself: this checks
the shape, dtype, bias, 3-D, non-contiguous, determinism and bad-input behaviour, and that every
config of every family's grid is accepted)."""

from kernel_core.testing import conformance_tests
from kernel_core_emulation.kernels import (
    EmulationFp8BlockLinearKernel,
    EmulationFP8LinearKernel,
    EmulationInt8LinearKernel,
    EmulationMPLinearKernel,
    EmulationMxFp4LinearKernel,
    EmulationMxfp8LinearKernel,
    EmulationNvFp4LinearKernel,
)

TestEmulationMP = conformance_tests(EmulationMPLinearKernel)
TestEmulationInt8 = conformance_tests(EmulationInt8LinearKernel)
TestEmulationFP8 = conformance_tests(EmulationFP8LinearKernel)
TestEmulationFp8Block = conformance_tests(EmulationFp8BlockLinearKernel)
TestEmulationNvFp4 = conformance_tests(EmulationNvFp4LinearKernel)
TestEmulationMxFp4 = conformance_tests(EmulationMxFp4LinearKernel)
TestEmulationMxfp8 = conformance_tests(EmulationMxfp8LinearKernel)
