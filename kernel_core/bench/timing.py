"""How one kernel call is timed: medians after warm-up, CUDA graphs where launches dominate, and
inputs rotated so that the working set exceeds the L2 cache.

A *sample* is one pass over every rotation set (a list of callables, each running the layer on its
own weights and inputs); the reported time is the sample's median divided by the number of sets.
On CUDA a sample is timed with a pair of CUDA events; every event of the run is read after a single
synchronization at the end, so the host never stalls the stream between samples.

* Graph mode (small M, where the CPU launch cost is comparable to the kernel): the pass is captured
  once into a CUDA graph (:func:`capture_graph`, also what the benchmark scripts capture with) and a
  sample is one replay, the way engines run decode steps. A kernel that cannot be captured is timed
  eagerly, and the result says so.
* Eager mode (large M): the calls are launched back to back.
* Rotation: with an L2 of size L, enough distinct sets are cycled that one pass touches more than
  ``ROTATION_FACTOR * L`` bytes, so no call finds its weights or inputs in the L2 left by the last.
* On a CPU: ``time.perf_counter`` around each pass, small budgets, no rotation.

The budget follows ``triton.testing.do_bench``: a few calls estimate the cost, then warm-up and
measurement each take about ``warmup_ms`` / ``rep_ms``, within ``min_reps``..``max_reps`` samples.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "Budget",
    "CUDA_BUDGET",
    "CPU_BUDGET",
    "ROTATION_FACTOR",
    "Timing",
    "capture_graph",
    "paired",
    "l2_cache_bytes",
    "rotation_count",
    "time_calls",
]

#: One pass over the rotation sets touches at least this many times the L2's bytes.
ROTATION_FACTOR = 2.0


@dataclass(frozen=True)
class Budget:
    """Milliseconds of warm-up and of measurement, and bounds on the number of samples."""

    warmup_ms: float
    rep_ms: float
    min_reps: int
    max_reps: int


CUDA_BUDGET = Budget(warmup_ms=25.0, rep_ms=100.0, min_reps=10, max_reps=1000)
CPU_BUDGET = Budget(warmup_ms=2.0, rep_ms=20.0, min_reps=3, max_reps=50)


@dataclass(frozen=True)
class Timing:
    """The median time of one call, how it was taken, and any caveat."""

    median_us: float
    mode: str  # "graph", "eager" or "cpu"
    samples: int
    note: str | None = None


def paired(reference: list[float] | str, candidate: list[float] | str) -> dict | str:
    """A candidate against the reference timed in the same rounds: the median of the per-round
    ratios (reference / candidate, > 1 = candidate faster), their range, the median times. Ratios
    of the same rounds cancel the machine's drift between rounds, and their range says how far a
    verdict against a bar can be trusted. A side given as a string (its error) passes through."""
    if isinstance(reference, str):
        return f"reference failed: {reference}"
    if isinstance(candidate, str):
        return candidate
    ratios = [a / b for a, b in zip(reference, candidate, strict=True)]
    return {"ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "us": statistics.median(candidate), "reference_us": statistics.median(reference)}


def l2_cache_bytes(device: torch.device) -> int:
    """The device's L2 size (0 on a CPU: nothing to rotate against)."""
    if device.type != "cuda":
        return 0
    return int(torch.cuda.get_device_properties(device).L2_cache_size)


def rotation_count(bytes_per_set: int, l2_bytes: int, max_sets: int = 16) -> int:
    """How many distinct sets one pass cycles through so that it touches more than the L2."""
    if l2_bytes <= 0 or bytes_per_set <= 0:
        return 1
    return max(1, min(max_sets, math.ceil(ROTATION_FACTOR * l2_bytes / bytes_per_set)))


def _run_pass(calls: Sequence[Callable[[], object]]) -> None:
    for call in calls:
        call()


def _cpu_samples(run: Callable[[], None], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def _cuda_samples(run: Callable[[], None], count: int) -> list[float]:
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
    for start, end in zip(starts, ends, strict=True):
        start.record()
        run()
        end.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)]


def capture_graph(calls: Sequence[Callable[[], object]]) -> torch.cuda.CUDAGraph:
    """A CUDA graph of one pass over ``calls`` (each called once, in order), ready to time.

    On the current device: one warm-up pass on a side stream (as capture requires: lazy
    allocations, JIT builds and autotuning happen outside the graph), then the pass is captured
    into a new ``torch.cuda.CUDAGraph`` with its own private memory pool (torch's default; nothing
    is shared between graphs) and replayed once, so a timed replay is never the graph's first;
    the device is synchronized after each step. An exception raised during the warm-up, the
    capture or that replay propagates (:func:`time_calls` catches it and times the calls eagerly).
    Run a replay with ``graph.replay()``; the graph keeps its memory until it is dropped.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        _run_pass(calls)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        _run_pass(calls)
    torch.cuda.synchronize()
    graph.replay()
    torch.cuda.synchronize()
    return graph


def time_calls(
    calls: Sequence[Callable[[], object]],
    device: torch.device,
    *,
    use_graph: bool,
    budget: Budget,
) -> Timing:
    """Median microseconds of one call, each sample a pass over ``calls`` (see the module doc)."""
    if not calls:
        raise ValueError("time_calls: expected at least one call, found none")
    note = None
    if device.type == "cuda":
        sample, mode = _cuda_samples, "eager"
        run: Callable[[], None] = lambda: _run_pass(calls)  # noqa: E731
        run()  # first call: JIT builds, autotuning, lazy allocations
        torch.cuda.synchronize()
        if use_graph:
            try:
                run, mode = capture_graph(calls).replay, "graph"
            except Exception as exc:  # a kernel that cannot be captured is still timed
                note = f"CUDA graph capture failed ({type(exc).__name__}: {exc}); timed eagerly"
                torch.cuda.synchronize()
    else:
        sample, mode = _cpu_samples, "cpu"
        run = lambda: _run_pass(calls)  # noqa: E731
        run()
    estimate_ms = max(statistics.median(sample(run, 3)), 1e-4)
    sample(run, max(1, min(budget.max_reps, int(budget.warmup_ms / estimate_ms))))
    count = max(budget.min_reps, min(budget.max_reps, int(budget.rep_ms / estimate_ms)))
    median_ms = statistics.median(sample(run, count))
    return Timing(median_ms * 1e3 / len(calls), mode, count, note)
