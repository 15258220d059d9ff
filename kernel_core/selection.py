"""Selection: which registered kernel serves a layer, and why each other one does not.

Candidates are the registered kernels of the config's family. They are ranked forced-first (the
``force=`` argument, then ``KERNEL_CORE_FORCE_KERNELS``), then a kernel pinned by the tune table,
then by measured time for the caller's M range (``m_range``: ``"decode"``, ``"prefill"`` or
``(lo, hi)``; default decode, see :mod:`kernel_core.tune`) when a matching tune table has this
layer, then by ``priority`` (higher first), then by name (a deterministic tie-break). The first
candidate whose platform matches, that is not disabled, and whose ``is_supported`` and
``can_implement`` both pass, wins. A probe that raises becomes that kernel's
rejection reason; it never escapes. Answers are cached per (config, capability, platform, registry
state, knobs, M range), so a repeated query is a dictionary lookup (after editing the tune table
in a running process, call ``kernel_core.tune.reload()``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kernel_core import envs
from kernel_core.config import LayerConfig
from kernel_core.kernel import LinearKernel
from kernel_core.platform import current_compute_capability, current_platform
from kernel_core.registry import registry
from kernel_core.tune import MeasuredRanking, MRange, resolve_m_range, table_hook

__all__ = [
    "Candidate",
    "Explanation",
    "NoKernelError",
    "choose_kernel",
    "init_kernel",
    "explain",
    "probe_kernel",
    "probe_platform",
    "clear_cache",
    "set_measured_times",
]

logger = logging.getLogger(__name__)

#: A ranking hook: given the config, the candidates and the M range ``(lo, hi)``, return measured
#: times (microseconds) by kernel name for those that were measured, or a ``MeasuredRanking``
#: (times, a pinned kernel, their source). A hook taking only (config, candidates) ignores the
#: range. The default reads the tune table (:mod:`kernel_core.tune`); without one it returns nothing
#: and the ranking is by priority alone.
MeasuredTimes = Callable[..., "dict[str, float] | MeasuredRanking"]
_measured_times: MeasuredTimes = table_hook


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
    pinned: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "provider": self.provider,
            "priority": self.priority,
            "accepted": self.accepted,
            "reason": self.reason,
            "forced": self.forced,
            "measured_us": self.measured_us,
            "pinned": self.pinned,
        }


@dataclass(frozen=True)
class Explanation:
    """The whole ranking for one query: ``chosen`` is the first accepted candidate, if any."""

    config: LayerConfig
    platform: str
    compute_capability: int | None
    candidates: tuple[Candidate, ...]
    chosen: type[LinearKernel] | None = field(default=None, compare=False)
    m_range: MRange | None = None
    measured_source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.as_dict(),
            "platform": self.platform,
            "compute_capability": self.compute_capability,
            "chosen": self.chosen.name if self.chosen else None,
            "m_range": list(self.m_range) if self.m_range else None,
            "measured_source": self.measured_source,
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
            if c.pinned:
                verdict += " (pinned by the tune table)"
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


def _ask(label: str, call: Callable[[], object]) -> tuple[bool, str | None]:
    """One probe call; an exception or a malformed answer becomes the rejection reason."""
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


def _platform_reason(kernel: type[LinearKernel], platform: str) -> str | None:
    if platform in kernel.platforms:
        return None
    return f"runs on {', '.join(sorted(kernel.platforms))}, not {platform}"


def probe_platform(
    kernel: type[LinearKernel], compute_capability: int | None, platform: str
) -> tuple[bool, str | None]:
    """Can ``kernel`` run here at all (its platforms, then ``is_supported``), with no layer."""
    reason = _platform_reason(kernel, platform)
    if reason:
        return False, reason
    return _ask("is_supported", lambda: kernel.is_supported(compute_capability))


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
    reason = _platform_reason(kernel, platform)
    if reason:
        return False, reason
    if not isinstance(config, kernel.config_class):
        return False, (
            f"takes {kernel.config_class.__name__}, not {type(config).__name__}"
        )
    ok, reason = _ask("is_supported", lambda: kernel.is_supported(compute_capability))
    if not ok:
        return ok, reason
    return _ask("can_implement", lambda: kernel.can_implement(config))


_cache: dict[tuple[Any, ...], Explanation] = {}


def clear_cache() -> None:
    _cache.clear()


def set_measured_times(hook: MeasuredTimes | None) -> None:
    """Install the hook that supplies measured times for ranking; None restores the tune table's."""
    global _measured_times
    if hook is None:
        hook = table_hook
    elif len(inspect.signature(hook).parameters) == 2:
        two_argument_hook = hook
        hook = lambda config, kernels, m_range: two_argument_hook(config, kernels)  # noqa: E731
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
    m_range: str | tuple[int, int] | None = None,
) -> Explanation:
    """Rank every kernel of the config's family and say, for each, whether and why it serves.

    ``m_range``: the tokens per call the engine expects, ``"decode"`` (the default), ``"prefill"``
    or ``(lo, hi)``; it matters only when a tune table has measured this layer."""
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
        m_range if isinstance(m_range, str | None) else tuple(m_range),
    )
    cached = _cache.get(key)
    if cached is not None:
        return cached
    result = _explain_uncached(
        config, compute_capability, platform, force, resolve_m_range(m_range)
    )
    _cache[key] = result
    return result


