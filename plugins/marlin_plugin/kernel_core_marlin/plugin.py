"""Entry point of kernel-core-marlin: registers its kernels with kernel-core."""

from collections.abc import Callable

from kernel_core import hookimpl


@hookimpl
def register_kernels(register: Callable[[type], None]) -> None:
    """The weight-only stream-kernel classes, one per family (importing them builds nothing)."""
    from kernel_core_marlin.kernels import KERNELS

    for kernel in KERNELS:
        register(kernel)
