"""Selection: which registered kernel serves a layer, and why each other one does not.

Candidates are the registered kernels of the config's family. They are ranked forced-first (the
``force=`` argument, then ``KERNEL_CORE_FORCE_KERNELS``), then by measured time when a matching
tune table has this layer, then by ``priority`` (higher first), then by name (a deterministic
tie-break). The first candidate whose platform matches, that is not disabled, and whose
``is_supported`` and ``can_implement`` both pass, wins. A probe that raises becomes that kernel's
rejection reason; it never escapes. Answers are cached per (config, capability, platform, registry
state, knobs), so a repeated query is a dictionary lookup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kernel_core import envs
from kernel_core.config import LayerConfig
from kernel_core.kernel import LinearKernel
from kernel_core.platform import current_compute_capability, current_platform
from kernel_core.registry import registry

__all__ = [
    "Candidate",
    "Explanation",
    "NoKernelError",
    "choose_kernel",
    "init_kernel",
    "explain",
    "probe_kernel",
    "clear_cache",
    "set_measured_times",
]

logger = logging.getLogger(__name__)

#: A ranking hook: given the config and candidates, return measured times (microseconds) by kernel
#: name for those that were measured. The tuner installs one; None means rank by priority alone.
MeasuredTimes = Callable[[LayerConfig, Sequence[type[LinearKernel]]], dict[str, float]]
_measured_times: MeasuredTimes | None = None


@dataclass(frozen=True)
class Candidate:
    """One row of an explanation."""

    name: str
    provider: str
    priority: int
    accepted: bool
    reason: str | None
    forced: bool = False
    measured_us: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "provider": self.provider,
            "priority": self.priority,
            "accepted": self.accepted,
            "reason": self.reason,
            "forced": self.forced,
            "measured_us": self.measured_us,
        }


@dataclass(frozen=True)
class Explanation:
    """The whole ranking for one query: ``chosen`` is the first accepted candidate, if any."""

    config: LayerConfig
    platform: str
    compute_capability: int | None
    candidates: tuple[Candidate, ...]
    chosen: type[LinearKernel] | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.as_dict(),
            "platform": self.platform,
            "compute_capability": self.compute_capability,
            "chosen": self.chosen.name if self.chosen else None,
            "candidates": [c.as_dict() for c in self.candidates],
        }

    def table(self) -> str:
        """A plain-text table, one row per candidate, the chosen one marked."""
        head = ("", "kernel", "provider", "priority", "measured", "verdict")
        rows = [head]
        for c in self.candidates:
            mark = "*" if self.chosen is not None and c.name == self.chosen.name else ""
            measured = f"{c.measured_us:.1f} us" if c.measured_us is not None else "-"
            verdict = "ok" if c.accepted else f"rejected: {c.reason}"
            if c.forced:
                verdict += " (forced)"
            rows.append((mark, c.name, c.provider, str(c.priority), measured, verdict))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1]
            for r in rows
        ]
        return "\n".join(lines)


class NoKernelError(ValueError):
    """No registered kernel can serve the layer; ``explanation`` holds every candidate's reason."""

    def __init__(self, explanation: Explanation) -> None:
        self.explanation = explanation
        reasons = "\n".join(
            f"  - {c.name} ({c.provider}): {c.reason}" for c in explanation.candidates
        ) or "  (no kernel of this family is registered; is a plugin installed?)"
        cc = explanation.compute_capability
        super().__init__(
            f"no kernel can implement {explanation.config.short()} on platform "
            f"{explanation.platform!r} (compute capability {cc}). Candidates:\n{reasons}"
        )


def probe_kernel(
    kernel: type[LinearKernel],
    config: LayerConfig,
    compute_capability: int | None,
    platform: str,
    disabled: Sequence[str] = (),
) -> tuple[bool, str | None]:
    """Run every check on one kernel; exceptions and malformed answers become reasons."""
    if kernel.name in disabled:
        return False, "disabled by KERNEL_CORE_DISABLED_KERNELS"
    if platform not in kernel.platforms:
        return False, f"runs on {', '.join(sorted(kernel.platforms))}, not {platform}"
    if not isinstance(config, kernel.config_class):
        return False, (
            f"takes {kernel.config_class.__name__}, not {type(config).__name__}"
        )
    for label, call in (
        ("is_supported", lambda: kernel.is_supported(compute_capability)),
        ("can_implement", lambda: kernel.can_implement(config)),
    ):
        try:
            answer = call()
        except Exception as exc:  # a plugin's bug must not break selection
            return False, f"{label} raised {type(exc).__name__}: {exc}"
        if not (isinstance(answer, tuple) and len(answer) == 2):
            return False, f"{label} returned {answer!r}, expected (bool, reason)"
        ok, reason = answer
        if not ok:
            return False, reason or f"{label} refused without a reason"
    return True, None


