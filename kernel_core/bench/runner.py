"""What ``kernel-core bench`` times, and its report (table, JSON).

For each layer: every kernel that selection accepts for it on this device (the reference-priority
emulation kernels only when nothing else serves, or when asked), and the baselines a user would
pick instead:

* ``torch.matmul`` in the activation dtype with the dequantized weight (cuBLAS on CUDA); every
  speedup is relative to it;
* for the fp8 families on CUDA (capability 8.9+), ``torch._scaled_mm`` with a per-channel FP8
  weight and per-token dynamic FP8 activations (rowwise scales); the timed call includes the
  activation quantization a user would also have to run.

Each kernel processes its own copy of the layer (``make_layer``: seeded random weights, quantized
to the family's contract). Each result also carries the relative error of the kernel's output
against a float32 product with the dequantized weight, so a fast but wrong kernel is visible.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from kernel_core.bench.progress import Progress
from kernel_core.bench.timing import (
    CPU_BUDGET,
    CUDA_BUDGET,
    ROTATION_FACTOR,
    Budget,
    l2_cache_bytes,
    rotation_count,
    time_calls,
)
from kernel_core.config import LayerConfig
from kernel_core.formats.layer import dequantize_weight, make_layer
from kernel_core.kernel import LinearKernel, Priority
from kernel_core.platform import current_compute_capability, current_platform
from kernel_core.selection import explain
from kernel_core.tune import environment_key

__all__ = [
    "BenchLayer",
    "Result",
    "LayerReport",
    "BenchReport",
    "DEFAULT_M_CUDA",
    "DEFAULT_M_CPU",
    "GRAPH_MAX_M",
    "default_m_values",
    "kernels_to_bench",
    "run_bench",
]

logger = logging.getLogger(__name__)

DEFAULT_M_CUDA = (1, 16, 64, 128, 256, 1024, 4096, 8192)
DEFAULT_M_CPU = (1, 16, 64)
#: Up to this M a call is launch-bound enough that CUDA-graph replay is the honest measure.
GRAPH_MAX_M = 256
SCALED_MM_FAMILIES = ("fp8", "fp8_block")
FP8_MAX = 448.0


@dataclass(frozen=True)
class BenchLayer:
    """A layer to time: a label for tables (e.g. "llama-3-70b.o") and its config."""

    label: str
    config: LayerConfig


@dataclass
class Result:
    """One (kernel or baseline, M) point."""

    name: str
    provider: str
    kind: str  # "kernel" or "baseline"
    m: int
    time_us: float | None = None
    speedup: float | None = None
    mode: str | None = None
    samples: int | None = None
    rel_error: float | None = None
    error: str | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class LayerReport:
    layer: BenchLayer
    baseline: str
    names: list[str] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)

    def times_by_m(self, kind: str) -> dict[int, dict[str, float]]:
        """``{M: {name: us}}`` of the measured points of one kind (for the tune table)."""
        out: dict[int, dict[str, float]] = {}
        for r in self.results:
            if r.kind == kind and r.time_us is not None:
                out.setdefault(r.m, {})[r.name] = r.time_us
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.layer.label,
            "config": self.layer.config.as_dict(),
            "baseline": self.baseline,
            "names": list(self.names),
            "results": [r.as_dict() for r in self.results],
        }


@dataclass
class BenchReport:
    environment: dict[str, Any]
    m_values: tuple[int, ...]
    timing: dict[str, Any]
    layers: list[LayerReport]
    command: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": "kernel-core bench",
            "command": self.command,
            "environment": self.environment,
            "m_values": list(self.m_values),
            "timing": self.timing,
            "layers": [layer.as_dict() for layer in self.layers],
        }

    def table(self) -> str:
        """Per layer, one row per M: each kernel's time in us and its speedup over the baseline."""
        blocks = []
        for report in self.layers:
            cells: dict[tuple[int, str], Result] = {(r.m, r.name): r for r in report.results}
            head = ["M", *report.names]
            rows = [head]
            for m in self.m_values:
                row = [str(m)]
                for name in report.names:
                    r = cells.get((m, name))
                    if r is None or r.time_us is None:
                        row.append("error" if r is not None and r.error else "-")
                    elif name == report.baseline:
                        row.append(f"{r.time_us:.1f}")
                    else:
                        row.append(f"{r.time_us:.1f} ({r.speedup:.2f}x)")
                rows.append(row)
            widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
            lines = [f"{report.layer.label}: {report.layer.config.short()}",
                     f"  times in us; (speedup over {report.baseline})"]
            lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))
                      for r in rows]
            errors = {(r.name, r.error) for r in report.results if r.error}
            lines += [f"  {name}: {error}" for name, error in sorted(errors)]
            notes = {(r.name, r.note) for r in report.results if r.note}
            lines += [f"  note, {name}: {note}" for name, note in sorted(notes)]
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)


