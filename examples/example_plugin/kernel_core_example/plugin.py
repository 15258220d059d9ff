"""Entry point of kernel-core-example: the registry calls this hook once, on its first query."""

from collections.abc import Callable

from kernel_core import hookimpl


@hookimpl
def register_kernels(register: Callable[[type], None]) -> None:
    """Register the plugin's kernels (keep this cheap: import heavy libraries at first use)."""
    from kernel_core_example.kernels import ExampleTorchFp8W8A16LinearKernel

    register(ExampleTorchFp8W8A16LinearKernel)