_cache: dict[tuple[Any, ...], Explanation] = {}


def clear_cache() -> None:
    _cache.clear()


def set_measured_times(hook: MeasuredTimes | None) -> None:
    """Install (or remove, with None) the hook that supplies measured times for ranking."""
    global _measured_times
    _measured_times = hook
    clear_cache()


def _resolve_target(
    compute_capability: int | None, platform: str | None
) -> tuple[int | None, str]:
    here = current_platform()
    platform = platform or here
    if compute_capability is None and platform == here:
        compute_capability = current_compute_capability()
    return compute_capability, platform


def _forced_names(force: str | Sequence[str] | None) -> tuple[str, ...]:
    if force is None:
        given: tuple[str, ...] = ()
    elif isinstance(force, str):
        given = (force,)
    else:
        given = tuple(force)
    names = [*given, *envs.forced_kernels()]
    return tuple(dict.fromkeys(names))


def explain(
    config: LayerConfig,
    compute_capability: int | None = None,
    *,
    platform: str | None = None,
    force: str | Sequence[str] | None = None,
) -> Explanation:
    """Rank every kernel of the config's family and say, for each, whether and why it serves."""
    if not isinstance(config, LayerConfig):
        raise TypeError(f"expected a layer config (a LayerConfig), got {type(config).__name__}")
    compute_capability, platform = _resolve_target(compute_capability, platform)
    registry.ensure_loaded()
    key = (
        config,
        compute_capability,
        platform,
        registry.state,
        envs.selection_knobs(),
        force if isinstance(force, str | None) else tuple(force),
    )
    cached = _cache.get(key)
    if cached is not None:
        return cached
    result = _explain_uncached(config, compute_capability, platform, force)
    _cache[key] = result
    return result


def _explain_uncached(
    config: LayerConfig,
    compute_capability: int | None,
    platform: str,
    force: str | Sequence[str] | None,
) -> Explanation:
    family_kernels = registry.kernels(config.family)
    forced = _forced_names(force)
    by_name = {k.name: k for k in family_kernels}
    for name in forced:
        if name not in by_name:
            other = [k for k in registry.kernels() if k.name == name]
            if other:
                raise ValueError(
                    f"forced kernel {name!r} is a {other[0].family!r} kernel; "
                    f"the layer is {config.family!r}"
                )
            known = ", ".join(sorted(by_name)) or "none"
            raise ValueError(
                f"forced kernel {name!r} is not registered; {config.family!r} kernels: {known}"
            )
    measured = _measured_times(config, family_kernels) if _measured_times else {}
    forced_rank = {name: i for i, name in enumerate(forced)}

    def order(kernel: type[LinearKernel]) -> tuple[Any, ...]:
        time = measured.get(kernel.name)
        return (
            forced_rank.get(kernel.name, len(forced)),
            time is None,
            time if time is not None else 0.0,
            -int(kernel.priority),
            kernel.name,
        )

    disabled = envs.disabled_kernels()
    candidates: list[Candidate] = []
    chosen: type[LinearKernel] | None = None
    for kernel in sorted(family_kernels, key=order):
        ok, reason = probe_kernel(kernel, config, compute_capability, platform, disabled)
        is_forced = kernel.name in forced_rank
        if is_forced and not ok:
            logger.warning("forced kernel %s cannot serve %s: %s", kernel.name, config.short(), reason)
        if ok and chosen is None:
            chosen = kernel
        candidates.append(
            Candidate(
                name=kernel.name,
                provider=kernel.provider,
                priority=int(kernel.priority),
                accepted=ok,
                reason=reason,
                forced=is_forced,
                measured_us=measured.get(kernel.name),
            )
        )
    return Explanation(config, platform, compute_capability, tuple(candidates), chosen)


def choose_kernel(
    config: LayerConfig,
    compute_capability: int | None = None,
    *,
    platform: str | None = None,
    force: str | Sequence[str] | None = None,
) -> type[LinearKernel]:
    """The best kernel class for the layer, or :class:`NoKernelError` with every reason."""
    result = explain(config, compute_capability, platform=platform, force=force)
    if result.chosen is None:
        raise NoKernelError(result)
    return result.chosen


def init_kernel(
    config: LayerConfig,
    compute_capability: int | None = None,
    *,
    platform: str | None = None,
    force: str | Sequence[str] | None = None,
) -> LinearKernel:
    """Choose and construct: the kernel instance, ready for ``process_weights_after_loading``."""
    kernel = choose_kernel(config, compute_capability, platform=platform, force=force)
    logger.info("using %s (%s) for %s", kernel.name, kernel.provider, config.short())
    return kernel(config)
