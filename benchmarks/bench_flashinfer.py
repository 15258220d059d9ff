"""The FlashInfer plugin's ``apply_weights`` against calling FlashInfer directly and against torch.

Per family, shape and M, medians of CUDA-event timings (7 batches after warm-up) of:

fp8 (per-tensor W8A8, bf16 out):
  ``plugin_static`` / ``plugin_dynamic``  the plugin kernel (static / dynamic activation scale)
  ``fi_runner_quant``    the plugin's work by hand: our quantizer + FlashInfer's cuBLASLt runner
                         (the overhead baseline: plugin_static minus this is the wrapper's cost)
  ``fi_quant_bmm_fp8``   our quantizer + the public ``flashinfer.bmm_fp8(backend="cublas")``
  ``fi_bmm_fp8``         ``flashinfer.bmm_fp8`` on pre-quantized FP8 activations (GEMM alone)
  ``fi_mm_fp8``          ``flashinfer.mm_fp8(backend="cublas")``, the other SM90 entry point
  ``torch_scaled_mm``    ``torch._scaled_mm`` per-tensor on the same FP8 operands
  ``torch_matmul_bf16``  ``torch.matmul`` with a bf16 weight
fp8_block (DeepSeek 128x128 blocks, bf16 in and out):
  ``plugin``             the plugin kernel
  ``fi_runner_fp8_input`` the plugin's work by hand: our 1x128 quantizer + FlashInfer's runner
                         in FP8-input mode (the overhead baseline)
  ``fi_public``          ``flashinfer.gemm.fp8_blockscale_gemm_sm90`` on bf16 input (its own
                         quantizer; eager only: it allocates and configures a workspace per call)
  ``torch_matmul_bf16``  ``torch.matmul`` with a bf16 weight

Weights and activations rotate over enough copies to exceed 2x the L2 cache, so no call reads a
warm weight. ``eager`` times back-to-back launches; ``graph`` replays a CUDA graph of the same
calls (M <= 256); ``host_us`` / ``host_min_us`` are the median / minimum host time to enqueue
one call (the eager overhead a busy GPU hides). Writes JSON to ``--out`` after every shape.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from kernel_core.families.fp8 import FP8ScaledMMLinearLayerConfig
from kernel_core.families.fp8_block import Fp8BlockLinearLayerConfig
from kernel_core.formats.fp8 import quantize_fp8, quantize_fp8_block
from kernel_core_flashinfer import ops
from kernel_core_flashinfer.environment import flashinfer
from kernel_core_flashinfer.kernels import (
    FlashInferFp8BlockScaledMMLinearKernel,
    FlashInferFp8ScaledMMLinearKernel,
)
from kernel_core_flashinfer.triton_kernels import quantize_per_tensor, quantize_per_token_group

FP8_SHAPES = ((8192, 8192), (28672, 8192), (8192, 28672))
BLOCK_SHAPES = ((7168, 18432), (18432, 7168), (4096, 7168), (2112, 7168))
M_VALUES = (1, 16, 64, 128, 256, 1024, 4096)
GRAPH_MAX_M = 256
BATCHES = 7

Call = Callable[[int], object]


def copies_for(nbytes: int) -> int:
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    return max(2, math.ceil(2 * l2 / max(nbytes, 1)))


def time_eager(fn: Call, copies: int) -> float:
    calls = copies * max(1, 24 // copies)
    for i in range(copies):
        fn(i)
    torch.cuda.synchronize()
    times = []
    for _ in range(BATCHES):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for j in range(calls):
            fn(j % copies)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / calls)
    return statistics.median(times)


def time_host(fn: Call, copies: int) -> tuple[float, float]:
    """Host microseconds to enqueue one call (20 calls, queue far from full): median, min of 7."""
    times = []
    for _ in range(BATCHES):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for j in range(20):
            fn(j % copies)
        times.append((time.perf_counter() - t0) * 1e6 / 20)
    torch.cuda.synchronize()
    return statistics.median(times), min(times)


def time_graph(fn: Call, copies: int) -> float:
    calls = copies * max(1, 24 // copies)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(copies):
            fn(i)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for j in range(calls):
            fn(j % copies)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(BATCHES):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / calls)
    del graph
    return statistics.median(times)


def measure(candidates: dict[str, Call], copies: int, m: int, eager_only: set[str]) -> dict:
    row: dict[str, dict] = {}
    for name, fn in candidates.items():
        entry: dict[str, float | str] = {}
        try:
            entry["eager_us"] = time_eager(fn, copies)
            entry["host_us"], entry["host_min_us"] = time_host(fn, copies)
            if m <= GRAPH_MAX_M and name not in eager_only:
                entry["graph_us"] = time_graph(fn, copies)
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        row[name] = entry
    return row


def fp8_rows(n: int, k: int, gen: torch.Generator) -> list[dict]:
    fi = flashinfer()
    copies = copies_for(n * k)
    weights = [(torch.randn(n, k, generator=gen, device="cuda") * 0.02) for _ in range(copies)]
    quantized = [quantize_fp8(w, "tensor") for w in weights]
    bf16_weights = [w.to(torch.bfloat16) for w in weights]
    del weights
    layers = {}
    for mode in ("static", "dynamic"):
        config = FP8ScaledMMLinearLayerConfig(
            weight_shape=(n, k), weight_scale_granularity="tensor", input_scale=mode,
            input_scale_granularity="tensor",
        )
        kernel = FlashInferFp8ScaledMMLinearKernel(config)
        mods = []
        for wq, ws in quantized:
            layer = torch.nn.Module()
            layer.weight = torch.nn.Parameter(wq, requires_grad=False)
            layer.weight_scale = torch.nn.Parameter(ws.clone(), requires_grad=False)
            if mode == "static":
                layer.input_scale = torch.nn.Parameter(
                    torch.tensor([0.05], device="cuda"), requires_grad=False)
            kernel.process_weights_after_loading(layer)
            mods.append(layer)
        layers[mode] = (kernel, mods)
    rows = []
    for m in M_VALUES:
        xs = [torch.randn(m, k, generator=gen, device="cuda").to(torch.bfloat16) for _ in range(copies)]
        a_scale = torch.tensor([0.05], device="cuda")
        qs = [quantize_per_tensor(x, a_scale)[0] for x in xs]
        alpha = [(a_scale * ws).contiguous() for _, ws in quantized]
        outs = [torch.empty(1, m, n, dtype=torch.bfloat16, device="cuda") for _ in range(copies)]
        ks, ls = layers["static"]
        kd, ld = layers["dynamic"]

        runner = ops.cublas_fp8_runner()
        workspace = torch.empty(40 * 1024 * 1024, dtype=torch.uint8, device="cuda")

        def fi_runner_quant(i: int) -> object:
            q, s = quantize_per_tensor(xs[i], a_scale)
            out = torch.empty(1, m, n, dtype=torch.bfloat16, device="cuda")
            runner.forward([q.unsqueeze(0), quantized[i][0].t().unsqueeze(0), s, quantized[i][1],
                            out, workspace], tactic=-1)
            return out

        def fi_quant_bmm(i: int) -> object:
            q, s = quantize_per_tensor(xs[i], a_scale)
            return fi.bmm_fp8(q.unsqueeze(0), quantized[i][0].t().unsqueeze(0), s,
                              quantized[i][1], torch.bfloat16, backend="cublas")

        candidates: dict[str, Call] = {
            "plugin_static": lambda i: ks.apply_weights(ls[i], xs[i]),
            "plugin_dynamic": lambda i: kd.apply_weights(ld[i], xs[i]),
            "fi_runner_quant": fi_runner_quant,
            "fi_quant_bmm_fp8": fi_quant_bmm,
            "fi_bmm_fp8": lambda i: fi.bmm_fp8(
                qs[i].unsqueeze(0), quantized[i][0].t().unsqueeze(0), a_scale, quantized[i][1],
                torch.bfloat16, out=outs[i], backend="cublas"),
            "fi_mm_fp8": lambda i: fi.mm_fp8(
                qs[i], quantized[i][0], alpha[i], out_dtype=torch.bfloat16, backend="cublas"),
            "torch_scaled_mm": lambda i: torch._scaled_mm(
                qs[i], quantized[i][0].t(), a_scale, quantized[i][1], out_dtype=torch.bfloat16),
            "torch_matmul_bf16": lambda i: torch.matmul(xs[i], bf16_weights[i].t()),
        }
        row = {"family": "fp8", "N": n, "K": k, "M": m, "copies": copies}
        row.update(measure(candidates, copies, m, eager_only=set()))
        rows.append(row)
        print(summary(row), file=sys.stderr, flush=True)
    return rows


def block_rows(n: int, k: int, gen: torch.Generator) -> list[dict]:
    fi = flashinfer()
    copies = copies_for(n * k)
    config = Fp8BlockLinearLayerConfig(weight_shape=(n, k))
    kernel = FlashInferFp8BlockScaledMMLinearKernel(config)
    layers, bf16_weights = [], []
    for _ in range(copies):
        w = torch.randn(n, k, generator=gen, device="cuda") * 0.02
        wq, ws = quantize_fp8_block(w)
        bf16_weights.append(w.to(torch.bfloat16))
        layer = torch.nn.Module()
        layer.weight = torch.nn.Parameter(wq, requires_grad=False)
        layer.weight_scale = torch.nn.Parameter(ws, requires_grad=False)
        kernel.process_weights_after_loading(layer)
        layers.append(layer)
    rows = []
    for m in M_VALUES:
        xs = [torch.randn(m, k, generator=gen, device="cuda").to(torch.bfloat16) for _ in range(copies)]
        runner = ops.blockscale_runner()

        def fi_runner_fp8_input(i: int) -> object:
            buffer, scales = ops.block_input_scales(m, k, xs[i].device)
            q = quantize_per_token_group(xs[i], scales)
            out = torch.empty(m, n, dtype=torch.bfloat16, device="cuda")
            runner.run_gemm(q, layers[i].weight, out, buffer, layers[i].weight_scale)
            return out

        candidates: dict[str, Call] = {
            "plugin": lambda i: kernel.apply_weights(layers[i], xs[i]),
            "fi_runner_fp8_input": fi_runner_fp8_input,
            "fi_public": lambda i: fi.gemm.fp8_blockscale_gemm_sm90(
                xs[i], layers[i].weight, None, layers[i].weight_scale, out_dtype=torch.bfloat16),
            "torch_matmul_bf16": lambda i: torch.matmul(xs[i], bf16_weights[i].t()),
        }
        row = {"family": "fp8_block", "N": n, "K": k, "M": m, "copies": copies}
        row.update(measure(candidates, copies, m, eager_only={"fi_public"}))
        rows.append(row)
        print(summary(row), file=sys.stderr, flush=True)
    return rows


def summary(row: dict) -> str:
    cells = []
    for name, entry in row.items():
        if isinstance(entry, dict):
            keys = ("eager_us", "graph_us", "host_min_us")
            parts = [f"{entry[key]:.1f}" for key in keys if key in entry]
            cells.append(f"{name}={'/'.join(parts) or entry.get('error', '?')[:40]}")
    return f"{row['family']} N={row['N']} K={row['K']} M={row['M']}: " + " ".join(cells)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--families", default="fp8,fp8_block")
    args = parser.parse_args()
    fi = flashinfer()
    import triton

    report = {
        "benchmark": "benchmarks/bench_flashinfer.py",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_revision": os.environ.get("KC_GIT_REVISION", "unknown"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": torch.cuda.get_device_name(),
        "versions": {
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "triton": triton.__version__, "flashinfer": fi.__version__,
        },
        "units": "microseconds per call; medians of 7 batches; eager = back-to-back launches",
        "summary_line_format": "eager/graph/host_min us",
        "rows": [],
    }
    gen = torch.Generator(device="cuda").manual_seed(0)
    families = args.families.split(",")
    work = [("fp8", s) for s in FP8_SHAPES if "fp8" in families]
    work += [("fp8_block", s) for s in BLOCK_SHAPES if "fp8_block" in families]
    for family, (n, k) in work:
        rows = fp8_rows(n, k, gen) if family == "fp8" else block_rows(n, k, gen)
        report["rows"].extend(rows)
        torch.cuda.empty_cache()
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