def default_m_values(device: torch.device) -> tuple[int, ...]:
    return DEFAULT_M_CUDA if device.type == "cuda" else DEFAULT_M_CPU


def kernels_to_bench(
    config: LayerConfig, *, include_reference: bool = False
) -> list[type[LinearKernel]]:
    """The kernels selection accepts for the layer here, best-ranked first."""
    from kernel_core.registry import registry

    accepted = [registry.get(c.name) for c in explain(config).candidates if c.accepted]
    fast = [k for k in accepted if k.priority > Priority.REFERENCE]
    return accepted if include_reference or not fast else fast


def _clone_layer(layer: torch.nn.Module) -> torch.nn.Module:
    """A fresh module with copies of the contract parameters (a kernel repacks its own)."""
    copy = torch.nn.Module()
    for name, param in layer.named_parameters(recurse=False):
        clone = torch.nn.Parameter(param.detach().clone(), requires_grad=False)
        copy.register_parameter(name, clone)
    return copy


def _param_bytes(layer: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in layer.parameters())


def _rel_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    diff = torch.linalg.vector_norm(out.float() - reference)
    return float(diff / torch.linalg.vector_norm(reference).clamp_min(1e-30))


MakeCall = Callable[[int, torch.Tensor], Callable[[], torch.Tensor]]


class _Timed:
    """Something to time at every M: builds its per-set calls from the rotated inputs."""

    def __init__(self, name: str, provider: str, kind: str, make_call: MakeCall | None,
                 copies: int, error: str | None = None) -> None:
        self.name, self.provider, self.kind = name, provider, kind
        self.make_call = make_call
        self.copies = copies
        self.error = error


