"""The kernel registry: every known kernel class, the plugins that provided them, and their errors.

Plugins are discovered through the entry-point group ``kernel_core.plugins`` and loaded lazily, on
the first query. Each plugin is loaded and asked to register in isolation: an import error or an
exception in its hook is recorded on its :class:`PluginRecord` and the plugin is skipped, unless
``KERNEL_CORE_STRICT_PLUGINS=1``. Engines and tests add kernels or plugin objects in-process with
:meth:`Registry.register_kernel` / :meth:`Registry.register_plugin`, and :meth:`Registry.scoped`
undoes whatever was added inside it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any

import pluggy

from kernel_core import envs, hookspecs
from kernel_core.families import family_of
from kernel_core.kernel import LinearKernel

__all__ = ["ENTRY_POINT_GROUP", "PluginRecord", "Registry", "DuplicateKernelError", "registry"]

ENTRY_POINT_GROUP = "kernel_core.plugins"
IN_PROCESS = "<in-process>"
logger = logging.getLogger(__name__)


class DuplicateKernelError(ValueError):
    """Two kernels claimed the same name."""


@dataclass
class PluginRecord:
    """What ``kernel-core plugins`` shows for one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    kernels: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "kernels": list(self.kernels),
            "error": self.error,
        }


class Registry:
    """Kernels by name, plugins by name, and a ``state`` counter that changes with every edit."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._kernels: dict[str, type[LinearKernel]] = {}
        self._plugins: dict[str, PluginRecord] = {}
        self._manager = pluggy.PluginManager(hookspecs.PROJECT)
        self._manager.add_hookspecs(hookspecs)
        self._loaded_entry_points = False
        self.state = 0

    # -- discovery -----------------------------------------------------------------------------

    def ensure_loaded(self) -> None:
        """Load the installed plugins once (the first query calls this)."""
        if self._loaded_entry_points:
            return
        with self._lock:
            if self._loaded_entry_points:
                return
            self._loaded_entry_points = True
            allow = envs.plugin_allowlist()
            for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
                if allow is not None and ep.name not in allow:
                    logger.debug("plugin %s skipped: not in KERNEL_CORE_PLUGINS", ep.name)
                    continue
                record = PluginRecord(
                    name=ep.name,
                    distribution=ep.dist.name if ep.dist else None,
                    version=ep.dist.version if ep.dist else None,
                )
                self._plugins[ep.name] = record
                try:
                    plugin = ep.load()
                except Exception as exc:
                    self._record_failure(record, "import", exc)
                    continue
                self._add_plugin(plugin, record)
            self.state += 1

    def reload(self) -> None:
        """Forget everything and rediscover (after installing a plugin in a running process)."""
        with self._lock:
            for name in list(self._plugins):
                with contextlib.suppress(ValueError):
                    self._manager.unregister(name=name)
            self._kernels.clear()
            self._plugins.clear()
            self._loaded_entry_points = False
            self.state += 1

    def _record_failure(self, record: PluginRecord, stage: str, exc: BaseException) -> None:
        record.error = f"{stage} failed: {type(exc).__name__}: {exc}"
        logger.warning("kernel-core plugin %r skipped: %s", record.name, record.error)
        logger.debug("%s", "".join(traceback.format_exception(exc)))
        if envs.strict_plugins():
            raise exc

    def _add_plugin(self, plugin: object, record: PluginRecord) -> None:
        """Register a plugin object with pluggy and call its hook, all-or-nothing."""
        try:
            self._manager.register(plugin, name=record.name)
        except Exception as exc:
            self._record_failure(record, "register", exc)
            return
        impls = [
            impl
            for impl in self._manager.hook.register_kernels.get_hookimpls()
            if impl.plugin_name == record.name
        ]
        added: list[type[LinearKernel]] = []

        def register(kernel_class: type) -> None:
            added.append(self._validate_kernel(kernel_class, record.name))

        try:
            for impl in impls:
                impl.function(register=register)
            self._add_kernels(added, record)
        except Exception as exc:
            with contextlib.suppress(ValueError):
                self._manager.unregister(name=record.name)
            self._record_failure(record, "register_kernels", exc)

    @staticmethod
    def _validate_kernel(kernel_class: type, plugin_name: str) -> type[LinearKernel]:
        family_of(kernel_class)  # a TypeError naming the ABCs when it subclasses none
        if getattr(kernel_class, "__abstractmethods__", None):
            missing = ", ".join(sorted(kernel_class.__abstractmethods__))
            raise TypeError(f"kernel {kernel_class.__name__} leaves abstract: {missing}")
        if not kernel_class.provider:
            kernel_class.provider = plugin_name
        return kernel_class

    def _add_kernels(self, kernels: list[type[LinearKernel]], record: PluginRecord) -> None:
        names = [k.name for k in kernels]
        for kernel in kernels:
            other = self._kernels.get(kernel.name)
            if (other is not None and other is not kernel) or names.count(kernel.name) > 1:
                provider = other.provider if other is not None else record.name
                raise DuplicateKernelError(
                    f"kernel name {kernel.name!r} is registered twice: by {provider!r} "
                    f"and by {record.name!r}; kernel names must be unique"
                )
        for kernel in kernels:
            self._kernels[kernel.name] = kernel
        record.kernels.extend(names)
        self.state += 1

    # -- in-process registration ---------------------------------------------------------------

    def register_kernel(self, kernel_class: type, provider: str | None = None) -> type:
        """Add one kernel class from this process (an engine's own kernel, a test's fake)."""
        self.ensure_loaded()
        with self._lock:
            name = provider or kernel_class.__dict__.get("provider") or IN_PROCESS
            record = self._plugins.setdefault(name, PluginRecord(name=name))
            kernel = self._validate_kernel(kernel_class, name)
            self._add_kernels([kernel], record)
        return kernel_class

    def register_plugin(self, plugin: object, name: str | None = None) -> PluginRecord:
        """Add a plugin object (a module or instance with hook implementations) from this process."""
        self.ensure_loaded()
        with self._lock:
            name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
            if name in self._plugins:
                raise ValueError(f"a plugin named {name!r} is already registered")
            record = PluginRecord(name=name)
            self._plugins[name] = record
            self._add_plugin(plugin, record)
            self.state += 1
            return record

    @contextlib.contextmanager
    def scoped(self) -> Iterator[Registry]:
        """Undo on exit every kernel and plugin registered inside the block."""
        self.ensure_loaded()
        with self._lock:
            kernels = dict(self._kernels)
            plugins = {name: _copy_record(r) for name, r in self._plugins.items()}
        try:
            yield self
        finally:
            with self._lock:
                for name in set(self._plugins) - set(plugins):
                    with contextlib.suppress(ValueError):
                        self._manager.unregister(name=name)
                self._kernels = kernels
                self._plugins = plugins
                self.state += 1

    # -- queries -------------------------------------------------------------------------------

    def kernels(self, family: str | None = None) -> list[type[LinearKernel]]:
        self.ensure_loaded()
        found = list(self._kernels.values())
        return [k for k in found if family is None or k.family == family]

    def get(self, name: str) -> type[LinearKernel]:
        self.ensure_loaded()
        try:
            return self._kernels[name]
        except KeyError:
            known = ", ".join(sorted(self._kernels)) or "none"
            raise ValueError(f"unknown kernel {name!r}; registered kernels: {known}") from None

    def plugins(self) -> list[PluginRecord]:
        self.ensure_loaded()
        return list(self._plugins.values())


def _copy_record(record: PluginRecord) -> PluginRecord:
    return PluginRecord(
        record.name, record.distribution, record.version, list(record.kernels), record.error
    )


#: The process-wide registry every public function uses.
registry = Registry()

