"""Every environment knob kernel-core reads, in one place, each with its meaning and default.

=============================== ===========================================================
variable                        meaning
=============================== ===========================================================
KERNEL_CORE_PLUGINS             comma-separated plugin (entry point) names to load; unset:
                                all; empty string: none
KERNEL_CORE_STRICT_PLUGINS      "1": a plugin that fails to import or register raises
                                instead of being skipped and recorded
KERNEL_CORE_DISABLED_KERNELS    comma-separated kernel names never selected
KERNEL_CORE_FORCE_KERNELS       comma-separated kernel names tried first, in order (each
                                still has to pass is_supported and can_implement)
KERNEL_CORE_CACHE_DIR           JIT builds and tune tables; default
                                ``$XDG_CACHE_HOME/kernel-core`` or ``~/.cache/kernel-core``
KERNEL_CORE_TUNE_TABLE          path of the tune table read by selection; default
                                ``<cache dir>/tune.json``
=============================== ===========================================================

Values are read on every call (a dictionary lookup), so tests and engines can change them at run
time; selection includes them in its cache key.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "plugin_allowlist",
    "strict_plugins",
    "disabled_kernels",
    "forced_kernels",
    "cache_dir",
    "tune_table_path",
    "selection_knobs",
]

# os.environ.get costs about a microsecond (key encoding and a KeyError on a miss); selection
# reads its knobs on every query, so on POSIX it reads the underlying bytes dictionary directly.
_RAW_ENVIRON = getattr(os.environ, "_data", None) if os.name == "posix" else None
_KNOB_KEYS = (b"KERNEL_CORE_DISABLED_KERNELS", b"KERNEL_CORE_FORCE_KERNELS")


def selection_knobs() -> tuple[object, ...]:
    """The raw values of the knobs selection depends on, cheap enough for a cache key."""
    if _RAW_ENVIRON is not None:
        return (_RAW_ENVIRON.get(_KNOB_KEYS[0]), _RAW_ENVIRON.get(_KNOB_KEYS[1]))
    return (
        os.environ.get("KERNEL_CORE_DISABLED_KERNELS"),
        os.environ.get("KERNEL_CORE_FORCE_KERNELS"),
    )


def _names(variable: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in os.environ.get(variable, "").split(",") if n.strip())


def plugin_allowlist() -> frozenset[str] | None:
    """``None`` when unset (load every plugin); otherwise the names to load (maybe none)."""
    if "KERNEL_CORE_PLUGINS" not in os.environ:
        return None
    return frozenset(_names("KERNEL_CORE_PLUGINS"))


def strict_plugins() -> bool:
    return os.environ.get("KERNEL_CORE_STRICT_PLUGINS", "") not in ("", "0", "false", "False")


def disabled_kernels() -> tuple[str, ...]:
    return _names("KERNEL_CORE_DISABLED_KERNELS")


def forced_kernels() -> tuple[str, ...]:
    return _names("KERNEL_CORE_FORCE_KERNELS")


def cache_dir() -> Path:
    explicit = os.environ.get("KERNEL_CORE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kernel-core"


def tune_table_path() -> Path:
    explicit = os.environ.get("KERNEL_CORE_TUNE_TABLE")
    return Path(explicit) if explicit else cache_dir() / "tune.json"
