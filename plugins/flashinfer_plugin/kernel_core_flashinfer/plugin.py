"""Entry point of kernel-core-flashinfer: registers its kernels with kernel-core."""

from collections.abc import Callable

from kernel_core import hookimpl


@hookimpl
def register_kernels(register: Callable[[type], None]) -> None:
    """No kernels yet: they arrive with the plugin's issue."""
