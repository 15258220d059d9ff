"""Entry point of kernel-core-flashinfer: registers its kernels with kernel-core.

Registering imports neither flashinfer nor triton; each kernel's ``is_supported`` says why it
cannot run where they (or an SM89+/SM90 GPU) are missing.
"""

from collections.abc import Callable

from kernel_core import hookimpl
from kernel_core_flashinfer.kernels import (
    FlashInferFp8BlockScaledMMLinearKernel,
    FlashInferFp8ScaledMMLinearKernel,
)


@hookimpl
def register_kernels(register: Callable[[type], None]) -> None:
    register(FlashInferFp8ScaledMMLinearKernel)
    register(FlashInferFp8BlockScaledMMLinearKernel)
