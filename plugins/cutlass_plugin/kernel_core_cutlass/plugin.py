"""Entry point of kernel-core-cutlass: registers its kernels with kernel-core."""

from collections.abc import Callable

from kernel_core import hookimpl


@hookimpl
def register_kernels(register: Callable[[type], None]) -> None:
    """The three SM90 CUTLASS kernels (imported here so a broken install only skips this plugin)."""
    from kernel_core_cutlass.kernels import (
        CutlassFp8BlockScaledMMLinearKernel,
        CutlassFP8ScaledMMLinearKernel,
        CutlassInt8ScaledMMLinearKernel,
    )

    register(CutlassFP8ScaledMMLinearKernel)
    register(CutlassInt8ScaledMMLinearKernel)
    register(CutlassFp8BlockScaledMMLinearKernel)