def _explain_uncached(
    config: LayerConfig,
    compute_capability: int | None,
    platform: str,
    force: str | Sequence[str] | None,
    m_range: MRange,
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
    ranking = _measured_times(config, family_kernels, m_range)
    if not isinstance(ranking, MeasuredRanking):
        ranking = MeasuredRanking(ranking)
    measured = ranking.times_us
    pinned = ranking.pinned if ranking.pinned in by_name else None
    if ranking.pinned is not None and pinned is None:
        logger.warning("tune table pins %r, which is not a registered %r kernel",
                       ranking.pinned, config.family)
    forced_rank = {name: i for i, name in enumerate(forced)}
    if pinned is not None and pinned not in forced_rank:
        forced_rank[pinned] = len(forced)

    def order(kernel: type[LinearKernel]) -> tuple[Any, ...]:
        time = measured.get(kernel.name)
        return (
            forced_rank.get(kernel.name, len(forced) + 1),
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
        is_forced = kernel.name in forced
        is_pinned = kernel.name == pinned and not is_forced
        if (is_forced or is_pinned) and not ok:
            how = "forced" if is_forced else "pinned"
            logger.warning(
                "%s kernel %s cannot serve %s: %s", how, kernel.name, config.short(), reason
            )
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
                pinned=is_pinned,
            )
        )
    return Explanation(
        config, platform, compute_capability, tuple(candidates), chosen, m_range,
        ranking.source if (measured or pinned) else None,
    )


def choose_kernel(
    config: LayerConfig,
    compute_capability: int | None = None,
    *,
    platform: str | None = None,
    force: str | Sequence[str] | None = None,
    m_range: str | tuple[int, int] | None = None,
) -> type[LinearKernel]:
    """The best kernel class for the layer, or :class:`NoKernelError` with every reason."""
    result = explain(config, compute_capability, platform=platform, force=force, m_range=m_range)
    if result.chosen is None:
        raise NoKernelError(result)
    return result.chosen


def init_kernel(
    config: LayerConfig,
    compute_capability: int | None = None,
    *,
    platform: str | None = None,
    force: str | Sequence[str] | None = None,
    m_range: str | tuple[int, int] | None = None,
    dispatch_by_m: bool = False,
) -> LinearKernel:
    """Choose and construct: the kernel instance, ready for ``process_weights_after_loading``.

    ``dispatch_by_m=True``: when the tune table's fastest kernel differs with M, return a
    :class:`kernel_core.dispatch.DispatchingLinearKernel` that holds each and picks per call."""
    if dispatch_by_m and force is None:
        from kernel_core.dispatch import init_dispatching_kernel

        dispatching = init_dispatching_kernel(config, compute_capability, platform=platform)
        if dispatching is not None:
            return dispatching
    kernel = choose_kernel(config, compute_capability, platform=platform, force=force,
                           m_range=m_range)
    logger.info("using %s (%s) for %s", kernel.name, kernel.provider, config.short())
    return kernel(config)