def _kernel_entry(
    kernel: type[LinearKernel], config: LayerConfig, base: torch.nn.Module, l2: int
) -> _Timed:
    copies = rotation_count(_param_bytes(base), l2)
    instances: list[tuple[LinearKernel, torch.nn.Module]] = []
    try:
        for _ in range(copies):
            layer = _clone_layer(base)
            instance = kernel(config)
            instance.process_weights_after_loading(layer)
            instances.append((instance, layer))
    except Exception as exc:
        error = f"process_weights_after_loading raised {type(exc).__name__}: {exc}"
        return _Timed(kernel.name, kernel.provider, "kernel", None, copies, error.splitlines()[0])

    def make_call(i: int, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        instance, layer = instances[i % len(instances)]
        return lambda: instance.apply_weights(layer, x)

    return _Timed(kernel.name, kernel.provider, "kernel", make_call, copies)


def _matmul_entry(weight: torch.Tensor, l2: int) -> _Timed:
    copies = rotation_count(weight.numel() * weight.element_size(), l2)
    weights = [weight] + [weight.clone() for _ in range(copies - 1)]

    def make_call(i: int, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        w_t = weights[i % len(weights)].t()
        return lambda: torch.matmul(x, w_t)

    dtype = str(weight.dtype).removeprefix("torch.").replace("bfloat16", "bf16").replace(
        "float16", "fp16").replace("float32", "fp32")
    return _Timed(f"torch.matmul({dtype})", "torch", "baseline", make_call, copies)


def _scaled_mm_entry(weight: torch.Tensor, l2: int) -> _Timed:
    """``torch._scaled_mm``, FP8 per-channel weight, per-token dynamic FP8 activations."""
    w = weight.float()
    w_scale = (w.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp_min(1e-12)
    w_q = (w / w_scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    w_scale_row = w_scale.t().contiguous()  # [1, N]
    copies = rotation_count(w_q.numel(), l2)
    weights = [w_q] + [w_q.clone() for _ in range(copies - 1)]

    def make_call(i: int, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        w_t = weights[i % len(weights)].t()

        def call() -> torch.Tensor:
            x_scale = (x.abs().amax(dim=-1, keepdim=True).float() / FP8_MAX).clamp_min(1e-12)
            x_q = (x / x_scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
            return torch._scaled_mm(x_q, w_t, scale_a=x_scale, scale_b=w_scale_row,
                                    out_dtype=torch.bfloat16)

        return call

    return _Timed("torch._scaled_mm(fp8 rowwise)", "torch", "baseline", make_call, copies)


def _wants_scaled_mm(config: LayerConfig, device: torch.device) -> bool:
    capability = current_compute_capability() or 0
    return config.family in SCALED_MM_FAMILIES and device.type == "cuda" and capability >= 89


def _bench_layer(
    layer: BenchLayer,
    kernels: Sequence[type[LinearKernel]],
    m_values: Sequence[int],
    device: torch.device,
    budget: Budget,
    graph_max_m: int,
    progress: Progress,
) -> LayerReport:
    config = layer.config
    l2 = l2_cache_bytes(device)
    base = make_layer(config, seed=0, device=device)
    del base.reference_weight  # timing needs only the contract parameters
    weight = dequantize_weight(config, base, dtype=torch.float32)
    reference_weight_t = weight.t()
    entries = [_matmul_entry(weight.to(config.act_dtype), l2)]
    if _wants_scaled_mm(config, device):
        entries.append(_scaled_mm_entry(weight, l2))
    entries += [_kernel_entry(kernel, config, base, l2) for kernel in kernels]
    del base
    report = LayerReport(layer, entries[0].name, [e.name for e in entries])
    n, k = config.weight_shape
    for m in m_values:
        set_bytes = m * k * config.act_dtype.itemsize + m * n * config.out_dtype.itemsize
        input_sets = rotation_count(set_bytes, l2)
        generator = torch.Generator(device=device).manual_seed(m)
        inputs = [
            torch.randn(m, k, generator=generator, device=device).to(config.act_dtype)
            for _ in range(input_sets)
        ]
        reference = inputs[0].float() @ reference_weight_t
        baseline_us: float | None = None
        for entry in entries:
            result = Result(entry.name, entry.provider, entry.kind, m)
            report.results.append(result)
            progress.step(f"{layer.label} M={m} {entry.name}")
            if entry.make_call is None:
                result.error = entry.error
                continue
            sets = max(entry.copies, input_sets)
            try:
                calls = [entry.make_call(i, inputs[i % input_sets]) for i in range(sets)]
                result.rel_error = _rel_error(calls[0](), reference)
                timing = time_calls(calls, device, use_graph=m <= graph_max_m, budget=budget)
            except Exception as exc:
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                result.error = f"{type(exc).__name__}: {first_line}"
                logger.debug("bench of %s at M=%d failed", entry.name, m, exc_info=True)
                if device.type == "cuda":  # let the failed launch finish before the next entry
                    with contextlib.suppress(Exception):
                        torch.cuda.synchronize()
                continue
            result.time_us, result.mode = timing.median_us, timing.mode
            result.samples = timing.samples
            result.note = timing.note
            if entry is entries[0]:
                baseline_us = timing.median_us
            if baseline_us is not None:
                result.speedup = baseline_us / timing.median_us
        del inputs, reference
    del entries
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return report


def run_bench(
    layers: Sequence[BenchLayer],
    m_values: Sequence[int] | None = None,
    *,
    budget: Budget | None = None,
    include_reference: bool = False,
    graph_max_m: int = GRAPH_MAX_M,
    command: str | None = None,
    on_layer: Callable[[LayerReport], None] | None = None,
) -> BenchReport:
    """Time every layer's kernels and baselines over ``m_values``; progress on stderr.

    ``on_layer`` sees each layer's report as soon as it is done (tune saves as it goes, so an
    interrupted run keeps the layers it finished)."""
    device = torch.device("cuda" if current_platform() == "cuda" else "cpu")
    m_values = tuple(m_values or default_m_values(device))
    if not m_values or any(not isinstance(m, int) or m < 1 for m in m_values):
        raise ValueError(f"M values: expected positive integers, found {list(m_values)}")
    budget = budget or (CUDA_BUDGET if device.type == "cuda" else CPU_BUDGET)
    plan = [(layer, kernels_to_bench(layer.config, include_reference=include_reference))
            for layer in layers]
    scaled = sum(1 for layer, _ in plan if _wants_scaled_mm(layer.config, device))
    total = len(m_values) * (sum(1 + len(kernels) for _, kernels in plan) + scaled)
    progress = Progress(total)
    reports = []
    try:
        for layer, kernels in plan:
            reports.append(
                _bench_layer(layer, kernels, m_values, device, budget, graph_max_m, progress)
            )
            if on_layer is not None:
                on_layer(reports[-1])
    finally:
        progress.close()
    timing = {
        "device": str(device),
        "l2_bytes": l2_cache_bytes(device),
        "rotation_factor": ROTATION_FACTOR,
        "graph_max_m": graph_max_m if device.type == "cuda" else None,
        "budget": dict(budget.__dict__),
    }
    return BenchReport(environment_key(), m_values, timing, reports, command)
