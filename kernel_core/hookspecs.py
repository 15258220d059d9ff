"""The plugin API: every hook a kernel-core plugin can implement, in one module.

A plugin is a module (or object) named by an entry point in the group ``kernel_core.plugins``::

    [project.entry-points.kernel_core.plugins]
    my_kernels = "my_kernels.plugin"

whose hook implementations are marked with :data:`kernel_core.hookimpl`::

    from kernel_core import hookimpl

    @hookimpl
    def register_kernels(register):
        register(MyW4A16Kernel)

Plugins load lazily, on the first registry query. A plugin whose import or hook raises is skipped
and its error recorded (``kernel-core plugins`` shows it) unless ``KERNEL_CORE_STRICT_PLUGINS=1``.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

__all__ = ["hookspec", "hookimpl", "PROJECT", "register_kernels"]

PROJECT = "kernel_core"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_kernels(register: Callable[[type], None]) -> None:
    """Register this plugin's kernel classes by calling ``register(KernelClass)`` once per kernel.

    Each class subclasses one family ABC (``MPLinearKernel``, ``FP8ScaledMMLinearKernel``, ...);
    its family is inferred from that ABC. Metadata come from class attributes: ``name`` (default:
    the class name; must be unique across all plugins), ``priority`` (a ``Priority`` band),
    ``platforms`` (default ``{"cuda"}``). ``provider`` is set to the plugin's name unless the class
    sets it. Registering must be cheap: import heavy libraries (flashinfer, CUDA extensions) inside
    ``is_supported`` or at first use, never here.
    """
