"""Entry point of kernel-core-emulation: registers one reference kernel per family."""

from collections.abc import Callable

from kernel_core import hookimpl


@hookimpl
def register_kernels(register: Callable[[type], None]) -> None:
    """Register every emulation kernel (importing them costs only the core's formats)."""
    from kernel_core_emulation.kernels import EMULATION_KERNELS

    for kernel in EMULATION_KERNELS:
        register(kernel)
